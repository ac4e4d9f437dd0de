//! The event bus: topic exchanges, a durable queue per consuming service, manual
//! acks, a dead-letter queue after repeated failure, and the outbox relay that feeds it.
//!
//! Two backends behind one [`EventBus`] trait, passing one test suite:
//!
//! - [`AmqpBus`] (RabbitMQ through the supervised [`AmqpLink`]): durable topic
//!   exchanges, one durable *quorum* queue per subscription with `x-delivery-limit`,
//!   dead-lettered through the default exchange into `<queue>.dead`; publisher
//!   confirms with `mandatory`, so an event no queue takes is reported as
//!   [`BusError::Unroutable`] and stays in the outbox.
//! - [`MemoryBus`] (embedded mode): the same semantics in process memory. The
//!   launcher runs every service in one process, so producers and consumers there
//!   meet on [`MemoryBus::shared`].
//!
//! Delivery is at least once: a consumer deduplicates by event id with
//! [`claim_event`] in the same transaction as its effect.
//!
//! The relay ([`spawn_relay`]) publishes unpublished `outbox` rows of a producer's
//! database (`id, type, payload, created_at, published_at`) in order, marks them
//! published after the broker confirmed them, blanks one-time tokens in the stored
//! payload, and retries with backoff while the broker is down or nobody listens yet.

use crate::backends::{AmqpLink, Db};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, ExchangeKind};
use proto::event::{ENVELOPE_VERSION, EventEnvelope};
use proto::ids::EventId;
use sqlx::{Any, Row, Transaction};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a publish or subscribe did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker is not reachable right now.
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    /// No queue is bound for this event: it would be dropped, so it was not sent.
    #[error("no queue takes {0}")]
    Unroutable(String),
    /// The broker refused the message.
    #[error("the broker refused the message")]
    Nacked,
}

/// What a handler says about one delivery.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Try again later (a database or mail outage): redelivered until the queue's
    /// delivery limit, then dead-lettered.
    #[error("transient: {0}")]
    Retry(String),
    /// The message can never be handled: dead-lettered at once.
    #[error("rejected: {0}")]
    Reject(String),
}

/// The consumer's side of one delivery.
pub type Handler =
    Arc<dyn Fn(EventEnvelope) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// One consuming service's durable queue and what it is bound to.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The queue's name (the service's name in production: `notify`, `analytics`).
    pub queue: String,
    /// `(exchange, routing-key pattern)`; patterns use `*` and `#` as in AMQP.
    pub bindings: Vec<(String, String)>,
    /// Deliveries before a message that keeps failing goes to `<queue>.dead`.
    pub max_deliveries: u32,
    /// Pause before a failed message is handed back (grows with each delivery).
    pub retry_delay: Duration,
}

impl Subscription {
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            bindings: Vec::new(),
            max_deliveries: 5,
            retry_delay: Duration::from_millis(200),
        }
    }

    pub fn bind(mut self, exchange: impl Into<String>, pattern: impl Into<String>) -> Self {
        self.bindings.push((exchange.into(), pattern.into()));
        self
    }

    /// Name of the dead-letter queue of `queue`.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}.dead")
    }
}

/// A message that ended in a dead-letter queue: the envelope if it could be read,
/// else the raw bytes as text.
#[derive(Debug, Clone, PartialEq)]
pub enum DeadLetter {
    Event(EventEnvelope),
    Unreadable(String),
}

/// Publish events to topic exchanges and consume them from durable queues.
pub trait EventBus: Send + Sync + 'static {
    /// Publish `event` on `exchange` with its type as routing key; returns once the
    /// broker has taken it (publisher confirm).
    fn publish<'a>(
        &'a self,
        exchange: &'a str,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, Result<(), BusError>>;

    /// Declare the subscription's queue and bindings, then hand every delivery to
    /// `handler` on a background task until `shutdown`. Returns after the queue is
    /// declared, so events published afterwards reach it.
    fn subscribe(
        &self,
        subscription: Subscription,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> BoxFuture<'_, Result<(), BusError>>;

    /// Take (remove and return) what is in `queue`'s dead-letter queue.
    fn take_dead_letters<'a>(
        &'a self,
        queue: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, BusError>>;
}

