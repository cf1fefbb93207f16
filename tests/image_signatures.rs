//! Image signatures inside a bundle (`--image-signature-key`,
//! `trust.image_signatures`): cosign simple-signing `.sig` manifests and
//! Sigstore bundle referrers, made here with openssl the way cosign makes
//! them, checked before anything is pushed. An image its rule holds back is
//! absent from the registry (skopeo) and nothing of it was written (the
//! registry's access log); the rest imports and keeps its signatures.

mod support;

use std::collections::BTreeMap;
use std::process::Output;

use base64::Engine as _;
use serde_json::Value;
use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer, Naming, seed_from};
use support::cosign;
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::{airlock, skopeo};

const VALID: &str = "quay.io/acme/valid:1.0";
const MISSING: &str = "quay.io/acme/missing:1.0";
const WRONG_KEY: &str = "quay.io/acme/wrong-key:1.0";
const OTHER_DIGEST: &str = "quay.io/acme/other-digest:1.0";
const TAMPERED: &str = "quay.io/acme/tampered:1.0";
/// Signed the cosign 3 way: a Sigstore bundle referrer.
const BUNDLED: &str = "quay.io/acme/bundled:1.0";
/// A Sigstore bundle referrer signed by the wrong key.
const BUNDLED_WRONG_KEY: &str = "quay.io/acme/bundled-wrong-key:1.0";

const ALL: [&str; 7] = [
    VALID,
    MISSING,
    WRONG_KEY,
    OTHER_DIGEST,
    TAMPERED,
    BUNDLED,
    BUNDLED_WRONG_KEY,
];

fn image(reference: &str) -> Image {
    Image::new(reference)
        .layers(&[Layer::gzip_tar(seed_from(reference), 4 << 10)])
        .naming(Naming::ContainerdName)
}

fn repository(reference: &str) -> &str {
    reference.rsplit_once(':').map_or(reference, |(r, _)| r)
}

/// The keys of the story: the bundle's signer, the image vendor, and a
/// stranger.
struct Keys {
    bundle: TestKey,
    vendor: TestKey,
    stranger: TestKey,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            bundle: TestKey::generate(KeyKind::EcP256),
            vendor: TestKey::generate(KeyKind::EcP256),
            stranger: TestKey::generate(KeyKind::EcP256),
        }
    }
}

/// One bundle with an image in every signature state, and the digests.
fn signed_bundle(keys: &Keys) -> (BuiltBundle, BTreeMap<&'static str, String>) {
    let mut probe = BundleBuilder::new("probe");
    for reference in ALL {
        probe = probe.image(image(reference));
    }
    let probe = probe.build(&keys.bundle);
    let digests: BTreeMap<&str, String> = ALL
        .iter()
        .map(|r| (*r, probe.image(r).digest.clone()))
        .collect();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);

    let mut builder = BundleBuilder::new("signed");
    for reference in ALL {
        builder = builder.image(image(reference));
    }
    builder = builder
        .artifact(cosign::signed_by(
            &keys.vendor,
            repository(VALID),
            &digests[VALID],
        ))
        .artifact(cosign::signed_by(
            &keys.stranger,
            repository(WRONG_KEY),
            &digests[WRONG_KEY],
        ));
    // A valid signature of another image, filed under this one's digest.
    let other = cosign::payload(repository(OTHER_DIGEST), &digests[VALID]);
    builder = builder.artifact(cosign::signature_manifest(
        repository(OTHER_DIGEST),
        &digests[OTHER_DIGEST],
        &other,
        &b64(&cosign::sign(&keys.vendor, &other)),
    ));
    // Signed, then changed: the payload still names the image.
    let signed = cosign::payload(repository(TAMPERED), &digests[TAMPERED]);
    let signature = b64(&cosign::sign(&keys.vendor, &signed));
    let tampered = String::from_utf8(signed)
        .expect("payload text")
        .replace("\"optional\":null", "\"optional\":{\"approved\":\"yes\"}");
    builder = builder.artifact(cosign::signature_manifest(
        repository(TAMPERED),
        &digests[TAMPERED],
        tampered.as_bytes(),
        &signature,
    ));
    for (reference, key) in [(BUNDLED, &keys.vendor), (BUNDLED_WRONG_KEY, &keys.stranger)] {
        let statement = cosign::sign_statement(repository(reference), &digests[reference]);
        let bundle = cosign::sigstore_bundle(cosign::envelope(key, &statement));
        builder = builder.artifact(cosign::bundle_referrer(reference, &bundle));
    }
    let bundle = builder.build(&keys.bundle);
    for reference in ALL {
        assert_eq!(bundle.image(reference).digest, digests[reference]);
    }
    (bundle, digests)
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
        .output()
        .expect("run airlock import")
}

