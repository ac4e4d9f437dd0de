//! Circuit breakers, timeouts and the concurrency cap.

use crate::helpers::*;
use reqwest::StatusCode;
use std::time::Duration;

#[tokio::test]
async fn killing_an_upstream_opens_its_breaker_and_restarting_it_closes_it() {
    let mut app = spawn_app().await;
    let session = app.register("breaker@example.com").await;
    let token = Some(session.access_token.as_str());
    assert_eq!(
        app.get("/api/v1/users/me", token).await.status,
        StatusCode::OK
    );

    let users = app.users.take().unwrap();
    let addr = users.stop().await;
    let health = app.wait_for_breaker("users", "open").await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(
        health["upstreams"]["users"]["instances"][0]["last_probe"]["ok"],
        false
    );
    assert_eq!(health["upstreams"]["auth"]["breaker"], "closed");

    // While open, calls fail fast with a stable code and a Retry-After.
    let answer = app.get("/api/v1/users/me", token).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.code(), "upstream_unavailable");
    assert!(answer.header("retry-after").is_some());
    // Other services are not affected.
    assert_eq!(
        app.get("/api/v1/meetings", token).await.status,
        StatusCode::OK
    );

    app.users = Some(Stub::restart("users", addr).await);
    let health = app.wait_for_breaker("users", "closed").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(
        app.get("/api/v1/users/me", token).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn requests_to_a_dead_upstream_open_its_breaker_without_waiting_for_probes() {
    let mut app = spawn_app_with(Mode::Embedded, |edge| {
        edge.probe_interval = Duration::from_secs(3600);
        edge.connect_retries = 0;
        edge.breaker.open_for = Duration::from_secs(60);
    })
    .await;
    let session = app.register("passive@example.com").await;
    let token = Some(session.access_token.as_str());
    app.users.take().unwrap().stop().await;
    for _ in 0..3 {
        let answer = app.get("/api/v1/users/me", token).await;
        assert_eq!(answer.code(), "upstream_unavailable");
    }
    let health = app.upstream_health().await;
    assert_eq!(health["upstreams"]["users"]["breaker"], "open", "{health}");
}

#[tokio::test]
async fn a_slow_upstream_times_out_with_504() {
    let app = spawn_app_with(Mode::Embedded, |edge| {
        edge.api_timeout = Duration::from_millis(300);
    })
    .await;
    let session = app.register("slow@example.com").await;
    let started = std::time::Instant::now();
    let answer = app
        .get("/api/v1/analytics/slow", Some(&session.access_token))
        .await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.code(), "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn beyond_the_concurrency_cap_requests_are_refused_at_once() {
    let app = spawn_app_with(Mode::Embedded, |edge| {
        edge.max_concurrent_requests = 1;
    })
    .await;
    let session = app.register("busy@example.com").await;
    let slow = {
        let client = app.client.clone();
        let url = app.url("/api/v1/analytics/slow");
        let token = session.access_token.clone();
        tokio::spawn(async move { client.get(url).bearer_auth(token).send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = app
        .get("/api/v1/analytics/x", Some(&session.access_token))
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.code(), "service_unavailable");
    assert_eq!(slow.await.unwrap().unwrap().status(), StatusCode::OK);
    // The permit is back once the slow answer is out.
    let answer = app
        .get("/api/v1/analytics/x", Some(&session.access_token))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}
