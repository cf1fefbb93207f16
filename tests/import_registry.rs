//! End-to-end imports into the real registry (Debian's docker-registry),
//! checked with skopeo. Each test starts its own registry on a free loopback
//! port.

mod support;

use std::io::Write;
use std::process::{Output, Stdio};

use serde_json::Value;
use support::bundle::{
    Artifact, BuiltBundle, BundleBuilder, EntryOrder, Image, Layer, ManifestFormat, Naming,
};
use support::keys::{KeyKind, TestKey};
use support::registry::{Registry, RegistryOptions};
use support::{airlock, skopeo};

const PREFIX: &str = "mirror";

/// Runs `airlock import` into `registry`/mirror with JSON output.
fn import(bundle: &BuiltBundle, registry: &Registry, extra: &[&str]) -> (Output, Value) {
    import_with_stdin(bundle, registry, extra, None)
}

fn import_with_stdin(
    bundle: &BuiltBundle,
    registry: &Registry,
    extra: &[&str],
    stdin: Option<&str>,
) -> (Output, Value) {
    let target = format!("{}/{PREFIX}", registry.host());
    let mut command = airlock();
    command
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", &target, "--output", "json", "--quiet"])
        .args(extra)
        .env("DOCKER_CONFIG", bundle.dir().join("no-docker-config"));
    if !registry.is_tls() {
        command.arg("--plain-http");
    }
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("start airlock import");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("write password");
    }
    let output = child.wait_with_output().expect("wait for airlock import");
    assert!(
        output.status.success(),
        "airlock import failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("import report is JSON");
    (output, report)
}

/// `mirror/<registry>/<repository>:<tag>` for a built image.
fn landed(full_ref: &str) -> String {
    format!("{PREFIX}/{full_ref}")
}

fn count(report: &Value, field: &str) -> u64 {
    report["push"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("report has no push.{field}: {report}"))
}

/// Every image of `bundle` is in the registry with the manifest digest the
/// bundle holds, as skopeo sees it.
fn assert_landed_with_same_digests(bundle: &BuiltBundle, registry: &Registry) {
    for image in bundle.images() {
        let reference = landed(&image.full_ref);
        assert_eq!(
            skopeo::manifest_digest(registry, &reference),
            image.digest,
            "{reference} has a different manifest digest than in the bundle"
        );
        assert_eq!(
            skopeo::inspect_raw(registry, &reference),
            image.manifest,
            "{reference} manifest bytes differ from the bundle"
        );
        for manifest in &image.manifests {
            let by_digest = format!("{PREFIX}/{}@{}", image.repository(), manifest.digest);
            assert_eq!(
                skopeo::manifest_digest(registry, &by_digest),
                manifest.digest
            );
        }
    }
}

#[test]
fn signed_bundle_lands_in_the_registry_with_identical_digests() {
    let key = TestKey::generate(KeyKind::EcP256);
    let base = Layer::gzip_tar(1, 64 << 10);
    let bundle = BundleBuilder::new("content")
        .image(
            Image::new("quay.io/acme/app:1.0")
                .layers(&[base.clone(), Layer::gzip_tar(2, 32 << 10)])
                .naming(Naming::ContainerdName),
        )
        .image(
            Image::new("quay.io/acme/worker:1.0")
                .layers(&[base.clone(), Layer::gzip_tar(3, 16 << 10)])
                .naming(Naming::ContainerdName),
        )
        .image(
            Image::new("nginx:1.25")
                .naming(Naming::ZarfStyle)
                .platforms(&["linux/amd64", "linux/arm64/v8"]),
        )
        .image(
            Image::new("registry.k8s.io/pause:3.9")
                .naming(Naming::HaulerStyle)
                .format(ManifestFormat::Docker),
        )
        .image(
            Image::new("ghcr.io/acme/big:2.0")
                .layers(&[Layer::uncompressed(7, 70 << 20)])
                .naming(Naming::FullRefName),
        )
        .order(EntryOrder::BlobsFirst)
        .build(&key);
    let registry = Registry::start();

    let (_, report) = import(&bundle, &registry, &[]);

    assert_landed_with_same_digests(&bundle, &registry);
    assert_eq!(report["push"]["images"].as_array().map(Vec::len), Some(5));
    assert!(
        count(&report, "blobsMounted") >= 1,
        "the shared base layer should be mounted into the second repository: {report}"
    );
    assert_eq!(
        report["digest"].as_str(),
        Some(skopeo::sha256_digest(&std::fs::read(bundle.zst()).expect("read bundle")).as_str())
    );
    let copy = tempfile::tempdir().expect("tempdir");
    skopeo::copy_to_oci_dir(
        &registry,
        &landed("docker.io/library/nginx:1.25"),
        copy.path(),
    );
}