fn report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "import report is not JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// sourceRef → (status, heldBack) from a report's or inspection's verdicts.
fn verdicts(list: &[Value]) -> BTreeMap<String, (String, bool)> {
    list.iter()
        .map(|v| {
            (
                v["sourceRef"].as_str().expect("sourceRef").to_owned(),
                (
                    v["status"].as_str().expect("status").to_owned(),
                    v["heldBack"].as_bool().expect("heldBack"),
                ),
            )
        })
        .collect()
}

/// What each image's signatures are, whatever the policy.
fn status_of(reference: &str) -> &'static str {
    match reference {
        VALID | BUNDLED => "verified",
        MISSING => "missing",
        _ => "invalid",
    }
}

fn held_under(policy: &str, reference: &str) -> bool {
    match policy {
        "require" => status_of(reference) != "verified",
        "verify-if-present" => status_of(reference) == "invalid",
        _ => false,
    }
}

#[test]
fn each_policy_holds_back_exactly_the_images_it_should_and_nothing_of_them_is_written() {
    let keys = Keys::new();
    let (bundle, digests) = signed_bundle(&keys);
    let registry = Registry::start();
    let vendor = keys.vendor.public_pem().display().to_string();

    for policy in ["require", "verify-if-present", "ignore"] {
        let prefix = format!("p-{policy}");
        let target = format!("{}/{prefix}", registry.host());
        let before = registry.settled_requests().len();
        let output = import(
            &bundle,
            &target,
            &[
                "--image-signature-key",
                &vendor,
                "--image-signature-policy",
                policy,
            ],
        );
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let any_held = ALL.iter().any(|r| held_under(policy, r));
        assert_eq!(
            output.status.code(),
            Some(if any_held { 3 } else { 0 }),
            "{policy}: {stderr}"
        );
        let found = verdicts(report(&output)["imageSignatures"].as_array().expect("list"));
        let writes = registry.settled_writes_since(before);
        for reference in ALL {
            let held = held_under(policy, reference);
            let expected_status = if policy == "ignore" {
                "not-checked"
            } else {
                status_of(reference)
            };
            assert_eq!(
                found.get(reference),
                Some(&(expected_status.to_owned(), held)),
                "{policy} {reference}: {found:?}"
            );
            let pushed = skopeo::exists(&registry, &format!("{prefix}/{reference}"));
            assert_eq!(pushed, !held, "{policy}: {reference} pushed = {pushed}");
            let hex = digests[reference].trim_start_matches("sha256:");
            let sig = format!("{prefix}/{}:sha256-{hex}.sig", repository(reference));
            if held {
                assert!(
                    stderr.contains(reference),
                    "{policy}: {reference} not named:\n{stderr}"
                );
                let repo_path = format!("/v2/{prefix}/{}/", repository(reference));
                let touched: Vec<&String> =
                    writes.iter().filter(|w| w.contains(&repo_path)).collect();
                assert!(touched.is_empty(), "{policy}: wrote {touched:?}");
                assert!(!skopeo::exists(&registry, &sig), "{policy}: {sig} pushed");
            } else if reference == VALID {
                assert!(skopeo::exists(&registry, &sig), "{policy}: {sig} missing");
                let manifest: Value =
                    serde_json::from_slice(&skopeo::inspect_raw(&registry, &sig)).expect("json");
                assert!(
                    manifest["layers"][0]["annotations"][cosign::SIGNATURE_ANNOTATION].is_string(),
                    "{manifest}"
                );
            }
        }
        if any_held {
            assert!(
                stderr.contains("image signature policy"),
                "{policy}: {stderr}"
            );
        }
    }
    // The cosign 3 signature travels as a referrer: listed under the
    // referrers tag of its image.
    let hex = digests[BUNDLED].trim_start_matches("sha256:");
    let index: Value = serde_json::from_slice(&skopeo::inspect_raw(
        &registry,
        &format!("p-require/{}:sha256-{hex}", repository(BUNDLED)),
    ))
    .expect("referrers index");
    assert_eq!(
        index["manifests"][0]["artifactType"],
        cosign::SIGSTORE_BUNDLE,
        "{index}"
    );
}

