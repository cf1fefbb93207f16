//! The images and artifacts of a bundle as the index hands them on: what
//! each `index.json` entry (or each image a format assembles) is, the
//! manifests to push for it and the blobs it needs. The layout walk and the
//! formats both produce these, so they live apart from either.

use std::sync::Arc;

use serde::Serialize;

use super::document::Descriptor;
use super::names::ImageName;
use super::{BundleIndex, BundleSource};
use crate::digest::Digest;

/// What kind of thing an `index.json` entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ImageKind {
    /// A single-platform image manifest.
    Image,
    /// A multi-platform image index or manifest list.
    Index,
    /// An artifact (signature, SBOM, pack, chart...) identified by its type.
    Artifact {
        /// The artifact type (or config media type for older artifacts).
        artifact_type: String,
    },
}

/// A manifest to push, with the media type to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestRef {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
}

/// One image or artifact listed in `index.json`, with everything it needs.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleImage {
    /// The source reference the producer recorded, if any.
    #[serde(serialize_with = "serialize_name")]
    pub name: ImageName,
    /// The `index.json` entry.
    pub descriptor: Descriptor,
    /// Image, index or artifact.
    pub kind: ImageKind,
    /// The platforms it provides (`linux/amd64`, ...), when known.
    pub platforms: Vec<String>,
    /// The digest of the manifest this one refers to, for referrers.
    pub subject: Option<Digest>,
    /// Every manifest to push, children before the indexes listing them; the
    /// last one is the entry itself. Shared by the `index.json` entries that
    /// name the same manifest (one image under many tags).
    pub manifests: Arc<[ManifestRef]>,
    /// Every config and layer blob, each once, with its size; shared like
    /// `manifests`.
    pub blobs: Arc<[(Digest, u64)]>,
    /// Foreign layers (with URLs, not in the bundle) that are not pushed.
    pub foreign_layers: Vec<Digest>,
}

impl BundleImage {
    /// Bytes of all blobs and manifests of this image.
    pub fn total_bytes<B: BundleSource>(&self, index: &BundleIndex<B>) -> u64 {
        let blobs: u64 = self.blobs.iter().map(|(_, size)| size).sum();
        let manifests: u64 = self
            .manifests
            .iter()
            .filter_map(|m| index.document(&m.digest).map(|d| d.len() as u64))
            .sum();
        blobs + manifests
    }
}

fn serialize_name<S: serde::Serializer>(name: &ImageName, s: S) -> Result<S::Ok, S::Error> {
    match name {
        ImageName::Named(reference) => s.collect_str(&reference.whole()),
        ImageName::Artifact(name) => s.collect_str(name),
        ImageName::Unnamed { .. } => s.serialize_none(),
    }
}
