//! One `--layout` directory: an OCI image layout as `skopeo copy … oci:DIR:NAME`
//! or `airlock import --registry oci:DIR` writes it, checked before a single
//! byte is bundled.
//!
//! The structure is checked up front (cheap: directory listings and the
//! small JSON documents), so a layout that lacks a blob fails in seconds
//! rather than after compressing gigabytes. Blob contents are checked later,
//! while they stream into the bundle (see `writer`), so each is read once.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::read::DEFAULT_MAX_DOCUMENT_BYTES;
use crate::read::document::{self, Descriptor, Document, DocumentError};

use super::error::{Error, Result};

/// How deep image indexes may nest; the importer refuses anything deeper.
const MAX_NESTING: usize = 8;

/// `oci-layout` is one short line; anything large is not one.
const MAX_OCI_LAYOUT_BYTES: u64 = 64 * 1024;

/// An `index.json` entry: its validated descriptor for the checks, and the
/// original JSON so the merged `index.json` keeps every field verbatim.
#[derive(Debug, Clone)]
pub(super) struct IndexEntry {
    pub(super) descriptor: Descriptor,
    pub(super) raw: serde_json::Value,
    /// Whether the document it points at declares a `subject` (a referrer,
    /// which the importer places by its subject rather than by a name).
    pub(super) has_subject: bool,
}

/// A blob file of a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BlobFile {
    pub(super) path: PathBuf,
    pub(super) size: u64,
}

/// A checked layout directory.
#[derive(Debug)]
pub(super) struct LayoutSource {
    pub(super) dir: PathBuf,
    pub(super) entries: Vec<IndexEntry>,
    pub(super) blobs: BTreeMap<Digest, BlobFile>,
}

impl LayoutSource {
    /// Reads `dir`'s `oci-layout`, `index.json` and blob listing, and proves
    /// that every descriptor reachable from `index.json` is present with its
    /// declared size (manifests are also hashed and parsed on the way).
    pub(super) fn open(dir: &Path) -> Result<Self> {
        let metadata = fs::metadata(dir).map_err(|source| Error::InputMissing {
            flag: "--layout",
            path: dir.to_owned(),
            source,
        })?;
        if !metadata.is_dir() {
            return Err(Error::InputInvalid {
                flag: "--layout",
                path: dir.to_owned(),
                reason: "not a directory (give the OCI layout directory holding index.json)".into(),
            });
        }
        check_oci_layout_file(dir)?;
        let (descriptors, raws) = read_index(dir)?;
        let blobs = list_blobs(dir)?;
        let mut source = LayoutSource {
            dir: dir.to_owned(),
            entries: Vec::with_capacity(descriptors.len()),
            blobs,
        };
        let mut walked = HashSet::new();
        for (position, (descriptor, raw)) in descriptors.into_iter().zip(raws).enumerate() {
            let referenced_by = format!("index.json entry {position}");
            let top = source.walk_manifest(&descriptor, &referenced_by, 0, &mut walked)?;
            source.entries.push(IndexEntry {
                has_subject: top.subject().is_some(),
                descriptor,
                raw,
            });
        }
        Ok(source)
    }

    /// Checks a blob is present with the declared size.
    fn require(&self, descriptor: &Descriptor, referenced_by: &str) -> Result<&BlobFile> {
        match self.blobs.get(&descriptor.digest) {
            None => Err(Error::MissingBlob {
                dir: self.dir.clone(),
                digest: descriptor.digest.clone(),
                referenced_by: referenced_by.to_owned(),
            }),
            Some(blob) if blob.size != descriptor.size => Err(Error::SizeMismatch {
                dir: self.dir.clone(),
                digest: descriptor.digest.clone(),
                declared: descriptor.size,
                actual: blob.size,
                referenced_by: referenced_by.to_owned(),
            }),
            Some(blob) => Ok(blob),
        }
    }

