//! The auth service: accounts, password hashing, sessions, access and refresh tokens,
//! JWKS, sign-in with OpenID providers, account deletion.
//!
//! `build` turns typed configuration into the service's router; the binary in
//! `main.rs` and the all-in-one launcher both call it.
//!
//! - [`domain`]: `Email`, `Password`, `DisplayName` (parse, don't validate), the
//!   Argon2id hasher, opaque tokens;
//! - [`store`]: the relational store (PostgreSQL or SQLite, one query set);
//! - [`keys`]: Ed25519 signing keys kept in the store, rotated, published as JWKS;
//! - [`revocation`]: signed-out tokens, database first, Redis as a cache;
//! - [`throttle`]: per-account and per-IP brute-force delays (Redis or memory);
//! - [`oidc`]: OpenID providers (discovery, JWKS, code exchange, ID-token checks);
//! - [`routes`]: the HTTP API under `/api/v1/auth`.

pub mod domain;
pub mod keys;
pub mod oidc;
pub mod revocation;
pub mod routes;
pub mod store;
pub mod throttle;

use axum::Router;
use servicekit::StartError;
use servicekit::backends::Db;
use servicekit::config::BackendConfig;
use servicekit::health::Readiness;
use servicekit::http;
use servicekit::metrics::Metrics;
use servicekit::net::IpNet;
use servicekit::service::{Deps, Needs};
use servicekit::tokens::{TokenVerifier, VerifierConfig};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The service's name in logs, metrics and its `*_PORT` setting.
pub const SERVICE: &str = "auth";
/// The port it listens on by default.
pub const DEFAULT_PORT: u16 = 8001;

/// Typed configuration of the auth service.
#[derive(Debug, Clone)]
pub struct Config {
    pub backends: BackendConfig,
    pub tokens: TokenSettings,
    /// Password hashes computed at once (each takes ~19 MiB and a core for ~30 ms).
    pub hash_concurrency: usize,
    /// Peers whose `X-Forwarded-For` names the real client (the gateway).
    pub trusted_proxies: Vec<IpNet>,
    pub oauth: OauthSettings,
    /// Where the throttles count. `Some(prefix)`: in Redis under that key prefix
    /// when Redis is connected, shared by every replica using the same prefix (the
    /// binary and the launcher: `AUTH_THROTTLE_NAMESPACE`, default
    /// [`throttle::DEFAULT_REDIS_NAMESPACE`]). `None` (what [`Config::new`] gives):
    /// in process memory, so services embedded in tests never share counts by
    /// accident through a common Redis.
    pub throttle_namespace: Option<String>,
}

/// Sign-in with OpenID providers.
#[derive(Debug, Clone)]
pub struct OauthSettings {
    /// The public base URL browsers reach auth through (the gateway); the
    /// redirect URI registered with each provider is
    /// `{public_url}/api/v1/auth/oauth/{name}/callback`.
    pub public_url: String,
    /// The web client page a finished sign-in returns to, with
    /// `#oauth_code=<one-time code>` appended.
    pub return_url: String,
    pub providers: Vec<oidc::ProviderConfig>,
}

impl Default for OauthSettings {
    fn default() -> Self {
        Self {
            public_url: DEFAULT_PUBLIC_URL.to_owned(),
            return_url: format!("{DEFAULT_PUBLIC_URL}/"),
            providers: Vec::new(),
        }
    }
}

/// Where browsers reach MeetEase by default (the gateway on this machine; the
/// same default as notify's links).
pub const DEFAULT_PUBLIC_URL: &str = "http://localhost:8000";

