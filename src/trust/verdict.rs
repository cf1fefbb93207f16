//! Judging one image: find its signatures in the bundle, check them with
//! the keys of the rule that matches it, and say whether the rule holds it
//! back.

use serde::{Deserialize, Serialize};

use super::rules::{ImageSignatureRules, SignaturePolicy};
use super::{cosign, sigstore_bundle};
use crate::digest::Digest;
use crate::read::names::subject_of_tag;
use crate::read::{BundleIndex, BundleSource, ImageKind, ImageName};
use crate::verify::TrustedKey;

/// What checking one signature gave.
pub(super) enum Outcome {
    /// It verified with `key` and names the image.
    Verified {
        /// The rule's key that verified it (boxed: a parsed RSA key dwarfs
        /// the other variant).
        key: Box<TrustedKey>,
        /// The payload or Sigstore bundle that verified.
        at: Digest,
    },
    /// It is present but does not vouch for the image.
    Failed {
        /// The payload, bundle or manifest at fault.
        at: Digest,
        /// Why.
        reason: String,
    },
}

impl Outcome {
    pub(super) fn failed(at: &Digest, reason: String) -> Self {
        Outcome::Failed {
            at: at.clone(),
            reason,
        }
    }
}

/// How an image's signatures turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureStatus {
    /// A signature by one of the rule's keys names the image.
    Verified,
    /// The bundle carries no signature for the image.
    Missing,
    /// Signatures are present, but none by the rule's keys names the image.
    Invalid,
    /// No rule (or an `ignore` rule) matches the image.
    NotChecked,
}

impl SignatureStatus {
    /// The name used in reports and attestations.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureStatus::Verified => "verified",
            SignatureStatus::Missing => "missing",
            SignatureStatus::Invalid => "invalid",
            SignatureStatus::NotChecked => "not-checked",
        }
    }
}

/// Where a signature that verified was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureFormat {
    /// cosign's `sha256-<hex>.sig` simple-signing manifest.
    SimpleSigning,
    /// An OCI 1.1 referrer holding a Sigstore bundle.
    SigstoreBundle,
}

/// The signature check of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureVerdict {
    /// The image's source reference.
    pub source_ref: String,
    /// Where the image would land, when judged for a plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<String>,
    /// The digest the signatures must name (the bundle's, before any
    /// platform selection).
    pub digest: Digest,
    /// The policy of the rule that matched (`ignore` without one).
    pub policy: SignaturePolicy,
    /// The matching rule's position in `trust.image_signatures` (1-based;
    /// 0 for the command line's rule), if one matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    /// What the check found.
    pub status: SignatureStatus,
    /// The fingerprint (`sha256:` of the SPKI) of the key that verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// Where that key was loaded from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_label: Option<String>,
    /// Which kind of signature verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<SignatureFormat>,
    /// The digest of the payload or Sigstore bundle that verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<Digest>,
    /// Signatures present that did not verify, each with its digest and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Whether the rule holds the image back.
    pub held_back: bool,
}

impl std::fmt::Display for SignatureVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.source_ref, self.digest)?;
        match self.status {
            SignatureStatus::Verified => write!(
                f,
                " signed by {}",
                self.key_label.as_deref().unwrap_or_default()
            ),
            SignatureStatus::Missing => f.write_str(" has no signature in the bundle"),
            SignatureStatus::NotChecked => f.write_str(" not checked"),
            SignatureStatus::Invalid => {
                write!(f, " has no valid signature: {}", self.problems.join("; "))
            }
        }
    }
}

impl SignatureVerdict {
    /// Whether the image is one whose signatures are looked for: a named
    /// image or index, not an artifact, a referrer, or a cosign companion
    /// (`sha256-<hex>.sig`, `.att`) itself.
    pub fn applies_to(kind: &ImageKind, subject: Option<&Digest>, tag: Option<&str>) -> bool {
        !matches!(kind, ImageKind::Artifact { .. })
            && subject.is_none()
            && tag.and_then(subject_of_tag).is_none()
    }
}

/// Checks the signatures the bundle carries for the image `digest` named
/// `source_ref` against the first rule that matches it.
pub fn judge<B: BundleSource>(
    index: &BundleIndex<B>,
    source_ref: &str,
    digest: &Digest,
    rules: &ImageSignatureRules,
) -> SignatureVerdict {
    let rule = rules.rule_for(source_ref);
    let mut verdict = SignatureVerdict {
        source_ref: source_ref.to_owned(),
        target_ref: None,
        digest: digest.clone(),
        policy: rule.map_or(SignaturePolicy::Ignore, |r| r.policy),
        rule: rule.map(|r| r.position),
        status: SignatureStatus::NotChecked,
        signed_by: None,
        key_label: None,
        format: None,
        signature: None,
        problems: Vec::new(),
        held_back: false,
    };
    let Some(keys) = rule
        .filter(|r| r.policy != SignaturePolicy::Ignore)
        .and_then(|r| r.keys.as_deref())
    else {
        return verdict;
    };
    let documents = |d: &Digest| index.document(d).cloned();
    let mut outcomes = Vec::new();
    for entry in index.images() {
        let Some(document) = index.document(&entry.descriptor.digest) else {
            continue;
        };
        let at = &entry.descriptor.digest;
        if is_cosign_signature_of(&entry.name, digest) {
            outcomes.push((
                SignatureFormat::SimpleSigning,
                cosign::check(at, document, &documents, digest, keys),
            ));
        } else if entry.subject.as_ref() == Some(digest) && is_sigstore_bundle(&entry.kind) {
            outcomes.push((
                SignatureFormat::SigstoreBundle,
                sigstore_bundle::check(at, document, &documents, digest, keys),
            ));
        }
    }
    let mut present = false;
    for (format, results) in outcomes {
        for outcome in results {
            present = true;
            match outcome {
                Outcome::Verified { key, at } if verdict.signed_by.is_none() => {
                    verdict.signed_by = Some(key.fingerprint().to_owned());
                    verdict.key_label = Some(key.label().to_owned());
                    verdict.format = Some(format);
                    verdict.signature = Some(at);
                }
                Outcome::Verified { .. } => {}
                Outcome::Failed { at, reason } => {
                    verdict.problems.push(format!("{}: {reason}", at.short()));
                }
            }
        }
    }
    verdict.status = match (verdict.signed_by.is_some(), present) {
        (true, _) => SignatureStatus::Verified,
        (false, true) => SignatureStatus::Invalid,
        (false, false) => SignatureStatus::Missing,
    };
    verdict.held_back = match verdict.policy {
        SignaturePolicy::Require => verdict.status != SignatureStatus::Verified,
        SignaturePolicy::VerifyIfPresent => verdict.status == SignatureStatus::Invalid,
        SignaturePolicy::Ignore => false,
    };
    verdict
}

fn is_cosign_signature_of(name: &ImageName, digest: &Digest) -> bool {
    let ImageName::Named(reference) = name else {
        return false;
    };
    reference
        .tag()
        .filter(|tag| tag.ends_with(".sig"))
        .and_then(subject_of_tag)
        == Some(digest.hex())
}

fn is_sigstore_bundle(kind: &ImageKind) -> bool {
    matches!(kind, ImageKind::Artifact { artifact_type }
        if artifact_type.starts_with(sigstore_bundle::BUNDLE_MEDIA_TYPE_PREFIX))
}
