//! Where a bundle's detached signature lives: the one naming rule that
//! `verify`, `inspect`, `import`, `watch` and `bundle create` share.
//!
//! Signatures arrive under several names. airlock writes `B.sig.bin` beside
//! `B.zst` (`B.tar.sig.bin` beside `B.tar.zst`); Artifact Studio's own
//! instructions pair `bundle-name.zst` with `bundle-name.tar.sig.bin`; other
//! tools append to the whole file name (`B.zst.sig.bin`, cosign's
//! `B.zst.sig`) or replace the extension (`B.sig`); a Sigstore bundle is
//! `B.sigstore.json` (or `B.zst.sigstore.json`, the name `cosign sign-blob
//! --bundle` users tend to give it). The candidates are tried
//! in a fixed order, so a folder holding several names pairs the same way
//! every time.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The extension of a bundle file.
const BUNDLE_SUFFIX: &str = ".zst";
/// The inner extension of a `B.tar.zst` bundle.
const TAR_SUFFIX: &str = ".tar";
/// The name airlock writes and the Artifact Studio export uses.
const SIG_BIN_SUFFIX: &str = ".sig.bin";
/// cosign's `sign-blob --output-signature` convention.
const SIG_SUFFIX: &str = ".sig";
/// A Sigstore bundle (`cosign sign-blob --bundle`, Sigstore clients).
const SIGSTORE_SUFFIX: &str = ".sigstore.json";

/// The signature file airlock writes for `bundle` (and the first name it
/// looks for): `X.zst` -> `X.sig.bin`, `X.tar.zst` -> `X.tar.sig.bin`; any
/// other name gets `.sig.bin` appended so the pairing is never ambiguous.
pub fn signature_path_for(bundle: &Path) -> PathBuf {
    sibling(bundle, &primary_name(&file_name(bundle)))
}

/// Every name a signature of `bundle` may have, in the order they are tried.
///
/// For `B.zst`: `B.sig.bin`, `B.tar.sig.bin`, `B.zst.sig.bin`, `B.zst.sig`,
/// `B.sig`, then the Sigstore bundles `B.sigstore.json`,
/// `B.zst.sigstore.json`. For `B.tar.zst`: `B.tar.sig.bin`, `B.sig.bin`,
/// then the same fallbacks (`B.tar.zst.sig.bin`, `B.tar.zst.sig`,
/// `B.tar.sig`, `B.tar.sigstore.json`, `B.tar.zst.sigstore.json`). For any
/// other name `N`: `N.sig.bin`, `N.sig`, `N.sigstore.json`.
pub fn signature_candidates(bundle: &Path) -> Vec<PathBuf> {
    candidate_names(&file_name(bundle))
        .iter()
        .map(|name| sibling(bundle, name))
        .collect()
}

/// The candidates of [`signature_candidates`] that exist as files, in rule
/// order. Empty when the bundle has no signature beside it.
pub fn signatures_beside(bundle: &Path) -> Vec<PathBuf> {
    signature_candidates(bundle)
        .into_iter()
        .filter(|path| std::fs::metadata(path).is_ok_and(|m| m.is_file()))
        .collect()
}

/// Whether `name` is a signature file name (`*.sig.bin`, `*.sig` or
/// `*.sigstore.json`), the partner of some bundle.
pub fn is_signature_name(name: &str) -> bool {
    name.ends_with(SIG_BIN_SUFFIX) || name.ends_with(SIG_SUFFIX) || name.ends_with(SIGSTORE_SUFFIX)
}

