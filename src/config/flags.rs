//! The flags of `airlock watch`. A flag that is given overrides the file and
//! the environment; one that is not leaves them alone (so every flag is an
//! `Option`, a list that replaces when non-empty, or a switch that only ever
//! turns a setting on).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::schema::{DaemonConfig, OnReject, OnSuccess};
use crate::import::PackImagePolicy;
use crate::push::UploadMode;

/// Examples and precedence rules for `airlock watch --help`
/// (`#[command(after_help = WATCH_EXAMPLES)]`).
pub const WATCH_EXAMPLES: &str = "\
Examples:
  # Everything on the command line, no configuration file:
  airlock watch --drop-dir d --public-key k.pem --registry 127.0.0.1:5000/mirror --plain-http --state-dir s

  # A configuration file (a complete example is config/airlock.yaml):
  airlock watch --config /etc/airlock/airlock.yaml

  # The same, with a flag overriding the file for one run:
  airlock watch --config /etc/airlock/airlock.yaml --settle-time 30s

  # An NFS share written by another host, where inotify sees nothing:
  airlock watch --config /etc/airlock/airlock.yaml --poll --poll-interval 5s

Settings come from the configuration file, then AIRLOCK_* environment
variables, then flags; each overrides the one before. A key's variable is its
path in upper case with __ between levels: drop.settle_time is
AIRLOCK_DROP__SETTLE_TIME, state_dir is AIRLOCK_STATE_DIR. Lists are
comma-separated: AIRLOCK_DROP__DIRS=/drop/a,/drop/b. Durations are written
like 500ms, 5s, 10m. Unknown keys and variables are errors.";

/// `airlock watch`: flags that override the configuration file and the
/// environment.
#[derive(Debug, Clone, Default, Args)]
pub struct WatchArgs {
    /// Configuration file (YAML). Optional: the environment and flags can
    /// give every setting.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// A directory bundles are dropped into. Repeat to watch several; replaces
    /// drop.dirs.
    #[arg(long = "drop-dir", value_name = "DIR")]
    pub drop_dirs: Vec<PathBuf>,

    /// Also watch subdirectories of the drop directories (except processed/
    /// and failed/).
    #[arg(long)]
    pub recursive: bool,

    /// Poll instead of using inotify: for NFS written by another host and
    /// USB/FUSE mounts where inotify sees nothing.
    #[arg(long)]
    pub poll: bool,

    /// How often to list the drop directories when polling [default: 2s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub poll_interval: Option<Duration>,

    /// How long a bundle's size and mtime must stay unchanged before it is
    /// imported [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub settle_time: Option<Duration>,

    /// A trusted public key (PEM), or a directory of them. Repeat for key
    /// rotation; replaces trust.public_keys.
    #[arg(long = "public-key", value_name = "PEM")]
    pub public_keys: Vec<PathBuf>,

    /// Refuse bundles created longer ago than this (by the creation time in
    /// their index.json), and bundles that do not say; replaces
    /// trust.max_bundle_age [default: any age].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_bundle_age: Option<Duration>,

    /// Where to push: `host[:port][/prefix]`, or `oci:DIR` for an OCI image
    /// layout directory.
    #[arg(long, value_name = "TARGET")]
    pub registry: Option<String>,

    /// Use HTTP instead of HTTPS.
    #[arg(long)]
    pub plain_http: bool,

    /// Trust this CA certificate (PEM) in addition to the system's. Repeat
    /// for several; replaces registry.ca_cert.
    #[arg(long = "ca-cert", value_name = "PEM")]
    pub ca_certs: Vec<PathBuf>,

    /// Accept any TLS certificate. Dangerous: for tests only.
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,

    /// Client certificate (PEM) for a registry that requires mutual TLS;
    /// needs --client-key.
    #[arg(long, value_name = "PEM")]
    pub client_cert: Option<PathBuf>,

    /// Private key (PEM) of --client-cert.
    #[arg(long, value_name = "PEM")]
    pub client_key: Option<PathBuf>,

    /// User name for the registry; the password is read from --password-file.
    #[arg(long, value_name = "U")]
    pub username: Option<String>,