#[test]
fn importing_again_pushes_nothing_and_succeeds() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("again")
        .image(Image::new("quay.io/acme/app:1.0"))
        .image(Image::new("quay.io/acme/db:2.0").platforms(&["linux/amd64", "linux/arm64"]))
        .build(&key);
    let registry = Registry::start();
    import(&bundle, &registry, &[]);
    let before = registry.settled_requests().len();

    let (_, report) = import(&bundle, &registry, &[]);

    assert_eq!(count(&report, "blobsUploaded"), 0, "{report}");
    assert_eq!(count(&report, "manifestsPushed"), 0, "{report}");
    assert_eq!(count(&report, "manifestsPresent"), 2, "{report}");
    let writes = registry.settled_writes_since(before);
    assert!(
        writes.is_empty(),
        "a warm import wrote to the registry: {writes:?}"
    );
    assert_landed_with_same_digests(&bundle, &registry);
}

#[test]
fn layout_in_a_subdirectory_with_blobs_before_index_is_imported() {
    let key = TestKey::generate(KeyKind::Ed25519);
    let bundle = BundleBuilder::new("zarf")
        .image(Image::new("docker.io/library/alpine:3.20").naming(Naming::ZarfStyle))
        .image(Image::new("quay.io/acme/tool:0.1").naming(Naming::ContainerdName))
        .layout_root("images/")
        .order(EntryOrder::BlobsFirst)
        .directory_entries(true)
        .build(&key);
    let registry = Registry::start();

    import(&bundle, &registry, &[]);

    assert_landed_with_same_digests(&bundle, &registry);
}

#[test]
fn monolithic_uploads_and_small_chunks_give_the_same_result() {
    let key = TestKey::generate(KeyKind::EcP384);
    let bundle = BundleBuilder::new("modes")
        .image(Image::new("quay.io/acme/app:1.0").layers(&[Layer::uncompressed(11, 20 << 20)]))
        .build(&key);

    let monolithic = Registry::start();
    import(&bundle, &monolithic, &["--upload-mode", "monolithic"]);
    assert_landed_with_same_digests(&bundle, &monolithic);
    assert!(
        !monolithic
            .settled_requests()
            .iter()
            .any(|r| r.method == "PATCH"),
        "monolithic mode must not PATCH"
    );

    let chunked = Registry::start();
    import(&bundle, &chunked, &["--upload-mode", "chunked"]);
    assert_landed_with_same_digests(&bundle, &chunked);
    let patches = chunked
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert!(
        (1..=3).contains(&patches),
        "a 20 MiB blob in 8 MiB chunks takes 2 PATCHes and a final PUT, saw {patches}"
    );
}

#[test]
fn referrer_artifact_lands_beside_its_subject_after_it() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("signed")
        .image(Image::new("quay.io/acme/app:1.0").naming(Naming::ContainerdName))
        .artifact(
            Artifact::new("application/spdx+json")
                .file(
                    "sbom.spdx.json",
                    "application/spdx+json",
                    b"{\"spdxVersion\":\"SPDX-2.3\"}",
                )
                .subject_of("quay.io/acme/app:1.0")
                .naming(Naming::Unnamed),
        )
        .build(&key);
    let registry = Registry::start();

    import(&bundle, &registry, &[]);

    let artifact = &bundle.artifacts()[0];
    let reference = format!("{PREFIX}/quay.io/acme/app@{}", artifact.digest);
    assert_eq!(
        skopeo::inspect_raw(&registry, &reference),
        artifact.manifest
    );
    let requests = registry.settled_requests();
    let subject_tag = requests
        .iter()
        .position(|r| r.method == "PUT" && r.path.ends_with("/manifests/1.0"))
        .expect("subject tagged");
    let referrer = requests
        .iter()
        .position(|r| {
            r.method == "PUT" && r.path.contains(&format!("/manifests/{}", artifact.digest))
        })
        .expect("referrer pushed");
    assert!(
        referrer > subject_tag,
        "the referrer was pushed before its subject"
    );
}

#[test]
fn registry_with_tls_and_basic_auth_accepts_ca_cert_and_password_stdin() {
    let key = TestKey::generate(KeyKind::Rsa2048);
    let bundle = BundleBuilder::new("secure")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let registry = Registry::start_with(
        RegistryOptions::default()
            .with_basic_auth("robot", "hunter2-secret")
            .with_tls(),
    );
    let ca = registry
        .ca_cert_path()
        .to_str()
        .expect("utf-8 path")
        .to_owned();

    let (output, _) = import_with_stdin(
        &bundle,
        &registry,
        &[
            "--ca-cert",
            &ca,
            "--username",
            "robot",
            "--password-stdin",
            "--log",
            "trace",
        ],
        Some("hunter2-secret\n"),
    );

    assert_landed_with_same_digests(&bundle, &registry);
    assert_secret_not_printed(&output, "robot", "hunter2-secret");
}

/// Asserts that neither `password` nor the Basic credentials made from it
/// (`base64(user:password)`) appear in what airlock printed, even with
/// every log line on (`--log trace`).
fn assert_secret_not_printed(output: &Output, user: &str, password: &str) {
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains("TRACE") || printed.contains("DEBUG"),
        "the import did not log at trace level:\n{printed}"
    );
    let basic = support::base64(format!("{user}:{password}").as_bytes());
    for secret in [password, basic.as_str()] {
        assert!(!printed.contains(secret), "{secret:?} was printed");
    }
}

