//! One settled bundle, from the drop folder to its final state: identify,
//! verify, de-duplicate, import, record, dispose. Every outcome is logged and
//! counted in one place, here.
//!
//! The promises kept here, whatever fails around them:
//! - content is imported at most once at a time and, once recorded as
//!   imported, never again (a per-content guard, then the record);
//! - nothing is disposed of (moved, deleted) before its final record is on
//!   disk: a record that cannot be written is a transient failure;
//! - a bad signature is held against that bundle-and-signature pair only,
//!   never against the content, which may arrive again correctly signed;
//! - a verification or integrity failure is final only once the files have
//!   been seen unchanged again a settle time later (when
//!   `drop.confirm_rejection` is on), so a stalled copy is not a forgery.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::Instrument as _;

use super::Shared;
use super::disposal::{self, Reason};
use super::replicas::{Go, Replicas};
use crate::FailureClass;
use crate::digest::{Algorithm, Hasher};
use crate::import;
use crate::metrics::{AttemptOutcome, Outcome, RetryReason, VerificationResult};
use crate::progress::Progress;
use crate::state::{
    BundleRecord, Failure, FileMemo, PackRecord, Pair, Pushed, PushedImageRecord,
    RejectedSignature, Status,
};
use crate::verify::VerifyOptions;
use crate::watch::{FileState, ReadyBundle, WatchControl};

