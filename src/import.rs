//! One import, end to end: verify → read → plan → push. The CLI's `import`
//! and the daemon drive this same function; nothing about verification or
//! pushing is written twice.

use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::FailureClass;
use crate::plan::{HeldTag, Plan, PlanOptions, Skipped, TagPolicy, Target};
use crate::progress::{Progress, Stage};
use crate::push::registry::RegistryConfig;
use crate::push::{PushOptions, PushReport, SharedJournal};
use crate::read::{BundleIndex, ExtraFile, Producer, ReadLimits};
use crate::verify::{self, TrustedKeys, VerifiedBundle, VerifiedBy, VerifyOptions};

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
    /// Part of the bundle was held back: packs by the `fail` pack-image
    /// policy (images they declare are neither in the bundle nor in the
    /// target), images by the `fail-if-different` tag policy (their tag
    /// already points at other content) or by their image signature rule. Everything else was imported;
    /// `report` says what.
    #[error("bundle {bundle}: {held_back}; everything else was imported")]
    HeldBack {
        /// The bundle file.
        bundle: String,
        /// What was held back and why, e.g.
        /// `held back by pack image policy fail, as images they declare are
        /// neither in the bundle nor in the target: pack nginx 1.2.0
        /// (packs/nginx-1.2.0.tar.gz) needs quay.io/acme/app:1.0`.
        held_back: String,
        /// What the import did.
        report: Box<ImportReport>,
    },
    /// Import attestations cannot be written (or not to this target).
    #[error(transparent)]
    Attest(#[from] crate::attest::Error),
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
            Error::HeldBack { .. } => FailureClass::Integrity,
            Error::Attest(e) => e.class(),
            Error::Task(_) => FailureClass::Transport,
        }
    }
}

/// What to do with a pack whose declared images are neither in its bundle
/// nor in the target.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum PackImagePolicy {
    /// Push the pack, log a warning and list the images in the report.
    #[default]
    Warn,
    /// Hold the pack back (everything else is imported) and fail the import
    /// as refused content.
    Fail,
}

/// Everything an import needs.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The bundle file (`X.zst`).
    pub bundle: PathBuf,
    /// The detached signature; `None` means the signature beside the bundle
    /// ([`verify::signature_candidates`]).
    pub signature: Option<PathBuf>,
    /// Where to write.
    pub target: Target,
    /// Choices that shape the plan (pack prefix).
    pub plan: PlanOptions,
    /// What to do with packs whose images are missing.
    pub pack_image_policy: PackImagePolicy,
    /// How to reach a registry target.
    pub registry: RegistryConfig,
    /// Concurrency, chunking, upload mode.
    pub push: PushOptions,
    /// Memory limits of the index pass.
    pub limits: ReadLimits,
    /// Signs an import attestation for every image written
    /// (`--attestation-key`); `None`: no attestations.
    pub attestor: Option<Arc<crate::attest::Attestor>>,
    /// Reads the bundle once, checking its signature while it is indexed
    /// (`--single-read`), instead of verifying it in a read of its own
    /// before anything is decompressed.
    pub single_read: bool,
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
    /// The bundle's Palette packs and the images they miss.
    pub packs: Vec<ImportedPack>,
    /// Images not pushed because their tag already points at other content
    /// in the target (under `skip` or `fail-if-different`).
    pub held_tags: Vec<HeldTag>,
    /// The signature check of every image that can carry one
    /// (`trust.image_signatures`); those with `heldBack` were not pushed.
    pub image_signatures: Vec<crate::trust::SignatureVerdict>,
    /// Import attestations written (`sha256-<hex>.att`), one per image.
    pub attestations: usize,
    /// The tool that made the bundle (airlock layout, Zarf package, Hauler
    /// haul).
    pub producer: Producer,
}

/// A pack of an import, with the images it declares that are neither in the
/// bundle nor in the target.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportedPack {
    /// `pack.json` name.
    pub name: String,
    /// `pack.json` version.
    pub version: String,
    /// Where it is in the bundle.
    pub item: String,
    /// Where it lands.
    pub target_ref: Option<String>,
    /// Declared images neither in the bundle nor in the target.
    pub missing_images: Vec<String>,
    /// Whether the `fail` policy held it back.
    pub held_back: bool,
}

