//! The SFU: WebRTC termination and media forwarding on str0m.
//!
//! - [`core`]: the sans-IO heart (no sockets, no clock): sessions, routing,
//!   simulcast layer choice, keyframe and speaker handling.
//! - [`driver`]: the worker thread that owns the core and the UDP socket.
//! - [`control`]: the internal HTTP control API signaling uses, and the event stream.
//! - [`metrics`]: counters exported on `/metrics`.

pub mod control;
pub mod core;
pub mod driver;
pub mod metrics;

use axum::Router;
use servicekit::health::{CheckFuture, Readiness, ReadinessCheck};
use servicekit::metrics::Metrics;
use servicekit::{Secret, StartError, http};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "sfu";
/// The internal control API's TCP port.
pub const DEFAULT_PORT: u16 = 8006;
/// The media port (UDP) by default.
pub const DEFAULT_UDP_PORT: u16 = 10000;

/// Typed configuration of one SFU node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where media is received (UDP).
    pub udp_bind: SocketAddr,
    /// The address browsers are told to send media to (the ICE host candidate).
    pub public_ip: IpAddr,
    /// The service credential signaling presents on every control call.
    pub control_token: Secret<String>,
    /// How long a participant whose media connection dropped is kept for a resume.
    pub disconnect_grace: Duration,
}

impl Config {
    pub const DEFAULT_DISCONNECT_GRACE: Duration = Duration::from_secs(20);
}

/// Bind the media socket, start the worker, and build the control router.
pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Router, StartError> {
    let (router, _) = build_with_worker(config, shutdown).await?;
    Ok(router)
}

/// As [`build`], also returning the worker handle (tests and the launcher use it
/// to learn the media port).
pub async fn build_with_worker(
    config: Config,
    shutdown: CancellationToken,
) -> Result<(Router, driver::WorkerHandle), StartError> {
    if config.control_token.expose().len() < 16 {
        return Err(StartError::setting(
            "SFU_CONTROL_TOKEN",
            "must be at least 16 characters",
        ));
    }
    let socket = std::net::UdpSocket::bind(config.udp_bind).map_err(|err| {
        StartError::setting(
            "SFU_UDP_PORT",
            format!("{} cannot be bound: {err}", config.udp_bind),
        )
    })?;
    let metrics = Metrics::new(SERVICE);
    let sfu_metrics = metrics::SfuMetrics::register(&metrics);
    let candidate = SocketAddr::new(config.public_ip, 0);
    let worker = driver::spawn(
        socket,
        candidate,
        config.disconnect_grace,
        sfu_metrics,
        shutdown,
    )
    .map_err(|err| StartError::other(format!("cannot start the SFU worker: {err}")))?;
    tracing::info!(media = %worker.local_addr, public_ip = %config.public_ip, "media socket bound");
    let readiness = Readiness::default().with(WorkerCheck(worker.clone()));
    let api = control::router(worker.clone(), config.control_token);
    Ok((
        http::service_router(SERVICE, api, readiness, metrics),
        worker,
    ))
}

/// Ready while the worker thread answers.
struct WorkerCheck(driver::WorkerHandle);

impl ReadinessCheck for WorkerCheck {
    fn name(&self) -> &'static str {
        "media_worker"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            self.0
                .call(|_, _| ())
                .await
                .ok_or_else(|| "the media worker has stopped".to_owned())
        })
    }
}
