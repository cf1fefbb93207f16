//! The registry's part of the index pass: every blob the index pass reads
//! (those whose tar entry names their digest) is sent, as it is read, into
//! an upload session of the staging repository
//! ([`PushOptions::staging_repository`](super::PushOptions)), and the session
//! is left open. Nothing is committed there: no `PUT ?digest=`, no mount.
//! Once the whole bundle is indexed and proven, the push stage commits the
//! sessions of the blobs the plan needs and mounts them into their
//! repositories ([`Destination::deliver_staged`](super::Destination)); every
//! other session is cancelled (`DELETE`). So an import into a registry reads
//! the bundle twice — once to verify, once to index and upload — instead of
//! three times.
//!
//! The staging repository is where the index pass can send bytes before it
//! knows which repositories a blob belongs to (that is decided by manifests
//! that may come later in the tar). A blob the staging repository holds
//! already (from an earlier import) is not sent again; the push stage mounts
//! it from there.
//!
//! Holding a blob needs chunked uploads and push access to the staging
//! repository. When the registry refuses either, staging turns itself off
//! for the rest of the import with a log line saying why, and the blobs are
//! streamed from the bundle in a further pass as before.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::{Bytes, BytesMut};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::journal::SharedJournal;
use super::registry::RegistryClient;
use super::transfer::{BlobChunks, Budgeted, BufferBudget, CHANNEL_CHUNKS};
use super::upload::{Fallback, HeldUpload, Holding, ModeSwitch, RegistryUpload};
use super::{BlobLabel, Error, REQUESTS_PER_BLOB, UploadMode};
use crate::digest::Digest;
use crate::progress::Progress;

/// The largest blob (that is not a JSON document) the index pass keeps in
/// memory for the push to send from there, rather than staging it: sending
/// 1 MiB takes about as long as the round trips staging adds (a `HEAD`,
/// `POST` and `PATCH` into the staging repository, then its commit), so
/// below this the round trips dominate.
pub const IN_MEMORY_BLOB_BYTES: u64 = 1 << 20;

/// All blobs of one import kept in memory under [`IN_MEMORY_BLOB_BYTES`]
/// together; blobs past this are staged. A bundle of hundreds of small
/// images (900 blobs, 25 MB) fits; a pod's memory grows by at most this.
pub const IN_MEMORY_BUDGET_BYTES: u64 = 32 << 20;

/// What the index pass left of one blob in the staging repository.
#[derive(Debug)]
pub enum Staged {
    /// Every byte is in an open session.
    Held(HeldUpload),
    /// The staging repository held the blob already.
    InRepository,
}

/// Whether the registry takes the chunked uploads staging needs. The first
/// blob to be sent finds out with its first `PATCH`; no other upload sends
/// one until then (uploads of blobs the staging repository holds need none
/// and do not wait), so a registry refusing `PATCH` sees one, not one per
/// blob in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// No blob has tried yet (or the one trying sent no `PATCH`).
    Unknown,
    /// A blob's first `PATCH` is on its way.
    Probing,
    /// Known: accepted, or refused (then staging is off).
    Known,
}

/// The sessions of one import, shared by the index pass (which opens them),
/// their upload tasks, and the push stage (which commits or cancels them).
pub struct Staging {
    client: Arc<RegistryClient>,
    /// The import's upload mode: a registry refusing the chunked uploads
    /// staging needs switches the rest of the import to monolithic ones.
    modes: Arc<ModeSwitch>,
    journal: Option<SharedJournal>,
    repository: String,
    chunk_bytes: usize,
    /// Where the bytes sent are counted as they go.
    progress: Progress,
    blobs: Mutex<HashMap<Digest, (u64, Staged)>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The registry refused staging: no further blob is begun.
    off: AtomicBool,
    /// The import ended (or failed) before the push stage took the
    /// sessions: tasks finishing now cancel theirs.
    released: AtomicBool,
    probe: tokio::sync::watch::Sender<Probe>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("repository", &self.repository)
            .finish_non_exhaustive()
    }
}

