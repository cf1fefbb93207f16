//! One trusted public key: parsed from PEM, named, and fingerprinted.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use spki::der::Decode;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

use super::error::{Error, Result};

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Below this an RSA signature no longer protects a bundle against a
/// well-funded forger (NIST SP 800-131A retired 1024-bit keys in 2013).
const MIN_RSA_BITS: usize = 2048;

/// A key file is a few hundred bytes to a few KiB; the cap keeps a mistyped
/// path to a multi-gigabyte file from being slurped into memory.
const MAX_KEY_FILE_LEN: u64 = 1024 * 1024;

/// Reads a key file into `buffer` (a zeroizing one for private keys), at
/// most [`MAX_KEY_FILE_LEN`] bytes; `Ok(false)` when the file is larger.
pub(crate) fn read_key_file(path: &Path, buffer: &mut Vec<u8>) -> std::io::Result<bool> {
    File::open(path)?
        .take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(buffer)?;
    Ok(buffer.len() as u64 <= MAX_KEY_FILE_LEN)
}

/// The signature algorithms airlock accepts, each exactly as
/// `openssl dgst -sha256 -sign` (or `pkeyutl -rawin` for Ed25519) produces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 over a SHA-256 digest, DER-encoded signature.
    EcdsaP256,
    /// ECDSA on NIST P-384 over a SHA-256 digest (not SHA-384: that is what
    /// `openssl dgst -sha256` does), DER-encoded signature.
    EcdsaP384,
    /// RSASSA-PKCS1-v1_5 over a SHA-256 digest.
    Rsa {
        /// Modulus size, shown to operators so key strength is visible in reports.
        bits: usize,
    },
    /// Pure Ed25519 (RFC 8032) over the whole bundle file.
    Ed25519,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyAlgorithm::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyAlgorithm::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyAlgorithm::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// The parsed key material, one variant per [`KeyAlgorithm`].
#[derive(Debug, Clone)]
pub(super) enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A public key the operator trusts to sign bundles.
///
/// Carries a label and fingerprint so reports can say which of several
/// rotated keys actually vouched for a bundle.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    label: String,
    fingerprint: String,
    algorithm: KeyAlgorithm,
    public: PublicKey,
}

impl TrustedKey {
    /// Reads a PEM public key file; the path as given becomes the label so
    /// reports point at the file the operator configured.
    pub fn from_pem_file(path: &Path) -> Result<Self> {
        let read_error = |source| Error::KeyRead {
            path: path.to_owned(),
            source,
        };
        let label = path.display().to_string();
        let mut bytes = Vec::new();
        if !read_key_file(path, &mut bytes).map_err(read_error)? {
            return Err(malformed(
                &label,
                "file is larger than 1 MiB, far too big for a public key",
            ));
        }
        let pem = std::str::from_utf8(&bytes)
            .map_err(|e| malformed_by(&label, "file is not PEM text", e))?;
        Self::from_pem(label, pem)
    }

    /// Parses a PEM public key held in memory (e.g. inline in a config file).
    ///
    /// Accepts `PUBLIC KEY` (SPKI, what `openssl pkey -pubout` and cosign
    /// write) and `RSA PUBLIC KEY` (PKCS#1). Text around the first PEM block is
    /// ignored, as OpenSSL does.
    pub fn from_pem(label: impl Into<String>, pem: &str) -> Result<Self> {
        let label = label.into();
        let block = first_pem_block(pem)
            .ok_or_else(|| malformed(&label, "no complete -----BEGIN/-----END PEM block"))?;
        let (kind, der) = spki::der::pem::decode_vec(block.as_bytes())
            // pem-rfc7468 is built without `std` here, so its error is not a
            // `std::error::Error` and can only be carried as text.
            .map_err(|e| malformed(&label, &format!("PEM block does not decode: {e}")))?;
        match kind {
            "PUBLIC KEY" => Self::from_spki_der(label, der),
            "RSA PUBLIC KEY" => Self::from_pkcs1_der(label, &der),
            private if private.contains("PRIVATE KEY") => Err(malformed(
                &label,
                &format!(
                    "it holds a {private}; give the public key instead (openssl pkey -pubout)"
                ),
            )),
            other => Err(malformed(
                &label,
                &format!("PEM block is {other}, expected PUBLIC KEY"),
            )),
        }
    }

