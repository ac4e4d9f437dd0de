//! The HTTP stack every service shares, and the server loop.

use crate::health::{self, Readiness};
use crate::metrics::{self, Metrics};
use crate::{ApiError, StartError};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, Response};
use proto::ErrorCode;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

/// Largest request body a service accepts unless a route says otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Bind a TCP listener; a failure names the setting that chose the address.
pub async fn bind(addr: SocketAddr, setting: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|err| {
        let why = match err.kind() {
            std::io::ErrorKind::AddrInUse => "is already in use".to_owned(),
            std::io::ErrorKind::PermissionDenied => "needs privileges to bind".to_owned(),
            _ => format!("cannot be bound ({err})"),
        };
        StartError::setting(setting, format!("{addr} {why}"))
    })
}

/// Wrap a service's API routes with the shared stack:
/// request id → trace → catch panic → metrics → body limit → routes (+ health, JSON 404/405).
pub fn service_router(
    service: &'static str,
    api: Router,
    readiness: Readiness,
    metrics: Metrics,
) -> Router {
    let api = api
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        });
    with_stack(
        service,
        api.merge(health::routes(readiness, metrics.clone())),
        metrics,
    )
}

/// As [`service_router`], for a router that brings its own fallback (the gateway
/// serves the web client for every path it does not route).
pub fn service_router_with_fallback(
    service: &'static str,
    api: Router,
    readiness: Readiness,
    metrics: Metrics,
) -> Router {
    with_stack(
        service,
        api.merge(health::routes(readiness, metrics.clone())),
        metrics,
    )
}

fn with_stack(service: &'static str, router: Router, metrics: Metrics) -> Router {
    router
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track_requests,
        ))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                axum::response::IntoResponse::into_response(ApiError::new(
                    ErrorCode::Internal,
                    "internal error",
                ))
            },
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |request: &Request<_>| {
                    let request_id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "request",
                        service,
                        request_id,
                        method = %request.method(),
                        path = %request.uri().path(),
                    )
                })
                .on_request(())
                .on_response(|response: &Response<_>, latency: Duration, _span: &Span| {
                    tracing::debug!(status = response.status().as_u16(), ?latency, "answered");
                }),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Serve `router` on `listener` until `shutdown` is cancelled, then stop accepting
/// and let in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let addr = listener.local_addr().ok();
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
    .map_err(|err| StartError::other(format!("server on {addr:?} failed: {err}")))
}
