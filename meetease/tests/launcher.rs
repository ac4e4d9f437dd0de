//! The all-in-one launcher, started as a real process on ephemeral ports.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// The same smoke test for every backend mode: each service is alive and ready,
/// errors are JSON with stable codes, and SIGTERM stops everything cleanly.
async fn smoke(platform: Platform, expected_checks: &[&str]) {
    assert!(
        platform
            .banner
            .starts_with("MeetEase is running at http://localhost:"),
        "{}",
        platform.banner
    );
    for service in SERVICES {
        let (status, body) = get_json(&platform.url(service, "/health")).await;
        assert_eq!(status, 200, "{service} /health");
        assert_eq!(body["status"], "ok");
        let (status, body) = get_json(&platform.url(service, "/ready")).await;
        assert_eq!(status, 200, "{service} /ready: {body}");
        let metrics = reqwest::get(platform.url(service, "/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("meetease_http_requests_total"),
            "{service} exports request metrics"
        );
    }
    for check in expected_checks {
        let mut seen = false;
        for service in SERVICES {
            let (_, body) = get_json(&platform.url(service, "/ready")).await;
            if body["checks"][check] == "ok" {
                seen = true;
            }
        }
        assert!(seen, "some service checks {check}");
    }
    // Unknown API routes through the gateway are JSON errors with stable codes.
    let (status, body) = get_json(&platform.url("gateway", "/api/v1/nothing-here")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    // The web client is served for deep links.
    let page = reqwest::get(platform.url("gateway", "/m/some-code"))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    let status = platform.terminate();
    assert!(
        status.success(),
        "launcher exits 0 on SIGTERM, got {status:?}"
    );
}

#[tokio::test]
async fn embedded_mode_starts_every_service_and_stops_on_sigterm() {
    smoke(Platform::start(&[]), &["database"]).await;
}

#[tokio::test]
async fn postgres_redis_rabbitmq_mode_passes_the_same_smoke_test() {
    let platform = Platform::start(&[
        ("DATABASE_URL", postgres_url()),
        ("REDIS_URL", redis_url()),
        ("AMQP_URL", amqp_url()),
    ]);
    smoke(platform, &["database", "redis", "amqp"]).await;
}

#[test]
fn an_unsupported_database_url_exits_naming_the_setting() {
    let (code, stderr) = start_expecting_failure(&[], &[("DATABASE_URL", "mysql://localhost/x")]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("DATABASE_URL: unsupported scheme"),
        "{stderr}"
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one line, no stack trace: {stderr}"
    );
}

#[test]
fn an_unreachable_database_exits_naming_the_setting() {
    let (code, stderr) = start_expecting_failure(
        &[],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/test")],
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("DATABASE_URL: cannot connect to postgres://postgres@127.0.0.1:1/test"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_redis_or_broker_exits_naming_the_setting() {
    let (code, stderr) = start_expecting_failure(&[], &[("REDIS_URL", "redis://127.0.0.1:1")]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("REDIS_URL: cannot connect"), "{stderr}");
    let (code, stderr) =
        start_expecting_failure(&[], &[("AMQP_URL", "amqp://guest:secret@127.0.0.1:1/%2f")]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("AMQP_URL: cannot connect to amqp://guest:***@127.0.0.1:1"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "the password is never printed: {stderr}"
    );
}

#[test]
fn a_port_in_use_exits_naming_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stderr) = start_expecting_failure(&["--gateway-port", &port], &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(&format!("GATEWAY_PORT: 127.0.0.1:{port} is already in use")),
        "{stderr}"
    );
}

#[test]
fn a_malformed_flag_is_rejected_by_the_parser() {
    let (code, stderr) = start_expecting_failure(&["--auth-port", "not-a-port"], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--auth-port"), "{stderr}");
}

/// A private Redis on its own port, stopped by PID (never the shared one).
struct PrivateRedis {
    port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (the test command installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "private redis did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateRedis { port, child }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn wait_for_ready(url: &str, want: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get_json(url).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered {want}; last {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn readiness_fails_while_redis_is_down_and_recovers_when_it_returns() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut redis = PrivateRedis::start(port);
    let platform = Platform::start(&[("REDIS_URL", format!("redis://127.0.0.1:{}", redis.port))]);
    let ready = platform.url("gateway", "/ready");
    let body = wait_for_ready(&ready, 200).await;
    assert_eq!(body["checks"]["redis"], "ok");

    redis.stop();
    let body = wait_for_ready(&ready, 503).await;
    assert_eq!(body["checks"]["redis"], "down");
    assert_eq!(body["status"], "not_ready");
    // Liveness is not readiness: the process itself is fine.
    assert_eq!(get_json(&platform.url("gateway", "/health")).await.0, 200);

    let _redis = PrivateRedis::start(port);
    let body = wait_for_ready(&ready, 200).await;
    assert_eq!(body["checks"]["redis"], "ok");
}
