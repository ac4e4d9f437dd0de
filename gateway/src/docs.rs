//! `GET /api/v1/openapi.json` (the merged document, [`crate::openapi`]) and
//! `GET /api/docs`, a page that renders it: plain HTML, CSS and JavaScript
//! embedded in the binary (`gateway/docs-page/`), no third-party code and no CDN,
//! so it works offline and under a CSP that allows only this origin's scripts.

use axum::Router;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::Value;

const PAGE: &str = include_str!("../docs-page/index.html");
const SCRIPT: &str = include_str!("../docs-page/docs.js");
const STYLE: &str = include_str!("../docs-page/docs.css");

/// Only this origin's script, style and fetches; nothing inline, no frames.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(content_type: &'static str, body: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                HeaderName::from_static("referrer-policy"),
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The document and its page.
pub fn routes(document: &Value) -> Router {
    // Serialised once: the document never changes while the gateway runs.
    let json = Bytes::from(serde_json::to_vec(document).unwrap_or_default());
    Router::new()
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let json = json.clone();
                async move { asset("application/json", json) }
            }),
        )
        .route(
            "/api/docs",
            get(|| async {
                asset(
                    "text/html; charset=utf-8",
                    Bytes::from_static(PAGE.as_bytes()),
                )
            }),
        )
        .route(
            "/api/docs/docs.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    Bytes::from_static(SCRIPT.as_bytes()),
                )
            }),
        )
        .route(
            "/api/docs/docs.css",
            get(|| async {
                asset(
                    "text/css; charset=utf-8",
                    Bytes::from_static(STYLE.as_bytes()),
                )
            }),
        )
}
