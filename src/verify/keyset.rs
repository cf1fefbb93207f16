//! The set of keys a bundle may be signed with, loaded from files and directories.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use super::keys::TrustedKey;
use super::sigstore::{KeylessConfig, KeylessTrust};

/// Every key currently trusted to sign bundles, and the keyless signers
/// (certificate identities under a Sigstore trusted root) a bundle's
/// `X.sigstore.json` may name instead.
///
/// Holding several keys lets operators rotate signing keys without a flag
/// day: bundles signed with the old or the new key both verify while both
/// are configured.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
    keyless: Vec<KeylessTrust>,
}

impl TrustedKeys {
    /// Loads keys from each path: a PEM file, or a directory whose `*.pem`
    /// and `*.pub` files are loaded in name order (so reports are stable).
    ///
    /// Any unreadable or unparsable key fails the whole load: silently
    /// skipping a key the operator meant to trust would turn a typo into
    /// rejected bundles that are hard to diagnose.
    pub fn load(paths: &[PathBuf]) -> Result<Self> {
        let mut keys = Vec::new();
        for path in paths {
            let metadata = fs::metadata(path).map_err(|source| Error::KeyRead {
                path: path.clone(),
                source,
            })?;
            if metadata.is_dir() {
                for file in key_files_in(path)? {
                    keys.push(TrustedKey::from_pem_file(&file)?);
                }
            } else {
                keys.push(TrustedKey::from_pem_file(path)?);
            }
        }
        let searched = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Self::from_keys(keys, &searched)
    }

    /// Loads the keys of `paths` (none at all is fine when `keyless` is not
    /// empty) and every keyless signer of `keyless`, each with its trusted
    /// root. Fails when nothing at all would be trusted.
    pub fn load_with_keyless(paths: &[PathBuf], keyless: &[KeylessConfig]) -> Result<Self> {
        let mut set = if paths.is_empty() && !keyless.is_empty() {
            Self {
                keys: Vec::new(),
                keyless: Vec::new(),
            }
        } else {
            Self::load(paths)?
        };
        set.keyless = keyless
            .iter()
            .map(KeylessTrust::load)
            .collect::<Result<_>>()?;
        Ok(set)
    }

    /// Builds a set from keys already parsed, e.g. from PEM text embedded in
    /// a configuration file. Fails if `keys` is empty.
    pub fn new(keys: Vec<TrustedKey>) -> Result<Self> {
        Self::from_keys(keys, "the configured key list")
    }

    fn from_keys(keys: Vec<TrustedKey>, searched: &str) -> Result<Self> {
        // The same key reachable twice (a file and a directory holding it)
        // would only be verified twice; the first label wins.
        let mut unique: Vec<TrustedKey> = Vec::with_capacity(keys.len());
        for key in keys {
            if !unique.iter().any(|k| k.fingerprint() == key.fingerprint()) {
                unique.push(key);
            }
        }
        if unique.is_empty() {
            let paths = if searched.is_empty() {
                "(no paths given)".to_owned()
            } else {
                searched.to_owned()
            };
            return Err(Error::NoTrustedKeys { paths });
        }
        Ok(Self {
            keys: unique,
            keyless: Vec::new(),
        })
    }

    /// How many distinct keys are trusted; error messages quote it.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True only for a set that trusts keyless signers alone
    /// ([`TrustedKeys::load_with_keyless`]).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keyless signers, in the order they are tried.
    pub fn keyless(&self) -> &[KeylessTrust] {
        &self.keyless
    }

    /// The keys in the order they are tried.
    pub fn iter(&self) -> std::slice::Iter<'_, TrustedKey> {
        self.keys.iter()
    }
}

impl<'a> IntoIterator for &'a TrustedKeys {
    type Item = &'a TrustedKey;
    type IntoIter = std::slice::Iter<'a, TrustedKey>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

fn key_files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::KeyRead { path, source }
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error(dir))? {
        let path = entry.map_err(read_error(dir))?.path();
        let is_key_name = path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| ext.eq_ignore_ascii_case("pem") || ext.eq_ignore_ascii_case("pub"));
        // Follow symlinks: key directories are often populated from a
        // mounted secret whose entries are links.
        if is_key_name && fs::metadata(&path).map_err(read_error(&path))?.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
