//! `user.registered` and `user.deleted` from the event bus.

use crate::helpers::{TestApp, images};
use crate::on_both_backends;
use proto::event::{EventEnvelope, USER_EVENTS};
use proto::ids::EventId;
use reqwest::StatusCode;
use serde_json::{Value, json};
use servicekit::bus::EventBus;
use sqlx::Row;
use std::time::Duration;

on_both_backends!(
    a_new_account_has_a_profile_before_its_first_visit,
    a_registration_seen_again_changes_nothing,
    a_deleted_account_loses_its_profile_and_avatar,
    deleting_the_account_in_auth_removes_profile_preferences_and_avatar_once,
    changed_preferences_are_announced_once_per_real_change,
);

fn envelope(kind: &str, payload: Value) -> EventEnvelope {
    EventEnvelope {
        id: EventId::new(),
        kind: kind.to_owned(),
        version: 1,
        occurred_at_ms: 0,
        room: None,
        seq: None,
        payload,
    }
}

/// Ask until `check` holds (the bus is asynchronous), for at most 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 10 s");
}

async fn a_new_account_has_a_profile_before_its_first_visit(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let bob = app.sign_up("Bob").await;
    // Ada never called the users service: the event created her profile.
    eventually("the profile exists", || async {
        app.public(&bob, &ada.id).await.status == StatusCode::OK
    })
    .await;
    let answer = app.public(&bob, &ada.id).await;
    assert_eq!(answer.body["display_name"], "Ada Lovelace");
}

async fn a_registration_seen_again_changes_nothing(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    app.patch_me(&ada, json!({"display_name": "Countess"}))
        .await;
    let event = envelope(
        "user.registered",
        json!({"user_id": ada.id, "email": ada.email, "display_name": "Ada Lovelace", "registered_at": 0}),
    );
    // The same event twice, and a second registration event for the same account.
    for event in [
        event.clone(),
        event,
        envelope(
            "user.registered",
            json!({"user_id": ada.id, "display_name": "Other"}),
        ),
    ] {
        app.bus
            .publish(USER_EVENTS, &event)
            .await
            .expect("published");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.me(&ada).await.body["display_name"], "Countess");
    // A payload that cannot be read is dead-lettered, not retried forever.
    app.bus
        .publish(
            USER_EVENTS,
            &envelope("user.registered", json!({"user_id": "nope"})),
        )
        .await
        .expect("published");
    eventually("a dead letter", || async {
        !app.bus
            .take_dead_letters(users::events::QUEUE)
            .await
            .expect("dead letters")
            .is_empty()
    })
    .await;
}

async fn a_deleted_account_loses_its_profile_and_avatar(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let bob = app.sign_up("Bob").await;
    let answer = app.put_avatar(&ada, images::png(64, 64)).await;
    assert_eq!(answer.status, StatusCode::OK);
    // Both registrations have come through the relay first, as they would in
    // production (auth's outbox keeps order).
    eventually("both registrations applied", || async {
        processed(&app).await >= 2
    })
    .await;
    app.bus
        .publish(
            USER_EVENTS,
            &envelope("user.deleted", json!({"user_id": ada.id})),
        )
        .await
        .expect("published");
    eventually("the profile is gone", || async {
        app.public(&bob, &ada.id).await.code() == "user_not_found"
    })
    .await;
    assert_eq!(
        app.avatar(&bob, &ada.id, None).await.code(),
        "user_not_found"
    );
    let left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM avatars WHERE user_id = $1")
        .bind(&ada.id)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(left, 0);
}

async fn deleting_the_account_in_auth_removes_profile_preferences_and_avatar_once(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let bob = app.sign_up("Bob").await;
    assert_eq!(
        app.put_avatar(&ada, images::png(64, 64)).await.status,
        StatusCode::OK
    );
    let answer = app
        .patch_me(&ada, json!({"preferences": {"camera_off": true}}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);

    // Ada deletes her account on the real auth service; its outbox relay carries
    // `user.deleted` over the bus to this service.
    let deleted = app
        .send(
            app.client
                .delete(format!("http://{}/api/v1/auth/account", app.auth_addr))
                .bearer_auth(&ada.token)
                .json(&json!({"password": crate::helpers::PASSWORD})),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    eventually("the profile is gone", || async {
        app.public(&bob, &ada.id).await.code() == "user_not_found"
    })
    .await;
    let rows = |table: &'static str| {
        let id = ada.id.clone();
        let pool = app.db.pool().clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n FROM {table} WHERE user_id = $1"
            )))
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
            .try_get::<i64, _>("n")
            .unwrap()
        }
    };
    // Preferences live in the profile row; avatars in their own table.
    assert_eq!(rows("profiles").await, 0);
    assert_eq!(rows("avatars").await, 0);
    // Her token is revoked in auth; presented here directly (not through the
    // gateway) while it has not expired yet, it does not bring the profile back.
    let me = app.me(&ada).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED, "{:?}", me.body);
    assert_eq!(me.code(), "unauthenticated");
    assert_eq!(
        app.put_avatar(&ada, images::png(64, 64)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(rows("profiles").await, 0);
    assert_eq!(rows("avatars").await, 0);

    // The same event delivered again changes nothing and is not applied twice.
    let event = app
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.kind == "user.deleted")
        .cloned()
        .expect("the others saw user.deleted");
    assert_eq!(event.payload["user_id"], ada.id.as_str());
    let before = processed(&app).await;
    app.bus
        .publish(USER_EVENTS, &event)
        .await
        .expect("published");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(processed(&app).await, before);
    assert_eq!(app.public(&bob, &ada.id).await.code(), "user_not_found");
}

async fn processed(app: &TestApp) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM processed_events")
        .fetch_one(app.db.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

fn preference_events(app: &TestApp, user: &str) -> Vec<Value> {
    app.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == "user.preferences_changed" && e.payload["user_id"] == user)
        .map(|e| e.payload.clone())
        .collect()
}

async fn changed_preferences_are_announced_once_per_real_change(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let answer = app
        .patch_me(
            &ada,
            json!({"preferences": {"notifications": {"push": false}}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    // Not a change of preferences, and a change to what they already are: no event.
    app.patch_me(&ada, json!({"bio": "hello"})).await;
    app.patch_me(&ada, json!({"preferences": {"join_muted": false}}))
        .await;
    // A real change again.
    app.patch_me(
        &ada,
        json!({"preferences": {"camera_off": true, "notifications": {"email": false}}}),
    )
    .await;
    eventually("two preference events", || async {
        preference_events(&app, &ada.id).len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = preference_events(&app, &ada.id);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0],
        json!({"user_id": ada.id, "join_muted": false, "camera_off": false,
               "notifications": {"email": true, "push": false, "in_app": true}})
    );
    assert_eq!(
        events[1],
        json!({"user_id": ada.id, "join_muted": false, "camera_off": true,
               "notifications": {"email": false, "push": false, "in_app": true}})
    );
}
