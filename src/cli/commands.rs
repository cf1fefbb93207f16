//! What each subcommand does, on top of the library's pipeline.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use super::batch::{self, Selection, VerifyLine};
use super::{
    BundleCommand, BundleCreateArgs, BundlePaths, Command, ConfigCheckArgs, ConfigCommand,
    ImportArgs, InspectArgs, RegistryAccessArgs, VerifyArgs,
};
use crate::FailureClass;
use crate::import::{self, ImportReport, ImportRequest};
use crate::plan::{PlanOptions, Target};
use crate::progress::Progress;
use crate::push::registry::ClientIdentity;
use crate::push::registry::auth::{self, Credentials};
use crate::push::registry::{RegistryConfig, RetryPolicy};
use crate::push::{DEFAULT_CHUNK_BYTES, PushOptions};
use crate::read::{BundleIndex, ReadLimits, UnverifiedBundle};
use crate::report::{self, OutputFormat};
use crate::verify::{self, TrustedKeys, VerifiedBundle};

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
        Command::Attestation(args) => match args.command {
            super::AttestationCommand::Verify(args) => run_attestation_verify(args).await,
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

async fn load_keys(
    paths: Vec<PathBuf>,
    keyless: &super::KeylessArgs,
) -> Result<Arc<TrustedKeys>, CommandError> {
    let keyless = keyless.entries();
    let keys =
        tokio::task::spawn_blocking(move || TrustedKeys::load_with_keyless(&paths, &keyless))
            .await
            .map_err(|e| CommandError::config(e.to_string()))?;
    Ok(Arc::new(classed!(keys)?))
}

/// The bundles the command's paths name, and the `--signature` given for
/// them, which only makes sense for a single bundle.
fn select(
    paths: &BundlePaths,
    signature: Option<PathBuf>,
) -> Result<(Selection, Option<PathBuf>), CommandError> {
    let selection = batch::select(&paths.paths, paths.recursive)
        .map_err(|e| CommandError::new(e.class(), &e))?;
    if signature.is_some() && selection.bundles.len() != 1 {
        return Err(CommandError::config(format!(
            "--signature names the signature of one bundle, but the paths hold {} bundles",
            selection.bundles.len()
        )));
    }
    Ok((selection, signature))
}

async fn verify_one(
    bundle: PathBuf,
    signature: Option<&PathBuf>,
    keys: Arc<TrustedKeys>,
) -> Result<Result<VerifiedBundle, verify::Error>, CommandError> {
    let signatures = import::signatures_for(&bundle, signature);
    tokio::task::spawn_blocking(move || {
        verify::verify_bundle_by_any(
            &bundle,
            &signatures,
            &keys,
            verify::VerifyOptions::default(),
            &mut |_| std::ops::ControlFlow::Continue(()),
        )
    })
    .await
    .map_err(|e| CommandError::config(e.to_string()))
}

async fn verify_blocking(
    bundle: PathBuf,
    signature: Option<&PathBuf>,
    keys: Arc<TrustedKeys>,
) -> Result<VerifiedBundle, CommandError> {
    let verified = verify_one(bundle, signature, keys).await?;
    classed!(verified)
}

async fn run_verify(args: VerifyArgs) -> Result<(), CommandError> {
    let keys = load_keys(args.signature.public_keys, &args.signature.keyless).await?;
    let (selection, signature) = select(&args.bundles, args.signature.signature)?;
    if selection.single_file && args.output == OutputFormat::Text {
        return verify_single(&selection.bundles[0], signature.as_ref(), keys).await;
    }
    let mut lines = Vec::with_capacity(selection.bundles.len());
    for bundle in &selection.bundles {
        let line = match verify_one(bundle.clone(), signature.as_ref(), Arc::clone(&keys)).await? {
            Ok(verified) => VerifyLine::verified(&verified),
            Err(error) => VerifyLine::failed(bundle, &error),
        };
        lines.push(line);
    }
    let lone: Vec<VerifyLine> = selection
        .lone_signatures
        .iter()
        .map(|path| VerifyLine::lone_signature(path))
        .collect();
    match args.output {
        OutputFormat::Text => {
            let width = lines.iter().chain(&lone).map(|l| l.file.len()).max();
            for line in lines.iter().chain(&lone) {
                println!("{}", line.text(width.unwrap_or(0)));
            }
            println!("{}", batch::verify_summary(&lines, lone.len()));
        }
        OutputFormat::Json => {
            print_json(&lines.iter().chain(&lone).collect::<Vec<_>>())?;
        }
    }
    let failed: Vec<&VerifyLine> = lines
        .iter()
        .chain(&lone)
        .filter(|l| l.class.is_some())
        .collect();
    match batch::worst(failed.iter().filter_map(|l| l.class)) {
        None => Ok(()),
        Some(class) => Err(CommandError {
            class,
            message: format!(
                "{} of {} file(s) did not verify: {}",
                failed.len(),
                lines.len() + lone.len(),
                failed
                    .iter()
                    .map(|l| l.file.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// The answer for one bundle file, as `openssl dgst -verify` prints it.
async fn verify_single(
    bundle: &std::path::Path,
    signature: Option<&PathBuf>,
    keys: Arc<TrustedKeys>,
) -> Result<(), CommandError> {
    let verified = verify_blocking(bundle.to_owned(), signature, keys).await?;
    let key = verified.key();
    println!("Verified OK");
    println!(
        "{} verified by {} ({}, {}) with {}",
        verified.path().display(),
        key.label,
        key.algorithm,
        key.fingerprint,
        verified.signature_path().display()
    );
    println!("digest {}", verified.digest());
    Ok(())
}

fn plan_options(
    pack_prefix: Option<&str>,
    platforms: Vec<crate::plan::Platform>,
    on_existing_tag: crate::plan::TagPolicy,
    image_signatures: &super::ImageSignatureArgs,
) -> Result<PlanOptions, CommandError> {
    let image_signatures = crate::trust::ImageSignatureRules::for_every_image(
        &image_signatures.keys,
        image_signatures.policy,
    )
    .map_err(|e| CommandError::new(e.class(), &e))?;
    let pack_prefix = pack_prefix
        .map(|p| {
            crate::plan::pack_prefix(p)
                .map_err(|reason| CommandError::config(format!("invalid --pack-prefix: {reason}")))
        })
        .transpose()?;
    Ok(PlanOptions {
        pack_prefix,
        platforms,
        on_existing_tag,
        image_signatures: Arc::new(image_signatures),
    })
}

fn parse_target(text: &str) -> Result<Target, CommandError> {
    text.parse::<Target>()
        .map_err(|e| CommandError::new(FailureClass::Config, &e))
}

async fn run_inspect(args: InspectArgs) -> Result<(), CommandError> {
    let target = args.registry.as_deref().map(parse_target).transpose()?;
    let options = plan_options(
        args.pack_prefix.as_deref(),
        args.platforms.clone(),
        args.on_existing_tag,
        &args.image_signatures,
    )?;
    let keys = if args.public_keys.is_empty() && args.keyless.trusted_root.is_none() {
        if args.signature.is_some() {
            return Err(CommandError::config(
                "--signature needs --public-key or --trusted-root to verify it with",
            ));
        }
        None
    } else {
        Some(load_keys(args.public_keys.clone(), &args.keyless).await?)
    };
    // Tags are looked up only for a verified bundle: only a verified index
    // can be planned.
    let tag_lookup = match (&target, &keys) {
        (Some(target), Some(_)) => Some(registry_config(&args.access, target)?),
        _ => None,
    };
    let (selection, signature) = select(&args.bundles, args.signature.clone())?;
    if selection.single_file {
        let inspection = inspect_one(
            &selection.bundles[0],
            signature.as_ref(),
            keys,
            target.as_ref(),
            &options,
            args.limits.limits(),
            tag_lookup.as_ref(),
        )
        .await?;
        return match args.output {
            OutputFormat::Text => {
                print!("{}", report::inspect::text(&inspection));
                Ok(())
            }
            OutputFormat::Json => print_json(&inspection),
        };
    }
    let mut inspections = Vec::new();
    let mut failures = Vec::new();
    for bundle in &selection.bundles {
        let inspected = inspect_one(
            bundle,
            signature.as_ref(),
            keys.clone(),
            target.as_ref(),
            &options,
            args.limits.limits(),
            tag_lookup.as_ref(),
        );
        match inspected.await {
            Ok(inspection) => {
                if args.output == OutputFormat::Text {
                    if !inspections.is_empty() {
                        println!();
                    }
                    print!("{}", report::inspect::text(&inspection));
                }
                inspections.push(inspection);
            }
            Err(error) => {
                eprintln!("error: {}", error.message);
                failures.push((bundle.display().to_string(), error.class));
            }
        }
    }
    if args.output == OutputFormat::Json {
        print_json(&inspections)?;
    }
    batch_outcome(&failures, selection.bundles.len(), "could not be inspected")
}

/// The exit of a command over several bundles: the worst failure, naming
/// every bundle that failed.
fn batch_outcome(
    failures: &[(String, FailureClass)],
    total: usize,
    what: &str,
) -> Result<(), CommandError> {
    match batch::worst(failures.iter().map(|(_, class)| *class)) {
        None => Ok(()),
        Some(class) => Err(CommandError {
            class,
            message: format!(
                "{} of {total} bundle(s) {what}: {}",
                failures.len(),
                failures
                    .iter()
                    .map(|(bundle, _)| bundle.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

async fn inspect_one(
    bundle: &std::path::Path,
    signature: Option<&PathBuf>,
    keys: Option<Arc<TrustedKeys>>,
    target: Option<&Target>,
    options: &PlanOptions,
    limits: ReadLimits,
    tag_lookup: Option<&RegistryConfig>,
) -> Result<report::inspect::Inspection, CommandError> {
    let progress = Progress::new();
    let Some(keys) = keys else {
        let bundle = bundle.to_owned();
        let index = tokio::task::spawn_blocking(move || {
            BundleIndex::build(UnverifiedBundle::open(bundle)?, limits, &progress)
        })
        .await
        .map_err(|e| CommandError::config(e.to_string()))?;
        let index = classed!(index)?;
        return Ok(report::inspect::inspect(&index, target, options, None));
    };
    let verified = verify_blocking(bundle.to_owned(), signature, keys).await?;
    let key = verified.key().clone();
    let index =
        tokio::task::spawn_blocking(move || BundleIndex::build(verified, limits, &progress))
            .await
            .map_err(|e| CommandError::config(e.to_string()))?;
    let index = Arc::new(classed!(index)?);
    let held_tags = match (target, tag_lookup) {
        (Some(target), Some(registry)) => {
            Some(tags_held(Arc::clone(&index), target, options, registry.clone()).await?)
        }
        _ => None,
    };
    let mut inspection = report::inspect::inspect(&index, target, options, Some(key));
    inspection.held_tags = held_tags;
    Ok(inspection)
}

/// The images the tag policy in `options` would hold back: each tag the
/// plan sets, looked up in `target` (manifest `HEAD`s; an `oci:` layout's
/// `index.json`). Nothing is written: a layout directory that is not one
/// yet holds no tags.
async fn tags_held(
    index: Arc<BundleIndex>,
    target: &Target,
    options: &PlanOptions,
    registry: RegistryConfig,
) -> Result<Vec<crate::plan::HeldTag>, CommandError> {
    if let Target::Layout { dir } = target
        && !dir.join("oci-layout").is_file()
    {
        return Ok(Vec::new());
    }
    let mut plan = classed!(crate::plan::Plan::new(
        index,
        target.clone(),
        options.clone()
    ))?;
    let writer = classed!(crate::push::Destination::open(
        target,
        registry,
        &PushOptions::default(),
        None
    ))?;
    let in_flight = crate::push::DEFAULT_CONCURRENCY * crate::push::REQUESTS_PER_BLOB;
    classed!(import::check_tags(&mut plan, &writer, in_flight).await)
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CommandError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CommandError::new(FailureClass::Config, &e))?;
    println!("{text}");
    Ok(())
}

/// Credentials from `--username/--password-stdin`, `--auth-file`, or the
/// default Docker config when it exists.
/// `--client-cert` with `--client-key` (clap requires both or neither).
fn client_identity(access: &RegistryAccessArgs) -> Option<ClientIdentity> {
    Some(ClientIdentity {
        certificate: access.client_cert.clone()?,
        key: access.client_key.clone()?,
    })
}

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

/// How to reach `target` with the access flags (credentials read now).
fn registry_config(
    access: &RegistryAccessArgs,
    target: &Target,
) -> Result<RegistryConfig, CommandError> {
    Ok(match target {
        Target::Registry { host, .. } => RegistryConfig {
            host: host.clone(),
            plain_http: access.plain_http,
            ca_certs: access.ca_cert.clone(),
            insecure_skip_tls_verify: access.insecure_skip_tls_verify,
            client_identity: client_identity(access),
            credentials: credentials(access, host)?,
            retry: RetryPolicy::default(),
            observer: None,
            token_realm_hosts: Vec::new(),
            timeouts: Default::default(),
        },
        Target::Layout { .. } => RegistryConfig::default(),
    })
}

async fn run_import(args: ImportArgs) -> Result<(), CommandError> {
    let target = parse_target(&args.registry)?;
    let keys = load_keys(args.signature.public_keys.clone(), &args.signature.keyless).await?;
    let (selection, signature) = select(&args.bundles, args.signature.signature.clone())?;
    let registry = registry_config(&args.access, &target)?;
    let request = ImportRequest {
        plan: plan_options(
            args.pack_prefix.as_deref(),
            args.platforms.clone(),
            args.on_existing_tag,
            &args.image_signatures,
        )?,
        pack_image_policy: args.pack_image_policy,
        bundle: PathBuf::new(),
        signature,
        target,
        registry,
        push: PushOptions {
            concurrency: args.concurrency as usize,
            buffer_bytes: (args.buffer_mib as usize) << 20,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            upload_mode: args.upload_mode,
            staging_repository: Some(args.staging_repository.clone()),
        },
        limits: args.limits.limits(),
        attestor: match &args.attestation_key {
            Some(path) => Some(Arc::new(
                crate::attest::Attestor::load(path)
                    .map_err(|e| CommandError::new(e.class(), &e))?,
            )),
            None => None,
        },
        single_read: args.single_read,
    };
    if selection.single_file {
        let bundle = selection.bundles[0].clone();
        let (report, failure) = import_one(&request, bundle, &keys, None, args.quiet).await?;
        match args.output {
            OutputFormat::Text => print!("{}", report::import_text(&report)),
            OutputFormat::Json => print_json(&report)?,
        }
        return failure.map_or(Ok(()), Err);
    }
    let total = selection.bundles.len();
    let mut rows = Vec::with_capacity(total);
    for (n, bundle) in selection.bundles.iter().enumerate() {
        let label = format!("[{}/{total}] {}", n + 1, bundle.display());
        let started = std::time::Instant::now();
        let outcome = import_one(&request, bundle.clone(), &keys, Some(label), args.quiet).await;
        let row = report::batch::ImportRow::new(bundle, started.elapsed(), outcome_parts(outcome));
        if let Some(reason) = &row.error {
            eprintln!("error: {reason}");
        }
        rows.push(row);
    }
    match args.output {
        OutputFormat::Text => print!("{}", report::batch::import_table(&rows)),
        OutputFormat::Json => print_json(&rows)?,
    }
    let failures: Vec<(String, FailureClass)> = rows
        .iter()
        .filter_map(|row| Some((row.bundle.clone(), row.class?)))
        .collect();
    batch_outcome(&failures, total, "were not imported whole")
}

/// Splits an import's outcome into its report (when anything was imported)
/// and its failure.
fn outcome_parts(
    outcome: Result<(ImportReport, Option<CommandError>), CommandError>,
) -> (Option<ImportReport>, Option<(FailureClass, String)>) {
    match outcome {
        Ok((report, None)) => (Some(report), None),
        Ok((report, Some(failure))) => (Some(report), Some((failure.class, failure.message))),
        Err(failure) => (None, Some((failure.class, failure.message))),
    }
}

/// Imports one bundle with its own progress display. `Ok` carries the report
/// and, when packs were held back, the failure to exit with.
async fn import_one(
    template: &ImportRequest,
    bundle: PathBuf,
    keys: &Arc<TrustedKeys>,
    label: Option<String>,
    quiet: bool,
) -> Result<(ImportReport, Option<CommandError>), CommandError> {
    let request = ImportRequest {
        bundle: bundle.clone(),
        ..template.clone()
    };
    let progress = Progress::new();
    let bundle_bytes = std::fs::metadata(&bundle).map(|m| m.len()).unwrap_or(0);
    let display = report::progress::Display::start(progress.clone(), bundle_bytes, quiet, label);
    let result = import::run(request, Arc::clone(keys), &progress).await;
    display.finish();
    match result {
        Err(import::Error::HeldBack {
            bundle,
            held_back,
            report,
        }) => {
            let error = import::Error::HeldBack {
                bundle,
                held_back,
                report: report.clone(),
            };
            Ok((*report, Some(CommandError::new(error.class(), &error))))
        }
        other => Ok((classed!(other)?, None)),
    }
}

/// When a bundle is made: now, or `SOURCE_DATE_EPOCH` (seconds since 1970)
/// for reproducible builds, which then give byte-identical bundles.
fn creation_time() -> Result<std::time::SystemTime, CommandError> {
    let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") else {
        return Ok(std::time::SystemTime::now());
    };
    let seconds: u64 = epoch.trim().parse().map_err(|_| {
        CommandError::config(format!(
            "SOURCE_DATE_EPOCH={epoch:?} is not a number of seconds since 1970"
        ))
    })?;
    Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
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
        created: creation_time()?,
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

async fn run_attestation_verify(args: super::AttestationVerifyArgs) -> Result<(), CommandError> {
    let keys = load_keys(args.keys.clone(), &super::KeylessArgs::default()).await?;
    let reference = crate::read::names::parse_full(&args.image)
        .map_err(|reason| CommandError::config(format!("image {}: {reason}", args.image)))?;
    let host = reference.registry().to_owned();
    let registry = RegistryConfig {
        host: host.clone(),
        plain_http: args.access.plain_http,
        ca_certs: args.access.ca_cert.clone(),
        insecure_skip_tls_verify: args.access.insecure_skip_tls_verify,
        client_identity: client_identity(&args.access),
        credentials: credentials(&args.access, &host)?,
        retry: RetryPolicy::default(),
        observer: None,
        token_realm_hosts: Vec::new(),
        timeouts: Default::default(),
    };
    let client = crate::push::registry::RegistryClient::new(registry)
        .map_err(|e| CommandError::new(e.class(), &e))?;
    let wanted = reference
        .digest()
        .or(reference.tag())
        .unwrap_or("latest")
        .to_owned();
    let verified =
        crate::attest::verify_image(&client, &args.image, reference.repository(), &wanted, &keys)
            .await
            .map_err(|e| CommandError::new(e.class(), &e))?;
    match args.output {
        OutputFormat::Json => print_json(&verified)?,
        OutputFormat::Text => {
            println!("Verified OK");
            for attestation in &verified {
                println!(
                    "{} ({}) attested by {} in layer {}",
                    args.image, attestation.digest, attestation.key, attestation.layer
                );
                let predicate = serde_json::to_string_pretty(&attestation.predicate)
                    .map_err(|e| CommandError::new(FailureClass::Config, &e))?;
                println!("{predicate}");
            }
        }
    }
    Ok(())
}
