//! Image signatures carried as OCI 1.1 referrers holding a Sigstore bundle
//! (artifact type `application/vnd.dev.sigstore.bundle.v0.3+json`, as
//! cosign 3 writes them): either a DSSE envelope whose in-toto statement
//! (predicate type `https://sigstore.dev/cosign/sign/v1`) names the image's
//! digest as its subject, or a message signature over the image manifest
//! itself. Only key-based bundles verify here: a bundle's certificate
//! (keyless) is not one of the rule's keys. The bundle format itself is
//! parsed by [`crate::verify::sigstore::format`], shared with the bundle
//! file's `X.sigstore.json`.

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;

use super::verdict::Outcome;
use crate::digest::Digest;
pub(super) use crate::verify::sigstore::format::BUNDLE_MEDIA_TYPE_PREFIX;
pub use crate::verify::sigstore::format::Envelope;
use crate::verify::sigstore::format::{Bundle, MessageSignature};
use crate::verify::{TrustedKeys, verify_message, verify_sha256};
/// The predicate type of a cosign 3 image signature statement.
const SIGN_PREDICATE_TYPE: &str = "https://sigstore.dev/cosign/sign/v1";
/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

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
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    predicate_type: String,
    subject: Vec<Subject>,
}

#[derive(Deserialize)]
struct Subject {
    digest: std::collections::BTreeMap<String, String>,
}

/// DSSE's pre-authentication encoding, what the envelope's signatures sign:
/// `DSSEv1 SP len(type) SP type SP len(body) SP body`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Checks every Sigstore bundle layer of the referrer `manifest` for the
/// image `digest`.
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
        .filter(|layer| layer.media_type.starts_with(BUNDLE_MEDIA_TYPE_PREFIX))
        .map(|layer| match documents(&layer.digest) {
            None => Outcome::failed(
                &layer.digest,
                "Sigstore bundle is not among the bundle's documents".into(),
            ),
            Some(bytes) => check_bundle(&layer.digest, &bytes, digest, keys),
        })
        .collect()
}

fn check_bundle(at: &Digest, bytes: &[u8], digest: &Digest, keys: &TrustedKeys) -> Outcome {
    // The layer's media type already said it is a Sigstore bundle; the
    // document's own mediaType is not required here.
    let bundle: Bundle = match serde_json::from_slice(bytes) {
        Ok(bundle) => bundle,
        Err(e) => return Outcome::failed(at, format!("not a Sigstore bundle: {e}")),
    };
    match (bundle.dsse_envelope, bundle.message_signature) {
        (Some(envelope), _) => check_envelope(at, &envelope, digest, keys),
        (None, Some(message)) => check_message(at, &message, digest, keys),
        (None, None) => Outcome::failed(at, "Sigstore bundle holds no signature".into()),
    }
}

fn check_envelope(
    at: &Digest,
    envelope: &Envelope,
    digest: &Digest,
    keys: &TrustedKeys,
) -> Outcome {
    let (payload, key) = match open_envelope(envelope, keys) {
        Ok(opened) => opened,
        Err(reason) => return Outcome::failed(at, reason),
    };
    let statement: Statement = match serde_json::from_slice(&payload) {
        Ok(statement) => statement,
        Err(e) => return Outcome::failed(at, format!("payload is not an in-toto statement: {e}")),
    };
    if statement.predicate_type != SIGN_PREDICATE_TYPE {
        return Outcome::failed(
            at,
            format!(
                "statement is a {} attestation, not an image signature ({SIGN_PREDICATE_TYPE})",
                statement.predicate_type
            ),
        );
    }
    let names_image = statement.subject.iter().any(|s| {
        s.digest
            .get(digest.algorithm().as_str())
            .map(String::as_str)
            == Some(digest.hex())
    });
    if names_image {
        Outcome::Verified {
            key: Box::new(key),
            at: at.clone(),
        }
    } else {
        Outcome::failed(at, format!("statement's subject is not image {digest}"))
    }
}

/// Verifies a DSSE envelope with `keys`: the decoded payload and the key
/// whose signature verified over its pre-authentication encoding.
pub fn open_envelope(
    envelope: &Envelope,
    keys: &TrustedKeys,
) -> Result<(Vec<u8>, crate::verify::TrustedKey), String> {
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(format!(
            "envelope payload type is {:?}, not {IN_TOTO_PAYLOAD_TYPE}",
            envelope.payload_type
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64
        .decode(envelope.payload.trim())
        .map_err(|_| "envelope payload is not base64".to_owned())?;
    let message = pae(&envelope.payload_type, &payload);
    let key = envelope
        .signatures
        .iter()
        .filter_map(|s| b64.decode(s.sig.trim()).ok())
        .find_map(|sig| verify_message(keys, &message, &sig))
        .ok_or_else(|| {
            format!(
                "envelope signature does not verify with the {} key(s) given (wrong key or altered payload)",
                keys.len()
            )
        })?;
    Ok((payload, key))
}

fn check_message(
    at: &Digest,
    message: &MessageSignature,
    digest: &Digest,
    keys: &TrustedKeys,
) -> Outcome {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Ok(signed), Ok(signature)) = (
        b64.decode(message.message_digest.digest.trim()),
        b64.decode(message.signature.trim()),
    ) else {
        return Outcome::failed(at, "message signature is not base64".into());
    };
    if message.message_digest.algorithm != "SHA2_256" || hex::encode(&signed) != digest.hex() {
        return Outcome::failed(
            at,
            format!(
                "message signature signs {} {}, not image {digest}",
                message.message_digest.algorithm,
                hex::encode(&signed)
            ),
        );
    }
    let Ok(sha256) = <[u8; 32]>::try_from(signed.as_slice()) else {
        return Outcome::failed(at, "message digest is not 32 bytes".into());
    };
    match verify_sha256(keys, &sha256, &signature) {
        Some(key) => Outcome::Verified {
            key: Box::new(key),
            at: at.clone(),
        },
        None => Outcome::failed(
            at,
            format!(
                "message signature does not verify with the rule's {} key(s)",
                keys.len()
            ),
        ),
    }
}
