//! The settling state machine: a bundle is ready when its `.zst` and its
//! signature both exist and both have kept the same size and modification
//! time for the settle time. The signature is found by the naming rule of
//! [`crate::verify::signature_candidates`]; when several candidates exist,
//! all of them must have settled and all are handed on, so verification can
//! pick the one that verifies. Either file may arrive first; a file still
//! being copied keeps changing and is never handed on.
//!
//! A settled file whose partner is not there (a bundle without any of its
//! signature names, a signature without its bundle) is *unpaired*: the
//! settler lists them with what is missing, and says once when one has
//! waited longer than the warning delay. A file whose size or modification
//! time changes between scans is being copied; that is logged once per copy
//! so the operator sees why nothing happens yet.
//!
//! Driven by snapshots from [`super::scan`]; each transition is testable
//! without a file system or a clock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::scan::{FileState, is_bundle_name};
pub use crate::config::defaults::DEFAULT_UNPAIRED_WARN_AFTER;
use crate::verify::{bundles_for_signature, is_signature_name, signature_candidates};

/// A bundle whose two files have settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyBundle {
    /// The `.zst` file.
    pub bundle: PathBuf,
    /// Its detached signature: the first candidate of the naming rule present.
    pub signature: PathBuf,
    /// The bundle file's settled state.
    pub state: FileState,
    /// The signature file's settled state.
    pub signature_state: FileState,
    /// Further candidate signatures beside the bundle, in rule order, with
    /// their settled states (normally none).
    pub other_signatures: Vec<(PathBuf, FileState)>,
}

impl ReadyBundle {
    /// Every candidate signature, in rule order, for verification.
    pub fn signatures(&self) -> Vec<PathBuf> {
        std::iter::once(self.signature.clone())
            .chain(self.other_signatures.iter().map(|(path, _)| path.clone()))
            .collect()
    }

    /// Makes `signature` (one of [`ReadyBundle::signatures`], the one that
    /// verified) the bundle's signature, so it is the one disposed of with
    /// the bundle and checked for changes.
    pub fn prefer_signature(&mut self, signature: &std::path::Path) {
        if let Some(at) = self
            .other_signatures
            .iter()
            .position(|(path, _)| path == signature)
        {
            let (path, state) = self.other_signatures.remove(at);
            let previous = (
                std::mem::replace(&mut self.signature, path),
                std::mem::replace(&mut self.signature_state, state),
            );
            self.other_signatures.insert(0, previous);
        }
    }
}

/// A settled file in a drop folder without its partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpaired {
    /// The file.
    pub path: PathBuf,
    /// Its state.
    pub state: FileState,
    /// The partner's possible file names, in the order they are looked for.
    pub missing: Vec<String>,
    /// Since when the file has been unchanged.
    pub since: Instant,
}

impl Unpaired {
    /// `since` on the wall clock, for the API.
    pub fn since_wall_clock(&self) -> std::time::SystemTime {
        std::time::SystemTime::now() - self.since.elapsed()
    }
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    state: FileState,
    since: Instant,
    /// The file changed between two scans and has not settled since: a
    /// copy is under way (logged once per copy).
    copying: bool,
    /// The unpaired warning was logged for this state of the file.
    warned: bool,
}

impl Tracked {
    fn new(state: FileState, now: Instant) -> Self {
        Tracked {
            state,
            since: now,
            copying: false,
            warned: false,
        }
    }
}

/// Tracks candidate files between scans.
#[derive(Debug)]
pub struct Settler {
    settle_time: Duration,
    unpaired_warn_after: Duration,
    files: HashMap<PathBuf, Tracked>,
    /// Bundles already handed on, with the states of the bundle and its
    /// signatures they were handed on in.
    emitted: HashMap<PathBuf, Vec<FileState>>,
}

impl Settler {
    /// A settler requiring `settle_time` of stillness, warning about
    /// unpaired files after [`DEFAULT_UNPAIRED_WARN_AFTER`].
    pub fn new(settle_time: Duration) -> Self {
        Settler {
            settle_time,
            unpaired_warn_after: DEFAULT_UNPAIRED_WARN_AFTER,
            files: HashMap::new(),
            emitted: HashMap::new(),
        }
    }

