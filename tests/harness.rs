//! Proves the integration-test support code against the real tools: the
//! registry comes up in every mode, the bundles the builder makes are OCI
//! layouts that skopeo, umoci, zstd, tar and openssl accept, and the digests
//! the builder reports are the ones a registry serves.

mod support;

use std::fs;
use std::path::Path;

use support::bundle::{
    self, Artifact, Breakage, BundleBuilder, EntryOrder, Image, Layer, Naming, normalize_ref,
    sha256_digest,
};
use support::keys::{KeyKind, TestKey};
use support::registry::{Registry, RegistryOptions};
use support::{skopeo, tools};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// Names of the entries of a `.zst` bundle, in tar order (`zstd -dc | tar -t`).
fn tar_listing(zst: &Path) -> Vec<String> {
    let out = tools::run(
        tools::command("sh")
            .arg("-c")
            .arg(r#"zstd -dc --quiet "$1" | tar -t"#)
            .arg("sh")
            .arg(zst),
        "list the bundle with zstd -dc | tar -t",
    );
    String::from_utf8(out.stdout)
        .expect("tar -t output is UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn registry_starts_and_serves_an_empty_catalog() {
    let registry = Registry::start();
    assert!(registry.url().starts_with("http://127.0.0.1:"));
    assert_eq!(registry.catalog(), Vec::<String>::new());
    assert_eq!(registry.tags("nothing/here"), Vec::<String>::new());
    assert!(registry.storage_dir().is_dir());
}

#[test]
fn registry_with_basic_auth_starts_and_serves_an_empty_catalog() {
    let registry = Registry::start_with(RegistryOptions {
        basic_auth: Some(("alice".into(), "s3cret".into())),
        tls: false,
        ..RegistryOptions::default()
    });
    assert_eq!(registry.catalog(), Vec::<String>::new());
    let anonymous = tools::run(
        tools::command("curl")
            .args([
                "--silent",
                "--output",
                "/dev/null",
                "--write-out",
                "%{http_code}",
            ])
            .arg(format!("{}/v2/_catalog", registry.url())),
        "ask the catalog without credentials",
    );
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");
}

#[test]
fn registry_with_tls_starts_and_serves_an_empty_catalog() {
    let registry = Registry::start_with(RegistryOptions {
        basic_auth: None,
        tls: true,
        ..RegistryOptions::default()
    });
    assert!(registry.url().starts_with("https://127.0.0.1:"));
    assert!(registry.ca_cert_path().is_file());
    assert_eq!(registry.catalog(), Vec::<String>::new());
    // Without the CA the certificate is not trusted.
    let untrusted = tools::output(
        tools::command("curl")
            .args(["--silent", "--output", "/dev/null"])
            .arg(format!("{}/v2/", registry.url())),
        "ask the TLS registry without its CA",
    );
    assert!(
        !untrusted.status.success(),
        "curl trusted the throwaway CA without --cacert"
    );
}

#[test]
fn registry_with_tls_and_auth_starts_and_serves_an_empty_catalog() {
    let registry = Registry::start_with(
        RegistryOptions::default()
            .with_tls()
            .with_basic_auth("bob", "pw"),
    );
    assert_eq!(registry.catalog(), Vec::<String>::new());
    assert_eq!(registry.get("/v2/").status, 200);
}

#[test]
fn registry_restarts_on_the_same_port_with_its_storage() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = BundleBuilder::new("restart")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let unpacked = tempdir();
    let layout = built.unpack_with_cli(unpacked.path());

    let mut registry = Registry::start();
    let host = registry.host();
    skopeo::push_oci_layout(
        &registry,
        &layout,
        "quay.io/acme/app:1.0",
        "acme/app:1.0",
        false,
    );
    registry.stop();
    assert!(!registry.is_running());
    assert!(
        std::net::TcpStream::connect(&host).is_err(),
        "the stopped registry still accepts connections"
    );
    registry.restart();
    assert_eq!(registry.host(), host);
    assert_eq!(registry.catalog(), vec!["acme/app".to_owned()]);
    assert_eq!(
        skopeo::manifest_digest(&registry, "acme/app:1.0"),
        built.image("quay.io/acme/app:1.0").digest
    );
    let methods: Vec<String> = registry
        .requests()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert!(
        methods.iter().any(|m| m == "PUT"),
        "access log has no PUT: {methods:?}"
    );
}

#[test]
fn registry_restart_keeps_upload_sessions() {
    // The registry signs each upload Location's `_state` with http.secret;
    // the harness fixes the secret so sessions survive a restart.
    let mut registry = Registry::start();
    let started = registry.request("POST", "/v2/acme/app/blobs/uploads/", &[]);
    assert_eq!(started.status, 202);
    let location = started
        .header("location")
        .expect("upload Location")
        .to_owned();
    let path = location
        .strip_prefix(&registry.url())
        .unwrap_or(&location)
        .to_owned();
    assert_eq!(registry.get(&path).status, 204);
    registry.restart();
    let resumed = registry.get(&path);
    assert_eq!(
        resumed.status,
        204,
        "{}",
        String::from_utf8_lossy(&resumed.body)
    );
    assert_eq!(resumed.header("range"), Some("0-0"));
}

#[test]
fn multi_arch_image_pushed_by_skopeo_keeps_the_reported_digests() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = BundleBuilder::new("multi")
        .image(
            Image::new("nginx:1.25")
                .layers(&[Layer::gzip_tar(1, 3000), Layer::gzip_tar(2, 500)])
                .platforms(&["linux/amd64", "linux/arm64/v8"]),
        )
        .build(&key);
    let image = built.image("nginx:1.25");
    assert_eq!(image.full_ref, "docker.io/library/nginx:1.25");
    assert!(image.is_multi_arch());
    assert_eq!(image.manifests.len(), 2);
    assert_ne!(image.manifests[0].layers, image.manifests[1].layers);
    assert_eq!(image.blob_count(), 6, "2 configs + 4 layers");
    assert_eq!(sha256_digest(&image.manifest), image.digest);

    let unpacked = tempdir();
    let layout = built.unpack_with_cli(unpacked.path());
    assert_eq!(
        fs::read_to_string(layout.join("oci-layout")).expect("read oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    // Every blob file is named after its content.
    for blob in built.blobs() {
        let path = layout
            .join("blobs/sha256")
            .join(&blob.digest["sha256:".len()..]);
        let bytes = fs::read(&path).expect("read a blob of the unpacked layout");
        assert_eq!(sha256_digest(&bytes), blob.digest, "{}", path.display());
        assert_eq!(bytes.len() as u64, blob.size);
    }
    assert_eq!(
        skopeo::inspect_oci_layout(&layout, "nginx:1.25"),
        image.manifest
    );

    let registry = Registry::start();
    skopeo::push_oci_layout(&registry, &layout, "nginx:1.25", "library/nginx:1.25", true);
    assert_eq!(
        skopeo::inspect_raw(&registry, "library/nginx:1.25"),
        image.manifest
    );
    assert_eq!(
        skopeo::manifest_digest(&registry, "library/nginx:1.25"),
        image.digest
    );
    for platform in &image.manifests {
        let by_digest = format!("library/nginx@{}", platform.digest);
        assert_eq!(
            skopeo::inspect_raw(&registry, &by_digest),
            platform.manifest
        );
    }
    for blob in &image.blobs {
        assert!(
            registry.blob_exists("library/nginx", &blob.digest),
            "{blob:?} not pushed"
        );
    }
    assert_eq!(registry.catalog(), vec!["library/nginx".to_owned()]);
    assert_eq!(registry.tags("library/nginx"), vec!["1.25".to_owned()]);

    // And back out again, unchanged.
    let copied = tempdir();
    skopeo::copy_to_oci_dir(&registry, "library/nginx:1.25", copied.path());
    assert_eq!(
        skopeo::inspect_oci_layout(copied.path(), "1.25"),
        image.manifest
    );
}

#[test]
fn tag_only_named_image_pushed_into_a_tls_registry_with_auth() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = BundleBuilder::new("tagonly")
        .image(Image::new("quay.io/acme/app:2.0").naming(Naming::TagOnlyRefName))
        .build(&key);
    let image = built.image("quay.io/acme/app:2.0");
    assert_eq!(
        image
            .annotations
            .get(bundle::ANNOTATION_REF_NAME)
            .map(String::as_str),
        Some("2.0")
    );
    assert_eq!(image.annotations.len(), 1);
    let unpacked = tempdir();
    let layout = built.unpack_with_cli(unpacked.path());

    let registry = Registry::start_with(RegistryOptions {
        basic_auth: Some(("alice".into(), "s3cret".into())),
        tls: true,
        ..RegistryOptions::default()
    });
    skopeo::push_oci_layout(&registry, &layout, "2.0", "acme/app:2.0", false);
    assert_eq!(
        skopeo::manifest_digest(&registry, "acme/app:2.0"),
        image.digest
    );
    assert_eq!(registry.tags("acme/app"), vec!["2.0".to_owned()]);
    let served = registry
        .manifest("acme/app", "2.0")
        .expect("manifest served over TLS");
    assert_eq!(served.body, image.manifest);
    assert_eq!(
        served.header("docker-content-digest"),
        Some(image.digest.as_str())
    );
}

#[test]
fn layout_in_images_dir_sorted_blobs_first_with_shared_layer_and_artifact() {
    let key = TestKey::generate(KeyKind::EcP256);
    let shared = Layer::gzip_tar(42, 4096);
    let built = BundleBuilder::new("zarf.tar")
        .image(
            Image::new("quay.io/acme/app:1.0")
                .layers(&[shared.clone(), Layer::gzip_tar(43, 100)])
                .naming(Naming::ContainerdName),
        )
        .image(
            Image::new("registry.k8s.io/pause:3.9")
                .layers(&[shared])
                .naming(Naming::HaulerStyle),
        )
        .image(Image::new("ghcr.io/acme/tool:0.1").naming(Naming::ZarfStyle))
        .artifact(
            Artifact::new("application/vnd.example.sbom.v1+json")
                .file("sbom.json", "application/json", br#"{"sbom":true}"#)
                .subject_of("quay.io/acme/app:1.0")
                .referrers_tag("sbom"),
        )
        .layout_root("images/")
        .order(EntryOrder::BlobsFirst)
        .file("files/readme.txt", b"hello\n")
        .build(&key);
    assert!(built.zst().ends_with("zarf.tar.zst"));
    assert!(built.sig().ends_with("zarf.tar.sig.bin"));

    let app = built.image("quay.io/acme/app:1.0");
    let pause = built.image("registry.k8s.io/pause:3.9");
    assert_eq!(
        app.manifests[0].layers[0], pause.manifests[0].layers[0],
        "layer shared"
    );
    assert_eq!(
        built.unique_blob_count(),
        7,
        "configs of 3 images, 3 distinct layers (one shared) and the artifact's file"
    );
    let artifact = &built.artifacts()[0];
    assert_eq!(artifact.subject.as_deref(), Some(app.digest.as_str()));
    assert_eq!(
        artifact.full_ref.as_deref(),
        Some(format!("quay.io/acme/app:sha256-{}.sbom", &app.digest[7..]).as_str())
    );

    // Entry order: sorted by name, blobs before index.json, dirs first.
    let listing = tar_listing(built.zst());
    let mut sorted = listing.clone();
    sorted.sort();
    assert_eq!(listing, sorted);
    let first_file = listing
        .iter()
        .find(|n| n.starts_with("images/") && !n.ends_with('/'))
        .expect("a file entry in images/");
    assert!(
        first_file.starts_with("images/blobs/sha256/"),
        "{listing:?}"
    );
    assert!(listing.contains(&"images/index.json".to_owned()));
    assert!(listing.contains(&"files/readme.txt".to_owned()));

    let unpacked = tempdir();
    let layout = built.unpack_with_cli(unpacked.path());
    assert!(layout.ends_with("images/"));
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("read index.json"))
            .expect("index.json is JSON");
    assert_eq!(
        index["manifests"][0]["annotations"][bundle::ANNOTATION_CONTAINERD_NAME],
        "quay.io/acme/app:1.0"
    );
    assert_eq!(
        index["manifests"][0]["annotations"][bundle::ANNOTATION_REF_NAME],
        "1.0"
    );
    assert_eq!(
        index["manifests"][1]["annotations"][bundle::ANNOTATION_REF_NAME],
        "pause:3.9"
    );
    assert_eq!(
        index["manifests"][3]["artifactType"],
        "application/vnd.example.sbom.v1+json"
    );

    let registry = Registry::start();
    skopeo::push_oci_layout(&registry, &layout, "1.0", "quay.io/acme/app:1.0", false);
    skopeo::push_oci_layout(
        &registry,
        &layout,
        "pause:3.9",
        "registry.k8s.io/pause:3.9",
        false,
    );
    skopeo::push_oci_layout(
        &registry,
        &layout,
        "ghcr.io/acme/tool:0.1",
        "ghcr.io/acme/tool:0.1",
        false,
    );
    assert_eq!(
        skopeo::manifest_digest(&registry, "quay.io/acme/app:1.0"),
        app.digest
    );
    assert_eq!(
        skopeo::manifest_digest(&registry, "registry.k8s.io/pause:3.9"),
        pause.digest
    );
    assert_eq!(
        skopeo::manifest_digest(&registry, "ghcr.io/acme/tool:0.1"),
        built.image("ghcr.io/acme/tool:0.1").digest
    );
    // docker-registry 2.8 stores an OCI 1.1 artifact (artifactType, empty
    // config, subject) byte for byte under the referrers tag scheme.
    let artifact_ref = artifact.full_ref.clone().expect("the artifact is named");
    skopeo::push_oci_layout(&registry, &layout, &artifact_ref, &artifact_ref, false);
    assert_eq!(
        skopeo::inspect_raw(&registry, &artifact_ref),
        artifact.manifest
    );
    assert_eq!(
        registry.catalog(),
        vec![
            "ghcr.io/acme/tool",
            "quay.io/acme/app",
            "registry.k8s.io/pause"
        ]
    );
}

#[test]
fn umoci_reads_the_unpacked_layout() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = BundleBuilder::new("umoci")
        .image(Image::new("quay.io/acme/app:1.0").naming(Naming::FullRefName))
        .image(Image::new("docker.io/library/busybox:1.36").naming(Naming::FullRefName))
        .build(&key);
    let unpacked = tempdir();
    let layout = built.unpack_with_cli(unpacked.path());
    let out = tools::run(
        tools::command("umoci")
            .arg("ls")
            .arg("--layout")
            .arg(&layout),
        "list the layout's references with umoci ls",
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["docker.io/library/busybox:1.36", "quay.io/acme/app:1.0"]
    );
    let stat = tools::run(
        tools::command("umoci")
            .arg("stat")
            .arg("--json")
            .arg("--image")
            .arg(format!("{}:quay.io/acme/app:1.0", layout.display())),
        "stat an image of the layout with umoci",
    );
    let stat: serde_json::Value =
        serde_json::from_slice(&stat.stdout).expect("umoci stat --json is JSON");
    assert_eq!(stat["history"].as_array().map(Vec::len), Some(1), "{stat}");
}