/// The bus for a service: RabbitMQ when configured, else the process's in-memory bus.
pub fn for_link(amqp: Option<AmqpLink>) -> Arc<dyn EventBus> {
    match amqp {
        Some(link) => Arc::new(AmqpBus::new(link)),
        None => Arc::new(MemoryBus::shared()),
    }
}

/// Record that this consumer has handled `id`, inside the transaction of its
/// effect. `false` means it was handled before: skip the effect.
///
/// Needs `CREATE TABLE processed_events (event_id TEXT PRIMARY KEY, processed_at BIGINT NOT NULL)`.
pub async fn claim_event(
    tx: &mut Transaction<'_, Any>,
    id: EventId,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO processed_events (event_id, processed_at) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether `pattern` (AMQP topic syntax) matches `key`.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|skip| go(rest, &k[skip..])),
            Some((&"*", rest)) => !k.is_empty() && go(rest, &k[1..]),
            Some((word, rest)) => k.first() == Some(word) && go(rest, &k[1..]),
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// --- in memory ------------------------------------------------------------------------

/// The in-process bus. Cheap to clone; clones share the same exchanges and queues.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Mutex<MemoryState>>,
}

#[derive(Default)]
struct MemoryState {
    /// exchange → (pattern, queue)
    bindings: HashMap<String, Vec<(String, String)>>,
    queues: HashMap<String, MemoryQueue>,
}

struct MemoryQueue {
    /// Messages waiting: (envelope, deliveries so far).
    sender: tokio::sync::mpsc::UnboundedSender<(EventEnvelope, u32)>,
    /// Taken by the consumer task; put back when it stops.
    receiver: Option<tokio::sync::mpsc::UnboundedReceiver<(EventEnvelope, u32)>>,
    dead: VecDeque<DeadLetter>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// The one bus of this process (embedded mode: every service in the launcher).
    pub fn shared() -> Self {
        static SHARED: OnceLock<MemoryBus> = OnceLock::new();
        SHARED.get_or_init(MemoryBus::new).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A poisoned lock only means another thread panicked mid-update of plain
        // maps; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EventBus for MemoryBus {
    fn publish<'a>(
        &'a self,
        exchange: &'a str,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let state = self.lock();
            let mut targets: Vec<&str> = state
                .bindings
                .get(exchange)
                .into_iter()
                .flatten()
                .filter(|(pattern, _)| topic_matches(pattern, &event.kind))
                .map(|(_, queue)| queue.as_str())
                .collect();
            targets.sort_unstable();
            targets.dedup();
            if targets.is_empty() {
                return Err(BusError::Unroutable(event.kind.clone()));
            }
            for queue in targets {
                if let Some(q) = state.queues.get(queue) {
                    let _ = q.sender.send((event.clone(), 0));
                }
            }
            Ok(())
        })
    }

    fn subscribe(
        &self,
        subscription: Subscription,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let (receiver, sender) = {
                let mut state = self.lock();
                let queue = state
                    .queues
                    .entry(subscription.queue.clone())
                    .or_insert_with(|| {
                        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                        MemoryQueue {
                            sender: tx,
                            receiver: Some(rx),
                            dead: VecDeque::new(),
                        }
                    });
                let receiver = queue.receiver.take().ok_or_else(|| {
                    BusError::Unavailable(format!(
                        "queue {} already has a consumer",
                        subscription.queue
                    ))
                })?;
                let sender = queue.sender.clone();
                for (exchange, pattern) in &subscription.bindings {
                    let list = state.bindings.entry(exchange.clone()).or_default();
                    let binding = (pattern.clone(), subscription.queue.clone());
                    if !list.contains(&binding) {
                        list.push(binding);
                    }
                }
                (receiver, sender)
            };
            let bus = self.clone();
            tokio::spawn(async move {
                let mut receiver = receiver;
                loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        next = receiver.recv() => next,
                    };
                    let Some((event, deliveries)) = next else {
                        break;
                    };
                    let deliveries = deliveries + 1;
                    match handler(event.clone()).await {
                        Ok(()) => {}
                        Err(HandlerError::Retry(why))
                            if deliveries < subscription.max_deliveries =>
                        {
                            tracing::warn!(queue = %subscription.queue, event = %event.id, %why, deliveries, "event handler failed; retrying");
                            let delay = subscription.retry_delay * deliveries;
                            let sender = sender.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = sender.send((event, deliveries));
                            });
                        }
                        Err(err) => {
                            tracing::error!(queue = %subscription.queue, event = %event.id, %err, deliveries, "event dead-lettered");
                            if let Some(q) = bus.lock().queues.get_mut(&subscription.queue) {
                                q.dead.push_back(DeadLetter::Event(event));
                            }
                        }
                    }
                }
                if let Some(q) = bus.lock().queues.get_mut(&subscription.queue) {
                    q.receiver = Some(receiver);
                }
            });
            Ok(())
        })
    }

    fn take_dead_letters<'a>(
        &'a self,
        queue: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, BusError>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .queues
                .get_mut(queue)
                .map(|q| q.dead.drain(..).collect())
                .unwrap_or_default())
        })
    }
}

