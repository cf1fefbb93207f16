//! Platform selection, referrers and the bundles of other producers (Zarf
//! packages, Hauler hauls), imported into a real registry (Debian's
//! docker-registry 2.8) and read back with skopeo.

mod support;

use std::process::{Output, Stdio};

use serde_json::Value;
use support::bundle::{
    ANNOTATION_HAULER_KIND, ANNOTATION_REF_NAME, Artifact, BuiltBundle, BundleBuilder, Image,
    Naming,
};
use support::daemon::{Daemon, DaemonSetup};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::{airlock, skopeo, tools};

const PREFIX: &str = "mirror";

/// Runs `airlock import` into `registry`/mirror with JSON output.
fn import(bundle: &BuiltBundle, registry: &Registry, extra: &[&str]) -> Value {
    let target = format!("{}/{PREFIX}", registry.host());
    let output = airlock()
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", &target, "--output", "json", "--quiet"])
        .arg("--plain-http")
        .args(extra)
        .env("DOCKER_CONFIG", bundle.dir().join("no-docker-config"))
        .stdin(Stdio::null())
        .output()
        .expect("run airlock import");
    assert!(
        output.status.success(),
        "airlock import failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("import report is JSON")
}

/// Runs `airlock inspect --output json` (signature verified).
fn inspect(bundle: &BuiltBundle, extra: &[&str]) -> Value {
    let output: Output = airlock()
        .arg("inspect")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--output", "json"])
        .args(extra)
        .output()
        .expect("run airlock inspect");
    assert!(
        output.status.success(),
        "airlock inspect failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("inspection is JSON")
}

fn digests_listed(index: &[u8]) -> Vec<String> {
    let index: Value = serde_json::from_slice(index).expect("an index");
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["digest"].as_str().map(str::to_owned))
        .collect()
}

fn three_platform_bundle(key: &TestKey) -> BuiltBundle {
    BundleBuilder::new("multi")
        .image(
            Image::new("quay.io/acme/app:1.0")
                .naming(Naming::ContainerdName)
                .platforms(&["linux/amd64", "linux/arm64/v8", "linux/s390x"]),
        )
        .build(key)
}

#[test]
fn selected_platforms_rewrite_the_index_and_leave_the_other_layers_out() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = three_platform_bundle(&key);
    let image = bundle.image("quay.io/acme/app:1.0");
    let registry = Registry::start();

    let report = import(
        &bundle,
        &registry,
        &["--platform", "linux/amd64,linux/arm64"],
    );

    let reference = format!("{PREFIX}/quay.io/acme/app:1.0");
    let served = skopeo::inspect_raw(&registry, &reference);
    assert_eq!(
        digests_listed(&served),
        [
            image.manifests[0].digest.clone(),
            image.manifests[1].digest.clone()
        ],
        "the tag lists amd64 and arm64 only, in the bundle's order"
    );
    let pushed = &report["push"]["images"][0];
    assert_eq!(pushed["rewrittenFrom"], image.digest.as_str());
    assert_eq!(pushed["digest"], skopeo::sha256_digest(&served).as_str());
    assert_ne!(pushed["digest"], image.digest.as_str());

    let stored = registry.stored_blobs();
    let s390x = &image.manifests[2];
    assert!(!stored.contains(&s390x.digest), "s390x manifest stored");
    for blob in std::iter::once(&s390x.config).chain(&s390x.layers) {
        assert!(
            !stored.contains(&blob.digest),
            "s390x blob {} stored",
            blob.digest
        );
        assert!(!registry.blob_exists(&format!("{PREFIX}/quay.io/acme/app"), &blob.digest));
    }
    for kept in &image.manifests[..2] {
        for blob in std::iter::once(&kept.config).chain(&kept.layers) {
            assert!(stored.contains(&blob.digest), "{} missing", kept.platform);
        }
    }

    // A client asking for arm64 gets the arm64 manifest.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut copy = tools::command("skopeo");
    copy.args([
        "--insecure-policy",
        "--override-arch",
        "arm64",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
    ])
    .arg(skopeo::docker_ref(&registry, &reference))
    .arg(format!("oci:{}:pulled", dir.path().display()));
    tools::run(&mut copy, "pull the arm64 image with skopeo");
    let pulled = skopeo::inspect_oci_layout(dir.path(), "pulled");
    assert_eq!(skopeo::sha256_digest(&pulled), image.manifests[1].digest);
}

