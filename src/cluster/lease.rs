//! One `coordination.k8s.io/v1` Lease per bundle, named from its content
//! digest, so that replicas sharing a drop volume import each bundle once.
//!
//! A replica claims the Lease before importing ([`BundleLeases::claim`]),
//! renews it every third of its duration while importing
//! ([`LeaseGuard`]), and records the outcome on it when done
//! ([`LeaseGuard::finish`]). Another replica that finds the Lease held and
//! fresh waits; finds it finished, leaves the bundle alone; finds it expired
//! (its holder died), takes it over and imports, resuming from what the
//! registry already has. Every write carries the `resourceVersion` it was
//! based on, so of two replicas racing for one Lease exactly one wins (the
//! other gets 409 and looks again). Finished Leases are deleted after the
//! retention period ([`BundleLeases::sweep`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::health::ApiHealth;
use super::{Result, request};

/// What every airlock Lease carries, to find them again.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "airlock");
/// The label holding a Lease's state: `importing`, `released`, `imported`
/// or `rejected`.
const STATE_LABEL: &str = "airlock/state";
/// The annotation holding the bundle's digest.
const BUNDLE_ANNOTATION: &str = "airlock/bundle";
/// The annotation holding the file name the bundle was imported from.
const NAME_ANNOTATION: &str = "airlock/name";
/// The annotation holding when the outcome was recorded (RFC 3339).
const FINISHED_ANNOTATION: &str = "airlock/finished";

const STATE_IMPORTING: &str = "importing";
const STATE_RELEASED: &str = "released";

/// How many times a claim looks again after losing a race (409) before it
/// reports the bundle as held elsewhere; each round is one GET and one
/// write, and losing this often means other replicas are active on it.
const MAX_CLAIM_ROUNDS: usize = 5;

/// How many times recording an outcome is tried before giving up; the
/// outcome is then lost and the Lease expires (another replica then finds
/// everything in the registry and pushes nothing).
const FINISH_ATTEMPTS: u32 = 5;

/// The Lease name of a bundle: `airlock-` and the hex SHA-256 of its file
/// (72 characters, a valid object name).
pub fn lease_name(bundle_hex: &str) -> String {
    format!("airlock-{bundle_hex}")
}

/// How a bundle's import ended, as recorded on its Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// Imported: no replica imports it again.
    Imported,
    /// Rejected (signature or content): no replica tries again.
    Rejected,
}

impl LeaseOutcome {
    fn label(self) -> &'static str {
        match self {
            LeaseOutcome::Imported => "imported",
            LeaseOutcome::Rejected => "rejected",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        match label {
            "imported" => Some(LeaseOutcome::Imported),
            "rejected" => Some(LeaseOutcome::Rejected),
            _ => None,
        }
    }
}

/// The answer to [`BundleLeases::claim`].
#[derive(Debug)]
pub enum Claim {
    /// This replica holds the Lease now: import, then finish or release.
    Acquired(Box<LeaseGuard>),
    /// Another replica holds it and renews it: look again after `retry_in`.
    HeldElsewhere {
        /// The holder's identity.
        holder: String,
        /// When its Lease would expire if it stopped renewing.
        retry_in: Duration,
    },
    /// The bundle is done; leave it alone.
    Finished {
        /// How it ended.
        outcome: LeaseOutcome,
        /// The replica that finished it, if the Lease says.
        by: Option<String>,
    },
}

/// What a Lease says about its bundle, seen from `me` at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Standing {
    Finished(LeaseOutcome, Option<String>),
    Free,
    Mine,
    Held { holder: String, remaining: Duration },
    Expired { holder: String },
}

fn standing(lease: &Lease, me: &str, now: Timestamp) -> Standing {
    let labels = lease.metadata.labels.as_ref();
    let state = labels.and_then(|l| l.get(STATE_LABEL)).map(String::as_str);
    let spec = lease.spec.as_ref();
    let holder = spec.and_then(|s| s.holder_identity.clone());
    if let Some(outcome) = state.and_then(LeaseOutcome::from_label) {
        return Standing::Finished(outcome, holder);
    }
    let Some(holder) = holder.filter(|h| !h.is_empty()) else {
        return Standing::Free;
    };
    if state == Some(STATE_RELEASED) {
        return Standing::Free;
    }
    if holder == me {
        return Standing::Mine;
    }
    let seconds = spec
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or_default();
    let renewed = spec
        .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
        .map(|t| t.0);
    let Some(renewed) = renewed else {
        return Standing::Expired { holder };
    };
    let remaining = SignedDuration::from_secs(i64::from(seconds)) - now.duration_since(renewed);
    match Duration::try_from(remaining) {
        Ok(remaining) if !remaining.is_zero() => Standing::Held { holder, remaining },
        _ => Standing::Expired { holder },
    }
}

