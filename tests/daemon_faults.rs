//! `airlock watch` under faults, as a real process against the real registry:
//! bad signatures beside good content, a state directory that refuses
//! writes, kills between recording and disposing, the same content twice at
//! once, and copies that stall. Each test is a situation in which an
//! operator must neither lose nor double-import a bundle.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer, Naming};
use support::daemon::{Daemon, DaemonSetup, Site};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::skopeo;

/// How the fault tests drop bundles and look at what is left.
trait FaultSite {
    fn drop_as(&self, bundle: &BuiltBundle, name: &str);
    fn drop_badly_signed(&self, bundle: &BuiltBundle, name: &str, key: &TestKey);
    fn files_left(&self) -> Vec<String>;
}

impl FaultSite for Site {
    /// Drops `bundle`'s bytes as `name.zst` with its own signature.
    fn drop_as(&self, bundle: &BuiltBundle, name: &str) {
        std::fs::copy(bundle.sig(), self.path(&format!("{name}.sig.bin"))).expect("copy sig");
        copy_atomically(bundle.zst(), &self.path(&format!("{name}.zst")));
    }

    /// Drops `bundle`'s bytes as `name.zst` with a signature by `key`, which
    /// the daemon does not trust.
    fn drop_badly_signed(&self, bundle: &BuiltBundle, name: &str, key: &TestKey) {
        key.sign(bundle.zst(), &self.path(&format!("{name}.sig.bin")));
        copy_atomically(bundle.zst(), &self.path(&format!("{name}.zst")));
    }

