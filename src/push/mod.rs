//! Write a [`Plan`] into its target: blobs first, then manifests as their
//! original bytes, children before the indexes that list them, tags last, so
//! that a tag never points at something incomplete.
//!
//! Depends on [`crate::plan`] (what to write) and [`crate::read`] (to stream
//! blob contents from the bundle).
//!
//! Order of work:
//! 1. ask the target which blobs each repository already has (in parallel);
//! 2. mount blobs present in another repository of the target;
//! 3. stream the rest from the bundle in one pass ([`transfer`]), uploading
//!    each blob once and mounting it into the other repositories needing it
//!    ([`upload`]: chunked uploads resume from the offset the registry
//!    acknowledges, and a refused upload mode falls back to the other one);
//!    blobs whose mount was declined, or whose upload must restart in the
//!    other mode, are streamed again in a further pass;
//! 4. push manifests and tags, images in parallel, in two waves: first every
//!    image that refers to nothing, then the referrers (manifests with a
//!    `subject`, and images tagged by the tag scheme of a subject, such as
//!    cosign's `sha256-<hex>.sig`), so that no link is set before the
//!    manifest it points at exists in the repository;
//! 5. list the referrers in the referrers index of their subject
//!    ([`referrers`]), for registries without the referrers API.

pub mod catalog;
mod journal;
mod layout;
pub mod referrers;
pub mod registry;
pub mod repositories;
mod stage;
mod transfer;
mod upload;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::FailureClass;
use crate::digest::Digest;
use crate::plan::{Plan, PlannedImage, Target};
use crate::progress::Progress;

pub use journal::{RESUMABLE_BLOB_BYTES, SharedJournal, UploadJournal, UploadKey, UploadRecord};
pub use layout::LayoutStage;
use layout::LayoutWriter;
use registry::{RegistryClient, RegistryConfig};
pub use stage::{RegistryStage, Staging};
use transfer::{BlobChunks, Delivery, Fanout, Left, Leftover};
pub use upload::{ModeSwitch, Sent};

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Blobs in flight at once. Sixteen keeps a 1 Gbit/s link busy with 20 ms of
/// latency (a cold import of 900 small blobs: 5.1 s at 16, 7.9 s at 8) and
/// is no slower on loopback, while staying far from registry rate limits;
/// the memory they may buffer is bounded separately by
/// [`DEFAULT_BUFFER_BYTES`].
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Small requests (blob `HEAD`s, mounts, tag checks, manifest `PUT`s) in
/// flight per blob in flight. They buffer nothing, and with latency they are
/// most of an import's round trips.
pub const REQUESTS_PER_BLOB: usize = 4;

/// Memory all uploads of one import may hold in chunks read from the bundle
/// and not yet sent. 48 MiB is six 8 MiB chunks: enough for a large blob to
/// be read while the one before it is sent. With an 8 MiB zstd window (the
/// default levels) a whole import stays under 100 MiB resident; a bundle's
/// window and its JSON documents come on top (docs/PERFORMANCE.md).
pub const DEFAULT_BUFFER_BYTES: usize = 48 << 20;

/// Bytes per upload request. Reads from zstd/tar come ~128 KiB at a time; one
/// request per read is ten times slower than grouping them into
/// multi-megabyte chunks.
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;

/// Passes over the bundle at most: the first, one for blobs whose upload
/// restarts in the other mode (their stream was consumed by the refused
/// attempt), and one for mounts the registry declined after that upload.
const MAX_STREAM_PASSES: usize = 3;

/// How blobs are sent to a registry: the mode each import starts in. Either
/// mode falls back to the other for the rest of the import when the registry
/// refuses it (see [`ModeSwitch`]).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum UploadMode {
    /// `POST`, then one `PATCH` per chunk, then `PUT ?digest=` (the default:
    /// bounded requests that proxies with body limits accept, resumable from
    /// the offset the registry acknowledges). Falls back to monolithic when
    /// the registry refuses the first `PATCH` (405, 404, 400, 501, or a
    /// `Content-Range` complaint).
    #[default]
    #[value(help = "POST, PATCH per chunk, PUT.")]
    Chunked,
    /// `POST`, then the whole blob in one streaming `PUT ?digest=` (for
    /// registries that break chunked uploads, such as ECR). Falls back to
    /// chunked when the `PUT` of a blob larger than a chunk is answered 413
    /// (a proxy's body limit).
    #[value(help = "POST, one streaming PUT.")]
    Monolithic,
}

impl std::fmt::Display for UploadMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UploadMode::Chunked => "chunked",
            UploadMode::Monolithic => "monolithic",
        })
    }
}

/// The repository, under the target's prefix, where an import into a
/// registry sends blobs while it indexes the bundle ([`stage`]).
pub const DEFAULT_STAGING_REPOSITORY: &str = "airlock-staging";

