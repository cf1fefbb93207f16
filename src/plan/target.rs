//! Where an import writes: a registry (`host[:port][/prefix]`) or an OCI image
//! layout directory (`oci:DIR`).

pub use crate::read::names::is_path_component;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The destination of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An OCI distribution registry, with an optional repository prefix.
    Registry {
        /// `host` or `host:port`.
        host: String,
        /// Repository path prefix without leading or trailing `/` (may be empty).
        prefix: String,
    },
    /// An OCI image layout directory, created if absent.
    Layout {
        /// The directory.
        dir: PathBuf,
    },
}

/// A target string that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid target {value:?}: {reason}")]
pub struct InvalidTarget {
    /// What was given.
    pub value: String,
    /// Why it cannot be used.
    pub reason: String,
}

impl FromStr for Target {
    type Err = InvalidTarget;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| InvalidTarget {
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(dir) = s.strip_prefix("oci:") {
            if dir.is_empty() {
                return Err(invalid("oci: needs a directory, e.g. oci:./mirror"));
            }
            return Ok(Target::Layout {
                dir: PathBuf::from(dir),
            });
        }
        if s.contains("://") {
            return Err(invalid(
                "give host[:port][/prefix] without a scheme; use --plain-http for HTTP",
            ));
        }
        let trimmed = s.trim_end_matches('/');
        let (host, prefix) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        if host.is_empty() {
            return Err(invalid("the registry host is empty"));
        }
        let host_ok = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
        if !host_ok {
            return Err(invalid(
                "the registry host has characters a host name cannot have",
            ));
        }
        if !prefix.is_empty() && !prefix.split('/').all(is_path_component) {
            return Err(invalid(
                "each prefix component must be lowercase letters, digits and . _ - separators",
            ));
        }
        Ok(Target::Registry {
            host: host.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Registry { host, prefix } if prefix.is_empty() => write!(f, "{host}"),
            Target::Registry { host, prefix } => write!(f, "{host}/{prefix}"),
            Target::Layout { dir } => write!(f, "oci:{}", dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_targets_with_and_without_prefix() {
        assert_eq!(
            "harbor.local/spectro-images".parse::<Target>(),
            Ok(Target::Registry {
                host: "harbor.local".into(),
                prefix: "spectro-images".into()
            })
        );
        assert_eq!(
            "127.0.0.1:5000".parse::<Target>(),
            Ok(Target::Registry {
                host: "127.0.0.1:5000".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            "oci:./mirror".parse::<Target>(),
            Ok(Target::Layout {
                dir: PathBuf::from("./mirror")
            })
        );
    }

    #[test]
    fn rejects_schemes_and_bad_prefixes() {
        assert!("https://harbor.local".parse::<Target>().is_err());
        assert!("harbor.local/Upper".parse::<Target>().is_err());
        assert!("harbor.local/a//b".parse::<Target>().is_err());
        assert!("oci:".parse::<Target>().is_err());
    }
}
