//! `airlock attestation verify`: find an image's import attestations in
//! the registry and check them with the site's public key, the way an
//! admission controller would.

use serde::Serialize;
use serde_json::Value;

use super::statement::PREDICATE_TYPE;
use super::store::{ATTESTATION_MEDIA_TYPE, attestation_tag};
use super::{Error, Result};
use crate::digest::Digest;
use crate::push::registry::RegistryClient;
use crate::trust::{Envelope, open_envelope};
use crate::verify::TrustedKeys;

/// The largest attestation read back: a DSSE envelope of an import
/// statement is about 2 KiB.
const MAX_ENVELOPE_BYTES: u64 = 1 << 20;

/// One import attestation that verified.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedAttestation {
    /// The image's digest.
    pub digest: Digest,
    /// The envelope layer's digest.
    pub layer: Digest,
    /// The fingerprint of the key that verified it.
    pub key: String,
    /// The statement's predicate.
    pub predicate: Value,
}

/// Every import attestation of `repository:reference` (a tag or digest)
/// that verifies with `keys` and names the image's digest. Fails when there
/// is none.
pub async fn verify_image(
    client: &RegistryClient,
    image: &str,
    repository: &str,
    reference: &str,
    keys: &TrustedKeys,
) -> Result<Vec<VerifiedAttestation>> {
    let digest = match reference.parse::<Digest>() {
        Ok(digest) => digest,
        Err(_) => client
            .manifest_digest(repository, reference)
            .await?
            .ok_or_else(|| Error::Image {
                image: image.to_owned(),
                reason: "not found in the registry".into(),
            })?,
    };
    let tag = attestation_tag(&digest);
    let Some(manifest) = client.manifest(repository, &tag).await? else {
        return Err(Error::NoAttestations {
            image: image.to_owned(),
            digest: digest.to_string(),
            tag,
            repository: repository.to_owned(),
        });
    };
    let layers = serde_json::from_slice::<Value>(&manifest.bytes)
        .ok()
        .and_then(|m| m.get("layers").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    let mut verified = Vec::new();
    let mut reasons = Vec::new();
    for layer in layers
        .iter()
        .filter(|l| l["mediaType"] == ATTESTATION_MEDIA_TYPE)
    {
        match check_layer(client, repository, layer, &digest, keys).await? {
            Ok(attestation) => verified.push(attestation),
            Err(reason) => reasons.push(reason),
        }
    }
    if verified.is_empty() {
        if reasons.is_empty() {
            reasons.push("no DSSE attestation layers".into());
        }
        return Err(Error::NotAttested {
            image: image.to_owned(),
            digest: digest.to_string(),
            reasons: reasons.join("; "),
        });
    }
    Ok(verified)
}

/// One layer: `Ok(Err(reason))` when it is not a valid import attestation.
async fn check_layer(
    client: &RegistryClient,
    repository: &str,
    layer: &Value,
    digest: &Digest,
    keys: &TrustedKeys,
) -> Result<std::result::Result<VerifiedAttestation, String>> {
    let Some(layer_digest) = layer["digest"]
        .as_str()
        .and_then(|d| d.parse::<Digest>().ok())
    else {
        return Ok(Err("a layer without a valid digest".into()));
    };
    let size = layer["size"].as_u64().unwrap_or(MAX_ENVELOPE_BYTES);
    if size > MAX_ENVELOPE_BYTES {
        return Ok(Err(format!("{}: larger than 1 MiB", layer_digest.short())));
    }
    let mut bytes = Vec::new();
    client
        .get_blob(repository, &layer_digest, size, &mut bytes)
        .await?;
    if Digest::sha256_of(&bytes) != layer_digest {
        return Ok(Err(format!(
            "{}: content does not match its digest",
            layer_digest.short()
        )));
    }
    let at = layer_digest.short().to_owned();
    let envelope: Envelope = match serde_json::from_slice(&bytes) {
        Ok(envelope) => envelope,
        Err(e) => return Ok(Err(format!("{at}: not a DSSE envelope: {e}"))),
    };
    let (payload, key) = match open_envelope(&envelope, keys) {
        Ok(opened) => opened,
        Err(reason) => return Ok(Err(format!("{at}: {reason}"))),
    };
    let statement: Value = match serde_json::from_slice(&payload) {
        Ok(statement) => statement,
        Err(e) => return Ok(Err(format!("{at}: payload is not JSON: {e}"))),
    };
    if statement["predicateType"] != PREDICATE_TYPE {
        return Ok(Err(format!(
            "{at}: predicate type {}, not {PREDICATE_TYPE}",
            statement["predicateType"]
        )));
    }
    let names_image = statement["subject"].as_array().is_some_and(|subjects| {
        subjects
            .iter()
            .any(|s| s["digest"][digest.algorithm().as_str()] == digest.hex())
    });
    if !names_image {
        return Ok(Err(format!("{at}: its subject is not {digest}")));
    }
    Ok(Ok(VerifiedAttestation {
        digest: digest.clone(),
        layer: layer_digest,
        key: key.fingerprint().to_owned(),
        predicate: statement["predicate"].clone(),
    }))
}
