//! The users service: profiles, preferences and avatars.
//!
//! `build` turns typed configuration into the service's router; the binary in
//! `main.rs` and the all-in-one launcher both call it.
//!
//! - [`domain`]: `DisplayName`, `TimeZone`, `Locale`, `Bio` (parse, don't validate) and
//!   `Preferences`;
//! - [`store`]: profiles and avatar images (PostgreSQL or SQLite, one query set);
//! - [`avatar`]: checking, resizing and re-encoding uploads; the generated default;
//! - [`routes`]: the HTTP API under `/api/v1/users`;
//! - [`events`]: `user.registered` and `user.deleted` from the event bus;
//!   `user.preferences_changed` goes out through the outbox (see [`store`]).
//!
//! A profile is created by auth's `user.registered` event, or the first time its
//! owner calls the service (from the access token's claims, `sub` and `name`),
//! whichever comes first.

pub mod avatar;
pub mod domain;
pub mod events;
pub mod routes;
pub mod store;

use axum::Router;
use axum::extract::FromRef;
use servicekit::StartError;
use servicekit::backends::Db;
use servicekit::bus::EventBus;
use servicekit::config::BackendConfig;
use servicekit::health::Readiness;
use servicekit::http;
use servicekit::metrics::Metrics;
use servicekit::service::{Deps, Needs};
use servicekit::tokens::{TokenVerifier, VerifierConfig};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The service's name in logs, metrics and its `*_PORT` setting.
pub const SERVICE: &str = "users";
/// The port it listens on by default.
pub const DEFAULT_PORT: u16 = 8002;
/// Where auth is by default.
pub const DEFAULT_AUTH_URL: &str = "http://127.0.0.1:8001";

/// Typed configuration of the users service.
#[derive(Debug, Clone)]
pub struct Config {
    pub backends: BackendConfig,
    /// Base URL of the auth service; its JWKS is at `{auth_url}/api/v1/auth/jwks`.
    pub auth_url: String,
}

impl Config {
    /// Defaults for everything but the backends.
    pub fn new(backends: BackendConfig) -> Self {
        Self {
            backends,
            auth_url: DEFAULT_AUTH_URL.to_owned(),
        }
    }
}

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: store::Store,
    pub verifier: TokenVerifier,
    /// Avatar decodes running at once (one per core): each may hold up to
    /// `avatar::MAX_PIXELS` × 4 bytes, so they are bounded; beyond it a request
    /// is refused with 503 + `Retry-After` rather than queued.
    pub decoders: Arc<Semaphore>,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
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
        shutdown.clone(),
    )
    .await?;
    let db = deps
        .db
        .ok_or_else(|| StartError::other("users needs a database"))?;
    // RabbitMQ when configured, else the process's in-memory bus (the launcher's
    // auth publishes there).
    let bus = servicekit::bus::for_link(deps.amqp.clone());
    build_with(config, db, bus, deps.readiness, shutdown).await
}

/// Build the router on a database and bus already connected (tests pass a fresh
/// schema and a private bus).
pub async fn build_with(
    config: Config,
    db: Db,
    bus: Arc<dyn EventBus>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<Router, StartError> {
    let url = config.auth_url.trim_end_matches('/');
    let verifier = TokenVerifier::from_jwks_url(
        &format!("{url}/api/v1/auth/jwks"),
        VerifierConfig::default(),
    )
    .map_err(|err| StartError::setting("AUTH_URL", err.message))?;
    let store = store::Store::open(db.clone()).await?;
    events::subscribe(bus.clone(), store.clone(), shutdown.clone())
        .await
        .map_err(|err| StartError::setting("AMQP_URL", err))?;
    // `user.preferences_changed` from the outbox to the bus.
    servicekit::bus::spawn_relay(
        db,
        bus,
        servicekit::bus::RelayConfig::new(proto::event::USER_EVENTS),
        shutdown,
    );
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let state = AppState {
        store,
        verifier,
        decoders: Arc::new(Semaphore::new(cores)),
    };
    let metrics = Metrics::new(SERVICE);
    Ok(http::service_router(
        SERVICE,
        routes::router(state),
        readiness,
        metrics,
    ))
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
