//! `meetease-gateway`: the public entry as its own process.

use clap::Parser;
use gateway::{Config, EdgeConfig, Quota, Upstream, Upstreams};
use servicekit::StartError;
use servicekit::config::BackendConfig;
use servicekit::service::ServiceArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "meetease-gateway", version, about = "MeetEase gateway")]
struct Cli {
    /// TCP port for the public HTTP entry.
    #[arg(long, env = "GATEWAY_PORT", default_value_t = gateway::DEFAULT_PORT)]
    port: u16,
    /// The auth service (its JWKS and introspection are read from the first
    /// address). Each service URL may list several instances, separated by commas
    /// (`http://10.0.0.1:8001,http://10.0.0.2:8001`): requests are balanced across
    /// them and an instance that keeps failing is ejected for a while.
    #[arg(long, env = "AUTH_URL", default_value = "http://127.0.0.1:8001")]
    auth_url: String,
    /// The users service.
    #[arg(long, env = "USERS_URL", default_value = "http://127.0.0.1:8002")]
    users_url: String,
    /// The signaling service (meetings and the /rtc WebSocket).
    #[arg(long, env = "SIGNALING_URL", default_value = "http://127.0.0.1:8003")]
    signaling_url: String,
    /// The notify service.
    #[arg(long, env = "NOTIFY_URL", default_value = "http://127.0.0.1:8004")]
    notify_url: String,
    /// The analytics service.
    #[arg(long, env = "ANALYTICS_URL", default_value = "http://127.0.0.1:8005")]
    analytics_url: String,
    /// Folder holding the browser client.
    #[arg(long, env = "MEETEASE_WEB_DIR")]
    web_dir: Option<PathBuf>,
    #[command(flatten)]
    edge: GatewayArgs,
    #[command(flatten)]
    service: ServiceArgs,
}

/// The gateway's edge settings; the launcher (`meetease`) takes the same flags.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Rate limit per client address on every API call: RATE/UNIT,BURST (UNIT s, m or h).
    #[arg(long, env = "GATEWAY_RATE_LIMIT_IP", default_value = "50/s,200")]
    pub rate_limit_ip: String,
    /// Rate limit per signed-in user: RATE/UNIT,BURST.
    #[arg(long, env = "GATEWAY_RATE_LIMIT_USER", default_value = "30/s,120")]
    pub rate_limit_user: String,
    /// Rate limit per client address on sign-in, sign-up and password routes.
    #[arg(
        long,
        env = "GATEWAY_RATE_LIMIT_CREDENTIALS",
        default_value = "20/m,20"
    )]
    pub rate_limit_credentials: String,
    /// Seconds to wait for a service's response head on API calls.
    #[arg(long, env = "GATEWAY_API_TIMEOUT", default_value_t = 15)]
    pub api_timeout_secs: u64,
    /// Seconds to wait for the avatar upload's response head.
    #[arg(long, env = "GATEWAY_UPLOAD_TIMEOUT", default_value_t = 60)]
    pub upload_timeout_secs: u64,
    /// Largest API request body, in bytes.
    #[arg(long, env = "GATEWAY_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Largest avatar upload, in bytes.
    #[arg(long, env = "GATEWAY_UPLOAD_LIMIT", default_value_t = 8 * 1024 * 1024)]
    pub upload_limit: usize,
    /// Seconds a client may take to send a request's head (slow-client protection).
    #[arg(long, env = "GATEWAY_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Requests in flight at once; beyond that the gateway answers 503 at once.
    #[arg(long, env = "GATEWAY_MAX_CONCURRENT", default_value_t = 1024)]
    pub max_concurrent: usize,
    /// Open /rtc WebSocket tunnels at once.
    #[arg(long, env = "GATEWAY_MAX_TUNNELS", default_value_t = 10_000)]
    pub max_tunnels: usize,
    /// Consecutive failures that eject an upstream instance (every instance
    /// ejected opens the upstream's circuit breaker).
    #[arg(long, env = "GATEWAY_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// Seconds an ejected instance rests before a probe may try it again.
    #[arg(long, env = "GATEWAY_BREAKER_OPEN", default_value_t = 5)]
    pub breaker_open_secs: u64,
    /// Milliseconds between health probes of each upstream instance.
    #[arg(long, env = "GATEWAY_PROBE_INTERVAL_MS", default_value_t = 2000)]
    pub probe_interval_ms: u64,
    /// Comma-separated origins allowed to call the API cross-site (CORS).
    /// Default: none (same origin only).
    #[arg(long, env = "GATEWAY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Comma-separated addresses or ranges (`10.0.0.0/8`) of load balancers whose
    /// X-Forwarded-For is trusted.
    #[arg(long, env = "GATEWAY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<servicekit::net::IpNet>,
}

