//! The gateway: MeetEase's one public entry.
//!
//! Routes `/api/v1/<service>/*` to the service behind it, tunnels the signaling
//! WebSocket `/rtc`, and serves the browser client (`web/`) for everything else.
//! Request flow: request id → trace → metrics → route → proxy (see [`proxy`]).

pub mod proxy;
pub mod routes;

use axum::Router;
use servicekit::StartError;
use servicekit::config::BackendConfig;
use servicekit::http;
use servicekit::metrics::Metrics;
use servicekit::service::{Deps, Needs};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

pub use proxy::Upstream;

pub const SERVICE: &str = "gateway";
pub const DEFAULT_PORT: u16 = 8000;

/// Where each upstream service answers.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub auth: Upstream,
    pub users: Upstream,
    pub signaling: Upstream,
    pub notify: Upstream,
    pub analytics: Upstream,
}

impl Upstreams {
    /// Every service on `host` at its default port.
    pub fn local_defaults() -> Self {
        let at = |name, port| {
            Upstream::parse(name, &format!("http://127.0.0.1:{port}")).expect("static URL is valid")
        };
        Self {
            auth: at("auth", 8001),
            users: at("users", 8002),
            signaling: at("signaling", 8003),
            notify: at("notify", 8004),
            analytics: at("analytics", 8005),
        }
    }
}

/// Typed configuration of the gateway.
#[derive(Debug, Clone)]
pub struct Config {
    pub backends: BackendConfig,
    pub upstreams: Upstreams,
    /// Folder holding the browser client (`index.html`, ES modules, CSS).
    pub web_dir: PathBuf,
}

/// The web client's folder in this source tree, the default for `--web-dir`.
pub fn default_web_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../web"))
}

/// Connect the gateway's backends and build its router.
pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Router, StartError> {
    if !config.web_dir.join("index.html").is_file() {
        return Err(StartError::setting(
            "MEETEASE_WEB_DIR",
            format!("{} holds no index.html", config.web_dir.display()),
        ));
    }
    let deps = Deps::connect(
        &config.backends,
        SERVICE,
        Needs {
            database: false,
            redis: true,
            amqp: false,
        },
        shutdown,
    )
    .await?;
    let metrics = Metrics::new(SERVICE);
    let api = routes::router(&config);
    Ok(http::service_router_with_fallback(
        SERVICE,
        api,
        deps.readiness,
        metrics,
    ))
}
