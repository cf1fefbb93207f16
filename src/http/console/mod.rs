//! The console: one read-only page over `/api/v1/`, for operators and
//! auditors who want to see what arrived without reading JSON.
//!
//! Three files compiled into the binary, so the page works air-gapped and
//! needs nothing from outside the daemon: `index.html` (the skeleton: views,
//! filters, empty tables), `console.css`, and `console.js` (plain
//! JavaScript that reads the API, fills the tables, honours the filters in
//! the URL's query and polls while the page is open). Change the page by
//! editing those files; there is no build step.
//!
//! Every answer carries a strict Content-Security-Policy
//! ([`CONTENT_SECURITY_POLICY`]): the page runs no inline script or style
//! and loads nothing but these files and the API.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Only the daemon's own files and API, no inline code, no framing.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// `GET /`.
pub(super) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /console.js`.
pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /console.css`.
pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with the binary; an upgraded daemon must not serve
    // a page that mixes old and new.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
