//! Watch drop folders and hand on bundles whose files have settled.
//!
//! inotify events (through `notify`) are only hints that make the watcher
//! look sooner; what counts is a scan of the folders, done on every hint of
//! an arrival (a file created, renamed, removed or closed after writing; not
//! the opens and reads of the watcher and verifier themselves), at every
//! settle deadline, on a fixed rescan interval, and when a folder turned out
//! to be another directory (remounted, re-created: see [`folders`]). Polling mode (for
//! NFS written by another host and FUSE/USB mounts where inotify sees
//! nothing) runs exactly the same code with the hints switched off.
//!
//! Depends on nothing else in the pipeline: it only produces [`ReadyBundle`]s.

mod folders;
pub mod scan;
pub mod settle;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};

use folders::Folders;

pub use scan::FileState;
pub use settle::{ReadyBundle, Settler, Unpaired};

/// Quiet time after an inotify event before scanning, so a burst of writes
/// from one copy costs one scan.
const EVENT_DEBOUNCE: Duration = Duration::from_millis(200);

/// How often the drop folders are checked for having become another
/// directory (unmounted and mounted again, deleted and re-created), which
/// inotify does not report: one `stat` per folder, no listing, so a new
/// mount is watched within this time instead of at the next rescan.
const FOLDER_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// How the watcher looks at the drop folders (the `drop` configuration section).
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The drop folders.
    pub dirs: Vec<PathBuf>,
    /// Look into subfolders too.
    pub recursive: bool,
    /// Hand on bundles and signatures that are symbolic links.
    pub follow_symlinks: bool,
    /// Poll instead of using inotify.
    pub poll: bool,
    /// Scan interval in polling mode.
    pub poll_interval: Duration,
    /// Full rescan interval with inotify.
    pub rescan_interval: Duration,
    /// How long both files must be unchanged.
    pub settle_time: Duration,
    /// When a settled file without its partner is warned about.
    pub unpaired_warn_after: Duration,
}

impl From<&crate::config::DropSection> for WatchOptions {
    fn from(drop: &crate::config::DropSection) -> Self {
        WatchOptions {
            dirs: drop.dirs.clone(),
            recursive: drop.recursive,
            follow_symlinks: drop.follow_symlinks,
            poll: drop.poll,
            poll_interval: drop.poll_interval,
            rescan_interval: drop.rescan_interval,
            settle_time: drop.settle_time,
            unpaired_warn_after: drop.unpaired_warn_after,
        }
    }
}

/// Messages the daemon sends back to the watcher.
#[derive(Debug)]
pub enum WatchControl {
    /// The bundle changed while it was read: forget it was handed on in
    /// this version (its files' states), so it settles and is handed on
    /// again. A newer version already handed on is left alone.
    Resettle(ReadyBundle),
}

/// What the watcher reports while it runs.
pub trait WatchObserver: Send + Sync {
    /// Whether every drop folder is there and watched (or polled); false
    /// while one is gone (unmounted, deleted) and once the watcher stopped.
    fn watching(&self, up: bool);
    /// The drop folders were listed once.
    fn listed(&self);
}

/// Runs until `shutdown` turns true, sending ready bundles to `ready`,
/// publishing the settled files still waiting for their partner to
/// `waiting`, and reporting to `observer`.
pub async fn run(
    options: WatchOptions,
    ready: mpsc::Sender<ReadyBundle>,
    waiting: watch::Sender<Vec<Unpaired>>,
    mut control: mpsc::UnboundedReceiver<WatchControl>,
    observer: Arc<dyn WatchObserver>,
    mut shutdown: watch::Receiver<bool>,
) {
    let hint = Arc::new(Notify::new());
    let notify_hint = Arc::clone(&hint);
    let mut folders = Folders::new(&options.dirs, options.recursive, options.poll, move || {
        notify_hint.notify_one();
    });
    let poll = folders.polling();
    let mut settler =
        Settler::new(options.settle_time).warn_unpaired_after(options.unpaired_warn_after);
    observer.watching(folders.all_up());
    tracing::info!(
        dirs = ?options.dirs,
        mode = if poll { "polling" } else { "inotify" },
        settle = ?options.settle_time,
        "watching drop folders"
    );
    let interval = if poll {
        options.poll_interval
    } else {
        options.rescan_interval
    };
    let mut list_now = true;
    let mut next_listing = Instant::now();
    loop {
        if folders.check() {
            list_now = true;
        }
        observer.watching(folders.all_up());
        let now = Instant::now();
        if list_now || now >= next_listing {
            list_now = false;
            let dirs = options.dirs.clone();
            let recursive = options.recursive;
            let follow_symlinks = options.follow_symlinks;
            let snapshot = match tokio::task::spawn_blocking(move || {
                scan::scan(&dirs, recursive, follow_symlinks)
            })
            .await
            {
                Ok(snapshot) => snapshot,
                Err(e) => {
                    tracing::error!(error = %e, "drop folder scan failed");
                    Default::default()
                }
            };
            observer.listed();
            let now = Instant::now();
            for bundle in settler.observe(&snapshot, now) {
                tracing::debug!(bundle = %bundle.bundle.display(), "bundle settled");
                if ready.send(bundle).await.is_err() {
                    observer.watching(false);
                    return;
                }
            }
            report_unpaired(&mut settler, &waiting, now);
            next_listing = now + interval;
        }
        // The next listing: the interval, or sooner when a file's settle
        // time runs out.
        let now = Instant::now();
        if let Some(deadline) = settler.next_deadline(now) {
            next_listing = next_listing.min(deadline);
        }
        let wake = next_listing
            .saturating_duration_since(now)
            .min(FOLDER_CHECK_INTERVAL);
        tokio::select! {
            _ = tokio::time::sleep(wake) => {}
            _ = hint.notified(), if !poll => {
                tokio::time::sleep(EVENT_DEBOUNCE).await;
                list_now = true;
            }
            Some(message) = control.recv() => match message {
                WatchControl::Resettle(bundle) => settler.resettle(&bundle, Instant::now()),
            },
            () = stopped(&mut shutdown) => {
                observer.watching(false);
                tracing::info!("watcher stopped");
                return;
            }
        }
    }
}

/// Publishes the files waiting for their partner and warns, once per file,
/// about those that have waited too long.
fn report_unpaired(settler: &mut Settler, waiting: &watch::Sender<Vec<Unpaired>>, now: Instant) {
    for file in settler.due_warnings(now) {
        tracing::warn!(
            file = %file.path.display(),
            waited = ?now.duration_since(file.since),
            missing = %file.missing.join(" or "),
            "a file in the drop folder is still waiting for its partner; nothing is imported until it arrives"
        );
    }
    let unpaired = settler.unpaired(now);
    waiting.send_if_modified(|published| {
        let changed = *published != unpaired;
        if changed {
            *published = unpaired;
        }
        changed
    });
}

/// Resolves once `shutdown` turns true (the guard `wait_for` returns is not
/// `Send`, so it must not live in the select's output).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopped| *stopped).await;
}
