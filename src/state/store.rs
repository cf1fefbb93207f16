//! The record store: one JSON file per bundle under `<state_dir>/bundles/`,
//! each replaced atomically, plus a memo of which drop-folder file had which
//! content so a restart does not re-hash bundles it already finished.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write as _;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::record::{BundleRecord, Status};
use crate::durable::{self, TEMP_PREFIX};

/// Result type of the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with the state directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file in the state directory could not be read or written.
    #[error("state directory: cannot access {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be encoded (cannot happen with valid UTF-8 data).
    #[error("state directory: cannot encode {path}: {source}")]
    Encode {
        /// The file.
        path: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What a drop-folder file held when it was last identified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMemo {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: u128,
    /// The bundle id (hex SHA-256) of that content.
    pub id: String,
    /// The signature beside it when the pair was rejected, so an unchanged
    /// pair is recognised without reading it again while a new signature is
    /// looked at afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<RejectedSignature>,
}

/// The signature file of a rejected pair, as it was when judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedSignature {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: u128,
    /// The id of the pair's record.
    pub id: String,
}

/// One line of the file memo journal: `memo: null` forgets the path.
#[derive(Serialize, Deserialize)]
struct MemoChange {
    path: PathBuf,
    memo: Option<FileMemo>,
}

/// The daemon's durable memory.
///
/// Every change is written to disk before it becomes visible in memory, and
/// changes are written one at a time (`write` is held across the disk write
/// and the memory update), so what readers see is always what a restart
/// would load, and two writers can never leave disk and memory disagreeing.
pub struct StateStore {
    dir: PathBuf,
    inner: Mutex<Inner>,
    write: Mutex<Journal>,
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, BundleRecord>,
    /// The records newest first (by first sighting, then id), so a page of
    /// `/api/v1/imports` costs its own length, not a sort of everything.
    order: BTreeSet<(Reverse<SystemTime>, String)>,
    files: HashMap<PathBuf, FileMemo>,
}

impl Inner {
    fn insert(&mut self, record: BundleRecord) {
        if let Some(old) = self.records.get(&record.id) {
            self.order
                .remove(&(Reverse(old.first_seen), old.id.clone()));
        }
        self.order
            .insert((Reverse(record.first_seen), record.id.clone()));
        self.records.insert(record.id.clone(), record);
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.records.remove(id) {
            self.order.remove(&(Reverse(old.first_seen), old.id));
        }
    }
}

/// The append-only file memo journal.
struct Journal {
    file: Option<std::fs::File>,
    /// Lines in the journal, live or superseded; it is compacted when this
    /// outgrows the live entries.
    lines: usize,
}

const BUNDLES_DIR: &str = "bundles";
/// The memo as one JSON map, as earlier versions wrote it on every change;
/// read once and replaced by the journal.
const LEGACY_FILES_MEMO: &str = "files.json";
const FILES_JOURNAL: &str = "files.jsonl";
/// The journal is rewritten with only its live entries once it holds this
/// many lines more than there are live entries: appends stay one small
/// write each, and the file stays within a small multiple of what it holds.
const JOURNAL_SLACK_LINES: usize = 4096;
const PROBE_FILE: &str = ".airlock-writable";

