//! The endpoint handlers.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::Error;
use super::{AppState, DEFAULT_LIMIT, MAX_LIMIT, PackFilter, READINESS_TIMEOUT, Readiness};
use crate::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;

/// `GET /metrics`.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /healthz`: the process answers, so it is alive.
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// The `/readyz` body: the verdict, then each check.
#[derive(Serialize)]
struct ReadyBody {
    ready: bool,
    #[serde(flatten)]
    checks: Readiness,
}

/// `GET /readyz`.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let checks = match tokio::time::timeout(READINESS_TIMEOUT, state.view.readiness()).await {
        Ok(checks) => checks,
        Err(_) => Readiness {
            watcher_running: false,
            state_writable: false,
            registry_reachable: false,
            kube_api_reachable: None,
            detail: Some(format!(
                "the readiness checks did not finish within {READINESS_TIMEOUT:?}"
            )),
        },
    };
    let ready = checks.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(ReadyBody { ready, checks })).into_response()
}

/// The query of `/api/v1/imports`.
#[derive(Deserialize)]
pub(super) struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// One entry of `/api/v1/imports`: a file waiting for its partner or a
/// bundle record.
#[derive(Serialize)]
#[serde(untagged)]
enum ImportEntry {
    Waiting(crate::state::WaitingRecord),
    Record(Box<crate::state::BundleRecord>),
}

/// `GET /api/v1/imports?limit=N&after=ID`: the files waiting for their
/// partner (first page only), then the records newest first; `N` entries in
/// all, capped at [`MAX_LIMIT`]. The next page starts after the last record
/// id of this one.
pub(super) async fn imports(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(query) = query.map_err(|e| Error::InvalidQuery(e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    if query.after.as_deref().is_some_and(|id| !is_bundle_id(id)) {
        return Err(Error::InvalidId);
    }
    let view = state.view.clone();
    let after = query.after;
    let (waiting, records) = tokio::task::spawn_blocking(move || {
        let waiting = if after.is_none() {
            view.waiting()
        } else {
            Vec::new()
        };
        (waiting, view.imports(limit, after.as_deref()))
    })
    .await
    .map_err(|e| internal("imports", &e))?;
    let entries: Vec<ImportEntry> = waiting
        .into_iter()
        .map(ImportEntry::Waiting)
        .chain(
            records
                .into_iter()
                .map(|r| ImportEntry::Record(Box::new(r))),
        )
        .take(limit)
        .collect();
    Ok(Json(entries).into_response())
}

/// `GET /api/v1/imports/{id}`.
pub(super) async fn import(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Error> {
    let Path(id) = id.map_err(|_| Error::InvalidId)?;
    if !is_bundle_id(&id) {
        return Err(Error::InvalidId);
    }
    let view = state.view.clone();
    let lookup = id.clone();
    let record = tokio::task::spawn_blocking(move || view.import(&lookup))
        .await
        .map_err(|e| internal("import", &e))?;
    match record {
        Some(record) => Ok(Json(record).into_response()),
        None => Err(Error::UnknownImport(id)),
    }
}

/// `GET /api/v1/packs?layer=&cloudType=&architecture=&fips=&q=`: the packs
/// in the target's pack area that pass every filter given.
pub(super) async fn packs(
    State(state): State<AppState>,
    query: Result<Query<PackFilter>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(filter) = query.map_err(|e| Error::InvalidQuery(e.body_text()))?;
    let mut catalog = state.view.packs().await.map_err(Error::Target)?;
    catalog.packs.retain(|pack| filter.matches(pack));
    Ok(Json(catalog).into_response())
}

/// Any other path.
pub(super) async fn not_found() -> Error {
    Error::NoRoute
}

/// A bundle id: the lowercase hex SHA-256 of the `.zst` file.
fn is_bundle_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn internal(call: &str, error: &tokio::task::JoinError) -> Error {
    tracing::error!(call, %error, "the daemon view failed");
    Error::Internal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_ids() {
        assert!(is_bundle_id(&"0123456789abcdef".repeat(4)));
        assert!(!is_bundle_id(&"0123456789ABCDEF".repeat(4)));
        assert!(!is_bundle_id(&"a".repeat(63)));
        assert!(!is_bundle_id(&"a".repeat(65)));
        assert!(!is_bundle_id(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_bundle_id(&format!("{}g", "a".repeat(63))));
        assert!(!is_bundle_id(""));
    }
}