/// Lifetimes and names of the tokens auth issues.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    /// Each refresh token's lifetime (rotation makes a new one).
    pub refresh_ttl: Duration,
    /// A session's absolute lifetime: after this the user signs in again.
    pub session_ttl: Duration,
    pub verify_email_ttl: Duration,
    pub reset_password_ttl: Duration,
    /// Signing keys older than this are replaced (the old one stays published for
    /// one access-token lifetime plus a margin).
    pub key_rotation: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: proto::auth::DEFAULT_ISSUER.to_owned(),
            audience: proto::auth::DEFAULT_AUDIENCE.to_owned(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(14 * 24 * 3600),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            verify_email_ttl: Duration::from_secs(24 * 3600),
            reset_password_ttl: Duration::from_secs(3600),
            key_rotation: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl Config {
    /// Defaults for everything but the backends.
    pub fn new(backends: BackendConfig) -> Self {
        Self {
            backends,
            tokens: TokenSettings::default(),
            hash_concurrency: default_hash_concurrency(),
            trusted_proxies: vec![
                IpNet::host(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
                IpNet::host(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
            ],
            oauth: OauthSettings::default(),
            throttle_namespace: None,
        }
    }

    /// From the auth flags (the binary and the launcher share them).
    pub fn from_args(backends: BackendConfig, args: AuthArgs) -> Result<Self, StartError> {
        let mut config = Self::new(backends);
        if !(60..=3600).contains(&args.access_token_ttl_secs) {
            return Err(StartError::setting(
                "AUTH_ACCESS_TOKEN_TTL",
                "must be between 60 and 3600 seconds",
            ));
        }
        config.tokens.access_ttl = Duration::from_secs(args.access_token_ttl_secs);
        config.tokens.issuer = args.issuer;
        config.tokens.audience = args.audience;
        if let Some(n) = args.hash_concurrency {
            if n == 0 {
                return Err(StartError::setting(
                    "AUTH_HASH_CONCURRENCY",
                    "must be at least 1",
                ));
            }
            config.hash_concurrency = n;
        }
        if let Some(proxies) = args.trusted_proxies {
            config.trusted_proxies = proxies;
        }
        let public_url = args.public_url.trim_end_matches('/').to_owned();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(StartError::setting(
                "MEETEASE_PUBLIC_URL",
                "must be an http(s) URL",
            ));
        }
        config.oauth.return_url = args
            .oauth_return_url
            .unwrap_or_else(|| format!("{public_url}/"));
        config.oauth.public_url = public_url;
        config.throttle_namespace = Some(args.throttle_namespace);
        if let Some(json) = args
            .oidc_providers
            .filter(|j| !j.expose().trim().is_empty())
        {
            config.oauth.providers = oidc::parse_providers(json.expose())
                .map_err(|err| StartError::setting("AUTH_OIDC_PROVIDERS", err))?;
        }
        Ok(config)
    }
}

fn default_hash_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The auth service's flags; each is also an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Access-token lifetime in seconds (60-3600).
    #[arg(
        long = "auth-access-token-ttl",
        env = "AUTH_ACCESS_TOKEN_TTL",
        default_value_t = 900
    )]
    pub access_token_ttl_secs: u64,
    /// `iss` of the access tokens auth signs.
    #[arg(long = "auth-issuer", env = "AUTH_ISSUER", default_value = proto::auth::DEFAULT_ISSUER)]
    pub issuer: String,
    /// `aud` of the access tokens auth signs.
    #[arg(long = "auth-audience", env = "AUTH_AUDIENCE", default_value = proto::auth::DEFAULT_AUDIENCE)]
    pub audience: String,
    /// Password hashes computed at once. Default: one per CPU.
    #[arg(long = "auth-hash-concurrency", env = "AUTH_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,
    /// Comma-separated addresses or ranges (`10.244.0.0/16`) whose
    /// X-Forwarded-For is trusted (the gateway). Default: loopback only.
    #[arg(
        long = "auth-trusted-proxies",
        env = "AUTH_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<IpNet>>,
    /// Where people open MeetEase (the gateway), the same setting notify uses for
    /// links in emails; OpenID redirect URIs are
    /// `{this}/api/v1/auth/oauth/{provider}/callback`. It must be the exact origin
    /// browsers use: the sign-in cookie is set there.
    // Its own id: the launcher flattens every service's flags, and notify's
    // `public_url` reads the same variable.
    #[arg(
        id = "auth_public_url",
        value_name = "URL",
        long = "auth-public-url",
        env = "MEETEASE_PUBLIC_URL",
        default_value = DEFAULT_PUBLIC_URL
    )]
    pub public_url: String,
    /// Where a finished OpenID sign-in sends the browser (`#oauth_code=…` is
    /// appended). Default: `{MEETEASE_PUBLIC_URL}/`.
    #[arg(long = "auth-oauth-return-url", env = "AUTH_OAUTH_RETURN_URL")]
    pub oauth_return_url: Option<String>,
    /// OpenID providers, a JSON array:
    /// `[{"name":"google","issuer":"https://accounts.google.com","client_id":"…","client_secret":"…"}]`
    /// (optional `"scopes"`, default `["openid","email","profile"]`).
    #[arg(
        long = "auth-oidc-providers",
        env = "AUTH_OIDC_PROVIDERS",
        hide_env_values = true
    )]
    pub oidc_providers: Option<servicekit::Secret<String>>,
    /// Prefix of the brute-force throttles' Redis keys (with REDIS_URL): replicas
    /// with the same prefix share their counts.
    #[arg(
        long = "auth-throttle-namespace",
        env = "AUTH_THROTTLE_NAMESPACE",
        default_value = throttle::DEFAULT_REDIS_NAMESPACE
    )]
    pub throttle_namespace: String,
}