    /// Files left directly in the drop folder (not in processed/ or failed/).
    fn files_left(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.drop.path())
            .expect("list the drop folder")
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn copy_atomically(from: &Path, to: &Path) {
    let name = to.file_name().expect("name").to_string_lossy();
    let tmp = to.with_file_name(format!(".{name}.partial"));
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename into place");
}

fn small_bundle(key: &TestKey, name: &str, reference: &str) -> BuiltBundle {
    BundleBuilder::new(name)
        .image(Image::new(reference).naming(Naming::ContainerdName))
        .build(key)
}

fn outcome(daemon: &Daemon, outcome: &str) -> f64 {
    daemon.metric(&format!(r#"airlock_bundles_total{{outcome="{outcome}"}}"#))
}

fn assert_landed(bundle: &BuiltBundle, registry: &Registry) {
    for image in bundle.images() {
        let reference = format!("mirror/{}", image.full_ref);
        assert_eq!(
            skopeo::manifest_digest(registry, &reference),
            image.digest,
            "{reference}"
        );
    }
}

/// The records of `/api/v1/imports` by status.
fn records_with_status(daemon: &Daemon, status: &str) -> Vec<Value> {
    daemon
        .imports()
        .as_array()
        .expect("a list")
        .iter()
        .filter(|r| r["status"] == status)
        .cloned()
        .collect()
}

/// Manifest PUTs the registry accepted, per repository and reference.
fn manifest_puts(registry: &Registry) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in registry.settled_requests() {
        if request.method == "PUT" && request.path.contains("/manifests/") && request.status == 201
        {
            *counts.entry(request.path.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// Completed blob uploads per digest.
fn completed_uploads(registry: &Registry) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in registry.settled_requests() {
        let completed = request.method == "PUT"
            && request.path.contains("/blobs/uploads/")
            && request.status == 201;
        if let Some(digest) = request.digest_param().filter(|_| completed) {
            *counts.entry(digest).or_insert(0) += 1;
        }
    }
    counts
}

/// Stops a daemon started under `strace`: SIGTERM to airlock itself (the
/// tracer's child), which ends strace too. Killing only strace would leave
/// airlock running.
fn stop_traced(daemon: &mut Daemon) {
    let tracer = daemon.pid();
    let children = std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children"))
        .unwrap_or_default();
    for child in children.split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", child])
            .status();
    }
    assert!(
        daemon.wait_exit(Duration::from_secs(40)).is_some(),
        "the traced daemon did not stop"
    );
}

/// Waits, bounded, until the daemon has logged `text`.
fn wait_for_log(daemon: &Daemon, text: &str) {
    daemon.wait_until(&format!("the log line {text:?}"), |d| {
        d.log_text().contains(text)
    });
}

// --- A bad signature is held against the pair, never the content ---------

#[test]
fn a_badly_signed_copy_of_imported_content_leaves_the_import_alone() {
    let key = TestKey::generate(KeyKind::EcP256);
    let stranger = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "alpha", "quay.io/acme/alpha:1.0");
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());
    site.drop_as(&bundle, "alpha");
    daemon.wait_until("the import", |d| outcome(d, "imported") >= 1.0);

    site.drop_badly_signed(&bundle, "copy", &stranger);
    daemon.wait_until("the rejection of the bad pair", |d| {
        outcome(d, "rejected") >= 1.0
    });
    let imported = records_with_status(&daemon, "imported");
    assert_eq!(imported.len(), 1, "{}", daemon.imports());
    assert_eq!(imported[0]["names"], serde_json::json!(["alpha.zst"]));
    let rejected = records_with_status(&daemon, "rejected");
    assert_eq!(rejected.len(), 1, "{}", daemon.imports());
    assert_eq!(rejected[0]["names"], serde_json::json!(["copy.zst"]));
    assert_eq!(
        rejected[0]["pair"]["bundle"], imported[0]["id"],
        "the rejection names the content it was judged with"
    );
    assert!(site.path("copy.zst.error.json").exists());

    // The same bytes correctly signed under a third name: a duplicate of
    // the import, not "rejected before".
    let writes = registry.settled_writes();
    site.drop_as(&bundle, "again");
    daemon.wait_until("the duplicate", |d| outcome(d, "duplicate") >= 1.0);
    assert_eq!(registry.settled_writes(), writes);
    assert_eq!(outcome(&daemon, "rejected"), 1.0);
    let imported = records_with_status(&daemon, "imported");
    assert_eq!(
        imported[0]["names"],
        serde_json::json!(["alpha.zst", "again.zst"])
    );
}

#[test]
fn a_badly_signed_copy_during_a_registry_outage_does_not_stop_the_retries() {
    let key = TestKey::generate(KeyKind::EcP256);
    let stranger = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "alpha", "quay.io/acme/outage:1.0");
    let mut registry = Registry::start();
    registry.stop();
    let site = Site::new();
    let daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());
    site.drop_as(&bundle, "alpha");
    daemon.wait_until("a failed attempt", |d| outcome(d, "failed") >= 1.0);

    site.drop_badly_signed(&bundle, "copy", &stranger);
    daemon.wait_until("the rejection of the bad pair", |d| {
        outcome(d, "rejected") >= 1.0
    });
    registry.restart();
    daemon.wait_until("the import once the registry is back", |d| {
        outcome(d, "imported") >= 1.0
    });
    assert_landed(&bundle, &registry);
    assert_eq!(outcome(&daemon, "rejected"), 1.0);
}

#[test]
fn a_signature_completed_after_its_rejection_is_judged_again_and_the_rejection_superseded() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "late", "quay.io/acme/latesig:1.0");
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());

    // Half a signature: its copy stalls for longer than the settle time and
    // the second look, so the pair is rejected.
    let signature = std::fs::read(bundle.sig()).expect("read signature");
    std::fs::write(site.path("late.sig.bin"), &signature[..signature.len() / 2]).expect("write");
    copy_atomically(bundle.zst(), &site.path("late.zst"));
    daemon.wait_until("the rejection", |d| outcome(d, "rejected") >= 1.0);
    assert!(site.path("late.zst.error.json").exists());

    // The copy completes.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(site.path("late.sig.bin"))
        .expect("open signature");
    file.write_all(&signature[signature.len() / 2..])
        .expect("write the rest");
    drop(file);
    daemon.wait_until("the import", |d| outcome(d, "imported") >= 1.0);
    assert_landed(&bundle, &registry);
    assert!(
        !site.path("late.zst.error.json").exists(),
        "a stale reason file stayed beside the imported bundle"
    );
    let imports = daemon.imports();
    let records = imports.as_array().expect("a list");
    assert_eq!(records.len(), 1, "{imports}");
    assert_eq!(records[0]["status"], "imported", "{imports}");
}

