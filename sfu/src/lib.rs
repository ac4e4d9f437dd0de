//! The SFU: WebRTC termination and media forwarding on str0m.
//!
//! - [`core`]: the sans-IO heart (no sockets, no clock): sessions, routing,
//!   simulcast layer choice, keyframe and speaker handling.
//! - [`driver`]: the worker thread that owns the core, the UDP socket and the
//!   ICE-over-TCP listener.
//! - [`control`]: the internal HTTP control API signaling uses, and the event stream.
//! - [`metrics`]: counters exported on `/metrics`.
//! - [`tcp`]: ICE over TCP (RFC 6544/4571) for clients that cannot use UDP.
//! - [`udp`]: the media socket, read and written in batches (`recvmmsg`/`sendmmsg`).

pub mod control;
pub mod core;
pub mod driver;
pub mod metrics;
pub mod tcp;
pub mod udp;

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
    /// ICE over TCP: each worker also listens on TCP at its UDP port number
    /// and offers it as a passive candidate, for clients whose network blocks
    /// UDP. Costs nothing while no client uses it.
    pub ice_tcp: bool,
    /// Receive and send buffer asked for on each media socket, bytes (see
    /// [`udp::size_buffers`]).
    pub socket_buffer: usize,
    /// Send a run of datagrams to one destination (a subscriber's copies of
    /// a video frame) as one GSO datagram (see [`udp`]). On by default; the
    /// socket falls back by itself where the kernel refuses it.
    pub gso: bool,
}

impl Config {
    pub const DEFAULT_DISCONNECT_GRACE: Duration = Duration::from_secs(20);
    /// 4 MiB: about a third of a second of a 25-person meeting's input, so a
    /// worker busy for a while loses nothing (Linux's default is ~208 KiB).
    pub const DEFAULT_SOCKET_BUFFER: usize = 4 << 20;
}

/// Bind the media socket, start one worker, and build the control router.
pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Router, StartError> {
    let (router, _) = build_with_workers(config, 1, shutdown).await?;
    Ok(router)
}

/// As [`build`] with `workers` media workers, each a thread with its own UDP
/// port (`udp_bind`'s port + index, or any free port when it is 0) and its own
/// rooms; also returns the worker handles (tests read the media ports).
pub async fn build_with_workers(
    config: Config,
    workers: usize,
    shutdown: CancellationToken,
) -> Result<(Router, Vec<driver::WorkerHandle>), StartError> {
    if config.control_token.expose().len() < 16 {
        return Err(StartError::setting(
            "SFU_CONTROL_TOKEN",
            "must be at least 16 characters",
        ));
    }
    if workers == 0 || workers > 64 {
        return Err(StartError::setting(
            "SFU_WORKERS",
            "must be between 1 and 64",
        ));
    }
    let metrics = Metrics::new(SERVICE);
    let sfu_metrics = metrics::SfuMetrics::register(&metrics);
    let candidate = SocketAddr::new(config.public_ip, 0);
    let mut handles = Vec::with_capacity(workers);
    for index in 0..workers {
        let mut bind = config.udp_bind;
        if bind.port() != 0 {
            let port = u16::try_from(usize::from(bind.port()) + index).map_err(|_| {
                StartError::setting("SFU_UDP_PORT", "the worker ports run past 65535")
            })?;
            bind.set_port(port);
        }
        let (socket, tcp) = bind_media(bind, config.ice_tcp)?;
        match udp::size_buffers(&socket, config.socket_buffer) {
            Ok(got) if got.receive < config.socket_buffer => tracing::warn!(
                worker = index,
                asked = config.socket_buffer,
                granted = got.receive,
                "the media socket's receive buffer was capped: raise net.core.rmem_max \
                 (and wmem_max) to at least SFU_SOCKET_BUFFER_BYTES, or bursts are dropped"
            ),
            Ok(got) => tracing::debug!(worker = index, ?got, "media socket buffers"),
            Err(err) => {
                tracing::warn!(worker = index, %err, "cannot size the media socket buffers")
            }
        }
        let worker = driver::spawn(
            index,
            socket,
            tcp,
            driver::WorkerSettings {
                candidate_addr: candidate,
                disconnect_grace: config.disconnect_grace,
                gso: config.gso,
            },
            sfu_metrics.clone(),
            shutdown.clone(),
        )
        .map_err(|err| StartError::other(format!("cannot start SFU worker {index}: {err}")))?;
        tracing::info!(worker = index, media = %worker.local_addr, public_ip = %config.public_ip, "media socket bound");
        handles.push(worker);
    }
    let mut readiness = Readiness::default();
    for worker in &handles {
        readiness = readiness.with(WorkerCheck(worker.clone()));
    }
    let api = control::router(handles.clone(), config.control_token);
    Ok((
        http::service_router(SERVICE, api, readiness, metrics),
        handles,
    ))
}

