//! What whoever can write to a drop folder, or sign a bundle, can make
//! airlock do: swap the file after verification, leave a FIFO or a link to a
//! device where a bundle should be, or sign a bundle built to exhaust memory
//! or time. Each case is measured: peak memory of the process that read it
//! (`VmHWM`) and the time it took.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use airlock::progress::Progress;
use airlock::read::{BundleIndex, ReadLimits};
use airlock::verify::{TrustedKeys, verify_bundle};
use support::airlock;
use support::bundle::{BuiltBundle, BundleBuilder, Image};
use support::daemon::{Daemon, DaemonSetup};
use support::keys::{KeyKind, TestKey};
use support::process::Background;
use support::registry::Registry;

fn trusted(bundle: &BuiltBundle) -> TrustedKeys {
    TrustedKeys::load(&[bundle.public_key_pem().to_owned()]).expect("load the test key")
}

fn one_image(name: &str, reference: &str) -> BuiltBundle {
    let key = TestKey::generate(KeyKind::EcP256);
    BundleBuilder::new(name)
        .image(Image::new(reference))
        .build(&key)
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn a_bundle_renamed_over_after_verification_is_not_what_gets_read() {
    let signed = one_image("signed", "quay.io/acme/signed:1.0");
    let verified = verify_bundle(signed.zst(), signed.sig(), &trusted(&signed)).expect("verifies");
    let verified_sha = verified.sha256().to_owned();

    // Someone with write access to the folder renames an unsigned bundle
    // over the verified path between the signature check and the parsers.
    let unsigned = one_image("unsigned", "quay.io/evil/unsigned:6.6");
    std::fs::rename(unsigned.zst(), signed.zst()).expect("rename over the verified bundle");

    let index = BundleIndex::build(verified, ReadLimits::default(), &Progress::new())
        .expect("the verified bytes are still what is read");
    assert_eq!(index.content_sha256(), verified_sha);
    let names: Vec<String> = index
        .images()
        .iter()
        .map(|image| format!("{:?}", image.name))
        .collect();
    assert!(
        names.iter().all(|n| n.contains("acme/signed")),
        "only the signed content is indexed: {names:?}"
    );
}

#[test]
fn a_fifo_or_a_device_is_refused_at_once_instead_of_read_forever() {
    let bundle = one_image("real", "quay.io/acme/app:1.0");
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo.zst");
    mkfifo(&fifo);
    let zero = dir.path().join("zero.zst");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink to /dev/zero");
    for (path, what) in [(&fifo, "a FIFO"), (&zero, "a device")] {
        let started = Instant::now();
        let mut run = Background::spawn(
            airlock()
                .arg("verify")
                .arg(path)
                .arg("--signature")
                .arg(bundle.sig())
                .arg("--public-key")
                .arg(bundle.public_key_pem()),
        );
        let finished = run.wait(Duration::from_secs(30));
        assert!(!finished.success(), "{what} must not verify");
        assert!(
            finished
                .stderr
                .contains(&format!("not a regular file but {what}")),
            "{}",
            finished.stderr
        );
        eprintln!("{what}: refused in {:?}", started.elapsed());
    }
}

/// A drop folder holding a link to `/dev/zero` and a FIFO, each beside a
/// signature, and then a real bundle.
fn hostile_drop(bundle: &BuiltBundle) -> (tempfile::TempDir, PathBuf) {
    let drop = tempfile::tempdir().expect("drop dir");
    let zero = drop.path().join("zero.zst");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink to /dev/zero");
    std::fs::copy(bundle.sig(), drop.path().join("zero.sig.bin")).expect("copy a signature");
    mkfifo(&drop.path().join("fifo.zst"));
    std::fs::copy(bundle.sig(), drop.path().join("fifo.sig.bin")).expect("copy a signature");
    let path = drop.path().to_owned();
    (drop, path)
}

#[test]
fn links_to_devices_and_fifos_in_the_drop_folder_neither_stall_the_daemon_nor_its_shutdown() {
    let registry = Registry::start();
    let bundle = one_image("beside", "quay.io/acme/beside:1.0");
    let (_drop, drop_path) = hostile_drop(&bundle);
    let state = tempfile::tempdir().expect("state dir");
    let setup = DaemonSetup {
        drop_dir: drop_path.clone(),
        state_dir: state.path().to_owned(),
        extra: Vec::new(),
        envs: Vec::new(),
    };
    let mut daemon = Daemon::start(&setup, &registry, bundle.public_key_pem());
    // Let the hostile files be seen and settle first.
    std::thread::sleep(Duration::from_secs(3));
    bundle.copy_into(&drop_path);

    daemon.wait_until("the real bundle to be imported", imported);
    assert!(registry.manifest_exists("mirror/quay.io/acme/beside", "1.0"));

    let asked = Instant::now();
    let status = daemon.terminate();
    let took = asked.elapsed();
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
}

#[test]
fn a_followed_link_to_a_device_is_refused_and_shutdown_stays_prompt() {
    let registry = Registry::start();
    let bundle = one_image("followed", "quay.io/acme/followed:1.0");
    let (_drop, drop_path) = hostile_drop(&bundle);
    let state = tempfile::tempdir().expect("state dir");
    let setup = DaemonSetup {
        drop_dir: drop_path.clone(),
        state_dir: state.path().to_owned(),
        extra: Vec::new(),
        envs: vec![("AIRLOCK_DROP__FOLLOW_SYMLINKS".into(), "true".into())],
    };
    let mut daemon = Daemon::start(&setup, &registry, bundle.public_key_pem());
    // A link to a real bundle is followed.
    let elsewhere = tempfile::tempdir().expect("bundle dir");
    let (zst, sig) = bundle.copy_into(elsewhere.path());
    std::os::unix::fs::symlink(&zst, drop_path.join("linked.zst")).expect("link the bundle");
    std::os::unix::fs::symlink(&sig, drop_path.join("linked.sig.bin")).expect("link the signature");

    daemon.wait_until("the linked bundle to be imported", imported);
    assert!(registry.manifest_exists("mirror/quay.io/acme/followed", "1.0"));
    let asked = Instant::now();
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
}

/// Peak resident memory of this test process so far (`VmHWM`), in bytes.
/// nextest runs each test in its own process, so growth is this test's.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .expect("VmHWM in /proc/self/status")
}

