//! Every name a detached signature arrives under pairs with its bundle, in
//! `verify`, `import` and `watch` alike: airlock's own `B.sig.bin`, Artifact
//! Studio's `bundle-name.zst` + `bundle-name.tar.sig.bin`, and the names
//! other tools append (`B.zst.sig.bin`, `B.zst.sig`) or substitute (`B.sig`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::airlock;
use support::bundle::{BuiltBundle, BundleBuilder, Image, Naming};
use support::daemon::{Daemon, DaemonSetup};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::skopeo;

/// (bundle file name, signature file name): every pairing the naming rule
/// accepts, the Artifact Studio one first.
const NAMINGS: &[(&str, &str)] = &[
    ("bundle-name.zst", "bundle-name.tar.sig.bin"),
    ("bundle-name.zst", "bundle-name.sig.bin"),
    ("bundle-name.zst", "bundle-name.zst.sig.bin"),
    ("bundle-name.zst", "bundle-name.zst.sig"),
    ("bundle-name.zst", "bundle-name.sig"),
    ("bundle-name.tar.zst", "bundle-name.tar.sig.bin"),
    ("bundle-name.tar.zst", "bundle-name.sig.bin"),
    ("bundle-name.tar.zst", "bundle-name.tar.zst.sig.bin"),
    ("bundle-name.tar.zst", "bundle-name.tar.zst.sig"),
    ("bundle-name.tar.zst", "bundle-name.tar.sig"),
];

fn bundle(key: &TestKey, name: &str, reference: &str) -> BuiltBundle {
    BundleBuilder::new(name)
        .image(Image::new(reference).naming(Naming::ContainerdName))
        .build(key)
}

/// Copies `built` into `dir` as `bundle_name` with its signature as
/// `signature_name`; returns the bundle path.
fn lay_out(built: &BuiltBundle, dir: &Path, bundle_name: &str, signature_name: &str) -> PathBuf {
    std::fs::copy(built.sig(), dir.join(signature_name)).expect("copy the signature");
    std::fs::copy(built.zst(), dir.join(bundle_name)).expect("copy the bundle");
    dir.join(bundle_name)
}

fn verify(bundle: &Path, key: &Path) -> Output {
    airlock()
        .arg("verify")
        .arg(bundle)
        .arg("--public-key")
        .arg(key)
        .output()
        .expect("run airlock verify")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn verify_finds_the_signature_under_every_name() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = bundle(&key, "names", "quay.io/acme/names:1.0");
    for (bundle_name, signature_name) in NAMINGS {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = lay_out(&built, dir.path(), bundle_name, signature_name);
        let output = verify(&path, key.public_pem());
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "{bundle_name} + {signature_name}: {}",
            text(&output.stderr)
        );
        assert!(stdout.starts_with("Verified OK\n"), "{stdout}");
        assert!(
            stdout.contains(&format!(
                "with {}",
                dir.path().join(signature_name).display()
            )),
            "{bundle_name} + {signature_name}: {stdout}"
        );
    }
}

#[test]
fn the_artifact_studio_pair_is_exactly_what_openssl_verifies() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = bundle(&key, "studio", "quay.io/acme/studio:1.0");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = lay_out(
        &built,
        dir.path(),
        "bundle-name.zst",
        "bundle-name.tar.sig.bin",
    );
    let signature = dir.path().join("bundle-name.tar.sig.bin");
    assert!(key.openssl_verifies(&path, &signature));
    let output = verify(&path, key.public_pem());
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[test]
fn a_bundle_without_any_signature_names_every_name_looked_for() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = bundle(&key, "unsigned", "quay.io/acme/unsigned:1.0");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bundle-name.zst");
    std::fs::copy(built.zst(), &path).expect("copy the bundle");
    std::fs::write(dir.path().join("bundle-name.pem"), b"not a signature").expect("write");
    let output = verify(&path, key.public_pem());
    assert_eq!(output.status.code(), Some(3));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for name in [
        "bundle-name.sig.bin",
        "bundle-name.tar.sig.bin",
        "bundle-name.zst.sig.bin",
        "bundle-name.zst.sig",
        "bundle-name.sig",
    ] {
        assert!(stderr.contains(name), "{name} in {stderr}");
    }
}

