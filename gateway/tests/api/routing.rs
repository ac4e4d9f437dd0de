//! Every route reaches its service; the web client, health and metrics.

use crate::helpers::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn every_api_prefix_reaches_its_service() {
    let app = spawn_app().await;
    let session = app.register("route@example.com").await;
    let token = Some(session.access_token.as_str());
    for (path, service) in [
        ("/api/v1/users/me", "users"),
        ("/api/v1/meetings", "signaling"),
        ("/api/v1/meetings/abc/history", "signaling"),
        ("/api/v1/notifications/unread", "notify"),
        ("/api/v1/analytics/meetings/1", "analytics"),
    ] {
        let answer = app.get(&format!("{path}?page=2"), token).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {:?}", answer.body);
        assert_eq!(answer.body["service"], service, "{path}");
        assert_eq!(answer.body["path"], path);
        assert_eq!(answer.body["query"], "page=2");
    }
    // Auth itself: the JWKS comes from the real service.
    let jwks = app.get("/api/v1/auth/jwks", None).await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert!(!jwks.body["keys"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn bodies_methods_and_the_authorization_header_go_through_unchanged() {
    let app = spawn_app().await;
    let session = app.register("body@example.com").await;
    let body = "x".repeat(200_000);
    let answer = Answer::from(
        app.client
            .put(app.url("/api/v1/users/me/preferences"))
            .bearer_auth(&session.access_token)
            .header("x-forwarded-for", "6.6.6.6")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["method"], "PUT");
    assert_eq!(answer.body["body_len"], 200_000);
    assert_eq!(
        answer.body["headers"]["authorization"],
        format!("Bearer {}", session.access_token)
    );
    // The client's own X-Forwarded-For is replaced with what the gateway saw.
    assert_eq!(answer.body["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(answer.header("ratelimit-limit").is_some());
    assert!(answer.header("ratelimit-remaining").is_some());
    assert!(answer.header("ratelimit-reset").is_some());
}

#[tokio::test]
async fn unknown_api_paths_are_json_404s() {
    let app = spawn_app().await;
    let answer = app.get("/api/v1/nothing", None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.code(), "not_found");
}

#[tokio::test]
async fn the_websocket_tunnel_carries_messages_both_ways() {
    let app = spawn_app().await;
    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/rtc?room=abc", app.addr))
            .await
            .expect("the handshake goes through the gateway");
    assert_eq!(response.status(), 101);
    let first = socket.next().await.unwrap().unwrap();
    assert_eq!(first, Message::Text("hello".into()));
    for i in 0..20 {
        socket
            .send(Message::Text(format!("offer {i}").into()))
            .await
            .unwrap();
        let answer = socket.next().await.unwrap().unwrap();
        assert_eq!(answer, Message::Text(format!("echo:offer {i}").into()));
    }
    // A large message crosses the tunnel whole.
    let big = "s".repeat(256 * 1024);
    socket
        .send(Message::Text(big.clone().into()))
        .await
        .unwrap();
    let answer = socket.next().await.unwrap().unwrap();
    assert_eq!(answer.into_text().unwrap().len(), big.len() + 5);
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn the_web_client_is_served_with_security_headers() {
    let app = spawn_app().await;
    for path in ["/", "/m/some-meeting", "/js/app.js"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("connect-src 'self' ws: wss:"), "{csp}");
        assert!(csp.contains("media-src 'self' blob:"), "{csp}");
        assert!(csp.contains("img-src 'self' data: blob:"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(headers.contains_key("referrer-policy"));
        assert!(headers.contains_key("x-request-id"));
    }
    let index = app.client.get(app.url("/m/x")).send().await.unwrap();
    assert!(index.text().await.unwrap().contains("<html"));
}

#[tokio::test]
async fn the_web_clients_own_tests_are_never_served() {
    let app = spawn_app().await;
    for path in ["/tests", "/tests/package.json", "/tests/e2e/harness.mjs"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn cors_is_same_origin_by_default_and_configurable() {
    let app = spawn_app().await;
    let preflight = |app: &TestApp| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/meetings"))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let answer = preflight(&app).await.unwrap();
    assert!(
        answer
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let app = spawn_app_with(Mode::Embedded, |edge| {
        edge.cors_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let answer = preflight(&app).await.unwrap();
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let other = app
        .client
        .get(app.url("/api/v1/auth/jwks"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn health_lists_every_upstream_and_metrics_count_per_upstream() {
    let app = spawn_app().await;
    let health = app.get("/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
    let view = app.wait_for_breaker("analytics", "closed").await;
    for name in ["auth", "users", "signaling", "notify", "analytics"] {
        assert_eq!(view["upstreams"][name]["breaker"], "closed", "{view}");
    }
    // Wait for one probe round to be recorded.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let view = app.upstream_health().await;
    assert_eq!(view["status"], "ok");
    assert_eq!(
        view["upstreams"]["users"]["instances"][0]["last_probe"]["ok"], true,
        "{view}"
    );

    app.get("/api/v1/auth/jwks", None).await;
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gateway_upstream_requests_total{")
            && metrics.contains("upstream=\"auth\""),
        "{metrics}"
    );
    assert!(metrics.contains("gateway_breaker_state{"), "{metrics}");
    let _ = json!(null);
}