/// The bundle file names (in the same folder) whose candidates include the
/// signature `name`, most likely first; empty when `name` is no signature
/// name. `X.tar.sig.bin` may sign `X.tar.zst` or `X.zst`.
pub fn bundles_for_signature(name: &str) -> Vec<String> {
    let Some(stem) = name
        .strip_suffix(SIG_BIN_SUFFIX)
        .or_else(|| name.strip_suffix(SIGSTORE_SUFFIX))
        .or_else(|| name.strip_suffix(SIG_SUFFIX))
    else {
        return Vec::new();
    };
    let mut guesses = Vec::new();
    if stem.ends_with(BUNDLE_SUFFIX) {
        guesses.push(stem.to_owned());
    }
    guesses.push(format!("{stem}{BUNDLE_SUFFIX}"));
    match stem.strip_suffix(TAR_SUFFIX) {
        Some(base) => guesses.push(format!("{base}{BUNDLE_SUFFIX}")),
        None => guesses.push(format!("{stem}{TAR_SUFFIX}{BUNDLE_SUFFIX}")),
    }
    let mut bundles = Vec::new();
    for guess in guesses {
        if !bundles.contains(&guess) && candidate_names(&guess).iter().any(|c| c == name) {
            bundles.push(guess);
        }
    }
    bundles
}

fn primary_name(bundle: &str) -> String {
    match bundle.strip_suffix(BUNDLE_SUFFIX) {
        Some(stem) if is_bundle_stem(stem) => format!("{stem}{SIG_BIN_SUFFIX}"),
        _ => format!("{bundle}{SIG_BIN_SUFFIX}"),
    }
}

/// `.zst` alone is a hidden file with an empty stem, not a bundle of that
/// name, so it is treated as any other name.
fn is_bundle_stem(stem: &str) -> bool {
    !stem.is_empty()
}

