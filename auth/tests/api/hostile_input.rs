//! Malformed, oversized and adversarial requests: each a clean 4xx with a stable code.

use crate::helpers::{PASSWORD, TestApp, unique_email};
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::json;

on_both_backends!(
    sql_looking_input_is_just_data,
    one_megabyte_fields_are_refused_cleanly,
    a_body_over_the_limit_is_payload_too_large,
    a_non_utf8_body_is_malformed_body,
    malformed_json_and_wrong_types_are_malformed_body,
    a_body_without_a_json_content_type_is_unsupported_media_type,
    unknown_routes_and_methods_answer_json,
);

async fn sql_looking_input_is_just_data(app: TestApp) {
    let name = "Robert'); DROP TABLE users;--";
    let email = format!("o'hara+{}@example.com", uuid::Uuid::new_v4().simple());
    let answer = app.register(&email, PASSWORD, name).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(answer.body["user"]["display_name"], name);
    for attempt in [
        "' OR '1'='1",
        "admin'--",
        "\" OR \"\"=\"",
        "1; DROP TABLE users",
    ] {
        let login = app.login(attempt, attempt).await;
        assert_eq!(login.status, StatusCode::UNAUTHORIZED, "{attempt}");
        assert_eq!(login.code(), "invalid_credentials");
        let login = app.login(&email, &format!("{PASSWORD}{attempt}")).await;
        assert_eq!(login.code(), "invalid_credentials");
    }
    assert_eq!(app.login(&email, PASSWORD).await.status, StatusCode::OK);
}

async fn one_megabyte_fields_are_refused_cleanly(app: TestApp) {
    let huge = "a".repeat(1_000_000);
    let register = app.register(&unique_email(), &huge, "Ada").await;
    assert_eq!(register.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(register.code(), "weak_password");
    let register = app
        .register(&format!("{huge}@example.com"), PASSWORD, "Ada")
        .await;
    assert_eq!(register.code(), "invalid_field");
    let register = app.register(&unique_email(), PASSWORD, &huge).await;
    assert_eq!(register.code(), "invalid_field");
    let (email, _) = app.new_account().await;
    let started = std::time::Instant::now();
    let login = app.login(&email, &huge).await;
    assert_eq!(login.code(), "invalid_credentials");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let login = app.login(&huge, PASSWORD).await;
    assert_eq!(login.code(), "invalid_credentials");
    assert_eq!(app.introspect(&huge).await.body["active"], false);
}

async fn a_body_over_the_limit_is_payload_too_large(app: TestApp) {
    let answer = app
        .register(&unique_email(), &"a".repeat(2 * 1024 * 1024), "Ada")
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "payload_too_large");
}

async fn a_non_utf8_body_is_malformed_body(app: TestApp) {
    let mut body = br#"{"email": "a@example.com", "password": ""#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    body.extend_from_slice(br#"", "display_name": "x"}"#);
    for path in ["/api/v1/auth/register", "/api/v1/auth/login"] {
        let answer = app
            .send(
                app.client
                    .post(app.url(path))
                    .header("content-type", "application/json")
                    .body(body.clone()),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(answer.code(), "malformed_body");
    }
}

async fn malformed_json_and_wrong_types_are_malformed_body(app: TestApp) {
    for body in [
        "",
        "{",
        "null",
        "[]",
        r#"{"email": 1, "password": "x"}"#,
        r#"{"email": "a@example.com"}"#,
        r#"{"email": "a@example.com", "password": ["x"]}"#,
    ] {
        let answer = app
            .send(
                app.client
                    .post(app.url("/api/v1/auth/login"))
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.code(), "malformed_body", "{body}");
    }
    let refresh = app
        .post("/api/v1/auth/refresh", json!({"refresh_token": 42}), None)
        .await;
    assert_eq!(refresh.code(), "malformed_body");
}

async fn a_body_without_a_json_content_type_is_unsupported_media_type(app: TestApp) {
    let answer = app
        .send(
            app.client
                .post(app.url("/api/v1/auth/login"))
                .header("content-type", "text/plain")
                .body(r#"{"email":"a@example.com","password":"x"}"#),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer.code(), "unsupported_media_type");
}

async fn unknown_routes_and_methods_answer_json(app: TestApp) {
    assert_eq!(app.get("/api/v1/auth/nope").await.code(), "not_found");
    assert_eq!(
        app.get("/api/v1/auth/login").await.code(),
        "method_not_allowed"
    );
}