#[test]
fn inspect_shows_each_verdict_and_the_problem_without_pushing() {
    let keys = Keys::new();
    let (bundle, _) = signed_bundle(&keys);
    let output = airlock()
        .arg("inspect")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .arg("--image-signature-key")
        .arg(keys.vendor.public_pem())
        .args(["--output", "json"])
        .output()
        .expect("run airlock inspect");
    assert!(output.status.success(), "{output:?}");
    let inspection: Value = serde_json::from_slice(&output.stdout).expect("json");
    let listed: Vec<Value> = inspection["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter_map(|i| i.get("signature").cloned())
        .collect();
    let found = verdicts(&listed);
    assert_eq!(found.len(), ALL.len(), "{found:?}");
    for reference in ALL {
        assert_eq!(
            found[reference],
            (
                status_of(reference).to_owned(),
                held_under("require", reference)
            ),
            "{reference}"
        );
    }
    let problems = |reference: &str| {
        listed
            .iter()
            .find(|v| v["sourceRef"] == reference)
            .and_then(|v| v.get("problems"))
            .map(Value::to_string)
            .unwrap_or_default()
    };
    assert!(
        problems(OTHER_DIGEST).contains("not sha256:"),
        "{}",
        problems(OTHER_DIGEST)
    );
    assert!(problems(VALID).is_empty(), "{}", problems(VALID));
    assert!(problems(TAMPERED).contains("does not verify"));
    assert!(problems(WRONG_KEY).contains("does not verify"));

    let text = airlock()
        .arg("inspect")
        .arg(bundle.zst())
        .arg("--image-signature-key")
        .arg(keys.vendor.public_pem())
        .output()
        .expect("run airlock inspect");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("signature:  missing (require, held back)"),
        "{text}"
    );
    assert!(text.contains("signature:  verified (require) by"), "{text}");
}

