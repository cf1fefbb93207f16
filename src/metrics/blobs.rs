//! Blob families: what imports transferred, counted while they run.
//!
//! An import reports blob events into its [`Progress`] as they happen; an
//! [`ImportTracker`] carries them into the counters whenever `/metrics` is
//! rendered and once more when the import ends, so a multi-hour import shows
//! its throughput as it goes, and a failed attempt counts what it did send.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{IntCounter, Registry};

use crate::progress::Progress;

/// The blob families.
#[derive(Clone)]
pub(super) struct BlobMetrics {
    pushed: IntCounter,
    bytes: IntCounter,
    skipped: IntCounter,
    mounted: IntCounter,
    running: Arc<Mutex<Vec<Arc<Tracked>>>>,
}

/// What one running import has reported and what of it is counted already.
struct Tracked {
    progress: Progress,
    counted: Mutex<Counts>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    pushed: u64,
    bytes: u64,
    skipped: u64,
    mounted: u64,
}

impl Counts {
    fn of(progress: &Progress) -> Self {
        Counts {
            pushed: progress.blobs_uploaded(),
            bytes: progress.pushed_bytes(),
            skipped: progress.blobs_present(),
            mounted: progress.blobs_mounted(),
        }
    }
}

/// Counts one import's blob events while it runs; dropping it counts the
/// last of them and stops tracking.
pub struct ImportTracker {
    tracked: Arc<Tracked>,
    metrics: BlobMetrics,
}

impl Drop for ImportTracker {
    fn drop(&mut self) {
        self.metrics.count(&self.tracked);
        self.metrics
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|t| !Arc::ptr_eq(t, &self.tracked));
    }
}

impl BlobMetrics {
    pub(super) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        Ok(BlobMetrics {
            pushed: counter(
                "airlock_blobs_pushed_total",
                "Blob uploads completed at the target.",
            )?,
            bytes: counter(
                "airlock_pushed_bytes_total",
                "Blob bytes sent to the target, counted as each chunk goes out (also by attempts that fail later).",
            )?,
            skipped: counter(
                "airlock_blobs_skipped_total",
                "Blobs not uploaded because the target already held them.",
            )?,
            mounted: counter(
                "airlock_blobs_mounted_total",
                "Blobs linked from another repository of the target instead of uploaded.",
            )?,
            running: Arc::default(),
        })
    }

    /// Starts counting the blob events `progress` receives.
    pub(super) fn track(&self, progress: &Progress) -> ImportTracker {
        let tracked = Arc::new(Tracked {
            progress: progress.clone(),
            counted: Mutex::new(Counts::default()),
        });
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&tracked));
        ImportTracker {
            tracked,
            metrics: self.clone(),
        }
    }

    /// Counts what every running import reported since the last call.
    pub(super) fn count_running(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for tracked in &running {
            self.count(tracked);
        }
    }

    fn count(&self, tracked: &Tracked) {
        let mut counted = tracked
            .counted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Counts::of(&tracked.progress);
        self.pushed
            .inc_by(now.pushed.saturating_sub(counted.pushed));
        self.bytes.inc_by(now.bytes.saturating_sub(counted.bytes));
        self.skipped
            .inc_by(now.skipped.saturating_sub(counted.skipped));
        self.mounted
            .inc_by(now.mounted.saturating_sub(counted.mounted));
        *counted = now;
    }
}