    /// Walks one manifest or index and everything below it, as the importer
    /// will, and returns the parsed document. What `walked` already holds is
    /// only re-read, not walked again.
    fn walk_manifest(
        &self,
        descriptor: &Descriptor,
        referenced_by: &str,
        depth: usize,
        walked: &mut HashSet<Digest>,
    ) -> Result<Document> {
        if depth > MAX_NESTING {
            return Err(Error::NestingTooDeep {
                dir: self.dir.clone(),
                digest: descriptor.digest.clone(),
                limit: MAX_NESTING,
            });
        }
        let blob = self.require(descriptor, referenced_by)?;
        let document = read_document(blob, &descriptor.digest)?;
        if !walked.insert(descriptor.digest.clone()) {
            return Ok(document);
        }
        let what = format!("manifest {}", descriptor.digest);
        match &document {
            Document::Index { manifests, .. } => {
                for child in manifests {
                    self.walk_manifest(child, &what, depth + 1, walked)?;
                }
            }
            Document::Manifest { config, layers, .. } => {
                if let Some(config) = config {
                    self.require(config, &what)?;
                }
                for layer in layers {
                    // Foreign (non-distributable) layers live elsewhere; the
                    // importer skips them when the bundle lacks them.
                    if layer.has_urls && !self.blobs.contains_key(&layer.digest) {
                        continue;
                    }
                    self.require(layer, &what)?;
                }
            }
        }
        Ok(document)
    }
}

/// `oci-layout` must exist and declare an `imageLayoutVersion`: a directory
/// without one is far more likely a wrong path than a layout.
fn check_oci_layout_file(dir: &Path) -> Result<()> {
    let path = dir.join("oci-layout");
    let not_a_layout = |reason: String| Error::NotALayout {
        dir: dir.to_owned(),
        reason,
    };
    let bytes = match read_limited(&path, MAX_OCI_LAYOUT_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_a_layout("it has no oci-layout file".into()));
        }
        Err(source) => return Err(Error::LayoutRead { path, source }),
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct OciLayout {
        image_layout_version: String,
    }
    let layout = serde_json::from_slice::<OciLayout>(&bytes)
        .map_err(|e| not_a_layout(format!("oci-layout has no imageLayoutVersion: {e}")))?;
    if layout.image_layout_version.is_empty() {
        return Err(not_a_layout(
            "oci-layout's imageLayoutVersion is empty".into(),
        ));
    }
    Ok(())
}

