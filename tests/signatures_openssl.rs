//! Proves that airlock accepts exactly what the export side's `openssl`
//! commands produce, and rejects what `openssl` itself rejects.
//!
//! Keys are generated with the `openssl` command line into a temporary
//! directory at test time; none are committed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airlock::FailureClass;
use airlock::verify::{Error, TrustedKeys, signature_path_for, verify_bundle};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// Key kinds the export side may use, with the `openssl genpkey` options for each.
#[derive(Clone, Copy, Debug)]
enum Kind {
    P256,
    P384,
    Rsa2048,
    Rsa4096,
    Ed25519,
}

impl Kind {
    fn genpkey_args(self) -> &'static [&'static str] {
        match self {
            Kind::P256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Kind::P384 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            Kind::Rsa2048 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            Kind::Rsa4096 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
            Kind::Ed25519 => &["-algorithm", "ED25519"],
        }
    }

    fn algorithm_name(self) -> &'static str {
        match self {
            Kind::P256 => "ECDSA P-256",
            Kind::P384 => "ECDSA P-384",
            Kind::Rsa2048 => "RSA-2048",
            Kind::Rsa4096 => "RSA-4096",
            Kind::Ed25519 => "Ed25519",
        }
    }
}

fn run_openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command line must be installed to run these tests")
}

