//! The published keys, their persistence, and verification from another service's
//! point of view (servicekit's verifier against the live JWKS, Redis revocations).

use crate::helpers::{PASSWORD, TestApp, spawn_app_on};
use crate::on_both_backends;
use reqwest::StatusCode;
use servicekit::tokens::{HttpJwks, RedisRevocations, TokenError, TokenVerifier, VerifierConfig};
use std::sync::Arc;
use std::time::Duration;

on_both_backends!(
    the_jwks_publishes_one_ed25519_signing_key,
    a_restart_keeps_the_signing_key_and_its_tokens_stay_valid,
    another_service_verifies_tokens_with_the_servicekit_verifier,
    a_key_rotated_by_another_replica_is_picked_up_on_an_unknown_kid,
);

async fn the_jwks_publishes_one_ed25519_signing_key(app: TestApp) {
    let jwks = app.get("/api/v1/auth/jwks").await;
    assert_eq!(jwks.status, StatusCode::OK);
    let keys = jwks.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert!(key["kid"].as_str().is_some_and(|kid| !kid.is_empty()));
    assert!(key.get("d").is_none(), "never the private part");
    let well_known = app.get("/.well-known/jwks.json").await;
    assert_eq!(well_known.body, jwks.body);
    // Access tokens name that key.
    let (_, registered) = app.new_account().await;
    let header = jsonwebtoken::decode_header(registered.str("access_token")).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), key["kid"].as_str());
}