impl StateStore {
    /// Opens (creating if needed) the state directory and loads every record.
    /// A record file that cannot be parsed is set aside as `*.corrupt` and
    /// reported, never silently dropped.
    pub fn open(dir: &Path) -> Result<Self> {
        let bundles = dir.join(BUNDLES_DIR);
        std::fs::create_dir_all(&bundles).map_err(|e| io(&bundles, e))?;
        let mut inner = Inner::default();
        for entry in std::fs::read_dir(&bundles).map_err(|e| io(&bundles, e))? {
            let entry = entry.map_err(|e| io(&bundles, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) {
                // A write interrupted before its rename: the old record stands.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            match serde_json::from_slice::<BundleRecord>(&bytes) {
                Ok(record) => inner.insert(record),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "unreadable state record set aside");
                    let _ = std::fs::rename(&path, path.with_extension("json.corrupt"));
                }
            }
        }
        inner.files = load_memo(dir)?;
        let store = StateStore {
            dir: dir.to_owned(),
            inner: Mutex::new(inner),
            write: Mutex::new(Journal {
                file: None,
                lines: 0,
            }),
        };
        store.compact_memo()?;
        let legacy = dir.join(LEGACY_FILES_MEMO);
        if legacy.exists() {
            std::fs::remove_file(&legacy).map_err(|e| io(&legacy, e))?;
        }
        Ok(store)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps (every update
        // is a single insert), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_write(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record of bundle `id`.
    pub fn get(&self, id: &str) -> Option<BundleRecord> {
        self.lock().records.get(id).cloned()
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(BUNDLES_DIR).join(format!("{id}.json"))
    }

    /// Writes a record durably, then makes it visible. On error nothing
    /// changed, on disk or in memory.
    pub fn put(&self, record: &BundleRecord) -> Result<()> {
        let path = self.record_path(&record.id);
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| Error::Encode {
            path: path.display().to_string(),
            source,
        })?;
        let _writing = self.lock_write();
        durable::write_atomic(&path, &bytes).map_err(|e| io(&path, e))?;
        self.lock().insert(record.clone());
        Ok(())
    }

    /// Removes the record of `id` from disk, then from memory.
    pub fn remove(&self, id: &str) -> Result<()> {
        let path = self.record_path(id);
        let _writing = self.lock_write();
        match std::fs::remove_file(&path) {
            Ok(()) => durable::sync_dir(&self.dir.join(BUNDLES_DIR)).map_err(|e| io(&path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path, e)),
        }
        self.lock().remove(id);
        Ok(())
    }

    /// The newest records first (by first sighting), at most `limit`,
    /// starting after the record `after` when given (the last id of the
    /// previous page; an unknown id gives an empty page).
    pub fn recent(&self, limit: usize, after: Option<&str>) -> Vec<BundleRecord> {
        let inner = self.lock();
        let start = match after {
            None => Bound::Unbounded,
            Some(id) => match inner.records.get(id) {
                Some(record) => Bound::Excluded((Reverse(record.first_seen), id.to_owned())),
                None => return Vec::new(),
            },
        };
        inner
            .order
            .range((start, Bound::Unbounded))
            .take(limit)
            .filter_map(|(_, id)| inner.records.get(id).cloned())
            .collect()
    }

    /// Removes finished records (imported, rejected, removed) that finished
    /// more than `max_age` ago, then the oldest finished ones beyond
    /// `max_records`. Never removed: records still under way, and records
    /// of content whose file is still in a drop folder (forgetting those
    /// would import or judge that file again). Returns how many went.
    pub fn prune(&self, now: SystemTime, max_age: Duration, max_records: usize) -> Result<usize> {
        let (expired, total) = {
            let inner = self.lock();
            let in_drop: HashSet<&str> = inner
                .files
                .values()
                .flat_map(|m| {
                    std::iter::once(m.id.as_str()).chain(m.rejected.as_ref().map(|r| r.id.as_str()))
                })
                .collect();
            let mut finished: Vec<(SystemTime, &str)> = inner
                .records
                .values()
                .filter(|r| !r.status.is_pending() && !in_drop.contains(r.id.as_str()))
                .map(|r| (r.finished.unwrap_or(r.first_seen), r.id.as_str()))
                .collect();
            finished.sort();
            let over = inner.records.len().saturating_sub(max_records);
            let expired: Vec<String> = finished
                .iter()
                .enumerate()
                .take_while(|(n, (at, _))| {
                    *n < over || now.duration_since(*at).is_ok_and(|age| age > max_age)
                })
                .map(|(_, (_, id))| (*id).to_owned())
                .collect();
            (expired, inner.records.len())
        };
        for id in &expired {
            self.remove(id)?;
        }
        if !expired.is_empty() {
            tracing::info!(
                removed = expired.len(),
                kept = total - expired.len(),
                "old records removed (state.retention, state.max_records)"
            );
        }
        Ok(expired.len())
    }

    /// Every rejected record that names `name`.
    pub fn rejected_named(&self, name: &str) -> Vec<BundleRecord> {
        self.lock()
            .records
            .values()
            .filter(|r| r.status == Status::Rejected && r.names.iter().any(|n| n == name))
            .cloned()
            .collect()
    }

