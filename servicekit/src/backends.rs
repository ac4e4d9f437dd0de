//! Connectors for the backing services, each with a readiness check.
//!
//! - [`Db`]: PostgreSQL (one schema per service) or an embedded SQLite file per service,
//!   through sqlx's `Any` driver so one set of queries serves both.
//! - [`connect_redis`]: a reconnecting Redis connection.
//! - [`AmqpLink`]: a supervised RabbitMQ connection that reconnects with backoff.

use crate::StartError;
use crate::config::{DatabaseConfig, Secret, SqliteLocation, redact_url};
use crate::health::{CheckFuture, ReadinessCheck};
use sqlx::AnyPool;
use sqlx::Executor;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long start-up waits for a dependency before giving up with a clear error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which relational backend a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbBackend {
    Postgres,
    Sqlite,
}

/// A pool on the service's relational store.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: DbBackend,
}

impl Db {
    /// Connect for `service`: its own schema on PostgreSQL, its own file on SQLite.
    pub async fn connect(config: &DatabaseConfig, service: &str) -> Result<Db, StartError> {
        Self::connect_in_schema(config, service, service).await
    }

    /// As [`Db::connect`], with an explicit PostgreSQL schema (tests use a fresh one each).
    pub async fn connect_in_schema(
        config: &DatabaseConfig,
        service: &str,
        schema: &str,
    ) -> Result<Db, StartError> {
        sqlx::any::install_default_drivers();
        match config {
            DatabaseConfig::Postgres { url } => connect_postgres(url, schema).await,
            DatabaseConfig::Sqlite { location } => {
                let url = match location {
                    SqliteLocation::Folder(folder) => {
                        std::fs::create_dir_all(folder).map_err(|err| {
                            StartError::setting(
                                "MEETEASE_DATA_DIR",
                                format!("cannot create {}: {err}", folder.display()),
                            )
                        })?;
                        format!("sqlite://{}/{service}.db?mode=rwc", folder.display())
                    }
                    SqliteLocation::Url(url) => url.clone(),
                };
                let pool = AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            // WAL lets readers and one writer work at once; the busy
                            // timeout makes a second writer wait instead of failing.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await
                    .map_err(|err| {
                        StartError::setting(
                            "DATABASE_URL",
                            format!("cannot open SQLite database {url}: {err}"),
                        )
                    })?;
                Ok(Db {
                    pool,
                    backend: DbBackend::Sqlite,
                })
            }
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> DbBackend {
        self.backend
    }

    /// Begin a transaction that may write.
    ///
    /// On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`), waiting out the
    /// busy timeout for it. A plain `BEGIN` defers that to the first write, and a
    /// transaction that has read before its first write cannot wait then: if another
    /// connection wrote meanwhile, its snapshot is stale and SQLite fails it at once
    /// with `SQLITE_BUSY` (an endpoint answered 503 for it under concurrent writes).
    /// PostgreSQL's `BEGIN` already lets writers wait on each other.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            DbBackend::Postgres => self.pool.begin().await,
            DbBackend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
        }
    }

    /// Apply the service's migrations: each backend has its own folder because the
    /// two SQL dialects differ in types.
    pub async fn migrate(&self, postgres: &Migrator, sqlite: &Migrator) -> Result<(), StartError> {
        let migrator = match self.backend {
            DbBackend::Postgres => postgres,
            DbBackend::Sqlite => sqlite,
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|err| StartError::setting("DATABASE_URL", format!("migrations failed: {err}")))
    }

    /// A readiness check that runs `SELECT 1`.
    pub fn readiness_check(&self) -> DbCheck {
        DbCheck(self.pool.clone())
    }
}

async fn connect_postgres(url: &Secret<String>, schema: &str) -> Result<Db, StartError> {
    let shown = redact_url(url.expose());
    if !schema
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        || schema.is_empty()
    {
        return Err(StartError::other(format!("invalid schema name `{schema}`")));
    }
    let fail = |err: &dyn std::fmt::Display| {
        StartError::setting("DATABASE_URL", format!("cannot connect to {shown}: {err}"))
    };
    // Create the schema with a one-off connection, then point every pooled
    // connection's search_path at it.
    let bootstrap = AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect(url.expose());
    let bootstrap = tokio::time::timeout(CONNECT_TIMEOUT, bootstrap)
        .await
        .map_err(|_| fail(&"no answer within 5s"))?
        .map_err(|err| fail(&err))?;
    bootstrap
        // The schema name was checked to be [A-Za-z0-9_]+ above.
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .await
        .map_err(|err| fail(&err))?;
    bootstrap.close().await;
    let set_path = format!("SET search_path TO \"{schema}\"");
    let pool = AnyPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(CONNECT_TIMEOUT)
        .after_connect(move |conn, _meta| {
            let set_path = set_path.clone();
            Box::pin(async move {
                conn.execute(sqlx::AssertSqlSafe(set_path)).await?;
                Ok(())
            })
        })
        .connect(url.expose())
        .await
        .map_err(|err| fail(&err))?;
    Ok(Db {
        pool,
        backend: DbBackend::Postgres,
    })
}

