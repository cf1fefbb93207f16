//! A bundle file signed with a Sigstore bundle (`X.sigstore.json`, as
//! `cosign sign-blob --bundle` and the Sigstore clients write it) instead of
//! a bare detached signature.
//!
//! Its `messageSignature` is over the SHA-256 of the bundle file, the digest
//! the one streaming pass computes anyway, so nothing is hashed twice and
//! memory does not grow with the bundle. Two kinds verify:
//!
//! - key-based (`verificationMaterial.publicKey`): the signature verifies
//!   with one of the trusted keys, exactly as a `X.sig.bin` does;
//! - keyless (a certificate and Rekor entries): against each configured
//!   `trust.keyless` entry, offline: the certificate chains to a CA of its
//!   `trusted_root.json`, names its identity and issuer, allows code signing,
//!   was valid when the log integrated the entry, and its key verifies the
//!   signature; the log entry records this digest, signature and
//!   certificate, and a trusted log vouches for it by a signed entry
//!   timestamp and/or an inclusion proof with a signed checkpoint (every one
//!   present must verify, at least one must be present).

mod certificate;
pub mod format;
mod root;
mod tlog;

use serde::{Deserialize, Serialize};

use self::certificate::Parsed;
use self::format::{Bundle, TlogEntry};
pub use self::root::{KeylessConfig, KeylessTrust};
use super::bundle::VerifiedBy;
use super::check::verify_sha256;
use super::keyset::TrustedKeys;

/// Who signed a bundle keylessly, as the certificate and the log say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateIdentity {
    /// The certificate's subject alternative name that matched.
    pub identity: String,
    /// The OIDC issuer in its Fulcio extension.
    pub issuer: String,
    /// The Rekor entry's log index.
    pub log_index: i64,
    /// When the log integrated the entry, Unix seconds.
    pub integrated_time: u64,
    /// The trusted root it chained to, as configured.
    pub trusted_root: String,
}

/// Whether a signature file is a Sigstore bundle rather than a bare
/// signature: named `*.json`, or UTF-8 text starting with `{`. The text
/// test matters: a raw RSA or Ed25519 signature starts with `{` once in 256,
/// but is practically never valid UTF-8 as a whole.
pub(super) fn looks_like_bundle(path: &std::path::Path, bytes: &[u8]) -> bool {
    let named_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    named_json
        || (bytes.trim_ascii_start().first() == Some(&b'{') && std::str::from_utf8(bytes).is_ok())
}

/// Verifies a parsed Sigstore bundle over a bundle file whose SHA-256 is
/// `sha256`; the reason it does not, naming the check that failed.
pub(super) fn verify(
    bundle: &Bundle,
    sha256: &[u8; 32],
    keys: &TrustedKeys,
) -> Result<VerifiedBy, String> {
    let message = bundle.message_signature.as_ref().ok_or(
        "it holds no messageSignature (a DSSE envelope does not sign a bundle file; use cosign sign-blob --bundle)",
    )?;
    let signed = message.sha256()?;
    if &signed != sha256 {
        return Err(format!(
            "it signs sha256 {}, but the bundle file's sha256 is {} (changed after signing, or another file's signature)",
            hex::encode(signed),
            hex::encode(sha256)
        ));
    }
    let signature = message.signature_bytes()?;
    match bundle.verification_material.leaf_certificate() {
        None => {
            if keys.is_empty() {
                return Err(
                    "it is key-based, but no trusted public key is configured (trust.public_keys, --public-key)"
                        .into(),
                );
            }
            verify_sha256(keys, sha256, &signature)
                .map(|key| VerifiedBy::from(&key))
                .ok_or_else(|| {
                    format!(
                        "its message signature does not verify with {}",
                        if keys.len() == 1 {
                            "the trusted key".to_owned()
                        } else {
                            format!("any of {} trusted keys", keys.len())
                        }
                    )
                })
        }
        Some(certificate) => {
            let certificate = certificate?;
            if keys.keyless().is_empty() {
                return Err(
                    "it is keyless (a certificate), but no keyless signer is trusted (trust.keyless, --trusted-root)"
                        .into(),
                );
            }
            let entries = &bundle.verification_material.tlog_entries;
            let mut reasons = Vec::new();
            for trust in keys.keyless() {
                match verify_keyless(trust, &certificate, &signature, sha256, entries) {
                    Ok(verified) => return Ok(verified),
                    Err(reason) if keys.keyless().len() == 1 => return Err(reason),
                    Err(reason) => reasons.push(format!(
                        "{} ({}): {reason}",
                        trust.identity,
                        trust.trusted_root.display()
                    )),
                }
            }
            Err(reasons.join("; "))
        }
    }
}

