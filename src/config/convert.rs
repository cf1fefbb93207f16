//! What the daemon builds from its configuration: the target, the registry
//! client settings with credentials, push options and retry policies.

use std::path::{Path, PathBuf};

use super::error::Error;
use super::schema::DaemonConfig;
use crate::plan::{PlanOptions, Target};
use crate::push::registry::auth::{self, Credentials};
use crate::push::registry::{ClientIdentity, RegistryConfig, RetryPolicy, Timeouts};
use crate::push::{DEFAULT_CHUNK_BYTES, PushOptions};
use crate::read::ReadLimits;

impl DaemonConfig {
    /// The parsed `registry.target`.
    pub fn target(&self) -> Result<Target, Error> {
        self.registry
            .target
            .parse()
            .map_err(|source| Error::Target { source })
    }

    /// What shapes each import's plan: `registry.pack_prefix`, checked to be
    /// a repository path (`/` at either end is dropped), and
    /// `imports.platforms` (checked by [`DaemonConfig::validate`]).
    pub fn plan_options(&self) -> Result<PlanOptions, Error> {
        let pack_prefix = match &self.registry.pack_prefix {
            None => None,
            Some(prefix) => {
                Some(
                    crate::plan::pack_prefix(prefix).map_err(|reason| Error::Invalid {
                        key: "registry.pack_prefix",
                        reason,
                    })?,
                )
            }
        };
        let platforms = self
            .imports
            .platforms
            .iter()
            .map(|p| {
                p.parse()
                    .map_err(|e: crate::plan::InvalidPlatform| Error::Invalid {
                        key: "imports.platforms",
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(PlanOptions {
            pack_prefix,
            platforms,
            on_existing_tag: self.imports.on_existing_tag,
            image_signatures: std::sync::Arc::new(
                crate::trust::ImageSignatureRules::load(&self.trust.image_signatures).map_err(
                    |e| Error::Invalid {
                        key: "trust.image_signatures",
                        reason: e.to_string(),
                    },
                )?,
            ),
        })
    }

    /// How to reach the registry, with credentials: `registry.username` with
    /// the password read from `registry.password_file` now, else the Docker
    /// config `registry.auth_file`, else the default Docker config when
    /// present, else anonymous. An `oci:DIR` target needs none of it and gets
    /// the default. Reads files, so call it where blocking is fine; the
    /// password is never logged (`Credentials`' `Debug` redacts it).
    pub fn registry_config(&self) -> Result<RegistryConfig, Error> {
        let Target::Registry { host, .. } = self.target()? else {
            return Ok(RegistryConfig::default());
        };
        let registry = &self.registry;
        let credentials = self.credentials(&host)?;
        Ok(RegistryConfig {
            host,
            plain_http: registry.plain_http,
            ca_certs: registry.ca_cert.clone(),
            insecure_skip_tls_verify: registry.insecure_skip_tls_verify,
            client_identity: self.client_identity(),
            credentials,
            retry: RetryPolicy::default(),
            token_realm_hosts: registry.token_realm_hosts.clone(),
            timeouts: Timeouts {
                answer: registry.answer_timeout,
                idle: registry.idle_timeout,
                ..Timeouts::default()
            },
            // The daemon attaches its metrics observer, if any.
            ..RegistryConfig::default()
        })
    }

    /// `registry.client_cert` with `registry.client_key`, when both are set
    /// ([`DaemonConfig::validate`] refuses one without the other).
    pub fn client_identity(&self) -> Option<ClientIdentity> {
        let registry = &self.registry;
        match (&registry.client_cert, &registry.client_key) {
            (Some(certificate), Some(key)) => Some(ClientIdentity {
                certificate: certificate.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    pub(super) fn credentials(&self, host: &str) -> Result<Credentials, Error> {
        let registry = &self.registry;
        if let (Some(username), Some(path)) = (&registry.username, &registry.password_file) {
            return Ok(Credentials::Basic {
                username: username.clone(),
                password: read_password(path)?,
            });
        }
        let path = match &registry.auth_file {
            Some(path) => path.clone(),
            None => match auth::default_auth_file() {
                Some(path) if path.exists() => path,
                _ => return Ok(Credentials::Anonymous),
            },
        };
        auth::credentials_from_auth_file(&path, host).map_err(|source| Error::AuthFile {
            path,
            source: Box::new(source),
        })
    }

    /// The key import attestations are signed with
    /// (`attestations.signing_key`), loaded now; `None` without one.
    pub fn attestor(&self) -> Result<Option<std::sync::Arc<crate::attest::Attestor>>, Error> {
        let Some(path) = &self.attestations.signing_key else {
            return Ok(None);
        };
        if let Target::Layout { .. } = self.target()? {
            return Err(Error::Invalid {
                key: "attestations.signing_key",
                reason: "attestations are written to registry targets only, not to an oci: layout"
                    .into(),
            });
        }
        crate::attest::Attestor::load(path)
            .map(|a| Some(std::sync::Arc::new(a)))
            .map_err(|e| Error::Invalid {
                key: "attestations.signing_key",
                reason: e.to_string(),
            })
    }

    /// The caps on what each import may read of a bundle (`read.*`), with
    /// `trust.max_bundle_age`.
    pub fn read_limits(&self) -> ReadLimits {
        ReadLimits {
            max_bundle_age: self.trust.max_bundle_age,
            ..self.read
        }
    }

    /// How each import pushes: `registry.blob_concurrency`,
    /// `registry.buffer_mib`, `registry.upload_mode` and
    /// `registry.staging_repository`.
    pub fn push_options(&self) -> PushOptions {
        PushOptions {
            concurrency: self.registry.blob_concurrency,
            buffer_bytes: self.registry.buffer_mib << 20,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            upload_mode: self.registry.upload_mode,
            staging_repository: Some(self.registry.staging_repository.clone()),
        }
    }

    /// The trusted key files and directories, for
    /// [`crate::verify::TrustedKeys::load`].
    pub fn public_key_paths(&self) -> &[PathBuf] {
        &self.trust.public_keys
    }

    /// When to retry a whole import after a transient failure: from
    /// `imports.retry_initial_backoff`, doubling with jitter up to
    /// `imports.retry_max_backoff`, without limit. Pass the attempt number
    /// (from 1) to [`RetryPolicy::delay`].
    pub fn import_retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff: self.imports.retry_initial_backoff,
            max_backoff: self.imports.retry_max_backoff,
        }
    }
}

/// The password in `path`, without one trailing newline (`\n` or `\r\n`), as
/// `echo "$TOKEN" > file` and Kubernetes Secrets created from files leave it.
fn read_password(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::PasswordFile {
        path: path.to_owned(),
        source,
    })?;
    let password = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(Error::EmptyPasswordFile {
            path: path.to_owned(),
        });
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn password_in(content: &[u8]) -> Result<String, Error> {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(content).expect("write");
        read_password(file.path())
    }

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(password_in(b"s3cret\n").expect("ok"), "s3cret");
        assert_eq!(password_in(b"s3cret\r\n").expect("ok"), "s3cret");
        assert_eq!(password_in(b"s3cret").expect("ok"), "s3cret");
        assert_eq!(password_in(b"s3cret\n\n").expect("ok"), "s3cret\n");
    }

    #[test]
    fn an_empty_password_file_is_refused() {
        assert!(matches!(
            password_in(b"\n"),
            Err(Error::EmptyPasswordFile { .. })
        ));
        assert!(matches!(
            password_in(b""),
            Err(Error::EmptyPasswordFile { .. })
        ));
    }

    #[test]
    fn the_import_retry_policy_never_gives_up() {
        let config = DaemonConfig::default();
        let policy = config.import_retry_policy();
        assert!(policy.delay(1_000_000, None).is_some());
        let cap = config.imports.retry_max_backoff;
        assert!(policy.delay(50, None).is_some_and(|d| d <= cap));
    }
}
