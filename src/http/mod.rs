//! The daemon's HTTP listener: Prometheus metrics, liveness and readiness
//! probes, and a read-only JSON view of the imports.
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | every metric, Prometheus text format |
//! | `GET /healthz` | `200 ok` while the process runs |
//! | `GET /readyz` | `200` when every check passes, `503` otherwise; JSON naming each check |
//! | `GET /api/v1/imports?limit=N&after=ID` | the files waiting for their partner (status `waiting`, on the first page only), then the newest bundle records; `N` entries in all (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]); the next page starts after record `ID`, the last id of the previous page |
//! | `GET /api/v1/imports/{id}` | one bundle record; `400` for an id that is not 64 lowercase hex characters, `404` when unknown |
//! | `GET /api/v1/packs?layer=&cloudType=&architecture=&fips=&q=` | the packs in the target's pack area, filtered ([`crate::push::catalog`]), each with the declared images its import found missing; `502` when the target cannot be read |
//! | `GET /api/v1/images?q=&limit=N&after=REPO` | a page of the target's repositories whose name contains `q`, with their tags and digests ([`crate::push::repositories`]); `502` when the target cannot be read |
//! | `GET /`, `/console.js`, `/console.css` | the console: a read-only page over the API above ([`console`]) |
//!
//! Imports under way carry a `progress` object (stage, bytes) in
//! `/api/v1/imports` and `/api/v1/imports/{id}`.
//!
//! With [`BasicAuth`] every path but its open ones (by default `/healthz`,
//! `/readyz`, `/metrics`) asks for HTTP basic auth.
//!
//! The daemon supplies the data through [`DaemonView`]. Errors are JSON
//! (`{"error": "…"}`), and no request can bring the server down: a view that
//! panics costs that request a `500`, nothing more.

mod auth;
mod console;
mod error;
mod handlers;

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::FutureExt as _;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::progress::Progress;
pub use crate::push::catalog::{PackCatalog, PackFilter};
pub use crate::push::repositories::{ImageListing, ImageQuery};
use crate::state::{BundleRecord, WaitingRecord};
pub use auth::{BasicAuth, Error as AuthError, MAX_REMEMBERED_CREDENTIALS};

/// Records listed by `/api/v1/imports` without `?limit=`.
pub const DEFAULT_LIMIT: usize = 100;
/// The most records `/api/v1/imports` lists; larger limits are capped.
pub const MAX_LIMIT: usize = 1000;
/// Declared images of packs looked up in the target per `/api/v1/packs`
/// request at most (one manifest `HEAD` each on a registry); images beyond
/// are shown as their import found them.
pub const MAX_PACK_IMAGE_CHECKS: usize = 500;
/// How long `/readyz` waits for [`DaemonView::readiness`] before answering
/// `503`.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may finish their requests once shutdown is
/// asked for; the server stops waiting for them after this.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the daemon shows the HTTP endpoints.
///
/// [`imports`](DaemonView::imports) and [`import`](DaemonView::import) are
/// called on a blocking thread, so they may read files; `readiness` is
/// awaited with a [`READINESS_TIMEOUT`] bound and should keep its own checks
/// (such as pinging the registry) short or cached, as probes call it often.
pub trait DaemonView: Send + Sync + 'static {
    /// Up to `limit` records, newest first, starting after the record with
    /// id `after` when given (the last id of the previous page).
    fn imports(&self, limit: usize, after: Option<&str>) -> Vec<BundleRecord>;
    /// The record of bundle `id` (64 lowercase hex characters), if known.
    fn import(&self, id: &str) -> Option<BundleRecord>;
    /// The settled drop-folder files waiting for their partner. The default
    /// lists none.
    fn waiting(&self) -> Vec<WaitingRecord> {
        Vec::new()
    }
    /// Checks whether the daemon can do its work now.
    fn readiness(&self) -> Pin<Box<dyn Future<Output = Readiness> + Send + '_>>;
    /// The packs in the target's pack area, or why they cannot be listed.
    /// Bounded by the limits of [`crate::push::catalog`]. The default lists
    /// none.
    fn packs(&self) -> Pin<Box<dyn Future<Output = Result<PackCatalog, String>> + Send + '_>> {
        Box::pin(async { Ok(PackCatalog::default()) })
    }
    /// One page of the target's repositories with their tags, or why they
    /// cannot be listed. Bounded by the limits of
    /// [`crate::push::repositories`]. The default lists none.
    fn images(
        &self,
        query: ImageQuery,
    ) -> Pin<Box<dyn Future<Output = Result<ImageListing, String>> + Send + '_>> {
        let _ = query;
        Box::pin(async { Ok(ImageListing::default()) })
    }
    /// Which of `images` (source references such as
    /// `quay.io/acme/app:1.0`) the target holds now at their mirror
    /// location. The default finds none.
    fn present_in_target(
        &self,
        images: Vec<String>,
    ) -> Pin<Box<dyn Future<Output = Result<HashSet<String>, String>> + Send + '_>> {
        let _ = images;
        Box::pin(async { Ok(HashSet::new()) })
    }
    /// The progress of import `id` while it runs. The default shows none.
    fn progress(&self, id: &str) -> Option<ImportProgress> {
        let _ = id;
        None
    }
}

