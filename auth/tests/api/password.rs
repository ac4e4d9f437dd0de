use crate::helpers::{PASSWORD, TestApp, unique_email};
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::json;

on_both_backends!(
    changing_the_password_keeps_this_session_and_signs_out_the_others,
    changing_the_password_needs_the_current_one,
    changing_to_a_weak_password_is_weak_password,
    a_password_reset_link_sets_a_new_password_once,
    asking_for_a_reset_answers_the_same_for_unknown_accounts,
    an_expired_reset_link_is_refused,
);

const NEW_PASSWORD: &str = "a brand new passphrase";

async fn change(app: &TestApp, access: &str, current: &str, new: &str) -> crate::helpers::Answer {
    app.post(
        "/api/v1/auth/password",
        json!({"current_password": current, "new_password": new}),
        Some(access),
    )
    .await
}

async fn changing_the_password_keeps_this_session_and_signs_out_the_others(app: TestApp) {
    let (email, registered) = app.new_account().await;
    let other = app.login(&email, PASSWORD).await;
    let access = registered.str("access_token");
    let answer = change(&app, &access, PASSWORD, NEW_PASSWORD).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    assert!(app.is_active(&access).await);
    assert_eq!(
        app.refresh(&registered.str("refresh_token")).await.status,
        StatusCode::OK
    );
    assert!(!app.is_active(&other.str("access_token")).await);
    assert_eq!(
        app.refresh(&other.str("refresh_token")).await.code(),
        "invalid_refresh_token"
    );
    assert_eq!(
        app.login(&email, PASSWORD).await.code(),
        "invalid_credentials"
    );
    assert_eq!(app.login(&email, NEW_PASSWORD).await.status, StatusCode::OK);
    let notices = app.outbox("auth.password_changed").await;
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0]["email"], email.as_str());
}

async fn changing_the_password_needs_the_current_one(app: TestApp) {
    let (email, registered) = app.new_account().await;
    let answer = change(
        &app,
        &registered.str("access_token"),
        "not my password",
        NEW_PASSWORD,
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "invalid_credentials");
    assert_eq!(app.login(&email, PASSWORD).await.status, StatusCode::OK);
}

async fn changing_to_a_weak_password_is_weak_password(app: TestApp) {
    let (_, registered) = app.new_account().await;
    let answer = change(&app, &registered.str("access_token"), PASSWORD, "password").await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.code(), "weak_password");
}

async fn a_password_reset_link_sets_a_new_password_once(app: TestApp) {
    let (email, registered) = app.new_account().await;
    let asked = app
        .post(
            "/api/v1/auth/password-reset",
            json!({"email": email.to_uppercase()}),
            None,
        )
        .await;
    assert_eq!(asked.status, StatusCode::ACCEPTED);
    let token = app
        .last_token_for("auth.password_reset_requested", &email)
        .await;
    // A weak choice does not use up the link.
    let weak = app
        .post(
            "/api/v1/auth/password-reset/confirm",
            json!({"token": token, "new_password": "12345678"}),
            None,
        )
        .await;
    assert_eq!(weak.code(), "weak_password");
    let confirm = json!({"token": token, "new_password": NEW_PASSWORD});
    let done = app
        .post("/api/v1/auth/password-reset/confirm", confirm.clone(), None)
        .await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{:?}", done.body);
    // Single use.
    let again = app
        .post("/api/v1/auth/password-reset/confirm", confirm, None)
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.code(), "invalid_one_time_token");
    // Every session is signed out; the new password works, the old does not.
    assert!(!app.is_active(&registered.str("access_token")).await);
    assert_eq!(
        app.refresh(&registered.str("refresh_token")).await.code(),
        "invalid_refresh_token"
    );
    assert_eq!(
        app.login(&email, PASSWORD).await.code(),
        "invalid_credentials"
    );
    let login = app.login(&email, NEW_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK);
    // The link proved the mailbox.
    assert_eq!(login.body["user"]["email_verified"], true);
}

async fn asking_for_a_reset_answers_the_same_for_unknown_accounts(app: TestApp) {
    let (email, _) = app.new_account().await;
    let known = app
        .post("/api/v1/auth/password-reset", json!({"email": email}), None)
        .await;
    let unknown = app
        .post(
            "/api/v1/auth/password-reset",
            json!({"email": unique_email()}),
            None,
        )
        .await;
    let malformed = app
        .post(
            "/api/v1/auth/password-reset",
            json!({"email": "not an email"}),
            None,
        )
        .await;
    assert_eq!(known.status, StatusCode::ACCEPTED);
    assert_eq!(unknown.status, known.status);
    assert_eq!(unknown.body, known.body);
    assert_eq!(malformed.body, known.body);
    assert_eq!(app.outbox("auth.password_reset_requested").await.len(), 1);
}

async fn an_expired_reset_link_is_refused(app: TestApp) {
    let (email, _) = app.new_account().await;
    app.post("/api/v1/auth/password-reset", json!({"email": email}), None)
        .await;
    let token = app
        .last_token_for("auth.password_reset_requested", &email)
        .await;
    sqlx::query("UPDATE one_time_tokens SET expires_at = 0 WHERE purpose = 'reset_password'")
        .execute(app.db.pool())
        .await
        .unwrap();
    let answer = app
        .post(
            "/api/v1/auth/password-reset/confirm",
            json!({"token": token, "new_password": NEW_PASSWORD}),
            None,
        )
        .await;
    assert_eq!(answer.code(), "invalid_one_time_token");
    assert_eq!(app.login(&email, PASSWORD).await.status, StatusCode::OK);
}
