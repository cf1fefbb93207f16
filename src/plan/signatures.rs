//! The image signature hold: images whose signatures do not satisfy the
//! rule that matches them (`trust.image_signatures`) are left out of the
//! plan before anything is pushed, with their cosign companions and
//! referrers, like a tag the tag policy holds.

use std::collections::HashSet;

use crate::trust::SignatureVerdict;

use super::{Plan, PlannedImage};

impl Plan {
    /// Judges every image of the plan that can carry a signature against
    /// the plan's rules, in plan order. The bundle's digest is checked for
    /// an index rewritten to the selected platforms: that is what the
    /// producer signed.
    pub fn judge_signatures(&self) -> Vec<SignatureVerdict> {
        let rules = &self.options.image_signatures;
        self.images
            .iter()
            .filter(|image| {
                SignatureVerdict::applies_to(
                    &image.kind,
                    image.subject.as_ref(),
                    image.placement.tag.as_deref(),
                )
            })
            .map(|image| {
                let signed = image.rewritten_from.as_ref().unwrap_or(&image.digest);
                let mut verdict =
                    crate::trust::judge(&self.index, &image.source_ref, signed, rules);
                verdict.target_ref = Some(image.placement.target_ref.clone());
                verdict
            })
            .collect()
    }

    /// Leaves out the images `verdicts` hold back, their cosign companions
    /// (`sha256-<hex>.sig`, `.att`, … in the same repository) and their
    /// referrers: nothing of a held image reaches the target.
    pub fn withhold_unsigned(&mut self, verdicts: &[SignatureVerdict]) {
        let held: HashSet<&str> = verdicts
            .iter()
            .filter(|v| v.held_back)
            .filter_map(|v| v.target_ref.as_deref())
            .collect();
        if held.is_empty() {
            return;
        }
        let subjects: Vec<(String, crate::digest::Digest)> = self
            .images
            .iter()
            .filter(|image| held.contains(image.placement.target_ref.as_str()))
            .map(|image| (image.placement.repository.clone(), image.digest.clone()))
            .collect();
        self.images.retain(|image| {
            !held.contains(image.placement.target_ref.as_str())
                && !subjects
                    .iter()
                    .any(|(repository, digest)| belongs_to(image, repository, digest))
        });
    }
}

/// Whether `image` is a companion or referrer of the image `digest` in
/// `repository`.
fn belongs_to(image: &PlannedImage, repository: &str, digest: &crate::digest::Digest) -> bool {
    if image.placement.repository != repository {
        return false;
    }
    image.subject.as_ref() == Some(digest)
        || image
            .placement
            .tag
            .as_deref()
            .and_then(crate::read::names::subject_of_tag)
            == Some(digest.hex())
}