/// How far an import under way has come, as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportProgress {
    /// `verifying`, `indexing`, `verifying+indexing` (the one pass of
    /// `imports.single_read`), `checking`, `uploading`, `tagging` or `done`.
    pub stage: &'static str,
    /// Compressed bundle bytes read in the current pass (verifying,
    /// indexing, or both at once).
    pub bundle_bytes_read: u64,
    /// Blob bytes the upload stage sends in all.
    pub bytes_to_push: u64,
    /// Blob bytes the target accepted so far.
    pub bytes_pushed: u64,
    /// Blobs settled (uploaded, mounted or found present) so far.
    pub blobs_done: u64,
}

impl From<&Progress> for ImportProgress {
    fn from(progress: &Progress) -> Self {
        ImportProgress {
            stage: progress.stage().label(),
            bundle_bytes_read: progress.bundle_bytes(),
            bytes_to_push: progress.bytes_to_push(),
            bytes_pushed: progress.pushed_bytes(),
            blobs_done: progress.blobs_done(),
        }
    }
}

/// The readiness checks, as `/readyz` reports them (field names in
/// camelCase, like the rest of the API).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// The drop-directory watcher is running.
    pub watcher_running: bool,
    /// The state directory accepts writes.
    pub state_writable: bool,
    /// The registry answers its API.
    pub registry_reachable: bool,
    /// The Kubernetes API answers, when the daemon uses it (`None`, and
    /// left out of `/readyz`, when it does not). Imports wait while it does
    /// not answer, since replicas could not tell who imports what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_api_reachable: Option<bool>,
    /// Why a check failed, for people reading the probe.
    pub detail: Option<String>,
}

impl Readiness {
    /// Whether every check passes.
    pub fn is_ready(&self) -> bool {
        self.watcher_running
            && self.state_writable
            && self.registry_reachable
            && self.kube_api_reachable != Some(false)
    }
}

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    view: Arc<dyn DaemonView>,
}

/// Serves the endpoints on `listener`, open to anyone who reaches it, until
/// `shutdown` completes: [`serve_guarded`] without auth.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    view: Arc<dyn DaemonView>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_guarded(listener, metrics, view, None, shutdown).await
}

/// Serves the endpoints on `listener`, behind `auth` when given, until
/// `shutdown` completes; then stops accepting, lets open requests finish for
/// up to [`SHUTDOWN_GRACE`], and returns.
pub async fn serve_guarded(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    view: Arc<dyn DaemonView>,
    auth: Option<BasicAuth>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(address) = listener.local_addr() {
        tracing::debug!(%address, "HTTP endpoints listening");
    }
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        // The receiver lives as long as this function; nothing to do if not.
        let _ = stopping.send(());
    };
    let server = axum::serve(listener, router(metrics, view, auth)).with_graceful_shutdown(signal);
    let grace = async {
        match stopped.await {
            Ok(()) => tokio::time::sleep(SHUTDOWN_GRACE).await,
            // The signal future was dropped, which only happens once the
            // server itself has finished: let the other branch win.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        result = server => result,
        () = grace => {
            tracing::warn!("HTTP connections still open {SHUTDOWN_GRACE:?} after shutdown; leaving them");
            Ok(())
        }
    }
}

/// The routes, behind `auth` when given, with panics in handlers turned
/// into `500` answers.
fn router(metrics: Arc<Metrics>, view: Arc<dyn DaemonView>, auth: Option<BasicAuth>) -> Router {
    let routes = Router::new()
        .route("/metrics", get(handlers::metrics))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/api/v1/imports", get(handlers::imports))
        .route("/api/v1/imports/{id}", get(handlers::import))
        .route("/api/v1/packs", get(handlers::packs))
        .route("/api/v1/images", get(handlers::images))
        .route("/", get(console::page))
        .route("/console.js", get(console::script))
        .route("/console.css", get(console::style))
        .fallback(handlers::not_found);
    let routes = match auth {
        Some(auth) => routes.layer(middleware::from_fn_with_state(
            Arc::new(auth),
            auth::require,
        )),
        None => routes,
    };
    routes
        .layer(middleware::from_fn(contain_panics))
        .with_state(AppState { metrics, view })
}

/// Answers `500` instead of dropping the connection when a handler (or the
/// view it calls) panics.
async fn contain_panics(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(%path, "HTTP handler panicked");
            error::Error::Internal.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passes() {
        let all = Readiness {
            watcher_running: true,
            state_writable: true,
            registry_reachable: true,
            kube_api_reachable: Some(true),
            detail: None,
        };
        assert!(all.is_ready());
        assert!(
            Readiness {
                kube_api_reachable: None,
                ..all.clone()
            }
            .is_ready()
        );
        for i in 0..4 {
            let mut one_down = all.clone();
            match i {
                0 => one_down.watcher_running = false,
                1 => one_down.state_writable = false,
                2 => one_down.registry_reachable = false,
                _ => one_down.kube_api_reachable = Some(false),
            }
            assert!(!one_down.is_ready());
        }
    }
}