/// The per-bundle Leases of one namespace, for one replica.
#[derive(Clone)]
pub struct BundleLeases {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
    retention: Duration,
    health: Arc<ApiHealth>,
}

impl std::fmt::Debug for BundleLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleLeases")
            .field("identity", &self.identity)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

impl BundleLeases {
    pub(super) fn new(
        client: Client,
        namespace: &str,
        identity: &str,
        duration: Duration,
        retention: Duration,
        health: Arc<ApiHealth>,
    ) -> Self {
        BundleLeases {
            api: Api::namespaced(client, namespace),
            identity: identity.to_owned(),
            duration,
            retention,
            health,
        }
    }

    /// How long a Lease lasts without renewal.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// How often [`BundleLeases::sweep`] should run: half the retention,
    /// between one lease duration and an hour.
    pub fn sweep_interval(&self) -> Duration {
        (self.retention / 2).clamp(self.duration, Duration::from_secs(3600))
    }

    async fn get(&self, name: &str) -> Result<Option<Lease>> {
        let result = request("get lease", name, self.api.get_opt(name)).await;
        self.health.observe(&result);
        result
    }

    async fn create(&self, lease: &Lease, name: &str) -> Result<Lease> {
        let result = request(
            "create lease",
            name,
            self.api.create(&PostParams::default(), lease),
        )
        .await;
        self.health.observe(&result);
        result
    }

    async fn replace(&self, lease: &Lease, name: &str) -> Result<Lease> {
        let result = request(
            "update lease",
            name,
            self.api.replace(name, &PostParams::default(), lease),
        )
        .await;
        self.health.observe(&result);
        result
    }

    /// What the Lease of a bundle says, without taking it: `None` when this
    /// replica may go ahead (no Lease, or a free, expired or own one).
    /// Used before re-reading a bundle this replica has seen before.
    pub async fn peek(&self, bundle_hex: &str) -> Result<Option<Claim>> {
        let name = lease_name(bundle_hex);
        let Some(lease) = self.get(&name).await? else {
            return Ok(None);
        };
        Ok(match standing(&lease, &self.identity, Timestamp::now()) {
            Standing::Finished(outcome, by) => Some(Claim::Finished { outcome, by }),
            Standing::Held { holder, remaining } => Some(Claim::HeldElsewhere {
                holder,
                retry_in: remaining,
            }),
            Standing::Free | Standing::Mine | Standing::Expired { .. } => None,
        })
    }