fn openssl(args: &[&str]) {
    let output = run_openssl(args);
    assert!(
        output.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn text(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// A private/public key pair made by `openssl genpkey` / `openssl pkey -pubout`.
struct KeyPair {
    kind: Kind,
    private: PathBuf,
    public: PathBuf,
}

fn generate(dir: &Path, name: &str, kind: Kind) -> KeyPair {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub.pem"));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(kind.genpkey_args());
    args.extend_from_slice(&["-out", text(&private)]);
    openssl(&args);
    openssl(&[
        "pkey",
        "-in",
        text(&private),
        "-pubout",
        "-out",
        text(&public),
    ]);
    KeyPair {
        kind,
        private,
        public,
    }
}

/// Signs `bundle` into its paired `.sig.bin` the way the export side does.
fn sign(key: &KeyPair, bundle: &Path) -> PathBuf {
    let signature = signature_path_for(bundle);
    match key.kind {
        Kind::Ed25519 => openssl(&[
            "pkeyutl",
            "-sign",
            "-rawin",
            "-inkey",
            text(&key.private),
            "-in",
            text(bundle),
            "-out",
            text(&signature),
        ]),
        _ => openssl(&[
            "dgst",
            "-sha256",
            "-sign",
            text(&key.private),
            "-out",
            text(&signature),
            text(bundle),
        ]),
    }
    signature
}

/// Whether openssl itself accepts the signature, the reference airlock must agree with.
fn openssl_verifies(public: &Path, kind: Kind, bundle: &Path, signature: &Path) -> bool {
    let output = match kind {
        Kind::Ed25519 => run_openssl(&[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            text(public),
            "-rawin",
            "-in",
            text(bundle),
            "-sigfile",
            text(signature),
        ]),
        _ => run_openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            text(public),
            "-signature",
            text(signature),
            text(bundle),
        ]),
    };
    output.status.success()
}

/// A few MiB of incompressible bytes, not a multiple of any buffer size.
fn write_bundle(dir: &Path, name: &str) -> PathBuf {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let content: Vec<u8> = (0..3 * 1024 * 1024 + 12_345)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn trust(paths: &[&Path]) -> TrustedKeys {
    let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    TrustedKeys::load(&paths).unwrap()
}

fn assert_openssl_signature_verifies(kind: Kind) {
    let dir = TempDir::new().unwrap();
    let key = generate(dir.path(), "signer", kind);
    let bundle = write_bundle(dir.path(), "images.tar.zst");
    let signature = sign(&key, &bundle);
    assert!(openssl_verifies(&key.public, kind, &bundle, &signature));

    let verified = verify_bundle(&bundle, &signature, &trust(&[&key.public])).unwrap();

    assert_eq!(verified.key().algorithm, kind.algorithm_name());
    assert_eq!(verified.key().label, key.public.display().to_string());
    let content = std::fs::read(&bundle).unwrap();
    assert_eq!(verified.sha256(), hex::encode(Sha256::digest(&content)));
    assert_eq!(verified.size(), content.len() as u64);
}

#[test]
fn openssl_ecdsa_p256_signature_verifies() {
    assert_openssl_signature_verifies(Kind::P256);
}

#[test]
fn openssl_ecdsa_p384_signature_over_sha256_verifies() {
    assert_openssl_signature_verifies(Kind::P384);
}

#[test]
fn openssl_rsa_2048_signature_verifies() {
    assert_openssl_signature_verifies(Kind::Rsa2048);
}

#[test]
fn openssl_rsa_4096_signature_verifies() {
    assert_openssl_signature_verifies(Kind::Rsa4096);
}

#[test]
fn openssl_pkeyutl_rawin_ed25519_signature_verifies() {
    assert_openssl_signature_verifies(Kind::Ed25519);
}

#[test]
fn base64_encoded_openssl_signature_verifies_for_every_algorithm() {
    let dir = TempDir::new().unwrap();
    for kind in [Kind::P256, Kind::P384, Kind::Rsa2048, Kind::Ed25519] {
        let key = generate(dir.path(), &format!("{kind:?}"), kind);
        let bundle = write_bundle(dir.path(), &format!("{kind:?}.zst"));
        let binary = sign(&key, &bundle);
        let encoded = dir.path().join(format!("{kind:?}.b64"));
        openssl(&["base64", "-A", "-in", text(&binary), "-out", text(&encoded)]);
        std::fs::rename(&encoded, &binary).unwrap();

        let verified = verify_bundle(&bundle, &binary, &trust(&[&key.public]))
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(verified.key().algorithm, kind.algorithm_name());
    }
}

#[test]
fn bundle_with_one_flipped_byte_is_rejected_as_openssl_rejects_it() {
    let dir = TempDir::new().unwrap();
    for kind in [Kind::P256, Kind::P384, Kind::Rsa2048, Kind::Ed25519] {
        let key = generate(dir.path(), &format!("{kind:?}"), kind);
        let bundle = write_bundle(dir.path(), &format!("{kind:?}.zst"));
        let signature = sign(&key, &bundle);
        let mut content = std::fs::read(&bundle).unwrap();
        content[2 * 1024 * 1024 + 17] ^= 0x80;
        std::fs::write(&bundle, content).unwrap();
        assert!(!openssl_verifies(&key.public, kind, &bundle, &signature));

        let err = verify_bundle(&bundle, &signature, &trust(&[&key.public])).unwrap_err();

        assert!(matches!(err, Error::NotVerified { .. }), "{kind:?}: {err}");
        assert_eq!(err.class(), FailureClass::Integrity);
    }
}

#[test]
fn signature_from_a_key_that_is_not_trusted_is_rejected() {
    let dir = TempDir::new().unwrap();
    for kind in [Kind::P256, Kind::Rsa2048, Kind::Ed25519] {
        let signer = generate(dir.path(), &format!("{kind:?}-signer"), kind);
        let trusted = generate(dir.path(), &format!("{kind:?}-trusted"), kind);
        let bundle = write_bundle(dir.path(), &format!("{kind:?}.zst"));
        let signature = sign(&signer, &bundle);
        assert!(!openssl_verifies(
            &trusted.public,
            kind,
            &bundle,
            &signature
        ));

        let err = verify_bundle(&bundle, &signature, &trust(&[&trusted.public])).unwrap_err();

        assert!(
            matches!(err, Error::NotVerified { keys: 1, .. }),
            "{kind:?}: {err}"
        );
        assert_eq!(err.class(), FailureClass::Integrity);
    }
}

#[test]
fn key_directory_with_rotated_keys_verifies_with_the_new_key() {
    let dir = TempDir::new().unwrap();
    let keys = dir.path().join("trusted");
    std::fs::create_dir(&keys).unwrap();
    let old = generate(dir.path(), "old", Kind::Rsa2048);
    let new = generate(dir.path(), "new", Kind::P256);
    std::fs::copy(&old.public, keys.join("2023.pem")).unwrap();
    std::fs::copy(&new.public, keys.join("2024.pem")).unwrap();
    let bundle = write_bundle(dir.path(), "images.zst");
    let signature = sign(&new, &bundle);

    let trusted = trust(&[&keys]);
    let verified = verify_bundle(&bundle, &signature, &trusted).unwrap();

    assert_eq!(trusted.len(), 2);
    assert_eq!(
        verified.key().label,
        keys.join("2024.pem").display().to_string()
    );
}

#[test]
fn fingerprint_is_sha256_of_the_der_that_openssl_exports() {
    let dir = TempDir::new().unwrap();
    let key = generate(dir.path(), "signer", Kind::P384);
    let der = dir.path().join("signer.der");
    openssl(&[
        "pkey",
        "-in",
        text(&key.private),
        "-pubout",
        "-outform",
        "DER",
        "-out",
        text(&der),
    ]);
    let expected = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(std::fs::read(&der).unwrap()))
    );
    let bundle = write_bundle(dir.path(), "images.zst");
    let signature = sign(&key, &bundle);

    let verified = verify_bundle(&bundle, &signature, &trust(&[&key.public])).unwrap();

    assert_eq!(verified.key().fingerprint, expected);
}

