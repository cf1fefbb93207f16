//! The command line: `verify`, `inspect` and `import`. Argument parsing
//! lives here so the reference documentation can be generated from it;
//! `main.rs` only parses, sets up logging and maps errors to exit codes.

mod batch;
mod commands;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::push::{DEFAULT_CONCURRENCY, UploadMode};
use crate::report::OutputFormat;

pub use crate::config::LogFormat;
pub use commands::{CommandError, run, run_watch};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  2  usage or configuration error (bad flags, unreadable key or CA file)
  3  verification or integrity failure: bad or missing signature, corrupt or
     unsafe bundle content, an item (pack, chart, file) that cannot be
     imported. Nothing was pushed. Also: a pack held back by
     --pack-image-policy fail (everything else was pushed).
  4  registry or transport failure (unreachable, refused, unauthorized)
With several bundles every one is handled and the exit code is the worst.";

/// Verify signed air-gap bundles and import their images, Palette packs, Helm
/// charts and installers into an OCI registry.
#[derive(Debug, Parser)]
#[command(name = "airlock", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log format: text for people (default), json for log collectors.
    /// For `watch`, overrides `log.format`.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter (e.g. `info`, `airlock=debug`); overrides RUST_LOG and,
    /// for `watch`, `log.level`.
    #[arg(long, global = true)]
    pub log: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check bundles' detached signatures, as `openssl dgst -sha256 -verify` does.
    #[command(after_help = "Examples:\n  airlock verify content.zst --public-key artifact-studio.pem\n  airlock verify ~/Downloads/packs --public-key artifact-studio.pem\n\n".to_owned() + SIGNATURE_NAMES + "\n\n" + EXIT_CODES)]
    Verify(VerifyArgs),
    /// Show what bundles hold and where they would land. Never pushes.
    #[command(after_help = "Examples:\n  airlock inspect content.zst\n  airlock inspect ~/Downloads/packs --output json\n  airlock inspect content.zst --public-key key.pem --registry harbor.local/spectro-images --output json\n\n".to_owned() + EXIT_CODES)]
    Inspect(InspectArgs),
    /// Verify bundles, then push their content into a registry or OCI layout.
    #[command(after_help = "Examples:\n  airlock import content.zst --public-key key.pem --registry harbor.local/spectro-images\n  airlock import ~/Downloads/packs --public-key key.pem --registry harbor.local/spectro-images\n  airlock import content.zst --public-key key.pem --registry 127.0.0.1:5000 --plain-http\n  airlock import content.zst --public-key key.pem --registry oci:./mirror\n  airlock import content.zst --public-key key.pem --registry harbor.local/spectro-images \\\n      --pack-prefix spectro-packs-base --pack-image-policy fail --platform linux/amd64,linux/arm64\n  echo \"$PASS\" | airlock import content.zst --public-key key.pem \\\n      --registry harbor.local/mirror --ca-cert ca.pem --username robot --password-stdin\n\n".to_owned() + EXIT_CODES)]
    Import(ImportArgs),
    /// Run as a service: watch drop folders and import every signed bundle
    /// that arrives, exactly once, with metrics, health checks and an API.
    #[command(after_help = crate::config::WATCH_EXAMPLES)]
    Watch(crate::config::WatchArgs),
    /// Make signed bundles (the producer side of `import`).
    Bundle(BundleArgs),
    /// Work with `airlock watch` configuration files.
    Config(ConfigArgs),
    /// Check the import attestations airlock signed for images in a registry.
    Attestation(AttestationArgs),
}

/// `airlock attestation`.
#[derive(Debug, Args)]
pub struct AttestationArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AttestationCommand,
}

