//! What each subcommand does, on top of the library's pipeline.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use super::{
    BundleCommand, BundleCreateArgs, Command, ConfigCheckArgs, ConfigCommand, ImportArgs,
    InspectArgs, RegistryAccessArgs, VerifyArgs,
};
use crate::FailureClass;
use crate::import::{self, ImportRequest};
use crate::plan::{PlanOptions, Target};
use crate::progress::Progress;
use crate::push::registry::auth::{self, Credentials};
use crate::push::registry::{RegistryConfig, RetryPolicy};
use crate::push::{DEFAULT_CHUNK_BYTES, PushOptions};
use crate::read::{BundleIndex, ReadLimits, UnverifiedBundle};
use crate::report::{self, OutputFormat};
use crate::verify::{self, TrustedKeys};

/// A failed command: its class (for the exit code) and a one-line message.
#[derive(Debug)]
pub struct CommandError {
    /// Which class of failure.
    pub class: FailureClass,
    /// The message, with its causes joined by `: `.
    pub message: String,
}

impl CommandError {
    fn new(class: FailureClass, error: &dyn std::error::Error) -> Self {
        CommandError {
            class,
            message: report::error_chain(error),
        }
    }

    fn config(message: impl Into<String>) -> Self {
        CommandError {
            class: FailureClass::Config,
            message: message.into(),
        }
    }
}

macro_rules! classed {
    ($e:expr) => {
        $e.map_err(|e| CommandError::new(e.class(), &e))
    };
}

/// Runs a parsed command.
pub async fn run(command: Command) -> Result<(), CommandError> {
    match command {
        Command::Verify(args) => run_verify(args).await,
        Command::Inspect(args) => run_inspect(args).await,
        Command::Import(args) => run_import(args).await,
        Command::Bundle(args) => match args.command {
            BundleCommand::Create(args) => run_bundle_create(args).await,
        },
        Command::Config(args) => match args.command {
            ConfigCommand::Check(args) => run_config_check(&args),
        },
        Command::Watch(args) => {
            let config = crate::config::DaemonConfig::load(args.config.as_deref(), &args)
                .map_err(|e| CommandError::new(e.class(), &e))?;
            run_watch(&config).await
        }
    }
}

/// Loads a configuration file as `airlock watch --config FILE` would, with
/// no flags, and says whether it is usable.
fn run_config_check(args: &ConfigCheckArgs) -> Result<(), CommandError> {
    crate::config::DaemonConfig::load(Some(&args.file), &crate::config::WatchArgs::default())
        .map_err(|e| CommandError::new(e.class(), &e))?;
    println!("{}: ok", args.file.display());
    Ok(())
}

/// Runs the daemon with an already loaded configuration.
pub async fn run_watch(config: &crate::config::DaemonConfig) -> Result<(), CommandError> {
    let settings = crate::daemon::DaemonSettings::from_config(config)
        .map_err(|e| CommandError::new(e.class(), &e))?;
    crate::daemon::run(settings)
        .await
        .map_err(|e| CommandError::new(e.class(), &e))
}

async fn load_keys(paths: Vec<PathBuf>) -> Result<Arc<TrustedKeys>, CommandError> {
    let keys = tokio::task::spawn_blocking(move || TrustedKeys::load(&paths))
        .await
        .map_err(|e| CommandError::config(e.to_string()))?;
    Ok(Arc::new(classed!(keys)?))
}

async fn verify_blocking(
    bundle: PathBuf,
    signature: Option<PathBuf>,
    keys: Arc<TrustedKeys>,
) -> Result<verify::VerifiedBundle, CommandError> {
    let signature = signature.unwrap_or_else(|| verify::signature_path_for(&bundle));
    let verified =
        tokio::task::spawn_blocking(move || verify::verify_bundle(&bundle, &signature, &keys))
            .await
            .map_err(|e| CommandError::config(e.to_string()))?;
    classed!(verified)
}

async fn run_verify(args: VerifyArgs) -> Result<(), CommandError> {
    let keys = load_keys(args.signature.public_keys).await?;
    let verified = verify_blocking(args.bundle, args.signature.signature, keys).await?;
    let key = verified.key();
    println!("Verified OK");
    println!(
        "{} verified by {} ({}, {})",
        verified.path().display(),
        key.label,
        key.algorithm,
        key.fingerprint
    );
    println!("digest {}", verified.digest());
    Ok(())
}

fn plan_options(
    pack_prefix: Option<&str>,
    platforms: Vec<crate::plan::Platform>,
) -> Result<PlanOptions, CommandError> {
    let pack_prefix = pack_prefix
        .map(|p| {
            crate::plan::pack_prefix(p)
                .map_err(|reason| CommandError::config(format!("invalid --pack-prefix: {reason}")))
        })
        .transpose()?;
    Ok(PlanOptions {
        pack_prefix,
        platforms,
    })
}

fn parse_target(text: &str) -> Result<Target, CommandError> {
    text.parse::<Target>()
        .map_err(|e| CommandError::new(FailureClass::Config, &e))
}

