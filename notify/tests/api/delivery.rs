//! Nothing lost, nothing sent twice: duplicates, restarts, failing SMTP, poison
//! messages, and the outbox relay with the broker down.

use crate::email::{meeting_event, on_both, scheduled};
use crate::helpers::{Stack, World, count, fresh_db, read_mails, temp_dir, wait_for_mails};
use proto::ids::{MeetingId, UserId};
use serde_json::json;
use servicekit::Secret;
use servicekit::backends::AmqpLink;
use servicekit::bus::{AmqpBus, DeadLetter, RelayConfig, relay_once, spawn_relay};
use std::sync::Arc;
use std::time::Duration;

async fn an_event_delivered_twice_sends_one_email(stack: Stack) {
    let world = World::new(stack).await;
    world.spawn_notify(world.config()).await;
    let event = crate::helpers::envelope(
        "user.registered",
        json!({"user_id": UserId::new(), "email": "twice@example.com", "display_name": "T"}),
    );
    world
        .bus
        .publish(&world.user_exchange(), &event)
        .await
        .unwrap();
    world
        .bus
        .publish(&world.user_exchange(), &event)
        .await
        .unwrap();
    wait_for_mails(&world.mail_folder(), |m| !m.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(read_mails(&world.mail_folder()).len(), 1);
    assert_eq!(count(&world.db, "SELECT COUNT(*) FROM mail_queue").await, 1);
    world.cleanup().await;
}

async fn a_reminder_is_sent_once_across_a_restart(stack: Stack) {
    let world = World::new(stack).await;
    let mut config = world.config();
    config.reminder_lead = Duration::from_secs(3600);
    let first = world.spawn_notify(config.clone()).await;
    let meeting = MeetingId::new();
    // Starts in an hour and two seconds: the reminder is due in two seconds.
    let starts = chrono::Utc::now() + chrono::Duration::seconds(3602);
    world
        .publish(
            &world.meeting_exchange(),
            "meeting.scheduled",
            meeting_event(
                meeting,
                scheduled(&starts.to_rfc3339(), "Asia/Tokyo", &["r@example.com"]),
            ),
        )
        .await;
    wait_for_mails(&world.mail_folder(), |m| m.len() == 1).await;
    // Restart before the reminder is due.
    first.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = world.spawn_notify(config.clone()).await;
    let mails = wait_for_mails(&world.mail_folder(), |m| m.len() == 2).await;
    assert!(
        mails
            .iter()
            .any(|m| m.subject == "Starting soon: Quarterly planning")
    );
    // And restart again after it was sent: it is not sent again.
    second.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    world.spawn_notify(config).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(read_mails(&world.mail_folder()).len(), 2);
    world.cleanup().await;
}

async fn an_email_that_keeps_failing_ends_as_a_dead_letter_record(stack: Stack) {
    let world = World::new(stack).await;
    let mut config = world.config();
    // Nothing listens on port 1: every send fails.
    config.smtp_url = Some(Secret::new("smtp://127.0.0.1:1".to_owned()));
    config.max_attempts = 3;
    config.retry_base = Duration::from_millis(20);
    world.spawn_notify(config).await;
    world
        .publish(
            &world.user_exchange(),
            "user.registered",
            json!({"email": "dl@example.com", "display_name": "D"}),
        )
        .await;
    for _ in 0..200 {
        if count(&world.db, "SELECT COUNT(*) FROM mail_dead_letters").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count(&world.db, "SELECT COUNT(*) FROM mail_dead_letters WHERE recipient = 'dl@example.com' AND attempts = 3").await,
        1
    );
    assert_eq!(
        count(
            &world.db,
            "SELECT COUNT(*) FROM mail_queue WHERE failed_at IS NOT NULL"
        )
        .await,
        1
    );
    world.cleanup().await;
}

async fn a_malformed_event_is_dead_lettered_and_the_rest_keep_flowing(stack: Stack) {
    let world = World::new(stack).await;
    world.spawn_notify(world.config()).await;
    let x = world.user_exchange();
    let poison = world
        .publish(&x, "auth.password_reset_requested", json!({"no": "email"}))
        .await;
    world
        .publish(&x, "user.registered", json!({"email": "ok@example.com"}))
        .await;
    wait_for_mails(&world.mail_folder(), |m| m.len() == 1).await;
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead.extend(world.bus.take_dead_letters(&world.queue()).await.unwrap());
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead, vec![DeadLetter::Event(poison)]);
    world.cleanup().await;
}

