//! `meetease-sfu`: one SFU node as its own process.

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};
use servicekit::Secret;
use servicekit::service::{ServiceArgs, run_service_until};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "meetease-sfu", version, about = "MeetEase SFU node")]
struct Cli {
    /// TCP port for the internal control API.
    #[arg(long, env = "SFU_PORT", default_value_t = sfu::DEFAULT_PORT)]
    port: u16,
    /// UDP port for media.
    #[arg(long, env = "SFU_UDP_PORT", default_value_t = sfu::DEFAULT_UDP_PORT)]
    udp_port: u16,
    /// ICE over TCP for clients whose network blocks UDP: also listen on TCP
    /// at the media port number(s) and offer it as a passive candidate.
    #[arg(long, env = "SFU_ICE_TCP", default_value_t = true, action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    ice_tcp: bool,
    /// Address advertised to browsers as the ICE candidate. Defaults to --host.
    #[arg(long, env = "SFU_PUBLIC_IP")]
    public_ip: Option<IpAddr>,
    /// Service credential signaling must present (at least 16 characters).
    #[arg(long, env = "SFU_CONTROL_TOKEN")]
    control_token: Secret<String>,
    /// Media worker threads, each with its own UDP port (`--udp-port` + index)
    /// and its own rooms. One per core you give the SFU.
    #[arg(long, env = "SFU_WORKERS", default_value_t = 1)]
    workers: usize,
    /// On SIGTERM the node takes no new rooms and waits up to this many seconds
    /// for its rooms to end before it stops.
    #[arg(long, env = "SFU_DRAIN_SECONDS", default_value_t = 300)]
    drain_secs: u64,
    /// Seconds a participant whose media connection dropped is kept for a resume.
    #[arg(long, env = "SFU_DISCONNECT_GRACE_SECS", default_value_t = 20)]
    disconnect_grace_secs: u64,
    /// Receive and send buffer of each media socket, bytes. Linux caps it at
    /// net.core.rmem_max / wmem_max unless the process has CAP_NET_ADMIN.
    #[arg(long, env = "SFU_SOCKET_BUFFER_BYTES", default_value_t = sfu::Config::DEFAULT_SOCKET_BUFFER)]
    socket_buffer: usize,
    /// Send a subscriber's back-to-back datagrams (a video frame's copies) as
    /// one GSO datagram: the kernel's send path once per run. Falls back by
    /// itself where the kernel or device refuses it.
    #[arg(long, env = "SFU_GSO", default_value_t = true, action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    gso: bool,
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let host = cli.service.host;
    let config = sfu::Config {
        udp_bind: SocketAddr::new(host, cli.udp_port),
        public_ip: cli.public_ip.unwrap_or(host),
        control_token: cli.control_token,
        disconnect_grace: Duration::from_secs(cli.disconnect_grace_secs),
        ice_tcp: cli.ice_tcp,
        socket_buffer: cli.socket_buffer,
        gso: cli.gso,
    };
    let workers = cli.workers;
    let drain_limit = Duration::from_secs(cli.drain_secs);
    // SIGTERM starts a drain; the server and workers stop when it is over.
    let stop = CancellationToken::new();
    let signals = servicekit::shutdown::on_signals();
    run_service_until(
        sfu::SERVICE,
        cli.port,
        cli.service,
        Some(stop.clone()),
        move |_backends, stop| async move {
            let (router, handles) = sfu::build_with_workers(config, workers, stop.clone()).await?;
            sfu::drain_then_stop(handles, signals, stop, drain_limit);
            Ok(router)
        },
    )
    .await
}
