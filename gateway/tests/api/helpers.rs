//! `spawn_app()`: auth (real) and stub services behind a real gateway.

#![allow(dead_code)]

use axum::Router;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use gateway::{Config, EdgeConfig, Upstream, Upstreams};
use reqwest::StatusCode;
use serde_json::{Value, json};
use servicekit::Secret;
use servicekit::backends::Db;
use servicekit::config::{BackendConfig, DatabaseConfig, SqliteLocation};
use servicekit::health::Readiness;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A connection to the test Redis; panics with a clear message when it is not there.
pub async fn redis() -> redis::aio::ConnectionManager {
    servicekit::backends::connect_redis(&Secret::new(redis_url()))
        .await
        .unwrap_or_else(|err| panic!("the test Redis at {} must answer: {err}", redis_url()))
}

/// A server that dies like a killed process: [`Killable::kill`] closes its
/// listener and every open connection at once (no graceful drain).
pub struct Killable {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Killable {
    pub fn serve(listener: TcpListener, router: Router) -> Killable {
        use hyper::body::Incoming;
        use tower::ServiceExt;
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Dropped with this task (on kill), the set aborts every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, peer)) = accepted else { continue };
                        let router = router.clone();
                        connections.spawn(async move {
                            let service = hyper::service::service_fn(
                                move |mut request: hyper::Request<Incoming>| {
                                    request.extensions_mut().insert(ConnectInfo(peer));
                                    router.clone().oneshot(request.map(axum::body::Body::new))
                                },
                            );
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .with_upgrades()
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Killable { addr, task }
    }

    /// Close the port and every connection now.
    pub async fn kill(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }
}

/// Bind `addr` again after a kill (the port may take a moment to be free).
pub async fn rebind(addr: SocketAddr) -> TcpListener {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(err) if tries < 50 => {
                tries += 1;
                let _ = err;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("cannot rebind {addr}: {err}"),
        }
    }
}

pub fn random_prefix() -> String {
    format!("test:gateway:{}:", uuid::Uuid::new_v4().simple())
}

/// A stub service: answers every path with what it received, `/health` with 200,
/// and `/rtc` (for signaling) as a WebSocket that echoes each message back
/// prefixed with `echo:` and sends `hello` first.
pub struct Stub {
    pub name: &'static str,
    pub addr: SocketAddr,
    server: Killable,
}

impl Stub {
    pub async fn start(name: &'static str) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(name, listener)
    }

    /// Start again on the same port (after [`Stub::stop`]).
    pub async fn restart(name: &'static str, addr: SocketAddr) -> Stub {
        Self::serve(name, rebind(addr).await)
    }

    fn serve(name: &'static str, listener: TcpListener) -> Stub {
        let router = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/rtc", get(echo_socket))
            .fallback(any(move |req: Request| echo(name, req)));
        let server = Killable::serve(listener, router);
        Stub {
            name,
            addr: server.addr,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop serving at once: the port and every connection close (as a killed process).
    pub async fn stop(self) -> SocketAddr {
        self.server.kill().await
    }
}

async fn echo(name: &'static str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.uri.path().ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                json!(v.to_str().unwrap_or("<binary>")),
            )
        })
        .collect();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .map(|b| b.len())
        .unwrap_or(usize::MAX);
    axum::Json(json!({
        "service": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": body,
        "peer": peer,
    }))
    .into_response()
}

async fn echo_socket(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket| async move {
        let _ = socket.send(Message::Text("hello".into())).await;
        while let Some(Ok(message)) = socket.recv().await {
            let reply = match message {
                Message::Text(text) => format!("echo:{}", text.as_str()),
                Message::Close(_) => break,
                _ => continue,
            };
            if socket.send(Message::Text(reply.into())).await.is_err() {
                break;
            }
        }
    })
}

/// The real auth service on a fresh SQLite folder (and Redis when given).
pub struct Auth {
    pub addr: SocketAddr,
    pub db: Db,
    folder: PathBuf,
    /// Whether this instance removes the folder when dropped (not a twin).
    owns_folder: bool,
    redis: Option<redis::aio::ConnectionManager>,
    shutdown: CancellationToken,
    server: Option<Killable>,
}

