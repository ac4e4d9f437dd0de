//! The gateway's own server loop: as `servicekit::http::serve`, plus a deadline
//! for the request head (slow-client protection: a client that trickles its
//! headers — slowloris — is disconnected) and for idle keep-alive connections.

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use servicekit::StartError;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a client may take to send a request's head.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight requests get to finish after shutdown is signalled.
const DRAIN: Duration = Duration::from_secs(10);

/// Serve `router` on `listener` until `shutdown`; each request carries the peer's
/// address as `ConnectInfo<SocketAddr>` (as with axum's own server).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    header_read_timeout: Duration,
) -> Result<(), StartError> {
    // Each connection task holds a sender; when all are gone, every connection closed.
    let (alive, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    router.clone().oneshot(request.map(Body::new))
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .keep_alive(true);
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, connection).await;
                }
            }
        });
    }
    drop(alive);
    let _ = tokio::time::timeout(DRAIN, all_closed.recv()).await;
    Ok(())
}

/// `serve` with [`DEFAULT_HEADER_READ_TIMEOUT`], for callers that do not choose.
pub async fn serve_default(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    serve(listener, router, shutdown, DEFAULT_HEADER_READ_TIMEOUT).await
}