/// How often a bundle held back by credentials the registry refused looks
/// whether the credential files hold other ones: a `stat` of a file or two,
/// and no request to the registry.
const CREDENTIALS_RECHECK: Duration = Duration::from_secs(3);

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
    match FileState::of(&ready.bundle) {
        Ok(state) if state == ready.state => {}
        Ok(_) => {
            // A retry of an older version: the watcher hands on the new one
            // once it has settled.
            tracing::debug!("the bundle changed since it settled; the newer version follows");
            return Attempt::Done;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            removed(&shared, &ready);
            return Attempt::Done;
        }
        Err(e) => return transient(&shared, &format!("cannot look at the bundle: {e}"), 1),
    }
    if let Some(attempt) = already_known(&shared, &ready, &name) {
        return attempt;
    }
    if shared.credentials_refused() {
        tracing::debug!("waiting for the registry credentials to change; they were refused");
        return Attempt::RetryAfter(CREDENTIALS_RECHECK);
    }
    if let (Some(replicas), Some(id)) = (
        &shared.replicas,
        shared
            .store
            .identified(&ready.bundle, ready.state.size, ready.state.mtime_ns)
            .map(|memo| memo.id),
    ) && let Err(attempt) = proceed(replicas.before_reading(&id).await)
    {
        return attempt;
    }

    let progress = Progress::new();
    // Read no more than the size the bundle settled at, from the file
    // opened once here: see `verify::BundleFile`.
    let options = VerifyOptions {
        symlinks: shared.symlinks,
        expected_size: Some(ready.state.size),
        ..VerifyOptions::default()
    };
    // With `imports.single_read` the signature is checked in the same pass
    // that indexes the bundle and sets its blobs aside in the target, which
    // is therefore chosen now; nothing is committed before the import below.
    let mut read_once = None;
    let mut destination = None;
    let verified = if shared.single_read {
        let now = shared.destination_now();
        let read = import::read_once(
            ready.bundle.clone(),
            ready.signatures(),
            Arc::clone(&shared.keys),
            options,
            now.clone(),
            &progress,
        )
        .await;
        destination = Some(now);
        read.map(|read| read_once.insert(read).bundle().clone())
    } else {
        import::verify(
            ready.bundle.clone(),
            ready.signatures(),
            Arc::clone(&shared.keys),
            options,
            &progress,
        )
        .await
    };
    let verified = match verified {
        Ok(verified) => verified,
        Err(error) => return verification_failed(&shared, &ready, &name, error).await,
    };
    ready.prefer_signature(verified.signature_path());
    shared.metrics.verification(VerificationResult::Verified);
    let id = verified.sha256().to_owned();
    tracing::Span::current().record("digest", verified.digest().as_str());

    // One import of a content at a time: a copy under another name waits
    // here and then finds the content imported.
    let _content = shared.hold_content(&id).await;
    if let Some(unsaved) = shared.take_unsaved(&id) {
        return record_import(&shared, &ready, &name, unsaved, None);
    }
    let now = SystemTime::now();
    let mut record = shared
        .store
        .get(&id)
        .unwrap_or_else(|| BundleRecord::new(id.clone(), &name, verified.size(), now));
    let new_name = record.add_name(&name);
    match record.status {
        Status::Imported => return duplicate(&shared, &ready, &record, new_name),
        Status::Rejected | Status::Partial => {
            return rejected_before(&shared, &ready, &name, record, new_name);
        }
        Status::Waiting
        | Status::Queued
        | Status::Importing
        | Status::Retrying
        | Status::Removed => {}
    }
    let before = shared.store.get(&id);
    if let Err(e) = remember(&shared, &ready, &id, None) {
        return state_failed(&shared, &e, record.attempts);
    }
    let mut lease = None;
    if let Some(replicas) = &shared.replicas {
        match proceed(replicas.before_import(&id, &name).await) {
            Ok(guard) => lease = guard,
            Err(attempt) => return attempt,
        }
    }
    record.status = Status::Importing;
    record.attempts += 1;
    record.started = Some(now);
    record.verified_by = Some(verified.key().clone());
    // What earlier attempts that were interrupted (a crash, a transient
    // failure) pushed; this attempt adds to it.
    let earlier = record.pushed.take().map(|p| p.counts()).unwrap_or_default();
    record.pushed = (!earlier.is_empty()).then(|| earlier.clone());
    if let Err(e) = shared.store.put(&record) {
        return state_failed(&shared, &e, record.attempts);
    }

    let started = Instant::now();
    shared.in_progress_changed(1);
    let tracker = shared.metrics.track_import(&progress);
    let checkpoints = Checkpoints::start(&shared, &record, &earlier, &progress);
    let shown = shared.show_progress(&id, &progress);
    let destination = destination.unwrap_or_else(|| shared.destination_now());
    let credentials = destination.registry.credentials.clone();
    let import = async {
        match read_once {
            Some(read) => import::run_read_once(read, &progress).await,
            None => import::run_verified(verified, destination, &progress).await,
        }
    };
    let result = Replicas::while_held(lease.as_deref_mut(), import).await;
    checkpoints.stop().await;
    drop(shown);
    drop(tracker);
    shared.in_progress_changed(-1);
    record.pushed = Some(Pushed::so_far(&progress).after(&earlier));
    let Some(result) = result else {
        // Another replica may take the bundle over now; look again later.
        return Attempt::RetryAfter(
            shared
                .replicas
                .as_ref()
                .map_or(Duration::ZERO, |r| r.lost_wait()),
        );
    };
    let attempt = match result {
        Ok(report) => {
            let push = &report.push;
            record.pushed = Some(pushed(&report).after(&earlier));
            shared.metrics.tags_held(report.held_tags.len());
            shared.metrics.unsigned_held(
                report
                    .image_signatures
                    .iter()
                    .filter(|v| v.held_back)
                    .count(),
            );
            shared
                .metrics
                .observe_import_duration(AttemptOutcome::Imported, started.elapsed());
            tracing::info!(
                images = push.images.len(),
                blobs_uploaded = push.blobs_uploaded,
                bytes_uploaded = push.bytes_uploaded,
                blobs_mounted = push.blobs_mounted,
                blobs_present = push.blobs_present,
                seconds = started.elapsed().as_secs_f64(),
                "bundle imported"
            );
            record.status = Status::Imported;
            record.finished = Some(SystemTime::now());
            record.error = None;
            record_import(&shared, &ready, &name, record, Some(started))
        }
        Err(error) if credentials_refused(&error) => {
            shared.refuse_credentials(credentials);
            record_failed_attempt(&shared, record, &error, started);
            tracing::error!(
                error = %crate::report::error_chain(&error),
                "the registry refused the credentials; no import is tried with them again until the credential files hold other ones (or the daemon restarts)"
            );
            Attempt::RetryAfter(CREDENTIALS_RECHECK)
        }
        Err(error) if is_transient_io(&error) => import_failed(
            &shared,
            record,
            &error,
            started,
            "the bundle could not be read now",
        ),
        Err(error) if error.class() == FailureClass::Integrity => {
            match look_again(&shared, &ready, Some(&id)).await {
                Look::Unchanged(_) => {
                    shared
                        .metrics
                        .observe_import_duration(AttemptOutcome::Rejected, started.elapsed());
                    reject_content(&shared, &ready, &name, record, &earlier, &error)
                }
                Look::Changed => {
                    // Forget the attempt: the record goes back to what it
                    // was before it, so nothing says "rejected".
                    let restored = match before {
                        Some(before) => shared.store.put(&before),
                        None => shared.store.remove(&id),
                    };
                    if let Err(e) = restored {
                        tracing::warn!(error = %e, "cannot reset the record of the abandoned attempt");
                    }
                    resettle(&shared, &ready)
                }
                Look::Gone => {
                    removed(&shared, &ready);
                    Attempt::Done
                }
                Look::Unreadable(reason) => {
                    import_failed(&shared, record, &error, started, &reason)
                }
            }
        }
        Err(error) => import_failed(&shared, record, &error, started, "import failed"),
    };
    if let Some(replicas) = &shared.replicas {
        replicas
            .after_import(lease, shared.store.get(&id).as_ref(), &name)
            .await;
    }
    attempt
}

