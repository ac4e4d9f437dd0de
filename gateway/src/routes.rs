//! The route table: which path goes where.

use crate::Config;
use crate::proxy::{Proxy, Upstream};
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use proto::ErrorCode;
use servicekit::ApiError;
use std::net::SocketAddr;
use std::sync::Arc;
use tower_http::services::{ServeDir, ServeFile};

#[derive(Clone)]
struct RouteState {
    proxy: Proxy,
    table: Arc<Vec<(&'static str, Upstream)>>,
}

/// `/api/v1/<prefix>/...` routes to the upstream named beside it; `/rtc` is the
/// signaling WebSocket; everything else is the web client.
pub fn router(config: &Config) -> Router {
    let up = &config.upstreams;
    let table = vec![
        ("/api/v1/auth", up.auth.clone()),
        ("/api/v1/users", up.users.clone()),
        ("/api/v1/meetings", up.signaling.clone()),
        ("/api/v1/notifications", up.notify.clone()),
        ("/api/v1/analytics", up.analytics.clone()),
        ("/rtc", up.signaling.clone()),
    ];
    let state = RouteState {
        proxy: Proxy::new(),
        table: Arc::new(table),
    };
    // Unknown paths under the web client get index.html, so deep links such as
    // `/m/{code}` load the app, which then routes on the client side.
    let index = config.web_dir.join("index.html");
    let web = ServeDir::new(&config.web_dir).fallback(ServeFile::new(index));
    Router::new()
        .route("/rtc", any(forward))
        .route("/api/{*rest}", any(forward))
        .with_state(state)
        .fallback_service(web)
}

async fn forward(
    State(state): State<RouteState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let path = request.uri().path();
    let upstream = state.table.iter().find_map(|(prefix, upstream)| {
        let rest = path.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(upstream)
    });
    match upstream {
        Some(upstream) => state.proxy.forward(upstream, request, client).await,
        None => ApiError::new(ErrorCode::NotFound, "no such API").into_response(),
    }
}
