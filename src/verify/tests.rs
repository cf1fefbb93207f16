//! End-to-end checks of the verify stage with keys generated in-process.

use std::path::PathBuf;
use std::sync::OnceLock;

use ecdsa::signature::hazmat::PrehashSigner;
use ed25519_dalek::Signer;
use p256::pkcs8::{EncodePublicKey, LineEnding};
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::rand_core::OsRng;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::*;
use crate::FailureClass;

/// A signing key of any supported kind, able to sign like `openssl dgst -sha256 -sign`.
enum Signing {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Rsa(rsa::RsaPrivateKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl Signing {
    fn p256() -> Self {
        Signing::P256(p256::ecdsa::SigningKey::random(&mut OsRng))
    }

    fn p384() -> Self {
        Signing::P384(p384::ecdsa::SigningKey::random(&mut OsRng))
    }

    /// RSA key generation is slow in debug builds, so tests share one key.
    fn rsa2048() -> Self {
        static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
        Signing::Rsa(
            KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap())
                .clone(),
        )
    }

    fn ed25519(seed: u8) -> Self {
        Signing::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sha256 = Sha256::digest(message);
        match self {
            Signing::P256(key) => {
                let signature: p256::ecdsa::Signature = key.sign_prehash(&sha256).unwrap();
                signature.to_der().as_bytes().to_vec()
            }
            Signing::P384(key) => {
                let signature: p384::ecdsa::Signature = key.sign_prehash(&sha256).unwrap();
                signature.to_der().as_bytes().to_vec()
            }
            Signing::Rsa(key) => key
                .sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &sha256)
                .unwrap(),
            Signing::Ed25519(key) => key.sign(message).to_bytes().to_vec(),
        }
    }

    fn public_pem(&self) -> String {
        match self {
            Signing::P256(key) => key.verifying_key().to_public_key_pem(LineEnding::LF),
            Signing::P384(key) => key.verifying_key().to_public_key_pem(LineEnding::LF),
            Signing::Rsa(key) => key.to_public_key().to_public_key_pem(LineEnding::LF),
            Signing::Ed25519(key) => key.verifying_key().to_public_key_pem(LineEnding::LF),
        }
        .unwrap()
    }

    fn trusted(&self, label: &str) -> TrustedKey {
        TrustedKey::from_pem(label, &self.public_pem()).unwrap()
    }
}

/// A bundle and its signature on disk.
struct Fixture {
    _dir: TempDir,
    bundle: PathBuf,
    signature: PathBuf,
}

fn fixture(content: &[u8], signature: &[u8]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("images.tar.zst");
    let signature_path = signature_path_for(&bundle);
    std::fs::write(&bundle, content).unwrap();
    std::fs::write(&signature_path, signature).unwrap();
    Fixture {
        _dir: dir,
        bundle,
        signature: signature_path,
    }
}

fn message() -> Vec<u8> {
    // Longer than one read buffer, so chunk boundaries are crossed.
    (0..2_500_000u32).map(|i| (i * 7 % 256) as u8).collect()
}

fn keys(trusted: Vec<TrustedKey>) -> TrustedKeys {
    TrustedKeys::new(trusted).unwrap()
}

fn verify(fixture: &Fixture, keys: &TrustedKeys) -> Result<VerifiedBundle> {
    verify_bundle(&fixture.bundle, &fixture.signature, keys)
}

fn assert_verifies(signing: Signing, algorithm: &str) {
    let content = message();
    let fixture = fixture(&content, &signing.sign(&content));
    let key = signing.trusted("signer.pem");
    let fingerprint = key.fingerprint().to_owned();
    let verified = verify(&fixture, &keys(vec![key])).unwrap();
    assert_eq!(verified.key().label, "signer.pem");
    assert_eq!(verified.key().fingerprint, fingerprint);
    assert_eq!(verified.key().algorithm, algorithm);
    assert_eq!(verified.sha256(), hex::encode(Sha256::digest(&content)));
    assert_eq!(verified.digest(), format!("sha256:{}", verified.sha256()));
    assert_eq!(verified.size(), content.len() as u64);
    assert_eq!(verified.path(), fixture.bundle);
    assert_eq!(verified.signature_path(), fixture.signature);
}

