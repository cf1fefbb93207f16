//! The shape of the daemon's configuration: what `airlock.yaml` holds.
//!
//! Every struct denies unknown fields, and every field defaults (see
//! [`super::defaults`]) so that a setting may come from the file, the
//! environment or a flag; required settings are checked after all three are
//! merged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Deserializer, Serialize};

use super::defaults::*;
use crate::import::PackImagePolicy;
use crate::plan::TagPolicy;
use crate::push::UploadMode;

/// The subdirectory of a drop directory that `on_success: move` moves
/// imported bundles (and their signatures) into. Never watched.
pub const PROCESSED_SUBDIR: &str = "processed";

/// The subdirectory of a drop directory that `on_reject: move` moves rejected
/// bundles (and their signatures) into. Never watched.
pub const FAILED_SUBDIR: &str = "failed";

/// The whole configuration of `airlock watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map of airlock watch settings"
)]
pub struct DaemonConfig {
    /// Where bundles arrive and how arrivals are noticed.
    pub drop: DropSection,
    /// Which keys may sign bundles.
    pub trust: TrustSection,
    /// Where images are pushed and how to reach it.
    pub registry: RegistrySection,
    /// How imports are scheduled and what happens to bundles afterwards.
    pub imports: ImportsSection,
    /// How much a bundle may make an import read and hold in memory.
    pub read: ReadSection,
    /// Signed import attestations.
    pub attestations: AttestationsSection,
    /// Where the daemon keeps its per-bundle records (default
    /// [`DEFAULT_STATE_DIR`]).
    pub state_dir: PathBuf,
    /// How long records are kept in the state directory.
    pub state: StateSection,
    /// The HTTP listener for metrics, probes and the API.
    pub http: HttpSection,
    /// Log output.
    pub log: LogSection,
    /// The Kubernetes API: Events and per-bundle Leases.
    pub kube: super::kube::KubeSection,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            drop: DropSection::default(),
            trust: TrustSection::default(),
            registry: RegistrySection::default(),
            imports: ImportsSection::default(),
            read: ReadSection::default(),
            attestations: AttestationsSection::default(),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            state: StateSection::default(),
            http: HttpSection::default(),
            log: LogSection::default(),
            kube: super::kube::KubeSection::default(),
        }
    }
}

/// `drop`: the directories bundles are delivered to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a map (the drop section)")]
pub struct DropSection {
    /// The drop directories. Required: at least one; no default.
    pub dirs: Vec<PathBuf>,
    /// Also watch subdirectories, except `processed/` and `failed/`
    /// (default [`DEFAULT_RECURSIVE`]).
    pub recursive: bool,
    /// Import bundles and signatures that are symbolic links (to regular
    /// files); otherwise links are skipped (default
    /// [`DEFAULT_FOLLOW_SYMLINKS`]).
    pub follow_symlinks: bool,
    /// List the directories every `poll_interval` instead of using inotify
    /// (default [`DEFAULT_POLL`]).
    pub poll: bool,
    /// How often to list the directories in polling mode (default
    /// [`DEFAULT_POLL_INTERVAL`]).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often to list them even with inotify, to catch missed events
    /// (default [`DEFAULT_RESCAN_INTERVAL`]).
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
    /// How long a file's size and mtime must stay unchanged before it counts
    /// as complete (default [`DEFAULT_SETTLE_TIME`]).
    #[serde(with = "humantime_serde")]
    pub settle_time: Duration,
    /// How long a settled file may wait for its partner (a bundle for its
    /// signature, or the other way round) before one warning is logged
    /// (default [`DEFAULT_UNPAIRED_WARN_AFTER`]).
    #[serde(with = "humantime_serde")]
    pub unpaired_warn_after: Duration,
    /// Before rejecting a bundle that failed verification or integrity
    /// checks, wait another `settle_time` and reject only if both files are
    /// unchanged (size, mtime and content digest); a copy that went on is
    /// settled and imported afresh (default [`DEFAULT_CONFIRM_REJECTION`]).
    pub confirm_rejection: bool,
}