fn candidate_names(bundle: &str) -> Vec<String> {
    let Some(stem) = bundle
        .strip_suffix(BUNDLE_SUFFIX)
        .filter(|s| is_bundle_stem(s))
    else {
        return vec![
            format!("{bundle}{SIG_BIN_SUFFIX}"),
            format!("{bundle}{SIG_SUFFIX}"),
            format!("{bundle}{SIGSTORE_SUFFIX}"),
        ];
    };
    let mut names = vec![format!("{stem}{SIG_BIN_SUFFIX}")];
    match stem.strip_suffix(TAR_SUFFIX).filter(|s| !s.is_empty()) {
        Some(base) => names.push(format!("{base}{SIG_BIN_SUFFIX}")),
        None => names.push(format!("{stem}{TAR_SUFFIX}{SIG_BIN_SUFFIX}")),
    }
    names.push(format!("{bundle}{SIG_BIN_SUFFIX}"));
    names.push(format!("{bundle}{SIG_SUFFIX}"));
    names.push(format!("{stem}{SIG_SUFFIX}"));
    names.push(format!("{stem}{SIGSTORE_SUFFIX}"));
    names.push(format!("{bundle}{SIGSTORE_SUFFIX}"));
    names
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sibling(bundle: &Path, name: &str) -> PathBuf {
    match bundle.file_name() {
        Some(_) => bundle.with_file_name(name),
        None => {
            let mut whole: OsString = bundle.as_os_str().to_owned();
            whole.push(SIG_BIN_SUFFIX);
            PathBuf::from(whole)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(bundle: &str) -> PathBuf {
        signature_path_for(Path::new(bundle))
    }

    fn candidates(bundle: &str) -> Vec<String> {
        signature_candidates(Path::new(bundle))
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }

    #[test]
    fn zst_suffix_is_replaced() {
        assert_eq!(pair("x.zst"), PathBuf::from("x.sig.bin"));
        assert_eq!(
            pair("/media/usb/x.zst"),
            PathBuf::from("/media/usb/x.sig.bin")
        );
    }

    #[test]
    fn only_the_last_extension_is_replaced() {
        assert_eq!(
            pair("images-2024.tar.zst"),
            PathBuf::from("images-2024.tar.sig.bin")
        );
        assert_eq!(pair("v1.2.3.zst"), PathBuf::from("v1.2.3.sig.bin"));
    }

    #[test]
    fn other_names_get_the_suffix_appended() {
        assert_eq!(pair("bundle.tar"), PathBuf::from("bundle.tar.sig.bin"));
        assert_eq!(pair("bundle"), PathBuf::from("bundle.sig.bin"));
        assert_eq!(pair("bundle.zstd"), PathBuf::from("bundle.zstd.sig.bin"));
        assert_eq!(pair(".zst"), PathBuf::from(".zst.sig.bin"));
    }

    #[test]
    fn a_zst_bundle_tries_seven_names_in_order() {
        assert_eq!(
            candidates("/drop/bundle-name.zst"),
            [
                "/drop/bundle-name.sig.bin",
                "/drop/bundle-name.tar.sig.bin",
                "/drop/bundle-name.zst.sig.bin",
                "/drop/bundle-name.zst.sig",
                "/drop/bundle-name.sig",
                "/drop/bundle-name.sigstore.json",
                "/drop/bundle-name.zst.sigstore.json",
            ]
        );
    }

    #[test]
    fn a_tar_zst_bundle_tries_the_tar_name_first() {
        assert_eq!(
            candidates("b.tar.zst"),
            [
                "b.tar.sig.bin",
                "b.sig.bin",
                "b.tar.zst.sig.bin",
                "b.tar.zst.sig",
                "b.tar.sig",
                "b.tar.sigstore.json",
                "b.tar.zst.sigstore.json",
            ]
        );
    }

    #[test]
    fn other_names_try_three() {
        assert_eq!(
            candidates("b.tar"),
            ["b.tar.sig.bin", "b.tar.sig", "b.tar.sigstore.json"]
        );
        assert_eq!(
            candidates(".zst"),
            [".zst.sig.bin", ".zst.sig", ".zst.sigstore.json"]
        );
    }

    #[test]
    fn the_first_candidate_is_the_name_airlock_writes() {
        for bundle in ["a.zst", "a.tar.zst", "a.tar", "dir/v1.2.zst"] {
            assert_eq!(candidates(bundle)[0], pair(bundle).display().to_string());
        }
    }

    #[test]
    fn a_signature_names_the_bundles_it_may_sign() {
        assert_eq!(bundles_for_signature("a.sig.bin"), ["a.zst", "a.tar.zst"]);
        assert_eq!(
            bundles_for_signature("a.tar.sig.bin"),
            ["a.tar.zst", "a.zst"]
        );
        assert_eq!(bundles_for_signature("a.zst.sig.bin")[0], "a.zst");
        assert_eq!(bundles_for_signature("a.zst.sig")[0], "a.zst");
        assert_eq!(bundles_for_signature("a.sig"), ["a.zst"]);
        assert_eq!(bundles_for_signature("a.tar.sig"), ["a.tar.zst"]);
        assert_eq!(bundles_for_signature("a.sigstore.json"), ["a.zst"]);
        assert_eq!(bundles_for_signature("a.zst.sigstore.json")[0], "a.zst");
        assert_eq!(bundles_for_signature("a.tar.sigstore.json"), ["a.tar.zst"]);
        assert!(bundles_for_signature("key.pem").is_empty());
    }

    #[test]
    fn every_candidate_leads_back_to_its_bundle() {
        for bundle in ["a.zst", "a.tar.zst", "v1.2.3.zst"] {
            for candidate in candidates(bundle) {
                assert!(
                    bundles_for_signature(&candidate).contains(&bundle.to_owned()),
                    "{candidate} -> {bundle}"
                );
            }
        }
    }

    #[test]
    fn signatures_beside_lists_existing_candidates_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("b.zst");
        assert!(signatures_beside(&bundle).is_empty());
        std::fs::write(dir.path().join("b.sig"), b"x").expect("write");
        std::fs::write(dir.path().join("b.tar.sig.bin"), b"x").expect("write");
        std::fs::create_dir(dir.path().join("b.sig.bin")).expect("mkdir");
        assert_eq!(
            signatures_beside(&bundle),
            [dir.path().join("b.tar.sig.bin"), dir.path().join("b.sig")]
        );
    }
}
