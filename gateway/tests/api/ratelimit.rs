//! The rate limiter: one suite run against both backends (in-process and Redis),
//! the shared-budget concurrency test, and the limits as the gateway applies them.

use crate::helpers::*;
use gateway::ratelimit::{MemoryLimiter, Quota, RateLimiter, RedisLimiter};
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

async fn memory() -> Arc<dyn RateLimiter> {
    Arc::new(MemoryLimiter::new())
}

async fn redis_backed() -> Arc<dyn RateLimiter> {
    Arc::new(RedisLimiter::new(redis().await, random_prefix()))
}

/// Run each scenario `async fn name(limiter)` on both backends, as
/// `name::in_memory` and `name::in_redis`.
macro_rules! on_both_limiters {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn in_memory() {
                super::$name(super::memory().await).await
            }
            #[tokio::test]
            async fn in_redis() {
                super::$name(super::redis_backed().await).await
            }
        }
    )*};
}

on_both_limiters!(
    a_burst_passes_then_requests_are_refused,
    refused_requests_do_not_use_up_the_budget,
    the_budget_comes_back_at_the_configured_rate,
    each_key_has_its_own_budget,
    remaining_and_reset_describe_the_bucket,
);

async fn a_burst_passes_then_requests_are_refused(limiter: Arc<dyn RateLimiter>) {
    let quota = Quota::new(1, Duration::from_secs(60), 5);
    for i in 0..5 {
        let d = limiter.check("k", quota).await.unwrap();
        assert!(d.allowed, "request {i}");
        assert_eq!(d.limit, 5);
        assert_eq!(d.remaining, 4 - i);
    }
    let refused = limiter.check("k", quota).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    // One request per minute comes back: the next one is about a minute away.
    assert!(refused.retry_after > Duration::from_secs(55), "{refused:?}");
    assert!(
        refused.retry_after <= Duration::from_secs(60),
        "{refused:?}"
    );
}

