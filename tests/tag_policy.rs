//! The tag policy (`--on-existing-tag`, `imports.on_existing_tag`): a signed
//! but older (or otherwise different) bundle must not silently move a tag
//! the target already has. Checked against the real registry with skopeo and
//! the registry's access log, and against an `oci:` layout with skopeo.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer, Naming};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::{airlock, skopeo};

const PREFIX: &str = "mirror";
const APP: &str = "quay.io/acme/app:1.0";
const WORKER: &str = "quay.io/acme/worker:2.0";
/// Where the app's tag is written in the registry.
const APP_MANIFEST_PUT: &str = "/v2/mirror/quay.io/acme/app/manifests/1.0";

/// The first release of the app.
fn v1(key: &TestKey) -> BuiltBundle {
    BundleBuilder::new("v1").image(app(1)).build(key)
}

/// Other content under the same tag, and a second image that is new.
fn v2(key: &TestKey) -> BuiltBundle {
    BundleBuilder::new("v2")
        .image(app(2))
        .image(
            Image::new(WORKER)
                .layers(&[Layer::gzip_tar(30, 8 << 10)])
                .naming(Naming::ContainerdName),
        )
        .build(key)
}

fn app(seed: u64) -> Image {
    Image::new(APP)
        .layers(&[Layer::gzip_tar(seed, 16 << 10)])
        .naming(Naming::ContainerdName)
}

/// Runs `airlock import` of `bundle` into `target` with JSON output.
fn import(bundle: &BuiltBundle, target: &str, extra: &[&str]) -> Output {
    let mut command = airlock();
    command
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", target, "--output", "json", "--quiet"])
        .args(extra)
        .env("DOCKER_CONFIG", bundle.dir().join("no-docker-config"));
    if !target.starts_with("oci:") {
        command.arg("--plain-http");
    }
    command.output().expect("run airlock import")
}

fn registry_target(registry: &Registry) -> String {
    format!("{}/{PREFIX}", registry.host())
}

fn report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "import report is not JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "airlock import exited {:?}:\n{}",
        output.status,
        stderr(output)
    );
}

fn app_digest(registry: &Registry) -> String {
    skopeo::manifest_digest(registry, &format!("{PREFIX}/{APP}"))
}

/// The manifest writes to the app's tag in the settled access log after its
/// first `before` lines.
fn tag_puts_since(registry: &Registry, before: usize) -> Vec<String> {
    registry
        .settled_writes_since(before)
        .into_iter()
        .filter(|w| w == &format!("PUT {APP_MANIFEST_PUT}"))
        .collect()
}

#[test]
fn a_tag_at_other_content_is_held_back_by_default_and_the_rest_imports() {
    let key = TestKey::generate(KeyKind::EcP256);
    let registry = Registry::start();
    let target = registry_target(&registry);
    let (old, new) = (v1(&key), v2(&key));
    assert_exit(&import(&old, &target, &[]), 0);
    let v1_digest = old.image(APP).digest.clone();
    let v2_digest = new.image(APP).digest.clone();
    assert_ne!(v1_digest, v2_digest);
    assert_eq!(app_digest(&registry), v1_digest);

    let before = registry.settled_requests().len();
    let held = import(&new, &target, &[]);
    assert_exit(&held, 3);
    let message = stderr(&held);
    for expected in [
        APP,
        v1_digest.as_str(),
        v2_digest.as_str(),
        "fail-if-different",
    ] {
        assert!(
            message.contains(expected),
            "{expected} missing from:\n{message}"
        );
    }
    assert_eq!(app_digest(&registry), v1_digest, "the tag moved");
    assert_eq!(tag_puts_since(&registry, before), Vec::<String>::new());
    assert_eq!(
        skopeo::manifest_digest(&registry, &format!("{PREFIX}/{WORKER}")),
        new.image(WORKER).digest,
        "the rest of the bundle was not imported"
    );
    let report = report(&held);
    let tags = report["heldTags"].as_array().expect("heldTags");
    assert_eq!(tags.len(), 1, "{report}");
    assert_eq!(tags[0]["existing"], v1_digest.as_str());
    assert_eq!(tags[0]["bundle"], v2_digest.as_str());

    // The same bundle again: its tags are where it puts them, nothing held.
    assert_exit(&import(&old, &target, &[]), 0);
    assert_eq!(app_digest(&registry), v1_digest);
}

