//! Counters that long-running stages bump and that a progress display or the
//! daemon's metrics read, without the stages knowing who is watching.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shared, lock-free progress counters for one import.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    bundle_bytes_read: AtomicU64,
    blob_bytes_pushed: AtomicU64,
    blobs_done: AtomicU64,
}

impl Progress {
    /// Fresh counters, all zero.
    pub fn new() -> Self {
        Self::default()
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
}
