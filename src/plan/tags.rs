//! What happens when a tag the bundle sets already exists in the target.
//!
//! A signed but older bundle is still signed: without this check, importing
//! it would move `app:1.0` back to the old content (a rollback). The policy
//! is decided per tag before anything is pushed; images pushed by digest
//! only cannot move anything and always pass.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

use super::PlannedImage;

/// What to do with an image whose tag already exists in the target at
/// another digest (`imports.on_existing_tag`, `--on-existing-tag`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TagPolicy {
    /// Move the tag to the bundle's content.
    Overwrite,
    /// Leave the tag where it is, import the rest, and report a notice.
    Skip,
    /// Leave the tag where it is, import the rest, and fail the import as
    /// refused content (exit 3, daemon status `partial`).
    #[default]
    FailIfDifferent,
}

impl TagPolicy {
    /// The name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            TagPolicy::Overwrite => "overwrite",
            TagPolicy::Skip => "skip",
            TagPolicy::FailIfDifferent => "fail-if-different",
        }
    }
}

/// An image held back because its tag already points at other content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldTag {
    /// The image's source reference.
    pub source_ref: String,
    /// The tag in the target, as people pull it.
    pub target_ref: String,
    /// The digest the tag points at in the target (kept).
    pub existing: Digest,
    /// The digest the bundle would have moved it to (not pushed).
    pub bundle: Digest,
    /// The policy that held it.
    pub policy: TagPolicy,
}

impl std::fmt::Display for HeldTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is already at {} in the target, the bundle has {} ({})",
            self.target_ref, self.existing, self.bundle, self.source_ref
        )
    }
}

/// Judges one tagged image against the digest its tag has in the target:
/// `Some` when the policy holds it back.
pub fn judge(
    policy: TagPolicy,
    image: &PlannedImage,
    existing: Option<&Digest>,
) -> Option<HeldTag> {
    let existing = existing?;
    image.placement.tag.as_ref()?;
    if *existing == image.digest || policy == TagPolicy::Overwrite {
        return None;
    }
    Some(HeldTag {
        source_ref: image.source_ref.clone(),
        target_ref: image.placement.target_ref.clone(),
        existing: existing.clone(),
        bundle: image.digest.clone(),
        policy,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::plan::Placement;
    use crate::read::ImageKind;

    fn image(tag: Option<&str>, digest: &Digest) -> PlannedImage {
        PlannedImage {
            source_ref: "quay.io/acme/app:1.0".into(),
            placement: Placement {
                repository: "quay.io/acme/app".into(),
                tag: tag.map(str::to_owned),
                target_ref: "h/quay.io/acme/app:1.0".into(),
            },
            digest: digest.clone(),
            media_type: String::new(),
            kind: ImageKind::Image,
            platforms: Vec::new(),
            manifests: Arc::new([]),
            blobs: Arc::new([]),
            size: 0,
            subject: None,
            rewritten_from: None,
        }
    }

    fn digest(byte: char) -> Digest {
        format!("sha256:{}", byte.to_string().repeat(64))
            .parse()
            .expect("digest")
    }

    #[test]
    fn only_a_tag_at_other_content_is_held_and_only_when_not_overwriting() {
        let (old, new) = (digest('a'), digest('b'));
        let tagged = image(Some("1.0"), &new);
        for policy in [TagPolicy::Skip, TagPolicy::FailIfDifferent] {
            let held = judge(policy, &tagged, Some(&old)).expect("held");
            assert_eq!((held.existing, held.bundle), (old.clone(), new.clone()));
            assert!(judge(policy, &tagged, Some(&new)).is_none(), "same digest");
            assert!(judge(policy, &tagged, None).is_none(), "new tag");
            assert!(
                judge(policy, &image(None, &new), Some(&old)).is_none(),
                "by digest"
            );
        }
        assert!(judge(TagPolicy::Overwrite, &tagged, Some(&old)).is_none());
    }
}
