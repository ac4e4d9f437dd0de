//! Several instances behind one upstream: balancing, passive health, failover.
//! The instances are the real auth service, twice, on one database.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

fn instance_states(health: &serde_json::Value, upstream: &str) -> Vec<(String, String)> {
    health["upstreams"][upstream]["instances"]
        .as_array()
        .expect("instances are listed")
        .iter()
        .map(|i| {
            (
                i["address"].as_str().unwrap().to_owned(),
                i["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn two_instances_behind_one_upstream_both_receive_traffic() {
    let first = Auth::start(None).await;
    let second = first.twin().await;
    let urls = format!("{},{}", first.url(), second.url());
    let app = spawn_app_with_auth(Mode::Embedded, first, &urls, |_| {}).await;

    for _ in 0..20 {
        let answer = app.get("/api/v1/auth/jwks", None).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let (on_first, on_second) = (app.auth.jwks_served().await, second.jwks_served().await);
    assert!(
        on_first >= 5 && on_second >= 5,
        "both instances serve: {on_first} and {on_second}"
    );

    let health = app.upstream_health().await;
    assert_eq!(
        instance_states(&health, "auth"),
        [
            (app.auth.addr.to_string(), "up".to_owned()),
            (second.addr.to_string(), "up".to_owned())
        ],
        "{health}"
    );
    assert_eq!(health["upstreams"]["auth"]["breaker"], "closed");

    let metrics = app.metrics().await;
    for addr in [app.auth.addr, second.addr] {
        assert!(
            metrics.lines().any(|line| line
                .starts_with("meetease_gateway_upstream_requests_total{")
                && line.contains(&format!("instance=\"{addr}\""))),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn killing_one_instance_ejects_it_without_failed_requests_and_a_restart_brings_it_back() {
    let first = Auth::start(None).await;
    let second = first.twin().await;
    let urls = format!("{},{}", first.url(), second.url());
    // The instance killed is the first one: the gateway also reads auth's JWKS and
    // (without Redis) asks for revocations there, and must fail over for those too.
    let app = spawn_app_with_auth(Mode::Embedded, second, &urls, |edge| {
        // The load below is as fast as the machine goes: keep the limiter out of it.
        edge.per_ip = gateway::Quota::parse("1000000/s,1000000").unwrap();
        edge.breaker.open_for = Duration::from_secs(60);
    })
    .await;
    let mut first = first;
    let session = app.register("twins@example.com").await;
    let token = Some(session.access_token.as_str());
    assert_eq!(
        app.get("/api/v1/users/me", token).await.status,
        StatusCode::OK
    );

    // Idempotent requests in flight while the instance dies: each one that meets
    // the dead instance is retried on the other.
    let load = (0..4)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/api/v1/auth/jwks");
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let until = tokio::time::Instant::now() + Duration::from_millis(800);
                while tokio::time::Instant::now() < until {
                    let response = client.get(&url).send().await.expect("the gateway answers");
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    statuses.push((status, body));
                }
                statuses
            })
        })
        .collect::<Vec<_>>();
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.kill().await;
    let mut total = 0;
    for task in load {
        let statuses = task.await.unwrap();
        total += statuses.len();
        let failed: Vec<_> = statuses
            .iter()
            .filter(|(s, _)| *s != StatusCode::OK)
            .collect();
        assert!(
            failed.is_empty(),
            "every GET succeeds across the kill; these did not: {failed:?}"
        );
    }
    assert!(total > 20, "the load ran ({total} requests)");

    let health = app.wait_for_instance("auth", first.addr, "ejected").await;
    assert_eq!(health["upstreams"]["auth"]["breaker"], "closed", "{health}");
    assert_eq!(health["status"], "degraded");

    // Once ejected, nothing goes to it: not even requests that may not be retried
    // (a sign-in with a body), nor token checks (JWKS, introspection).
    for _ in 0..5 {
        let answer = app
            .post(
                "/api/v1/auth/login",
                None,
                json!({"email": "twins@example.com", "password": "wrong password, sorry"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{:?}", answer.body);
        assert_eq!(
            app.get("/api/v1/users/me", token).await.status,
            StatusCode::OK
        );
    }

    first.restart().await;
    app.wait_for_instance("auth", first.addr, "up").await;
    for _ in 0..20 {
        assert_eq!(
            app.get("/api/v1/auth/jwks", None).await.status,
            StatusCode::OK
        );
    }
    assert!(
        first.jwks_served().await >= 5,
        "the restarted instance takes its share again"
    );
    let health = app.upstream_health().await;
    assert_eq!(health["status"], "ok", "{health}");
}

#[tokio::test]
async fn when_every_instance_is_down_the_upstream_fails_fast() {
    let first = Auth::start(None).await;
    let mut second = first.twin().await;
    let urls = format!("{},{}", first.url(), second.url());
    let mut app = spawn_app_with_auth(Mode::Embedded, first, &urls, |edge| {
        edge.breaker.open_for = Duration::from_secs(60);
    })
    .await;
    second.kill().await;
    app.wait_for_instance("auth", second.addr, "ejected").await;
    assert_eq!(
        app.upstream_health().await["upstreams"]["auth"]["breaker"],
        "closed"
    );
    app.auth.kill().await;
    let health = app.wait_for_breaker("auth", "open").await;
    assert_eq!(
        instance_states(&health, "auth")
            .iter()
            .filter(|(_, state)| state == "ejected")
            .count(),
        2,
        "{health}"
    );
    let answer = app.get("/api/v1/auth/jwks", None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.code(), "upstream_unavailable");
    assert!(answer.header("retry-after").is_some());
}