/// The `attestation` subcommands.
#[derive(Debug, Subcommand)]
pub enum AttestationCommand {
    /// Find IMAGE's import attestations (`sha256-<hex>.att` in its
    /// repository) and verify them with the site's public key, as
    /// `cosign verify-attestation` would; print their predicates.
    #[command(
        after_help = "Examples:\n  airlock attestation verify harbor.local/mirror/quay.io/acme/app:1.0 --key site.pub\n  airlock attestation verify 127.0.0.1:5000/mirror/quay.io/acme/app@sha256:... --key site.pub --plain-http --output json\n\nExit codes:\n  0  at least one import attestation verifies and names the image's digest\n  2  usage error (bad flags, unreadable key)\n  3  no attestation, or none that verifies\n  4  registry or transport failure"
    )]
    Verify(AttestationVerifyArgs),
}

/// `airlock attestation verify`.
#[derive(Debug, Args)]
pub struct AttestationVerifyArgs {
    /// The image: `host[:port]/repository:tag` or `...@sha256:<hex>`.
    pub image: String,

    /// The public half of the attestation key (PEM file or directory).
    #[arg(long = "key", value_name = "PEM", required = true)]
    pub keys: Vec<PathBuf>,

    /// Registry access.
    #[command(flatten)]
    pub access: RegistryAccessArgs,

    /// Output format.
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// `airlock config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do with a configuration.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// The `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load a configuration file exactly as `airlock watch --config FILE`
    /// would (same keys, same checks, `AIRLOCK_*` environment variables
    /// included) and report the first error, without starting anything.
    /// Paths need not exist.
    #[command(after_help = CONFIG_CHECK_HELP)]
    Check(ConfigCheckArgs),
}

const CONFIG_CHECK_HELP: &str = "\
Examples:
  airlock config check /etc/airlock/airlock.yaml
  AIRLOCK_REGISTRY__TARGET=harbor.local/mirror airlock config check airlock.yaml

Exit codes:
  0  the configuration would start airlock watch
  2  it would not; the one-line error says which key and where it came from";

/// `airlock config check`.
#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// The configuration file (YAML).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `airlock bundle`.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// What to do with bundles.
    #[command(subcommand)]
    pub command: BundleCommand,
}

/// The `bundle` subcommands.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Pack OCI image layouts, docker-save archives, Palette packs, Helm
    /// charts and plain files into NAME.zst and sign it
    /// into NAME.sig.bin, ready for `airlock import` on the other side.
    #[command(after_help = crate::bundle::CREATE_HELP)]
    Create(BundleCreateArgs),
}

/// `airlock bundle create`.
#[derive(Debug, Args)]
pub struct BundleCreateArgs {
    /// The bundle to write, `DIR/NAME.zst`; the signature goes beside it.
    #[arg(long, short, value_name = "NAME.zst")]
    pub output: PathBuf,

    /// Private key (PEM) to sign with.
    #[arg(long, value_name = "KEY.pem")]
    pub signing_key: PathBuf,

    /// An OCI image layout directory (as `skopeo copy … oci:DIR:REF` writes
    /// it). Repeat to merge several into one bundle.
    #[arg(long = "layout", value_name = "OCI_DIR")]
    pub layouts: Vec<PathBuf>,

    /// An image to pull from its registry, `REF` or `REF=NAME` (pull REF,
    /// name it NAME in the bundle, e.g. pull from a local cache but keep the
    /// origin's name). Every platform of an index is pulled. Repeatable.
    #[arg(long = "image", value_name = "REF[=NAME]")]
    pub images: Vec<String>,

    /// Pull `--image`s over plain HTTP.
    #[arg(long)]
    pub image_plain_http: bool,

    /// Extra CA certificate (PEM) for the `--image` registries. Repeatable.
    #[arg(long = "image-ca-cert", value_name = "PEM")]
    pub image_ca_certs: Vec<PathBuf>,

    /// Docker `config.json` with credentials for the `--image` registries
    /// (default: the Docker client's, when it exists).
    #[arg(long, value_name = "CONFIG_JSON")]
    pub image_auth_file: Option<PathBuf>,

    /// A `docker save` (or `skopeo copy … docker-archive:`) tar, plain or
    /// gzip-compressed, carried as `docker-<name>/`; airlock import turns it
    /// into Docker schema 2 images named by its RepoTags. Repeatable.
    #[arg(long = "docker-archive", value_name = "FILE.tar")]
    pub docker_archives: Vec<PathBuf>,

