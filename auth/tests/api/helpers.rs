//! `spawn_app()` and one helper per endpoint.

#![allow(dead_code)]

use auth::Config;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use proto::auth::AccessClaims;
use reqwest::StatusCode;
use serde_json::{Value, json};
use servicekit::Secret;
use servicekit::backends::Db;
use servicekit::config::{BackendConfig, DatabaseConfig, SqliteLocation};
use servicekit::health::Readiness;
use sqlx::Row;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

pub fn postgres_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Run one scenario `async fn name(app: TestApp)` on both backends, as
/// `name::on_sqlite` and `name::on_postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await).await
            }
        }
    )*};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file in a fresh folder, no Redis (the embedded default).
    Sqlite,
    /// A fresh schema on the real PostgreSQL, and the real Redis.
    Postgres,
}

/// Where a test's data lives; removed when the last app using it is dropped.
pub struct Storage {
    pub backend: Backend,
    pub database: DatabaseConfig,
    pub schema: String,
    /// The throttles' Redis prefix: apps on the same storage (replicas) share
    /// counts, other tests' apps do not.
    pub throttle_namespace: String,
    /// The Redis its apps use (Postgres variant).
    pub redis_url: String,
    folder: Option<PathBuf>,
}

impl Storage {
    pub fn new(backend: Backend) -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let folder = std::env::temp_dir().join(format!("meetease-auth-test-{tag}"));
                Storage {
                    backend,
                    database: DatabaseConfig::Sqlite {
                        location: SqliteLocation::Folder(folder.clone()),
                    },
                    schema: "auth".into(),
                    throttle_namespace: format!("auth:throttle:test:{tag}"),
                    redis_url: redis_url(),
                    folder: Some(folder),
                }
            }
            Backend::Postgres => Storage {
                backend,
                database: DatabaseConfig::Postgres {
                    url: Secret::new(postgres_url()),
                },
                schema: format!("auth_test_{tag}"),
                throttle_namespace: format!("auth:throttle:test:{tag}"),
                redis_url: redis_url(),
                folder: None,
            },
        }
    }

    /// Its apps use Redis logical database `db` instead of the shared one.
    /// Every auth re-seeds the one revocation cache of its Redis from its own
    /// database, which in a deployment all replicas share but in these tests
    /// each test has its own: a test that needs its app's re-seed to be the
    /// one that lands takes a Redis database no other test uses.
    pub fn alone_on_redis(mut self, db: u8) -> Self {
        let url = redis_url();
        let url = url.trim_end_matches('/');
        // Drop a database number the URL names already ("…:6379/0").
        let base = match url.rsplit_once('/') {
            Some((head, tail)) if !head.ends_with('/') && tail.parse::<u8>().is_ok() => head,
            _ => url,
        };
        self.redis_url = format!("{base}/{db}");
        self
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(folder) = &self.folder {
            let _ = std::fs::remove_dir_all(folder);
        }
        if self.backend == Backend::Postgres {
            let schema = self.schema.clone();
            // Drop runs outside any runtime guarantee: use a private one on a thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a test runtime");
                rt.block_on(async {
                    sqlx::any::install_default_drivers();
                    if let Ok(pool) = sqlx::AnyPool::connect(&postgres_url()).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                        )))
                        .execute(&pool)
                        .await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: Db,
    pub redis: Option<redis::aio::ConnectionManager>,
    pub storage: std::sync::Arc<Storage>,
    pub shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_on(std::sync::Arc::new(Storage::new(backend)), |_| {}).await
}

/// Start an app on existing storage (a "restart" when another app used it before).
pub async fn spawn_app_on(
    storage: std::sync::Arc<Storage>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn_app_on_listener(storage, listener, tweak).await
}

