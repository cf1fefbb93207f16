//! Read a verified bundle: stream the zstd-compressed tar once, check every
//! blob against its digest, and index the OCI image layout inside it.
//!
//! Depends on [`crate::verify`] only for [`VerifiedBundle`], which is the one
//! way into this module: an unverified file is never decompressed.
//!
//! The bundle is never extracted to disk. The index pass keeps only small JSON
//! documents in memory (manifests, indexes, configs, bounded by
//! [`ReadLimits`]); blob contents are hashed as they stream by. The push stage
//! later streams the blobs it needs with [`BundleIndex::stream_blobs`].

mod archive;
pub mod artifact;
pub mod document;
pub mod formats;
mod image;
mod layout;
pub mod limits;
pub mod names;
pub mod peek;
mod tar_guard;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::ops::ControlFlow;
use std::path::Path;

use bytes::Bytes;
use serde::Serialize;

use crate::FailureClass;
use crate::digest::side::{join, side_hash};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::progress::Progress;
use crate::verify::{Binding, BundleFile, PendingBundle, Symlinks, VerifiedBundle};

pub use document::Descriptor;
pub use formats::pack::{Pack, PackMetadata};
pub use formats::producer::Producer;
pub use image::{BundleImage, ImageKind, ManifestRef};
pub use limits::{
    DEFAULT_MAX_DOCUMENT_BYTES, DEFAULT_MAX_DOCUMENTS_TOTAL_BYTES, DEFAULT_MAX_ENTRIES, Exceeded,
    Limit, ReadLimits, Stale,
};
pub use names::{Area, ArtifactName, ImageName};
pub use peek::ScannedFile;

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Buffer for hashing blob contents as they stream by.
const HASH_BUFFER_BYTES: usize = 256 << 10;

/// Everything that can be wrong with a bundle's content. All of these are
/// integrity failures: the bundle is rejected and nothing is pushed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle file could not be opened or read.
    #[error("cannot read bundle {path}: {source}")]
    Open {
        /// The bundle file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A blob could not be set aside in the target while it was read.
    #[error("bundle {path}: cannot set blob {blob} aside in the target: {source}")]
    Stage {
        /// The bundle file.
        path: String,
        /// The blob: its digest, or the tar entry of a file whose digest
        /// was not known yet.
        blob: String,
        /// What writing it reported.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with a zstd frame.
    #[error("bundle {path} is not zstd-compressed")]
    NotZstd {
        /// The bundle file.
        path: String,
    },
    /// The zstd stream or the tar inside it ends early or is damaged.
    #[error("bundle {path} is truncated or corrupt: {source}")]
    Corrupt {
        /// The bundle file.
        path: String,
        /// What the decompressor or tar reader reported.
        #[source]
        source: std::io::Error,
    },
    /// The decompressed content is not a tar archive.
    #[error("bundle {path} does not contain a tar archive: {source}")]
    NotTar {
        /// The bundle file.
        path: String,
        /// What the tar reader reported.
        #[source]
        source: std::io::Error,
    },
    /// A tar entry could escape the extraction root or is a link or device.
    #[error("bundle {path}: unsafe entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The bundle file.
        path: String,
        /// The entry's raw path.
        entry: String,
        /// What is unsafe about it.
        reason: String,
    },
    /// A blob's content does not hash to the digest its file name promises.
    #[error("bundle {path}: blob {entry} does not match its digest (content hashes to {actual})")]
    BlobDigestMismatch {
        /// The bundle file.
        path: String,
        /// The blob's entry path.
        entry: String,
        /// What the content actually hashes to.
        actual: Digest,
    },
    /// No `index.json` was found at the root or in a top-level directory.
    #[error(
        "bundle {path} holds nothing airlock can import (no OCI image layout index.json and no docker-save manifest.json at its root or in a top-level directory, and nothing under files/, charts/ or packs/)"
    )]
    NoLayout {
        /// The bundle file.
        path: String,
    },
    /// More than one OCI image layout was found.
    #[error("bundle {path} holds several OCI image layouts ({roots}); exactly one is supported")]
    SeveralLayouts {
        /// The bundle file.
        path: String,
        /// The layout directories found.
        roots: String,
    },
    /// A JSON document could not be parsed.
    #[error("bundle {path}: {what} is not valid JSON: {source}")]
    InvalidJson {
        /// The bundle file.
        path: String,
        /// Which document (`index.json` or a digest).
        what: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A JSON document is well-formed but not a usable manifest or index.
    #[error("bundle {path}: {what} is not a valid manifest: {reason}")]
    InvalidDocument {
        /// The bundle file.
        path: String,
        /// Which document.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A descriptor names a blob the bundle does not hold.
    #[error("bundle {path}: {referenced_by} names blob {digest}, which is not in the bundle")]
    MissingBlob {
        /// The bundle file.
        path: String,
        /// The missing blob.
        digest: Digest,
        /// The document that names it.
        referenced_by: String,
    },
    /// A descriptor's size disagrees with the blob's actual size.
    #[error(
        "bundle {path}: {referenced_by} declares {digest} as {declared} bytes but it is {actual}"
    )]
    SizeMismatch {
        /// The bundle file.
        path: String,
        /// The blob.
        digest: Digest,
        /// The size the descriptor declares.
        declared: u64,
        /// The size in the bundle.
        actual: u64,
        /// The document that declares it.
        referenced_by: String,
    },
    /// A manifest is larger than [`ReadLimits::max_document_bytes`] or not JSON.
    #[error(
        "bundle {path}: manifest {digest} ({size} bytes) is not a JSON document of at most {limit} bytes (read.max_document_bytes)"
    )]
    DocumentTooLarge {
        /// The bundle file.
        path: String,
        /// The manifest.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bundle's JSON documents together exceed the memory budget.
    #[error(
        "bundle {path}: its JSON documents exceed the {limit}-byte memory budget (read.max_documents_total_bytes)"
    )]
    DocumentBudgetExceeded {
        /// The bundle file.
        path: String,
        /// The budget.
        limit: u64,
    },
    /// The bundle exceeds one of the [`ReadLimits`]: endless data, or more
    /// of something than any real bundle holds.
    #[error("bundle {path} exceeds a read limit{}: {source}", at_item(.item.as_deref()))]
    LimitExceeded {
        /// The bundle file.
        path: String,
        /// The entry or document that exceeds it, when one is to blame.
        item: Option<String>,
        /// Which limit, the value found and the cap.
        #[source]
        source: Exceeded,
    },
    /// A pack, installer, chart or docker-save item cannot be imported as it
    /// is; `item` names it so the producer can fix it.
    #[error("bundle {path}: {item}: {reason}")]
    InvalidContent {
        /// The bundle file.
        path: String,
        /// The item's path in the bundle.
        item: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The bundle is older than `trust.max_bundle_age` allows, or does not
    /// say when it was made while a maximum age is set.
    #[error("bundle {path} is refused as too old: {source}")]
    TooOld {
        /// The bundle file.
        path: String,
        /// Its creation time and the limit.
        #[source]
        source: Stale,
    },
    /// The bytes read now are not the bytes whose signature was verified.
    #[error("bundle {path} changed after its signature was verified (now {actual})")]
    ChangedAfterVerification {
        /// The bundle file.
        path: String,
        /// The hash of what was read, `<algorithm>:<hex>`.
        actual: String,
    },
}

