//! `meetease-signaling`: the signaling service as its own process.

use clap::Parser;
use servicekit::Secret;
use servicekit::service::{ServiceArgs, run_service};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "meetease-signaling",
    version,
    about = "MeetEase signaling service"
)]
struct Cli {
    /// TCP port for the HTTP API and the signaling WebSocket.
    #[arg(long, env = "SIGNALING_PORT", default_value_t = signaling::DEFAULT_PORT)]
    port: u16,
    /// Base URL of the auth service (its JWKS verifies access tokens).
    #[arg(long, env = "AUTH_URL", default_value = signaling::DEFAULT_AUTH_URL)]
    auth_url: String,
    /// Control API URL of an SFU node; repeat the flag, or comma-separate in SFU_URLS.
    #[arg(long = "sfu-url", env = "SFU_URLS", value_delimiter = ',', default_value = signaling::DEFAULT_SFU_URL)]
    sfu_urls: Vec<String>,
    /// Service token sent to the SFU nodes' control API.
    #[arg(long, env = "SFU_CONTROL_TOKEN")]
    sfu_token: Option<Secret<String>>,
    /// Secret (at least 32 characters) that signs room tokens; the same on every replica.
    /// Unset: a random one, which only works with a single replica.
    #[arg(long, env = "ROOM_TOKEN_SECRET")]
    room_token_secret: Option<Secret<String>>,
    /// Seconds a client whose connection dropped may take to resume its session.
    #[arg(long, env = "RECONNECT_GRACE_SECS", default_value_t = 20)]
    reconnect_grace_secs: u64,
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Cli {
        port,
        auth_url,
        sfu_urls,
        sfu_token,
        room_token_secret,
        reconnect_grace_secs,
        service,
    } = cli;
    run_service(
        signaling::SERVICE,
        port,
        service,
        move |backends, shutdown| {
            let mut config = signaling::Config::new(backends);
            config.auth_url = auth_url;
            config.sfu_urls = sfu_urls;
            config.sfu_token = sfu_token;
            config.room_token_secret = room_token_secret;
            config.reconnect_grace = Duration::from_secs(reconnect_grace_secs);
            signaling::build(config, shutdown)
        },
    )
    .await
}
