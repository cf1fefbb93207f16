//! The streaming pass: one reader thread decompresses the bundle and hands the
//! blobs that are missing to concurrent uploads, in chunks, through bounded
//! channels. Every chunk holds a share of one buffer budget
//! ([`PushOptions::buffer_bytes`]) until its last copy is sent and dropped, so
//! memory stays bounded however large the bundle is and however many blobs
//! are in flight; nothing is written to scratch disk.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::{BlobLabel, Destination, Error, PushOptions, Result, Sent, Tally};
use crate::digest::{Digest, Hasher};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::read::StreamError;

/// Chunks buffered per blob between the reader and its upload.
pub(super) const CHANNEL_CHUNKS: usize = 2;

/// The unit in which the buffer budget is counted.
const BUDGET_UNIT: usize = 64 << 10;

/// The memory chunks of one streaming pass may hold, shared by all uploads.
#[derive(Clone)]
pub(super) struct BufferBudget {
    units: Arc<Semaphore>,
    /// Its size in bytes.
    bytes: usize,
    runtime: Handle,
}

impl BufferBudget {
    /// A budget of `bytes`, but never less than the blob being read needs
    /// to make progress: a monolithic upload buffers up to two default
    /// chunks before it streams, and holds one more while reading it.
    pub(super) fn new(bytes: usize, chunk_bytes: usize) -> Self {
        let floor = 2 * super::DEFAULT_CHUNK_BYTES + 2 * chunk_bytes;
        let units = bytes.max(floor).div_ceil(BUDGET_UNIT);
        BufferBudget {
            units: Arc::new(Semaphore::new(units)),
            bytes: units * BUDGET_UNIT,
            runtime: Handle::current(),
        }
    }

    /// Its size in bytes.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Waits (on the reader thread) until `len` bytes fit in the budget.
    pub(super) fn reserve(&self, len: usize) -> Result<OwnedSemaphorePermit> {
        let units =
            u32::try_from(len.div_ceil(BUDGET_UNIT).max(1)).map_err(|_| Error::Cancelled)?;
        self.runtime
            .block_on(Arc::clone(&self.units).acquire_many_owned(units))
            .map_err(|_| Error::Cancelled)
    }
}

/// A chunk's bytes with its share of the budget, returned when the last
/// `Bytes` pointing into it is dropped.
pub(super) struct Budgeted {
    bytes: BytesMut,
    _share: OwnedSemaphorePermit,
}

impl Budgeted {
    /// `bytes` holding `share` of the budget.
    pub(super) fn new(bytes: BytesMut, share: OwnedSemaphorePermit) -> Self {
        Budgeted {
            bytes,
            _share: share,
        }
    }
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// How a blob reaches the repositories that need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout {
    /// Upload to the first repository, then mount into the others.
    UploadThenMount,
    /// Upload to every repository (after the registry declined mounts).
    UploadToAll,
}

/// Where one blob goes in a pass, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The repositories needing the blob.
    pub repositories: Vec<String>,
    /// How it reaches them.
    pub fanout: Fanout,
}

/// Why a blob is left for another pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// The registry declined to mount it into some repositories.
    DeclinedMount,
    /// Its upload restarts in the other upload mode.
    OtherMode,
}

/// A blob left for another pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// Where it still has to go.
    pub delivery: Delivery,
    /// Why.
    pub reason: Leftover,
}

impl Left {
    fn new(repositories: Vec<String>, fanout: Fanout, reason: Leftover) -> Self {
        Left {
            delivery: Delivery {
                repositories,
                fanout,
            },
            reason,
        }
    }
}

/// The chunks of one blob as they arrive from the reader, hashed as they pass
/// so a blob that differs from its digest is never committed.
pub struct BlobChunks {
    rx: mpsc::Receiver<Bytes>,
    /// Chunks taken from `rx` before this was made, handed out first.
    first: VecDeque<Bytes>,
    /// The hash of the bytes as they pass and the digest it must give;
    /// none when the reader proves the bytes itself.
    hasher: Option<(Hasher, Digest)>,
    blob: BlobLabel,
    size: u64,
    received: u64,
    progress: Progress,
}

