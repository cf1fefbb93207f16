//! Installers and other plain files under `files/` become OCI artifacts the
//! way `oras push` makes them: an empty config, one layer holding the file
//! with its name as `org.opencontainers.image.title`, and an artifact type.
//!
//! Where each file lands comes from a sidecar `<file>.artifact.yaml` beside
//! it, or else from its name: `palette-enterprise-4.6.0.iso` lands at
//! `installers/palette-enterprise:4.6.0`. A file whose name yields no version
//! and that has no sidecar is an error naming the file, so nothing is ever
//! pushed under a guessed name.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::Deserialize;

use crate::digest::Digest;
use crate::read::artifact::{
    Assembly, EMPTY_CONFIG, EMPTY_JSON, TITLE_ANNOTATION, VERSION_ANNOTATION, Written,
    WrittenManifest,
};
use crate::read::image::BundleImage;
use crate::read::names::{Area, ArtifactName, is_path_component, is_tag, version_tag};
use crate::read::peek::ScannedFile;
use crate::read::{Result, invalid};

/// Where the bundle holds installers and other files.
pub const FILES_PREFIX: &str = "files/";

/// The suffix of a file's sidecar.
pub const SIDECAR_SUFFIX: &str = ".artifact.yaml";

/// The artifact type of files pushed without a sidecar saying otherwise.
pub const DEFAULT_ARTIFACT_TYPE: &str = "application/vnd.airlock.file.v1";

/// The layer media type of files pushed without a sidecar saying otherwise.
pub const DEFAULT_MEDIA_TYPE: &str = "application/octet-stream";

/// How many extensions are taken off a name before looking for its version
/// (`.tar.gz` is two).
const MAX_EXTENSIONS: usize = 2;

/// A sidecar `<file>.artifact.yaml`: where the file lands and how it is typed.
///
/// ```yaml
/// repository: installers/palette-enterprise   # below the target's prefix
/// tag: 4.6.0
/// artifactType: application/vnd.example.iso   # optional
/// mediaType: application/x-iso9660-image      # optional, the layer's type
/// annotations:                                # optional, on the manifest
///   org.opencontainers.image.description: Palette installer
/// ```
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// The repository below the target's prefix.
    #[serde(deserialize_with = "text")]
    pub repository: String,
    /// The tag.
    #[serde(deserialize_with = "text")]
    pub tag: String,
    /// The artifact type (default [`DEFAULT_ARTIFACT_TYPE`]).
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// The layer's media type (default [`DEFAULT_MEDIA_TYPE`]).
    #[serde(default)]
    pub media_type: Option<String>,
    /// Annotations on the manifest.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Turns every file under `files/` into an artifact. Returns the images and
/// the paths of the files it used (the files and their sidecars).
pub fn collect(
    bundle: &str,
    files: &[ScannedFile],
    assembly: &mut Assembly,
) -> Result<(Vec<BundleImage>, Vec<String>)> {
    let in_files = |f: &&ScannedFile| f.file.path.starts_with(FILES_PREFIX);
    let sidecars: HashMap<&str, &ScannedFile> = files
        .iter()
        .filter(in_files)
        .filter_map(|f| {
            f.file
                .path
                .strip_suffix(SIDECAR_SUFFIX)
                .map(|target| (target, f))
        })
        .collect();
    let mut images = Vec::new();
    let mut used = Vec::new();
    // Where each file landed, so two files never silently share a tag
    // (`palette-4.6.0.iso` and `palette-4.6.0.iso.sha256` both derive
    // `installers/palette:4.6.0`).
    let mut claimed: HashMap<String, (&str, Digest)> = HashMap::new();
    for file in files
        .iter()
        .filter(in_files)
        .filter(|f| !f.file.path.ends_with(SIDECAR_SUFFIX))
    {
        let sidecar = match sidecars.get(file.file.path.as_str()) {
            Some(sidecar) => Some(parse_sidecar(bundle, sidecar)?),
            None => None,
        };
        let (lands_at, image) = artifact(bundle, file, sidecar, assembly)?;
        used.push(file.file.path.clone());
        match claimed.get(&lands_at) {
            Some((_, digest)) if *digest == image.descriptor.digest => continue,
            Some((first, _)) => {
                return Err(invalid(
                    bundle,
                    &file.file.path,
                    format!(
                        "it would land at {lands_at}, as {first} does; add {}{SIDECAR_SUFFIX} \
                         naming another repository or tag",
                        file.file.path
                    ),
                ));
            }
            None => {
                claimed.insert(lands_at, (&file.file.path, image.descriptor.digest.clone()));
                images.push(image);
            }
        }
    }
    for (target, sidecar) in &sidecars {
        if !used.iter().any(|u| u == target) {
            return Err(invalid(
                bundle,
                &sidecar.file.path,
                format!("it describes {target}, which is not in the bundle"),
            ));
        }
        used.push(sidecar.file.path.clone());
    }
    Ok((images, used))
}

