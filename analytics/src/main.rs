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
        |backends, shutdown| analytics::build(analytics::Config { backends }, shutdown),
    )
    .await
}
