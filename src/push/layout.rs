//! Writes into an OCI image layout directory (`oci:DIR`), the target that
//! needs no registry: blobs land under `blobs/<alg>/<hex>` through a temporary
//! file that is renamed into place only once its digest is proven, and
//! `index.json` is replaced atomically at the end with every image named by
//! its full reference in `org.opencontainers.image.ref.name`.
//!
//! Files are created 0644 less the umask, like `bundle create`'s output: the
//! directory is usually served to others (a registry, a web server) by a
//! different user. The read-merge-replace of `index.json` holds an exclusive
//! lock on a lock file in the directory, so imports running at the same time
//! (several processes, or one daemon importing several bundles) all keep
//! their entries.
//!
//! The index pass sets the layout's missing blobs aside as it reads them
//! ([`LayoutStage`]: temporary files beside their final place), so an import
//! into a layout reads the bundle twice, not three times; the push stage
//! renames the ones the plan needs into place once the bundle proved whole,
//! and the rest are removed with the stage.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Error, Result};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::read::names::OCI_REF_NAME;

const OCI_LAYOUT_FILE: &str = "oci-layout";
const OCI_LAYOUT_CONTENT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

/// Mode of every file written (before the umask): readable by whoever
/// serves the layout.
const FILE_MODE: u32 = 0o644;

/// Locked while `index.json` is read, merged and replaced. Hidden, with the
/// prefix airlock's own readers skip; other tools ignore files they do not
/// know in a layout.
const INDEX_LOCK_FILE: &str = ".airlock-index.lock";

