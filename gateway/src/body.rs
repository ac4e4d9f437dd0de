//! Body wrappers: a request body with a size cap and an idle timeout (slow or
//! oversized uploads are cut off while streaming), and a response body that holds
//! a concurrency permit until it has been sent.

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// Why a [`GuardedBody`] stopped a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    TooLarge,
    TooSlow,
}

/// Shared between the body (which sets it) and the handler (which reads it after
/// the upstream exchange failed, to answer 413 or 408 instead of 502).
#[derive(Debug, Clone, Default)]
pub struct CutFlag(Arc<AtomicU8>);

impl CutFlag {
    fn set(&self, cut: Cut) {
        let value = match cut {
            Cut::TooLarge => 1,
            Cut::TooSlow => 2,
        };
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<Cut> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(Cut::TooLarge),
            2 => Some(Cut::TooSlow),
            _ => None,
        }
    }
}

/// A request body that fails once more than `limit` bytes arrived or no bytes
/// arrived for `idle`.
pub struct GuardedBody {
    inner: Body,
    remaining: usize,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    flag: CutFlag,
}

impl GuardedBody {
    pub fn new(inner: Body, limit: usize, idle: Duration, flag: CutFlag) -> Self {
        Self {
            inner,
            remaining: limit,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            flag,
        }
    }
}

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if data.len() > this.remaining {
                        this.flag.set(Cut::TooLarge);
                        return Poll::Ready(Some(Err(axum::Error::new("request body too large"))));
                    }
                    this.remaining -= data.len();
                }
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    this.flag.set(Cut::TooSlow);
                    return Poll::Ready(Some(Err(axum::Error::new("request body too slow"))));
                }
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that keeps `guard` alive until it has been read to the end or dropped.
pub struct Holding<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> Holding<G> {
    pub fn wrap(inner: Body, guard: G) -> Body {
        Body::new(Holding {
            inner,
            _guard: guard,
        })
    }
}

impl<G: Unpin> hyper::body::Body for Holding<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
