//! End-to-end checks of `create` with keys made in-process: the bundle reads
//! back through airlock's own reader and verifier. (Checks with openssl,
//! skopeo and a real registry are in `tests/bundle_create.rs`.)

use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::Signer as _;
use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
use sha2::{Digest as _, Sha256};

use super::*;
use crate::FailureClass;
use crate::progress::Progress;
use crate::read::{BundleIndex, ImageName, ReadLimits, UnverifiedBundle};
use crate::verify::{TrustedKey, TrustedKeys, verify_bundle};

/// A hand-written OCI layout with one single-layer image per reference.
struct TestLayout {
    dir: tempfile::TempDir,
    /// (reference, manifest digest) of each image.
    images: Vec<(String, String)>,
    layers: Vec<PathBuf>,
}

impl TestLayout {
    fn new(references: &[(&str, &[u8])]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("oci-layout"), OCI_LAYOUT).unwrap();
        let mut entries = Vec::new();
        let mut images = Vec::new();
        let mut layers = Vec::new();
        for (reference, layer) in references {
            let (layer_digest, layer_path) = put_blob(dir.path(), layer);
            layers.push(layer_path);
            let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
            let (config_digest, _) = put_blob(dir.path(), config);
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
                config.len(),
                layer.len()
            );
            let (manifest_digest, _) = put_blob(dir.path(), manifest.as_bytes());
            entries.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": reference},
            }));
            images.push((reference.to_string(), manifest_digest));
        }
        let index = serde_json::json!({"schemaVersion": 2, "manifests": entries});
        fs::write(dir.path().join("index.json"), index.to_string()).unwrap();
        Self {
            dir,
            images,
            layers,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn put_blob(dir: &Path, bytes: &[u8]) -> (String, PathBuf) {
    let hex = hex::encode(Sha256::digest(bytes));
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let path = blobs.join(&hex);
    fs::write(&path, bytes).unwrap();
    (format!("sha256:{hex}"), path)
}

/// A key file plus the public PEM `airlock verify` would be given.
struct KeyFiles {
    _dir: tempfile::TempDir,
    private: PathBuf,
    public: String,
}

fn key_files(private_pem: &str) -> KeyFiles {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("key.pem");
    fs::write(&private, private_pem).unwrap();
    let signing = SigningKey::from_pem("key", private_pem).unwrap();
    let public = key::public_pem("key", signing.secret()).unwrap();
    KeyFiles {
        _dir: dir,
        private,
        public,
    }
}

fn p256_pem() -> String {
    let secret = p256::SecretKey::from_slice(&[0x11; 32]).unwrap();
    secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
}

fn ed25519_pem() -> String {
    ed25519_dalek::SigningKey::from_bytes(&[0x22; 32])
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap()
        .to_string()
}

fn options(out: &Path, key: &Path, layouts: &[&Path]) -> CreateOptions {
    CreateOptions {
        output: out.to_owned(),
        signing_key: key.to_owned(),
        layouts: layouts.iter().map(|p| p.to_path_buf()).collect(),
        files: Vec::new(),
        docker_archives: Vec::new(),
        packs: Vec::new(),
        charts: Vec::new(),
        compression: Compression::default(),
        created: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
    }
}

fn verify(created: &Created, public_pem: &str) {
    let trusted =
        TrustedKeys::new(vec![TrustedKey::from_pem("public", public_pem).unwrap()]).unwrap();
    let verified = verify_bundle(&created.bundle, &created.signature, &trusted).unwrap();
    assert_eq!(verified.digest(), created.digest);
    assert_eq!(verified.key().fingerprint, created.key_fingerprint);
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_created_bundle_verifies_and_reads_back_with_every_image() {
    let layout = TestLayout::new(&[
        ("quay.io/acme/app:1.0", b"layer one"),
        ("quay.io/acme/db:2.0", b"layer two"),
    ]);
    let key = key_files(&p256_pem());
    let out = tempfile::tempdir().unwrap();
    let extra = out.path().join("installer-1.0.iso");
    fs::write(&extra, b"iso bytes").unwrap();
    let bundle = out.path().join("acme.tar.zst");
    let mut opts = options(&bundle, &key.private, &[layout.path()]);
    opts.files.push(extra);
    let created = create(&opts).unwrap();
    assert_eq!(created.signature, out.path().join("acme.tar.sig.bin"));
    // Two layers, one shared config, two manifests.
    assert_eq!((created.images, created.blobs, created.files), (2, 5, 1));
    assert_eq!(created.key_algorithm, KeyAlgorithm::EcdsaP256);
    verify(&created, &key.public);

    let index = BundleIndex::build(
        UnverifiedBundle::open(&bundle).unwrap(),
        ReadLimits::default(),
        &Progress::new(),
    )
    .unwrap();
    let digests: Vec<String> = index.images()[..2]
        .iter()
        .map(|i| i.descriptor.digest.to_string())
        .collect();
    let expected: Vec<String> = layout.images.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(digests, expected);
    let installer = &index.images()[2].name;
    assert!(
        matches!(installer, ImageName::Artifact(name) if name.to_string() == "installers/installer:1.0"),
        "{installer:?}"
    );
    assert!(index.extra_files().is_empty());
    assert_eq!(
        names_in(out.path()),
        ["acme.tar.sig.bin", "acme.tar.zst", "installer-1.0.iso"]
    );
}

#[test]
fn streamed_ed25519_signature_is_pure_ed25519_over_the_whole_file() {
    let layout = TestLayout::new(&[("quay.io/acme/app:1.0", b"layer")]);
    let key = key_files(&ed25519_pem());
    let out = tempfile::tempdir().unwrap();
    let created = create(&options(
        &out.path().join("e.zst"),
        &key.private,
        &[layout.path()],
    ))
    .unwrap();
    let one_shot = ed25519_dalek::SigningKey::from_bytes(&[0x22; 32])
        .sign(&fs::read(&created.bundle).unwrap())
        .to_bytes();
    assert_eq!(fs::read(&created.signature).unwrap(), one_shot);
    verify(&created, &key.public);
}

#[test]
fn p384_rsa_and_legacy_pem_flavours_sign_verifiable_bundles() {
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    let layout = TestLayout::new(&[("quay.io/acme/app:1.0", b"layer")]);
    let p384 = p384::SecretKey::from_slice(&[0x33; 48]).unwrap();
    let sec1_p256 = p256::SecretKey::from_slice(&[0x44; 32])
        .unwrap()
        .to_sec1_pem(LineEnding::LF)
        .unwrap()
        .to_string();
    let rsa = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pems = [
        (
            p384.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            KeyAlgorithm::EcdsaP384,
        ),
        (sec1_p256, KeyAlgorithm::EcdsaP256),
        (
            rsa.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
            KeyAlgorithm::Rsa { bits: 2048 },
        ),
    ];
    for (pem, algorithm) in pems {
        let key = key_files(&pem);
        let out = tempfile::tempdir().unwrap();
        let created = create(&options(
            &out.path().join("k.zst"),
            &key.private,
            &[layout.path()],
        ))
        .unwrap();
        assert_eq!(created.key_algorithm, algorithm);
        verify(&created, &key.public);
    }
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let layout = TestLayout::new(&[("quay.io/acme/app:1.0", b"layer")]);
    let key = key_files(&p256_pem());
    let out = tempfile::tempdir().unwrap();
    let one = create(&options(
        &out.path().join("a.zst"),
        &key.private,
        &[layout.path()],
    ))
    .unwrap();
    let two = create(&options(
        &out.path().join("b.zst"),
        &key.private,
        &[layout.path()],
    ))
    .unwrap();
    assert_eq!(
        fs::read(&one.bundle).unwrap(),
        fs::read(&two.bundle).unwrap()
    );
    // RFC 6979: the ECDSA signature is deterministic too.
    assert_eq!(
        fs::read(&one.signature).unwrap(),
        fs::read(&two.signature).unwrap()
    );
}

#[test]
fn two_layouts_merge_and_shared_blobs_are_stored_once() {
    let first = TestLayout::new(&[("quay.io/acme/app:1.0", b"shared layer")]);
    let second = TestLayout::new(&[
        ("quay.io/acme/app:1.0", b"shared layer"),
        ("quay.io/acme/other:1.0", b"shared layer"),
    ]);
    let key = key_files(&p256_pem());
    let out = tempfile::tempdir().unwrap();
    let created = create(&options(
        &out.path().join("m.zst"),
        &key.private,
        &[first.path(), second.path()],
    ))
    .unwrap();
    // app:1.0 is the same image in both and is listed once; both images
    // share the config and the layer; each has its own manifest.
    assert_eq!((created.images, created.blobs), (2, 3));
}

#[test]
fn a_corrupt_blob_is_refused_and_nothing_is_left_behind() {
    let layout = TestLayout::new(&[("quay.io/acme/app:1.0", b"layer bytes")]);
    fs::write(&layout.layers[0], b"LAYER bytes").unwrap();
    let key = key_files(&p256_pem());
    let out = tempfile::tempdir().unwrap();
    let err = create(&options(
        &out.path().join("c.zst"),
        &key.private,
        &[layout.path()],
    ))
    .unwrap_err();
    assert!(matches!(err, Error::BlobDigestMismatch { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Integrity);
    assert!(
        err.to_string()
            .contains(&layout.layers[0].display().to_string())
    );
    assert!(
        names_in(out.path()).is_empty(),
        "{:?}",
        names_in(out.path())
    );
}

#[test]
fn a_missing_blob_is_refused_before_anything_is_written() {
    let layout = TestLayout::new(&[("quay.io/acme/app:1.0", b"layer")]);
    fs::remove_file(&layout.layers[0]).unwrap();
    let key = key_files(&p256_pem());
    let out = tempfile::tempdir().unwrap();
    let err = create(&options(
        &out.path().join("c.zst"),
        &key.private,
        &[layout.path()],
    ))
    .unwrap_err();
    assert!(matches!(err, Error::MissingBlob { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Integrity);
    assert!(names_in(out.path()).is_empty());
}

#[test]
fn different_images_under_one_name_are_refused() {
    let first = TestLayout::new(&[("quay.io/acme/app:1.0", b"one")]);
    let second = TestLayout::new(&[("quay.io/acme/app:1.0", b"two")]);
    let key = key_files(&p256_pem());
    let out = tempfile::tempdir().unwrap();
    let err = create(&options(
        &out.path().join("c.zst"),
        &key.private,
        &[first.path(), second.path()],
    ))
    .unwrap_err();
    assert!(matches!(err, Error::ConflictingNames { .. }), "{err}");
}

#[test]
fn a_layout_without_names_is_refused() {
    let layout = TestLayout::new(&[("1.0", b"layer")]);
    let key = key_files(&p256_pem());
    let out = tempfile::tempdir().unwrap();
    let err = create(&options(
        &out.path().join("c.zst"),
        &key.private,
        &[layout.path()],
    ))
    .unwrap_err();
    assert!(matches!(err, Error::NothingNamed { .. }), "{err}");
}

#[test]
fn stray_files_in_blobs_and_non_layouts_are_refused() {
    let layout = TestLayout::new(&[("quay.io/acme/app:1.0", b"layer")]);
    fs::write(layout.path().join("blobs/sha256/notes.txt"), b"x").unwrap();
    let key = key_files(&p256_pem());
    let out = tempfile::tempdir().unwrap();
    let err = create(&options(
        &out.path().join("c.zst"),
        &key.private,
        &[layout.path()],
    ))
    .unwrap_err();
    assert!(matches!(err, Error::StrayBlobFile { .. }), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = create(&options(
        &out.path().join("c.zst"),
        &key.private,
        &[empty.path()],
    ))
    .unwrap_err();
    assert!(matches!(err, Error::NotALayout { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Integrity);
}

#[test]
fn keys_that_cannot_sign_are_configuration_errors() {
    let layout = TestLayout::new(&[("quay.io/acme/app:1.0", b"layer")]);
    let out = tempfile::tempdir().unwrap();
    let public = key_files(&p256_pem()).public;
    let public_file = out.path().join("public.pem");
    fs::write(&public_file, public).unwrap();
    for key in [public_file, out.path().join("absent.pem")] {
        let err = create(&options(&out.path().join("c.zst"), &key, &[layout.path()])).unwrap_err();
        assert_eq!(err.class(), FailureClass::Config, "{err}");
        assert!(
            err.to_string().contains(&key.display().to_string()),
            "{err}"
        );
    }
    let small_rsa = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let pem = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&small_rsa, LineEnding::LF).unwrap();
    let err = SigningKey::from_pem("small.pem", &pem).unwrap_err();
    assert!(matches!(err, Error::KeyUnsupported { .. }), "{err}");
}

#[test]
fn ed25519_refuses_to_sign_a_file_that_changed_since_it_was_written() {
    let key = SigningKey::from_pem("ed", &ed25519_pem()).unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, b"the bundle as written").unwrap();
    let written = writer::Written {
        sha256: Sha256::digest(b"the bundle as it was hashed").into(),
        size: 21,
    };
    let err = sign::sign(&key, file.as_file(), file.path(), &written).unwrap_err();
    assert!(matches!(err, Error::BundleChanged { .. }), "{err}");
}
