//! `airlock inspect --registry` with a verified bundle shows what the tag
//! policy would hold back: each tag the bundle sets is looked up in the
//! target (read-only), and a tag already at other content is reported with
//! both digests. Checked against the real registry (skopeo for the digest
//! it holds, its access log for "nothing written") and an `oci:` layout.

mod support;

use std::process::Output;

use serde_json::Value;
use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer, Naming};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::{airlock, skopeo};

const APP: &str = "quay.io/acme/app:1.0";
const WORKER: &str = "quay.io/acme/worker:2.0";

fn app(seed: u64) -> Image {
    Image::new(APP)
        .layers(&[Layer::gzip_tar(seed, 16 << 10)])
        .naming(Naming::ContainerdName)
}

/// The release in the target, and a different bundle under the same tag
/// with a second, new image.
fn releases() -> (BuiltBundle, BuiltBundle) {
    let key = TestKey::generate(KeyKind::EcP256);
    let v1 = BundleBuilder::new("v1").image(app(1)).build(&key);
    let v2 = BundleBuilder::new("v2")
        .image(app(2))
        .image(
            Image::new(WORKER)
                .layers(&[Layer::gzip_tar(30, 8 << 10)])
                .naming(Naming::ContainerdName),
        )
        .build(&key);
    (v1, v2)
}

fn run(bundle: &BuiltBundle, command: &str, target: &str, extra: &[&str]) -> Output {
    let mut cmd = airlock();
    cmd.arg(command)
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", target])
        .args(extra)
        .env("DOCKER_CONFIG", bundle.dir().join("no-docker-config"));
    if !target.starts_with("oci:") {
        cmd.arg("--plain-http");
    }
    cmd.output().expect("run airlock")
}

fn inspect_json(bundle: &BuiltBundle, target: &str, extra: &[&str]) -> Value {
    let output = run(
        bundle,
        "inspect",
        target,
        &[&["--output", "json"], extra].concat(),
    );
    assert!(
        output.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("inspect prints JSON")
}

fn imported(bundle: &BuiltBundle, target: &str) {
    let output = run(bundle, "import", target, &["--quiet"]);
    assert!(
        output.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn bundle_digest(inspection: &Value, reference: &str) -> String {
    inspection["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|i| i["sourceRef"] == reference)
        .and_then(|i| i["digest"].as_str())
        .expect("the image's digest")
        .to_owned()
}

#[test]
fn inspect_with_a_registry_reports_a_tag_the_policy_would_hold_with_both_digests() {
    let (v1, v2) = releases();
    let registry = Registry::start();
    let target = format!("{}/mirror", registry.host());
    imported(&v1, &target);
    let in_registry = skopeo::manifest_digest(&registry, "mirror/quay.io/acme/app:1.0");
    let before = registry.settled_requests().len();

    let inspection = inspect_json(&v2, &target, &[]);
    let held = inspection["heldTags"]
        .as_array()
        .expect("tags were looked up");
    assert_eq!(held.len(), 1, "{inspection}");
    assert_eq!(held[0]["sourceRef"], APP);
    assert_eq!(
        held[0]["targetRef"],
        format!("{target}/quay.io/acme/app:1.0")
    );
    assert_eq!(held[0]["existing"], in_registry.as_str());
    assert_eq!(held[0]["bundle"], bundle_digest(&inspection, APP).as_str());
    assert_ne!(held[0]["existing"], held[0]["bundle"]);
    assert_eq!(held[0]["policy"], "fail-if-different");

    let text = run(&v2, "inspect", &target, &[]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains(&format!(
            "held (fail-if-different): {target}/quay.io/acme/app:1.0 is already at {in_registry}"
        )),
        "{stdout}"
    );

    // Inspecting looked, and wrote nothing: the tag is where it was.
    let writes = registry.settled_writes_since(before);
    assert!(
        writes.is_empty(),
        "inspect wrote to the registry: {writes:?}"
    );
    let heads = registry.settled_requests()[before..]
        .iter()
        .filter(|r| r.method == "HEAD" && r.path.contains("/manifests/"))
        .count();
    assert!(
        heads >= 2,
        "the tags were not looked up ({heads} manifest HEADs)"
    );
    assert_eq!(
        skopeo::manifest_digest(&registry, "mirror/quay.io/acme/app:1.0"),
        in_registry
    );
}

#[test]
fn the_same_content_or_an_overwriting_policy_holds_nothing() {
    let (v1, v2) = releases();
    let registry = Registry::start();
    let target = format!("{}/mirror", registry.host());
    imported(&v1, &target);

    let same = inspect_json(&v1, &target, &[]);
    assert_eq!(same["heldTags"], serde_json::json!([]), "{same}");
    let overwrite = inspect_json(&v2, &target, &["--on-existing-tag", "overwrite"]);
    assert_eq!(overwrite["heldTags"], serde_json::json!([]), "{overwrite}");
}

#[test]
fn an_oci_layout_target_is_consulted_and_a_missing_one_is_not_created() {
    let (v1, v2) = releases();
    let work = tempfile::tempdir().expect("work directory");
    let layout = work.path().join("mirror");
    let target = format!("oci:{}", layout.display());

    let missing = inspect_json(
        &v2,
        &format!("oci:{}", work.path().join("none").display()),
        &[],
    );
    assert_eq!(missing["heldTags"], serde_json::json!([]));
    assert!(
        !work.path().join("none").exists(),
        "inspect created the layout"
    );

    imported(&v1, &target);
    let inspection = inspect_json(&v2, &target, &[]);
    let held = inspection["heldTags"]
        .as_array()
        .expect("tags were looked up");
    assert_eq!(held.len(), 1, "{inspection}");
    assert_eq!(held[0]["bundle"], bundle_digest(&inspection, APP).as_str());
    let in_layout = skopeo::sha256_digest(&skopeo::inspect_oci_layout(&layout, APP));
    assert_eq!(held[0]["existing"], in_layout.as_str());
}

#[test]
fn inspect_without_a_key_does_not_contact_the_registry() {
    let (v1, v2) = releases();
    let registry = Registry::start();
    let target = format!("{}/mirror", registry.host());
    imported(&v1, &target);
    let before = registry.settled_requests().len();
    let output = airlock()
        .arg("inspect")
        .arg(v2.zst())
        .args(["--registry", &target, "--plain-http", "--output", "json"])
        .output()
        .expect("run airlock inspect");
    assert!(output.status.success(), "{output:?}");
    let inspection: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(inspection["heldTags"].is_null(), "{inspection}");
    assert_eq!(registry.settled_requests().len(), before);
}