/// The error for a pack, installer, chart or docker-save item that cannot be
/// imported as it is.
fn invalid(bundle: &str, item: &str, reason: String) -> Error {
    Error::InvalidContent {
        path: bundle.to_owned(),
        item: item.to_owned(),
        reason,
    }
}

impl Error {
    /// Names the entry that exceeded a read limit, when the limit did not.
    fn at_item(self, entry: &str) -> Self {
        match self {
            Error::LimitExceeded {
                path,
                item: None,
                source,
            } => Error::LimitExceeded {
                path,
                item: Some(entry.to_owned()),
                source,
            },
            other => other,
        }
    }

    /// Every content problem is an integrity failure: permanent, nothing pushed.
    pub fn class(&self) -> FailureClass {
        match self {
            Error::Open { .. } | Error::Stage { .. } => FailureClass::Transport,
            _ => FailureClass::Integrity,
        }
    }
}

/// A file in the bundle outside the OCI layout.
#[derive(Debug, Clone, Serialize)]
pub struct ExtraFile {
    /// Its path in the tar.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// The digest of its content.
    pub digest: Digest,
}

/// Where a blob's bytes come from when it is pushed.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// A file of the bundle, streamed from its tar entry (path as normalised
    /// by the reader).
    Entry(String),
    /// Bytes airlock holds: a config it wrote, a chart taken out of a pack.
    Memory(Bytes),
}

/// Where a bundle's bytes come from, and what they must hash to.
///
/// Only two kinds exist: a [`VerifiedBundle`] (whose bytes must hash to what
/// was verified) and an [`UnverifiedBundle`] for `inspect` without keys. The
/// planner accepts only `BundleIndex<VerifiedBundle>`.
pub trait BundleSource: std::fmt::Debug + Send + Sync + 'static {
    /// The bundle file's path, for messages.
    fn path(&self) -> &Path;
    /// The open bundle file: every pass reads it, never the path again.
    fn file(&self) -> &BundleFile;
    /// The SHA-256 (hex) the file was verified to have and what a read of
    /// it must hash to, if it was verified.
    fn verified(&self) -> Option<(&str, Binding<'_>)>;
}

impl BundleSource for VerifiedBundle {
    fn path(&self) -> &Path {
        VerifiedBundle::path(self)
    }
    fn file(&self) -> &BundleFile {
        VerifiedBundle::file(self)
    }
    fn verified(&self) -> Option<(&str, Binding<'_>)> {
        Some((self.sha256(), self.binding()))
    }
}

