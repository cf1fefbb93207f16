//! What happens to a bundle's files once it is finished: kept, moved to
//! `processed/` or `failed/`, or deleted, plus the reason file written beside
//! a rejected bundle. A read-only drop volume (a write-protected USB stick) is
//! normal: nothing is written there, the state directory remembers instead.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::config::{FAILED_SUBDIR, OnReject, OnSuccess, PROCESSED_SUBDIR};

/// Suffix of the reason file written beside a rejected bundle.
pub const REASON_SUFFIX: &str = ".error.json";

/// The content of `X.zst.error.json`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reason<'a> {
    /// The bundle file name.
    pub bundle: &'a str,
    /// Its id (hex SHA-256), when known.
    pub id: &'a str,
    /// `integrity` or `config`.
    pub class: &'a str,
    /// The one-line reason.
    pub message: &'a str,
    /// When it was rejected.
    #[serde(with = "crate::state::time")]
    pub at: SystemTime,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

fn is_read_only(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    )
}

fn log_failure(action: &str, path: &Path, error: &std::io::Error) {
    if is_read_only(error) {
        tracing::info!(file = %path.display(), "drop folder is read-only; {action} skipped, the state directory remembers the outcome");
    } else {
        tracing::warn!(file = %path.display(), error = %error, "{action} failed");
    }
}

/// Applies `action` to an imported bundle's files.
pub fn finish_imported(bundle: &Path, signature: &Path, action: OnSuccess) {
    match action {
        OnSuccess::Keep => {}
        OnSuccess::Move => move_pair(bundle, signature, PROCESSED_SUBDIR),
        OnSuccess::Delete => {
            for file in [bundle, signature] {
                if let Err(e) = std::fs::remove_file(file) {
                    log_failure("delete", file, &e);
                }
            }
        }
    }
}

/// Writes the reason file and applies `action` to a rejected bundle's files.
pub fn finish_rejected(bundle: &Path, signature: &Path, reason: &Reason<'_>, action: OnReject) {
    let reason_path = with_suffix(bundle, REASON_SUFFIX);
    match serde_json::to_vec_pretty(reason) {
        Ok(bytes) => {
            if let Err(e) = crate::durable::write_atomic(&reason_path, &bytes) {
                log_failure("writing the reason file", &reason_path, &e);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode the reason file"),
    }
    if action == OnReject::Move {
        move_pair(bundle, signature, FAILED_SUBDIR);
        if reason_path.exists() {
            move_into(&reason_path, FAILED_SUBDIR);
        }
    }
}

fn move_pair(bundle: &Path, signature: &Path, folder: &str) {
    // The signature moves first: a bundle left without its signature is
    // never picked up again, whereas the reverse order could briefly show a
    // pair in the drop folder with the bundle gone.
    move_into(signature, folder);
    move_into(bundle, folder);
}

fn move_into(file: &Path, folder: &str) {
    let Some(parent) = file.parent() else {
        return;
    };
    let destination_dir = parent.join(folder);
    if let Err(e) = std::fs::create_dir_all(&destination_dir) {
        log_failure("creating the folder", &destination_dir, &e);
        return;
    }
    let Some(name) = file.file_name() else {
        return;
    };
    let destination = destination_dir.join(name);
    if let Err(e) = std::fs::rename(file, &destination) {
        log_failure("moving", file, &e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_bundles_get_a_reason_file_and_move_to_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("a.zst");
        let signature = dir.path().join("a.sig.bin");
        std::fs::write(&bundle, b"x").expect("write");
        std::fs::write(&signature, b"y").expect("write");
        let reason = Reason {
            bundle: "a.zst",
            id: "ab",
            class: "integrity",
            message: "does not verify",
            at: SystemTime::now(),
        };
        finish_rejected(&bundle, &signature, &reason, OnReject::Move);
        assert!(!bundle.exists() && !signature.exists());
        let moved = dir.path().join("failed");
        assert!(moved.join("a.zst").exists() && moved.join("a.sig.bin").exists());
        let text = std::fs::read_to_string(moved.join("a.zst.error.json")).expect("reason");
        assert!(text.contains("does not verify"));
    }

    #[test]
    fn imported_bundles_can_be_moved_or_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("b.zst");
        let signature = dir.path().join("b.sig.bin");
        std::fs::write(&bundle, b"x").expect("write");
        std::fs::write(&signature, b"y").expect("write");
        finish_imported(&bundle, &signature, OnSuccess::Move);
        assert!(dir.path().join("processed/b.zst").exists());
        let moved = dir.path().join("processed/b.zst");
        finish_imported(
            &moved,
            &dir.path().join("processed/b.sig.bin"),
            OnSuccess::Delete,
        );
        assert!(!moved.exists());
    }
}