impl GatewayArgs {
    fn edge_config(&self) -> Result<EdgeConfig, StartError> {
        let quota = |setting: &str, text: &str| {
            Quota::parse(text).map_err(|why| StartError::setting(setting, why))
        };
        let positive = |setting: &str, value: u64| {
            if value == 0 {
                Err(StartError::setting(setting, "must be at least 1"))
            } else {
                Ok(value)
            }
        };
        let defaults = EdgeConfig::default();
        Ok(EdgeConfig {
            per_ip: quota("GATEWAY_RATE_LIMIT_IP", &self.rate_limit_ip)?,
            per_user: quota("GATEWAY_RATE_LIMIT_USER", &self.rate_limit_user)?,
            credentials: quota(
                "GATEWAY_RATE_LIMIT_CREDENTIALS",
                &self.rate_limit_credentials,
            )?,
            api_timeout: Duration::from_secs(positive(
                "GATEWAY_API_TIMEOUT",
                self.api_timeout_secs,
            )?),
            credentials_timeout: Duration::from_secs(self.api_timeout_secs.max(1)),
            upload_timeout: Duration::from_secs(positive(
                "GATEWAY_UPLOAD_TIMEOUT",
                self.upload_timeout_secs,
            )?),
            api_body_limit: self.body_limit,
            upload_body_limit: self.upload_limit,
            max_concurrent_requests: positive("GATEWAY_MAX_CONCURRENT", self.max_concurrent as u64)?
                as usize,
            max_tunnels: positive("GATEWAY_MAX_TUNNELS", self.max_tunnels as u64)? as usize,
            breaker: gateway::BreakerConfig {
                failure_threshold: positive(
                    "GATEWAY_BREAKER_FAILURES",
                    u64::from(self.breaker_failures),
                )? as u32,
                open_for: Duration::from_secs(self.breaker_open_secs),
            },
            probe_interval: Duration::from_millis(positive(
                "GATEWAY_PROBE_INTERVAL_MS",
                self.probe_interval_ms,
            )?),
            cors_origins: self.cors_origins.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            ..defaults
        })
    }
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
    servicekit::telemetry::init(cli.service.log_format, &cli.service.log_filter);
    let result = run(cli).await;
    servicekit::service::exit_code(gateway::SERVICE, result)
}

async fn run(cli: Cli) -> Result<(), StartError> {
    let upstreams = upstreams(&cli)?;
    let edge = cli.edge.edge_config()?;
    let header_timeout = Duration::from_secs(cli.edge.header_timeout_secs.max(1));
    let web_dir = cli.web_dir.clone().unwrap_or_else(gateway::default_web_dir);
    let backends = BackendConfig::try_from(cli.service.backends)?;
    let shutdown = servicekit::shutdown::on_signals();
    let listener =
        servicekit::http::bind(SocketAddr::new(cli.service.host, cli.port), "GATEWAY_PORT").await?;
    let router = gateway::build(
        Config {
            backends,
            upstreams,
            web_dir,
            edge,
        },
        shutdown.clone(),
    )
    .await?;
    let addr = listener.local_addr().map_err(StartError::other)?;
    tracing::info!(service = gateway::SERVICE, %addr, "listening");
    println!("{} listening on http://{addr}", gateway::SERVICE);
    gateway::serve(listener, router, shutdown, header_timeout).await
}
