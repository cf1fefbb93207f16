//! Counters that long-running stages bump and that a progress display or the
//! daemon's metrics read, without the stages knowing who is watching.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

/// The stage an import is in, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Hashing the bundle to check its signature.
    Verifying,
    /// Reading the bundle to check and index its content.
    Indexing,
    /// Reading the bundle once to check its signature and index its content
    /// together (`imports.single_read`).
    VerifyingAndIndexing,
    /// Asking the target what it already has.
    Checking,
    /// Streaming blobs to the target.
    Uploading,
    /// Writing manifests and tags.
    Tagging,
    /// Finished.
    Done,
}

impl Stage {
    /// A short label for displays and logs.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Verifying => "verifying",
            Stage::Indexing => "indexing",
            Stage::VerifyingAndIndexing => "verifying+indexing",
            Stage::Checking => "checking",
            Stage::Uploading => "uploading",
            Stage::Tagging => "tagging",
            Stage::Done => "done",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            0 => Stage::Verifying,
            1 => Stage::Indexing,
            2 => Stage::VerifyingAndIndexing,
            3 => Stage::Checking,
            4 => Stage::Uploading,
            5 => Stage::Tagging,
            _ => Stage::Done,
        }
    }
}

/// Shared, lock-free progress counters for one import.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    stage: AtomicU8,
    bytes_to_push: AtomicU64,
    bundle_bytes_read: AtomicU64,
    blob_bytes_pushed: AtomicU64,
    blobs_done: AtomicU64,
    blobs_uploaded: AtomicU64,
    uploaded_blob_bytes: AtomicU64,
    blobs_mounted: AtomicU64,
    blobs_present: AtomicU64,
    cancelled: AtomicBool,
}

impl Progress {
    /// Fresh counters, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Enters a new stage.
    pub fn set_stage(&self, stage: Stage) {
        self.inner.stage.store(stage as u8, Ordering::Relaxed);
    }

    /// The current stage.
    pub fn stage(&self) -> Stage {
        Stage::from_u8(self.inner.stage.load(Ordering::Relaxed))
    }

    /// Records how many blob bytes the upload stage will send.
    pub fn set_bytes_to_push(&self, n: u64) {
        self.inner.bytes_to_push.store(n, Ordering::Relaxed);
    }

    /// Blob bytes the upload stage will send.
    pub fn bytes_to_push(&self) -> u64 {
        self.inner.bytes_to_push.load(Ordering::Relaxed)
    }

    /// Records `n` more compressed bundle bytes read (hashing or indexing).
    pub fn add_bundle_bytes(&self, n: u64) {
        self.inner.bundle_bytes_read.fetch_add(n, Ordering::Relaxed);
    }

    /// Restarts the bundle-bytes counter at the start of a new pass.
    pub fn reset_bundle_bytes(&self) {
        self.inner.bundle_bytes_read.store(0, Ordering::Relaxed);
    }

    /// Compressed bundle bytes read in the current pass.
    pub fn bundle_bytes(&self) -> u64 {
        self.inner.bundle_bytes_read.load(Ordering::Relaxed)
    }

    /// Records `n` more blob bytes accepted by the target.
    pub fn add_pushed_bytes(&self, n: u64) {
        self.inner.blob_bytes_pushed.fetch_add(n, Ordering::Relaxed);
    }

    /// Blob bytes accepted by the target so far.
    pub fn pushed_bytes(&self) -> u64 {
        self.inner.blob_bytes_pushed.load(Ordering::Relaxed)
    }

    /// Records one more blob settled (uploaded, mounted or found present).
    pub fn add_blob_done(&self) {
        self.inner.blobs_done.fetch_add(1, Ordering::Relaxed);
    }

    /// Blobs settled so far.
    pub fn blobs_done(&self) -> u64 {
        self.inner.blobs_done.load(Ordering::Relaxed)
    }

    /// Records one blob upload of `bytes` completed at one repository of the
    /// target.
    pub fn add_blob_uploaded(&self, bytes: u64) {
        self.inner.blobs_uploaded.fetch_add(1, Ordering::Relaxed);
        self.inner
            .uploaded_blob_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// The sizes of the blobs whose uploads completed so far (unlike
    /// [`Progress::pushed_bytes`], bytes of a blob sent twice count once).
    pub fn uploaded_blob_bytes(&self) -> u64 {
        self.inner.uploaded_blob_bytes.load(Ordering::Relaxed)
    }

    /// Blob uploads completed so far.
    pub fn blobs_uploaded(&self) -> u64 {
        self.inner.blobs_uploaded.load(Ordering::Relaxed)
    }

    /// Records one blob linked from another repository instead of uploaded.
    pub fn add_blob_mounted(&self) {
        self.inner.blobs_mounted.fetch_add(1, Ordering::Relaxed);
    }

    /// Blobs mounted so far.
    pub fn blobs_mounted(&self) -> u64 {
        self.inner.blobs_mounted.load(Ordering::Relaxed)
    }

    /// Records one blob the target already held.
    pub fn add_blob_present(&self) {
        self.inner.blobs_present.fetch_add(1, Ordering::Relaxed);
    }

    /// Blobs found present so far.
    pub fn blobs_present(&self) -> u64 {
        self.inner.blobs_present.load(Ordering::Relaxed)
    }

    /// Asks every stage reading the bundle to stop at its next read (the
    /// daemon is stopping, or the import was abandoned).
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`Progress::cancel`] was called.
    pub fn cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_reads_back_as_set() {
        let progress = Progress::new();
        for stage in [
            Stage::Verifying,
            Stage::Indexing,
            Stage::VerifyingAndIndexing,
            Stage::Checking,
            Stage::Uploading,
            Stage::Tagging,
            Stage::Done,
        ] {
            progress.set_stage(stage);
            assert_eq!(progress.stage(), stage, "{}", stage.label());
        }
    }
}