#[test]
fn configured_rules_apply_the_first_match_and_the_daemon_records_partial() {
    use support::daemon::{Daemon, DaemonSetup};
    let keys = Keys::new();
    let (bundle, digests) = signed_bundle(&keys);
    let registry = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let site = TestKey::generate(KeyKind::EcP256);
    let config = work.path().join("airlock.yaml");
    // The missing image's repository is exempt; everything else from
    // quay.io/acme needs the vendor's signature.
    std::fs::write(
        &config,
        format!(
            "trust:\n  image_signatures:\n    - images: [\"{}\"]\n      policy: ignore\n    - images: [\"quay.io/acme/*\"]\n      keys: [\"{}\"]\n      policy: require\n",
            repository(MISSING),
            keys.vendor.public_pem().display()
        ),
    )
    .expect("config");
    let setup = DaemonSetup {
        drop_dir: work.path().join("drop"),
        state_dir: work.path().join("state"),
        extra: vec![
            "--config".into(),
            config.display().to_string(),
            "--attestation-key".into(),
            site.private_pem().display().to_string(),
        ],
        envs: Vec::new(),
    };
    std::fs::create_dir_all(&setup.drop_dir).expect("drop dir");
    let mut daemon = Daemon::start(&setup, &registry, bundle.public_key_pem());
    bundle.copy_into(&setup.drop_dir);
    daemon.wait_until("the partial import", |d| {
        d.imports()[0]["status"] == "partial"
    });
    let imports = daemon.imports();
    let held = imports[0]["pushed"]["heldSignatures"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|v| v["sourceRef"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert_eq!(held.len(), 4, "{}", imports[0]);
    let record = imports[0].to_string();
    let attestation = |reference: &str| {
        let hex = digests[reference].trim_start_matches("sha256:");
        format!("mirror/{}:sha256-{hex}.att", repository(reference))
    };
    for held in [WRONG_KEY, OTHER_DIGEST, TAMPERED, BUNDLED_WRONG_KEY] {
        assert!(record.contains(held), "{held} missing from {record}");
        assert!(!skopeo::exists(&registry, &format!("mirror/{held}")));
        assert!(!skopeo::exists(&registry, &attestation(held)), "{held}");
    }
    for pushed in [VALID, BUNDLED, MISSING] {
        assert!(
            skopeo::exists(&registry, &format!("mirror/{pushed}")),
            "{pushed}"
        );
        // The daemon attests what it imported.
        assert!(skopeo::exists(&registry, &attestation(pushed)), "{pushed}");
    }
    assert_eq!(daemon.metric("airlock_image_signatures_held_total"), 4.0);
    daemon.terminate();
}

#[test]
fn a_rule_that_checks_without_keys_is_a_configuration_error() {
    let work = tempfile::tempdir().expect("tempdir");
    let config = work.path().join("airlock.yaml");
    std::fs::write(
        &config,
        "drop:\n  dirs: [/tmp]\ntrust:\n  public_keys: [/dev/null]\n  image_signatures:\n    - images: [\"*\"]\n      policy: require\nregistry:\n  target: 127.0.0.1:5000\n",
    )
    .expect("config");
    let output = airlock()
        .args(["config", "check"])
        .arg(&config)
        .output()
        .expect("run airlock config check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("trust.image_signatures") && stderr.contains("no keys"),
        "{stderr}"
    );

    let keys = Keys::new();
    let bundle = BundleBuilder::new("one")
        .image(image(VALID))
        .build(&keys.bundle);
    let output = import(
        &bundle,
        "127.0.0.1:9/none",
        &["--image-signature-policy", "verify-if-present"],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

/// Where scripts/test installed sigstore-js's signing library.
fn sigstore_js_modules() -> std::path::PathBuf {
    std::env::var_os("SIGSTORE_JS_NODE_MODULES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/test-tools/sigstore-js/node_modules")
        })
}

/// A Sigstore bundle made by sigstore-js (`@sigstore/sign`'s
/// `DSSEBundleBuilder`, a local key, no witnesses) for `statement`.
fn sigstore_js_bundle(key: &TestKey, statement: &Value) -> Vec<u8> {
    let modules = sigstore_js_modules();
    assert!(
        modules.join("@sigstore/sign").is_dir(),
        "@sigstore/sign is not installed in {}: run scripts/test, which installs it with npm",
        modules.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let statement_file = dir.path().join("statement.json");
    std::fs::write(
        &statement_file,
        serde_json::to_vec(statement).expect("json"),
    )
    .expect("write");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/sigstore_js_sign.js");
    let output = support::tools::run(
        std::process::Command::new("node")
            .arg(script)
            .arg(key.private_pem())
            .arg(&statement_file)
            .env("NODE_PATH", &modules),
        "make a Sigstore bundle with sigstore-js",
    );
    let bundle: Value = serde_json::from_slice(&output.stdout).expect("bundle JSON");
    assert_eq!(bundle["mediaType"], cosign::SIGSTORE_BUNDLE, "{bundle}");
    output.stdout
}

#[test]
fn a_sigstore_bundle_made_by_sigstore_js_is_understood() {
    let keys = Keys::new();
    let probe = BundleBuilder::new("probe")
        .image(image(VALID))
        .image(image(WRONG_KEY))
        .build(&keys.bundle);
    let mut builder = BundleBuilder::new("sigstore-js")
        .image(image(VALID))
        .image(image(WRONG_KEY));
    for (reference, key) in [(VALID, &keys.vendor), (WRONG_KEY, &keys.stranger)] {
        let statement =
            cosign::sign_statement(repository(reference), &probe.image(reference).digest);
        let bundle = sigstore_js_bundle(key, &statement);
        builder = builder.artifact(cosign::bundle_referrer(reference, &bundle));
    }
    let bundle = builder.build(&keys.bundle);
    let registry = Registry::start();
    let target = format!("{}/js", registry.host());
    let output = import(
        &bundle,
        &target,
        &[
            "--image-signature-key",
            &keys.vendor.public_pem().display().to_string(),
        ],
    );
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let found = verdicts(report(&output)["imageSignatures"].as_array().expect("list"));
    assert_eq!(found[VALID], ("verified".to_owned(), false), "{found:?}");
    assert_eq!(found[WRONG_KEY], ("invalid".to_owned(), true), "{found:?}");
    assert!(skopeo::exists(&registry, &format!("js/{VALID}")));
    assert!(!skopeo::exists(&registry, &format!("js/{WRONG_KEY}")));
}
