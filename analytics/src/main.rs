//! `meetease-analytics`: the analytics service as its own process.

use clap::Parser;
use servicekit::service::{ServiceArgs, run_service};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "meetease-analytics",
    version,
    about = "MeetEase analytics service"
)]
struct Cli {
    /// TCP port for the HTTP API.
    #[arg(long, env = "ANALYTICS_PORT", default_value_t = analytics::DEFAULT_PORT)]
    port: u16,
    /// auth's base URL (access tokens are checked against its JWKS).
    #[arg(long, env = "AUTH_URL", default_value = analytics::DEFAULT_AUTH_URL)]
    auth_url: String,
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    run_service(
        analytics::SERVICE,
        cli.port,
        cli.service,
        |backends, shutdown| {
            analytics::build(
                analytics::Config {
                    auth_url: cli.auth_url,
                    ..analytics::Config::new(backends)
                },
                shutdown,
            )
        },
    )
    .await
}
