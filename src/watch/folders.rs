//! The drop folders as the watcher holds them: their inotify watches and
//! which directory (device and inode) each watch is on.
//!
//! An inotify watch belongs to an inode, not a path. When a drop folder is
//! unmounted and mounted again (a USB stick pulled and put back, an NFS
//! share remounted) or deleted and re-created, the watch stays on the old
//! inode and reports nothing more, and notify does not say so. So the
//! folders' identities are checked (one `stat` each, no listing) on every
//! look, and a folder that is now another directory is watched again.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher as _};

/// Device and inode of a directory.
type Identity = (u64, u64);

fn identity_of(path: &Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = std::fs::metadata(path).ok()?;
    metadata.is_dir().then(|| (metadata.dev(), metadata.ino()))
}

struct Folder {
    path: PathBuf,
    /// The directory the watch (or, polling, the last look) is on; `None`
    /// while the folder is missing or cannot be watched.
    identity: Option<Identity>,
}

/// The drop folders and their watches.
pub(super) struct Folders {
    folders: Vec<Folder>,
    events: Option<notify::RecommendedWatcher>,
    mode: RecursiveMode,
}

impl Folders {
    /// Watches `dirs` with inotify, calling `hint` on events that can make a
    /// bundle ready; polling (no watches) when `poll` or when inotify is
    /// unavailable.
    pub(super) fn new(
        dirs: &[PathBuf],
        recursive: bool,
        poll: bool,
        hint: impl Fn() + Send + 'static,
    ) -> Folders {
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        let events = if poll { None } else { start_events(hint) };
        let mut folders = Folders {
            folders: dirs
                .iter()
                .map(|path| Folder {
                    path: path.clone(),
                    identity: None,
                })
                .collect(),
            events,
            mode,
        };
        for index in 0..folders.folders.len() {
            if !folders.watch(index) && folders.events.is_some() {
                tracing::warn!(dir = %folders.folders[index].path.display(), "cannot watch folder with inotify; polling instead");
                folders.events = None;
            }
        }
        folders
    }

    /// Whether the folders are polled rather than watched.
    pub(super) fn polling(&self) -> bool {
        self.events.is_none()
    }

    /// Whether every folder is there and watched (or, polling, there).
    pub(super) fn all_up(&self) -> bool {
        self.folders.iter().all(|f| f.identity.is_some())
    }

    /// Compares each folder with the directory its watch is on and watches
    /// it again where that changed. True when any folder changed, so the
    /// caller lists them all again.
    pub(super) fn check(&mut self) -> bool {
        let mut changed = false;
        for index in 0..self.folders.len() {
            let now = identity_of(&self.folders[index].path);
            if now == self.folders[index].identity {
                continue;
            }
            changed = true;
            let path = self.folders[index].path.display().to_string();
            match (self.folders[index].identity, now) {
                (Some(_), None) => {
                    tracing::warn!(dir = %path, "drop folder is gone (unmounted or deleted); watching for it to come back");
                    self.unwatch(index);
                    self.folders[index].identity = None;
                }
                (_, Some(_)) => {
                    self.unwatch(index);
                    if self.watch(index) {
                        tracing::info!(dir = %path, "drop folder is another directory now (mounted again or re-created); watching it again");
                    }
                }
                (None, None) => {}
            }
        }
        changed
    }

    /// Watches folder `index` where it is now; false if that failed.
    fn watch(&mut self, index: usize) -> bool {
        let folder = &mut self.folders[index];
        let before = identity_of(&folder.path);
        if let Some(events) = self.events.as_mut()
            && let Err(e) = events.watch(&folder.path, self.mode)
        {
            tracing::warn!(dir = %folder.path.display(), error = %e, "cannot watch drop folder");
            folder.identity = None;
            return false;
        }
        // Only trust the watch if the folder did not change under it.
        folder.identity = before.filter(|id| identity_of(&folder.path) == Some(*id));
        folder.identity.is_some()
    }

    fn unwatch(&mut self, index: usize) {
        if let Some(events) = self.events.as_mut() {
            // The old watch may already be gone with its inode.
            let _ = events.unwatch(&self.folders[index].path);
        }
    }
}

/// Whether an event can make a bundle ready: a file created, renamed,
/// removed, closed after writing or given a new mtime, or the kernel's queue
/// overflowing. Opening or reading files (the watcher's own listings, the
/// verifier reading a bundle) is not: reacting to those made an idle watcher
/// wake itself forever.
pub(super) fn is_arrival(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Metadata(_))
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Other
    )
}

/// Subscribes to inotify events; `None` (and polling) when that fails, e.g.
/// when the inotify instance limit is reached.
fn start_events(hint: impl Fn() + Send + 'static) -> Option<notify::RecommendedWatcher> {
    match notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) if is_arrival(&event.kind) => hint(),
        Ok(_) => {}
        // An error (e.g. the watch limit reached while adding subfolders)
        // may have cost events: look.
        Err(_) => hint(),
    }) {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(error = %e, "inotify unavailable; polling instead");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, CreateKind, DataChange, RenameMode};

    use super::*;

    #[test]
    fn only_events_that_can_make_a_bundle_ready_wake_the_watcher() {
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Remove(notify::event::RemoveKind::File),
            EventKind::Other,
        ] {
            assert!(is_arrival(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
        ] {
            assert!(!is_arrival(&kind), "{kind:?}");
        }
    }

    #[test]
    fn a_folder_deleted_and_created_again_is_watched_again() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("drop");
        std::fs::create_dir(&dir).expect("mkdir");
        let mut folders = Folders::new(std::slice::from_ref(&dir), false, false, || {});
        assert!(!folders.polling());
        assert!(folders.all_up());
        assert!(!folders.check(), "nothing changed");
        std::fs::remove_dir(&dir).expect("rmdir");
        assert!(folders.check());
        assert!(!folders.all_up());
        std::fs::create_dir(&dir).expect("mkdir again");
        assert!(folders.check());
        assert!(folders.all_up());
    }
}
