//! `spawn_app()` and one helper per endpoint.

#![allow(dead_code)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use servicekit::Secret;
use servicekit::backends::Db;
use servicekit::config::{BackendConfig, DatabaseConfig, SqliteLocation};
use servicekit::health::Readiness;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

pub fn postgres_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
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
    /// SQLite files in a fresh folder.
    Sqlite,
    /// Fresh schemas on the real PostgreSQL.
    Postgres,
}

/// Where a test's data lives; removed when dropped.
pub struct Storage {
    pub backend: Backend,
    pub database: DatabaseConfig,
    pub auth_schema: String,
    pub users_schema: String,
    folder: Option<PathBuf>,
}

impl Storage {
    pub fn new(backend: Backend) -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let folder = std::env::temp_dir().join(format!("meetease-users-test-{tag}"));
                Storage {
                    backend,
                    database: DatabaseConfig::Sqlite {
                        location: SqliteLocation::Folder(folder.clone()),
                    },
                    auth_schema: "auth".into(),
                    users_schema: "users".into(),
                    folder: Some(folder),
                }
            }
            Backend::Postgres => Storage {
                backend,
                database: DatabaseConfig::Postgres {
                    url: Secret::new(postgres_url()),
                },
                auth_schema: format!("users_test_auth_{tag}"),
                users_schema: format!("users_test_{tag}"),
                folder: None,
            },
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(folder) = &self.folder {
            let _ = std::fs::remove_dir_all(folder);
        }
        if self.backend == Backend::Postgres {
            let schemas = [self.auth_schema.clone(), self.users_schema.clone()];
            // Drop runs outside any runtime guarantee: use a private one on a thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a test runtime");
                rt.block_on(async {
                    sqlx::any::install_default_drivers();
                    if let Ok(pool) = sqlx::AnyPool::connect(&postgres_url()).await {
                        for schema in schemas {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                            )))
                            .execute(&pool)
                            .await;
                        }
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
    pub auth_addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: Db,
    pub bus: servicekit::bus::MemoryBus,
    pub seen: Seen,
    pub storage: Storage,
    pub shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    let storage = Storage::new(backend);
    let backends = BackendConfig {
        database: storage.database.clone(),
        redis_url: None,
        amqp_url: None,
        data_dir: std::env::temp_dir(),
    };
    let shutdown = CancellationToken::new();

    // A real auth service, for real tokens and a real JWKS.
    let mut auth_config = auth::Config::new(backends.clone());
    auth_config.hash_concurrency = 2;
    let auth_db = Db::connect_in_schema(&storage.database, "auth", &storage.auth_schema)
        .await
        .expect("the test database answers");
    // A private in-memory bus, fed by auth's outbox relay as in the launcher.
    let bus = servicekit::bus::MemoryBus::new();
    // Stand-in for the other consumers (notify): takes every account event (so a
    // relay never waits on an event nobody would take) and keeps it for the tests.
    let seen: Seen = Default::default();
    let sink = seen.clone();
    servicekit::bus::EventBus::subscribe(
        &bus,
        servicekit::bus::Subscription::new("others").bind(proto::event::USER_EVENTS, "#"),
        std::sync::Arc::new(move |event| {
            sink.lock().unwrap().push(event);
            Box::pin(async { Ok(()) })
        }),
        shutdown.clone(),
    )
    .await
    .expect("the sink subscribes");
    servicekit::bus::spawn_relay(
        auth_db.clone(),
        std::sync::Arc::new(bus.clone()),
        servicekit::bus::RelayConfig::new(proto::event::USER_EVENTS),
        shutdown.clone(),
    );
    let auth_router = auth::build_with(
        auth_config,
        auth_db,
        None,
        Readiness::default(),
        shutdown.clone(),
    )
    .await
    .expect("auth builds");
    let auth_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth_addr = auth_listener.local_addr().unwrap();
    tokio::spawn(servicekit::http::serve(
        auth_listener,
        auth_router,
        shutdown.clone(),
    ));

    let db = Db::connect_in_schema(&storage.database, "users", &storage.users_schema)
        .await
        .expect("the test database answers");
    let mut config = users::Config::new(backends);
    config.auth_url = format!("http://{auth_addr}");
    let router = users::build_with(
        config,
        db.clone(),
        std::sync::Arc::new(bus.clone()),
        Readiness::default(),
        shutdown.clone(),
    )
    .await
    .expect("users builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(servicekit::http::serve(listener, router, shutdown.clone()));
    TestApp {
        addr,
        auth_addr,
        client: reqwest::Client::new(),
        db,
        bus,
        seen,
        storage,
        shutdown,
    }
}

/// Events other services would have received, in order.
pub type Seen = std::sync::Arc<std::sync::Mutex<Vec<proto::event::EventEnvelope>>>;

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no header {name}"))
            .to_owned()
    }
}

/// Someone signed in: their id and access token.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub token: String,
    pub email: String,
}

