//! The referrers tag schema of OCI distribution 1.1, for registries without
//! the referrers API (docker-registry 2.8, and registries behind proxies that
//! drop it): after a repository received manifests with a `subject`, the image
//! index tagged `<alg>-<subject hex>` in that repository lists them, as oras
//! and regclient maintain it. Clients that find no referrers API read that tag.
//!
//! An existing index under the tag is merged, never replaced: descriptors it
//! already lists are kept as they are, and only the missing ones are added, so
//! referrers pushed by other tools (or by earlier bundles) stay listed.
//!
//! In an `oci:DIR` target nothing is tagged: the image layout has no tags of
//! this kind, and its `index.json` already lists every referrer, which is
//! where layout readers (oras' OCI store among them) look for them.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{Destination, Error, Result};
use crate::digest::Digest;
use crate::plan::Plan;
use crate::read::document::OCI_INDEX;
use crate::read::names::subject_of_tag;

/// The referrers tag of a subject: `sha256-<hex>`.
pub fn referrers_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm().as_str(), subject.hex())
}

/// Whether `tag` belongs to a subject by the tag scheme (see
/// [`subject_of_tag`]). Such tags are set only after their subject.
pub fn is_subject_tag(tag: &str) -> bool {
    subject_of_tag(tag).is_some()
}

/// One referrer to list: its repository, its subject and its descriptor.
struct Listed {
    repository: String,
    subject: Digest,
    descriptor: Value,
}

/// The descriptor a referrers index lists for a manifest: media type,
/// digest, size, artifact type (the manifest's `artifactType`, else its
/// config's media type) and the manifest's annotations.
pub(super) fn descriptor(media_type: &str, digest: &Digest, bytes: &[u8]) -> Value {
    let document: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let mut descriptor = Map::new();
    descriptor.insert("mediaType".into(), json!(media_type));
    descriptor.insert("digest".into(), json!(digest.to_string()));
    descriptor.insert("size".into(), json!(bytes.len()));
    let artifact_type = document
        .get("artifactType")
        .or_else(|| document.get("config").and_then(|c| c.get("mediaType")))
        .and_then(Value::as_str);
    if let Some(artifact_type) = artifact_type {
        descriptor.insert("artifactType".into(), json!(artifact_type));
    }
    if let Some(annotations) = document.get("annotations").filter(|a| a.is_object()) {
        descriptor.insert("annotations".into(), annotations.clone());
    }
    Value::Object(descriptor)
}

/// `existing` (the index under the referrers tag, if any) with every
/// descriptor of `wanted` it does not list yet appended; `None` when it
/// already lists them all.
pub(super) fn merged(existing: Option<&[u8]>, wanted: &[Value]) -> Option<Bytes> {
    let mut index = existing
        .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok())
        .filter(|v| v.get("manifests").is_some_and(Value::is_array))
        .unwrap_or_else(|| json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}));
    let manifests = index.get_mut("manifests")?.as_array_mut()?;
    let mut listed: HashSet<String> = manifests
        .iter()
        .filter_map(|m| m.get("digest").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let before = manifests.len();
    for descriptor in wanted {
        let Some(digest) = descriptor.get("digest").and_then(Value::as_str) else {
            continue;
        };
        if listed.insert(digest.to_owned()) {
            manifests.push(descriptor.clone());
        }
    }
    if manifests.len() == before && existing.is_some() {
        return None;
    }
    serde_json::to_vec(&index).ok().map(Bytes::from)
}

/// Brings the referrers index of every subject that received referrers in
/// this plan up to date. Returns how many indexes were written.
pub(super) async fn update_indexes(plan: &Plan, destination: &Destination) -> Result<u64> {
    let Destination::Registry { client, .. } = destination else {
        return Ok(0);
    };
    let mut by_subject: BTreeMap<(String, Digest), Vec<Value>> = BTreeMap::new();
    for listed in listed(plan)? {
        by_subject
            .entry((listed.repository, listed.subject))
            .or_default()
            .push(listed.descriptor);
    }
    let mut written = 0;
    for ((repository, subject), wanted) in by_subject {
        let tag = referrers_tag(&subject);
        let existing = client.manifest(&repository, &tag).await?;
        let Some(index) = merged(existing.as_ref().map(|m| &m.bytes[..]), &wanted) else {
            continue;
        };
        client
            .put_manifest(&repository, &tag, OCI_INDEX, index)
            .await?;
        tracing::debug!(%repository, %tag, referrers = wanted.len(), "referrers index updated");
        written += 1;
    }
    Ok(written)
}

fn listed(plan: &Plan) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for image in plan.images() {
        let Some(subject) = &image.subject else {
            continue;
        };
        let bytes = plan
            .document(&image.digest)
            .ok_or_else(|| Error::Protocol {
                url: image.digest.to_string(),
                reason: "referrer manifest bytes missing from the bundle index".into(),
            })?;
        out.push(Listed {
            repository: image.placement.repository.clone(),
            subject: subject.clone(),
            descriptor: descriptor(&image.media_type, &image.digest, bytes),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn subject_tags_are_the_referrers_tag_and_cosign_suffixes() {
        assert!(is_subject_tag(&format!("sha256-{HEX}")));
        assert!(is_subject_tag(&format!("sha256-{HEX}.sig")));
        assert!(is_subject_tag(&format!("sha256-{HEX}.att")));
        assert!(!is_subject_tag("sha256-abc.sig"));
        assert!(!is_subject_tag("1.25"));
        let digest: Digest = format!("sha256:{HEX}").parse().expect("digest");
        assert_eq!(referrers_tag(&digest), format!("sha256-{HEX}"));
    }

    #[test]
    fn a_descriptor_carries_the_artifact_type_and_annotations() {
        let digest: Digest = format!("sha256:{HEX}").parse().expect("digest");
        let manifest = br#"{"artifactType":"application/spdx+json","config":{"mediaType":"x"},"annotations":{"a":"b"}}"#;
        let d = descriptor(
            "application/vnd.oci.image.manifest.v1+json",
            &digest,
            manifest,
        );
        assert_eq!(d["artifactType"], "application/spdx+json");
        assert_eq!(d["annotations"]["a"], "b");
        assert_eq!(d["size"], manifest.len());
        let old = br#"{"config":{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json"}}"#;
        let d = descriptor("application/vnd.oci.image.manifest.v1+json", &digest, old);
        assert_eq!(
            d["artifactType"],
            "application/vnd.dev.cosign.simplesigning.v1+json"
        );
    }

    #[test]
    fn merging_keeps_what_is_listed_and_adds_only_the_missing() {
        let a = json!({"mediaType": "m", "digest": "sha256:a", "size": 1});
        let b = json!({"mediaType": "m", "digest": "sha256:b", "size": 2});
        let first = merged(None, std::slice::from_ref(&a)).expect("a new index");
        let again = merged(Some(&first), std::slice::from_ref(&a));
        assert!(again.is_none(), "nothing to add");
        let both = merged(Some(&first), &[b, a]).expect("b added");
        let index: Value = serde_json::from_slice(&both).expect("json");
        let digests: Vec<&str> = index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .filter_map(|m| m["digest"].as_str())
            .collect();
        assert_eq!(digests, ["sha256:a", "sha256:b"]);
        assert_eq!(index["mediaType"], OCI_INDEX);
    }
}
