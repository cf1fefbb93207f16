//! The JSON documents of an OCI image layout: `index.json`, image indexes and
//! manifests, parsed leniently enough for every producer and strictly enough
//! that nothing reachable can be missed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The short-lived OCI artifact manifest (image-spec 1.1 release candidates).
pub const OCI_ARTIFACT_MANIFEST: &str = "application/vnd.oci.artifact.manifest.v1+json";

/// A validated content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type the descriptor declares (may be empty in sloppy producers).
    pub media_type: String,
    /// The content's digest.
    pub digest: Digest,
    /// The content's size in bytes.
    pub size: u64,
    /// `os/architecture[/variant]` when the descriptor carries a platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The artifact type, for artifacts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations, verbatim.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Whether the descriptor lists external URLs (foreign, non-distributable layers).
    #[serde(skip)]
    pub has_urls: bool,
}

impl Descriptor {
    /// Whether the descriptor points at a manifest or index rather than a plain blob.
    pub fn is_manifest_type(&self) -> bool {
        is_manifest_media_type(&self.media_type)
    }
}

/// Whether `media_type` is one of the manifest or index types.
pub fn is_manifest_media_type(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST | OCI_ARTIFACT_MANIFEST
    )
}

/// A parsed manifest-like document.
#[derive(Debug, Clone)]
pub enum Document {
    /// An image index or manifest list (also `index.json` itself).
    Index {
        /// The manifests it lists.
        manifests: Vec<Descriptor>,
        /// The document's own media type, if it declares one.
        media_type: Option<String>,
        /// The index's subject (an index can be a referrer too).
        subject: Option<Descriptor>,
        /// The index's artifact type.
        artifact_type: Option<String>,
    },
    /// An image or artifact manifest.
    Manifest {
        /// The config blob (absent in the draft artifact manifest).
        config: Option<Descriptor>,
        /// Layers (or the draft artifact manifest's `blobs`).
        layers: Vec<Descriptor>,
        /// The document's own media type, if it declares one.
        media_type: Option<String>,
        /// The manifest this one refers to (signatures, SBOMs, attestations).
        subject: Option<Descriptor>,
        /// The artifact type, when this is an artifact.
        artifact_type: Option<String>,
    },
}

impl Document {
    /// The media type to send to a registry: the declared one, or the one the
    /// document's shape implies.
    pub fn media_type(&self) -> &str {
        match self {
            Document::Index { media_type, .. } => media_type.as_deref().unwrap_or(OCI_INDEX),
            Document::Manifest { media_type, .. } => media_type.as_deref().unwrap_or(OCI_MANIFEST),
        }
    }

    /// The subject this document refers to, if any.
    pub fn subject(&self) -> Option<&Descriptor> {
        match self {
            Document::Index { subject, .. } | Document::Manifest { subject, .. } => {
                subject.as_ref()
            }
        }
    }

