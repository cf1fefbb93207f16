//! One import, end to end: verify → read → plan → push. The CLI's `import`
//! and the daemon drive this same function; nothing about verification or
//! pushing is written twice.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::FailureClass;
use crate::plan::{Plan, PlanOptions, Skipped, Target};
use crate::progress::{Progress, Stage};
use crate::push::registry::RegistryConfig;
use crate::push::{PushOptions, PushReport, SharedJournal};
use crate::read::{BundleIndex, ExtraFile, Producer, ReadLimits};
use crate::verify::{self, TrustedKeys, VerifiedBundle, VerifiedBy};

/// Result type of an import.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an import failed, by stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The signature did not verify (or keys could not be loaded).
    #[error(transparent)]
    Verify(#[from] verify::Error),
    /// The bundle's content is not whole.
    #[error(transparent)]
    Read(#[from] crate::read::Error),
    /// The bundle cannot be placed in the target.
    #[error(transparent)]
    Plan(#[from] crate::plan::Error),
    /// Writing to the target failed.
    #[error(transparent)]
    Push(#[from] crate::push::Error),
    /// A blocking worker panicked.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl Error {
    /// The failure class (exit code, retry decision).
    pub fn class(&self) -> FailureClass {
        match self {
            Error::Verify(e) => e.class(),
            Error::Read(e) => e.class(),
            Error::Plan(e) => e.class(),
            Error::Push(e) => e.class(),
            Error::Task(_) => FailureClass::Transport,
        }
    }
}

/// Everything an import needs.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The bundle file (`X.zst`).
    pub bundle: PathBuf,
    /// The detached signature; `None` means `X.sig.bin` beside the bundle.
    pub signature: Option<PathBuf>,
    /// Where to write.
    pub target: Target,
    /// Choices that shape the plan (pack prefix).
    pub plan: PlanOptions,
    /// How to reach a registry target.
    pub registry: RegistryConfig,
    /// Concurrency, chunking, upload mode.
    pub push: PushOptions,
    /// Memory limits of the index pass.
    pub limits: ReadLimits,
}

/// What an import did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    /// The bundle file.
    pub bundle: String,
    /// The bundle's content digest (`sha256:` of the `.zst` file).
    pub digest: String,
    /// The bundle's size in bytes.
    pub size: u64,
    /// Which key verified it.
    pub verified_by: VerifiedBy,
    /// The target.
    pub target: String,
    /// What was written.
    pub push: PushReport,
    /// `index.json` entries not imported, and why.
    pub skipped: Vec<Skipped>,
    /// Files outside the OCI layout, not imported by this version.
    pub extra_files: Vec<ExtraFile>,
    /// The tool that made the bundle (airlock layout, Zarf package, Hauler
    /// haul).
    pub producer: Producer,
}

/// Runs one import. Nothing reaches the target unless the signature verified
/// and every blob reachable from `index.json` is present and whole.
pub async fn run(
    request: ImportRequest,
    keys: Arc<TrustedKeys>,
    progress: &Progress,
) -> Result<ImportReport> {
    let signature = request
        .signature
        .clone()
        .unwrap_or_else(|| verify::signature_path_for(&request.bundle));
    let verified = verify(request.bundle.clone(), signature, keys, progress).await?;
    run_verified(verified, request.into(), progress).await
}

/// Where and how a verified bundle is written.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Where to write.
    pub target: Target,
    /// Choices that shape the plan (pack prefix).
    pub plan: PlanOptions,
    /// How to reach a registry target.
    pub registry: RegistryConfig,
    /// Concurrency, chunking, upload mode.
    pub push: PushOptions,
    /// Memory limits of the index pass.
    pub limits: ReadLimits,
    /// Where sessions of large uploads are recorded so a later attempt can
    /// continue them (`None`: an interrupted blob starts over).
    pub upload_journal: Option<SharedJournal>,
}

impl From<ImportRequest> for Destination {
    fn from(request: ImportRequest) -> Self {
        Destination {
            target: request.target,
            plan: request.plan,
            registry: request.registry,
            push: request.push,
            limits: request.limits,
            upload_journal: None,
        }
    }
}

/// Verifies a bundle's detached signature on a blocking thread, counting the
/// bytes hashed into `progress`.
pub async fn verify(
    bundle: PathBuf,
    signature: PathBuf,
    keys: Arc<TrustedKeys>,
    progress: &Progress,
) -> Result<VerifiedBundle> {
    progress.set_stage(Stage::Verifying);
    progress.reset_bundle_bytes();
    let verify_progress = progress.clone();
    let verified = blocking(move || {
        verify::verify_bundle_with_progress(&bundle, &signature, &keys, &mut |n| {
            verify_progress.add_bundle_bytes(n)
        })
    })
    .await??;
    tracing::info!(
        bundle = %verified.path().display(),
        digest = %verified.digest(),
        key = %verified.key().label,
        "signature verified"
    );
    Ok(verified)
}

/// Indexes, plans and pushes a verified bundle.
pub async fn run_verified(
    verified: VerifiedBundle,
    destination: Destination,
    progress: &Progress,
) -> Result<ImportReport> {
    let Destination {
        target,
        plan: plan_options,
        registry,
        push,
        limits,
        upload_journal,
    } = destination;
    let verified_by = verified.key().clone();
    progress.set_stage(Stage::Indexing);
    let index_progress = progress.clone();
    let index = blocking(move || BundleIndex::build(verified, limits, &index_progress)).await??;
    let index = Arc::new(index);

    let plan = Plan::new(Arc::clone(&index), target.clone(), plan_options)?;
    for skipped in plan.skipped() {
        tracing::warn!(entry = skipped.position, digest = %skipped.digest, "not imported: {}", skipped.reason);
    }
    for extra in index.extra_files() {
        let reason = index.producer().not_imported_reason(&extra.path);
        tracing::warn!(file = %extra.path, "not imported: {reason}");
    }

    let writer = Arc::new(crate::push::Destination::open(
        &target,
        registry,
        &push,
        upload_journal,
    )?);
    let report = crate::push::push(&plan, writer, &push, progress).await?;
    progress.set_stage(Stage::Done);

    let verified = index.bundle();
    Ok(ImportReport {
        bundle: verified.path().display().to_string(),
        digest: verified.digest(),
        size: verified.size(),
        verified_by,
        target: target.to_string(),
        push: report,
        skipped: plan.skipped().to_vec(),
        extra_files: index.extra_files().to_vec(),
        producer: index.producer().clone(),
    })
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task(e.to_string()))
}
