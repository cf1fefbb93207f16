//! One settled bundle, from the drop folder to its final state: identify,
//! verify, de-duplicate, import, record, dispose. Every outcome is logged and
//! counted in one place, here.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::Instrument as _;

use super::Shared;
use super::disposal::{self, Reason};
use crate::FailureClass;
use crate::digest::{Algorithm, Hasher};
use crate::import;
use crate::metrics::{AttemptOutcome, Outcome, RetryReason, VerificationResult};
use crate::progress::Progress;
use crate::state::{BundleRecord, Failure, Pushed, PushedImageRecord, Status};
use crate::watch::{FileState, ReadyBundle, WatchControl};

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Nothing more to do for this bundle.
    Done,
    /// A transient failure: try again after this delay.
    RetryAfter(Duration),
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Handles one settled bundle.
pub async fn handle(shared: Arc<Shared>, ready: ReadyBundle) -> Attempt {
    let name = file_name(&ready.bundle);
    let span = tracing::info_span!("bundle", bundle = %name, digest = tracing::field::Empty);
    handle_in_span(shared, ready, name).instrument(span).await
}

async fn handle_in_span(shared: Arc<Shared>, mut ready: ReadyBundle, name: String) -> Attempt {
    // A bundle already finished in an earlier run is recognised by its file
    // memo without reading it again.
    if let Some(id) = shared
        .store
        .identified(&ready.bundle, ready.state.size, ready.state.mtime_ns)
        && shared.store.get(&id).is_some_and(|r| r.status.is_final())
    {
        tracing::debug!("already handled in an earlier run");
        return Attempt::Done;
    }

    let progress = Progress::new();
    let verified = import::verify(
        ready.bundle.clone(),
        ready.signatures(),
        Arc::clone(&shared.keys),
        &progress,
    )
    .await;
    let verified = match verified {
        Ok(verified) => verified,
        Err(error) => return verification_failed(&shared, &ready, &name, error).await,
    };
    ready.prefer_signature(verified.signature_path());
    shared.metrics.verification(VerificationResult::Verified);
    let id = verified.sha256().to_owned();
    tracing::Span::current().record("digest", verified.digest().as_str());
    remember(&shared, &ready, &id);

    let now = SystemTime::now();
    let mut record = shared.store.get(&id).unwrap_or_else(|| BundleRecord {
        id: id.clone(),
        names: Vec::new(),
        size: verified.size(),
        status: Status::Queued,
        attempts: 0,
        first_seen: now,
        started: None,
        finished: None,
        verified_by: None,
        pushed: None,
        error: None,
    });
    let new_name = !record.names.contains(&name);
    if new_name {
        record.names.push(name.clone());
    }
    match record.status {
        Status::Imported => {
            tracing::info!(first_name = %record.names[0], "the same bundle was already imported; not pushing it again");
            shared.metrics.bundle_finished(Outcome::Duplicate);
            if new_name {
                save(&shared, &record);
            }
            disposal::finish_imported(&ready.bundle, &ready.signature, shared.on_success);
            return Attempt::Done;
        }
        Status::Rejected => {
            tracing::info!("this content was rejected before; leaving it");
            return Attempt::Done;
        }
        Status::Waiting | Status::Queued | Status::Importing | Status::Retrying => {}
    }
    record.status = Status::Importing;
    record.attempts += 1;
    record.started = Some(now);
    record.verified_by = Some(verified.key().clone());
    save(&shared, &record);

    let started = Instant::now();
    shared.in_progress_changed(1);
    let tracker = shared.metrics.track_import(&progress);
    let result = import::run_verified(verified, shared.destination_now(), &progress).await;
    drop(tracker);
    shared.in_progress_changed(-1);
    match result {
        Ok(report) => {
            record.status = Status::Imported;
            record.finished = Some(SystemTime::now());
            record.error = None;
            let push = &report.push;
            record.pushed = Some(Pushed {
                images: push.images.iter().map(PushedImageRecord::from).collect(),
                blobs_uploaded: push.blobs_uploaded,
                bytes_uploaded: push.bytes_uploaded,
                blobs_mounted: push.blobs_mounted,
                blobs_present: push.blobs_present,
            });
            save(&shared, &record);
            shared.metrics.bundle_finished(Outcome::Imported);
            shared
                .metrics
                .observe_import_duration(AttemptOutcome::Imported, started.elapsed());
            shared.metrics.mark_success(SystemTime::now());
            tracing::info!(
                images = push.images.len(),
                blobs_uploaded = push.blobs_uploaded,
                bytes_uploaded = push.bytes_uploaded,
                blobs_mounted = push.blobs_mounted,
                blobs_present = push.blobs_present,
                seconds = started.elapsed().as_secs_f64(),
                "bundle imported"
            );
            disposal::finish_imported(&ready.bundle, &ready.signature, shared.on_success);
            shared.forget_moved(&ready);
            Attempt::Done
        }
        Err(error) if error.class() == FailureClass::Integrity => {
            if changed_since(&ready) {
                return resettle(&shared, &ready);
            }
            shared
                .metrics
                .observe_import_duration(AttemptOutcome::Rejected, started.elapsed());
            reject(&shared, &ready, &name, Some(record), &error).await
        }
        Err(error) => {
            let message = crate::report::error_chain(&error);
            record.status = Status::Retrying;
            record.error = Some(Failure {
                class: error.class().as_str().to_owned(),
                message: message.clone(),
                at: SystemTime::now(),
            });
            save(&shared, &record);
            shared.metrics.bundle_finished(Outcome::Failed);
            shared
                .metrics
                .observe_import_duration(AttemptOutcome::Failed, started.elapsed());
            shared.metrics.retry(RetryReason::of(&error));
            let delay = shared.backoff(record.attempts);
            tracing::warn!(attempt = record.attempts, retry_in = ?delay, error = %message, "import failed; will retry");
            Attempt::RetryAfter(delay)
        }
    }
}