// --- RabbitMQ -------------------------------------------------------------------------

/// The RabbitMQ bus over a supervised [`AmqpLink`].
#[derive(Clone)]
pub struct AmqpBus {
    link: AmqpLink,
    /// The publishing channel (confirm mode) and the exchanges declared on it;
    /// dropped on any error and reopened on the next publish.
    publisher: Arc<tokio::sync::Mutex<Option<Publisher>>>,
}

/// A confirm-mode channel and the exchanges already declared on it.
type Publisher = (lapin::Channel, HashSet<String>);

fn unavailable(err: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(err.to_string())
}

async fn declare_exchange(channel: &lapin::Channel, exchange: &str) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

async fn declare_subscription(
    channel: &lapin::Channel,
    sub: &Subscription,
) -> Result<(), lapin::Error> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let dead = Subscription::dead_letter_queue(&sub.queue);
    channel
        .queue_declare(dead.as_str().into(), durable, FieldTable::default())
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(sub.max_deliveries.saturating_sub(1))),
    );
    // Dead letters go through the default exchange, which routes by queue name.
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(dead.as_str())),
    );
    channel
        .queue_declare(sub.queue.as_str().into(), durable, args)
        .await?;
    for (exchange, pattern) in &sub.bindings {
        declare_exchange(channel, exchange).await?;
        channel
            .queue_bind(
                sub.queue.as_str().into(),
                exchange.as_str().into(),
                pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

impl AmqpBus {
    pub fn new(link: AmqpLink) -> Self {
        Self {
            link,
            publisher: Arc::default(),
        }
    }

    async fn try_publish(
        &self,
        exchange: &str,
        event: &EventEnvelope,
        body: &[u8],
    ) -> Result<(), BusError> {
        let mut guard = self.publisher.lock().await;
        if guard
            .as_ref()
            .is_none_or(|(ch, _)| !ch.status().connected())
        {
            let channel = self.link.channel().await.map_err(unavailable)?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(unavailable)?;
            *guard = Some((channel, HashSet::new()));
        }
        let Some((channel, declared)) = guard.as_mut() else {
            return Err(BusError::Unavailable("no channel".into()));
        };
        if !declared.contains(exchange) {
            declare_exchange(channel, exchange)
                .await
                .map_err(unavailable)?;
            declared.insert(exchange.to_owned());
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(event.id.to_string()))
            .with_type(ShortString::from(event.kind.as_str()));
        let confirm = channel
            .basic_publish(
                exchange.into(),
                event.kind.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties,
            )
            .await
            .map_err(unavailable)?;
        let confirmation = tokio::time::timeout(Duration::from_secs(10), confirm)
            .await
            .map_err(|_| BusError::Unavailable("no confirm within 10s".into()))?
            .map_err(unavailable)?;
        if confirmation.is_nack() {
            return Err(BusError::Nacked);
        }
        if confirmation.take_message().is_some() {
            return Err(BusError::Unroutable(event.kind.clone()));
        }
        Ok(())
    }

    async fn consume_once(
        &self,
        sub: &Subscription,
        handler: &Handler,
        shutdown: &CancellationToken,
    ) -> Result<(), BusError> {
        let channel = self.link.channel().await.map_err(unavailable)?;
        declare_subscription(&channel, sub)
            .await
            .map_err(unavailable)?;
        channel
            .basic_qos(16, BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let mut consumer = channel
            .basic_consume(
                sub.queue.as_str().into(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = consumer.next() => next,
            };
            let delivery = match next {
                None => return Err(BusError::Unavailable("consumer stream ended".into())),
                Some(Err(err)) => return Err(unavailable(err)),
                Some(Ok(delivery)) => delivery,
            };
            let event = match serde_json::from_slice::<EventEnvelope>(&delivery.data) {
                Ok(event) => event,
                Err(err) => {
                    tracing::error!(queue = %sub.queue, %err, "unreadable message dead-lettered");
                    let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
                    continue;
                }
            };
            // Quorum queues count deliveries in `x-delivery-count` (absent on the first).
            let deliveries = delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-delivery-count").and_then(amqp_int))
                .unwrap_or(0)
                + 1;
            match handler(event.clone()).await {
                Ok(()) => {
                    delivery
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(unavailable)?;
                }
                Err(HandlerError::Retry(why)) => {
                    tracing::warn!(queue = %sub.queue, event = %event.id, %why, deliveries, "event handler failed; retrying");
                    let delay = sub.retry_delay * (deliveries as u32).min(20);
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await
                        .map_err(unavailable)?;
                }
                Err(err @ HandlerError::Reject(_)) => {
                    tracing::error!(queue = %sub.queue, event = %event.id, %err, "event dead-lettered");
                    delivery
                        .reject(BasicRejectOptions { requeue: false })
                        .await
                        .map_err(unavailable)?;
                }
            }
        }
    }
}

fn amqp_int(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        _ => None,
    }
}

impl EventBus for AmqpBus {
    fn publish<'a>(
        &'a self,
        exchange: &'a str,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(event).map_err(unavailable)?;
            let result = self.try_publish(exchange, event, &body).await;
            if matches!(result, Err(BusError::Unavailable(_))) {
                // The channel may be broken (or closed by a declare error): reopen next time.
                *self.publisher.lock().await = None;
            }
            result
        })
    }

    fn subscribe(
        &self,
        subscription: Subscription,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let channel = self.link.channel().await.map_err(unavailable)?;
            declare_subscription(&channel, &subscription)
                .await
                .map_err(unavailable)?;
            let _ = channel.close(200, "declared".into()).await;
            let bus = self.clone();
            tokio::spawn(async move {
                let mut backoff = Duration::from_millis(250);
                while !shutdown.is_cancelled() {
                    match bus.consume_once(&subscription, &handler, &shutdown).await {
                        Ok(()) => break,
                        Err(err) => {
                            tracing::warn!(queue = %subscription.queue, %err, "consumer stopped; resubscribing");
                        }
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            });
            Ok(())
        })
    }

    fn take_dead_letters<'a>(
        &'a self,
        queue: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, BusError>> {
        Box::pin(async move {
            let channel = self.link.channel().await.map_err(unavailable)?;
            let dead = Subscription::dead_letter_queue(queue);
            let mut out = Vec::new();
            while let Some(message) = channel
                .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .map_err(unavailable)?
            {
                let data = &message.delivery.data;
                out.push(match serde_json::from_slice(data) {
                    Ok(event) => DeadLetter::Event(event),
                    Err(_) => DeadLetter::Unreadable(String::from_utf8_lossy(data).into_owned()),
                });
            }
            let _ = channel.close(200, "done".into()).await;
            Ok(out)
        })
    }
}

