//! The command line as people use it: messages, exit codes, help, and the
//! README's Quick start.

mod support;

use serde_json::Value;
use support::airlock;
use support::bundle::{BundleBuilder, Image, Naming};
use support::daemon::Daemon;
use support::keys::{KeyKind, TestKey};

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn verify_prints_verified_ok_and_the_key_that_verified() {
    let key = TestKey::generate(KeyKind::EcP256);
    let other = TestKey::generate(KeyKind::Rsa2048);
    let bundle = BundleBuilder::new("ok")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let output = airlock()
        .arg("verify")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(other.public_pem())
        .arg("--public-key")
        .arg(key.public_pem())
        .output()
        .expect("run airlock verify");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = stdout_of(&output);
    assert!(stdout.starts_with("Verified OK\n"), "{stdout}");
    assert!(
        stdout.contains(&key.public_pem().display().to_string()),
        "{stdout}"
    );
    assert!(stdout.contains("ECDSA P-256"), "{stdout}");
}

#[test]
fn verify_failure_is_one_line_with_exit_code_3() {
    let key = TestKey::generate(KeyKind::Ed25519);
    let bundle = BundleBuilder::new("bad")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    bundle.tamper();
    let output = airlock()
        .arg("verify")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(key.public_pem())
        .output()
        .expect("run airlock verify");
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("does not verify"), "{stderr}");
}

#[test]
fn an_unreadable_key_file_is_a_usage_error_with_exit_code_2() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("nokey")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let output = airlock()
        .arg("verify")
        .arg(bundle.zst())
        .args(["--public-key", "/nonexistent/key.pem"])
        .output()
        .expect("run airlock verify");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/key.pem"), "{stderr}");
}

#[test]
fn a_mistyped_bundle_path_is_a_usage_error_with_exit_code_2() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("typo")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let mistyped = bundle.dir().join("tpyo.zst");
    let mirror = bundle.dir().join("mirror");
    let key_flag = [
        "--public-key",
        bundle.public_key_pem().to_str().expect("utf-8 path"),
    ];
    let target = format!("oci:{}", mirror.display());
    for args in [
        vec!["verify"],
        vec!["import", "--registry", target.as_str()],
        vec!["inspect"],
    ] {
        let output = airlock()
            .args(&args)
            .arg(&mistyped)
            .args(key_flag)
            .output()
            .expect("run airlock");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(&mistyped.display().to_string())
                && (stderr.contains("does not exist") || stderr.contains("No such file")),
            "{args:?}: {stderr}"
        );
    }
    assert!(!mirror.exists(), "the import created its target");
}

#[test]
fn bad_flags_exit_with_code_2() {
    let output = airlock()
        .args(["import", "x.zst", "--registry", "oci:./m"])
        .output()
        .expect("run airlock");
    assert_eq!(output.status.code(), Some(2), "--public-key is required");
    let output = airlock()
        .args([
            "import",
            "x.zst",
            "--public-key",
            "k.pem",
            "--registry",
            "https://reg.local",
        ])
        .output()
        .expect("run airlock");
    assert_eq!(
        output.status.code(),
        Some(2),
        "a scheme in the target is refused"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("--plain-http"));
}

