//! `DELETE /api/v1/auth/account`.

use crate::helpers::{Answer, PASSWORD, TestApp};
use crate::oidc_harness::{OauthApp, spawn_oauth_app};
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    deleting_an_account_with_its_password_ends_every_session_and_announces_it,
    a_wrong_or_missing_password_deletes_nothing,
);

mod an_account_without_a_password_is_deleted_only_soon_after_a_sign_in {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_sqlite() {
        super::an_account_without_a_password_is_deleted_only_soon_after_a_sign_in(
            super::spawn_oauth_app(crate::helpers::Backend::Sqlite).await,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_postgres() {
        super::an_account_without_a_password_is_deleted_only_soon_after_a_sign_in(
            super::spawn_oauth_app(crate::helpers::Backend::Postgres).await,
        )
        .await
    }
}

async fn delete(app: &TestApp, access: &str, body: Value) -> Answer {
    app.send(
        app.client
            .delete(app.url("/api/v1/auth/account"))
            .bearer_auth(access)
            .json(&body),
    )
    .await
}

async fn deleting_an_account_with_its_password_ends_every_session_and_announces_it(app: TestApp) {
    let (email, first) = app.new_account().await;
    let second = app.login(&email, PASSWORD).await;
    let access = first.str("access_token");

    let answer = delete(&app, &access, json!({"password": PASSWORD})).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);

    // Every session of every device is over.
    for session in [&first, &second] {
        assert!(!app.is_active(&session.str("access_token")).await);
        assert_eq!(
            app.refresh(&session.str("refresh_token")).await.code(),
            "invalid_refresh_token"
        );
    }
    assert_eq!(
        app.login(&email, PASSWORD).await.code(),
        "invalid_credentials"
    );
    let again = delete(&app, &access, json!({"password": PASSWORD})).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);

    // user.deleted goes out through the outbox, for users and the others.
    let deleted = app.outbox("user.deleted").await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["user_id"], first.body["user"]["id"]);
    // No personal data is kept in the emptied row, and the address is free again.
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = $1")
        .bind(&email)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
    let again = app.register(&email, PASSWORD, "Ada again").await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_ne!(again.body["user"]["id"], first.body["user"]["id"]);
}

async fn a_wrong_or_missing_password_deletes_nothing(app: TestApp) {
    let (email, registered) = app.new_account().await;
    let access = registered.str("access_token");
    for body in [
        json!({"password": "not the password at all"}),
        json!({}),
        json!({"password": ""}),
    ] {
        let answer = delete(&app, &access, body.clone()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(answer.code(), "invalid_credentials", "{body}");
    }
    let answer = delete(&app, "not a token", json!({"password": PASSWORD})).await;
    assert_eq!(answer.code(), "unauthenticated");
    // Not JSON at all.
    let answer = app
        .send(
            app.client
                .delete(app.url("/api/v1/auth/account"))
                .bearer_auth(&access)
                .header("content-type", "application/json")
                .body(vec![0xff, 0xfe, 0x00]),
        )
        .await;
    assert!(answer.status.is_client_error(), "{:?}", answer.status);
    assert!(app.is_active(&access).await);
    assert_eq!(app.login(&email, PASSWORD).await.status, StatusCode::OK);
    assert!(app.outbox("user.deleted").await.is_empty());
}

async fn an_account_without_a_password_is_deleted_only_soon_after_a_sign_in(app: OauthApp) {
    let email = crate::helpers::unique_email();
    let tokens = app.tokens_for(&email).await;
    let access = tokens.str("access_token");
    // Signed in eleven minutes ago: not recent enough.
    sqlx::query("UPDATE sessions SET created_at = created_at - 660000")
        .execute(app.db.pool())
        .await
        .unwrap();
    let stale = delete(&app, &access, json!({})).await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN);
    assert_eq!(stale.code(), "reauthentication_required");
    assert!(app.outbox("user.deleted").await.is_empty());

    // A fresh sign-in with the provider, then it goes.
    let fresh = app.tokens_for(&email).await;
    let answer = delete(&app, &fresh.str("access_token"), json!({})).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    assert!(!app.is_active(&fresh.str("access_token")).await);
    assert!(!app.is_active(&access).await);
    assert_eq!(app.outbox("user.deleted").await.len(), 1);
    // The identity link went with it: the next sign-in makes a new account.
    let reborn = app.tokens_for(&email).await;
    assert_ne!(reborn.body["user"]["id"], fresh.body["user"]["id"]);
}
