//! The signaling service: meetings over REST, the signaling WebSocket, live room state and SFU node choice.
//!
//! `build` turns typed configuration into the service's router; the binary in
//! `main.rs` and the all-in-one launcher both call it.
//!
//! - [`meetings`]: `/api/v1/meetings` (create, list, get, update, cancel, join, history),
//!   stored in PostgreSQL or SQLite, with an [`outbox`] of meeting events;
//! - [`room_token`]: the short-lived JWT a join hands out;
//! - [`rtc`]: the signaling WebSocket `/rtc`, one session per connection;
//! - [`room`]: the pure room state machine and the `RoomStore` (memory or Redis);
//! - [`sfu`]: the SFU control API client, event streams and node placement;
//! - [`live`]: what ties sessions, rooms and SFU nodes together on one replica.

pub mod clock;
pub mod code;
pub mod live;
pub mod mailbox;
pub mod meetings;
pub mod outbox;
pub mod room;
pub mod room_token;
pub mod rtc;
pub mod sfu;

use axum::Router;
use axum::extract::FromRef;
use live::{Live, SessionOptions};
use room::RoomStore;
use room::redis_store::RedisStore;
use room_token::RoomTokens;
use servicekit::backends::Db;
use servicekit::config::BackendConfig;
use servicekit::http;
use servicekit::metrics::Metrics;
use servicekit::service::{Deps, Needs};
use servicekit::tokens::{TokenVerifier, VerifierConfig};
use servicekit::{Secret, StartError};
use sfu::SfuClient;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The service's name in logs, metrics and its `*_PORT` setting.
pub const SERVICE: &str = "signaling";
/// The port it listens on by default.
pub const DEFAULT_PORT: u16 = 8003;
/// Where auth is by default.
pub const DEFAULT_AUTH_URL: &str = "http://127.0.0.1:8001";
/// Where the SFU is by default.
pub const DEFAULT_SFU_URL: &str = "http://127.0.0.1:8006";
/// Prefix of every Redis key signaling writes.
pub const REDIS_PREFIX: &str = "signaling:";

static MIGRATIONS_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static MIGRATIONS_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Typed configuration of the signaling service.
#[derive(Debug, Clone)]
pub struct Config {
    pub backends: BackendConfig,
    /// Base URL of the auth service; its JWKS is at `{auth_url}/api/v1/auth/jwks`.
    pub auth_url: String,
    /// Control API base URLs of the SFU nodes (more may come from the Redis registry).
    pub sfu_urls: Vec<String>,
    /// Sent to SFU nodes as `Authorization: Bearer`.
    pub sfu_token: Option<Secret<String>>,
    /// Signs room tokens; every replica needs the same. `None`: a random one (one replica only).
    pub room_token_secret: Option<Secret<String>>,
    /// How long a dropped client may take to resume.
    pub reconnect_grace: Duration,
    /// Prefix of Redis keys (tests use a random one each).
    pub redis_prefix: String,
}

impl Config {
    /// Defaults for everything but the backends.
    pub fn new(backends: BackendConfig) -> Self {
        Self {
            backends,
            auth_url: DEFAULT_AUTH_URL.to_owned(),
            sfu_urls: vec![DEFAULT_SFU_URL.to_owned()],
            sfu_token: None,
            room_token_secret: None,
            reconnect_grace: Duration::from_secs(20),
            redis_prefix: REDIS_PREFIX.to_owned(),
        }
    }
}

/// Replacements for parts `build` would otherwise make from the configuration
/// (tests use a fake SFU, fixed access-token keys and short timings).
#[derive(Default)]
pub struct Parts {
    pub sfu: Option<Arc<dyn SfuClient>>,
    pub verifier: Option<TokenVerifier>,
    pub session: Option<SessionOptions>,
    /// A database already connected (tests give each one a fresh schema).
    pub db: Option<Db>,
}

/// The state every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub verifier: TokenVerifier,
    pub live: Live,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// Connect the service's backends and build its router.
/// Apply signaling's migrations (`build` does; tests that use the store alone call it).
pub async fn migrate(db: &servicekit::backends::Db) -> Result<(), StartError> {
    db.migrate(&MIGRATIONS_POSTGRES, &MIGRATIONS_SQLITE).await
}

pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Router, StartError> {
    build_with(config, shutdown, Parts::default()).await
}

/// As [`build`], with some parts given instead of made.
pub async fn build_with(
    config: Config,
    shutdown: CancellationToken,
    parts: Parts,
) -> Result<Router, StartError> {
    for url in &config.sfu_urls {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(StartError::setting(
                "SFU_URLS",
                format!("`{url}` is not an http:// URL"),
            ));
        }
    }
    let deps = Deps::connect(
        &config.backends,
        SERVICE,
        Needs {
            database: parts.db.is_none(),
            redis: true,
            amqp: true,
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
        (None, None) => return Err(StartError::other("signaling needs a database")),
    };
    migrate(&db).await?;
    // The outbox relay (issue 10): RabbitMQ when configured, else the in-process bus.
    servicekit::bus::spawn_relay(
        db.clone(),
        servicekit::bus::for_link(deps.amqp.clone()),
        servicekit::bus::RelayConfig::new(proto::event::MEETING_EVENTS).with_room_seq(),
        shutdown.clone(),
    );
    let rooms: Arc<dyn RoomStore> = match (&config.backends.redis_url, &deps.redis) {
        (Some(url), Some(conn)) => Arc::new(
            RedisStore::connect(url, &config.redis_prefix, conn.clone(), shutdown.clone())
                .await
                .map_err(|err| StartError::setting("REDIS_URL", err))?,
        ),
        _ => Arc::new(room::MemoryStore::new()),
    };
    let tokens = match &config.room_token_secret {
        Some(secret) => RoomTokens::new(secret)?,
        None => RoomTokens::generate(),
    };
    let verifier = match parts.verifier {
        Some(verifier) => verifier,
        None => {
            let jwks = format!("{}/api/v1/auth/jwks", config.auth_url.trim_end_matches('/'));
            TokenVerifier::from_jwks_url(&jwks, VerifierConfig::default())
                .map_err(|err| StartError::setting("AUTH_URL", err.message))?
        }
    };
    let sfu: Arc<dyn SfuClient> = match parts.sfu {
        Some(sfu) => sfu,
        None => Arc::new(
            sfu::HttpSfu::new(config.sfu_token.clone())
                .map_err(|err| StartError::setting("SFU_URLS", err))?,
        ),
    };
    let mut session = parts.session.unwrap_or_default();
    session.reconnect_grace = config.reconnect_grace;
    let live = Live::new(
        rooms,
        sfu,
        tokens,
        db.clone(),
        config.sfu_urls.clone(),
        session,
        shutdown,
    );
    live.start();
    let metrics = Metrics::new(SERVICE);
    live.metrics().register(&metrics);
    let state = AppState { db, verifier, live };
    let api = meetings::routes::routes()
        .route("/rtc", axum::routing::get(rtc::upgrade))
        .with_state(state);
    Ok(http::service_router(SERVICE, api, readiness, metrics))
}