/// How a push runs.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Blobs transferred at once (default [`DEFAULT_CONCURRENCY`]); small
    /// requests run [`REQUESTS_PER_BLOB`] times as many at once.
    pub concurrency: usize,
    /// Bytes of chunks all uploads may hold at once (default
    /// [`DEFAULT_BUFFER_BYTES`]; never less than one chunk).
    pub buffer_bytes: usize,
    /// Bytes per upload request (default [`DEFAULT_CHUNK_BYTES`]).
    pub chunk_bytes: usize,
    /// Chunked or monolithic uploads (default chunked).
    pub upload_mode: UploadMode,
    /// The repository under the target's prefix where blobs are sent while
    /// the bundle is indexed, so the bundle is read twice, not three times
    /// (default [`DEFAULT_STAGING_REPOSITORY`]; `None`: blobs are streamed
    /// from the bundle again after the index pass).
    pub staging_repository: Option<String>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            concurrency: DEFAULT_CONCURRENCY,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            upload_mode: UploadMode::default(),
            staging_repository: Some(DEFAULT_STAGING_REPOSITORY.to_owned()),
        }
    }
}

/// Why writing to the target failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be sent or its answer not received.
    #[error("{method} {url} failed: {source}")]
    Http {
        /// HTTP method.
        method: String,
        /// URL without query.
        url: String,
        /// The client's error.
        #[source]
        source: Box<reqwest::Error>,
    },
    /// The registry answered with an unexpected status.
    #[error("{method} {url} answered {status}: {message}")]
    Status {
        /// HTTP method.
        method: String,
        /// URL without query.
        url: String,
        /// The status code.
        status: u16,
        /// The registry's error message.
        message: String,
    },
    /// The registry refused the credentials, or needs some.
    #[error("registry {host} refused access: {detail}")]
    Unauthorized {
        /// The registry.
        host: String,
        /// What it said.
        detail: String,
    },
    /// The registry (or its token service) refused the credentials airlock
    /// sent: a wrong user name or password. Trying again with the same ones
    /// cannot help and may lock the account.
    #[error("registry {host} refused access with these credentials: {detail}")]
    CredentialsRefused {
        /// The registry.
        host: String,
        /// What it said.
        detail: String,
    },
    /// The registry broke the distribution protocol.
    #[error("registry protocol error at {url}: {reason}")]
    Protocol {
        /// Where.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// A URL could not be formed.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The text.
        url: String,
        /// Why.
        reason: String,
    },
    /// A CA certificate could not be loaded or the TLS client not built.
    #[error("TLS setup failed ({path}): {reason}")]
    Tls {
        /// The certificate file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake with the registry failed in a way retrying cannot
    /// mend: its certificate is not trusted or names another host, or it
    /// refused airlock's client certificate (or the lack of one).
    #[error("TLS handshake with {url} failed: {reason}; {hint}")]
    TlsHandshake {
        /// URL without query.
        url: String,
        /// What the TLS library said.
        reason: String,
        /// What the operator can do about it.
        hint: &'static str,
    },
    /// The Docker `config.json` could not be used.
    #[error("auth file {path}: {reason}")]
    AuthFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Writing the OCI layout directory failed.
    #[error("cannot write {path}: {source}")]
    Layout {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The stream of a blob ended before its size.
    #[error("blob {blob} ended after {received} of its {size} bytes")]
    ShortBlob {
        /// The blob.
        blob: BlobLabel,
        /// Its size.
        size: u64,
        /// Bytes that came.
        received: u64,
    },
    /// Bytes streamed for a blob do not match its digest.
    #[error("blob {expected} changed while it was read: its bytes hash to {actual}")]
    DigestMismatch {
        /// The digest the plan promised.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// Reading the bundle failed during the streaming pass.
    #[error(transparent)]
    Read(#[from] crate::read::Error),
    /// The registry still lacks a blob after it accepted the upload.
    #[error("registry {host} does not hold blob {digest} in {repository} after upload")]
    BlobMissingAfterUpload {
        /// The registry.
        host: String,
        /// The repository.
        repository: String,
        /// The blob.
        digest: Digest,
    },
    /// A response body sent nothing for the idle timeout.
    #[error("{url} sent nothing for {idle:?}; the transfer counts as stalled")]
    Stalled {
        /// URL without query.
        url: String,
        /// The idle timeout.
        idle: std::time::Duration,
    },
    /// A worker task panicked or was aborted.
    #[error("internal task failed: {0}")]
    Task(String),
    /// The transfer was stopped because another part of it failed.
    #[error("transfer cancelled")]
    Cancelled,
    /// An upload was interrupted and the registry no longer holds its
    /// session (or holds bytes that do not match what was sent), so it cannot
    /// continue mid-stream. Transient: the next attempt starts the blob over.
    #[error(
        "registry {host} lost the upload session of blob {blob} in {repository} at byte {offset}; the blob starts over at the next attempt"
    )]
    UploadSessionLost {
        /// The registry.
        host: String,
        /// The repository.
        repository: String,
        /// The blob.
        blob: BlobLabel,
        /// Where the interrupted request started.
        offset: u64,
    },
    /// Blobs were still not uploaded after the last pass over the bundle.
    #[error("{blobs} blobs were still not uploaded after {passes} passes over the bundle")]
    PassesExhausted {
        /// Blobs left.
        blobs: usize,
        /// Passes made.
        passes: usize,
    },
}

impl Error {
    /// Which class of failure this is (exit code, retry decisions).
    pub fn class(&self) -> FailureClass {
        match self {
            Error::Tls { .. } | Error::AuthFile { .. } | Error::InvalidUrl { .. } => {
                FailureClass::Config
            }
            Error::DigestMismatch { .. } | Error::ShortBlob { .. } => FailureClass::Integrity,
            Error::Read(e) => e.class(),
            _ => FailureClass::Transport,
        }
    }
}

/// What a blob is called in logs and errors: its digest, or, for a file
/// of the bundle the index pass sends while it reads it (before its digest
/// is known), the file's tar entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLabel {
    /// A blob known by its digest.
    Digest(Digest),
    /// A file known by its tar entry.
    Entry(String),
}

