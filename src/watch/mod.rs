//! Watch drop folders and hand on bundles whose files have settled.
//!
//! inotify events (through `notify`) are only hints that make the watcher
//! look sooner; what counts is a scan of the folders, done on every hint, at
//! every settle deadline, and on a fixed rescan interval. Polling mode (for
//! NFS written by another host and FUSE/USB mounts where inotify sees
//! nothing) runs exactly the same code with the hints switched off.
//!
//! Depends on nothing else in the pipeline: it only produces [`ReadyBundle`]s.

pub mod scan;
pub mod settle;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{Notify, mpsc, watch};

pub use scan::FileState;
pub use settle::{ReadyBundle, Settler, Unpaired};

/// Quiet time after an inotify event before scanning, so a burst of writes
/// from one copy costs one scan.
const EVENT_DEBOUNCE: Duration = Duration::from_millis(200);

/// How the watcher looks at the drop folders (the `drop` configuration section).
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The drop folders.
    pub dirs: Vec<PathBuf>,
    /// Look into subfolders too.
    pub recursive: bool,
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
    /// The bundle changed while it was read: forget it was handed on, so it
    /// settles and is handed on again.
    Resettle(PathBuf),
}

/// Runs until `shutdown` turns true, sending ready bundles to `ready` and
/// publishing the settled files still waiting for their partner to
/// `waiting`. `running` is true while the watcher works (for `/readyz`).
pub async fn run(
    options: WatchOptions,
    ready: mpsc::Sender<ReadyBundle>,
    waiting: watch::Sender<Vec<Unpaired>>,
    mut control: mpsc::UnboundedReceiver<WatchControl>,
    running: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let hint = Arc::new(Notify::new());
    // Kept alive for the loop's duration; dropping it stops the events.
    let _events = if options.poll {
        None
    } else {
        start_events(&options, Arc::clone(&hint))
    };
    let poll = options.poll || _events.is_none();
    let mut settler =
        Settler::new(options.settle_time).warn_unpaired_after(options.unpaired_warn_after);
    running.store(true, Ordering::Relaxed);
    tracing::info!(
        dirs = ?options.dirs,
        mode = if poll { "polling" } else { "inotify" },
        settle = ?options.settle_time,
        "watching drop folders"
    );
    loop {
        let dirs = options.dirs.clone();
        let recursive = options.recursive;
        let snapshot = match tokio::task::spawn_blocking(move || scan::scan(&dirs, recursive)).await
        {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::error!(error = %e, "drop folder scan failed");
                Default::default()
            }
        };
        let now = Instant::now();
        for bundle in settler.observe(&snapshot, now) {
            tracing::debug!(bundle = %bundle.bundle.display(), "bundle settled");
            if ready.send(bundle).await.is_err() {
                running.store(false, Ordering::Relaxed);
                return;
            }
        }
        report_unpaired(&mut settler, &waiting, now);
        let interval = if poll {
            options.poll_interval
        } else {
            options.rescan_interval
        };
        let wake = settler
            .next_deadline(now)
            .map(|deadline| deadline.saturating_duration_since(now))
            .map_or(interval, |until| until.min(interval));
        tokio::select! {
            _ = tokio::time::sleep(wake) => {}
            _ = hint.notified(), if !poll => {
                tokio::time::sleep(EVENT_DEBOUNCE).await;
            }
            Some(message) = control.recv() => match message {
                WatchControl::Resettle(path) => settler.forget(&path),
            },
            () = stopped(&mut shutdown) => {
                running.store(false, Ordering::Relaxed);
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

/// Subscribes to inotify events; `None` (and polling) when that fails, e.g.
/// when the inotify watch limit is reached.
fn start_events(options: &WatchOptions, hint: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                hint.notify_one();
            }
        }) {
            Ok(watcher) => watcher,
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; polling instead");
                return None;
            }
        };
    let mode = if options.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    for dir in &options.dirs {
        if let Err(e) = watcher.watch(dir, mode) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch folder with inotify; polling instead");
            return None;
        }
    }
    Some(watcher)
}
