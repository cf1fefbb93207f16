//! Blob families: what imports transferred, counted once per import.

use prometheus::{IntCounter, Registry};

/// The blob families.
#[derive(Clone)]
pub(super) struct BlobMetrics {
    pushed: IntCounter,
    bytes: IntCounter,
    skipped: IntCounter,
    mounted: IntCounter,
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
                "Blobs uploaded to the target.",
            )?,
            bytes: counter(
                "airlock_pushed_bytes_total",
                "Bytes of blobs uploaded to the target.",
            )?,
            skipped: counter(
                "airlock_blobs_skipped_total",
                "Blobs not uploaded because the target already held them.",
            )?,
            mounted: counter(
                "airlock_blobs_mounted_total",
                "Blobs linked from another repository of the target instead of uploaded.",
            )?,
        })
    }

    pub(super) fn add(&self, pushed: u64, bytes: u64, skipped: u64, mounted: u64) {
        self.pushed.inc_by(pushed);
        self.bytes.inc_by(bytes);
        self.skipped.inc_by(skipped);
        self.mounted.inc_by(mounted);
    }
}
