//! The gateway's own Prometheus metrics (beside the per-route HTTP metrics every
//! service has): upstream exchanges by route class, upstream, instance and
//! status, their latency, each upstream's breaker and each instance's passive
//! health, and requests the edge refused, by reason. Every label value comes from
//! configuration or a fixed list, never from the request.

use crate::pool::{Instance, Pool};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use servicekit::metrics::Metrics;
use std::sync::Arc;

/// How an exchange ended: the HTTP status, or `error`/`timeout` when the
/// upstream did not answer.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    Error,
    Timeout,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Outcome::Status(status) => EncodeLabelValue::encode(&u32::from(*status), encoder),
            Outcome::Error => EncodeLabelValue::encode(&"error", encoder),
            Outcome::Timeout => EncodeLabelValue::encode(&"timeout", encoder),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeLabels {
    class: &'static str,
    upstream: &'static str,
    /// `host:port` from configuration.
    instance: Arc<str>,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    class: &'static str,
    upstream: &'static str,
    instance: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    upstream: &'static str,
    instance: Arc<str>,
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
    instances: Family<InstanceLabels, Gauge>,
    refused: Family<ReasonLabel, Counter>,
}

impl EdgeMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            exchanges: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            breaker: Family::default(),
            instances: Family::default(),
            refused: Family::default(),
        };
        metrics.register(
            "gateway_upstream_requests",
            "Requests sent upstream, by route class, upstream, instance and outcome (status, error or timeout)",
            this.exchanges.clone(),
        );
        metrics.register(
            "gateway_upstream_duration_seconds",
            "Time until the upstream's response head, by route class, upstream and instance",
            this.latency.clone(),
        );
        metrics.register(
            "gateway_breaker_state",
            "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open",
            this.breaker.clone(),
        );
        metrics.register(
            "gateway_instance_state",
            "Passive health per upstream instance: 0 up, 1 probation, 2 ejected",
            this.instances.clone(),
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
        instance: &Arc<str>,
        outcome: Outcome,
        secs: f64,
    ) {
        self.exchanges
            .get_or_create(&ExchangeLabels {
                class,
                upstream,
                instance: instance.clone(),
                outcome,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                class,
                upstream,
                instance: instance.clone(),
            })
            .observe(secs);
    }

    /// The upstream's breaker (every instance out is open).
    pub fn upstream_state(&self, pool: &Pool) {
        self.breaker
            .get_or_create(&UpstreamLabel {
                upstream: pool.name,
            })
            .set(pool.state().as_gauge());
    }

    /// One instance's passive health, and its upstream's breaker.
    pub fn instance_state(&self, pool: &Pool, instance: &Instance) {
        self.instances
            .get_or_create(&InstanceLabels {
                upstream: pool.name,
                instance: instance.address.clone(),
            })
            .set(instance.breaker.state().as_gauge());
        self.upstream_state(pool);
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }
}
