//! `airlock inspect`: what a bundle holds and where each thing would land.

use std::fmt::Write as _;

use serde::Serialize;

use super::human_bytes;
use crate::digest::Digest;
use crate::plan::{HeldTag, PlanOptions, Selection, Target};
use crate::read::{BundleIndex, BundleSource, ExtraFile, ImageKind, ImageName, Pack, Producer};
use crate::verify::VerifiedBy;

/// Where target references in an inspection point when no target is given.
pub const EXAMPLE_TARGET: &str = "<registry>";

/// One image or artifact in an inspection.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectedImage {
    /// The source reference, or none when the bundle does not name it.
    pub source_ref: Option<String>,
    /// Where it would land in the target.
    pub target_ref: Option<String>,
    /// Why it has no name, when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unnamed_reason: Option<String>,
    /// The top manifest's media type.
    pub media_type: String,
    /// Image, index or artifact.
    pub kind: ImageKind,
    /// Platforms provided.
    pub platforms: Vec<String>,
    /// The top manifest's digest.
    pub digest: Digest,
    /// Bytes of its blobs and manifests.
    pub size: u64,
    /// Blobs (configs and layers).
    pub blobs: usize,
    /// For referrers, the manifest referred to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    /// Why the platform selection leaves it out, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded_reason: Option<String>,
    /// For an index the platform selection rewrites: the digest it will be
    /// pushed under (`digest` stays the bundle's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten_digest: Option<Digest>,
    /// The image signature check, for images that can carry a signature
    /// (`--image-signature-key`, `trust.image_signatures`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::trust::SignatureVerdict>,
}

/// A file outside the OCI layout that is not imported, and why.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotImported {
    /// The file.
    #[serde(flatten)]
    pub file: ExtraFile,
    /// Why it is not imported, in the producer's terms.
    pub reason: String,
}

/// One Palette pack in an inspection. Only the bundle is consulted: an image
/// listed in `missingFromBundle` may still be in the target already, which
/// `airlock import` checks.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectedPack {
    /// The pack's metadata, declared images and the ones the bundle lacks.
    #[serde(flatten)]
    pub pack: Pack,
    /// Where it would land.
    pub target_ref: Option<String>,
}

/// The whole inspection.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    /// The bundle file.
    pub bundle: String,
    /// Its content digest.
    pub digest: String,
    /// Who verified it, if it was verified.
    pub verified_by: Option<VerifiedBy>,
    /// When the bundle says it was made (`org.opencontainers.image.created`
    /// on its `index.json`), which `trust.max_bundle_age` judges.
    pub created: Option<String>,
    /// Where the OCI layout sits in the tar (`/` for the root, `none` when
    /// the bundle has no OCI layout).
    pub layout_root: String,
    /// The tool that made the bundle (airlock layout, Zarf package, Hauler
    /// haul).
    pub producer: Producer,
    /// Images and artifacts.
    pub images: Vec<InspectedImage>,
    /// Palette packs, with their metadata and declared images.
    pub packs: Vec<InspectedPack>,
    /// Files outside the layout, not imported, with the reason.
    pub extra_files: Vec<NotImported>,
    /// Totals.
    pub totals: Totals,
    /// With a target and a verified bundle: the images the tag policy
    /// would hold back because their tag is already at other content in the
    /// target, with both digests (empty: none would be); `null` when the
    /// target was not consulted.
    pub held_tags: Option<Vec<HeldTag>>,
}

/// Totals over the bundle.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Images and artifacts.
    pub images: usize,
    /// Unique blobs.
    pub blobs: usize,
    /// Bytes of unique blobs.
    pub blob_bytes: u64,
    /// Manifests (all levels).
    pub manifests: usize,
}

