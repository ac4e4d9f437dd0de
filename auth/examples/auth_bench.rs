//! Sign-in throughput and latency, at saturation and at twice that rate.
//!
//! ```sh
//! cargo run --release -p auth --example auth_bench -- [seconds per phase, default 15]
//! ```
//!
//! Starts the real auth service in this process (PostgreSQL at `TEST_DATABASE_URL`
//! in a fresh schema, dropped at the end, and Redis at `TEST_REDIS_URL` for the
//! throttles and revocations), on its own Tokio runtime with the default
//! `hash_concurrency` (one Argon2 hash per core), registers 64 accounts, then:
//!
//! 0. **One client at a time** for 3 s: what one sign-in costs without queueing.
//! 1. **Saturation** (closed loop): 16 clients each send `POST /api/v1/auth/login`
//!    with the right password as soon as the previous answer is in. Sign-ins per
//!    second, p50/p99 latency.
//! 2. **Twice that rate** (open loop): requests start on a fixed schedule at 2× the
//!    measured rate whatever the answers (no coordinated omission), each with a 10 s
//!    client timeout. Counts per outcome (200, 503 `overloaded`, 429, timeout,
//!    other), latency per outcome, and whether every refusal carried `Retry-After`.
//!
//! Prints a Markdown report on stdout.

use serde_json::json;
use servicekit::Secret;
use servicekit::backends::Db;
use servicekit::config::{BackendConfig, DatabaseConfig};
use servicekit::health::Readiness;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const ACCOUNTS: usize = 64;
const CLIENTS: usize = 16;
const PASSWORD: &str = "correct horse battery staple";
const TIMEOUT: Duration = Duration::from_secs(10);

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    Overloaded,
    RateLimited,
    Timeout,
    Other(u16),
}

struct Sample {
    outcome: Outcome,
    took: Duration,
    retry_after: bool,
}

