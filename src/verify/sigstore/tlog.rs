//! A Rekor entry, checked offline: that it records this signature, and that
//! a trusted log vouched for it, by a signed entry timestamp (SET) and/or an
//! RFC 6962 inclusion proof up to a checkpoint signed by the log key.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::format::{TlogEntry, base64_field};
use super::root::Log;

/// The only entry kind a `sign-blob` signature is logged as.
const HASHEDREKORD: &str = "hashedrekord";
/// Its version in Rekor v1.
const HASHEDREKORD_VERSION: &str = "0.0.1";

/// What the entry's body must say: this bundle's digest, signature and
/// certificate.
pub(super) struct Expected<'a> {
    pub(super) sha256: &'a [u8; 32],
    pub(super) signature: &'a [u8],
    pub(super) certificate_der: &'a [u8],
}

/// What a verified entry establishes.
pub(super) struct Logged {
    /// When the log integrated it (Unix seconds): the time the certificate
    /// must have been valid at.
    pub(super) integrated_time: u64,
    /// Its index in the log, for reports.
    pub(super) log_index: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    api_version: String,
    kind: String,
    spec: Spec,
}

#[derive(Deserialize)]
struct Spec {
    data: Data,
    signature: BodySignature,
}

#[derive(Deserialize)]
struct Data {
    hash: Hash,
}

#[derive(Deserialize)]
struct Hash {
    algorithm: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BodySignature {
    content: String,
    public_key: BodyKey,
}

#[derive(Deserialize)]
struct BodyKey {
    content: String,
}

/// Checks `entry` against the trusted `logs` and what it must record.
pub(super) fn check(
    entry: &TlogEntry,
    logs: &[Log],
    expected: &Expected<'_>,
) -> Result<Logged, String> {
    let key_id = base64_field(&entry.log_id.key_id, "logId.keyId")?;
    let log = logs
        .iter()
        .find(|log| log.key_id == key_id)
        .ok_or_else(|| {
            format!(
                "its log {} is not a transparency log of the trusted root",
                hex::encode(&key_id)
            )
        })?;
    let integrated_time = u64::try_from(entry.integrated_time)
        .ok()
        .filter(|t| *t > 0)
        .ok_or("it has no integratedTime (a log time is required)")?;
    if !log.valid.contains(integrated_time) {
        return Err(format!(
            "its integratedTime {integrated_time} is outside the log key's validFor"
        ));
    }
    if let Some(kind) = &entry.kind_version
        && (kind.kind != HASHEDREKORD || kind.version != HASHEDREKORD_VERSION)
    {
        return Err(format!(
            "it is a {} {} entry, not {HASHEDREKORD} {HASHEDREKORD_VERSION}",
            kind.kind, kind.version
        ));
    }
    let body = base64_field(&entry.canonicalized_body, "canonicalizedBody")?;
    check_body(&body, expected)?;

    let promised = match &entry.inclusion_promise {
        None => false,
        Some(promise) => {
            check_set(entry, &key_id, log, &promise.signed_entry_timestamp)?;
            true
        }
    };
    let proven = match &entry.inclusion_proof {
        None => false,
        Some(proof) => {
            let root = base64_field(&proof.root_hash, "inclusionProof.rootHash")?;
            let path = proof
                .hashes
                .iter()
                .map(|h| base64_field(h, "inclusionProof.hashes"))
                .collect::<Result<Vec<_>, _>>()?;
            let leaf = leaf_hash(&body);
            if !inclusion_holds(proof.log_index, proof.tree_size, &leaf, &path, &root) {
                return Err(format!(
                    "its inclusion proof does not lead from the entry (index {} of {}) to root hash {}",
                    proof.log_index,
                    proof.tree_size,
                    hex::encode(&root)
                ));
            }
            match &proof.checkpoint {
                // A path without a signed root proves nothing on its own.
                None => false,
                Some(checkpoint) => {
                    check_checkpoint(&checkpoint.envelope, log, &key_id, proof.tree_size, &root)?;
                    true
                }
            }
        }
    };
    if !promised && !proven {
        return Err(
            "it has neither a signed entry timestamp nor an inclusion proof with a signed checkpoint"
                .into(),
        );
    }
    Ok(Logged {
        integrated_time,
        log_index: entry.log_index,
    })
}

fn check_body(body: &[u8], expected: &Expected<'_>) -> Result<(), String> {
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| format!("its body is not a {HASHEDREKORD} entry: {e}"))?;
    if body.kind != HASHEDREKORD || body.api_version != HASHEDREKORD_VERSION {
        return Err(format!(
            "its body is a {} {} entry, not {HASHEDREKORD} {HASHEDREKORD_VERSION}",
            body.kind, body.api_version
        ));
    }
    let hash = &body.spec.data.hash;
    if hash.algorithm != "sha256" || hash.value != hex::encode(expected.sha256) {
        return Err(format!(
            "it logs {} {}, not this bundle's sha256 {}",
            hash.algorithm,
            hash.value,
            hex::encode(expected.sha256)
        ));
    }
    let signature = base64_field(&body.spec.signature.content, "body signature.content")?;
    if signature != expected.signature {
        return Err("it logs another signature than the bundle's".into());
    }
    let pem = base64_field(
        &body.spec.signature.public_key.content,
        "body signature.publicKey.content",
    )?;
    let certificate = spki::der::pem::decode_vec(&pem)
        .map(|(_, der)| der)
        .map_err(|_| "its body's publicKey.content is not a PEM certificate".to_owned())?;
    if certificate != expected.certificate_der {
        return Err("it logs another certificate than the bundle's".into());
    }
    Ok(())
}