impl Default for DropSection {
    fn default() -> Self {
        DropSection {
            dirs: Vec::new(),
            recursive: DEFAULT_RECURSIVE,
            follow_symlinks: DEFAULT_FOLLOW_SYMLINKS,
            poll: DEFAULT_POLL,
            poll_interval: DEFAULT_POLL_INTERVAL,
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
            settle_time: DEFAULT_SETTLE_TIME,
            unpaired_warn_after: DEFAULT_UNPAIRED_WARN_AFTER,
            confirm_rejection: DEFAULT_CONFIRM_REJECTION,
        }
    }
}

/// `trust`: the keys (and keyless signers) bundles must be signed with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a map (the trust section)")]
pub struct TrustSection {
    /// PEM public keys, or directories of them; a bundle verified by any one
    /// is accepted. Required: at least one, unless `keyless` names a signer;
    /// no default.
    pub public_keys: Vec<PathBuf>,
    /// Keyless signers a bundle's Sigstore bundle (`X.sigstore.json`) may
    /// carry a certificate of: `{trusted_root, identity, issuer}` entries,
    /// any one that verifies is enough (default: none, keyless signatures
    /// are not accepted).
    pub keyless: Vec<crate::verify::KeylessConfig>,
    /// Which keys must have signed which images inside a bundle: rules
    /// `{images, keys, policy}`, the first that matches an image's source
    /// reference decides (default: none, image signatures not checked).
    pub image_signatures: Vec<crate::trust::SignatureRuleConfig>,
    /// The oldest a bundle may be, by the creation time in its `index.json`
    /// (`org.opencontainers.image.created`, which `airlock bundle create`
    /// writes); older bundles, and bundles without one, are refused
    /// (default: none, any age).
    #[serde(with = "humantime_serde")]
    pub max_bundle_age: Option<Duration>,
}

/// `attestations`: what the daemon attests about each image it imports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map (the attestations section)"
)]
pub struct AttestationsSection {
    /// ECDSA P-256 private key (PEM) that signs an import attestation for
    /// every image written (default: none, no attestations).
    pub signing_key: Option<PathBuf>,
}

