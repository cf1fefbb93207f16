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
//!    each blob once and mounting it into the other repositories needing it;
//! 4. push manifests and tags, images in parallel, referrers after subjects.

mod layout;
pub mod registry;
mod transfer;

use std::collections::HashMap;
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

use layout::LayoutWriter;
use registry::{RegistryClient, RegistryConfig};
use transfer::{BlobChunks, Fanout};

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Blobs in flight at once. Four keeps a 1 Gbit/s link busy with 20 ms of
/// latency while staying far from registry rate limits.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Bytes per upload request. Reads from zstd/tar come ~128 KiB at a time; one
/// request per read is ten times slower than grouping them into
/// multi-megabyte chunks.
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;

/// How blobs are sent to a registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadMode {
    /// `POST`, then one `PATCH` per chunk, then `PUT ?digest=` (the default:
    /// bounded requests that proxies with body limits accept).
    #[default]
    Chunked,
    /// `POST`, then the whole blob in one streaming `PUT ?digest=` (for
    /// registries that break chunked uploads, such as ECR).
    Monolithic,
}

/// How a push runs.
#[derive(Debug, Clone, Copy)]
pub struct PushOptions {
    /// Blobs transferred at once (default [`DEFAULT_CONCURRENCY`]).
    pub concurrency: usize,
    /// Bytes per upload request (default [`DEFAULT_CHUNK_BYTES`]).
    pub chunk_bytes: usize,
    /// Chunked or monolithic uploads (default chunked).
    pub upload_mode: UploadMode,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            concurrency: DEFAULT_CONCURRENCY,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            upload_mode: UploadMode::default(),
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
    /// A worker task panicked or was aborted.
    #[error("internal task failed: {0}")]
    Task(String),
    /// The transfer was stopped because another part of it failed.
    #[error("transfer cancelled")]
    Cancelled,
}

impl Error {
    /// Which class of failure this is (exit code, retry decisions).
    pub fn class(&self) -> FailureClass {
        match self {
            Error::Tls { .. } | Error::AuthFile { .. } | Error::InvalidUrl { .. } => {
                FailureClass::Config
            }
            Error::DigestMismatch { .. } => FailureClass::Integrity,
            Error::Read(e) => e.class(),
            _ => FailureClass::Transport,
        }
    }
}

/// Where blobs and manifests are written.
pub enum Destination {
    /// An OCI distribution registry.
    Registry {
        /// The client.
        client: Box<RegistryClient>,
        /// Chunked or monolithic uploads.
        mode: UploadMode,
        /// Bytes per chunk.
        chunk_bytes: usize,
    },
    /// An OCI image layout directory.
    Layout(LayoutWriter),
}

impl Destination {
    /// Connects to (or creates) the target.
    pub fn open(target: &Target, registry: RegistryConfig, options: &PushOptions) -> Result<Self> {
        match target {
            Target::Registry { .. } => Ok(Destination::Registry {
                client: Box::new(RegistryClient::new(registry)?),
                mode: options.upload_mode,
                chunk_bytes: options.chunk_bytes,
            }),
            Target::Layout { dir } => Ok(Destination::Layout(LayoutWriter::open(dir)?)),
        }
    }

    async fn blob_size(&self, repository: &str, digest: &Digest) -> Result<Option<u64>> {
        match self {
            Destination::Registry { client, .. } => client.blob_size(repository, digest).await,
            Destination::Layout(layout) => Ok(layout.blob_size(digest)),
        }
    }

    async fn mount(&self, repository: &str, from: &str, digest: &Digest) -> Result<bool> {
        match self {
            Destination::Registry { client, .. } => client.mount(repository, from, digest).await,
            // A layout has one blob store: present once is present everywhere.
            Destination::Layout(_) => Ok(true),
        }
    }

