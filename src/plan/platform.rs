//! Importing only some platforms of multi-platform images (`--platform
//! linux/amd64,linux/arm64`).
//!
//! Without a selection every image is pushed whole. With one, an index keeps
//! the entries whose platform is selected and is rewritten to list only those
//! (a registry such as docker-registry 2.8 refuses an index whose children are
//! missing, so the original cannot be pushed without all of them); buildkit's
//! attestation manifests stay only beside the manifest they attest. A
//! single-platform image of another platform, or an index with none of the
//! selected platforms, is not imported, with the reason.
//!
//! Platforms are compared the way containerd normalises them: `arm64` means
//! `arm64/v8`, `arm` means `arm/v7`, `aarch64` and `x86_64` are the kernel's
//! names of `arm64` and `amd64`.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::digest::Digest;
use crate::read::document::{self, Descriptor, Document};
use crate::read::{BundleImage, BundleIndex, BundleSource, ImageKind, ManifestRef};

/// The annotation buildkit puts on an attestation manifest's index entry.
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// The value of [`REFERENCE_TYPE`] on attestation manifests.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// The annotation naming the manifest an attestation manifest is about.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// A platform, normalised: `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

/// A platform that cannot be parsed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{text:?} is not a platform (expected os/architecture[/variant], like linux/arm64)")]
pub struct InvalidPlatform {
    /// The text given.
    pub text: String,
}

impl FromStr for Platform {
    type Err = InvalidPlatform;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidPlatform {
            text: text.to_owned(),
        };
        let lower = text.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid());
        }
        match parts.as_slice() {
            [os, architecture] => Ok(Platform::normalised(os, architecture, None)),
            [os, architecture, variant] => {
                Ok(Platform::normalised(os, architecture, Some(variant)))
            }
            _ => Err(invalid()),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.variant {
            Some(variant) => write!(f, "{}/{}/{variant}", self.os, self.architecture),
            None => write!(f, "{}/{}", self.os, self.architecture),
        }
    }
}

impl Platform {
    /// Normalises the names as containerd's `platforms.Normalize` does.
    fn normalised(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let variant = variant.map(|v| v.trim_start_matches('v'));
        let (architecture, variant) = match (architecture, variant) {
            ("x86_64" | "x86-64" | "amd64", Some("1") | None) => ("amd64", None),
            ("x86_64" | "x86-64" | "amd64", Some(v)) => ("amd64", Some(format!("v{v}"))),
            ("aarch64" | "arm64", Some("8") | None) => ("arm64", Some("v8".to_owned())),
            ("aarch64" | "arm64", Some(v)) => ("arm64", Some(format!("v{v}"))),
            ("armhf", _) => ("arm", Some("v7".to_owned())),
            ("armel", _) => ("arm", Some("v6".to_owned())),
            ("arm", None) => ("arm", Some("v7".to_owned())),
            ("arm", Some(v)) => ("arm", Some(format!("v{v}"))),
            ("i386" | "386", _) => ("386", None),
            (other, v) => (other, v.map(str::to_owned)),
        };
        Platform {
            os: if os == "macos" { "darwin" } else { os }.to_owned(),
            architecture: architecture.to_owned(),
            variant,
        }
    }
}

/// Whether `platform` (as an index or config spells it) is one of
/// `selected`. A platform that cannot be parsed is never selected.
pub fn is_selected(platform: &str, selected: &[Platform]) -> bool {
    platform
        .parse::<Platform>()
        .is_ok_and(|p| selected.contains(&p))
}

/// What a platform selection makes of one image.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Pushed as it is: no selection, not multi-platform, or every platform
    /// selected.
    Whole,
    /// An index rewritten to the selected platforms.
    Rewritten(Rewritten),
    /// Not imported, for this reason.
    Skipped(String),
}

/// An index rewritten to the selected platforms, with what it still needs.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// The digest of the index in the bundle.
    pub original: Digest,
    /// The digest of the rewritten index.
    pub digest: Digest,
    /// The rewritten index: the original's fields, with only the kept
    /// entries in `manifests`, in their order.
    pub bytes: Bytes,
    /// Manifests to push, children first, the rewritten index last.
    pub manifests: Arc<[ManifestRef]>,
    /// Config and layer blobs of the kept manifests.
    pub blobs: Arc<[(Digest, u64)]>,
    /// The kept platforms.
    pub platforms: Vec<String>,
}