#[test]
fn pkcs1_rsa_public_key_from_openssl_verifies_with_the_spki_fingerprint() {
    let dir = TempDir::new().unwrap();
    let key = generate(dir.path(), "signer", Kind::Rsa2048);
    let pkcs1 = dir.path().join("signer.rsa.pem");
    openssl(&[
        "rsa",
        "-in",
        text(&key.private),
        "-RSAPublicKey_out",
        "-out",
        text(&pkcs1),
    ]);
    let bundle = write_bundle(dir.path(), "images.zst");
    let signature = sign(&key, &bundle);

    let from_pkcs1 = verify_bundle(&bundle, &signature, &trust(&[&pkcs1])).unwrap();
    let from_spki = verify_bundle(&bundle, &signature, &trust(&[&key.public])).unwrap();

    assert_eq!(from_pkcs1.key().fingerprint, from_spki.key().fingerprint);
}

#[test]
fn openssl_rsa_1024_key_is_refused_as_a_config_error() {
    let dir = TempDir::new().unwrap();
    let private = dir.path().join("small.key");
    let public = dir.path().join("small.pub.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        text(&private),
    ]);
    openssl(&[
        "pkey",
        "-in",
        text(&private),
        "-pubout",
        "-out",
        text(&public),
    ]);

    let err = TrustedKeys::load(std::slice::from_ref(&public)).unwrap_err();

    assert_eq!(err.class(), FailureClass::Config);
    assert!(err.to_string().contains(text(&public)), "{err}");
}

#[test]
fn unsupported_curve_from_openssl_is_refused_as_a_config_error() {
    let dir = TempDir::new().unwrap();
    let private = dir.path().join("p521.key");
    let public = dir.path().join("p521.pub.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-521",
        "-out",
        text(&private),
    ]);
    openssl(&[
        "pkey",
        "-in",
        text(&private),
        "-pubout",
        "-out",
        text(&public),
    ]);

    let err = TrustedKeys::load(&[public]).unwrap_err();

    assert!(matches!(err, Error::KeyUnsupported { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Config);
}

#[test]
fn missing_signature_file_is_an_integrity_failure() {
    let dir = TempDir::new().unwrap();
    let key = generate(dir.path(), "signer", Kind::Ed25519);
    let bundle = write_bundle(dir.path(), "images.zst");

    let err = verify_bundle(
        &bundle,
        &signature_path_for(&bundle),
        &trust(&[&key.public]),
    )
    .unwrap_err();

    assert!(matches!(err, Error::SignatureMissing { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Integrity);
}
