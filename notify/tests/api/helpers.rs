use proto::event::EventEnvelope;
use proto::ids::EventId;
use serde::Deserialize;
use servicekit::Secret;
use servicekit::backends::{AmqpLink, Db};
use servicekit::bus::{AmqpBus, EventBus, MemoryBus};
use servicekit::config::{BackendConfig, DatabaseConfig, SqliteLocation};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stack {
    /// SQLite and the in-process bus (the embedded mode).
    Embedded,
    /// PostgreSQL (fresh schema) and RabbitMQ.
    Servers,
}

pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("notify-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One test's world: a database, a bus, names, a mail folder. Apps built on it
/// share them, so a test can restart notify.
pub struct World {
    #[allow(dead_code)]
    pub stack: Stack,
    pub db: Db,
    pub bus: Arc<dyn EventBus>,
    pub prefix: String,
    pub data: PathBuf,
    pub link: Option<AmqpLink>,
    pub shutdown: CancellationToken,
}

pub async fn fresh_db(stack: Stack, dir: &Path, service: &str) -> Db {
    match stack {
        Stack::Embedded => Db::connect(
            &DatabaseConfig::Sqlite {
                location: SqliteLocation::Folder(dir.to_owned()),
            },
            service,
        )
        .await
        .unwrap(),
        Stack::Servers => Db::connect_in_schema(
            &DatabaseConfig::Postgres {
                url: Secret::new(database_url()),
            },
            service,
            &format!("{service}_{}", uuid::Uuid::new_v4().simple()),
        )
        .await
        .expect("PostgreSQL must answer at TEST_DATABASE_URL"),
    }
}

impl World {
    pub async fn new(stack: Stack) -> World {
        let data = temp_dir("data");
        let shutdown = CancellationToken::new();
        let db = fresh_db(stack, &data, "notify").await;
        let (bus, link): (Arc<dyn EventBus>, _) = match stack {
            Stack::Embedded => (Arc::new(MemoryBus::new()), None),
            Stack::Servers => {
                let link = AmqpLink::connect(&Secret::new(amqp_url()), shutdown.clone())
                    .await
                    .expect("RabbitMQ must answer at TEST_AMQP_URL");
                (Arc::new(AmqpBus::new(link.clone())), Some(link))
            }
        };
        World {
            stack,
            db,
            bus,
            prefix: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            data,
            link,
            shutdown,
        }
    }

    pub fn user_exchange(&self) -> String {
        format!("{}.user", self.prefix)
    }
    pub fn meeting_exchange(&self) -> String {
        format!("{}.meeting", self.prefix)
    }
    pub fn queue(&self) -> String {
        format!("{}.notify", self.prefix)
    }
    pub fn mail_folder(&self) -> PathBuf {
        self.data.join("mail-outbox")
    }

    pub fn config(&self) -> notify::Config {
        let mut config = notify::Config::new(BackendConfig::embedded(&self.data));
        config.queue = self.queue();
        config.user_exchange = self.user_exchange();
        config.meeting_exchange = self.meeting_exchange();
        config.mail_from = "MeetEase <noreply@meetease.test>".into();
        config.public_url = "https://meet.example".into();
        config.retry_base = Duration::from_millis(50);
        config
    }

    /// Start notify; returns the shutdown that stops this instance only.
    pub async fn spawn_notify(&self, config: notify::Config) -> CancellationToken {
        self.spawn_notify_at(config).await.0
    }

    /// As [`World::spawn_notify`], also returning the address it serves on.
    pub async fn spawn_notify_at(
        &self,
        config: notify::Config,
    ) -> (CancellationToken, std::net::SocketAddr) {
        let stop = self.shutdown.child_token();
        let router = notify::build_with(
            config,
            stop.clone(),
            notify::Parts {
                db: Some(self.db.clone()),
                bus: Some(self.bus.clone()),
                verifier: Some(crate::alerts::verifier()),
            },
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(servicekit::http::serve(listener, router, stop.clone()));
        (stop, addr)
    }

    pub async fn publish(
        &self,
        exchange: &str,
        kind: &str,
        payload: serde_json::Value,
    ) -> EventEnvelope {
        let event = envelope(kind, payload);
        self.bus.publish(exchange, &event).await.unwrap();
        event
    }

    pub async fn cleanup(&self) {
        self.shutdown.cancel();
        if let Some(link) = &self.link
            && let Ok(ch) = link.channel().await
        {
            let q = self.queue();
            let dead = format!("{q}.dead");
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
            let _ = ch
                .queue_delete(dead.as_str().into(), Default::default())
                .await;
            for x in [self.user_exchange(), self.meeting_exchange()] {
                let _ = ch
                    .exchange_delete(x.as_str().into(), Default::default())
                    .await;
            }
        }
    }
}

pub fn envelope(kind: &str, payload: serde_json::Value) -> EventEnvelope {
    EventEnvelope {
        id: EventId::new(),
        kind: kind.to_owned(),
        version: 1,
        occurred_at_ms: chrono::Utc::now().timestamp_millis(),
        room: payload
            .get("meeting_id")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        seq: None,
        payload,
    }
}

#[derive(Debug, Deserialize, Clone)]
pub struct Part {
    #[serde(rename = "type")]
    pub content_type: String,
    pub params: std::collections::HashMap<String, String>,
    pub filename: Option<String>,
    pub text: String,
}

#[derive(Debug, Deserialize, Clone)]
pub struct ParsedMail {
    #[allow(dead_code)]
    pub file: String,
    pub subject: String,
    pub to: String,
    pub parts: Vec<Part>,
}

impl ParsedMail {
    pub fn part(&self, content_type: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.content_type == content_type)
    }
    pub fn text(&self) -> String {
        self.part("text/plain")
            .map(|p| p.text.clone())
            .unwrap_or_default()
    }
}

/// Every mail file under `dir` (recursively), parsed by Python's `email` package.
pub fn read_mails(dir: &Path) -> Vec<ParsedMail> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                files.push(p);
            }
        }
    }
    if files.is_empty() {
        return Vec::new();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/parse_eml.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(&files)
        .output()
        .expect("python3 is needed to parse test emails");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Wait until `done` holds for the mails in `dir` (at most 20 s); returns them.
pub async fn wait_for_mails(dir: &Path, done: impl Fn(&[ParsedMail]) -> bool) -> Vec<ParsedMail> {
    for _ in 0..200 {
        let mails = read_mails(dir);
        if done(&mails) {
            return mails;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mails = read_mails(dir);
    panic!(
        "timed out; have {:?}",
        mails
            .iter()
            .map(|m| (&m.to, &m.subject))
            .collect::<Vec<_>>()
    );
}

/// A real SMTP server (aiosmtpd) writing a maildir; killed on drop.
pub struct SmtpSink {
    pub port: u16,
    pub maildir: PathBuf,
    child: std::process::Child,
}

/// A private CA and a certificate it signed for `localhost` and 127.0.0.1, made
/// with the `openssl` command: `(ca.pem, server.pem, server.key)`.
pub fn test_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command is needed (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]);
    ca.extend(["-subj", "/CN=MeetEase test CA"]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        Self::start_with(&[]).await
    }

    /// An SMTPS server (TLS from the first byte) with a certificate for localhost
    /// signed by a private CA; returns the sink and the CA's PEM file.
    pub async fn start_tls() -> (SmtpSink, PathBuf) {
        let dir = temp_dir("tls");
        let (ca, cert, key) = test_certificates(&dir);
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let sink = Self::start_with(&["--smtpscert", &cert, "--smtpskey", &key]).await;
        (sink, ca)
    }

    async fn start_with(extra: &[&str]) -> SmtpSink {
        let probe = std::process::Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .output()
            .expect("python3 is needed");
        assert!(
            probe.status.success(),
            "aiosmtpd is missing: `pip install aiosmtpd` (scripts/test installs it)"
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let maildir = temp_dir("smtp");
        let child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.join("box"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        SmtpSink {
            port,
            maildir,
            child,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn count(db: &Db, sql: &'static str) -> i64 {
    use sqlx::Row;
    sqlx::query(sql)
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get::<i64, _>(0)
}

/// Wait until `check` holds (at most 20 s).
pub async fn eventually<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for a condition");
}