#[test]
fn openssl_accepts_the_signatures_of_every_key_kind() {
    let threads: Vec<_> = KeyKind::ALL
        .into_iter()
        .map(|kind| {
            std::thread::spawn(move || {
                let key = TestKey::generate(kind);
                let built = BundleBuilder::new("signed")
                    .image(Image::new("quay.io/acme/app:1.0"))
                    .build(&key);
                assert!(
                    key.openssl_verifies(built.zst(), built.sig()),
                    "{kind:?}: openssl rejects"
                );
                assert!(
                    support::keys::openssl_verifies(
                        kind,
                        built.public_key_pem(),
                        built.zst(),
                        built.sig()
                    ),
                    "{kind:?}: openssl rejects with the copied public key"
                );
                let base64_sig = built.dir().join("signed.sig.b64");
                key.sign_base64(built.zst(), &base64_sig);
                let text = fs::read_to_string(&base64_sig).expect("read the base64 signature");
                assert!(
                    text.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
                );
                if kind == KeyKind::EcP256 {
                    let pem = fs::read_to_string(key.public_pem()).expect("read the public key");
                    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
                    let other = TestKey::generate(KeyKind::EcP256);
                    built.sign_with(&other);
                    assert!(
                        !key.openssl_verifies(built.zst(), built.sig()),
                        "another key's signature verified"
                    );
                    built.sign_with(&key);
                    assert!(key.openssl_verifies(built.zst(), built.sig()));
                    built.tamper();
                    assert!(
                        !key.openssl_verifies(built.zst(), built.sig()),
                        "a tampered bundle verified"
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a key kind failed");
    }
}

#[test]
fn builds_are_deterministic() {
    let key = TestKey::generate(KeyKind::EcP256);
    let build = |name: &str| {
        BundleBuilder::new(name)
            .image(Image::new("nginx:1.25").platforms(&["linux/amd64", "linux/arm64"]))
            .image(
                Image::new("quay.io/acme/app:1.0")
                    .layers(&[Layer::gzip_tar(9, 10_000), Layer::big(10, 300_000)]),
            )
            .build(&key)
    };
    let a = build("a");
    let b = build("b");
    let bytes_a = fs::read(a.zst()).expect("read bundle a");
    let bytes_b = fs::read(b.zst()).expect("read bundle b");
    assert_eq!(sha256_digest(&bytes_a), sha256_digest(&bytes_b));
    assert_eq!(a.image("nginx:1.25").digest, b.image("nginx:1.25").digest);
}

#[test]
fn big_uncompressed_layer_is_streamed_and_its_digest_is_honest() {
    const SIZE: u64 = 65 * 1024 * 1024 + 123;
    let key = TestKey::generate(KeyKind::EcP256);
    let built = BundleBuilder::new("big")
        .image(
            Image::new("quay.io/acme/big:1.0")
                .layers(&[Layer::gzip_tar(1, 100), Layer::big(2, SIZE)]),
        )
        .build(&key);
    let image = built.image("quay.io/acme/big:1.0");
    let big = &image.manifests[0].layers[1];
    assert_eq!(big.size, SIZE);
    assert_eq!(big.media_type, bundle::OCI_LAYER_TAR);
    let hex = &big.digest["sha256:".len()..];
    let out = tools::run(
        tools::command("sh")
            .arg("-c")
            .arg(r#"zstd -dc --quiet "$1" | tar -xO "blobs/sha256/$2" | sha256sum"#)
            .arg("sh")
            .arg(built.zst())
            .arg(hex),
        "hash the big layer with zstd | tar | sha256sum",
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(line.split_whitespace().next(), Some(hex));
    // The config's diff_id for an uncompressed layer is its digest.
    let config_blob = &image.manifests[0].config;
    let unpacked = tempdir();
    let config = tools::run(
        tools::command("sh")
            .arg("-c")
            .arg(r#"zstd -dc --quiet "$1" | tar -xO "blobs/sha256/$2""#)
            .arg("sh")
            .arg(built.zst())
            .arg(&config_blob.digest["sha256:".len()..])
            .current_dir(unpacked.path()),
        "read the config blob",
    );
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).expect("config is JSON");
    assert_eq!(config["rootfs"]["diff_ids"][1], big.digest.as_str());
}

#[test]
fn broken_bundles_are_broken_as_promised_and_validly_signed() {
    let key = TestKey::generate(KeyKind::EcP256);
    let zstd_ok = |zst: &Path| {
        tools::output(
            tools::command("zstd").args(["-t", "--quiet"]).arg(zst),
            "test a zstd stream",
        )
        .status
        .success()
    };
    let tar_ok = |zst: &Path| {
        tools::output(
            tools::command("sh")
                .arg("-c")
                .arg(r#"zstd -dc --quiet "$1" | tar -t >/dev/null"#)
                .arg("sh")
                .arg(zst),
            "list a bundle",
        )
        .status
        .success()
    };
    for breakage in [
        Breakage::AbsolutePathEntry,
        Breakage::ParentDirEntry,
        Breakage::SymlinkEntry,
        Breakage::HardLinkEntry,
        Breakage::BlobDigestMismatch,
        Breakage::ManifestDigestMismatch,
        Breakage::MissingLayer,
        Breakage::InvalidIndexJson,
        Breakage::MissingOciLayoutFile,
        Breakage::TruncatedZstd,
        Breakage::NotZstd,
        Breakage::ZstdOfNotTar,
    ] {
        let built = bundle::broken_bundle(breakage, &key);
        assert!(
            key.openssl_verifies(built.zst(), built.sig()),
            "{breakage:?}: signature invalid"
        );
        let image = built.image("quay.io/acme/broken:1.0");
        let layer = &image.manifests[0].layers[0];
        let blob_name = |digest: &str| format!("blobs/sha256/{}", &digest[7..]);
        match breakage {
            Breakage::TruncatedZstd => assert!(!zstd_ok(built.zst()), "{breakage:?}"),
            Breakage::NotZstd => {
                assert!(!zstd_ok(built.zst()), "{breakage:?}");
                let listing = tools::run(
                    tools::command("tar").arg("-tf").arg(built.zst()),
                    "list a plain tar",
                );
                assert!(String::from_utf8_lossy(&listing.stdout).contains("index.json"));
            }
            Breakage::ZstdOfNotTar => {
                assert!(zstd_ok(built.zst()), "{breakage:?}");
                assert!(!tar_ok(built.zst()), "{breakage:?}");
            }
            _ => {
                let listing = tar_listing(built.zst());
                let has = |name: &str| listing.iter().any(|n| n == name);
                match breakage {
                    Breakage::AbsolutePathEntry => assert_eq!(listing[0], "/etc/passwd"),
                    Breakage::ParentDirEntry => assert_eq!(listing[0], "../escape"),
                    Breakage::SymlinkEntry => assert_eq!(listing[0], "link-to-passwd"),
                    Breakage::HardLinkEntry => assert_eq!(listing[0], "hardlink-to-passwd"),
                    Breakage::MissingLayer => {
                        assert!(!has(&blob_name(&layer.digest)), "{listing:?}");
                        assert!(has(&blob_name(&image.digest)));
                    }
                    Breakage::MissingOciLayoutFile => {
                        assert!(!has("oci-layout") && has("index.json"))
                    }
                    Breakage::BlobDigestMismatch | Breakage::ManifestDigestMismatch => {
                        let digest = if breakage == Breakage::BlobDigestMismatch {
                            &layer.digest
                        } else {
                            &image.digest
                        };
                        let out = tools::run(
                            tools::command("sh")
                                .arg("-c")
                                .arg(r#"zstd -dc --quiet "$1" | tar -xO "$2""#)
                                .arg("sh")
                                .arg(built.zst())
                                .arg(blob_name(digest)),
                            "extract a corrupted blob",
                        );
                        assert_ne!(&sha256_digest(&out.stdout), digest);
                        assert_eq!(
                            out.stdout.len(),
                            if breakage == Breakage::BlobDigestMismatch {
                                layer.size as usize
                            } else {
                                image.size as usize
                            }
                        );
                    }
                    Breakage::InvalidIndexJson => {
                        let out = tools::run(
                            tools::command("sh")
                                .arg("-c")
                                .arg(r#"zstd -dc --quiet "$1" | tar -xO index.json"#)
                                .arg("sh")
                                .arg(built.zst()),
                            "extract index.json",
                        );
                        assert!(serde_json::from_slice::<serde_json::Value>(&out.stdout).is_err());
                    }
                    _ => unreachable!(),
                }
            }
        }
    }
}

#[test]
fn references_are_normalised_like_docker_does() {
    assert_eq!(normalize_ref("nginx:1.25"), "docker.io/library/nginx:1.25");
    assert_eq!(normalize_ref("nginx"), "docker.io/library/nginx:latest");
    assert_eq!(normalize_ref("acme/app:1"), "docker.io/acme/app:1");
    assert_eq!(
        normalize_ref("quay.io/acme/app:1.0"),
        "quay.io/acme/app:1.0"
    );
    assert_eq!(
        normalize_ref("localhost:5000/app"),
        "localhost:5000/app:latest"
    );
    assert_eq!(
        normalize_ref("index.docker.io/library/nginx:1"),
        "docker.io/library/nginx:1"
    );
    assert_eq!(
        normalize_ref(
            "ghcr.io/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000"
        ),
        "ghcr.io/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000"
    );
}