impl BlobChunks {
    pub(super) fn new(
        rx: mpsc::Receiver<Bytes>,
        digest: Digest,
        size: u64,
        progress: Progress,
    ) -> Self {
        BlobChunks {
            rx,
            first: VecDeque::new(),
            hasher: Some((Hasher::new(digest.algorithm()), digest.clone())),
            blob: BlobLabel::Digest(digest),
            size,
            received: 0,
            progress,
        }
    }

    /// The chunks of a blob whose bytes the reader proves itself (the index
    /// pass hashes every blob it reads): only their count is checked here.
    /// `first`, in order, were taken from `rx` already.
    pub(super) fn proven_by_reader(
        first: Vec<Bytes>,
        rx: mpsc::Receiver<Bytes>,
        blob: BlobLabel,
        size: u64,
        progress: Progress,
    ) -> Self {
        BlobChunks {
            rx,
            first: first.into(),
            hasher: None,
            blob,
            size,
            received: 0,
            progress,
        }
    }

    /// What the blob is called in logs and errors.
    pub fn label(&self) -> &BlobLabel {
        &self.blob
    }

    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Waits until the reader lets go of the stream, which it does only
    /// after it proved the blob's bytes or gave them up; `false` when more
    /// bytes than the blob's size came.
    pub async fn until_released(&mut self) -> bool {
        let mut extra = self.first.drain(..).any(|c| !c.is_empty());
        while let Some(chunk) = self.rx.recv().await {
            extra |= !chunk.is_empty();
        }
        !extra
    }

    /// Whether every byte has been received.
    pub fn is_complete(&self) -> bool {
        self.received >= self.size
    }

    /// The next chunk, or `None` at the end of the blob.
    pub async fn next(&mut self) -> Option<Bytes> {
        let chunk = match self.first.pop_front() {
            Some(chunk) => chunk,
            None => self.rx.recv().await?,
        };
        if let Some((hasher, _)) = self.hasher.as_mut() {
            hasher.update(&chunk);
        }
        self.received += chunk.len() as u64;
        self.progress.add_pushed_bytes(chunk.len() as u64);
        Some(chunk)
    }

    /// Proves the bytes received are the blob the digest names. Call before
    /// committing the blob at the target.
    pub fn verify(&mut self) -> Result<()> {
        let Some((hasher, expected)) = self.hasher.take() else {
            if self.received == self.size {
                return Ok(());
            }
            return Err(Error::ShortBlob {
                blob: self.blob.clone(),
                size: self.size,
                received: self.received,
            });
        };
        let actual = hasher.finish();
        if self.received != self.size || actual != expected {
            return Err(Error::DigestMismatch { expected, actual });
        }
        Ok(())
    }
}

/// One blob handed from the reader to the uploads.
struct Job {
    digest: Digest,
    size: u64,
    chunks: mpsc::Receiver<Bytes>,
}

