//! The Grafana dashboard (`infra/grafana/dashboards/meetease.json`) only queries
//! metrics the services really export: start the real launcher, cause the traffic
//! that creates the labelled series, scrape every service's `/metrics`, and check
//! every `meetease_*` name in the dashboard's queries against what was scraped.

mod support;

use std::collections::BTreeSet;
use support::*;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../infra/grafana/dashboards/meetease.json"
);

/// Every `meetease_[a-z_]+` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("meetease_") {
        let boundary = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        if boundary {
            names.insert(tail[..len].trim_end_matches('_').to_owned());
        }
        rest = &tail[len.max(1)..];
    }
    names
}

/// The query strings of the dashboard: every panel target's `expr` (rows nest
/// panels) and every templating variable's query.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                        _ => walk(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match &variable["query"] {
            serde_json::Value::String(query) => out.push(query.clone()),
            query => {
                if let Some(query) = query["query"].as_str() {
                    out.push(query.to_owned());
                }
            }
        }
    }
    out
}

/// The sample names a Prometheus text exposition exports: each sample line's name,
/// plus the names each `# TYPE` line implies (`_total` for counters; `_bucket`,
/// `_sum`, `_count` for histograms), so a family declared but still empty counts.
fn exported(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut parts = decl.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{name}{suffix}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_queries() {
    let names = metric_names(
        r#"sum by (service) (rate(meetease_http_requests_total{status=~"5.."}[5m])) / x_meetease_not + meetease_sfu_rooms"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["meetease_http_requests_total", "meetease_sfu_rooms"]
    );
    let scraped = exported(
        "# TYPE meetease_a counter\n# TYPE meetease_h histogram\nmeetease_g{service=\"x\"} 1\n",
    );
    for name in ["meetease_a_total", "meetease_h_bucket", "meetease_g"] {
        assert!(scraped.contains(name), "{name}");
    }
}

#[tokio::test]
async fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(DASHBOARD).unwrap_or_else(|err| panic!("{DASHBOARD}: {err}")),
    )
    .unwrap_or_else(|err| panic!("{DASHBOARD} is not JSON: {err}"));
    let queries = dashboard_queries(&dashboard);
    let wanted: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    assert!(
        wanted.len() >= 10,
        "the dashboard's queries name only {wanted:?}; did its layout change?"
    );

    let platform = Platform::start(&[]);
    // Traffic that creates the labelled series which exist only once used: a request
    // the gateway forwards (upstream requests and their latency) and one it refuses
    // itself (no token on a token route).
    let client = reqwest::Client::new();
    let jwks = client
        .get(platform.url("gateway", "/api/v1/auth/jwks"))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), 200, "the gateway forwards to auth");
    let refused = client
        .get(platform.url("gateway", "/api/v1/users/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the gateway refuses a missing token");

    let mut scraped = BTreeSet::new();
    for service in SERVICES {
        let response = client
            .get(platform.url(service, "/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{service} /metrics");
        scraped.extend(exported(&response.text().await.unwrap()));
    }
    let missing: Vec<&String> = wanted.iter().filter(|n| !scraped.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the Grafana dashboard queries metrics no service exports: {missing:?}\n\
         exported: {scraped:?}"
    );
}