    /// A Palette pack: a directory holding pack.json (archived
    /// deterministically into `packs/<name>-<version>.tar.gz`) or a pack
    /// `.tar.gz` (copied as it is). pack.json must give name and version.
    /// Repeatable.
    #[arg(long = "pack", value_name = "DIR|FILE.tar.gz")]
    pub packs: Vec<PathBuf>,

    /// A Helm chart archive (`helm package` output), carried as
    /// `charts/<file>`; its Chart.yaml must give name and version. Repeatable.
    #[arg(long = "chart", value_name = "FILE.tgz")]
    pub charts: Vec<PathBuf>,

    /// A plain file (installer, ISO) to carry as `files/<name>`. Repeatable.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,

    /// zstd level: 3 is fast, 19 is smallest.
    #[arg(long, value_name = "N", default_value_t = crate::bundle::DEFAULT_ZSTD_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=crate::bundle::MAX_ZSTD_LEVEL as i64))]
    pub zstd_level: i32,

    /// Long-distance matching with a 128 MiB window (`zstd --long=27`);
    /// smaller bundles when layers repeat content, more memory to compress.
    #[arg(long)]
    pub long: bool,
}

/// Where a bundle's signature is looked for without `--signature`.
const SIGNATURE_NAMES: &str = "\
Signature names: for B.zst the first that exists of B.sig.bin, B.tar.sig.bin,
B.zst.sig.bin, B.zst.sig, B.sig, and the Sigstore bundles B.sigstore.json,
B.zst.sigstore.json; for B.tar.zst, B.tar.sig.bin then B.sig.bin and the same
fallbacks. When two of them differ, the one that verifies wins and the other
is named in a warning. A Sigstore bundle verifies with a --public-key, or
keylessly with --trusted-root, --certificate-identity and
--certificate-oidc-issuer.";

/// The bundles a command works on.
#[derive(Debug, Args)]
pub struct BundlePaths {
    /// Bundle files (`X.zst`) or folders of bundles (every `*.zst` in them,
    /// sorted by name).
    #[arg(value_name = "BUNDLE|DIR", required = true)]
    pub paths: Vec<PathBuf>,

    /// Look for bundles in subfolders of the folders given too.
    #[arg(long, short)]
    pub recursive: bool,
}

/// Which signature and keys to check.
#[derive(Debug, Args)]
pub struct SignatureArgs {
    /// The detached signature (DER or base64), for a single bundle. Default:
    /// the file beside the bundle, by the naming rule below.
    #[arg(long, value_name = "SIG")]
    pub signature: Option<PathBuf>,

    /// A trusted public key (PEM), or a directory of them. Repeat for key
    /// rotation: any one verifying is enough. Required unless
    /// --trusted-root names a keyless signer.
    #[arg(
        long = "public-key",
        value_name = "PEM",
        required_unless_present = "trusted_root"
    )]
    pub public_keys: Vec<PathBuf>,

    /// A keyless signer whose Sigstore bundle is accepted.
    #[command(flatten)]
    pub keyless: KeylessArgs,
}

/// One keyless signer (`trust.keyless` of `airlock watch`): a Sigstore
/// bundle `X.sigstore.json` carrying a certificate verifies, offline, when
/// the certificate chains to a CA of the trusted root and names this
/// identity and issuer, and a log of the trusted root vouches for its entry.
#[derive(Debug, Clone, Default, Args)]
pub struct KeylessArgs {
    /// A Sigstore trusted_root.json (the CAs and transparency logs) to verify
    /// keyless Sigstore bundles against, offline.
    #[arg(
        long,
        value_name = "FILE",
        requires_all = ["certificate_identity", "certificate_oidc_issuer"]
    )]
    pub trusted_root: Option<PathBuf>,

    /// The signing certificate's identity (SAN e-mail or URI), compared
    /// exactly.
    #[arg(long, value_name = "ID", requires = "trusted_root")]
    pub certificate_identity: Option<String>,

    /// The OIDC issuer in the signing certificate, compared exactly (e.g.
    /// https://accounts.google.com).
    #[arg(long, value_name = "URL", requires = "trusted_root")]
    pub certificate_oidc_issuer: Option<String>,
}

