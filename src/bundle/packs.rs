//! `--pack` and `--chart` inputs: Palette packs carried as
//! `packs/<name>-<version>.tar.gz` and Helm charts as `charts/<file>`.
//!
//! A pack directory is archived here deterministically (entries sorted by
//! path under `<name>/`, mode 0644 or 0755, owner 0, mtime 0, gzip without
//! a timestamp), so the same directory always gives the same bytes and the
//! same digest in the registry. A pack or chart archive is copied as it is,
//! after checking that `pack.json` or `Chart.yaml` (at its root or one
//! directory down) names it with a name and a version: what the importer
//! needs to place it.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{Error, Result};
use super::files::ExtraFile;

/// Where packs go inside the bundle.
pub const PACKS_DIR: &str = "packs";

/// Where charts go inside the bundle.
pub const CHARTS_DIR: &str = "charts";

/// Largest descriptor (`pack.json`, `Chart.yaml`) read from an archive.
const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;

/// What names a pack or a chart.
#[derive(Debug, Deserialize)]
struct Descriptor {
    name: Option<String>,
    version: Option<serde_yaml_ng::Value>,
}

/// A pack or chart to bundle, and the temporary archive made for a pack
/// directory (removed when dropped).
pub(super) struct Bundled {
    pub(super) file: ExtraFile,
    _archive: Option<tempfile::NamedTempFile>,
}

/// Checks every `--pack`, archiving directories into `scratch`.
pub(super) fn packs(paths: &[PathBuf], scratch: &Path) -> Result<Vec<Bundled>> {
    paths.iter().map(|path| pack(path, scratch)).collect()
}

/// Checks every `--chart`.
pub(super) fn charts(paths: &[PathBuf]) -> Result<Vec<Bundled>> {
    paths
        .iter()
        .map(|path| {
            let (name, version) = archive_descriptor(path, "--chart", "Chart.yaml")?;
            tracing::debug!(chart = %path.display(), %name, %version, "chart checked");
            copied(path, "--chart", CHARTS_DIR)
        })
        .collect()
}

fn pack(path: &Path, scratch: &Path) -> Result<Bundled> {
    let metadata = fs::metadata(path).map_err(|source| Error::InputMissing {
        flag: "--pack",
        path: path.to_owned(),
        source,
    })?;
    if !metadata.is_dir() {
        archive_descriptor(path, "--pack", "pack.json")?;
        return copied(path, "--pack", PACKS_DIR);
    }
    let bytes = fs::read(path.join("pack.json")).map_err(|e| {
        invalid(
            path,
            "--pack",
            format!("a pack directory needs a pack.json: {e}"),
        )
    })?;
    let (name, version) = descriptor(&bytes, path, "--pack", "pack.json")?;
    let archive = tempfile::Builder::new()
        .prefix(".airlock-pack-")
        .suffix(".tar.gz")
        .tempfile_in(scratch)
        .map_err(|source| Error::OutputIo {
            action: "create a pack archive in",
            path: scratch.to_owned(),
            source,
        })?;
    write_pack(path, &name, archive.as_file()).map_err(|source| Error::LayoutRead {
        path: path.to_owned(),
        source,
    })?;
    let size = archive
        .as_file()
        .metadata()
        .map_err(|source| Error::LayoutRead {
            path: archive.path().to_owned(),
            source,
        })?
        .len();
    Ok(Bundled {
        file: ExtraFile {
            path: archive.path().to_owned(),
            entry: format!("{PACKS_DIR}/{name}-{version}.tar.gz"),
            size,
        },
        _archive: Some(archive),
    })
}

/// Archives `dir` under `<name>/`, deterministically.
fn write_pack(dir: &Path, name: &str, out: &File) -> io::Result<()> {
    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(BufWriter::new(out), flate2::Compression::default());
    let mut tar = tar::Builder::new(gzip);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut entries = Vec::new();
    list(dir, Path::new(""), &mut entries)?;
    entries.sort();
    for (relative, is_dir) in entries {
        let archived = Path::new(name).join(&relative);
        let source = dir.join(&relative);
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if is_dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, &archived, io::empty())?;
        } else {
            let metadata = fs::metadata(&source)?;
            let executable = executable(&metadata);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_size(metadata.len());
            tar.append_data(&mut header, &archived, File::open(&source)?)?;
        }
    }
    tar.into_inner()?.finish()?.flush()
}

#[cfg(unix)]
fn executable(metadata: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn executable(_: &fs::Metadata) -> bool {
    false
}

/// Every file and directory below `dir/relative`, as relative paths.
fn list(dir: &Path, relative: &Path, out: &mut Vec<(PathBuf, bool)>) -> io::Result<()> {
    for entry in fs::read_dir(dir.join(relative))? {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is a symlink; packs hold files only", path.display()),
            ));
        }
        if kind.is_dir() {
            out.push((path.clone(), true));
            list(dir, &path, out)?;
        } else {
            out.push((path, false));
        }
    }
    Ok(())
}

/// An archive carried as it is under `dir/<file name>`.
fn copied(path: &Path, flag: &'static str, dir: &str) -> Result<Bundled> {
    let size = fs::metadata(path)
        .map_err(|source| Error::InputMissing {
            flag,
            path: path.to_owned(),
            source,
        })?
        .len();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| invalid(path, flag, "the file name is not UTF-8".into()))?;
    if !(name.ends_with(".tar.gz") || name.ends_with(".tgz")) {
        return Err(invalid(
            path,
            flag,
            "the importer reads packs and charts named *.tar.gz or *.tgz".into(),
        ));
    }
    Ok(Bundled {
        file: ExtraFile {
            path: path.to_owned(),
            entry: format!("{dir}/{name}"),
            size,
        },
        _archive: None,
    })
}