/// An OCI image layout directory being written.
pub struct LayoutWriter {
    dir: PathBuf,
    added: Mutex<Vec<IndexEntry>>,
    /// Blobs the index pass set aside, not yet in place.
    staged: Mutex<HashMap<Digest, StagedBlob>>,
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
            staged: Mutex::new(HashMap::new()),
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
        Ok(BlobWrite {
            partial: Partial::new(&parent, digest.algorithm())?,
            digest: digest.clone(),
            final_path,
        })
    }

    /// Starts writing content whose SHA-256 digest is known only once it
    /// was written whole, beside the place of every such blob.
    pub fn begin_unnamed_blob(&self) -> Result<UnnamedWrite> {
        let parent = self.dir.join("blobs").join(Algorithm::Sha256.as_str());
        Ok(UnnamedWrite(Partial::new(&parent, Algorithm::Sha256)?))
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

    /// Whether `index.json` already names a manifest `name` (its
    /// `org.opencontainers.image.ref.name`).
    pub fn holds_name(&self, name: &str) -> Result<bool> {
        Ok(self.read_index()?.is_some_and(|index| {
            index
                .manifests
                .iter()
                .any(|m| m.annotations.get(OCI_REF_NAME).is_some_and(|n| n == name))
        }))
    }

    /// The digest of the manifest `index.json` names `name`, if any.
    pub fn digest_of_name(&self, name: &str) -> Result<Option<Digest>> {
        Ok(self.read_index()?.and_then(|index| {
            index
                .manifests
                .iter()
                .rev()
                .find(|m| m.annotations.get(OCI_REF_NAME).is_some_and(|n| n == name))
                .and_then(|m| m.digest.parse().ok())
        }))
    }

    fn read_index(&self) -> Result<Option<Index>> {
        let path = self.dir.join("index.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Index>(&bytes)
                .map(Some)
                .map_err(|e| Error::Layout {
                    path: path.display().to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path, e)),
        }
    }

    /// Takes the exclusive lock on `index.json` updates, held until the
    /// returned file is dropped (closing it releases the lock, also when the
    /// process dies).
    fn lock_index(&self) -> Result<File> {
        let path = self.dir.join(INDEX_LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        file.lock().map_err(|e| io_error(&path, e))?;
        Ok(file)
    }

    /// Takes over the blobs `stage` set aside during the index pass.
    pub fn adopt(&self, stage: LayoutStage) {
        if let Ok(mut staged) = self.staged.lock() {
            staged.extend(stage.kept);
        }
    }

    /// Renames the set-aside blob `digest` into place; `false` when none was
    /// set aside.
    pub fn commit_staged(&self, digest: &Digest) -> Result<bool> {
        let write = self.staged.lock().ok().and_then(|mut s| s.remove(digest));
        match write {
            Some(write) => write.commit().map(|()| true),
            None => Ok(false),
        }
    }

    /// Removes every set-aside blob not committed (the plan did not need
    /// it: a platform left out, an image held back).
    pub fn discard_staged(&self) {
        if let Ok(mut staged) = self.staged.lock() {
            staged.clear();
        }
    }

    /// Merges the recorded entries into `index.json`: an existing entry with
    /// the same reference name is replaced, everything else is kept.
    pub fn finish(&self) -> Result<()> {
        self.discard_staged();
        let _locked = self.lock_index()?;
        let path = self.dir.join("index.json");
        let mut index = self.read_index()?.unwrap_or_else(|| Index {
            schema_version: 2,
            media_type: Some(crate::read::document::OCI_INDEX.to_owned()),
            manifests: Vec::new(),
            rest: BTreeMap::new(),
        });
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

/// The blobs of a bundle set aside in a layout during the index pass, as
/// temporary files beside their final place (removed on drop). A blob the
/// layout already holds is not set aside.
pub struct LayoutStage {
    writer: Arc<LayoutWriter>,
    current: Option<(Digest, BlobWrite)>,
    /// The file begun last with `begin_unnamed`, and its size.
    unnamed: Option<(UnnamedWrite, u64)>,
    kept: HashMap<Digest, StagedBlob>,
    /// The layout holds the blob begun last.
    held: bool,
}

impl LayoutStage {
    /// A stage for `writer`'s layout.
    pub fn new(writer: Arc<LayoutWriter>) -> Self {
        LayoutStage {
            writer,
            current: None,
            unnamed: None,
            kept: HashMap::new(),
            held: false,
        }
    }
}

impl crate::read::BlobStage for LayoutStage {
    fn begin(&mut self, digest: &Digest, size: u64) -> std::io::Result<bool> {
        self.current = None;
        self.unnamed = None;
        self.held = self.writer.blob_size(digest) == Some(size);
        if self.held || self.kept.contains_key(digest) {
            return Ok(false);
        }
        let write = self
            .writer
            .begin_blob(digest)
            .map_err(std::io::Error::other)?;
        self.current = Some((digest.clone(), write));
        Ok(true)
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Some((write, _)) = &mut self.unnamed {
            return write.write(bytes).map_err(std::io::Error::other);
        }
        match &mut self.current {
            Some((_, write)) => write.write(bytes).map_err(std::io::Error::other),
            None => Ok(()),
        }
    }

    fn begin_unnamed(&mut self, _entry: &str, size: u64) -> std::io::Result<bool> {
        self.current = None;
        self.held = false;
        self.unnamed = None;
        let write = self
            .writer
            .begin_unnamed_blob()
            .map_err(std::io::Error::other)?;
        self.unnamed = Some((write, size));
        Ok(true)
    }

    fn keep_as(&mut self, digest: &Digest) -> std::io::Result<()> {
        let Some((write, size)) = self.unnamed.take() else {
            return Ok(());
        };
        // Content the layout holds, or set aside already, is dropped.
        if self.writer.blob_size(digest) == Some(size) || self.kept.contains_key(digest) {
            return Ok(());
        }
        let staged = write
            .named(&self.writer, digest)
            .set_aside()
            .map_err(std::io::Error::other)?;
        self.kept.insert(digest.clone(), staged);
        Ok(())
    }

    fn keep(&mut self) -> std::io::Result<()> {
        if let Some((digest, write)) = self.current.take() {
            let staged = write.set_aside().map_err(std::io::Error::other)?;
            self.kept.insert(digest, staged);
        }
        Ok(())
    }

    fn held(&self) -> bool {
        self.held
    }
}

/// A blob written whole and checked, beside its place; removed on drop
/// unless committed.
struct StagedBlob {
    temp: tempfile::TempPath,
    final_path: PathBuf,
}

impl StagedBlob {
    /// Renames the blob into place.
    fn commit(self) -> Result<()> {
        self.temp
            .persist(&self.final_path)
            .map_err(|e| io_error(&self.final_path, e.error))
    }
}

/// A temporary blob file, hashed as it is written; removed on drop unless
/// persisted.
struct Partial {
    file: tempfile::NamedTempFile,
    hasher: Hasher,
}

impl Partial {
    /// A new one in `parent` (created if missing), hashed with `algorithm`.
    fn new(parent: &Path, algorithm: Algorithm) -> Result<Self> {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        let file = tempfile::Builder::new()
            .prefix(crate::durable::TEMP_PREFIX)
            .suffix(".partial")
            .permissions(Permissions::from_mode(FILE_MODE))
            .tempfile_in(parent)
            .map_err(|e| io_error(parent, e))?;
        Ok(Partial {
            file,
            hasher: Hasher::new(algorithm),
        })
    }

    fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.hasher.update(chunk);
        let path = self.file.path().to_path_buf();
        self.file
            .as_file_mut()
            .write_all(chunk)
            .map_err(|e| io_error(&path, e))
    }

    /// Checks that what was written hashes to `expected`, and syncs it.
    fn verified(self, expected: Digest) -> Result<tempfile::NamedTempFile> {
        let actual = self.hasher.finish();
        if actual != expected {
            return Err(Error::DigestMismatch { expected, actual });
        }
        let path = self.file.path().to_path_buf();
        self.file
            .as_file()
            .sync_all()
            .map_err(|e| io_error(&path, e))?;
        Ok(self.file)
    }
}

/// A blob being written to a layout; removed on drop unless committed.
pub struct BlobWrite {
    partial: Partial,
    digest: Digest,
    final_path: PathBuf,
}

impl BlobWrite {
    /// Appends a chunk.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.partial.write(chunk)
    }

    /// Checks the digest, syncs and closes the blob, leaving it beside its
    /// place to be committed later. Closed, so a bundle of many blobs does
    /// not hold a file descriptor for each.
    fn set_aside(self) -> Result<StagedBlob> {
        let file = self.partial.verified(self.digest)?;
        Ok(StagedBlob {
            temp: file.into_temp_path(),
            final_path: self.final_path,
        })
    }

    /// Checks the digest, syncs and renames the blob into place.
    pub fn commit(self) -> Result<()> {
        let file = self.partial.verified(self.digest)?;
        file.persist(&self.final_path)
            .map_err(|e| io_error(&self.final_path, e.error))?;
        Ok(())
    }
}

/// Content being written to a layout before its digest is known (a file
/// of the bundle outside its layout); removed on drop unless named.
pub struct UnnamedWrite(Partial);

impl UnnamedWrite {
    /// Appends a chunk.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.0.write(chunk)
    }

    /// The content is blob `digest` of `writer`'s layout (checked when it
    /// is set aside or committed).
    fn named(self, writer: &LayoutWriter, digest: &Digest) -> BlobWrite {
        BlobWrite {
            partial: self.0,
            digest: digest.clone(),
            final_path: writer.blob_path(digest),
        }
    }
}