/// Readiness of the relational store.
pub struct DbCheck(AnyPool);

impl ReadinessCheck for DbCheck {
    fn name(&self) -> &'static str {
        "database"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.0)
                .await
                .map(|_| ())
                .map_err(|err| err.to_string())
        })
    }
}

/// Open a Redis connection that reconnects by itself. Calls time out after
/// `response_timeout` so a Redis outage turns into quick errors, not hangs.
pub async fn connect_redis(
    url: &Secret<String>,
) -> Result<redis::aio::ConnectionManager, StartError> {
    let shown = redact_url(url.expose());
    let fail = |err: &dyn std::fmt::Display| {
        StartError::setting("REDIS_URL", format!("cannot connect to {shown}: {err}"))
    };
    let client = redis::Client::open(url.expose().as_str()).map_err(|err| fail(&err))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    let manager = tokio::time::timeout(
        CONNECT_TIMEOUT,
        redis::aio::ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| fail(&"no answer within 5s"))?
    .map_err(|err| fail(&err))?;
    Ok(manager)
}

/// Readiness of Redis: `PING`.
pub struct RedisCheck(pub redis::aio::ConnectionManager);

impl ReadinessCheck for RedisCheck {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let mut conn = self.0.clone();
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|err| err.to_string())
        })
    }
}

/// A RabbitMQ connection kept alive by a supervisor task: when the broker goes
/// away the link is marked down and reconnects with backoff.
#[derive(Clone)]
pub struct AmqpLink {
    inner: Arc<AmqpInner>,
}

struct AmqpInner {
    url: Secret<String>,
    connected: AtomicBool,
    connection: tokio::sync::RwLock<Option<lapin::Connection>>,
}

impl AmqpLink {
    /// Connect now (start-up fails with a clear error if the broker does not
    /// answer), then keep the connection alive until `shutdown`.
    pub async fn connect(
        url: &Secret<String>,
        shutdown: CancellationToken,
    ) -> Result<AmqpLink, StartError> {
        let shown = redact_url(url.expose());
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, open_amqp(url))
            .await
            .map_err(|_| {
                StartError::setting(
                    "AMQP_URL",
                    format!("cannot connect to {shown}: no answer within 5s"),
                )
            })?
            .map_err(|err| {
                StartError::setting("AMQP_URL", format!("cannot connect to {shown}: {err}"))
            })?;
        let link = AmqpLink {
            inner: Arc::new(AmqpInner {
                url: url.clone(),
                connected: AtomicBool::new(true),
                connection: tokio::sync::RwLock::new(Some(connection)),
            }),
        };
        tokio::spawn(link.clone().supervise(shutdown));
        Ok(link)
    }

    /// A link that is not connected yet: the supervisor connects in the background
    /// (with backoff) until `shutdown`. For workers that must start while the broker
    /// is down, such as the outbox relay.
    pub fn connect_lazy(url: &Secret<String>, shutdown: CancellationToken) -> AmqpLink {
        let link = AmqpLink {
            inner: Arc::new(AmqpInner {
                url: url.clone(),
                connected: AtomicBool::new(false),
                connection: tokio::sync::RwLock::new(None),
            }),
        };
        tokio::spawn(link.clone().supervise(shutdown));
        link
    }

    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// Open a channel on the current connection, if there is one.
    pub async fn channel(&self) -> Result<lapin::Channel, lapin::Error> {
        let guard = self.inner.connection.read().await;
        match guard.as_ref() {
            Some(conn) => conn.create_channel().await,
            None => Err(lapin::Error::from(
                lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed),
            )),
        }
    }

    async fn supervise(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(250);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            let alive = {
                let guard = self.inner.connection.read().await;
                guard.as_ref().is_some_and(|conn| conn.status().connected())
            };
            if alive {
                self.inner.connected.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(250);
                continue;
            }
            if self.inner.connected.swap(false, Ordering::Relaxed) {
                tracing::warn!("lost the RabbitMQ connection; reconnecting");
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, open_amqp(&self.inner.url)).await {
                Ok(Ok(conn)) => {
                    *self.inner.connection.write().await = Some(conn);
                    self.inner.connected.store(true, Ordering::Relaxed);
                    tracing::info!("reconnected to RabbitMQ");
                    backoff = Duration::from_millis(250);
                }
                Ok(Err(err)) => {
                    tracing::debug!(%err, "RabbitMQ reconnect failed");
                }
                Err(_) => tracing::debug!("RabbitMQ reconnect timed out"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        if let Some(conn) = self.inner.connection.write().await.take() {
            let _ = conn.close(200, "shutting down".into()).await;
        }
    }
}

async fn open_amqp(url: &Secret<String>) -> Result<lapin::Connection, lapin::Error> {
    lapin::Connection::connect(url.expose(), lapin::ConnectionProperties::default()).await
}

/// Readiness of RabbitMQ: the supervised link is up.
pub struct AmqpCheck(pub AmqpLink);

impl ReadinessCheck for AmqpCheck {
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            if self.0.is_connected() {
                Ok(())
            } else {
                Err("not connected".to_owned())
            }
        })
    }
}