fn assert_rejects_flipped_byte(signing: Signing) {
    let mut content = message();
    let signature = signing.sign(&content);
    content[1_500_000] ^= 0x01;
    let fixture = fixture(&content, &signature);
    let err = verify(&fixture, &keys(vec![signing.trusted("signer.pem")])).unwrap_err();
    assert!(matches!(err, Error::NotVerified { keys: 1, .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Integrity);
}

fn assert_rejects_truncated_signature(signing: Signing) {
    let content = message();
    let mut signature = signing.sign(&content);
    signature.truncate(signature.len() - 1);
    let fixture = fixture(&content, &signature);
    let err = verify(&fixture, &keys(vec![signing.trusted("signer.pem")])).unwrap_err();
    assert!(matches!(err, Error::SignatureMalformed { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Integrity);
}

#[test]
fn ecdsa_p256_sha256_signature_verifies() {
    assert_verifies(Signing::p256(), "ECDSA P-256");
}

#[test]
fn ecdsa_p384_with_sha256_prehash_verifies() {
    assert_verifies(Signing::p384(), "ECDSA P-384");
}

#[test]
fn rsa_2048_pkcs1v15_sha256_signature_verifies() {
    assert_verifies(Signing::rsa2048(), "RSA-2048");
}

#[test]
fn ed25519_signature_over_a_multi_chunk_file_verifies() {
    assert_verifies(Signing::ed25519(7), "Ed25519");
}

#[test]
fn flipped_byte_is_rejected_for_every_algorithm() {
    assert_rejects_flipped_byte(Signing::p256());
    assert_rejects_flipped_byte(Signing::p384());
    assert_rejects_flipped_byte(Signing::rsa2048());
    assert_rejects_flipped_byte(Signing::ed25519(7));
}

#[test]
fn truncated_signature_is_rejected_for_every_algorithm() {
    assert_rejects_truncated_signature(Signing::p256());
    assert_rejects_truncated_signature(Signing::p384());
    assert_rejects_truncated_signature(Signing::rsa2048());
    assert_rejects_truncated_signature(Signing::ed25519(7));
}

#[test]
fn signature_by_an_untrusted_key_of_the_same_kind_is_rejected() {
    let content = b"bundle".to_vec();
    for (signer, trusted) in [
        (Signing::p256(), Signing::p256()),
        (Signing::p384(), Signing::p384()),
        (Signing::ed25519(1), Signing::ed25519(2)),
    ] {
        let fixture = fixture(&content, &signer.sign(&content));
        let err = verify(&fixture, &keys(vec![trusted.trusted("other.pem")])).unwrap_err();
        assert!(matches!(err, Error::NotVerified { .. }), "{err}");
    }
}

#[test]
fn p384_signature_over_a_sha384_digest_is_rejected() {
    // `openssl dgst -sha256` never makes these; accepting them would mean
    // verifying something other than what the export side signs.
    let Signing::P384(key) = Signing::p384() else {
        unreachable!()
    };
    let content = b"bundle".to_vec();
    let signature: p384::ecdsa::Signature = ecdsa::signature::Signer::sign(&key, &content);
    let fixture = fixture(&content, signature.to_der().as_bytes());
    let trusted = TrustedKey::from_pem(
        "p384.pem",
        &key.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    let err = verify(&fixture, &keys(vec![trusted])).unwrap_err();
    assert!(matches!(err, Error::NotVerified { .. }), "{err}");
}

#[test]
fn ed25519_signature_with_non_canonical_s_is_rejected() {
    let signing = Signing::ed25519(9);
    let content = b"bundle".to_vec();
    let mut signature = signing.sign(&content);
    // s + L is the same scalar mod L, so only the canonicity check stops it.
    let order: [u8; 32] = curve25519_order();
    let mut carry = 0u16;
    for (byte, l) in signature[32..].iter_mut().zip(order) {
        let sum = u16::from(*byte) + u16::from(l) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    let fixture = fixture(&content, &signature);
    let err = verify(&fixture, &keys(vec![signing.trusted("ed.pem")])).unwrap_err();
    assert!(matches!(err, Error::SignatureMalformed { .. }), "{err}");
}

/// The order L of the Ed25519 base point, little-endian.
fn curve25519_order() -> [u8; 32] {
    let mut order = [0u8; 32];
    order[..16].copy_from_slice(&[
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14,
    ]);
    order[31] = 0x10;
    order
}

#[test]
fn rotation_set_where_only_the_second_key_verifies_reports_the_second() {
    let old = Signing::p256();
    let new = Signing::ed25519(3);
    let content = message();
    let fixture = fixture(&content, &new.sign(&content));
    let set = keys(vec![old.trusted("old.pem"), new.trusted("new.pem")]);
    let verified = verify(&fixture, &set).unwrap();
    assert_eq!(verified.key().label, "new.pem");
    assert_eq!(verified.key().algorithm, "Ed25519");
}

#[test]
fn rotation_set_of_one_algorithm_finds_the_second_key() {
    let old = Signing::p256();
    let new = Signing::p256();
    let content = b"bundle".to_vec();
    let fixture = fixture(&content, &new.sign(&content));
    let set = keys(vec![old.trusted("old.pem"), new.trusted("new.pem")]);
    assert_eq!(verify(&fixture, &set).unwrap().key().label, "new.pem");
}

#[test]
fn no_key_verifying_names_both_files_and_the_key_count() {
    let content = b"bundle".to_vec();
    let fixture = fixture(&content, &Signing::p256().sign(&content));
    let set = keys(vec![
        Signing::p256().trusted("a.pem"),
        Signing::p256().trusted("b.pem"),
    ]);
    let message = verify(&fixture, &set).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "signature {} does not verify {} with any of 2 trusted keys",
            fixture.signature.display(),
            fixture.bundle.display()
        )
    );
}

#[test]
fn base64_signature_file_with_trailing_newline_verifies() {
    use base64::Engine;
    let signing = Signing::p384();
    let content = b"bundle".to_vec();
    let mut text = base64::engine::general_purpose::STANDARD
        .encode(signing.sign(&content))
        .into_bytes();
    text.extend_from_slice(b"\n");
    let fixture = fixture(&content, &text);
    verify(&fixture, &keys(vec![signing.trusted("cosign.pub")])).unwrap();
}

#[test]
fn progress_callback_sees_every_byte_once() {
    let signing = Signing::ed25519(5);
    let content = message();
    let fixture = fixture(&content, &signing.sign(&content));
    let mut seen = 0u64;
    verify_bundle_with_progress(
        &fixture.bundle,
        &fixture.signature,
        &keys(vec![signing.trusted("k.pem")]),
        VerifyOptions::default(),
        &mut |n| {
            seen += n;
            std::ops::ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(seen, content.len() as u64);
}

#[test]
fn missing_bundle_is_a_usage_error() {
    let signing = Signing::ed25519(5);
    let fixture = fixture(b"x", &signing.sign(b"x"));
    std::fs::remove_file(&fixture.bundle).unwrap();
    let err = verify(&fixture, &keys(vec![signing.trusted("k.pem")])).unwrap_err();
    assert!(matches!(err, Error::BundleMissing { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Config);
}

#[test]
fn unreadable_bundle_is_an_integrity_failure() {
    let signing = Signing::ed25519(5);
    let fixture = fixture(b"x", &signing.sign(b"x"));
    // A directory opens but cannot be read as a file.
    std::fs::remove_file(&fixture.bundle).unwrap();
    std::fs::create_dir(&fixture.bundle).unwrap();
    let err = verify(&fixture, &keys(vec![signing.trusted("k.pem")])).unwrap_err();
    assert!(matches!(err, Error::BundleRead { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Integrity);
}

#[test]
fn empty_key_set_is_a_config_error() {
    let err = TrustedKeys::new(Vec::new()).unwrap_err();
    assert_eq!(err.class(), FailureClass::Config);
    let err = TrustedKeys::load(&[]).unwrap_err();
    assert!(matches!(err, Error::NoTrustedKeys { .. }), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README"), "keys go here").unwrap();
    let err = TrustedKeys::load(&[dir.path().to_owned()]).unwrap_err();
    assert!(matches!(err, Error::NoTrustedKeys { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Config);
}

#[test]
fn key_directory_loads_pem_and_pub_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
    write("b.pub", Signing::ed25519(1).public_pem());
    write("a.pem", Signing::p256().public_pem());
    write("c.txt", Signing::ed25519(2).public_pem());
    std::fs::create_dir(dir.path().join("d.pem")).unwrap();
    let set = TrustedKeys::load(&[dir.path().to_owned()]).unwrap();
    let labels: Vec<&str> = set.iter().map(TrustedKey::label).collect();
    let expected: Vec<String> = ["a.pem", "b.pub"]
        .iter()
        .map(|name| dir.path().join(name).display().to_string())
        .collect();
    assert_eq!(labels, expected);
}

#[test]
fn the_same_key_listed_twice_is_tried_once() {
    let signing = Signing::ed25519(4);
    let set = keys(vec![
        signing.trusted("first.pem"),
        signing.trusted("second.pem"),
    ]);
    assert_eq!(set.len(), 1);
    assert_eq!(set.iter().next().map(TrustedKey::label), Some("first.pem"));
}

#[test]
fn unreadable_or_unparsable_key_file_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = TrustedKeys::load(std::slice::from_ref(&missing)).unwrap_err();
    assert!(matches!(err, Error::KeyRead { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Config);
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let err = TrustedKey::from_pem_file(&garbage).unwrap_err();
    assert!(matches!(err, Error::KeyMalformed { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Config);
    assert!(err.to_string().contains("garbage.pem"), "{err}");

    let binary = dir.path().join("binary.pem");
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    let err = TrustedKey::from_pem_file(&binary).unwrap_err();
    assert!(matches!(err, Error::KeyMalformed { .. }), "{err}");
}

#[test]
fn private_key_pem_is_refused() {
    use p256::pkcs8::EncodePrivateKey;
    let key = p256::ecdsa::SigningKey::random(&mut OsRng);
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let err = TrustedKey::from_pem("private.pem", &pem).unwrap_err();
    assert!(err.to_string().contains("PRIVATE KEY"), "{err}");
    assert_eq!(err.class(), FailureClass::Config);
}

#[test]
fn rsa_key_below_2048_bits_is_a_config_error() {
    let small = rsa::RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
    let pem = small
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let err = TrustedKey::from_pem("small.pem", &pem).unwrap_err();
    assert!(matches!(err, Error::KeyUnsupported { .. }), "{err}");
    assert!(err.to_string().contains("1024 bits"), "{err}");
    assert_eq!(err.class(), FailureClass::Config);
}

#[test]
fn pkcs1_rsa_public_key_has_the_same_fingerprint_as_its_spki_form() {
    let Signing::Rsa(key) = Signing::rsa2048() else {
        unreachable!()
    };
    let public = key.to_public_key();
    let spki = TrustedKey::from_pem(
        "spki.pem",
        &public.to_public_key_pem(LineEnding::LF).unwrap(),
    )
    .unwrap();
    let pkcs1 =
        TrustedKey::from_pem("pkcs1.pem", &public.to_pkcs1_pem(LineEnding::LF).unwrap()).unwrap();
    assert_eq!(pkcs1.algorithm(), KeyAlgorithm::Rsa { bits: 2048 });
    assert_eq!(pkcs1.fingerprint(), spki.fingerprint());
}

#[test]
fn fingerprint_is_the_sha256_of_the_spki_der() {
    let Signing::Ed25519(key) = Signing::ed25519(1) else {
        unreachable!()
    };
    let der = key.verifying_key().to_public_key_der().unwrap();
    let trusted = Signing::ed25519(1).trusted("k.pem");
    assert_eq!(
        trusted.fingerprint(),
        format!("sha256:{}", hex::encode(Sha256::digest(der.as_bytes())))
    );
}

#[test]
fn pem_with_surrounding_text_is_accepted() {
    let pem = format!(
        "# rotated 2024-05\n{}\n\n-----BEGIN PUBLIC KEY-----\nignored second block",
        Signing::ed25519(1).public_pem()
    );
    let key = TrustedKey::from_pem("commented.pem", &pem).unwrap();
    assert_eq!(key.algorithm(), KeyAlgorithm::Ed25519);
}

#[test]
fn algorithm_names_read_like_openssl_terms() {
    assert_eq!(KeyAlgorithm::EcdsaP256.to_string(), "ECDSA P-256");
    assert_eq!(KeyAlgorithm::EcdsaP384.to_string(), "ECDSA P-384");
    assert_eq!(KeyAlgorithm::Rsa { bits: 4096 }.to_string(), "RSA-4096");
    assert_eq!(KeyAlgorithm::Ed25519.to_string(), "Ed25519");
}

#[test]
fn small_order_ed25519_key_is_refused() {
    // The identity point: every signature with R = identity and s = 0 verifies under it.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = ed25519_dalek::VerifyingKey::from_bytes(&identity).unwrap();
    let pem = weak.to_public_key_pem(LineEnding::LF).unwrap();
    let err = TrustedKey::from_pem("weak.pem", &pem).unwrap_err();
    assert!(matches!(err, Error::KeyUnsupported { .. }), "{err}");
}

/// Measures hashing throughput, which bounds how long an import host spends
/// before the first blob is pushed. Run with
/// `cargo test --release --lib -- --ignored --nocapture hashing_throughput`.
/// The file is freshly written, so it is read from the page cache: this is
/// the CPU cost, not the disk's.
#[test]
#[ignore = "writes a 2 GiB file; meaningful only in release mode"]
fn hashing_throughput_on_a_2_gib_file() {
    use std::io::Write;
    use std::time::Instant;

    const SIZE: u64 = 2 * 1024 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("big.zst");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&bundle).unwrap());
    let block: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    for _ in 0..SIZE / block.len() as u64 {
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
    drop(file);

    // A well-formed signature over other bytes: the whole file is still
    // hashed, and the run ends in NotVerified instead of needing 2 GiB in
    // memory to sign it.
    for (what, signing) in [
        ("ECDSA P-256 (SHA-256)", Signing::p256()),
        ("Ed25519 (SHA-256 + SHA-512)", Signing::ed25519(1)),
    ] {
        let signature = dir.path().join("big.sig.bin");
        std::fs::write(&signature, signing.sign(b"other")).unwrap();
        let set = keys(vec![signing.trusted("k.pem")]);
        let start = Instant::now();
        let err = verify_bundle(&bundle, &signature, &set).unwrap_err();
        let seconds = start.elapsed().as_secs_f64();
        assert!(matches!(err, Error::NotVerified { .. }), "{err}");
        println!(
            "{what}: {:.2} GB/s ({:.2} s for 2 GiB)",
            SIZE as f64 / seconds / 1e9,
            seconds
        );
    }
}
