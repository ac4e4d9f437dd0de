//! The gateway: MeetEase's one public entry.
//!
//! Routes `/api/v1/<service>/*` to the service behind it, tunnels the signaling
//! WebSocket `/rtc`, and serves the browser client (`web/`) for everything else.
//!
//! Request flow: CORS → [`stack`] (request id, trace span, panic catcher,
//! metrics per route template, access line [`access`]) → route. A routed request then goes through [`edge`] (path
//! checks, rate limits, identity, body and concurrency limits, an instance of the
//! upstream ([`pool`]: balancing, passive health), timeouts and retries) to
//! [`proxy`]; a web-client path gets the security headers of [`security`].
//! `GET /health` is the gateway's liveness, `GET /health/upstreams` each
//! upstream's breaker and each instance's state ([`health`]). The whole API is
//! described by one OpenAPI document ([`openapi`], `GET /api/v1/openapi.json`),
//! rendered at `GET /api/docs` ([`docs`]). Run it with [`serve`], which adds a
//! deadline on request heads.

pub mod access;
pub mod body;
pub mod breaker;
pub mod docs;
pub mod edge;
pub mod edge_metrics;
pub mod health;
pub mod identity;
pub mod openapi;
pub mod pool;
pub mod proxy;
pub mod ratelimit;
pub mod routes;
pub mod security;
pub mod serve;
pub mod stack;

use axum::Router;
use axum::routing::{any, get};
use servicekit::StartError;
use servicekit::config::BackendConfig;
use servicekit::metrics::Metrics;
use servicekit::service::{Deps, Needs};
use servicekit::tokens::{RedisRevocations, TokenVerifier, VerifierConfig};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tower_http::services::{ServeDir, ServeFile};

pub use breaker::BreakerConfig;
pub use edge::EdgeConfig;
pub use proxy::Upstream;
pub use ratelimit::Quota;
pub use routes::UpstreamId;
pub use serve::{DEFAULT_HEADER_READ_TIMEOUT, serve, serve_default};

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

    pub fn get(&self, id: UpstreamId) -> &Upstream {
        match id {
            UpstreamId::Auth => &self.auth,
            UpstreamId::Users => &self.users,
            UpstreamId::Signaling => &self.signaling,
            UpstreamId::Notify => &self.notify,
            UpstreamId::Analytics => &self.analytics,
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
    /// Limits, identity and resilience settings (defaults in [`EdgeConfig::default`]).
    pub edge: EdgeConfig,
}

impl Config {
    /// Default edge settings.
    pub fn new(backends: BackendConfig, upstreams: Upstreams, web_dir: PathBuf) -> Self {
        Self {
            backends,
            upstreams,
            web_dir,
            edge: EdgeConfig::default(),
        }
    }
}

/// The web client's folder in this source tree, the default for `--web-dir`.
pub fn default_web_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../web"))
}

/// Connect the gateway's backends and build its router.
///
/// With Redis configured, rate limits are shared by every replica and revocation
/// is read from auth's Redis cache; without it, both are answered in process
/// (limits) or by asking auth (`/api/v1/auth/introspect`).
pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Router, StartError> {
    if !config.web_dir.join("index.html").is_file() {
        return Err(StartError::setting(
            "MEETEASE_WEB_DIR",
            format!("{} holds no index.html", config.web_dir.display()),
        ));
    }
    let cors = security::cors(security::parse_origins(&config.edge.cors_origins)?);
    let deps = Deps::connect(
        &config.backends,
        SERVICE,
        Needs {
            database: false,
            redis: true,
            amqp: false,
        },
        shutdown.clone(),
    )
    .await?;

    // Auth's JWKS and introspection: each auth instance in turn, up ones first.
    let auth_health = identity::failover::Health::default();
    let verifier = TokenVerifier::new(
        Arc::new(identity::failover::Jwks::new(
            &config.upstreams.auth,
            auth_health.clone(),
        )?),
        VerifierConfig {
            leeway: config.edge.token_leeway,
            ..VerifierConfig::default()
        },
    );
    let (verifier, limiter): (_, Arc<dyn ratelimit::RateLimiter>) = match &deps.redis {
        Some(conn) => (
            verifier.with_revocations(Arc::new(RedisRevocations(conn.clone()))),
            Arc::new(ratelimit::RedisLimiter::new(
                conn.clone(),
                config.edge.rate_limit_prefix.clone(),
            )),
        ),
        None => (
            verifier.with_revocations(Arc::new(identity::failover::Introspection::new(
                &config.upstreams.auth,
                auth_health.clone(),
            )?)),
            Arc::new(ratelimit::MemoryLimiter::new()),
        ),
    };

    let metrics = Metrics::new(SERVICE);
    let edge_metrics = edge_metrics::EdgeMetrics::register(&metrics);
    let document = openapi::document().map_err(StartError::other)?;
    let combined = deps
        .redis
        .as_ref()
        .map(|conn| ratelimit::EdgeCheck::new(conn.clone(), config.edge.rate_limit_prefix.clone()));
    let edge = edge::Edge::new(
        &config.upstreams,
        verifier,
        limiter,
        combined,
        config.edge.clone(),
        edge_metrics,
        openapi::RouteTemplates::from_document(document),
    );
    let _ = auth_health.set(edge.upstream(UpstreamId::Auth).instances().to_vec());
    health::spawn_prober(edge.clone(), shutdown);

    // Unknown paths under the web client get index.html, so deep links such as
    // `/m/{code}` load the app, which then routes on the client side.
    let index = config.web_dir.join("index.html");
    // The client's own test suite (and its node_modules, when installed in
    // place) lives under `web/tests/`: never serve it.
    let hidden = || async { servicekit::ApiError::not_found("no such page") };
    let mut web = Router::new()
        .route("/tests", any(hidden))
        .route("/tests/{*rest}", any(hidden))
        .fallback_service(ServeDir::new(&config.web_dir).fallback(ServeFile::new(index)));
    for layer in security::web_header_layers() {
        web = web.layer(layer);
    }
    let api = Router::new()
        .route("/rtc", any(edge::handle))
        .route("/api/{*rest}", any(edge::handle))
        .with_state(edge.clone())
        .route("/health/upstreams", get(health::upstreams).with_state(edge))
        .merge(docs::routes(document))
        .merge(web)
        .merge(servicekit::health::routes(deps.readiness, metrics.clone()));
    let router = api.layer(stack::StackLayer::new(metrics));
    Ok(match cors {
        Some(cors) => router.layer(cors),
        None => router,
    })
}