#[test]
fn of_two_differing_signatures_the_one_that_verifies_wins_and_the_other_is_named() {
    let key = TestKey::generate(KeyKind::EcP256);
    let stranger = TestKey::generate(KeyKind::EcP256);
    let built = bundle(&key, "two", "quay.io/acme/two:1.0");
    // The stranger's signature under the first name tried, the good one under
    // the second, then the other way round.
    for (bad_name, good_name) in [
        ("bundle-name.sig.bin", "bundle-name.tar.sig.bin"),
        ("bundle-name.sig", "bundle-name.sig.bin"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = lay_out(&built, dir.path(), "bundle-name.zst", good_name);
        stranger.sign(&path, &dir.path().join(bad_name));
        let output = verify(&path, key.public_pem());
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(output.status.success(), "{bad_name}: {stderr}");
        assert!(stdout.contains(good_name), "{stdout}");
        assert!(
            stderr.contains(bad_name) && stderr.contains("differ"),
            "the ignored {bad_name} is named: {stderr}"
        );
    }

    // Neither verifies: refused, naming the first.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = lay_out(
        &built,
        dir.path(),
        "bundle-name.zst",
        "bundle-name.tar.sig.bin",
    );
    stranger.sign(&path, &dir.path().join("bundle-name.sig.bin"));
    let other = TestKey::generate(KeyKind::EcP256);
    let output = verify(&path, other.public_pem());
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
}

#[test]
fn import_finds_the_signature_under_every_name() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = bundle(&key, "imported", "quay.io/acme/imported:1.0");
    let image = &built.images()[0];
    let registry = Registry::start();
    for (n, (bundle_name, signature_name)) in NAMINGS.iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = lay_out(&built, dir.path(), bundle_name, signature_name);
        let prefix = format!("naming{n}");
        let output = airlock()
            .arg("import")
            .arg(&path)
            .arg("--public-key")
            .arg(key.public_pem())
            .args(["--registry", &format!("{}/{prefix}", registry.host())])
            .args(["--plain-http", "--quiet"])
            .env("DOCKER_CONFIG", dir.path().join("no-docker-config"))
            .output()
            .expect("run airlock import");
        assert!(
            output.status.success(),
            "{bundle_name} + {signature_name}: {}",
            text(&output.stderr)
        );
        assert_eq!(
            skopeo::manifest_digest(&registry, &format!("{prefix}/{}", image.full_ref)),
            image.digest,
            "{bundle_name} + {signature_name}"
        );
    }
}

#[test]
fn watch_pairs_every_signature_name() {
    let key = TestKey::generate(KeyKind::EcP256);
    let registry = Registry::start();
    let drop = tempfile::tempdir().expect("drop dir");
    let state = tempfile::tempdir().expect("state dir");
    let setup = DaemonSetup {
        drop_dir: drop.path().to_owned(),
        state_dir: state.path().to_owned(),
        extra: Vec::new(),
        envs: Vec::new(),
    };
    let daemon = Daemon::start(&setup, &registry, key.public_pem());
    let mut bundles = Vec::new();
    for (n, (bundle_name, signature_name)) in NAMINGS.iter().enumerate() {
        // Distinct content per pair (the daemon imports each content once)
        // and distinct names in the one drop folder.
        let built = bundle(
            &key,
            &format!("w{n}"),
            &format!("quay.io/acme/watched{n}:1.0"),
        );
        let rename = |name: &str| name.replacen("bundle-name", &format!("pair{n}"), 1);
        lay_out(
            &built,
            drop.path(),
            &rename(bundle_name),
            &rename(signature_name),
        );
        bundles.push(built);
    }
    let expected = NAMINGS.len() as f64;
    daemon.wait_until("every pair imported", |d| {
        d.metric(r#"airlock_bundles_total{outcome="imported"}"#) >= expected
    });
    for built in &bundles {
        let image = &built.images()[0];
        assert_eq!(
            skopeo::manifest_digest(&registry, &format!("mirror/{}", image.full_ref)),
            image.digest
        );
    }
    assert_eq!(
        daemon.metric(r#"airlock_bundles_total{outcome="rejected"}"#),
        0.0
    );
    assert_eq!(daemon.metric("airlock_bundles_waiting"), 0.0);
}
