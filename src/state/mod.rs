//! The daemon's durable memory: one record per bundle, keyed by content digest,
//! and the sessions of large uploads in progress.

mod record;
mod store;
pub mod time;
mod uploads;

pub use record::{
    BundleRecord, Failure, PackRecord, Pair, Pushed, PushedImageRecord, Status, WaitingRecord,
};
pub use store::{Error, FileMemo, RejectedSignature, Result, StateStore};
pub use uploads::{UPLOAD_RECORD_MAX_AGE, UPLOADS_DIR, UploadSessions};