    /// Warns about an unpaired file once it has waited `after`.
    pub fn warn_unpaired_after(mut self, after: Duration) -> Self {
        self.unpaired_warn_after = after;
        self
    }

    fn settled(&self, tracked: &Tracked, now: Instant) -> bool {
        now.duration_since(tracked.since) >= self.settle_time
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
                    if !tracked.copying {
                        tracing::info!(
                            file = %path.display(),
                            size = state.size,
                            "waiting for the copy to finish: the file's size or modification time is still changing"
                        );
                    }
                    *tracked = Tracked {
                        copying: true,
                        ..Tracked::new(*state, now)
                    };
                }
                None => {
                    self.files.insert(path.clone(), Tracked::new(*state, now));
                }
            }
        }
        let settle_time = self.settle_time;
        for (path, tracked) in &mut self.files {
            if tracked.copying && now.duration_since(tracked.since) >= settle_time {
                tracked.copying = false;
                tracing::debug!(file = %path.display(), "copy finished");
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
            let mut signatures = signature_candidates(path)
                .into_iter()
                .filter_map(|candidate| {
                    let tracked = self.files.get(&candidate)?;
                    Some((candidate, *tracked))
                })
                .collect::<Vec<_>>();
            if signatures.is_empty() {
                continue;
            }
            if !self.settled(tracked, now)
                || !signatures.iter().all(|(_, sig)| self.settled(sig, now))
            {
                continue;
            }
            let (signature, sig) = signatures.remove(0);
            let bundle = ReadyBundle {
                bundle: path.clone(),
                signature,
                state: tracked.state,
                signature_state: sig.state,
                other_signatures: signatures
                    .into_iter()
                    .map(|(path, t)| (path, t.state))
                    .collect(),
            };
            if self.emitted.get(path) == Some(&version(&bundle)) {
                continue;
            }
            ready.push(bundle);
        }
        // Arrival order: the file that settled first is handed on first.
        ready.sort_by_key(|r| (self.files.get(&r.bundle).map(|t| t.since), r.bundle.clone()));
        for r in &ready {
            self.emitted.insert(r.bundle.clone(), version(r));
        }
        ready
    }

    /// When the next unsettled file will have been still long enough, or the
    /// next unpaired file will be due its warning, so the watcher can look
    /// again exactly then.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.files
            .values()
            .flat_map(|t| {
                let warning = (!t.warned).then_some(t.since + self.unpaired_warn_after);
                std::iter::once(t.since + self.settle_time).chain(warning)
            })
            .filter(|deadline| *deadline > now)
            .min()
    }

    /// The settled files without their partner, sorted by path.
    pub fn unpaired(&self, now: Instant) -> Vec<Unpaired> {
        let mut unpaired: Vec<Unpaired> = self
            .files
            .iter()
            .filter(|(_, tracked)| self.settled(tracked, now))
            .filter_map(|(path, tracked)| {
                let missing = self.missing_partner(path)?;
                Some(Unpaired {
                    path: path.clone(),
                    state: tracked.state,
                    missing,
                    since: tracked.since,
                })
            })
            .collect();
        unpaired.sort_by(|a, b| a.path.cmp(&b.path));
        unpaired
    }

    /// The unpaired files that have waited [`Settler::warn_unpaired_after`]
    /// and were not warned about yet in their current state; each is
    /// returned once.
    pub fn due_warnings(&mut self, now: Instant) -> Vec<Unpaired> {
        let due: Vec<Unpaired> = self
            .unpaired(now)
            .into_iter()
            .filter(|u| now.duration_since(u.since) >= self.unpaired_warn_after)
            .filter(|u| self.files.get(&u.path).is_some_and(|t| !t.warned))
            .collect();
        for unpaired in &due {
            if let Some(tracked) = self.files.get_mut(&unpaired.path) {
                tracked.warned = true;
            }
        }
        due
    }

    /// The names of the partner `path` lacks, or `None` when it has one (or
    /// is neither a bundle nor a signature, such as a key file).
    fn missing_partner(&self, path: &std::path::Path) -> Option<Vec<String>> {
        let name = path.file_name()?.to_string_lossy().into_owned();
        if is_bundle_name(&name) {
            let candidates = signature_candidates(path);
            if candidates.iter().any(|c| self.files.contains_key(c)) {
                return None;
            }
            return Some(candidates.iter().filter_map(|c| file_name(c)).collect());
        }
        if !is_signature_name(&name) {
            return None;
        }
        let bundles = bundles_for_signature(&name);
        if bundles
            .iter()
            .any(|bundle| self.files.contains_key(&path.with_file_name(bundle)))
        {
            return None;
        }
        Some(bundles)
    }

    /// Forgets that `ready` was handed on, so it must settle again (from
    /// `now`) and is then handed on again: used when a bundle changed while
    /// being read. If a newer version was handed on since, it is already on
    /// its way and nothing changes, so no version is handed on twice.
    pub fn resettle(&mut self, ready: &ReadyBundle, now: Instant) {
        let bundle = &ready.bundle;
        if self.emitted.get(bundle) != Some(&version(ready)) {
            return;
        }
        self.emitted.remove(bundle);
        if let Some(tracked) = self.files.get_mut(bundle) {
            tracked.since = now;
        }
    }
}

