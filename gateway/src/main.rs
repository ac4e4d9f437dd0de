//! `meetease-gateway`: the public entry as its own process.

use clap::Parser;
use gateway::{Config, Upstream, Upstreams};
use servicekit::StartError;
use servicekit::service::{ServiceArgs, run_service};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "meetease-gateway", version, about = "MeetEase gateway")]
struct Cli {
    /// TCP port for the public HTTP entry.
    #[arg(long, env = "GATEWAY_PORT", default_value_t = gateway::DEFAULT_PORT)]
    port: u16,
    #[arg(long, env = "AUTH_URL", default_value = "http://127.0.0.1:8001")]
    auth_url: String,
    #[arg(long, env = "USERS_URL", default_value = "http://127.0.0.1:8002")]
    users_url: String,
    #[arg(long, env = "SIGNALING_URL", default_value = "http://127.0.0.1:8003")]
    signaling_url: String,
    #[arg(long, env = "NOTIFY_URL", default_value = "http://127.0.0.1:8004")]
    notify_url: String,
    #[arg(long, env = "ANALYTICS_URL", default_value = "http://127.0.0.1:8005")]
    analytics_url: String,
    /// Folder holding the browser client.
    #[arg(long, env = "MEETEASE_WEB_DIR")]
    web_dir: Option<PathBuf>,
    #[command(flatten)]
    service: ServiceArgs,
}

fn upstreams(cli: &Cli) -> Result<Upstreams, StartError> {
    Ok(Upstreams {
        auth: Upstream::parse("auth", &cli.auth_url)?,
        users: Upstream::parse("users", &cli.users_url)?,
        signaling: Upstream::parse("signaling", &cli.signaling_url)?,
        notify: Upstream::parse("notify", &cli.notify_url)?,
        analytics: Upstream::parse("analytics", &cli.analytics_url)?,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let upstreams = match upstreams(&cli) {
        Ok(upstreams) => upstreams,
        Err(err) => return servicekit::service::exit_code(gateway::SERVICE, Err(err)),
    };
    let web_dir = cli.web_dir.clone().unwrap_or_else(gateway::default_web_dir);
    run_service(
        gateway::SERVICE,
        cli.port,
        cli.service,
        |backends, shutdown| {
            gateway::build(
                Config {
                    backends,
                    upstreams,
                    web_dir,
                },
                shutdown,
            )
        },
    )
    .await
}
