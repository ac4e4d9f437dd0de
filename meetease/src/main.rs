//! `meetease`: the whole platform in one process.
//!
//! Every service listens on its own port and the gateway reaches them over HTTP,
//! exactly as in a distributed deployment: the one-machine path and the many-machine
//! path run the same code. With no `DATABASE_URL`, `REDIS_URL` or `AMQP_URL`, the
//! services use their embedded defaults.

use clap::Parser;
use gateway::{Upstream, Upstreams};
use servicekit::config::BackendConfig;
use servicekit::service::ServiceArgs;
use servicekit::{Secret, StartError, http, shutdown, telemetry};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "meetease",
    version,
    about = "MeetEase: every service in one process"
)]
struct Cli {
    /// Public entry (web client and API). 0 picks a free port.
    #[arg(long, env = "GATEWAY_PORT", default_value_t = gateway::DEFAULT_PORT)]
    gateway_port: u16,
    #[arg(long, env = "AUTH_PORT", default_value_t = auth::DEFAULT_PORT)]
    auth_port: u16,
    #[arg(long, env = "USERS_PORT", default_value_t = users::DEFAULT_PORT)]
    users_port: u16,
    #[arg(long, env = "SIGNALING_PORT", default_value_t = signaling::DEFAULT_PORT)]
    signaling_port: u16,
    #[arg(long, env = "NOTIFY_PORT", default_value_t = notify::DEFAULT_PORT)]
    notify_port: u16,
    #[arg(long, env = "ANALYTICS_PORT", default_value_t = analytics::DEFAULT_PORT)]
    analytics_port: u16,
    /// The SFU's internal control API.
    #[arg(long, env = "SFU_PORT", default_value_t = sfu::DEFAULT_PORT)]
    sfu_port: u16,
    /// The SFU's media port (UDP).
    #[arg(long, env = "SFU_UDP_PORT", default_value_t = sfu::DEFAULT_UDP_PORT)]
    sfu_udp_port: u16,
    /// ICE over TCP for clients whose network blocks UDP: also listen on TCP
    /// at the SFU's media port number and offer it as a passive candidate.
    #[arg(long, env = "SFU_ICE_TCP", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    sfu_ice_tcp: bool,
    /// Address advertised to browsers for media. Defaults to --host.
    #[arg(long, env = "SFU_PUBLIC_IP")]
    sfu_public_ip: Option<IpAddr>,
    /// Receive and send buffer of the SFU's media socket, bytes (capped by
    /// net.core.rmem_max / wmem_max unless the process has CAP_NET_ADMIN).
    #[arg(long, env = "SFU_SOCKET_BUFFER_BYTES", default_value_t = sfu::Config::DEFAULT_SOCKET_BUFFER)]
    sfu_socket_buffer: usize,
    /// Send a subscriber's back-to-back media datagrams as one GSO datagram
    /// (falls back by itself where the kernel refuses it).
    #[arg(long, env = "SFU_GSO", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    sfu_gso: bool,
    /// Service credential between signaling and the SFU. Unset: a fresh random one.
    #[arg(long, env = "SFU_CONTROL_TOKEN")]
    sfu_control_token: Option<Secret<String>>,
    /// Folder holding the browser client.
    #[arg(long, env = "MEETEASE_WEB_DIR")]
    web_dir: Option<PathBuf>,
    #[command(flatten)]
    auth: auth::AuthArgs,
    #[command(flatten)]
    notify: notify::NotifyArgs,
    #[command(flatten)]
    service: ServiceArgs,
}

struct Bound {
    name: &'static str,
    listener: TcpListener,
    addr: SocketAddr,
}

async fn bind(host: IpAddr, name: &'static str, port: u16) -> Result<Bound, StartError> {
    let setting = format!("{}_PORT", name.to_ascii_uppercase());
    let listener = http::bind(SocketAddr::new(host, port), &setting).await?;
    let addr = listener.local_addr().map_err(StartError::other)?;
    Ok(Bound {
        name,
        listener,
        addr,
    })
}

/// `http://host:port` of a service in this process (loopback when it listens on 0.0.0.0).
fn loopback_url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(host, addr.port()))
}

fn upstream(name: &'static str, addr: SocketAddr) -> Result<Upstream, StartError> {
    // A service listening on 0.0.0.0 is reached on loopback from inside the process.
    let host = if addr.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    Upstream::parse(
        name,
        &format!("http://{}", SocketAddr::new(host, addr.port())),
    )
}

