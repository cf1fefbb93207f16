//! Several `--layout` directories become the one layout a bundle holds: the
//! union of their blobs and their `index.json` entries one after the other,
//! each entry keeping its annotations (which is where image names live).
//!
//! Anything the importer would refuse about the combination is refused here:
//! two layouts naming different images with the same reference, and a bundle
//! in which nothing has a name to import it under.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use crate::digest::Digest;
use crate::read::DEFAULT_MAX_DOCUMENT_BYTES;
use crate::read::document::OCI_INDEX;
use crate::read::names;

use super::error::{Error, Result};
use super::layout_source::{BlobFile, LayoutSource};

/// The merged layout, ready to be written.
#[derive(Debug)]
pub(super) struct Merged {
    /// The bundle's `index.json`.
    pub(super) index_json: Vec<u8>,
    /// How many entries it lists.
    pub(super) images: usize,
    /// Every blob once, read from the first layout holding it, in the order
    /// the tar lists them (by algorithm, then hex: sorted paths).
    pub(super) blobs: BTreeMap<Digest, BlobFile>,
}

/// Merges `layouts` in the order given, stamping the index with `created`.
pub(super) fn merge(layouts: Vec<LayoutSource>, created: std::time::SystemTime) -> Result<Merged> {
    let mut blobs: BTreeMap<Digest, BlobFile> = BTreeMap::new();
    let mut manifests: Vec<serde_json::Value> = Vec::new();
    // Reference -> (layout, digest) of the entry that claimed it first.
    let mut named: HashMap<String, (PathBuf, Digest)> = HashMap::new();
    // Unnamed entries (referrers, mostly) repeated verbatim in two layouts.
    let mut unnamed_seen: HashSet<String> = HashSet::new();
    let mut unnamed_reasons: Vec<String> = Vec::new();
    for layout in &layouts {
        for (position, entry) in layout.entries.iter().enumerate() {
            match names::resolve(Some(&entry.descriptor.annotations)) {
                Ok(reference) => {
                    let name = reference.whole();
                    let digest = &entry.descriptor.digest;
                    if let Some((first, first_digest)) = named.get(&name) {
                        if first_digest == digest {
                            // The same image under the same name: once is enough.
                            continue;
                        }
                        return Err(Error::ConflictingNames {
                            name,
                            first: first.clone(),
                            first_digest: first_digest.to_string(),
                            second: layout.dir.clone(),
                            second_digest: digest.to_string(),
                        });
                    }
                    named.insert(name, (layout.dir.clone(), digest.clone()));
                }
                Err(reason) => {
                    if !unnamed_seen.insert(entry.raw.to_string()) {
                        continue;
                    }
                    if !entry.has_subject {
                        tracing::warn!(
                            layout = %layout.dir.display(),
                            entry = position,
                            digest = %entry.descriptor.digest,
                            "index.json entry has no image name; airlock import will skip it: {reason}"
                        );
                    }
                    unnamed_reasons.push(format!(
                        "{} entry {position}: {reason}",
                        layout.dir.display()
                    ));
                }
            }
            manifests.push(entry.raw.clone());
        }
        for (digest, blob) in &layout.blobs {
            match blobs.get(digest) {
                Some(first) if first.size != blob.size => {
                    return Err(Error::BlobSizeConflict {
                        digest: digest.clone(),
                        first: first.path.clone(),
                        first_size: first.size,
                        second: blob.path.clone(),
                        second_size: blob.size,
                    });
                }
                Some(_) => {}
                None => {
                    blobs.insert(digest.clone(), blob.clone());
                }
            }
        }
    }
    if named.is_empty() {
        let list = |items: Vec<String>| items.join(", ");
        return Err(Error::NothingNamed {
            layouts: list(
                layouts
                    .iter()
                    .map(|l| l.dir.display().to_string())
                    .collect(),
            ),
            reasons: if unnamed_reasons.is_empty() {
                "index.json lists nothing".into()
            } else {
                unnamed_reasons.join("; ")
            },
        });
    }
    let images = manifests.len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
        "annotations": {
            crate::read::document::CREATED_ANNOTATION: humantime::format_rfc3339_seconds(created).to_string(),
        },
    });
    let index_json = serde_json::to_vec(&index).map_err(|e| Error::InvalidDocument {
        path: PathBuf::from("index.json"),
        reason: e.to_string(),
    })?;
    if index_json.len() as u64 > DEFAULT_MAX_DOCUMENT_BYTES {
        return Err(Error::ImportLimit {
            path: layouts.first().map(|l| l.dir.clone()).unwrap_or_default(),
            reason: format!(
                "the merged index.json has {} bytes, more than the {DEFAULT_MAX_DOCUMENT_BYTES}-byte limit; \
                 split the images over several bundles",
                index_json.len()
            ),
        });
    }
    Ok(Merged {
        index_json,
        images,
        blobs,
    })
}