// --- the outbox relay ---------------------------------------------------------------

/// How a relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The exchange the producer's events go to.
    pub exchange: String,
    /// Rows per round.
    pub batch: i64,
    /// Pause when the outbox is empty.
    pub idle_poll: Duration,
    /// Longest pause between retries while the bus fails.
    pub max_backoff: Duration,
    /// The outbox has a `room_seq` column (signaling's: the per-room order its
    /// writer assigned); its value becomes the envelope's `seq`.
    pub room_seq: bool,
}

impl RelayConfig {
    pub fn new(exchange: impl Into<String>) -> Self {
        Self {
            exchange: exchange.into(),
            batch: 100,
            idle_poll: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            room_seq: false,
        }
    }

    /// Read `room_seq` from the outbox into [`EventEnvelope::seq`].
    pub fn with_room_seq(mut self) -> Self {
        self.room_seq = true;
        self
    }
}

/// Payload fields that hold a one-time secret: blanked in the outbox once sent.
const SECRET_FIELDS: &[&str] = &["token"];

/// Start relaying `db`'s outbox to `bus` until `shutdown`.
pub fn spawn_relay(
    db: Db,
    bus: Arc<dyn EventBus>,
    config: RelayConfig,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let pause = match relay_once(&db, bus.as_ref(), &config).await {
                Ok(0) => {
                    backoff = Duration::from_millis(100);
                    config.idle_poll
                }
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    Duration::ZERO
                }
                Err(err) => {
                    tracing::debug!(exchange = %config.exchange, %err, "outbox relay waiting");
                    backoff = (backoff * 2).min(config.max_backoff);
                    backoff
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    })
}