async fn run(cli: Cli, shutdown: CancellationToken) -> Result<(), StartError> {
    let host = cli.service.host;
    let backends = BackendConfig::try_from(cli.service.backends)?;

    // Bind every port first, so a port in use fails before anything connects.
    let gateway_l = bind(host, "gateway", cli.gateway_port).await?;
    let auth_l = bind(host, "auth", cli.auth_port).await?;
    let users_l = bind(host, "users", cli.users_port).await?;
    let signaling_l = bind(host, "signaling", cli.signaling_port).await?;
    let notify_l = bind(host, "notify", cli.notify_port).await?;
    let analytics_l = bind(host, "analytics", cli.analytics_port).await?;
    let sfu_l = bind(host, "sfu", cli.sfu_port).await?;

    let upstreams = Upstreams {
        auth: upstream("auth", auth_l.addr)?,
        users: upstream("users", users_l.addr)?,
        signaling: upstream("signaling", signaling_l.addr)?,
        notify: upstream("notify", notify_l.addr)?,
        analytics: upstream("analytics", analytics_l.addr)?,
    };
    // In one process the SFU and signaling share a control token made fresh at
    // each start, unless the operator gave one.
    let sfu_control_token = cli
        .sfu_control_token
        .clone()
        .unwrap_or_else(|| Secret::new(random_token()));
    let sfu_config = sfu::Config {
        udp_bind: SocketAddr::new(host, cli.sfu_udp_port),
        public_ip: cli.sfu_public_ip.unwrap_or(host),
        control_token: sfu_control_token.clone(),
        disconnect_grace: sfu::Config::DEFAULT_DISCONNECT_GRACE,
        ice_tcp: cli.sfu_ice_tcp,
        socket_buffer: cli.sfu_socket_buffer,
        gso: cli.sfu_gso,
    };

    let users_auth_url = loopback_url(auth_l.addr);
    let signaling_auth_url = loopback_url(auth_l.addr);
    let analytics_auth_url = loopback_url(auth_l.addr);
    let notify_auth_url = loopback_url(auth_l.addr);
    let signaling_sfu_url = loopback_url(sfu_l.addr);

    let routers = vec![
        (
            auth_l,
            auth::build(
                auth::Config::from_args(backends.clone(), cli.auth)?,
                shutdown.clone(),
            )
            .await?,
        ),
        (
            users_l,
            users::build(
                users::Config {
                    auth_url: users_auth_url,
                    ..users::Config::new(backends.clone())
                },
                shutdown.clone(),
            )
            .await?,
        ),
        (
            signaling_l,
            signaling::build(
                signaling::Config {
                    auth_url: signaling_auth_url,
                    sfu_urls: vec![signaling_sfu_url],
                    sfu_token: Some(sfu_control_token.clone()),
                    ..signaling::Config::new(backends.clone())
                },
                shutdown.clone(),
            )
            .await?,
        ),
        (
            notify_l,
            notify::build(
                notify::Config {
                    auth_url: notify_auth_url,
                    ..notify::Config::from_args(backends.clone(), cli.notify)?
                },
                shutdown.clone(),
            )
            .await?,
        ),
        (
            analytics_l,
            analytics::build(
                analytics::Config {
                    auth_url: analytics_auth_url,
                    ..analytics::Config::new(backends.clone())
                },
                shutdown.clone(),
            )
            .await?,
        ),
        (sfu_l, sfu::build(sfu_config, shutdown.clone()).await?),
        (
            gateway_l,
            gateway::build(
                gateway::Config::new(
                    backends.clone(),
                    upstreams,
                    cli.web_dir.unwrap_or_else(gateway::default_web_dir),
                ),
                shutdown.clone(),
            )
            .await?,
        ),
    ];

    let mut servers = JoinSet::new();
    let mut gateway_addr = None;
    for (bound, router) in routers {
        println!("{} listening on http://{}", bound.name, bound.addr);
        if bound.name == "gateway" {
            gateway_addr = Some(bound.addr);
        }
        let shutdown = shutdown.clone();
        if bound.name == "gateway" {
            // The public entry adds a deadline on request heads (slow clients).
            servers.spawn(gateway::serve_default(bound.listener, router, shutdown));
            continue;
        }
        servers.spawn(async move { http::serve(bound.listener, router, shutdown).await });
    }
    if let Some(addr) = gateway_addr {
        let shown = if addr.ip().is_loopback() || addr.ip().is_unspecified() {
            format!("http://localhost:{}", addr.port())
        } else {
            format!("http://{addr}")
        };
        println!("MeetEase is running at {shown}");
    }

    // The first server to stop (normally all of them, on shutdown) ends the process;
    // an error in one stops the others too.
    let mut outcome = Ok(());
    while let Some(joined) = servers.join_next().await {
        let result = joined
            .unwrap_or_else(|err| Err(StartError::other(format!("a server task failed: {err}"))));
        if let Err(err) = result {
            shutdown.cancel();
            if outcome.is_ok() {
                outcome = Err(err);
            }
        }
    }
    outcome
}

/// 32 random alphanumerics: a credential that lives as long as this process.
fn random_token() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.service.log_format, &cli.service.log_filter);
    let shutdown = shutdown::on_signals();
    let result = run(cli, shutdown).await;
    servicekit::service::exit_code("meetease", result)
}
