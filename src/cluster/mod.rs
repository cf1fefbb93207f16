//! The Kubernetes API, as the daemon uses it: an Event on the pod for each
//! bundle outcome ([`BundleEvents`]), and one `coordination.k8s.io/v1` Lease
//! per bundle so that replicas sharing a drop volume import each bundle once
//! ([`BundleLeases`]).
//!
//! Only [`crate::daemon`] uses this module, and nothing below the daemon
//! knows it exists: verification, reading, planning and pushing are the
//! same with or without a cluster. With `kube.enabled: false` (or `auto`
//! outside a pod) [`Cluster::connect`] returns `None` without touching the
//! network, and the daemon behaves exactly as before.

mod events;
mod health;
mod lease;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use crate::config::{KubeMode, KubeSection};

pub use events::{BundleEvent, BundleEvents};
pub use health::ApiHealth;
pub use lease::{BundleLeases, Claim, LeaseGuard, LeaseOutcome, lease_name};

/// The longest any one API request may take. A Lease is renewed every third
/// of its duration, so a request must give up well before that.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variable naming this pod (the chart sets it from the
/// downward API).
pub const POD_NAME_VAR: &str = "POD_NAME";

/// The environment variable naming this pod's namespace.
pub const POD_NAMESPACE_VAR: &str = "POD_NAMESPACE";

/// Result type of the cluster module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No client configuration: neither a kubeconfig nor a pod's service
    /// account.
    #[error("kube.enabled: cannot configure a Kubernetes client")]
    Config {
        /// kube's explanation.
        #[source]
        source: kube::config::InferConfigError,
    },
    /// The client could not be built from its configuration (TLS, URL).
    #[error("kube.enabled: cannot build a Kubernetes client")]
    Client {
        /// kube's explanation.
        #[source]
        source: kube::Error,
    },
    /// An API request failed (no answer, or an error status other than the
    /// ones the caller handles).
    #[error("Kubernetes API: {operation} {object} failed")]
    Api {
        /// What was asked (`get lease`, `create lease`, …).
        operation: &'static str,
        /// The object's name.
        object: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// An API request took longer than [`API_TIMEOUT`].
    #[error("Kubernetes API: {operation} {object} took longer than {timeout:?}")]
    Timeout {
        /// What was asked.
        operation: &'static str,
        /// The object's name.
        object: String,
        /// The limit.
        timeout: Duration,
    },
}

impl Error {
    /// A client that cannot be configured is the operator's to fix; a
    /// failed request is transient.
    pub fn class(&self) -> crate::FailureClass {
        match self {
            Error::Config { .. } | Error::Client { .. } => crate::FailureClass::Config,
            Error::Api { .. } | Error::Timeout { .. } => crate::FailureClass::Transport,
        }
    }

    /// Whether the API answered 409: another replica wrote first.
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { source: kube::Error::Api(status), .. } if status.code == 409)
    }

    /// Whether the API answered 404.
    fn is_not_found(&self) -> bool {
        matches!(self, Error::Api { source: kube::Error::Api(status), .. } if status.code == 404)
    }
}

/// Runs one API request with [`API_TIMEOUT`], naming it in the error.
async fn request<T>(
    operation: &'static str,
    object: &str,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(Error::Api {
            operation,
            object: object.to_owned(),
            source,
        }),
        Err(_) => Err(Error::Timeout {
            operation,
            object: object.to_owned(),
            timeout: API_TIMEOUT,
        }),
    }
}

/// A connection to the API and who this replica is.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    namespace: String,
    identity: String,
    settings: KubeSection,
    health: Arc<ApiHealth>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Builds the client `settings` ask for, or `None` when the API is not
    /// to be used. Makes no request: an unreachable API server shows in
    /// `/readyz` and makes imports wait, it does not stop the daemon.
    pub async fn connect(settings: &KubeSection) -> Result<Option<Cluster>> {
        let wanted = match settings.enabled {
            KubeMode::Off => false,
            KubeMode::On => true,
            KubeMode::Auto => in_pod(),
        };
        if !wanted {
            return Ok(None);
        }
        let config = kube::Config::infer()
            .await
            .map_err(|source| Error::Config { source })?;
        Cluster::with_config(config, settings).map(Some)
    }

    /// A cluster reached with `config` (from a kubeconfig or a pod's service
    /// account), whatever `kube.enabled` says.
    pub fn with_config(mut config: kube::Config, settings: &KubeSection) -> Result<Cluster> {
        config.connect_timeout = Some(API_TIMEOUT);
        config.read_timeout = Some(API_TIMEOUT);
        config.write_timeout = Some(API_TIMEOUT);
        // kube retries 429/503/504 up to 15 times by default, which would
        // outlast a renewal period; the daemon retries on its own schedule.
        config.default_retry = false;
        let namespace = settings
            .namespace
            .clone()
            .or_else(|| non_empty_var(POD_NAMESPACE_VAR))
            .unwrap_or_else(|| config.default_namespace.clone());
        let identity = settings
            .identity
            .clone()
            .or_else(|| non_empty_var(POD_NAME_VAR))
            .unwrap_or_else(host_name);
        let client = Client::try_from(config).map_err(|source| Error::Client { source })?;
        tracing::info!(%namespace, %identity, "using the Kubernetes API for Events and bundle Leases");
        Ok(Cluster {
            client,
            namespace,
            identity,
            settings: settings.clone(),
            health: Arc::new(ApiHealth::default()),
        })
    }

    /// The namespace of the Leases and Events.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// This replica's name.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether the API answered the last request, and if not why.
    pub fn health(&self) -> Arc<ApiHealth> {
        Arc::clone(&self.health)
    }

    /// The per-bundle Leases of this namespace.
    pub fn leases(&self) -> BundleLeases {
        BundleLeases::new(
            self.client.clone(),
            &self.namespace,
            &self.identity,
            self.settings.lease_duration,
            self.settings.lease_retention,
            Arc::clone(&self.health),
        )
    }

    /// Events about bundles on this pod, when `kube.events` is on.
    pub fn events(&self) -> Option<BundleEvents> {
        self.settings
            .events
            .then(|| BundleEvents::new(self.client.clone(), &self.namespace, &self.identity))
    }
}

/// Whether this process runs in a pod: Kubernetes sets
/// `KUBERNETES_SERVICE_HOST` in every container and mounts the service
/// account's token.
fn in_pod() -> bool {
    non_empty_var("KUBERNETES_SERVICE_HOST").is_some()
        && std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
}

fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "airlock".to_owned())
}
