//! Files in the drop folder that cannot be imported yet are visible: a
//! bundle whose signature has not arrived, a signature without its bundle,
//! a copy still being written. Temporary names of copy tools are never
//! taken for bundles.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer, Naming};
use support::daemon::{Daemon, DaemonSetup, Site};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::skopeo;

/// The warning delay the tests configure: long enough that the waiting
/// entries are seen before it, short enough to wait for.
const WARN_AFTER_SECS: u64 = 6;
const WARNING: &str = "still waiting for its partner";

/// The waiting tests' daemon, warning after `WARN_AFTER_SECS`.
trait WaitingSite {
    fn start(&self, registry: &Registry, key: &TestKey) -> Daemon;
}

impl WaitingSite for Site {
    fn start(&self, registry: &Registry, key: &TestKey) -> Daemon {
        let setup = DaemonSetup {
            drop_dir: self.drop.path().to_owned(),
            state_dir: self.state.path().to_owned(),
            extra: Vec::new(),
            envs: vec![(
                "AIRLOCK_DROP__UNPAIRED_WARN_AFTER".to_owned(),
                format!("{WARN_AFTER_SECS}s"),
            )],
        };
        Daemon::start(&setup, registry, key.public_pem())
    }
}

fn bundle(key: &TestKey, name: &str, layer_bytes: usize) -> BuiltBundle {
    BundleBuilder::new(name)
        .image(
            Image::new(&format!("quay.io/acme/{name}:1.0"))
                .naming(Naming::ContainerdName)
                .layers(&[Layer::gzip_tar(seed_of(name), layer_bytes)]),
        )
        .build(key)
}

fn seed_of(name: &str) -> u64 {
    name.bytes().fold(7, |seed, b| seed * 31 + u64::from(b))
}

fn waiting(daemon: &Daemon) -> Vec<Value> {
    daemon
        .imports()
        .as_array()
        .expect("a list")
        .iter()
        .filter(|entry| entry["status"] == "waiting")
        .cloned()
        .collect()
}

fn imported(daemon: &Daemon) -> f64 {
    daemon.metric(r#"airlock_bundles_total{outcome="imported"}"#)
}

fn assert_landed(bundle: &BuiltBundle, registry: &Registry) {
    let image = &bundle.images()[0];
    assert_eq!(
        skopeo::manifest_digest(registry, &format!("mirror/{}", image.full_ref)),
        image.digest
    );
}

#[test]
fn a_lone_bundle_and_a_lone_signature_wait_are_warned_about_once_and_import_when_partnered() {
    let key = TestKey::generate(KeyKind::EcP256);
    let registry = Registry::start();
    let site = Site::new();
    let daemon = site.start(&registry, &key);
    let alpha = bundle(&key, "alpha", 4096);
    let beta = bundle(&key, "beta", 4096);

    std::fs::copy(alpha.zst(), site.path("alpha.zst")).expect("copy");
    std::fs::copy(beta.sig(), site.path("beta.tar.sig.bin")).expect("copy");
    let dropped = Instant::now();
    daemon.wait_until("both files listed as waiting", |d| waiting(d).len() == 2);
    let listed_after = dropped.elapsed();
    let entries = waiting(&daemon);
    assert_eq!(entries[0]["names"][0], "alpha.zst", "{entries:?}");
    assert_eq!(entries[0]["missing"][0], "alpha.sig.bin", "{entries:?}");
    assert!(
        entries[0]["missing"]
            .as_array()
            .is_some_and(|m| m.iter().any(|n| n == "alpha.tar.sig.bin")),
        "{entries:?}"
    );
    assert_eq!(entries[1]["names"][0], "beta.tar.sig.bin");
    assert_eq!(entries[1]["missing"][0], "beta.tar.zst");
    assert_eq!(entries[1]["missing"][1], "beta.zst");
    assert!(entries[0]["firstSeen"].is_string(), "{entries:?}");
    assert_eq!(daemon.metric("airlock_bundles_waiting"), 2.0);
    if listed_after < Duration::from_secs(WARN_AFTER_SECS - 2) {
        assert!(
            !daemon.log_text().contains(WARNING),
            "no warning before the delay:\n{}",
            daemon.log_text()
        );
    }

    daemon.wait_until("the two warnings", |d| {
        d.log_text().matches(WARNING).count() == 2
    });
    assert!(dropped.elapsed() >= Duration::from_secs(WARN_AFTER_SECS));
    // Another file makes the watcher look again: the two are not warned
    // about a second time.
    std::fs::write(site.path("gamma.sig.bin"), b"signature").expect("write");
    daemon.wait_until("a third waiting file", |d| waiting(d).len() == 3);
    std::fs::remove_file(site.path("gamma.sig.bin")).expect("remove");
    let log = daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(WARNING) && l.contains("WARN") && l.contains("alpha.zst")),
        "{log}"
    );
    assert_eq!(imported(&daemon), 0.0);

    std::fs::copy(alpha.sig(), site.path("alpha.sig.bin")).expect("copy");
    std::fs::copy(beta.zst(), site.path("beta.zst")).expect("copy");
    daemon.wait_until("both imports", |d| imported(d) >= 2.0);
    assert_landed(&alpha, &registry);
    assert_landed(&beta, &registry);
    daemon.wait_until("nothing waiting", |d| {
        waiting(d).is_empty() && d.metric("airlock_bundles_waiting") == 0.0
    });
    let log = daemon.log_text();
    for file in ["alpha.zst", "beta.tar.sig.bin"] {
        assert_eq!(
            log.lines()
                .filter(|l| l.contains(WARNING) && l.contains(file))
                .count(),
            1,
            "one warning for {file}:\n{log}"
        );
    }
    assert_eq!(
        daemon.metric(r#"airlock_bundles_total{outcome="rejected"}"#),
        0.0
    );
}