/// auth's outbox table, as its migration creates it.
async fn producer_outbox(stack: Stack) -> servicekit::backends::Db {
    let db = fresh_db(stack, &temp_dir("producer"), "producer").await;
    sqlx::query("CREATE TABLE outbox (id TEXT PRIMARY KEY, type TEXT NOT NULL, payload TEXT NOT NULL, created_at BIGINT NOT NULL, published_at BIGINT)")
        .execute(db.pool())
        .await
        .unwrap();
    db
}

async fn emails_for_events_written_while_the_broker_was_down_are_sent_exactly_once(stack: Stack) {
    let world = World::new(stack).await;
    world.spawn_notify(world.config()).await;
    let producer = producer_outbox(stack).await;
    for i in 0..5 {
        sqlx::query("INSERT INTO outbox (id, type, payload, created_at) VALUES ($1, $2, $3, $4)")
            .bind(uuid::Uuid::now_v7().to_string())
            .bind("user.registered")
            .bind(json!({"email": format!("u{i}@example.com"), "display_name": "U"}).to_string())
            .bind(i64::from(i))
            .execute(producer.pool())
            .await
            .unwrap();
    }
    let config = RelayConfig::new(world.user_exchange());
    // The broker is down (the relay points at a closed port): nothing leaves.
    let down = AmqpBus::new(AmqpLink::connect_lazy(
        &Secret::new("amqp://guest:guest@127.0.0.1:1/%2f".to_owned()),
        world.shutdown.clone(),
    ));
    assert!(relay_once(&producer, &down, &config).await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(read_mails(&world.mail_folder()).is_empty());
    // It is back: everything goes out; a crashed producer republishing two rows
    // changes nothing.
    let relay = spawn_relay(
        producer.clone(),
        world.bus.clone(),
        config.clone(),
        world.shutdown.clone(),
    );
    wait_for_mails(&world.mail_folder(), |m| m.len() == 5).await;
    sqlx::query("UPDATE outbox SET published_at = NULL WHERE created_at < 2")
        .execute(producer.pool())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    relay.abort();
    assert_eq!(
        count(
            &producer,
            "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"
        )
        .await,
        0
    );
    let mails = read_mails(&world.mail_folder());
    assert_eq!(mails.len(), 5);
    let mut to: Vec<_> = mails.iter().map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(
        to,
        (0..5)
            .map(|i| format!("u{i}@example.com"))
            .collect::<Vec<_>>()
    );
    let _ = Arc::clone(&world.bus);
    world.cleanup().await;
}

on_both!(
    an_event_delivered_twice_sends_one_email,
    a_reminder_is_sent_once_across_a_restart,
    an_email_that_keeps_failing_ends_as_a_dead_letter_record,
    a_malformed_event_is_dead_lettered_and_the_rest_keep_flowing,
    emails_for_events_written_while_the_broker_was_down_are_sent_exactly_once,
);

#[tokio::test]
async fn sent_emails_and_dedup_records_are_pruned_after_the_retention() {
    let world = World::new(Stack::Embedded).await;
    world.spawn_notify(world.config()).await;
    world
        .publish(
            &world.user_exchange(),
            "user.registered",
            json!({"email": "old@example.com"}),
        )
        .await;
    wait_for_mails(&world.mail_folder(), |m| m.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = chrono::Utc::now().timestamp_millis() + notify::sender::RETENTION_MS + 1000;
    assert_eq!(notify::sender::prune(&world.db, later).await.unwrap(), 2);
    assert_eq!(count(&world.db, "SELECT COUNT(*) FROM mail_queue").await, 0);
    world.cleanup().await;
}
