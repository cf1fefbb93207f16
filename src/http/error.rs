//! What the endpoints answer when a request cannot be served.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why a request failed; each variant is one status and a JSON body
/// `{"error": "…"}`.
#[derive(Debug, thiserror::Error)]
pub(super) enum Error {
    /// The query string could not be read (e.g. `?limit=many`).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// An import id that is not 64 lowercase hex characters.
    #[error("invalid import id: expected the 64 lowercase hex characters of the bundle's SHA-256")]
    InvalidId,
    /// No record with this (well-formed) id.
    #[error("no import with id {0}")]
    UnknownImport(String),
    /// The target's pack area could not be read.
    #[error("cannot list the target's packs: {0}")]
    Target(String),
    /// The target's repositories could not be listed.
    #[error("cannot list the target's repositories: {0}")]
    Repositories(String),
    /// Basic auth is required and the request carried no valid credentials.
    #[error("authentication required")]
    Unauthorized,
    /// No such path.
    #[error("no such endpoint")]
    NoRoute,
    /// The view failed (panicked); details are in the log.
    #[error("internal error")]
    Internal,
}

impl Error {
    fn status(&self) -> StatusCode {
        match self {
            Error::InvalidQuery(_) | Error::InvalidId => StatusCode::BAD_REQUEST,
            Error::UnknownImport(_) | Error::NoRoute => StatusCode::NOT_FOUND,
            Error::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Target(_) | Error::Repositories(_) => StatusCode::BAD_GATEWAY,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, Error::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="airlock", charset="UTF-8""#),
            );
        }
        response
    }
}