fn artifact(
    bundle: &str,
    file: &ScannedFile,
    sidecar: Option<Sidecar>,
    assembly: &mut Assembly,
) -> Result<(String, BundleImage)> {
    let title = file.file_name().to_owned();
    let (name, artifact_type, media_type, mut annotations) = match sidecar {
        Some(sidecar) => {
            let name = sidecar_name(bundle, file, &sidecar)?;
            (
                name,
                sidecar
                    .artifact_type
                    .unwrap_or_else(|| DEFAULT_ARTIFACT_TYPE.into()),
                sidecar
                    .media_type
                    .unwrap_or_else(|| DEFAULT_MEDIA_TYPE.into()),
                sidecar.annotations,
            )
        }
        None => {
            let (name, version) = derive_name(&title).ok_or_else(|| {
                invalid(
                    bundle,
                    &file.file.path,
                    format!(
                        "no repository and version can be derived from its name \
                         (expected NAME-VERSION.EXT, e.g. palette-enterprise-4.6.0.iso); \
                         add {}{SIDECAR_SUFFIX} naming its repository and tag",
                        file.file.path
                    ),
                )
            })?;
            let mut annotations = BTreeMap::new();
            annotations.insert(VERSION_ANNOTATION.to_owned(), version.clone());
            let tag = version_tag(&version).unwrap_or(version);
            (
                ArtifactName::in_area(Area::Installers, &name, &tag),
                DEFAULT_ARTIFACT_TYPE.to_owned(),
                DEFAULT_MEDIA_TYPE.to_owned(),
                annotations,
            )
        }
    };
    annotations.insert(TITLE_ANNOTATION.to_owned(), title.clone());
    let config = Written::new(
        EMPTY_CONFIG,
        assembly.memory_blob(Bytes::from_static(EMPTY_JSON)),
    );
    let layer =
        Written::new(&media_type, assembly.file_blob(file)).annotate(TITLE_ANNOTATION, &title);
    let mut manifest = WrittenManifest::oci(config, vec![layer]);
    manifest.artifact_type = Some(artifact_type.clone());
    manifest.annotations = annotations;
    let lands_at = name.to_string();
    Ok((lands_at, assembly.artifact(name, &manifest, &artifact_type)))
}

/// A string field that YAML could read as something else: `tag: 1.10` is
/// the number 1.1, so it is refused with the fix rather than guessed at.
fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match serde_yaml_ng::Value::deserialize(deserializer)? {
        serde_yaml_ng::Value::String(text) => Ok(text),
        other => Err(serde::de::Error::custom(format!(
            "expected text, found {}; put the value in quotes (tag: \"1.0\")",
            describe(&other)
        ))),
    }
}

fn describe(value: &serde_yaml_ng::Value) -> &'static str {
    match value {
        serde_yaml_ng::Value::Null => "nothing",
        serde_yaml_ng::Value::Bool(_) => "a boolean",
        serde_yaml_ng::Value::Number(_) => "a number",
        serde_yaml_ng::Value::String(_) => "text",
        serde_yaml_ng::Value::Sequence(_) => "a list",
        serde_yaml_ng::Value::Mapping(_) => "a mapping",
        serde_yaml_ng::Value::Tagged(_) => "a tagged value",
    }
}

fn parse_sidecar(bundle: &str, sidecar: &ScannedFile) -> Result<Sidecar> {
    let bytes = sidecar.whole().ok_or_else(|| {
        invalid(
            bundle,
            &sidecar.file.path,
            "it is too large to be a sidecar".into(),
        )
    })?;
    super::yaml::from_slice(bytes).map_err(|e| {
        invalid(
            bundle,
            &sidecar.file.path,
            format!("it is not a valid sidecar: {e}"),
        )
    })
}

