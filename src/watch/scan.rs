//! One look at the drop folders: which bundle and signature files are there,
//! with their sizes and modification times.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::config::{FAILED_SUBDIR, PROCESSED_SUBDIR};

/// Suffixes of files still being written by common copy tools.
const IN_PROGRESS_SUFFIXES: [&str; 3] = [".part", ".tmp", ".partial"];

/// Size and modification time of a file, the two things that must stop
/// changing before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileState {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch (whole-second mtimes,
    /// as on some network file systems, still work: they just settle slower).
    pub mtime_ns: u128,
}

impl FileState {
    /// Reads a file's current state (following a symbolic link); only a
    /// regular file has one: FIFOs and devices never settle into a bundle.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        if !metadata.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(FileState {
            size: metadata.len(),
            mtime_ns: metadata
                .modified()?
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        })
    }
}

/// Whether a file name is a candidate at all: not hidden, not a partial copy.
pub fn is_candidate_name(name: &str) -> bool {
    !name.starts_with('.') && !IN_PROGRESS_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Whether a candidate is a bundle (`*.zst`) rather than a signature or other.
pub fn is_bundle_name(name: &str) -> bool {
    is_candidate_name(name) && name.ends_with(".zst")
}

/// Every candidate regular file under `dirs` (recursing when asked, but never
/// into hidden folders or the processed/failed folders), with its state.
/// Symbolic links are skipped unless `follow_symlinks`, and then only links
/// to regular files count; FIFOs, devices and sockets never do.
/// Unreadable folders are skipped with a warning so one bad mount does not
/// stop the others.
pub fn scan(
    dirs: &[PathBuf],
    recursive: bool,
    follow_symlinks: bool,
) -> HashMap<PathBuf, FileState> {
    let mut found = HashMap::new();
    for dir in dirs {
        scan_dir(dir, recursive, follow_symlinks, &mut found);
    }
    found
}

fn scan_dir(
    dir: &Path,
    recursive: bool,
    follow_symlinks: bool,
    found: &mut HashMap<PathBuf, FileState>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list drop folder");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_candidate_name(&name) {
            continue;
        }
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if recursive && name != PROCESSED_SUBDIR && name != FAILED_SUBDIR {
                scan_dir(&path, recursive, follow_symlinks, found);
            }
            continue;
        }
        if kind.is_symlink() && !follow_symlinks {
            tracing::debug!(path = %path.display(), "skipping a symbolic link (drop.follow_symlinks is off)");
            continue;
        }
        if let Ok(state) = FileState::of(&path) {
            found.insert(path, state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_and_hidden_files_are_not_candidates() {
        for name in [
            ".content.zst",
            "content.zst.part",
            "content.zst.tmp",
            "c.partial",
        ] {
            assert!(!is_candidate_name(name), "{name}");
        }
        assert!(is_bundle_name("content.tar.zst"));
        assert!(!is_bundle_name("content.tar.sig.bin"));
    }

    #[test]
    fn scan_skips_processed_and_failed_folders() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("processed")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("site-a")).expect("mkdir");
        std::fs::write(dir.path().join("processed/old.zst"), b"x").expect("write");
        std::fs::write(dir.path().join("site-a/new.zst"), b"x").expect("write");
        std::fs::write(dir.path().join("top.zst"), b"x").expect("write");
        let flat = scan(&[dir.path().to_owned()], false, false);
        assert_eq!(flat.len(), 1);
        let deep = scan(&[dir.path().to_owned()], true, false);
        assert_eq!(deep.len(), 2);
        assert!(!deep.contains_key(&dir.path().join("processed/old.zst")));
    }

    #[test]
    fn links_are_skipped_unless_followed_and_only_regular_files_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("real.zst"), b"x").expect("write");
        std::os::unix::fs::symlink(root.join("real.zst"), root.join("link.zst")).expect("link");
        std::os::unix::fs::symlink("/dev/zero", root.join("zero.zst")).expect("link");
        let made_fifo = std::process::Command::new("mkfifo")
            .arg(root.join("fifo.zst"))
            .status()
            .expect("run mkfifo");
        assert!(made_fifo.success());
        let names = |found: HashMap<PathBuf, FileState>| {
            let mut names: Vec<String> = found
                .keys()
                .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(scan(&[root.to_owned()], false, false)), ["real.zst"]);
        assert_eq!(
            names(scan(&[root.to_owned()], false, true)),
            ["link.zst", "real.zst"]
        );
    }
}