/// A bundle read without checking its signature: only for showing what it
/// holds (`airlock inspect` without keys). It cannot be planned or pushed.
#[derive(Debug, Clone)]
pub struct UnverifiedBundle {
    path: std::path::PathBuf,
    file: BundleFile,
}

impl UnverifiedBundle {
    /// Opens a bundle file to inspect (a regular file; links are followed).
    pub fn open(path: impl Into<std::path::PathBuf>) -> Result<Self> {
        let path = path.into();
        let file = BundleFile::open(&path, Symlinks::Follow).map_err(|source| Error::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(UnverifiedBundle { path, file })
    }
}

impl BundleSource for UnverifiedBundle {
    fn path(&self) -> &Path {
        &self.path
    }
    fn file(&self) -> &BundleFile {
        &self.file
    }
    fn verified(&self) -> Option<(&str, Binding<'_>)> {
        None
    }
}

/// The index of an internally whole bundle.
#[derive(Debug)]
pub struct BundleIndex<B: BundleSource = VerifiedBundle> {
    bundle: B,
    content_sha256: String,
    layout_root: Option<String>,
    blobs: HashMap<Digest, u64>,
    sources: HashMap<Digest, BlobSource>,
    documents: HashMap<Digest, Bytes>,
    images: Vec<BundleImage>,
    packs: Vec<Pack>,
    extra_files: Vec<ExtraFile>,
    producer: Producer,
    /// The limits the index pass read it under, which the second pass
    /// keeps to.
    limits: ReadLimits,
    /// The creation time its `index.json` gives.
    created: Option<String>,
}

impl<B: BundleSource> BundleIndex<B> {
    /// Reads the bundle once, checks it, and indexes it.
    ///
    /// Fails if any blob's content does not match its digest, any descriptor
    /// reachable from `index.json` is absent or has the wrong size, or the file
    /// changed since it was verified.
    pub fn build(bundle: B, limits: ReadLimits, progress: &Progress) -> Result<Self> {
        Self::build_staged(bundle, limits, progress, &mut NoStage)
    }

    /// [`BundleIndex::build`], handing the bytes of every layout blob the
    /// `stage` wants to it as they are read, so that writing them later
    /// needs no further read of the bundle. When this returns an error,
    /// whatever the stage holds must be thrown away.
    pub fn build_staged(
        bundle: B,
        limits: ReadLimits,
        progress: &Progress,
        stage: &mut dyn BlobStage,
    ) -> Result<Self> {
        let verified = bundle.verified();
        let hash = match verified {
            Some((_, Binding::Blake3(_))) => archive::CompressedHash::Blake3,
            Some((_, Binding::Sha256(_))) | None => archive::CompressedHash::Sha256,
        };
        let scan = scan(
            bundle.file(),
            bundle.path(),
            hash,
            verified,
            limits,
            progress,
            stage,
        )?;
        Self::assemble(bundle, scan, limits)
    }

    /// Interprets what the index pass found and checks the bundle's age.
    fn assemble(bundle: B, scan: Scan, limits: ReadLimits) -> Result<Self> {
        let index = layout::assemble(bundle, scan, limits)?;
        limits
            .check_age(index.created(), std::time::SystemTime::now())
            .map_err(|source| Error::TooOld {
                path: index.bundle.path().display().to_string(),
                source,
            })?;
        Ok(index)
    }

    /// When the bundle says it was made: the `org.opencontainers.image.created`
    /// annotation of its `index.json`, verbatim.
    pub fn created(&self) -> Option<&str> {
        self.created.as_deref()
    }

    /// The bundle this index describes.
    pub fn bundle(&self) -> &B {
        &self.bundle
    }

    /// The SHA-256 (hex) of the bundle file as read.
    pub fn content_sha256(&self) -> &str {
        &self.content_sha256
    }

    /// The directory in the tar holding the OCI layout (`""` for the root),
    /// or `None` when the bundle has none (only packs, charts, files or a
    /// docker-save).
    pub fn layout_root(&self) -> Option<&str> {
        self.layout_root.as_deref()
    }

    /// The images and artifacts `index.json` lists, in its order.
    pub fn images(&self) -> &[BundleImage] {
        &self.images
    }

    /// The Palette packs among the images (archives under `packs/` and packs
    /// the OCI layout already holds), with their metadata.
    pub fn packs(&self) -> &[Pack] {
        &self.packs
    }

    /// Files no format claimed, which are not imported.
    pub fn extra_files(&self) -> &[ExtraFile] {
        &self.extra_files
    }

    /// The tool that made the bundle, as far as airlock can tell.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The raw bytes of a manifest or index, exactly as in the bundle.
    pub fn document(&self, digest: &Digest) -> Option<&Bytes> {
        self.documents.get(digest)
    }

    /// The size of a blob in the bundle.
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        self.blobs.get(digest).copied()
    }