/// Connect the service's backends and build its router.
pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Router, StartError> {
    let deps = Deps::connect(
        &config.backends,
        SERVICE,
        Needs {
            database: true,
            redis: true,
            amqp: true,
        },
        shutdown.clone(),
    )
    .await?;
    let db = deps
        .db
        .ok_or_else(|| StartError::other("auth needs a database"))?;
    // The outbox relay (issue 10): RabbitMQ when configured, else the in-process bus.
    servicekit::bus::spawn_relay(
        db.clone(),
        servicekit::bus::for_link(deps.amqp.clone()),
        servicekit::bus::RelayConfig::new(proto::event::USER_EVENTS),
        shutdown.clone(),
    );
    build_with(config, db, deps.redis, deps.readiness, shutdown).await
}

/// Build the router on backends already connected (tests pass a fresh schema).
pub async fn build_with(
    config: Config,
    db: Db,
    redis: Option<redis::aio::ConnectionManager>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<Router, StartError> {
    let state = AppState::open(&config, db, redis).await?;
    tokio::spawn(maintain(state.clone(), shutdown));
    let metrics = Metrics::new(SERVICE);
    Ok(http::service_router(
        SERVICE,
        routes::router(state),
        readiness,
        metrics,
    ))
}

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: store::Store,
    pub oidc: oidc::Providers,
    pub keys: keys::SigningKeys,
    pub hasher: domain::PasswordHasher,
    pub revocations: revocation::Revocations,
    pub verifier: TokenVerifier,
    pub throttles: Throttles,
    pub settings: Arc<Settings>,
}

/// The throttles.
#[derive(Clone)]
pub struct Throttles {
    /// Sign-in failures per account (normalised email).
    pub account: throttle::Throttle,
    /// Sign-in failures per client address.
    pub ip: throttle::Throttle,
    /// Emails sent per mailbox (verification and reset links).
    pub mail: throttle::Throttle,
    /// Accounts created per client address.
    pub register: throttle::Throttle,
}

impl Throttles {
    /// In Redis when there is one (shared by every replica), else in memory.
    pub fn new(redis: Option<&redis::aio::ConnectionManager>, namespace: &str) -> Self {
        let make = |kind: &str, policy| match redis {
            Some(conn) => throttle::Throttle::in_redis(policy, conn.clone(), namespace, kind),
            None => throttle::Throttle::in_memory(policy),
        };
        let forget = Duration::from_secs(15 * 60);
        let max = Duration::from_secs(15 * 60);
        Self {
            account: make(
                "account",
                throttle::Policy {
                    free: 5,
                    base: Duration::from_secs(1),
                    max,
                    forget_after: forget,
                },
            ),
            ip: make(
                "ip",
                throttle::Policy {
                    free: 20,
                    base: Duration::from_secs(1),
                    max,
                    forget_after: forget,
                },
            ),
            mail: make(
                "mail",
                throttle::Policy {
                    free: 3,
                    base: Duration::from_secs(30),
                    max: Duration::from_secs(3600),
                    forget_after: Duration::from_secs(3600),
                },
            ),
            register: make(
                "register",
                throttle::Policy {
                    free: 20,
                    base: Duration::from_secs(1),
                    max: Duration::from_secs(3600),
                    forget_after: Duration::from_secs(3600),
                },
            ),
        }
    }
}

/// Settings the handlers read.
#[derive(Debug)]
pub struct Settings {
    pub tokens: TokenSettings,
    pub trusted_proxies: Vec<IpNet>,
    pub oauth: OauthSettings,
}