impl KeylessArgs {
    /// The keyless signer given, as a `trust.keyless` entry.
    pub fn entries(&self) -> Vec<crate::verify::KeylessConfig> {
        match (
            &self.trusted_root,
            &self.certificate_identity,
            &self.certificate_oidc_issuer,
        ) {
            (Some(trusted_root), Some(identity), Some(issuer)) => {
                vec![crate::verify::KeylessConfig {
                    trusted_root: trusted_root.clone(),
                    identity: identity.clone(),
                    issuer: issuer.clone(),
                }]
            }
            _ => Vec::new(),
        }
    }
}

/// `airlock verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundles.
    #[command(flatten)]
    pub bundles: BundlePaths,

    /// Signature and keys.
    #[command(flatten)]
    pub signature: SignatureArgs,

    /// Output format: a line per bundle, or a JSON array.
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// Caps on what one bundle may make airlock read (the `read.*` settings of
/// `airlock watch`); each unset one keeps its default.
#[derive(Debug, Clone, Default, Args)]
pub struct ReadLimitArgs {
    /// Most decompressed bytes in a bundle [default: 1 TiB].
    #[arg(long, value_name = "BYTES")]
    pub max_uncompressed_bytes: Option<u64>,
    /// Most decompressed bytes per byte of bundle file, once more than
    /// 1 GiB is decompressed [default: 100].
    #[arg(long, value_name = "N")]
    pub max_expansion_ratio: Option<u64>,
    /// Most tar entries in a bundle [default: 1000000].
    #[arg(long, value_name = "N")]
    pub max_entries: Option<u64>,
    /// Most distinct manifests and indexes in a bundle [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_manifests: Option<u64>,
    /// Most levels of indexes below index.json [default: 8].
    #[arg(long, value_name = "N")]
    pub max_index_depth: Option<u64>,
    /// Longest tar entry path, in bytes [default: 4096].
    #[arg(long, value_name = "BYTES")]
    pub max_path_bytes: Option<u64>,
    /// Largest JSON or YAML document airlock reads [default: 4 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_document_bytes: Option<u64>,
    /// Refuse bundles created longer ago than this (`30d`, `12h`), by the
    /// creation time in their index.json, and bundles that do not say
    /// [default: any age].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_bundle_age: Option<std::time::Duration>,
}

impl ReadLimitArgs {
    /// The defaults with every flag given applied.
    pub fn limits(&self) -> crate::read::ReadLimits {
        let defaults = crate::read::ReadLimits::default();
        crate::read::ReadLimits {
            max_uncompressed_bytes: self
                .max_uncompressed_bytes
                .unwrap_or(defaults.max_uncompressed_bytes),
            max_expansion_ratio: self
                .max_expansion_ratio
                .unwrap_or(defaults.max_expansion_ratio),
            max_entries: self.max_entries.unwrap_or(defaults.max_entries),
            max_manifests: self.max_manifests.unwrap_or(defaults.max_manifests),
            max_index_depth: self.max_index_depth.unwrap_or(defaults.max_index_depth),
            max_path_bytes: self.max_path_bytes.unwrap_or(defaults.max_path_bytes),
            max_document_bytes: self
                .max_document_bytes
                .unwrap_or(defaults.max_document_bytes),
            max_documents_total_bytes: defaults.max_documents_total_bytes,
            max_bundle_age: self.max_bundle_age,
        }
    }
}

