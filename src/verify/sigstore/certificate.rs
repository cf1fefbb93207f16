//! X.509 certificates of a keyless signature: the ECDSA keys in them, the
//! signature of each certificate by its issuer, and what Fulcio puts in a
//! signing certificate (SAN, OIDC issuer extension, code-signing EKU).

use ecdsa::signature::hazmat::PrehashVerifier as _;
use sha2::{Digest as _, Sha256, Sha384};
use spki::ObjectIdentifier;
use spki::der::{Decode as _, Encode as _};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};

const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const EXTENDED_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
/// Fulcio's OIDC issuer extension, a DER UTF8String.
pub(super) const FULCIO_ISSUER_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// Fulcio's first OIDC issuer extension: the raw issuer text, not DER.
pub(super) const FULCIO_ISSUER_V1: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");

/// An ECDSA public key from a certificate or a trusted root: Fulcio and
/// Rekor use P-256 and P-384.
#[derive(Debug, Clone)]
pub(super) enum EcKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl EcKey {
    /// Parses a DER SubjectPublicKeyInfo.
    pub(super) fn from_spki_der(der: &[u8]) -> Result<Self, String> {
        if let Ok(key) = p256::pkcs8::DecodePublicKey::from_public_key_der(der) {
            return Ok(EcKey::P256(key));
        }
        p384::pkcs8::DecodePublicKey::from_public_key_der(der)
            .map(EcKey::P384)
            .map_err(|_| "not an ECDSA P-256 or P-384 public key".to_owned())
    }

    /// Whether the DER `signature` verifies over a message whose digest is
    /// `prehash` (ECDSA truncates or pads it to the curve's size).
    pub(super) fn verifies(&self, prehash: &[u8], signature: &[u8]) -> bool {
        match self {
            EcKey::P256(key) => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| key.verify_prehash(prehash, &s).is_ok()),
            EcKey::P384(key) => p384::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| key.verify_prehash(prehash, &s).is_ok()),
        }
    }

    /// `ECDSA P-256` or `ECDSA P-384`, as [`super::super::KeyAlgorithm`] shows it.
    pub(super) fn algorithm(&self) -> &'static str {
        match self {
            EcKey::P256(_) => "ECDSA P-256",
            EcKey::P384(_) => "ECDSA P-384",
        }
    }
}

/// A parsed certificate with its DER and public key.
#[derive(Debug, Clone)]
pub(super) struct Parsed {
    pub(super) der: Vec<u8>,
    pub(super) certificate: Certificate,
    pub(super) key: EcKey,
}

impl Parsed {
    pub(super) fn from_der(der: Vec<u8>) -> Result<Self, String> {
        let certificate =
            Certificate::from_der(&der).map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
        let spki = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| format!("certificate key does not encode: {e}"))?;
        let key = EcKey::from_spki_der(&spki)?;
        Ok(Self {
            der,
            certificate,
            key,
        })
    }

    /// `[notBefore, notAfter]` in Unix seconds.
    pub(super) fn validity(&self) -> (u64, u64) {
        let validity = &self.certificate.tbs_certificate.validity;
        (
            validity.not_before.to_unix_duration().as_secs(),
            validity.not_after.to_unix_duration().as_secs(),
        )
    }

    /// Whether `issuer`'s key signed this certificate (ECDSA with SHA-256
    /// or SHA-384, what Fulcio's roots and intermediates use).
    pub(super) fn signed_by(&self, issuer: &EcKey) -> Result<bool, String> {
        let tbs = self
            .certificate
            .tbs_certificate
            .to_der()
            .map_err(|e| format!("certificate does not encode: {e}"))?;
        let signature = self
            .certificate
            .signature
            .as_bytes()
            .ok_or("certificate signature is not whole bytes")?;
        let algorithm = self.certificate.signature_algorithm.oid;
        let prehash: Vec<u8> = if algorithm == ECDSA_WITH_SHA256 {
            Sha256::digest(&tbs).to_vec()
        } else if algorithm == ECDSA_WITH_SHA384 {
            Sha384::digest(&tbs).to_vec()
        } else {
            return Err(format!(
                "certificate is signed with {algorithm}, only ECDSA with SHA-256 or SHA-384 is accepted"
            ));
        };
        Ok(issuer.verifies(&prehash, signature))
    }

    fn extension(&self, oid: ObjectIdentifier) -> Option<&[u8]> {
        self.certificate
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// The e-mail addresses and URIs of the subject alternative name,
    /// where Fulcio puts the signer's identity.
    pub(super) fn identities(&self) -> Result<Vec<String>, String> {
        let Some(value) = self.extension(SUBJECT_ALT_NAME) else {
            return Ok(Vec::new());
        };
        let names = SubjectAltName::from_der(value)
            .map_err(|e| format!("subject alternative name does not parse: {e}"))?;
        Ok(names
            .0
            .iter()
            .filter_map(|name| match name {
                GeneralName::Rfc822Name(text) | GeneralName::UniformResourceIdentifier(text) => {
                    Some(text.to_string())
                }
                _ => None,
            })
            .collect())
    }

    /// The OIDC issuer Fulcio recorded: the 1.8 extension (a DER
    /// UTF8String), else the legacy 1.1 one (raw text).
    pub(super) fn oidc_issuer(&self) -> Result<Option<String>, String> {
        if let Some(value) = self.extension(FULCIO_ISSUER_V2) {
            return String::from_der(value).map(Some).map_err(|e| {
                format!("issuer extension {FULCIO_ISSUER_V2} is not a UTF8String: {e}")
            });
        }
        match self.extension(FULCIO_ISSUER_V1) {
            None => Ok(None),
            Some(value) => std::str::from_utf8(value)
                .map(|text| Some(text.to_owned()))
                .map_err(|_| format!("issuer extension {FULCIO_ISSUER_V1} is not UTF-8 text")),
        }
    }

    /// Whether the extended key usage allows code signing.
    pub(super) fn allows_code_signing(&self) -> Result<bool, String> {
        let Some(value) = self.extension(EXTENDED_KEY_USAGE) else {
            return Ok(false);
        };
        let usages = ExtendedKeyUsage::from_der(value)
            .map_err(|e| format!("extended key usage does not parse: {e}"))?;
        Ok(usages.0.contains(&CODE_SIGNING))
    }

    /// `sha256:<hex>` of the certificate's SPKI DER, the same fingerprint a
    /// [`super::super::TrustedKey`] of that key has.
    pub(super) fn key_fingerprint(&self) -> String {
        let spki = self
            .certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(spki)))
    }
}
