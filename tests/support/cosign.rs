//! Image signatures and attestations made the way cosign makes them, with
//! the openssl CLI and no airlock code: simple-signing payloads signed with
//! ECDSA P-256 over their bytes, DSSE envelopes signed over their
//! pre-authentication encoding, and Sigstore bundles holding either.

use std::fs;

use base64::Engine as _;
use serde_json::{Value, json};

use super::bundle::Artifact;
use super::keys::TestKey;

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// cosign's simple-signing payload for image `digest` in `repository`, in
/// the field order cosign writes.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    format!(
        "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"{repository}\"}},\"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
    )
    .into_bytes()
}

/// `openssl dgst -sha256 -sign` over `message`: DER ECDSA for a P-256 key.
pub fn sign(key: &TestKey, message: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("message");
    let sig = dir.path().join("message.sig");
    fs::write(&file, message).expect("write the message to sign");
    key.sign(&file, &sig);
    fs::read(&sig).expect("read the signature")
}

/// The `sha256-<hex>.sig` manifest cosign pushes beside `image_ref`'s
/// repository for the image `digest`: one layer, `payload`, with
/// `signature_b64` in its signature annotation.
pub fn signature_manifest(
    repository: &str,
    digest: &str,
    payload: &[u8],
    signature_b64: &str,
) -> Artifact {
    let hex = digest.trim_start_matches("sha256:");
    Artifact::new("application/vnd.dev.cosign.artifact.sig.v1+json")
        .annotated_blob(
            SIMPLE_SIGNING,
            payload,
            &[(SIGNATURE_ANNOTATION, signature_b64)],
        )
        .named(&format!("{repository}:sha256-{hex}.sig"))
}

/// A valid cosign signature of `digest` by `key`, as a `.sig` manifest.
pub fn signed_by(key: &TestKey, repository: &str, digest: &str) -> Artifact {
    let payload = payload(repository, digest);
    let signature = b64(&sign(key, &payload));
    signature_manifest(repository, digest, &payload, &signature)
}

/// DSSE's pre-authentication encoding.
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

/// A DSSE envelope of `statement` signed by `key`.
pub fn envelope(key: &TestKey, statement: &Value) -> Value {
    let payload = serde_json::to_vec(statement).expect("statement");
    let signature = sign(key, &pae(IN_TOTO, &payload));
    json!({
        "payloadType": IN_TOTO,
        "payload": b64(&payload),
        "signatures": [{"keyid": "", "sig": b64(&signature)}],
    })
}

/// A key-based Sigstore bundle (v0.3) holding `envelope`, as cosign 3
/// stores an image signature.
pub fn sigstore_bundle(envelope: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "mediaType": SIGSTORE_BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": "test"}, "tlogEntries": []},
        "dsseEnvelope": envelope,
    }))
    .expect("bundle")
}

/// cosign 3's image signature statement for `digest`.
pub fn sign_statement(repository: &str, digest: &str) -> Value {
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": repository, "digest": {"sha256": digest.trim_start_matches("sha256:")}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    })
}

/// An OCI 1.1 referrer of `subject_ref` holding a Sigstore bundle.
pub fn bundle_referrer(subject_ref: &str, bundle: &[u8]) -> Artifact {
    Artifact::new(SIGSTORE_BUNDLE)
        .blob(SIGSTORE_BUNDLE, bundle)
        .subject_of(subject_ref)
}
