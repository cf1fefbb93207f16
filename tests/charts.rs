//! Helm charts in a bundle (loose under `charts/`, and inside packs) land as
//! Helm OCI charts that the real helm client pulls back byte for byte, in
//! the shape `helm push` gives them.

mod support;

use std::process::Output;

use serde_json::Value;
use support::airlock;
use support::bundle::{BuiltBundle, BundleBuilder};
use support::chart::{Helm, gzip_tar, pack_with_charts};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::skopeo;

const PREFIX: &str = "mirror";

fn import(bundle: &BuiltBundle, registry: &Registry) -> Output {
    airlock()
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", &format!("{}/{PREFIX}", registry.host())])
        .args(["--plain-http", "--output", "json", "--quiet"])
        .output()
        .expect("run airlock import")
}

fn import_ok(bundle: &BuiltBundle, registry: &Registry) -> Value {
    let output = import(bundle, registry);
    assert!(
        output.status.success(),
        "airlock import failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("import report is JSON")
}

/// `helm pull oci://HOST/REPO --version V` into a fresh directory; the bytes
/// of the one file it wrote.
fn helm_pull(helm: &Helm, registry: &Registry, repository: &str, version: &str) -> Vec<u8> {
    let dest = tempfile::tempdir_in(helm.dir()).expect("tempdir");
    helm.run(
        &[
            "pull",
            &format!("oci://{}/{repository}", registry.host()),
            "--version",
            version,
            "--plain-http",
            "--destination",
            &dest.path().display().to_string(),
        ],
        &format!("pull {repository} {version} with helm"),
    );
    let files: Vec<_> = std::fs::read_dir(dest.path())
        .expect("list the pulled chart")
        .map(|e| e.expect("dir entry").path())
        .collect();
    assert_eq!(files.len(), 1, "helm pull wrote {files:?}");
    std::fs::read(&files[0]).expect("read the pulled chart")
}

fn manifest(registry: &Registry, repo_and_tag: &str) -> Value {
    serde_json::from_slice(&skopeo::inspect_raw(registry, repo_and_tag)).expect("manifest JSON")
}

fn blob(registry: &Registry, repository: &str, digest: &str) -> Vec<u8> {
    let response = registry.get(&format!("/v2/{repository}/blobs/{digest}"));
    assert_eq!(response.status, 200, "GET blob {digest} of {repository}");
    response.body
}

fn chart_bundle(name: &str, build: impl FnOnce(BundleBuilder) -> BundleBuilder) -> BuiltBundle {
    let key = TestKey::generate(KeyKind::EcP256);
    build(BundleBuilder::new(name)).build(&key)
}

#[test]
fn charts_loose_and_inside_packs_are_pulled_back_by_helm_as_helm_pushed_them() {
    let helm = Helm::new();
    let demo = helm.package("demo", "1.2.3+build.7", "A demo <chart> & friends");
    let inner = helm.package("inner", "0.4.0", "Shipped inside a pack");
    let pack = pack_with_charts("web", "1.0.0", &[&inner, &demo]);
    let bundle = chart_bundle("charts", |b| {
        b.file(&format!("charts/{}", demo.file_name), &demo.bytes)
            .file("packs/web-1.0.0.tar.gz", &pack)
    });
    let registry = Registry::start();

    let report = import_ok(&bundle, &registry);

    let not_imported: Vec<&str> = report["extraFiles"]
        .as_array()
        .expect("extraFiles")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert!(
        !not_imported.contains(&"charts/demo-1.2.3+build.7.tgz"),
        "the loose chart is listed as not imported: {not_imported:?}"
    );
    for chart in [&demo, &inner] {
        let repository = format!("{PREFIX}/charts/{}", chart.name);
        let pulled = helm_pull(&helm, &registry, &repository, &chart.version);
        assert_eq!(
            pulled, chart.bytes,
            "helm pulled {} back byte for byte",
            chart.name
        );
        let shown = String::from_utf8(helm.run(
            &[
                "show",
                "chart",
                &format!("oci://{}/{repository}", registry.host()),
                "--version",
                &chart.version,
                "--plain-http",
            ],
            "show the chart with helm",
        ))
        .expect("utf-8");
        assert!(shown.contains(&format!("name: {}", chart.name)), "{shown}");
        assert!(shown.contains(&chart.version), "{shown}");
    }
    // The version's `+` is a `_` in the tag, as helm writes it; the chart
    // found both loose and in the pack is pushed once.
    assert_eq!(
        registry.tags(&format!("{PREFIX}/charts/demo")),
        vec!["1.2.3_build.7"]
    );

    // `helm push` of the same archive to another repository: the same
    // config bytes and layer, the same annotations but `created`.
    let pushed_dir = tempfile::tempdir_in(helm.dir()).expect("tempdir");
    let archive = pushed_dir.path().join(&demo.file_name);
    std::fs::write(&archive, &demo.bytes).expect("write the chart");
    helm.run(
        &[
            "push",
            &archive.display().to_string(),
            &format!("oci://{}/by-helm/charts", registry.host()),
            "--plain-http",
        ],
        "push the chart with helm",
    );
    let ours = manifest(&registry, &format!("{PREFIX}/charts/demo:1.2.3_build.7"));
    let theirs = manifest(&registry, "by-helm/charts/demo:1.2.3_build.7");
    assert_eq!(ours["config"], theirs["config"], "config descriptors");
    assert_eq!(ours["layers"], theirs["layers"], "layer descriptors");
    let config_digest = ours["config"]["digest"].as_str().expect("config digest");
    assert_eq!(
        blob(&registry, &format!("{PREFIX}/charts/demo"), config_digest),
        blob(&registry, "by-helm/charts/demo", config_digest)
    );
    let mut their_annotations = theirs["annotations"].clone();
    let created = their_annotations
        .as_object_mut()
        .expect("annotations")
        .remove("org.opencontainers.image.created");
    assert!(created.is_some(), "helm writes created: {theirs}");
    assert_eq!(ours["annotations"], their_annotations);
    assert_eq!(
        ours["annotations"]["org.opencontainers.image.title"], "demo",
        "{ours}"
    );

    // Importing again writes nothing.
    let before = registry.settled_requests().len();
    import_ok(&bundle, &registry);
    let writes = registry.settled_writes_since(before);
    assert!(writes.is_empty(), "a second import wrote: {writes:?}");
}

#[test]
fn two_different_charts_with_one_name_and_version_are_refused() {
    let helm = Helm::new();
    let loose = helm.package("twin", "1.0.0", "The loose one");
    let other = Helm::new().package("twin", "1.0.0", "The packed one");
    assert_ne!(loose.bytes, other.bytes);
    let pack = pack_with_charts("pack", "2.0.0", &[&other]);
    let bundle = chart_bundle("twins", |b| {
        b.file("charts/twin-1.0.0.tgz", &loose.bytes)
            .file("packs/pack-2.0.0.tar.gz", &pack)
    });
    assert_rejected(
        &bundle,
        &[
            "packs/pack-2.0.0.tar.gz: pack/charts/twin-1.0.0.tgz",
            "charts/twin:1.0.0",
            "charts/twin-1.0.0.tgz",
        ],
    );
}

/// Imports `bundle`, expecting exit 3, one line on stderr holding every
/// fragment, and no write to the registry.
fn assert_rejected(bundle: &BuiltBundle, fragments: &[&str]) {
    let registry = Registry::start();
    let output = import(bundle, &registry);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "expected exit 3: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line reason, got:\n{stderr}");
    for fragment in fragments {
        assert!(
            lines[0].contains(fragment),
            "the reason should mention {fragment:?}: {}",
            lines[0]
        );
    }
    assert!(registry.catalog().is_empty(), "{:?}", registry.catalog());
    let writes = registry.settled_writes_since(0);
    assert!(
        writes.is_empty(),
        "airlock wrote to the registry: {writes:?}"
    );
}

