use proto::event::EventEnvelope;
use proto::ids::EventId;
use servicekit::Secret;
use servicekit::backends::{AmqpLink, Db};
use servicekit::bus::{AmqpBus, EventBus, Handler, HandlerError, MemoryBus};
use servicekit::config::{DatabaseConfig, SqliteLocation};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Memory,
    Amqp,
}

pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A bus of the given kind and a shutdown that ends its tasks when dropped.
pub struct TestBus {
    pub bus: Arc<dyn EventBus>,
    pub shutdown: CancellationToken,
    /// Unique prefix for this test's exchanges and queues.
    pub prefix: String,
    link: Option<AmqpLink>,
    queues: Vec<String>,
}

impl TestBus {
    pub async fn new(backend: Backend) -> TestBus {
        let shutdown = CancellationToken::new();
        let prefix = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        match backend {
            Backend::Memory => TestBus {
                bus: Arc::new(MemoryBus::new()),
                shutdown,
                prefix,
                link: None,
                queues: Vec::new(),
            },
            Backend::Amqp => {
                let link = AmqpLink::connect(&Secret::new(amqp_url()), shutdown.clone())
                    .await
                    .expect("RabbitMQ must answer at TEST_AMQP_URL");
                TestBus {
                    bus: Arc::new(AmqpBus::new(link.clone())),
                    shutdown,
                    prefix,
                    link: Some(link),
                    queues: Vec::new(),
                }
            }
        }
    }

    pub fn name(&mut self, what: &str) -> String {
        let name = format!("{}.{what}", self.prefix);
        self.queues.push(name.clone());
        name
    }

    /// Delete this test's queues and exchanges from the broker.
    pub async fn cleanup(&self) {
        self.shutdown.cancel();
        if let Some(link) = &self.link
            && let Ok(ch) = link.channel().await
        {
            for q in &self.queues {
                let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
                let dead = format!("{q}.dead");
                let _ = ch
                    .queue_delete(dead.as_str().into(), Default::default())
                    .await;
                let _ = ch
                    .exchange_delete(q.as_str().into(), Default::default())
                    .await;
            }
        }
    }
}

pub fn event(kind: &str, payload: serde_json::Value) -> EventEnvelope {
    EventEnvelope {
        id: EventId::new(),
        kind: kind.to_owned(),
        version: 1,
        occurred_at_ms: 1,
        room: None,
        seq: None,
        payload,
    }
}

/// A handler that records what it got, failing as `fail` says.
#[derive(Clone, Default)]
pub struct Recorder {
    pub got: Arc<Mutex<Vec<EventEnvelope>>>,
}

impl Recorder {
    pub fn handler(
        &self,
        fail: impl Fn(&EventEnvelope) -> Option<HandlerError> + Send + Sync + 'static,
    ) -> Handler {
        let got = self.got.clone();
        let fail = Arc::new(fail);
        Arc::new(move |event| {
            let got = got.clone();
            let fail = fail.clone();
            Box::pin(async move {
                got.lock().unwrap().push(event.clone());
                match fail(&event) {
                    Some(err) => Err(err),
                    None => Ok(()),
                }
            })
        })
    }

    pub fn kinds(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.kind.clone())
            .collect()
    }

    /// Wait until `done` holds for what was received (at most 20 s).
    pub async fn wait_for(&self, done: impl Fn(&[EventEnvelope]) -> bool) {
        for _ in 0..400 {
            if done(&self.got.lock().unwrap()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out; got {:?}", self.kinds());
    }
}

/// A fresh database: a SQLite file in a new folder, or a new PostgreSQL schema.
pub async fn fresh_db(postgres: bool) -> Db {
    if postgres {
        let schema = format!("bus_{}", uuid::Uuid::new_v4().simple());
        Db::connect_in_schema(
            &DatabaseConfig::Postgres {
                url: Secret::new(database_url()),
            },
            "bus",
            &schema,
        )
        .await
        .expect("PostgreSQL must answer at TEST_DATABASE_URL")
    } else {
        let dir = std::env::temp_dir().join(format!("bus-test-{}", uuid::Uuid::new_v4()));
        Db::connect(
            &DatabaseConfig::Sqlite {
                location: SqliteLocation::Folder(dir),
            },
            "bus",
        )
        .await
        .unwrap()
    }
}