/// Streams every blob in `uploads` from the bundle into the repositories listed
/// for it. Returns what is left for another pass: blobs whose mount the
/// registry declined (to upload to each refusing repository with
/// [`Fanout::UploadToAll`]) and blobs whose upload restarts in the other
/// upload mode.
pub async fn stream_uploads(
    plan: &Plan,
    destination: &Arc<Destination>,
    uploads: HashMap<Digest, Delivery>,
    options: &PushOptions,
    progress: &Progress,
    tally: &Tally,
) -> Result<HashMap<Digest, Left>> {
    let wanted: HashSet<Digest> = uploads.keys().cloned().collect();
    let mut leftovers: HashMap<Digest, Left> = HashMap::new();
    if wanted.is_empty() {
        return Ok(leftovers);
    }
    let (jobs_tx, mut jobs_rx) = mpsc::channel::<Job>(1);
    let index = Arc::clone(plan.index());
    let chunk_bytes = options.chunk_bytes.max(1);
    let budget = BufferBudget::new(options.buffer_bytes, chunk_bytes);
    let reader_progress = progress.clone();
    reader_progress.reset_bundle_bytes();
    let reader = tokio::task::spawn_blocking(move || {
        index.stream_blobs(&wanted, &reader_progress, |digest, size, content| {
            send_blob(&jobs_tx, digest, size, content, chunk_bytes, &budget)
        })
    });

    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let uploads = Arc::new(uploads);
    let mut running = FuturesUnordered::new();
    let mut first_error: Option<Error> = None;
    loop {
        tokio::select! {
            job = jobs_rx.recv(), if first_error.is_none() => {
                let Some(job) = job else { break };
                let permit = Arc::clone(&permits)
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::Cancelled)?;
                let delivery = uploads.get(&job.digest).cloned().unwrap_or(Delivery {
                    repositories: Vec::new(),
                    fanout: Fanout::UploadThenMount,
                });
                let destination = Arc::clone(destination);
                let progress = progress.clone();
                let tally = tally.clone();
                running.push(tokio::spawn(async move {
                    let result = upload_job(&destination, job, delivery, &progress, &tally).await;
                    drop(permit);
                    result
                }));
            }
            Some(done) = running.next(), if !running.is_empty() => {
                if !settle(done, &mut leftovers, &mut first_error) {
                    // The reader stops at its next send once the jobs end closes.
                    jobs_rx.close();
                }
            }
            else => break,
        }
    }
    while let Some(done) = running.next().await {
        settle(done, &mut leftovers, &mut first_error);
    }
    let read_result = reader.await.map_err(|e| Error::Task(e.to_string()))?;
    if let Some(e) = first_error {
        return Err(e);
    }
    match read_result {
        Ok(()) => Ok(leftovers),
        Err(StreamError::Read(e)) => Err(Error::Read(e)),
        Err(StreamError::Consumer(e)) => Err(e),
    }
}

type JobOutcome = (Digest, Option<Left>);

/// Records a finished upload job: its leftover, or its error (only the first
/// error is kept). Returns false when the job failed.
fn settle(
    done: std::result::Result<Result<JobOutcome>, tokio::task::JoinError>,
    leftovers: &mut HashMap<Digest, Left>,
    first_error: &mut Option<Error>,
) -> bool {
    match done.map_err(|e| Error::Task(e.to_string())).and_then(|r| r) {
        Ok((digest, Some(left))) => {
            leftovers.insert(digest, left);
            true
        }
        Ok(_) => true,
        Err(e) => {
            first_error.get_or_insert(e);
            false
        }
    }
}

