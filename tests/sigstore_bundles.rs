//! A bundle file signed with a Sigstore bundle (`X.sigstore.json`) instead
//! of a bare `X.sig.bin`: key-based with a trusted key, and keyless, a
//! certificate from a test CA standing in for Fulcio with an entry of a
//! test log standing in for Rekor, verified offline against a
//! `trusted_root.json` naming them. The CA, the log, its Merkle tree,
//! checkpoint and signed entry timestamps are made by
//! tests/support/sigstore_fixture.py with Python's `cryptography` alone;
//! one key-based bundle is made by sigstore-js. Each refusal names the
//! check that failed and writes nothing to the registry.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::airlock;
use support::bundle::{BuiltBundle, BundleBuilder, Image, Naming};
use support::daemon::{Daemon, DaemonSetup};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::skopeo;

const IDENTITY: &str = "release@example.com";
const ISSUER: &str = "https://issuer.example.com";

fn bundle(key: &TestKey, name: &str, reference: &str) -> BuiltBundle {
    BundleBuilder::new(name)
        .image(Image::new(reference).naming(Naming::ContainerdName))
        .build(key)
}

/// The Sigstore cases the fixture script made for one bundle file.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn for_file(file: &Path) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/sigstore_fixture.py");
        support::tools::run(
            Command::new("python3")
                .arg(script)
                .arg(dir.path())
                .arg(file)
                .args([IDENTITY, ISSUER]),
            "make Sigstore bundles with Python cryptography",
        );
        Fixture { dir }
    }

    fn case(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.sigstore.json"))
    }

    fn trusted_root(&self) -> PathBuf {
        self.dir.path().join("trusted_root.json")
    }

    /// The key of the key-based case.
    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pub.pem")
    }
}

/// `bundle` copied into a fresh folder as `b.zst` with `sigstore` beside it
/// as `b.sigstore.json` and no other signature.
struct Laid {
    dir: tempfile::TempDir,
}

impl Laid {
    fn out(built: &BuiltBundle, sigstore: &Path) -> Laid {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(built.zst(), dir.path().join("b.zst")).expect("copy the bundle");
        std::fs::copy(sigstore, dir.path().join("b.sigstore.json")).expect("copy the signature");
        Laid { dir }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("b.zst")
    }
}

fn keyless_args(trusted_root: &Path, identity: &str, issuer: &str) -> Vec<String> {
    vec![
        "--trusted-root".into(),
        trusted_root.display().to_string(),
        "--certificate-identity".into(),
        identity.into(),
        "--certificate-oidc-issuer".into(),
        issuer.into(),
    ]
}

fn verify(bundle: &Path, trust: &[String]) -> Output {
    airlock()
        .arg("verify")
        .arg(bundle)
        .args(trust)
        .output()
        .expect("run airlock verify")
}

fn import(bundle: &Path, registry: &Registry, prefix: &str, trust: &[String]) -> Output {
    airlock()
        .arg("import")
        .arg(bundle)
        .args(trust)
        .args(["--registry", &format!("{}/{prefix}", registry.host())])
        .args(["--plain-http", "--quiet", "--output", "json"])
        .env("DOCKER_CONFIG", bundle.with_file_name("no-docker-config"))
        .output()
        .expect("run airlock import")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_key_based_sigstore_bundle_verifies_and_imports_like_a_sig_bin() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = bundle(&key, "keyed", "quay.io/acme/keyed:1.0");
    let fixture = Fixture::for_file(built.zst());
    let laid = Laid::out(&built, &fixture.case("key-based"));
    let trust = vec![
        "--public-key".to_owned(),
        fixture.key().display().to_string(),
    ];

    let output = verify(&laid.bundle(), &trust);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(stdout.starts_with("Verified OK\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("verified by {}", fixture.key().display()))
            && stdout.contains("b.sigstore.json"),
        "{stdout}"
    );

    // Another key does not verify it.
    let stranger = TestKey::generate(KeyKind::EcP256);
    let output = verify(
        &laid.bundle(),
        &[
            "--public-key".to_owned(),
            stranger.public_pem().display().to_string(),
        ],
    );
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(
        text(&output.stderr).contains("message signature does not verify with the trusted key"),
        "{}",
        text(&output.stderr)
    );

    let registry = Registry::start();
    let output = import(&laid.bundle(), &registry, "keyed", &trust);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let image = &built.images()[0];
    assert_eq!(
        skopeo::manifest_digest(&registry, &format!("keyed/{}", image.full_ref)),
        image.digest
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("report JSON");
    assert_eq!(
        report["verifiedBy"]["label"],
        fixture.key().display().to_string()
    );
    assert!(
        report["verifiedBy"].get("certificate").is_none(),
        "{report}"
    );
}

/// Where scripts/test installed sigstore-js's signing library.
fn sigstore_js_modules() -> PathBuf {
    std::env::var_os("SIGSTORE_JS_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/sigstore-js/node_modules")
        })
}

