//! The analytics service: meeting and usage figures from the events on the bus.
//!
//! `build` turns typed configuration into the service's router; the binary in
//! `main.rs` and the all-in-one launcher both call it. It consumes `meeting.*`
//! events ([`ingest`]) into time-bucketed tables, each event counted once (its id is
//! recorded in `processed_events` in the same transaction), and answers
//! `GET /api/v1/analytics/{meetings/{id}, users/me, platform}` ([`routes`]).

pub mod ingest;
pub mod routes;

use axum::Router;
use axum::extract::FromRef;
use proto::event::MEETING_EVENTS;
use servicekit::StartError;
use servicekit::backends::Db;
use servicekit::bus::{self, EventBus, Subscription};
use servicekit::config::BackendConfig;
use servicekit::http;
use servicekit::metrics::Metrics;
use servicekit::service::{Deps, Needs};
use servicekit::tokens::{TokenVerifier, VerifierConfig};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The service's name in logs, metrics and its `*_PORT` setting.
pub const SERVICE: &str = "analytics";
/// The port it listens on by default.
pub const DEFAULT_PORT: u16 = 8005;
/// Where auth answers when nothing else is configured.
pub const DEFAULT_AUTH_URL: &str = "http://127.0.0.1:8001";

static MIGRATIONS_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static MIGRATIONS_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Typed configuration of the analytics service.
#[derive(Debug, Clone)]
pub struct Config {
    pub backends: BackendConfig,
    /// auth's base URL; access tokens are checked against its JWKS.
    pub auth_url: String,
    /// The bus queue and exchange (tests use unique names).
    pub queue: String,
    pub meeting_exchange: String,
    /// How long per-participant quality buckets are kept.
    pub quality_retention: std::time::Duration,
}

impl Config {
    pub fn new(backends: BackendConfig) -> Self {
        Self {
            backends,
            auth_url: DEFAULT_AUTH_URL.to_owned(),
            queue: SERVICE.to_owned(),
            meeting_exchange: MEETING_EVENTS.to_owned(),
            quality_retention: std::time::Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Parts tests pass in instead of having `build` make them.
#[derive(Default)]
pub struct Parts {
    pub db: Option<Db>,
    pub bus: Option<Arc<dyn EventBus>>,
    pub verifier: Option<TokenVerifier>,
}

/// What handlers need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub verifier: TokenVerifier,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> TokenVerifier {
        state.verifier.clone()
    }
}

/// Connect the service's backends and build its router.
pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Router, StartError> {
    build_with(config, shutdown, Parts::default()).await
}

/// As [`build`], with some parts given instead of made.
pub async fn build_with(
    config: Config,
    shutdown: CancellationToken,
    parts: Parts,
) -> Result<Router, StartError> {
    let deps = Deps::connect(
        &config.backends,
        SERVICE,
        Needs {
            database: parts.db.is_none(),
            redis: false,
            amqp: parts.bus.is_none(),
        },
        shutdown.clone(),
    )
    .await?;
    let mut readiness = deps.readiness;
    let db = match (parts.db, deps.db) {
        (Some(db), _) => {
            readiness = readiness.with(db.readiness_check());
            db
        }
        (None, Some(db)) => db,
        (None, None) => return Err(StartError::other("analytics needs a database")),
    };
    db.migrate(&MIGRATIONS_POSTGRES, &MIGRATIONS_SQLITE).await?;
    let verifier = match parts.verifier {
        Some(verifier) => verifier,
        None => {
            let jwks = format!("{}/api/v1/auth/jwks", config.auth_url.trim_end_matches('/'));
            TokenVerifier::from_jwks_url(&jwks, VerifierConfig::default())
                .map_err(|err| StartError::setting("AUTH_URL", err.message))?
        }
    };
    let bus = parts.bus.unwrap_or_else(|| bus::for_link(deps.amqp));
    let subscription =
        Subscription::new(config.queue.clone()).bind(config.meeting_exchange.clone(), "meeting.#");
    tokio::spawn(retention(
        db.clone(),
        config.quality_retention,
        shutdown.clone(),
    ));
    bus.subscribe(subscription, ingest::handler(db.clone()), shutdown)
        .await
        .map_err(|err| StartError::setting("AMQP_URL", err.to_string()))?;
    let metrics = Metrics::new(SERVICE);
    let state = AppState { db, verifier };
    Ok(http::service_router(
        SERVICE,
        routes::router(state),
        readiness,
        metrics,
    ))
}

/// Prune old rows once an hour (see [`ingest::prune`]).
async fn retention(db: Db, keep: std::time::Duration, shutdown: CancellationToken) {
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        match ingest::prune(&db, keep_ms, now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "analytics retention pruned old rows"),
            Err(err) => tracing::warn!(%err, "analytics retention failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}