#[test]
fn credentials_come_from_a_docker_config_file() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("authfile")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let registry =
        Registry::start_with(RegistryOptions::default().with_basic_auth("ci", "from-config"));
    let config_dir = tempfile::tempdir().expect("tempdir");
    let config = config_dir.path().join("config.json");
    let encoded = support::base64(b"ci:from-config");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{encoded}"}}}}}}"#,
            registry.host()
        ),
    )
    .expect("write config.json");

    let (output, _) = import(
        &bundle,
        &registry,
        &[
            "--auth-file",
            config.to_str().expect("utf-8"),
            "--log",
            "trace",
        ],
    );

    assert_landed_with_same_digests(&bundle, &registry);
    assert_secret_not_printed(&output, "ci", "from-config");
}

#[test]
fn wrong_password_is_a_registry_failure_with_exit_code_4() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("denied")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let registry = Registry::start_with(RegistryOptions::default().with_basic_auth("ci", "right"));
    let mut child = airlock()
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", &registry.host(), "--plain-http", "--quiet"])
        .args(["--username", "ci", "--password-stdin", "--log", "trace"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start airlock");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"wrong-secret")
        .expect("write password");
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused access"), "{stderr}");
    assert_secret_not_printed(&output, "ci", "wrong-secret");
    assert!(registry.catalog().is_empty());
}

#[test]
fn children_land_before_their_index_and_the_tag_is_set_last() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("ordered")
        .image(Image::new("quay.io/acme/multi:1.0").platforms(&["linux/amd64", "linux/arm64"]))
        .build(&key);
    let registry = Registry::start();

    import(&bundle, &registry, &[]);

    assert_landed_with_same_digests(&bundle, &registry);
    let image = bundle.image("quay.io/acme/multi:1.0");
    let repo = format!("/v2/{PREFIX}/quay.io/acme/multi/");
    let puts: Vec<String> = registry
        .settled_requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.starts_with(&repo))
        .map(|r| r.path[repo.len()..].to_owned())
        .collect();
    let manifest_puts: Vec<&String> = puts
        .iter()
        .filter(|p| p.starts_with("manifests/"))
        .collect();
    let first_manifest = puts
        .iter()
        .position(|p| p.starts_with("manifests/"))
        .expect("manifests were pushed");
    assert!(
        puts[first_manifest..]
            .iter()
            .all(|p| p.starts_with("manifests/")),
        "a blob was completed after a manifest: {puts:?}"
    );
    let children: Vec<String> = image
        .manifests
        .iter()
        .map(|m| format!("manifests/{}", m.digest))
        .collect();
    assert_eq!(children.len(), 2, "{:?}", image.manifests);
    assert_eq!(
        manifest_puts.last().map(|p| p.as_str()),
        Some("manifests/1.0"),
        "the tag is not the last write: {puts:?}"
    );
    for child in &children {
        assert!(
            manifest_puts.contains(&child),
            "{child} was not pushed: {puts:?}"
        );
    }
    assert_eq!(
        manifest_puts.len(),
        children.len() + 1,
        "the index is pushed once, by its tag: {puts:?}"
    );
}

#[test]
fn a_tls_registry_is_refused_without_its_ca_and_nothing_is_written() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("untrusted-tls")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let registry = Registry::start_with(RegistryOptions::default().with_tls());
    let output = airlock()
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", &registry.host(), "--quiet"])
        .env("DOCKER_CONFIG", bundle.dir().join("no-docker-config"))
        .output()
        .expect("run airlock import");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(registry.catalog().is_empty());
    let writes = registry.settled_writes_since(0);
    assert!(writes.is_empty(), "{writes:?}");
}

#[test]
fn insecure_skip_tls_verify_imports_into_an_untrusted_tls_registry_and_warns() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("insecure-tls")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let registry = Registry::start_with(RegistryOptions::default().with_tls());

    let (output, _) = import(&bundle, &registry, &["--insecure-skip-tls-verify"]);

    assert_landed_with_same_digests(&bundle, &registry);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("TLS certificate verification is off"),
        "{stderr}"
    );
}

#[test]
fn oci_layout_target_is_readable_by_skopeo_and_merges_imports() {
    let key = TestKey::generate(KeyKind::EcP256);
    let first = BundleBuilder::new("first")
        .image(Image::new("quay.io/acme/app:1.0").naming(Naming::ContainerdName))
        .image(Image::new("nginx:1.25").platforms(&["linux/amd64", "linux/arm64"]))
        .build(&key);
    let second = BundleBuilder::new("second")
        .image(Image::new("quay.io/acme/app:2.0"))
        .build(&key);
    let mirror = tempfile::tempdir().expect("tempdir");
    let target = format!("oci:{}", mirror.path().display());

    for bundle in [&first, &second] {
        let output = airlock()
            .arg("import")
            .arg(bundle.zst())
            .arg("--public-key")
            .arg(bundle.public_key_pem())
            .args(["--registry", &target, "--quiet"])
            .output()
            .expect("run airlock");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    for image in first.images().iter().chain(second.images()) {
        let raw = skopeo::inspect_oci_layout(mirror.path(), &image.full_ref);
        assert_eq!(raw, image.manifest, "{} in the layout", image.full_ref);
    }
}