impl Staging {
    /// Sessions in `repository` of `client`'s registry; the bytes sent are
    /// counted in `progress`.
    pub fn new(
        client: Arc<RegistryClient>,
        modes: Arc<ModeSwitch>,
        journal: Option<SharedJournal>,
        repository: String,
        chunk_bytes: usize,
        progress: Progress,
    ) -> Arc<Self> {
        Arc::new(Staging {
            client,
            modes,
            journal,
            repository,
            chunk_bytes,
            progress,
            blobs: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            off: AtomicBool::new(false),
            released: AtomicBool::new(false),
            probe: tokio::sync::watch::Sender::new(Probe::Unknown),
        })
    }

    /// The staging repository.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Waits for every upload the index pass began.
    pub async fn settle(&self) {
        loop {
            let tasks: Vec<JoinHandle<()>> =
                std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
            if tasks.is_empty() {
                return;
            }
            for task in tasks {
                if let Err(error) = task.await {
                    tracing::warn!(%error, "a staging upload task failed");
                }
            }
        }
    }

    /// Takes what was staged for `digest` (and its size).
    pub fn take(&self, digest: &Digest) -> Option<(u64, Staged)> {
        self.blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(digest)
    }

    /// Cancels every session still open and makes tasks still running
    /// cancel theirs. Called when the import ends, however it ends.
    pub async fn release(&self) {
        self.released.store(true, Ordering::Release);
        self.settle().await;
        let left: Vec<(Digest, (u64, Staged))> = self
            .blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        let mut cancelled = 0usize;
        for (digest, (size, staged)) in left {
            if let Staged::Held(held) = staged {
                self.cancel(&digest, size, held).await;
                cancelled += 1;
            }
        }
        if cancelled > 0 {
            tracing::debug!(
                sessions = cancelled,
                repository = %self.repository,
                "cancelled upload sessions of blobs the import did not need"
            );
        }
    }

    /// Commits a held blob into the staging repository.
    pub async fn commit(&self, digest: &Digest, size: u64, held: HeldUpload) -> super::Result<u64> {
        self.upload()
            .commit_held(&self.repository, digest, size, held)
            .await
    }

    /// Cancels a held blob's session.
    pub async fn cancel(&self, digest: &Digest, size: u64, held: HeldUpload) {
        self.cancel_labelled(&BlobLabel::Digest(digest.clone()), size, held)
            .await;
    }

    async fn cancel_labelled(&self, blob: &BlobLabel, size: u64, held: HeldUpload) {
        self.upload()
            .cancel_held(&self.repository, blob, size, held)
            .await;
    }