#[test]
fn without_a_platform_selection_the_index_lands_whole() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = three_platform_bundle(&key);
    let image = bundle.image("quay.io/acme/app:1.0");
    let registry = Registry::start();

    let report = import(&bundle, &registry, &[]);

    let reference = format!("{PREFIX}/quay.io/acme/app:1.0");
    assert_eq!(skopeo::manifest_digest(&registry, &reference), image.digest);
    assert!(report["push"]["images"][0].get("rewrittenFrom").is_none());
}

#[test]
fn an_image_of_another_platform_is_skipped_with_the_reason() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("mixed")
        .image(Image::new("quay.io/acme/amd-only:1.0").naming(Naming::ContainerdName))
        .image(
            Image::new("quay.io/acme/app:1.0")
                .naming(Naming::ContainerdName)
                .platforms(&["linux/amd64", "linux/arm64/v8"]),
        )
        .image(
            Image::new("quay.io/acme/s390x-only:1.0")
                .naming(Naming::ContainerdName)
                .platforms(&["linux/s390x"]),
        )
        .build(&key);
    let registry = Registry::start();

    let inspection = inspect(&bundle, &["--platform", "linux/arm64"]);
    assert!(
        inspection["images"][0]["excludedReason"]
            .as_str()
            .is_some_and(|r| r.contains("linux/amd64")),
        "{inspection}"
    );
    assert!(inspection["images"][1]["rewrittenDigest"].is_string());

    let report = import(&bundle, &registry, &["--platform", "linux/arm64"]);

    let skipped = report["skipped"].as_array().expect("skipped");
    assert_eq!(skipped.len(), 2, "{report}");
    let reasons: Vec<&str> = skipped
        .iter()
        .filter_map(|s| s["reason"].as_str())
        .collect();
    assert!(reasons[0].contains("its platform linux/amd64 is not among the selected platforms"));
    assert!(reasons[1].contains("none of its platforms (linux/s390x)"));
    assert!(!registry.manifest_exists(&format!("{PREFIX}/quay.io/acme/amd-only"), "1.0"));
    assert!(registry.manifest_exists(&format!("{PREFIX}/quay.io/acme/app"), "1.0"));
}

/// The top manifest digest `image` (named `reference`) gets in a bundle built
/// with only that image (images are built deterministically from seeds).
fn digest_of(key: &TestKey, image: Image, reference: &str) -> String {
    BundleBuilder::new("probe")
        .image(image)
        .build(key)
        .image(reference)
        .digest
        .clone()
}

#[test]
fn referrers_follow_their_subject_and_are_listed_under_the_referrers_tag() {
    let key = TestKey::generate(KeyKind::EcP256);
    let app = "quay.io/acme/app:1.0";
    let subject = digest_of(&key, Image::new(app).naming(Naming::ContainerdName), app);
    let hex = subject.trim_start_matches("sha256:");
    let bundle = BundleBuilder::new("signed")
        .image(Image::new(app).naming(Naming::ContainerdName))
        .artifact(
            // A cosign signature the legacy way: a tagged image, no subject.
            Artifact::new("application/vnd.dev.cosign.artifact.sig.v1+json")
                .config(
                    "application/vnd.dev.cosign.simplesigning.v1+json",
                    b"{\"critical\":{}}",
                )
                .named(&format!("quay.io/acme/app:sha256-{hex}.sig")),
        )
        .artifact(
            Artifact::new("application/spdx+json")
                .file(
                    "sbom.spdx.json",
                    "application/spdx+json",
                    b"{\"spdxVersion\":\"SPDX-2.3\"}",
                )
                .subject_of(app)
                .naming(Naming::Unnamed),
        )
        .build(&key);
    assert_eq!(bundle.image(app).digest, subject);
    let sbom = bundle.artifacts()[1].digest.clone();
    let registry = Registry::start();

    let report = import(&bundle, &registry, &[]);

    assert_eq!(report["push"]["referrersIndexes"], 1);
    let repository = format!("{PREFIX}/quay.io/acme/app");
    let index = skopeo::inspect_raw(&registry, &format!("{repository}:sha256-{hex}"));
    assert_eq!(digests_listed(&index), std::slice::from_ref(&sbom));
    let listed: Value = serde_json::from_slice(&index).expect("index");
    assert_eq!(
        listed["manifests"][0]["artifactType"],
        "application/spdx+json"
    );
    assert!(skopeo::exists(
        &registry,
        &format!("{repository}:sha256-{hex}.sig")
    ));

    let requests = registry.settled_requests();
    let puts: Vec<&str> = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .map(|r| r.path.as_str())
        .collect();
    let subject_put = puts
        .iter()
        .position(|p| p.ends_with("/manifests/1.0"))
        .expect("subject tagged");
    for (position, path) in puts.iter().enumerate() {
        if path.contains("sha256-") || path.contains(&sbom) {
            assert!(
                position > subject_put,
                "{path} before the subject: {puts:?}"
            );
        }
    }

    // A second bundle with another referrer of the same subject: both listed.
    let attestation = BundleBuilder::new("attested")
        .image(Image::new(app).naming(Naming::ContainerdName))
        .artifact(
            Artifact::new("application/vnd.in-toto+json")
                .file(
                    "provenance.json",
                    "application/vnd.in-toto+json",
                    b"{\"_type\":\"x\"}",
                )
                .subject_of(app)
                .naming(Naming::Unnamed),
        )
        .build(&key);
    let provenance = attestation.artifacts()[0].digest.clone();
    import(&attestation, &registry, &[]);
    let index = skopeo::inspect_raw(&registry, &format!("{repository}:sha256-{hex}"));
    assert_eq!(digests_listed(&index), [sbom, provenance]);

    // Importing the first bundle again changes nothing.
    let again = import(&bundle, &registry, &[]);
    assert_eq!(again["push"]["referrersIndexes"], 0);
}

