//! Several bundles in one command: which bundles a list of files and folders
//! names, which files in those folders have no partner, and the verdict
//! lines and exit code of a run over all of them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::FailureClass;
use crate::verify::{self, VerifiedBundle, VerifiedBy};
use crate::watch::scan::{is_bundle_name, is_candidate_name};

/// The bundles and partnerless signatures named by the command's paths.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Bundle files, in the order the paths named them (a folder's sorted
    /// by name), each once.
    pub bundles: Vec<PathBuf>,
    /// Signature files in the folders that no bundle there pairs with.
    pub lone_signatures: Vec<PathBuf>,
    /// Whether the paths were exactly one file, which keeps the one-bundle
    /// output the commands always had.
    pub single_file: bool,
}

/// Why the paths cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path given does not exist or a folder cannot be listed.
    #[error("cannot read {}", path.display())]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The paths hold no bundle at all.
    #[error("no bundle (*.zst) in {paths}")]
    NoBundles {
        /// The paths, comma separated.
        paths: String,
    },
}

impl Error {
    /// A path the operator typed wrongly is a usage error.
    pub fn class(&self) -> FailureClass {
        FailureClass::Config
    }
}

/// Resolves the command's paths: a file is a bundle, whatever its name; a
/// folder means every `*.zst` in it (and in its subfolders when
/// `recursive`), sorted by name. Hidden files and partial copies are left
/// out, as the daemon leaves them out.
pub fn select(paths: &[PathBuf], recursive: bool) -> Result<Selection, Error> {
    let mut selection = Selection {
        single_file: paths.len() == 1,
        ..Selection::default()
    };
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|source| Error::Unreadable {
            path: path.clone(),
            source,
        })?;
        if metadata.is_dir() {
            selection.single_file = false;
            select_folder(path, recursive, &mut selection)?;
        } else if !selection.bundles.contains(path) {
            selection.bundles.push(path.clone());
        }
    }
    if selection.bundles.is_empty() {
        return Err(Error::NoBundles {
            paths: paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(selection)
}

fn select_folder(dir: &Path, recursive: bool, selection: &mut Selection) -> Result<(), Error> {
    let unreadable = |source| Error::Unreadable {
        path: dir.to_owned(),
        source,
    };
    let mut files = BTreeSet::new();
    let mut folders = BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_candidate_name(&name) {
            continue;
        }
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                folders.insert(path);
            }
            Ok(m) if m.is_file() => {
                files.insert(name);
            }
            _ => {}
        }
    }
    let bundles: Vec<&String> = files.iter().filter(|n| is_bundle_name(n)).collect();
    let paired: BTreeSet<String> = bundles
        .iter()
        .flat_map(|bundle| verify::signature_candidates(Path::new(bundle.as_str())))
        .map(|p| p.display().to_string())
        .collect();
    for name in &files {
        if is_bundle_name(name) {
            push_new(&mut selection.bundles, dir.join(name));
        } else if verify::is_signature_name(name) && !paired.contains(name) {
            push_new(&mut selection.lone_signatures, dir.join(name));
        }
    }
    if recursive {
        for folder in folders {
            select_folder(&folder, recursive, selection)?;
        }
    }
    Ok(())
}

fn push_new(list: &mut Vec<PathBuf>, path: PathBuf) {
    if !list.contains(&path) {
        list.push(path);
    }
}

/// What `verify` found for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The bundle's signature verified.
    Verified,
    /// The bundle has a signature that does not verify, or cannot be read.
    Failed,
    /// A bundle without a signature, or a signature without its bundle.
    Unpaired,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Failed => "FAILED",
            Verdict::Unpaired => "UNPAIRED",
        }
    }
}

/// One line of `verify`'s answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyLine {
    /// The bundle or signature file.
    pub file: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The signature that verified it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The key that verified it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<VerifiedBy>,
    /// The bundle's digest, when it verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Why it did not verify, or what its missing partner is called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The exit-code class of a failure (not serialized).
    #[serde(skip)]
    pub class: Option<FailureClass>,
}

impl VerifyLine {
    /// The line of a bundle whose signature verified.
    pub fn verified(verified: &VerifiedBundle) -> Self {
        VerifyLine {
            file: verified.path().display().to_string(),
            verdict: Verdict::Verified,
            signature: Some(verified.signature_path().display().to_string()),
            verified_by: Some(verified.key().clone()),
            digest: Some(verified.digest()),
            reason: None,
            class: None,
        }
    }

    /// The line of a bundle that did not verify.
    pub fn failed(bundle: &Path, error: &verify::Error) -> Self {
        let verdict = match error {
            verify::Error::NoSignature { .. } => Verdict::Unpaired,
            _ => Verdict::Failed,
        };
        VerifyLine {
            file: bundle.display().to_string(),
            verdict,
            signature: None,
            verified_by: None,
            digest: None,
            reason: Some(crate::report::error_chain(error)),
            class: Some(error.class()),
        }
    }