// --- A stalled copy is not a forged bundle -------------------------------

/// Writes the first half of `bundle` as `name.zst` (its signature complete).
fn start_stalled_copy(site: &Site, bundle: &BuiltBundle, name: &str) -> (std::fs::File, Vec<u8>) {
    std::fs::copy(bundle.sig(), site.path(&format!("{name}.sig.bin"))).expect("copy sig");
    let content = std::fs::read(bundle.zst()).expect("read bundle");
    let mut file = std::fs::File::create(site.path(&format!("{name}.zst"))).expect("create");
    file.write_all(&content[..content.len() / 2])
        .expect("first half");
    file.flush().expect("flush");
    (file, content)
}

#[test]
fn a_copy_stalled_longer_than_the_settle_time_then_completed_is_imported_not_rejected() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("stall")
        .image(Image::new("quay.io/acme/stall:1.0").layers(&[Layer::uncompressed(7, 1 << 20)]))
        .build(&key);
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(
        &site.setup(&["--settle-time", "3s"]),
        &registry,
        key.public_pem(),
    );
    let (mut file, content) = start_stalled_copy(&site, &bundle, "stall");
    // Longer than the settle time (the half copy is judged and fails), less
    // than the settle time twice (the second look sees the copy went on).
    wait_for_log(&daemon, "looking at it again before rejecting");
    std::thread::sleep(Duration::from_millis(500));
    file.write_all(&content[content.len() / 2..])
        .expect("second half");
    drop(file);

    daemon.wait_until("the import", |d| outcome(d, "imported") >= 1.0);
    assert_landed(&bundle, &registry);
    assert_eq!(outcome(&daemon, "rejected"), 0.0);
    assert_eq!(
        daemon.metric(r#"airlock_signature_verifications_total{result="rejected"}"#),
        0.0
    );
    assert!(!site.path("stall.zst.error.json").exists());
    let imports = daemon.imports();
    assert_eq!(imports.as_array().map(Vec::len), Some(1), "{imports}");
    assert_eq!(imports[0]["status"], "imported");
}

#[test]
fn a_copy_stalled_and_never_completed_is_rejected_once_after_a_second_look() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "stuck", "quay.io/acme/stuck:1.0");
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(
        &site.setup(&["--settle-time", "3s"]),
        &registry,
        key.public_pem(),
    );
    let started = Instant::now();
    let (_file, _) = start_stalled_copy(&site, &bundle, "stuck");
    wait_for_log(&daemon, "looking at it again before rejecting");
    assert_eq!(
        outcome(&daemon, "rejected"),
        0.0,
        "rejected before the second look"
    );
    daemon.wait_until("the rejection", |d| outcome(d, "rejected") >= 1.0);
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "rejected {:?} after the copy stalled: before the settle time and the second look",
        started.elapsed()
    );
    assert!(site.path("stuck.zst.error.json").exists());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(outcome(&daemon, "rejected"), 1.0);
    assert!(
        registry
            .settled_requests()
            .iter()
            .all(|r| r.method != "PUT")
    );
}