/// Start an app on a listener bound beforehand (so its address can go into the
/// configuration, as the OpenID redirect URI does).
pub async fn spawn_app_on_listener(
    storage: std::sync::Arc<Storage>,
    listener: tokio::net::TcpListener,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let backends = BackendConfig {
        database: storage.database.clone(),
        redis_url: None,
        amqp_url: None,
        data_dir: std::env::temp_dir(),
    };
    let mut config = Config::new(backends);
    config.hash_concurrency = 2;
    config.throttle_namespace = Some(storage.throttle_namespace.clone());
    tweak(&mut config);
    let db = Db::connect_in_schema(&storage.database, "auth", &storage.schema)
        .await
        .expect("the test database answers");
    let redis = match storage.backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(
            servicekit::backends::connect_redis(&Secret::new(storage.redis_url.clone()))
                .await
                .expect("the test Redis answers"),
        ),
    };
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
    let addr = listener.local_addr().unwrap();
    tokio::spawn(servicekit::http::serve(listener, router, shutdown.clone()));
    TestApp {
        addr,
        client: reqwest::Client::new(),
        db,
        redis,
        storage,
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
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string `{field}` in {}", self.body))
            .to_owned()
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

pub fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the app answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, body: Value, bearer: Option<&str>) -> Answer {
        let mut request = self.client.post(self.url(path)).json(&body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn register(&self, email: &str, password: &str, name: &str) -> Answer {
        self.post(
            "/api/v1/auth/register",
            json!({"email": email, "password": password, "display_name": name}),
            None,
        )
        .await
    }

    /// Register a fresh account; returns (email, the 201 answer).
    pub async fn new_account(&self) -> (String, Answer) {
        let email = unique_email();
        let answer = self.register(&email, PASSWORD, "Ada Lovelace").await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        (email, answer)
    }

    pub async fn login(&self, email: &str, password: &str) -> Answer {
        self.post(
            "/api/v1/auth/login",
            json!({"email": email, "password": password}),
            None,
        )
        .await
    }

    pub async fn login_from(&self, ip: &str, email: &str, password: &str) -> Answer {
        self.send(
            self.client
                .post(self.url("/api/v1/auth/login"))
                .header("x-forwarded-for", ip)
                .json(&json!({"email": email, "password": password})),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Answer {
        self.post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": refresh_token}),
            None,
        )
        .await
    }

    pub async fn logout(&self, access: &str) -> Answer {
        self.post("/api/v1/auth/logout", json!({}), Some(access))
            .await
    }

    pub async fn logout_all(&self, access: &str) -> Answer {
        self.post("/api/v1/auth/logout-all", json!({}), Some(access))
            .await
    }

    pub async fn introspect(&self, token: &str) -> Answer {
        self.post("/api/v1/auth/introspect", json!({"token": token}), None)
            .await
    }

    /// Whether `token` passes a protected endpoint: answers `Ok` or the error code.
    /// (Uses introspection so the token is not consumed.)
    pub async fn is_active(&self, token: &str) -> bool {
        let answer = self.introspect(token).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        answer.body["active"].as_bool().expect("active is a bool")
    }

    /// Outbox events of one type, oldest first.
    pub async fn outbox(&self, kind: &str) -> Vec<Value> {
        sqlx::query("SELECT payload FROM outbox WHERE type = $1 ORDER BY created_at, id")
            .bind(kind)
            .fetch_all(self.db.pool())
            .await
            .expect("the outbox reads")
            .iter()
            .map(|row| {
                let text: String = row.try_get("payload").expect("payload is text");
                serde_json::from_str(&text).expect("payload is JSON")
            })
            .collect()
    }

    /// The last token of an outbox event type sent to `email`.
    pub async fn last_token_for(&self, kind: &str, email: &str) -> String {
        self.outbox(kind)
            .await
            .iter()
            .rev()
            .find(|event| event["email"] == email)
            .and_then(|event| event["token"].as_str())
            .unwrap_or_else(|| panic!("no {kind} event for {email}"))
            .to_owned()
    }

    /// The current signing key as stored: (kid, PKCS#8 DER).
    pub async fn signing_key(&self) -> (String, Vec<u8>) {
        let row = sqlx::query(
            "SELECT kid, private_key FROM signing_keys WHERE retire_at IS NULL ORDER BY created_at DESC LIMIT 1",
        )
        .fetch_one(self.db.pool())
        .await
        .expect("a signing key");
        let kid: String = row.try_get("kid").unwrap();
        let der: String = row.try_get("private_key").unwrap();
        (kid, STANDARD.decode(der).unwrap())
    }

    /// The public key of the current signing key, from the JWKS: (kid, raw 32 bytes).
    pub async fn public_key(&self) -> (String, Vec<u8>) {
        let jwks = self.get("/api/v1/auth/jwks").await;
        let key = &jwks.body["keys"][0];
        (
            key["kid"].as_str().unwrap().to_owned(),
            URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap(),
        )
    }
}

/// Claims as auth would issue them, for crafting tokens in tests.
pub fn claims_like(template: &AccessClaims, edit: impl FnOnce(&mut AccessClaims)) -> AccessClaims {
    let mut claims = template.clone();
    edit(&mut claims);
    claims
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Sign `claims` with an Ed25519 PKCS#8 key under `kid`.
pub fn sign(claims: &AccessClaims, kid: &str, der: &[u8]) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der),
    )
    .unwrap()
}

/// The claims inside a token, unverified (tests only).
pub fn claims_of(token: &str) -> AccessClaims {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// base64url(JSON) for hand-made token parts.
pub fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}
