//! cosign's simple-signing signatures: a manifest tagged
//! `sha256-<hex>.sig` whose layers are payloads
//! (`application/vnd.dev.cosign.simplesigning.v1+json`) naming the image's
//! digest, each with its signature (base64, ECDSA P-256 over the payload
//! bytes as cosign makes it) in the `dev.cosignproject.cosign/signature`
//! annotation.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;

use super::verdict::Outcome;
use super::{SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE};
use crate::digest::Digest;
use crate::verify::{TrustedKeys, verify_message};

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: Digest,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The part of the payload that binds it to an image.
#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: PayloadImage,
}

#[derive(Deserialize)]
struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Checks every simple-signing layer of the signature manifest `manifest`
/// (whose bytes are `document`) for the image `digest`.
pub(super) fn check(
    manifest: &Digest,
    document: &[u8],
    documents: &dyn Fn(&Digest) -> Option<Bytes>,
    digest: &Digest,
    keys: &TrustedKeys,
) -> Vec<Outcome> {
    let parsed: Manifest = match serde_json::from_slice(document) {
        Ok(parsed) => parsed,
        Err(e) => return vec![Outcome::failed(manifest, format!("not a manifest: {e}"))],
    };
    parsed
        .layers
        .iter()
        .filter(|layer| layer.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
        .map(|layer| check_layer(layer, documents, digest, keys))
        .collect()
}

fn check_layer(
    layer: &Layer,
    documents: &dyn Fn(&Digest) -> Option<Bytes>,
    digest: &Digest,
    keys: &TrustedKeys,
) -> Outcome {
    let at = &layer.digest;
    let Some(encoded) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
        return Outcome::failed(
            at,
            format!("payload has no {SIGNATURE_ANNOTATION} annotation"),
        );
    };
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return Outcome::failed(at, "signature annotation is not base64".into());
    };
    let Some(payload) = documents(at) else {
        return Outcome::failed(at, "payload is not among the bundle's documents".into());
    };
    let Some(key) = verify_message(keys, &payload, &signature) else {
        return Outcome::failed(
            at,
            format!(
                "signature does not verify with the rule's {} key(s) (wrong key or altered payload)",
                keys.len()
            ),
        );
    };
    match serde_json::from_slice::<Payload>(&payload) {
        Ok(p) if p.critical.image.docker_manifest_digest == digest.to_string() => {
            Outcome::Verified {
                key: Box::new(key),
                at: at.clone(),
            }
        }
        Ok(p) => Outcome::failed(
            at,
            format!(
                "payload signs image {}, not {digest}",
                p.critical.image.docker_manifest_digest
            ),
        ),
        Err(e) => Outcome::failed(at, format!("payload is not a simple-signing payload: {e}")),
    }
}
