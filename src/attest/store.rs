//! Where attestations live: cosign's layout. One OCI image manifest tagged
//! `sha256-<hex of the image digest>.att` in the image's repository, one
//! layer per attestation (`application/vnd.dsse.envelope.v1+json`, with the
//! annotations `cosign attest` sets: an empty
//! `dev.cosignproject.cosign/signature` and `predicateType`), and a config
//! whose `rootfs.diff_ids` list the layers, as go-containerregistry builds
//! it for cosign. Attestations already under the tag are kept.

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use serde_json::{Value, json};

use super::statement::{ImportFacts, PREDICATE_TYPE, envelope, statement};
use super::{Attestor, Error, Result};
use crate::digest::Digest;
use crate::plan::{Plan, PlannedImage, Target};
use crate::push::registry::RegistryClient;
use crate::trust::{SIGNATURE_ANNOTATION, SignatureVerdict};

/// The layer media type of a DSSE attestation.
pub const ATTESTATION_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Images attested at once: each attestation is a handful of small
/// requests (blob checks and uploads, a manifest read and write), so the
/// round trips, not the bytes, bound it; eight in flight hide them without
/// crowding the registry. Different images never share an `.att` tag, so
/// nothing races.
const ATTESTATIONS_IN_FLIGHT: usize = 8;

/// The tag cosign keeps an image's attestations under.
pub fn attestation_tag(digest: &Digest) -> String {
    format!("{}-{}.att", digest.algorithm().as_str(), digest.hex())
}

/// Attests every image of `plan` that can carry a signature (not
/// artifacts, referrers or cosign companions), after it was pushed.
/// Returns how many attestations were written.
pub async fn attach_all(
    plan: &Plan,
    destination: &crate::push::Destination,
    attestor: &Attestor,
    facts: &ImportFacts,
    verdicts: &[SignatureVerdict],
) -> Result<usize> {
    let (crate::push::Destination::Registry { client, .. }, Target::Registry { host, .. }) =
        (destination, plan.target())
    else {
        return Err(Error::LayoutTarget {
            target: plan.target().to_string(),
        });
    };
    let mut jobs = Vec::new();
    for image in plan.images().iter().filter(|image| {
        SignatureVerdict::applies_to(
            &image.kind,
            image.subject.as_ref(),
            image.placement.tag.as_deref(),
        )
    }) {
        let verdict = verdicts
            .iter()
            .find(|v| v.target_ref.as_deref() == Some(image.placement.target_ref.as_str()));
        let name = format!("{host}/{}", image.placement.repository);
        let statement = statement(
            attestor,
            facts,
            &name,
            &image.digest,
            &image.source_ref,
            verdict,
        );
        jobs.push((image, envelope(attestor, &statement)));
    }
    // A plain loop over `FuturesUnordered` rather than a stream adaptor: the
    // daemon's spawned import future must be `Send` for every lifetime.
    let mut jobs = jobs.into_iter();
    let mut pending = FuturesUnordered::new();
    let mut written = 0;
    loop {
        while pending.len() < ATTESTATIONS_IN_FLIGHT {
            let Some((image, envelope)) = jobs.next() else {
                break;
            };
            pending.push(attach(client, image, envelope));
        }
        match pending.next().await {
            Some(result) => {
                result?;
                written += 1;
            }
            None => break,
        }
    }
    Ok(written)
}

/// Adds one envelope under the image's `.att` tag, keeping what is there.
async fn attach(client: &RegistryClient, image: &PlannedImage, envelope: Vec<u8>) -> Result<()> {
    let repository = &image.placement.repository;
    let tag = attestation_tag(&image.digest);
    let envelope = Bytes::from(envelope);
    let layer_digest = Digest::sha256_of(&envelope);
    put_blob(client, repository, &layer_digest, envelope.clone()).await?;
    let mut layers = match client.manifest(repository, &tag).await? {
        Some(existing) => existing_layers(&existing.bytes),
        None => Vec::new(),
    };
    if !layers
        .iter()
        .any(|l| l["digest"] == layer_digest.to_string())
    {
        layers.push(json!({
            "mediaType": ATTESTATION_MEDIA_TYPE,
            "size": envelope.len(),
            "digest": layer_digest.to_string(),
            "annotations": {
                SIGNATURE_ANNOTATION: "",
                "predicateType": PREDICATE_TYPE,
            },
        }));
    }
    let config = Bytes::from(config_for(&layers));
    let config_digest = Digest::sha256_of(&config);
    put_blob(client, repository, &config_digest, config.clone()).await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": config.len(), "digest": config_digest.to_string()},
        "layers": layers,
    });
    let bytes = Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default());
    client
        .put_manifest(repository, &tag, OCI_MANIFEST, bytes)
        .await?;
    tracing::debug!(%repository, %tag, "import attestation written");
    Ok(())
}

/// The layers of the manifest already under the `.att` tag; a document that
/// is not a manifest is replaced.
fn existing_layers(bytes: &[u8]) -> Vec<Value> {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|m| m.get("layers").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// The image config cosign's attestation manifests carry: empty but for
/// the layers' digests.
fn config_for(layers: &[Value]) -> Vec<u8> {
    let diff_ids: Vec<Value> = layers.iter().map(|l| l["digest"].clone()).collect();
    serde_json::to_vec(&json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }))
    .unwrap_or_default()
}

async fn put_blob(
    client: &RegistryClient,
    repository: &str,
    digest: &Digest,
    bytes: Bytes,
) -> Result<()> {
    if client.blob_size(repository, digest).await? == Some(bytes.len() as u64) {
        return Ok(());
    }
    let session = client.start_upload(repository).await?;
    client
        .finish_upload(repository, &session, digest, bytes)
        .await?;
    Ok(())
}

/// What one import attests with: the facts of the bundle, now.
pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl ImportFacts {
    /// The facts of a verified bundle imported now.
    pub fn now(bundle: &std::path::Path, digest: &str, key_fingerprint: &str) -> Self {
        ImportFacts {
            bundle_name: bundle
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bundle_digest: digest.to_owned(),
            bundle_key: key_fingerprint.to_owned(),
            imported_at: now_rfc3339(),
        }
    }
}
