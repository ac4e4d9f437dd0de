//! Bus behaviour every backend must have.

use crate::helpers::{Backend, Recorder, TestBus, event};
use serde_json::json;
use servicekit::bus::{BusError, DeadLetter, HandlerError, Subscription};

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $name() { super::$name(super::Backend::Memory).await })*
        }
        mod rabbitmq {
            $(#[tokio::test]
            async fn $name() { super::$name(super::Backend::Amqp).await })*
        }
    };
}

on_both!(
    events_published_after_subscribing_arrive_once_each_in_order,
    an_event_no_queue_takes_is_reported_unroutable,
    a_poison_message_ends_in_the_dead_letter_queue_while_the_rest_keep_flowing,
    a_handler_that_fails_once_gets_the_event_again,
    a_rejected_event_is_dead_lettered_at_once,
    two_services_each_get_their_own_copy,
);

async fn events_published_after_subscribing_arrive_once_each_in_order(backend: Backend) {
    let mut t = TestBus::new(backend).await;
    let exchange = t.name("meeting");
    let queue = t.name("q");
    let rec = Recorder::default();
    t.bus
        .subscribe(
            Subscription::new(&queue).bind(&exchange, "meeting.#"),
            rec.handler(|_| None),
            t.shutdown.clone(),
        )
        .await
        .unwrap();
    for i in 0..20 {
        let kind = format!("meeting.e{i}");
        t.bus
            .publish(&exchange, &event(&kind, json!({"i": i})))
            .await
            .unwrap();
    }
    rec.wait_for(|got| got.len() >= 20).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let kinds = rec.kinds();
    assert_eq!(
        kinds,
        (0..20).map(|i| format!("meeting.e{i}")).collect::<Vec<_>>()
    );
    t.cleanup().await;
}

async fn an_event_no_queue_takes_is_reported_unroutable(backend: Backend) {
    let mut t = TestBus::new(backend).await;
    let exchange = t.name("user");
    let queue = t.name("q");
    t.bus
        .subscribe(
            Subscription::new(&queue).bind(&exchange, "user.*"),
            Recorder::default().handler(|_| None),
            t.shutdown.clone(),
        )
        .await
        .unwrap();
    let err = t
        .bus
        .publish(&exchange, &event("auth.password_changed", json!({})))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Unroutable(_)), "{err:?}");
    t.bus
        .publish(&exchange, &event("user.registered", json!({})))
        .await
        .unwrap();
    t.cleanup().await;
}

async fn a_poison_message_ends_in_the_dead_letter_queue_while_the_rest_keep_flowing(
    backend: Backend,
) {
    let mut t = TestBus::new(backend).await;
    let exchange = t.name("meeting");
    let queue = t.name("q");
    let rec = Recorder::default();
    let mut sub = Subscription::new(&queue).bind(&exchange, "#");
    sub.max_deliveries = 3;
    sub.retry_delay = std::time::Duration::from_millis(20);
    t.bus
        .subscribe(
            sub,
            rec.handler(|e| {
                (e.kind == "poison").then(|| HandlerError::Retry("always fails".into()))
            }),
            t.shutdown.clone(),
        )
        .await
        .unwrap();
    let poison = event("poison", json!({}));
    t.bus
        .publish(&exchange, &event("good.1", json!({})))
        .await
        .unwrap();
    t.bus.publish(&exchange, &poison).await.unwrap();
    t.bus
        .publish(&exchange, &event("good.2", json!({})))
        .await
        .unwrap();
    rec.wait_for(|got| {
        got.iter().filter(|e| e.kind == "poison").count() == 3
            && got.iter().filter(|e| e.kind.starts_with("good")).count() == 2
    })
    .await;
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead.extend(t.bus.take_dead_letters(&queue).await.unwrap());
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(dead, vec![DeadLetter::Event(poison)]);
    // Later events still flow, and the poison is not delivered again.
    t.bus
        .publish(&exchange, &event("good.3", json!({})))
        .await
        .unwrap();
    rec.wait_for(|got| got.iter().any(|e| e.kind == "good.3"))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(rec.kinds().iter().filter(|k| *k == "poison").count(), 3);
    t.cleanup().await;
}

async fn a_handler_that_fails_once_gets_the_event_again(backend: Backend) {
    let mut t = TestBus::new(backend).await;
    let exchange = t.name("user");
    let queue = t.name("q");
    let rec = Recorder::default();
    let seen = rec.got.clone();
    t.bus
        .subscribe(
            Subscription::new(&queue).bind(&exchange, "#"),
            rec.handler(move |_| {
                (seen.lock().unwrap().len() == 1).then(|| HandlerError::Retry("db down".into()))
            }),
            t.shutdown.clone(),
        )
        .await
        .unwrap();
    let e = event("user.registered", json!({}));
    t.bus.publish(&exchange, &e).await.unwrap();
    rec.wait_for(|got| got.len() == 2).await;
    assert!(rec.got.lock().unwrap().iter().all(|g| g.id == e.id));
    assert!(t.bus.take_dead_letters(&queue).await.unwrap().is_empty());
    t.cleanup().await;
}

async fn a_rejected_event_is_dead_lettered_at_once(backend: Backend) {
    let mut t = TestBus::new(backend).await;
    let exchange = t.name("user");
    let queue = t.name("q");
    let rec = Recorder::default();
    t.bus
        .subscribe(
            Subscription::new(&queue).bind(&exchange, "#"),
            rec.handler(|_| Some(HandlerError::Reject("cannot parse".into()))),
            t.shutdown.clone(),
        )
        .await
        .unwrap();
    let e = event("user.registered", json!({}));
    t.bus.publish(&exchange, &e).await.unwrap();
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead.extend(t.bus.take_dead_letters(&queue).await.unwrap());
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(dead, vec![DeadLetter::Event(e)]);
    assert_eq!(rec.kinds().len(), 1);
    t.cleanup().await;
}

async fn two_services_each_get_their_own_copy(backend: Backend) {
    let mut t = TestBus::new(backend).await;
    let exchange = t.name("meeting");
    let (qa, qb) = (t.name("notify"), t.name("analytics"));
    let (a, b) = (Recorder::default(), Recorder::default());
    for (q, r) in [(&qa, &a), (&qb, &b)] {
        t.bus
            .subscribe(
                Subscription::new(q).bind(&exchange, "meeting.*"),
                r.handler(|_| None),
                t.shutdown.clone(),
            )
            .await
            .unwrap();
    }
    t.bus
        .publish(&exchange, &event("meeting.started", json!({})))
        .await
        .unwrap();
    a.wait_for(|g| g.len() == 1).await;
    b.wait_for(|g| g.len() == 1).await;
    t.cleanup().await;
}