/// What `selected` (empty: everything) keeps of `image`.
pub fn select<B: BundleSource>(
    index: &BundleIndex<B>,
    image: &BundleImage,
    selected: &[Platform],
) -> Selection {
    if selected.is_empty() {
        return Selection::Whole;
    }
    let wanted = || {
        selected
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match image.kind {
        ImageKind::Artifact { .. } => Selection::Whole,
        ImageKind::Image => match image.platforms.first() {
            Some(platform) if !is_selected(platform, selected) => Selection::Skipped(format!(
                "its platform {platform} is not among the selected platforms ({})",
                wanted()
            )),
            _ => Selection::Whole,
        },
        ImageKind::Index => select_in_index(index, image, selected, &wanted),
    }
}

fn select_in_index<B: BundleSource>(
    index: &BundleIndex<B>,
    image: &BundleImage,
    selected: &[Platform],
    wanted: &dyn Fn() -> String,
) -> Selection {
    let top = &image.descriptor.digest;
    let Some(bytes) = index.document(top) else {
        return Selection::Whole;
    };
    let Ok(Document::Index { manifests, .. }) = document::parse(bytes) else {
        return Selection::Whole;
    };
    let keep = kept_entries(&manifests, selected);
    if !keep.iter().any(|k| *k) {
        let offered: Vec<&str> = manifests
            .iter()
            .filter_map(|d| d.platform.as_deref())
            .filter(|p| *p != "unknown/unknown")
            .collect();
        return Selection::Skipped(format!(
            "none of its platforms ({}) is among the selected platforms ({})",
            offered.join(", "),
            wanted()
        ));
    }
    if keep.iter().all(|k| *k) {
        return Selection::Whole;
    }
    let Some(bytes) = rewrite(bytes, &keep) else {
        return Selection::Whole;
    };
    let digest = Digest::sha256_of(&bytes);
    let mut collected = Collected::default();
    for descriptor in manifests
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(d, _)| d)
    {
        collected.walk(index, image, &descriptor.digest, 0);
    }
    let media_type = image
        .manifests
        .last()
        .map(|m| m.media_type.clone())
        .unwrap_or_else(|| image.descriptor.media_type.clone());
    collected.manifests.push(ManifestRef {
        digest: digest.clone(),
        media_type,
    });
    let platforms = manifests
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .filter_map(|(d, _)| d.platform.clone())
        .filter(|p| p != "unknown/unknown")
        .collect();
    Selection::Rewritten(Rewritten {
        original: top.clone(),
        digest,
        bytes,
        manifests: collected.manifests.into(),
        blobs: collected.blobs.into(),
        platforms,
    })
}

/// Which entries of an index the selection keeps: those of a selected
/// platform, and buildkit attestation manifests of kept entries.
fn kept_entries(manifests: &[Descriptor], selected: &[Platform]) -> Vec<bool> {
    let mut keep: Vec<bool> = manifests
        .iter()
        .map(|d| {
            d.platform
                .as_deref()
                .is_some_and(|p| is_selected(p, selected))
        })
        .collect();
    let kept: HashSet<String> = manifests
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(d, _)| d.digest.to_string())
        .collect();
    for (descriptor, keep) in manifests.iter().zip(keep.iter_mut()) {
        let annotations = &descriptor.annotations;
        if annotations.get(REFERENCE_TYPE).map(String::as_str) == Some(ATTESTATION_MANIFEST) {
            *keep = annotations
                .get(REFERENCE_DIGEST)
                .is_some_and(|d| kept.contains(d));
        }
    }
    keep
}

/// The index with only the `manifests` entries marked in `keep`, every other
/// field as it was.
fn rewrite(bytes: &[u8], keep: &[bool]) -> Option<Bytes> {
    let mut index: Value = serde_json::from_slice(bytes).ok()?;
    let entries = index.get_mut("manifests")?.as_array_mut()?;
    if entries.len() != keep.len() {
        return None;
    }
    let mut position = 0;
    entries.retain(|_| {
        position += 1;
        keep[position - 1]
    });
    serde_json::to_vec(&index).ok().map(Bytes::from)
}

/// Manifests and blobs under the kept entries, each once.
#[derive(Default)]
struct Collected {
    manifests: Vec<ManifestRef>,
    blobs: Vec<(Digest, u64)>,
    seen: HashSet<Digest>,
}