    /// Streams the bundle again and hands each wanted blob's content to
    /// `on_blob`, each blob at most once: blobs airlock holds in memory first,
    /// then the bundle's in tar order. `on_blob` must read the content to its
    /// end or return an error.
    pub fn stream_blobs<E>(
        &self,
        wanted: &HashSet<Digest>,
        progress: &Progress,
        mut on_blob: impl FnMut(&Digest, u64, &mut dyn Read) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), StreamError<E>> {
        let path = self.bundle.path();
        let mut by_entry: HashMap<&str, &Digest> = HashMap::new();
        for digest in wanted {
            match self.sources.get(digest) {
                Some(BlobSource::Memory(bytes)) => {
                    on_blob(digest, bytes.len() as u64, &mut &bytes[..])
                        .map_err(StreamError::Consumer)?;
                }
                Some(BlobSource::Entry(entry)) => {
                    by_entry.insert(entry.as_str(), digest);
                }
                None => {
                    return Err(StreamError::Read(Error::MissingBlob {
                        path: path.display().to_string(),
                        digest: digest.clone(),
                        referenced_by: "the plan".into(),
                    }));
                }
            }
        }
        if by_entry.is_empty() {
            return Ok(());
        }
        let file = self.bundle.file();
        let (mut archive, _) = archive::open(
            file,
            path,
            progress,
            archive::CompressedHash::Skip,
            &self.limits,
        )
        .map_err(StreamError::Read)?;
        let entries = archive
            .entries()
            .map_err(|source| StreamError::Read(corrupt(path, source)))?;
        for entry in entries {
            if by_entry.is_empty() {
                break;
            }
            let mut entry = entry.map_err(|source| StreamError::Read(corrupt(path, source)))?;
            let raw = entry.path_bytes().into_owned();
            let Ok(checked) = archive::check_entry(entry.header(), &raw) else {
                continue;
            };
            let Some(digest) = by_entry.remove(checked.normalized.as_str()) else {
                continue;
            };
            let size = entry.size();
            on_blob(digest, size, &mut entry).map_err(StreamError::Consumer)?;
        }
        if let Some(missing) = by_entry.into_values().next() {
            return Err(StreamError::Read(Error::MissingBlob {
                path: path.display().to_string(),
                digest: missing.clone(),
                referenced_by: "the second read of the bundle".into(),
            }));
        }
        Ok(())
    }
}

