use crate::helpers::TestApp;
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::json;

on_both_backends!(
    a_verification_link_verifies_the_email_once,
    a_wrong_or_expired_verification_link_is_refused,
    a_new_verification_link_can_be_asked_for_and_is_throttled,
);

async fn verify(app: &TestApp, token: &str) -> crate::helpers::Answer {
    app.post("/api/v1/auth/verify-email", json!({"token": token}), None)
        .await
}

async fn resend(app: &TestApp, access: &str) -> crate::helpers::Answer {
    app.post("/api/v1/auth/verify-email/resend", json!({}), Some(access))
        .await
}

async fn a_verification_link_verifies_the_email_once(app: TestApp) {
    let (email, _) = app.new_account().await;
    let token = app
        .last_token_for("auth.email_verification_requested", &email)
        .await;
    let answer = verify(&app, &token).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["user"]["email"], email.as_str());
    assert_eq!(answer.body["user"]["email_verified"], true);
    let again = verify(&app, &token).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.code(), "invalid_one_time_token");
    assert_eq!(app.outbox("user.email_verified").await.len(), 1);
}

async fn a_wrong_or_expired_verification_link_is_refused(app: TestApp) {
    let (email, _) = app.new_account().await;
    for token in ["", "x", "' OR '1'='1", &"y".repeat(100_000)] {
        assert_eq!(verify(&app, token).await.code(), "invalid_one_time_token");
    }
    let token = app
        .last_token_for("auth.email_verification_requested", &email)
        .await;
    sqlx::query("UPDATE one_time_tokens SET expires_at = 0")
        .execute(app.db.pool())
        .await
        .unwrap();
    assert_eq!(verify(&app, &token).await.code(), "invalid_one_time_token");
}

async fn a_new_verification_link_can_be_asked_for_and_is_throttled(app: TestApp) {
    let (email, registered) = app.new_account().await;
    let access = registered.str("access_token");
    for _ in 0..3 {
        assert_eq!(resend(&app, &access).await.status, StatusCode::ACCEPTED);
    }
    let throttled = resend(&app, &access).await;
    assert_eq!(
        throttled.status,
        StatusCode::ACCEPTED,
        "the fourth still goes"
    );
    let blocked = resend(&app, &access).await;
    assert_eq!(blocked.code(), "rate_limited");
    // Five links in all (registration + four); the newest works.
    let events = app.outbox("auth.email_verification_requested").await;
    assert_eq!(events.len(), 5);
    let token = app
        .last_token_for("auth.email_verification_requested", &email)
        .await;
    assert_eq!(verify(&app, &token).await.status, StatusCode::OK);
    let verified = app
        .post("/api/v1/auth/verify-email/resend", json!({}), Some(&access))
        .await;
    assert_eq!(verified.status, StatusCode::CONFLICT);
}