/// The name and version in `descriptor_name` (`pack.json`, `Chart.yaml`)
/// at the root of a gzip tar or one directory down.
fn archive_descriptor(
    path: &Path,
    flag: &'static str,
    descriptor_name: &str,
) -> Result<(String, String)> {
    let file = File::open(path).map_err(|source| Error::InputMissing {
        flag,
        path: path.to_owned(),
        source,
    })?;
    let unreadable = |e: io::Error| invalid(path, flag, format!("not a readable .tar.gz: {e}"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let entry_path = entry.path().map_err(unreadable)?.into_owned();
        let parts: Vec<_> = entry_path
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        let named = parts
            .last()
            .is_some_and(|c| c.as_os_str() == descriptor_name);
        if !named || parts.len() > 2 || entry.size() > MAX_DESCRIPTOR_BYTES {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(unreadable)?;
        return descriptor(&bytes, path, flag, descriptor_name);
    }
    Err(invalid(
        path,
        flag,
        format!("no {descriptor_name} at the archive's root or one directory down"),
    ))
}

/// Parses a descriptor (JSON is YAML) and insists on a name and a version.
fn descriptor(
    bytes: &[u8],
    path: &Path,
    flag: &'static str,
    descriptor_name: &str,
) -> Result<(String, String)> {
    let parsed: Descriptor = serde_yaml_ng::from_slice(bytes)
        .map_err(|e| invalid(path, flag, format!("{descriptor_name} is not valid: {e}")))?;
    let name = parsed
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| invalid(path, flag, format!("{descriptor_name} has no name")))?;
    let version = match parsed.version {
        Some(serde_yaml_ng::Value::String(v)) if !v.trim().is_empty() => v,
        Some(serde_yaml_ng::Value::Number(n)) => n.to_string(),
        _ => {
            return Err(invalid(
                path,
                flag,
                format!("{descriptor_name} has no version"),
            ));
        }
    };
    let safe = |text: &str| {
        !text.contains('/') && !text.contains("..") && !text.chars().any(char::is_whitespace)
    };
    if !safe(&name) || !safe(&version) {
        return Err(invalid(
            path,
            flag,
            format!("{descriptor_name} name {name:?} or version {version:?} cannot be a file name"),
        ));
    }
    Ok((name, version))
}

fn invalid(path: &Path, flag: &'static str, reason: String) -> Error {
    Error::InputInvalid {
        flag,
        path: path.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack_dir(root: &Path, pack_json: &str) -> PathBuf {
        let dir = root.join("nginx-pack");
        fs::create_dir_all(dir.join("charts")).expect("mkdir");
        fs::write(dir.join("pack.json"), pack_json).expect("pack.json");
        fs::write(dir.join("values.yaml"), "pack: {}\n").expect("values");
        fs::write(dir.join("charts/README"), "x").expect("file");
        dir
    }

    #[test]
    fn a_pack_directory_is_archived_the_same_way_every_time() {
        let work = tempfile::tempdir().expect("tempdir");
        let dir = pack_dir(work.path(), r#"{"name":"nginx","version":"1.2.3"}"#);
        let first = pack(&dir, work.path()).expect("packed");
        assert_eq!(first.file.entry, "packs/nginx-1.2.3.tar.gz");
        let second = pack(&dir, work.path()).expect("packed");
        let a = fs::read(&first.file.path).expect("read");
        let b = fs::read(&second.file.path).expect("read");
        assert_eq!(a, b);
        let (name, version) =
            archive_descriptor(&first.file.path, "--pack", "pack.json").expect("pack.json");
        assert_eq!((name.as_str(), version.as_str()), ("nginx", "1.2.3"));
    }

    fn chart_archive(dir: &Path, chart_yaml: &str) -> PathBuf {
        let path = dir.join("mychart-0.1.0.tgz");
        let gzip = flate2::write::GzEncoder::new(
            File::create(&path).expect("create"),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gzip);
        let mut header = tar::Header::new_gnu();
        header.set_size(chart_yaml.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "mychart/Chart.yaml", chart_yaml.as_bytes())
            .expect("append");
        tar.into_inner().expect("tar").finish().expect("gzip");
        path
    }

    #[test]
    fn charts_need_a_name_and_a_version() {
        let work = tempfile::tempdir().expect("tempdir");
        let good = chart_archive(
            work.path(),
            "apiVersion: v2\nname: mychart\nversion: 0.1.0\n",
        );
        let bundled = charts(&[good]).expect("accepted");
        assert_eq!(bundled[0].file.entry, "charts/mychart-0.1.0.tgz");
        let bad = chart_archive(work.path(), "apiVersion: v2\nname: mychart\n");
        let err = charts(&[bad]).err().expect("refused");
        assert!(
            err.to_string().contains("Chart.yaml has no version"),
            "{err}"
        );
        assert_eq!(err.class(), crate::FailureClass::Config);
    }

    #[test]
    fn a_pack_without_a_version_or_pack_json_is_refused() {
        let work = tempfile::tempdir().expect("tempdir");
        let dir = pack_dir(work.path(), r#"{"name":"nginx"}"#);
        let err = pack(&dir, work.path()).err().expect("refused");
        assert!(err.to_string().contains("has no version"), "{err}");
        assert_eq!(err.class(), crate::FailureClass::Config);
        fs::remove_file(dir.join("pack.json")).expect("rm");
        let err = pack(&dir, work.path()).err().expect("refused");
        assert!(err.to_string().contains("needs a pack.json"), "{err}");
    }
}
