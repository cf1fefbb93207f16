//! Trust in the images inside a verified bundle: cosign signatures checked
//! against the keys the site trusts for each image, before anything is
//! pushed.
//!
//! Depends on [`crate::verify`] (keys and signature checks) and
//! [`crate::read`] (the bundle's documents); [`crate::plan`] uses it to hold
//! back images whose signature does not satisfy their rule.
//!
//! The formats are small and are read here with serde_json, base64 and the
//! verifier's own key types rather than the `sigstore` crate: see
//! docs/ARCHITECTURE.md, "Dependencies" (why not the sigstore crate).

mod cosign;
mod rules;
mod sigstore_bundle;
mod verdict;

use std::path::PathBuf;

use crate::FailureClass;

pub use rules::{ImageSignatureRule, ImageSignatureRules, SignaturePolicy, SignatureRuleConfig};
pub use sigstore_bundle::{Envelope, IN_TOTO_PAYLOAD_TYPE, open_envelope, pae};
pub use verdict::{SignatureFormat, SignatureStatus, SignatureVerdict, judge};

/// The media type of a cosign simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding a cosign signature (base64).
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the image signature rules cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule that checks signatures names no key.
    #[error("image signature rule {rule} ({images}) has policy {policy} but no keys")]
    NoKeys {
        /// The rule's position (1-based) in `trust.image_signatures`.
        rule: usize,
        /// Its image patterns.
        images: String,
        /// Its policy.
        policy: &'static str,
    },
    /// A rule has no image pattern.
    #[error("image signature rule {rule} matches no images: give at least one pattern")]
    NoPatterns {
        /// The rule's position (1-based).
        rule: usize,
    },
    /// A key of a rule cannot be loaded.
    #[error("image signature rule {rule}: {source}")]
    Key {
        /// The rule's position (1-based).
        rule: usize,
        /// The key files.
        keys: Vec<PathBuf>,
        /// What went wrong.
        #[source]
        source: crate::verify::Error,
    },
}

impl Error {
    /// Rules come from configuration or flags: config class.
    pub fn class(&self) -> FailureClass {
        FailureClass::Config
    }
}
