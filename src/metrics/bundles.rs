//! Bundle families: outcomes, signature checks, import durations, the queue
//! and the time of the last success.

use std::time::{Duration, SystemTime};

use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry,
};

use super::{LabelValue, gauge_value, labelled_counter};

/// Upper bounds of `airlock_import_duration_seconds`: imports take from a
/// second (everything already present) to hours (100 GB over a slow link).
const DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 10800.0,
    21600.0,
];

/// How a bundle ended up, the `outcome` label of `airlock_bundles_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Everything is in the target.
    Imported,
    /// A permanent failure (signature, integrity); never retried.
    Rejected,
    /// A transient failure; the bundle will be retried.
    Failed,
    /// The same content dropped again under another name; nothing to do.
    Duplicate,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        LabelValue::as_str(self)
    }
}

impl LabelValue for Outcome {
    const ALL: &'static [Self] = &[
        Outcome::Imported,
        Outcome::Rejected,
        Outcome::Failed,
        Outcome::Duplicate,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Imported => "imported",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::Duplicate => "duplicate",
        }
    }
}

/// How one import attempt ended, the `outcome` label of
/// `airlock_import_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// Everything is in the target.
    Imported,
    /// A permanent failure found during the import; not retried.
    Rejected,
    /// A transient failure; the bundle will be tried again.
    Failed,
}

impl LabelValue for AttemptOutcome {
    const ALL: &'static [Self] = &[
        AttemptOutcome::Imported,
        AttemptOutcome::Rejected,
        AttemptOutcome::Failed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Imported => "imported",
            AttemptOutcome::Rejected => "rejected",
            AttemptOutcome::Failed => "failed",
        }
    }
}

/// The result of one signature check, the `result` label of
/// `airlock_signature_verifications_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerificationResult {
    /// A trusted key verified the signature.
    Verified,
    /// No trusted key verified it (bad, missing or unreadable signature).
    Rejected,
}

impl VerificationResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        LabelValue::as_str(self)
    }
}

impl LabelValue for VerificationResult {
    const ALL: &'static [Self] = &[VerificationResult::Verified, VerificationResult::Rejected];

    fn as_str(self) -> &'static str {
        match self {
            VerificationResult::Verified => "verified",
            VerificationResult::Rejected => "rejected",
        }
    }
}

/// The bundle families.
#[derive(Clone)]
pub(super) struct BundleMetrics {
    outcomes: IntCounterVec,
    verifications: IntCounterVec,
    duration: HistogramVec,
    queued: IntGauge,
    waiting: IntGauge,
    in_progress: IntGauge,
    last_success: Gauge,
    tags_held: IntCounter,
    unsigned_held: IntCounter,
}

