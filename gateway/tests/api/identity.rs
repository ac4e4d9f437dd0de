//! Identity at the edge: tokens verified, identity headers never spoofable.

use crate::helpers::*;
use proto::auth::AccessClaims;
use reqwest::StatusCode;
use serde_json::json;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn claims_of(app: &TestApp, token: &str) -> AccessClaims {
    let answer = app
        .post(
            "/api/v1/auth/introspect",
            Some(token),
            json!({ "token": token }),
        )
        .await;
    serde_json::from_value(answer.body).expect("claims of an active token")
}

#[tokio::test]
async fn a_forged_user_id_is_overwritten_with_the_verified_one() {
    let app = spawn_app().await;
    let session = app.register("forge@example.com").await;
    let answer = Answer::from(
        app.client
            .get(app.url("/api/v1/users/me"))
            .bearer_auth(&session.access_token)
            .header("x-user-id", "00000000-0000-0000-0000-000000000000")
            .header("X-User-Email", "admin@example.com")
            .header("x-user-role", "admin")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let headers = &answer.body["headers"];
    assert_eq!(headers["x-user-id"], session.user_id.as_str());
    assert_eq!(headers["x-user-email"], "forge@example.com");
    assert!(headers.get("x-user-role").is_none(), "{headers}");
}

#[tokio::test]
async fn a_public_route_never_passes_a_client_identity_on() {
    let app = spawn_app().await;
    let answer = Answer::from(
        app.client
            .post(app.url("/api/v1/meetings/abc/join"))
            .header("x-user-id", "00000000-0000-0000-0000-000000000000")
            .json(&json!({ "display_name": "Guest" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert!(answer.body["headers"].get("x-user-id").is_none());

    // With a valid token the guest route learns who the caller is.
    let session = app.register("guest@example.com").await;
    let answer = app
        .post(
            "/api/v1/meetings/abc/join",
            Some(&session.access_token),
            json!({}),
        )
        .await;
    assert_eq!(
        answer.body["headers"]["x-user-id"],
        session.user_id.as_str()
    );

    // A bad token on a public route goes on untouched, without an identity.
    let answer = app
        .post("/api/v1/meetings/abc/join", Some("not.a.token"), json!({}))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body["headers"]["authorization"],
        "Bearer not.a.token"
    );
    assert!(answer.body["headers"].get("x-user-id").is_none());
}

#[tokio::test]
async fn protected_routes_need_a_token() {
    let app = spawn_app().await;
    for (path, token) in [
        ("/api/v1/users/me", None),
        ("/api/v1/meetings", Some("garbage")),
        ("/api/v1/analytics/x", Some("a.b.c")),
        ("/api/v1/auth/logout", None),
    ] {
        let answer = app.get(path, token).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(answer.code(), "unauthenticated", "{path}");
    }
    let basic = Answer::from(
        app.client
            .get(app.url("/api/v1/users/me"))
            .header("authorization", "Basic dXNlcjpwYXNz")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(basic.code(), "unauthenticated");
}

#[tokio::test]
async fn an_expired_token_is_refused_as_expired() {
    let app = spawn_app().await;
    let session = app.register("expired@example.com").await;
    let mut claims = claims_of(&app, &session.access_token).await;
    claims.iat = now() - 3600;
    claims.nbf = claims.iat;
    claims.exp = now() - 10;
    let expired = app.auth.sign(&claims).await;
    let answer = app.get("/api/v1/users/me", Some(&expired)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "token_expired");
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_refused_even_with_the_right_kid() {
    use aws_lc_rs::signature::Ed25519KeyPair;
    let app = spawn_app().await;
    let session = app.register("foreign@example.com").await;
    let claims = claims_of(&app, &session.access_token).await;
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref());
    for kid in [app.auth.signing_kid().await, "made-up".to_owned()] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        let forged = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let answer = app.get("/api/v1/users/me", Some(&forged)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{kid}");
        assert_eq!(answer.code(), "unauthenticated", "{kid}");
    }
}

async fn a_signed_out_token_is_refused_as_revoked(mode: Mode) {
    let app = spawn_app_with(mode, |_| {}).await;
    let session = app.register("revoked@example.com").await;
    let token = Some(session.access_token.as_str());
    assert_eq!(
        app.get("/api/v1/users/me", token).await.status,
        StatusCode::OK
    );
    let out = app.post("/api/v1/auth/logout", token, json!({})).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{:?}", out.body);
    let answer = app.get("/api/v1/users/me", token).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "token_revoked");
}

#[tokio::test]
async fn a_signed_out_token_is_refused_as_revoked_by_introspection() {
    a_signed_out_token_is_refused_as_revoked(Mode::Embedded).await;
}

#[tokio::test]
async fn a_signed_out_token_is_refused_as_revoked_from_the_redis_cache() {
    a_signed_out_token_is_refused_as_revoked(Mode::Redis).await;
}
