//! Browser-facing protections: CORS from configuration and security headers.

use axum::http::Method;
use axum::http::header::{self, HeaderName, HeaderValue};
use servicekit::StartError;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// The web client's Content-Security-Policy: everything from our own origin, plus
/// what WebRTC and the client need — WebSockets to any host (`ws:`/`wss:`, the
/// signaling socket may sit behind another name), `blob:` media (remote tracks),
/// `data:`/`blob:` images (avatars, snapshots). No inline script, no eval, no frames.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self' ws: wss:; \
font-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; \
form-action 'self'; frame-ancestors 'none'";

/// Camera, microphone and screen sharing for our own origin only.
pub const PERMISSIONS_POLICY: &str =
    "camera=(self), microphone=(self), display-capture=(self), geolocation=(), payment=()";

/// The headers every web-client response carries.
pub fn web_headers() -> Vec<(HeaderName, HeaderValue)> {
    vec![
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static(PERMISSIONS_POLICY),
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ]
}

/// Layers setting [`web_headers`] when the response does not already have them.
pub fn web_header_layers() -> Vec<SetResponseHeaderLayer<HeaderValue>> {
    web_headers()
        .into_iter()
        .map(|(name, value)| SetResponseHeaderLayer::if_not_present(name, value))
        .collect()
}

/// Parse the configured CORS origins (`https://app.example.com`, no path).
pub fn parse_origins(origins: &[String]) -> Result<Vec<HeaderValue>, StartError> {
    origins
        .iter()
        .map(|origin| {
            let origin = origin.trim();
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && origin
                    .split("://")
                    .nth(1)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
            if !valid {
                return Err(StartError::setting(
                    "GATEWAY_CORS_ORIGINS",
                    format!("`{origin}` is not an origin like https://app.example.com"),
                ));
            }
            HeaderValue::from_str(origin).map_err(|_| {
                StartError::setting(
                    "GATEWAY_CORS_ORIGINS",
                    format!("`{origin}` is not a valid origin"),
                )
            })
        })
        .collect()
}

/// CORS for the configured origins, or `None` (same origin only: no CORS headers,
/// so browsers refuse cross-site calls).
pub fn cors(origins: Vec<HeaderValue>) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("ratelimit-limit"),
                HeaderName::from_static("ratelimit-remaining"),
                HeaderName::from_static("ratelimit-reset"),
                header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_bare_http_origins() {
        assert!(parse_origins(&["https://app.example.com".into()]).is_ok());
        assert!(parse_origins(&["http://localhost:3000".into()]).is_ok());
        for bad in ["app.example.com", "https://a.com/path", "*", "https://"] {
            assert!(parse_origins(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
