//! What the daemon does with the Kubernetes API when it has one
//! ([`crate::cluster`]): before reading a bundle it already knows, and again
//! before importing it, it asks the bundle's Lease whether another replica
//! holds or finished it; while importing it holds the Lease; afterwards it
//! records the outcome on the Lease and writes an Event on the pod.
//!
//! The worker calls these few functions and nothing else of the cluster;
//! without a cluster each of them lets the worker go ahead unchanged.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::{
    ApiHealth, BundleEvent, BundleEvents, BundleLeases, Claim, Cluster, LeaseGuard, LeaseOutcome,
};
use crate::state::{BundleRecord, Status};

/// The slack added to a held Lease's remaining time before looking again,
/// so the look comes after its holder's next renewal or its expiry, not
/// just before.
const LOOK_AGAIN_SLACK: Duration = Duration::from_millis(500);

/// The daemon's use of the cluster.
#[derive(Debug, Clone)]
pub(crate) struct Replicas {
    leases: BundleLeases,
    events: Option<BundleEvents>,
    health: Arc<ApiHealth>,
}

/// Whether the worker may go on with a bundle.
pub(crate) enum Go {
    /// Go ahead (holding the Lease when one was claimed).
    Ahead(Option<Box<LeaseGuard>>),
    /// Leave it: another replica finished it.
    Done,
    /// Look again after this long: another replica holds it, or the API
    /// cannot be asked now.
    Wait(Duration),
}

impl Replicas {
    pub(crate) fn new(cluster: &Cluster) -> Self {
        Replicas {
            leases: cluster.leases(),
            events: cluster.events(),
            health: cluster.health(),
        }
    }

    /// Why the API cannot be used now, for `/readyz`.
    pub(crate) fn problem(&self) -> Option<String> {
        self.health.problem()
    }

    /// Deletes finished Leases past their retention, every sweep interval,
    /// until `stop` turns true.
    pub(crate) async fn sweep(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.leases.sweep_interval()) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            match self.leases.sweep().await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(
                    deleted,
                    "deleted finished bundle Leases past their retention"
                ),
                Err(e) => {
                    tracing::warn!(error = %crate::report::error_chain(&e), "cannot sweep finished bundle Leases")
                }
            }
        }
    }

    /// Before reading a bundle whose content this replica identified
    /// before (`id`): leave it if another replica finished it, wait if
    /// another holds it or the API does not answer. Saves hashing a large
    /// bundle again only to learn that.
    pub(crate) async fn before_reading(&self, id: &str) -> Go {
        match self.leases.peek(id).await {
            Ok(None) => Go::Ahead(None),
            Ok(Some(claim)) => self.go(claim),
            Err(e) => self.unavailable(&e),
        }
    }

    /// Before importing content `id` (verified, not finished here): take
    /// its Lease.
    pub(crate) async fn before_import(&self, id: &str, name: &str) -> Go {
        match self.leases.claim(id, name).await {
            Ok(claim) => self.go(claim),
            Err(e) => self.unavailable(&e),
        }
    }

    fn go(&self, claim: Claim) -> Go {
        match claim {
            Claim::Acquired(guard) => Go::Ahead(Some(guard)),
            Claim::HeldElsewhere { holder, retry_in } => {
                tracing::info!(%holder, "another replica is importing this bundle; looking again when its Lease would expire");
                Go::Wait(retry_in + LOOK_AGAIN_SLACK)
            }
            Claim::Finished { outcome, by } => {
                let by = by.unwrap_or_else(|| "another replica".to_owned());
                tracing::info!(%by, ?outcome, "this bundle was finished by another replica; leaving it");
                Go::Done
            }
        }
    }

    fn unavailable(&self, error: &crate::cluster::Error) -> Go {
        let wait = self.leases.duration() / 3;
        tracing::warn!(error = %crate::report::error_chain(error), retry_in = ?wait, "cannot reach the Kubernetes API to coordinate with other replicas; the import waits");
        Go::Wait(wait)
    }

    /// Runs `import` while `lease` is held: `None` when the Lease was lost
    /// first (the import is stopped; another replica may run it).
    pub(crate) async fn while_held<T>(
        lease: Option<&mut LeaseGuard>,
        import: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let Some(lease) = lease else {
            return Some(import.await);
        };
        tokio::select! {
            result = import => Some(result),
            () = lease.lost() => None,
        }
    }

    /// How long to wait after losing a Lease before looking at the bundle
    /// again.
    pub(crate) fn lost_wait(&self) -> Duration {
        self.leases.duration()
    }

    /// After an import attempt: the outcome on the Lease (finished, or
    /// released for a retry) and an Event on the pod, read from the record
    /// the worker wrote.
    pub(crate) async fn after_import(
        &self,
        lease: Option<Box<LeaseGuard>>,
        record: Option<&BundleRecord>,
        name: &str,
    ) {
        let status = record.map(|r| r.status);
        if let Some(lease) = lease {
            match status {
                Some(Status::Imported) => lease.finish(LeaseOutcome::Imported).await,
                Some(Status::Rejected) => lease.finish(LeaseOutcome::Rejected).await,
                _ => lease.release().await,
            }
        }
        let Some(record) = record else { return };
        let event = match record.status {
            Status::Imported => BundleEvent::Imported {
                bundle: name.to_owned(),
                digest: format!("sha256:{}", record.id),
                images: record
                    .pushed
                    .as_ref()
                    .map(|p| p.images.iter().map(|i| i.target.clone()).collect())
                    .unwrap_or_default(),
            },
            Status::Rejected => BundleEvent::Rejected {
                bundle: name.to_owned(),
                digest: format!("sha256:{}", record.id),
                reason: error_of(record),
            },
            Status::Retrying => BundleEvent::Failed {
                bundle: name.to_owned(),
                digest: format!("sha256:{}", record.id),
                error: error_of(record),
            },
            _ => return,
        };
        self.publish(event);
    }

    /// An Event for a bundle rejected before any Lease was taken (its
    /// signature did not verify); `id` is the hex SHA-256 of its file.
    pub(crate) fn rejected(&self, name: &str, id: &str, reason: &str) {
        self.publish(BundleEvent::Rejected {
            bundle: name.to_owned(),
            digest: format!("sha256:{id}"),
            reason: reason.to_owned(),
        });
    }

    fn publish(&self, event: BundleEvent) {
        if let Some(events) = &self.events {
            events.publish(event);
        }
    }
}

fn error_of(record: &BundleRecord) -> String {
    record
        .error
        .as_ref()
        .map_or_else(|| "unknown".to_owned(), |e| e.message.clone())
}