fn file_name(path: &std::path::Path) -> Option<String> {
    Some(path.file_name()?.to_string_lossy().into_owned())
}

/// The states a bundle was handed on in: a change to any of its files makes
/// it a new version.
fn version(ready: &ReadyBundle) -> Vec<FileState> {
    // The signatures' states in a fixed order, so a worker that moved the
    // signature that verified to the front still names the same version.
    let mut signatures: Vec<FileState> = std::iter::once(ready.signature_state)
        .chain(ready.other_signatures.iter().map(|(_, state)| *state))
        .collect();
    signatures.sort_by_key(|s| (s.size, s.mtime_ns));
    std::iter::once(ready.state).chain(signatures).collect()
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
    fn every_signature_name_pairs_with_its_bundle() {
        for (bundle, signature) in [
            ("/d/bundle-name.zst", "/d/bundle-name.tar.sig.bin"),
            ("/d/a.zst", "/d/a.sig.bin"),
            ("/d/a.zst", "/d/a.zst.sig.bin"),
            ("/d/a.zst", "/d/a.zst.sig"),
            ("/d/a.zst", "/d/a.sig"),
            ("/d/a.tar.zst", "/d/a.tar.sig.bin"),
            ("/d/a.tar.zst", "/d/a.sig.bin"),
            ("/d/a.zst", "/d/a.sigstore.json"),
            ("/d/a.zst", "/d/a.zst.sigstore.json"),
            ("/d/a.tar.zst", "/d/a.tar.sigstore.json"),
        ] {
            let mut settler = Settler::new(SETTLE);
            let t0 = Instant::now();
            let both = snapshot(&[(bundle, state(10, 1)), (signature, state(72, 1))]);
            settler.observe(&both, t0);
            let ready = settler.observe(&both, t0 + SETTLE);
            assert_eq!(ready.len(), 1, "{bundle} + {signature}");
            assert_eq!(ready[0].signature, PathBuf::from(signature));
        }
    }

    #[test]
    fn several_signatures_are_all_handed_on_in_rule_order() {
        let mut settler = Settler::new(SETTLE);
        let t0 = Instant::now();
        let files = snapshot(&[
            ("/d/a.zst", state(10, 1)),
            ("/d/a.sig", state(72, 1)),
            ("/d/a.tar.sig.bin", state(70, 1)),
        ]);
        settler.observe(&files, t0);
        let mut ready = settler.observe(&files, t0 + SETTLE);
        assert_eq!(ready.len(), 1);
        assert_eq!(
            ready[0].signatures(),
            [PathBuf::from("/d/a.tar.sig.bin"), PathBuf::from("/d/a.sig")]
        );
        ready[0].prefer_signature(std::path::Path::new("/d/a.sig"));
        assert_eq!(ready[0].signature, PathBuf::from("/d/a.sig"));
        assert_eq!(ready[0].signature_state, state(72, 1));
        assert_eq!(
            ready[0].other_signatures,
            [(PathBuf::from("/d/a.tar.sig.bin"), state(70, 1))]
        );
    }

    #[test]
    fn a_lone_bundle_and_a_lone_signature_wait_with_what_is_missing() {
        let mut settler = Settler::new(SETTLE).warn_unpaired_after(SETTLE * 10);
        let t0 = Instant::now();
        let files = snapshot(&[
            ("/d/a.zst", state(10, 1)),
            ("/d/b.tar.sig.bin", state(72, 1)),
            ("/d/public_key.pem", state(100, 1)),
        ]);
        assert!(settler.observe(&files, t0).is_empty());
        assert!(settler.unpaired(t0).is_empty(), "not settled yet");
        let waiting = settler.unpaired(t0 + SETTLE);
        assert_eq!(waiting.len(), 2, "{waiting:?}");
        assert_eq!(waiting[0].path, PathBuf::from("/d/a.zst"));
        assert_eq!(
            waiting[0].missing,
            [
                "a.sig.bin",
                "a.tar.sig.bin",
                "a.zst.sig.bin",
                "a.zst.sig",
                "a.sig",
                "a.sigstore.json",
                "a.zst.sigstore.json"
            ]
        );
        assert_eq!(waiting[1].missing, ["b.tar.zst", "b.zst"]);
        assert!(settler.due_warnings(t0 + SETTLE * 9).is_empty());
        assert_eq!(
            settler.next_deadline(t0 + SETTLE * 9),
            Some(t0 + SETTLE * 10)
        );
        assert_eq!(settler.due_warnings(t0 + SETTLE * 10).len(), 2);
        assert!(
            settler.due_warnings(t0 + SETTLE * 20).is_empty(),
            "one warning per file"
        );

        let paired = snapshot(&[
            ("/d/a.zst", state(10, 1)),
            ("/d/a.tar.sig.bin", state(72, 1)),
            ("/d/b.tar.sig.bin", state(72, 1)),
            ("/d/b.zst", state(10, 1)),
        ]);
        let t1 = t0 + SETTLE * 21;
        settler.observe(&paired, t1);
        assert!(settler.unpaired(t1 + SETTLE).is_empty());
        assert_eq!(settler.observe(&paired, t1 + SETTLE).len(), 2);
    }

    #[test]
    fn a_file_still_being_copied_is_not_waiting() {
        let mut settler = Settler::new(SETTLE);
        let t0 = Instant::now();
        for step in 0..5u64 {
            let growing = snapshot(&[("/d/a.zst", state(step * 100, u128::from(step)))]);
            let now = t0 + SETTLE * u32::try_from(step).unwrap_or(0);
            settler.observe(&growing, now);
            assert!(settler.unpaired(now).is_empty(), "step {step}");
        }
    }

    #[test]
    fn a_resettle_of_an_old_version_does_not_hand_on_the_newer_one_twice() {
        let mut settler = Settler::new(SETTLE);
        let t0 = Instant::now();
        let v1 = snapshot(&[("/d/a.zst", state(10, 1)), ("/d/a.sig.bin", state(72, 1))]);
        settler.observe(&v1, t0);
        let first = settler.observe(&v1, t0 + SETTLE);
        assert_eq!(first.len(), 1);
        let v2 = snapshot(&[("/d/a.zst", state(20, 2)), ("/d/a.sig.bin", state(72, 1))]);
        settler.observe(&v2, t0 + SETTLE * 2);
        assert_eq!(settler.observe(&v2, t0 + SETTLE * 3).len(), 1);
        // The worker of v1 finds the file changed and asks for a resettle.
        let bundle = PathBuf::from("/d/a.zst");
        assert_eq!(first[0].bundle, bundle);
        settler.resettle(&first[0], t0 + SETTLE * 3);
        for later in [5, 7, 9] {
            assert!(
                settler.observe(&v2, t0 + SETTLE * later).is_empty(),
                "v2 was handed on already"
            );
        }
    }

    #[test]
    fn a_resettled_bundle_settles_again_before_it_is_handed_on() {
        let mut settler = Settler::new(SETTLE);
        let t0 = Instant::now();
        let v1 = snapshot(&[("/d/a.zst", state(10, 1)), ("/d/a.sig.bin", state(72, 1))]);
        settler.observe(&v1, t0);
        let first = settler.observe(&v1, t0 + SETTLE);
        let t1 = t0 + SETTLE * 2;
        settler.resettle(&first[0], t1);
        assert!(settler.observe(&v1, t1).is_empty());
        assert_eq!(settler.observe(&v1, t1 + SETTLE).len(), 1);
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
