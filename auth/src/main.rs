//! `meetease-auth`: the auth service as its own process.

use clap::Parser;
use servicekit::service::{ServiceArgs, run_service};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "meetease-auth", version, about = "MeetEase auth service")]
struct Cli {
    /// TCP port for the HTTP API.
    #[arg(long, env = "AUTH_PORT", default_value_t = auth::DEFAULT_PORT)]
    port: u16,
    #[command(flatten)]
    auth: auth::AuthArgs,
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let auth_args = cli.auth;
    run_service(
        auth::SERVICE,
        cli.port,
        cli.service,
        |backends, shutdown| async move {
            auth::build(auth::Config::from_args(backends, auth_args)?, shutdown).await
        },
    )
    .await
}