pub const PASSWORD: &str = "correct horse battery staple";

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the app answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body").to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            bytes,
            body,
        }
    }

    /// Register an account on the real auth service.
    pub async fn sign_up(&self, name: &str) -> Person {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let answer = self
            .send(
                self.client
                    .post(format!("http://{}/api/v1/auth/register", self.auth_addr))
                    .json(&json!({"email": email, "password": PASSWORD, "display_name": name})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        Person {
            id: answer.body["user"]["id"]
                .as_str()
                .expect("a user id")
                .to_owned(),
            token: answer.body["access_token"]
                .as_str()
                .expect("a token")
                .to_owned(),
            email,
        }
    }

    pub async fn me(&self, who: &Person) -> Answer {
        self.send(
            self.client
                .get(self.url("/api/v1/users/me"))
                .bearer_auth(&who.token),
        )
        .await
    }

    pub async fn patch_me(&self, who: &Person, body: Value) -> Answer {
        self.send(
            self.client
                .patch(self.url("/api/v1/users/me"))
                .bearer_auth(&who.token)
                .json(&body),
        )
        .await
    }

    pub async fn public(&self, who: &Person, id: &str) -> Answer {
        self.send(
            self.client
                .get(self.url(&format!("/api/v1/users/{id}")))
                .bearer_auth(&who.token),
        )
        .await
    }

    pub async fn put_avatar(&self, who: &Person, bytes: Vec<u8>) -> Answer {
        self.send(
            self.client
                .put(self.url("/api/v1/users/me/avatar"))
                .bearer_auth(&who.token)
                .header("content-type", "image/png")
                .header("content-disposition", "attachment; filename=\"avatar.png\"")
                .body(bytes),
        )
        .await
    }

    pub async fn delete_avatar(&self, who: &Person) -> Answer {
        self.send(
            self.client
                .delete(self.url("/api/v1/users/me/avatar"))
                .bearer_auth(&who.token),
        )
        .await
    }

    pub async fn avatar(&self, who: &Person, id: &str, size: Option<u32>) -> Answer {
        let query = size.map(|s| format!("?size={s}")).unwrap_or_default();
        self.send(
            self.client
                .get(self.url(&format!("/api/v1/users/{id}/avatar{query}")))
                .bearer_auth(&who.token),
        )
        .await
    }
}

impl TestApp {
    /// `PUT /api/v1/users/me/avatar` over a raw socket (see [`TestApp::raw_request`]).
    /// A hostile client need not send what it declares.
    pub async fn raw_put_avatar(
        &self,
        who: &Person,
        declared: Option<usize>,
        body: &[u8],
    ) -> Answer {
        self.raw_request(
            "PUT",
            "/api/v1/users/me/avatar",
            "image/png",
            who,
            declared,
            body,
        )
        .await
    }

    /// A request over a raw socket: the head (with `Content-Length: declared`, or
    /// chunked when `None`), then `body` as written (in the background: the server
    /// may answer and stop reading early), then the answer is read.
    pub async fn raw_request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        who: &Person,
        declared: Option<usize>,
        body: &[u8],
    ) -> Answer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let length = match declared {
            Some(n) => format!("content-length: {n}\r\n"),
            None => "transfer-encoding: chunked\r\n".to_owned(),
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {}\r\ncontent-type: {content_type}\r\n{length}\r\n",
            who.token
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let (mut reader, mut writer) = socket.into_split();
        let body = body.to_vec();
        let chunked = declared.is_none();
        // Write in the background: the server may answer (and stop reading) early.
        let writing = tokio::spawn(async move {
            for part in body.chunks(64 * 1024) {
                let result = if chunked {
                    let mut framed = format!("{:x}\r\n", part.len()).into_bytes();
                    framed.extend_from_slice(part);
                    framed.extend_from_slice(b"\r\n");
                    writer.write_all(&framed).await
                } else {
                    writer.write_all(part).await
                };
                if result.is_err() {
                    return;
                }
            }
            let _ = writer.flush().await;
            // Keep the write half open so the server sees no end of the body.
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        });
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let read = tokio::time::timeout_at(deadline, reader.read(&mut buf))
                .await
                .expect("the server answers within 10 s");
            match read {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + length {
                    break;
                }
            }
        }
        writing.abort();
        let text = String::from_utf8_lossy(&raw).to_string();
        let end = text
            .find("\r\n\r\n")
            .unwrap_or_else(|| panic!("no answer head: {text:?}"));
        let status: u16 = text[9..12].parse().expect("a status line");
        let bytes = raw[end + 4..].to_vec();
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: reqwest::header::HeaderMap::new(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            bytes,
        }
    }
}

/// Test images.
pub mod images {
    use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
    use std::io::Cursor;

    /// A noisy picture (so encoders cannot shrink it to nothing).
    pub fn picture(width: u32, height: u32) -> DynamicImage {
        let mut seed: u32 = 0x1234_5678;
        DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            Rgb([(x % 256) as u8, (y % 256) as u8, (seed & 0xff) as u8])
        }))
    }

    pub fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).expect("encodes");
        out.into_inner()
    }

    pub fn png(width: u32, height: u32) -> Vec<u8> {
        encode(&picture(width, height), ImageFormat::Png)
    }

    pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
        encode(&picture(width, height), ImageFormat::Jpeg)
    }

    pub fn webp(width: u32, height: u32) -> Vec<u8> {
        encode(&picture(width, height), ImageFormat::WebP)
    }

    /// A valid 1×1 PNG whose header claims `width`×`height` (CRC fixed up): a
    /// decompression bomb in 70 bytes.
    pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = png(1, 1);
        // 8-byte signature, then the IHDR chunk: length (4), "IHDR" (4), width, height…
        assert_eq!(&bytes[12..16], b"IHDR");
        bytes[16..20].copy_from_slice(&width.to_be_bytes());
        bytes[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    /// CRC-32 as PNG chunks use it.
    pub fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for byte in data {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