impl BundleIndex<VerifiedBundle> {
    /// Reads a bundle once for both its signature and its content
    /// (`imports.single_read`): every compressed byte the decompressor takes
    /// is handed to the signature check as it is read, and the file is read
    /// on to its end afterwards, so the signature is checked over the whole
    /// file as [`crate::verify::verify_bundle_by_any`] checks it. Unlike the
    /// default order, the decompressor and the tar parser see the bytes
    /// before the signature is known; whatever they set aside in `stage`
    /// must be thrown away unless this returns an index.
    ///
    /// `Err` when the signature does not verify, whatever the content; with
    /// a verified signature, [`VerifiedRead::into_index`] tells whether the
    /// content is whole. An index of bytes whose signature did not verify
    /// cannot be had from here.
    pub fn build_verifying(
        pending: &PendingBundle<'_>,
        limits: ReadLimits,
        progress: &Progress,
        stage: &mut dyn BlobStage,
    ) -> std::result::Result<VerifiedRead, crate::verify::Error> {
        let hasher = pending.hasher()?;
        // The signature's hash runs on a thread of its own, beside
        // decompression and indexing, so the pass takes the longer of the
        // two rather than their sum.
        let (scanned, hasher) = std::thread::scope(|scope| {
            let (feed, body) = side_hash(hasher, |hasher, bytes| hasher.update(bytes));
            let thread = std::thread::Builder::new()
                .name("airlock-hash".into())
                .spawn_scoped(scope, body)
                .map_err(|source| crate::verify::Error::BundleRead {
                    path: pending.path().to_owned(),
                    source,
                })?;
            let mut hash = |chunk: &[u8]| feed.feed(chunk);
            let scanned = scan(
                pending.file(),
                pending.path(),
                archive::CompressedHash::Verify(&mut hash),
                None,
                limits,
                progress,
                stage,
            );
            drop(feed);
            Ok::<_, crate::verify::Error>((scanned, join(thread.join())))
        })?;
        // A broken or cut-off archive stops the decompressor early: the rest
        // of the file is hashed all the same, so a bundle that is not what
        // its producer signed is refused as such, not as corrupt content.
        let bundle = pending.finish(hasher, &mut |n| {
            progress.add_bundle_bytes(n);
            if progress.cancelled() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        let index = scanned.and_then(|mut scan| {
            scan.sha256 = bundle.sha256().to_owned();
            Self::assemble(bundle.clone(), scan, limits)
        });
        Ok(VerifiedRead { bundle, index })
    }
}

/// A bundle read once whose signature verified over the whole file, and
/// what its content turned out to be.
#[derive(Debug)]
pub struct VerifiedRead {
    bundle: VerifiedBundle,
    index: Result<BundleIndex<VerifiedBundle>>,
}

impl VerifiedRead {
    /// The verified bundle, whether or not its content is whole.
    pub fn bundle(&self) -> &VerifiedBundle {
        &self.bundle
    }

    /// The index, or why the content is not whole.
    pub fn into_index(self) -> Result<BundleIndex<VerifiedBundle>> {
        self.index
    }
}

/// Where the index pass sets blob bytes aside as it reads them (the blobs of
/// an `oci:` target, written to temporary files). It is called for the
/// entries whose name gives their digest, one blob at a time: `begin`, then
/// `write` with every byte in order, then `keep` once the bytes proved to be
/// the blob. Nothing set aside may be visible in the target before the push
/// stage commits it, after the whole bundle is indexed and its compressed
/// bytes matched the verified digest.
pub trait BlobStage: Send {
    /// Starts on blob `digest` of `size` bytes; `false` when the stage does
    /// not want it (the target has it, or it is set aside already).
    fn begin(&mut self, digest: &Digest, size: u64) -> std::io::Result<bool>;
    /// The next bytes of the blob begun last.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// The blob begun last was read whole and hashes to its digest.
    fn keep(&mut self) -> std::io::Result<()>;
    /// Whether the target holds the blob begun last already, known once
    /// `begin` returned: its bytes need be neither hashed nor handed over
    /// (default: never). Asked only of blobs larger than a document.
    fn held(&self) -> bool {
        false
    }
    /// Whether the index should keep small content in memory, for the push
    /// to send from there, instead of handing it over or leaving it to be
    /// read from the bundle again (default: never). Asked of every blob up
    /// to a document's size once it was read whole and hashes to its digest
    /// (before `begin`: `true` leaves the blob to the index and the stage
    /// never sees it), and of every file outside the layout up to that
    /// size once it was read whole, unless the index keeps the file anyway
    /// (JSON and YAML, sent from memory whatever the answer). `kept_anyway`:
    /// the index keeps these bytes whatever the answer (a JSON document), so
    /// leaving them costs no memory.
    fn leave_in_memory(&mut self, _bytes: &[u8], _kept_anyway: bool) -> bool {
        false
    }
    /// Starts on a file outside the layout (tar entry `entry`, `size`
    /// bytes) whose digest is known only once it is read whole: a
    /// docker-save layer, a pack or chart archive, an installer. Its bytes
    /// follow through [`BlobStage::write`]; `false` when the stage does not
    /// want it (default: never).
    fn begin_unnamed(&mut self, _entry: &str, _size: u64) -> std::io::Result<bool> {
        Ok(false)
    }
    /// The file begun last with [`BlobStage::begin_unnamed`] was read whole
    /// and hashes to `digest`: the stage keeps it under that digest.
    fn keep_as(&mut self, _digest: &Digest) -> std::io::Result<()> {
        Ok(())
    }
}

/// A stage that wants nothing: the index pass only reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStage;

impl BlobStage for NoStage {
    fn begin(&mut self, _: &Digest, _: u64) -> std::io::Result<bool> {
        Ok(false)
    }
    fn write(&mut self, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn keep(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A failure while streaming blobs: the bundle or the consumer.
#[derive(Debug, thiserror::Error)]
pub enum StreamError<E> {
    /// Reading the bundle failed.
    #[error(transparent)]
    Read(Error),
    /// The consumer (an upload) failed.
    #[error(transparent)]
    Consumer(E),
}

fn corrupt(path: &Path, source: std::io::Error) -> Error {
    if let Some(exceeded) = limits::exceeded_in(&source) {
        return over_limit(path, exceeded);
    }
    Error::Corrupt {
        path: path.display().to_string(),
        source,
    }
}

/// The error for a bundle that exceeds one of its [`ReadLimits`].
fn over_limit(path: &Path, source: Exceeded) -> Error {
    Error::LimitExceeded {
        path: path.display().to_string(),
        item: None,
        source,
    }
}

/// [`over_limit`] for one entry or document of the bundle.
fn item_over_limit(path: &Path, item: &str, source: Exceeded) -> Error {
    Error::LimitExceeded {
        path: path.display().to_string(),
        item: Some(item.to_owned()),
        source,
    }
}

fn at_item(item: Option<&str>) -> String {
    item.map(|item| format!(" at {item:?}")).unwrap_or_default()
}

/// What one pass over the tar found, before the layout is interpreted.
struct Scan {
    /// SHA-256 (hex) of the compressed file.
    sha256: String,
    /// Per candidate layout root: its files.
    roots: BTreeMap<String, RootScan>,
    /// Files that are not part of any layout.
    others: Vec<ScannedFile>,
    /// Symlinks inside the bundle (link path, target path), which only
    /// docker-save archives use and airlock never follows on disk.
    links: Vec<(String, String)>,
}

#[derive(Default)]
struct RootScan {
    index_json: Option<Bytes>,
    has_oci_layout: bool,
    blobs: HashMap<Digest, u64>,
    documents: HashMap<Digest, Bytes>,
    /// Small blobs that are not documents, kept for the push
    /// ([`BlobStage::leave_in_memory`]).
    in_memory: HashMap<Digest, Bytes>,
}

/// Splits `[root/]blobs/<alg>/<hex>` into the root and the digest.
fn blob_path(path: &str) -> Option<(String, Digest)> {
    let parts: Vec<&str> = path.split('/').collect();
    let (root, rest) = match parts.len() {
        3 => ("", &parts[..]),
        4 => (parts[0], &parts[1..]),
        _ => return None,
    };
    if rest[0] != "blobs" {
        return None;
    }
    let algorithm = Algorithm::parse(rest[1])?;
    let digest = Digest::from_parts(algorithm, rest[2]).ok()?;
    Some((root.to_owned(), digest))
}

/// Splits `[root/]index.json` or `[root/]oci-layout`.
fn layout_file<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    if path == name {
        return Some("");
    }
    let (root, file) = path.split_once('/')?;
    (file == name && !root.is_empty()).then_some(root)
}

/// Reads the bundle `file` once, handling its compressed bytes as `hash`
/// says; when `expected` is given (a verified bundle), they must hash to its
/// [`Binding`], and the scan takes its verified SHA-256.
fn scan(
    file: &BundleFile,
    path: &Path,
    hash: archive::CompressedHash<'_>,
    expected: Option<(&str, Binding<'_>)>,
    limits: ReadLimits,
    progress: &Progress,
    stage: &mut dyn BlobStage,
) -> Result<Scan> {
    let display = path.display().to_string();
    progress.reset_bundle_bytes();
    let (mut archive, health) = archive::open(file, path, progress, hash, &limits)?;
    let (_, expansion_cap) = limits.expansion_cap(file.size());
    let mut scan = Scan {
        sha256: String::new(),
        roots: BTreeMap::new(),
        others: Vec::new(),
        links: Vec::new(),
    };
    let mut retained: u64 = 0;
    let entries = archive.entries().map_err(|source| Error::NotTar {
        path: display.clone(),
        source,
    })?;
    for (seen_entries, entry) in entries.enumerate() {
        limits
            .check(Limit::Entries, seen_entries as u64 + 1)
            .map_err(|e| over_limit(path, e))?;
        let mut entry = entry.map_err(|source| {
            if seen_entries == 0 && !health.failed() && limits::exceeded_in(&source).is_none() {
                Error::NotTar {
                    path: display.clone(),
                    source,
                }
            } else {
                corrupt(path, source)
            }
        })?;
        let raw = entry.path_bytes().into_owned();
        limits
            .check(Limit::PathBytes, raw.len() as u64)
            .map_err(|e| {
                item_over_limit(path, &String::from_utf8_lossy(&raw[..64.min(raw.len())]), e)
            })?;
        if entry.header().entry_type().is_symlink() {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            limits
                .check(Limit::PathBytes, target.len() as u64)
                .map_err(|e| over_limit(path, e))?;
            let link =
                archive::check_symlink(&raw, &target).map_err(|reason| Error::UnsafeEntry {
                    path: display.clone(),
                    entry: String::from_utf8_lossy(&raw).into_owned(),
                    reason,
                })?;
            scan.links.push(link);
            continue;
        }
        let checked =
            archive::check_entry(entry.header(), &raw).map_err(|reason| Error::UnsafeEntry {
                path: display.clone(),
                entry: String::from_utf8_lossy(&raw).into_owned(),
                reason,
            })?;
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let name = checked.normalized;
        let size = entry.size();
        if let Some((root, digest)) = blob_path(&name) {
            let blob = Blob {
                digest: &digest,
                size,
                entry: &name,
                path,
            };
            let read = if size <= limits.max_document_bytes {
                read_small_blob(&mut entry, &blob, stage)
            } else if size <= expansion_cap {
                read_large_blob(&mut entry, &blob, stage)
            } else {
                // An entry larger than the bundle may expand to can never
                // be read whole: it is not set aside (a bomb would
                // otherwise be uploaded into the stage up to the cap
                // before it fails).
                read_large_blob(&mut entry, &blob, &mut NoStage)
            }
            .map_err(|e| e.at_item(&name))?;
            let root_scan = scan.roots.entry(root).or_default();
            root_scan.blobs.insert(digest.clone(), size);
            match read {
                BlobRead::Proven | BlobRead::HeldByTarget => {}
                BlobRead::Document(document) => {
                    retained += document.len() as u64;
                    if retained > limits.max_documents_total_bytes {
                        return Err(Error::DocumentBudgetExceeded {
                            path: display,
                            limit: limits.max_documents_total_bytes,
                        });
                    }
                    root_scan.documents.insert(digest, document);
                }
                BlobRead::InMemory(bytes) => {
                    root_scan.in_memory.insert(digest, bytes);
                }
            }
        } else if let Some(root) = layout_file(&name, "index.json") {
            let root = root.to_owned();
            let bytes = read_small(&mut entry, size, limits.max_document_bytes, path, &name)?;
            scan.roots.entry(root).or_default().index_json = Some(bytes);
        } else if let Some(root) = layout_file(&name, "oci-layout") {
            scan.roots
                .entry(root.to_owned())
                .or_default()
                .has_oci_layout = true;
        } else {
            let file = if size <= limits.max_document_bytes {
                // Read whole first: the stage may want it kept for the push.
                let mut bytes = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|source| corrupt(path, source))?;
                let mut file = peek::scan_file(
                    &mut bytes.as_slice(),
                    name.clone(),
                    size,
                    limits,
                    &mut retained,
                    path,
                )
                .map_err(|e| e.at_item(&name))?;
                let whole = file.whole().cloned();
                // What the index keeps anyway (JSON and YAML) is sent from
                // memory whatever the stage says.
                if whole.is_some() || stage.leave_in_memory(&bytes, false) {
                    file.kept = Some(whole.unwrap_or_else(|| Bytes::from(bytes)));
                } else {
                    stage_whole_file(stage, &file, &bytes, path)?;
                }
                file
            } else {
                // A file larger than the bundle may expand to is not set
                // aside, as with blobs.
                let staging = size <= expansion_cap
                    && stage
                        .begin_unnamed(&name, size)
                        .map_err(|e| file_staged(path, &name, e))?;
                let mut tee = StageTee {
                    inner: &mut entry,
                    stage: staging.then_some(&mut *stage),
                    failure: None,
                };
                let scanned =
                    peek::scan_file(&mut tee, name.clone(), size, limits, &mut retained, path);
                if let Some(source) = tee.failure.take() {
                    return Err(file_staged(path, &name, source));
                }
                let file = scanned.map_err(|e| e.at_item(&name))?;
                if staging {
                    stage
                        .keep_as(&file.file.digest)
                        .map_err(|e| file_staged(path, &name, e))?;
                }
                file
            };
            scan.others.push(file);
        }
    }
    // Without a hash (`Verify`), the signature check hashed every byte.
    let actual = archive::finish(archive, path)?.unwrap_or_default();
    scan.sha256 = match expected {
        Some((sha256, binding)) => {
            let (algorithm, bound) = match binding {
                Binding::Sha256(hex) => ("sha256", hex),
                Binding::Blake3(hex) => ("blake3", hex),
            };
            if actual != bound {
                return Err(Error::ChangedAfterVerification {
                    path: display,
                    actual: format!("{algorithm}:{actual}"),
                });
            }
            sha256.to_owned()
        }
        None => actual,
    };
    Ok(scan)
}

/// Hands a file outside the layout that was read whole, and that the stage
/// did not leave in memory, to the stage under the digest it hashed to.
fn stage_whole_file(
    stage: &mut dyn BlobStage,
    scanned: &ScannedFile,
    bytes: &[u8],
    path: &Path,
) -> Result<()> {
    let file = &scanned.file;
    let staged = |e| file_staged(path, &file.path, e);
    if stage.begin_unnamed(&file.path, file.size).map_err(staged)? {
        stage.write(bytes).map_err(staged)?;
        stage.keep_as(&file.digest).map_err(staged)?;
    }
    Ok(())
}

fn file_staged(path: &Path, entry: &str, source: std::io::Error) -> Error {
    Error::Stage {
        path: path.display().to_string(),
        blob: format!("of tar entry {entry}"),
        source,
    }
}

/// Hands every byte read from a file outside the layout to the stage as it
/// passes, below the hash that will name it. A stage that fails to take
/// bytes fails the read, and its error is kept apart from the bundle's own
/// read errors.
struct StageTee<'a, R> {
    inner: R,
    stage: Option<&'a mut dyn BlobStage>,
    failure: Option<std::io::Error>,
}

impl<R: Read> Read for StageTee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(stage) = self.stage.as_mut()
            && n > 0
            && let Err(error) = stage.write(&buf[..n])
        {
            let message = error.to_string();
            self.failure = Some(error);
            self.stage = None;
            return Err(std::io::Error::other(message));
        }
        Ok(n)
    }
}

/// What the index pass made of one blob's bytes, which hash to its digest.
enum BlobRead {
    /// Handed to the stage, or only read.
    Proven,
    /// A small blob that looks like JSON (it may turn out to be a manifest
    /// once `index.json` is read), kept in memory.
    Document(Bytes),
    /// A small blob the stage left to the index
    /// ([`BlobStage::leave_in_memory`]), kept in memory.
    InMemory(Bytes),
    /// The target holds the blob already ([`BlobStage::held`]): its bytes
    /// were only read past, neither hashed nor set aside, since
    /// what the target holds under the digest is what any push would use.
    HeldByTarget,
}

/// Whether a small blob looks like a JSON document (its first character
/// that is not white space is `{`): the index pass keeps those in memory, as
/// they may turn out to be manifests or configs it needs to read.
fn looks_like_json(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// The blob entry being read.
struct Blob<'a> {
    digest: &'a Digest,
    size: u64,
    /// Its name in the tar.
    entry: &'a str,
    /// The bundle.
    path: &'a Path,
}

impl Blob<'_> {
    fn staged(&self, source: std::io::Error) -> Error {
        Error::Stage {
            path: self.path.display().to_string(),
            blob: self.digest.to_string(),
            source,
        }
    }