/// The worker's side of [`Go`]: `Ok` with the Lease (if one was taken) to
/// go ahead, `Err` with what to do instead.
fn proceed(go: Go) -> Result<Option<Box<crate::cluster::LeaseGuard>>, Attempt> {
    match go {
        Go::Ahead(lease) => Ok(lease),
        Go::Done => Err(Attempt::Done),
        Go::Wait(delay) => Err(Attempt::RetryAfter(delay)),
    }
}

/// The shortcut for a file whose outcome is already on record (a restart, a
/// retry, or a crash between recording and disposing): apply the configured
/// disposal without reading the bundle again.
fn already_known(shared: &Arc<Shared>, ready: &ReadyBundle, name: &str) -> Option<Attempt> {
    let memo = shared
        .store
        .identified(&ready.bundle, ready.state.size, ready.state.mtime_ns)?;
    // A pair rejected for its signature stays rejected while the signature
    // is unchanged, even if the same content was imported under another
    // name since.
    if let Some(signature) = &memo.rejected
        && signature.size == ready.signature_state.size
        && signature.mtime_ns == ready.signature_state.mtime_ns
        && let Some(record) = shared
            .store
            .get(&signature.id)
            .filter(|r| r.status == Status::Rejected)
    {
        tracing::info!(reason = %reason_of(&record), "this bundle and signature were rejected before; not looking at them again");
        dispose_rejected(shared, ready, name, &record);
        return Some(Attempt::Done);
    }
    if memo.rejected.is_some() {
        // Its signature changed: judge the pair afresh.
        return None;
    }
    let record = shared.store.get(&memo.id)?;
    match record.status {
        Status::Imported => {
            if shared.on_success == crate::config::OnSuccess::Keep {
                tracing::debug!(
                    "already handled in an earlier run: imported, and kept in place as configured"
                );
            } else {
                tracing::info!(first_name = %record.names[0], "already handled in an earlier run: imported; finishing the disposal a stop interrupted");
            }
            dispose_imported(shared, ready);
            Some(Attempt::Done)
        }
        Status::Rejected | Status::Partial => {
            tracing::info!(reason = %reason_of(&record), "this content was rejected or held back before; not looking at it again");
            dispose_rejected(shared, ready, name, &record);
            Some(Attempt::Done)
        }
        Status::Waiting
        | Status::Queued
        | Status::Importing
        | Status::Retrying
        | Status::Removed => None,
    }
}

