//! Putting a finished bundle and its signature in place, so that no reader
//! (a person, `airlock watch`, a sync job) ever sees a partial file or a
//! bundle next to a signature that is not its own.
//!
//! Both files are written under hidden temporary names in the output
//! directory (`airlock watch` ignores names starting with `.`), synced, and
//! renamed: the signature first, the bundle last. A watcher that sees the
//! new bundle therefore always finds its signature already there; replacing
//! an older bundle of the same name can only briefly pair the *old* bundle
//! with the new signature, which fails verification instead of importing
//! anything unsigned.

use std::fs::{self, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::error::{Error, Result};
use crate::durable;
use crate::verify::signature_path_for;

/// Mode of the published files (before the umask): readable by the
/// importing side's service account, as `cp` would leave them.
const OUTPUT_MODE: u32 = 0o644;

/// Where a bundle and its signature go.
#[derive(Debug, Clone)]
pub(super) struct Outputs {
    bundle: PathBuf,
    signature: PathBuf,
    dir: PathBuf,
    name: String,
}

impl Outputs {
    /// Checks `bundle` can be written: a `*.zst` name (what `airlock watch`
    /// picks up) in an existing directory.
    pub(super) fn new(bundle: &Path) -> Result<Self> {
        let invalid = |reason: &str| Error::OutputInvalid {
            path: bundle.to_owned(),
            reason: reason.to_owned(),
        };
        let name = bundle
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| invalid("has no UTF-8 file name"))?
            .to_owned();
        if !name.ends_with(".zst") || name.len() <= ".zst".len() {
            return Err(invalid(
                "a bundle's name must end in .zst (NAME.zst pairs with NAME.sig.bin)",
            ));
        }
        let dir = match bundle.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        if !fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Err(invalid(&format!(
                "the directory {} does not exist",
                dir.display()
            )));
        }
        if fs::metadata(bundle).is_ok_and(|m| m.is_dir()) {
            return Err(invalid("is a directory"));
        }
        Ok(Self {
            signature: signature_path_for(bundle),
            bundle: bundle.to_owned(),
            dir,
            name,
        })
    }

    /// The bundle file to create.
    pub(super) fn bundle(&self) -> &Path {
        &self.bundle
    }

    /// The directory the bundle goes into (where scratch files such as a
    /// pack archive are made, beside the temporary bundle).
    pub(super) fn directory(&self) -> &Path {
        &self.dir
    }

    /// The signature file that pairs with it (`NAME.sig.bin`).
    pub(super) fn signature(&self) -> &Path {
        &self.signature
    }

    /// A hidden temporary file beside the output, removed if dropped unpublished.
    pub(super) fn temporary(&self, what: &str) -> Result<NamedTempFile> {
        tempfile::Builder::new()
            .prefix(&format!(".{}.", self.name))
            .suffix(&format!(".{what}.partial"))
            .permissions(Permissions::from_mode(OUTPUT_MODE))
            .tempfile_in(&self.dir)
            .map_err(|source| Error::OutputIo {
                action: "create a temporary file in",
                path: self.dir.clone(),
                source,
            })
    }

    /// Writes the signature, then renames it and then the (already synced)
    /// bundle into place, and syncs the directory so both renames survive a
    /// power cut.
    pub(super) fn publish(&self, bundle: NamedTempFile, signature: &[u8]) -> Result<()> {
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| Error::OutputIo {
                action,
                path,
                source,
            }
        };
        let mut sig = self.temporary("sig")?;
        sig.write_all(signature)
            .map_err(io("write the signature", sig.path()))?;
        sig.as_file()
            .sync_all()
            .map_err(io("sync the signature to disk", sig.path()))?;
        sig.persist(&self.signature)
            .map_err(|e| io("rename the signature into place as", &self.signature)(e.error))?;
        if let Err(e) = bundle.persist(&self.bundle) {
            // A signature without its bundle would only confuse a watcher.
            let _ = fs::remove_file(&self.signature);
            return Err(io("rename the bundle into place as", &self.bundle)(e.error));
        }
        durable::sync_dir(&self.dir).map_err(io("sync the directory", &self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_end_in_zst_and_live_in_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Outputs::new(&dir.path().join("a.tar")).is_err());
        assert!(Outputs::new(&dir.path().join(".zst")).is_err());
        assert!(Outputs::new(&dir.path().join("missing/a.zst")).is_err());
        let outputs = Outputs::new(&dir.path().join("a.tar.zst")).unwrap();
        assert_eq!(outputs.signature(), dir.path().join("a.tar.sig.bin"));
    }

    #[test]
    fn publish_leaves_exactly_the_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let outputs = Outputs::new(&dir.path().join("b.zst")).unwrap();
        let mut bundle = outputs.temporary("zst").unwrap();
        bundle.write_all(b"bundle").unwrap();
        outputs.publish(bundle, b"sig").unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["b.sig.bin", "b.zst"]);
        assert_eq!(fs::read(dir.path().join("b.zst")).unwrap(), b"bundle");
        let mode = fs::metadata(dir.path().join("b.zst"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o600, 0o600);
    }
}
