//! `--docker-archive` inputs: `docker save` (or `skopeo copy …
//! docker-archive:`) tars, plain or gzip-compressed, carried inside the
//! bundle under `docker-<name>/`, where `airlock import` reads docker-saves
//! one directory down.
//!
//! The archive is embedded rather than converted: its files keep their
//! bytes, so the importer derives the same Docker schema 2 manifests from
//! them as it would from the archive dropped in as is, and checks every
//! layer against the config's `rootfs.diff_ids` on the way. A Docker 25
//! archive's `index.json` and `oci-layout` are left out (they would make a
//! second OCI layout next to the bundle's own); its `manifest.json` names
//! the same blobs. The structure is checked here before anything is written:
//! `manifest.json` parses, every config and layer it names is in the
//! archive, and at least one image has a RepoTag to land under.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use crate::digest::Algorithm;
use crate::read::artifact::Assembly;
use crate::read::formats::docker_archive::{self, MANIFEST_FILE};
use crate::read::peek::{self, ScannedFile};
use crate::read::{ImageName, ReadLimits};

use super::error::{Error, Result};

/// Entries of a Docker 25 archive that are not carried (see the module doc).
const LEFT_OUT: [&str; 2] = ["index.json", "oci-layout"];

/// A checked docker-save archive.
#[derive(Debug)]
pub(super) struct DockerArchive {
    /// The file as given.
    pub(super) path: PathBuf,
    /// The directory it is carried under, `docker-<name>`.
    pub(super) dir: String,
    /// Whether the file is gzip-compressed.
    gzip: bool,
    /// How many named images (one per RepoTag) it holds.
    pub(super) images: usize,
}

/// One entry to write: a file of `size` bytes or a symlink.
pub(super) enum Item<'a> {
    /// A regular file and its content.
    File(String, u64, &'a mut dyn Read),
    /// A symlink and its target, as in the archive.
    Link(String, String),
}

impl DockerArchive {
    /// Reads the archive once and checks it exactly as `airlock import`
    /// will: every file hashed (gzip layers also decompressed), then the
    /// importer's docker-save reader run over what was found, so a missing
    /// layer or a layer that does not match its diff ID fails here, before
    /// anything is compressed or signed.
    pub(super) fn check(path: &Path) -> Result<Self> {
        let gzip = starts_with_gzip(path)?;
        let dir = format!("docker-{}", stem(path)?);
        let mut files: Vec<ScannedFile> = Vec::new();
        let mut links: Vec<(String, String)> = Vec::new();
        let mut retained = 0;
        let mut archive = tar::Archive::new(open(path, gzip)?);
        for entry in archive.entries().map_err(|e| unreadable(path, e))? {
            let mut entry = entry.map_err(|e| unreadable(path, e))?;
            let name = entry_name(path, &entry)?;
            let kind = entry.header().entry_type();
            if kind.is_symlink() {
                let target = link_target(path, &name, &entry)?;
                links.push((name, target));
            } else if kind.is_file() {
                if LEFT_OUT.contains(&name.as_str()) {
                    continue;
                }
                let size = entry.size();
                let scanned = peek::scan_file(
                    &mut entry,
                    name,
                    size,
                    ReadLimits::default(),
                    &mut retained,
                    path,
                )
                .map_err(|e| invalid(path, e.to_string()))?;
                files.push(as_the_importer_sees(path, scanned)?);
            } else if !kind.is_dir() {
                return Err(invalid(
                    path,
                    format!("{name}: entry type {kind:?} is not carried"),
                ));
            }
        }
        if !files.iter().any(|f| f.file.path == MANIFEST_FILE) {
            return Err(invalid(
                path,
                "no manifest.json at the archive's root: not a docker-save".into(),
            ));
        }
        let label = path.display().to_string();
        let (images, _) =
            docker_archive::collect(&label, &files, &links, &[], &mut Assembly::default())
                .map_err(|e| match e {
                    crate::read::Error::InvalidContent { item, reason, .. } => {
                        invalid(path, format!("{item}: {reason}"))
                    }
                    other => invalid(path, other.to_string()),
                })?;
        let named = images
            .iter()
            .filter(|i| matches!(i.name, ImageName::Named(_)))
            .count();
        if named == 0 {
            return Err(invalid(
                path,
                "no image in manifest.json has RepoTags to import it under (save images by name: docker save repo:tag)".into(),
            ));
        }
        Ok(DockerArchive {
            path: path.to_owned(),
            dir,
            gzip,
            images: named,
        })
    }

