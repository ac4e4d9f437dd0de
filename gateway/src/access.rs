//! The access log: one structured line per request, at `info` on its own target
//! [`TARGET`] (`gateway::access`), so it can be routed or silenced on its own
//! (`RUST_LOG=info,gateway::access=off`).
//!
//! Fields: `method`, `route` (the route template, never the raw path), `status`,
//! `duration_ms` (until the response body was sent), `bytes` (response body
//! bytes sent), `request_id`, `client_ip`, `user_id` (only from a verified
//! token), `upstream` and `instance` (for proxied requests). The line is written
//! when the response body ends or is dropped, so a streamed answer is logged with
//! its real length and duration. Written by [`crate::stack`].

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use std::net::IpAddr;
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

/// The response with its body wrapped to write `entry` when it ends (as is when
/// access lines are filtered out).
pub fn wrap(response: Response, entry: Entry) -> Response {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return response;
    }
    response.map(|inner| {
        Body::new(Logged {
            inner,
            bytes: 0,
            entry: Some(entry),
        })
    })
}

/// One access line, waiting for the end of its response body.
pub struct Entry {
    method: Method,
    route: Arc<str>,
    status: StatusCode,
    request_id: HeaderValue,
    client_ip: Option<IpAddr>,
    note: Option<Note>,
    started: Instant,
}

impl Entry {
    pub fn new(
        method: Method,
        route: Arc<str>,
        status: StatusCode,
        request_id: HeaderValue,
        peer: Option<IpAddr>,
        note: Option<Note>,
        started: Instant,
    ) -> Self {
        Self {
            method,
            route,
            status,
            request_id,
            client_ip: note.as_ref().map(|n| n.client_ip).or(peer),
            note,
            started,
        }
    }

    fn write(self, bytes: u64) {
        let note = self.note.as_ref();
        tracing::info!(
            target: TARGET,
            method = %self.method,
            route = &*self.route,
            status = self.status.as_u16(),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            bytes,
            request_id = self.request_id.to_str().unwrap_or("-"),
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