    /// Takes the Lease of a bundle for this replica, unless another replica
    /// holds it or the bundle is finished. `file_name` is recorded for
    /// operators.
    pub async fn claim(&self, bundle_hex: &str, file_name: &str) -> Result<Claim> {
        let name = lease_name(bundle_hex);
        for _ in 0..MAX_CLAIM_ROUNDS {
            let now = Timestamp::now();
            let written = match self.get(&name).await? {
                None => {
                    let lease = self.fresh_lease(&name, bundle_hex, file_name, now);
                    self.create(&lease, &name).await
                }
                Some(current) => match standing(&current, &self.identity, now) {
                    Standing::Finished(outcome, by) => return Ok(Claim::Finished { outcome, by }),
                    Standing::Held { holder, remaining } => {
                        return Ok(Claim::HeldElsewhere {
                            holder,
                            retry_in: remaining,
                        });
                    }
                    Standing::Expired { holder } => {
                        tracing::info!(lease = %name, previous = %holder, "the replica holding this bundle stopped renewing its Lease; taking it over");
                        let lease = self.taken_over(current, file_name, now);
                        self.replace(&lease, &name).await
                    }
                    Standing::Free | Standing::Mine => {
                        let lease = self.taken_over(current, file_name, now);
                        self.replace(&lease, &name).await
                    }
                },
            };
            match written {
                Ok(lease) => return Ok(Claim::Acquired(Box::new(self.guard(name, lease)))),
                // Another replica wrote between our read and our write.
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Claim::HeldElsewhere {
            holder: "another replica".to_owned(),
            retry_in: self.duration,
        })
    }

    fn fresh_lease(&self, name: &str, bundle_hex: &str, file_name: &str, now: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                    (STATE_LABEL.to_owned(), STATE_IMPORTING.to_owned()),
                ])),
                annotations: Some(BTreeMap::from([
                    (BUNDLE_ANNOTATION.to_owned(), format!("sha256:{bundle_hex}")),
                    (NAME_ANNOTATION.to_owned(), file_name.to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration_seconds()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }

    /// `current` (with its resourceVersion) held by this replica from now.
    fn taken_over(&self, mut current: Lease, file_name: &str, now: Timestamp) -> Lease {
        current
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(STATE_LABEL.to_owned(), STATE_IMPORTING.to_owned());
        current
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(NAME_ANNOTATION.to_owned(), file_name.to_owned());
        let spec = current.spec.get_or_insert_with(LeaseSpec::default);
        let changed_hands = spec.holder_identity.as_deref() != Some(self.identity.as_str());
        if changed_hands {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.duration_seconds());
        spec.acquire_time = Some(MicroTime(now));
        spec.renew_time = Some(MicroTime(now));
        current
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    fn guard(&self, name: String, lease: Lease) -> LeaseGuard {
        let (lost_tx, lost_rx) = watch::channel(false);
        let (latest_tx, latest_rx) = watch::channel(lease);
        let renewer = tokio::spawn(renew(self.clone(), name.clone(), latest_tx, lost_tx));
        LeaseGuard {
            leases: self.clone(),
            name,
            latest: latest_rx,
            lost: lost_rx,
            renewer: Some(renewer),
        }
    }

    /// Deletes finished Leases older than the retention period, and
    /// released ones not renewed for as long. Safe to call at any time; the
    /// daemon calls it every [`BundleLeases::sweep_interval`]. Returns how
    /// many were deleted.
    pub async fn sweep(&self) -> Result<usize> {
        let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        let result = request(
            "list leases",
            "",
            self.api.list(&ListParams::default().labels(&selector)),
        )
        .await;
        self.health.observe(&result);
        let now = Timestamp::now();
        let mut deleted = 0;
        for lease in result?.items {
            if !self.is_stale(&lease, now) {
                continue;
            }
            let Some(name) = lease.metadata.name.clone() else {
                continue;
            };
            // Only the version we judged: a Lease taken again meanwhile stays.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: lease.metadata.resource_version.clone(),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match request("delete lease", &name, self.api.delete(&name, &params)).await {
                Ok(_) => {
                    tracing::debug!(lease = %name, "deleted a finished bundle Lease past its retention");
                    deleted += 1;
                }
                Err(e) if e.is_conflict() || e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    fn is_stale(&self, lease: &Lease, now: Timestamp) -> bool {
        let labels = lease.metadata.labels.as_ref();
        let state = labels.and_then(|l| l.get(STATE_LABEL)).map(String::as_str);
        let since = match state {
            Some(s) if LeaseOutcome::from_label(s).is_some() => lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(FINISHED_ANNOTATION))
                .and_then(|t| t.parse::<Timestamp>().ok()),
            Some(STATE_RELEASED) => lease
                .spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0),
            _ => None,
        };
        let Ok(retention) = SignedDuration::try_from(self.retention) else {
            return false;
        };
        since.is_some_and(|t| now.duration_since(t) >= retention)
    }
}

/// Renews the Lease every third of its duration until the guard stops it.
/// Says the Lease is lost when another replica took it over (a 409 whose
/// fresh read shows another holder) or when it could not be renewed for a
/// whole duration, after which another replica may take it over.
async fn renew(
    leases: BundleLeases,
    name: String,
    latest: watch::Sender<Lease>,
    lost: watch::Sender<bool>,
) {
    let period = leases.duration / 3;
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let mut lease = latest.borrow().clone();
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match leases.replace(&lease, &name).await {
            Ok(renewed) => {
                last_renewed = tokio::time::Instant::now();
                let _ = latest.send(renewed);
            }
            Err(e) if e.is_conflict() => match leases.get(&name).await {
                Ok(Some(current))
                    if standing(&current, &leases.identity, Timestamp::now()) == Standing::Mine =>
                {
                    let _ = latest.send(current);
                }
                Ok(_) => {
                    tracing::warn!(lease = %name, "another replica took this bundle's Lease over; stopping the import");
                    let _ = lost.send(true);
                    return;
                }
                Err(e) => {
                    tracing::warn!(lease = %name, error = %crate::report::error_chain(&e), "cannot read the bundle's Lease")
                }
            },
            Err(e) => {
                tracing::warn!(lease = %name, error = %crate::report::error_chain(&e), "cannot renew the bundle's Lease");
            }
        }
        if last_renewed.elapsed() >= leases.duration {
            tracing::warn!(lease = %name, "the bundle's Lease was not renewed for its whole duration; stopping the import so another replica cannot import it at the same time");
            let _ = lost.send(true);
            return;
        }
    }
}

/// This replica's hold on a bundle's Lease, renewed in the background until
/// [`finish`](LeaseGuard::finish), [`release`](LeaseGuard::release) or drop
/// (after which the Lease simply expires).
pub struct LeaseGuard {
    leases: BundleLeases,
    name: String,
    latest: watch::Receiver<Lease>,
    lost: watch::Receiver<bool>,
    renewer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("name", &self.name)
            .field("holder", &self.leases.identity)
            .finish_non_exhaustive()
    }
}

impl LeaseGuard {
    /// The Lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Resolves when the Lease is lost (taken over, or not renewable for its
    /// whole duration): the import must stop, another replica may run it.
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    fn stop_renewing(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }

    /// Records the outcome on the Lease, so no replica imports the bundle
    /// again. Tried a few times; a failure is logged (the Lease then
    /// expires, and a replica that takes it over finds everything in place).
    pub async fn finish(mut self, outcome: LeaseOutcome) {
        self.stop_renewing();
        let name = self.name.clone();
        let write = |mut lease: Lease| {
            lease
                .metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(STATE_LABEL.to_owned(), outcome.label().to_owned());
            lease
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(FINISHED_ANNOTATION.to_owned(), Timestamp::now().to_string());
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(MicroTime(Timestamp::now()));
            }
            lease
        };
        self.write_final(write, "record the outcome on").await;
        tracing::debug!(lease = %name, outcome = outcome.label(), "bundle Lease finished");
    }

    /// Gives the Lease up without an outcome (a transient failure), so that
    /// whichever replica retries first may take it.
    pub async fn release(mut self) {
        self.stop_renewing();
        let write = |mut lease: Lease| {
            lease
                .metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(STATE_LABEL.to_owned(), STATE_RELEASED.to_owned());
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(MicroTime(Timestamp::now()));
            }
            lease
        };
        self.write_final(write, "release").await;
    }

    async fn write_final(&mut self, change: impl Fn(Lease) -> Lease, what: &str) {
        let mut lease = self.latest.borrow().clone();
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=FINISH_ATTEMPTS {
            match self
                .leases
                .replace(&change(lease.clone()), &self.name)
                .await
            {
                Ok(_) => return,
                Err(e) if e.is_conflict() => match self.leases.get(&self.name).await {
                    Ok(Some(current))
                        if standing(&current, &self.leases.identity, Timestamp::now())
                            == Standing::Mine =>
                    {
                        lease = current;
                        continue;
                    }
                    Ok(_) => {
                        tracing::warn!(lease = %self.name, "cannot {what} the bundle's Lease: another replica holds it now");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(lease = %self.name, attempt, error = %crate::report::error_chain(&e), "cannot {what} the bundle's Lease")
                    }
                },
                Err(e) => {
                    tracing::warn!(lease = %self.name, attempt, error = %crate::report::error_chain(&e), "cannot {what} the bundle's Lease")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.leases.duration / 3);
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.stop_renewing();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(
        now: Timestamp,
        holder: Option<&str>,
        state: &str,
        renewed_secs_ago: i64,
        duration: i32,
    ) -> Lease {
        Lease {
            metadata: ObjectMeta {
                labels: Some(BTreeMap::from([(STATE_LABEL.to_owned(), state.to_owned())])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_fresh_lease_of_another_replica_is_held_and_an_old_one_expired() {
        let now = Timestamp::now();
        let held = standing(&lease(now, Some("b"), STATE_IMPORTING, 5, 15), "a", now);
        assert!(
            matches!(&held, Standing::Held { holder, remaining } if holder == "b" && *remaining == Duration::from_secs(10)),
            "{held:?}"
        );
        assert_eq!(
            standing(&lease(now, Some("b"), STATE_IMPORTING, 16, 15), "a", now),
            Standing::Expired {
                holder: "b".to_owned()
            }
        );
    }

    #[test]
    fn own_released_and_finished_leases_are_told_apart() {
        let now = Timestamp::now();
        assert_eq!(
            standing(&lease(now, Some("a"), STATE_IMPORTING, 1, 15), "a", now),
            Standing::Mine
        );
        assert_eq!(
            standing(&lease(now, Some("b"), STATE_RELEASED, 1, 15), "a", now),
            Standing::Free
        );
        assert_eq!(
            standing(&lease(now, None, STATE_IMPORTING, 1, 15), "a", now),
            Standing::Free
        );
        assert_eq!(
            standing(&lease(now, Some("b"), "imported", 1, 15), "a", now),
            Standing::Finished(LeaseOutcome::Imported, Some("b".to_owned()))
        );
    }

    #[test]
    fn lease_names_are_valid_object_names() {
        let name = lease_name(&"ab".repeat(32));
        assert_eq!(name.len(), 72);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