impl Collected {
    /// The read pass already proved every document reachable from the image
    /// present and parseable, so what cannot be found here is not descended.
    fn walk<B: BundleSource>(
        &mut self,
        index: &BundleIndex<B>,
        image: &BundleImage,
        digest: &Digest,
        depth: usize,
    ) {
        if depth > 8 || !self.seen.insert(digest.clone()) {
            return;
        }
        let Some(document) = index.document(digest).and_then(|b| document::parse(b).ok()) else {
            return;
        };
        match document {
            Document::Index { manifests, .. } => {
                for child in &manifests {
                    self.walk(index, image, &child.digest, depth + 1);
                }
            }
            Document::Manifest { config, layers, .. } => {
                for blob in config.iter().chain(&layers) {
                    // Foreign layers are not in the bundle and not pushed.
                    if index.blob_size(&blob.digest).is_some()
                        && self.seen.insert(blob.digest.clone())
                    {
                        self.blobs.push((blob.digest.clone(), blob.size));
                    }
                }
            }
        }
        if let Some(manifest) = image.manifests.iter().find(|m| m.digest == *digest) {
            self.manifests.push(manifest.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platforms(list: &[&str]) -> Vec<Platform> {
        list.iter().map(|p| p.parse().expect("platform")).collect()
    }

    #[test]
    fn arm64_matches_its_default_variant_and_the_kernel_name() {
        let selected = platforms(&["linux/arm64"]);
        assert!(is_selected("linux/arm64/v8", &selected));
        assert!(is_selected("linux/arm64", &selected));
        assert!(is_selected("linux/aarch64", &selected));
        assert!(!is_selected("linux/amd64", &selected));
        assert!(!is_selected("linux/arm/v7", &selected));
    }

    #[test]
    fn arm_means_v7_and_variants_are_compared() {
        let selected = platforms(&["linux/arm"]);
        assert!(is_selected("linux/arm/v7", &selected));
        assert!(!is_selected("linux/arm/v6", &selected));
        assert!(is_selected("linux/arm/v6", &platforms(&["linux/armel"])));
        assert!(!is_selected("linux/arm64/v8", &selected));
    }

    #[test]
    fn amd64_ignores_the_v1_variant_and_accepts_x86_64() {
        let selected = platforms(&["linux/x86_64"]);
        assert!(is_selected("linux/amd64", &selected));
        assert!(is_selected("linux/amd64/v1", &selected));
        assert!(!is_selected("linux/amd64/v3", &selected));
        assert!(!is_selected("windows/amd64", &selected));
    }

    #[test]
    fn malformed_platforms_are_refused_and_never_selected() {
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v8".parse::<Platform>().is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());
        assert!(!is_selected("unknown", &platforms(&["linux/amd64"])));
        assert_eq!(
            "Linux/AArch64".parse::<Platform>().expect("ok").to_string(),
            "linux/arm64/v8"
        );
    }

    fn entry(hex: char, platform: &str, attests: Option<char>) -> Descriptor {
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let mut annotations = std::collections::BTreeMap::new();
        if let Some(subject) = attests {
            annotations.insert(REFERENCE_TYPE.to_owned(), ATTESTATION_MANIFEST.to_owned());
            annotations.insert(REFERENCE_DIGEST.to_owned(), digest(subject));
        }
        Descriptor {
            media_type: document::OCI_MANIFEST.to_owned(),
            digest: digest(hex).parse().expect("digest"),
            size: 1,
            platform: Some(platform.to_owned()),
            artifact_type: None,
            annotations,
            has_urls: false,
        }
    }

    #[test]
    fn attestation_manifests_stay_only_beside_the_manifest_they_attest() {
        let manifests = [
            entry('a', "linux/amd64", None),
            entry('b', "linux/arm64/v8", None),
            entry('c', "linux/s390x", None),
            entry('d', "unknown/unknown", Some('a')),
            entry('e', "unknown/unknown", Some('c')),
        ];
        let keep = kept_entries(&manifests, &platforms(&["linux/amd64", "linux/arm64"]));
        assert_eq!(keep, [true, true, false, true, false]);
        let none = kept_entries(&manifests, &platforms(&["windows/amd64"]));
        assert!(none.iter().all(|k| !k));
    }

    #[test]
    fn rewriting_keeps_other_fields_and_the_order_of_kept_entries() {
        let index = br#"{"schemaVersion":2,"mediaType":"m","annotations":{"x":"y"},"manifests":[{"digest":"a"},{"digest":"b"},{"digest":"c"}]}"#;
        let bytes = rewrite(index, &[true, false, true]).expect("rewritten");
        let value: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(value["annotations"]["x"], "y");
        assert_eq!(value["mediaType"], "m");
        let digests: Vec<&str> = value["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .filter_map(|m| m["digest"].as_str())
            .collect();
        assert_eq!(digests, ["a", "c"]);
    }
}