/// Bind a worker's UDP socket and, with `ice_tcp`, a TCP listener on the same
/// port number. With port 0 the kernel picks the UDP port, which may be taken
/// over TCP: then another is tried.
fn bind_media(
    bind: SocketAddr,
    ice_tcp: bool,
) -> Result<(std::net::UdpSocket, Option<std::net::TcpListener>), StartError> {
    const ATTEMPTS: usize = 16;
    for _ in 0..ATTEMPTS {
        let socket = std::net::UdpSocket::bind(bind).map_err(|err| {
            StartError::setting("SFU_UDP_PORT", format!("{bind} cannot be bound: {err}"))
        })?;
        if !ice_tcp {
            return Ok((socket, None));
        }
        let tcp_bind = socket
            .local_addr()
            .map_err(|err| StartError::other(format!("the media socket has no address: {err}")))?;
        match std::net::TcpListener::bind(tcp_bind) {
            Ok(listener) => return Ok((socket, Some(listener))),
            Err(_) if bind.port() == 0 => continue,
            Err(err) => {
                return Err(StartError::setting(
                    "SFU_ICE_TCP",
                    format!(
                        "TCP {tcp_bind} cannot be bound: {err} (SFU_ICE_TCP=false turns it off)"
                    ),
                ));
            }
        }
    }
    Err(StartError::other(format!(
        "no free port on {} for both UDP and TCP after {ATTEMPTS} tries",
        bind.ip()
    )))
}

/// On the first shutdown signal, stop taking new rooms and let the rooms here
/// end by themselves; cancel `stop` (which stops the workers and the control
/// API) once no participant is left, or after `limit`.
pub fn drain_then_stop(
    workers: Vec<driver::WorkerHandle>,
    signal: CancellationToken,
    stop: CancellationToken,
    limit: Duration,
) {
    tokio::spawn(async move {
        signal.cancelled().await;
        for worker in &workers {
            worker.start_draining();
        }
        let started = std::time::Instant::now();
        tracing::info!(
            ?limit,
            "draining: no new rooms; waiting for the rooms here to end"
        );
        loop {
            let mut left = 0u32;
            for worker in &workers {
                left += worker.participants().await.unwrap_or(0);
            }
            if left == 0 {
                tracing::info!("drained: no participants left");
                break;
            }
            if started.elapsed() >= limit {
                tracing::warn!(
                    participants = left,
                    "drain limit reached; stopping with calls still on"
                );
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        stop.cancel();
    });
}

/// Ready while the worker thread answers and the node is not draining.
struct WorkerCheck(driver::WorkerHandle);

impl ReadinessCheck for WorkerCheck {
    fn name(&self) -> &'static str {
        "media_worker"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            if self.0.is_draining() {
                // Load balancers stop sending here; signaling already passes us over.
                return Err("draining".to_owned());
            }
            self.0
                .call(|_, _| ())
                .await
                .ok_or_else(|| "the media worker has stopped".to_owned())
        })
    }
}