    fn from_spki_der(label: String, der: Vec<u8>) -> Result<Self> {
        let spki = SubjectPublicKeyInfoRef::from_der(&der)
            .map_err(|e| malformed_by(&label, "not a DER SubjectPublicKeyInfo", e))?;
        let oid = spki.algorithm.oid;
        let (algorithm, public) = if oid == ID_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters_oid()
                .map_err(|e| malformed_by(&label, "EC key without a named curve", e))?;
            if curve == SECP256R1 {
                let key = p256::pkcs8::DecodePublicKey::from_public_key_der(&der)
                    .map_err(|e| malformed_by(&label, "invalid P-256 public key", e))?;
                (KeyAlgorithm::EcdsaP256, PublicKey::P256(key))
            } else if curve == SECP384R1 {
                let key = p384::pkcs8::DecodePublicKey::from_public_key_der(&der)
                    .map_err(|e| malformed_by(&label, "invalid P-384 public key", e))?;
                (KeyAlgorithm::EcdsaP384, PublicKey::P384(key))
            } else {
                return Err(unsupported(
                    &label,
                    format!("ECDSA curve {curve} (only P-256 and P-384 are accepted)"),
                ));
            }
        } else if oid == RSA_ENCRYPTION {
            let key: rsa::RsaPublicKey = rsa::pkcs8::DecodePublicKey::from_public_key_der(&der)
                .map_err(|e| malformed_by(&label, "invalid RSA public key", e))?;
            (rsa_algorithm(&label, &key)?, PublicKey::Rsa(key))
        } else if oid == ED25519 {
            let key: ed25519_dalek::VerifyingKey =
                ed25519_dalek::pkcs8::DecodePublicKey::from_public_key_der(&der)
                    .map_err(|e| malformed_by(&label, "invalid Ed25519 public key", e))?;
            // A small-order key lets anyone forge signatures that verify under it.
            if key.is_weak() {
                return Err(unsupported(&label, "Ed25519 key is of small order".into()));
            }
            (KeyAlgorithm::Ed25519, PublicKey::Ed25519(key))
        } else {
            return Err(unsupported(
                &label,
                format!(
                    "key algorithm {oid} (accepted: ECDSA P-256/P-384, RSA 2048-4096, Ed25519)"
                ),
            ));
        };
        Ok(Self {
            fingerprint: fingerprint(&der),
            label,
            algorithm,
            public,
        })
    }

    fn from_pkcs1_der(label: String, der: &[u8]) -> Result<Self> {
        let key: rsa::RsaPublicKey = rsa::pkcs1::DecodeRsaPublicKey::from_pkcs1_der(der)
            .map_err(|e| malformed_by(&label, "invalid PKCS#1 RSA public key", e))?;
        let algorithm = rsa_algorithm(&label, &key)?;
        // Fingerprint the SPKI form so the same key has the same fingerprint
        // whichever PEM flavour it was handed over in.
        let spki = rsa::pkcs8::EncodePublicKey::to_public_key_der(&key)
            .map_err(|e| malformed_by(&label, "RSA key cannot be re-encoded as SPKI", e))?;
        Ok(Self {
            fingerprint: fingerprint(spki.as_bytes()),
            label,
            algorithm,
            public: PublicKey::Rsa(key),
        })
    }

    /// The name reports use for this key: the path it was loaded from.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// `sha256:<hex>` of the key's SPKI DER encoding, the same value as
    /// `openssl pkey -pubin -outform DER | sha256sum`, so operators can match
    /// a report to a key independently of file names.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The signature algorithm this key verifies.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    pub(super) fn public(&self) -> &PublicKey {
        &self.public
    }
}

fn rsa_algorithm(label: &str, key: &rsa::RsaPublicKey) -> Result<KeyAlgorithm> {
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(unsupported(
            label,
            format!("RSA key has {bits} bits, at least {MIN_RSA_BITS} are required"),
        ));
    }
    Ok(KeyAlgorithm::Rsa { bits })
}

fn fingerprint(spki_der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(spki_der)))
}

/// The first PEM block in `text`, trimmed of anything after its END line,
/// because the strict RFC 7468 decoder rejects trailing text and additional
/// blocks that OpenSSL tolerates. Shared with the signing side
/// ([`crate::bundle`]), which reads private keys the same way.
pub(crate) fn first_pem_block(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start..];
    let end_line = rest.find("-----END ")?;
    let after_end = &rest[end_line + "-----END ".len()..];
    let close = after_end.find("-----")?;
    let len = end_line + "-----END ".len() + close + "-----".len();
    Some(&rest[..len])
}

fn malformed(label: &str, reason: &str) -> Error {
    Error::KeyMalformed {
        label: label.to_owned(),
        reason: reason.to_owned(),
        source: None,
    }
}

fn malformed_by(
    label: &str,
    reason: &str,
    cause: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::KeyMalformed {
        label: label.to_owned(),
        reason: reason.to_owned(),
        source: Some(Box::new(cause)),
    }
}

fn unsupported(label: &str, reason: String) -> Error {
    Error::KeyUnsupported {
        label: label.to_owned(),
        reason,
    }
}
