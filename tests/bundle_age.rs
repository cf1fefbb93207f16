//! Indefinite freeze: a bundle carries the time it was made
//! (`org.opencontainers.image.created` on its `index.json`, written by
//! `airlock bundle create`), and `trust.max_bundle_age` /
//! `--max-bundle-age` refuses bundles older than that, or that do not say,
//! before anything is pushed. Unset, bundles of any age import.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::bundle::{BuiltBundle, BundleBuilder, Image};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::{airlock, skopeo, tools};

const DAY: u64 = 86_400;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// A bundle made by `airlock bundle create` from the layout of a
/// one-image bundle, stamped `days_ago` days in the past.
struct Made {
    _work: tempfile::TempDir,
    key: TestKey,
    zst: std::path::PathBuf,
}

fn made_days_ago(name: &str, days_ago: u64) -> Made {
    let key = TestKey::generate(KeyKind::EcP256);
    let source = BundleBuilder::new(name)
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let work = tempfile::tempdir().expect("work directory");
    let unpacked = work.path().join("layout");
    std::fs::create_dir(&unpacked).expect("layout directory");
    let layout = source.unpack_with_cli(&unpacked);
    let zst = work.path().join(format!("{name}.zst"));
    let epoch = (now() - days_ago * DAY).to_string();
    tools::run(
        airlock()
            .args(["bundle", "create", "--output"])
            .arg(&zst)
            .arg("--signing-key")
            .arg(key.private_pem())
            .arg("--layout")
            .arg(&layout)
            .env("SOURCE_DATE_EPOCH", &epoch),
        "run airlock bundle create",
    );
    Made {
        _work: work,
        key,
        zst,
    }
}

fn import(zst: &Path, public_key: &Path, registry: &Registry, extra: &[&str]) -> Output {
    airlock()
        .arg("import")
        .arg(zst)
        .arg("--public-key")
        .arg(public_key)
        .args(["--registry", &format!("{}/mirror", registry.host())])
        .args(["--plain-http", "--quiet"])
        .args(extra)
        .output()
        .expect("run airlock import")
}

fn assert_refused(output: &Output, registry: &Registry, fragments: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    for fragment in fragments {
        assert!(stderr.contains(fragment), "no {fragment:?} in: {stderr}");
    }
    let writes = registry.settled_commits_since(0);
    assert!(
        writes.is_empty(),
        "airlock committed to the registry or left a session open: {writes:?}"
    );
}

#[test]
fn bundle_create_stamps_the_index_with_its_creation_time() {
    let made = made_days_ago("stamped", 2);
    let output = tools::run(
        airlock()
            .arg("inspect")
            .arg(&made.zst)
            .arg("--public-key")
            .arg(made.key.public_pem())
            .args(["--output", "json"]),
        "run airlock inspect",
    );
    let inspection: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let created = inspection["created"].as_str().expect("a creation time");
    let seconds = humantime::parse_rfc3339(created).expect("RFC 3339");
    let age = now()
        - seconds
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
    assert!(
        (2 * DAY..2 * DAY + 600).contains(&age),
        "{created}: {age} s old"
    );
}

#[test]
fn a_bundle_older_than_the_maximum_age_is_refused_and_nothing_is_pushed() {
    let made = made_days_ago("frozen", 10);
    let registry = Registry::start();
    let output = import(
        &made.zst,
        made.key.public_pem(),
        &registry,
        &["--max-bundle-age", "7d"],
    );
    assert_refused(
        &output,
        &registry,
        &["too old", "trust.max_bundle_age = 7days", "10days"],
    );
    assert!(registry.catalog().is_empty(), "{:?}", registry.catalog());

    // The same bundle within a longer maximum age imports.
    let output = import(
        &made.zst,
        made.key.public_pem(),
        &registry,
        &["--max-bundle-age", "11d"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(skopeo::exists(&registry, "mirror/quay.io/acme/app:1.0"));
}

#[test]
fn a_bundle_without_a_creation_time_is_refused_only_when_a_maximum_age_is_set() {
    // Bundles made by other tools may carry no creation time.
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle: BuiltBundle = BundleBuilder::new("undated")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let registry = Registry::start();
    let output = import(
        bundle.zst(),
        bundle.public_key_pem(),
        &registry,
        &["--max-bundle-age", "30d"],
    );
    assert_refused(
        &output,
        &registry,
        &["no creation time", "org.opencontainers.image.created"],
    );

    let output = import(bundle.zst(), bundle.public_key_pem(), &registry, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
