//! Kubernetes Events on the pod for each bundle outcome, written with kube's
//! [`Recorder`] (events.k8s.io/v1: one POST, then PATCHes that grow a series
//! when the same reason repeats). An Event is a courtesy to operators: it is
//! sent in the background with a time limit, and a failure is logged, never
//! returned, so it can never hold up or fail an import.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::Error;

/// The reporting controller named in every Event.
pub const REPORTING_CONTROLLER: &str = "airlock";

/// The longest note an Event carries: the API refuses notes over 1 KiB.
const MAX_NOTE_BYTES: usize = 1024;

/// What happened to a bundle, as an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleEvent {
    /// Imported: the note names the bundle, its digest and its images.
    Imported {
        /// The bundle's file name.
        bundle: String,
        /// `sha256:<hex>` of the file.
        digest: String,
        /// The target references of the images pushed.
        images: Vec<String>,
    },
    /// Rejected for good (signature, content).
    Rejected {
        /// The bundle's file name.
        bundle: String,
        /// `sha256:<hex>` of the file.
        digest: String,
        /// The reason, one line.
        reason: String,
    },
    /// A transient failure; the import is retried.
    Failed {
        /// The bundle's file name.
        bundle: String,
        /// `sha256:<hex>` of the file.
        digest: String,
        /// What failed, one line.
        error: String,
    },
}

impl BundleEvent {
    /// The Event's reason: a short UpperCamelCase word, as
    /// `kubectl get events --field-selector reason=…` filters by.
    pub fn reason(&self) -> &'static str {
        match self {
            BundleEvent::Imported { .. } => "BundleImported",
            BundleEvent::Rejected { .. } => "BundleRejected",
            BundleEvent::Failed { .. } => "BundleImportFailed",
        }
    }

    fn digest(&self) -> &str {
        match self {
            BundleEvent::Imported { digest, .. }
            | BundleEvent::Rejected { digest, .. }
            | BundleEvent::Failed { digest, .. } => digest,
        }
    }

    fn event_type(&self) -> EventType {
        match self {
            BundleEvent::Imported { .. } => EventType::Normal,
            BundleEvent::Rejected { .. } | BundleEvent::Failed { .. } => EventType::Warning,
        }
    }

    fn action(&self) -> &'static str {
        match self {
            BundleEvent::Imported { .. } | BundleEvent::Failed { .. } => "Import",
            BundleEvent::Rejected { .. } => "Verify",
        }
    }

    /// The human-readable note, at most 1 KiB.
    pub fn note(&self) -> String {
        let note = match self {
            BundleEvent::Imported {
                bundle,
                digest,
                images,
            } => {
                let count = images.len();
                let noun = if count == 1 { "image" } else { "images" };
                format!(
                    "{bundle} ({digest}) imported: {count} {noun}: {}",
                    images.join(", ")
                )
            }
            BundleEvent::Rejected { bundle, reason, .. } => {
                format!("{bundle} rejected: {reason}")
            }
            BundleEvent::Failed { bundle, error, .. } => {
                format!("{bundle} import failed, will retry: {error}")
            }
        };
        clip(note)
    }
}

fn clip(mut note: String) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note;
    }
    let mut end = MAX_NOTE_BYTES - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push('…');
    note
}

/// Writes Events about bundles on this replica's pod.
#[derive(Clone)]
pub struct BundleEvents {
    recorder: Recorder,
    pod: ObjectReference,
}

impl std::fmt::Debug for BundleEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleEvents")
            .field("pod", &self.pod.name)
            .finish_non_exhaustive()
    }
}

impl BundleEvents {
    pub(super) fn new(client: Client, namespace: &str, pod_name: &str) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance: Some(pod_name.to_owned()),
        };
        BundleEvents {
            recorder: Recorder::new(client, reporter),
            pod: ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: Some(pod_name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectReference::default()
            },
        }
    }

    fn lease_of(&self, digest: &str) -> ObjectReference {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        ObjectReference {
            api_version: Some("coordination.k8s.io/v1".to_owned()),
            kind: Some("Lease".to_owned()),
            name: Some(super::lease_name(hex)),
            namespace: self.pod.namespace.clone(),
            ..ObjectReference::default()
        }
    }

    /// Sends `event` in the background and returns at once.
    pub fn publish(&self, event: BundleEvent) {
        let events = self.clone();
        tokio::spawn(async move { events.send(&event).await });
    }

    /// Sends `event` and waits for the answer (at most
    /// [`super::API_TIMEOUT`]);
    /// a failure is logged.
    pub async fn send(&self, event: &BundleEvent) {
        let reason = event.reason();
        let k8s_event = Event {
            type_: event.event_type(),
            reason: reason.to_owned(),
            note: Some(event.note()),
            action: event.action().to_owned(),
            // The bundle's Lease as the related object: it names the bundle,
            // and it keeps the Events of different bundles apart (the
            // Recorder folds Events with the same reason, pod and related
            // object into one series, keeping the first note).
            secondary: Some(self.lease_of(event.digest())),
        };
        let result = super::request(
            "create event",
            reason,
            self.recorder.publish(&k8s_event, &self.pod),
        )
        .await;
        // Not noted in the API's health: Events do not decide whether
        // imports can go on, Leases do.
        if let Err(e) = result {
            log_failure(&e);
        }
    }
}

fn log_failure(error: &Error) {
    tracing::warn!(error = %crate::report::error_chain(error), "cannot write a Kubernetes Event (the import is not affected)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_name_the_bundle_and_stay_under_the_api_limit() {
        let imported = BundleEvent::Imported {
            bundle: "app.zst".to_owned(),
            digest: "sha256:abc".to_owned(),
            images: vec!["r/quay.io/a:1".to_owned()],
        };
        assert_eq!(imported.reason(), "BundleImported");
        assert_eq!(
            imported.note(),
            "app.zst (sha256:abc) imported: 1 image: r/quay.io/a:1"
        );
        let many = BundleEvent::Imported {
            bundle: "big.zst".to_owned(),
            digest: "sha256:abc".to_owned(),
            images: (0..200)
                .map(|i| format!("registry.local/mirror/quay.io/acme/image-{i}:1.0"))
                .collect(),
        };
        let note = many.note();
        assert!(
            note.len() <= MAX_NOTE_BYTES && note.ends_with('…'),
            "{}",
            note.len()
        );
        let rejected = BundleEvent::Rejected {
            bundle: "bad.zst".to_owned(),
            digest: "sha256:abc".to_owned(),
            reason: "signature does not verify".to_owned(),
        };
        assert_eq!(rejected.reason(), "BundleRejected");
        assert!(rejected.note().contains("signature does not verify"));
    }
}
