//! Prometheus metrics: one registry per service, HTTP metrics for every route,
//! and room for each service to register its own.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

type DurationFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// A cheap-to-clone handle on one service's metrics registry.
#[derive(Clone)]
pub struct Metrics {
    // A std mutex is right here: it is held only to register or encode, never
    // across an `.await`, and the hot-path metrics themselves are atomics.
    registry: Arc<Mutex<Registry>>,
    requests: Family<RequestLabels, Counter>,
    durations: DurationFamily,
}

impl Metrics {
    /// A registry whose metrics are prefixed `meetease_` and labelled `service`.
    pub fn new(service: &'static str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "meetease",
            [(
                std::borrow::Cow::Borrowed("service"),
                std::borrow::Cow::Borrowed(service),
            )]
            .into_iter(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        let durations: DurationFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            durations.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            requests,
            durations,
        }
    }

    /// Register a service-specific metric. Names get the `meetease_` prefix.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// Count and time one answered request, as [`track_requests`] does (for a
    /// server with its own middleware: the gateway). `route` must be a template.
    pub fn record_request(&self, method: &str, route: &str, status: u16, secs: f64) {
        self.durations
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(secs);
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// The registry in Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail (fmt::Write on String is infallible).
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.lock());
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding this lock leaves the registry intact (it only
        // appends), so a poisoned lock is safe to keep using.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The route template a handler answered for, when the router's own matched path
/// does not say it (the gateway's one catch-all route stands for every service's
/// routes). A handler puts it in the response's extensions; [`track_requests`]
/// then labels the request with it. It must come from a bounded set.
#[derive(Debug, Clone)]
pub struct RouteTemplate(pub Arc<str>);

/// Middleware: counts and times every request by its route template (never the
/// raw path, which would let clients create unbounded label values).
pub async fn track_requests(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let route = match response.extensions().get::<RouteTemplate>() {
        Some(template) => template.0.to_string(),
        None => route,
    };
    metrics
        .durations
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