#[test]
fn zarf_package_is_recognised_and_its_components_listed_as_not_imported() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("zarf-package-demo-amd64-1.2.3.tar")
        .image(Image::new("ghcr.io/acme/web:1.2.3").naming(Naming::ZarfStyle))
        .layout_root("images/")
        .file(
            "zarf.yaml",
            b"kind: ZarfPackageConfig\nmetadata:\n  name: demo\n  version: 1.2.3\ncomponents:\n  - name: web\n",
        )
        .file(
            "components/web/manifests/a.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
        )
        .build(&key);

    let inspection = inspect(&bundle, &[]);
    assert_eq!(inspection["producer"]["format"], "zarf", "{inspection}");
    assert_eq!(inspection["producer"]["name"], "demo");
    assert_eq!(inspection["producer"]["version"], "1.2.3");
    let extra = inspection["extraFiles"].as_array().expect("extra files");
    let component = extra
        .iter()
        .find(|f| f["path"] == "components/web/manifests/a.yaml")
        .expect("the component is listed");
    assert_eq!(
        component["reason"],
        "Zarf component content; deploy it with zarf"
    );

    let registry = Registry::start();
    import(&bundle, &registry, &[]);
    assert_eq!(
        skopeo::manifest_digest(&registry, &format!("{PREFIX}/ghcr.io/acme/web:1.2.3")),
        bundle.image("ghcr.io/acme/web:1.2.3").digest
    );
}

/// A chart made by `helm create` and packaged by `helm package`.
fn packaged_chart(name: &str, version: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let helm = |args: &[&str]| {
        let mut cmd = tools::command("helm");
        cmd.args(args)
            .current_dir(dir.path())
            .env("HELM_CONFIG_HOME", dir.path().join("config"))
            .env("HELM_CACHE_HOME", dir.path().join("cache"));
        tools::run(&mut cmd, "make a chart with helm");
    };
    helm(&["create", name]);
    helm(&["package", name, "--version", version]);
    std::fs::read(dir.path().join(format!("{name}-{version}.tgz"))).expect("helm packaged it")
}