    fn upload(&self) -> RegistryUpload<'_> {
        RegistryUpload {
            client: &self.client,
            modes: &self.modes,
            chunk_bytes: self.chunk_bytes,
            journal: self.journal.as_ref(),
        }
    }

    fn turn_off(&self, reason: &str) {
        if !self.off.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                registry = %self.client.host(),
                repository = %self.repository,
                %reason,
                "blobs cannot be uploaded while the bundle is indexed; they are uploaded after it, reading the bundle once more"
            );
        }
    }

    /// Waits while another blob's first `PATCH` is finding out whether the
    /// registry takes chunked uploads; `true` when this blob is to find out.
    /// Called only by a task that holds its blob's first chunk, so a prober
    /// never waits on the reader: tasks waiting here hold chunks of the
    /// buffer budget, and the reader may be waiting for them.
    async fn claim_probe(&self) -> bool {
        let mut probe = self.probe.subscribe();
        loop {
            let settled = probe.wait_for(|p| *p != Probe::Probing).await.is_ok();
            if !settled {
                return false;
            }
            let mut claimed = false;
            self.probe.send_if_modified(|p| {
                claimed = *p == Probe::Unknown;
                if claimed {
                    *p = Probe::Probing;
                }
                claimed
            });
            if claimed || *self.probe.borrow() == Probe::Known {
                return claimed;
            }
        }
    }

    /// One blob's upload task: skipped when the staging repository holds it,
    /// otherwise every byte sent into a session left open once the index
    /// pass proved the bytes (`proven` set to their digest).
    async fn hold(
        self: Arc<Self>,
        blob: BlobLabel,
        size: u64,
        chunks: mpsc::Receiver<Bytes>,
        proven: Arc<OnceLock<Digest>>,
        found: Option<oneshot::Sender<bool>>,
        hold_back: u64,
    ) {
        let probing = match blob {
            BlobLabel::Digest(digest) => self.hold_blob(digest, size, chunks, proven, found).await,
            BlobLabel::Entry(entry) => self.hold_file(entry, size, chunks, proven, hold_back).await,
        };
        if probing {
            // A prober that sent no PATCH (the blob was a document, in the
            // staging repository already, or failed) hands the probe on.
            self.probe.send_if_modified(|probe| match probe {
                Probe::Probing => {
                    *probe = Probe::Unknown;
                    true
                }
                _ => false,
            });
        }
    }

    async fn hold_blob(
        &self,
        digest: Digest,
        size: u64,
        mut chunks: mpsc::Receiver<Bytes>,
        proven: Arc<OnceLock<Digest>>,
        mut found: Option<oneshot::Sender<bool>>,
    ) -> bool {
        // A blob too large to be a document (`found` given) is asked for at
        // once, and the index pass waits for the answer before it reads the
        // blob: one it need not hash when the staging repository holds it.
        // A smaller one is asked for only once its first chunk shows it is
        // not a document the index keeps: a document costs no request.
        let mut first = None;
        if found.is_none() {
            let Some(chunk) = chunks.recv().await else {
                return false;
            };
            first = Some(chunk);
        }
        let asked = self.client.blob_size(&self.repository, &digest).await;
        let holds = matches!(asked, Ok(Some(held)) if held == size);
        if let Some(found) = found.take() {
            // The index pass may have given up on the blob already.
            let _ = found.send(holds);
        }
        let mut probing = false;
        let staged = match asked {
            Ok(Some(_)) if holds => Some(Staged::InRepository),
            Ok(_) => {
                // The first chunk before the probe: a prober must never wait
                // on the reader, which may itself be waiting for buffer that
                // uploads queued behind the probe hold.
                let first = match first {
                    Some(chunk) => Some(chunk),
                    None => chunks.recv().await,
                };
                match first {
                    Some(chunk) => {
                        probing = self.claim_probe().await;
                        if self.off.load(Ordering::Acquire) {
                            None
                        } else {
                            let label = BlobLabel::Digest(digest.clone());
                            self.send(&label, size, vec![chunk], chunks, &proven, probing)
                                .await
                                .map(|(_, held)| Staged::Held(held))
                        }
                    }
                    None => None,
                }
            }
            Err(error @ (Error::Status { .. } | Error::Unauthorized { .. })) => {
                self.turn_off(&error.to_string());
                None
            }
            Err(error) => {
                tracing::info!(%digest, %error, "cannot ask the staging repository for a blob; it is uploaded after the index pass");
                None
            }
        };
        if let Some(staged) = staged {
            self.record(digest, size, staged).await;
        }
        probing
    }

    /// A file of the bundle outside its layout (tar entry `entry`), whose
    /// digest is known only once the index pass read it whole. Its chunks
    /// are held back, not sent, until the file ends or outgrows
    /// `hold_back` bytes: a file that ends within them is sent only when the
    /// staging repository lacks the digest it hashed to, so a warm import
    /// of it writes nothing. A larger one is sent as it is read and, once
    /// named, the staging repository is asked for it; when it holds the
    /// blob already the session is cancelled.
    async fn hold_file(
        &self,
        entry: String,
        size: u64,
        mut chunks: mpsc::Receiver<Bytes>,
        proven: Arc<OnceLock<Digest>>,
        hold_back: u64,
    ) -> bool {
        let mut queued = Vec::new();
        let mut queued_bytes = 0u64;
        let mut ended = false;
        while queued_bytes <= hold_back {
            match chunks.recv().await {
                Some(chunk) => {
                    queued_bytes += chunk.len() as u64;
                    queued.push(chunk);
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            // The reader let go: it proved the file (or gave it up).
            let Some(digest) = proven.get().cloned() else {
                return false;
            };
            if queued_bytes != size {
                return false;
            }
            match self.client.blob_size(&self.repository, &digest).await {
                Ok(Some(stored)) if stored == size => {
                    self.record(digest, size, Staged::InRepository).await;
                    return false;
                }
                Err(error @ (Error::Status { .. } | Error::Unauthorized { .. })) => {
                    self.turn_off(&error.to_string());
                    return false;
                }
                _ => {}
            }
        }
        let probing = self.claim_probe().await;
        if self.off.load(Ordering::Acquire) {
            return probing;
        }
        let label = BlobLabel::Entry(entry);
        let Some((digest, held)) = self
            .send(&label, size, queued, chunks, &proven, probing)
            .await
        else {
            return probing;
        };
        let staged = if ended {
            Staged::Held(held)
        } else {
            match self.client.blob_size(&self.repository, &digest).await {
                Ok(Some(stored)) if stored == size => {
                    self.cancel(&digest, size, held).await;
                    Staged::InRepository
                }
                _ => Staged::Held(held),
            }
        };
        self.record(digest, size, staged).await;
        probing
    }

    /// Records what was staged of `digest`, unless the import ended (then
    /// a held session is cancelled) or the blob was staged already.
    async fn record(&self, digest: Digest, size: u64, staged: Staged) {
        let refused = if self.released.load(Ordering::Acquire) {
            Some(staged)
        } else {
            let mut blobs = self.blobs.lock().unwrap_or_else(PoisonError::into_inner);
            match blobs.entry(digest.clone()) {
                Entry::Occupied(_) => Some(staged),
                Entry::Vacant(slot) => {
                    slot.insert((size, staged));
                    None
                }
            }
        };
        if let Some(Staged::Held(held)) = refused {
            self.cancel(&digest, size, held).await;
        }
    }

    /// Sends `blob` (`first`, then what comes through `chunks`) into a
    /// session and leaves it open; its digest and the
    /// session once every byte is there and the index pass proved them.
    async fn send(
        &self,
        blob: &BlobLabel,
        size: u64,
        first: Vec<Bytes>,
        chunks: mpsc::Receiver<Bytes>,
        proven: &OnceLock<Digest>,
        probing: bool,
    ) -> Option<(Digest, HeldUpload)> {
        let mut chunks =
            BlobChunks::proven_by_reader(first, chunks, blob.clone(), size, self.progress.clone());
        let accepted = || {
            self.probe.send_if_modified(|probe| {
                let changed = *probe != Probe::Known;
                *probe = Probe::Known;
                changed
            });
        };
        match self
            .upload()
            .hold(&self.repository, &mut chunks, probing, &accepted)
            .await
        {
            // The bytes are proven (or not) before the reader lets go.
            Ok(Holding::Held(held)) => match (chunks.until_released().await, proven.get()) {
                (true, Some(digest)) => Some((digest.clone(), held)),
                _ => {
                    // The bytes were not the blob (the index pass fails),
                    // or the stage gave the file up.
                    self.cancel_labelled(blob, size, held).await;
                    None
                }
            },
            Ok(Holding::Refused(error)) => {
                if self.modes.fall_back(UploadMode::Chunked) == Fallback::Switched {
                    tracing::warn!(
                        registry = %self.client.host(),
                        repository = %self.repository,
                        refused = %UploadMode::Chunked,
                        now = %UploadMode::Monolithic,
                        error = %error,
                        "the registry refused chunked uploads; using monolithic uploads for the rest of this import"
                    );
                }
                self.turn_off(&format!("the registry refuses chunked uploads: {error}"));
                self.probe.send_replace(Probe::Known);
                None
            }
            Err(Error::ShortBlob { .. }) => None,
            Err(error @ (Error::Status { .. } | Error::Unauthorized { .. })) => {
                self.turn_off(&error.to_string());
                None
            }
            Err(error) => {
                tracing::info!(digest = %blob, %error, "staging a blob failed; it is uploaded after the index pass");
                None
            }
        }
    }
}

/// The [`BlobStage`](crate::read::BlobStage) of a registry: hands each blob's
/// bytes, in chunks, to an upload task of [`Staging`].
pub struct RegistryStage {
    staging: Arc<Staging>,
    /// Blobs up to this size that look like JSON are documents the index
    /// pass keeps in memory; the push sends them from there.
    document_bytes: u64,
    runtime: Handle,
    budget: BufferBudget,
    uploads: Arc<Semaphore>,
    begun: HashSet<Digest>,
    /// Bytes of the small blobs left to the index in memory so far.
    in_memory: u64,
    current: Option<Current>,
}

/// The blob being read.
struct Current {
    /// Its digest; none for a file whose digest is known once read whole.
    digest: Option<Digest>,
    size: u64,
    /// Bytes handed over in full chunks so far.
    handed: u64,
    chunk: Option<(BytesMut, OwnedSemaphorePermit)>,
    tx: Option<mpsc::Sender<Bytes>>,
    /// Set to the blob's digest once the index pass proved its bytes.
    proven: Arc<OnceLock<Digest>>,
    /// The staging repository holds the blob.
    held: bool,
}

impl RegistryStage {
    /// A stage sending into `staging`, at most `concurrency` ×
    /// [`REQUESTS_PER_BLOB`] blobs at once (most are small, and their
    /// requests wait on round trips; memory is bounded by the budget),
    /// holding at most `buffer_bytes` of chunks not yet sent, leaving
    /// documents up to `document_bytes` to the index. Call from within the
    /// runtime.
    pub fn new(
        staging: Arc<Staging>,
        concurrency: usize,
        buffer_bytes: usize,
        document_bytes: u64,
    ) -> Self {
        let chunk_bytes = staging.chunk_bytes;
        RegistryStage {
            staging,
            document_bytes,
            runtime: Handle::current(),
            budget: BufferBudget::new(buffer_bytes, chunk_bytes),
            uploads: Arc::new(Semaphore::new(concurrency.max(1) * REQUESTS_PER_BLOB)),
            begun: HashSet::new(),
            in_memory: 0,
            current: None,
        }
    }

    fn send_chunk(&mut self) -> std::io::Result<()> {
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        let Some((bytes, share)) = current.chunk.take() else {
            return Ok(());
        };
        current.handed += bytes.len() as u64;
        let chunk = Bytes::from_owner(Budgeted::new(bytes, share));
        if let Some(tx) = &current.tx
            && tx.blocking_send(chunk).is_err()
        {
            // The upload let go of the blob (the staging repository has it,
            // or staging is off): the rest is only read.
            current.tx = None;
        }
        Ok(())
    }
}

impl RegistryStage {
    /// Whether a blob of `size` bytes can be staged at all.
    fn takes(&self, size: u64) -> bool {
        // An empty blob has no chunk to start its task with; the push sends
        // it (a request with no body) after the index pass.
        size > 0
            && !self.staging.off.load(Ordering::Acquire)
            && self.staging.modes.current() == UploadMode::Chunked
    }

    /// Starts the upload task of `blob` and makes it the current one;
    /// `found` is answered whether the staging repository holds it.
    fn start(
        &mut self,
        blob: BlobLabel,
        size: u64,
        found: Option<oneshot::Sender<bool>>,
    ) -> std::io::Result<()> {
        let permit = self
            .runtime
            .block_on(Arc::clone(&self.uploads).acquire_owned())
            .map_err(std::io::Error::other)?;
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let proven = Arc::new(OnceLock::new());
        // Half the buffer budget: the rest keeps the reader going (the
        // chunk it fills, other uploads' chunks) while a file is held back.
        let hold_back = (self.budget.bytes() / 2) as u64;
        let digest = match &blob {
            BlobLabel::Digest(digest) => Some(digest.clone()),
            BlobLabel::Entry(_) => None,
        };
        let task = self.runtime.spawn({
            let staging = Arc::clone(&self.staging);
            let proven = Arc::clone(&proven);
            async move {
                staging.hold(blob, size, rx, proven, found, hold_back).await;
                drop(permit);
            }
        });
        self.staging
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
        self.current = Some(Current {
            digest,
            size,
            handed: 0,
            chunk: None,
            tx: Some(tx),
            proven,
            held: false,
        });
        Ok(())
    }
}

impl crate::read::BlobStage for RegistryStage {
    fn begin(&mut self, digest: &Digest, size: u64) -> std::io::Result<bool> {
        // A blob begun and never kept: its task cancels its session.
        self.current = None;
        if !self.takes(size) || !self.begun.insert(digest.clone()) {
            return Ok(false);
        }
        let (found, answer) = if size > self.document_bytes {
            let (found, answer) = oneshot::channel();
            (Some(found), Some(answer))
        } else {
            (None, None)
        };
        self.start(BlobLabel::Digest(digest.clone()), size, found)?;
        // An answer lost (the task failed) counts as "not held".
        let held = answer.is_some_and(|answer| self.runtime.block_on(answer).unwrap_or(false));
        if let Some(current) = self.current.as_mut() {
            current.held = held;
        }
        Ok(true)
    }

    fn begin_unnamed(&mut self, entry: &str, size: u64) -> std::io::Result<bool> {
        self.current = None;
        if !self.takes(size) {
            return Ok(false);
        }
        self.start(BlobLabel::Entry(entry.to_owned()), size, None)?;
        Ok(true)
    }

    fn keep_as(&mut self, digest: &Digest) -> std::io::Result<()> {
        self.send_chunk()?;
        if let Some(current) = self.current.take()
            && current.digest.is_none()
            // Content staged already under this digest (a blob of the
            // layout, another copy of the file): this session is cancelled.
            && self.begun.insert(digest.clone())
        {
            let _ = current.proven.set(digest.clone());
        }
        Ok(())
    }

    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        let chunk_bytes = self.staging.chunk_bytes;
        while !bytes.is_empty() {
            let Some(current) = self.current.as_mut() else {
                return Ok(());
            };
            if current.tx.is_none() {
                return Ok(());
            }
            if current.chunk.is_none() {
                let want = (current.size - current.handed).min(chunk_bytes as u64) as usize;
                let share = self
                    .budget
                    .reserve(want.max(bytes.len().min(chunk_bytes)))
                    .map_err(std::io::Error::other)?;
                current.chunk = Some((BytesMut::with_capacity(want), share));
            }
            let Some((chunk, _)) = current.chunk.as_mut() else {
                return Ok(());
            };
            let room = chunk_bytes.saturating_sub(chunk.len()).max(1);
            let take = room.min(bytes.len());
            chunk.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if chunk.len() >= chunk_bytes {
                self.send_chunk()?;
            }
        }
        Ok(())
    }

    fn keep(&mut self) -> std::io::Result<()> {
        self.send_chunk()?;
        // Dropping the sender (with `current`) ends the blob's stream.
        if let Some(current) = self.current.take()
            && let Some(digest) = current.digest
        {
            let _ = current.proven.set(digest);
        }
        Ok(())
    }

    fn held(&self) -> bool {
        self.current.as_ref().is_some_and(|current| current.held)
    }

    fn leave_in_memory(&mut self, bytes: &[u8], kept_anyway: bool) -> bool {
        // A document the index keeps anyway costs nothing more.
        if kept_anyway {
            return true;
        }
        let size = bytes.len() as u64;
        if size > IN_MEMORY_BLOB_BYTES || self.in_memory + size > IN_MEMORY_BUDGET_BYTES {
            return false;
        }
        self.in_memory += size;
        true
    }
}