/// `registry`: the import target and how to reach it. There is deliberately
/// no `password` field: secrets are read from files, never given inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map (the registry section)"
)]
pub struct RegistrySection {
    /// `host[:port][/prefix]` or `oci:DIR`. Required; no default.
    pub target: String,
    /// Use HTTP instead of HTTPS (default [`DEFAULT_PLAIN_HTTP`]).
    pub plain_http: bool,
    /// Extra CA certificates (PEM files) to trust (default: none).
    pub ca_cert: Vec<PathBuf>,
    /// Accept any TLS certificate (default
    /// [`DEFAULT_INSECURE_SKIP_TLS_VERIFY`]).
    pub insecure_skip_tls_verify: bool,
    /// Client certificate (PEM) for a registry that requires mutual TLS;
    /// needs `client_key` (default: none).
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of `client_cert` (default: none).
    pub client_key: Option<PathBuf>,
    /// User name for the registry; needs `password_file` (default: none).
    pub username: Option<String>,
    /// File holding the password or token for `username` (default: none).
    pub password_file: Option<PathBuf>,
    /// Docker `config.json` to take credentials from (default:
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, when
    /// present).
    pub auth_file: Option<PathBuf>,
    /// Chunked or monolithic blob uploads (default [`DEFAULT_UPLOAD_MODE`]).
    #[serde(deserialize_with = "upload_mode")]
    pub upload_mode: UploadMode,
    /// Repository under the target's prefix that blobs are sent into while
    /// the bundle is indexed (default [`DEFAULT_STAGING_REPOSITORY`]; empty:
    /// blobs are streamed from the bundle again after the index pass).
    pub staging_repository: String,
    /// Blobs in flight per import (default [`DEFAULT_BLOB_CONCURRENCY`]).
    pub blob_concurrency: usize,
    /// MiB of chunks all uploads of an import may hold at once (default
    /// [`DEFAULT_BUFFER_MIB`]; at least 32 MiB are used).
    pub buffer_mib: usize,
    /// The prefix of the pack area, when packs land apart from the target's
    /// prefix, as Palette's `OCI_PACK_BASE` can (default: the target's
    /// prefix).
    pub pack_prefix: Option<String>,
    /// Whether a pack whose declared images are neither in its bundle nor in
    /// the target is pushed with a warning or held back (default
    /// [`DEFAULT_PACK_IMAGE_POLICY`]).
    #[serde(deserialize_with = "one_of")]
    pub pack_image_policy: PackImagePolicy,
    /// Hosts (`host` or `host:port`) a token realm may be on for the
    /// credentials to be sent there; realms elsewhere are refused (default:
    /// empty, any host reached over https).
    pub token_realm_hosts: Vec<String>,
    /// How long the registry may take to answer a request, on top of the
    /// time its body needs to move (default [`DEFAULT_ANSWER_TIMEOUT`]).
    #[serde(with = "humantime_serde")]
    pub answer_timeout: Duration,
    /// How long a response body may send nothing before the request counts
    /// as stalled (default [`DEFAULT_IDLE_TIMEOUT`]).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for RegistrySection {
    fn default() -> Self {
        RegistrySection {
            target: String::new(),
            plain_http: DEFAULT_PLAIN_HTTP,
            ca_cert: Vec::new(),
            insecure_skip_tls_verify: DEFAULT_INSECURE_SKIP_TLS_VERIFY,
            client_cert: None,
            client_key: None,
            username: None,
            password_file: None,
            auth_file: None,
            upload_mode: DEFAULT_UPLOAD_MODE,
            staging_repository: DEFAULT_STAGING_REPOSITORY.to_owned(),
            blob_concurrency: DEFAULT_BLOB_CONCURRENCY,
            buffer_mib: DEFAULT_BUFFER_MIB,
            pack_prefix: None,
            pack_image_policy: DEFAULT_PACK_IMAGE_POLICY,
            token_realm_hosts: Vec::new(),
            answer_timeout: DEFAULT_ANSWER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// `imports`: scheduling, retries, and what happens to bundle files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map (the imports section)"
)]
pub struct ImportsSection {
    /// Bundles imported at once (default [`DEFAULT_IMPORT_CONCURRENCY`]).
    pub concurrency: usize,
    /// What to do with a bundle once imported (default
    /// [`DEFAULT_ON_SUCCESS`]).
    #[serde(deserialize_with = "one_of")]
    pub on_success: OnSuccess,
    /// What to do with a bundle that failed verification or integrity checks
    /// (default [`DEFAULT_ON_REJECT`]).
    #[serde(deserialize_with = "one_of")]
    pub on_reject: OnReject,
    /// Platforms of multi-platform images to import (`linux/amd64`,
    /// `linux/arm64`); indexes are rewritten to them and images of other
    /// platforms skipped (default: none, every image is imported whole).
    pub platforms: Vec<String>,
    /// What to do with a tag already in the target at other content
    /// (default [`DEFAULT_ON_EXISTING_TAG`]).
    #[serde(deserialize_with = "one_of")]
    pub on_existing_tag: TagPolicy,
    /// First wait after a transient failure; doubles, with jitter, on each
    /// further failure (default [`DEFAULT_RETRY_INITIAL_BACKOFF`]).
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    /// Longest wait between attempts; attempts never stop (default
    /// [`DEFAULT_RETRY_MAX_BACKOFF`]).
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// Reads each bundle once, checking its signature while it is
    /// decompressed and indexed, instead of in a read of its own before
    /// (default [`DEFAULT_SINGLE_READ`]).
    pub single_read: bool,
}

impl Default for ImportsSection {
    fn default() -> Self {
        ImportsSection {
            concurrency: DEFAULT_IMPORT_CONCURRENCY,
            on_success: DEFAULT_ON_SUCCESS,
            on_reject: DEFAULT_ON_REJECT,
            platforms: Vec::new(),
            on_existing_tag: DEFAULT_ON_EXISTING_TAG,
            retry_initial_backoff: DEFAULT_RETRY_INITIAL_BACKOFF,
            retry_max_backoff: DEFAULT_RETRY_MAX_BACKOFF,
            single_read: DEFAULT_SINGLE_READ,
        }
    }
}

/// `read`: caps on what one bundle may make an import read and keep in
/// memory (decompressed bytes, entries, manifests, nesting, path and
/// document sizes); each field documents its default.
pub type ReadSection = crate::read::ReadLimits;

/// `state`: how much the state directory remembers. Records still under
/// way, and records of bundles whose files are still in a drop folder, are
/// always kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a map (the state section)")]
pub struct StateSection {
    /// Finished records older than this are removed (default
    /// [`DEFAULT_STATE_RETENTION`]).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// At most this many records are kept; the oldest finished ones go
    /// first (default [`DEFAULT_STATE_MAX_RECORDS`]).
    pub max_records: usize,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            retention: DEFAULT_STATE_RETENTION,
            max_records: DEFAULT_STATE_MAX_RECORDS,
        }
    }
}

