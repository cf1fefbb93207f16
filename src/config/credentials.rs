//! Registry credentials that follow their files while the daemon runs.
//!
//! `registry.password_file` and `registry.auth_file` are usually a mounted
//! Kubernetes Secret, which is rotated by swapping the file underneath the
//! running process. [`CredentialFiles::current`] looks at the files before
//! each import attempt and reads them again when one changed (size, mtime or
//! inode), so a rotated password is used from the next attempt on without a
//! restart. A file that cannot be read mid-rotation keeps the last good
//! credentials and is tried again at the next attempt.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use super::error::Error;
use super::schema::DaemonConfig;
use crate::plan::Target;
use crate::push::registry::auth::{self, Credentials};

/// The credential files of a registry target and what they last held.
pub struct CredentialFiles {
    config: DaemonConfig,
    host: String,
    files: Vec<PathBuf>,
    last: Mutex<Loaded>,
}

/// What a file looked like when it was read; `None` when it did not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    device: u64,
    inode: u64,
}

struct Loaded {
    stamps: Vec<Option<Stamp>>,
    credentials: Credentials,
}

impl std::fmt::Debug for CredentialFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialFiles")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Option<Stamp>> {
    files
        .iter()
        .map(|file| {
            std::fs::metadata(file).ok().map(|m| Stamp {
                len: m.len(),
                modified: m.modified().ok(),
                device: m.dev(),
                inode: m.ino(),
            })
        })
        .collect()
}

impl DaemonConfig {
    /// The files the registry credentials come from, read now; `None` for an
    /// `oci:DIR` target. See [`CredentialFiles::current`].
    pub fn credential_files(&self) -> Result<Option<CredentialFiles>, Error> {
        let Target::Registry { host, .. } = self.target()? else {
            return Ok(None);
        };
        let registry = &self.registry;
        let files: Vec<PathBuf> = match (&registry.username, &registry.password_file) {
            (Some(_), Some(path)) => vec![path.clone()],
            _ => registry
                .auth_file
                .clone()
                .or_else(auth::default_auth_file)
                .into_iter()
                .collect(),
        };
        let stamps = stamps(&files);
        let credentials = self.credentials(&host)?;
        Ok(Some(CredentialFiles {
            config: self.clone(),
            host,
            files,
            last: Mutex::new(Loaded {
                stamps,
                credentials,
            }),
        }))
    }
}

impl CredentialFiles {
    /// The credentials to use now: read again if a file changed since the
    /// last read, else the ones read before.
    pub fn current(&self) -> Credentials {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = stamps(&self.files);
        if now != last.stamps {
            match self.config.credentials(&self.host) {
                Ok(credentials) => {
                    tracing::info!(files = ?self.files, "registry credentials changed on disk; using the new ones");
                    *last = Loaded {
                        stamps: now,
                        credentials,
                    };
                }
                Err(error) => {
                    tracing::warn!(error = %crate::report::error_chain(&error), "cannot read the changed registry credentials; keeping the previous ones");
                }
            }
        }
        last.credentials.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegistrySection;

    fn config(password_file: &std::path::Path) -> DaemonConfig {
        DaemonConfig {
            registry: RegistrySection {
                target: "127.0.0.1:5000/mirror".to_owned(),
                username: Some("robot".to_owned()),
                password_file: Some(password_file.to_owned()),
                ..RegistrySection::default()
            },
            ..DaemonConfig::default()
        }
    }

    fn password(credentials: &Credentials) -> Option<&str> {
        match credentials {
            Credentials::Basic { password, .. } => Some(password),
            Credentials::Anonymous => None,
        }
    }

    #[test]
    fn a_rotated_password_file_is_read_again_and_a_broken_one_keeps_the_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("password");
        std::fs::write(&file, "first\n").expect("write");
        let files = config(&file)
            .credential_files()
            .expect("readable")
            .expect("a registry target");
        assert_eq!(password(&files.current()), Some("first"));

        // A Secret rotation replaces the file; same length, new inode.
        let next = dir.path().join("password.new");
        std::fs::write(&next, "secnd\n").expect("write");
        std::fs::rename(&next, &file).expect("rename");
        assert_eq!(password(&files.current()), Some("secnd"));

        std::fs::write(&file, "").expect("empty the file");
        assert_eq!(password(&files.current()), Some("secnd"));
        std::fs::write(&file, "third-one\n").expect("write");
        assert_eq!(password(&files.current()), Some("third-one"));
    }

    #[test]
    fn a_layout_target_has_no_credential_files() {
        let config = DaemonConfig {
            registry: RegistrySection {
                target: "oci:/tmp/mirror".to_owned(),
                ..RegistrySection::default()
            },
            ..DaemonConfig::default()
        };
        assert!(
            config
                .credential_files()
                .expect("no files to read")
                .is_none()
        );
    }
}
