//! The gateway's own Prometheus metrics (beside the per-route HTTP metrics every
//! service has): upstream exchanges by route class, upstream and status, their
//! latency, each breaker's state, and requests the edge refused, by reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use servicekit::metrics::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeLabels {
    class: &'static str,
    upstream: &'static str,
    /// The HTTP status, or `error`/`timeout` when the upstream did not answer.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    class: &'static str,
    upstream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

type LatencyFamily = Family<LatencyLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

#[derive(Clone)]
pub struct EdgeMetrics {
    exchanges: Family<ExchangeLabels, Counter>,
    latency: LatencyFamily,
    breaker: Family<UpstreamLabel, Gauge>,
    refused: Family<ReasonLabel, Counter>,
}

impl EdgeMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            exchanges: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            breaker: Family::default(),
            refused: Family::default(),
        };
        metrics.register(
            "gateway_upstream_requests",
            "Requests sent upstream, by route class, upstream and outcome (status or error)",
            this.exchanges.clone(),
        );
        metrics.register(
            "gateway_upstream_duration_seconds",
            "Time until the upstream's response head, by route class and upstream",
            this.latency.clone(),
        );
        metrics.register(
            "gateway_breaker_state",
            "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open",
            this.breaker.clone(),
        );
        metrics.register(
            "gateway_refused",
            "Requests the gateway answered itself, by reason",
            this.refused.clone(),
        );
        this
    }

    pub fn exchange(
        &self,
        class: &'static str,
        upstream: &'static str,
        outcome: String,
        secs: f64,
    ) {
        self.exchanges
            .get_or_create(&ExchangeLabels {
                class,
                upstream,
                outcome,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels { class, upstream })
            .observe(secs);
    }

    pub fn breaker_state(&self, upstream: &'static str, state: i64) {
        self.breaker
            .get_or_create(&UpstreamLabel { upstream })
            .set(state);
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }
}