const MIB: u64 = 1 << 20;

/// Indexes `bundle` as `inspect` does, returning the index, how much the
/// peak memory grew and how long it took.
fn measured_index(
    bundle: &BuiltBundle,
) -> (BundleIndex<airlock::verify::VerifiedBundle>, u64, Duration) {
    let verified = verify_bundle(bundle.zst(), bundle.sig(), &trusted(bundle)).expect("verifies");
    let before = peak_rss();
    let started = Instant::now();
    let index =
        BundleIndex::build(verified, ReadLimits::default(), &Progress::new()).expect("indexes");
    (index, peak_rss().saturating_sub(before), started.elapsed())
}

#[test]
fn yaml_aliases_in_a_signed_pack_cannot_expand_to_gigabytes() {
    // values.yaml: a 1 MiB string and 1,000 aliases to it, 1 GB once
    // expanded, from a few kilobytes compressed.
    let mut values = format!("big: &big \"{}\"\nrepeat:\n", "x".repeat(MIB as usize));
    for _ in 0..1000 {
        values.push_str("  - *big\n");
    }
    let pack_json = r#"{"name":"bomb","version":"1.0.0","layer":"addon","cloudTypes":["all"]}"#;
    let archive = support::pack::gzip_tar(&[
        ("bomb/pack.json".to_owned(), pack_json.as_bytes().to_vec()),
        ("bomb/values.yaml".to_owned(), values.into_bytes()),
    ]);
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("yaml-bomb")
        .file("packs/bomb-1.0.0.tar.gz", &archive)
        .build(&key);

    let (index, grew, took) = measured_index(&bundle);

    eprintln!(
        "YAML alias bomb: peak RSS grew {} MiB, {took:?}",
        grew / MIB
    );
    assert_eq!(
        index.packs().len(),
        1,
        "the pack itself is still recognised"
    );
    assert!(grew < 256 * MIB, "memory grew by {} MiB", grew / MIB);
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

/// An OCI layout whose `index.json` has `entries` entries, all naming one
/// index of `children` distinct manifests (sharing one config and layer),
/// made into a signed bundle with tar and zstd.
fn wide_index_bundle(entries: usize, children: usize) -> BuiltBundle {
    use sha2::Digest as _;
    let key = TestKey::generate(KeyKind::EcP256);
    let base = BundleBuilder::new("wide-index")
        .image(Image::new("quay.io/acme/base:1.0"))
        .build(&key);
    let unpacked = base.dir().join("layout");
    std::fs::create_dir_all(&unpacked).expect("create the unpack directory");
    let layout = base.unpack_with_cli(&unpacked);
    let blobs = layout.join("blobs/sha256");
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).expect("write a blob");
        (format!("sha256:{hex}"), bytes.len())
    };
    let (config, config_size) = put(b"{}");
    let (layer, layer_size) = put(b"layer");
    let mut child_list = Vec::with_capacity(children);
    for i in 0..children {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
            "annotations": {"n": i.to_string()},
        });
        let (digest, size) = put(manifest.to_string().as_bytes());
        child_list.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"architecture": "amd64", "os": "linux"},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": child_list,
    });
    let (index_digest, index_size) = put(index.to_string().as_bytes());
    let top: Vec<serde_json::Value> = (0..entries)
        .map(|i| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": index_digest, "size": index_size,
                "annotations": {"org.opencontainers.image.ref.name": format!("quay.io/acme/wide:{i}")},
            })
        })
        .collect();
    std::fs::write(
        layout.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": top}).to_string(),
    )
    .expect("write index.json");
    let tar = base.dir().join("wide.tar");
    support::tools::run(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        "tar the layout",
    );
    support::tools::run(
        Command::new("zstd")
            .args(["-q", "-f", "-o"])
            .arg(base.zst())
            .arg(&tar),
        "compress the layout",
    );
    key.sign(base.zst(), base.sig());
    base
}