    /// The artifact type, from the document or (for images) none.
    pub fn artifact_type(&self) -> Option<&str> {
        match self {
            Document::Index { artifact_type, .. } | Document::Manifest { artifact_type, .. } => {
                artifact_type.as_deref()
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    schema_version: Option<i64>,
    media_type: Option<String>,
    manifests: Option<Vec<RawDescriptor>>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    blobs: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    artifact_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: i64,
    platform: Option<RawPlatform>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
    urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

/// Formats a platform the way `--platform` flags spell it.
pub fn platform_string(os: &str, architecture: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) if !v.is_empty() => format!("{os}/{architecture}/{v}"),
        _ => format!("{os}/{architecture}"),
    }
}

impl RawDescriptor {
    fn validate(self, position: &str) -> Result<Descriptor, String> {
        let digest = self
            .digest
            .parse::<Digest>()
            .map_err(|e| format!("{position}: {e}"))?;
        let size = u64::try_from(self.size)
            .map_err(|_| format!("{position}: negative size {}", self.size))?;
        Ok(Descriptor {
            media_type: self.media_type,
            digest,
            size,
            platform: self
                .platform
                .map(|p| platform_string(&p.os, &p.architecture, p.variant.as_deref())),
            artifact_type: self.artifact_type,
            annotations: self.annotations.unwrap_or_default(),
            has_urls: self.urls.is_some_and(|u| !u.is_empty()),
        })
    }
}

fn validate_all(raw: Vec<RawDescriptor>, field: &str) -> Result<Vec<Descriptor>, String> {
    raw.into_iter()
        .enumerate()
        .map(|(i, d)| d.validate(&format!("{field}[{i}]")))
        .collect()
}

/// Why a document could not be used.
#[derive(Debug)]
pub enum DocumentError {
    /// Not JSON, or JSON of the wrong shape.
    Json(serde_json::Error),
    /// JSON, but not a manifest or index airlock can use.
    Invalid(String),
}

/// Parses a manifest, an index or `index.json`.
pub fn parse(bytes: &[u8]) -> Result<Document, DocumentError> {
    let raw: RawDocument = serde_json::from_slice(bytes).map_err(DocumentError::Json)?;
    if raw.schema_version == Some(1) {
        return Err(DocumentError::Invalid(
            "Docker schema 1 manifests are not supported (convert with skopeo first)".into(),
        ));
    }
    let subject = raw
        .subject
        .map(|s| s.validate("subject"))
        .transpose()
        .map_err(DocumentError::Invalid)?;
    if let Some(manifests) = raw.manifests {
        return Ok(Document::Index {
            manifests: validate_all(manifests, "manifests").map_err(DocumentError::Invalid)?,
            media_type: raw.media_type,
            subject,
            artifact_type: raw.artifact_type,
        });
    }
    if raw.config.is_some() || raw.layers.is_some() || raw.blobs.is_some() {
        let config = raw
            .config
            .map(|c| c.validate("config"))
            .transpose()
            .map_err(DocumentError::Invalid)?;
        let mut layers = validate_all(raw.layers.unwrap_or_default(), "layers")
            .map_err(DocumentError::Invalid)?;
        layers.extend(
            validate_all(raw.blobs.unwrap_or_default(), "blobs").map_err(DocumentError::Invalid)?,
        );
        return Ok(Document::Manifest {
            config,
            layers,
            media_type: raw.media_type,
            subject,
            artifact_type: raw.artifact_type,
        });
    }
    Err(DocumentError::Invalid(
        "neither an index (no \"manifests\") nor a manifest (no \"config\"/\"layers\")".into(),
    ))
}

/// The annotation giving when a bundle was made, on its `index.json`.
pub const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";

/// The creation time an `index.json` (or any index) gives in its
/// annotations, verbatim.
pub fn created(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Annotated {
        annotations: Option<BTreeMap<String, String>>,
    }
    let annotated: Annotated = serde_json::from_slice(bytes).ok()?;
    annotated.annotations?.remove(CREATED_ANNOTATION)
}

/// The platform an image config declares, if it is an image config.
pub fn config_platform(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Config {
        os: String,
        architecture: String,
        variant: Option<String>,
    }
    let config: Config = serde_json::from_slice(bytes).ok()?;
    Some(platform_string(
        &config.os,
        &config.architecture,
        config.variant.as_deref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_an_index_with_platforms() {
        let json = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":3,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        let Document::Index { manifests, .. } = parse(json.as_bytes()).expect("index") else {
            panic!("expected an index");
        };
        assert_eq!(manifests[0].platform.as_deref(), Some("linux/arm64/v8"));
        assert!(manifests[0].is_manifest_type());
    }

    #[test]
    fn rejects_negative_sizes_and_bad_digests() {
        let negative = format!(r#"{{"manifests":[{{"mediaType":"x","digest":"{D}","size":-1}}]}}"#);
        assert!(matches!(
            parse(negative.as_bytes()),
            Err(DocumentError::Invalid(_))
        ));
        let traversal =
            r#"{"config":{"mediaType":"x","digest":"sha256:../../x","size":1},"layers":[]}"#;
        assert!(matches!(
            parse(traversal.as_bytes()),
            Err(DocumentError::Invalid(_))
        ));
    }

    #[test]
    fn rejects_json_that_is_not_a_manifest() {
        assert!(matches!(
            parse(b"{\"hello\":1}"),
            Err(DocumentError::Invalid(_))
        ));
        assert!(matches!(parse(b"{not json"), Err(DocumentError::Json(_))));
    }
}
