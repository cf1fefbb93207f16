//! Prometheus metrics of the daemon (`airlock watch`).
//!
//! Every family lives in a private [`prometheus::Registry`] owned by
//! [`Metrics`] (never the process-global default registry), and every label
//! value comes from a small closed enum, so the number of series is fixed at
//! start-up: no file names, digests or repositories ever become labels.
//! All label combinations are created up front with a value of zero, so
//! `rate()` and `increase()` work from the first scrape.
//!
//! The families are grouped by what they describe, one file each: bundles
//! (outcomes, signature checks, durations, queue), blobs (what was
//! transferred), registry (requests and retries) and process (build and
//! watcher).

mod blobs;
mod bundles;
mod process;
mod registry;

use std::fmt;
use std::time::{Duration, SystemTime};

use prometheus::{IntCounterVec, Opts, Registry, TextEncoder};

use crate::progress::Progress;

pub use blobs::ImportTracker;
pub use bundles::{AttemptOutcome, Outcome, VerificationResult};
pub use registry::{RequestMethod, RetryReason, StatusClass};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Every metric the daemon exports, registered in one private registry.
///
/// Cloning is cheap and clones share the same counters (the `prometheus`
/// types are reference-counted inside), so a clone can be handed to each
/// task; `Arc<Metrics>` works just as well.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    bundles: bundles::BundleMetrics,
    blobs: blobs::BlobMetrics,
    requests: registry::RegistryMetrics,
    process: process::ProcessMetrics,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family, all series at zero, with
    /// `airlock_build_info` set and the watcher marked down.
    pub fn new() -> Self {
        // Registration can only fail for an invalid or duplicate metric name or
        // label name, or for a label count that does not match; every name and
        // label here is a constant, registered once into a registry created
        // just above, and the unit tests construct `Metrics` and render every
        // family, so a mistake fails the tests, never a running daemon.
        Self::build().expect("constant metric definitions register cleanly")
    }

    fn build() -> prometheus::Result<Self> {
        let registry = Registry::new();
        Ok(Metrics {
            bundles: bundles::BundleMetrics::register(&registry)?,
            blobs: blobs::BlobMetrics::register(&registry)?,
            requests: registry::RegistryMetrics::register(&registry)?,
            process: process::ProcessMetrics::register(&registry)?,
            registry,
        })
    }

    /// Counts a bundle that reached an outcome (`airlock_bundles_total`).
    pub fn bundle_finished(&self, outcome: Outcome) {
        self.bundles.finished(outcome);
    }

    /// Counts images held back by the tag policy (`airlock_tags_held_total`).
    pub fn tags_held(&self, count: usize) {
        self.bundles.tags_held(count);
    }

    /// Counts images held back by their image signature rule
    /// (`airlock_image_signatures_held_total`).
    pub fn unsigned_held(&self, count: usize) {
        self.bundles.unsigned_held(count);
    }

    /// Counts one signature check (`airlock_signature_verifications_total`).
    pub fn verification(&self, result: VerificationResult) {
        self.bundles.verification(result);
    }

    /// Counts the blob families (`airlock_blobs_pushed_total`,
    /// `airlock_pushed_bytes_total`, `airlock_blobs_skipped_total`,
    /// `airlock_blobs_mounted_total`) from what an import reports into
    /// `progress`, at every scrape while it runs and when the returned
    /// tracker is dropped.
    pub fn track_import(&self, progress: &Progress) -> ImportTracker {
        self.blobs.track(progress)
    }

    /// Records how long one import attempt took and how it ended
    /// (`airlock_import_duration_seconds{outcome}`).
    pub fn observe_import_duration(&self, outcome: AttemptOutcome, duration: Duration) {
        self.bundles.observe_duration(outcome, duration);
    }

    /// Sets how many bundles wait for an import slot (`airlock_bundles_queued`).
    pub fn set_queued(&self, queued: usize) {
        self.bundles.set_queued(queued);
    }

    /// Sets how many drop-folder files wait for their partner
    /// (`airlock_bundles_waiting`).
    pub fn set_waiting(&self, waiting: usize) {
        self.bundles.set_waiting(waiting);
    }

    /// Sets how many imports run now (`airlock_imports_in_progress`).
    pub fn set_in_progress(&self, running: usize) {
        self.bundles.set_in_progress(running);
    }

    /// Counts one retry of a bundle after a transient failure
    /// (`airlock_retries_total`).
    pub fn retry(&self, reason: RetryReason) {
        self.requests.retry(reason);
    }

    /// Counts one HTTP exchange with the registry
    /// (`airlock_registry_requests_total`). `method` is the HTTP method
    /// (anything but the six the distribution API uses counts as `OTHER`);
    /// `status` is `None` when no response arrived (connection error or
    /// timeout).
    pub fn registry_request(&self, method: &str, status: Option<u16>) {
        self.requests
            .request(RequestMethod::from_name(method), StatusClass::of(status));
    }

    /// Records a successful import finishing at `at`
    /// (`airlock_last_success_timestamp_seconds`). The gauge never moves
    /// back, so imports finishing out of order keep the latest time.
    pub fn mark_success(&self, at: SystemTime) {
        self.bundles.mark_success(at);
    }

    /// Counts one listing of the drop directories.
    pub fn drop_listed(&self) {
        self.process.drop_listed();
    }

    /// Sets `airlock_watcher_up` to 1 while the watcher runs and every drop
    /// directory is watched, 0 otherwise.
    pub fn set_watcher_up(&self, up: bool) {
        self.process.set_watcher_up(up);
    }

    /// Renders every family in the Prometheus text format ([`CONTENT_TYPE`]).
    ///
    /// A family that cannot be encoded (which the fixed definitions here
    /// rule out) is logged and left out rather than failing the scrape.
    pub fn render(&self) -> String {
        self.blobs.count_running();
        let encoder = TextEncoder::new();
        let mut out = String::new();
        for family in self.registry.gather() {
            let mut text = String::new();
            match encoder.encode_utf8(std::slice::from_ref(&family), &mut text) {
                Ok(()) => out.push_str(&text),
                Err(error) => {
                    tracing::error!(family = family.name(), %error, "cannot encode a metric family");
                }
            }
        }
        out
    }
}