/// `airlock inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundles.
    #[command(flatten)]
    pub bundles: BundlePaths,

    /// Caps on what a bundle may make airlock read.
    #[command(flatten)]
    pub limits: ReadLimitArgs,

    /// Output format.
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: OutputFormat,

    /// Verify the signature with this key (PEM file or directory) first.
    #[arg(long = "public-key", value_name = "PEM")]
    pub public_keys: Vec<PathBuf>,

    /// Verify a keyless Sigstore bundle first.
    #[command(flatten)]
    pub keyless: KeylessArgs,

    /// The detached signature of a single bundle, when verifying (needs
    /// --public-key or --trusted-root). Default: the file beside the bundle
    /// (`X.sig.bin`, `X.tar.sig.bin`, `X.sigstore.json`, ...).
    #[arg(long, value_name = "SIG")]
    pub signature: Option<PathBuf>,

    /// Show target references for this registry (`host[:port][/prefix]` or `oci:DIR`).
    #[arg(long, value_name = "TARGET")]
    pub registry: Option<String>,

    /// Show packs below this prefix instead of the one in --registry
    /// (Palette's OCI_PACK_BASE).
    #[arg(long, value_name = "PREFIX")]
    pub pack_prefix: Option<String>,

    /// Import only these platforms of multi-platform images
    /// (`os/arch[/variant]`, comma-separated or repeated; `linux/arm64`
    /// matches `linux/arm64/v8`). Indexes are rewritten to the kept
    /// platforms; images of other platforms are skipped. Default: every
    /// image whole.
    #[arg(long = "platform", value_name = "OS/ARCH", value_delimiter = ',')]
    pub platforms: Vec<crate::plan::Platform>,

    /// Image signature checks.
    #[command(flatten)]
    pub image_signatures: ImageSignatureArgs,

    /// With --registry and --public-key: the tag policy whose verdicts to
    /// show, found by looking up each tag in the target (read-only).
    #[arg(long, value_enum, default_value_t = crate::plan::TagPolicy::default())]
    pub on_existing_tag: crate::plan::TagPolicy,

    /// How to reach the --registry target to look up its tags.
    #[command(flatten)]
    pub access: RegistryAccessArgs,
}

/// One image signature rule for every image of the bundle.
#[derive(Debug, Clone, Args)]
pub struct ImageSignatureArgs {
    /// A key (PEM file or directory) whose cosign signatures the bundle's
    /// images must carry; repeat to trust several.
    #[arg(long = "image-signature-key", value_name = "PEM")]
    pub keys: Vec<PathBuf>,

    /// `require`: an image without a valid signature by one of the keys is
    /// held back (the rest imports, exit 3); `verify-if-present`: only a
    /// present but invalid signature holds it back; `ignore`. Default
    /// `require` when a key is given.
    #[arg(long = "image-signature-policy", value_enum, value_name = "POLICY")]
    pub policy: Option<crate::trust::SignaturePolicy>,
}

