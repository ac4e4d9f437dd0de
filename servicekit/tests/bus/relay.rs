//! The outbox relay: nothing lost while the broker is down, every effect exactly once.

use crate::helpers::{Backend, Recorder, TestBus, fresh_db};
use proto::event::EventEnvelope;
use serde_json::json;
use servicekit::Secret;
use servicekit::backends::{AmqpLink, Db};
use servicekit::bus::{
    AmqpBus, Handler, HandlerError, RelayConfig, Subscription, claim_event, relay_once, spawn_relay,
};
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;

async fn schema(db: &Db) {
    for sql in [
        "CREATE TABLE outbox (id TEXT PRIMARY KEY, type TEXT NOT NULL, payload TEXT NOT NULL, created_at BIGINT NOT NULL, published_at BIGINT)",
        "CREATE TABLE processed_events (event_id TEXT PRIMARY KEY, processed_at BIGINT NOT NULL)",
        "CREATE TABLE effects (event_id TEXT NOT NULL, kind TEXT NOT NULL)",
    ] {
        sqlx::query(sql).execute(db.pool()).await.unwrap();
    }
}

async fn produce(db: &Db, kind: &str, payload: serde_json::Value, at: i64) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query("INSERT INTO outbox (id, type, payload, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(kind)
        .bind(payload.to_string())
        .bind(at)
        .execute(db.pool())
        .await
        .unwrap();
    id
}

/// The consumer's effect: one `effects` row per event, deduplicated by id in the
/// same transaction.
fn effect_handler(db: Db, rec: Recorder) -> Handler {
    let inner = rec.handler(|_| None);
    Arc::new(move |event: EventEnvelope| {
        let db = db.clone();
        let inner = inner.clone();
        Box::pin(async move {
            let retry = |e: sqlx::Error| HandlerError::Retry(e.to_string());
            let mut tx = db.begin().await.map_err(retry)?;
            if claim_event(&mut tx, event.id, 1).await.map_err(retry)? {
                sqlx::query("INSERT INTO effects (event_id, kind) VALUES ($1, $2)")
                    .bind(event.id.to_string())
                    .bind(&event.kind)
                    .execute(&mut *tx)
                    .await
                    .map_err(retry)?;
            }
            tx.commit().await.map_err(retry)?;
            inner(event).await
        })
    })
}

async fn effects(db: &Db) -> Vec<(String, i64)> {
    sqlx::query("SELECT kind, COUNT(*) AS n FROM effects GROUP BY kind ORDER BY kind")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<String, _>("kind"), r.get::<i64, _>("n")))
        .collect()
}

async fn unpublished(db: &Db) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get("n")
}

async fn events_written_while_the_broker_is_down_arrive_exactly_once_after_it_returns(
    backend: Backend,
    postgres: bool,
) {
    let mut t = TestBus::new(backend).await;
    let exchange = t.name("user");
    let queue = t.name("consumer");
    let producer = fresh_db(postgres).await;
    let consumer = fresh_db(postgres).await;
    schema(&producer).await;
    schema(&consumer).await;
    let rec = Recorder::default();
    t.bus
        .subscribe(
            Subscription::new(&queue).bind(&exchange, "#"),
            effect_handler(consumer.clone(), rec.clone()),
            t.shutdown.clone(),
        )
        .await
        .unwrap();

    for i in 0..10 {
        produce(&producer, &format!("user.e{i}"), json!({"i": i}), i).await;
    }
    // The broker is down: a relay pointed at a closed port publishes nothing and
    // keeps every row.
    let down = AmqpLink::connect_lazy(
        &Secret::new("amqp://guest:guest@127.0.0.1:1/%2f".to_owned()),
        t.shutdown.clone(),
    );
    let down_bus = AmqpBus::new(down);
    let config = RelayConfig::new(&exchange);
    for _ in 0..3 {
        assert!(relay_once(&producer, &down_bus, &config).await.is_err());
    }
    let stuck = spawn_relay(
        producer.clone(),
        Arc::new(down_bus),
        config.clone(),
        t.shutdown.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stuck.abort();
    assert_eq!(unpublished(&producer).await, 10);

    // The broker is back (the real one): everything is relayed.
    let relay = spawn_relay(
        producer.clone(),
        t.bus.clone(),
        config.clone(),
        t.shutdown.clone(),
    );
    rec.wait_for(|got| got.len() >= 10).await;
    // A producer that crashed after publishing but before marking publishes again:
    // the consumer's effect still happens once per event.
    sqlx::query("UPDATE outbox SET published_at = NULL WHERE type IN ('user.e3', 'user.e7')")
        .execute(producer.pool())
        .await
        .unwrap();
    rec.wait_for(|got| got.len() >= 12).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.abort();
    assert_eq!(unpublished(&producer).await, 0);
    let got = effects(&consumer).await;
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|(_, n)| *n == 1), "{got:?}");
    // In order: the consumer saw e0..e9 first.
    let kinds: Vec<String> = rec.kinds().into_iter().take(10).collect();
    assert_eq!(
        kinds,
        (0..10).map(|i| format!("user.e{i}")).collect::<Vec<_>>()
    );
    t.cleanup().await;
}

