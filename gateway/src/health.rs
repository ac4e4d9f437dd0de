//! Upstream health: a prober that asks every upstream's `/health` at an interval
//! and feeds the answers to its circuit breaker, and `GET /health/upstreams`, the
//! aggregated view (each upstream's breaker state and last probe).
//!
//! `GET /health` itself stays the gateway's liveness (it answers while the gateway
//! runs, whatever its upstreams do), so a load balancer never drops every gateway
//! because one service behind them is down.

use crate::breaker::BreakerState;
use crate::edge::Edge;
use crate::proxy::ForwardError;
use crate::routes::UpstreamId;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// The last probe of one upstream.
#[derive(Debug, Clone)]
struct Probe {
    ok: bool,
    at: SystemTime,
    latency: Duration,
    detail: String,
}

/// The last probe of each upstream, indexed by [`UpstreamId::index`].
#[derive(Clone, Default)]
pub struct Probes(Arc<Mutex<[Option<Probe>; 5]>>);

impl Probes {
    fn set(&self, id: UpstreamId, probe: Probe) {
        // Poisoning only means a panic between plain writes; the array is valid.
        self.0.lock().unwrap_or_else(|e| e.into_inner())[id.index()] = Some(probe);
    }

    fn get(&self, id: UpstreamId) -> Option<Probe> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())[id.index()].clone()
    }
}

/// Probe every upstream each `interval` until `shutdown`.
pub fn spawn_prober(edge: Edge, probes: Probes, shutdown: CancellationToken) {
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
            let rounds = UpstreamId::ALL.map(|id| {
                let edge = edge.clone();
                let probes = probes.clone();
                async move { probe_one(&edge, &probes, id, timeout).await }
            });
            futures_util::future::join_all(rounds).await;
        }
    });
}

async fn probe_one(edge: &Edge, probes: &Probes, id: UpstreamId, timeout: Duration) {
    let (upstream, breaker) = edge.upstream(id);
    let started = Instant::now();
    let result = edge.proxy().probe(upstream, timeout).await;
    // `detail` is public (in /health/upstreams): a word, never an internal error.
    let (ok, detail) = match &result {
        Ok(status) if status.is_success() => (true, "ok".to_owned()),
        Ok(status) => (false, format!("status {}", status.as_u16())),
        Err(ForwardError::Timeout) => (false, "timeout".to_owned()),
        Err(ForwardError::Connect(_)) => (false, "unreachable".to_owned()),
        Err(_) => (false, "broken".to_owned()),
    };
    let before = breaker.state();
    if ok {
        breaker.record_success();
    } else {
        breaker.record_failure();
    }
    let after = breaker.state();
    if before != after {
        tracing::info!(
            upstream = upstream.name,
            from = before.as_str(),
            to = after.as_str(),
            result = ?result,
            "breaker changed state after a health probe"
        );
    }
    edge.metrics()
        .breaker_state(upstream.name, after.as_gauge());
    probes.set(
        id,
        Probe {
            ok,
            at: SystemTime::now(),
            latency: started.elapsed(),
            detail,
        },
    );
}

/// `GET /health/upstreams`: 200 with `status: ok` when every breaker is closed,
/// `degraded` otherwise (still 200: this is a view, not a liveness signal).
pub async fn upstreams(State((edge, probes)): State<(Edge, Probes)>) -> Response {
    let mut all_closed = true;
    let mut upstreams = serde_json::Map::new();
    for id in UpstreamId::ALL {
        let (upstream, breaker) = edge.upstream(id);
        let state = breaker.state();
        all_closed &= state == BreakerState::Closed;
        let last_probe = probes.get(id).map(|probe| {
            json!({
                "ok": probe.ok,
                "at_ms": probe.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
                "latency_ms": probe.latency.as_secs_f64() * 1000.0,
                "detail": probe.detail,
            })
        });
        upstreams.insert(
            upstream.name.to_owned(),
            json!({
                "breaker": state.as_str(),
                "consecutive_failures": breaker.consecutive_failures(),
                "last_probe": last_probe,
            }),
        );
    }
    axum::Json(json!({
        "status": if all_closed { "ok" } else { "degraded" },
        "upstreams": upstreams,
    }))
    .into_response()
}