    /// When the most recent successful import finished, across restarts.
    pub fn last_imported(&self) -> Option<SystemTime> {
        self.lock()
            .records
            .values()
            .filter(|r| r.status == Status::Imported)
            .filter_map(|r| r.finished)
            .max()
    }

    /// Records whose import was under way or due when the daemon last
    /// stopped.
    pub fn unfinished(&self) -> Vec<BundleRecord> {
        self.lock()
            .records
            .values()
            .filter(|r| r.status.is_pending())
            .cloned()
            .collect()
    }

    /// What `path` held when it was last identified, if its size and mtime
    /// are unchanged since.
    pub fn identified(&self, path: &Path, size: u64, mtime_ns: u128) -> Option<FileMemo> {
        self.lock()
            .files
            .get(path)
            .filter(|m| m.size == size && m.mtime_ns == mtime_ns)
            .cloned()
    }

    /// Every remembered drop-folder file.
    pub fn files(&self) -> Vec<(PathBuf, FileMemo)> {
        self.lock()
            .files
            .iter()
            .map(|(p, m)| (p.clone(), m.clone()))
            .collect()
    }

    /// Remembers what `path` holds.
    pub fn remember_file(&self, path: &Path, memo: FileMemo) -> Result<()> {
        self.change_memo(path, Some(memo))
    }

    /// Forgets what `path` held, once the file has been moved or deleted.
    pub fn forget_file(&self, path: &Path) -> Result<()> {
        if !self.lock().files.contains_key(path) {
            return Ok(());
        }
        self.change_memo(path, None)
    }

    /// Appends one change to the journal (one small write and one sync,
    /// whatever the number of files remembered), then applies it in memory.
    fn change_memo(&self, path: &Path, memo: Option<FileMemo>) -> Result<()> {
        let journal_path = self.dir.join(FILES_JOURNAL);
        let change = MemoChange {
            path: path.to_owned(),
            memo,
        };
        let mut line = serde_json::to_vec(&change).map_err(|source| Error::Encode {
            path: journal_path.display().to_string(),
            source,
        })?;
        line.push(b'\n');
        let mut journal = self.lock_write();
        if journal.file.is_none() {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&journal_path)
                .map_err(|e| io(&journal_path, e))?;
            journal.file = Some(file);
        }
        if let Some(file) = journal.file.as_mut() {
            let written = file.write_all(&line).and_then(|()| file.sync_data());
            if let Err(e) = written {
                // The append may have left a torn line; reopen (and so
                // re-check) the file before the next change.
                journal.file = None;
                return Err(io(&journal_path, e));
            }
        }
        journal.lines += 1;
        let live = {
            let mut inner = self.lock();
            match change.memo {
                Some(memo) => inner.files.insert(change.path, memo),
                None => inner.files.remove(&change.path),
            };
            inner.files.len()
        };
        let compact = journal.lines > live.saturating_mul(2) + JOURNAL_SLACK_LINES;
        drop(journal);
        if compact {
            self.compact_memo()?;
        }
        Ok(())
    }

    /// Rewrites the journal with only the live entries.
    fn compact_memo(&self) -> Result<()> {
        let path = self.dir.join(FILES_JOURNAL);
        let mut journal = self.lock_write();
        let files = self.lock().files.clone();
        let mut bytes = Vec::new();
        for (file, memo) in files {
            let change = MemoChange {
                path: file,
                memo: Some(memo),
            };
            serde_json::to_writer(&mut bytes, &change).map_err(|source| Error::Encode {
                path: path.display().to_string(),
                source,
            })?;
            bytes.push(b'\n');
        }
        journal.file = None;
        durable::write_atomic(&path, &bytes).map_err(|e| io(&path, e))?;
        journal.lines = self.lock().files.len();
        Ok(())
    }

    /// Proves the record folder is writable right now (for `/readyz`).
    pub fn check_writable(&self) -> Result<()> {
        let probe = self.dir.join(BUNDLES_DIR).join(PROBE_FILE);
        std::fs::write(&probe, b"ok").map_err(|e| io(&probe, e))?;
        std::fs::remove_file(&probe).map_err(|e| io(&probe, e))
    }
}

