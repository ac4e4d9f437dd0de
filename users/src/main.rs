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
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    run_service(
        users::SERVICE,
        cli.port,
        cli.service,
        |backends, shutdown| users::build(users::Config { backends }, shutdown),
    )
    .await
}