/// Why a relay round stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("outbox: {0}")]
    Db(#[from] sqlx::Error),
}

/// One round: publish up to `batch` unpublished rows in order. Returns how many
/// were published; stops at the first that fails, so order is kept.
pub async fn relay_once(
    db: &Db,
    bus: &dyn EventBus,
    config: &RelayConfig,
) -> Result<usize, RelayError> {
    let sql = if config.room_seq {
        "SELECT id, type, payload, created_at, room_seq FROM outbox WHERE published_at IS NULL ORDER BY created_at, id LIMIT $1"
    } else {
        "SELECT id, type, payload, created_at FROM outbox WHERE published_at IS NULL ORDER BY created_at, id LIMIT $1"
    };
    let rows = sqlx::query(sql)
        .bind(config.batch)
        .fetch_all(db.pool())
        .await?;
    let mut done = 0;
    for row in rows {
        let id: String = row.try_get("id")?;
        let kind: String = row.try_get("type")?;
        let payload: String = row.try_get("payload")?;
        let created_at: i64 = row.try_get("created_at")?;
        let seq = if config.room_seq {
            row.try_get::<Option<i64>, _>("room_seq")?
                .and_then(|s| u64::try_from(s).ok())
        } else {
            None
        };
        let mut payload: serde_json::Value = serde_json::from_str(&payload)
            .unwrap_or_else(|_| serde_json::Value::String(payload.clone()));
        match id.parse::<EventId>() {
            Ok(event_id) => {
                let room = payload
                    .get("meeting_id")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                let envelope = EventEnvelope {
                    id: event_id,
                    kind,
                    version: ENVELOPE_VERSION,
                    occurred_at_ms: created_at,
                    room,
                    seq,
                    payload: payload.clone(),
                };
                bus.publish(&config.exchange, &envelope).await?;
            }
            Err(_) => tracing::error!(%id, "outbox row with a malformed id skipped"),
        }
        let mut scrubbed = false;
        if let Some(object) = payload.as_object_mut() {
            for field in SECRET_FIELDS {
                if let Some(value) = object.get_mut(*field) {
                    *value = serde_json::Value::String(String::new());
                    scrubbed = true;
                }
            }
        }
        if scrubbed {
            sqlx::query("UPDATE outbox SET published_at = $1, payload = $2 WHERE id = $3")
                .bind(now_ms())
                .bind(payload.to_string())
                .bind(&id)
                .execute(db.pool())
                .await?;
        } else {
            sqlx::query("UPDATE outbox SET published_at = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(&id)
                .execute(db.pool())
                .await?;
        }
        done += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn topic_patterns_match_like_amqp() {
        assert!(topic_matches("#", "user.registered"));
        assert!(topic_matches("user.*", "user.registered"));
        assert!(!topic_matches("user.*", "auth.password_changed"));
        assert!(topic_matches("meeting.#", "meeting.participant_joined"));
        assert!(topic_matches("a.#.c", "a.c"));
        assert!(!topic_matches("a.*", "a.b.c"));
    }
}