fn rejected_loose_chart(file: &str, bytes: &[u8], reason: &str) {
    let bundle = chart_bundle("bad-chart", |b| b.file(file, bytes));
    assert_rejected(
        &bundle,
        &[&bundle.zst().display().to_string(), file, reason],
    );
}

#[test]
fn a_chart_without_chart_yaml_is_refused() {
    let archive = gzip_tar(&[("nochart/values.yaml", b"a: 1\n")]);
    rejected_loose_chart(
        "charts/nochart-1.0.0.tgz",
        &archive,
        "no <chart>/Chart.yaml",
    );
}

#[test]
fn a_chart_yaml_without_version_is_refused() {
    let archive = gzip_tar(&[
        ("noversion/Chart.yaml", b"apiVersion: v2\nname: noversion\n"),
        ("noversion/values.yaml", b"a: 1\n"),
    ]);
    rejected_loose_chart("charts/noversion.tgz", &archive, "has no version");
}

#[test]
fn a_chart_that_is_not_gzip_is_refused() {
    rejected_loose_chart(
        "charts/plain-1.0.0.tgz",
        b"this is not a gzip stream",
        "not gzip",
    );
}

#[test]
fn a_chart_name_that_cannot_be_a_repository_is_refused() {
    let archive = gzip_tar(&[(
        "MyChart/Chart.yaml",
        b"apiVersion: v2\nname: MyChart\nversion: 1.0.0\n",
    )]);
    rejected_loose_chart("charts/MyChart-1.0.0.tgz", &archive, "\"MyChart\"");
}