impl std::fmt::Display for BlobLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobLabel::Digest(digest) => digest.fmt(f),
            BlobLabel::Entry(entry) => write!(f, "of tar entry {entry}"),
        }
    }
}

/// Where blobs and manifests are written.
pub enum Destination {
    /// An OCI distribution registry.
    Registry {
        /// The client.
        client: Arc<RegistryClient>,
        /// Chunked or monolithic uploads, switched once if refused.
        modes: Arc<ModeSwitch>,
        /// Bytes per chunk.
        chunk_bytes: usize,
        /// Where sessions of large uploads are recorded, if anywhere.
        journal: Option<SharedJournal>,
        /// Where the index pass sends blobs, and how many at once.
        staging: Option<StagingPlace>,
        /// The sessions the index pass left open, once adopted.
        staged: std::sync::Mutex<Option<Arc<Staging>>>,
    },
    /// An OCI image layout directory.
    Layout(Arc<LayoutWriter>),
}

/// Where and how the index pass of an import into a registry sends blobs.
#[derive(Debug, Clone)]
pub struct StagingPlace {
    repository: String,
    concurrency: usize,
    buffer_bytes: usize,
}

/// Where the index pass sets blobs aside: the layout's own blob directory,
/// or upload sessions of the registry's staging repository.
pub enum Stage {
    /// Temporary files beside their place in the layout.
    Layout(Box<LayoutStage>),
    /// Open upload sessions.
    Registry(Box<RegistryStage>),
}

impl crate::read::BlobStage for Stage {
    fn begin(&mut self, digest: &Digest, size: u64) -> std::io::Result<bool> {
        match self {
            Stage::Layout(stage) => stage.begin(digest, size),
            Stage::Registry(stage) => stage.begin(digest, size),
        }
    }
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stage::Layout(stage) => stage.write(bytes),
            Stage::Registry(stage) => stage.write(bytes),
        }
    }
    fn keep(&mut self) -> std::io::Result<()> {
        match self {
            Stage::Layout(stage) => stage.keep(),
            Stage::Registry(stage) => stage.keep(),
        }
    }
    fn held(&self) -> bool {
        match self {
            Stage::Layout(stage) => stage.held(),
            Stage::Registry(stage) => stage.held(),
        }
    }
    fn leave_in_memory(&mut self, bytes: &[u8], kept_anyway: bool) -> bool {
        match self {
            Stage::Layout(stage) => stage.leave_in_memory(bytes, kept_anyway),
            Stage::Registry(stage) => stage.leave_in_memory(bytes, kept_anyway),
        }
    }
    fn begin_unnamed(&mut self, entry: &str, size: u64) -> std::io::Result<bool> {
        match self {
            Stage::Layout(stage) => stage.begin_unnamed(entry, size),
            Stage::Registry(stage) => stage.begin_unnamed(entry, size),
        }
    }
    fn keep_as(&mut self, digest: &Digest) -> std::io::Result<()> {
        match self {
            Stage::Layout(stage) => stage.keep_as(digest),
            Stage::Registry(stage) => stage.keep_as(digest),
        }
    }
}

impl Destination {
    /// Connects to (or creates) the target. `journal` records where uploads
    /// of large blobs stand so a later process can continue them (`None`:
    /// interrupted blobs start over).
    pub fn open(
        target: &Target,
        registry: RegistryConfig,
        options: &PushOptions,
        journal: Option<SharedJournal>,
    ) -> Result<Self> {
        match target {
            Target::Registry { prefix, .. } => Ok(Destination::Registry {
                client: Arc::new(RegistryClient::new(registry)?),
                modes: Arc::new(ModeSwitch::new(options.upload_mode)),
                chunk_bytes: options.chunk_bytes.max(1),
                journal,
                // Holding a blob in a session takes chunked uploads, which a
                // registry run in monolithic mode is known to break.
                staging: options
                    .staging_repository
                    .as_deref()
                    .filter(|name| !name.is_empty() && options.upload_mode == UploadMode::Chunked)
                    .map(|name| StagingPlace {
                        repository: if prefix.is_empty() {
                            name.to_owned()
                        } else {
                            format!("{prefix}/{name}")
                        },
                        concurrency: options.concurrency.max(1),
                        buffer_bytes: options.buffer_bytes,
                    }),
                staged: std::sync::Mutex::new(None),
            }),
            Target::Layout { dir } => Ok(Destination::Layout(Arc::new(LayoutWriter::open(dir)?))),
        }
    }

