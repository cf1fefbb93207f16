//! Where large uploads stand, remembered across processes: after each
//! acknowledged `PATCH` of a big blob the upload's latest `Location` and
//! offset are recorded, so an import killed mid-blob continues from the offset
//! the registry acknowledges instead of sending the blob again.
//!
//! The push stage only defines what it needs ([`UploadJournal`]); where the
//! records live is the caller's business (the daemon keeps them in its state
//! directory, see `crate::state::UploadSessions`).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use url::Url;

use super::registry::UploadSession;
use crate::digest::Digest;

/// Blobs at least this large have their upload sessions journaled. Below it,
/// starting a blob over after a crash costs about half a second at 1 Gbit/s
/// (64 MiB), less than is worth a durable write per chunk; above it, one
/// small fsync'd write per 8 MiB chunk is noise next to the chunk itself, and
/// the bytes a resume saves grow with the blob (multi-GB layers are the ones
/// that fail mid-upload in the field).
pub const RESUMABLE_BLOB_BYTES: u64 = 64 << 20;

/// Which upload a record is about: one blob in one repository of one registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UploadKey {
    /// The registry, `host[:port]`.
    pub registry: String,
    /// The repository in that registry.
    pub repository: String,
    /// The blob.
    pub digest: Digest,
}

/// Where one upload stands. Holds no credentials: the `Location` a registry
/// returns carries only the session's state (airlock strips any user info
/// before recording it), and no request header is ever recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRecord {
    /// Which upload.
    #[serde(flatten)]
    pub key: UploadKey,
    /// The blob's size.
    pub size: u64,
    /// The latest `Location` the registry returned for the session.
    pub location: String,
    /// Bytes the registry acknowledged at that `Location`.
    pub offset: u64,
}

impl UploadRecord {
    /// A record of `session` for `key`, without user info in the URL.
    pub fn new(key: UploadKey, size: u64, session: &UploadSession) -> Self {
        let mut location = session.location.clone();
        let _ = location.set_username("");
        let _ = location.set_password(None);
        UploadRecord {
            key,
            size,
            location: location.to_string(),
            offset: session.offset,
        }
    }

    /// The recorded `Location`, if it is a valid URL.
    pub fn location_url(&self) -> Option<Url> {
        Url::parse(&self.location).ok()
    }
}

/// Remembers upload sessions of large blobs between attempts and processes.
///
/// Implementations are synchronous and small (the push calls them from
/// `block_in_place`); a failure to record is logged by the caller and never
/// fails an upload, since the journal only saves bytes on a later attempt.
pub trait UploadJournal: Send + Sync + fmt::Debug {
    /// The session recorded for `key`, if any.
    fn find(&self, key: &UploadKey) -> Option<UploadRecord>;
    /// Records (replacing any earlier record) where an upload stands.
    fn record(&self, record: &UploadRecord) -> std::io::Result<()>;
    /// Forgets an upload: it completed, or its session is gone.
    fn forget(&self, key: &UploadKey) -> std::io::Result<()>;
}

/// An [`UploadJournal`] shared by concurrent uploads.
pub type SharedJournal = Arc<dyn UploadJournal>;

/// A journal bound to one upload, logging (not returning) I/O failures.
pub(super) struct Journaled<'a> {
    journal: &'a dyn UploadJournal,
    key: UploadKey,
    size: u64,
}

impl<'a> Journaled<'a> {
    /// `Some` when `journal` is set and the blob is big enough to journal.
    pub(super) fn new(
        journal: Option<&'a SharedJournal>,
        registry: &str,
        repository: &str,
        digest: &Digest,
        size: u64,
    ) -> Option<Self> {
        let journal = journal?;
        (size >= RESUMABLE_BLOB_BYTES).then(|| Journaled {
            journal: journal.as_ref(),
            key: UploadKey {
                registry: registry.to_owned(),
                repository: repository.to_owned(),
                digest: digest.clone(),
            },
            size,
        })
    }

    /// The recorded session, if it is for a blob of this size.
    pub(super) fn find(&self) -> Option<UploadRecord> {
        let record = tokio::task::block_in_place(|| self.journal.find(&self.key))?;
        (record.key == self.key && record.size == self.size).then_some(record)
    }

    /// Records where the upload stands now.
    pub(super) fn record(&self, session: &UploadSession) {
        let record = UploadRecord::new(self.key.clone(), self.size, session);
        if let Err(error) = tokio::task::block_in_place(|| self.journal.record(&record)) {
            tracing::warn!(digest = %self.key.digest, repository = %self.key.repository, %error,
                "cannot record the upload session; a restart would send this blob from the start");
        }
    }

    /// Forgets the upload.
    pub(super) fn forget(&self) {
        if let Err(error) = tokio::task::block_in_place(|| self.journal.forget(&self.key)) {
            tracing::warn!(digest = %self.key.digest, repository = %self.key.repository, %error,
                "cannot remove the upload record");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_drop_user_info_from_the_location() {
        let key = UploadKey {
            registry: "r.example:5000".into(),
            repository: "mirror/app".into(),
            digest: format!("sha256:{}", "a".repeat(64))
                .parse()
                .expect("digest"),
        };
        let session = UploadSession {
            location: Url::parse(
                "https://robot:secret@r.example:5000/v2/mirror/app/blobs/uploads/u?_state=abc",
            )
            .expect("url"),
            offset: 42,
        };
        let record = UploadRecord::new(key.clone(), 100, &session);
        assert!(!record.location.contains("secret"), "{}", record.location);
        assert!(!record.location.contains("robot"), "{}", record.location);
        assert!(record.location.contains("_state=abc"));
        let json = serde_json::to_string(&record).expect("json");
        let back: UploadRecord = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, record);
        assert_eq!(back.key, key);
    }
}
