//! The SFU: WebRTC termination and media forwarding.

use axum::Router;
use servicekit::StartError;
use servicekit::health::Readiness;
use servicekit::http;
use servicekit::metrics::Metrics;
use std::net::{IpAddr, SocketAddr};
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
}

/// Bind the media socket and build the control router.
pub async fn build(config: Config, _shutdown: CancellationToken) -> Result<Router, StartError> {
    let socket = tokio::net::UdpSocket::bind(config.udp_bind)
        .await
        .map_err(|err| {
            StartError::setting(
                "SFU_UDP_PORT",
                format!("{} cannot be bound: {err}", config.udp_bind),
            )
        })?;
    tracing::info!(addr = ?socket.local_addr().ok(), public_ip = %config.public_ip, "media socket bound");
    let metrics = Metrics::new(SERVICE);
    Ok(http::service_router(
        SERVICE,
        Router::new(),
        Readiness::default(),
        metrics,
    ))
}