/// Runs one import. Nothing reaches the target unless the signature verified
/// and every blob reachable from `index.json` is present and whole.
pub async fn run(
    request: ImportRequest,
    keys: Arc<TrustedKeys>,
    progress: &Progress,
) -> Result<ImportReport> {
    let signatures = signatures_for(&request.bundle, request.signature.as_ref());
    if request.single_read {
        let bundle = request.bundle.clone();
        let read = read_once(
            bundle,
            signatures,
            keys,
            VerifyOptions::default(),
            request.into(),
            progress,
        )
        .await?;
        return run_read_once(read, progress).await;
    }
    let verified = verify(
        request.bundle.clone(),
        signatures,
        keys,
        VerifyOptions::default(),
        progress,
    )
    .await?;
    run_verified(verified, request.into(), progress).await
}

/// Where and how a verified bundle is written.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Where to write.
    pub target: Target,
    /// Choices that shape the plan (pack prefix).
    pub plan: PlanOptions,
    /// What to do with packs whose images are missing.
    pub pack_image_policy: PackImagePolicy,
    /// How to reach a registry target.
    pub registry: RegistryConfig,
    /// Concurrency, chunking, upload mode.
    pub push: PushOptions,
    /// Memory limits of the index pass.
    pub limits: ReadLimits,
    /// Where sessions of large uploads are recorded so a later attempt can
    /// continue them (`None`: an interrupted blob starts over).
    pub upload_journal: Option<SharedJournal>,
    /// Signs an import attestation for every image written
    /// (`attestations.signing_key`); `None`: no attestations.
    pub attestor: Option<Arc<crate::attest::Attestor>>,
}

impl From<ImportRequest> for Destination {
    fn from(request: ImportRequest) -> Self {
        Destination {
            target: request.target,
            plan: request.plan,
            pack_image_policy: request.pack_image_policy,
            registry: request.registry,
            push: request.push,
            limits: request.limits,
            upload_journal: None,
            attestor: request.attestor,
        }
    }
}

/// The signatures to try for `bundle`: the one given, or every candidate
/// beside it that exists, in the naming rule's order.
pub fn signatures_for(bundle: &std::path::Path, given: Option<&PathBuf>) -> Vec<PathBuf> {
    match given {
        Some(signature) => vec![signature.clone()],
        None => verify::signatures_beside(bundle),
    }
}