    async fn upload(&self, repository: &str, blob: &mut BlobChunks) -> Result<()> {
        match self {
            Destination::Registry {
                client,
                mode,
                chunk_bytes,
            } => {
                if *mode == UploadMode::Monolithic || blob.size() <= *chunk_bytes as u64 {
                    upload_monolithic(client, repository, blob).await
                } else {
                    upload_chunked(client, repository, blob).await
                }
            }
            Destination::Layout(layout) => {
                let mut write = layout.begin_blob(blob.digest())?;
                while let Some(chunk) = blob.next().await {
                    tokio::task::block_in_place(|| write.write(&chunk))?;
                }
                blob.verify()?;
                tokio::task::block_in_place(|| write.commit())
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
            Destination::Layout(layout) => tokio::task::block_in_place(|| {
                if top {
                    let name = image
                        .placement
                        .tag
                        .is_some()
                        .then_some(image.placement.target_ref.as_str());
                    layout.put_manifest(digest, media_type, &bytes, name)
                } else {
                    layout.put_blob(digest, &bytes)
                }
            }),
        }
    }

    fn finish(&self) -> Result<()> {
        match self {
            Destination::Registry { .. } => Ok(()),
            Destination::Layout(layout) => layout.finish(),
        }
    }
}

/// One request per small blob; one streaming request per large blob in
/// monolithic mode.
async fn upload_monolithic(
    client: &RegistryClient,
    repository: &str,
    blob: &mut BlobChunks,
) -> Result<()> {
    let session = client.start_upload(repository).await?;
    let mut parts = Vec::new();
    let mut buffered = 0usize;
    while let Some(chunk) = blob.next().await {
        buffered += chunk.len();
        parts.push(chunk);
        if buffered > DEFAULT_CHUNK_BYTES * 2 {
            break;
        }
    }
    if blob.is_complete() {
        blob.verify()?;
        let body = concat(parts);
        return client
            .finish_upload(repository, &session, &blob.digest().clone(), body)
            .await;
    }
    // Too large to buffer: stream the rest as the request body. The registry
    // checks the digest; the hash here also guards against a changed bundle.
    let digest = blob.digest().clone();
    let size = blob.size();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let send = client.put_stream(repository, &session, &digest, size, body);
    let feed = async move {
        for part in parts {
            if tx.send(Ok(part)).await.is_err() {
                return Ok(());
            }
        }
        while let Some(chunk) = blob.next().await {
            if tx.send(Ok(chunk)).await.is_err() {
                return Ok(());
            }
        }
        if let Err(e) = blob.verify() {
            let _ = tx
                .send(Err(std::io::Error::other("blob digest mismatch")))
                .await;
            return Err(e);
        }
        Ok(())
    };
    let (sent, fed) = tokio::join!(send, feed);
    fed?;
    sent
}

/// `POST`, a `PATCH` per chunk, and the final `PUT ?digest=` carrying the last
/// chunk.
async fn upload_chunked(
    client: &RegistryClient,
    repository: &str,
    blob: &mut BlobChunks,
) -> Result<()> {
    let mut session = client.start_upload(repository).await?;
    let mut pending: Option<Bytes> = None;
    while let Some(chunk) = blob.next().await {
        if let Some(previous) = pending.replace(chunk) {
            client
                .send_chunk(repository, &mut session, previous)
                .await?;
        }
    }
    blob.verify()?;
    let digest = blob.digest().clone();
    client
        .finish_upload(repository, &session, &digest, pending.unwrap_or_default())
        .await
}

fn concat(parts: Vec<Bytes>) -> Bytes {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    let mut all = bytes::BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for part in parts {
        all.extend_from_slice(&part);
    }
    all.freeze()
}

/// Counters of what a push did, shared by concurrent tasks.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    inner: Arc<TallyCounters>,
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
    fn uploaded(&self, bytes: u64) {
        self.inner.blobs_uploaded.fetch_add(1, Ordering::Relaxed);
        self.inner
            .bytes_uploaded
            .fetch_add(bytes, Ordering::Relaxed);
    }
    fn mounted(&self) {
        self.inner.blobs_mounted.fetch_add(1, Ordering::Relaxed);
    }
    fn present(&self) {
        self.inner.blobs_present.fetch_add(1, Ordering::Relaxed);
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
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Blobs linked from another repository instead of uploaded.
    pub blobs_mounted: u64,
    /// Blobs the target already held.
    pub blobs_present: u64,
    /// Manifests written.
    pub manifests_pushed: u64,
    /// Tags that already pointed at the right manifest.
    pub manifests_present: u64,
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
    let tally = Tally::default();
    let concurrency = options.concurrency.max(1);

    // 1. What does each repository already hold?
    progress.set_stage(crate::progress::Stage::Checking);
    let by_repository = plan.blobs_by_repository();
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
        .buffer_unordered(concurrency * 2)
        .try_collect()
        .await?;

    let mut holders: HashMap<Digest, Vec<String>> = HashMap::new();
    let mut missing: HashMap<Digest, Vec<String>> = HashMap::new();
    for (repo, digest, held) in presence {
        if held {
            tally.present();
            progress.add_blob_done();
            holders.entry(digest).or_default().push(repo);
        } else {
            missing.entry(digest).or_default().push(repo);
        }
    }

    // 2. Mount what another repository already holds; 3. stream the rest.
    let mut uploads: HashMap<Digest, Vec<String>> = HashMap::new();
    for (digest, mut repos) in missing {
        repos.sort();
        match holders.get(&digest).and_then(|h| h.first()) {
            Some(from) => {
                for repo in repos {
                    if destination.mount(&repo, from, &digest).await? {
                        tally.mounted();
                        progress.add_blob_done();
                    } else {
                        uploads.entry(digest.clone()).or_default().push(repo);
                    }
                }
            }
            None => {
                uploads.insert(digest, repos);
            }
        }
    }
    let bytes_to_push = uploads
        .keys()
        .filter_map(|digest| plan.index().blob_size(digest))
        .sum();
    progress.set_bytes_to_push(bytes_to_push);
    progress.set_stage(crate::progress::Stage::Uploading);
    let declined = transfer::stream_uploads(
        plan,
        &destination,
        uploads,
        Fanout::UploadThenMount,
        options,
        progress,
        &tally,
    )
    .await?;
    if !declined.is_empty() {
        tracing::info!(
            blobs = declined.len(),
            "registry declined some mounts; uploading those blobs again"
        );
        transfer::stream_uploads(
            plan,
            &destination,
            declined,
            Fanout::UploadToAll,
            options,
            progress,
            &tally,
        )
        .await?;
    }

    // 4. Manifests and tags: named images first, then referrers.
    progress.set_stage(crate::progress::Stage::Tagging);
    let (named, referrers): (Vec<&PlannedImage>, Vec<&PlannedImage>) = plan
        .images()
        .iter()
        .partition(|i| i.subject.is_none() || i.placement.tag.is_some());
    let mut pushed = Vec::new();
    for wave in [named, referrers] {
        // Collected first so the stream holds plain futures, not a closure
        // (which would make the whole push future lose `Send`).
        let pushes: Vec<_> = wave
            .into_iter()
            .map(|image| push_manifests(plan, &destination, image, &tally))
            .collect();
        let results: Vec<PushedImage> = futures::stream::iter(pushes)
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        pushed.extend(results);
    }
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
        duration: started.elapsed(),
    })
}

/// Pushes one image's manifests, children first, and its tag last. Skips the
/// lot when the tag already points at the right digest.
async fn push_manifests(
    plan: &Plan,
    destination: &Destination,
    image: &PlannedImage,
    tally: &Tally,
) -> Result<PushedImage> {
    let pushed = PushedImage {
        source: image.source_ref.clone(),
        target: image.placement.target_ref.clone(),
        digest: image.digest.clone(),
        media_type: image.media_type.clone(),
    };
    let reference = image
        .placement
        .tag
        .clone()
        .unwrap_or_else(|| image.digest.to_string());
    if destination
        .manifest_digest(&image.placement.repository, &reference)
        .await?
        .as_ref()
        == Some(&image.digest)
    {
        tally.manifest_present();
        return Ok(pushed);
    }
    let count = image.manifests.len();
    for (position, manifest) in image.manifests.iter().enumerate() {
        let bytes = plan
            .index()
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
    Ok(pushed)
}