/// `http`: the one listener for `/metrics`, `/healthz`, `/readyz` and
/// `/api/v1/...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a map (the http section)")]
pub struct HttpSection {
    /// `IP:PORT` to listen on (default [`DEFAULT_LISTEN`]).
    pub listen: SocketAddr,
    /// Who may read the console and `/api/v1/`.
    pub auth: HttpAuthSection,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: DEFAULT_LISTEN,
            auth: HttpAuthSection::default(),
        }
    }
}

/// `http.auth`: HTTP basic auth for the console and `/api/v1/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map (the http.auth section)"
)]
pub struct HttpAuthSection {
    /// An htpasswd file of bcrypt entries (`htpasswd -B`); when set, every
    /// path but `open_paths` asks for basic auth (default: none, no auth).
    pub htpasswd_file: Option<PathBuf>,
    /// Paths served without auth even when `htpasswd_file` is set (default
    /// [`DEFAULT_OPEN_PATHS`]: the probes and Prometheus).
    pub open_paths: Vec<String>,
}

impl Default for HttpAuthSection {
    fn default() -> Self {
        HttpAuthSection {
            htpasswd_file: None,
            open_paths: DEFAULT_OPEN_PATHS.iter().map(|p| (*p).to_owned()).collect(),
        }
    }
}

/// `log`: how the daemon logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a map (the log section)")]
pub struct LogSection {
    /// Text or JSON lines (default [`DEFAULT_LOG_FORMAT`]).
    #[serde(deserialize_with = "one_of")]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,airlock=debug` (default
    /// [`DEFAULT_LOG_LEVEL`]).
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: DEFAULT_LOG_FORMAT,
            level: DEFAULT_LOG_LEVEL.to_owned(),
        }
    }
}

/// What happens to a bundle (and its signature) after a successful import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnSuccess {
    /// Leave it in place; the state directory remembers it is imported.
    Keep,
    /// Move it to `processed/` inside its drop directory.
    Move,
    /// Delete it.
    Delete,
}

/// What happens to a bundle (and its signature) that is rejected: bad or
/// missing signature, corrupt or unsafe content. Rejected bundles are never
/// retried and never deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnReject {
    /// Leave it in place; the state directory remembers it is rejected.
    Keep,
    /// Move it to `failed/` inside its drop directory.
    Move,
}

/// The daemon's log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Deserializes one of a fixed set of names, and when the value is none of
/// them says which are allowed (`expected one of keep, move, delete`), which
/// the `config` crate's own enum error does not.
fn one_of<'de, D: Deserializer<'de>, T: ValueEnum>(deserializer: D) -> Result<T, D::Error> {
    let text = String::deserialize(deserializer)?;
    T::value_variants()
        .iter()
        .find(|v| {
            v.to_possible_value()
                .is_some_and(|p| p.matches(&text, false))
        })
        .cloned()
        .ok_or_else(|| {
            let names: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value())
                .map(|p| p.get_name().to_owned())
                .collect();
            serde::de::Error::custom(format!("{text:?} is not one of {}", names.join(", ")))
        })
}

/// [`one_of`] for [`UploadMode`], with the command line's names.
fn upload_mode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<UploadMode, D::Error> {
    one_of::<D, UploadMode>(deserializer)
}