#[test]
fn a_tampered_bundle_is_still_rejected_once() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "evil", "quay.io/acme/evil:1.0");
    bundle.tamper();
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());
    site.drop_as(&bundle, "evil");
    daemon.wait_until("the rejection", |d| outcome(d, "rejected") >= 1.0);
    let reason = std::fs::read_to_string(site.path("evil.zst.error.json")).expect("reason file");
    assert!(reason.contains("does not verify"), "{reason}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(outcome(&daemon, "rejected"), 1.0);
    assert_eq!(
        daemon.metric(r#"airlock_signature_verifications_total{result="rejected"}"#),
        1.0
    );
    assert!(
        registry.settled_writes() == 0,
        "the registry was written to"
    );
    assert_eq!(records_with_status(&daemon, "rejected").len(), 1);
}

// --- Nothing is disposed of without a record -----------------------------

/// Makes `state/bundles` unwritable by putting a file in its place (the
/// same failure, for the daemon, as a read-only volume), and back.
struct BrokenStateDir {
    bundles: PathBuf,
    aside: PathBuf,
}

impl BrokenStateDir {
    fn break_it(state: &Path) -> BrokenStateDir {
        let bundles = state.join("bundles");
        let aside = state.join("bundles.aside");
        std::fs::rename(&bundles, &aside).expect("move the records aside");
        std::fs::write(&bundles, b"not a folder").expect("block the record folder");
        BrokenStateDir { bundles, aside }
    }

    fn repair(self) {
        std::fs::remove_file(&self.bundles).expect("unblock");
        std::fs::rename(&self.aside, &self.bundles).expect("move the records back");
    }
}

#[test]
fn a_state_directory_refusing_writes_holds_back_disposal_until_the_record_is_written() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "kept", "quay.io/acme/kept:1.0");
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(
        &site.setup(&["--on-success", "delete"]),
        &registry,
        key.public_pem(),
    );
    let broken = BrokenStateDir::break_it(site.state.path());
    daemon.wait_until("/readyz to report the state directory", |d| {
        d.get("/readyz").is_some_and(|(status, _)| status == 503)
    });
    site.drop_as(&bundle, "kept");
    daemon.wait_until("a failed attempt", |d| outcome(d, "failed") >= 2.0);
    assert!(
        site.path("kept.zst").exists() && site.path("kept.sig.bin").exists(),
        "the bundle was disposed of without a record"
    );
    assert_eq!(outcome(&daemon, "imported"), 0.0);

    broken.repair();
    daemon.wait_until("the import", |d| outcome(d, "imported") >= 1.0);
    assert_landed(&bundle, &registry);
    daemon.wait_until("the deletion", |_| {
        !site.path("kept.zst").exists() && !site.path("kept.sig.bin").exists()
    });
    let record = std::fs::read_dir(site.state.path().join("bundles"))
        .expect("records")
        .filter_map(Result::ok)
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("\"imported\"")));
    assert!(record, "no imported record on disk");

    // A copy dropped later is known.
    let writes = registry.settled_writes();
    site.drop_as(&bundle, "kept-again");
    daemon.wait_until("the duplicate", |d| outcome(d, "duplicate") >= 1.0);
    assert_eq!(registry.settled_writes(), writes, "imported twice");
    assert_eq!(outcome(&daemon, "imported"), 1.0);
}

// --- A kill between recording and disposing ------------------------------

