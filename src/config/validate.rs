//! The checks a merged configuration must pass before the daemon starts.
//! Paths are not checked for existence: the daemon does that at start.

use std::path::PathBuf;
use std::time::Duration;

use super::defaults::{MAX_BLOB_CONCURRENCY, MAX_BUFFER_MIB, MIN_DOCUMENT_BYTES};
use super::error::Error;
use super::keys;
use super::schema::DaemonConfig;

impl DaemonConfig {
    /// Checks that the required settings are present and that every setting
    /// is usable, alone and together. [`DaemonConfig::load`] calls it; call it
    /// again after changing a loaded configuration.
    pub fn validate(&self) -> Result<(), Error> {
        required_list("drop.dirs", &self.drop.dirs)?;
        if self.trust.keyless.is_empty() {
            required_list("trust.public_keys", &self.trust.public_keys)?;
        } else {
            paths("trust.public_keys", &self.trust.public_keys)?;
        }
        for (index, entry) in self.trust.keyless.iter().enumerate() {
            if entry.trusted_root.as_os_str().is_empty()
                || entry.identity.trim().is_empty()
                || entry.issuer.trim().is_empty()
            {
                return Err(invalid(
                    "trust.keyless",
                    format!(
                        "entry {} needs trusted_root, identity and issuer",
                        index + 1
                    ),
                ));
            }
        }
        if self.registry.target.is_empty() {
            return Err(missing("registry.target"));
        }
        self.target()?;
        self.plan_options()?;
        paths("registry.ca_cert", &self.registry.ca_cert)?;
        if self.state_dir.as_os_str().is_empty() {
            return Err(invalid("state_dir", "is empty"));
        }

        positive("drop.settle_time", self.drop.settle_time)?;
        positive("registry.answer_timeout", self.registry.answer_timeout)?;
        positive("registry.idle_timeout", self.registry.idle_timeout)?;
        positive("drop.poll_interval", self.drop.poll_interval)?;
        positive("drop.rescan_interval", self.drop.rescan_interval)?;
        positive("drop.unpaired_warn_after", self.drop.unpaired_warn_after)?;
        positive("state.retention", self.state.retention)?;
        if self.state.max_records == 0 {
            return Err(invalid("state.max_records", "must be at least 1"));
        }
        positive(
            "imports.retry_initial_backoff",
            self.imports.retry_initial_backoff,
        )?;
        if self.imports.retry_max_backoff < self.imports.retry_initial_backoff {
            return Err(invalid(
                "imports.retry_max_backoff",
                "is shorter than imports.retry_initial_backoff",
            ));
        }

        if self.imports.concurrency == 0 {
            return Err(invalid("imports.concurrency", "must be at least 1"));
        }
        if !(1..=MAX_BLOB_CONCURRENCY).contains(&self.registry.blob_concurrency) {
            return Err(invalid(
                "registry.blob_concurrency",
                format!("must be between 1 and {MAX_BLOB_CONCURRENCY}"),
            ));
        }

        if !(1..=MAX_BUFFER_MIB).contains(&self.registry.buffer_mib) {
            return Err(invalid(
                "registry.buffer_mib",
                format!("must be between 1 and {MAX_BUFFER_MIB}"),
            ));
        }

        if self.read.max_document_bytes < MIN_DOCUMENT_BYTES {
            return Err(invalid(
                "read.max_document_bytes",
                format!("must be at least {MIN_DOCUMENT_BYTES}"),
            ));
        }
        if self.read.max_documents_total_bytes < self.read.max_document_bytes {
            return Err(invalid(
                "read.max_documents_total_bytes",
                "is smaller than read.max_document_bytes",
            ));
        }
        for (key, value) in [
            ("read.max_entries", self.read.max_entries),
            (
                "read.max_uncompressed_bytes",
                self.read.max_uncompressed_bytes,
            ),
            ("read.max_expansion_ratio", self.read.max_expansion_ratio),
            ("read.max_manifests", self.read.max_manifests),
            ("read.max_path_bytes", self.read.max_path_bytes),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }

        self.check_credentials()?;
        self.check_client_identity()?;
        self.kube
            .check()
            .map_err(|(key, reason)| invalid(key, reason))?;
        self.plan_options()?;

        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid(
                "log.level",
                format!("{:?} is not a tracing filter: {e}", self.log.level),
            ));
        }
        Ok(())
    }

    /// A client certificate without its key (or the other way round) is
    /// refused here, not found out at the first TLS handshake.
    fn check_client_identity(&self) -> Result<(), Error> {
        let registry = &self.registry;
        let empty =
            |path: &Option<PathBuf>| path.as_ref().is_some_and(|p| p.as_os_str().is_empty());
        if empty(&registry.client_cert) {
            return Err(invalid("registry.client_cert", "is empty"));
        }
        if empty(&registry.client_key) {
            return Err(invalid("registry.client_key", "is empty"));
        }
        match (&registry.client_cert, &registry.client_key) {
            (Some(_), None) => Err(invalid("registry.client_cert", "needs registry.client_key")),
            (None, Some(_)) => Err(invalid("registry.client_key", "needs registry.client_cert")),
            _ => Ok(()),
        }
    }

    fn check_credentials(&self) -> Result<(), Error> {
        let registry = &self.registry;
        if registry
            .password_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid("registry.password_file", "is empty"));
        }
        if registry
            .auth_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid("registry.auth_file", "is empty"));
        }
        match (&registry.username, &registry.password_file) {
            (Some(username), _) if username.is_empty() => {
                Err(invalid("registry.username", "is empty"))
            }
            (Some(_), None) => Err(invalid(
                "registry.username",
                "needs registry.password_file (passwords are never given inline)",
            )),
            (None, Some(_)) => Err(invalid("registry.password_file", "needs registry.username")),
            (Some(_), Some(_)) if registry.auth_file.is_some() => Err(invalid(
                "registry.username",
                "conflicts with registry.auth_file: give one or the other",
            )),
            _ => Ok(()),
        }
    }
}

fn missing(key: &'static str) -> Error {
    let flag = keys::find(key).and_then(|k| k.flag).unwrap_or("no flag");
    Error::Missing {
        key,
        env: keys::env_var(key),
        flag,
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        key,
        reason: reason.into(),
    }
}

fn required_list(key: &'static str, list: &[PathBuf]) -> Result<(), Error> {
    if list.is_empty() {
        return Err(missing(key));
    }
    paths(key, list)
}

fn paths(key: &'static str, list: &[PathBuf]) -> Result<(), Error> {
    match list.iter().position(|p| p.as_os_str().is_empty()) {
        Some(index) => Err(invalid(key, format!("entry {} is empty", index + 1))),
        None => Ok(()),
    }
}

fn positive(key: &'static str, value: Duration) -> Result<(), Error> {
    if value.is_zero() {
        return Err(invalid(key, "must be longer than 0s"));
    }
    Ok(())
}
