//! Decide where every image of a bundle lands and in which order its parts
//! are written.
//!
//! Depends on [`crate::read`]: a [`Plan`] can only be made from a
//! [`BundleIndex`], which can only be made from a verified bundle, so the
//! compiler keeps anything unverified away from [`crate::push`].
//!
//! Naming follows Palette's mirror convention: `quay.io/acme/app:1.0` lands at
//! `<host>/<prefix>/quay.io/acme/app:1.0`, so Palette's image swap (which maps
//! `quay.io` to `<host>/<prefix>/quay.io`) finds it. In an OCI layout target the
//! full source reference becomes the `org.opencontainers.image.ref.name`.

mod platform;
mod signatures;
mod tags;
mod target;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::FailureClass;
use crate::digest::Digest;
use crate::read::names::subject_of_tag;
use crate::read::{Area, ArtifactName, BundleIndex, ImageKind, ImageName, ManifestRef};

pub use platform::{InvalidPlatform, Platform, Rewritten, Selection, select};
pub use tags::{HeldTag, TagPolicy, judge};
pub use target::{InvalidTarget, Target, is_path_component};

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a bundle cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two different images in the bundle want the same tag.
    #[error(
        "two different images in the bundle would both be tagged {target} ({first} and {second})"
    )]
    ConflictingTags {
        /// The contested target reference.
        target: String,
        /// The first image's digest.
        first: Digest,
        /// The second image's digest.
        second: Digest,
    },
    /// Nothing in the bundle has a name to import it under.
    #[error("nothing in bundle {path} can be imported: {reasons}")]
    NothingToImport {
        /// The bundle file.
        path: String,
        /// Why each entry was skipped.
        reasons: String,
    },
    /// A target repository name would be invalid.
    #[error("image {source_ref} would land in an invalid repository {repository:?}")]
    InvalidRepository {
        /// The image's source reference.
        source_ref: String,
        /// The repository it would land in.
        repository: String,
    },
}

impl Error {
    /// Planning failures come from the bundle's content: integrity class.
    pub fn class(&self) -> FailureClass {
        FailureClass::Integrity
    }
}

/// Choices that shape a plan beyond the target itself.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// The prefix of the pack area, when packs land apart from the target's
    /// prefix (Palette's `OCI_PACK_BASE`). Default: the target's prefix.
    pub pack_prefix: Option<String>,
    /// The platforms to import (`--platform`); empty imports every image
    /// whole. See [`platform`].
    pub platforms: Vec<Platform>,
    /// What to do with a tag that already points at other content in the
    /// target (`imports.on_existing_tag`). See [`tags`].
    pub on_existing_tag: TagPolicy,
    /// Which keys must have signed which images
    /// (`trust.image_signatures`). Default: no rules, nothing checked.
    pub image_signatures: Arc<crate::trust::ImageSignatureRules>,
}

/// Checks a pack prefix (`--pack-prefix`, `registry.pack_prefix`): empty
/// (packs at the registry's root) or repository path components; `/` at
/// either end is dropped.
pub fn pack_prefix(text: &str) -> std::result::Result<String, String> {
    let trimmed = text.trim_matches('/');
    if trimmed.is_empty() || trimmed.split('/').all(is_path_component) {
        Ok(trimmed.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a repository path (lowercase letters, digits and . _ - separators, components joined by /)"
        ))
    }
}

/// Where one image goes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The repository inside the target (`spectro-images/quay.io/acme/app`);
    /// for an OCI layout target, the source repository.
    pub repository: String,
    /// The tag to set last, or none when the image is pushed by digest only.
    pub tag: Option<String>,
    /// The full target reference, as people will pull it.
    pub target_ref: String,
}

/// One image or artifact to write, with its parts in push order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedImage {
    /// The source reference (`quay.io/acme/app:1.0`).
    pub source_ref: String,
    /// Where it goes.
    pub placement: Placement,
    /// The top manifest's digest (what the tag will point at).
    pub digest: Digest,
    /// The top manifest's media type.
    pub media_type: String,
    /// Image, index or artifact.
    pub kind: ImageKind,
    /// Platforms it provides.
    pub platforms: Vec<String>,
    /// Manifests, children first, the top one last (shared with the
    /// bundle's index until a platform selection rewrites them).
    pub manifests: Arc<[ManifestRef]>,
    /// Config and layer blobs (shared likewise).
    pub blobs: Arc<[(Digest, u64)]>,
    /// Total bytes of blobs and manifests.
    pub size: u64,
    /// For referrers: the digest of the manifest this one refers to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    /// For an index rewritten to the selected platforms: the digest of the
    /// index as the bundle holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten_from: Option<Digest>,
}

