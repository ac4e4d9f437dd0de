//! `meetease-users`: the users service as its own process.

use clap::Parser;
use servicekit::service::{ServiceArgs, run_service};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "meetease-users", version, about = "MeetEase users service")]
struct Cli {
    /// TCP port for the HTTP API.
    #[arg(long, env = "USERS_PORT", default_value_t = users::DEFAULT_PORT)]
    port: u16,
    /// Base URL of the auth service (its JWKS verifies access tokens).
    #[arg(long, env = "AUTH_URL", default_value = users::DEFAULT_AUTH_URL)]
    auth_url: String,
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let auth_url = cli.auth_url;
    run_service(
        users::SERVICE,
        cli.port,
        cli.service,
        move |backends, shutdown| {
            let mut config = users::Config::new(backends);
            config.auth_url = auth_url;
            users::build(config, shutdown)
        },
    )
    .await
}