#[test]
fn thousands_of_entries_naming_one_wide_index_are_walked_once() {
    let bundle = wide_index_bundle(3000, 3000);

    let (index, grew, took) = measured_index(&bundle);

    eprintln!(
        "3,000 entries x one index of 3,000 children: peak RSS grew {} MiB, {took:?}",
        grew / MIB
    );
    assert_eq!(index.images().len(), 3000);
    assert!(index.images().iter().all(|i| i.manifests.len() == 3001));
    assert!(grew < 256 * MIB, "memory grew by {} MiB", grew / MIB);
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn sigterm_during_a_long_verification_stops_the_daemon_after_the_grace_period() {
    /// The daemon's grace period for in-flight imports (`daemon::DEFAULT_SHUTDOWN_GRACE`).
    const GRACE: Duration = Duration::from_secs(25);
    let registry = Registry::start();
    let bundle = one_image("huge", "quay.io/acme/huge:1.0");
    let drop = tempfile::tempdir().expect("drop dir");
    let state = tempfile::tempdir().expect("state dir");
    // 200 GiB of holes: minutes of hashing, no disk used.
    let huge = drop.path().join("huge.zst");
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(200 << 30))
        .expect("make a sparse file");
    std::fs::copy(bundle.sig(), drop.path().join("huge.sig.bin")).expect("copy a signature");
    let setup = DaemonSetup {
        drop_dir: drop.path().to_owned(),
        state_dir: state.path().to_owned(),
        extra: Vec::new(),
        envs: Vec::new(),
    };
    let mut daemon = Daemon::start(&setup, &registry, bundle.public_key_pem());
    daemon.wait_until("the huge bundle to be handed to a worker", |d| {
        d.log_text().contains("bundle settled")
    });
    std::thread::sleep(Duration::from_secs(1));

    let asked = Instant::now();
    let status = daemon.terminate();
    let took = asked.elapsed();
    eprintln!("SIGTERM mid-verification to exit: {took:?}");
    assert!(status.success(), "{status}");
    assert!(took < GRACE + Duration::from_secs(10), "took {took:?}");
}

/// Whether the daemon counts an imported bundle. A scrape that fails (the
/// listener busy) counts as not yet, so the wait, not one request, decides.
fn imported(daemon: &Daemon) -> bool {
    daemon.get("/metrics").is_some_and(|(_, text)| {
        text.lines().any(|line| {
            line.starts_with(r#"airlock_bundles_total{outcome="imported"} "#)
                && !line.ends_with(" 0")
        })
    })
}