fn reason_of(record: &BundleRecord) -> String {
    record
        .error
        .as_ref()
        .map_or_else(|| "unknown".to_owned(), |e| e.message.clone())
}

/// The same content, dropped again, was imported before.
fn duplicate(
    shared: &Arc<Shared>,
    ready: &ReadyBundle,
    record: &BundleRecord,
    new_name: bool,
) -> Attempt {
    if new_name && let Err(e) = shared.store.put(record) {
        return state_failed(shared, &e, 1);
    }
    if let Err(e) = remember(shared, ready, &record.id, None) {
        return state_failed(shared, &e, 1);
    }
    tracing::info!(first_name = %record.names[0], "the same bundle was already imported; not pushing it again");
    dispose_imported(shared, ready);
    shared.metrics.bundle_finished(Outcome::Duplicate);
    Attempt::Done
}

/// The content itself (correctly signed) was found broken before.
fn rejected_before(
    shared: &Arc<Shared>,
    ready: &ReadyBundle,
    name: &str,
    record: BundleRecord,
    new_name: bool,
) -> Attempt {
    if new_name && let Err(e) = shared.store.put(&record) {
        return state_failed(shared, &e, 1);
    }
    if let Err(e) = remember(shared, ready, &record.id, None) {
        return state_failed(shared, &e, 1);
    }
    tracing::info!(reason = %reason_of(&record), "this content was rejected before; not importing it");
    shared.metrics.bundle_finished(Outcome::Duplicate);
    dispose_rejected(shared, ready, name, &record);
    Attempt::Done
}

/// Writes the final record of an import; only then are the files disposed
/// of. If the record cannot be written, the import counts as failed and is
/// retried, the record kept in memory so the retry writes it without pushing
/// again.
fn record_import(
    shared: &Arc<Shared>,
    ready: &ReadyBundle,
    name: &str,
    record: BundleRecord,
    started: Option<Instant>,
) -> Attempt {
    if let Err(e) = shared.store.put(&record) {
        let attempts = record.attempts;
        shared.keep_unsaved(record);
        return state_failed(shared, &e, attempts);
    }
    if started.is_none() {
        tracing::info!("the import's record is written now that the state directory accepts it");
    }
    supersede_rejections(shared, ready, name, &record.id);
    dispose_imported(shared, ready);
    // Counted once its files are where the operator expects them.
    shared.metrics.bundle_finished(Outcome::Imported);
    shared.metrics.mark_success(SystemTime::now());
    Attempt::Done
}

/// A name that imports now shows no earlier rejection: rejected records of
/// that name lose it (and go when it was their only name), and a reason file
/// beside the bundle is removed.
fn supersede_rejections(shared: &Arc<Shared>, ready: &ReadyBundle, name: &str, id: &str) {
    for mut record in shared.store.rejected_named(name) {
        if record.id == id {
            continue;
        }
        record.names.retain(|n| n != name);
        let result = if record.names.is_empty() {
            shared.store.remove(&record.id)
        } else {
            shared.store.put(&record)
        };
        match result {
            Ok(()) => {
                tracing::info!(rejected = %record.id, "an earlier rejection under this name is superseded")
            }
            Err(e) => tracing::warn!(error = %e, "cannot supersede an earlier rejection"),
        }
    }
    disposal::remove_reason_file(&ready.bundle);
}

fn dispose_imported(shared: &Arc<Shared>, ready: &ReadyBundle) {
    disposal::finish_imported(&ready.bundle, &ready.signature, shared.on_success);
    if shared.on_success != crate::config::OnSuccess::Keep {
        shared.forget_file(&ready.bundle);
    }
}

