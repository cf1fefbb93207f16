//! Signed import attestations (`--attestation-key`,
//! `attestations.signing_key`): every imported image gets a DSSE envelope
//! holding an in-toto statement at `sha256-<hex>.att` in its repository, in
//! cosign's layout. Found with `skopeo inspect --raw`, the envelope's
//! signature over the DSSE pre-authentication encoding checked with Python's
//! `cryptography`, not with airlock's own code.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer, Naming, seed_from};
use support::cosign;
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::{airlock, skopeo, tools};

const PREFIX: &str = "mirror";
const SIGNED: &str = "quay.io/acme/app:1.0";
const UNSIGNED: &str = "quay.io/acme/worker:2.0";
const PREDICATE_TYPE: &str = "https://airlock.dev/attestations/import/v1";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";

/// Fetches a blob over plain HTTP, verifies the DSSE envelope in it with the
/// PEM public key, and prints the statement; exits non-zero when a
/// signature does not verify.
const VERIFY_DSSE: &str = r#"
import base64, json, sys, urllib.request
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
url, public = sys.argv[1], sys.argv[2]
envelope = json.loads(urllib.request.urlopen(url, timeout=30).read())
payload = base64.b64decode(envelope["payload"])
kind = envelope["payloadType"].encode()
pae = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)
key = serialization.load_pem_public_key(open(public, "rb").read())
for signature in envelope["signatures"]:
    key.verify(base64.b64decode(signature["sig"]), pae, ec.ECDSA(hashes.SHA256()))
print(json.dumps(json.loads(payload)))
"#;

fn image(reference: &str) -> Image {
    Image::new(reference)
        .layers(&[Layer::gzip_tar(seed_from(reference), 4 << 10)])
        .naming(Naming::ContainerdName)
}

fn repository(reference: &str) -> &str {
    reference.rsplit_once(':').map_or(reference, |(r, _)| r)
}

/// A bundle with one image its vendor signed and one unsigned.
fn bundle(bundle_key: &TestKey, vendor: &TestKey) -> BuiltBundle {
    let probe = BundleBuilder::new("probe")
        .image(image(SIGNED))
        .build(bundle_key);
    let digest = probe.image(SIGNED).digest.clone();
    BundleBuilder::new("attested")
        .image(image(SIGNED))
        .image(image(UNSIGNED))
        .artifact(cosign::signed_by(vendor, repository(SIGNED), &digest))
        .build(bundle_key)
}

fn import(bundle: &BuiltBundle, target: &str, extra: &[&str]) -> Output {
    airlock()
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args([
            "--registry",
            target,
            "--plain-http",
            "--output",
            "json",
            "--quiet",
        ])
        .args(extra)
        .env("DOCKER_CONFIG", bundle.dir().join("no-docker-config"))
        .env("POD_NAME", "airlock-0")
        .env("POD_NAMESPACE", "airgap")
        .output()
        .expect("run airlock import")
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{output:?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The DSSE layers under `repo:sha256-<hex>.att`, read with skopeo.
fn attestation_layers(registry: &Registry, repo: &str, digest: &str) -> Vec<Value> {
    let tag = format!("{repo}:sha256-{}.att", digest.trim_start_matches("sha256:"));
    let manifest: Value =
        serde_json::from_slice(&skopeo::inspect_raw(registry, &tag)).expect("manifest JSON");
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    for layer in &layers {
        assert_eq!(layer["mediaType"], DSSE, "{manifest}");
        assert_eq!(
            layer["annotations"]["predicateType"], PREDICATE_TYPE,
            "{manifest}"
        );
        assert_eq!(
            layer["annotations"][cosign::SIGNATURE_ANNOTATION],
            "",
            "{manifest}"
        );
    }
    layers
}

/// The statement in `layer`, if Python's `cryptography` accepts its
/// signature with `public`.
fn python_verified(registry: &Registry, repo: &str, layer: &Value, public: &Path) -> Option<Value> {
    let url = format!(
        "http://{}/v2/{repo}/blobs/{}",
        registry.host(),
        layer["digest"].as_str().expect("digest")
    );
    let output = tools::output(
        Command::new("python3")
            .args(["-c", VERIFY_DSSE, &url])
            .arg(public),
        "verify a DSSE envelope with python cryptography",
    );
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).expect("statement JSON"))
}