/// Parses `index.json` twice: once validated (descriptors the checks use),
/// once as plain JSON (each entry copied verbatim into the bundle).
fn read_index(dir: &Path) -> Result<(Vec<Descriptor>, Vec<serde_json::Value>)> {
    let path = dir.join("index.json");
    let bytes = match read_limited(&path, DEFAULT_MAX_DOCUMENT_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::NotALayout {
                dir: dir.to_owned(),
                reason: "it has no index.json".into(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
            return Err(Error::ImportLimit {
                path,
                reason: format!("index.json is larger than {DEFAULT_MAX_DOCUMENT_BYTES} bytes"),
            });
        }
        Err(source) => return Err(Error::LayoutRead { path, source }),
    };
    let invalid = |reason: String| Error::InvalidDocument {
        path: path.clone(),
        reason,
    };
    let descriptors = match document::parse(&bytes) {
        Ok(Document::Index { manifests, .. }) => manifests,
        Ok(Document::Manifest { .. }) => {
            return Err(invalid("it is a manifest, not an index".into()));
        }
        Err(DocumentError::Json(e)) => return Err(invalid(e.to_string())),
        Err(DocumentError::Invalid(reason)) => return Err(invalid(reason)),
    };
    #[derive(serde::Deserialize)]
    struct RawIndex {
        manifests: Vec<serde_json::Value>,
    }
    let raw: RawIndex = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    Ok((descriptors, raw.manifests))
}

/// Every `blobs/<alg>/<hex>` file, with its size. Anything else under
/// `blobs/` is refused: the importer would not see it as a blob, so it is
/// either debris or a sign that the directory is not what it seems.
fn list_blobs(dir: &Path) -> Result<BTreeMap<Digest, BlobFile>> {
    let blobs_dir = dir.join("blobs");
    let mut blobs = BTreeMap::new();
    let algorithms = match fs::read_dir(&blobs_dir) {
        Ok(entries) => entries,
        // An empty layout (index.json lists nothing) may have no blobs/ yet;
        // a layout that needs blobs fails on the first missing one.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(blobs),
        Err(source) => {
            return Err(Error::LayoutRead {
                path: blobs_dir,
                source,
            });
        }
    };
    for algorithm_dir in algorithms {
        let algorithm_dir = algorithm_dir
            .map_err(|source| Error::LayoutRead {
                path: blobs_dir.clone(),
                source,
            })?
            .path();
        let name = file_name(&algorithm_dir);
        let Some(algorithm) = Algorithm::parse(&name) else {
            return Err(Error::StrayBlobFile {
                path: algorithm_dir,
                reason: "not a digest algorithm directory (sha256 or sha512)".into(),
            });
        };
        let files = fs::read_dir(&algorithm_dir).map_err(|source| Error::LayoutRead {
            path: algorithm_dir.clone(),
            source,
        })?;
        for file in files {
            let path = file
                .map_err(|source| Error::LayoutRead {
                    path: algorithm_dir.clone(),
                    source,
                })?
                .path();
            // Hidden names are writers' temporary files (airlock's own
            // `.airlock-*`), left behind by a crash; never a blob.
            if file_name(&path).starts_with('.') {
                tracing::warn!(file = %path.display(), "skipping a leftover temporary file");
                continue;
            }
            let digest = Digest::from_parts(algorithm, &file_name(&path)).map_err(|e| {
                Error::StrayBlobFile {
                    path: path.clone(),
                    reason: format!(
                        "the name is not a {} digest ({})",
                        algorithm.as_str(),
                        e.reason
                    ),
                }
            })?;
            // Follows symlinks: what matters is the content the link reaches.
            let metadata = fs::metadata(&path).map_err(|source| Error::LayoutRead {
                path: path.clone(),
                source,
            })?;
            if !metadata.is_file() {
                return Err(Error::StrayBlobFile {
                    path,
                    reason: "not a regular file".into(),
                });
            }
            blobs.insert(
                digest,
                BlobFile {
                    path,
                    size: metadata.len(),
                },
            );
        }
    }
    Ok(blobs)
}

/// Reads a manifest or index blob, checks its digest, and parses it.
fn read_document(blob: &BlobFile, digest: &Digest) -> Result<Document> {
    if blob.size > DEFAULT_MAX_DOCUMENT_BYTES {
        return Err(Error::ImportLimit {
            path: blob.path.clone(),
            reason: format!(
                "manifest of {} bytes is larger than the {DEFAULT_MAX_DOCUMENT_BYTES}-byte limit",
                blob.size
            ),
        });
    }
    let bytes = read_limited(&blob.path, DEFAULT_MAX_DOCUMENT_BYTES).map_err(|source| {
        Error::LayoutRead {
            path: blob.path.clone(),
            source,
        }
    })?;
    let mut hasher = Hasher::new(digest.algorithm());
    hasher.update(&bytes);
    let actual = hasher.finish();
    if actual != *digest {
        return Err(Error::BlobDigestMismatch {
            path: blob.path.clone(),
            actual,
        });
    }
    document::parse(&bytes).map_err(|e| Error::InvalidDocument {
        path: blob.path.clone(),
        reason: match e {
            DocumentError::Json(e) => e.to_string(),
            DocumentError::Invalid(reason) => reason,
        },
    })
}

/// Reads a whole small file, failing with `FileTooLarge` beyond `limit`.
fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