impl crate::push::registry::RequestObserver for Metrics {
    fn observe(&self, method: &str, status: Option<u16>) {
        self.registry_request(method, status);
    }
}

/// A label's closed set of values.
trait LabelValue: Copy + 'static {
    /// Every value, to create all series up front.
    const ALL: &'static [Self];
    /// The value as exported.
    fn as_str(self) -> &'static str;
}

/// Registers a counter family with one label and creates its series at zero.
fn labelled_counter<L: LabelValue>(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
) -> prometheus::Result<IntCounterVec> {
    let counter = IntCounterVec::new(Opts::new(name, help), &[label])?;
    registry.register(Box::new(counter.clone()))?;
    for value in L::ALL {
        counter.get_metric_with_label_values(&[value.as_str()])?;
    }
    Ok(counter)
}

/// Converts a count to a gauge value, saturating.
fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `series` (name and labels exactly as
    /// rendered), if present.
    pub(super) fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok())?
            })
    }

    const FAMILIES: &[(&str, &str)] = &[
        ("airlock_bundles_total", "counter"),
        ("airlock_signature_verifications_total", "counter"),
        ("airlock_blobs_pushed_total", "counter"),
        ("airlock_pushed_bytes_total", "counter"),
        ("airlock_blobs_skipped_total", "counter"),
        ("airlock_blobs_mounted_total", "counter"),
        ("airlock_import_duration_seconds", "histogram"),
        ("airlock_bundles_queued", "gauge"),
        ("airlock_bundles_waiting", "gauge"),
        ("airlock_imports_in_progress", "gauge"),
        ("airlock_retries_total", "counter"),
        ("airlock_registry_requests_total", "counter"),
        ("airlock_last_success_timestamp_seconds", "gauge"),
        ("airlock_tags_held_total", "counter"),
        ("airlock_image_signatures_held_total", "counter"),
        ("airlock_build_info", "gauge"),
        ("airlock_watcher_up", "gauge"),
        ("airlock_drop_listings_total", "counter"),
    ];

    #[test]
    fn render_contains_every_family_with_help_and_type() {
        let text = Metrics::new().render();
        for (name, kind) in FAMILIES {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} missing:\n{text}"
            );
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no help"
            );
        }
        let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(families, FAMILIES.len(), "unexpected families:\n{text}");
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for (name, kind) in FAMILIES {
            assert!(name.starts_with("airlock_"), "{name}");
            assert_eq!(name.ends_with("_total"), *kind == "counter", "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
    }

    #[test]
    fn series_are_created_at_zero() {
        let text = Metrics::new().render();
        assert_eq!(
            sample(&text, r#"airlock_bundles_total{outcome="duplicate"}"#),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, r#"airlock_retries_total{reason="rate_limited"}"#),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"airlock_registry_requests_total{method="PATCH",status_class="5xx"}"#
            ),
            Some(0.0)
        );
        assert_eq!(sample(&text, "airlock_watcher_up"), Some(0.0));
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            sample(
                &text,
                &format!(r#"airlock_build_info{{version="{version}"}}"#)
            ),
            Some(1.0)
        );
    }

    #[test]
    fn label_values_stay_within_their_enums() {
        let metrics = Metrics::new();
        let before = metrics.render().lines().count();
        for method in ["GET", "get", "BREW", "", "PROPFIND", "x\"y\n"] {
            for status in [
                None,
                Some(0),
                Some(101),
                Some(204),
                Some(302),
                Some(404),
                Some(503),
                Some(999),
            ] {
                metrics.registry_request(method, status);
            }
        }
        let text = metrics.render();
        assert_eq!(text.lines().count(), before, "new series appeared:\n{text}");
        assert_eq!(
            sample(
                &text,
                r#"airlock_registry_requests_total{method="OTHER",status_class="error"}"#
            ),
            // "get", "BREW", "", "PROPFIND" and the odd one, each with None, 0, 101 and 999.
            Some(20.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"airlock_registry_requests_total{method="GET",status_class="4xx"}"#
            ),
            Some(1.0)
        );
    }

    #[test]
    fn counters_add_up() {
        let metrics = Metrics::new();
        metrics.bundle_finished(Outcome::Imported);
        metrics.bundle_finished(Outcome::Imported);
        metrics.bundle_finished(Outcome::Rejected);
        metrics.bundle_finished(Outcome::Failed);
        metrics.bundle_finished(Outcome::Duplicate);
        metrics.verification(VerificationResult::Verified);
        metrics.verification(VerificationResult::Verified);
        metrics.verification(VerificationResult::Rejected);
        for (pushed, bytes, present, mounted) in [(3, 1000, 2, 1), (1, 24, 0, 4)] {
            let progress = Progress::new();
            let _tracker = metrics.track_import(&progress);
            for _ in 0..pushed {
                progress.add_blob_uploaded(1);
            }
            progress.add_pushed_bytes(bytes);
            for _ in 0..present {
                progress.add_blob_present();
            }
            for _ in 0..mounted {
                progress.add_blob_mounted();
            }
        }
        metrics.retry(RetryReason::Unavailable);
        metrics.retry(RetryReason::Unavailable);
        metrics.retry(RetryReason::Timeout);
        metrics.registry_request("HEAD", Some(200));
        metrics.registry_request("HEAD", Some(404));
        metrics.registry_request("PUT", Some(201));
        metrics.registry_request("POST", None);
        let text = metrics.render();
        let expect = [
            (r#"airlock_bundles_total{outcome="imported"}"#, 2.0),
            (r#"airlock_bundles_total{outcome="rejected"}"#, 1.0),
            (r#"airlock_bundles_total{outcome="failed"}"#, 1.0),
            (r#"airlock_bundles_total{outcome="duplicate"}"#, 1.0),
            (
                r#"airlock_signature_verifications_total{result="verified"}"#,
                2.0,
            ),
            (
                r#"airlock_signature_verifications_total{result="rejected"}"#,
                1.0,
            ),
            ("airlock_blobs_pushed_total", 4.0),
            ("airlock_pushed_bytes_total", 1024.0),
            ("airlock_blobs_skipped_total", 2.0),
            ("airlock_blobs_mounted_total", 5.0),
            (r#"airlock_retries_total{reason="unavailable"}"#, 2.0),
            (r#"airlock_retries_total{reason="timeout"}"#, 1.0),
            (r#"airlock_retries_total{reason="other"}"#, 0.0),
            (
                r#"airlock_registry_requests_total{method="HEAD",status_class="2xx"}"#,
                1.0,
            ),
            (
                r#"airlock_registry_requests_total{method="HEAD",status_class="4xx"}"#,
                1.0,
            ),
            (
                r#"airlock_registry_requests_total{method="PUT",status_class="2xx"}"#,
                1.0,
            ),
            (
                r#"airlock_registry_requests_total{method="POST",status_class="error"}"#,
                1.0,
            ),
        ];
        for (series, value) in expect {
            assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
        }
    }

    #[test]
    fn blob_counters_move_while_an_import_runs_and_count_each_event_once() {
        let metrics = Metrics::new();
        let progress = Progress::new();
        let tracker = metrics.track_import(&progress);
        progress.add_pushed_bytes(8 << 20);
        progress.add_blob_uploaded(8 << 20);
        let text = metrics.render();
        assert_eq!(sample(&text, "airlock_pushed_bytes_total"), Some(8388608.0));
        assert_eq!(sample(&text, "airlock_blobs_pushed_total"), Some(1.0));
        // Rendering again adds nothing that was counted already.
        let text = metrics.render();
        assert_eq!(sample(&text, "airlock_pushed_bytes_total"), Some(8388608.0));
        progress.add_pushed_bytes(1);
        progress.add_blob_mounted();
        drop(tracker);
        // Events after the tracker ends are not the daemon's to count.
        progress.add_pushed_bytes(1000);
        let text = metrics.render();
        assert_eq!(sample(&text, "airlock_pushed_bytes_total"), Some(8388609.0));
        assert_eq!(sample(&text, "airlock_blobs_mounted_total"), Some(1.0));
    }

    #[test]
    fn gauges_follow_the_latest_value() {
        let metrics = Metrics::new();
        metrics.set_queued(7);
        metrics.set_queued(3);
        metrics.set_waiting(4);
        metrics.set_waiting(1);
        metrics.set_in_progress(2);
        metrics.set_watcher_up(true);
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let earlier = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        metrics.mark_success(later);
        metrics.mark_success(earlier);
        let text = metrics.render();
        assert_eq!(sample(&text, "airlock_bundles_queued"), Some(3.0));
        assert_eq!(sample(&text, "airlock_bundles_waiting"), Some(1.0));
        assert_eq!(sample(&text, "airlock_imports_in_progress"), Some(2.0));
        assert_eq!(sample(&text, "airlock_watcher_up"), Some(1.0));
        assert_eq!(
            sample(&text, "airlock_last_success_timestamp_seconds"),
            Some(1_700_000_100.0)
        );
        metrics.set_watcher_up(false);
        assert_eq!(sample(&metrics.render(), "airlock_watcher_up"), Some(0.0));
    }

    #[test]
    fn clones_share_counters() {
        let metrics = Metrics::new();
        let clone = metrics.clone();
        clone.bundle_finished(Outcome::Imported);
        assert_eq!(
            sample(
                &metrics.render(),
                r#"airlock_bundles_total{outcome="imported"}"#
            ),
            Some(1.0)
        );
    }

    #[test]
    fn observer_counts_requests() {
        use crate::push::registry::RequestObserver;
        let metrics = Metrics::new();
        let observer: &dyn RequestObserver = &metrics;
        observer.observe("DELETE", Some(202));
        assert_eq!(
            sample(
                &metrics.render(),
                r#"airlock_registry_requests_total{method="DELETE",status_class="2xx"}"#
            ),
            Some(1.0)
        );
    }
}