#[test]
fn hauler_haul_imports_images_charts_and_files_into_their_areas() {
    let key = TestKey::generate(KeyKind::EcP256);
    let hauled = |name: &str, kind: &str| {
        Naming::Custom(vec![
            (ANNOTATION_REF_NAME.to_owned(), name.to_owned()),
            (ANNOTATION_HAULER_KIND.to_owned(), kind.to_owned()),
        ])
    };
    let chart_tgz = packaged_chart("podinfo", "6.5.0");
    let bundle = BundleBuilder::new("haul.tar")
        .image(Image::new("registry.k8s.io/pause:3.9").naming(Naming::HaulerStyle))
        .artifact(
            Artifact::new("application/vnd.cncf.helm.config.v1+json")
                .config(
                    "application/vnd.cncf.helm.config.v1+json",
                    b"{\"apiVersion\":\"v2\",\"name\":\"podinfo\",\"version\":\"6.5.0\"}",
                )
                .blob(
                    "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                    &chart_tgz,
                )
                .named("hauler/podinfo:6.5.0")
                .naming(hauled("hauler/podinfo:6.5.0", "dev.hauler/chart")),
        )
        .artifact(
            Artifact::new("application/vnd.hauler.cattle.io.file.config.v1+json")
                .file(
                    "install.sh",
                    "application/vnd.hauler.cattle.io.file.layer.v1",
                    b"#!/bin/sh\n",
                )
                .named("hauler/install.sh:latest")
                .naming(hauled("hauler/install.sh:latest", "dev.hauler/file")),
        )
        .build(&key);

    let inspection = inspect(&bundle, &[]);
    assert_eq!(inspection["producer"]["format"], "hauler", "{inspection}");
    assert_eq!(inspection["images"][1]["sourceRef"], "charts/podinfo:6.5.0");
    assert_eq!(
        inspection["images"][2]["sourceRef"],
        "installers/install.sh:latest"
    );

    let registry = Registry::start();
    import(&bundle, &registry, &[]);
    assert_eq!(
        skopeo::manifest_digest(&registry, &format!("{PREFIX}/registry.k8s.io/pause:3.9")),
        bundle.image("registry.k8s.io/pause:3.9").digest
    );
    let chart = registry
        .manifest(&format!("{PREFIX}/charts/podinfo"), "6.5.0")
        .expect("the chart is in the charts area");
    assert_eq!(chart.body, bundle.artifacts()[0].manifest);
    let pulled = tempfile::tempdir().expect("temp dir");
    let mut pull = tools::command("helm");
    pull.args(["pull", "--plain-http", "--version", "6.5.0", "-d"])
        .arg(pulled.path())
        .arg(format!("oci://{}/{PREFIX}/charts/podinfo", registry.host()))
        .env("HELM_CONFIG_HOME", pulled.path().join("config"))
        .env("HELM_CACHE_HOME", pulled.path().join("cache"));
    tools::run(&mut pull, "pull the Hauler chart with helm");
    assert_eq!(
        std::fs::read(pulled.path().join("podinfo-6.5.0.tgz")).expect("helm wrote the chart"),
        chart_tgz
    );
    let file = registry
        .manifest(&format!("{PREFIX}/installers/install.sh"), "latest")
        .expect("the file is in the installers area");
    assert_eq!(file.body, bundle.artifacts()[1].manifest);
    let script = format!(
        "import oras.client\n\
         c = oras.client.OrasClient(hostname={host:?}, insecure=True)\n\
         c.pull(target={target:?}, outdir={out:?})\n",
        host = registry.host(),
        target = format!("{}/{PREFIX}/installers/install.sh:latest", registry.host()),
        out = pulled.path().join("file").display().to_string(),
    );
    let mut oras = tools::command("python3");
    oras.args(["-c", &script]);
    tools::run(&mut oras, "pull the Hauler file with oras");
    assert_eq!(
        std::fs::read(pulled.path().join("file/install.sh")).expect("oras wrote the file"),
        b"#!/bin/sh\n"
    );
}

#[test]
fn signatures_of_an_index_rewritten_to_some_platforms_are_left_out() {
    let key = TestKey::generate(KeyKind::EcP256);
    let app = "quay.io/acme/app:1.0";
    let image = Image::new(app)
        .naming(Naming::ContainerdName)
        .platforms(&["linux/amd64", "linux/arm64/v8"]);
    let original = digest_of(&key, image.clone(), app);
    let hex = original.trim_start_matches("sha256:");
    let bundle = BundleBuilder::new("signed-multi")
        .image(image)
        .artifact(
            Artifact::new("application/vnd.dev.cosign.artifact.sig.v1+json")
                .named(&format!("quay.io/acme/app:sha256-{hex}.sig")),
        )
        .artifact(
            Artifact::new("application/spdx+json")
                .subject_of(app)
                .naming(Naming::Unnamed),
        )
        .build(&key);
    let registry = Registry::start();

    let report = import(&bundle, &registry, &["--platform", "linux/arm64"]);

    let skipped = report["skipped"].as_array().expect("skipped");
    assert_eq!(skipped.len(), 2, "{report}");
    for entry in skipped {
        assert!(
            entry["reason"]
                .as_str()
                .is_some_and(|r| r.contains("rewritten to the selected platforms")),
            "{entry}"
        );
    }
    let repository = format!("{PREFIX}/quay.io/acme/app");
    assert!(registry.manifest_exists(&repository, "1.0"));
    assert!(!registry.manifest_exists(&repository, &format!("sha256-{hex}.sig")));
    assert!(!registry.manifest_exists(&repository, &format!("sha256-{hex}")));
}