#[test]
fn an_rsync_temporary_name_is_not_a_bundle_and_the_rename_starts_the_settle() {
    let key = TestKey::generate(KeyKind::EcP256);
    let registry = Registry::start();
    let site = Site::new();
    let daemon = site.start(&registry, &key);
    let synced = bundle(&key, "synced", 64 * 1024);

    std::fs::copy(synced.sig(), site.path("synced.sig.bin")).expect("copy");
    // rsync writes the data under a hidden temporary name; other tools use
    // .part, .tmp or ~ suffixes, or a hidden name they rename. None of them
    // is a bundle, so the signature waits for its bundle.
    for temporary in [
        ".synced.zst.AbCdEf",
        ".synced.zst",
        "synced.zst.part",
        "synced.zst.tmp",
        "synced.zst~",
    ] {
        std::fs::copy(synced.zst(), site.path(temporary)).expect("copy");
    }
    daemon.wait_until("the signature waiting for its bundle", |d| {
        waiting(d)
            .iter()
            .any(|e| e["names"][0] == "synced.sig.bin" && e["missing"][0] == "synced.zst")
    });
    assert_eq!(waiting(&daemon).len(), 1, "{:?}", waiting(&daemon));
    assert_eq!(imported(&daemon), 0.0);
    assert_eq!(
        daemon.metric(r#"airlock_bundles_total{outcome="rejected"}"#),
        0.0
    );

    let renamed = Instant::now();
    std::fs::rename(site.path(".synced.zst.AbCdEf"), site.path("synced.zst")).expect("rename");
    daemon.wait_until("the import", |d| imported(d) >= 1.0);
    assert!(
        renamed.elapsed() >= Duration::from_secs(1),
        "the settle time starts at the rename"
    );
    assert_landed(&synced, &registry);
    assert_eq!(imported(&daemon), 1.0);
    assert!(waiting(&daemon).is_empty());
}

#[test]
fn a_copy_in_progress_is_logged_at_info_and_imported_once_complete() {
    let key = TestKey::generate(KeyKind::EcP256);
    let registry = Registry::start();
    let site = Site::new();
    let daemon = site.start(&registry, &key);
    let slow = bundle(&key, "slow", 256 * 1024);
    std::fs::copy(slow.sig(), site.path("slow.sig.bin")).expect("copy");

    let bytes = std::fs::read(slow.zst()).expect("read the bundle");
    let mut file = std::fs::File::create(site.path("slow.zst")).expect("create");
    let chunks: Vec<&[u8]> = bytes.chunks(bytes.len() / 4 + 1).collect();
    // Write in pieces until the daemon has seen the file grow, pausing
    // shorter than the settle time between pieces.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut written = 0;
    for chunk in &chunks[..chunks.len() - 1] {
        file.write_all(chunk).expect("write");
        file.sync_all().expect("sync");
        written += 1;
        std::thread::sleep(Duration::from_millis(400));
        if copy_logged(&daemon) || Instant::now() > deadline {
            break;
        }
    }
    daemon.wait_until("the copy-in-progress line", copy_logged);
    assert_eq!(imported(&daemon), 0.0, "a partial copy is not imported");
    for chunk in &chunks[written..] {
        file.write_all(chunk).expect("write");
    }
    file.sync_all().expect("sync");
    drop(file);
    daemon.wait_until("the import", |d| imported(d) >= 1.0);
    assert_landed(&slow, &registry);
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("waiting for the copy to finish"))
        .unwrap_or_default();
    assert!(line.contains("INFO") && line.contains("slow.zst"), "{line}");
    assert_eq!(
        daemon.metric(r#"airlock_bundles_total{outcome="rejected"}"#),
        0.0
    );
}

fn copy_logged(daemon: &Daemon) -> bool {
    daemon.log_text().contains("waiting for the copy to finish")
}
