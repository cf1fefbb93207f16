//! `--file` inputs: plain files (installers, ISOs) carried as `files/<name>`.
//!
//! Checked before anything is written so a typo fails at once, not after
//! gigabytes of images have been compressed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use crate::read::formats::installer::{SIDECAR_SUFFIX, derive_name};

/// Where plain files go inside the bundle.
pub const FILES_DIR: &str = "files";

/// Names the importer would read as part of an image layout
/// (`files/index.json` would look like a second layout root).
const RESERVED_NAMES: [&str; 2] = ["index.json", "oci-layout"];

/// One file to bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExtraFile {
    /// The file on disk.
    pub(super) path: PathBuf,
    /// Its entry in the bundle, `files/<name>`.
    pub(super) entry: String,
    /// Its size when checked; the copy must read exactly this many bytes.
    pub(super) size: u64,
}

/// Checks every `--file` and returns them sorted by entry name, so the tar
/// does not depend on the order of the flags.
pub(super) fn check(paths: &[PathBuf]) -> Result<Vec<ExtraFile>> {
    let mut by_entry: BTreeMap<String, ExtraFile> = BTreeMap::new();
    for path in paths {
        let file = check_one(path)?;
        if let Some(other) = by_entry.get(&file.entry) {
            return Err(invalid(
                path,
                format!(
                    "has the same name as --file {}; both would be {}",
                    other.path.display(),
                    file.entry
                ),
            ));
        }
        by_entry.insert(file.entry.clone(), file);
    }
    for (entry, file) in &by_entry {
        check_placement(entry, file, &by_entry)?;
    }
    Ok(by_entry.into_values().collect())
}

/// Makes sure `airlock import` will know where the file lands: a name it can
/// derive a repository and version from, or a sidecar given with it; and a
/// sidecar only with the file it describes.
fn check_placement(entry: &str, file: &ExtraFile, all: &BTreeMap<String, ExtraFile>) -> Result<()> {
    if let Some(described) = entry.strip_suffix(SIDECAR_SUFFIX) {
        if all.contains_key(described) {
            return Ok(());
        }
        return Err(invalid(
            &file.path,
            format!("describes {described}, which is not among the --file inputs"),
        ));
    }
    let sidecar = format!("{entry}{SIDECAR_SUFFIX}");
    let name = entry.rsplit('/').next().unwrap_or(entry);
    if all.contains_key(&sidecar) || derive_name(name).is_some() {
        return Ok(());
    }
    Err(invalid(
        &file.path,
        format!(
            "airlock import could not tell where {entry} lands: name it NAME-VERSION.EXT \
             (e.g. palette-enterprise-4.6.0.iso) or also pass a sidecar --file {name}{SIDECAR_SUFFIX} \
             with its repository and tag (docs/FORMATS.md)"
        ),
    ))
}

fn check_one(path: &Path) -> Result<ExtraFile> {
    // Follows symlinks: the content is what gets bundled.
    let metadata = fs::metadata(path).map_err(|source| Error::InputMissing {
        flag: "--file",
        path: path.to_owned(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(invalid(path, "not a regular file".into()));
    }
    let name = path
        .file_name()
        .ok_or_else(|| invalid(path, "has no file name".into()))?
        .to_str()
        .ok_or_else(|| {
            invalid(
                path,
                "the file name is not UTF-8, which tar readers need".into(),
            )
        })?;
    if RESERVED_NAMES.contains(&name) {
        return Err(invalid(
            path,
            format!(
                "airlock import would take {FILES_DIR}/{name} for part of an image layout; rename the file"
            ),
        ));
    }
    Ok(ExtraFile {
        path: path.to_owned(),
        entry: format!("{FILES_DIR}/{name}"),
        size: metadata.len(),
    })
}

fn invalid(path: &Path, reason: String) -> Error {
    Error::InputInvalid {
        flag: "--file",
        path: path.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_sorted_by_entry_name() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("b-2.0.iso");
        let a = dir.path().join("a-1.0.txt");
        fs::write(&b, b"bb").unwrap();
        fs::write(&a, b"a").unwrap();
        let files = check(&[b.clone(), a.clone()]).unwrap();
        let entries: Vec<&str> = files.iter().map(|f| f.entry.as_str()).collect();
        assert_eq!(entries, ["files/a-1.0.txt", "files/b-2.0.iso"]);
        assert_eq!(files[1].size, 2);
    }

    #[test]
    fn duplicate_and_reserved_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("x")).unwrap();
        let one = dir.path().join("same-1.0.bin");
        let two = dir.path().join("x/same-1.0.bin");
        fs::write(&one, b"1").unwrap();
        fs::write(&two, b"2").unwrap();
        let err = check(&[one, two]).unwrap_err();
        assert!(err.to_string().contains("same name"), "{err}");
        assert_eq!(err.class(), crate::FailureClass::Config);

        let index = dir.path().join("index.json");
        fs::write(&index, b"{}").unwrap();
        let err = check(&[index]).unwrap_err();
        assert!(err.to_string().contains("rename the file"), "{err}");
    }

    #[test]
    fn files_import_could_not_place_are_refused_unless_a_sidecar_comes_along() {
        let dir = tempfile::tempdir().unwrap();
        let readme = dir.path().join("README");
        fs::write(&readme, b"read me").unwrap();
        let err = check(std::slice::from_ref(&readme)).unwrap_err();
        assert!(err.to_string().contains("NAME-VERSION.EXT"), "{err}");
        assert_eq!(err.class(), crate::FailureClass::Config);

        let sidecar = dir.path().join("README.artifact.yaml");
        fs::write(&sidecar, b"repository: docs/readme\ntag: \"1\"\n").unwrap();
        assert_eq!(check(&[readme, sidecar.clone()]).unwrap().len(), 2);
        let err = check(&[sidecar]).unwrap_err();
        assert!(
            err.to_string().contains("not among the --file inputs"),
            "{err}"
        );
    }

    #[test]
    fn missing_files_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = check(&[dir.path().join("absent.iso")]).unwrap_err();
        assert!(matches!(err, Error::InputMissing { .. }), "{err}");
        let err = check(&[dir.path().to_owned()]).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