#[test]
fn skip_leaves_the_tag_with_a_notice_and_overwrite_moves_it() {
    let key = TestKey::generate(KeyKind::EcP256);
    let registry = Registry::start();
    let target = registry_target(&registry);
    let (old, new) = (v1(&key), v2(&key));
    assert_exit(&import(&old, &target, &[]), 0);
    let v1_digest = old.image(APP).digest.clone();

    let before = registry.settled_requests().len();
    let skipped = import(&new, &target, &["--on-existing-tag", "skip"]);
    assert_exit(&skipped, 0);
    assert!(
        stderr(&skipped).contains("tag already points at other content"),
        "no notice:\n{}",
        stderr(&skipped)
    );
    assert_eq!(report(&skipped)["heldTags"][0]["policy"], "skip");
    assert_eq!(app_digest(&registry), v1_digest);
    assert_eq!(tag_puts_since(&registry, before), Vec::<String>::new());

    let moved = import(&new, &target, &["--on-existing-tag", "overwrite"]);
    assert_exit(&moved, 0);
    assert_eq!(app_digest(&registry), new.image(APP).digest);
    assert_eq!(report(&moved)["heldTags"], Value::Array(Vec::new()));
}

#[test]
fn an_oci_layout_target_holds_a_moved_tag_back_too() {
    let key = TestKey::generate(KeyKind::EcP256);
    let dir = tempfile::tempdir().expect("temp dir");
    let mirror = dir.path().join("mirror");
    let target = format!("oci:{}", mirror.display());
    let (old, new) = (v1(&key), v2(&key));
    assert_exit(&import(&old, &target, &[]), 0);
    let v1_digest = old.image(APP).digest.clone();

    let held = import(&new, &target, &[]);
    assert_exit(&held, 3);
    let message = stderr(&held);
    assert!(message.contains(&v1_digest), "{message}");
    assert!(message.contains(&new.image(APP).digest), "{message}");
    assert_eq!(layout_digest(&mirror, APP), v1_digest);
    assert_eq!(
        layout_digest(&mirror, WORKER),
        new.image(WORKER).digest,
        "the rest of the bundle was not imported"
    );

    assert_exit(
        &import(&new, &target, &["--on-existing-tag", "overwrite"]),
        0,
    );
    assert_eq!(layout_digest(&mirror, APP), new.image(APP).digest);
}

/// The digest of the manifest `ref_name` in an OCI layout, read by skopeo.
fn layout_digest(dir: &Path, ref_name: &str) -> String {
    skopeo::sha256_digest(&skopeo::inspect_oci_layout(dir, ref_name))
}

#[test]
fn the_daemon_records_a_held_tag_as_partial_and_counts_it() {
    use support::daemon::{Daemon, DaemonSetup};
    let key = TestKey::generate(KeyKind::EcP256);
    let registry = Registry::start();
    let (old, new) = (v1(&key), v2(&key));
    assert_exit(&import(&old, &registry_target(&registry), &[]), 0);
    let v1_digest = old.image(APP).digest.clone();
    let v2_digest = new.image(APP).digest.clone();

    let work = tempfile::tempdir().expect("tempdir");
    let setup = DaemonSetup {
        drop_dir: work.path().join("drop"),
        state_dir: work.path().join("state"),
        extra: Vec::new(),
        envs: Vec::new(),
    };
    std::fs::create_dir_all(&setup.drop_dir).expect("drop dir");
    let mut daemon = Daemon::start(&setup, &registry, new.public_key_pem());
    let before = registry.settled_requests().len();
    new.copy_into(&setup.drop_dir);
    daemon.wait_until("the partial import", |d| {
        d.imports()[0]["status"] == "partial"
    });
    let record = daemon.imports()[0].to_string();
    for expected in [APP, v1_digest.as_str(), v2_digest.as_str()] {
        assert!(
            record.contains(expected),
            "{expected} missing from {record}"
        );
    }
    assert!(
        record.contains(WORKER),
        "the imported image is not recorded: {record}"
    );
    assert_eq!(daemon.metric("airlock_tags_held_total"), 1.0);
    assert_eq!(app_digest(&registry), v1_digest);
    assert_eq!(tag_puts_since(&registry, before), Vec::<String>::new());
    assert_eq!(
        skopeo::manifest_digest(&registry, &format!("{PREFIX}/{WORKER}")),
        new.image(WORKER).digest
    );
    daemon.terminate();
}
