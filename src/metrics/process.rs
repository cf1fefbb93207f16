//! Process families: the build and whether the watcher runs.

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

/// The process families.
#[derive(Clone)]
pub(super) struct ProcessMetrics {
    watcher_up: IntGauge,
    listings: IntCounter,
}

impl ProcessMetrics {
    pub(super) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let build_info = IntGaugeVec::new(
            Opts::new(
                "airlock_build_info",
                "Always 1; the version label names the running airlock.",
            ),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        // One value per binary: bounded.
        build_info
            .get_metric_with_label_values(&[env!("CARGO_PKG_VERSION")])?
            .set(1);
        let watcher_up = IntGauge::new(
            "airlock_watcher_up",
            "1 while the watcher runs and every drop directory is there and watched (or polled); 0 while one is gone (unmounted, deleted) or the watcher stopped.",
        )?;
        registry.register(Box::new(watcher_up.clone()))?;
        let listings = IntCounter::new(
            "airlock_drop_listings_total",
            "Times the drop directories were listed (on arrivals, settle deadlines, rescans and remounts). Idle, it grows once per rescan interval.",
        )?;
        registry.register(Box::new(listings.clone()))?;
        Ok(ProcessMetrics {
            watcher_up,
            listings,
        })
    }

    pub(super) fn drop_listed(&self) {
        self.listings.inc();
    }

    pub(super) fn set_watcher_up(&self, up: bool) {
        self.watcher_up.set(i64::from(up));
    }
}