fn dispose_rejected(shared: &Arc<Shared>, ready: &ReadyBundle, name: &str, record: &BundleRecord) {
    let failure = record.error.clone().unwrap_or_else(|| Failure {
        class: FailureClass::Integrity.as_str().to_owned(),
        message: "rejected".to_owned(),
        at: record.finished.unwrap_or_else(SystemTime::now),
    });
    let reason = Reason {
        bundle: name,
        id: &record.id,
        class: &failure.class,
        message: &failure.message,
        at: failure.at,
    };
    disposal::finish_rejected(&ready.bundle, &ready.signature, &reason, shared.on_reject);
    if shared.on_reject == crate::config::OnReject::Move {
        shared.forget_file(&ready.bundle);
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
        return match gone_or_changed(ready) {
            Look::Gone => {
                removed(shared, ready);
                Attempt::Done
            }
            _ => resettle(shared, ready),
        };
    }
    if is_transient_io(&error) {
        return transient(
            shared,
            &format!(
                "cannot read the bundle now: {}",
                crate::report::error_chain(&error)
            ),
            1,
        );
    }
    if error.class() != FailureClass::Integrity {
        let message = crate::report::error_chain(&error);
        return transient(
            shared,
            &format!("cannot verify the bundle now: {message}"),
            1,
        );
    }
    let read = match &error {
        import::Error::Verify(crate::verify::Error::NotVerified { bundle_sha256, .. }) => {
            Some(bundle_sha256.as_str())
        }
        import::Error::Verify(crate::verify::Error::SigstoreNotVerified(rejection))
            if !rejection.bundle_sha256.is_empty() =>
        {
            Some(rejection.bundle_sha256.as_str())
        }
        _ => None,
    };
    match look_again(shared, ready, read).await {
        Look::Unchanged(pair) => reject_pair(shared, ready, name, pair, &error),
        Look::Changed => resettle(shared, ready),
        Look::Gone => {
            removed(shared, ready);
            Attempt::Done
        }
        Look::Unreadable(reason) => transient(shared, &reason, 1),
    }
}

/// A second look at a pair that failed, before the failure becomes final.
enum Look {
    /// Both files are as they were judged: the failure stands.
    Unchanged(Pair),
    /// Something changed (the copy went on): forget the attempt.
    Changed,
    /// The bundle is gone.
    Gone,
    /// The files cannot be read now (a transient failure).
    Unreadable(String),
}

/// Waits a settle time (when rejections are confirmed), then checks the
/// files' size and mtime and the bundle's digest against what was judged.
async fn look_again(shared: &Arc<Shared>, ready: &ReadyBundle, judged: Option<&str>) -> Look {
    if let Some(wait) = shared.confirm_rejection {
        tracing::info!(
            wait = ?wait,
            "the bundle failed its checks; looking at it again before rejecting, in case its copy is still going on"
        );
        tokio::time::sleep(wait).await;
    }
    if changed_since(ready) {
        return gone_or_changed(ready);
    }
    let (bundle, signature) = (ready.bundle.clone(), ready.signature.clone());
    let hashed = tokio::task::spawn_blocking(move || {
        Ok::<_, std::io::Error>((sha256_of(&bundle)?, sha256_of(&signature)?))
    })
    .await;
    let (bundle, signature) = match hashed {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return gone_or_changed(ready),
        Ok(Err(e)) => return Look::Unreadable(format!("cannot read the bundle again: {e}")),
        Err(e) => return Look::Unreadable(format!("cannot read the bundle again: {e}")),
    };
    if judged.is_some_and(|judged| judged != bundle) || changed_since(ready) {
        return Look::Changed;
    }
    tracing::Span::current().record("digest", format!("sha256:{bundle}").as_str());
    Look::Unchanged(Pair { bundle, signature })
}

fn gone_or_changed(ready: &ReadyBundle) -> Look {
    if ready.bundle.exists() {
        Look::Changed
    } else {
        Look::Gone
    }
}

