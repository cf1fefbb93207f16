//! The upload journal on disk: one small JSON file per (registry, repository,
//! blob) under `<state_dir>/uploads/`, replaced atomically after each
//! acknowledged chunk of a large blob and removed when the blob is complete.
//! See [`crate::push::UploadJournal`].

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::store::{Error, Result};
use crate::digest::{Algorithm, Hasher};
use crate::durable::{self, TEMP_PREFIX};
use crate::push::{UploadJournal, UploadKey, UploadRecord};

/// The folder under the state directory.
pub const UPLOADS_DIR: &str = "uploads";

/// Records untouched for this long are removed when the daemon starts.
/// Registries purge abandoned upload sessions after a week by default
/// (distribution's `storage.maintenance.uploadpurging.age: 168h`), so an
/// older record can only point at a session that no longer exists.
pub const UPLOAD_RECORD_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Upload sessions of large blobs, one JSON file each.
#[derive(Debug, Clone)]
pub struct UploadSessions {
    dir: PathBuf,
}

impl UploadSessions {
    /// Opens (creating if needed) `<state_dir>/uploads/`, removing leftovers
    /// of interrupted writes and records older than [`UPLOAD_RECORD_MAX_AGE`].
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join(UPLOADS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let now = SystemTime::now();
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .is_some_and(|age| age > UPLOAD_RECORD_MAX_AGE);
            if name.starts_with(TEMP_PREFIX) || (name.ends_with(".json") && stale) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(UploadSessions { dir })
    }

    /// The folder holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every readable record, in no particular order.
    pub fn records(&self) -> Vec<UploadRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|entry| std::fs::read(entry.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }

    /// `<algorithm>-<hex>-<12 hex of SHA-256(registry/repository)>.json`: the
    /// blob is recognisable in a listing, and the name is safe whatever the
    /// repository path holds.
    fn path(&self, key: &UploadKey) -> PathBuf {
        let mut hasher = Hasher::new(Algorithm::Sha256);
        hasher.update(key.registry.as_bytes());
        hasher.update(b"/");
        hasher.update(key.repository.as_bytes());
        let place = hasher.finish();
        let digest = key.digest.to_string().replace(':', "-");
        self.dir
            .join(format!("{digest}-{}.json", &place.hex()[..12]))
    }
}

impl UploadJournal for UploadSessions {
    fn find(&self, key: &UploadKey) -> Option<UploadRecord> {
        let path = self.path(key);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice::<UploadRecord>(&bytes) {
            Ok(record) if record.key == *key => Some(record),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unreadable upload record removed; that blob starts over");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    fn record(&self, record: &UploadRecord) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        durable::write_atomic(&self.path(&record.key), &bytes)
    }

    fn forget(&self, key: &UploadKey) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(repository: &str) -> UploadKey {
        UploadKey {
            registry: "registry.local:5000".into(),
            repository: repository.into(),
            digest: format!("sha256:{}", "b".repeat(64))
                .parse()
                .expect("digest"),
        }
    }

    fn record(repository: &str, offset: u64) -> UploadRecord {
        UploadRecord {
            key: key(repository),
            size: 100 << 20,
            location: format!(
                "http://registry.local:5000/v2/{repository}/blobs/uploads/u?_state=s{offset}"
            ),
            offset,
        }
    }

    #[test]
    fn records_are_replaced_found_per_repository_and_forgotten() {
        let state = tempfile::tempdir().expect("tempdir");
        let sessions = UploadSessions::open(state.path()).expect("open");
        assert!(state.path().join(UPLOADS_DIR).is_dir());
        sessions.record(&record("mirror/a", 8)).expect("record");
        sessions.record(&record("mirror/a", 16)).expect("replace");
        sessions.record(&record("mirror/b", 24)).expect("record");
        assert_eq!(
            sessions.find(&key("mirror/a")),
            Some(record("mirror/a", 16))
        );
        assert_eq!(
            sessions.find(&key("mirror/b")),
            Some(record("mirror/b", 24))
        );
        assert_eq!(sessions.records().len(), 2);

        // Another process sees the same.
        let again = UploadSessions::open(state.path()).expect("reopen");
        assert_eq!(again.find(&key("mirror/a")), Some(record("mirror/a", 16)));
        again.forget(&key("mirror/a")).expect("forget");
        again
            .forget(&key("mirror/a"))
            .expect("forgetting twice is fine");
        assert_eq!(sessions.find(&key("mirror/a")), None);
        assert_eq!(sessions.records().len(), 1);
    }

    #[test]
    fn unreadable_records_and_write_leftovers_are_dropped() {
        let state = tempfile::tempdir().expect("tempdir");
        let sessions = UploadSessions::open(state.path()).expect("open");
        let path = sessions.path(&key("mirror/a"));
        std::fs::write(&path, b"{ half").expect("write");
        let leftover = sessions.dir().join(format!("{TEMP_PREFIX}x"));
        std::fs::write(&leftover, b"x").expect("write");
        assert_eq!(sessions.find(&key("mirror/a")), None);
        assert!(!path.exists());
        UploadSessions::open(state.path()).expect("reopen");
        assert!(!leftover.exists());
    }
}
