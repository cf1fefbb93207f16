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

    daemon.wait_until("the real bundle to be imported", |d| {
        d.metric(r#"airlock_bundles_total{outcome="imported"}"#) >= 1.0
    });
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

    daemon.wait_until("the linked bundle to be imported", |d| {
        d.metric(r#"airlock_bundles_total{outcome="imported"}"#) >= 1.0
    });
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
