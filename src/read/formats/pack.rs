//! Palette packs: each `packs/<name>-<version>.tar.gz` (or `.tgz`) becomes an
//! artifact in the shape `oras push` 1.x makes, at
//! `<pack-prefix>/spectro-packs/archive/<name>:<version>`, where Palette's
//! OCI pack registry looks for it: config `application/vnd.unknown.config.v1+json`
//! holding `{}`, one layer of type `application/vnd.oci.image.layer.v1.tar`
//! holding the archive's exact bytes with its file name as
//! `org.opencontainers.image.title`, and `pack.json`'s metadata as manifest
//! annotations (the `io.spectrocloud.pack.*` keys below).
//!
//! A pack already pushed into the OCI layout is recognised by its
//! `org.opencontainers.image.ref.name` (`[<path>/]spectro-packs/archive/<name>:<tag>`
//! without a registry host) or by an [`NAME_ANNOTATION`] on its manifest; it
//! moves into the pack area with whatever metadata its annotations carry. Its
//! archive is not opened, so it declares no images.
//!
//! The images a pack needs (`values.yaml`: `pack.content.images[].image`) are
//! recorded so the import can check they are in the bundle or the target.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::read::artifact::{
    Assembly, EMPTY_JSON, TITLE_ANNOTATION, VERSION_ANNOTATION, Written, WrittenManifest,
};
use crate::read::image::{BundleImage, ImageKind};
use crate::read::names::{
    Area, ArtifactName, ImageName, OCI_REF_NAME, is_path_component, is_tag, parse_full, version_tag,
};
use crate::read::peek::{Peek, ScannedFile};
use crate::read::{Result, invalid};

/// Where the bundle holds pack archives.
pub const PACKS_PREFIX: &str = "packs/";

/// The config media type `oras push` writes when no artifact type is given.
pub const ORAS_UNKNOWN_CONFIG: &str = "application/vnd.unknown.config.v1+json";

/// The layer media type `oras push` 1.x gives files by default.
pub const ORAS_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// Manifest annotation: the pack's name (`pack.json` `name`).
pub const NAME_ANNOTATION: &str = "io.spectrocloud.pack.name";
/// Manifest annotation: `pack.json` `displayName`.
pub const DISPLAY_NAME_ANNOTATION: &str = "io.spectrocloud.pack.displayName";
/// Manifest annotation: `pack.json` `layer` (kernel, os, k8s, cni, csi, addon).
pub const LAYER_ANNOTATION: &str = "io.spectrocloud.pack.layer";
/// Manifest annotation: `pack.json` `addonType`.
pub const ADDON_TYPE_ANNOTATION: &str = "io.spectrocloud.pack.addonType";
/// Manifest annotation: `pack.json` `cloudTypes`, comma-joined.
pub const CLOUD_TYPES_ANNOTATION: &str = "io.spectrocloud.pack.cloudTypes";
/// Manifest annotation: `pack.json` `annotations.architecture`, comma-joined.
pub const ARCHITECTURE_ANNOTATION: &str = "io.spectrocloud.pack.architecture";
/// Manifest annotation: `true` or `false` when `pack.json` says.
pub const FIPS_ANNOTATION: &str = "io.spectrocloud.pack.fips";

/// `pack.json` as far as airlock reads it; other fields are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PackJson {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    version: Option<serde_json::Value>,
    #[serde(default)]
    layer: Option<String>,
    #[serde(default)]
    addon_type: Option<String>,
    #[serde(default)]
    cloud_types: Vec<String>,
    #[serde(default)]
    annotations: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    fips: Option<serde_json::Value>,
}

/// One pack of the bundle, with the metadata inspect, the image policy and
/// the pack catalog show.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Pack {
    /// Where it is in the bundle: `packs/<file>` or `index.json entry N`.
    pub item: String,
    /// `pack.json` `name`.
    pub name: String,
    /// `pack.json` `version`.
    pub version: String,
    /// What Palette's catalog shows and filters on.
    #[serde(flatten)]
    pub metadata: PackMetadata,
    /// Where it lands below the pack prefix.
    #[serde(serialize_with = "serialize_artifact")]
    pub artifact: ArtifactName,
    /// The digest of its manifest.
    pub digest: Digest,
    /// Images its `values.yaml` declares (`pack.content.images[].image`), as written.
    pub images: Vec<String>,
    /// Declared images the bundle does not hold.
    pub missing_from_bundle: Vec<String>,
}

