//! The access log: one structured line per request, at `info` on its own target
//! [`TARGET`] (`gateway::access`), so it can be routed or silenced on its own
//! (`RUST_LOG=info,gateway::access=off`).
//!
//! Fields: `method`, `route` (the route template, never the raw path), `status`,
//! `duration_ms` (until the response body was sent), `bytes` (response body
//! bytes sent), `request_id`, `client_ip`, `user_id` (only from a verified
//! token), `upstream` and `instance` (for proxied requests). The line is written
//! when the response body ends or is dropped, so a streamed answer is logged with
//! its real length and duration. `/health`, `/ready` and `/metrics` are not logged.

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use servicekit::metrics::RouteTemplate;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The tracing target of access lines.
pub const TARGET: &str = "gateway::access";

/// What the edge knows about a request, for its access line: put in the
/// response's extensions.
#[derive(Debug, Clone)]
pub struct Note {
    pub client_ip: IpAddr,
    pub user_id: Option<String>,
    pub upstream: Option<&'static str>,
    pub instance: Option<Arc<str>>,
}

/// Middleware: writes the access line of every request it wraps.
pub async fn log(request: Request, next: Next) -> Response {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let request_id = request.headers().get("x-request-id").cloned();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| Arc::<str>::from(path.as_str()));
    let mut response = next.run(request).await;
    let note = response.extensions_mut().remove::<Note>();
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map(|route| route.0.clone())
        .or(matched)
        .unwrap_or_else(|| Arc::from("web"));
    let entry = Entry {
        method,
        route,
        status: response.status(),
        request_id,
        client_ip: note.as_ref().map(|n| n.client_ip).or(peer),
        note,
        started,
    };
    response.map(|inner| {
        Body::new(Logged {
            inner,
            bytes: 0,
            entry: Some(entry),
        })
    })
}

struct Entry {
    method: Method,
    route: Arc<str>,
    status: StatusCode,
    request_id: Option<HeaderValue>,
    client_ip: Option<IpAddr>,
    note: Option<Note>,
    started: Instant,
}

impl Entry {
    fn write(self, bytes: u64) {
        let note = self.note.as_ref();
        tracing::info!(
            target: TARGET,
            method = %self.method,
            route = &*self.route,
            status = self.status.as_u16(),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            bytes,
            request_id = self.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
            client_ip = self.client_ip.map(tracing::field::display),
            user_id = note.and_then(|n| n.user_id.as_deref()),
            upstream = note.and_then(|n| n.upstream),
            instance = note.and_then(|n| n.instance.as_deref()),
            "access"
        );
    }
}

/// The response body, counting bytes; writes the line once at its end (or drop).
struct Logged {
    inner: Body,
    bytes: u64,
    entry: Option<Entry>,
}

impl hyper::body::Body for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream()
                    && let Some(entry) = this.entry.take()
                {
                    entry.write(this.bytes);
                }
            }
            Poll::Ready(_) => {
                if let Some(entry) = this.entry.take() {
                    entry.write(this.bytes);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            entry.write(self.bytes);
        }
    }
}
