//! Palette packs in bundles: pushed where Palette's OCI pack registry looks
//! for them, in the shape `oras push` makes, read back with the `oras`
//! Python package and skopeo; the image-presence policy; bad pack input.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::bundle::{Artifact, BuiltBundle, BundleBuilder, Image};
use support::keys::{KeyKind, TestKey};
use support::pack::PackFixture;
use support::registry::Registry;
use support::{airlock, skopeo, tools};

const PREFIX: &str = "mirror";
const APP: &str = "quay.io/acme/app:1.0";
const ABSENT: &str = "quay.io/acme/absent:9.9";

fn nginx() -> PackFixture {
    PackFixture::new("nginx", "1.2.0")
        .layer("addon")
        .cloud_types(&["aws", "vsphere"])
        .architecture("amd64,arm64")
        .image(APP)
        .chart(
            "nginx-1.2.0.tgz",
            &support::chart::gzip_tar(&[(
                "nginx/Chart.yaml",
                b"apiVersion: v2\nname: nginx\nversion: 1.2.0\n",
            )]),
        )
}

fn cilium() -> PackFixture {
    PackFixture::new("cni-cilium", "1.15.3+spectro")
        .layer("cni")
        .cloud_types(&["all"])
        .architecture("amd64")
        .fips(true)
}

fn bundle_with(name: &str, packs: &[PackFixture]) -> BuiltBundle {
    let key = TestKey::generate(KeyKind::EcP256);
    let mut builder = BundleBuilder::new(name).image(Image::new(APP));
    for pack in packs {
        builder = builder.file(&pack.bundle_path(), &pack.archive());
    }
    builder.build(&key)
}

fn run_import(bundle: &BuiltBundle, target: &str, extra: &[&str]) -> Output {
    airlock()
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", target, "--output", "json", "--quiet"])
        .args(extra)
        .env("DOCKER_CONFIG", bundle.dir().join("no-docker-config"))
        .stdin(Stdio::null())
        .output()
        .expect("run airlock import")
}

fn import_ok(bundle: &BuiltBundle, registry: &Registry, extra: &[&str]) -> Value {
    let target = format!("{}/{PREFIX}", registry.host());
    let mut args = vec!["--plain-http"];
    args.extend_from_slice(extra);
    let output = run_import(bundle, &target, &args);
    assert!(
        output.status.success(),
        "airlock import failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the import report is JSON")
}

/// What reached the registry for good: commits, and sessions left open.
fn writes(registry: &Registry) -> Vec<String> {
    registry.settled_commits_since(0)
}

/// Pulls `reference` with the `oras` Python package into `outdir` and
/// returns the bytes of the file it wrote as `file_name`.
fn oras_pull(registry: &Registry, reference: &str, outdir: &Path, file_name: &str) -> Vec<u8> {
    tools::require("python3");
    let script = "import sys, oras.client\n\
                  c = oras.client.OrasClient(hostname=sys.argv[1], insecure=True)\n\
                  print(c.pull(target=sys.argv[2], outdir=sys.argv[3]))\n";
    tools::run(
        Command::new("python3")
            .args(["-c", script, &registry.host(), reference])
            .arg(outdir),
        &format!("pull {reference} with the oras Python package"),
    );
    std::fs::read(outdir.join(file_name)).expect("oras wrote the pack archive under its title")
}

