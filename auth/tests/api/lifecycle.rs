use crate::helpers::{PASSWORD, TestApp};
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::json;

on_both_backends!(
    the_whole_lifecycle_from_register_to_sign_out_works,
    refreshing_rotates_the_refresh_token,
    reusing_a_refresh_token_revokes_the_whole_family,
    an_unknown_or_garbage_refresh_token_is_invalid_refresh_token,
    logout_revokes_the_access_token_and_the_refresh_token,
    logout_all_signs_out_every_session,
    protected_endpoints_need_a_bearer_token,
);

async fn the_whole_lifecycle_from_register_to_sign_out_works(app: TestApp) {
    let (email, registered) = app.new_account().await;
    // verify
    let token = app
        .last_token_for("auth.email_verification_requested", &email)
        .await;
    let verified = app
        .post("/api/v1/auth/verify-email", json!({"token": token}), None)
        .await;
    assert_eq!(verified.status, StatusCode::OK, "{:?}", verified.body);
    assert_eq!(verified.body["user"]["email_verified"], true);
    // sign in: the new access token says verified
    let login = app.login(&email, PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.body["user"]["email_verified"], true);
    let claims = crate::helpers::claims_of(&login.str("access_token"));
    assert!(claims.email_verified);
    assert_eq!(
        claims.sub.to_string(),
        registered.body["user"]["id"].as_str().unwrap()
    );
    // refresh, rotate
    let first = app.refresh(&login.str("refresh_token")).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let second = app.refresh(&first.str("refresh_token")).await;
    assert_eq!(second.status, StatusCode::OK);
    // reuse detected → family revoked
    let reuse = app.refresh(&first.str("refresh_token")).await;
    assert_eq!(reuse.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reuse.code(), "invalid_refresh_token");
    assert_eq!(
        app.refresh(&second.str("refresh_token")).await.code(),
        "invalid_refresh_token"
    );
    assert!(!app.is_active(&second.str("access_token")).await);
    // the registration session is untouched; sign out → token rejected
    let access = registered.str("access_token");
    assert!(app.is_active(&access).await);
    assert_eq!(app.logout(&access).await.status, StatusCode::NO_CONTENT);
    let again = app.logout(&access).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(again.code(), "token_revoked");
    assert!(!app.is_active(&access).await);
}

async fn refreshing_rotates_the_refresh_token(app: TestApp) {
    let (_, registered) = app.new_account().await;
    let refreshed = app.refresh(&registered.str("refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    assert_eq!(refreshed.body["token_type"], "Bearer");
    assert_eq!(refreshed.body["user"], registered.body["user"]);
    assert_ne!(
        refreshed.str("refresh_token"),
        registered.str("refresh_token")
    );
    let old = crate::helpers::claims_of(&registered.str("access_token"));
    let new = crate::helpers::claims_of(&refreshed.str("access_token"));
    assert_eq!(old.sid, new.sid, "same session");
    assert_ne!(old.jti, new.jti);
    assert!(app.is_active(&refreshed.str("access_token")).await);
}

async fn reusing_a_refresh_token_revokes_the_whole_family(app: TestApp) {
    let (_, registered) = app.new_account().await;
    let stolen = registered.str("refresh_token");
    let legit = app.refresh(&stolen).await;
    assert_eq!(legit.status, StatusCode::OK);
    // The thief replays the old token: refused, and the legitimate chain dies too.
    let replay = app.refresh(&stolen).await;
    assert_eq!(replay.code(), "invalid_refresh_token");
    let next = app.refresh(&legit.str("refresh_token")).await;
    assert_eq!(next.status, StatusCode::UNAUTHORIZED);
    assert_eq!(next.code(), "invalid_refresh_token");
    // Access tokens of the family are revoked as well.
    assert!(!app.is_active(&legit.str("access_token")).await);
    assert!(!app.is_active(&registered.str("access_token")).await);
}

async fn an_unknown_or_garbage_refresh_token_is_invalid_refresh_token(app: TestApp) {
    for token in ["", "nope", "' OR 1=1 --", &"x".repeat(10_000)] {
        let answer = app.refresh(token).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token}");
        assert_eq!(answer.code(), "invalid_refresh_token");
    }
}

async fn logout_revokes_the_access_token_and_the_refresh_token(app: TestApp) {
    let (email, registered) = app.new_account().await;
    let other = app.login(&email, PASSWORD).await;
    let access = registered.str("access_token");
    assert_eq!(app.logout(&access).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.refresh(&registered.str("refresh_token")).await.code(),
        "invalid_refresh_token"
    );
    // Other sessions are untouched.
    assert!(app.is_active(&other.str("access_token")).await);
    assert_eq!(
        app.refresh(&other.str("refresh_token")).await.status,
        StatusCode::OK
    );
}

async fn logout_all_signs_out_every_session(app: TestApp) {
    let (email, registered) = app.new_account().await;
    let phone = app.login(&email, PASSWORD).await;
    let laptop = app.login(&email, PASSWORD).await;
    let answer = app.logout_all(&phone.str("access_token")).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    for session in [&registered, &phone, &laptop] {
        assert!(!app.is_active(&session.str("access_token")).await);
        assert_eq!(
            app.refresh(&session.str("refresh_token")).await.code(),
            "invalid_refresh_token"
        );
    }
    let revoked = app.logout(&laptop.str("access_token")).await;
    assert_eq!(revoked.code(), "token_revoked");
    // Signing in again works.
    assert_eq!(app.login(&email, PASSWORD).await.status, StatusCode::OK);
}

async fn protected_endpoints_need_a_bearer_token(app: TestApp) {
    for path in [
        "/api/v1/auth/logout",
        "/api/v1/auth/logout-all",
        "/api/v1/auth/password",
        "/api/v1/auth/verify-email/resend",
    ] {
        let none = app.post(path, json!({}), None).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(none.code(), "unauthenticated");
        let basic = app
            .send(
                app.client
                    .post(app.url(path))
                    .header("authorization", "Basic dXNlcjpwYXNz")
                    .json(&json!({})),
            )
            .await;
        assert_eq!(basic.code(), "unauthenticated", "{path}");
        let junk = app.post(path, json!({}), Some("not.a.jwt")).await;
        assert_eq!(junk.code(), "unauthenticated", "{path}");
    }
}