    /// The line of a signature that no bundle beside it pairs with.
    pub fn lone_signature(signature: &Path) -> Self {
        let name = signature
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        VerifyLine {
            file: signature.display().to_string(),
            verdict: Verdict::Unpaired,
            signature: None,
            verified_by: None,
            digest: None,
            reason: Some(format!(
                "signature without its bundle ({} is missing)",
                verify::bundles_for_signature(&name).join(" or ")
            )),
            class: Some(FailureClass::Integrity),
        }
    }

    /// The text of the line: file, verdict, then the key or the reason.
    pub fn text(&self, width: usize) -> String {
        let detail = match (&self.verified_by, &self.reason) {
            (Some(key), _) => format!(
                "by {} ({}, {}) with {}",
                key.label,
                key.algorithm,
                key.fingerprint,
                self.signature
                    .as_deref()
                    .map(Path::new)
                    .and_then(Path::file_name)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            (None, Some(reason)) => reason.clone(),
            (None, None) => String::new(),
        };
        format!(
            "{:<width$}  {:<8}  {detail}",
            self.file,
            self.verdict.label()
        )
    }
}

/// The summary line after the verdicts of `bundles` and the lines of
/// `lone_signatures` signatures without a bundle.
pub fn verify_summary(bundles: &[VerifyLine], lone_signatures: usize) -> String {
    let count = |verdict| bundles.iter().filter(|l| l.verdict == verdict).count();
    format!(
        "{} bundle(s): {} verified, {} failed, {} without a signature; {} signature(s) without a bundle",
        bundles.len(),
        count(Verdict::Verified),
        count(Verdict::Failed),
        count(Verdict::Unpaired),
        lone_signatures
    )
}

/// The worst class among failures: transport (4) over integrity (3) over
/// configuration (2); `None` when everything succeeded.
pub fn worst(classes: impl IntoIterator<Item = FailureClass>) -> Option<FailureClass> {
    classes.into_iter().max_by_key(|class| class.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), b"x").expect("write");
    }

    #[test]
    fn a_folder_means_its_bundles_sorted_and_its_lone_signatures() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "kubernetes-1.32.3.zst",
            "kubernetes-1.32.3.tar.sig.bin",
            "cni-calico-3.29.2.zst",
            "cni-calico-3.29.2.sig.bin",
            "orphan-1.0.sig.bin",
            "public_key.pem",
            ".hidden.zst",
            "copying.zst.part",
        ] {
            touch(dir.path(), name);
        }
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        touch(&dir.path().join("sub"), "deep.zst");
        let flat = select(&[dir.path().to_owned()], false).expect("select");
        assert_eq!(
            flat.bundles,
            [
                dir.path().join("cni-calico-3.29.2.zst"),
                dir.path().join("kubernetes-1.32.3.zst")
            ]
        );
        assert_eq!(
            flat.lone_signatures,
            [dir.path().join("orphan-1.0.sig.bin")]
        );
        assert!(!flat.single_file);
        let deep = select(&[dir.path().to_owned()], true).expect("select");
        assert_eq!(deep.bundles.len(), 3);
        assert_eq!(deep.bundles[2], dir.path().join("sub/deep.zst"));
    }

    #[test]
    fn one_file_is_a_bundle_whatever_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(dir.path(), "bundle.bin");
        let selection = select(&[dir.path().join("bundle.bin")], false).expect("select");
        assert!(selection.single_file);
        assert_eq!(selection.bundles, [dir.path().join("bundle.bin")]);
    }

    #[test]
    fn a_missing_path_and_an_empty_folder_are_usage_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = select(&[dir.path().join("nope.zst")], false).unwrap_err();
        assert!(matches!(missing, Error::Unreadable { .. }), "{missing}");
        let empty = select(&[dir.path().to_owned()], false).unwrap_err();
        assert!(matches!(empty, Error::NoBundles { .. }), "{empty}");
        touch(dir.path(), "lone.tar.sig.bin");
        let signatures_only = select(&[dir.path().to_owned()], false).unwrap_err();
        assert!(
            matches!(signatures_only, Error::NoBundles { .. }),
            "{signatures_only}"
        );
        assert_eq!(empty.class(), FailureClass::Config);
    }

    #[test]
    fn the_worst_failure_decides_the_exit_code() {
        use FailureClass::*;
        assert_eq!(worst([]), None);
        assert_eq!(worst([Integrity, Config]), Some(Integrity));
        assert_eq!(worst([Integrity, Transport, Integrity]), Some(Transport));
    }
}
