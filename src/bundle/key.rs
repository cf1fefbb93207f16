//! The producer's private key: parsed from PEM, and checked against the very
//! rules `airlock verify` applies to its public half, so a bundle is never
//! signed with a key no importer could trust.

use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::EncodePublicKey as _;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::{DecodePrivateKey as _, LineEnding, ObjectIdentifier, PrivateKeyInfo};
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use spki::der::Decode as _;

use super::error::{Error, Result};
use crate::verify::{KeyAlgorithm, TrustedKey};
use crate::verify::{first_pem_block, read_key_file};

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// RSA sizes `airlock verify` accepts: at least 2048 bits (weaker keys are
/// forgeable), at most 4096 (the `rsa` crate's public-key limit).
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// The secret half, one variant per algorithm `airlock verify` accepts.
pub(super) enum Secret {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    // Boxed: an RSA key with its CRT values is far larger than the others.
    Rsa(Box<rsa::RsaPrivateKey>),
    Ed25519(ed25519_dalek::SigningKey),
}

/// A key to sign bundles with.
///
/// Carries the public half as a [`TrustedKey`], so the report shows the same
/// algorithm name and fingerprint `airlock verify` prints for the public key.
pub struct SigningKey {
    public: TrustedKey,
    secret: Secret,
}

impl fmt::Debug for SigningKey {
    /// Never prints the secret, so a key cannot leak through a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("label", &self.public.label())
            .field("algorithm", &self.public.algorithm())
            .field("fingerprint", &self.public.fingerprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PEM private key file; the path as given becomes the label.
    ///
    /// Accepts `PRIVATE KEY` (PKCS#8, what `openssl genpkey` writes),
    /// `EC PRIVATE KEY` (SEC1) and `RSA PRIVATE KEY` (PKCS#1), unencrypted.
    pub fn from_pem_file(path: &Path) -> Result<Self> {
        let label = path.display().to_string();
        let mut bytes = Zeroizing::new(Vec::new());
        let fits = read_key_file(path, &mut bytes).map_err(|source| Error::KeyRead {
            path: path.to_owned(),
            source,
        })?;
        if !fits {
            return Err(malformed(
                &label,
                "larger than 1 MiB, far too big for a key",
            ));
        }
        let pem = std::str::from_utf8(&bytes)
            .map_err(|e| malformed_by(&label, "the file is not PEM text", e))?;
        Self::from_pem(label, pem)
    }

    /// Parses a PEM private key held in memory. Text around the first PEM
    /// block is ignored, as OpenSSL does.
    pub fn from_pem(label: impl Into<String>, pem: &str) -> Result<Self> {
        let label = label.into();
        let block = first_pem_block(pem)
            .ok_or_else(|| malformed(&label, "no complete -----BEGIN/-----END PEM block"))?;
        let (kind, der) = spki::der::pem::decode_vec(block.as_bytes())
            // pem-rfc7468 is built without `std`, so its error is carried as text.
            .map_err(|e| malformed(&label, &format!("the PEM block does not decode: {e}")))?;
        let der = Zeroizing::new(der);
        let secret = match kind {
            "PRIVATE KEY" => from_pkcs8(&label, &der)?,
            "EC PRIVATE KEY" => from_sec1(&label, &der)?,
            "RSA PRIVATE KEY" => {
                let key = rsa::RsaPrivateKey::from_pkcs1_der(&der)
                    .map_err(|e| malformed_by(&label, "invalid PKCS#1 RSA private key", e))?;
                rsa_secret(&label, key)?
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(unsupported(
                    &label,
                    "the key is encrypted; decrypt it to a protected file first \
                     (openssl pkey -in KEY -out PLAIN.pem)",
                ));
            }
            public if public.contains("PUBLIC KEY") => {
                return Err(malformed(
                    &label,
                    &format!("it holds a {public}; signing needs the private key"),
                ));
            }
            other => {
                return Err(malformed(
                    &label,
                    &format!("the PEM block is {other}, expected PRIVATE KEY"),
                ));
            }
        };
        let public = public_pem(&label, &secret)?;
        // The verifier's own parser decides the algorithm name, the
        // fingerprint and whether the key is acceptable at all (curve, RSA
        // size, small-order Ed25519 points).
        let public = TrustedKey::from_pem(label.clone(), &public).map_err(|e| match e {
            crate::verify::Error::KeyUnsupported { reason, .. } => unsupported(&label, &reason),
            other => malformed_by(&label, "its public half is not a valid public key", other),
        })?;
        Ok(Self { public, secret })
    }

    /// The name reports use for this key: the path it was loaded from.
    pub fn label(&self) -> &str {
        self.public.label()
    }

    /// The signature algorithm, named as `airlock verify` names it.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.public.algorithm()
    }

    /// `sha256:<hex>` of the public key's SPKI DER, the value `airlock
    /// verify` prints for the matching public key.
    pub fn fingerprint(&self) -> &str {
        self.public.fingerprint()
    }

    /// The public half, as an importer would trust it.
    pub fn public_key(&self) -> &TrustedKey {
        &self.public
    }

    /// Signs a small message held in memory with an ECDSA P-256 key, as
    /// cosign does (SHA-256, RFC 6979 nonces, DER): `None` for other key
    /// types. Used for import attestations ([`crate::attest`]).
    pub fn sign_p256(&self, message: &[u8]) -> Option<Vec<u8>> {
        let Secret::P256(secret) = &self.secret else {
            return None;
        };
        let signature: p256::ecdsa::Signature =
            p256::ecdsa::signature::Signer::sign(secret, message);
        Some(signature.to_der().as_bytes().to_vec())
    }

    pub(super) fn secret(&self) -> &Secret {
        &self.secret
    }
}