#[test]
fn a_broken_chart_inside_a_pack_is_refused_naming_the_pack_and_the_chart() {
    let broken = gzip_tar(&[("y/Chart.yaml", b"apiVersion: v2\nname: y\n")]);
    let pack = gzip_tar(&[
        ("x/pack.json", br#"{"name":"x","version":"1.0"}"#),
        ("x/charts/y-2.0.tgz", &broken),
    ]);
    let bundle = chart_bundle("bad-pack", |b| b.file("packs/x-1.0.tar.gz", &pack));
    assert_rejected(
        &bundle,
        &["packs/x-1.0.tar.gz: x/charts/y-2.0.tgz", "has no version"],
    );
}

#[test]
fn a_signed_chart_keeps_its_provenance_and_helm_verifies_it_after_pull() {
    let helm = Helm::new();
    let (chart, prov, pubring) = helm.package_signed("signed", "2.0.0", "A signed chart");
    let prov_path = format!("charts/{}.prov", chart.file_name);
    let bundle = chart_bundle("signed", |b| {
        b.file(&format!("charts/{}", chart.file_name), &chart.bytes)
            .file(&prov_path, &prov)
    });
    let registry = Registry::start();

    let report = import_ok(&bundle, &registry);

    let not_imported = report["extraFiles"].as_array().expect("extraFiles");
    assert!(not_imported.is_empty(), "not imported: {not_imported:?}");
    let dest = tempfile::tempdir_in(helm.dir()).expect("tempdir");
    helm.run(
        &[
            "pull",
            &format!("oci://{}/{PREFIX}/charts/signed", registry.host()),
            "--version",
            "2.0.0",
            "--plain-http",
            "--verify",
            "--keyring",
            &pubring.display().to_string(),
            "--destination",
            &dest.path().display().to_string(),
        ],
        "pull and verify the signed chart with helm",
    );
    assert!(std::fs::read(dest.path().join(&chart.file_name)).expect("pulled") == chart.bytes);

    // `helm push` finds the .prov beside the chart and pushes it too.
    let pushed_dir = tempfile::tempdir_in(helm.dir()).expect("tempdir");
    let archive = pushed_dir.path().join(&chart.file_name);
    std::fs::write(&archive, &chart.bytes).expect("write the chart");
    std::fs::write(
        pushed_dir.path().join(format!("{}.prov", chart.file_name)),
        &prov,
    )
    .expect("write the provenance");
    helm.run(
        &[
            "push",
            &archive.display().to_string(),
            &format!("oci://{}/by-helm/charts", registry.host()),
            "--plain-http",
        ],
        "push the signed chart with helm",
    );
    let ours = manifest(&registry, &format!("{PREFIX}/charts/signed:2.0.0"));
    let theirs = manifest(&registry, "by-helm/charts/signed:2.0.0");
    assert_eq!(ours["config"], theirs["config"]);
    // helm 3.17 lists the chart and its provenance in either order from one
    // push to the next, so compare them as sets.
    let by_digest = |manifest: &serde_json::Value| {
        let mut layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        layers.sort_by_key(|layer| layer["digest"].as_str().unwrap_or_default().to_owned());
        layers
    };
    assert_eq!(by_digest(&ours), by_digest(&theirs));
    assert_eq!(ours["layers"].as_array().map(Vec::len), Some(2), "{ours}");
}
