//! Upstream health: a prober that asks every instance's `/health` at an interval
//! and feeds the answers to its breaker (its passive health, [`crate::pool`]),
//! and `GET /health/upstreams`, the aggregated view (each upstream's breaker and
//! each instance's state and last probe).
//!
//! `GET /health` itself stays the gateway's liveness (it answers while the gateway
//! runs, whatever its upstreams do), so a load balancer never drops every gateway
//! because one service behind them is down.

use crate::breaker::BreakerState;
use crate::edge::Edge;
use crate::pool::{Instance, Pool, Probe};
use crate::proxy::ForwardError;
use crate::routes::UpstreamId;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Probe every instance of every upstream each `interval` until `shutdown`.
pub fn spawn_prober(edge: Edge, shutdown: CancellationToken) {
    let interval = edge.config().probe_interval;
    let timeout = interval.clamp(Duration::from_millis(100), Duration::from_secs(2));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut rounds = Vec::new();
            for id in UpstreamId::ALL {
                let pool = edge.upstream(id);
                for instance in pool.instances() {
                    rounds.push(probe_one(&edge, pool, instance, timeout));
                }
            }
            futures_util::future::join_all(rounds).await;
        }
    });
}

async fn probe_one(edge: &Edge, pool: &Pool, instance: &Instance, timeout: Duration) {
    let started = Instant::now();
    let result = edge.proxy().probe(&instance.base, timeout).await;
    // `detail` is public (in /health/upstreams): a word, never an internal error.
    let (ok, detail) = match &result {
        Ok(status) if status.is_success() => (true, "ok".to_owned()),
        Ok(status) => (false, format!("status {}", status.as_u16())),
        Err(ForwardError::Timeout) => (false, "timeout".to_owned()),
        Err(ForwardError::Connect(_)) => (false, "unreachable".to_owned()),
        Err(_) => (false, "broken".to_owned()),
    };
    let breaker = &instance.breaker;
    let before = breaker.state();
    if ok {
        breaker.record_success();
    } else {
        breaker.record_failure();
    }
    let after = breaker.state();
    if before != after {
        tracing::info!(
            upstream = pool.name,
            instance = &*instance.address,
            from = before.as_str(),
            to = after.as_str(),
            result = ?result,
            "instance changed state after a health probe"
        );
    }
    edge.metrics().instance_state(pool, instance);
    instance.set_probe(Probe {
        ok,
        at: SystemTime::now(),
        latency: started.elapsed(),
        detail,
    });
}

/// `GET /health/upstreams`: 200 with `status: ok` when every instance of every
/// upstream is up, `degraded` otherwise (still 200: this is a view, not a
/// liveness signal). Each upstream shows its breaker (`open` only when every
/// instance is ejected) and each instance its health (`up`, `ejected`,
/// `probation`), failures in a row, exchanges in flight and last probe.
pub async fn upstreams(State(edge): State<Edge>) -> Response {
    let mut all_up = true;
    let mut upstreams = serde_json::Map::new();
    for id in UpstreamId::ALL {
        let pool = edge.upstream(id);
        let state = pool.state();
        let instances: Vec<_> = pool
            .instances()
            .iter()
            .map(|instance| {
                let health = instance.health();
                all_up &= health == "up";
                let last_probe = instance.last_probe().map(|probe| {
                    json!({
                        "ok": probe.ok,
                        "at_ms": probe.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
                        "latency_ms": probe.latency.as_secs_f64() * 1000.0,
                        "detail": probe.detail,
                    })
                });
                json!({
                    "address": &*instance.address,
                    "state": health,
                    "consecutive_failures": instance.breaker.consecutive_failures(),
                    "in_flight": instance.in_flight(),
                    "last_probe": last_probe,
                })
            })
            .collect();
        all_up &= state == BreakerState::Closed;
        upstreams.insert(
            pool.name.to_owned(),
            json!({
                "breaker": state.as_str(),
                "instances": instances,
            }),
        );
    }
    axum::Json(json!({
        "status": if all_up { "ok" } else { "degraded" },
        "upstreams": upstreams,
    }))
    .into_response()
}