#[test]
fn packs_land_in_the_pack_area_as_oras_artifacts_and_pull_back_byte_for_byte() {
    let packs = [nginx(), cilium()];
    let bundle = bundle_with("two-packs", &packs);
    let registry = Registry::start();
    let report = import_ok(&bundle, &registry, &[]);

    let catalog = registry.catalog();
    for repository in [
        "mirror/spectro-packs/archive/nginx",
        "mirror/spectro-packs/archive/cni-cilium",
        "mirror/quay.io/acme/app",
    ] {
        assert!(
            catalog.contains(&repository.to_owned()),
            "{repository} not in {catalog:?}"
        );
    }
    assert_eq!(
        registry.tags("mirror/spectro-packs/archive/cni-cilium"),
        vec!["1.15.3_spectro"]
    );
    let reported: Vec<&Value> = report["packs"].as_array().expect("packs").iter().collect();
    assert_eq!(reported.len(), 2, "{report}");
    assert!(
        reported
            .iter()
            .all(|p| p["missingImages"].as_array().is_some_and(|m| m.is_empty())),
        "{report}"
    );

    let pulled = tempfile::tempdir().expect("tempdir");
    for (pack, tag) in [(&packs[0], "1.2.0"), (&packs[1], "1.15.3_spectro")] {
        let reference = format!(
            "{}/{PREFIX}/spectro-packs/archive/{}:{tag}",
            registry.host(),
            pack.name
        );
        let outdir = pulled.path().join(&pack.name);
        let bytes = oras_pull(&registry, &reference, &outdir, &pack.file_name());
        assert!(
            bytes == pack.archive(),
            "{reference}: the pulled archive differs from the bundle's"
        );
    }

    let raw = skopeo::inspect_raw(&registry, "mirror/spectro-packs/archive/nginx:1.2.0");
    let manifest: Value = serde_json::from_slice(&raw).expect("manifest JSON");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.unknown.config.v1+json"
    );
    assert_eq!(manifest["config"]["size"], 2);
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(
        layers[0]["annotations"]["org.opencontainers.image.title"],
        "nginx-1.2.0.tar.gz"
    );
    let annotations = &manifest["annotations"];
    assert_eq!(annotations["io.spectrocloud.pack.layer"], "addon");
    assert_eq!(
        annotations["io.spectrocloud.pack.cloudTypes"],
        "aws,vsphere"
    );
    assert_eq!(
        annotations["io.spectrocloud.pack.architecture"],
        "amd64,arm64"
    );
    assert_eq!(annotations["org.opencontainers.image.version"], "1.2.0");
    let raw = skopeo::inspect_raw(
        &registry,
        "mirror/spectro-packs/archive/cni-cilium:1.15.3_spectro",
    );
    let manifest: Value = serde_json::from_slice(&raw).expect("manifest JSON");
    assert_eq!(manifest["annotations"]["io.spectrocloud.pack.fips"], "true");
    assert_eq!(manifest["annotations"]["io.spectrocloud.pack.layer"], "cni");
}

#[test]
fn importing_packs_again_writes_nothing() {
    let bundle = bundle_with("packs-warm", &[nginx(), cilium()]);
    let registry = Registry::start();
    import_ok(&bundle, &registry, &[]);
    let before = registry.settled_writes_since(0).len();
    let report = import_ok(&bundle, &registry, &[]);
    let after = registry.settled_writes_since(0);
    assert_eq!(
        after.len(),
        before,
        "the second import wrote: {:?}",
        &after[before..]
    );
    assert_eq!(report["push"]["blobsUploaded"], 0, "{report}");
}

#[test]
fn pack_prefix_lands_packs_apart_from_images() {
    let bundle = bundle_with("packs-apart", &[nginx()]);
    let registry = Registry::start();
    import_ok(&bundle, &registry, &["--pack-prefix", "palette-packs"]);
    let catalog = registry.catalog();
    assert!(
        catalog.contains(&"palette-packs/spectro-packs/archive/nginx".to_owned()),
        "{catalog:?}"
    );
    assert!(
        catalog.contains(&"mirror/quay.io/acme/app".to_owned()),
        "{catalog:?}"
    );
    assert!(
        !catalog
            .iter()
            .any(|r| r.starts_with("mirror/spectro-packs")),
        "{catalog:?}"
    );
}

#[test]
fn a_pack_missing_an_image_is_pushed_with_a_warning_by_default() {
    let lonely = PackFixture::new("lonely", "0.1.0").image(ABSENT);
    let bundle = bundle_with("packs-warn", &[nginx(), lonely]);
    let registry = Registry::start();
    let report = import_ok(&bundle, &registry, &[]);
    assert!(
        registry
            .catalog()
            .contains(&"mirror/spectro-packs/archive/lonely".to_owned())
    );
    let lonely = report["packs"]
        .as_array()
        .expect("packs")
        .iter()
        .find(|p| p["name"] == "lonely")
        .expect("lonely reported");
    assert_eq!(lonely["missingImages"], serde_json::json!([ABSENT]));
    assert_eq!(lonely["heldBack"], false);
}