    fn check(&self, actual: Digest) -> Result<()> {
        if actual == *self.digest {
            return Ok(());
        }
        Err(Error::BlobDigestMismatch {
            path: self.path.display().to_string(),
            entry: self.entry.to_owned(),
            actual,
        })
    }
}

/// Reads a blob of at most a document's size whole and proves it; only then
/// is it kept (a JSON document, or a blob the stage leaves in memory) or
/// handed to the stage in one piece.
fn read_small_blob<S: BlobStage + ?Sized>(
    entry: &mut impl Read,
    blob: &Blob<'_>,
    stage: &mut S,
) -> Result<BlobRead> {
    let mut bytes = Vec::with_capacity(blob.size as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|source| corrupt(blob.path, source))?;
    let mut hasher = Hasher::new(blob.digest.algorithm());
    hasher.update(&bytes);
    blob.check(hasher.finish())?;
    let looks_like_json = looks_like_json(&bytes);
    let left = stage.leave_in_memory(&bytes, looks_like_json);
    if !left
        && stage
            .begin(blob.digest, blob.size)
            .map_err(|e| blob.staged(e))?
    {
        stage.write(&bytes).map_err(|e| blob.staged(e))?;
        stage.keep().map_err(|e| blob.staged(e))?;
    }
    Ok(match (looks_like_json, left) {
        (true, _) => BlobRead::Document(Bytes::from(bytes)),
        (false, true) => BlobRead::InMemory(Bytes::from(bytes)),
        (false, false) => BlobRead::Proven,
    })
}