/// Runs on the reader thread: cuts one blob into chunks and sends them.
fn send_blob(
    jobs: &mpsc::Sender<Job>,
    digest: &Digest,
    size: u64,
    content: &mut dyn Read,
    chunk_bytes: usize,
    budget: &BufferBudget,
) -> Result<()> {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    jobs.blocking_send(Job {
        digest: digest.clone(),
        size,
        chunks: rx,
    })
    .map_err(|_| Error::Cancelled)?;
    let mut remaining = size;
    loop {
        let want = remaining.min(chunk_bytes as u64) as usize;
        let share = budget.reserve(want)?;
        let mut chunk = BytesMut::zeroed(want);
        let mut filled = 0;
        while filled < want {
            let n = content.read(&mut chunk[filled..]).map_err(|source| {
                Error::Read(crate::read::Error::Corrupt {
                    path: format!("blob {digest}"),
                    source,
                })
            })?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        chunk.truncate(filled);
        remaining -= filled as u64;
        let last = remaining == 0 || filled == 0;
        let chunk = Bytes::from_owner(Budgeted {
            bytes: chunk,
            _share: share,
        });
        if tx.blocking_send(chunk).is_err() {
            // The upload let go of this blob (it restarts in another pass,
            // or the transfer is failing): skip the rest of it. A failing
            // transfer stops at the next blob, when the jobs channel is shut.
            return Ok(());
        }
        if last {
            return Ok(());
        }
    }
}

/// Sends a blob whose bytes are in memory (a JSON document the index pass
/// kept) where it is needed, as [`upload_job`] does for one read from the
/// bundle; returns what is left of it for another pass.
pub(super) async fn upload_from_memory(
    destination: &Destination,
    digest: Digest,
    bytes: Bytes,
    delivery: Delivery,
    progress: &Progress,
    tally: &Tally,
) -> Result<(Digest, Option<Left>)> {
    let (tx, chunks) = mpsc::channel(1);
    let size = bytes.len() as u64;
    // Room for the one chunk: this send cannot wait.
    tx.try_send(bytes).map_err(|_| Error::Cancelled)?;
    drop(tx);
    let job = Job {
        digest,
        size,
        chunks,
    };
    upload_job(destination, job, delivery, progress, tally).await
}

/// Sends one blob where it is needed; returns what is left of it for another
/// pass (repositories that declined a mount, or an upload that restarts in
/// the other mode).
async fn upload_job(
    destination: &Destination,
    job: Job,
    delivery: Delivery,
    progress: &Progress,
    tally: &Tally,
) -> Result<JobOutcome> {
    let Job {
        digest,
        size,
        chunks,
    } = job;
    let Delivery {
        repositories,
        fanout,
    } = delivery;
    let Some((first, others)) = repositories.split_first() else {
        return Ok((digest, None));
    };
    if fanout == Fanout::UploadToAll && !others.is_empty() {
        let results =
            tee_upload(destination, chunks, &digest, size, &repositories, progress).await?;
        let mut again = Vec::new();
        for (repository, sent) in results {
            match sent {
                Sent::Done { bytes } => tally.uploaded(bytes),
                Sent::Again => again.push(repository),
            }
        }
        if again.is_empty() {
            progress.add_blob_done();
            return Ok((digest, None));
        }
        return Ok((
            digest,
            Some(Left::new(again, Fanout::UploadToAll, Leftover::OtherMode)),
        ));
    }
    let mut blob = BlobChunks::new(chunks, digest.clone(), size, progress.clone());
    match destination.upload(first, &digest, &mut blob).await? {
        Sent::Done { bytes } => tally.uploaded(bytes),
        Sent::Again => {
            let left = Left::new(repositories.clone(), fanout, Leftover::OtherMode);
            return Ok((digest, Some(left)));
        }
    }
    progress.add_blob_done();
    let mut refused = Vec::new();
    for repository in others {
        if destination.mount(repository, first, &digest).await? {
            tally.mounted();
        } else {
            refused.push(repository.clone());
        }
    }
    if refused.is_empty() {
        return Ok((digest, None));
    }
    let left = Left::new(refused, Fanout::UploadToAll, Leftover::DeclinedMount);
    Ok((digest, Some(left)))
}

/// Uploads the same stream to several repositories at once. An upload that
/// lets go of the stream early (its mode was refused) no longer holds up the
/// others.
async fn tee_upload(
    destination: &Destination,
    mut chunks: mpsc::Receiver<Bytes>,
    digest: &Digest,
    size: u64,
    repositories: &[String],
    progress: &Progress,
) -> Result<Vec<(String, Sent)>> {
    let mut senders = Vec::new();
    let mut uploads = FuturesUnordered::new();
    for repository in repositories {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        senders.push(Some(tx));
        let mut blob = BlobChunks::new(rx, digest.clone(), size, progress.clone());
        uploads.push(async move {
            let sent = destination.upload(repository, digest, &mut blob).await;
            (repository.clone(), sent)
        });
    }
    let forward = async move {
        while let Some(chunk) = chunks.recv().await {
            let mut open = 0;
            for slot in &mut senders {
                if let Some(tx) = slot {
                    if tx.send(chunk.clone()).await.is_err() {
                        *slot = None;
                    } else {
                        open += 1;
                    }
                }
            }
            if open == 0 {
                return;
            }
        }
    };
    let (_, results) = tokio::join!(forward, async {
        let mut results = Vec::new();
        while let Some(result) = uploads.next().await {
            results.push(result);
        }
        results
    });
    results
        .into_iter()
        .map(|(repository, sent)| sent.map(|sent| (repository, sent)))
        .collect()
}