#[test]
fn the_fail_policy_holds_back_only_the_pack_missing_an_image_and_exits_3() {
    let lonely = PackFixture::new("lonely", "0.1.0").image(ABSENT);
    let bundle = bundle_with("packs-fail", &[nginx(), lonely]);
    let registry = Registry::start();
    let target = format!("{}/{PREFIX}", registry.host());
    let output = run_import(
        &bundle,
        &target,
        &["--plain-http", "--pack-image-policy", "fail"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    // The warning is logged; the failure itself is one line.
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{stderr}");
    assert!(lines[0].contains("lonely"), "{}", lines[0]);
    assert!(lines[0].contains(ABSENT), "{}", lines[0]);
    let catalog = registry.catalog();
    assert!(
        !catalog.contains(&"mirror/spectro-packs/archive/lonely".to_owned()),
        "{catalog:?}"
    );
    assert!(
        catalog.contains(&"mirror/spectro-packs/archive/nginx".to_owned()),
        "{catalog:?}"
    );
    assert!(
        catalog.contains(&"mirror/quay.io/acme/app".to_owned()),
        "{catalog:?}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("the report is printed");
    let lonely = report["packs"]
        .as_array()
        .expect("packs")
        .iter()
        .find(|p| p["name"] == "lonely")
        .expect("lonely reported");
    assert_eq!(lonely["heldBack"], true);
}

#[test]
fn an_image_already_in_the_target_satisfies_the_fail_policy() {
    let registry = Registry::start();
    let first = bundle_with("packs-image-first", &[]);
    import_ok(&first, &registry, &[]);
    // A second bundle brings only the pack; its image is already mirrored.
    let key = TestKey::generate(KeyKind::EcP256);
    let pack = PackFixture::new("needs-app", "2.0.0").image(APP);
    let bundle = BundleBuilder::new("packs-image-later")
        .image(Image::new("quay.io/acme/other:1.0"))
        .file(&pack.bundle_path(), &pack.archive())
        .build(&key);
    import_ok(&bundle, &registry, &["--pack-image-policy", "fail"]);
    assert!(
        registry
            .catalog()
            .contains(&"mirror/spectro-packs/archive/needs-app".to_owned())
    );
}

#[test]
fn inspect_lists_packs_with_metadata_and_images_missing_from_the_bundle() {
    let lonely = PackFixture::new("lonely", "0.1.0").image(ABSENT).image(APP);
    let bundle = bundle_with("packs-inspect", &[cilium(), lonely]);
    let output = airlock()
        .arg("inspect")
        .arg(bundle.zst())
        .args([
            "--registry",
            "harbor.local/spectro",
            "--pack-prefix",
            "packs",
        ])
        .args(["--output", "json"])
        .output()
        .expect("run airlock inspect");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let inspection: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let packs = inspection["packs"].as_array().expect("packs");
    let cilium = packs
        .iter()
        .find(|p| p["name"] == "cni-cilium")
        .expect("cilium");
    assert_eq!(cilium["layer"], "cni");
    assert_eq!(cilium["fips"], true);
    assert_eq!(cilium["cloudTypes"], serde_json::json!(["all"]));
    assert_eq!(cilium["architectures"], serde_json::json!(["amd64"]));
    assert_eq!(
        cilium["targetRef"],
        "harbor.local/packs/spectro-packs/archive/cni-cilium:1.15.3_spectro"
    );
    let lonely = packs
        .iter()
        .find(|p| p["name"] == "lonely")
        .expect("lonely");
    assert_eq!(lonely["images"], serde_json::json!([ABSENT, APP]));
    assert_eq!(lonely["missingFromBundle"], serde_json::json!([ABSENT]));

    let text = airlock()
        .arg("inspect")
        .arg(bundle.zst())
        .output()
        .expect("run airlock inspect");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("pack lonely 0.1.0 (packs/lonely-0.1.0.tar.gz)"),
        "{text}"
    );
    assert!(text.contains(ABSENT), "{text}");
    assert!(text.contains("FIPS:         yes"), "{text}");
}

/// Imports a bundle holding one good image and one bad pack: exit 3, one
/// line naming the pack and `fragment`, and nothing written.
fn assert_bad_pack(name: &str, bundle_path: &str, archive: &[u8], fragment: &str) {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new(name)
        .image(Image::new(APP))
        .file(&nginx().bundle_path(), &nginx().archive())
        .file(bundle_path, archive)
        .build(&key);
    let registry = Registry::start();
    let output = run_import(
        &bundle,
        &format!("{}/{PREFIX}", registry.host()),
        &["--plain-http"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{stderr}");
    assert!(lines[0].contains(bundle_path), "{}", lines[0]);
    assert!(lines[0].contains(fragment), "{}", lines[0]);
    assert!(output.stdout.is_empty());
    assert!(registry.catalog().is_empty(), "{:?}", registry.catalog());
    let writes = writes(&registry);
    assert!(writes.is_empty(), "{writes:?}");
}

#[test]
fn a_pack_without_pack_json_is_rejected_and_nothing_is_pushed() {
    let pack = PackFixture::new("nojson", "1.0.0").without_pack_json();
    assert_bad_pack(
        "pack-no-json",
        &pack.bundle_path(),
        &pack.archive(),
        "no pack.json",
    );
}

#[test]
fn a_pack_json_without_a_name_is_rejected_and_nothing_is_pushed() {
    let pack = PackFixture::new("noname", "1.0.0").raw_pack_json(r#"{"version":"1.0.0"}"#);
    assert_bad_pack(
        "pack-no-name",
        &pack.bundle_path(),
        &pack.archive(),
        "has no name",
    );
}

#[test]
fn a_pack_json_without_a_version_is_rejected_and_nothing_is_pushed() {
    let pack = PackFixture::new("noversion", "1.0.0").raw_pack_json(r#"{"name":"noversion"}"#);
    assert_bad_pack(
        "pack-no-version",
        &pack.bundle_path(),
        &pack.archive(),
        "has no version",
    );
}

#[test]
fn a_pack_file_that_is_not_a_tar_gz_is_rejected_and_nothing_is_pushed() {
    assert_bad_pack(
        "pack-not-gzip",
        "packs/broken-1.0.0.tar.gz",
        b"this is not a gzip archive",
        "not a readable pack archive",
    );
}

mod daemon_api {
    use super::*;
    use support::daemon::{Daemon, DaemonSetup};

    fn names(body: &str) -> Vec<String> {
        let value: Value = serde_json::from_str(body).expect("JSON");
        let mut names: Vec<String> = value["packs"]
            .as_array()
            .expect("packs")
            .iter()
            .map(|p| {
                format!(
                    "{}:{}",
                    p["name"].as_str().unwrap_or(""),
                    p["tag"].as_str().unwrap_or("")
                )
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_daemon_lists_the_packs_in_the_registry_with_catalog_filters() {
        let registry = Registry::start();
        let csi = PackFixture::new("csi-aws-ebs", "1.30.0")
            .layer("csi")
            .cloud_types(&["aws"])
            .architecture("amd64,arm64");
        let bundle = bundle_with("packs-api", &[nginx(), cilium(), csi]);
        import_ok(&bundle, &registry, &[]);
        let work = tempfile::tempdir().expect("tempdir");
        let setup = DaemonSetup {
            drop_dir: work.path().join("drop"),
            state_dir: work.path().join("state"),
            extra: Vec::new(),
            envs: Vec::new(),
        };
        std::fs::create_dir_all(&setup.drop_dir).expect("drop dir");
        let daemon = Daemon::start(&setup, &registry, bundle.public_key_pem());

        let get = |query: &str| {
            let (status, body) = daemon
                .get(&format!("/api/v1/packs{query}"))
                .expect("the daemon answers");
            assert_eq!(status, 200, "{query}: {body}");
            names(&body)
        };
        // What the registry itself holds, from its catalog and tag lists.
        let archive = format!("{PREFIX}/spectro-packs/archive/");
        let mut in_registry: Vec<String> = registry
            .catalog()
            .into_iter()
            .filter_map(|repo| repo.strip_prefix(&archive).map(str::to_owned))
            .flat_map(|name| {
                registry
                    .tags(&format!("{archive}{name}"))
                    .into_iter()
                    .map(move |tag| format!("{name}:{tag}"))
            })
            .collect();
        in_registry.sort();
        assert_eq!(get(""), in_registry);
        assert_eq!(
            get(""),
            vec![
                "cni-cilium:1.15.3_spectro",
                "csi-aws-ebs:1.30.0",
                "nginx:1.2.0"
            ]
        );
        assert_eq!(get("?layer=cni"), vec!["cni-cilium:1.15.3_spectro"]);
        assert_eq!(
            get("?cloudType=aws"),
            vec![
                "cni-cilium:1.15.3_spectro",
                "csi-aws-ebs:1.30.0",
                "nginx:1.2.0"
            ]
        );
        assert_eq!(
            get("?cloudType=vsphere"),
            vec!["cni-cilium:1.15.3_spectro", "nginx:1.2.0"]
        );
        assert_eq!(
            get("?architecture=arm64"),
            vec!["csi-aws-ebs:1.30.0", "nginx:1.2.0"]
        );
        assert_eq!(get("?fips=true"), vec!["cni-cilium:1.15.3_spectro"]);
        assert_eq!(get("?fips=false&q=NGI"), vec!["nginx:1.2.0"]);
        let (status, body) = daemon.get("/api/v1/packs?fips=maybe").expect("answer");
        assert_eq!(status, 400, "{body}");

        let (_, body) = daemon.get("/api/v1/packs?q=nginx").expect("answer");
        let value: Value = serde_json::from_str(&body).expect("JSON");
        let nginx = &value["packs"][0];
        assert_eq!(nginx["layer"], "addon");
        assert_eq!(nginx["cloudTypes"], serde_json::json!(["aws", "vsphere"]));
        assert_eq!(
            nginx["reference"],
            format!(
                "{}/mirror/spectro-packs/archive/nginx:1.2.0",
                registry.host()
            )
        );
        assert_eq!(value["truncated"], false);
    }

    #[test]
    fn the_daemon_records_a_bundle_whose_pack_misses_an_image_as_partial_under_the_fail_policy() {
        let registry = Registry::start();
        let lonely = PackFixture::new("lonely", "0.1.0").image(ABSENT);
        let bundle = bundle_with("daemon-packs-fail", &[nginx(), lonely]);
        let work = tempfile::tempdir().expect("tempdir");
        let setup = DaemonSetup {
            drop_dir: work.path().join("drop"),
            state_dir: work.path().join("state"),
            extra: vec!["--pack-image-policy".into(), "fail".into()],
            envs: vec![(
                "AIRLOCK_REGISTRY__PACK_PREFIX".into(),
                "palette-packs".into(),
            )],
        };
        std::fs::create_dir_all(&setup.drop_dir).expect("drop dir");
        let daemon = Daemon::start(&setup, &registry, bundle.public_key_pem());
        bundle.copy_into(&setup.drop_dir);
        daemon.wait_until("the rejection", |d| {
            d.metric(r#"airlock_bundles_total{outcome="rejected"}"#) >= 1.0
        });
        let imports = daemon.imports();
        assert_eq!(imports[0]["status"], "partial", "{imports}");
        let record = imports[0].to_string();
        assert!(record.contains("lonely"), "{record}");
        assert!(record.contains(ABSENT), "{record}");
        let catalog = registry.catalog();
        assert!(
            catalog.contains(&"palette-packs/spectro-packs/archive/nginx".to_owned()),
            "{catalog:?}"
        );
        assert!(
            !catalog.iter().any(|r| r.ends_with("/lonely")),
            "{catalog:?}"
        );
        let (status, body) = daemon.get("/api/v1/packs").expect("answer");
        assert_eq!(status, 200, "{body}");
        assert_eq!(names(&body), vec!["nginx:1.2.0"]);
    }
}

#[test]
fn a_pack_already_in_the_layout_lands_in_the_pack_area_unchanged() {
    let key = TestKey::generate(KeyKind::EcP256);
    let archive = PackFixture::new("prebuilt", "3.1.0").archive();
    let bundle = BundleBuilder::new("layout-pack")
        .image(Image::new(APP))
        .artifact(
            Artifact::new("application/vnd.unknown.config.v1+json")
                .config("application/vnd.unknown.config.v1+json", b"{}")
                .file(
                    "prebuilt-3.1.0.tar.gz",
                    "application/vnd.oci.image.layer.v1.tar",
                    &archive,
                )
                .named("spectro-packs/archive/prebuilt:3.1.0"),
        )
        .build(&key);
    let inspected = airlock()
        .arg("inspect")
        .arg(bundle.zst())
        .args(["--output", "json"])
        .output()
        .expect("inspect");
    let inspection: Value = serde_json::from_slice(&inspected.stdout).expect("JSON");
    assert_eq!(inspection["packs"][0]["name"], "prebuilt", "{inspection}");
    assert_eq!(inspection["packs"][0]["version"], "3.1.0", "{inspection}");

    let registry = Registry::start();
    import_ok(&bundle, &registry, &[]);
    let pulled = tempfile::tempdir().expect("tempdir");
    let bytes = oras_pull(
        &registry,
        &format!(
            "{}/{PREFIX}/spectro-packs/archive/prebuilt:3.1.0",
            registry.host()
        ),
        pulled.path(),
        "prebuilt-3.1.0.tar.gz",
    );
    assert!(bytes == archive, "the pulled archive differs");
    assert!(
        !registry.catalog().iter().any(|r| r.contains("docker.io")),
        "{:?}",
        registry.catalog()
    );
}

#[test]
fn packs_in_an_oci_layout_target_are_listed_from_its_index() {
    let bundle = bundle_with("packs-layout", &[nginx(), cilium()]);
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join("mirror");
    let output = run_import(&bundle, &format!("oci:{}", dir.display()), &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let packs: Vec<String> = layout_ref_names(&dir)
        .into_iter()
        .filter(|n| n.starts_with("spectro-packs/"))
        .collect();
    assert_eq!(
        packs,
        vec![
            "spectro-packs/archive/cni-cilium:1.15.3_spectro",
            "spectro-packs/archive/nginx:1.2.0"
        ]
    );
    let listed = airlock::push::catalog::layout_packs(&dir).expect("listed");
    let names: Vec<(&str, &str, Option<&str>)> = listed
        .packs
        .iter()
        .map(|p| (p.name.as_str(), p.tag.as_str(), p.metadata.layer.as_deref()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("cni-cilium", "1.15.3_spectro", Some("cni")),
            ("nginx", "1.2.0", Some("addon"))
        ]
    );
    // skopeo reads the pack back from the layout by its reference name.
    let raw = skopeo::inspect_oci_layout(&dir, "spectro-packs/archive/nginx:1.2.0");
    let manifest: Value = serde_json::from_slice(&raw).expect("manifest");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.unknown.config.v1+json"
    );
}

#[test]
fn the_fail_policy_checks_an_oci_layout_target_by_its_index() {
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join("mirror");
    let target = format!("oci:{}", dir.display());
    let first = bundle_with("layout-image-first", &[]);
    assert!(run_import(&first, &target, &[]).status.success());
    let key = TestKey::generate(KeyKind::EcP256);
    let pack = PackFixture::new("needs-app", "2.0.0").image(APP);
    let lonely = PackFixture::new("lonely", "0.1.0").image(ABSENT);
    let bundle = BundleBuilder::new("layout-packs-later")
        .image(Image::new("quay.io/acme/other:1.0"))
        .file(&pack.bundle_path(), &pack.archive())
        .file(&lonely.bundle_path(), &lonely.archive())
        .build(&key);
    let output = run_import(&bundle, &target, &["--pack-image-policy", "fail"]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed = airlock::push::catalog::layout_packs(&dir).expect("listed");
    let names: Vec<&str> = listed.packs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["needs-app"]);
    // The layout's own index.json, read directly, agrees.
    let packs: Vec<String> = layout_ref_names(&dir)
        .into_iter()
        .filter(|n| n.starts_with("spectro-packs/"))
        .collect();
    assert_eq!(packs, vec!["spectro-packs/archive/needs-app:2.0.0"]);
    skopeo::inspect_oci_layout(&dir, "spectro-packs/archive/needs-app:2.0.0");
}

/// The `org.opencontainers.image.ref.name` of every entry of the
/// `index.json` of the OCI layout `dir`, sorted.
fn layout_ref_names(dir: &Path) -> Vec<String> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("read index.json"))
            .expect("index.json is JSON");
    let mut names: Vec<String> = index["manifests"]
        .as_array()
        .expect("a manifests list")
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

mod http_view {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;

    use airlock::http::{self, DaemonView, PackCatalog, Readiness};
    use airlock::metrics::Metrics;
    use airlock::state::BundleRecord;

    /// A view whose target cannot be read.
    struct Unreachable;

    impl DaemonView for Unreachable {
        fn imports(&self, _limit: usize, _after: Option<&str>) -> Vec<BundleRecord> {
            Vec::new()
        }
        fn import(&self, _id: &str) -> Option<BundleRecord> {
            None
        }
        fn readiness(&self) -> Pin<Box<dyn Future<Output = Readiness> + Send + '_>> {
            Box::pin(async {
                Readiness {
                    watcher_running: true,
                    state_writable: true,
                    registry_reachable: false,
                    kube_api_reachable: None,
                    detail: None,
                }
            })
        }
        fn packs(&self) -> Pin<Box<dyn Future<Output = Result<PackCatalog, String>> + Send + '_>> {
            Box::pin(async { Err("GET http://registry.invalid/v2/_catalog failed".to_owned()) })
        }
    }

    #[tokio::test]
    async fn an_unreadable_target_answers_502_and_unknown_filters_400() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(
            listener,
            Arc::new(Metrics::new()),
            Arc::new(Unreachable),
            async {
                let _ = stopped.await;
            },
        ));
        let client = reqwest::Client::new();
        let answer = client
            .get(format!("http://{address}/api/v1/packs"))
            .send()
            .await
            .expect("request");
        assert_eq!(answer.status().as_u16(), 502);
        let body: serde_json::Value = answer.json().await.expect("JSON error");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("registry.invalid")),
            "{body}"
        );
        let answer = client
            .get(format!("http://{address}/api/v1/packs?colour=blue"))
            .send()
            .await
            .expect("request");
        assert_eq!(answer.status().as_u16(), 400);
        let _ = stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_catalog_is_read_page_by_page_and_listings_are_bounded() {
    use airlock::push::catalog::{CatalogLimits, registry_packs};
    use airlock::push::registry::{RegistryClient, RegistryConfig};

    let registry = tokio::task::block_in_place(|| {
        let registry = Registry::start();
        let csi = PackFixture::new("csi-aws-ebs", "1.30.0").layer("csi");
        let bundle = bundle_with("packs-pages", &[nginx(), cilium(), csi]);
        import_ok(&bundle, &registry, &[]);
        registry
    });
    let client = RegistryClient::new(RegistryConfig {
        host: registry.host(),
        plain_http: true,
        ..RegistryConfig::default()
    })
    .expect("client");
    let target: airlock::plan::Target = format!("{}/{PREFIX}", registry.host())
        .parse()
        .expect("target");
    let options = airlock::plan::PlanOptions::default();
    let paged = CatalogLimits {
        page: 1,
        ..CatalogLimits::default()
    };
    let listed = registry_packs(&client, &target, &options, paged)
        .await
        .expect("listed");
    let names: Vec<&str> = listed.packs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["cni-cilium", "csi-aws-ebs", "nginx"]);
    assert!(!listed.truncated);
    let catalog_pages = tokio::task::block_in_place(|| {
        registry
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/v2/_catalog"))
            .count()
    });
    // Four repositories, one per page, and the empty page that ends it.
    assert!(catalog_pages >= 4, "{catalog_pages} catalog requests");

    let bounded = CatalogLimits {
        manifests: 2,
        ..CatalogLimits::default()
    };
    let listed = registry_packs(&client, &target, &options, bounded)
        .await
        .expect("listed");
    assert_eq!(listed.packs.len(), 2);
    assert!(listed.truncated);
}
