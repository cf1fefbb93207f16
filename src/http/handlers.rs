//! The endpoint handlers.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::Error;
use super::{
    AppState, DEFAULT_LIMIT, ImageQuery, ImportProgress, MAX_LIMIT, MAX_PACK_IMAGE_CHECKS,
    PackFilter, READINESS_TIMEOUT, Readiness,
};
use crate::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use crate::state::Status;

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
    Record(Box<RecordEntry>),
}

/// A bundle record, with the progress of its import while one runs.
#[derive(Serialize)]
struct RecordEntry {
    #[serde(flatten)]
    record: crate::state::BundleRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<ImportProgress>,
}

impl RecordEntry {
    fn new(record: crate::state::BundleRecord, view: &dyn super::DaemonView) -> Self {
        let progress = (record.status == Status::Importing)
            .then(|| view.progress(&record.id))
            .flatten();
        RecordEntry { record, progress }
    }
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
        let records: Vec<RecordEntry> = view
            .imports(limit, after.as_deref())
            .into_iter()
            .map(|r| RecordEntry::new(r, view.as_ref()))
            .collect();
        (waiting, records)
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
    let record = tokio::task::spawn_blocking(move || {
        view.import(&lookup)
            .map(|r| RecordEntry::new(r, view.as_ref()))
    })
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
    let view = state.view.clone();
    let mut gaps = tokio::task::spawn_blocking(move || pack_gaps(view.imports(MAX_LIMIT, None)))
        .await
        .map_err(|e| internal("imports", &e))?;
    forget_arrived(&state, &catalog.packs, &mut gaps).await;
    let packs = catalog
        .packs
        .into_iter()
        .map(|pack| {
            let missing_images = gaps.get(&pack.reference).cloned().unwrap_or_default();
            PackEntry {
                pack,
                missing_images,
            }
        })
        .collect();
    Ok(Json(PackList {
        packs,
        truncated: catalog.truncated,
    })
    .into_response())
}

/// The `/api/v1/packs` body.
#[derive(Serialize)]
struct PackList {
    packs: Vec<PackEntry>,
    truncated: bool,
}

/// A pack of the target and the images it declares that are missing: what
/// its last import found neither in its bundle nor in the target, less what
/// the target holds by now.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PackEntry {
    #[serde(flatten)]
    pack: crate::push::catalog::CatalogPack,
    missing_images: Vec<String>,
}

/// The missing images of each pack the records (newest first) name, by
/// where the pack landed; the newest import of a pack wins.
fn pack_gaps(records: Vec<crate::state::BundleRecord>) -> HashMap<String, Vec<String>> {
    let mut gaps = HashMap::new();
    for pack in records
        .into_iter()
        .filter_map(|r| r.pushed)
        .flat_map(|p| p.packs)
    {
        if let Some(reference) = pack.target_ref {
            gaps.entry(reference).or_insert(pack.missing_images);
        }
    }
    gaps
}

/// Drops from `gaps` the images of `packs` that the target holds by now
/// (a later bundle brought them), looking up at most
/// [`MAX_PACK_IMAGE_CHECKS`]. When the target cannot be asked, the gaps stay
/// as the imports found them.
async fn forget_arrived(
    state: &AppState,
    packs: &[crate::push::catalog::CatalogPack],
    gaps: &mut HashMap<String, Vec<String>>,
) {
    let mut wanted: Vec<String> = packs
        .iter()
        .filter_map(|pack| gaps.get(&pack.reference))
        .flatten()
        .cloned()
        .collect();
    wanted.sort();
    wanted.dedup();
    wanted.truncate(MAX_PACK_IMAGE_CHECKS);
    if wanted.is_empty() {
        return;
    }
    match state.view.present_in_target(wanted).await {
        Ok(present) => {
            for missing in gaps.values_mut() {
                missing.retain(|image| !present.contains(image));
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot check which pack images arrived since their import");
        }
    }
}

/// `GET /api/v1/images?q=&limit=&after=`: a page of the target's
/// repositories with their tags and digests.
pub(super) async fn images(
    State(state): State<AppState>,
    query: Result<Query<ImageQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(query) = query.map_err(|e| Error::InvalidQuery(e.body_text()))?;
    let listing = state
        .view
        .images(query)
        .await
        .map_err(Error::Repositories)?;
    Ok(Json(listing).into_response())
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