async fn a_restart_keeps_the_signing_key_and_its_tokens_stay_valid(app: TestApp) {
    let (email, registered) = app.new_account().await;
    let jwks_before = app.get("/api/v1/auth/jwks").await.body;
    let storage = app.storage.clone();
    drop(app);
    let restarted = spawn_app_on(storage, |_| {}).await;
    assert_eq!(restarted.get("/api/v1/auth/jwks").await.body, jwks_before);
    assert!(restarted.is_active(&registered.str("access_token")).await);
    assert_eq!(
        restarted
            .refresh(&registered.str("refresh_token"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        restarted.login(&email, PASSWORD).await.status,
        StatusCode::OK
    );
}

async fn another_service_verifies_tokens_with_the_servicekit_verifier(app: TestApp) {
    let (_, registered) = app.new_account().await;
    let access = registered.str("access_token");
    let mut verifier =
        TokenVerifier::from_jwks_url(&app.url("/api/v1/auth/jwks"), VerifierConfig::default())
            .unwrap();
    if let Some(redis) = &app.redis {
        verifier = verifier.with_revocations(Arc::new(RedisRevocations(redis.clone())));
        // Auth seeds the completeness marker within a couple of seconds of start.
        wait_for_marker(redis).await;
    }
    let claims = verify_settled(&verifier, &access)
        .await
        .expect("a fresh token verifies");
    assert_eq!(
        claims.sub.to_string(),
        registered.body["user"]["id"].as_str().unwrap()
    );
    assert_eq!(verifier.verify("a.b.c").await, Err(TokenError::Invalid));
    let wrong_audience = TokenVerifier::from_jwks_url(
        &app.url("/api/v1/auth/jwks"),
        VerifierConfig {
            audience: "another-api".into(),
            ..VerifierConfig::default()
        },
    )
    .unwrap();
    assert_eq!(
        wrong_audience.verify(&access).await,
        Err(TokenError::Invalid)
    );
    assert_eq!(app.logout(&access).await.status, StatusCode::NO_CONTENT);
    if app.redis.is_some() {
        // Revocation is visible to other services through Redis.
        assert_eq!(
            verify_settled(&verifier, &access).await,
            Err(TokenError::Revoked)
        );
    }
}

/// Verify, retrying while the answer is `Unavailable` (another test may have just
/// emptied the revocation cache; auth re-seeds it within a few seconds).
async fn verify_settled(
    verifier: &TokenVerifier,
    token: &str,
) -> Result<proto::auth::AccessClaims, TokenError> {
    for _ in 0..60 {
        match verifier.verify(token).await {
            Err(TokenError::Unavailable) => tokio::time::sleep(Duration::from_millis(100)).await,
            other => return other,
        }
    }
    Err(TokenError::Unavailable)
}

/// Redis loses everything (a restart): nothing is un-revoked. Auth falls back to the
/// database at once, other services' Redis checks fail closed until auth re-seeds
/// the cache, then see the revocation again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_redis_cache_does_not_unrevoke_anything() {
    // A Redis database of its own: other tests' auth apps would re-seed the
    // shared cache from their own databases, which lack this token, and could
    // win every round of the re-seed this test waits for (it failed a CI run).
    let storage =
        crate::helpers::Storage::new(crate::helpers::Backend::Postgres).alone_on_redis(15);
    let app = crate::helpers::spawn_app_on(std::sync::Arc::new(storage), |_| {}).await;
    let redis = app.redis.clone().expect("the Postgres variant has Redis");
    wait_for_marker(&redis).await;
    let (_, registered) = app.new_account().await;
    let access = registered.str("access_token");
    assert_eq!(app.logout(&access).await.status, StatusCode::NO_CONTENT);
    let claims = crate::helpers::claims_of(&access);
    let mut conn = redis.clone();
    let verifier =
        TokenVerifier::from_jwks_url(&app.url("/api/v1/auth/jwks"), VerifierConfig::default())
            .unwrap()
            .with_revocations(Arc::new(RedisRevocations(redis.clone())));
    let mut checked = false;
    for _ in 0..20 {
        let _: () = redis::cmd("DEL")
            .arg(proto::auth::revocation_keys::COMPLETE)
            .arg(proto::auth::revocation_keys::jti(&claims.jti))
            .arg(proto::auth::revocation_keys::sid(&claims.sid))
            .query_async(&mut conn)
            .await
            .unwrap();
        // Auth itself answers from the database.
        assert!(!app.is_active(&access).await);
        // Another service never reads "not revoked" from the emptied cache.
        let verdict = verifier.verify(&access).await;
        // This app's own re-seed may land between the DEL and the check. Only a
        // verdict given while the marker was still gone says anything.
        let marker: i64 = redis::cmd("EXISTS")
            .arg(proto::auth::revocation_keys::COMPLETE)
            .query_async(&mut conn)
            .await
            .unwrap();
        if marker == 1 {
            continue;
        }
        match verdict {
            Err(TokenError::Unavailable) | Err(TokenError::Revoked) => {}
            other => panic!("an emptied cache must not pass the token: {other:?}"),
        }
        checked = true;
        break;
    }
    assert!(checked, "the re-seed always landed before the check");
    // After the re-seed, the revocation is back in Redis. (Should another auth ever
    // share this Redis database, it could set the marker first from a database of
    // its own; in a deployment every replica reads the same database. So empty the
    // marker again until this app's re-seed is the one that lands.)
    let mut back = 0;
    for _ in 0..10 {
        wait_for_marker(&redis).await;
        back = redis::cmd("EXISTS")
            .arg(proto::auth::revocation_keys::jti(&claims.jti))
            .query_async(&mut conn)
            .await
            .unwrap();
        if back == 1 {
            break;
        }
        let _: () = redis::cmd("DEL")
            .arg(proto::auth::revocation_keys::COMPLETE)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(back, 1, "auth re-seeded the revocation");
    assert_eq!(
        verify_settled(&verifier, &access).await,
        Err(TokenError::Revoked)
    );
}

async fn wait_for_marker(redis: &redis::aio::ConnectionManager) {
    let mut conn = redis.clone();
    for _ in 0..50 {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(proto::auth::revocation_keys::COMPLETE)
            .query_async(&mut conn)
            .await
            .unwrap();
        if exists == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("auth never marked the revocation cache complete");
}

async fn a_key_rotated_by_another_replica_is_picked_up_on_an_unknown_kid(app: TestApp) {
    let verifier = TokenVerifier::new(
        Arc::new(
            HttpJwks::new(&app.url("/api/v1/auth/jwks"))
                .unwrap()
                .with_intervals(Duration::from_secs(3600), Duration::ZERO),
        ),
        VerifierConfig::default(),
    );
    let (email, first) = app.new_account().await;
    verifier.verify(&first.str("access_token")).await.unwrap();
    // A second replica on the same database, due to rotate, makes a new key; the
    // old one stays published for the overlap.
    let replica = spawn_app_on(app.storage.clone(), |config| {
        config.tokens.key_rotation = Duration::ZERO;
    })
    .await;
    let second = replica.login(&email, PASSWORD).await;
    let old_kid = jsonwebtoken::decode_header(first.str("access_token"))
        .unwrap()
        .kid;
    let new_kid = jsonwebtoken::decode_header(second.str("access_token"))
        .unwrap()
        .kid;
    assert_ne!(old_kid, new_kid);
    assert_eq!(
        replica.get("/api/v1/auth/jwks").await.body["keys"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The verifier's cached set (from the first replica) lacks the new kid: it
    // re-fetches, the first replica re-reads its keys, and both tokens verify.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    verifier.verify(&second.str("access_token")).await.unwrap();
    verifier.verify(&first.str("access_token")).await.unwrap();
    // Each replica accepts the other's tokens.
    assert!(app.is_active(&second.str("access_token")).await);
    assert!(replica.is_active(&first.str("access_token")).await);
}