async fn refused_requests_do_not_use_up_the_budget(limiter: Arc<dyn RateLimiter>) {
    let quota = Quota::new(10, Duration::from_secs(1), 2); // one per 100 ms
    assert!(limiter.check("k", quota).await.unwrap().allowed);
    assert!(limiter.check("k", quota).await.unwrap().allowed);
    for _ in 0..50 {
        assert!(!limiter.check("k", quota).await.unwrap().allowed);
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(limiter.check("k", quota).await.unwrap().allowed);
}

async fn the_budget_comes_back_at_the_configured_rate(limiter: Arc<dyn RateLimiter>) {
    let quota = Quota::new(20, Duration::from_secs(1), 1); // one per 50 ms, no burst
    let started = Instant::now();
    let mut allowed = 0u64;
    while started.elapsed() < Duration::from_millis(500) {
        if limiter.check("k", quota).await.unwrap().allowed {
            allowed += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // 1 at once + 20/s × 0.5 s = 11 at most; pacing slop may lose one or two.
    assert!((9..=11).contains(&allowed), "{allowed}");
}

async fn each_key_has_its_own_budget(limiter: Arc<dyn RateLimiter>) {
    let quota = Quota::new(1, Duration::from_secs(60), 1);
    assert!(limiter.check("ip:1.1.1.1", quota).await.unwrap().allowed);
    assert!(!limiter.check("ip:1.1.1.1", quota).await.unwrap().allowed);
    assert!(limiter.check("ip:2.2.2.2", quota).await.unwrap().allowed);
    assert!(limiter.check("user:1", quota).await.unwrap().allowed);
}

async fn remaining_and_reset_describe_the_bucket(limiter: Arc<dyn RateLimiter>) {
    let quota = Quota::new(1, Duration::from_secs(10), 3);
    let first = limiter.check("k", quota).await.unwrap();
    assert_eq!(first.remaining, 2);
    // Full again one emission interval after one request.
    assert!(first.reset <= Duration::from_secs(10) && first.reset > Duration::from_secs(9));
    let second = limiter.check("k", quota).await.unwrap();
    assert_eq!(second.remaining, 1);
    assert!(second.reset > Duration::from_secs(19), "{second:?}");
}

/// Three gateway limiters on one Redis, 64 clients hammering one key: what passes
/// stays within burst + rate × time, and reaches at least 95% of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_sharing_redis_hold_one_budget_under_64_concurrent_clients() {
    let prefix = random_prefix();
    let mut limiters: Vec<Arc<dyn RateLimiter>> = Vec::new();
    for _ in 0..3 {
        limiters.push(Arc::new(RedisLimiter::new(redis().await, prefix.clone())));
    }
    let quota = Quota::new(200, Duration::from_secs(1), 50);
    let allowed = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_secs(3);
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..64 {
        let limiter = limiters[client % 3].clone();
        let allowed = allowed.clone();
        clients.push(tokio::spawn(async move {
            while started.elapsed() < run_for {
                if limiter.check("shared", quota).await.unwrap().allowed {
                    allowed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = allowed.load(Ordering::Relaxed) as f64;
    let budget_upper = 50.0 + 200.0 * elapsed;
    let budget_lower = 50.0 + 200.0 * run_for.as_secs_f64();
    assert!(allowed <= budget_upper, "{allowed} > {budget_upper}");
    assert!(
        allowed >= 0.95 * budget_lower,
        "{allowed} < 95% of {budget_lower}"
    );
}

#[tokio::test]
async fn the_gateway_answers_429_with_rate_limit_headers_per_address() {
    let app = spawn_app_with(Mode::Embedded, |edge| {
        edge.per_ip = Quota::parse("1/m,3").unwrap();
    })
    .await;
    for remaining in ["2", "1", "0"] {
        let answer = app.get("/api/v1/auth/jwks", None).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("ratelimit-limit"), Some("3"));
        assert_eq!(answer.header("ratelimit-remaining"), Some(remaining));
    }
    let refused = app.get("/api/v1/auth/jwks", None).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.code(), "rate_limited");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((55..=60).contains(&retry), "{retry}");
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    // The web client is not rate-limited.
    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
}

#[tokio::test]
async fn sign_in_and_sign_up_have_a_stricter_budget_kept_in_redis() {
    // Sign-in and sign-up draw from one per-address budget, kept in Redis.
    let tweak = |edge: &mut gateway::EdgeConfig| {
        edge.credentials = Quota::parse("1/m,2").unwrap();
    };
    let app = spawn_app_with(Mode::Redis, tweak).await;
    let sign_in = json!({"email": "nobody@example.com", "password": "wrong password here"});
    let first = app.post("/api/v1/auth/login", None, sign_in.clone()).await;
    assert_eq!(first.status, StatusCode::UNAUTHORIZED, "{:?}", first.body);
    let second = app.post("/api/v1/auth/register", None, json!({})).await;
    assert_ne!(second.status, StatusCode::TOO_MANY_REQUESTS);
    let third = app.post("/api/v1/auth/login", None, sign_in).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.code(), "rate_limited");
    // Other API calls still pass.
    assert_eq!(
        app.get("/api/v1/auth/jwks", None).await.status,
        StatusCode::OK
    );
}

async fn each_user_has_a_budget_of_their_own(mode: Mode) {
    let app = spawn_app_with(mode, |edge| {
        edge.per_user = Quota::parse("1/m,2").unwrap();
    })
    .await;
    let ada = app.register("ada@example.com").await;
    let bob = app.register("bob@example.com").await;
    let ada_token = Some(ada.access_token.as_str());
    assert_eq!(
        app.get("/api/v1/users/me", ada_token).await.status,
        StatusCode::OK
    );
    let second = app.get("/api/v1/users/me", ada_token).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.header("ratelimit-remaining"), Some("0"));
    let refused = app.get("/api/v1/users/me", ada_token).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.code(), "rate_limited");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        app.get("/api/v1/users/me", Some(&bob.access_token))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn each_user_has_a_budget_of_their_own_in_process() {
    each_user_has_a_budget_of_their_own(Mode::Embedded).await;
}

#[tokio::test]
async fn each_user_has_a_budget_of_their_own_in_redis() {
    // Redis mode checks the address, the revocation and the user in one script.
    each_user_has_a_budget_of_their_own(Mode::Redis).await;
}

#[tokio::test]
async fn with_redis_good_and_bogus_tokens_alike_count_against_the_address() {
    let app = spawn_app_with(Mode::Redis, |edge| {
        edge.per_ip = Quota::parse("1/m,4").unwrap();
    })
    .await;
    // The sign-up is the first request from this address.
    let ada = app.register("ada@example.com").await;
    let good = app.get("/api/v1/users/me", Some(&ada.access_token)).await;
    assert_eq!(good.status, StatusCode::OK);
    assert_eq!(good.header("ratelimit-remaining"), Some("2"));
    let forged = format!("{}x", ada.access_token);
    let bogus = app.get("/api/v1/users/me", Some(&forged)).await;
    assert_eq!(bogus.code(), "unauthenticated");
    assert_eq!(
        app.get("/api/v1/users/me", Some(&ada.access_token))
            .await
            .status,
        StatusCode::OK
    );
    // The budget (4) is spent: good and bogus tokens are refused alike.
    for token in [ada.access_token.as_str(), forged.as_str()] {
        let refused = app.get("/api/v1/users/me", Some(token)).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{token}");
        assert_eq!(refused.code(), "rate_limited");
    }
}
