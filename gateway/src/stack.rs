//! The gateway's HTTP stack: one tower layer doing what `servicekit::http`'s
//! stack of layers does for every other service — request id (accepted or
//! generated, echoed), a trace span carrying it, a panic catcher (500
//! `internal`), metrics per route template — plus the access line
//! ([`crate::access`]) and `X-Content-Type-Options: nosniff`.
//!
//! Why its own: the gateway adds a hop to every API call, and measured on the
//! proxy path (docs/benchmarks/gateway.md) the seven nested layers and two boxed
//! middleware futures cost about as much CPU as the edge's own work; one layer
//! with one boxed future does the same for a fraction. Request ids are a
//! process-random prefix plus a counter (unique, cheap) instead of a UUID v4 from
//! the OS's random source per request.

use crate::access;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::header::{HeaderName, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use proto::ErrorCode;
use servicekit::ApiError;
use servicekit::metrics::{Metrics, RouteTemplate};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Routes without an access line (probes and scrapes every few seconds).
const QUIET: &[&str] = &["/health", "/ready", "/metrics"];

/// Request ids: `{16 random hex digits}-{counter}`.
struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        Self {
            prefix: uuid::Uuid::new_v4().simple().to_string()[..16].to_owned(),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Hex digits and a dash: always a valid header value.
        HeaderValue::from_str(&format!("{}-{n:x}", self.prefix))
            .unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// A client's request id is kept when it is short and printable.
fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
}

#[derive(Clone)]
pub struct StackLayer {
    metrics: Metrics,
    ids: Arc<RequestIds>,
}

impl StackLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            ids: Arc::new(RequestIds::new()),
        }
    }
}

impl<S> Layer<S> for StackLayer {
    type Service = Stack<S>;

    fn layer(&self, inner: S) -> Stack<S> {
        Stack {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Stack<S> {
    inner: S,
    layer: StackLayer,
}

impl<S> Service<Request> for Stack<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let id = match request.headers().get(X_REQUEST_ID) {
            Some(value) if acceptable(value) => value.clone(),
            _ => {
                let value = self.layer.ids.next();
                request.headers_mut().insert(X_REQUEST_ID, value.clone());
                value
            }
        };
        let method = request.method().clone();
        let matched: Option<Arc<str>> = request
            .extensions()
            .get::<MatchedPath>()
            .map(|path| Arc::from(path.as_str()));
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let span = tracing::info_span!(
            "request",
            service = crate::SERVICE,
            request_id = id.to_str().unwrap_or("-"),
            method = %method,
            path = %request.uri().path(),
        );
        // The clone that was made ready by `poll_ready` does the call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.layer.metrics.clone();
        let exchange = async move {
            let mut response = match AssertUnwindSafe(inner.call(request)).catch_unwind().await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::error!("a request handler panicked");
                    ApiError::new(ErrorCode::Internal, "internal error").into_response()
                }
            };
            let headers = response.headers_mut();
            headers.insert(X_REQUEST_ID, id.clone());
            headers
                .entry(X_CONTENT_TYPE_OPTIONS)
                .or_insert(HeaderValue::from_static("nosniff"));
            let route = response
                .extensions()
                .get::<RouteTemplate>()
                .map(|route| route.0.clone())
                .or(matched)
                .unwrap_or_else(|| Arc::from("unmatched"));
            let status = response.status();
            metrics.record_request(
                method.as_str(),
                &route,
                status.as_u16(),
                started.elapsed().as_secs_f64(),
            );
            if QUIET.contains(&&*route) {
                return Ok(response);
            }
            let note = response.extensions_mut().remove::<access::Note>();
            Ok(access::wrap(
                response,
                access::Entry::new(method, route, status, id, peer, note, started),
            ))
        };
        Box::pin(exchange.instrument(span))
    }
}
