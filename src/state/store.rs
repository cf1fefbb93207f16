//! The record store: one JSON file per bundle under `<state_dir>/bundles/`,
//! each replaced atomically, plus a memo of which drop-folder file had which
//! content so a restart does not re-hash bundles it already finished.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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
}

/// The daemon's durable memory.
pub struct StateStore {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, BundleRecord>,
    files: HashMap<PathBuf, FileMemo>,
}

const BUNDLES_DIR: &str = "bundles";
const FILES_MEMO: &str = "files.json";
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
                Ok(record) => {
                    inner.records.insert(record.id.clone(), record);
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "unreadable state record set aside");
                    let _ = std::fs::rename(&path, path.with_extension("json.corrupt"));
                }
            }
        }
        let memo_path = dir.join(FILES_MEMO);
        match std::fs::read(&memo_path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(files) => inner.files = files,
                Err(e) => {
                    tracing::warn!(file = %memo_path.display(), error = %e, "file memo unreadable; bundles will be re-hashed")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&memo_path, e)),
        }
        Ok(StateStore {
            dir: dir.to_owned(),
            inner: Mutex::new(inner),
        })
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

    /// The record of bundle `id`.
    pub fn get(&self, id: &str) -> Option<BundleRecord> {
        self.lock().records.get(id).cloned()
    }

    /// Writes a record durably, then makes it visible.
    pub fn put(&self, record: &BundleRecord) -> Result<()> {
        let path = self
            .dir
            .join(BUNDLES_DIR)
            .join(format!("{}.json", record.id));
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| Error::Encode {
            path: path.display().to_string(),
            source,
        })?;
        durable::write_atomic(&path, &bytes).map_err(|e| io(&path, e))?;
        self.lock()
            .records
            .insert(record.id.clone(), record.clone());
        Ok(())
    }

    /// The newest records first (by first sighting), at most `limit`.
    pub fn recent(&self, limit: usize) -> Vec<BundleRecord> {
        let mut records: Vec<BundleRecord> = self.lock().records.values().cloned().collect();
        records.sort_by(|a, b| b.first_seen.cmp(&a.first_seen).then(a.id.cmp(&b.id)));
        records.truncate(limit);
        records
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

    /// Records that were not finished when the daemon last stopped.
    pub fn unfinished(&self) -> Vec<BundleRecord> {
        self.lock()
            .records
            .values()
            .filter(|r| !r.status.is_final())
            .cloned()
            .collect()
    }

    /// What `path` held when it was last identified, if its size and mtime
    /// are unchanged since.
    pub fn identified(&self, path: &Path, size: u64, mtime_ns: u128) -> Option<String> {
        self.lock()
            .files
            .get(path)
            .filter(|m| m.size == size && m.mtime_ns == mtime_ns)
            .map(|m| m.id.clone())
    }

    /// Remembers that `path` (with this size and mtime) is bundle `id`.
    pub fn remember_file(&self, path: &Path, size: u64, mtime_ns: u128, id: &str) -> Result<()> {
        let snapshot = {
            let mut inner = self.lock();
            inner.files.insert(
                path.to_owned(),
                FileMemo {
                    size,
                    mtime_ns,
                    id: id.to_owned(),
                },
            );
            inner.files.clone()
        };
        self.write_memo(&snapshot)
    }

    /// Forgets what `path` held, once the file has been moved or deleted.
    pub fn forget_file(&self, path: &Path) -> Result<()> {
        let snapshot = {
            let mut inner = self.lock();
            if inner.files.remove(path).is_none() {
                return Ok(());
            }
            inner.files.clone()
        };
        self.write_memo(&snapshot)
    }

    fn write_memo(&self, files: &HashMap<PathBuf, FileMemo>) -> Result<()> {
        let path = self.dir.join(FILES_MEMO);
        let bytes = serde_json::to_vec(files).map_err(|source| Error::Encode {
            path: path.display().to_string(),
            source,
        })?;
        durable::write_atomic(&path, &bytes).map_err(|e| io(&path, e))
    }

    /// Proves the state directory is writable right now (for `/readyz`).
    pub fn check_writable(&self) -> Result<()> {
        let probe = self.dir.join(PROBE_FILE);
        std::fs::write(&probe, b"ok").map_err(|e| io(&probe, e))?;
        std::fs::remove_file(&probe).map_err(|e| io(&probe, e))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        }
    }

    #[test]
    fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        store.put(&record("aa", Status::Imported)).expect("put");
        store.put(&record("bb", Status::Importing)).expect("put");
        store
            .remember_file(Path::new("/drop/a.zst"), 10, 7, "aa")
            .expect("memo");
        drop(store);

        let store = StateStore::open(dir.path()).expect("reopen");
        assert_eq!(store.get("aa").map(|r| r.status), Some(Status::Imported));
        let unfinished: Vec<String> = store.unfinished().into_iter().map(|r| r.id).collect();
        assert_eq!(unfinished, vec!["bb".to_owned()]);
        assert_eq!(
            store.identified(Path::new("/drop/a.zst"), 10, 7).as_deref(),
            Some("aa")
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
}