/// Records a confirmed verification failure against the bundle-and-signature
/// pair, writes the reason file, applies `on_reject`.
fn reject_pair(
    shared: &Arc<Shared>,
    ready: &ReadyBundle,
    name: &str,
    pair: Pair,
    error: &import::Error,
) -> Attempt {
    let id = pair.id();
    let now = SystemTime::now();
    let mut record = shared
        .store
        .get(&id)
        .unwrap_or_else(|| BundleRecord::new(id.clone(), name, ready.state.size, now));
    let new_name = record.add_name(name);
    let rejected = RejectedSignature {
        size: ready.signature_state.size,
        mtime_ns: ready.signature_state.mtime_ns,
        id: id.clone(),
    };
    if record.status == Status::Rejected {
        if new_name && let Err(e) = shared.store.put(&record) {
            return state_failed(shared, &e, 1);
        }
        if let Err(e) = remember(shared, ready, &pair.bundle, Some(rejected)) {
            return state_failed(shared, &e, 1);
        }
        tracing::info!(reason = %reason_of(&record), "this bundle and signature were rejected before under another name");
        shared.metrics.bundle_finished(Outcome::Duplicate);
        dispose_rejected(shared, ready, name, &record);
        return Attempt::Done;
    }
    record.status = Status::Rejected;
    record.attempts += 1;
    record.started.get_or_insert(now);
    record.finished = Some(now);
    record.error = Some(failure(error, now));
    record.pair = Some(pair.clone());
    if let Err(e) = shared.store.put(&record) {
        return state_failed(shared, &e, 1);
    }
    if let Err(e) = remember(shared, ready, &pair.bundle, Some(rejected)) {
        tracing::warn!(error = %e, "cannot record the file memo of a rejected bundle; it will be read again after a restart");
    }
    dispose_rejected(shared, ready, name, &record);
    shared.metrics.verification(VerificationResult::Rejected);
    shared.metrics.bundle_finished(Outcome::Rejected);
    tracing::error!(reason = %reason_of(&record), "bundle rejected; it will not be retried");
    if let Some(replicas) = &shared.replicas {
        replicas.rejected(name, &pair.bundle, &reason_of(&record));
    }
    Attempt::Done
}

/// Records a confirmed integrity failure of correctly signed content against
/// the content: any copy of it would fail the same way.
fn reject_content(
    shared: &Arc<Shared>,
    ready: &ReadyBundle,
    name: &str,
    mut record: BundleRecord,
    earlier: &Pushed,
    error: &import::Error,
) -> Attempt {
    let now = SystemTime::now();
    record.status = Status::Rejected;
    if let import::Error::HeldBack { report, .. } = error {
        // Everything but what a policy held back is in the target.
        record.status = Status::Partial;
        record.pushed = Some(pushed(report).after(earlier));
        shared.metrics.tags_held(report.held_tags.len());
        shared.metrics.unsigned_held(
            report
                .image_signatures
                .iter()
                .filter(|v| v.held_back)
                .count(),
        );
    }
    record.finished = Some(now);
    record.error = Some(failure(error, now));
    if let Err(e) = shared.store.put(&record) {
        return state_failed(shared, &e, record.attempts);
    }
    dispose_rejected(shared, ready, name, &record);
    shared.metrics.bundle_finished(Outcome::Rejected);
    tracing::error!(reason = %reason_of(&record), "bundle rejected; it will not be retried");
    Attempt::Done
}

/// How often an import's counts are looked at, and written to its record
/// when they changed, while it runs: what an attempt killed midway pushed is
/// then lost only for its last quarter second. The next attempt finds those
/// blobs present and adds its own counts to the recorded ones. At most four
/// small durable writes a second, and none while nothing moves.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// Writes an import's counts to its record every [`CHECKPOINT_INTERVAL`]
/// while they change.
struct Checkpoints {
    task: tokio::task::JoinHandle<()>,
}

