//! `meetease-notify`: the notify service as its own process.

use clap::Parser;
use servicekit::service::{ServiceArgs, run_service};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "meetease-notify", version, about = "MeetEase notify service")]
struct Cli {
    /// TCP port for the HTTP API.
    #[arg(long, env = "NOTIFY_PORT", default_value_t = notify::DEFAULT_PORT)]
    port: u16,
    /// auth's base URL (the alert stream checks access tokens against its JWKS).
    #[arg(long, env = "AUTH_URL", default_value = notify::DEFAULT_AUTH_URL)]
    auth_url: String,
    #[command(flatten)]
    notify: notify::NotifyArgs,
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    run_service(
        notify::SERVICE,
        cli.port,
        cli.service,
        |backends, shutdown| async move {
            let mut config = notify::Config::from_args(backends, cli.notify)?;
            config.auth_url = cli.auth_url;
            notify::build(config, shutdown).await
        },
    )
    .await
}
