//! `/health` (liveness), `/ready` (dependencies answer) and `/metrics` (Prometheus text).

use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The future a readiness check returns: `Err` carries a reason for the log.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One dependency whose health decides whether the service is ready.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Short name shown in `/ready`'s body (`database`, `redis`, `amqp`, ...).
    fn name(&self) -> &'static str;
    fn check(&self) -> CheckFuture<'_>;
}

/// How long one check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The set of checks behind `/ready`, plus the draining flag set on shutdown so a
/// load balancer stops sending new work before the listener closes.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<Arc<dyn ReadinessCheck>>,
    draining: Arc<AtomicBool>,
}

impl Readiness {
    pub fn with(mut self, check: impl ReadinessCheck) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    pub fn with_arc(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.checks.push(check);
        self
    }

    /// Mark the service as draining: `/ready` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Runs every check concurrently; `(name, Ok | Err(reason))` in declaration order.
    pub async fn run(&self) -> Vec<(&'static str, Result<(), String>)> {
        let futures = self.checks.iter().map(|check| async move {
            let result = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            (check.name(), result)
        });
        futures_util::future::join_all(futures).await
    }
}

/// The health, readiness and metrics routes.
pub fn routes(readiness: Readiness, metrics: Metrics) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready).with_state(readiness))
        .route("/metrics", get(scrape).with_state(metrics))
}

async fn health() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn ready(State(readiness): State<Readiness>) -> Response {
    let results = readiness.run().await;
    let mut all_ok = !readiness.draining.load(Ordering::Relaxed);
    let mut checks = serde_json::Map::new();
    for (name, result) in results {
        let state = match result {
            Ok(()) => "ok",
            Err(reason) => {
                tracing::warn!(check = name, %reason, "readiness check failed");
                all_ok = false;
                "down"
            }
        };
        checks.insert(name.to_owned(), json!(state));
    }
    let (status, word) = if all_ok {
        (StatusCode::OK, "ready")
    } else if readiness.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    (
        status,
        axum::Json(json!({ "status": word, "checks": checks })),
    )
        .into_response()
}

async fn scrape(State(metrics): State<Metrics>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}