fn sidecar_name(bundle: &str, file: &ScannedFile, sidecar: &Sidecar) -> Result<ArtifactName> {
    let repository = sidecar.repository.trim_matches('/');
    if repository.is_empty() || !repository.split('/').all(is_path_component) {
        return Err(invalid(
            bundle,
            &format!("{}{SIDECAR_SUFFIX}", file.file.path),
            format!(
                "repository {:?} is not a valid repository path",
                sidecar.repository
            ),
        ));
    }
    if !is_tag(&sidecar.tag) {
        return Err(invalid(
            bundle,
            &format!("{}{SIDECAR_SUFFIX}", file.file.path),
            format!("tag {:?} is not a valid tag", sidecar.tag),
        ));
    }
    Ok(ArtifactName {
        area: Area::Installers,
        repository: repository.to_owned(),
        tag: sidecar.tag.clone(),
    })
}

/// Splits `NAME-VERSION.EXT` into a repository name and a version:
/// `palette-enterprise-4.6.0.iso` → (`palette-enterprise`, `4.6.0`),
/// `airgap-setup-v4.6.0-amd64.tar.gz` → (`airgap-setup`, `v4.6.0-amd64`).
/// The version starts at the first `-` or `_` followed by a digit (or by `v`
/// and a digit); the name must be a valid repository component.
pub fn derive_name(file_name: &str) -> Option<(String, String)> {
    let mut stem = file_name;
    for _ in 0..MAX_EXTENSIONS {
        match stem.rsplit_once('.') {
            Some((rest, extension)) if is_extension(extension) && !rest.is_empty() => {
                stem = rest;
            }
            _ => break,
        }
    }
    let bytes = stem.as_bytes();
    let starts_version = |at: usize| {
        let rest = &bytes[at..];
        match rest {
            [b'v', digit, ..] => digit.is_ascii_digit(),
            [digit, ..] => digit.is_ascii_digit(),
            _ => false,
        }
    };
    let split = (1..bytes.len()).find(|&i| {
        matches!(bytes[i], b'-' | b'_') && i + 1 < bytes.len() && starts_version(i + 1)
    })?;
    let name = stem[..split].to_ascii_lowercase();
    let version = &stem[split + 1..];
    (is_path_component(&name) && version_tag(version).is_some()).then(|| (name, version.to_owned()))
}

/// A file extension: a letter, then up to five letters or digits
/// (`iso`, `gz`, `qcow2`), never a version component like `0`.
fn is_extension(text: &str) -> bool {
    (1..=6).contains(&text.len())
        && text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions_are_derived_from_file_names() {
        let cases = [
            (
                "palette-enterprise-4.6.0.iso",
                ("palette-enterprise", "4.6.0"),
            ),
            (
                "airgap-setup-v4.6.0-amd64.tar.gz",
                ("airgap-setup", "v4.6.0-amd64"),
            ),
            ("Edge-Installer_1.2.3.bin", ("edge-installer", "1.2.3")),
            ("k3s-1.29.2+k3s1", ("k3s", "1.29.2+k3s1")),
        ];
        for (file, (name, version)) in cases {
            assert_eq!(
                derive_name(file),
                Some((name.to_owned(), version.to_owned())),
                "{file}"
            );
        }
    }

    #[test]
    fn a_sidecar_tag_that_yaml_reads_as_a_number_is_refused_with_the_fix() {
        let error = serde_yaml_ng::from_str::<Sidecar>("repository: installers/x\ntag: 1.10\n")
            .expect_err("refused");
        assert!(
            error.to_string().contains("put the value in quotes"),
            "{error}"
        );
        let sidecar: Sidecar =
            serde_yaml_ng::from_str("repository: installers/x\ntag: \"1.10\"\n").expect("parsed");
        assert_eq!(sidecar.tag, "1.10");
    }

    #[test]
    fn names_without_a_version_are_not_guessed() {
        for file in [
            "README",
            "installer.iso",
            "k9s_Linux_amd64.tar.gz",
            "-1.0.iso",
        ] {
            assert_eq!(derive_name(file), None, "{file}");
        }
    }
}