/// What `pack.json` says about a pack beyond its name and version: what
/// Palette's catalog shows and filters on, and what airlock writes into the
/// pack's manifest annotations.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PackMetadata {
    /// `pack.json` `displayName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `pack.json` `layer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// `pack.json` `addonType`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addon_type: Option<String>,
    /// `pack.json` `cloudTypes`.
    pub cloud_types: Vec<String>,
    /// Architectures from `pack.json` `annotations.architecture`.
    pub architectures: Vec<String>,
    /// Whether the pack says it is FIPS-compliant, when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fips: Option<bool>,
}

fn serialize_artifact<S: serde::Serializer>(
    name: &ArtifactName,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(name)
}

impl Pack {
    /// The manifest annotations that describe the pack.
    fn annotations(&self) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::new();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                annotations.insert(key.to_owned(), value);
            }
        };
        put(NAME_ANNOTATION, Some(self.name.clone()));
        put(VERSION_ANNOTATION, Some(self.version.clone()));
        let metadata = &self.metadata;
        put(DISPLAY_NAME_ANNOTATION, metadata.display_name.clone());
        put(LAYER_ANNOTATION, metadata.layer.clone());
        put(ADDON_TYPE_ANNOTATION, metadata.addon_type.clone());
        put(CLOUD_TYPES_ANNOTATION, Some(metadata.cloud_types.join(",")));
        put(
            ARCHITECTURE_ANNOTATION,
            Some(metadata.architectures.join(",")),
        );
        put(FIPS_ANNOTATION, metadata.fips.map(|f| f.to_string()));
        annotations
    }

    /// A pack described only by manifest annotations (a pack already in the
    /// OCI layout, or one listed from a registry).
    pub fn from_annotations(
        item: String,
        artifact: ArtifactName,
        digest: Digest,
        annotations: &BTreeMap<String, String>,
    ) -> Self {
        let get = |key: &str| annotations.get(key).filter(|v| !v.is_empty()).cloned();
        let name = get(NAME_ANNOTATION).unwrap_or_else(|| {
            artifact
                .repository
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        });
        Pack {
            item,
            name,
            version: get(VERSION_ANNOTATION).unwrap_or_else(|| artifact.tag.clone()),
            metadata: PackMetadata {
                display_name: get(DISPLAY_NAME_ANNOTATION),
                layer: get(LAYER_ANNOTATION),
                addon_type: get(ADDON_TYPE_ANNOTATION),
                cloud_types: split_list(get(CLOUD_TYPES_ANNOTATION).as_deref()),
                architectures: split_list(get(ARCHITECTURE_ANNOTATION).as_deref()),
                fips: get(FIPS_ANNOTATION).and_then(|v| parse_bool(&v)),
            },
            artifact,
            digest,
            images: Vec::new(),
            missing_from_bundle: Vec::new(),
        }
    }
}

/// Turns every `packs/*.tar.gz|*.tgz` into a pack artifact. Returns the
/// images, the packs, and the paths of the files it used.
pub fn collect(
    bundle: &str,
    files: &[ScannedFile],
    assembly: &mut Assembly,
) -> Result<(Vec<BundleImage>, Vec<Pack>, Vec<String>)> {
    let mut images = Vec::new();
    let mut packs = Vec::new();
    let mut used = Vec::new();
    for file in files.iter().filter(|f| is_pack_archive(&f.file.path)) {
        let (image, pack) = archive_pack(bundle, file, assembly)?;
        images.push(image);
        packs.push(pack);
        used.push(file.file.path.clone());
    }
    Ok((images, packs, used))
}

/// Whether `path` is a pack archive airlock imports.
fn is_pack_archive(path: &str) -> bool {
    path.strip_prefix(PACKS_PREFIX).is_some_and(|rest| {
        !rest.contains('/') && (rest.ends_with(".tar.gz") || rest.ends_with(".tgz"))
    })
}