/// `openssl pkey -pubin -outform DER | sha256`, the key fingerprint form.
fn fingerprint(public: &Path) -> String {
    let der = tools::run(
        Command::new("openssl")
            .args(["pkey", "-pubin", "-outform", "DER", "-in"])
            .arg(public),
        "public key as DER",
    )
    .stdout;
    support::bundle::sha256_digest(&der)
}

#[test]
fn every_imported_image_gets_a_signed_statement_others_can_verify() {
    let (bundle_key, vendor, site) = (
        TestKey::generate(KeyKind::EcP256),
        TestKey::generate(KeyKind::EcP256),
        TestKey::generate(KeyKind::EcP256),
    );
    let bundle = bundle(&bundle_key, &vendor);
    let registry = Registry::start();
    let target = format!("{}/{PREFIX}", registry.host());
    let output = import(
        &bundle,
        &target,
        &[
            "--attestation-key",
            &site.private_pem().display().to_string(),
            "--image-signature-key",
            &vendor.public_pem().display().to_string(),
            "--image-signature-policy",
            "verify-if-present",
        ],
    );
    assert_exit(&output, 0);
    let report: Value = serde_json::from_slice(&output.stdout).expect("report");
    assert_eq!(report["attestations"], 2, "{report}");

    for (reference, verdict) in [(SIGNED, "verified"), (UNSIGNED, "missing")] {
        let repo = format!("{PREFIX}/{}", repository(reference));
        let digest = bundle.image(reference).digest.clone();
        let layers = attestation_layers(&registry, &repo, &digest);
        assert_eq!(layers.len(), 1, "{layers:?}");
        let statement = python_verified(&registry, &repo, &layers[0], site.public_pem())
            .unwrap_or_else(|| panic!("{reference}: the envelope does not verify"));
        assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(statement["predicateType"], PREDICATE_TYPE);
        assert_eq!(
            statement["subject"][0]["name"],
            format!("{}/{repo}", registry.host()).as_str()
        );
        assert_eq!(
            statement["subject"][0]["digest"]["sha256"],
            digest.trim_start_matches("sha256:")
        );
        let predicate = &statement["predicate"];
        assert_eq!(predicate["bundle"]["name"], "attested.zst", "{predicate}");
        assert_eq!(
            predicate["bundle"]["digest"],
            support::bundle::sha256_digest(&std::fs::read(bundle.zst()).expect("bundle"))
        );
        assert_eq!(
            predicate["bundleVerifiedBy"],
            fingerprint(bundle.public_key_pem())
        );
        assert_eq!(predicate["imageSignature"]["status"], verdict);
        assert_eq!(predicate["source"]["reference"], reference);
        assert_eq!(predicate["importer"]["identity"], "airgap/airlock-0");
        assert_eq!(predicate["airlock"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(
            predicate["importedAt"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 20),
            "{predicate}"
        );
        if reference == SIGNED {
            assert_eq!(
                predicate["imageSignature"]["signedBy"],
                fingerprint(vendor.public_pem())
            );
        }
        // Another key does not verify it.
        assert!(python_verified(&registry, &repo, &layers[0], vendor.public_pem()).is_none());
    }
}

#[test]
fn attestations_already_there_are_kept_and_the_cli_verifies_with_the_site_key() {
    let (bundle_key, vendor, site, earlier) = (
        TestKey::generate(KeyKind::EcP256),
        TestKey::generate(KeyKind::EcP256),
        TestKey::generate(KeyKind::EcP256),
        TestKey::generate(KeyKind::EcP256),
    );
    let bundle = bundle(&bundle_key, &vendor);
    let registry = Registry::start();
    let target = format!("{}/{PREFIX}", registry.host());
    for key in [&earlier, &site] {
        let output = import(
            &bundle,
            &target,
            &[
                "--attestation-key",
                &key.private_pem().display().to_string(),
            ],
        );
        assert_exit(&output, 0);
    }
    let repo = format!("{PREFIX}/{}", repository(SIGNED));
    let digest = bundle.image(SIGNED).digest.clone();
    let layers = attestation_layers(&registry, &repo, &digest);
    assert_eq!(layers.len(), 2, "{layers:?}");
    assert!(python_verified(&registry, &repo, &layers[0], earlier.public_pem()).is_some());
    assert!(python_verified(&registry, &repo, &layers[1], site.public_pem()).is_some());

    let image = format!("{}/{PREFIX}/{SIGNED}", registry.host());
    let verify = |key: &Path, image: &str| {
        airlock()
            .args([
                "attestation",
                "verify",
                image,
                "--plain-http",
                "--output",
                "json",
                "--key",
            ])
            .arg(key)
            .env("DOCKER_CONFIG", bundle.dir().join("no-docker-config"))
            .output()
            .expect("run airlock attestation verify")
    };
    let ok = verify(site.public_pem(), &image);
    assert_exit(&ok, 0);
    let verified: Value = serde_json::from_slice(&ok.stdout).expect("json");
    assert_eq!(verified.as_array().map(Vec::len), Some(1), "{verified}");
    assert_eq!(verified[0]["predicate"]["source"]["reference"], SIGNED);
    assert_eq!(verified[0]["digest"], digest.as_str());
    let by_digest = verify(
        site.public_pem(),
        &format!(
            "{}/{PREFIX}/{}@{digest}",
            registry.host(),
            repository(SIGNED)
        ),
    );
    assert_exit(&by_digest, 0);

    let stranger = verify(vendor.public_pem(), &image);
    assert_exit(&stranger, 3);
    assert!(String::from_utf8_lossy(&stranger.stderr).contains("no valid import attestation"));

    let other = BundleBuilder::new("plain")
        .image(image_of("quay.io/acme/plain:1.0"))
        .build(&bundle_key);
    assert_exit(&import(&other, &target, &[]), 0);
    let missing = verify(
        site.public_pem(),
        &format!("{}/{PREFIX}/quay.io/acme/plain:1.0", registry.host()),
    );
    assert_exit(&missing, 3);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("has no attestations"));
}

fn image_of(reference: &str) -> Image {
    image(reference)
}

#[test]
fn a_key_that_cannot_attest_or_a_layout_target_is_refused_before_anything_is_written() {
    let bundle_key = TestKey::generate(KeyKind::EcP256);
    let vendor = TestKey::generate(KeyKind::EcP256);
    let bundle = bundle(&bundle_key, &vendor);
    let registry = Registry::start();
    let target = format!("{}/{PREFIX}", registry.host());
    let p384 = TestKey::generate(KeyKind::EcP384);
    let refused = import(
        &bundle,
        &target,
        &[
            "--attestation-key",
            &p384.private_pem().display().to_string(),
        ],
    );
    assert_exit(&refused, 2);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ECDSA P-256"));
    assert_eq!(registry.settled_writes(), 0);

    let dir = tempfile::tempdir().expect("tempdir");
    let layout = format!("oci:{}", dir.path().join("mirror").display());
    let site = TestKey::generate(KeyKind::EcP256);
    let refused = import(
        &bundle,
        &layout,
        &[
            "--attestation-key",
            &site.private_pem().display().to_string(),
        ],
    );
    assert_exit(&refused, 2);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("registry targets only"));
    assert!(!dir.path().join("mirror").join("index.json").exists());
}