async fn one_time_tokens_are_blanked_in_the_outbox_once_sent(backend: Backend, postgres: bool) {
    let mut t = TestBus::new(backend).await;
    let exchange = t.name("user");
    let queue = t.name("consumer");
    let producer = fresh_db(postgres).await;
    schema(&producer).await;
    let rec = Recorder::default();
    t.bus
        .subscribe(
            Subscription::new(&queue).bind(&exchange, "#"),
            rec.handler(|_| None),
            t.shutdown.clone(),
        )
        .await
        .unwrap();
    let id = produce(
        &producer,
        "auth.password_reset_requested",
        json!({"email": "a@example.com", "token": "s3cret"}),
        1,
    )
    .await;
    let config = RelayConfig::new(&exchange);
    assert_eq!(
        relay_once(&producer, t.bus.as_ref(), &config)
            .await
            .unwrap(),
        1
    );
    rec.wait_for(|got| got.len() == 1).await;
    assert_eq!(rec.got.lock().unwrap()[0].payload["token"], "s3cret");
    assert_eq!(rec.got.lock().unwrap()[0].id.to_string(), id);
    let stored: String = sqlx::query("SELECT payload FROM outbox WHERE id = $1")
        .bind(&id)
        .fetch_one(producer.pool())
        .await
        .unwrap()
        .get("payload");
    assert!(!stored.contains("s3cret"), "{stored}");
    t.cleanup().await;
}

async fn events_nobody_listens_to_yet_stay_in_the_outbox(backend: Backend, postgres: bool) {
    let mut t = TestBus::new(backend).await;
    let exchange = t.name("meeting");
    let queue = t.name("late");
    let producer = fresh_db(postgres).await;
    schema(&producer).await;
    produce(&producer, "meeting.started", json!({"meeting_id": "m1"}), 1).await;
    let config = RelayConfig::new(&exchange);
    assert!(
        relay_once(&producer, t.bus.as_ref(), &config)
            .await
            .is_err()
    );
    assert_eq!(unpublished(&producer).await, 1);
    let rec = Recorder::default();
    t.bus
        .subscribe(
            Subscription::new(&queue).bind(&exchange, "meeting.#"),
            rec.handler(|_| None),
            t.shutdown.clone(),
        )
        .await
        .unwrap();
    assert_eq!(
        relay_once(&producer, t.bus.as_ref(), &config)
            .await
            .unwrap(),
        1
    );
    rec.wait_for(|got| got.len() == 1).await;
    assert_eq!(rec.got.lock().unwrap()[0].room.as_deref(), Some("m1"));
    t.cleanup().await;
}

macro_rules! relay_tests {
    ($($name:ident),* $(,)?) => {
        mod memory_sqlite {
            $(#[tokio::test]
            async fn $name() { super::$name(super::Backend::Memory, false).await })*
        }
        mod rabbitmq_postgres {
            $(#[tokio::test]
            async fn $name() { super::$name(super::Backend::Amqp, true).await })*
        }
    };
}

relay_tests!(
    events_written_while_the_broker_is_down_arrive_exactly_once_after_it_returns,
    one_time_tokens_are_blanked_in_the_outbox_once_sent,
    events_nobody_listens_to_yet_stay_in_the_outbox,
);