impl PlannedImage {
    /// Where the image's top manifest is looked up: its repository and its
    /// tag, or its digest when it has no tag.
    pub fn digest_ref(&self) -> (String, String) {
        let reference = self
            .placement
            .tag
            .clone()
            .unwrap_or_else(|| self.digest.to_string());
        (self.placement.repository.clone(), reference)
    }
}

/// An `index.json` entry that will not be imported, and why.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// Its position in `index.json`.
    pub position: usize,
    /// Its digest.
    pub digest: Digest,
    /// Why it is skipped.
    pub reason: String,
}

/// What to write, where, and in which order. Made only from a [`BundleIndex`].
#[derive(Debug)]
pub struct Plan {
    index: Arc<BundleIndex>,
    target: Target,
    options: PlanOptions,
    images: Vec<PlannedImage>,
    skipped: Vec<Skipped>,
    /// Documents the plan wrote (indexes rewritten to the selected
    /// platforms), by digest.
    documents: HashMap<Digest, Bytes>,
    /// Where the tags the plan sets pointed in the target when the tag
    /// policy looked them up, by [`PlannedImage::digest_ref`]: the push
    /// need not ask again which images the target holds whole.
    tags_in_target: HashMap<(String, String), Option<Digest>>,
}

impl Plan {
    /// Plans the import of `index` into `target`.
    pub fn new(index: Arc<BundleIndex>, target: Target, options: PlanOptions) -> Result<Self> {
        let mut images: Vec<PlannedImage> = Vec::new();
        let mut skipped = Vec::new();
        let mut by_target: HashMap<String, Digest> = HashMap::new();
        let mut referrers = Vec::new();
        let mut documents = HashMap::new();
        for (position, image) in index.images().iter().enumerate() {
            let rewritten = match select(&index, image, &options.platforms) {
                Selection::Whole => None,
                Selection::Rewritten(rewritten) => Some(rewritten),
                Selection::Skipped(reason) => {
                    skipped.push(Skipped {
                        position,
                        digest: image.descriptor.digest.clone(),
                        reason,
                    });
                    continue;
                }
            };
            let (placement, source_ref) = match &image.name {
                ImageName::Named(reference) => (place(&target, reference)?, reference.whole()),
                ImageName::Artifact(name) => (
                    place_artifact(&target, &options, name)?,
                    format!("{} ({})", name, artifact_label(name.area)),
                ),
                ImageName::Unnamed { reason } => {
                    if image.subject.is_some() {
                        referrers.push(position);
                    } else {
                        skipped.push(Skipped {
                            position,
                            digest: image.descriptor.digest.clone(),
                            reason: reason.clone(),
                        });
                    }
                    continue;
                }
            };
            let digest = rewritten
                .as_ref()
                .map_or_else(|| image.descriptor.digest.clone(), |r| r.digest.clone());
            if let Some(first) = by_target.get(&placement.target_ref) {
                if *first == digest {
                    continue;
                }
                return Err(Error::ConflictingTags {
                    target: placement.target_ref,
                    first: first.clone(),
                    second: digest,
                });
            }
            by_target.insert(placement.target_ref.clone(), digest.clone());
            let mut image = planned(&index, position, source_ref, placement);
            if let Some(rewritten) = rewritten {
                image.apply(&index, rewritten, &mut documents);
            }
            images.push(image);
        }
        for position in referrers {
            let image = &index.images()[position];
            let subject = image.subject.clone();
            let home = images
                .iter()
                .find(|p| {
                    p.manifests
                        .iter()
                        .any(|m| Some(&m.digest) == subject.as_ref())
                })
                .map(|p| (p.placement.repository.clone(), p.source_ref.clone()));
            match home {
                Some((repository, subject_source)) => {
                    let digest = &image.descriptor.digest;
                    let target_ref = match &target {
                        Target::Registry { host, .. } => format!("{host}/{repository}@{digest}"),
                        Target::Layout { .. } => format!("{repository}@{digest}"),
                    };
                    let placement = Placement {
                        repository,
                        tag: None,
                        target_ref,
                    };
                    let source = format!("{subject_source} (referrer {})", digest.short());
                    images.push(planned(&index, position, source, placement));
                }
                None => skipped.push(Skipped {
                    position,
                    digest: image.descriptor.digest.clone(),
                    reason: orphan_reason(&images, subject.as_ref()),
                }),
            }
        }
        drop_tags_of_rewritten(&mut images, &mut skipped, &index);
        if images.is_empty() {
            let reasons = if skipped.is_empty() {
                "index.json lists nothing".to_owned()
            } else {
                skipped
                    .iter()
                    .map(|s| format!("entry {}: {}", s.position, s.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            return Err(Error::NothingToImport {
                path: index.bundle().path().display().to_string(),
                reasons,
            });
        }
        Ok(Plan {
            index,
            target,
            options,
            images,
            skipped,
            documents,
            tags_in_target: HashMap::new(),
        })
    }

    /// The bytes of a manifest to push: one the plan rewrote, else the
    /// bundle's own.
    pub fn document(&self, digest: &Digest) -> Option<&Bytes> {
        self.documents
            .get(digest)
            .or_else(|| self.index.document(digest))
    }

    /// The bundle index the plan was made from.
    pub fn index(&self) -> &Arc<BundleIndex> {
        &self.index
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The choices the plan was made with.
    pub fn options(&self) -> &PlanOptions {
        &self.options
    }

    /// Images and artifacts to write, referrers after their subjects.
    pub fn images(&self) -> &[PlannedImage] {
        &self.images
    }

    /// Leaves out the images whose top manifest is one of `digests` (packs
    /// held back by the pack-image policy), with their referrers.
    pub fn withhold(&mut self, digests: &HashSet<Digest>) {
        if digests.is_empty() {
            return;
        }
        self.images.retain(|image| {
            !digests.contains(&image.digest)
                && !image.subject.as_ref().is_some_and(|s| digests.contains(s))
        });
    }

    /// Leaves out the images whose tag the tag policy holds back (by
    /// target reference). Their referrers stay: pushed by digest, they move
    /// no tag.
    pub fn withhold_tags(&mut self, held: &[HeldTag]) {
        self.images.retain(|image| {
            !held
                .iter()
                .any(|h| h.target_ref == image.placement.target_ref)
        });
    }

    /// Records where the tag of an image (by its
    /// [`PlannedImage::digest_ref`]) points in the target (`None`: it does
    /// not exist), as just looked up.
    pub fn note_tag_in_target(&mut self, digest_ref: (String, String), current: Option<Digest>) {
        self.tags_in_target.insert(digest_ref, current);
    }

    /// Where the tag of `image` pointed in the target when it was looked
    /// up; `None` when it was not.
    pub fn tag_in_target(&self, image: &PlannedImage) -> Option<Option<&Digest>> {
        self.tags_in_target
            .get(&image.digest_ref())
            .map(Option::as_ref)
    }

    /// Entries that will not be written.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The blobs each repository needs, each once, in first-use order,
    /// leaving out the images in `complete` (as [`PlannedImage::digest_ref`]
    /// pairs), which the target already holds whole.
    pub fn blobs_by_repository_except(
        &self,
        complete: &HashSet<(String, String)>,
    ) -> BTreeMap<String, Vec<(Digest, u64)>> {
        let mut by_repo: BTreeMap<String, Vec<(Digest, u64)>> = BTreeMap::new();
        for image in self
            .images
            .iter()
            .filter(|image| !complete.contains(&image.digest_ref()))
        {
            let blobs = by_repo
                .entry(image.placement.repository.clone())
                .or_default();
            for blob in image.blobs.iter() {
                if !blobs.iter().any(|(d, _)| *d == blob.0) {
                    blobs.push(blob.clone());
                }
            }
        }
        by_repo
    }

    /// Unique blobs and their total size across the whole plan.
    pub fn unique_blobs(&self) -> (usize, u64) {
        let mut seen = HashMap::new();
        for image in &self.images {
            for (digest, size) in image.blobs.iter() {
                seen.insert(digest, *size);
            }
        }
        (seen.len(), seen.values().sum())
    }
}

/// Why a referrer whose subject is not planned is left out.
fn orphan_reason(images: &[PlannedImage], subject: Option<&Digest>) -> String {
    let rewritten = images
        .iter()
        .find(|p| p.rewritten_from.is_some() && p.rewritten_from.as_ref() == subject);
    match rewritten {
        Some(p) => format!(
            "it refers to the index of {} as the bundle holds it, which is rewritten to the selected platforms (what it says of the original does not hold for {})",
            p.source_ref, p.digest
        ),
        None => "it refers to a manifest that is not imported and has no name of its own".into(),
    }
}

/// Images tagged by the tag scheme of an index that is rewritten to the
/// selected platforms (cosign's `sha256-<hex>.sig` of the original) would
/// point at a digest the target never receives: they are left out.
fn drop_tags_of_rewritten(
    images: &mut Vec<PlannedImage>,
    skipped: &mut Vec<Skipped>,
    index: &BundleIndex,
) {
    let rewritten: Vec<(String, Digest, String)> = images
        .iter()
        .filter_map(|p| {
            let original = p.rewritten_from.clone()?;
            Some((
                p.placement.repository.clone(),
                original,
                p.source_ref.clone(),
            ))
        })
        .collect();
    if rewritten.is_empty() {
        return;
    }
    images.retain(|image| {
        let Some(hex) = image.placement.tag.as_deref().and_then(subject_of_tag) else {
            return true;
        };
        let Some((_, original, source)) = rewritten
            .iter()
            .find(|(repository, original, _)| {
                *repository == image.placement.repository && original.hex() == hex
            })
        else {
            return true;
        };
        let position = index
            .images()
            .iter()
            .position(|i| i.descriptor.digest == image.digest)
            .unwrap_or_default();
        skipped.push(Skipped {
            position,
            digest: image.digest.clone(),
            reason: format!(
                "it is tagged for the index of {source} as the bundle holds it ({original}), which is rewritten to the selected platforms"
            ),
        });
        false
    });
}

fn planned(
    index: &BundleIndex,
    position: usize,
    source_ref: String,
    placement: Placement,
) -> PlannedImage {
    let image = &index.images()[position];
    PlannedImage {
        source_ref,
        placement,
        digest: image.descriptor.digest.clone(),
        media_type: image
            .manifests
            .last()
            .map(|m| m.media_type.clone())
            .unwrap_or_else(|| image.descriptor.media_type.clone()),
        kind: image.kind.clone(),
        platforms: image.platforms.clone(),
        manifests: image.manifests.clone(),
        blobs: image.blobs.clone(),
        size: image.total_bytes(index),
        subject: image.subject.clone(),
        rewritten_from: None,
    }
}

impl PlannedImage {
    /// Makes this image the index rewritten to the selected platforms,
    /// keeping the rewritten document in `documents`.
    fn apply(
        &mut self,
        index: &BundleIndex,
        rewritten: Rewritten,
        documents: &mut HashMap<Digest, Bytes>,
    ) {
        let manifest_bytes: u64 = rewritten
            .manifests
            .iter()
            .filter_map(|m| index.document(&m.digest).map(|d| d.len() as u64))
            .sum();
        let blob_bytes: u64 = rewritten.blobs.iter().map(|(_, size)| size).sum();
        self.size = manifest_bytes + blob_bytes + rewritten.bytes.len() as u64;
        self.digest = rewritten.digest.clone();
        self.platforms = rewritten.platforms;
        self.manifests = rewritten.manifests;
        self.blobs = rewritten.blobs;
        self.rewritten_from = Some(rewritten.original);
        if self.placement.tag.is_none() {
            // Pushed by digest: the target reference names the new digest.
            if let Some((base, _)) = self.placement.target_ref.split_once('@') {
                self.placement.target_ref = format!("{base}@{}", rewritten.digest);
            }
        }
        documents.insert(rewritten.digest, rewritten.bytes);
    }
}

/// The target reference an image named `name` would get in `target`, if it
/// has a name.
pub fn target_ref(target: &Target, options: &PlanOptions, name: &ImageName) -> Option<String> {
    match name {
        ImageName::Named(reference) => place(target, reference).ok(),
        ImageName::Artifact(name) => place_artifact(target, options, name).ok(),
        ImageName::Unnamed { .. } => None,
    }
    .map(|p| p.target_ref)
}

/// Where an image with source reference `source` lands in `target` under
/// Palette's mirror convention (the source name itself in a layout).
pub fn mirror_placement(target: &Target, source: &oci_client::Reference) -> Result<Placement> {
    place(target, source)
}

/// How an area's content is described in reports.
fn artifact_label(area: Area) -> &'static str {
    match area {
        Area::Packs => "pack",
        Area::Installers => "file",
        Area::Charts => "chart",
    }
}

/// Packs, installers and charts land at `<prefix>/<repository>:<tag>`,
/// packs below the pack prefix when one is set; in a layout target the
/// repository and tag become the `ref.name`.
fn place_artifact(
    target: &Target,
    options: &PlanOptions,
    name: &ArtifactName,
) -> Result<Placement> {
    match target {
        Target::Registry { host, prefix } => {
            let prefix = match (name.area, &options.pack_prefix) {
                (Area::Packs, Some(pack_prefix)) => pack_prefix.as_str(),
                _ => prefix.as_str(),
            };
            let repository = if prefix.is_empty() {
                name.repository.clone()
            } else {
                format!("{prefix}/{}", name.repository)
            };
            if !repository.split('/').all(is_path_component) {
                return Err(Error::InvalidRepository {
                    source_ref: name.to_string(),
                    repository,
                });
            }
            Ok(Placement {
                target_ref: format!("{host}/{repository}:{}", name.tag),
                repository,
                tag: Some(name.tag.clone()),
            })
        }
        Target::Layout { .. } => Ok(Placement {
            repository: name.repository.clone(),
            tag: Some(name.tag.clone()),
            target_ref: name.to_string(),
        }),
    }
}

/// Palette's mirror convention for a registry; the source name for a layout.
fn place(target: &Target, source: &oci_client::Reference) -> Result<Placement> {
    let tag = source.tag().map(str::to_owned);
    let by_digest = source.digest().map(str::to_owned);
    match target {
        Target::Registry { host, prefix } => {
            let mut repository = String::new();
            if !prefix.is_empty() {
                repository.push_str(prefix);
                repository.push('/');
            }
            repository.push_str(source.registry());
            repository.push('/');
            repository.push_str(source.repository());
            let valid = repository.split('/').all(is_path_component);
            if !valid {
                return Err(Error::InvalidRepository {
                    source_ref: source.whole(),
                    repository,
                });
            }
            let target_ref = match (&tag, &by_digest) {
                (Some(tag), _) => format!("{host}/{repository}:{tag}"),
                (None, Some(digest)) => format!("{host}/{repository}@{digest}"),
                (None, None) => format!("{host}/{repository}"),
            };
            Ok(Placement {
                repository,
                tag,
                target_ref,
            })
        }
        Target::Layout { .. } => Ok(Placement {
            repository: format!("{}/{}", source.registry(), source.repository()),
            tag,
            target_ref: source.whole(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_land_below_the_pack_prefix_and_files_below_the_target_prefix() {
        let target: Target = "harbor.local/spectro".parse().expect("target");
        let pack = ArtifactName::in_area(Area::Packs, "nginx", "1.2.0");
        let file = ArtifactName::in_area(Area::Installers, "palette", "4.6.0");
        let default = PlanOptions::default();
        let apart = PlanOptions {
            pack_prefix: Some("packs-base".into()),
            ..PlanOptions::default()
        };
        assert_eq!(
            place_artifact(&target, &default, &pack)
                .expect("pack")
                .target_ref,
            "harbor.local/spectro/spectro-packs/archive/nginx:1.2.0"
        );
        assert_eq!(
            place_artifact(&target, &apart, &pack)
                .expect("pack")
                .target_ref,
            "harbor.local/packs-base/spectro-packs/archive/nginx:1.2.0"
        );
        assert_eq!(
            place_artifact(&target, &apart, &file)
                .expect("file")
                .target_ref,
            "harbor.local/spectro/installers/palette:4.6.0"
        );
        let layout: Target = "oci:/tmp/mirror".parse().expect("layout");
        assert_eq!(
            place_artifact(&layout, &default, &file)
                .expect("file")
                .target_ref,
            "installers/palette:4.6.0"
        );
    }

    #[test]
    fn registry_placement_follows_the_palette_mirror_convention() {
        let target: Target = "harbor.local/spectro-images".parse().expect("target");
        let source: oci_client::Reference = "quay.io/acme/app:1.0".parse().expect("ref");
        let placement = place(&target, &source).expect("placement");
        assert_eq!(placement.repository, "spectro-images/quay.io/acme/app");
        assert_eq!(placement.tag.as_deref(), Some("1.0"));
        assert_eq!(
            placement.target_ref,
            "harbor.local/spectro-images/quay.io/acme/app:1.0"
        );
    }

    #[test]
    fn docker_hub_images_keep_their_normalised_path() {
        let target: Target = "127.0.0.1:5000".parse().expect("target");
        let source: oci_client::Reference = "nginx:1.25".parse().expect("ref");
        let placement = place(&target, &source).expect("placement");
        assert_eq!(
            placement.target_ref,
            "127.0.0.1:5000/docker.io/library/nginx:1.25"
        );
    }

    #[test]
    fn layout_placement_uses_the_full_source_reference() {
        let target: Target = "oci:/tmp/mirror".parse().expect("target");
        let source: oci_client::Reference = "nginx:1.25".parse().expect("ref");
        let placement = place(&target, &source).expect("placement");
        assert_eq!(placement.target_ref, "docker.io/library/nginx:1.25");
    }
}
