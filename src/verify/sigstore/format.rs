//! The Sigstore bundle format (v0.1, v0.2, v0.3) as JSON, the one parser
//! for both a bundle file's `X.sigstore.json` and the Sigstore bundles that
//! sign images ([`crate::trust`]).
//!
//! Field names are the protobuf-JSON names of `sigstore_bundle.proto`;
//! 64-bit integers are accepted as strings (what protobuf JSON writes) or
//! numbers (what some clients write). Unknown fields are ignored, so a
//! newer client's additions do not stop verification of what airlock does
//! check.

use base64::Engine as _;
use serde::{Deserialize, Deserializer};

/// What the media type of every Sigstore bundle version starts with
/// (`…bundle+json;version=0.1`, `…;version=0.2`, `…bundle.v0.3+json`).
pub const BUNDLE_MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";

/// A Sigstore bundle.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    /// Which version of the format (see [`BUNDLE_MEDIA_TYPE_PREFIX`]).
    #[serde(default)]
    pub media_type: String,
    /// The key hint or certificate, and the transparency log entries.
    #[serde(default)]
    pub verification_material: VerificationMaterial,
    /// A DSSE envelope (attestations, cosign 3 image signatures).
    pub dsse_envelope: Option<Envelope>,
    /// A signature over a message known by its digest (`sign-blob`).
    pub message_signature: Option<MessageSignature>,
}

impl Bundle {
    /// Parses `bytes`, refusing JSON that is not a Sigstore bundle.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let bundle: Bundle =
            serde_json::from_slice(bytes).map_err(|e| format!("not a Sigstore bundle: {e}"))?;
        if !bundle.media_type.starts_with(BUNDLE_MEDIA_TYPE_PREFIX) {
            return Err(format!(
                "mediaType {:?} is not a Sigstore bundle's ({BUNDLE_MEDIA_TYPE_PREFIX}…)",
                bundle.media_type
            ));
        }
        Ok(bundle)
    }
}

/// What verifies the signature: a key named by hint, or a certificate with
/// transparency log entries.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMaterial {
    /// A key-based bundle's key identifier (free text, e.g. a fingerprint).
    pub public_key: Option<PublicKeyHint>,
    /// v0.1/v0.2: the signing certificate first, maybe with its chain.
    pub x509_certificate_chain: Option<CertificateChain>,
    /// v0.3: the signing certificate alone.
    pub certificate: Option<RawBytes>,
    /// Rekor entries for the signature.
    #[serde(default)]
    pub tlog_entries: Vec<TlogEntry>,
}

impl VerificationMaterial {
    /// The signing (leaf) certificate's DER, if this bundle carries one.
    pub fn leaf_certificate(&self) -> Option<Result<Vec<u8>, String>> {
        let raw = match (&self.certificate, &self.x509_certificate_chain) {
            (Some(certificate), _) => certificate,
            (None, Some(chain)) => chain.certificates.first()?,
            (None, None) => return None,
        };
        Some(raw.decode("certificate rawBytes"))
    }
}

/// `publicKey` of a key-based bundle.
#[derive(Debug, Deserialize)]
pub struct PublicKeyHint {
    /// Whatever the signer put there; airlock tries every trusted key.
    #[serde(default)]
    pub hint: String,
}

/// `x509CertificateChain`.
#[derive(Debug, Deserialize)]
pub struct CertificateChain {
    /// Leaf first.
    #[serde(default)]
    pub certificates: Vec<RawBytes>,
}

/// `{"rawBytes": "<base64>"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawBytes {
    /// Base64 (standard alphabet) of DER.
    pub raw_bytes: String,
}

impl RawBytes {
    /// The decoded bytes; `what` names the field in the error.
    pub fn decode(&self, what: &str) -> Result<Vec<u8>, String> {
        base64_field(&self.raw_bytes, what)
    }
}

