//! At start, before the watcher runs: finish what a stop interrupted between
//! recording an outcome and disposing of the files, and forget files that
//! are gone.
//!
//! A bundle whose final record is on disk but whose files are still in the
//! drop folder (killed before the move), or whose signature was moved but not
//! the bundle (killed between the two renames, which leaves a bundle the
//! watcher never pairs), gets its `on_success`/`on_reject` now. A record
//! whose import was under way when its files were removed is marked
//! `removed`.

use std::collections::HashSet;
use std::time::SystemTime;

use super::Shared;
use super::disposal::{self, Reason};
use crate::config::{OnReject, OnSuccess};
use crate::state::{BundleRecord, Status};
use crate::verify::signature_path_for;
use crate::watch::FileState;

/// Runs the start-up pass over the file memo.
pub(super) fn run(shared: &Shared) {
    let mut present = HashSet::new();
    let mut finished = 0usize;
    for (path, memo) in shared.store.files() {
        let state = match FileState::of(&path) {
            Ok(state) => state,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                forget(shared, &path);
                continue;
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot look at a remembered bundle");
                present.insert(memo.id.clone());
                continue;
            }
        };
        present.insert(memo.id.clone());
        if state.size != memo.size || state.mtime_ns != memo.mtime_ns {
            // Replaced since: the watcher hands it on when it settles.
            continue;
        }
        let signature = signature_path_for(&path);
        let rejected_pair = memo
            .rejected
            .as_ref()
            .and_then(|r| shared.store.get(&r.id))
            .filter(|r| r.status == Status::Rejected);
        if let Some(record) = rejected_pair {
            // Rejected for its signature: that stands, whatever became of
            // the content under other names.
            finish_rejected(shared, &path, &signature, &record);
            finished += 1;
            continue;
        }
        if memo.rejected.is_some() {
            continue;
        }
        match shared.store.get(&memo.id) {
            Some(record)
                if record.status == Status::Imported && shared.on_success != OnSuccess::Keep =>
            {
                disposal::finish_imported(&path, &signature, shared.on_success);
                forget(shared, &path);
                finished += 1;
            }
            Some(record) if matches!(record.status, Status::Rejected | Status::Partial) => {
                finish_rejected(shared, &path, &signature, &record);
                finished += 1;
            }
            _ => {}
        }
    }
    if finished > 0 {
        tracing::info!(
            bundles = finished,
            "finished disposing of bundles whose outcome was recorded before the last stop"
        );
    }
    mark_removed(shared, &present);
}

fn finish_rejected(
    shared: &Shared,
    path: &std::path::Path,
    signature: &std::path::Path,
    record: &BundleRecord,
) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let class = record
        .error
        .as_ref()
        .map_or("integrity", |e| e.class.as_str());
    let message = record
        .error
        .as_ref()
        .map_or("rejected", |e| e.message.as_str());
    let reason = Reason {
        bundle: &name,
        id: &record.id,
        class,
        message,
        at: record.finished.unwrap_or_else(SystemTime::now),
    };
    disposal::finish_rejected(path, signature, &reason, shared.on_reject);
    if shared.on_reject == OnReject::Move {
        forget(shared, path);
    }
}

/// Records under way whose files are all gone will never finish: mark them
/// `removed` so they do not show `importing` forever.
fn mark_removed(shared: &Shared, present: &HashSet<String>) {
    for mut record in shared.store.unfinished() {
        if present.contains(&record.id) {
            continue;
        }
        record.status = Status::Removed;
        record.finished = Some(SystemTime::now());
        match shared.store.put(&record) {
            Ok(()) => tracing::info!(
                id = %record.id,
                "the files of an unfinished import are gone from the drop folder; marked removed"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot mark an unfinished import removed"),
        }
    }
}

fn forget(shared: &Shared, path: &std::path::Path) {
    if let Err(e) = shared.store.forget_file(path) {
        tracing::warn!(error = %e, "cannot update the file memo");
    }
}