#[test]
fn help_documents_exit_codes_and_examples() {
    let output = airlock()
        .arg("--help")
        .output()
        .expect("run airlock --help");
    let help = stdout_of(&output);
    for needle in [
        "Exit codes",
        "verify",
        "inspect",
        "import",
        "3  verification",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    let output = airlock()
        .args(["import", "--help"])
        .output()
        .expect("run help");
    let help = stdout_of(&output);
    assert!(
        help.contains("Examples:") && help.contains("--password-stdin"),
        "{help}"
    );
}

#[test]
fn inspect_lists_images_with_refs_platforms_and_totals() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("look")
        .image(Image::new("quay.io/acme/app:1.0").naming(Naming::ContainerdName))
        .image(Image::new("nginx:1.25").platforms(&["linux/amd64", "linux/arm64"]))
        .build(&key);
    let output = airlock()
        .arg("inspect")
        .arg(bundle.zst())
        .args([
            "--registry",
            "harbor.local/spectro-images",
            "--output",
            "json",
        ])
        .output()
        .expect("run airlock inspect");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let inspection: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let images = inspection["images"].as_array().expect("images");
    assert_eq!(images.len(), 2);
    assert_eq!(images[0]["sourceRef"], "quay.io/acme/app:1.0");
    assert_eq!(
        images[0]["targetRef"],
        "harbor.local/spectro-images/quay.io/acme/app:1.0"
    );
    assert_eq!(images[0]["digest"], bundle.images()[0].digest.as_str());
    assert_eq!(images[1]["sourceRef"], "docker.io/library/nginx:1.25");
    assert_eq!(
        images[1]["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    assert_eq!(inspection["verifiedBy"], Value::Null);
    assert_eq!(
        inspection["totals"]["blobs"].as_u64(),
        Some(bundle.unique_blob_count() as u64)
    );

    let text = airlock()
        .arg("inspect")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(key.public_pem())
        .output()
        .expect("run airlock inspect");
    let text = stdout_of(&text);
    assert!(text.contains("Signature: verified by"), "{text}");
    assert!(
        text.contains("platforms:  linux/amd64, linux/arm64"),
        "{text}"
    );
    assert!(text.contains("Total: 2 image(s)"), "{text}");
}

#[test]
fn quick_start_example_bundle_imports_into_an_oci_layout() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mirror = tempfile::tempdir().expect("tempdir");
    let output = airlock()
        .arg("import")
        .arg(examples.join("example.zst"))
        .arg("--public-key")
        .arg(examples.join("example-public-key.pem"))
        .arg("--registry")
        .arg(format!("oci:{}", mirror.path().join("mirror").display()))
        .output()
        .expect("run airlock import");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let raw = support::skopeo::inspect_oci_layout(
        &mirror.path().join("mirror"),
        "quay.io/airlock/example:1.0",
    );
    assert_eq!(
        support::skopeo::sha256_digest(&raw),
        example_manifest_digest(),
        "skopeo read another manifest than the example bundle holds"
    );
}

/// The digest `index.json` inside `examples/example.zst` gives its one
/// image, read with `zstd` and `tar`, not airlock.
fn example_manifest_digest() -> String {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg("zstd -dc \"$1\" | tar -xOf - ./index.json")
        .arg("sh")
        .arg(examples.join("example.zst"))
        .output()
        .expect("run zstd and tar");
    assert!(output.status.success(), "{output:?}");
    let index: Value = serde_json::from_slice(&output.stdout).expect("index.json is JSON");
    let manifests = index["manifests"].as_array().expect("a manifests list");
    assert_eq!(manifests.len(), 1, "{index}");
    manifests[0]["digest"]
        .as_str()
        .expect("a digest")
        .to_owned()
}

#[test]
fn quick_start_daemon_runs_examples_watch_yaml_as_shipped() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // The Quick start runs from the repository root; a copy of the one
    // file the configuration names relatively keeps the test out of it.
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("examples")).expect("mkdir examples");
    std::fs::copy(
        repo.join("examples/example-public-key.pem"),
        root.path().join("examples/example-public-key.pem"),
    )
    .expect("copy the example key");
    std::fs::create_dir(root.path().join("drop")).expect("mkdir drop");
    let config = repo.join("examples/watch.yaml");
    let daemon = Daemon::start_as_shipped(
        &["watch", "--config", config.to_str().expect("utf-8 path")],
        root.path(),
    );
    daemon.wait_until("/readyz to answer 200", |d| {
        d.get("/readyz").is_some_and(|(status, _)| status == 200)
    });

    for name in ["example.sig.bin", "example.zst"] {
        std::fs::copy(
            repo.join("examples").join(name),
            root.path().join("drop").join(name),
        )
        .expect("drop the example");
    }
    daemon.wait_until("the import", |d| {
        d.metric(r#"airlock_bundles_total{outcome="imported"}"#) >= 1.0
    });

    let raw = support::skopeo::inspect_oci_layout(
        &root.path().join("mirror"),
        "quay.io/airlock/example:1.0",
    );
    assert_eq!(
        support::skopeo::sha256_digest(&raw),
        example_manifest_digest()
    );
    daemon.wait_until("on_success: move", |_| {
        root.path().join("drop/processed/example.zst").exists()
    });
    assert!(root.path().join(".airlock-state").is_dir());
    let (status, body) = daemon.get("/readyz").expect("GET /readyz");
    assert_eq!(status, 200, "{body}");
}