/// The SET signs `{"body":…,"integratedTime":…,"logID":…,"logIndex":…}`,
/// canonical JSON (keys sorted, no spaces), as Rekor returned it.
fn check_set(entry: &TlogEntry, key_id: &[u8], log: &Log, set: &str) -> Result<(), String> {
    let signature = base64_field(set, "signedEntryTimestamp")?;
    let body = serde_json::to_string(entry.canonicalized_body.trim())
        .map_err(|e| format!("canonicalizedBody does not encode: {e}"))?;
    let payload = format!(
        r#"{{"body":{body},"integratedTime":{},"logID":"{}","logIndex":{}}}"#,
        entry.integrated_time,
        hex::encode(key_id),
        entry.log_index
    );
    if log
        .key
        .verifies(&Sha256::digest(payload.as_bytes()), &signature)
    {
        Ok(())
    } else {
        Err("its signed entry timestamp does not verify with the log's key".into())
    }
}

fn leaf_hash(body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(body);
    hasher.finalize().into()
}

fn node_hash(left: &[u8], right: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// RFC 9162 section 2.1.3.2: whether `path` leads from leaf `index`'s hash
/// to `root` in a tree of `size` leaves.
fn inclusion_holds(index: i64, size: i64, leaf: &[u8; 32], path: &[Vec<u8>], root: &[u8]) -> bool {
    let (Ok(index), Ok(size)) = (u64::try_from(index), u64::try_from(size)) else {
        return false;
    };
    if index >= size || path.iter().any(|h| h.len() != 32) {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut hash = *leaf;
    for sibling in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            hash = node_hash(sibling, &hash);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && hash.as_slice() == root
}

/// A checkpoint is a signed note: `origin\nsize\nbase64(root)\n[…]\n\n`
/// followed by lines `— name base64(keyhint[4] || signature)`. Rekor's key
/// hint is the first 4 bytes of its log id.
fn check_checkpoint(
    note: &str,
    log: &Log,
    key_id: &[u8],
    tree_size: i64,
    root: &[u8],
) -> Result<(), String> {
    let split = note
        .find("\n\n")
        .ok_or("its checkpoint is not a signed note (no blank line)")?;
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    let hint = key_id
        .get(..4)
        .ok_or("logId.keyId is shorter than 4 bytes")?;
    let signed = signatures
        .lines()
        .filter_map(|line| line.strip_prefix("\u{2014} "))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(_, b64)| base64_field(b64, "checkpoint signature").ok())
        .filter(|sig| sig.len() > 4 && &sig[..4] == hint)
        .any(|sig| {
            log.key
                .verifies(&Sha256::digest(text.as_bytes()), &sig[4..])
        });
    if !signed {
        return Err("its checkpoint is not signed by the log's key".into());
    }
    let mut lines = text.lines();
    let _origin = lines.next();
    let size = lines.next().and_then(|l| l.parse::<i64>().ok());
    let hash = lines
        .next()
        .and_then(|l| base64_field(l, "checkpoint root hash").ok());
    if size != Some(tree_size) || hash.as_deref() != Some(root) {
        return Err(format!(
            "its checkpoint names another tree than the inclusion proof (size {tree_size}, root {})",
            hex::encode(root)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's Merkle tree hash of `leaves`, and the audit path of `m`.
    fn tree(leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves {
            [one] => *one,
            _ => {
                let k = leaves.len().next_power_of_two() / 2;
                node_hash(&tree(&leaves[..k]), &tree(&leaves[k..]))
            }
        }
    }

    fn path(m: usize, leaves: &[[u8; 32]]) -> Vec<Vec<u8>> {
        if leaves.len() == 1 {
            return Vec::new();
        }
        let k = leaves.len().next_power_of_two() / 2;
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(tree(&leaves[k..]).to_vec());
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(tree(&leaves[..k]).to_vec());
            p
        }
    }

    #[test]
    fn every_leaf_of_trees_up_to_nine_is_proven_and_a_wrong_path_is_not() {
        for size in 1..=9usize {
            let leaves: Vec<[u8; 32]> = (0..size).map(|i| leaf_hash(&[i as u8])).collect();
            let root = tree(&leaves);
            for m in 0..size {
                let p = path(m, &leaves);
                assert!(inclusion_holds(
                    m as i64,
                    size as i64,
                    &leaves[m],
                    &p,
                    &root
                ));
                let other = (m + 1) % size;
                if other != m {
                    assert!(!inclusion_holds(
                        other as i64,
                        size as i64,
                        &leaves[m],
                        &p,
                        &root
                    ));
                }
                if let Some(first) = p.first() {
                    let mut broken = p.clone();
                    broken[0] = leaf_hash(first).to_vec();
                    assert!(!inclusion_holds(
                        m as i64,
                        size as i64,
                        &leaves[m],
                        &broken,
                        &root
                    ));
                }
            }
        }
    }
}
