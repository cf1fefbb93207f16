//! The default of every daemon setting that has one, each with its reason.
//!
//! Settings without a default here are either required (`drop.dirs`,
//! `trust.public_keys` unless `trust.keyless` is set, `registry.target`) or
//! optional and off when absent (`trust.keyless`, `registry.ca_cert`, `registry.username`, `registry.password_file`,
//! `registry.auth_file`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use super::schema::{LogFormat, OnReject, OnSuccess};
use crate::push::UploadMode;

/// `drop.recursive`: only the drop directory itself is watched. Transfer
/// tools drop bundles flat, and a subdirectory is more often someone's
/// scratch space than a delivery.
pub const DEFAULT_RECURSIVE: bool = false;

/// `drop.follow_symlinks`: symbolic links in a drop folder are skipped.
/// Whoever can write to the folder could otherwise point the daemon at a
/// device (`/dev/zero` never ends) or at a file they cannot read themselves.
pub const DEFAULT_FOLLOW_SYMLINKS: bool = false;

/// `drop.poll`: inotify. It reports a finished write at once and costs
/// nothing while idle; polling is only needed where inotify sees nothing
/// (NFS written by another host, some USB and FUSE mounts).
pub const DEFAULT_POLL: bool = false;

/// `drop.poll_interval`: a directory listing every 2 s is cheap even on NFS,
/// and small next to the settle time that follows anyway.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// `drop.rescan_interval`: inotify drops events when its queue overflows or
/// a mount is replaced underneath it; a full listing once a minute bounds how
/// long such a bundle waits, at negligible cost.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(60);

/// `drop.settle_time`: a file whose size and mtime have not changed for 5 s
/// is complete. Copies from USB sticks and SMB/NFS shares stall for a second
/// or two between writes; 5 s rides that out without delaying imports
/// noticeably. Raise it for slow or bursty transfers.
pub const DEFAULT_SETTLE_TIME: Duration = Duration::from_secs(5);

/// `drop.unpaired_warn_after`: a settled bundle without its signature (or a
/// signature without its bundle) is shown as waiting at once; after 10
/// minutes, far longer than copying the partner takes, one warning is
/// logged, since by then the partner was most likely forgotten or misnamed.
pub const DEFAULT_UNPAIRED_WARN_AFTER: Duration = Duration::from_secs(10 * 60);
/// `drop.confirm_rejection`: a copy that stalls longer than the settle time
/// (a USB stick, a WAN share) looks like a forged bundle until it completes;
/// a second look one settle time later tells the two apart, at the cost of
/// that delay before a genuine rejection is final.
pub const DEFAULT_CONFIRM_REJECTION: bool = true;

/// `registry.plain_http`: HTTPS, unless the operator says otherwise.
pub const DEFAULT_PLAIN_HTTP: bool = false;

/// `registry.insecure_skip_tls_verify`: certificates are checked. Skipping
/// the check is for tests and emergencies only.
pub const DEFAULT_INSECURE_SKIP_TLS_VERIFY: bool = false;

/// `registry.answer_timeout`: generous, as registries verify a whole blob's
/// digest before answering the final `PUT`; a body that keeps moving adds
/// its own time on top, so large transfers are never cut off for their size.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = crate::push::registry::DEFAULT_ANSWER_TIMEOUT;

/// `registry.idle_timeout`: a response body silent this long is stalled.
pub const DEFAULT_IDLE_TIMEOUT: Duration = crate::push::registry::DEFAULT_IDLE_TIMEOUT;

/// `registry.upload_mode`: chunked uploads keep every request bounded, which
/// proxies with body limits accept; monolithic is for registries that break
/// chunked uploads (ECR). It is the starting mode: a registry that refuses
/// one mode makes the import switch to the other.
pub const DEFAULT_UPLOAD_MODE: UploadMode = UploadMode::Chunked;

/// `registry.staging_repository`: the repository, under the target's prefix,
/// that blobs are sent into while the bundle is indexed, so an import reads
/// the bundle twice (verify, then index and upload) instead of three times.
/// Empty turns this off.
pub const DEFAULT_STAGING_REPOSITORY: &str = crate::push::DEFAULT_STAGING_REPOSITORY;

/// `registry.blob_concurrency`: the same as `airlock import`
/// ([`crate::push::DEFAULT_CONCURRENCY`]), which keeps a 1 Gbit/s link busy
/// without nearing registry rate limits.
pub const DEFAULT_BLOB_CONCURRENCY: usize = crate::push::DEFAULT_CONCURRENCY;

