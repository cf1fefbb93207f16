//! Proof that a bundle file was signed by a trusted key, before anything in it
//! is read.
//!
//! A bundle `X.zst` travels with a detached signature (`X.sig.bin`, or
//! another name of [`signature_candidates`]) made by
//! `openssl dgst -sha256 -sign` (ECDSA P-256/P-384, RSA PKCS#1 v1.5), by
//! `openssl pkeyutl -sign -rawin` (Ed25519) or by `cosign sign-blob` (base64
//! text), or a Sigstore bundle `X.sigstore.json`, key-based or keyless (see
//! [`sigstore`]). [`verify_bundle`] checks it against the operator's [`TrustedKeys`]
//! in one streaming pass and returns a [`VerifiedBundle`], which only this
//! module can create: the later stages take one as their input, so an
//! unverified bundle cannot reach the registry by construction.

mod bundle;
mod check;
mod digest;
mod error;
mod file;
mod keys;
mod keyset;
mod paths;
mod signature;
pub mod sigstore;
#[cfg(test)]
mod tests;

pub use bundle::{
    Binding, BundleHasher, PendingBundle, VerifiedBundle, VerifiedBy, VerifyOptions, verify_bundle,
    verify_bundle_by_any, verify_bundle_with_progress,
};
pub use check::{verify_message, verify_sha256};
pub use error::{Error, Result, SigstoreRejection};
pub use file::{BundleFile, BundleReader, Symlinks};
pub use keys::{KeyAlgorithm, TrustedKey};
pub(crate) use keys::{first_pem_block, read_key_file};
pub use keyset::TrustedKeys;
pub use paths::{
    bundles_for_signature, is_signature_name, signature_candidates, signature_path_for,
    signatures_beside,
};
pub use sigstore::{CertificateIdentity, KeylessConfig, KeylessTrust};
