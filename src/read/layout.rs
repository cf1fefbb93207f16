//! Interprets the scanned tar as an OCI image layout: picks the layout root,
//! walks every descriptor reachable from `index.json`, and proves each one is
//! present with the declared size before anything may be pushed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::artifact::Assembly;
use super::document::{self, Descriptor, Document, DocumentError};
use super::formats::{chart, docker_archive, installer, pack, producer};
use super::image::{BundleImage, ImageKind, ManifestRef};
use super::names::ImageName;
use super::peek::{Peek, ScannedFile};
use super::{
    BlobSource, BundleIndex, BundleSource, Error, Limit, ReadLimits, Result, RootScan, Scan,
};
use crate::digest::Digest;

/// Builds the index from a finished scan: the OCI layout, if there is one,
/// then the content of every other format the bundle holds.
pub(super) fn assemble<B: BundleSource>(
    bundle: B,
    scan: Scan,
    limits: ReadLimits,
) -> Result<BundleIndex<B>> {
    let path = bundle.path().display().to_string();
    let Scan {
        sha256,
        roots,
        others,
        links,
    } = scan;
    let layout_roots: Vec<&String> = roots
        .iter()
        .filter(|(_, r)| r.index_json.is_some())
        .map(|(name, _)| name)
        .collect();
    let root_name = match layout_roots.as_slice() {
        [] => None,
        [one] => Some((*one).clone()),
        many => {
            return Err(Error::SeveralLayouts {
                path,
                roots: many
                    .iter()
                    .map(|r| if r.is_empty() { "/" } else { r.as_str() })
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    };
    let mut others = others;
    let mut root = None;
    for (name, mut scanned) in roots {
        if Some(&name) == root_name.as_ref() {
            root = Some(scanned);
        } else {
            // Blobs outside the layout root are files like any other: a
            // Docker 25 docker-save without index.json names them, and
            // unclaimed ones are listed, not silently dropped.
            for (digest, size) in scanned.blobs {
                // What the index holds of it is sent from memory.
                let document = scanned.documents.remove(&digest);
                let kept = document
                    .clone()
                    .or_else(|| scanned.in_memory.remove(&digest));
                let peek = match document {
                    Some(bytes) => Peek::Whole(bytes),
                    None => Peek::Nothing,
                };
                others.push(ScannedFile {
                    file: super::ExtraFile {
                        path: blob_entry(&name, &digest),
                        size,
                        digest,
                    },
                    gzip: false,
                    uncompressed: None,
                    peek,
                    kept,
                });
            }
        }
    }
    let mut extra_files = Vec::new();
    let mut assembly = Assembly::default();
    let mut images = Vec::new();
    let created = root
        .as_ref()
        .and_then(|r| r.index_json.as_deref())
        .and_then(document::created);
    if let Some(root) = &root {
        let root_name = root_name.as_deref().unwrap_or_default();
        images = layout_images(&path, root, limits, &mut assembly)?;
        for (digest, size) in &root.blobs {
            assembly.blobs.insert(digest.clone(), *size);
            assembly.sources.insert(
                digest.clone(),
                BlobSource::Entry(blob_entry(root_name, digest)),
            );
        }
        // Small blobs the stage left in memory are pushed from there.
        assembly.documents.extend(
            root.in_memory
                .iter()
                .map(|(digest, bytes)| (digest.clone(), bytes.clone())),
        );
    }
    let mut packs = pack::recognise_in_layout(&mut images, &assembly);
    let (installers, mut used) = installer::collect(&path, &others, &mut assembly)?;
    images.extend(installers);
    let (charts, chart_files) = chart::collect(&path, &others, limits, &mut assembly)?;
    images.extend(charts);
    used.extend(chart_files);
    if let Some((link, _)) = links
        .iter()
        .find(|(link, _)| !docker_archive::holds_link(&others, link))
    {
        return Err(Error::UnsafeEntry {
            path,
            entry: link.clone(),
            reason: "links are not allowed in bundles outside a docker-save".into(),
        });
    }
    let layout_dirs: Vec<&str> = root_name.as_deref().into_iter().collect();
    let (saved, saved_files) =
        docker_archive::collect(&path, &others, &links, &layout_dirs, &mut assembly)?;
    images.extend(saved);
    used.extend(saved_files);
    let (pack_images, archive_packs, pack_files) = pack::collect(&path, &others, &mut assembly)?;
    images.extend(pack_images);
    packs.extend(archive_packs);
    used.extend(pack_files);
    pack::settle_images(&mut packs, &images);
    let producer = producer::recognise(&others, &images);
    used.sort();
    extra_files.extend(
        others
            .into_iter()
            .filter(|f| used.binary_search(&f.file.path).is_err())
            .map(|f| f.file),
    );
    if root.is_none() && images.is_empty() {
        return Err(Error::NoLayout { path });
    }
    Ok(BundleIndex {
        bundle,
        content_sha256: sha256,
        layout_root: root_name,
        blobs: assembly.blobs,
        sources: assembly.sources,
        documents: assembly.documents,
        images,
        packs,
        extra_files,
        producer,
        limits,
        created,
    })
}

/// The tar path of a layout blob.
fn blob_entry(root: &str, digest: &Digest) -> String {
    let relative = format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex());
    if root.is_empty() {
        relative
    } else {
        format!("{root}/{relative}")
    }
}

/// Walks every entry of the layout's `index.json`, keeping the manifests.
fn layout_images(
    path: &str,
    root: &RootScan,
    limits: ReadLimits,
    assembly: &mut Assembly,
) -> Result<Vec<BundleImage>> {
    if !root.has_oci_layout {
        tracing::warn!(bundle = %path, "the OCI layout has no oci-layout file; reading it anyway");
    }
    let mut walker = Walker {
        path,
        root,
        limits,
        kept: HashMap::new(),
        kept_blobs: HashMap::new(),
        walked: HashMap::new(),
    };
    let index_bytes = root.index_json.clone().unwrap_or_default();
    let entries = match walker.parse("index.json", &index_bytes)? {
        Document::Index { manifests, .. } => manifests,
        Document::Manifest { .. } => {
            return Err(Error::InvalidDocument {
                path: path.to_owned(),
                what: "index.json".into(),
                reason: "it is a manifest, not an index".into(),
            });
        }
    };
    let mut images = Vec::with_capacity(entries.len());
    for (position, entry) in entries.into_iter().enumerate() {
        images.push(walker.image(position, entry)?);
    }
    assembly.documents.extend(walker.kept);
    assembly.documents.extend(walker.kept_blobs);
    Ok(images)
}

struct Walker<'a> {
    path: &'a str,
    root: &'a RootScan,
    limits: ReadLimits,
    kept: HashMap<Digest, Bytes>,
    /// Configs and layers small enough to have been kept as documents: the
    /// push sends them from memory, and the image signature check reads
    /// the signature payloads among them.
    kept_blobs: HashMap<Digest, Bytes>,
    /// What walking each `index.json` entry's manifest found, by digest:
    /// entries naming a manifest already walked reuse it, so thousands of
    /// entries naming one index of thousands of children cost one walk and
    /// one copy of the lists, not one each.
    walked: HashMap<Digest, Walked>,
}

/// The result of walking one top-level manifest.
#[derive(Clone)]
struct Walked {
    kind: ImageKind,
    subject: Option<Digest>,
    manifests: Arc<[ManifestRef]>,
    blobs: Arc<[(Digest, u64)]>,
    platforms: Vec<String>,
    foreign: Vec<Digest>,
}

/// What walking one `index.json` entry collects.
#[derive(Default)]
struct Collected {
    manifests: Vec<ManifestRef>,
    seen_manifests: HashSet<Digest>,
    blobs: Vec<(Digest, u64)>,
    seen_blobs: HashSet<Digest>,
    platforms: Vec<String>,
    foreign: Vec<Digest>,
}

impl Walker<'_> {
    /// Keeps the bytes of blob `digest` when the scan kept it as a document.
    fn keep_document(&mut self, digest: &Digest) {
        if let Some(bytes) = self.root.documents.get(digest) {
            self.kept_blobs.insert(digest.clone(), bytes.clone());
        }
    }

    fn parse(&self, what: &str, bytes: &[u8]) -> Result<Document> {
        document::parse(bytes).map_err(|e| match e {
            DocumentError::Json(source) => Error::InvalidJson {
                path: self.path.to_owned(),
                what: what.to_owned(),
                source,
            },
            DocumentError::Invalid(reason) => Error::InvalidDocument {
                path: self.path.to_owned(),
                what: what.to_owned(),
                reason,
            },
        })
    }

    /// Walks an entry's manifest, or reuses the walk of an earlier entry
    /// naming the same one (after checking this entry's declared size).
    fn walk_entry(&mut self, entry: &Descriptor, referenced_by: &str) -> Result<Walked> {
        if let Some(walked) = self.walked.get(&entry.digest) {
            let walked = walked.clone();
            self.require(entry, referenced_by)?;
            return Ok(walked);
        }
        let mut collected = Collected::default();
        let top = self.walk_manifest(entry, referenced_by, 0, &mut collected)?;
        let kind = match (&top, top.artifact_type()) {
            (_, Some(artifact_type)) => ImageKind::Artifact {
                artifact_type: artifact_type.to_owned(),
            },
            (Document::Index { .. }, None) => ImageKind::Index,
            (Document::Manifest { config, .. }, None) => match config {
                Some(c) if !is_image_config(&c.media_type) => ImageKind::Artifact {
                    artifact_type: c.media_type.clone(),
                },
                _ => ImageKind::Image,
            },
        };
        let walked = Walked {
            kind,
            subject: top.subject().map(|s| s.digest.clone()),
            manifests: collected.manifests.into(),
            blobs: collected.blobs.into(),
            platforms: collected.platforms,
            foreign: collected.foreign,
        };
        self.walked.insert(entry.digest.clone(), walked.clone());
        Ok(walked)
    }

    fn image(&mut self, position: usize, entry: Descriptor) -> Result<BundleImage> {
        let referenced_by = format!("index.json entry {position}");
        let Walked {
            kind,
            subject,
            manifests,
            blobs,
            mut platforms,
            foreign,
        } = self.walk_entry(&entry, &referenced_by)?;
        if let Some(platform) = &entry.platform
            && !platforms.contains(platform)
        {
            platforms.insert(0, platform.clone());
        }
        Ok(BundleImage {
            name: ImageName::from_annotations(Some(&entry.annotations)),
            subject,
            kind,
            platforms,
            manifests,
            blobs,
            foreign_layers: foreign,
            descriptor: entry,
        })
    }

    /// Checks a blob is present with the declared size.
    fn require(&self, descriptor: &Descriptor, referenced_by: &str) -> Result<()> {
        match self.root.blobs.get(&descriptor.digest) {
            None => Err(Error::MissingBlob {
                path: self.path.to_owned(),
                digest: descriptor.digest.clone(),
                referenced_by: referenced_by.to_owned(),
            }),
            Some(&actual) if actual != descriptor.size => Err(Error::SizeMismatch {
                path: self.path.to_owned(),
                digest: descriptor.digest.clone(),
                declared: descriptor.size,
                actual,
                referenced_by: referenced_by.to_owned(),
            }),
            Some(_) => Ok(()),
        }
    }

    fn walk_manifest(
        &mut self,
        descriptor: &Descriptor,
        referenced_by: &str,
        depth: usize,
        out: &mut Collected,
    ) -> Result<Document> {
        self.limits
            .check(Limit::IndexDepth, depth as u64)
            .map_err(|source| Error::LimitExceeded {
                path: self.path.to_owned(),
                item: Some(descriptor.digest.to_string()),
                source,
            })?;
        self.require(descriptor, referenced_by)?;
        let bytes = self
            .root
            .documents
            .get(&descriptor.digest)
            .cloned()
            .ok_or_else(|| Error::DocumentTooLarge {
                path: self.path.to_owned(),
                digest: descriptor.digest.clone(),
                size: descriptor.size,
                limit: self.limits.max_document_bytes,
            })?;
        let what = format!("manifest {}", descriptor.digest);
        let document = self.parse(&what, &bytes)?;
        match &document {
            Document::Index { manifests, .. } => {
                for child in manifests {
                    if let Some(platform) = &child.platform
                        && !out.platforms.contains(platform)
                    {
                        out.platforms.push(platform.clone());
                    }
                    if out.seen_manifests.contains(&child.digest) {
                        continue;
                    }
                    self.walk_manifest(child, &what, depth + 1, out)?;
                }
            }
            Document::Manifest { config, layers, .. } => {
                if let Some(config) = config {
                    self.require(config, &what)?;
                    if let Some(platform) = self
                        .root
                        .documents
                        .get(&config.digest)
                        .and_then(|b| document::config_platform(b))
                        .filter(|_| is_image_config(&config.media_type))
                        && !out.platforms.contains(&platform)
                        && depth == 0
                    {
                        out.platforms.push(platform);
                    }
                    self.keep_document(&config.digest);
                    add_blob(out, config);
                }
                for layer in layers {
                    if layer.has_urls && !self.root.blobs.contains_key(&layer.digest) {
                        out.foreign.push(layer.digest.clone());
                        continue;
                    }
                    self.require(layer, &what)?;
                    self.keep_document(&layer.digest);
                    add_blob(out, layer);
                }
            }
        }
        if out.seen_manifests.insert(descriptor.digest.clone()) {
            out.manifests.push(ManifestRef {
                digest: descriptor.digest.clone(),
                media_type: declared_or_shape(descriptor, &document),
            });
        }
        self.kept.insert(descriptor.digest.clone(), bytes);
        self.limits
            .check(Limit::Manifests, self.kept.len() as u64)
            .map_err(|source| Error::LimitExceeded {
                path: self.path.to_owned(),
                item: Some(descriptor.digest.to_string()),
                source,
            })?;
        Ok(document)
    }
}

fn add_blob(out: &mut Collected, descriptor: &Descriptor) {
    if out.seen_blobs.insert(descriptor.digest.clone()) {
        out.blobs.push((descriptor.digest.clone(), descriptor.size));
    }
}

/// The media type a registry must be told: the document's own declaration,
/// then the descriptor's, then what its shape implies.
fn declared_or_shape(descriptor: &Descriptor, document: &Document) -> String {
    let declared = match document {
        Document::Index { media_type, .. } | Document::Manifest { media_type, .. } => {
            media_type.clone()
        }
    };
    declared
        .filter(|m| !m.is_empty())
        .or_else(|| (!descriptor.media_type.is_empty()).then(|| descriptor.media_type.clone()))
        .unwrap_or_else(|| document.media_type().to_owned())
}

fn is_image_config(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    )
}
