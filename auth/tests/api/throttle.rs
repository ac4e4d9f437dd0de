//! The throttle's two backends pass one suite; replicas sharing Redis share counts.

use crate::helpers::{Backend, PASSWORD, Storage, redis_url, spawn_app_on};
use auth::throttle::{Policy, Throttle};
use reqwest::StatusCode;
use servicekit::Secret;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn policy(forget_after: Duration) -> Policy {
    Policy {
        free: 2,
        base: Duration::from_millis(300),
        max: Duration::from_millis(1200),
        forget_after,
    }
}

/// One suite for both backends; `make` builds a throttle with a policy.
async fn suite(make: impl Fn(Policy) -> Throttle) {
    let throttle = make(policy(Duration::from_secs(60)));
    let key = "account:ada@example.com";
    let now = Instant::now;
    assert!(throttle.check(key, now()).await.is_ok());
    assert_eq!(throttle.fail(key, now()).await, None);
    assert_eq!(throttle.fail(key, now()).await, None);
    assert!(throttle.check(key, now()).await.is_ok());
    // Past the free failures, delays start and double, up to the maximum.
    assert_eq!(
        throttle.fail(key, now()).await,
        Some(Duration::from_millis(300))
    );
    let left = throttle.check(key, now()).await.unwrap_err();
    assert!(
        left > Duration::ZERO && left <= Duration::from_millis(300),
        "{left:?}"
    );
    assert!(
        throttle
            .check("account:other@example.com", now())
            .await
            .is_ok()
    );
    assert_eq!(
        throttle.fail(key, now()).await,
        Some(Duration::from_millis(600))
    );
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert!(throttle.check(key, now()).await.is_ok());
    assert_eq!(
        throttle.fail(key, now()).await,
        Some(Duration::from_millis(1200))
    );
    assert_eq!(
        throttle.fail(key, now()).await,
        Some(Duration::from_millis(1200))
    );
    // A success forgets everything.
    throttle.succeed(key).await;
    assert!(throttle.check(key, now()).await.is_ok());
    assert_eq!(throttle.fail(key, now()).await, None);

    // Failures are forgotten after a quiet spell.
    let forgetful = make(policy(Duration::from_millis(400)));
    for _ in 0..2 {
        assert_eq!(forgetful.fail(key, now()).await, None);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(forgetful.fail(key, now()).await, None);
}

#[tokio::test]
async fn the_memory_backend_passes_the_throttle_suite() {
    suite(|policy| {
        let throttle = Throttle::in_memory(policy);
        assert_eq!(throttle.backend(), "memory");
        throttle
    })
    .await;
}

#[tokio::test]
async fn the_redis_backend_passes_the_throttle_suite() {
    let conn = servicekit::backends::connect_redis(&Secret::new(redis_url()))
        .await
        .expect("the test Redis answers");
    let namespace = format!("auth:throttle:test:{}", uuid::Uuid::new_v4().simple());
    let made = std::sync::atomic::AtomicUsize::new(0);
    suite(|policy| {
        // Each throttle of the suite in its own kind, as the service's are.
        let kind = format!(
            "k{}",
            made.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let throttle = Throttle::in_redis(policy, conn.clone(), &namespace, &kind);
        assert_eq!(throttle.backend(), "redis");
        throttle
    })
    .await;
}

/// Five free failures, then the sixth blocks: spread over two replicas.
async fn fail_six_times_across(
    a: &crate::helpers::TestApp,
    b: &crate::helpers::TestApp,
    email: &str,
) {
    for (i, app) in [a, b, a, b, a, b].into_iter().enumerate() {
        let answer = app.login(email, "wrong wrong wrong").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_share_the_per_account_throttle() {
    let storage = Arc::new(Storage::new(Backend::Postgres));
    let a = spawn_app_on(storage.clone(), |_| {}).await;
    let b = spawn_app_on(storage, |_| {}).await;
    let (email, _) = a.new_account().await;
    fail_six_times_across(&a, &b, &email).await;
    // Three failures each, six in all: both replicas block the account.
    for app in [&a, &b] {
        let blocked = app.login(&email, PASSWORD).await;
        assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(blocked.code(), "rate_limited");
        assert_eq!(blocked.headers["retry-after"], "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_replica_counts_alone() {
    let storage = Arc::new(Storage::new(Backend::Sqlite));
    let a = spawn_app_on(storage.clone(), |_| {}).await;
    let b = spawn_app_on(storage, |_| {}).await;
    let (email, _) = a.new_account().await;
    fail_six_times_across(&a, &b, &email).await;
    // Three failures on each replica stay within each one's free five.
    assert_eq!(a.login(&email, PASSWORD).await.status, StatusCode::OK);
}
