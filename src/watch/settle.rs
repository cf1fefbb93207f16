//! The settling state machine: a bundle is ready when its `.zst` and its
//! signature both exist and both have kept the same size and modification
//! time for the settle time. Either file may arrive first; a file still being
//! copied keeps changing and is never handed on.
//!
//! Driven by snapshots from [`super::scan`]; each transition is testable
//! without a file system or a clock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::scan::{FileState, is_bundle_name};
use crate::verify::signature_path_for;

/// A bundle whose two files have settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyBundle {
    /// The `.zst` file.
    pub bundle: PathBuf,
    /// Its detached signature.
    pub signature: PathBuf,
    /// The bundle file's settled state.
    pub state: FileState,
    /// The signature file's settled state.
    pub signature_state: FileState,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    state: FileState,
    since: Instant,
}

/// Tracks candidate files between scans.
#[derive(Debug)]
pub struct Settler {
    settle_time: Duration,
    files: HashMap<PathBuf, Tracked>,
    /// Bundles already handed on, with the states they were handed on in.
    emitted: HashMap<PathBuf, (FileState, FileState)>,
}

impl Settler {
    /// A settler requiring `settle_time` of stillness.
    pub fn new(settle_time: Duration) -> Self {
        Settler {
            settle_time,
            files: HashMap::new(),
            emitted: HashMap::new(),
        }
    }

    /// Takes a new snapshot and returns the bundles that became ready, each
    /// once per content version (a bundle replaced in place is handed on again).
    pub fn observe(
        &mut self,
        snapshot: &HashMap<PathBuf, FileState>,
        now: Instant,
    ) -> Vec<ReadyBundle> {
        self.files.retain(|path, _| snapshot.contains_key(path));
        self.emitted.retain(|path, _| snapshot.contains_key(path));
        for (path, state) in snapshot {
            match self.files.get_mut(path) {
                Some(tracked) if tracked.state == *state => {}
                Some(tracked) => {
                    *tracked = Tracked {
                        state: *state,
                        since: now,
                    }
                }
                None => {
                    self.files.insert(
                        path.clone(),
                        Tracked {
                            state: *state,
                            since: now,
                        },
                    );
                }
            }
        }
        let mut ready = Vec::new();
        for (path, tracked) in &self.files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !is_bundle_name(&name) {
                continue;
            }
            let signature = signature_path_for(path);
            let Some(sig) = self.files.get(&signature) else {
                continue;
            };
            let settled = |t: &Tracked| now.duration_since(t.since) >= self.settle_time;
            if !settled(tracked) || !settled(sig) {
                continue;
            }
            let version = (tracked.state, sig.state);
            if self.emitted.get(path) == Some(&version) {
                continue;
            }
            ready.push(ReadyBundle {
                bundle: path.clone(),
                signature,
                state: tracked.state,
                signature_state: sig.state,
            });
        }
        // Arrival order: the file that settled first is handed on first.
        ready.sort_by_key(|r| (self.files.get(&r.bundle).map(|t| t.since), r.bundle.clone()));
        for r in &ready {
            self.emitted
                .insert(r.bundle.clone(), (r.state, r.signature_state));
        }
        ready
    }

    /// When the next unsettled file will have been still long enough, so the
    /// watcher can look again exactly then.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.files
            .values()
            .map(|t| t.since + self.settle_time)
            .filter(|deadline| *deadline > now)
            .min()
    }

    /// Forgets that a bundle was handed on, so the next scan hands it on
    /// again once settled (used when a bundle changed while being read).
    pub fn forget(&mut self, bundle: &PathBuf) {
        self.emitted.remove(bundle);
        self.files.remove(bundle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(2);

    fn state(size: u64, mtime_ns: u128) -> FileState {
        FileState { size, mtime_ns }
    }

    fn snapshot(files: &[(&str, FileState)]) -> HashMap<PathBuf, FileState> {
        files.iter().map(|(p, s)| (PathBuf::from(p), *s)).collect()
    }

    #[test]
    fn a_pair_is_ready_only_after_both_files_are_still_for_the_settle_time() {
        let mut settler = Settler::new(SETTLE);
        let t0 = Instant::now();
        let both = snapshot(&[("/d/a.zst", state(10, 1)), ("/d/a.sig.bin", state(72, 1))]);
        assert!(settler.observe(&both, t0).is_empty());
        assert!(
            settler
                .observe(&both, t0 + Duration::from_secs(1))
                .is_empty()
        );
        let ready = settler.observe(&both, t0 + SETTLE);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].signature, PathBuf::from("/d/a.sig.bin"));
        assert!(
            settler.observe(&both, t0 + SETTLE * 3).is_empty(),
            "a ready bundle is handed on once"
        );
    }

    #[test]
    fn a_growing_file_never_settles() {
        let mut settler = Settler::new(SETTLE);
        let t0 = Instant::now();
        for step in 0..10u64 {
            let growing = snapshot(&[
                ("/d/a.zst", state(step * 100, u128::from(step))),
                ("/d/a.sig.bin", state(72, 1)),
            ]);
            let now = t0 + Duration::from_secs(step);
            assert!(settler.observe(&growing, now).is_empty(), "step {step}");
        }
    }

    #[test]
    fn signature_first_then_bundle_later() {
        let mut settler = Settler::new(SETTLE);
        let t0 = Instant::now();
        let sig_only = snapshot(&[("/d/a.sig.bin", state(72, 1))]);
        assert!(settler.observe(&sig_only, t0 + SETTLE * 5).is_empty());
        let both = snapshot(&[("/d/a.zst", state(10, 1)), ("/d/a.sig.bin", state(72, 1))]);
        let t1 = t0 + SETTLE * 6;
        assert!(settler.observe(&both, t1).is_empty());
        assert_eq!(settler.observe(&both, t1 + SETTLE).len(), 1);
        assert_eq!(settler.next_deadline(t1), Some(t1 + SETTLE));
    }

    #[test]
    fn a_bundle_replaced_in_place_is_handed_on_again() {
        let mut settler = Settler::new(SETTLE);
        let t0 = Instant::now();
        let v1 = snapshot(&[("/d/a.zst", state(10, 1)), ("/d/a.sig.bin", state(72, 1))]);
        settler.observe(&v1, t0);
        assert_eq!(settler.observe(&v1, t0 + SETTLE).len(), 1);
        let v2 = snapshot(&[("/d/a.zst", state(20, 2)), ("/d/a.sig.bin", state(72, 2))]);
        settler.observe(&v2, t0 + SETTLE * 2);
        assert_eq!(settler.observe(&v2, t0 + SETTLE * 3).len(), 1);
    }
}