    /// Where the index pass can set blobs aside so that pushing them needs
    /// no further read of the bundle: a layout's blob directory, or upload
    /// sessions of a registry's staging repository (`None` when staging is
    /// off). Small JSON documents (up to `document_bytes`) stay with the
    /// index, which keeps them in memory. Call from within the runtime.
    pub fn stage(&self, document_bytes: u64, progress: &Progress) -> Option<Stage> {
        match self {
            Destination::Layout(layout) => Some(Stage::Layout(Box::new(LayoutStage::new(
                Arc::clone(layout),
            )))),
            Destination::Registry {
                client,
                modes,
                chunk_bytes,
                journal,
                staging: Some(place),
                staged,
                ..
            } => {
                let staging = Staging::new(
                    Arc::clone(client),
                    Arc::clone(modes),
                    journal.clone(),
                    place.repository.clone(),
                    *chunk_bytes,
                    progress.clone(),
                );
                // Known to the destination from the start, so that sessions
                // of an index pass that fails are cancelled too.
                *staged
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(Arc::clone(&staging));
                Some(Stage::Registry(Box::new(RegistryStage::new(
                    staging,
                    place.concurrency,
                    place.buffer_bytes,
                    document_bytes,
                ))))
            }
            Destination::Registry { staging: None, .. } => None,
        }
    }

    /// Takes over the blobs a [`Destination::stage`] set aside, once the
    /// index pass proved the bundle whole; [`push`] commits those the plan
    /// needs and gives up the rest.
    pub fn adopt(&self, stage: Stage) {
        // A registry's sessions are the destination's from the start.
        if let (Destination::Layout(layout), Stage::Layout(stage)) = (self, stage) {
            layout.adopt(*stage);
        }
    }

    /// Cancels every upload session the index pass left open and nothing
    /// committed (all of them when the import failed). Idempotent.
    pub async fn release_staged(&self) {
        if let Some(staging) = self.staging() {
            staging.release().await;
        }
    }

    fn staging(&self) -> Option<Arc<Staging>> {
        match self {
            Destination::Registry { staged, .. } => staged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            Destination::Layout(_) => None,
        }
    }

    /// Commits the blobs of `pending` set aside during the index pass and
    /// returns them with their sizes; they need no stream pass.
    fn commit_staged(
        &self,
        pending: &HashMap<Digest, Delivery>,
        plan: &Plan,
    ) -> Result<Vec<(Digest, u64)>> {
        let Destination::Layout(layout) = self else {
            return Ok(Vec::new());
        };
        let mut committed = Vec::new();
        for digest in pending.keys() {
            if layout.commit_staged(digest)? {
                committed.push((digest.clone(), plan.index().blob_size(digest).unwrap_or(0)));
            }
        }
        Ok(committed)
    }

    async fn blob_size(&self, repository: &str, digest: &Digest) -> Result<Option<u64>> {
        match self {
            Destination::Registry { client, .. } => client.blob_size(repository, digest).await,
            Destination::Layout(layout) => Ok(layout.blob_size(digest)),
        }
    }

    /// Whether the target already holds the image with source reference
    /// `source` at its mirror location: a manifest `HEAD` on a registry, an
    /// `index.json` entry named by it in a layout.
    pub async fn holds_image(
        &self,
        target: &Target,
        source: &oci_client::Reference,
    ) -> Result<bool> {
        let Ok(placement) = crate::plan::mirror_placement(target, source) else {
            return Ok(false);
        };
        match self {
            Destination::Registry { client, .. } => {
                let reference = placement
                    .tag
                    .clone()
                    .or_else(|| source.digest().map(str::to_owned));
                let Some(reference) = reference else {
                    return Ok(false);
                };
                Ok(client
                    .manifest_digest(&placement.repository, &reference)
                    .await?
                    .is_some())
            }
            Destination::Layout(layout) => {
                tokio::task::block_in_place(|| layout.holds_name(&placement.target_ref))
            }
        }
    }

    /// The digest `image`'s tag points at in the target now, if the tag
    /// exists (`None` too for an image pushed by digest only).
    pub async fn tag_digest(&self, image: &crate::plan::PlannedImage) -> Result<Option<Digest>> {
        let Some(tag) = &image.placement.tag else {
            return Ok(None);
        };
        match self {
            Destination::Registry { client, .. } => Ok(client
                .manifest_digest(&image.placement.repository, tag)
                .await?),
            Destination::Layout(layout) => {
                tokio::task::block_in_place(|| layout.digest_of_name(&image.placement.target_ref))
            }
        }
    }

    /// The upload mode uploads start in now (`None` for a layout).
    pub fn upload_mode(&self) -> Option<UploadMode> {
        match self {
            Destination::Registry { modes, .. } => Some(modes.current()),
            Destination::Layout(_) => None,
        }
    }

