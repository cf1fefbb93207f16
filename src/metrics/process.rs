//! Process families: the build and whether the watcher runs.

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

/// The process families.
#[derive(Clone)]
pub(super) struct ProcessMetrics {
    watcher_up: IntGauge,
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
            "1 while the watcher of the drop directories runs, 0 otherwise.",
        )?;
        registry.register(Box::new(watcher_up.clone()))?;
        Ok(ProcessMetrics { watcher_up })
    }

    pub(super) fn set_watcher_up(&self, up: bool) {
        self.watcher_up.set(i64::from(up));
    }
}