impl axum::extract::FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl AppState {
    async fn open(
        config: &Config,
        db: Db,
        redis: Option<redis::aio::ConnectionManager>,
    ) -> Result<Self, StartError> {
        let store = store::Store::open(db).await?;
        let policy = keys::RotationPolicy {
            rotate_after: config.tokens.key_rotation,
            overlap: config.tokens.access_ttl + Duration::from_secs(10 * 60),
        };
        let keys = keys::SigningKeys::open(store.clone(), policy, now_ms())
            .await
            .map_err(|err| StartError::other(format!("signing keys: {err}")))?;
        // A sign-in waits at most a second for a hashing slot, then is shed (503).
        let hasher = domain::PasswordHasher::new(config.hash_concurrency, Duration::from_secs(1))
            .await
            .map_err(|err| StartError::other(format!("password hasher: {err}")))?;
        let throttles = Throttles::new(
            config.throttle_namespace.as_deref().and(redis.as_ref()),
            config.throttle_namespace.as_deref().unwrap_or_default(),
        );
        let revocations =
            revocation::Revocations::new(store.clone(), redis, config.tokens.access_ttl);
        let verifier = TokenVerifier::new(
            Arc::new(keys.clone()),
            VerifierConfig {
                issuer: config.tokens.issuer.clone(),
                audience: config.tokens.audience.clone(),
                leeway: Duration::from_secs(proto::auth::MAX_LEEWAY_SECS),
            },
        )
        .with_revocations(Arc::new(revocations.clone()));
        Ok(Self {
            store,
            oidc: oidc::Providers::new(config.oauth.providers.clone()),
            keys,
            hasher,
            revocations,
            verifier,
            throttles,
            settings: Arc::new(Settings {
                tokens: config.tokens.clone(),
                trusted_proxies: config.trusted_proxies.clone(),
                oauth: config.oauth.clone(),
            }),
        })
    }
}

/// Background upkeep until shutdown: re-seed the Redis revocation cache when it is
/// incomplete (every 2 s), reload/rotate signing keys and purge expired rows (every
/// 10 min).
async fn maintain(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(err) = state.revocations.reseed_if_needed(now_ms()).await {
            tracing::warn!(error = %err, "cannot seed the revocation cache");
        }
        ticks += 1;
        if ticks.is_multiple_of(300) {
            if let Err(err) = state.keys.reload(now_ms()).await {
                tracing::warn!(error = %err, "cannot reload signing keys");
            }
            if let Err(err) = state.store.purge_expired(now_ms(), 24 * 3600 * 1000).await {
                tracing::warn!(error = %err, "cannot purge expired rows");
            }
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        auth: AuthArgs,
    }

    fn config(args: &[&str]) -> Result<Config, StartError> {
        let cli = Cli::try_parse_from(std::iter::once("auth").chain(args.iter().copied()))
            .expect("the flags parse");
        Config::from_args(BackendConfig::embedded(std::env::temp_dir()), cli.auth)
    }

    #[test]
    fn the_binary_shares_throttles_through_redis_and_embedders_do_not() {
        assert_eq!(
            config(&[]).unwrap().throttle_namespace.as_deref(),
            Some(throttle::DEFAULT_REDIS_NAMESPACE)
        );
        assert_eq!(
            Config::new(BackendConfig::embedded(std::env::temp_dir())).throttle_namespace,
            None
        );
    }

    #[test]
    fn openid_settings_come_from_flags_and_bad_ones_name_the_setting() {
        let config = config(&[
            "--auth-public-url",
            "https://meet.example.com/",
            "--auth-oidc-providers",
            r#"[{"name":"google","issuer":"https://accounts.google.com","client_id":"id","client_secret":"s"}]"#,
        ])
        .unwrap();
        assert_eq!(config.oauth.public_url, "https://meet.example.com");
        assert_eq!(config.oauth.return_url, "https://meet.example.com/");
        assert_eq!(config.oauth.providers[0].name, "google");
        let err = self::config(&["--auth-oidc-providers", "not json"]).unwrap_err();
        assert_eq!(err.setting.as_deref(), Some("AUTH_OIDC_PROVIDERS"));
        let err = self::config(&["--auth-public-url", "meet.example.com"]).unwrap_err();
        assert_eq!(err.setting.as_deref(), Some("MEETEASE_PUBLIC_URL"));
    }
}
