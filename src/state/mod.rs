//! The daemon's durable memory: one record per bundle, keyed by content digest.

mod record;
mod store;
pub mod time;

pub use record::{BundleRecord, Failure, Pushed, PushedImageRecord, Status};
pub use store::{Error, FileMemo, Result, StateStore};