impl Checkpoints {
    fn start(
        shared: &Arc<Shared>,
        record: &BundleRecord,
        earlier: &Pushed,
        progress: &Progress,
    ) -> Self {
        let (shared, mut record, earlier, progress) = (
            Arc::clone(shared),
            record.clone(),
            earlier.clone(),
            progress.clone(),
        );
        let task = tokio::spawn(async move {
            let mut written = record.pushed.clone().unwrap_or_default();
            loop {
                tokio::time::sleep(CHECKPOINT_INTERVAL).await;
                let now = Pushed::so_far(&progress).after(&earlier);
                if now == written {
                    continue;
                }
                record.pushed = Some(now.clone());
                match shared.store.put(&record) {
                    Ok(()) => written = now,
                    // The final record is what counts; its write failing is
                    // handled (and retried) there.
                    Err(e) => tracing::debug!(error = %e, "cannot record the import's progress"),
                }
            }
        });
        Checkpoints { task }
    }

    /// Stops the checkpoints; none is written after this returns, so the
    /// final record is the last word.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// What an import pushed and held back, as recorded.
fn pushed(report: &import::ImportReport) -> Pushed {
    let push = &report.push;
    Pushed {
        images: push.images.iter().map(PushedImageRecord::from).collect(),
        blobs_uploaded: push.blobs_uploaded,
        bytes_uploaded: push.bytes_uploaded,
        blobs_mounted: push.blobs_mounted,
        blobs_present: push.blobs_present,
        packs: report.packs.iter().map(PackRecord::from).collect(),
        held_tags: report.held_tags.clone(),
        held_signatures: report
            .image_signatures
            .iter()
            .filter(|v| v.held_back)
            .cloned()
            .collect(),
    }
}

fn failure(error: &import::Error, at: SystemTime) -> Failure {
    Failure {
        class: error.class().as_str().to_owned(),
        message: crate::report::error_chain(error),
        at,
    }
}

/// A transient import failure: recorded as `retrying`, retried after a
/// backoff.
fn import_failed(
    shared: &Arc<Shared>,
    record: BundleRecord,
    error: &import::Error,
    started: Instant,
    what: &str,
) -> Attempt {
    let attempts = record.attempts;
    let message = record_failed_attempt(shared, record, error, started);
    let delay = shared.backoff(attempts);
    tracing::warn!(attempt = attempts, retry_in = ?delay, error = %message, "{what}; will retry");
    Attempt::RetryAfter(delay)
}

/// Records a failed attempt as `retrying` with its error, and counts it.
/// Returns the error's message.
fn record_failed_attempt(
    shared: &Arc<Shared>,
    mut record: BundleRecord,
    error: &import::Error,
    started: Instant,
) -> String {
    let message = crate::report::error_chain(error);
    record.status = Status::Retrying;
    record.error = Some(Failure {
        class: FailureClass::Transport.as_str().to_owned(),
        message: message.clone(),
        at: SystemTime::now(),
    });
    if let Err(e) = shared.store.put(&record) {
        tracing::error!(error = %e, "cannot record the failed attempt");
    }
    shared.metrics.bundle_finished(Outcome::Failed);
    shared
        .metrics
        .observe_import_duration(AttemptOutcome::Failed, started.elapsed());
    shared.metrics.retry(RetryReason::of(error));
    message
}

/// A failure before anything was recorded: retried after a backoff.
fn transient(shared: &Arc<Shared>, message: &str, attempt: u32) -> Attempt {
    let delay = shared.backoff(attempt);
    tracing::warn!(retry_in = ?delay, "{message}; will retry");
    shared.metrics.bundle_finished(Outcome::Failed);
    shared.metrics.retry(RetryReason::Other);
    Attempt::RetryAfter(delay)
}

/// The state directory refused a write: the attempt fails (and is retried)
/// rather than carry on with an outcome that a restart would not know.
fn state_failed(shared: &Arc<Shared>, error: &crate::state::Error, attempt: u32) -> Attempt {
    let delay = shared.backoff(attempt);
    tracing::error!(error = %error, retry_in = ?delay, "cannot write to the state directory; nothing is disposed of, will retry");
    shared.metrics.bundle_finished(Outcome::Failed);
    shared.metrics.retry(RetryReason::Other);
    Attempt::RetryAfter(delay)
}

/// The bundle was removed from the drop folder: a record still waiting for
/// it is marked `removed` instead of staying `importing` forever.
fn removed(shared: &Arc<Shared>, ready: &ReadyBundle) {
    let memo = shared
        .store
        .identified(&ready.bundle, ready.state.size, ready.state.mtime_ns);
    if let Some(mut record) = memo
        .and_then(|m| shared.store.get(&m.id))
        .filter(|r| r.status.is_pending())
    {
        record.status = Status::Removed;
        record.finished = Some(SystemTime::now());
        match shared.store.put(&record) {
            Ok(()) => tracing::info!(
                "the bundle was removed from the drop folder before its import finished; it is imported if dropped again"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot record that the bundle was removed"),
        }
    } else {
        tracing::info!("the bundle was removed from the drop folder before it was handled");
    }
    shared.forget_file(&ready.bundle);
}

/// The file changed while it was judged: it is still arriving. Let it settle
/// again instead of judging a partial copy.
fn resettle(shared: &Arc<Shared>, ready: &ReadyBundle) -> Attempt {
    tracing::info!("bundle changed while it was checked; waiting for it to settle again");
    let _ = shared
        .watch_control
        .send(WatchControl::Resettle(ready.clone()));
    Attempt::Done
}

fn changed_since(ready: &ReadyBundle) -> bool {
    FileState::of(&ready.bundle).ok() != Some(ready.state)
        || FileState::of(&ready.signature).ok() != Some(ready.signature_state)
}

fn remember(
    shared: &Arc<Shared>,
    ready: &ReadyBundle,
    id: &str,
    rejected: Option<RejectedSignature>,
) -> crate::state::Result<()> {
    shared.store.remember_file(
        &ready.bundle,
        FileMemo {
            size: ready.state.size,
            mtime_ns: ready.state.mtime_ns,
            id: id.to_owned(),
            rejected,
        },
    )
}

/// Whether the registry refused the credentials: trying again with the
/// same ones cannot help and may lock the account.
fn credentials_refused(error: &import::Error) -> bool {
    matches!(
        error,
        import::Error::Push(crate::push::Error::CredentialsRefused { .. })
    )
}

/// Whether a failure is a read error of the drop volume that may pass (an
/// NFS server restarting, a flaky USB link) rather than anything wrong with
/// the bundle.
pub(super) fn is_transient_io(error: &(dyn std::error::Error + 'static)) -> bool {
    /// EINTR, EIO, EAGAIN, ENOMEM, EBUSY, ENETDOWN, ENETUNREACH, ECONNRESET,
    /// ENOTCONN, ETIMEDOUT, EHOSTDOWN, EHOSTUNREACH, ESTALE on Linux.
    const TRANSIENT_ERRNOS: [i32; 13] = [4, 5, 11, 12, 16, 100, 101, 104, 107, 110, 112, 113, 116];
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .raw_os_error()
                .is_some_and(|code| TRANSIENT_ERRNOS.contains(&code))
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// The hex SHA-256 of a file.
fn sha256_of(path: &Path) -> std::io::Result<String> {
    // 1 MiB reads, as the signature check does: this may be a large file.
    let mut file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut hasher = Hasher::new(Algorithm::Sha256);
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finish().hex().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_errors_of_a_flaky_volume_are_transient_and_a_short_file_is_not() {
        let eio = std::io::Error::from_raw_os_error(5);
        let stale = std::io::Error::from_raw_os_error(116);
        let wrapped = crate::verify::Error::BundleRead {
            path: "/drop/a.zst".into(),
            source: eio,
        };
        assert!(is_transient_io(&wrapped));
        assert!(is_transient_io(&stale));
        let short = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(!is_transient_io(&short));
        let missing = std::io::Error::from_raw_os_error(2);
        assert!(!is_transient_io(&missing));
    }
}
