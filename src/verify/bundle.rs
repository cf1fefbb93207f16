//! Verifying a bundle file and the proof that results.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::check::{self, Checks};
use super::digest;
use super::error::{Error, Result};
use super::keys::TrustedKey;
use super::keyset::TrustedKeys;
use super::signature;

/// A bundle whose signature verified under a trusted key.
///
/// Its fields are private so that no code outside this module can make one
/// up: holding a `VerifiedBundle` is the proof the later stages require.
/// It records the file's SHA-256 so a reader can check it is still reading
/// the same bytes that were verified.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    path: PathBuf,
    signature_path: PathBuf,
    sha256: String,
    size: u64,
    key: VerifiedBy,
}

impl VerifiedBundle {
    /// The bundle file that was verified.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The detached signature that vouched for it.
    pub fn signature_path(&self) -> &Path {
        &self.signature_path
    }

    /// Lower-case hex SHA-256 of the whole bundle file, without a prefix.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The bundle's digest in OCI notation, `sha256:<hex>`, for reports.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.sha256)
    }

    /// Bytes hashed, i.e. the bundle file's size when it was verified.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Which trusted key verified the signature.
    pub fn key(&self) -> &VerifiedBy {
        &self.key
    }
}

/// The key that verified a bundle, as reports and audit logs show it; with
/// several rotated keys configured this says which one is still in use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifiedBy {
    /// The key's label: its file path as configured.
    pub label: String,
    /// `sha256:<hex>` of the key's SPKI DER.
    pub fingerprint: String,
    /// The algorithm, e.g. `ECDSA P-256` or `RSA-4096`.
    pub algorithm: String,
}

impl From<&TrustedKey> for VerifiedBy {
    fn from(key: &TrustedKey) -> Self {
        Self {
            label: key.label().to_owned(),
            fingerprint: key.fingerprint().to_owned(),
            algorithm: key.algorithm().to_string(),
        }
    }
}

/// Verifies that `signature` is a signature over the whole `bundle` file by
/// any one of `keys`. Reads the bundle once; blocking, so async callers run
/// it in `spawn_blocking`.
pub fn verify_bundle(
    bundle: &Path,
    signature: &Path,
    keys: &TrustedKeys,
) -> Result<VerifiedBundle> {
    verify_bundle_with_progress(bundle, signature, keys, &mut |_| {})
}

/// [`verify_bundle`], calling `on_bytes` after each chunk with the number of
/// bytes just hashed (not the running total, so it maps onto a progress
/// bar's `inc`), because hashing a multi-gigabyte bundle takes long enough
/// that a terminal user wants to see it moving.
pub fn verify_bundle_with_progress(
    bundle: &Path,
    signature: &Path,
    keys: &TrustedKeys,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<VerifiedBundle> {
    let bundle_error = |source| Error::BundleRead {
        path: bundle.to_owned(),
        source,
    };
    // Open the bundle first so a mistyped bundle path is reported as such
    // rather than as a missing signature.
    let mut file = File::open(bundle).map_err(bundle_error)?;
    let signature_bytes = signature::read(signature, bundle)?;

    let mut checks = Checks::new(keys, &signature_bytes);
    if checks.is_empty() {
        return Err(Error::SignatureMalformed {
            path: signature.to_owned(),
            reason: no_format_matches(keys, signature_bytes.len()),
        });
    }

    let digested = digest::digest(&mut file, |chunk| {
        checks.update(chunk);
        on_bytes(chunk.len() as u64);
    })
    .map_err(bundle_error)?;

    let key = checks
        .finish(&digested.sha256)
        .ok_or_else(|| Error::NotVerified {
            signature: signature.to_owned(),
            bundle: bundle.to_owned(),
            keys: keys.len(),
        })?;
    Ok(VerifiedBundle {
        path: bundle.to_owned(),
        signature_path: signature.to_owned(),
        sha256: hex::encode(digested.sha256),
        size: digested.size,
        key: key.into(),
    })
}

fn no_format_matches(keys: &TrustedKeys, len: usize) -> String {
    let mut expected: Vec<String> = Vec::new();
    for key in keys {
        let format = check::expected_format(key.algorithm());
        if !expected.contains(&format) {
            expected.push(format);
        }
    }
    format!(
        "its {len} bytes are not {} (truncated or not a signature?)",
        expected.join(" or ")
    )
}