async fn run_inspect(args: InspectArgs) -> Result<(), CommandError> {
    let target = args.registry.as_deref().map(parse_target).transpose()?;
    let options = plan_options(args.pack_prefix.as_deref(), args.platforms)?;
    let progress = Progress::new();
    let inspection = if args.public_keys.is_empty() {
        let bundle = UnverifiedBundle::new(&args.bundle);
        let index = tokio::task::spawn_blocking(move || {
            BundleIndex::build(bundle, ReadLimits::default(), &progress)
        })
        .await
        .map_err(|e| CommandError::config(e.to_string()))?;
        let index = classed!(index)?;
        report::inspect::inspect(&index, target.as_ref(), &options, None)
    } else {
        let keys = load_keys(args.public_keys).await?;
        let verified = verify_blocking(args.bundle, args.signature, keys).await?;
        let key = verified.key().clone();
        let index = tokio::task::spawn_blocking(move || {
            BundleIndex::build(verified, ReadLimits::default(), &progress)
        })
        .await
        .map_err(|e| CommandError::config(e.to_string()))?;
        let index = classed!(index)?;
        report::inspect::inspect(&index, target.as_ref(), &options, Some(key))
    };
    match args.output {
        OutputFormat::Text => print!("{}", report::inspect::text(&inspection)),
        OutputFormat::Json => print_json(&inspection)?,
    }
    Ok(())
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CommandError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CommandError::new(FailureClass::Config, &e))?;
    println!("{text}");
    Ok(())
}

/// Credentials from `--username/--password-stdin`, `--auth-file`, or the
/// default Docker config when it exists.
fn credentials(access: &RegistryAccessArgs, host: &str) -> Result<Credentials, CommandError> {
    if let Some(username) = &access.username {
        let mut password = String::new();
        std::io::stdin()
            .read_to_string(&mut password)
            .map_err(|e| {
                CommandError::config(format!("cannot read the password from stdin: {e}"))
            })?;
        let password = password.trim_end_matches(['\n', '\r']).to_owned();
        if password.is_empty() {
            return Err(CommandError::config(
                "--password-stdin read an empty password",
            ));
        }
        return Ok(Credentials::Basic {
            username: username.clone(),
            password,
        });
    }
    let explicit = access.auth_file.is_some();
    let Some(path) = access.auth_file.clone().or_else(auth::default_auth_file) else {
        return Ok(Credentials::Anonymous);
    };
    if !explicit && !path.exists() {
        return Ok(Credentials::Anonymous);
    }
    auth::credentials_from_auth_file(&path, host).map_err(|e| CommandError::new(e.class(), &e))
}

async fn run_import(args: ImportArgs) -> Result<(), CommandError> {
    let target = parse_target(&args.registry)?;
    let keys = load_keys(args.signature.public_keys.clone()).await?;
    let registry = match &target {
        Target::Registry { host, .. } => RegistryConfig {
            host: host.clone(),
            plain_http: args.access.plain_http,
            ca_certs: args.access.ca_cert.clone(),
            insecure_skip_tls_verify: args.access.insecure_skip_tls_verify,
            credentials: credentials(&args.access, host)?,
            retry: RetryPolicy::default(),
            observer: None,
        },
        Target::Layout { .. } => RegistryConfig::default(),
    };
    let request = ImportRequest {
        plan: plan_options(args.pack_prefix.as_deref(), args.platforms.clone())?,
        pack_image_policy: args.pack_image_policy,
        bundle: args.bundle.clone(),
        signature: args.signature.signature.clone(),
        target,
        registry,
        push: PushOptions {
            concurrency: args.concurrency as usize,
            buffer_bytes: (args.buffer_mib as usize) << 20,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            upload_mode: args.upload_mode.into(),
        },
        limits: ReadLimits::default(),
    };
    let progress = Progress::new();
    let bundle_bytes = std::fs::metadata(&args.bundle)
        .map(|m| m.len())
        .unwrap_or(0);
    let display = report::progress::Display::start(progress.clone(), bundle_bytes, args.quiet);
    let result = import::run(request, keys, &progress).await;
    display.finish();
    let (report, failure) = match result {
        Err(import::Error::PacksHeldBack {
            bundle,
            held_back,
            report,
        }) => {
            let error = import::Error::PacksHeldBack {
                bundle,
                held_back,
                report: report.clone(),
            };
            (*report, Some(CommandError::new(error.class(), &error)))
        }
        other => (classed!(other)?, None),
    };
    match args.output {
        OutputFormat::Text => print!("{}", report::import_text(&report)),
        OutputFormat::Json => print_json(&report)?,
    }
    failure.map_or(Ok(()), Err)
}

async fn run_bundle_create(args: BundleCreateArgs) -> Result<(), CommandError> {
    let options = crate::bundle::CreateOptions {
        output: args.output,
        signing_key: args.signing_key,
        layouts: args.layouts,
        files: args.files,
        docker_archives: args.docker_archives,
        packs: args.packs,
        charts: args.charts,
        compression: crate::bundle::Compression {
            level: args.zstd_level,
            long: args.long,
        },
    };
    let pull = crate::bundle::PullOptions {
        plain_http: args.image_plain_http,
        ca_certs: args.image_ca_certs,
        auth_file: args.image_auth_file,
    };
    let created = crate::bundle::create_with_images(options, &args.images, &pull).await;
    let created = classed!(created)?;
    print!("{}", created.report());
    Ok(())
}