/// `airlock import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The bundles, imported one after another.
    #[command(flatten)]
    pub bundles: BundlePaths,

    /// Signature and keys.
    #[command(flatten)]
    pub signature: SignatureArgs,

    /// Caps on what a bundle may make airlock read.
    #[command(flatten)]
    pub limits: ReadLimitArgs,

    /// Where to push: `host[:port][/prefix]`, or `oci:DIR` for an OCI image
    /// layout directory (no registry needed).
    #[arg(long, value_name = "TARGET")]
    pub registry: String,

    /// Registry access.
    #[command(flatten)]
    pub access: RegistryAccessArgs,

    /// Blobs transferred at once; HEADs, mounts and manifests run four
    /// times as many at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY as u64, value_parser = clap::value_parser!(u64).range(1..=crate::config::defaults::MAX_BLOB_CONCURRENCY as u64))]
    pub concurrency: u64,

    /// Memory, in MiB, that all uploads together may hold in chunks read
    /// from the bundle and not yet sent (at least 32).
    #[arg(long, value_name = "MIB", default_value_t = (crate::push::DEFAULT_BUFFER_BYTES >> 20) as u64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub buffer_mib: u64,

    /// How blobs are uploaded first: chunked PATCHes (default) or one streaming
    /// PUT per blob (for registries that break chunked uploads, such as ECR).
    /// airlock switches to the other mode by itself when the registry refuses
    /// PATCH, or answers 413 to a large PUT.
    #[arg(long, value_enum, default_value = "chunked")]
    pub upload_mode: UploadMode,

    /// Repository under the target's prefix that blobs are sent into while
    /// the bundle is indexed, so the bundle is read twice (verify, then index
    /// and upload), not three times. Nothing there is committed before the
    /// bundle proved whole; blobs are then mounted where they belong. Needs
    /// push access to it; "" turns this off.
    #[arg(long, value_name = "NAME", default_value = crate::push::DEFAULT_STAGING_REPOSITORY)]
    pub staging_repository: String,

    /// Push packs to `<host>/<PREFIX>/spectro-packs/archive/<name>:<version>`
    /// instead of below the prefix in --registry (Palette's OCI_PACK_BASE).
    #[arg(long, value_name = "PREFIX")]
    pub pack_prefix: Option<String>,

    /// A pack whose declared images are neither in the bundle nor in the
    /// target: `warn` pushes it and reports the images; `fail` holds it back,
    /// imports everything else and exits 3.
    #[arg(long, value_enum, default_value = "warn")]
    pub pack_image_policy: crate::import::PackImagePolicy,

    /// A tag already in the target at other content: `fail-if-different`
    /// holds that image back, imports everything else and exits 3; `skip`
    /// holds it back with a notice; `overwrite` moves the tag.
    #[arg(long, value_enum, default_value = "fail-if-different")]
    pub on_existing_tag: crate::plan::TagPolicy,

    /// Image signature checks.
    #[command(flatten)]
    pub image_signatures: ImageSignatureArgs,

    /// Sign an import attestation for every image written with this ECDSA
    /// P-256 key (PEM, as `cosign generate-key-pair` makes, unencrypted),
    /// stored at `sha256-<hex>.att` beside the image. Registry targets only.
    #[arg(long, value_name = "KEY.pem")]
    pub attestation_key: Option<PathBuf>,

    /// Read the bundle once: check its signature while decompressing and
    /// indexing it, instead of in a read of its own first. For slow media
    /// and drop folders only trusted parties can write: the decompressor and
    /// the tar parser then see the bytes before the signature is checked
    /// (nothing is committed before it verified). Default: two reads.
    #[arg(long)]
    pub single_read: bool,

    /// Output format of the final report.
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: OutputFormat,

    /// Import only these platforms of multi-platform images
    /// (`os/arch[/variant]`, comma-separated or repeated; `linux/arm64`
    /// matches `linux/arm64/v8`). Indexes are rewritten to the kept
    /// platforms; images of other platforms are skipped. Default: every
    /// image whole.
    #[arg(long = "platform", value_name = "OS/ARCH", value_delimiter = ',')]
    pub platforms: Vec<crate::plan::Platform>,

    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
}

/// How to reach and authenticate to a registry.
#[derive(Debug, Args)]
pub struct RegistryAccessArgs {
    /// Use HTTP instead of HTTPS.
    #[arg(long)]
    pub plain_http: bool,

    /// Trust this CA certificate (PEM) in addition to the system's.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Vec<PathBuf>,

    /// Accept any TLS certificate. Dangerous: for tests only.
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,

    /// Client certificate (PEM) for a registry that requires mutual TLS.
    #[arg(long, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// Private key (PEM) of --client-cert.
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// User name for the registry; the password is read from stdin.
    #[arg(
        long,
        value_name = "U",
        requires = "password_stdin",
        conflicts_with = "auth_file"
    )]
    pub username: Option<String>,

    /// Read the password (or token) from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,

    /// Docker client config with credentials (default `$DOCKER_CONFIG/config.json`
    /// or `~/.docker/config.json` when present).
    #[arg(long, value_name = "CONFIG_JSON")]
    pub auth_file: Option<PathBuf>,
}
