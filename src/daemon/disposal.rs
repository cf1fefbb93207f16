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

/// A read-only volume (a write-protected USB stick) is normal and silent;
/// a permission error is not: the daemon's user should be able to write
/// there, so that is a warning an operator must see.
fn is_read_only(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::ReadOnlyFilesystem
}

fn log_failure(action: &str, path: &Path, error: &std::io::Error) {
    if is_read_only(error) {
        tracing::info!(file = %path.display(), "drop folder is read-only; {action} skipped, the state directory remembers the outcome");
    } else {
        tracing::warn!(file = %path.display(), error = %error, "{action} failed");
    }
}

/// Applies `action` to an imported bundle's files. A file already gone (a
/// disposal that a stop interrupted half-way) is fine.
pub fn finish_imported(bundle: &Path, signature: &Path, action: OnSuccess) {
    match action {
        OnSuccess::Keep => {}
        OnSuccess::Move => move_files(bundle, &[signature, bundle], PROCESSED_SUBDIR),
        OnSuccess::Delete => {
            // The signature goes first, as in a move: a bundle without its
            // signature is never picked up again.
            for file in [signature, bundle] {
                match std::fs::remove_file(file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => log_failure("delete", file, &e),
                }
            }
            if let Some(parent) = bundle.parent() {
                sync(parent);
            }
        }
    }
}

/// Writes the reason file (unless one is there) and applies `action` to a
/// rejected bundle's files.
pub fn finish_rejected(bundle: &Path, signature: &Path, reason: &Reason<'_>, action: OnReject) {
    let reason_path = with_suffix(bundle, REASON_SUFFIX);
    if bundle.exists() && !reason_path.exists() {
        match serde_json::to_vec_pretty(reason) {
            Ok(bytes) => {
                if let Err(e) = crate::durable::write_atomic(&reason_path, &bytes) {
                    log_failure("writing the reason file", &reason_path, &e);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode the reason file"),
        }
    }
    if action == OnReject::Move {
        move_files(bundle, &[signature, &reason_path, bundle], FAILED_SUBDIR);
    }
}

/// Removes the reason file of an earlier rejection beside `bundle`, now
/// that a bundle of that name imported.
pub fn remove_reason_file(bundle: &Path) {
    let reason_path = with_suffix(bundle, REASON_SUFFIX);
    match std::fs::remove_file(&reason_path) {
        Ok(()) => {
            tracing::info!(file = %reason_path.display(), "removed the reason file of an earlier rejection under this name");
            if let Some(parent) = reason_path.parent() {
                sync(parent);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log_failure("removing the stale reason file", &reason_path, &e),
    }
}

/// Moves `files` (which belong to `bundle`) into `folder` beside them, in
/// the order given, without ever replacing an earlier delivery of the same
/// names there: a clash gets a UTC timestamp after the bundle's base name
/// (`images.20250101T120000Z.zst`, `images.20250101T120000Z.sig.bin`), so
/// the moved files still pair. Directories are synced so the moves survive
/// a power loss.
fn move_files(bundle: &Path, files: &[&Path], folder: &str) {
    let Some(parent) = bundle.parent() else {
        return;
    };
    let destination = parent.join(folder);
    if !destination.is_dir() {
        if let Err(e) = std::fs::create_dir_all(&destination) {
            log_failure("creating the folder", &destination, &e);
            return;
        }
        sync(parent);
    }
    let base = bundle_base(bundle);
    let present: Vec<&Path> = files.iter().copied().filter(|f| f.exists()).collect();
    let tag = free_tag(&destination, &base, &present);
    let mut moved = false;
    for file in present {
        let Some(name) = file.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let target = destination.join(tagged(&name, &base, tag.as_deref()));
        match std::fs::rename(file, &target) {
            Ok(()) => moved = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                log_failure("moving", file, &e);
                break;
            }
        }
    }
    if moved {
        sync(&destination);
        sync(parent);
    }
}

/// The bundle's name without `.zst`: what its signature and reason file
/// names start with.
fn bundle_base(bundle: &Path) -> String {
    let name = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".zst").unwrap_or(&name).to_owned()
}

/// `name` with `.<tag>` inserted after `base`, or appended when the name
/// does not start with it.
fn tagged(name: &str, base: &str, tag: Option<&str>) -> String {
    match tag {
        None => name.to_owned(),
        Some(tag) => match name.strip_prefix(base) {
            Some(rest) => format!("{base}.{tag}{rest}"),
            None => format!("{name}.{tag}"),
        },
    }
}

/// No tag when none of the names is taken in `destination`; otherwise the
/// first free timestamp tag (with a counter when several clash within a
/// second).
fn free_tag(destination: &Path, base: &str, files: &[&Path]) -> Option<String> {
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let free = |tag: Option<&str>| {
        names
            .iter()
            .all(|n| !destination.join(tagged(n, base, tag)).exists())
    };
    if free(None) {
        return None;
    }
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    (0..MAX_TAG_COUNTER)
        .map(|n| {
            if n == 0 {
                stamp.clone()
            } else {
                format!("{stamp}-{n}")
            }
        })
        .find(|tag| free(Some(tag)))
        .or_else(|| Some(format!("{stamp}-{}", std::process::id())))
}

/// Clashing deliveries of one name within one second that get a counter
/// before the process id is used instead.
const MAX_TAG_COUNTER: u32 = 1000;

fn sync(dir: &Path) {
    if let Err(e) = crate::durable::sync_dir(dir) {
        tracing::debug!(dir = %dir.display(), error = %e, "cannot sync the folder");
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

    #[test]
    fn a_second_delivery_of_a_name_never_replaces_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("images.tar.zst");
        let signature = dir.path().join("images.tar.sig.bin");
        for content in [b"first", b"other"] {
            std::fs::write(&bundle, content).expect("write");
            std::fs::write(&signature, content).expect("write");
            finish_imported(&bundle, &signature, OnSuccess::Move);
        }
        let processed = dir.path().join("processed");
        assert_eq!(
            std::fs::read(processed.join("images.tar.zst")).expect("first"),
            b"first"
        );
        let mut names: Vec<String> = std::fs::read_dir(&processed)
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 4, "{names:?}");
        let second = names
            .iter()
            .find(|n| n.starts_with("images.tar.2") && n.ends_with(".zst"))
            .expect("the second bundle under a tagged name");
        assert_eq!(
            std::fs::read(processed.join(second)).expect("second"),
            b"other"
        );
        let paired = crate::verify::signature_path_for(&processed.join(second));
        assert_eq!(std::fs::read(paired).expect("its signature"), b"other");
    }

    #[test]
    fn a_permission_error_is_not_taken_for_a_read_only_volume() {
        assert!(is_read_only(&std::io::Error::from(
            std::io::ErrorKind::ReadOnlyFilesystem
        )));
        assert!(!is_read_only(&std::io::Error::from(
            std::io::ErrorKind::PermissionDenied
        )));
    }
}