/// `strace` killing the daemon (SIGKILL, the rename not done) at the first
/// rename that touches `path`.
fn kill_at_rename_of(path: &Path) -> Vec<String> {
    [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-P",
        &path.display().to_string(),
        "-e",
        "trace=rename,renameat,renameat2",
        "-e",
        "inject=rename,renameat,renameat2:error=EIO:signal=KILL",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn crash_then_restart_finishes_the_move(kill_at: &str) {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "moved", "quay.io/acme/moved:1.0");
    let registry = Registry::start();
    let site = Site::new();
    let wrapper = kill_at_rename_of(&site.path(kill_at));
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut daemon = Daemon::start_under(
        &wrapper,
        &site.setup(&["--on-success", "move"]),
        &registry,
        key.public_pem(),
    );
    site.drop_as(&bundle, "moved");
    let exit = daemon.wait_exit(support::daemon::WAIT_LIMIT);
    assert!(
        exit.is_some(),
        "the daemon was not killed:\n{}",
        daemon.log_text()
    );
    assert!(site.path("moved.zst").exists(), "killed after the move");
    assert_landed(&bundle, &registry);
    let puts = manifest_puts(&registry);

    daemon.drop_wrapper();
    daemon.restart();
    daemon.wait_until("the interrupted move to finish", |_| {
        site.files_left().is_empty()
            && site.path("processed/moved.zst").exists()
            && site.path("processed/moved.sig.bin").exists()
    });
    assert!(
        daemon.log_text().contains("finished disposing"),
        "{}",
        daemon.log_text()
    );
    assert_eq!(
        manifest_puts(&registry),
        puts,
        "pushed again after the restart"
    );
    assert!(completed_uploads(&registry).values().all(|n| *n == 1));
}

#[test]
fn killed_after_the_final_record_before_the_move_the_move_happens_at_restart() {
    // The signature moves first: a kill at its rename is a kill after the
    // record and before any file moved.
    crash_then_restart_finishes_the_move("moved.sig.bin");
}

#[test]
fn killed_between_the_two_renames_the_bundle_follows_its_signature_at_restart() {
    crash_then_restart_finishes_the_move("moved.zst");
}

// --- The same content twice at once --------------------------------------

#[test]
fn one_bundle_dropped_under_two_names_at_once_is_imported_once() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("g")
        .image(Image::new("quay.io/acme/twice:1.0").layers(&[
            Layer::uncompressed(31, 24 << 20),
            Layer::uncompressed(32, 24 << 20),
        ]))
        .build(&key);
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(
        &site.setup(&["--concurrency", "2"]),
        &registry,
        key.public_pem(),
    );
    std::fs::copy(bundle.sig(), site.path("g1.sig.bin")).expect("sig");
    std::fs::copy(bundle.sig(), site.path("g2.sig.bin")).expect("sig");
    std::fs::copy(bundle.zst(), site.path(".g1.zst.partial")).expect("copy");
    std::fs::copy(bundle.zst(), site.path(".g2.zst.partial")).expect("copy");
    std::fs::rename(site.path(".g1.zst.partial"), site.path("g1.zst")).expect("rename");
    std::fs::rename(site.path(".g2.zst.partial"), site.path("g2.zst")).expect("rename");

    daemon.wait_until("both copies handled", |d| {
        outcome(d, "imported") + outcome(d, "duplicate") >= 2.0
    });
    assert_eq!(outcome(&daemon, "imported"), 1.0);
    assert_eq!(outcome(&daemon, "duplicate"), 1.0);
    let twice: Vec<_> = completed_uploads(&registry)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "blobs uploaded twice: {twice:?}");
    assert_landed(&bundle, &registry);
}

// --- The watcher: quiet when idle, and never deaf after a remount ---------

/// Lines strace wrote for the traced syscalls.
fn traced_calls(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("getdents64"))
        .count()
}

