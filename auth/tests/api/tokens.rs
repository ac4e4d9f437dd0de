//! Hostile access tokens: every one is refused, by introspection and by a
//! protected endpoint, with a stable code.

use crate::helpers::{TestApp, b64, claims_like, claims_of, now_secs, sign};
use crate::on_both_backends;
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proto::auth::AccessClaims;
use reqwest::StatusCode;
use serde_json::json;

on_both_backends!(
    a_token_signed_with_the_service_key_is_accepted,
    alg_none_is_refused,
    hs256_signed_with_the_public_key_is_refused,
    an_expired_token_is_token_expired,
    a_token_expired_within_the_leeway_still_passes_but_not_beyond_it,
    a_not_yet_valid_token_is_refused,
    wrong_audience_or_issuer_is_refused,
    an_unknown_kid_is_refused,
    a_retired_kid_is_refused,
    a_bit_flipped_signature_is_refused,
    tampered_claims_are_refused,
);

/// A real token's claims (from a fresh account) and the service's signing key.
async fn setup(app: &TestApp) -> (AccessClaims, String, Vec<u8>) {
    let (_, registered) = app.new_account().await;
    let claims = claims_of(&registered.str("access_token"));
    let (kid, der) = app.signing_key().await;
    (claims, kid, der)
}

/// Refused by introspection, and by `logout` with `code`.
async fn assert_refused(app: &TestApp, token: &str, code: &str) {
    assert!(
        !app.is_active(token).await,
        "introspection accepted {token}"
    );
    let answer = app.logout(token).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token}");
    assert_eq!(answer.code(), code, "{token}");
}

async fn a_token_signed_with_the_service_key_is_accepted(app: TestApp) {
    let (claims, kid, der) = setup(&app).await;
    let token = sign(
        &claims_like(&claims, |c| c.jti = uuid::Uuid::now_v7()),
        &kid,
        &der,
    );
    assert!(app.is_active(&token).await);
    assert_eq!(app.logout(&token).await.status, StatusCode::NO_CONTENT);
}

async fn alg_none_is_refused(app: TestApp) {
    let (claims, kid, _) = setup(&app).await;
    let payload = b64(&serde_json::to_value(&claims).unwrap());
    for header in [
        json!({"alg": "none", "typ": "JWT", "kid": kid}),
        json!({"alg": "None", "kid": kid}),
        json!({"alg": "NONE"}),
    ] {
        for signature in ["", "AAAA"] {
            let token = format!("{}.{payload}.{signature}", b64(&header));
            assert_refused(&app, &token, "unauthenticated").await;
        }
    }
}

async fn hs256_signed_with_the_public_key_is_refused(app: TestApp) {
    let (claims, _, _) = setup(&app).await;
    let (kid, public) = app.public_key().await;
    let x = URL_SAFE_NO_PAD.encode(&public);
    for secret in [public.clone(), x.into_bytes()] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_refused(&app, &token, "unauthenticated").await;
    }
}

async fn an_expired_token_is_token_expired(app: TestApp) {
    let (claims, kid, der) = setup(&app).await;
    let now = now_secs();
    let token = sign(
        &claims_like(&claims, |c| {
            c.iat = now - 1000;
            c.nbf = now - 1000;
            c.exp = now - 60;
        }),
        &kid,
        &der,
    );
    assert_refused(&app, &token, "token_expired").await;
}

async fn a_token_expired_within_the_leeway_still_passes_but_not_beyond_it(app: TestApp) {
    let (claims, kid, der) = setup(&app).await;
    let now = now_secs();
    let edit = |exp: u64| {
        claims_like(&claims, |c| {
            c.iat = now - 900;
            c.nbf = now - 900;
            c.exp = exp;
            c.jti = uuid::Uuid::now_v7();
        })
    };
    assert!(app.is_active(&sign(&edit(now - 1), &kid, &der)).await);
    assert_refused(&app, &sign(&edit(now - 30), &kid, &der), "token_expired").await;
}

async fn a_not_yet_valid_token_is_refused(app: TestApp) {
    let (claims, kid, der) = setup(&app).await;
    let now = now_secs();
    let token = sign(
        &claims_like(&claims, |c| {
            c.iat = now + 60;
            c.nbf = now + 60;
            c.exp = now + 960;
        }),
        &kid,
        &der,
    );
    assert_refused(&app, &token, "unauthenticated").await;
}

async fn wrong_audience_or_issuer_is_refused(app: TestApp) {
    let (claims, kid, der) = setup(&app).await;
    let wrong_aud = sign(
        &claims_like(&claims, |c| c.aud = "someone-else".into()),
        &kid,
        &der,
    );
    assert_refused(&app, &wrong_aud, "unauthenticated").await;
    let wrong_iss = sign(
        &claims_like(&claims, |c| c.iss = "https://evil.example".into()),
        &kid,
        &der,
    );
    assert_refused(&app, &wrong_iss, "unauthenticated").await;
}

async fn an_unknown_kid_is_refused(app: TestApp) {
    let (claims, kid, der) = setup(&app).await;
    // The right key under a made-up kid, and a made-up key under the right kid.
    assert_refused(&app, &sign(&claims, "no-such-kid", &der), "unauthenticated").await;
    let other = Ed25519KeyPair::generate_pkcs8v1(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    assert_refused(
        &app,
        &sign(&claims, &kid, other.as_ref()),
        "unauthenticated",
    )
    .await;
    // No kid at all.
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(&der),
    )
    .unwrap();
    assert_refused(&app, &token, "unauthenticated").await;
}

async fn a_retired_kid_is_refused(app: TestApp) {
    let (claims, _, _) = setup(&app).await;
    // A key that was ours but retired a minute ago: no longer published, refused.
    let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let now_ms = i64::try_from(now_secs()).unwrap() * 1000;
    sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at, retire_at) \
         VALUES ('retired', 'EdDSA', $1, 'AAAA', $2, $3)",
    )
    .bind(base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref()))
    .bind(now_ms - 86_400_000)
    .bind(now_ms - 60_000)
    .execute(app.db.pool())
    .await
    .unwrap();
    let token = sign(&claims, "retired", pkcs8.as_ref());
    assert_refused(&app, &token, "unauthenticated").await;
    let jwks = app.get("/api/v1/auth/jwks").await;
    assert!(
        jwks.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kid"] != "retired")
    );
}

async fn a_bit_flipped_signature_is_refused(app: TestApp) {
    let (_, registered) = app.new_account().await;
    let token = registered.str("access_token");
    let (head, signature) = token.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
    for bit in [0usize, 7, 100, 511] {
        raw[bit / 8] ^= 1 << (bit % 8);
        let flipped = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_refused(&app, &flipped, "unauthenticated").await;
        raw[bit / 8] ^= 1 << (bit % 8);
    }
    // Truncated and extended signatures too.
    assert_refused(
        &app,
        &format!("{head}.{}", URL_SAFE_NO_PAD.encode(&raw[..63])),
        "unauthenticated",
    )
    .await;
    assert_refused(&app, &format!("{token}AA"), "unauthenticated").await;
    assert!(app.is_active(&token).await, "the original still verifies");
}

async fn tampered_claims_are_refused(app: TestApp) {
    let (_, registered) = app.new_account().await;
    let token = registered.str("access_token");
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = claims_of(&token);
    claims.sub = proto::ids::UserId::new();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_value(&claims).unwrap()),
        parts[2]
    );
    assert_refused(&app, &forged, "unauthenticated").await;
    for junk in ["", ".", "..", "a.b.c", "a.b.c.d", &"A".repeat(20_000)] {
        assert!(!app.is_active(junk).await, "{junk}");
    }
}