fn verify_keyless(
    trust: &KeylessTrust,
    certificate_der: &[u8],
    signature: &[u8],
    sha256: &[u8; 32],
    entries: &[TlogEntry],
) -> Result<VerifiedBy, String> {
    let leaf =
        Parsed::from_der(certificate_der.to_vec()).map_err(|e| format!("its certificate: {e}"))?;
    let identities = leaf.identities()?;
    if !identities.contains(&trust.identity) {
        return Err(format!(
            "certificate identity {} is not the trusted identity {:?}",
            if identities.is_empty() {
                "(none)".to_owned()
            } else {
                format!("{identities:?}")
            },
            trust.identity
        ));
    }
    match leaf.oidc_issuer()? {
        Some(issuer) if issuer == trust.issuer => {}
        found => {
            return Err(format!(
                "certificate OIDC issuer {} is not the trusted issuer {:?}",
                found.map_or("(none)".to_owned(), |i| format!("{i:?}")),
                trust.issuer
            ));
        }
    }
    if !leaf.allows_code_signing()? {
        return Err("certificate does not allow code signing (extended key usage)".into());
    }
    if !leaf.key.verifies(sha256, signature) {
        return Err("its message signature does not verify with the certificate's key".into());
    }
    let authority = trust
        .authorities
        .iter()
        .find(|authority| chains_to(&leaf, &authority.chain))
        .ok_or("certificate is not issued by a certificate authority of the trusted root")?;
    if entries.is_empty() {
        return Err("it has no transparency log entry (tlogEntries is empty)".into());
    }
    let expected = tlog::Expected {
        sha256,
        signature,
        certificate_der: &leaf.der,
    };
    let mut first_error = None;
    let mut logged = None;
    for entry in entries {
        match tlog::check(entry, &trust.logs, &expected) {
            Ok(ok) => {
                logged = Some(ok);
                break;
            }
            Err(reason) => {
                first_error.get_or_insert(reason);
            }
        }
    }
    let logged = logged.ok_or_else(|| {
        format!(
            "its transparency log entry does not verify: {}",
            first_error.unwrap_or_default()
        )
    })?;
    let (not_before, not_after) = leaf.validity();
    let at = logged.integrated_time;
    if !(not_before..=not_after).contains(&at) {
        return Err(format!(
            "certificate is valid from {} to {}, not at the log's integratedTime {}",
            rfc3339(not_before),
            rfc3339(not_after),
            rfc3339(at)
        ));
    }
    if !authority.valid.contains(at) {
        return Err(format!(
            "the certificate authority is not valid (validFor) at the log's integratedTime {}",
            rfc3339(at)
        ));
    }
    let identity = CertificateIdentity {
        identity: trust.identity.clone(),
        issuer: trust.issuer.clone(),
        log_index: logged.log_index,
        integrated_time: at,
        trusted_root: trust.trusted_root.display().to_string(),
    };
    Ok(VerifiedBy {
        label: format!(
            "{} (issuer {}, Rekor log index {})",
            identity.identity, identity.issuer, identity.log_index
        ),
        fingerprint: leaf.key_fingerprint(),
        algorithm: leaf.key.algorithm().to_owned(),
        certificate: Some(identity),
    })
}

/// Whether `leaf` was signed by the chain's first certificate and each
/// certificate of the chain by the next; the last, when self-issued (a
/// root), by itself. The chain's certificates are trusted as configured:
/// a trusted root may list an intermediate alone.
fn chains_to(leaf: &Parsed, chain: &[Parsed]) -> bool {
    let mut child = leaf;
    for issuer in chain {
        if !child.signed_by(&issuer.key).unwrap_or(false) {
            return false;
        }
        child = issuer;
    }
    let tbs = &child.certificate.tbs_certificate;
    tbs.issuer != tbs.subject || child.signed_by(&child.key).unwrap_or(false)
}

fn rfc3339(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(seconds),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::looks_like_bundle;

    #[test]
    fn a_raw_signature_starting_with_a_brace_is_not_taken_for_a_sigstore_bundle() {
        let mut raw_rsa = vec![b'{'; 1];
        raw_rsa.extend((0..511u32).map(|i| (i * 7 + 0x80) as u8));
        assert!(!looks_like_bundle(Path::new("b.sig.bin"), &raw_rsa));
        assert!(!looks_like_bundle(Path::new("b.sig.bin"), b"MEUCIQ=="));
        assert!(looks_like_bundle(
            Path::new("b.sig.bin"),
            b" {\"mediaType\": \"application/vnd.dev.sigstore.bundle.v0.3+json\"}"
        ));
        assert!(looks_like_bundle(
            Path::new("b.sigstore.json"),
            b"\x00truncated"
        ));
    }
}
