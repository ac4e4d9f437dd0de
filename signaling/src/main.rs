//! `meetease-signaling`: the signaling service as its own process.

use clap::Parser;
use servicekit::service::{ServiceArgs, run_service};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "meetease-signaling",
    version,
    about = "MeetEase signaling service"
)]
struct Cli {
    /// TCP port for the HTTP API.
    #[arg(long, env = "SIGNALING_PORT", default_value_t = signaling::DEFAULT_PORT)]
    port: u16,
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    run_service(
        signaling::SERVICE,
        cli.port,
        cli.service,
        |backends, shutdown| signaling::build(signaling::Config { backends }, shutdown),
    )
    .await
}