impl Drop for Auth {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.task.abort();
        }
        if self.owns_folder {
            let _ = std::fs::remove_dir_all(&self.folder);
        }
    }
}

impl Auth {
    pub async fn start(redis: Option<redis::aio::ConnectionManager>) -> Auth {
        let folder = std::env::temp_dir().join(format!(
            "meetease-gateway-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_in(folder, true, redis, listener).await
    }

    /// A second instance of the same auth: same database (so the same signing
    /// keys and accounts), its own port.
    pub async fn twin(&self) -> Auth {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_in(self.folder.clone(), false, self.redis.clone(), listener).await
    }

    async fn start_in(
        folder: PathBuf,
        owns_folder: bool,
        redis: Option<redis::aio::ConnectionManager>,
        listener: TcpListener,
    ) -> Auth {
        let database = DatabaseConfig::Sqlite {
            location: SqliteLocation::Folder(folder.clone()),
        };
        let backends = BackendConfig {
            database: database.clone(),
            redis_url: None,
            amqp_url: None,
            data_dir: folder.clone(),
        };
        let mut config = auth::Config::new(backends);
        config.hash_concurrency = 2;
        let db = Db::connect(&database, "auth").await.expect("SQLite opens");
        let shutdown = CancellationToken::new();
        let router = auth::build_with(
            config,
            db.clone(),
            redis.clone(),
            Readiness::default(),
            shutdown.clone(),
        )
        .await
        .expect("auth builds");
        let server = Killable::serve(listener, router);
        Auth {
            addr: server.addr,
            db,
            folder,
            owns_folder,
            redis,
            shutdown,
            server: Some(server),
        }
    }

    /// Kill this instance (port and connections closed at once, background work stopped).
    pub async fn kill(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.kill().await;
        }
    }

    /// Start it again on the same port, on the same database.
    pub async fn restart(&mut self) {
        let listener = rebind(self.addr).await;
        let owns_folder = std::mem::replace(&mut self.owns_folder, false);
        let fresh = Self::start_in(
            self.folder.clone(),
            owns_folder,
            self.redis.clone(),
            listener,
        )
        .await;
        *self = fresh;
    }

    /// How many `GET /api/v1/auth/jwks` this instance answered, from its own `/metrics`.
    pub async fn jwks_served(&self) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.url()))
            .await
            .expect("auth answers /metrics")
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| {
                line.starts_with("meetease_http_requests_total{")
                    && line.contains("route=\"/api/v1/auth/jwks\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sign arbitrary claims with auth's real current signing key.
    pub async fn sign(&self, claims: &proto::auth::AccessClaims) -> String {
        let store = auth::store::Store::open(self.db.clone()).await.unwrap();
        let keys = auth::keys::SigningKeys::open(
            store,
            auth::keys::RotationPolicy {
                rotate_after: Duration::from_secs(30 * 24 * 3600),
                overlap: Duration::from_secs(3600),
            },
            auth::now_ms(),
        )
        .await
        .unwrap();
        keys.sign(claims).unwrap()
    }

    pub async fn signing_kid(&self) -> String {
        let store = auth::store::Store::open(self.db.clone()).await.unwrap();
        let keys = auth::keys::SigningKeys::open(
            store,
            auth::keys::RotationPolicy {
                rotate_after: Duration::from_secs(30 * 24 * 3600),
                overlap: Duration::from_secs(3600),
            },
            auth::now_ms(),
        )
        .await
        .unwrap();
        keys.signing_kid()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// No Redis: in-process limiter, revocation by introspection.
    Embedded,
    /// Redis for the gateway and auth: shared limiter, revocation cache.
    Redis,
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub auth: Auth,
    pub users: Option<Stub>,
    pub signaling: Stub,
    pub notify: Stub,
    pub analytics: Stub,
    pub shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Settings for tests: fast probes and breakers, generous rate limits.
pub fn test_edge() -> EdgeConfig {
    EdgeConfig {
        per_ip: gateway::Quota::parse("1000/s,1000").unwrap(),
        per_user: gateway::Quota::parse("1000/s,1000").unwrap(),
        credentials: gateway::Quota::parse("1000/s,1000").unwrap(),
        rate_limit_prefix: random_prefix(),
        probe_interval: Duration::from_millis(100),
        breaker: gateway::BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_millis(300),
        },
        token_leeway: Duration::ZERO,
        ..EdgeConfig::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Mode::Embedded, |_| {}).await
}

pub async fn spawn_app_with(mode: Mode, tweak: impl FnOnce(&mut EdgeConfig)) -> TestApp {
    let redis = match mode {
        Mode::Embedded => None,
        Mode::Redis => Some(redis().await),
    };
    let auth = Auth::start(redis.clone()).await;
    let auth_url = auth.url();
    spawn_app_with_auth(mode, auth, &auth_url, tweak).await
}

/// As [`spawn_app_with`], with the given auth instance and the gateway's auth
/// upstream set to `auth_urls` (several instances, comma-separated).
pub async fn spawn_app_with_auth(
    mode: Mode,
    auth: Auth,
    auth_urls: &str,
    tweak: impl FnOnce(&mut EdgeConfig),
) -> TestApp {
    let users = Stub::start("users").await;
    let signaling = Stub::start("signaling").await;
    let notify = Stub::start("notify").await;
    let analytics = Stub::start("analytics").await;
    let upstreams = Upstreams {
        auth: Upstream::parse("auth", auth_urls).unwrap(),
        users: Upstream::parse("users", &users.url()).unwrap(),
        signaling: Upstream::parse("signaling", &signaling.url()).unwrap(),
        notify: Upstream::parse("notify", &notify.url()).unwrap(),
        analytics: Upstream::parse("analytics", &analytics.url()).unwrap(),
    };
    let mut edge = test_edge();
    tweak(&mut edge);
    let backends = BackendConfig {
        database: DatabaseConfig::Sqlite {
            location: SqliteLocation::Folder(std::env::temp_dir()),
        },
        redis_url: match mode {
            Mode::Embedded => None,
            Mode::Redis => Some(Secret::new(redis_url())),
        },
        amqp_url: None,
        data_dir: std::env::temp_dir(),
    };
    let shutdown = CancellationToken::new();
    let mut config = Config::new(backends, upstreams, gateway::default_web_dir());
    config.edge = edge;
    let router = gateway::build(config, shutdown.clone())
        .await
        .expect("the gateway builds");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway::serve(
        listener,
        router,
        shutdown.clone(),
        Duration::from_millis(500),
    ));
    if mode == Mode::Redis {
        // Auth writes the revocation marker on its first upkeep tick.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    TestApp {
        addr,
        client: reqwest::Client::new(),
        auth,
        users: Some(users),
        signaling,
        notify,
        analytics,
        shutdown,
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub async fn from(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    pub user_id: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Answer::from(request.send().await.expect("the gateway answers")).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        let mut request = self.client.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Answer::from(request.send().await.expect("the gateway answers")).await
    }

    /// Sign up through the gateway.
    pub async fn register(&self, email: &str) -> Session {
        let answer = self
            .post(
                "/api/v1/auth/register",
                None,
                json!({"email": email, "password": "correct horse battery staple", "display_name": "Ada"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        Session {
            access_token: answer.body["access_token"].as_str().unwrap().to_owned(),
            refresh_token: answer.body["refresh_token"].as_str().unwrap().to_owned(),
            user_id: answer.body["user"]["id"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn upstream_health(&self) -> Value {
        self.get("/health/upstreams", None).await.body
    }

    /// Wait until instance `address` of `upstream` shows `state` in `/health/upstreams`.
    pub async fn wait_for_instance(
        &self,
        upstream: &str,
        address: SocketAddr,
        state: &str,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let health = self.upstream_health().await;
            let shown = health["upstreams"][upstream]["instances"]
                .as_array()
                .and_then(|all| {
                    all.iter()
                        .find(|i| i["address"] == address.to_string())
                        .map(|i| i["state"].clone())
                });
            if shown.as_ref().is_some_and(|s| s == state) {
                return health;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{upstream} {address} never became {state}: {health}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Wait until `upstream`'s breaker shows `state` in `/health/upstreams`.
    pub async fn wait_for_breaker(&self, upstream: &str, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let health = self.upstream_health().await;
            if health["upstreams"][upstream]["breaker"] == state {
                return health;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{upstream} never became {state}: {health}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
