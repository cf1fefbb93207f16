//! The configuration of `airlock watch`, the daemon.
//!
//! Settings come from three places, each overriding the one before:
//!
//! 1. a YAML file (`--config`; a complete example is `config/airlock.yaml`),
//! 2. `AIRLOCK_*` environment variables (`AIRLOCK_DROP__SETTLE_TIME=2s`,
//!    `AIRLOCK_STATE_DIR=/data`, lists comma-separated),
//! 3. flags ([`WatchArgs`]).
//!
//! [`DaemonConfig::load`] merges them with the `config` crate, refuses
//! unknown keys (naming the key and the file or variable), fills in the
//! defaults ([`defaults`]) and validates the result. The daemon then asks the
//! configuration for what it needs ([`DaemonConfig::target`],
//! [`DaemonConfig::registry_config`], [`DaemonConfig::push_options`],
//! [`DaemonConfig::public_key_paths`], [`DaemonConfig::import_retry_policy`])
//! rather than re-deriving it.

mod convert;
mod credentials;
pub mod defaults;
mod env;
mod error;
mod flags;
pub mod keys;
pub mod kube;
mod load;
mod schema;
mod validate;

pub use credentials::CredentialFiles;
pub use error::{Error, Origin};
pub use flags::{WATCH_EXAMPLES, WatchArgs};
pub use keys::{KEYS, Key};
pub use kube::{KubeMode, KubeSection};
pub use schema::{
    DaemonConfig, DropSection, FAILED_SUBDIR, HttpAuthSection, HttpSection, ImportsSection,
    LogFormat, LogSection, OnReject, OnSuccess, PROCESSED_SUBDIR, RegistrySection, TrustSection,
};