/// Builds the inspection of an indexed bundle, with target references for
/// `target` (or a placeholder registry).
pub fn inspect<B: BundleSource>(
    index: &BundleIndex<B>,
    target: Option<&Target>,
    options: &PlanOptions,
    verified_by: Option<VerifiedBy>,
) -> Inspection {
    let placeholder = Target::Registry {
        host: EXAMPLE_TARGET.to_owned(),
        prefix: String::new(),
    };
    let target = target.unwrap_or(&placeholder);
    let mut unique_blobs = std::collections::HashMap::new();
    let mut manifests = std::collections::HashSet::new();
    let images = index
        .images()
        .iter()
        .map(|image| {
            for (digest, size) in image.blobs.iter() {
                unique_blobs.insert(digest.clone(), *size);
            }
            for manifest in image.manifests.iter() {
                manifests.insert(manifest.digest.clone());
            }
            let mut target_ref = crate::plan::target_ref(target, options, &image.name);
            let mut platforms = image.platforms.clone();
            let (excluded_reason, rewritten_digest) =
                match crate::plan::select(index, image, &options.platforms) {
                    Selection::Whole => (None, None),
                    Selection::Skipped(reason) => {
                        target_ref = None;
                        (Some(reason), None)
                    }
                    Selection::Rewritten(rewritten) => {
                        platforms = rewritten.platforms;
                        (None, Some(rewritten.digest))
                    }
                };
            let (source_ref, unnamed_reason) = match &image.name {
                ImageName::Named(reference) => (Some(reference.whole()), None),
                ImageName::Artifact(name) => (Some(name.to_string()), None),
                ImageName::Unnamed { reason } => (None, Some(reason.clone())),
            };
            let tag = match &image.name {
                ImageName::Named(reference) => reference.tag(),
                _ => None,
            };
            let signature = source_ref
                .as_deref()
                .filter(|_| {
                    crate::trust::SignatureVerdict::applies_to(
                        &image.kind,
                        image.subject.as_ref(),
                        tag,
                    )
                })
                .map(|source| {
                    crate::trust::judge(
                        index,
                        source,
                        &image.descriptor.digest,
                        &options.image_signatures,
                    )
                });
            InspectedImage {
                signature,
                source_ref,
                target_ref,
                unnamed_reason,
                media_type: image
                    .manifests
                    .last()
                    .map(|m| m.media_type.clone())
                    .unwrap_or_default(),
                kind: image.kind.clone(),
                platforms,
                digest: image.descriptor.digest.clone(),
                size: image.total_bytes(index),
                blobs: image.blobs.len(),
                subject: image.subject.clone(),
                excluded_reason,
                rewritten_digest,
            }
        })
        .collect::<Vec<_>>();
    Inspection {
        bundle: index.bundle().path().display().to_string(),
        digest: format!("sha256:{}", index.content_sha256()),
        verified_by,
        created: index.created().map(str::to_owned),
        layout_root: match index.layout_root() {
            None => "none".into(),
            Some("") => "/".into(),
            Some(root) => root.to_owned(),
        },
        totals: Totals {
            images: images.len(),
            blobs: unique_blobs.len(),
            blob_bytes: unique_blobs.values().sum(),
            manifests: manifests.len(),
        },
        images,
        packs: index
            .packs()
            .iter()
            .map(|pack| InspectedPack {
                target_ref: crate::plan::target_ref(
                    target,
                    options,
                    &ImageName::Artifact(pack.artifact.clone()),
                ),
                pack: pack.clone(),
            })
            .collect(),
        extra_files: index
            .extra_files()
            .iter()
            .map(|file| NotImported {
                reason: index.producer().not_imported_reason(&file.path).to_owned(),
                file: file.clone(),
            })
            .collect(),
        producer: index.producer().clone(),
        held_tags: None,
    }
}