    /// File holding the registry password or token (one trailing newline is
    /// ignored). Secrets are never given inline.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Docker client config with credentials [default:
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json when present].
    #[arg(long, value_name = "CONFIG_JSON")]
    pub auth_file: Option<PathBuf>,

    /// How blobs are uploaded: chunked PATCHes, or one streaming PUT per blob
    /// (for registries that break chunked uploads, such as ECR) [default:
    /// chunked].
    #[arg(long, value_enum)]
    pub upload_mode: Option<UploadMode>,

    /// Repository under the target's prefix that blobs are sent into while
    /// the bundle is indexed, so it is read twice, not three times; "" turns
    /// this off [default: airlock-staging].
    #[arg(long, value_name = "NAME")]
    pub staging_repository: Option<String>,

    /// Blobs transferred at once within one import; HEADs, mounts and
    /// manifests run four times as many [default: 16].
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub blob_concurrency: Option<usize>,

    /// MiB of chunks all uploads of one import may hold at once [default:
    /// 48].
    #[arg(long, value_name = "MIB", value_parser = at_least_one)]
    pub buffer_mib: Option<usize>,

    /// Where packs land, when apart from the target's prefix (Palette's
    /// OCI_PACK_BASE): `<host>/<PACK_PREFIX>/spectro-packs/archive/<name>:<version>`
    /// [default: the prefix in --registry].
    #[arg(long, value_name = "PREFIX")]
    pub pack_prefix: Option<String>,

    /// What to do with a pack whose declared images are neither in the bundle
    /// nor in the target: push it and warn, or hold it back and fail the
    /// import [default: warn].
    #[arg(long, value_enum)]
    pub pack_image_policy: Option<PackImagePolicy>,

    /// Bundles imported at once [default: 1].
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub concurrency: Option<usize>,

    /// What to do with a bundle once imported [default: keep].
    #[arg(long, value_enum)]
    pub on_success: Option<OnSuccess>,

    /// What to do with a bundle that fails verification [default: keep].
    #[arg(long, value_enum)]
    pub on_reject: Option<OnReject>,

    /// A tag already in the target at other content: fail-if-different
    /// holds that image back and records the bundle as partial; skip holds
    /// it back with a notice; overwrite moves the tag [default:
    /// fail-if-different].
    #[arg(long, value_enum)]
    pub on_existing_tag: Option<crate::plan::TagPolicy>,

    /// Read each bundle once, checking its signature while decompressing
    /// and indexing it; sets imports.single_read (for slow media and drop
    /// folders only trusted parties can write) [default: two reads].
    #[arg(long)]
    pub single_read: bool,

    /// Import only these platforms of multi-platform images (`os/arch[/variant]`,
    /// comma-separated or repeated); replaces imports.platforms [default:
    /// every image whole].
    #[arg(long = "platform", value_name = "OS/ARCH", value_delimiter = ',')]
    pub platforms: Vec<String>,

    /// Sign an import attestation for every image written with this ECDSA
    /// P-256 key (PEM) [default: none].
    #[arg(long, value_name = "KEY.pem")]
    pub attestation_key: Option<PathBuf>,

    /// Where the daemon keeps its per-bundle records [default:
    /// /var/lib/airlock].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Address for /metrics, /healthz, /readyz and /api/v1 [default:
    /// 0.0.0.0:9090].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

impl WatchArgs {
    /// Writes every flag that was given over `config`.
    pub(super) fn apply(&self, config: &mut DaemonConfig) {
        fn set<T: Clone>(field: &mut T, flag: Option<&T>) {
            if let Some(value) = flag {
                *field = value.clone();
            }
        }
        fn replace<T: Clone>(field: &mut Vec<T>, flag: &[T]) {
            if !flag.is_empty() {
                *field = flag.to_vec();
            }
        }
        fn switch_on(field: &mut bool, flag: bool) {
            *field |= flag;
        }

        let drop = &mut config.drop;
        replace(&mut drop.dirs, &self.drop_dirs);
        switch_on(&mut drop.recursive, self.recursive);
        switch_on(&mut drop.poll, self.poll);
        set(&mut drop.poll_interval, self.poll_interval.as_ref());
        set(&mut drop.settle_time, self.settle_time.as_ref());

        replace(&mut config.trust.public_keys, &self.public_keys);
        if self.max_bundle_age.is_some() {
            config.trust.max_bundle_age = self.max_bundle_age;
        }

        let registry = &mut config.registry;
        set(&mut registry.target, self.registry.as_ref());
        switch_on(&mut registry.plain_http, self.plain_http);
        replace(&mut registry.ca_cert, &self.ca_certs);
        switch_on(
            &mut registry.insecure_skip_tls_verify,
            self.insecure_skip_tls_verify,
        );
        if self.client_cert.is_some() {
            registry.client_cert = self.client_cert.clone();
        }
        if self.client_key.is_some() {
            registry.client_key = self.client_key.clone();
        }
        if self.username.is_some() {
            registry.username = self.username.clone();
        }
        if self.password_file.is_some() {
            registry.password_file = self.password_file.clone();
        }
        if self.auth_file.is_some() {
            registry.auth_file = self.auth_file.clone();
        }
        if let Some(mode) = self.upload_mode {
            registry.upload_mode = mode;
        }
        if let Some(name) = &self.staging_repository {
            registry.staging_repository = name.clone();
        }
        set(
            &mut registry.blob_concurrency,
            self.blob_concurrency.as_ref(),
        );
        set(&mut registry.buffer_mib, self.buffer_mib.as_ref());
        if self.pack_prefix.is_some() {
            registry.pack_prefix = self.pack_prefix.clone();
        }
        set(
            &mut registry.pack_image_policy,
            self.pack_image_policy.as_ref(),
        );

        let imports = &mut config.imports;
        set(&mut imports.concurrency, self.concurrency.as_ref());
        set(&mut imports.on_success, self.on_success.as_ref());
        set(&mut imports.on_reject, self.on_reject.as_ref());
        set(&mut imports.on_existing_tag, self.on_existing_tag.as_ref());
        replace(&mut imports.platforms, &self.platforms);
        if self.single_read {
            imports.single_read = true;
        }

        if self.attestation_key.is_some() {
            config.attestations.signing_key = self.attestation_key.clone();
        }
        set(&mut config.state_dir, self.state_dir.as_ref());
        set(&mut config.http.listen, self.listen.as_ref());
    }
}