/// Writes a small file atomically (see [`crate::durable`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::durable::write_atomic_with_mode(path, bytes, FILE_MODE).map_err(|e| io_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(n: usize) -> (Digest, Bytes) {
        let bytes = Bytes::from(format!("{{\"manifest\":{n}}}"));
        let mut hasher = Hasher::new(crate::digest::Algorithm::Sha256);
        hasher.update(&bytes);
        (hasher.finish(), bytes)
    }

    fn names_in_index(dir: &Path) -> HashSet<String> {
        let bytes = std::fs::read(dir.join("index.json")).expect("read index.json");
        let index: Value = serde_json::from_slice(&bytes).expect("index.json is JSON");
        index["manifests"]
            .as_array()
            .expect("a manifests list")
            .iter()
            .filter_map(|m| m["annotations"][OCI_REF_NAME].as_str())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn imports_finishing_at_the_same_time_keep_every_index_entry() {
        const WRITERS: usize = 8;
        const ROUNDS: usize = 4;
        let dir = tempfile::tempdir().expect("tempdir");
        for round in 0..ROUNDS {
            let start = std::sync::Barrier::new(WRITERS);
            std::thread::scope(|scope| {
                for writer in 0..WRITERS {
                    let (dir, start) = (dir.path(), &start);
                    scope.spawn(move || {
                        let layout = LayoutWriter::open(dir).expect("open the layout");
                        let (digest, bytes) = manifest(round * WRITERS + writer);
                        let name = format!("example.com/app:{round}-{writer}");
                        layout
                            .put_manifest(&digest, "application/json", &bytes, Some(&name))
                            .expect("write the manifest");
                        start.wait();
                        layout.finish().expect("update index.json");
                    });
                }
            });
        }
        let names = names_in_index(dir.path());
        assert_eq!(
            names.len(),
            WRITERS * ROUNDS,
            "entries were lost: {names:?}"
        );
    }

    #[test]
    fn files_are_readable_by_others_less_the_umask() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = LayoutWriter::open(dir.path()).expect("open the layout");
        let (digest, bytes) = manifest(1);
        layout
            .put_manifest(&digest, "application/json", &bytes, Some("example.com/a:1"))
            .expect("write the manifest");
        layout.finish().expect("write index.json");
        let expected = FILE_MODE & !process_umask();
        for file in [
            dir.path().join("oci-layout"),
            dir.path().join("index.json"),
            layout.blob_path(&digest),
        ] {
            let mode = std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, expected, "{:o} for {}", mode, file.display());
        }
    }

    /// The umask of this process, from `/proc/self/status` (Linux).
    fn process_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .expect("a Umask line");
        u32::from_str_radix(line.trim(), 8).expect("an octal umask")
    }
}
