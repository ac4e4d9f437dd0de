//! Requests per second and p50/p99 latency through the gateway against calling the
//! service directly, in one run on one machine.
//!
//! ```sh
//! cargo run --release -p gateway --example gateway_bench -- [seconds per scenario] [concurrency] [only]
//! ```
//!
//! Scenarios (each after a 1 s warm-up):
//! - `direct`: GET straight to a small upstream (a JSON answer of ~300 bytes);
//! - `gateway, public route`: the same upstream through the gateway on a public route
//!   (path checks, per-address GCRA limit in process, breaker, proxy);
//! - `gateway, token + Redis`: an authenticated route through the gateway in Redis
//!   mode (per-address and per-user GCRA scripts in Redis, the token verified
//!   against the real auth service's JWKS, revocation read from Redis).
//!   Needs Redis at `TEST_REDIS_URL` (default `redis://127.0.0.1:6379`).

use axum::Router;
use axum::routing::get;
use gateway::{Config, EdgeConfig, Quota, Upstream, Upstreams};
use servicekit::Secret;
use servicekit::backends::Db;
use servicekit::config::{BackendConfig, DatabaseConfig, SqliteLocation};
use servicekit::health::Readiness;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn upstream() -> SocketAddr {
    let body = serde_json::json!({"id": "0190a0b0-0000-7000-8000-000000000000", "display_name": "Ada Lovelace", "email": "ada@example.com", "preferences": {"camera": true, "microphone": true, "theme": "dark"}, "avatar": null, "created_at": "2025-01-01T00:00:00Z"});
    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .fallback(get(move || {
            let body = body.clone();
            async move { axum::Json(body) }
        }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn auth(redis: redis::aio::ConnectionManager) -> SocketAddr {
    let folder =
        std::env::temp_dir().join(format!("meetease-bench-{}", uuid::Uuid::new_v4().simple()));
    let database = DatabaseConfig::Sqlite {
        location: SqliteLocation::Folder(folder.clone()),
    };
    let backends = BackendConfig {
        database: database.clone(),
        redis_url: None,
        amqp_url: None,
        data_dir: folder,
    };
    let db = Db::connect(&database, "auth").await.unwrap();
    let router = auth::build_with(
        auth::Config::new(backends),
        db,
        Some(redis),
        Readiness::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(servicekit::http::serve(
        listener,
        router,
        CancellationToken::new(),
    ));
    addr
}

async fn gateway(auth: SocketAddr, service: SocketAddr, redis: bool) -> SocketAddr {
    let at = |name, addr: SocketAddr| Upstream::parse(name, &format!("http://{addr}")).unwrap();
    let upstreams = Upstreams {
        auth: at("auth", auth),
        users: at("users", service),
        signaling: at("signaling", service),
        notify: at("notify", service),
        analytics: at("analytics", service),
    };
    let redis_url =
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let backends = BackendConfig {
        database: DatabaseConfig::Sqlite {
            location: SqliteLocation::Folder(std::env::temp_dir()),
        },
        redis_url: redis.then(|| Secret::new(redis_url)),
        amqp_url: None,
        data_dir: std::env::temp_dir(),
    };
    let mut config = Config::new(backends, upstreams, gateway::default_web_dir());
    // Budgets far above what one machine can send: the limiter runs, never refuses.
    config.edge = EdgeConfig {
        per_ip: Quota::parse("1000000/s,1000000").unwrap(),
        per_user: Quota::parse("1000000/s,1000000").unwrap(),
        rate_limit_prefix: format!("bench:{}:", uuid::Uuid::new_v4().simple()),
        ..EdgeConfig::default()
    };
    let router = gateway::build(config, CancellationToken::new())
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway::serve_default(
        listener,
        router,
        CancellationToken::new(),
    ));
    addr
}

struct Outcome {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
    /// CPU time of this whole process (load generator, services, gateways) per
    /// request: unlike throughput, it hardly moves with other load on the machine.
    cpu_per_request: Duration,
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let hz = 100; // USER_HZ on Linux
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

async fn run(url: String, token: Option<String>, seconds: u64, concurrency: usize) -> Outcome {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let drive = |until: Instant| {
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let client = client.clone();
            let url = url.clone();
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < until {
                    let started = Instant::now();
                    let mut request = client.get(&url);
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    match request.send().await {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            latencies.push(started.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            }));
        }
        tasks
    };
    for task in drive(Instant::now() + Duration::from_secs(1)) {
        let _ = task.await;
    }
    let started = Instant::now();
    let cpu_before = cpu_time();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in drive(started + Duration::from_secs(seconds)) {
        let (latencies, e) = task.await.unwrap();
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_time().saturating_sub(cpu_before);
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    Outcome {
        rps: all.len() as f64 / elapsed,
        p50: pick(0.50),
        p99: pick(0.99),
        errors,
        cpu_per_request: cpu.div_f64(all.len().max(1) as f64),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    // Only the scenarios whose name contains this (for profiling one of them).
    let only = args.next().unwrap_or_default();
    let redis_url =
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = servicekit::backends::connect_redis(&Secret::new(redis_url))
        .await
        .expect("Redis answers");

    let service = upstream().await;
    let auth = auth(redis).await;
    let embedded = gateway(auth, service, false).await;
    let shared = gateway(auth, service, true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = reqwest::Client::new();
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let session: serde_json::Value = client
        .post(format!("http://{shared}/api/v1/auth/register"))
        .json(&serde_json::json!({"email": email, "password": "correct horse battery staple", "display_name": "Bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["access_token"]
        .as_str()
        .expect("a token")
        .to_owned();

    let scenarios: Vec<(&str, String, Option<String>)> = vec![
        (
            "direct to the service",
            format!("http://{service}/api/v1/meetings/abc"),
            None,
        ),
        (
            "gateway, public route",
            format!("http://{embedded}/api/v1/meetings/abc"),
            None,
        ),
        (
            "direct to the service",
            format!("http://{service}/api/v1/users/me"),
            None,
        ),
        (
            "gateway, token + Redis",
            format!("http://{shared}/api/v1/users/me"),
            Some(token),
        ),
    ];
    println!(
        "{seconds} s per scenario, {concurrency} concurrent clients, keep-alive, GET, ~300-byte JSON answers\n"
    );
    println!("| scenario | requests/s | p50 | p99 | errors | CPU per request |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, url, token) in scenarios {
        if !name.contains(only.as_str()) {
            continue;
        }
        let outcome = run(url, token, seconds, concurrency).await;
        println!(
            "| {name} | {:.0} | {:.3} ms | {:.3} ms | {} | {:.1} µs |",
            outcome.rps,
            outcome.p50.as_secs_f64() * 1000.0,
            outcome.p99.as_secs_f64() * 1000.0,
            outcome.errors,
            outcome.cpu_per_request.as_secs_f64() * 1e6
        );
    }
}
