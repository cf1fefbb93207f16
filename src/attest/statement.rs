//! The in-toto statement of one import and its DSSE envelope.

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Value, json};

use super::Attestor;
use crate::digest::Digest;
use crate::trust::{IN_TOTO_PAYLOAD_TYPE, SignatureVerdict, pae};

/// The predicate type of an airlock import attestation.
pub const PREDICATE_TYPE: &str = "https://airlock.dev/attestations/import/v1";
/// in-toto Statement v1.
const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// Who imported: the pod (`POD_NAMESPACE`/`POD_NAME`, from the downward
/// API the chart sets) or the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Importer {
    /// `pod` or `host`.
    pub kind: &'static str,
    /// `namespace/name` of the pod, or the host name.
    pub identity: String,
}

impl Importer {
    /// The pod airlock runs in, else this host's name.
    pub fn detect() -> Self {
        if let Ok(pod) = std::env::var(crate::cluster::POD_NAME_VAR)
            && !pod.is_empty()
        {
            let namespace = std::env::var(crate::cluster::POD_NAMESPACE_VAR).unwrap_or_default();
            return Importer {
                kind: "pod",
                identity: if namespace.is_empty() {
                    pod
                } else {
                    format!("{namespace}/{pod}")
                },
            };
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".to_owned());
        Importer {
            kind: "host",
            identity: host,
        }
    }
}

/// What one import knows about the bundle, shared by its images' statements.
#[derive(Debug, Clone)]
pub struct ImportFacts {
    /// The bundle's file name.
    pub bundle_name: String,
    /// The bundle's digest (`sha256:` of the `.zst`).
    pub bundle_digest: String,
    /// The fingerprint of the key that verified the bundle.
    pub bundle_key: String,
    /// When the import ran (RFC 3339).
    pub imported_at: String,
}

/// The statement for the image `digest` landed as `name` (its repository
/// in the target, with the registry host), from `source_ref`.
pub fn statement(
    attestor: &Attestor,
    facts: &ImportFacts,
    name: &str,
    digest: &Digest,
    source_ref: &str,
    verdict: Option<&SignatureVerdict>,
) -> Value {
    let image_signature = match verdict {
        Some(v) => json!({
            "status": v.status.as_str(),
            "policy": v.policy.as_str(),
            "signedBy": v.signed_by,
            "format": v.format,
        }),
        None => json!({"status": "not-checked", "policy": "ignore"}),
    };
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {digest.algorithm().as_str(): digest.hex()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "bundle": {"name": facts.bundle_name, "digest": facts.bundle_digest},
            "bundleVerifiedBy": facts.bundle_key,
            "imageSignature": image_signature,
            "source": {"reference": source_ref},
            "importedAt": facts.imported_at,
            "importer": attestor.importer(),
            "airlock": {"version": env!("CARGO_PKG_VERSION")},
        },
    })
}

/// The DSSE envelope of `statement`, signed over its pre-authentication
/// encoding, as `cosign attest` writes it (`keyid` empty).
pub fn envelope(attestor: &Attestor, statement: &Value) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    // Serialising a `Value` cannot fail.
    let payload = serde_json::to_vec(statement).unwrap_or_default();
    let signature = attestor.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload));
    let envelope = json!({
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": b64.encode(&payload),
        "signatures": [{"keyid": "", "sig": b64.encode(signature)}],
    });
    serde_json::to_vec(&envelope).unwrap_or_default()
}