fn archive_pack(
    bundle: &str,
    file: &ScannedFile,
    assembly: &mut Assembly,
) -> Result<(BundleImage, Pack)> {
    let item = file.file.path.as_str();
    if let Peek::Unreadable(reason) = &file.peek {
        return Err(invalid(
            bundle,
            item,
            format!("it is not a readable pack archive: {reason}"),
        ));
    }
    let pack_json = file
        .members()
        .iter()
        .filter(|m| m.path == "pack.json" || m.path.ends_with("/pack.json"))
        .min_by_key(|m| m.path.len())
        .ok_or_else(|| {
            invalid(
                bundle,
                item,
                "it holds no pack.json (at the archive root or one directory down)".into(),
            )
        })?;
    let json: PackJson = serde_json::from_slice(&pack_json.bytes).map_err(|e| {
        invalid(
            bundle,
            item,
            format!("its {} is not valid JSON: {e}", pack_json.path),
        )
    })?;
    let name = json
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| invalid(bundle, item, "its pack.json has no name".into()))?;
    let version = match &json.version {
        Some(serde_json::Value::String(v)) if !v.trim().is_empty() => v.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err(invalid(bundle, item, "its pack.json has no version".into())),
    };
    if !is_path_component(&name) {
        return Err(invalid(
            bundle,
            item,
            format!(
                "pack name {name:?} cannot be a repository name (lowercase letters, digits and . _ - separators)"
            ),
        ));
    }
    let tag = version_tag(&version).ok_or_else(|| {
        invalid(
            bundle,
            item,
            format!("pack version {version:?} cannot be a tag"),
        )
    })?;
    let directory = pack_json.path.strip_suffix("pack.json").unwrap_or_default();
    let values_path = format!("{directory}values.yaml");
    let images = match file
        .member(&values_path)
        .map(|v| super::yaml::from_slice::<serde_yaml_ng::Value>(&v.bytes))
    {
        Some(Ok(document)) => declared_images(&document)
            .map_err(|reason| invalid(bundle, item, format!("its {values_path} {reason}")))?,
        // Palette's values files may hold macros (`{{ .spectro... }}`) that
        // are not YAML until Palette renders them: the pack is still pushed,
        // only its images cannot be checked.
        Some(Err(error)) => {
            tracing::warn!(
                bundle,
                pack = item,
                "{values_path} is not YAML ({error}); the images this pack needs are not checked"
            );
            Vec::new()
        }
        None => Vec::new(),
    };
    let title = file.file_name().to_owned();
    let config = Written::new(
        ORAS_UNKNOWN_CONFIG,
        assembly.memory_blob(Bytes::from_static(EMPTY_JSON)),
    );
    let layer =
        Written::new(ORAS_LAYER, assembly.file_blob(file)).annotate(TITLE_ANNOTATION, &title);
    let mut pack = Pack {
        item: item.to_owned(),
        name: name.clone(),
        version,
        metadata: PackMetadata {
            display_name: json.display_name.clone(),
            layer: json.layer.clone(),
            addon_type: json.addon_type.clone(),
            cloud_types: json.cloud_types.clone(),
            architectures: architectures(&json),
            fips: fips(&json),
        },
        artifact: ArtifactName::in_area(Area::Packs, &name, &tag),
        // The manifest's digest, set below once the manifest (which carries
        // this pack's annotations) is written.
        digest: Digest::sha256_of(b""),
        images,
        missing_from_bundle: Vec::new(),
    };
    let mut manifest = WrittenManifest::oci(config, vec![layer]);
    manifest.annotations = pack.annotations();
    let image = assembly.artifact(pack.artifact.clone(), &manifest, ORAS_UNKNOWN_CONFIG);
    pack.digest = image.descriptor.digest.clone();
    Ok((image, pack))
}

/// `pack.content.images[].image` of a parsed `values.yaml`.
fn declared_images(document: &serde_yaml_ng::Value) -> std::result::Result<Vec<String>, String> {
    let entries = document
        .get("pack")
        .and_then(|p| p.get("content"))
        .and_then(|c| c.get("images"));
    let Some(entries) = entries else {
        return Ok(Vec::new());
    };
    let list = entries
        .as_sequence()
        .ok_or("has pack.content.images that is not a list")?;
    let mut images = Vec::new();
    for (position, entry) in list.iter().enumerate() {
        let image = entry
            .get("image")
            .and_then(|i| i.as_str())
            .ok_or_else(|| format!("has pack.content.images[{position}] without an image"))?;
        if !images.iter().any(|i| i == image) {
            images.push(image.to_owned());
        }
    }
    Ok(images)
}