    /// A blob is present: any journaled session of it is obsolete (left by
    /// a process that stopped between the final `PUT` and removing it).
    fn forget_upload(&self, repository: &str, digest: &Digest, size: u64) {
        if let Destination::Registry {
            client,
            journal: Some(journal),
            ..
        } = self
            && size >= RESUMABLE_BLOB_BYTES
        {
            let key = UploadKey {
                registry: client.host().to_owned(),
                repository: repository.to_owned(),
                digest: digest.clone(),
            };
            if let Err(error) = tokio::task::block_in_place(|| journal.forget(&key)) {
                tracing::warn!(%digest, %repository, %error, "cannot remove the upload record");
            }
        }
    }

    async fn mount(&self, repository: &str, from: &str, digest: &Digest) -> Result<bool> {
        match self {
            Destination::Registry { client, .. } => client.mount(repository, from, digest).await,
            // A layout has one blob store: present once is present everywhere.
            Destination::Layout(_) => Ok(true),
        }
    }

    async fn upload(
        &self,
        repository: &str,
        digest: &Digest,
        blob: &mut BlobChunks,
    ) -> Result<Sent> {
        match self {
            Destination::Registry {
                client,
                modes,
                chunk_bytes,
                journal,
                ..
            } => {
                let upload = upload::RegistryUpload {
                    client,
                    modes,
                    chunk_bytes: *chunk_bytes,
                    journal: journal.as_ref(),
                };
                upload.run(repository, digest, blob).await
            }
            Destination::Layout(layout) => {
                let mut write = layout.begin_blob(digest)?;
                while let Some(chunk) = blob.next().await {
                    tokio::task::block_in_place(|| write.write(&chunk))?;
                }
                blob.verify()?;
                tokio::task::block_in_place(|| write.commit())?;
                Ok(Sent::Done { bytes: blob.size() })
            }
        }
    }

    async fn manifest_digest(&self, repository: &str, reference: &str) -> Result<Option<Digest>> {
        match self {
            Destination::Registry { client, .. } => {
                client.manifest_digest(repository, reference).await
            }
            // Writing an entry to a layout is cheap and idempotent.
            Destination::Layout(_) => Ok(None),
        }
    }

    async fn put_manifest(
        &self,
        image: &PlannedImage,
        digest: &Digest,
        media_type: &str,
        bytes: Bytes,
        top: bool,
    ) -> Result<()> {
        let repository = &image.placement.repository;
        match self {
            Destination::Registry { client, .. } => {
                let reference = match (&image.placement.tag, top) {
                    (Some(tag), true) => tag.clone(),
                    _ => digest.to_string(),
                };
                client
                    .put_manifest(repository, &reference, media_type, bytes)
                    .await
            }
            // On the blocking pool, so the manifests of many images are
            // written (and synced) in parallel rather than one by one.
            Destination::Layout(layout) => {
                let layout = Arc::clone(layout);
                let name = (top && image.placement.tag.is_some())
                    .then(|| image.placement.target_ref.clone());
                let (digest, media_type) = (digest.clone(), media_type.to_owned());
                tokio::task::spawn_blocking(move || {
                    if top {
                        layout.put_manifest(&digest, &media_type, &bytes, name.as_deref())
                    } else {
                        layout.put_blob(&digest, &bytes)
                    }
                })
                .await
                .map_err(|e| Error::Task(e.to_string()))?
            }
        }
    }

    fn finish(&self) -> Result<()> {
        match self {
            Destination::Registry { .. } => Ok(()),
            Destination::Layout(layout) => layout.finish(),
        }
    }
}

/// Counters of what a push did, shared by concurrent tasks. Each blob event
/// is also recorded in the import's [`Progress`] as it happens, so the
/// daemon's metrics move during a long import, not only at its end.
#[derive(Debug, Clone)]
pub struct Tally {
    inner: Arc<TallyCounters>,
    progress: Progress,
}

#[derive(Debug, Default)]
struct TallyCounters {
    blobs_uploaded: AtomicU64,
    bytes_uploaded: AtomicU64,
    blobs_mounted: AtomicU64,
    blobs_present: AtomicU64,
    manifests_pushed: AtomicU64,
    manifests_present: AtomicU64,
}

impl Tally {
    fn reporting_to(progress: &Progress) -> Self {
        Tally {
            inner: Arc::default(),
            progress: progress.clone(),
        }
    }
    fn uploaded(&self, bytes: u64) {
        self.inner.blobs_uploaded.fetch_add(1, Ordering::Relaxed);
        self.inner
            .bytes_uploaded
            .fetch_add(bytes, Ordering::Relaxed);
        self.progress.add_blob_uploaded(bytes);
    }
    fn mounted(&self) {
        self.inner.blobs_mounted.fetch_add(1, Ordering::Relaxed);
        self.progress.add_blob_mounted();
    }
    fn present(&self) {
        self.inner.blobs_present.fetch_add(1, Ordering::Relaxed);
        self.progress.add_blob_present();
    }
    fn manifest_pushed(&self) {
        self.inner.manifests_pushed.fetch_add(1, Ordering::Relaxed);
    }
    fn manifest_present(&self) {
        self.inner.manifests_present.fetch_add(1, Ordering::Relaxed);
    }
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What a push wrote, for reports, receipts and metrics.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    /// The images written, with where they landed.
    pub images: Vec<PushedImage>,
    /// Blob uploads (a blob uploaded to two repositories counts twice).
    pub blobs_uploaded: u64,
    /// Bytes sent in blob uploads: a blob resumed from an earlier attempt
    /// counts only the bytes this import sent.
    pub bytes_uploaded: u64,
    /// Blobs linked from another repository instead of uploaded.
    pub blobs_mounted: u64,
    /// Blobs the target already held.
    pub blobs_present: u64,
    /// Manifests written.
    pub manifests_pushed: u64,
    /// Tags that already pointed at the right manifest.
    pub manifests_present: u64,
    /// Referrers indexes (`sha256-<subject hex>` tags) written or extended.
    pub referrers_indexes: u64,
    /// Wall-clock time of the push.
    #[serde(with = "seconds")]
    pub duration: Duration,
}