/// `registry.buffer_mib`: the same as `airlock import --buffer-mib`
/// ([`crate::push::DEFAULT_BUFFER_BYTES`]): enough to read one large blob
/// while the one before it is sent; with an 8 MiB zstd window an import
/// stays under 100 MiB (docs/PERFORMANCE.md, "Memory").
pub const DEFAULT_BUFFER_MIB: usize = crate::push::DEFAULT_BUFFER_BYTES >> 20;

/// The largest `registry.buffer_mib` accepted.
pub const MAX_BUFFER_MIB: usize = 4096;

/// `registry.pack_image_policy`: a pack whose images are missing is pushed
/// with a warning, as Palette itself only notices when a cluster pulls them;
/// `fail` holds such packs back.
pub const DEFAULT_PACK_IMAGE_POLICY: crate::import::PackImagePolicy =
    crate::import::PackImagePolicy::Warn;

/// The most blobs in flight per import, as `airlock import --concurrency`
/// allows: beyond this a registry throttles rather than speeds up.
pub const MAX_BLOB_CONCURRENCY: usize = 64;

/// `imports.concurrency`: one bundle at a time. Bundles are 10–100 GB and an
/// import is bound by the disk or the link; two at once each take twice as
/// long, so nothing finishes sooner.
pub const DEFAULT_IMPORT_CONCURRENCY: usize = 1;

/// `imports.on_success`: keep the bundle where it is. Deleting or moving
/// files on a share someone else owns is a choice to make explicitly; the
/// state directory already remembers the bundle is imported.
pub const DEFAULT_ON_SUCCESS: OnSuccess = OnSuccess::Keep;

/// `imports.on_reject`: keep a rejected bundle where it is, for the same
/// reason as [`DEFAULT_ON_SUCCESS`]; it is never retried either way.
pub const DEFAULT_ON_REJECT: OnReject = OnReject::Keep;

/// `imports.retry_initial_backoff`: the first wait after a transient failure
/// (registry down, network gone). Long enough not to hammer a registry that
/// is restarting, short enough that a blip costs seconds.
pub const DEFAULT_RETRY_INITIAL_BACKOFF: Duration = Duration::from_secs(5);

/// `imports.retry_max_backoff`: the longest wait between attempts. An outage
/// is retried without limit; 10 minutes keeps the load on a broken registry
/// trivial while an import still resumes soon after it recovers.
pub const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(600);

// The defaults of `read.*` are with the limits they set, in
// `crate::read::limits` (`DEFAULT_MAX_UNCOMPRESSED_BYTES` and the rest).

/// The smallest `read.max_document_bytes` accepted: below this even a
/// single-image bundle's index could be refused.
pub const MIN_DOCUMENT_BYTES: u64 = 4 << 10;
/// `state.retention`: a finished record is what makes the same bundle,
/// dropped again, a duplicate instead of a second import. 90 days covers
/// any redelivery seen in practice while keeping the state directory small;
/// a bundle dropped again after that is imported again, which sends only
/// what the registry lacks.
pub const DEFAULT_STATE_RETENTION: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// `state.max_records`: about 1 KiB each on disk and in memory, so 100,000
/// records stay near 100 MiB at most, whatever the delivery rate.
pub const DEFAULT_STATE_MAX_RECORDS: usize = 100_000;

/// `state_dir`: the conventional place for a daemon's durable state (and the
/// mount point of the volume in the container image).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/airlock";

/// `http.listen`: all interfaces, so Prometheus and the kubelet's probes
/// reach it from outside the pod; 9090 is airlock's documented port.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9090));

/// `http.auth.open_paths`: the kubelet's probes and Prometheus carry no
/// credentials, and neither answer shows what arrived.
pub const DEFAULT_OPEN_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// `log.format`: text, readable in `kubectl logs` and a terminal alike;
/// choose `json` when a log collector parses the lines.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;

/// `log.level`: `info` logs each bundle's arrival and outcome, not each
/// request.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// `imports.single_read`: off, so a bundle's signature is checked in a read
/// of its own before any byte of it is decompressed or parsed; only a holder
/// of a trusted key can make airlock's zstd and tar code run.
pub const DEFAULT_SINGLE_READ: bool = false;

/// `imports.on_existing_tag`: a tag already in the target at other content
/// holds that image back and fails the import, so a signed but older bundle
/// cannot move a tag back (rollback).
pub const DEFAULT_ON_EXISTING_TAG: crate::plan::TagPolicy = crate::plan::TagPolicy::FailIfDifferent;