/// Hashes a blob larger than a document as it hands its bytes to `stage`,
/// then proves it; only reads past it when the stage finds the target holds
/// it.
fn read_large_blob<S: BlobStage + ?Sized>(
    entry: &mut impl Read,
    blob: &Blob<'_>,
    stage: &mut S,
) -> Result<BlobRead> {
    let staging = stage
        .begin(blob.digest, blob.size)
        .map_err(|e| blob.staged(e))?;
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    if stage.held() {
        // Read past in the same large pieces: zstd decodes them in fewer calls.
        while entry
            .read(&mut buffer)
            .map_err(|source| corrupt(blob.path, source))?
            > 0
        {}
        return Ok(BlobRead::HeldByTarget);
    }
    let mut hasher = Hasher::new(blob.digest.algorithm());
    loop {
        let n = entry
            .read(&mut buffer)
            .map_err(|source| corrupt(blob.path, source))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        if staging {
            stage.write(&buffer[..n]).map_err(|e| blob.staged(e))?;
        }
    }
    blob.check(hasher.finish())?;
    if staging {
        stage.keep().map_err(|e| blob.staged(e))?;
    }
    Ok(BlobRead::Proven)
}

fn read_small(
    entry: &mut impl Read,
    size: u64,
    limit: u64,
    path: &Path,
    name: &str,
) -> Result<Bytes> {
    if size > limit {
        return Err(item_over_limit(
            path,
            name,
            Exceeded {
                limit: Limit::DocumentBytes,
                value: size,
                at_least: false,
                max: limit,
            },
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|source| corrupt(path, source))?;
    Ok(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn blob_paths_at_the_root_and_one_level_down_are_recognised() {
        let (root, digest) = blob_path(&format!("blobs/sha256/{HEX}")).expect("root blob");
        assert_eq!(root, "");
        assert_eq!(digest.hex(), HEX);
        let (root, _) = blob_path(&format!("images/blobs/sha256/{HEX}")).expect("zarf blob");
        assert_eq!(root, "images");
        assert!(blob_path(&format!("a/b/blobs/sha256/{HEX}")).is_none());
        assert!(blob_path("blobs/sha256/not-hex").is_none());
    }

    #[test]
    fn layout_files_are_found_at_the_root_or_one_level_down() {
        assert_eq!(layout_file("index.json", "index.json"), Some(""));
        assert_eq!(
            layout_file("images/index.json", "index.json"),
            Some("images")
        );
        assert_eq!(layout_file("a/b/index.json", "index.json"), None);
        assert_eq!(layout_file("packs/x.json", "index.json"), None);
    }
}
