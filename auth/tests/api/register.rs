use crate::helpers::{PASSWORD, TestApp, unique_email};
use crate::on_both_backends;
use reqwest::StatusCode;

on_both_backends!(
    registering_returns_201_with_tokens_and_the_user,
    registering_normalises_the_email,
    registering_the_same_email_twice_is_email_taken,
    registering_with_a_weak_password_is_weak_password,
    registering_with_an_invalid_email_or_name_is_invalid_field,
    registering_announces_the_user_and_a_verification_link_in_the_outbox,
    registering_many_accounts_from_one_address_is_throttled,
);

async fn registering_returns_201_with_tokens_and_the_user(app: TestApp) {
    let email = unique_email();
    let answer = app.register(&email, PASSWORD, "  Ada Lovelace ").await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["expires_in"], 900);
    assert_eq!(answer.str("access_token").split('.').count(), 3);
    assert_eq!(answer.str("refresh_token").len(), 43);
    let user = &answer.body["user"];
    assert_eq!(user["email"], email.as_str());
    assert_eq!(user["display_name"], "Ada Lovelace");
    assert_eq!(user["email_verified"], false);
    assert!(user["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    assert!(user.get("password_hash").is_none());
    assert!(app.is_active(&answer.str("access_token")).await);
}

async fn registering_normalises_the_email(app: TestApp) {
    let local = uuid::Uuid::new_v4().simple().to_string();
    let answer = app
        .register(&format!("  {local}@Example.COM "), PASSWORD, "Ada")
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.body["user"]["email"], format!("{local}@example.com"));
    let login = app
        .login(&format!("{}@EXAMPLE.com", local.to_uppercase()), PASSWORD)
        .await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
}

async fn registering_the_same_email_twice_is_email_taken(app: TestApp) {
    let (email, _) = app.new_account().await;
    let again = app
        .register(&email.to_uppercase(), "another good passphrase", "Other")
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "email_taken");
}

async fn registering_with_a_weak_password_is_weak_password(app: TestApp) {
    for weak in ["short", "password123", "12345678", &"x".repeat(129)] {
        let answer = app.register(&unique_email(), weak, "Ada").await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{weak}");
        assert_eq!(answer.code(), "weak_password", "{weak}");
    }
}

async fn registering_with_an_invalid_email_or_name_is_invalid_field(app: TestApp) {
    for email in ["", "no-at-sign", "a@b", "a b@example.com", "x@[127.0.0.1]"] {
        let answer = app.register(email, PASSWORD, "Ada").await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{email}");
        assert_eq!(answer.code(), "invalid_field");
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("email:")
        );
    }
    for name in ["", "   ", "a\u{7}b", &"n".repeat(101)] {
        let answer = app.register(&unique_email(), PASSWORD, name).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{name:?}");
        assert_eq!(answer.code(), "invalid_field");
    }
}

async fn registering_announces_the_user_and_a_verification_link_in_the_outbox(app: TestApp) {
    let (email, answer) = app.new_account().await;
    let registered = app.outbox("user.registered").await;
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0]["user_id"], answer.body["user"]["id"]);
    assert_eq!(registered[0]["email"], email.as_str());
    let token = app
        .last_token_for("auth.email_verification_requested", &email)
        .await;
    assert_eq!(token.len(), 43);
    // The stored one-time token is a hash, never the value itself.
    let stored: i64 = sqlx::Row::try_get(
        &sqlx::query("SELECT COUNT(*) AS n FROM one_time_tokens WHERE token_hash = $1")
            .bind(&token)
            .fetch_one(app.db.pool())
            .await
            .unwrap(),
        "n",
    )
    .unwrap();
    assert_eq!(stored, 0);
}

async fn registering_many_accounts_from_one_address_is_throttled(app: TestApp) {
    let register_from = |ip: &'static str| {
        let request = app
            .client
            .post(app.url("/api/v1/auth/register"))
            .header("x-forwarded-for", ip)
            .json(&serde_json::json!({
                "email": unique_email(),
                "password": PASSWORD,
                "display_name": "Bot",
            }));
        app.send(request)
    };
    for i in 0..21 {
        assert_eq!(
            register_from("198.51.100.9").await.status,
            StatusCode::CREATED,
            "account {i}"
        );
    }
    let blocked = register_from("198.51.100.9").await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(blocked.code(), "rate_limited");
    assert!(blocked.headers.contains_key("retry-after"));
    assert_eq!(
        register_from("198.51.100.10").await.status,
        StatusCode::CREATED
    );
}
