//! The analytics service: meeting and user metrics, call-quality timelines.
//!
//! `build` turns typed configuration into the service's router; the binary in
//! `main.rs` and the all-in-one launcher both call it.

use axum::Router;
use servicekit::StartError;
use servicekit::config::BackendConfig;
use servicekit::health::Readiness;
use servicekit::http;
use servicekit::metrics::Metrics;
use servicekit::service::{Deps, Needs};
use tokio_util::sync::CancellationToken;

/// The service's name in logs, metrics and its `*_PORT` setting.
pub const SERVICE: &str = "analytics";
/// The port it listens on by default.
pub const DEFAULT_PORT: u16 = 8005;

/// Typed configuration of the analytics service.
#[derive(Debug, Clone)]
pub struct Config {
    pub backends: BackendConfig,
}

/// Connect the service's backends and build its router.
pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Router, StartError> {
    let deps = Deps::connect(
        &config.backends,
        SERVICE,
        Needs {
            database: true,
            redis: false,
            amqp: true,
        },
        shutdown,
    )
    .await?;
    Ok(router(deps.readiness))
}

fn router(readiness: Readiness) -> Router {
    let metrics = Metrics::new(SERVICE);
    http::service_router(SERVICE, Router::new(), readiness, metrics)
}