/// One Rekor transparency log entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlogEntry {
    /// The entry's index in the log (across shards).
    #[serde(default, deserialize_with = "int64")]
    pub log_index: i64,
    /// Which log: its key id.
    pub log_id: LogId,
    /// Kind and version of the body (`hashedrekord` `0.0.1`).
    pub kind_version: Option<KindVersion>,
    /// When the log integrated the entry, Unix seconds.
    #[serde(default, deserialize_with = "int64")]
    pub integrated_time: i64,
    /// The signed entry timestamp.
    pub inclusion_promise: Option<InclusionPromise>,
    /// The Merkle inclusion proof with its checkpoint.
    pub inclusion_proof: Option<InclusionProof>,
    /// The entry body as the log stored it, base64.
    #[serde(default)]
    pub canonicalized_body: String,
}

/// `logId`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogId {
    /// Base64 of the SHA-256 of the log key's DER SPKI.
    pub key_id: String,
}

/// `kindVersion`.
#[derive(Debug, Deserialize)]
pub struct KindVersion {
    /// e.g. `hashedrekord`.
    #[serde(default)]
    pub kind: String,
    /// e.g. `0.0.1`.
    #[serde(default)]
    pub version: String,
}

/// `inclusionPromise`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InclusionPromise {
    /// Base64 DER ECDSA signature by the log key.
    pub signed_entry_timestamp: String,
}

/// `inclusionProof`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InclusionProof {
    /// The leaf's index in the tree the proof is for.
    #[serde(default, deserialize_with = "int64")]
    pub log_index: i64,
    /// Base64 root hash of the tree of `tree_size` leaves.
    pub root_hash: String,
    /// Leaves in that tree.
    #[serde(default, deserialize_with = "int64")]
    pub tree_size: i64,
    /// The audit path, leaf to root, base64.
    #[serde(default)]
    pub hashes: Vec<String>,
    /// The signed note naming that root.
    pub checkpoint: Option<Checkpoint>,
}

/// `checkpoint`.
#[derive(Debug, Deserialize)]
pub struct Checkpoint {
    /// The signed note, as text.
    pub envelope: String,
}

/// A DSSE envelope (also what airlock's own attestations are).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// The statement, base64.
    pub payload: String,
    /// What the payload is (`application/vnd.in-toto+json`).
    pub payload_type: String,
    /// Signatures over the pre-authentication encoding.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of a DSSE envelope.
#[derive(Debug, Deserialize)]
pub struct EnvelopeSignature {
    /// The signature, base64.
    pub sig: String,
}

/// `messageSignature`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageSignature {
    /// The digest of the signed message.
    pub message_digest: MessageDigest,
    /// Base64 signature over that digest.
    pub signature: String,
}

impl MessageSignature {
    /// The signature's bytes.
    pub fn signature_bytes(&self) -> Result<Vec<u8>, String> {
        base64_field(&self.signature, "messageSignature.signature")
    }

    /// The SHA-256 the signature is over. A bundle signed over another
    /// digest (cosign hashes with SHA-384 for a P-384 key) names it in the
    /// error.
    pub fn sha256(&self) -> Result<[u8; 32], String> {
        let algorithm = &self.message_digest.algorithm;
        if algorithm != SHA2_256 {
            return Err(format!(
                "its messageDigest is {algorithm}, but airlock hashes a bundle file once, with SHA-256, and accepts only {SHA2_256} (a P-384 key makes cosign use SHA-384: sign with a P-256 key, or use a detached X.sig.bin made with openssl dgst -sha256)"
            ));
        }
        let digest = base64_field(&self.message_digest.digest, "messageDigest.digest")?;
        <[u8; 32]>::try_from(digest.as_slice())
            .map_err(|_| format!("messageDigest is {} bytes, not 32", digest.len()))
    }
}

/// The protobuf name of SHA-256 in `messageDigest.algorithm`.
pub const SHA2_256: &str = "SHA2_256";

/// `messageDigest`.
#[derive(Debug, Deserialize)]
pub struct MessageDigest {
    /// `SHA2_256`, `SHA2_384`, …
    pub algorithm: String,
    /// Base64 of the digest.
    pub digest: String,
}

/// Decodes a base64 field (standard alphabet, padding as written).
pub fn base64_field(text: &str, what: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| format!("{what} is not base64"))
}

/// A protobuf-JSON int64: a string of digits, or a plain number.
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Number(i64),
        Text(String),
    }
    match Int64::deserialize(deserializer)? {
        Int64::Number(n) => Ok(n),
        Int64::Text(text) => text.parse().map_err(serde::de::Error::custom),
    }
}