fn architectures(json: &PackJson) -> Vec<String> {
    match json
        .annotations
        .get("architecture")
        .or_else(|| json.annotations.get("architectures"))
    {
        Some(serde_json::Value::String(text)) => split_list(Some(text)),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn fips(json: &PackJson) -> Option<bool> {
    let value = json
        .fips
        .as_ref()
        .or_else(|| json.annotations.get("fips"))?;
    match value {
        serde_json::Value::Bool(b) => Some(*b),
        serde_json::Value::String(s) => parse_bool(s),
        _ => None,
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "enabled" => Some(true),
        "false" | "no" | "disabled" => Some(false),
        _ => None,
    }
}

fn split_list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Moves packs the OCI layout already holds into the pack area and returns
/// them: entries whose `ref.name` is `[<path>/]spectro-packs/archive/<name>:<tag>`
/// without a registry host, or whose manifest carries [`NAME_ANNOTATION`].
pub fn recognise_in_layout(images: &mut [BundleImage], assembly: &Assembly) -> Vec<Pack> {
    let mut packs = Vec::new();
    // Many entries may name one manifest (one image under many tags): each
    // is parsed once.
    let mut parsed: HashMap<Digest, BTreeMap<String, String>> = HashMap::new();
    for (position, image) in images.iter_mut().enumerate() {
        let annotations = parsed
            .entry(image.descriptor.digest.clone())
            .or_insert_with(|| manifest_annotations(assembly, &image.descriptor.digest))
            .clone();
        let by_name = image
            .descriptor
            .annotations
            .get(OCI_REF_NAME)
            .and_then(|r| pack_ref_name(r));
        let by_annotation = || {
            let name = annotations.get(NAME_ANNOTATION)?;
            let version = annotations.get(VERSION_ANNOTATION)?;
            (is_path_component(name)).then_some(())?;
            Some((name.clone(), version_tag(version)?))
        };
        let Some((name, tag)) = by_name.or_else(by_annotation) else {
            continue;
        };
        let artifact = ArtifactName::in_area(Area::Packs, &name, &tag);
        image.name = ImageName::Artifact(artifact.clone());
        if !matches!(image.kind, ImageKind::Artifact { .. }) {
            image.kind = ImageKind::Artifact {
                artifact_type: ORAS_UNKNOWN_CONFIG.into(),
            };
        }
        packs.push(Pack::from_annotations(
            format!("index.json entry {position}"),
            artifact,
            image.descriptor.digest.clone(),
            &annotations,
        ));
    }
    packs
}

/// `[<path>/]spectro-packs/archive/<name>:<tag>` without a registry host →
/// (`name`, `tag`).
fn pack_ref_name(reference: &str) -> Option<(String, String)> {
    let (path, tag) = reference.rsplit_once(':')?;
    if path.contains(':') || path.contains('@') || !is_tag(tag) {
        return None;
    }
    let archive = format!("{}/", Area::Packs.path());
    let at = path.find(&archive)?;
    let before = &path[..at];
    if !before.is_empty() && (!before.ends_with('/') || first_is_host(before)) {
        return None;
    }
    let name = &path[at + archive.len()..];
    is_path_component(name).then(|| (name.to_owned(), tag.to_owned()))
}

/// Whether the first component looks like a registry host (`a.b`, `localhost`).
fn first_is_host(path: &str) -> bool {
    let first = path.split('/').next().unwrap_or_default();
    first.contains('.') || first == "localhost"
}

fn manifest_annotations(assembly: &Assembly, digest: &Digest) -> BTreeMap<String, String> {
    #[derive(Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    assembly
        .documents
        .get(digest)
        .and_then(|bytes| serde_json::from_slice::<Annotated>(bytes).ok())
        .map(|a| a.annotations)
        .unwrap_or_default()
}

/// Marks, for every pack, the declared images no image of the bundle provides
/// (compared as normalised references: `nginx:1.25` is
/// `docker.io/library/nginx:1.25`).
pub fn settle_images(packs: &mut [Pack], images: &[BundleImage]) {
    let held: HashSet<String> = images
        .iter()
        .filter_map(|i| match &i.name {
            ImageName::Named(reference) => Some(reference.whole()),
            _ => None,
        })
        .collect();
    for pack in packs {
        pack.missing_from_bundle = pack
            .images
            .iter()
            .filter(|image| !parse_full(image).is_ok_and(|r| held.contains(&r.whole())))
            .cloned()
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_images_are_read_from_pack_content() {
        let values = b"pack:\n  content:\n    images:\n      - image: quay.io/acme/app:1.0\n      - image: nginx:1.25\n      - image: quay.io/acme/app:1.0\nother: 1\n";
        assert_eq!(
            declared_images(&serde_yaml_ng::from_slice(values).expect("YAML")).expect("images"),
            vec!["quay.io/acme/app:1.0", "nginx:1.25"]
        );
        let parse = |text: &[u8]| serde_yaml_ng::from_slice(text).expect("YAML");
        assert_eq!(
            declared_images(&parse(b"pack: {}\n")).expect("none"),
            Vec::<String>::new()
        );
        assert!(declared_images(&parse(b"pack:\n  content:\n    images: 3\n")).is_err());
    }

    #[test]
    fn pack_reference_names_are_recognised_without_a_registry_host() {
        assert_eq!(
            pack_ref_name("spectro-packs/archive/nginx:1.2.0"),
            Some(("nginx".into(), "1.2.0".into()))
        );
        assert_eq!(
            pack_ref_name("base/spectro-packs/archive/nginx:1.2.0"),
            Some(("nginx".into(), "1.2.0".into()))
        );
        assert_eq!(
            pack_ref_name("harbor.local/spectro-packs/archive/nginx:1.2.0"),
            None
        );
        assert_eq!(pack_ref_name("docker.io/library/nginx:1.25"), None);
        assert_eq!(pack_ref_name("spectro-packs/archive/a/b:1"), None);
    }

    #[test]
    fn a_layout_entry_with_pack_annotations_moves_into_the_pack_area() {
        let mut assembly = Assembly::default();
        let config = Written::new(
            ORAS_UNKNOWN_CONFIG,
            assembly.memory_blob(Bytes::from_static(EMPTY_JSON)),
        );
        let layer = Written::new(
            ORAS_LAYER,
            assembly.memory_blob(Bytes::from_static(b"pack")),
        );
        let mut manifest = WrittenManifest::oci(config, vec![layer]);
        for (key, value) in [
            (NAME_ANNOTATION, "metallb"),
            (VERSION_ANNOTATION, "0.14.8+1"),
            (LAYER_ANNOTATION, "addon"),
            (CLOUD_TYPES_ANNOTATION, "edge-native,vsphere"),
        ] {
            manifest.annotations.insert(key.into(), value.into());
        }
        let name = ArtifactName::in_area(Area::Installers, "placeholder", "1");
        let mut image = assembly.artifact(name, &manifest, ORAS_UNKNOWN_CONFIG);
        image.name = ImageName::Unnamed {
            reason: "not named".into(),
        };
        image.descriptor.annotations = BTreeMap::new();
        let mut images = vec![image];
        let packs = recognise_in_layout(&mut images, &assembly);
        let expected = ArtifactName::in_area(Area::Packs, "metallb", "0.14.8_1");
        assert_eq!(images[0].name, ImageName::Artifact(expected.clone()));
        assert_eq!(packs.len(), 1);
        assert_eq!(packs[0].artifact, expected);
        assert_eq!(packs[0].version, "0.14.8+1");
        assert_eq!(packs[0].metadata.layer.as_deref(), Some("addon"));
        assert_eq!(
            packs[0].metadata.cloud_types,
            vec!["edge-native", "vsphere"]
        );
        assert!(packs[0].images.is_empty());
    }

    #[test]
    fn architecture_and_fips_come_from_pack_annotations() {
        let json: PackJson = serde_json::from_str(
            r#"{"name":"x","version":"1","annotations":{"architecture":"amd64, arm64","fips":"true"}}"#,
        )
        .expect("json");
        assert_eq!(architectures(&json), vec!["amd64", "arm64"]);
        assert_eq!(fips(&json), Some(true));
    }
}
