//! Content that arrives as plain files (packs, installers, charts, docker-save
//! layers) becomes OCI content here: its blobs are registered with where their
//! bytes come from, and the manifests airlock writes for them are kept with
//! the bundle's own documents, so planning and pushing treat them like any
//! image in the layout.
//!
//! Every manifest written here is deterministic (no timestamps, sorted
//! annotations), so importing the same bundle twice writes the same digests
//! and the second import finds everything present.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::Serialize;

use super::BlobSource;
use super::document::{DOCKER_MANIFEST, Descriptor, OCI_MANIFEST};
use super::image::{BundleImage, ImageKind, ManifestRef};
use super::names::{ArtifactName, ImageName};
use super::peek::ScannedFile;
use crate::digest::Digest;

/// The OCI annotation naming a layer's file (oras writes it on every file).
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// The OCI annotation holding a version.
pub const VERSION_ANNOTATION: &str = "org.opencontainers.image.version";
/// Image-spec 1.1's empty config for artifacts, and its content.
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
/// The content of an empty config: `{}`.
pub const EMPTY_JSON: &[u8] = b"{}";

/// Blobs and documents the formats add to a bundle's index.
#[derive(Debug, Default)]
pub struct Assembly {
    /// Every blob's size.
    pub blobs: HashMap<Digest, u64>,
    /// Where every blob's bytes come from.
    pub sources: HashMap<Digest, BlobSource>,
    /// Manifests (and small JSON blobs) by digest.
    pub documents: HashMap<Digest, Bytes>,
}

/// A descriptor as written into a manifest airlock makes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Annotations (sorted, omitted when empty).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Written {
    /// A descriptor without annotations.
    pub fn new(media_type: &str, (digest, size): (Digest, u64)) -> Self {
        Written {
            media_type: media_type.to_owned(),
            digest,
            size,
            annotations: BTreeMap::new(),
        }
    }

    /// Adds an annotation.
    pub fn annotate(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// An image manifest airlock writes (OCI or Docker schema 2 by media type).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WrittenManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's media type.
    pub media_type: String,
    /// The artifact type (image-spec 1.1), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Written,
    /// The layers.
    pub layers: Vec<Written>,
    /// Annotations (sorted, omitted when empty).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl WrittenManifest {
    /// An OCI image manifest with `config` and `layers`.
    pub fn oci(config: Written, layers: Vec<Written>) -> Self {
        WrittenManifest {
            schema_version: 2,
            media_type: OCI_MANIFEST.to_owned(),
            artifact_type: None,
            config,
            layers,
            annotations: BTreeMap::new(),
        }
    }

    /// A Docker v2 schema 2 image manifest with `config` and `layers`.
    pub fn docker(config: Written, layers: Vec<Written>) -> Self {
        WrittenManifest {
            media_type: DOCKER_MANIFEST.to_owned(),
            ..WrittenManifest::oci(config, layers)
        }
    }

    /// The manifest's bytes: compact JSON in field order.
    pub fn to_bytes(&self) -> Bytes {
        // Serialising plain structs, strings and maps cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

impl Assembly {
    /// Registers a file of the bundle as a blob: sent from memory when the
    /// index kept its content, else streamed from its tar entry.
    pub fn file_blob(&mut self, scanned: &ScannedFile) -> (Digest, u64) {
        let file = &scanned.file;
        self.blobs.insert(file.digest.clone(), file.size);
        self.sources
            .entry(file.digest.clone())
            .or_insert_with(|| match &scanned.kept {
                Some(bytes) => BlobSource::Memory(bytes.clone()),
                None => BlobSource::Entry(file.path.clone()),
            });
        (file.digest.clone(), file.size)
    }

    /// Registers bytes airlock holds in memory (a config it wrote, a chart
    /// taken out of a pack) as a blob.
    pub fn memory_blob(&mut self, bytes: Bytes) -> (Digest, u64) {
        let digest = Digest::sha256_of(&bytes);
        let size = bytes.len() as u64;
        self.blobs.insert(digest.clone(), size);
        self.sources
            .entry(digest.clone())
            .or_insert(BlobSource::Memory(bytes));
        (digest, size)
    }

    /// Records a manifest airlock wrote and describes it as an image of the
    /// bundle named `name`, of `kind`, on `platforms`.
    pub fn image(
        &mut self,
        name: ImageName,
        manifest: &WrittenManifest,
        kind: ImageKind,
        platforms: Vec<String>,
    ) -> BundleImage {
        let bytes = manifest.to_bytes();
        let digest = Digest::sha256_of(&bytes);
        let size = bytes.len() as u64;
        self.documents.insert(digest.clone(), bytes);
        let mut blobs = vec![(manifest.config.digest.clone(), manifest.config.size)];
        for layer in &manifest.layers {
            if !blobs.iter().any(|(d, _)| *d == layer.digest) {
                blobs.push((layer.digest.clone(), layer.size));
            }
        }
        BundleImage {
            name,
            descriptor: Descriptor {
                media_type: manifest.media_type.clone(),
                digest: digest.clone(),
                size,
                platform: None,
                artifact_type: manifest.artifact_type.clone(),
                annotations: manifest.annotations.clone(),
                has_urls: false,
            },
            kind,
            platforms,
            subject: None,
            manifests: vec![ManifestRef {
                digest,
                media_type: manifest.media_type.clone(),
            }]
            .into(),
            blobs: blobs.into(),
            foreign_layers: Vec::new(),
        }
    }

    /// An oras-style artifact: `name`, one layer, `artifact_type`.
    pub fn artifact(
        &mut self,
        name: ArtifactName,
        manifest: &WrittenManifest,
        artifact_type: &str,
    ) -> BundleImage {
        let kind = ImageKind::Artifact {
            artifact_type: artifact_type.to_owned(),
        };
        self.image(ImageName::Artifact(name), manifest, kind, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::names::Area;

    #[test]
    fn written_manifests_are_deterministic_and_list_their_blobs_once() {
        let mut assembly = Assembly::default();
        let config = Written::new(
            EMPTY_CONFIG,
            assembly.memory_blob(Bytes::from_static(EMPTY_JSON)),
        );
        let layer = Written::new(
            "application/octet-stream",
            assembly.memory_blob(Bytes::from_static(b"installer")),
        )
        .annotate(TITLE_ANNOTATION, "x-1.0.bin");
        let mut manifest = WrittenManifest::oci(config, vec![layer.clone(), layer]);
        manifest.artifact_type = Some("application/vnd.example".into());
        let name = ArtifactName::in_area(Area::Installers, "x", "1.0");
        let first = assembly.artifact(name.clone(), &manifest, "application/vnd.example");
        let second = assembly.artifact(name, &manifest, "application/vnd.example");
        assert_eq!(first.descriptor.digest, second.descriptor.digest);
        assert_eq!(first.blobs.len(), 2);
        let bytes = assembly
            .documents
            .get(&first.descriptor.digest)
            .expect("kept");
        let text = std::str::from_utf8(bytes).expect("utf-8");
        assert!(text.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}"#), "{text}");
    }
}