/// The file memo: the legacy map if there is one, then the journal replayed
/// over it. A torn last line (a crash mid-append) is ignored: that change
/// was never acknowledged.
fn load_memo(dir: &Path) -> Result<HashMap<PathBuf, FileMemo>> {
    let mut files = HashMap::new();
    let legacy = dir.join(LEGACY_FILES_MEMO);
    match std::fs::read(&legacy) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(map) => files = map,
            Err(e) => {
                tracing::warn!(file = %legacy.display(), error = %e, "file memo unreadable; bundles will be re-hashed")
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&legacy, e)),
    }
    let journal = dir.join(FILES_JOURNAL);
    let text = match std::fs::read(&journal) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(io(&journal, e)),
    };
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<MemoChange>(line) {
            Ok(MemoChange {
                path,
                memo: Some(memo),
            }) => {
                files.insert(path, memo);
            }
            Ok(MemoChange { path, memo: None }) => {
                files.remove(&path);
            }
            Err(e) => {
                tracing::warn!(file = %journal.display(), error = %e, "skipping an unreadable file memo line")
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, status: Status) -> BundleRecord {
        BundleRecord {
            id: id.to_owned(),
            names: vec!["a.zst".into()],
            size: 10,
            status,
            attempts: 1,
            first_seen: SystemTime::now(),
            started: None,
            finished: None,
            verified_by: None,
            pushed: None,
            error: None,
            pair: None,
        }
    }

    fn memo(size: u64, mtime_ns: u128, id: &str) -> FileMemo {
        FileMemo {
            size,
            mtime_ns,
            id: id.to_owned(),
            rejected: None,
        }
    }

    #[test]
    fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        store.put(&record("aa", Status::Imported)).expect("put");
        store.put(&record("bb", Status::Importing)).expect("put");
        store
            .remember_file(Path::new("/drop/a.zst"), memo(10, 7, "aa"))
            .expect("memo");
        drop(store);

        let store = StateStore::open(dir.path()).expect("reopen");
        assert_eq!(store.get("aa").map(|r| r.status), Some(Status::Imported));
        let unfinished: Vec<String> = store.unfinished().into_iter().map(|r| r.id).collect();
        assert_eq!(unfinished, vec!["bb".to_owned()]);
        assert_eq!(
            store
                .identified(Path::new("/drop/a.zst"), 10, 7)
                .map(|m| m.id),
            Some("aa".to_owned())
        );
        assert_eq!(store.identified(Path::new("/drop/a.zst"), 11, 7), None);
    }

    #[test]
    fn the_last_import_is_the_latest_finished_imported_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        assert_eq!(store.last_imported(), None);
        let at = |secs| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        for (id, status, finished) in [
            ("aa", Status::Imported, at(100)),
            ("bb", Status::Imported, at(300)),
            ("cc", Status::Rejected, at(500)),
        ] {
            let mut r = record(id, status);
            r.finished = finished;
            store.put(&r).expect("put");
        }
        drop(store);
        let store = StateStore::open(dir.path()).expect("reopen");
        assert_eq!(store.last_imported(), at(300));
    }

    #[test]
    fn an_unreadable_record_is_set_aside_and_the_rest_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        store.put(&record("aa", Status::Imported)).expect("put");
        drop(store);
        let bad = dir.path().join("bundles").join("zz.json");
        std::fs::write(&bad, b"{ not json").expect("write");
        let store = StateStore::open(dir.path()).expect("reopen");
        assert!(store.get("aa").is_some());
        assert!(dir.path().join("bundles").join("zz.json.corrupt").exists());
        store.check_writable().expect("writable");
    }

    #[test]
    fn the_file_memo_is_a_journal_of_changes_compacted_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        for n in 0..50u64 {
            let path = PathBuf::from(format!("/drop/{n}.zst"));
            store.remember_file(&path, memo(n, 1, "aa")).expect("memo");
            if n % 2 == 0 {
                store.forget_file(&path).expect("forget");
            }
        }
        let journal = dir.path().join(FILES_JOURNAL);
        let lines = |path: &Path| {
            std::fs::read_to_string(path)
                .expect("journal")
                .lines()
                .count()
        };
        assert_eq!(lines(&journal), 75, "one appended line per change");
        drop(store);

        let store = StateStore::open(dir.path()).expect("reopen");
        assert_eq!(store.files().len(), 25);
        assert_eq!(
            store
                .identified(Path::new("/drop/1.zst"), 1, 1)
                .map(|m| m.id),
            Some("aa".to_owned())
        );
        assert_eq!(store.identified(Path::new("/drop/2.zst"), 2, 1), None);
        assert_eq!(lines(&journal), 25, "compacted to the live entries");
    }

    #[test]
    fn a_torn_last_line_and_the_old_memo_map_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let legacy: HashMap<PathBuf, FileMemo> =
            HashMap::from([(PathBuf::from("/drop/old.zst"), memo(3, 4, "bb"))]);
        std::fs::write(
            dir.path().join(LEGACY_FILES_MEMO),
            serde_json::to_vec(&legacy).expect("json"),
        )
        .expect("write legacy");
        std::fs::write(
            dir.path().join(FILES_JOURNAL),
            b"{\"path\":\"/drop/new.zst\",\"memo\":{\"size\":1,\"mtime_ns\":2,\"id\":\"cc\"}}\n{\"path\":\"/dr",
        )
        .expect("write journal");
        let store = StateStore::open(dir.path()).expect("open");
        assert!(store.identified(Path::new("/drop/old.zst"), 3, 4).is_some());
        assert!(store.identified(Path::new("/drop/new.zst"), 1, 2).is_some());
        assert!(!dir.path().join(LEGACY_FILES_MEMO).exists());
    }

    #[test]
    fn a_failed_write_changes_nothing_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        store.put(&record("aa", Status::Importing)).expect("put");
        let bundles = dir.path().join(BUNDLES_DIR);
        std::fs::rename(&bundles, dir.path().join("aside")).expect("move aside");
        std::fs::write(&bundles, b"x").expect("block");
        assert!(store.put(&record("aa", Status::Imported)).is_err());
        assert!(store.check_writable().is_err());
        assert_eq!(store.get("aa").map(|r| r.status), Some(Status::Importing));
    }

    #[test]
    fn pages_of_records_follow_each_other_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        for n in 0..5u64 {
            let mut r = record(&format!("{n:02}"), Status::Imported);
            r.first_seen = SystemTime::UNIX_EPOCH + Duration::from_secs(n);
            store.put(&r).expect("put");
        }
        let ids =
            |records: Vec<BundleRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.recent(2, None)), ["04", "03"]);
        assert_eq!(ids(store.recent(2, Some("03"))), ["02", "01"]);
        assert_eq!(ids(store.recent(2, Some("01"))), ["00"]);
        assert!(store.recent(2, Some("zz")).is_empty());
        let mut again = record("04", Status::Rejected);
        again.first_seen = SystemTime::UNIX_EPOCH + Duration::from_secs(4);
        store.put(&again).expect("replace");
        assert_eq!(
            store.recent(10, None).len(),
            5,
            "a replaced record is listed once"
        );
    }

    #[test]
    fn retention_removes_old_finished_records_but_never_what_exactly_once_needs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        let day = Duration::from_secs(86_400);
        let now = SystemTime::UNIX_EPOCH + day * 1000;
        for (id, status, age_days) in [
            ("old", Status::Imported, 100),
            ("old-in-drop", Status::Imported, 100),
            ("old-pending", Status::Retrying, 100),
            ("young", Status::Rejected, 1),
            ("younger", Status::Imported, 0),
        ] {
            let mut r = record(id, status);
            r.finished = Some(now - day * age_days);
            store.put(&r).expect("put");
        }
        store
            .remember_file(Path::new("/drop/kept.zst"), memo(1, 1, "old-in-drop"))
            .expect("memo");
        assert_eq!(store.prune(now, day * 90, 100).expect("prune"), 1);
        assert!(store.get("old").is_none());
        assert!(!dir.path().join("bundles/old.json").exists());
        for kept in ["old-in-drop", "old-pending", "young", "younger"] {
            assert!(store.get(kept).is_some(), "{kept}");
        }
        // Over the count: the oldest finished go first.
        assert_eq!(store.prune(now, day * 90, 3).expect("prune"), 1);
        assert!(store.get("young").is_none());
        assert!(store.get("younger").is_some());
    }
}