/// Verifies a bundle's detached signature on a blocking thread, counting the
/// bytes hashed into `progress`. With several candidate `signatures`, the
/// first that verifies wins ([`verify::verify_bundle_by_any`]). Dropping the
/// future (a daemon whose grace period ran out) stops the blocking read too.
pub async fn verify(
    bundle: PathBuf,
    signatures: Vec<PathBuf>,
    keys: Arc<TrustedKeys>,
    options: VerifyOptions,
    progress: &Progress,
) -> Result<VerifiedBundle> {
    progress.set_stage(Stage::Verifying);
    progress.reset_bundle_bytes();
    // The index pass reads the file again and compares it with this read.
    let options = VerifyOptions {
        bind: true,
        ..options
    };
    let verify_progress = progress.clone();
    let abandoned = StopReadsIfAbandoned(Some(progress));
    let verified = blocking(move || {
        verify::verify_bundle_by_any(&bundle, &signatures, &keys, options, &mut |n| {
            verify_progress.add_bundle_bytes(n);
            if verify_progress.cancelled() {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
    })
    .await;
    abandoned.finished();
    let verified = verified??;
    tracing::info!(
        bundle = %verified.path().display(),
        digest = %verified.digest(),
        key = %verified.key().label,
        "signature verified"
    );
    Ok(verified)
}

/// Cancels a [`Progress`] when dropped before [`StopReadsIfAbandoned::finished`]:
/// a blocking thread reading the bundle is not stopped by dropping the future
/// that waits for it, and would otherwise read on (and keep the process from
/// exiting) after the import was given up.
struct StopReadsIfAbandoned<'a>(Option<&'a Progress>);

impl StopReadsIfAbandoned<'_> {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for StopReadsIfAbandoned<'_> {
    fn drop(&mut self) {
        if let Some(progress) = self.0 {
            progress.cancel();
        }
    }
}

/// Indexes, plans and pushes a verified bundle. Dropping the future stops the
/// reads of the bundle at their next chunk.
pub async fn run_verified(
    verified: VerifiedBundle,
    destination: Destination,
    progress: &Progress,
) -> Result<ImportReport> {
    let abandoned = StopReadsIfAbandoned(Some(progress));
    let result = run_verified_inner(verified, destination, progress).await;
    abandoned.finished();
    result
}

async fn run_verified_inner(
    verified: VerifiedBundle,
    destination: Destination,
    progress: &Progress,
) -> Result<ImportReport> {
    let (writer, destination) = open_target(destination)?;
    progress.set_stage(Stage::Indexing);
    let index_progress = progress.clone();
    let limits = destination.limits;
    let ((), index) = index_into(&writer, limits, progress, move |stage| {
        let index = BundleIndex::build_staged(verified, limits, &index_progress, stage);
        Ok(((), index.map_err(Error::Read)))
    })
    .await?;
    run_indexed(Arc::new(index?), writer, destination, progress).await
}

/// Opens the target an import writes to, refusing what it cannot hold.
fn open_target(destination: Destination) -> Result<(Arc<crate::push::Destination>, Destination)> {
    if let (Some(_), Target::Layout { .. }) = (&destination.attestor, &destination.target) {
        return Err(crate::attest::Error::LayoutTarget {
            target: destination.target.to_string(),
        }
        .into());
    }
    let writer = Arc::new(crate::push::Destination::open(
        &destination.target,
        destination.registry.clone(),
        &destination.push,
        destination.upload_journal.clone(),
    )?);
    Ok((writer, destination))
}

/// Runs `read`, the index pass, on a blocking thread with the stage of the
/// target `writer` (where the blobs it lacks are set aside as they are
/// read), and hands what was set aside to the target once `read` produced
/// an index; otherwise the stage is dropped, and what it set aside with it
/// (a registry's upload sessions are cancelled before this returns).
/// `read` fails as a whole when the bundle cannot be trusted at all, and
/// gives what it learnt besides the index.
async fn index_into<T: Send + 'static>(
    writer: &crate::push::Destination,
    limits: ReadLimits,
    progress: &Progress,
    read: impl FnOnce(&mut dyn crate::read::BlobStage) -> Result<(T, Result<BundleIndex>)>
    + Send
    + 'static,
) -> Result<(T, Result<BundleIndex>)> {
    let stage = writer.stage(limits.max_document_bytes, progress);
    let (read, stage) = blocking(move || match stage {
        Some(mut stage) => (read(&mut stage), Some(stage)),
        None => (read(&mut crate::read::NoStage), None),
    })
    .await?;
    let adopted = match (stage, &read) {
        (Some(stage), Ok((_, Ok(_)))) => {
            writer.adopt(stage);
            true
        }
        // The stage is dropped here, ending the streams of its blobs, so
        // their upload tasks can finish and cancel their sessions.
        _ => false,
    };
    if !adopted {
        writer.release_staged().await;
    }
    read
}

/// A bundle read once (`imports.single_read`): its signature verified over
/// the whole file in the pass that indexed it, the blobs the target lacks
/// set aside in the target, nothing committed yet. Only [`read_once`] makes
/// one, and only when the signature verified.
pub struct ReadOnce {
    bundle: VerifiedBundle,
    index: Result<BundleIndex>,
    writer: Arc<crate::push::Destination>,
    destination: Destination,
}

impl ReadOnce {
    /// The bundle, whose signature verified.
    pub fn bundle(&self) -> &VerifiedBundle {
        &self.bundle
    }
}

/// Reads `bundle` once: decompresses and indexes it while its bytes are
/// hashed for the signature ([`BundleIndex::build_verifying`]). `Err` when
/// the signature does not verify (or the target cannot be opened), in which
/// case whatever the pass set aside is gone; a verified bundle whose content
/// is not whole fails in [`run_read_once`]. Dropping the future stops the
/// read at its next chunk.
pub async fn read_once(
    bundle: PathBuf,
    signatures: Vec<PathBuf>,
    keys: Arc<TrustedKeys>,
    options: VerifyOptions,
    destination: Destination,
    progress: &Progress,
) -> Result<ReadOnce> {
    let abandoned = StopReadsIfAbandoned(Some(progress));
    let (writer, destination) = open_target(destination)?;
    progress.set_stage(Stage::VerifyingAndIndexing);
    let read_progress = progress.clone();
    let limits = destination.limits;
    let read = index_into(&writer, limits, progress, move |stage| {
        let pending = verify::PendingBundle::open(&bundle, &signatures, &keys, options)?;
        let read = BundleIndex::build_verifying(&pending, limits, &read_progress, stage)?;
        Ok((
            read.bundle().clone(),
            read.into_index().map_err(Error::Read),
        ))
    })
    .await;
    abandoned.finished();
    let (bundle, index) = read?;
    let bundle = ReadOnce {
        bundle,
        index,
        writer,
        destination,
    };
    tracing::info!(
        bundle = %bundle.bundle.path().display(),
        digest = %bundle.bundle.digest(),
        key = %bundle.bundle.key().label,
        "signature verified"
    );
    Ok(bundle)
}

/// Plans and pushes a bundle [`read_once`] read. Dropping the future stops
/// the reads of the bundle at their next chunk.
pub async fn run_read_once(read: ReadOnce, progress: &Progress) -> Result<ImportReport> {
    let abandoned = StopReadsIfAbandoned(Some(progress));
    let ReadOnce {
        index,
        writer,
        destination,
        ..
    } = read;
    let result = match index {
        Ok(index) => run_indexed(Arc::new(index), writer, destination, progress).await,
        Err(error) => Err(error),
    };
    abandoned.finished();
    result
}

/// Plans and pushes an indexed bundle into the target `writer` opened.
async fn run_indexed(
    index: Arc<BundleIndex>,
    writer: Arc<crate::push::Destination>,
    destination: Destination,
    progress: &Progress,
) -> Result<ImportReport> {
    let imported = plan_and_push(index, &writer, destination, progress).await;
    // Upload sessions the index pass opened and nothing committed (all of
    // them when the import failed) are cancelled before the import ends.
    writer.release_staged().await;
    imported
}

async fn plan_and_push(
    index: Arc<BundleIndex>,
    writer: &Arc<crate::push::Destination>,
    destination: Destination,
    progress: &Progress,
) -> Result<ImportReport> {
    let Destination {
        target,
        plan: plan_options,
        pack_image_policy,
        push,
        attestor,
        ..
    } = destination;
    let verified_by = index.bundle().key().clone();
    let mut plan = Plan::new(Arc::clone(&index), target.clone(), plan_options)?;
    let checking = std::time::Instant::now();
    let image_signatures = plan.judge_signatures();
    if !plan.options().image_signatures.is_empty() {
        tracing::info!(
            images = image_signatures.len(),
            seconds = checking.elapsed().as_secs_f64(),
            "image signatures checked"
        );
    }
    plan.withhold_unsigned(&image_signatures);
    for skipped in plan.skipped() {
        tracing::warn!(entry = skipped.position, digest = %skipped.digest, "not imported: {}", skipped.reason);
    }
    for extra in index.extra_files() {
        let reason = index.producer().not_imported_reason(&extra.path);
        tracing::warn!(file = %extra.path, "not imported: {reason}");
    }

    let packs = check_packs(&plan, writer, pack_image_policy).await?;
    let held: Vec<&ImportedPack> = packs.iter().filter(|p| p.held_back).collect();
    plan.withhold(
        &index
            .packs()
            .iter()
            .filter(|p| held.iter().any(|h| h.item == p.item))
            .map(|p| p.digest.clone())
            .collect(),
    );
    let mut held_back = Vec::new();
    let unsigned: Vec<String> = image_signatures
        .iter()
        .filter(|v| v.held_back)
        .map(|v| {
            tracing::warn!(source_ref = %v.source_ref, digest = %v.digest, policy = v.policy.as_str(), status = v.status.as_str(), "image signature check failed; image held back");
            format!("{v} (policy {})", v.policy.as_str())
        })
        .collect();
    if !unsigned.is_empty() {
        held_back.push(format!(
            "held back by image signature policy: {}",
            unsigned.join("; ")
        ));
    }
    if !held.is_empty() {
        let packs = held
            .iter()
            .map(|p| {
                format!(
                    "pack {} {} ({}) needs {}",
                    p.name,
                    p.version,
                    p.item,
                    p.missing_images.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        held_back.push(format!(
            "held back by pack image policy fail, as images they declare are neither in the bundle nor in the target: {packs}"
        ));
    }
    // As many at once as the push's other small requests.
    let in_flight = push.concurrency.max(1) * crate::push::REQUESTS_PER_BLOB;
    let held_tags = check_tags(&mut plan, writer, in_flight).await?;
    plan.withhold_tags(&held_tags);
    let failing: Vec<String> = held_tags
        .iter()
        .filter(|h| h.policy == TagPolicy::FailIfDifferent)
        .map(ToString::to_string)
        .collect();
    if !failing.is_empty() {
        held_back.push(format!(
            "held back by tag policy fail-if-different, as the tag already points at other content: {}",
            failing.join("; ")
        ));
    }
    let report = crate::push::push(&plan, Arc::clone(writer), &push, progress).await?;
    let verified = index.bundle();
    let attestations = match &attestor {
        Some(attestor) => {
            let facts = crate::attest::ImportFacts::now(
                verified.path(),
                &verified.digest(),
                &verified_by.fingerprint,
            );
            let attesting = std::time::Instant::now();
            let written =
                crate::attest::attach_all(&plan, writer, attestor, &facts, &image_signatures)
                    .await?;
            tracing::info!(
                attestations = written,
                seconds = attesting.elapsed().as_secs_f64(),
                "import attestations written"
            );
            written
        }
        None => 0,
    };
    progress.set_stage(Stage::Done);

    let report = ImportReport {
        bundle: verified.path().display().to_string(),
        digest: verified.digest(),
        size: verified.size(),
        verified_by,
        target: target.to_string(),
        push: report,
        skipped: plan.skipped().to_vec(),
        extra_files: index.extra_files().to_vec(),
        packs,
        held_tags,
        image_signatures,
        attestations,
        producer: index.producer().clone(),
    };
    if held_back.is_empty() {
        Ok(report)
    } else {
        Err(Error::HeldBack {
            bundle: report.bundle.clone(),
            held_back: held_back.join("; "),
            report: Box::new(report),
        })
    }
}

/// Looks up, before anything is pushed, where each tag the plan sets points
/// in the target now, `in_flight` at once, notes it in the plan (the push
/// then knows which images the target holds whole without asking again),
/// and returns the images the plan's tag policy holds back. A held tag is
/// logged as a warning.
pub async fn check_tags(
    plan: &mut Plan,
    writer: &crate::push::Destination,
    in_flight: usize,
) -> Result<Vec<HeldTag>> {
    let policy = plan.options().on_existing_tag;
    let mut held = Vec::new();
    let mut found = Vec::new();
    // Many at once, each started as soon as another answered (each is a
    // round trip to the registry); judged in plan order.
    let lookups: Vec<_> = plan
        .images()
        .iter()
        .enumerate()
        .map(|(position, image)| async move {
            let current = writer.tag_digest(image).await?;
            let looked_up = image.placement.tag.is_some().then_some(current);
            Ok::<_, crate::push::Error>((position, image, looked_up))
        })
        .collect();
    let mut answers: Vec<_> = futures::stream::iter(lookups)
        .buffer_unordered(in_flight.max(1))
        .try_collect()
        .await?;
    answers.sort_unstable_by_key(|(position, _, _)| *position);
    for (_, image, current) in answers {
        // Only tags were looked up; a referrer pushed by digest was not.
        let Some(current) = current else {
            continue;
        };
        held.extend(judged(policy, image, current.clone()));
        found.push((image.digest_ref(), current));
    }
    for (digest_ref, current) in found {
        plan.note_tag_in_target(digest_ref, current);
    }
    Ok(held)
}

/// The tag `policy` holds back for `image`, whose tag points at `existing`
/// in the target; logged as a warning.
fn judged(
    policy: crate::plan::TagPolicy,
    image: &crate::plan::PlannedImage,
    existing: Option<crate::digest::Digest>,
) -> Option<HeldTag> {
    let tag = crate::plan::judge(policy, image, existing.as_ref())?;
    tracing::warn!(
        target_ref = %tag.target_ref,
        existing = %tag.existing,
        bundle = %tag.bundle,
        policy = policy.as_str(),
        "tag already points at other content in the target; image held back"
    );
    Some(tag)
}

/// Checks every pack's declared images: present when an image of the bundle
/// has that source reference, or when the target already holds it at its
/// mirror location. Under [`PackImagePolicy::Fail`] a pack missing any is
/// marked held back; under `Warn` a warning is logged.
async fn check_packs(
    plan: &Plan,
    writer: &crate::push::Destination,
    policy: PackImagePolicy,
) -> Result<Vec<ImportedPack>> {
    let index = plan.index();
    let mut checked = Vec::with_capacity(index.packs().len());
    for pack in index.packs() {
        let mut missing = Vec::new();
        for image in &pack.missing_from_bundle {
            let held = match crate::read::names::parse_full(image) {
                Ok(reference) => writer.holds_image(plan.target(), &reference).await?,
                Err(_) => false,
            };
            if !held {
                missing.push(image.clone());
            }
        }
        let held_back = !missing.is_empty() && policy == PackImagePolicy::Fail;
        if !missing.is_empty() {
            tracing::warn!(
                pack = %pack.name,
                version = %pack.version,
                item = %pack.item,
                images = %missing.join(", "),
                held_back,
                "pack declares images that are neither in the bundle nor in the target"
            );
        }
        checked.push(ImportedPack {
            name: pack.name.clone(),
            version: pack.version.clone(),
            item: pack.item.clone(),
            target_ref: crate::plan::target_ref(
                plan.target(),
                plan.options(),
                &crate::read::ImageName::Artifact(pack.artifact.clone()),
            ),
            missing_images: missing,
            held_back,
        });
    }
    Ok(checked)
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task(e.to_string()))
}