#[test]
fn an_idle_watcher_does_not_list_its_folder_again_and_again() {
    let key = TestKey::generate(KeyKind::EcP256);
    let registry = Registry::start();
    let site = Site::new();
    // Many files that are no bundles make every needless listing costly.
    for n in 0..2000 {
        std::fs::write(site.path(&format!("notes-{n}.txt")), b"x").expect("write");
    }
    let trace_dir = tempfile::tempdir().expect("tempdir");
    let trace = trace_dir.path().join("strace.log");
    let drop_dir = site.drop.path().display().to_string();
    let trace_path = trace.display().to_string();
    let wrapper = [
        "strace",
        "-f",
        "-qq",
        "-o",
        &trace_path,
        "-P",
        &drop_dir,
        "-e",
        "trace=getdents64",
    ];
    let mut setup = site.setup(&[]);
    setup
        .envs
        .push(("AIRLOCK_DROP__RESCAN_INTERVAL".to_owned(), "1h".to_owned()));
    let mut daemon = Daemon::start_under(&wrapper, &setup, &registry, key.public_pem());
    daemon.wait_until("the first listing", |_| traced_calls(&trace) > 0);
    // The files seen at the first listing settle a second later, which
    // takes one more listing; after that there is nothing to look at.
    std::thread::sleep(Duration::from_secs(3));
    let listings = daemon.metric("airlock_drop_listings_total");
    let calls = traced_calls(&trace);
    assert!(listings >= 1.0, "the first listing is not counted");

    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        traced_calls(&trace),
        calls,
        "the idle watcher listed its folder again"
    );
    assert_eq!(daemon.metric("airlock_drop_listings_total"), listings);

    // An arrival is still noticed at once.
    let bundle = small_bundle(&key, "noticed", "quay.io/acme/noticed:1.0");
    let dropped = Instant::now();
    site.drop_as(&bundle, "noticed");
    daemon.wait_until("the import", |d| outcome(d, "imported") >= 1.0);
    assert!(
        dropped.elapsed() < Duration::from_secs(30),
        "the arrival waited {:?}",
        dropped.elapsed()
    );
    stop_traced(&mut daemon);
}

/// Opt-out for machines where tests cannot mount file systems.
const SKIP_MOUNT_TESTS: &str = "AIRLOCK_TEST_SKIP_MOUNT";

/// A tmpfs mounted on a folder, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    mounted: bool,
}

impl Tmpfs {
    fn mount(path: &Path) -> Option<Tmpfs> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs {
            path: path.to_owned(),
            mounted: true,
        })
    }

    fn unmount(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "umount {}", self.path.display());
        self.mounted = false;
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount")
                .arg(&self.path)
                .status();
        }
    }
}

#[test]
fn a_drop_folder_unmounted_and_mounted_again_is_watched_again() {
    let key = TestKey::generate(KeyKind::EcP256);
    let registry = Registry::start();
    let parent = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("state");
    let drop_dir = parent.path().join("usb");
    std::fs::create_dir(&drop_dir).expect("mkdir");
    let Some(mut stick) = Tmpfs::mount(&drop_dir) else {
        assert!(
            std::env::var_os(SKIP_MOUNT_TESTS).is_some(),
            "cannot mount a tmpfs (needs root); set {SKIP_MOUNT_TESTS}=1 to skip this test"
        );
        eprintln!("skipping: {SKIP_MOUNT_TESTS} is set and no tmpfs can be mounted");
        return;
    };
    let setup = DaemonSetup {
        drop_dir: drop_dir.clone(),
        state_dir: state.path().to_owned(),
        extra: Vec::new(),
        envs: vec![("AIRLOCK_DROP__RESCAN_INTERVAL".to_owned(), "1h".to_owned())],
    };
    let daemon = Daemon::start(&setup, &registry, key.public_pem());
    daemon.wait_until("the watcher", |d| d.metric("airlock_watcher_up") == 1.0);

    // The stick is pulled: the folder is gone.
    stick.unmount();
    std::fs::remove_dir(&drop_dir).expect("rmdir the mount point");
    daemon.wait_until("the watcher to report the folder gone", |d| {
        d.metric("airlock_watcher_up") == 0.0
            && d.get("/readyz").is_some_and(|(status, _)| status == 503)
    });

    // And put back.
    std::fs::create_dir(&drop_dir).expect("mkdir");
    let _stick = Tmpfs::mount(&drop_dir).expect("mount again");
    daemon.wait_until("the watcher to watch the new mount", |d| {
        d.metric("airlock_watcher_up") == 1.0
    });
    assert!(daemon.log_text().contains("watching it again"));
    let bundle = small_bundle(&key, "usb", "quay.io/acme/usb:2.0");
    let dropped = Instant::now();
    bundle.copy_into(&drop_dir);
    daemon.wait_until("the import", |d| outcome(d, "imported") >= 1.0);
    assert!(
        dropped.elapsed() < Duration::from_secs(20),
        "the bundle on the new mount waited {:?} (the rescan interval is an hour)",
        dropped.elapsed()
    );
    assert_landed(&bundle, &registry);
}