async fn verification_failed(
    shared: &Arc<Shared>,
    ready: &ReadyBundle,
    name: &str,
    error: import::Error,
) -> Attempt {
    // A bundle that changed or vanished while it was read is judged again
    // once it settles, whatever the failure said.
    if changed_since(ready) {
        return resettle(shared, ready);
    }
    match error.class() {
        FailureClass::Integrity => {
            shared.metrics.verification(VerificationResult::Rejected);
            reject(shared, ready, name, None, &error).await
        }
        _ => {
            let message = crate::report::error_chain(&error);
            tracing::warn!(error = %message, "cannot verify the bundle now; will retry");
            shared.metrics.bundle_finished(Outcome::Failed);
            shared.metrics.retry(RetryReason::Other);
            Attempt::RetryAfter(shared.backoff(1))
        }
    }
}

/// Records a permanent failure, writes the reason file, applies `on_reject`.
async fn reject(
    shared: &Arc<Shared>,
    ready: &ReadyBundle,
    name: &str,
    record: Option<BundleRecord>,
    error: &import::Error,
) -> Attempt {
    let message = crate::report::error_chain(error);
    let mut record = match record {
        Some(record) => record,
        None => {
            let path = ready.bundle.clone();
            let Ok(Ok(id)) = tokio::task::spawn_blocking(move || content_id(&path)).await else {
                tracing::warn!("bundle vanished before it could be identified");
                return Attempt::Done;
            };
            tracing::Span::current().record("digest", format!("sha256:{id}").as_str());
            remember(shared, ready, &id);
            let existing = shared.store.get(&id);
            existing.unwrap_or_else(|| BundleRecord {
                id,
                names: vec![name.to_owned()],
                size: ready.state.size,
                status: Status::Rejected,
                attempts: 1,
                first_seen: SystemTime::now(),
                started: Some(SystemTime::now()),
                finished: None,
                verified_by: None,
                pushed: None,
                error: None,
            })
        }
    };
    let at = SystemTime::now();
    record.status = Status::Rejected;
    record.finished = Some(at);
    record.error = Some(Failure {
        class: error.class().as_str().to_owned(),
        message: message.clone(),
        at,
    });
    save(shared, &record);
    shared.metrics.bundle_finished(Outcome::Rejected);
    tracing::error!(reason = %message, "bundle rejected; it will not be retried");
    let reason = Reason {
        bundle: name,
        id: &record.id,
        class: error.class().as_str(),
        message: &message,
        at,
    };
    disposal::finish_rejected(&ready.bundle, &ready.signature, &reason, shared.on_reject);
    Attempt::Done
}

/// The file changed while it was read: it is still arriving. Let it settle
/// again instead of judging a partial copy.
fn resettle(shared: &Arc<Shared>, ready: &ReadyBundle) -> Attempt {
    tracing::info!("bundle changed while it was read; waiting for it to settle again");
    let _ = shared
        .watch_control
        .send(WatchControl::Resettle(ready.bundle.clone()));
    Attempt::Done
}

fn changed_since(ready: &ReadyBundle) -> bool {
    FileState::of(&ready.bundle).ok() != Some(ready.state)
        || FileState::of(&ready.signature).ok() != Some(ready.signature_state)
}

fn remember(shared: &Arc<Shared>, ready: &ReadyBundle, id: &str) {
    if let Err(e) =
        shared
            .store
            .remember_file(&ready.bundle, ready.state.size, ready.state.mtime_ns, id)
    {
        tracing::warn!(error = %e, "cannot record the file memo");
    }
}

fn save(shared: &Arc<Shared>, record: &BundleRecord) {
    if let Err(e) = shared.store.put(record) {
        tracing::error!(error = %e, "cannot write the state record");
    }
}

/// The hex SHA-256 of a file, for identifying bundles whose signature failed.
fn content_id(path: &Path) -> std::io::Result<String> {
    // 1 MiB reads, as the signature check does: this may be a large file.
    let mut file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut hasher = Hasher::new(Algorithm::Sha256);
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finish().hex().to_owned())
}