fn write_pack(out: &mut String, inspected: &InspectedPack) {
    let pack = &inspected.pack;
    let or_none = |list: &[String]| {
        if list.is_empty() {
            "-".to_owned()
        } else {
            list.join(", ")
        }
    };
    let _ = writeln!(out, "pack {} {} ({})", pack.name, pack.version, pack.item);
    if let Some(target) = &inspected.target_ref {
        let _ = writeln!(out, "  target:       {target}");
    }
    if let Some(display) = &pack.metadata.display_name {
        let _ = writeln!(out, "  display name: {display}");
    }
    let _ = writeln!(
        out,
        "  layer:        {}",
        pack.metadata.layer.as_deref().unwrap_or("-")
    );
    if let Some(addon) = &pack.metadata.addon_type {
        let _ = writeln!(out, "  addon type:   {addon}");
    }
    let _ = writeln!(
        out,
        "  cloud types:  {}",
        or_none(&pack.metadata.cloud_types)
    );
    let _ = writeln!(
        out,
        "  architecture: {}",
        or_none(&pack.metadata.architectures)
    );
    let fips = match pack.metadata.fips {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    let _ = writeln!(out, "  FIPS:         {fips}");
    let _ = writeln!(out, "  images:       {}", or_none(&pack.images));
    if !pack.missing_from_bundle.is_empty() {
        let _ = writeln!(
            out,
            "  not in this bundle (import checks the target): {}",
            pack.missing_from_bundle.join(", ")
        );
    }
}

/// The text rendering of an inspection.
pub fn text(inspection: &Inspection) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Bundle:    {}", inspection.bundle);
    let _ = writeln!(out, "Digest:    {}", inspection.digest);
    match &inspection.verified_by {
        Some(key) => {
            let _ = writeln!(
                out,
                "Signature: verified by {} ({})",
                key.label, key.algorithm
            );
        }
        None => {
            let _ = writeln!(
                out,
                "Signature: not checked (give --public-key or --trusted-root to verify)"
            );
        }
    }
    let _ = writeln!(
        out,
        "Created:   {}",
        inspection.created.as_deref().unwrap_or("(not given)")
    );
    let _ = writeln!(out, "Layout:    {}", inspection.layout_root);
    let _ = writeln!(out, "Format:    {}", inspection.producer);
    let _ = writeln!(out);
    for image in &inspection.images {
        let kind = match &image.kind {
            ImageKind::Image => "image".to_owned(),
            ImageKind::Index => "index".to_owned(),
            ImageKind::Artifact { artifact_type } => format!("artifact ({artifact_type})"),
        };
        let _ = writeln!(
            out,
            "{}",
            image.source_ref.as_deref().unwrap_or("(unnamed)")
        );
        if let Some(target) = &image.target_ref {
            let _ = writeln!(out, "  target:     {target}");
        }
        if let Some(reason) = &image.unnamed_reason {
            let _ = writeln!(out, "  not importable: {reason}");
        }
        if let Some(reason) = &image.excluded_reason {
            let _ = writeln!(out, "  not imported: {reason}");
        }
        let _ = writeln!(out, "  kind:       {kind}");
        let _ = writeln!(out, "  media type: {}", image.media_type);
        if !image.platforms.is_empty() {
            let _ = writeln!(out, "  platforms:  {}", image.platforms.join(", "));
        }
        let _ = writeln!(out, "  digest:     {}", image.digest);
        if let Some(rewritten) = &image.rewritten_digest {
            let _ = writeln!(
                out,
                "  rewritten:  to the selected platforms, pushed as {rewritten}"
            );
        }
        let _ = writeln!(
            out,
            "  size:       {} in {} blob(s)",
            human_bytes(image.size),
            image.blobs
        );
        if let Some(subject) = &image.subject {
            let _ = writeln!(out, "  refers to:  {subject}");
        }
        if let Some(verdict) = image
            .signature
            .as_ref()
            .filter(|v| v.status != crate::trust::SignatureStatus::NotChecked)
        {
            let held = if verdict.held_back { ", held back" } else { "" };
            let _ = writeln!(
                out,
                "  signature:  {} ({}{held}){}",
                verdict.status.as_str(),
                verdict.policy.as_str(),
                verdict
                    .key_label
                    .as_deref()
                    .map(|k| format!(" by {k}"))
                    .unwrap_or_default()
            );
            for problem in &verdict.problems {
                let _ = writeln!(out, "    {problem}");
            }
        }
    }
    for pack in &inspection.packs {
        write_pack(&mut out, pack);
    }
    for extra in &inspection.extra_files {
        let _ = writeln!(
            out,
            "not imported: {} ({}): {}",
            extra.file.path,
            human_bytes(extra.file.size),
            extra.reason
        );
    }
    let totals = &inspection.totals;
    let _ = writeln!(
        out,
        "\nTotal: {} image(s), {} manifest(s), {} unique blob(s), {}",
        totals.images,
        totals.manifests,
        totals.blobs,
        human_bytes(totals.blob_bytes)
    );
    match &inspection.held_tags {
        None => {}
        Some(held) if held.is_empty() => {
            let _ = writeln!(out, "Tags: none already at other content in the target");
        }
        Some(held) => {
            for tag in held {
                let _ = writeln!(out, "held ({}): {tag}", tag.policy.as_str());
            }
        }
    }
    out
}