// --- Failures that are not what they seem ---------------------------------

#[test]
fn a_read_error_of_the_volume_is_retried_not_taken_for_a_bad_bundle() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "flaky", "quay.io/acme/flaky:1.0");
    let registry = Registry::start();
    let site = Site::new();
    // The first read of the bundle fails with EIO, as on a flaky USB link or
    // an NFS server restarting; later reads work. (airlock reads the bundle
    // with positional reads, pread64, on the one file it opened.)
    let path = site.path("flaky.zst").display().to_string();
    let wrapper = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-P",
        &path,
        "-e",
        "trace=read,pread64",
        "-e",
        "inject=read,pread64:error=EIO:when=1",
    ];
    let mut daemon = Daemon::start_under(&wrapper, &site.setup(&[]), &registry, key.public_pem());
    site.drop_as(&bundle, "flaky");
    daemon.wait_until("the import", |d| outcome(d, "imported") >= 1.0);
    assert_landed(&bundle, &registry);
    assert_eq!(outcome(&daemon, "rejected"), 0.0);
    assert!(
        outcome(&daemon, "failed") >= 1.0,
        "the read error was not seen"
    );
    assert!(!site.path("flaky.zst.error.json").exists());
    stop_traced(&mut daemon);
}

#[test]
fn a_bundle_removed_while_its_import_is_retried_is_recorded_as_removed() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "gone", "quay.io/acme/gone:1.0");
    let mut registry = Registry::start();
    registry.stop();
    let site = Site::new();
    let daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());
    site.drop_as(&bundle, "gone");
    daemon.wait_until("a failed attempt", |d| outcome(d, "failed") >= 1.0);
    assert_eq!(daemon.imports()[0]["status"], "retrying");
    std::fs::remove_file(site.path("gone.zst")).expect("remove bundle");
    std::fs::remove_file(site.path("gone.sig.bin")).expect("remove signature");
    daemon.wait_until("the record to say removed", |d| {
        d.imports()[0]["status"] == "removed"
    });
    registry.restart();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(outcome(&daemon, "imported"), 0.0);
    assert_eq!(daemon.imports()[0]["status"], "removed");

    // Dropped again, it imports.
    site.drop_as(&bundle, "gone");
    daemon.wait_until("the import", |d| outcome(d, "imported") >= 1.0);
    assert_eq!(daemon.imports()[0]["status"], "imported");
}

#[test]
fn a_badly_signed_copy_stays_rejected_after_a_restart_though_its_content_was_imported() {
    let key = TestKey::generate(KeyKind::EcP256);
    let stranger = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "alpha", "quay.io/acme/restarted:1.0");
    let registry = Registry::start();
    let site = Site::new();
    let mut daemon = Daemon::start(
        &site.setup(&["--on-success", "move"]),
        &registry,
        key.public_pem(),
    );
    site.drop_as(&bundle, "alpha");
    daemon.wait_until("the import", |d| outcome(d, "imported") >= 1.0);
    site.drop_badly_signed(&bundle, "copy", &stranger);
    daemon.wait_until("the rejection", |d| outcome(d, "rejected") >= 1.0);

    assert!(daemon.terminate().success());
    daemon.restart();
    wait_for_log(&daemon, "were rejected before");
    assert!(
        site.path("copy.zst").exists() && site.path("copy.zst.error.json").exists(),
        "the rejected pair left its place (on_reject is keep)"
    );
    assert!(
        !site.path("processed/copy.zst").exists(),
        "the rejected pair was disposed of as imported"
    );
}