    /// Reads the archive again and hands each carried entry to `write`, in
    /// archive order, with its path inside the bundle.
    pub(super) fn for_each(&self, mut write: impl FnMut(Item<'_>) -> Result<()>) -> Result<()> {
        let mut archive = tar::Archive::new(open(&self.path, self.gzip)?);
        for entry in archive.entries().map_err(|e| unreadable(&self.path, e))? {
            let mut entry = entry.map_err(|e| unreadable(&self.path, e))?;
            let name = entry_name(&self.path, &entry)?;
            if LEFT_OUT.contains(&name.as_str()) {
                continue;
            }
            let kind = entry.header().entry_type();
            let inside = format!("{}/{name}", self.dir);
            if kind.is_symlink() {
                let target = link_target(&self.path, &name, &entry)?;
                let relative = relative_target(&name, &target);
                write(Item::Link(inside, relative))?;
            } else if kind.is_file() {
                let size = entry.size();
                write(Item::File(inside, size, &mut entry))?;
            }
        }
        Ok(())
    }
}

/// The scanned file as the importer will see it inside the bundle: a
/// `blobs/<alg>/<hex>` file (Docker 25) is read there as a layout blob,
/// which must match its name and is not examined for gzip.
fn as_the_importer_sees(path: &Path, mut file: ScannedFile) -> Result<ScannedFile> {
    let parts: Vec<&str> = file.file.path.split('/').collect();
    if let ["blobs", algorithm, hex] = parts.as_slice()
        && Algorithm::parse(algorithm).is_some()
    {
        if file.file.digest.hex() != *hex {
            return Err(invalid(
                path,
                format!(
                    "{} does not match its name (its content hashes to {})",
                    file.file.path, file.file.digest
                ),
            ));
        }
        file.gzip = false;
        file.uncompressed = None;
    }
    Ok(file)
}

/// Checks every `--docker-archive`; their directories must differ.
pub(super) fn check(paths: &[PathBuf]) -> Result<Vec<DockerArchive>> {
    let mut by_dir: BTreeMap<String, DockerArchive> = BTreeMap::new();
    for path in paths {
        let archive = DockerArchive::check(path)?;
        if let Some(other) = by_dir.get(&archive.dir) {
            return Err(Error::InputInvalid {
                flag: "--docker-archive",
                path: path.clone(),
                reason: format!(
                    "has the same name as --docker-archive {}; both would be {}/",
                    other.path.display(),
                    archive.dir
                ),
            });
        }
        by_dir.insert(archive.dir.clone(), archive);
    }
    Ok(by_dir.into_values().collect())
}

fn starts_with_gzip(path: &Path) -> Result<bool> {
    let mut file = File::open(path).map_err(|source| Error::InputMissing {
        flag: "--docker-archive",
        path: path.to_owned(),
        source,
    })?;
    let mut magic = [0u8; 2];
    let mut read = 0;
    while read < 2 {
        match file.read(&mut magic[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(unreadable(path, e)),
        }
    }
    Ok(read == 2 && magic == crate::read::peek::GZIP_MAGIC)
}

fn open(path: &Path, gzip: bool) -> Result<Box<dyn Read>> {
    let file = File::open(path).map_err(|source| Error::InputMissing {
        flag: "--docker-archive",
        path: path.to_owned(),
        source,
    })?;
    let file = BufReader::with_capacity(1 << 20, file);
    Ok(if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// `app.tar.gz` → `app`: the archive's name without its extensions, as a
/// path component the importer accepts.
fn stem(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let mut stem = name;
    for suffix in [".gz", ".tgz", ".tar"] {
        stem = stem.strip_suffix(suffix).unwrap_or(stem);
    }
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if stem.is_empty() || stem.starts_with('.') {
        return Err(invalid(
            path,
            "the file name gives no usable directory name".into(),
        ));
    }
    Ok(stem)
}

/// The entry's path, relative and without `.` components; `..` and
/// absolute paths are refused.
fn entry_name<R: Read>(archive: &Path, entry: &tar::Entry<'_, R>) -> Result<String> {
    let raw = entry.path().map_err(|e| unreadable(archive, e))?;
    let mut parts = Vec::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => {
                return Err(invalid(
                    archive,
                    format!("entry {} leaves the archive", raw.display()),
                ));
            }
        }
    }
    Ok(parts.join("/"))
}

/// A symlink's target resolved against its directory, which must stay
/// inside the archive.
fn link_target<R: Read>(archive: &Path, name: &str, entry: &tar::Entry<'_, R>) -> Result<String> {
    let target = entry
        .link_name()
        .map_err(|e| unreadable(archive, e))?
        .ok_or_else(|| invalid(archive, format!("symlink {name} has no target")))?;
    let mut parts: Vec<String> = name.split('/').map(str::to_owned).collect();
    parts.pop();
    for component in target.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir if parts.pop().is_some() => {}
            _ => {
                return Err(invalid(
                    archive,
                    format!("symlink {name} points outside the archive"),
                ));
            }
        }
    }
    Ok(parts.join("/"))
}

/// The target of link `name` written relative to the link's directory.
fn relative_target(name: &str, target: &str) -> String {
    let depth = name.matches('/').count();
    format!("{}{target}", "../".repeat(depth))
}

fn unreadable(path: &Path, e: io::Error) -> Error {
    invalid(path, format!("not a readable tar (or tar.gz): {e}"))
}

fn invalid(path: &Path, reason: String) -> Error {
    Error::DockerArchive {
        path: path.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_link_targets_stay_inside() {
        assert_eq!(relative_target("abc/layer.tar", "def.tar"), "../def.tar");
        assert_eq!(relative_target("layer.tar", "def.tar"), "def.tar");
        assert_eq!(stem(Path::new("/x/My App.tar.gz")).expect("stem"), "my-app");
        assert!(stem(Path::new(".tar")).is_err());
    }
}