impl BundleMetrics {
    pub(super) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let outcomes = labelled_counter::<Outcome>(
            registry,
            "airlock_bundles_total",
            "Bundles that reached an outcome: imported, rejected (permanent), failed (transient, will be retried) or duplicate (same content under another name).",
            "outcome",
        )?;
        let verifications = labelled_counter::<VerificationResult>(
            registry,
            "airlock_signature_verifications_total",
            "Bundle signature checks by result.",
            "result",
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "airlock_import_duration_seconds",
                "Time from the start of an import attempt to its end, by how it ended: imported, rejected or failed (will be retried).",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["outcome"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        for outcome in AttemptOutcome::ALL {
            duration.get_metric_with_label_values(&[outcome.as_str()])?;
        }
        let queued = IntGauge::new(
            "airlock_bundles_queued",
            "Bundles waiting for an import slot.",
        )?;
        registry.register(Box::new(queued.clone()))?;
        let waiting = IntGauge::new(
            "airlock_bundles_waiting",
            "Settled files in the drop folders without their partner: a bundle without a signature or a signature without its bundle.",
        )?;
        registry.register(Box::new(waiting.clone()))?;
        let in_progress = IntGauge::new("airlock_imports_in_progress", "Imports running now.")?;
        registry.register(Box::new(in_progress.clone()))?;
        let last_success = Gauge::new(
            "airlock_last_success_timestamp_seconds",
            "Unix time at which the last successful import finished (0 before the first).",
        )?;
        registry.register(Box::new(last_success.clone()))?;
        let tags_held = IntCounter::new(
            "airlock_tags_held_total",
            "Images not pushed because their tag already points at other content in the target (imports.on_existing_tag skip or fail-if-different).",
        )?;
        registry.register(Box::new(tags_held.clone()))?;
        let unsigned_held = IntCounter::new(
            "airlock_image_signatures_held_total",
            "Images not pushed because their signatures do not satisfy their trust.image_signatures rule (require: none valid; verify-if-present: present but invalid).",
        )?;
        registry.register(Box::new(unsigned_held.clone()))?;
        Ok(BundleMetrics {
            outcomes,
            verifications,
            duration,
            queued,
            waiting,
            in_progress,
            last_success,
            tags_held,
            unsigned_held,
        })
    }

    pub(super) fn finished(&self, outcome: Outcome) {
        self.outcomes.with_label_values(&[outcome.as_str()]).inc();
    }

    pub(super) fn tags_held(&self, count: usize) {
        self.tags_held.inc_by(count as u64);
    }

    pub(super) fn unsigned_held(&self, count: usize) {
        self.unsigned_held.inc_by(count as u64);
    }

    pub(super) fn verification(&self, result: VerificationResult) {
        self.verifications
            .with_label_values(&[result.as_str()])
            .inc();
    }

    pub(super) fn observe_duration(&self, outcome: AttemptOutcome, duration: Duration) {
        self.duration
            .with_label_values(&[outcome.as_str()])
            .observe(duration.as_secs_f64());
    }

    pub(super) fn set_queued(&self, queued: usize) {
        self.queued.set(gauge_value(queued));
    }

    pub(super) fn set_waiting(&self, waiting: usize) {
        self.waiting.set(gauge_value(waiting));
    }

    pub(super) fn set_in_progress(&self, running: usize) {
        self.in_progress.set(gauge_value(running));
    }

    pub(super) fn mark_success(&self, at: SystemTime) {
        let seconds = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if seconds > self.last_success.get() {
            self.last_success.set(seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;
    use super::super::tests::sample;
    use super::*;

    #[test]
    fn duration_buckets_span_a_second_to_six_hours() {
        assert_eq!(DURATION_BUCKETS.first(), Some(&1.0));
        assert_eq!(DURATION_BUCKETS.last(), Some(&(6.0 * 3600.0)));
        assert!(DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn durations_land_in_their_buckets() {
        let metrics = Metrics::new();
        let imported = AttemptOutcome::Imported;
        metrics.observe_import_duration(imported, Duration::from_millis(500));
        metrics.observe_import_duration(imported, Duration::from_secs(90));
        metrics.observe_import_duration(imported, Duration::from_secs(8 * 3600));
        metrics.observe_import_duration(AttemptOutcome::Failed, Duration::from_secs(2));
        let text = metrics.render();
        let bucket = |le: &str| {
            sample(
                &text,
                &format!(
                    r#"airlock_import_duration_seconds_bucket{{outcome="imported",le="{le}"}}"#
                ),
            )
        };
        assert_eq!(bucket("1"), Some(1.0));
        assert_eq!(bucket("60"), Some(1.0));
        assert_eq!(bucket("120"), Some(2.0));
        assert_eq!(bucket("21600"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
        let count = |outcome: &str| {
            sample(
                &text,
                &format!(r#"airlock_import_duration_seconds_count{{outcome="{outcome}"}}"#),
            )
        };
        assert_eq!(count("imported"), Some(3.0));
        assert_eq!(count("failed"), Some(1.0));
        assert_eq!(count("rejected"), Some(0.0));
    }

    #[test]
    fn a_time_before_the_epoch_does_not_move_the_gauge() {
        let metrics = Metrics::new();
        metrics.mark_success(SystemTime::UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(
            sample(&metrics.render(), "airlock_last_success_timestamp_seconds"),
            Some(0.0)
        );
    }

    #[test]
    fn label_values() {
        let outcomes: Vec<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(outcomes, ["imported", "rejected", "failed", "duplicate"]);
        let results: Vec<_> = VerificationResult::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(results, ["verified", "rejected"]);
        let attempts: Vec<_> = AttemptOutcome::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(attempts, ["imported", "rejected", "failed"]);
    }
}