fn from_pkcs8(label: &str, der: &[u8]) -> Result<Secret> {
    let info = PrivateKeyInfo::try_from(der)
        .map_err(|e| malformed_by(label, "not a DER PKCS#8 private key", e))?;
    let oid = info.algorithm.oid;
    if oid == ID_EC_PUBLIC_KEY {
        let curve = info
            .algorithm
            .parameters_oid()
            .map_err(|e| malformed_by(label, "EC key without a named curve", e))?;
        ec_secret(
            label,
            curve,
            || p256::SecretKey::from_pkcs8_der(der).map_err(|e| e.to_string()),
            || p384::SecretKey::from_pkcs8_der(der).map_err(|e| e.to_string()),
        )
    } else if oid == RSA_ENCRYPTION {
        let key = rsa::RsaPrivateKey::from_pkcs8_der(der)
            .map_err(|e| malformed_by(label, "invalid RSA private key", e))?;
        rsa_secret(label, key)
    } else if oid == ED25519 {
        let key = ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map_err(|e| malformed_by(label, "invalid Ed25519 private key", e))?;
        Ok(Secret::Ed25519(key))
    } else {
        Err(unsupported(
            label,
            &format!("key algorithm {oid} (accepted: ECDSA P-256/P-384, RSA 2048-4096, Ed25519)"),
        ))
    }
}

/// SEC1 (`EC PRIVATE KEY`) keys: OpenSSL names the curve inside the
/// structure; RustCrypto and some HSM exports leave it out, and then the
/// private scalar's fixed length (32 or 48 bytes, SEC1 section C.4) says
/// which curve it is. Either way the curve is known before parsing, so a
/// P-256 scalar is never taken for a zero-padded P-384 one.
fn from_sec1(label: &str, der: &[u8]) -> Result<Secret> {
    let (curve, scalar_len) =
        sec1_curve(der).ok_or_else(|| malformed(label, "not a DER SEC1 EC private key"))?;
    let curve = match (curve, scalar_len) {
        (Some(curve), _) => curve,
        (None, 32) => SECP256R1,
        (None, 48) => SECP384R1,
        (None, len) => {
            return Err(malformed(
                label,
                &format!("EC key without a named curve and a {len}-byte scalar"),
            ));
        }
    };
    ec_secret(
        label,
        curve,
        || p256::SecretKey::from_sec1_der(der).map_err(|e| e.to_string()),
        || p384::SecretKey::from_sec1_der(der).map_err(|e| e.to_string()),
    )
}

fn ec_secret(
    label: &str,
    curve: ObjectIdentifier,
    p256: impl FnOnce() -> std::result::Result<p256::SecretKey, String>,
    p384: impl FnOnce() -> std::result::Result<p384::SecretKey, String>,
) -> Result<Secret> {
    if curve == SECP256R1 {
        let key =
            p256().map_err(|e| malformed(label, &format!("invalid P-256 private key: {e}")))?;
        Ok(Secret::P256(key.into()))
    } else if curve == SECP384R1 {
        let key =
            p384().map_err(|e| malformed(label, &format!("invalid P-384 private key: {e}")))?;
        Ok(Secret::P384(key.into()))
    } else {
        Err(unsupported(
            label,
            &format!("ECDSA curve {curve} (only P-256 and P-384 are accepted)"),
        ))
    }
}

fn rsa_secret(label: &str, key: rsa::RsaPrivateKey) -> Result<Secret> {
    let bits = key.n().bits();
    if !RSA_BITS.contains(&bits) {
        return Err(unsupported(
            label,
            &format!(
                "RSA key has {bits} bits; airlock verify accepts {} to {}",
                RSA_BITS.start(),
                RSA_BITS.end()
            ),
        ));
    }
    key.validate()
        .map_err(|e| malformed_by(label, "inconsistent RSA private key", e))?;
    Ok(Secret::Rsa(Box::new(key)))
}

/// The curve OID (if named) and scalar length of a SEC1 `ECPrivateKey`:
/// `SEQUENCE { version, privateKey OCTET STRING, [0] parameters OPTIONAL, [1] publicKey OPTIONAL }`.
fn sec1_curve(der: &[u8]) -> Option<(Option<ObjectIdentifier>, usize)> {
    use spki::der::asn1::{BitStringRef, ContextSpecific, OctetStringRef};
    use spki::der::{Reader as _, SliceReader, TagNumber};
    let mut reader = SliceReader::new(der).ok()?;
    let parsed = reader
        .sequence(|r| {
            let _version = u8::decode(r)?;
            let scalar = OctetStringRef::decode(r)?;
            let curve = ContextSpecific::<ObjectIdentifier>::decode_explicit(r, TagNumber::N0)?;
            let _public = ContextSpecific::<BitStringRef<'_>>::decode_explicit(r, TagNumber::N1)?;
            Ok((curve.map(|c| c.value), scalar.as_bytes().len()))
        })
        .ok()?;
    reader.finish(parsed).ok()
}

/// The public half as SPKI PEM, the form `openssl pkey -pubout` writes and
/// `airlock verify --public-key` reads.
pub(super) fn public_pem(label: &str, secret: &Secret) -> Result<String> {
    let encoded = match secret {
        Secret::P256(key) => p256::PublicKey::from(key.verifying_key())
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| e.to_string()),
        Secret::P384(key) => p384::PublicKey::from(key.verifying_key())
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| e.to_string()),
        Secret::Rsa(key) => key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| e.to_string()),
        Secret::Ed25519(key) => key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| e.to_string()),
    };
    encoded.map_err(|e| malformed(label, &format!("its public half cannot be encoded: {e}")))
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

fn unsupported(label: &str, reason: &str) -> Error {
    Error::KeyUnsupported {
        label: label.to_owned(),
        reason: reason.to_owned(),
    }
}
