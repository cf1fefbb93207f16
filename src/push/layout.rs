//! Writes into an OCI image layout directory (`oci:DIR`), the target that
//! needs no registry: blobs land under `blobs/<alg>/<hex>` through a temporary
//! file that is renamed into place only once its digest is proven, and
//! `index.json` is replaced atomically at the end with every image named by
//! its full reference in `org.opencontainers.image.ref.name`.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Error, Result};
use crate::digest::{Digest, Hasher};
use crate::read::names::OCI_REF_NAME;

const OCI_LAYOUT_FILE: &str = "oci-layout";
const OCI_LAYOUT_CONTENT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

/// An OCI image layout directory being written.
pub struct LayoutWriter {
    dir: PathBuf,
    added: Mutex<Vec<IndexEntry>>,
}

/// One `index.json` entry. Unknown fields of existing entries are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<IndexEntry>,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Layout {
        path: path.display().to_string(),
        source,
    }
}

impl LayoutWriter {
    /// Opens (creating if needed) a layout directory.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let marker = dir.join(OCI_LAYOUT_FILE);
        if !marker.exists() {
            write_atomic(&marker, OCI_LAYOUT_CONTENT.as_bytes())?;
        }
        Ok(LayoutWriter {
            dir: dir.to_owned(),
            added: Mutex::new(Vec::new()),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Whether the blob is already in the layout with the right size.
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.blob_path(digest))
            .ok()
            .map(|m| m.len())
    }

    /// Starts writing a blob; chunks are appended with [`BlobWrite::write`].
    pub fn begin_blob(&self, digest: &Digest) -> Result<BlobWrite> {
        let final_path = self.blob_path(digest);
        let parent = final_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.dir.clone());
        std::fs::create_dir_all(&parent).map_err(|e| io_error(&parent, e))?;
        let file = tempfile::Builder::new()
            .prefix(crate::durable::TEMP_PREFIX)
            .suffix(".partial")
            .tempfile_in(&parent)
            .map_err(|e| io_error(&parent, e))?;
        Ok(BlobWrite {
            file,
            hasher: Hasher::new(digest.algorithm()),
            digest: digest.clone(),
            final_path,
        })
    }

    /// Writes a small blob (a child manifest) unless it is already there.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        if self.blob_size(digest) == Some(bytes.len() as u64) {
            return Ok(());
        }
        let mut write = self.begin_blob(digest)?;
        write.write(bytes)?;
        write.commit()
    }

    /// Writes a manifest blob and, when `name` is given, records it for
    /// `index.json` under that reference name.
    pub fn put_manifest(
        &self,
        digest: &Digest,
        media_type: &str,
        bytes: &Bytes,
        name: Option<&str>,
    ) -> Result<()> {
        self.put_blob(digest, bytes)?;
        let mut annotations = BTreeMap::new();
        if let Some(name) = name {
            annotations.insert(OCI_REF_NAME.to_owned(), name.to_owned());
        }
        let entry = IndexEntry {
            media_type: media_type.to_owned(),
            digest: digest.to_string(),
            size: bytes.len() as u64,
            annotations,
            rest: BTreeMap::new(),
        };
        if let Ok(mut added) = self.added.lock() {
            added.push(entry);
        }
        Ok(())
    }

    /// Merges the recorded entries into `index.json`: an existing entry with
    /// the same reference name is replaced, everything else is kept.
    pub fn finish(&self) -> Result<()> {
        let path = self.dir.join("index.json");
        let mut index = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Index>(&bytes).map_err(|e| Error::Layout {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index {
                schema_version: 2,
                media_type: Some(crate::read::document::OCI_INDEX.to_owned()),
                manifests: Vec::new(),
                rest: BTreeMap::new(),
            },
            Err(e) => return Err(io_error(&path, e)),
        };
        let added = self.added.lock().map(|a| a.clone()).unwrap_or_default();
        // The last entry recorded for a name wins; unnamed entries count once
        // per digest. Entries already in the index under those names (or,
        // unnamed, with those digests) are replaced.
        let mut names: HashSet<String> = HashSet::new();
        let mut unnamed: HashSet<String> = HashSet::new();
        let mut fresh = Vec::with_capacity(added.len());
        for entry in added.into_iter().rev() {
            let new = match entry.annotations.get(OCI_REF_NAME) {
                Some(name) => names.insert(name.clone()),
                None => unnamed.insert(entry.digest.clone()),
            };
            if new {
                fresh.push(entry);
            }
        }
        fresh.reverse();
        index
            .manifests
            .retain(|existing| match existing.annotations.get(OCI_REF_NAME) {
                Some(name) => !names.contains(name),
                None => !unnamed.contains(&existing.digest),
            });
        index.manifests.extend(fresh);
        let bytes = serde_json::to_vec_pretty(&index).map_err(|e| Error::Layout {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&path, &bytes)
    }
}

/// A blob being written to a layout; removed on drop unless committed.
pub struct BlobWrite {
    file: tempfile::NamedTempFile,
    hasher: Hasher,
    digest: Digest,
    final_path: PathBuf,
}

impl BlobWrite {
    /// Appends a chunk.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.hasher.update(chunk);
        let path = self.file.path().to_path_buf();
        self.file
            .as_file_mut()
            .write_all(chunk)
            .map_err(|e| io_error(&path, e))
    }

    /// Checks the digest, syncs and renames the blob into place.
    pub fn commit(self) -> Result<()> {
        let actual = self.hasher.finish();
        if actual != self.digest {
            return Err(Error::DigestMismatch {
                expected: self.digest,
                actual,
            });
        }
        let temp_path = self.file.path().to_path_buf();
        self.file
            .as_file()
            .sync_all()
            .map_err(|e| io_error(&temp_path, e))?;
        self.file
            .persist(&self.final_path)
            .map_err(|e| io_error(&self.final_path, e.error))?;
        Ok(())
    }
}

/// Writes a small file atomically (see [`crate::durable`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::durable::write_atomic(path, bytes).map_err(|e| io_error(path, e))
}