#[test]
fn the_service_takes_platforms_from_imports_platforms_and_refuses_bad_ones() {
    use airlock::config::{DaemonConfig, WatchArgs};
    let base = [
        ("AIRLOCK_DROP__DIRS", "/drop"),
        ("AIRLOCK_TRUST__PUBLIC_KEYS", "/keys"),
        ("AIRLOCK_REGISTRY__TARGET", "harbor.local/mirror"),
    ];
    let vars = |extra: (&str, &str)| -> Vec<(String, String)> {
        base.iter()
            .chain(std::iter::once(&extra))
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };
    let config = DaemonConfig::load_from(
        None,
        vars(("AIRLOCK_IMPORTS__PLATFORMS", "linux/amd64,linux/arm64")),
        &WatchArgs::default(),
    )
    .expect("loads");
    assert_eq!(config.imports.platforms, ["linux/amd64", "linux/arm64"]);
    let options = config.plan_options().expect("platforms parse");
    assert_eq!(
        options
            .platforms
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64/v8"]
    );
    let error = DaemonConfig::load_from(
        None,
        vars(("AIRLOCK_IMPORTS__PLATFORMS", "linux")),
        &WatchArgs::default(),
    )
    .expect_err("refused");
    assert!(error.to_string().contains("imports.platforms"), "{error}");
}

#[test]
fn an_oci_layout_target_lists_referrers_in_its_index_without_a_referrers_tag() {
    let key = TestKey::generate(KeyKind::EcP256);
    let app = "quay.io/acme/app:1.0";
    let bundle = BundleBuilder::new("signed")
        .image(Image::new(app).naming(Naming::ContainerdName))
        .artifact(
            Artifact::new("application/spdx+json")
                .subject_of(app)
                .naming(Naming::Unnamed),
        )
        .build(&key);
    let dir = tempfile::tempdir().expect("temp dir");
    let output = airlock()
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .arg("--registry")
        .arg(format!("oci:{}", dir.path().display()))
        .args(["--output", "json", "--quiet"])
        .output()
        .expect("run airlock import");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let index = std::fs::read(dir.path().join("index.json")).expect("index.json");
    let listed = digests_listed(&index);
    assert!(listed.contains(&bundle.image(app).digest));
    assert!(listed.contains(&bundle.artifacts()[0].digest));
    let text = String::from_utf8_lossy(&index);
    assert!(
        !text.contains("sha256-"),
        "no referrers tag in a layout: {text}"
    );
}

#[test]
fn the_service_imports_only_the_platforms_given_with_watch() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = three_platform_bundle(&key);
    let image = bundle.image("quay.io/acme/app:1.0");
    let registry = Registry::start();
    let drop = tempfile::tempdir().expect("drop dir");
    let state = tempfile::tempdir().expect("state dir");
    let setup = DaemonSetup {
        drop_dir: drop.path().to_owned(),
        state_dir: state.path().to_owned(),
        extra: vec!["--platform".into(), "linux/arm64".into()],
        envs: Vec::new(),
    };
    let daemon = Daemon::start(&setup, &registry, key.public_pem());

    bundle.copy_into(drop.path());
    daemon.wait_until("the import", |d| {
        d.metric(r#"airlock_bundles_total{outcome="imported"}"#) >= 1.0
    });

    let served = skopeo::inspect_raw(&registry, &format!("{PREFIX}/quay.io/acme/app:1.0"));
    assert_eq!(digests_listed(&served), [image.manifests[1].digest.clone()]);
    let imports = daemon.imports();
    assert_eq!(
        imports[0]["pushed"]["images"][0]["rewrittenFrom"],
        image.digest.as_str(),
        "{imports}"
    );
}