async fn login(client: &reqwest::Client, url: &str, email: &str) -> Sample {
    let started = Instant::now();
    let sent = client
        .post(url)
        .json(&json!({"email": email, "password": PASSWORD}))
        .timeout(TIMEOUT)
        .send()
        .await;
    let (outcome, retry_after) = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body = response.bytes().await.unwrap_or_default();
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
            let outcome = match (status, code.as_deref()) {
                (200, _) => Outcome::Ok,
                (503, Some("overloaded")) => Outcome::Overloaded,
                (429, _) => Outcome::RateLimited,
                (other, _) => Outcome::Other(other),
            };
            (outcome, retry_after)
        }
        Err(err) if err.is_timeout() => (Outcome::Timeout, false),
        Err(_) => (Outcome::Other(0), false),
    };
    Sample {
        outcome,
        took: started.elapsed(),
        retry_after,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(15);
    let phase = Duration::from_secs(seconds);
    let load_before = load_average();

    // The server: its own runtime, as in `meetease-auth`.
    let server = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let shutdown = CancellationToken::new();
    let schema = format!("auth_bench_{}", uuid::Uuid::new_v4().simple());
    let pg_url = env(
        "TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let database = DatabaseConfig::Postgres {
        url: Secret::new(pg_url.clone()),
    };
    let (addr, hash_concurrency) = server.block_on(async {
        let db = Db::connect_in_schema(&database, "auth", &schema).await?;
        let redis = servicekit::backends::connect_redis(&Secret::new(env(
            "TEST_REDIS_URL",
            "redis://127.0.0.1:6379",
        )))
        .await?;
        let mut config = auth::Config::new(BackendConfig {
            database: database.clone(),
            redis_url: None,
            amqp_url: None,
            data_dir: std::env::temp_dir(),
        });
        config.throttle_namespace = Some(format!("auth:throttle:{schema}"));
        let hash_concurrency = config.hash_concurrency;
        let router = auth::build_with(
            config,
            db,
            Some(redis),
            Readiness::default(),
            shutdown.clone(),
        )
        .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(servicekit::http::serve(listener, router, shutdown.clone()));
        anyhow::Ok((addr, hash_concurrency))
    })?;

    // The load: a single-threaded runtime, so the client takes little of the CPU.
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = client_rt.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        let base = format!("http://{addr}");
        let mut emails = Vec::new();
        for i in 0..ACCOUNTS {
            let email = format!("bench-{i}@example.com");
            // Sign-ups are throttled per address (20 an hour): each account comes
            // "through the gateway" from its own documentation address.
            let answer = client
                .post(format!("{base}/api/v1/auth/register"))
                .header("x-forwarded-for", format!("198.51.100.{i}"))
                .json(&json!({"email": email, "password": PASSWORD, "display_name": "Bench"}))
                .send()
                .await?;
            anyhow::ensure!(answer.status() == 201, "register: {}", answer.status());
            emails.push(email);
        }
        let url = format!("{base}/api/v1/auth/login");
        // Warm-up.
        for email in emails.iter().take(8) {
            login(&client, &url, email).await;
        }

        // 0. One client at a time: the cost of one sign-in, without queueing.
        let started = Instant::now();
        let mut single = Vec::new();
        let mut i = 0;
        while started.elapsed() < Duration::from_secs(3) {
            let sample = login(&client, &url, &emails[i % emails.len()]).await;
            anyhow::ensure!(sample.outcome == Outcome::Ok, "a lone sign-in failed: {:?}", sample.outcome);
            single.push(sample.took);
            i += 1;
        }
        single.sort();

        // 1. Saturation, closed loop.
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (client, url, emails) = (client.clone(), url.clone(), emails.clone());
            tasks.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut i = c;
                while started.elapsed() < phase {
                    samples.push(login(&client, &url, &emails[i % emails.len()]).await);
                    i += CLIENTS;
                }
                samples
            }));
        }
        let mut closed = Vec::new();
        for task in tasks {
            closed.extend(task.await?);
        }
        let closed_elapsed = started.elapsed();
        let ok: Vec<Duration> = {
            let mut v: Vec<_> = closed
                .iter()
                .filter(|s| s.outcome == Outcome::Ok)
                .map(|s| s.took)
                .collect();
            v.sort();
            v
        };
        let refused_closed = closed.len() - ok.len();
        let rate = ok.len() as f64 / closed_elapsed.as_secs_f64();

        // 2. Twice that rate, open loop.
        let target = (rate * 2.0).max(1.0);
        let gap = Duration::from_secs_f64(1.0 / target);
        let started = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        let mut n: u32 = 0;
        loop {
            let at = started + gap * n;
            if at.duration_since(started) >= phase {
                break;
            }
            tokio::time::sleep_until(at).await;
            let (client, url) = (client.clone(), url.clone());
            let email = emails[n as usize % emails.len()].clone();
            tasks.push(tokio::spawn(async move { login(&client, &url, &email).await }));
            n += 1;
        }
        let mut open = Vec::new();
        for task in tasks {
            open.push(task.await?);
        }
        let open_elapsed = started.elapsed();

        let mut out = String::new();
        use std::fmt::Write;
        writeln!(out, "hash concurrency {hash_concurrency}, {ACCOUNTS} accounts, {CLIENTS} closed-loop clients, {seconds} s per phase; load average before: {load_before}, after: {}\n", load_average())?;
        writeln!(out, "### One client at a time (3 s)\n")?;
        writeln!(out, "| sign-ins | p50 | p99 |")?;
        writeln!(out, "|---:|---:|---:|")?;
        writeln!(
            out,
            "| {} | {} | {} |\n",
            single.len(),
            ms(percentile(&single, 50.0)),
            ms(percentile(&single, 99.0)),
        )?;
        writeln!(out, "### Saturation (closed loop, {CLIENTS} clients)\n")?;
        writeln!(out, "| sign-ins/s | p50 | p99 | max | refused |")?;
        writeln!(out, "|---:|---:|---:|---:|---:|")?;
        writeln!(
            out,
            "| {rate:.1} | {} | {} | {} | {refused_closed} |\n",
            ms(percentile(&ok, 50.0)),
            ms(percentile(&ok, 99.0)),
            ms(ok.last().copied().unwrap_or_default()),
        )?;
        writeln!(
            out,
            "### Twice that rate (open loop, {target:.1} requests/s offered, {} sent in {:.1} s)\n",
            open.len(),
            open_elapsed.as_secs_f64()
        )?;
        writeln!(out, "| outcome | count | share | p50 | p99 | max | with Retry-After |")?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
        let mut kinds: Vec<Outcome> = open.iter().map(|s| s.outcome).collect();
        kinds.sort();
        kinds.dedup();
        for kind in [Outcome::Ok, Outcome::Overloaded, Outcome::RateLimited, Outcome::Timeout]
            .into_iter()
            .chain(kinds.into_iter().filter(|k| matches!(k, Outcome::Other(_))))
        {
            let mut took: Vec<Duration> = open
                .iter()
                .filter(|s| s.outcome == kind)
                .map(|s| s.took)
                .collect();
            took.sort();
            let with_retry = open
                .iter()
                .filter(|s| s.outcome == kind && s.retry_after)
                .count();
            let name = match kind {
                Outcome::Ok => "200 signed in".to_owned(),
                Outcome::Overloaded => "503 overloaded".to_owned(),
                Outcome::RateLimited => "429 rate_limited".to_owned(),
                Outcome::Timeout => format!("timeout (> {} s)", TIMEOUT.as_secs()),
                Outcome::Other(s) => format!("other ({s})"),
            };
            writeln!(
                out,
                "| {name} | {} | {:.1}% | {} | {} | {} | {} |",
                took.len(),
                100.0 * took.len() as f64 / open.len().max(1) as f64,
                ms(percentile(&took, 50.0)),
                ms(percentile(&took, 99.0)),
                ms(took.last().copied().unwrap_or_default()),
                if kind == Outcome::Ok { "-".to_owned() } else { with_retry.to_string() },
            )?;
        }
        let served = open.iter().filter(|s| s.outcome == Outcome::Ok).count();
        writeln!(
            out,
            "\nServed at 2×: {:.1} sign-ins/s.",
            served as f64 / open_elapsed.as_secs_f64()
        )?;
        anyhow::Ok(out)
    })?;
    print!("{report}");

    shutdown.cancel();
    server.block_on(async {
        sqlx::any::install_default_drivers();
        if let Ok(pool) = sqlx::AnyPool::connect(&pg_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&pool)
            .await;
        }
    });
    Ok(())
}