/// One image as written.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushedImage {
    /// The source reference.
    pub source: String,
    /// The target reference.
    pub target: String,
    /// The manifest digest the target now serves.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// For an index rewritten to the selected platforms: the digest of the
    /// index in the bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten_from: Option<Digest>,
}

mod seconds {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Writes everything in `plan` to `destination`.
pub async fn push(
    plan: &Plan,
    destination: Arc<Destination>,
    options: &PushOptions,
    progress: &Progress,
) -> Result<PushReport> {
    let started = Instant::now();
    let tally = Tally::reporting_to(progress);
    let requests = options.concurrency.max(1) * REQUESTS_PER_BLOB;

    // 0. Which images are already complete? A tag is only ever set once
    //    everything it references is present, so an image whose tag (or, for
    //    referrers, digest) already resolves to the right manifest needs
    //    neither blob checks nor manifest pushes.
    progress.set_stage(crate::progress::Stage::Checking);
    let complete = complete_images(plan, &destination, requests).await?;

    // 1. What does each repository already hold?
    let by_repository = plan.blobs_by_repository_except(&complete);
    let checks: Vec<(String, Digest, u64)> = by_repository
        .iter()
        .flat_map(|(repo, blobs)| {
            blobs
                .iter()
                .map(move |(d, s)| (repo.clone(), d.clone(), *s))
        })
        .collect();
    let presence: Vec<(String, Digest, bool)> = futures::stream::iter(checks)
        .map(|(repo, digest, size)| {
            let destination = Arc::clone(&destination);
            async move {
                let held = destination.blob_size(&repo, &digest).await?;
                Ok::<_, Error>((repo, digest, held == Some(size)))
            }
        })
        .buffer_unordered(requests)
        .try_collect()
        .await?;

    let mut holders: HashMap<Digest, Vec<String>> = HashMap::new();
    let mut missing: HashMap<Digest, Vec<String>> = HashMap::new();
    for (repo, digest, held) in presence {
        if held {
            if let Some(size) = plan.index().blob_size(&digest) {
                destination.forget_upload(&repo, &digest, size);
            }
            tally.present();
            progress.add_blob_done();
            holders.entry(digest).or_default().push(repo);
        } else {
            missing.entry(digest).or_default().push(repo);
        }
    }

    // 2. Mount what another repository already holds; 3. stream the rest.
    let mut uploads: HashMap<Digest, Vec<String>> = HashMap::new();
    let mut mounts = Vec::new();
    for (digest, mut repos) in missing {
        repos.sort();
        match holders.get(&digest).and_then(|h| h.first()) {
            Some(from) => mounts.extend(
                repos
                    .into_iter()
                    .map(|repo| (repo, from.clone(), digest.clone())),
            ),
            None => {
                uploads.insert(digest, repos);
            }
        }
    }
    let mounted: Vec<(String, Digest, bool)> = futures::stream::iter(mounts)
        .map(|(repo, from, digest)| {
            let destination = Arc::clone(&destination);
            async move {
                let done = destination.mount(&repo, &from, &digest).await?;
                Ok::<_, Error>((repo, digest, done))
            }
        })
        .buffer_unordered(requests)
        .try_collect()
        .await?;
    for (repo, digest, done) in mounted {
        if done {
            tally.mounted();
            progress.add_blob_done();
        } else {
            uploads.entry(digest).or_default().push(repo);
        }
    }
    let bytes_of = |digests: &mut dyn Iterator<Item = &Digest>| -> u64 {
        digests
            .filter_map(|digest| plan.index().blob_size(digest))
            .sum()
    };
    let mut pending: HashMap<Digest, Delivery> = uploads
        .into_iter()
        .map(|(digest, repositories)| {
            let delivery = Delivery {
                repositories,
                fanout: Fanout::UploadThenMount,
            };
            (digest, delivery)
        })
        .collect();
    progress.set_bytes_to_push(bytes_of(&mut pending.keys()));
    progress.set_stage(crate::progress::Stage::Uploading);
    // Blobs the index pass set aside are renamed into place, not read again.
    let staged = tokio::task::block_in_place(|| destination.commit_staged(&pending, plan))?;
    for (digest, size) in staged {
        pending.remove(&digest);
        tally.uploaded(size);
        progress.add_pushed_bytes(size);
        progress.add_blob_done();
    }
    // Blobs the index pass holds in sessions of the staging repository are
    // committed there and mounted where they are needed, not read again.
    deliver_staged(&destination, &mut pending, &tally, progress, requests).await?;
    deliver_documents(plan, &destination, &mut pending, &tally, progress, requests).await?;
    let mut pass = 1;
    loop {
        let left = transfer::stream_uploads(plan, &destination, pending, options, progress, &tally)
            .await?;
        if left.is_empty() {
            break;
        }
        if pass >= MAX_STREAM_PASSES {
            return Err(Error::PassesExhausted {
                blobs: left.len(),
                passes: pass,
            });
        }
        let declined = left
            .values()
            .filter(|l| l.reason == Leftover::DeclinedMount)
            .count();
        if declined > 0 {
            tracing::info!(
                blobs = declined,
                "registry declined some mounts; uploading those blobs again"
            );
        }
        if left.len() > declined {
            tracing::info!(
                blobs = left.len() - declined,
                mode = %destination.upload_mode().unwrap_or_default(),
                "streaming the bundle again for blobs whose upload restarts in the other mode"
            );
        }
        // The bytes of the blobs sent again count again.
        progress.set_bytes_to_push(progress.bytes_to_push() + bytes_of(&mut left.keys()));
        pending = left
            .into_iter()
            .map(|(digest, Left { delivery, .. })| (digest, delivery))
            .collect();
        pass += 1;
    }

    // 4. Manifests and tags: images first, then what refers to them.
    progress.set_stage(crate::progress::Stage::Tagging);
    let (referrers, subjects): (Vec<&PlannedImage>, Vec<&PlannedImage>) =
        plan.images().iter().partition(|i| is_referrer(i));
    let mut pushed = Vec::new();
    for wave in [subjects, referrers] {
        let (done, todo): (Vec<&PlannedImage>, Vec<&PlannedImage>) = wave
            .into_iter()
            .partition(|image| complete.contains(&image.digest_ref()));
        for image in done {
            tally.manifest_present();
            pushed.push(pushed_image(image));
        }
        // Collected first so the stream holds plain futures, not a closure
        // (which would make the whole push future lose `Send`).
        let pushes: Vec<_> = todo
            .into_iter()
            .map(|image| push_manifests(plan, &destination, image, &tally))
            .collect();
        let results: Vec<PushedImage> = futures::stream::iter(pushes)
            .buffer_unordered(requests)
            .try_collect()
            .await?;
        pushed.extend(results);
    }
    // 5. The referrers tag scheme, once every referrer is in place.
    let referrers_indexes = referrers::update_indexes(plan, &destination).await?;
    tokio::task::block_in_place(|| destination.finish())?;
    let order: HashMap<&str, usize> = plan
        .images()
        .iter()
        .enumerate()
        .map(|(i, image)| (image.placement.target_ref.as_str(), i))
        .collect();
    pushed.sort_by_key(|p| order.get(p.target.as_str()).copied().unwrap_or(usize::MAX));

    Ok(PushReport {
        images: pushed,
        blobs_uploaded: Tally::get(&tally.inner.blobs_uploaded),
        bytes_uploaded: Tally::get(&tally.inner.bytes_uploaded),
        blobs_mounted: Tally::get(&tally.inner.blobs_mounted),
        blobs_present: Tally::get(&tally.inner.blobs_present),
        manifests_pushed: Tally::get(&tally.inner.manifests_pushed),
        manifests_present: Tally::get(&tally.inner.manifests_present),
        referrers_indexes,
        duration: started.elapsed(),
    })
}

/// Commits the blobs of `pending` that the index pass holds in upload
/// sessions of the staging repository, and mounts them (and those the
/// staging repository held already) into the repositories needing them;
/// what is delivered leaves `pending`, repositories that declined a mount
/// stay in it. The sessions of blobs not pending are cancelled.
async fn deliver_staged(
    destination: &Arc<Destination>,
    pending: &mut HashMap<Digest, Delivery>,
    tally: &Tally,
    progress: &Progress,
    requests: usize,
) -> Result<()> {
    let Some(staging) = destination.staging() else {
        return Ok(());
    };
    staging.settle().await;
    let work: Vec<(Digest, u64, stage::Staged, Vec<String>)> = pending
        .iter()
        .filter_map(|(digest, delivery)| {
            let (size, staged) = staging.take(digest)?;
            Some((digest.clone(), size, staged, delivery.repositories.clone()))
        })
        .collect();
    let delivered: Vec<(Digest, Vec<String>)> = futures::stream::iter(work)
        .map(|(digest, size, staged, repositories)| {
            let destination = Arc::clone(destination);
            let staging = Arc::clone(&staging);
            let tally = tally.clone();
            let progress = progress.clone();
            async move {
                let uploaded = match staged {
                    stage::Staged::Held(held) => match staging.commit(&digest, size, held).await {
                        Ok(bytes) => {
                            tally.uploaded(bytes);
                            true
                        }
                        Err(error) => {
                            tracing::warn!(%digest, repository = staging.repository(), %error,
                                "committing a blob sent while indexing failed; it is uploaded from the bundle");
                            return Ok::<_, Error>((digest, repositories));
                        }
                    },
                    stage::Staged::InRepository => false,
                };
                let mut declined = Vec::new();
                for (position, repository) in repositories.iter().enumerate() {
                    if destination
                        .mount(repository, staging.repository(), &digest)
                        .await?
                    {
                        // The first mount of a blob this import uploaded is
                        // that upload's delivery, not a mount of its own.
                        if !(uploaded && position == 0) {
                            tally.mounted();
                        }
                    } else {
                        declined.push(repository.clone());
                    }
                }
                // The bytes were counted as they were sent.
                if declined.is_empty() {
                    progress.add_blob_done();
                }
                Ok((digest, declined))
            }
        })
        .buffer_unordered(requests)
        .try_collect()
        .await?;
    for (digest, declined) in delivered {
        if declined.is_empty() {
            pending.remove(&digest);
        } else if let Some(delivery) = pending.get_mut(&digest) {
            tracing::info!(%digest, repositories = declined.len(), from = staging.repository(),
                "the registry declined to mount a blob sent while indexing; it is uploaded from the bundle");
            delivery.repositories = declined;
        }
    }
    staging.release().await;
    Ok(())
}

/// Sends the blobs of `pending` that the index pass kept in memory (JSON
/// documents such as image configs) from there; what is left for another
/// pass stays in `pending`.
async fn deliver_documents(
    plan: &Plan,
    destination: &Arc<Destination>,
    pending: &mut HashMap<Digest, Delivery>,
    tally: &Tally,
    progress: &Progress,
    requests: usize,
) -> Result<()> {
    let work: Vec<(Digest, Bytes, Delivery)> = pending
        .iter()
        .filter_map(|(digest, delivery)| {
            let bytes = plan.index().document(digest)?.clone();
            Some((digest.clone(), bytes, delivery.clone()))
        })
        .collect();
    let sent: Vec<(Digest, Option<Left>)> = futures::stream::iter(work)
        .map(|(digest, bytes, delivery)| {
            let destination = Arc::clone(destination);
            let progress = progress.clone();
            let tally = tally.clone();
            async move {
                transfer::upload_from_memory(
                    &destination,
                    digest,
                    bytes,
                    delivery,
                    &progress,
                    &tally,
                )
                .await
            }
        })
        .buffer_unordered(requests)
        .try_collect()
        .await?;
    for (digest, left) in sent {
        match left {
            None => {
                pending.remove(&digest);
            }
            Some(Left { delivery, .. }) => {
                pending.insert(digest, delivery);
            }
        }
    }
    Ok(())
}

/// Which images already resolve to the right manifest in the target, as
/// `(repository, tag or digest)` pairs.
async fn complete_images(
    plan: &Plan,
    destination: &Arc<Destination>,
    requests: usize,
) -> Result<HashSet<(String, String)>> {
    let checks: Vec<_> = plan
        .images()
        .iter()
        .map(|image| {
            let destination = Arc::clone(destination);
            let (repository, reference) = image.digest_ref();
            let digest = image.digest.clone();
            // The tag policy looked the tag up a moment ago.
            let known = plan
                .tag_in_target(image)
                .map(|current| current == Some(&digest));
            async move {
                let complete = match known {
                    Some(complete) => complete,
                    None => {
                        destination.manifest_digest(&repository, &reference).await? == Some(digest)
                    }
                };
                Ok::<_, Error>(complete.then_some((repository, reference)))
            }
        })
        .collect();
    let found: Vec<Option<(String, String)>> = futures::stream::iter(checks)
        .buffer_unordered(requests)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

/// Whether an image points at another one and must wait for it: it has a
/// `subject`, or a tag of a subject's tag scheme (`sha256-<hex>.sig`).
fn is_referrer(image: &PlannedImage) -> bool {
    image.subject.is_some()
        || image
            .placement
            .tag
            .as_deref()
            .is_some_and(referrers::is_subject_tag)
}

fn pushed_image(image: &PlannedImage) -> PushedImage {
    PushedImage {
        source: image.source_ref.clone(),
        target: image.placement.target_ref.clone(),
        digest: image.digest.clone(),
        media_type: image.media_type.clone(),
        rewritten_from: image.rewritten_from.clone(),
    }
}

/// Pushes one image's manifests, children first, and its tag last.
async fn push_manifests(
    plan: &Plan,
    destination: &Destination,
    image: &PlannedImage,
    tally: &Tally,
) -> Result<PushedImage> {
    let count = image.manifests.len();
    for (position, manifest) in image.manifests.iter().enumerate() {
        let bytes = plan
            .document(&manifest.digest)
            .cloned()
            .ok_or_else(|| Error::Protocol {
                url: manifest.digest.to_string(),
                reason: "manifest bytes missing from the bundle index".into(),
            })?;
        let top = position + 1 == count;
        destination
            .put_manifest(image, &manifest.digest, &manifest.media_type, bytes, top)
            .await?;
        tally.manifest_pushed();
    }
    Ok(pushed_image(image))
}