#[test]
fn a_message_signature_bundle_made_by_sigstore_js_verifies() {
    let modules = sigstore_js_modules();
    assert!(
        modules.join("@sigstore/sign").is_dir(),
        "@sigstore/sign is not installed in {}: run scripts/test, which installs it with npm",
        modules.display()
    );
    let key = TestKey::generate(KeyKind::EcP256);
    let signer = TestKey::generate(KeyKind::EcP256);
    let built = bundle(&key, "js", "quay.io/acme/js:1.0");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/sigstore_js_sign_blob.js");
    let output = support::tools::run(
        Command::new("node")
            .arg(script)
            .arg(signer.private_pem())
            .arg(built.zst())
            .env("NODE_PATH", &modules),
        "sign a bundle file with sigstore-js",
    );
    let made: Value = serde_json::from_slice(&output.stdout).expect("bundle JSON");
    assert_eq!(
        made["messageSignature"]["messageDigest"]["algorithm"],
        "SHA2_256"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("js.sigstore.json");
    std::fs::write(&path, &output.stdout).expect("write");
    let laid = Laid::out(&built, &path);

    let output = verify(
        &laid.bundle(),
        &[
            "--public-key".to_owned(),
            signer.public_pem().display().to_string(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = verify(
        &laid.bundle(),
        &[
            "--public-key".to_owned(),
            key.public_pem().display().to_string(),
        ],
    );
    assert_eq!(output.status.code(), Some(3), "the wrong key: {output:?}");
}

#[test]
fn keyless_bundles_verify_offline_in_every_layout_and_import() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = bundle(&key, "keyless", "quay.io/acme/keyless:1.0");
    let fixture = Fixture::for_file(built.zst());
    let trust = keyless_args(&fixture.trusted_root(), IDENTITY, ISSUER);
    for case in [
        "keyless",
        "keyless-v0.1-set-only",
        "keyless-proof-only",
        "keyless-legacy-issuer",
    ] {
        let laid = Laid::out(&built, &fixture.case(case));
        let output = verify(&laid.bundle(), &trust);
        let stdout = text(&output.stdout);
        assert!(output.status.success(), "{case}: {}", text(&output.stderr));
        assert!(
            stdout.contains(&format!(
                "verified by {IDENTITY} (issuer {ISSUER}, Rekor log index 1234)"
            )),
            "{case}: {stdout}"
        );
    }

    let laid = Laid::out(&built, &fixture.case("keyless"));
    let registry = Registry::start();
    let output = import(&laid.bundle(), &registry, "keyless", &trust);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let image = &built.images()[0];
    assert_eq!(
        skopeo::manifest_digest(&registry, &format!("keyless/{}", image.full_ref)),
        image.digest
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("report JSON");
    let certificate = &report["verifiedBy"]["certificate"];
    assert_eq!(certificate["identity"], IDENTITY, "{report}");
    assert_eq!(certificate["issuer"], ISSUER, "{report}");
    assert_eq!(certificate["logIndex"], 1234, "{report}");
    assert_eq!(report["verifiedBy"]["algorithm"], "ECDSA P-256", "{report}");
}

#[test]
fn each_failed_keyless_check_is_named_and_nothing_is_pushed() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = bundle(&key, "refused", "quay.io/acme/refused:1.0");
    let fixture = Fixture::for_file(built.zst());
    let root = fixture.trusted_root();
    let trusted = keyless_args(&root, IDENTITY, ISSUER);
    let p384 = vec![
        "--public-key".to_owned(),
        fixture
            .dir
            .path()
            .join("p384.pub.pem")
            .display()
            .to_string(),
    ];
    let cases: Vec<(&str, &str, Vec<String>, &str)> = vec![
        (
            "wrong identity",
            "keyless",
            keyless_args(&root, "someone@example.com", ISSUER),
            "certificate identity [\"release@example.com\"] is not the trusted identity \"someone@example.com\"",
        ),
        (
            "wrong issuer",
            "keyless",
            keyless_args(&root, IDENTITY, "https://other.example.com"),
            "certificate OIDC issuer \"https://issuer.example.com\" is not the trusted issuer \"https://other.example.com\"",
        ),
        (
            "expired at the log time",
            "expired",
            trusted.clone(),
            "not at the log's integratedTime",
        ),
        (
            "not yet valid at the log time",
            "not-yet-valid",
            trusted.clone(),
            "not at the log's integratedTime",
        ),
        (
            "broken inclusion proof",
            "broken-proof",
            trusted.clone(),
            "its inclusion proof does not lead from the entry",
        ),
        (
            "tampered signed entry timestamp",
            "tampered-set",
            trusted.clone(),
            "its signed entry timestamp does not verify with the log's key",
        ),
        (
            "certificate of an untrusted CA",
            "untrusted-ca",
            trusted.clone(),
            "certificate is not issued by a certificate authority of the trusted root",
        ),
        (
            "no code-signing usage",
            "no-code-signing",
            trusted.clone(),
            "certificate does not allow code signing",
        ),
        (
            "signature not by the certificate's key",
            "signed-by-another-key",
            trusted.clone(),
            "its message signature does not verify with the certificate's key",
        ),
        (
            "log entry of another file",
            "entry-of-another-file",
            trusted.clone(),
            "its transparency log entry does not verify: it logs sha256",
        ),
        (
            "checkpoint signed by another key",
            "forged-checkpoint",
            trusted.clone(),
            "its checkpoint is not signed by the log's key",
        ),
        (
            "entry of a log outside the trusted root",
            "unknown-log",
            trusted.clone(),
            "is not a transparency log of the trusted root",
        ),
        (
            "entry with neither SET nor inclusion proof",
            "no-evidence",
            trusted.clone(),
            "it has neither a signed entry timestamp nor an inclusion proof",
        ),
        (
            "CA not yet valid (validFor) at the log time",
            "keyless",
            keyless_args(
                &fixture.dir.path().join("trusted_root-late-ca.json"),
                IDENTITY,
                ISSUER,
            ),
            "the certificate authority is not valid (validFor) at the log's integratedTime",
        ),
        (
            "log key not yet valid (validFor) at the log time",
            "keyless",
            keyless_args(
                &fixture.dir.path().join("trusted_root-late-log.json"),
                IDENTITY,
                ISSUER,
            ),
            "is outside the log key's validFor",
        ),
        (
            "keyless not configured",
            "keyless",
            vec![
                "--public-key".to_owned(),
                fixture.key().display().to_string(),
            ],
            "it is keyless (a certificate), but no keyless signer is trusted",
        ),
        (
            "P-384 signature over SHA-384",
            "sha384",
            p384,
            "its messageDigest is SHA2_384",
        ),
    ];
    let registry = Registry::start();
    for (what, case, trust, expected) in &cases {
        let laid = Laid::out(&built, &fixture.case(case));
        let output = import(&laid.bundle(), &registry, "refused", trust);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{what}: {stderr}");
        assert!(
            stderr.contains("Sigstore bundle") && stderr.contains(expected),
            "{what}: expected {expected:?} in {stderr}"
        );
    }

    // The bundle file changed after it was signed (same size).
    let laid = Laid::out(&built, &fixture.case("keyless"));
    let mut bytes = std::fs::read(laid.bundle()).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(laid.bundle(), &bytes).expect("write");
    let output = import(&laid.bundle(), &registry, "refused", &trusted);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("changed after signing"), "{stderr}");

    assert_eq!(
        registry.settled_writes(),
        0,
        "{:?}",
        registry.settled_requests()
    );
}

#[test]
fn an_unusable_trusted_root_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("b.zst");
    std::fs::write(&bundle, b"x").expect("write");
    let root = dir.path().join("trusted_root.json");
    std::fs::write(&root, br#"{"mediaType": "application/json"}"#).expect("write");
    let output = verify(&bundle, &keyless_args(&root, IDENTITY, ISSUER));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        text(&output.stderr).contains("is not a trusted root's"),
        "{}",
        text(&output.stderr)
    );
    // Identity and issuer come together with the trusted root.
    let output = airlock()
        .arg("verify")
        .arg(&bundle)
        .args(["--trusted-root", &root.display().to_string()])
        .output()
        .expect("run airlock verify");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn the_daemon_imports_a_keyless_pair_and_rejects_an_expired_one() {
    let key = TestKey::generate(KeyKind::EcP256);
    let good = bundle(&key, "good", "quay.io/acme/watched-keyless:1.0");
    let expired = bundle(&key, "expired", "quay.io/acme/watched-expired:1.0");
    let good_fixture = Fixture::for_file(good.zst());
    let expired_fixture = Fixture::for_file(expired.zst());
    let registry = Registry::start();
    let drop = tempfile::tempdir().expect("drop dir");
    let state = tempfile::tempdir().expect("state dir");
    let config_dir = tempfile::tempdir().expect("config dir");
    let config = config_dir.path().join("airlock.yaml");
    std::fs::write(
        &config,
        format!(
            "trust:\n  keyless:\n    - trusted_root: {}\n      identity: {IDENTITY}\n      issuer: {ISSUER}\n    - trusted_root: {}\n      identity: {IDENTITY}\n      issuer: {ISSUER}\n",
            good_fixture.trusted_root().display(),
            expired_fixture.trusted_root().display(),
        ),
    )
    .expect("write the configuration");
    let setup = DaemonSetup {
        drop_dir: drop.path().to_owned(),
        state_dir: state.path().to_owned(),
        extra: vec!["--config".into(), config.display().to_string()],
        envs: Vec::new(),
    };
    // The bundles' own key is trusted too, but neither has a .sig.bin.
    let daemon = Daemon::start(&setup, &registry, key.public_pem());
    std::fs::copy(
        good_fixture.case("keyless"),
        drop.path().join("good.sigstore.json"),
    )
    .expect("copy");
    std::fs::copy(good.zst(), drop.path().join("good.zst")).expect("copy");
    daemon.wait_until("the keyless pair imported", |d| {
        d.metric(r#"airlock_bundles_total{outcome="imported"}"#) >= 1.0
    });
    let image = &good.images()[0];
    assert_eq!(
        skopeo::manifest_digest(&registry, &format!("mirror/{}", image.full_ref)),
        image.digest
    );
    let imports = daemon.imports();
    let record = &imports.as_array().expect("a list")[0];
    assert_eq!(
        record["verifiedBy"]["certificate"]["identity"], IDENTITY,
        "{record}"
    );

    let writes = registry.settled_requests().len();
    std::fs::copy(
        expired_fixture.case("expired"),
        drop.path().join("old.sigstore.json"),
    )
    .expect("copy");
    std::fs::copy(expired.zst(), drop.path().join("old.zst")).expect("copy");
    daemon.wait_until("the expired pair rejected", |d| {
        d.metric(r#"airlock_bundles_total{outcome="rejected"}"#) >= 1.0
    });
    assert!(
        daemon
            .log_text()
            .contains("not at the log's integratedTime"),
        "{}",
        daemon.log_text()
    );
    assert_eq!(registry.settled_writes_since(writes), Vec::<String>::new());
}

#[test]
fn a_keyless_sigstore_bundle_is_checked_the_same_way_under_single_read() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = bundle(&key, "single", "quay.io/acme/single:1.0");
    let fixture = Fixture::for_file(built.zst());
    let root = fixture.trusted_root();
    let laid = Laid::out(&built, &fixture.case("keyless"));
    let registry = Registry::start();

    let mut refused_trust = keyless_args(&root, "someone@example.com", ISSUER);
    refused_trust.push("--single-read".into());
    let refused = import(&laid.bundle(), &registry, "single", &refused_trust);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("is not the trusted identity \"someone@example.com\""),
        "{stderr}"
    );
    // The one pass may have sent blobs into staging sessions before the
    // signature was known: nothing of them may be committed or left open.
    let writes = registry.settled_commits_since(0);
    assert!(
        writes.is_empty(),
        "a refused single read committed or left a session open: {writes:?}"
    );

    let mut trust = keyless_args(&root, IDENTITY, ISSUER);
    trust.push("--single-read".into());
    let output = import(&laid.bundle(), &registry, "single", &trust);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let image = &built.images()[0];
    assert_eq!(
        skopeo::manifest_digest(&registry, &format!("single/{}", image.full_ref)),
        image.digest
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("report JSON");
    assert_eq!(
        report["verifiedBy"]["certificate"]["identity"], IDENTITY,
        "{report}"
    );
}
