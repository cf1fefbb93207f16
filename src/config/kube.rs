//! `kube`: whether and how the daemon uses the Kubernetes API (Events about
//! bundles, per-bundle Leases shared by replicas). What the daemon does with
//! it lives in [`crate::cluster`]; this is only the configuration.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `kube.enabled`: `auto` uses the API when running inside a pod (the
/// service-account token is mounted) and not elsewhere, so a plain
/// `airlock watch` on a host never waits for an API server.
pub const DEFAULT_KUBE_ENABLED: KubeMode = KubeMode::Auto;

/// `kube.lease_duration`: Kubernetes' own leader-election default. A replica
/// renews its bundle's Lease every third of it, so a slow API call or two is
/// ridden out; a replica that dies hands its bundle to another after at most
/// this long.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// The shortest `kube.lease_duration`: renewals every third of it must fit
/// an API round trip with room to spare.
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(2);

/// `kube.events`: an Event on the pod for each bundle outcome is what
/// `kubectl describe pod` and cluster event collectors show operators.
pub const DEFAULT_EVENTS: bool = true;

/// `kube.lease_retention`: a finished bundle's Lease tells the other replicas
/// it is done. A week covers a bundle kept on the drop volume through any
/// restart of the replicas (whose state may be an emptyDir); after that the
/// Lease is deleted so they do not pile up.
pub const DEFAULT_LEASE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether the daemon uses the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeMode {
    /// Inside a pod, yes; elsewhere, no.
    Auto,
    /// Always: in a pod with its service account, elsewhere from
    /// `KUBECONFIG` (or `~/.kube/config`).
    On,
    /// Never.
    Off,
}

impl KubeMode {
    fn name(self) -> &'static str {
        match self {
            KubeMode::Auto => "auto",
            KubeMode::On => "true",
            KubeMode::Off => "false",
        }
    }
}

impl fmt::Display for KubeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for KubeMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for KubeMode {
    /// A YAML boolean, or `auto`, `true` or `false` as text (environment
    /// variables are always text).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ModeVisitor;
        impl Visitor<'_> for ModeVisitor {
            type Value = KubeMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("auto, true or false")
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<KubeMode, E> {
                Ok(if value { KubeMode::On } else { KubeMode::Off })
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<KubeMode, E> {
                match value.to_ascii_lowercase().as_str() {
                    "auto" => Ok(KubeMode::Auto),
                    "true" => Ok(KubeMode::On),
                    "false" => Ok(KubeMode::Off),
                    _ => Err(E::custom(format!(
                        "{value:?} is not one of auto, true, false"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(ModeVisitor)
    }
}

/// `kube`: the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a map (the kube section)")]
pub struct KubeSection {
    /// `auto`, `true` or `false` (default [`DEFAULT_KUBE_ENABLED`]).
    pub enabled: KubeMode,
    /// The namespace of Leases and Events (default: `POD_NAMESPACE`, else
    /// the kubeconfig's).
    pub namespace: Option<String>,
    /// This replica's name as a Lease holder and Event reporter (default:
    /// `POD_NAME`, else the host name).
    pub identity: Option<String>,
    /// How long a bundle's Lease lasts without renewal (default
    /// [`DEFAULT_LEASE_DURATION`]).
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// Write an Event on the pod for each bundle outcome (default
    /// [`DEFAULT_EVENTS`]).
    pub events: bool,
    /// How long a finished bundle's Lease is kept before it is deleted
    /// (default [`DEFAULT_LEASE_RETENTION`]).
    #[serde(with = "humantime_serde")]
    pub lease_retention: Duration,
}

impl Default for KubeSection {
    fn default() -> Self {
        KubeSection {
            enabled: DEFAULT_KUBE_ENABLED,
            namespace: None,
            identity: None,
            lease_duration: DEFAULT_LEASE_DURATION,
            events: DEFAULT_EVENTS,
            lease_retention: DEFAULT_LEASE_RETENTION,
        }
    }
}

impl KubeSection {
    /// The checks of [`crate::config::DaemonConfig::validate`] for this
    /// section: the key and why it is unusable.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.lease_duration < MIN_LEASE_DURATION {
            return Err((
                "kube.lease_duration",
                format!(
                    "must be at least {}",
                    humantime::format_duration(MIN_LEASE_DURATION)
                ),
            ));
        }
        if self.lease_retention < self.lease_duration {
            return Err((
                "kube.lease_retention",
                "is shorter than kube.lease_duration".to_owned(),
            ));
        }
        if self.namespace.as_deref().is_some_and(str::is_empty) {
            return Err(("kube.namespace", "is empty".to_owned()));
        }
        if self.identity.as_deref().is_some_and(str::is_empty) {
            return Err(("kube.identity", "is empty".to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_takes_booleans_and_auto() {
        let parse = |yaml: &str| serde_yaml_ng::from_str::<KubeSection>(yaml).map(|s| s.enabled);
        assert_eq!(parse("enabled: true").ok(), Some(KubeMode::On));
        assert_eq!(parse("enabled: false").ok(), Some(KubeMode::Off));
        assert_eq!(parse("enabled: auto").ok(), Some(KubeMode::Auto));
        assert_eq!(parse("enabled: 'TRUE'").ok(), Some(KubeMode::On));
        let error = parse("enabled: maybe").expect_err("refused");
        assert!(error.to_string().contains("auto, true, false"), "{error}");
    }

    #[test]
    fn a_lease_too_short_to_renew_is_refused() {
        let section = KubeSection {
            lease_duration: Duration::from_secs(1),
            ..KubeSection::default()
        };
        assert_eq!(section.check().map_err(|e| e.0), Err("kube.lease_duration"));
        assert!(KubeSection::default().check().is_ok());
    }
}
