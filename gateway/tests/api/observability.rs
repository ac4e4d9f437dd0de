//! The access log and the per-route, per-upstream Prometheus metrics.

use crate::helpers::*;
use reqwest::StatusCode;
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

type Line = BTreeMap<String, String>;

/// Every access line written in this test process (a global subscriber: the
/// gateway's tasks run on whatever thread the runtime picks).
fn access_lines() -> &'static Mutex<Vec<Line>> {
    static LINES: OnceLock<&'static Mutex<Vec<Line>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines: &'static Mutex<Vec<Line>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::registry().with(Capture(lines));
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other test installs a global subscriber");
        lines
    })
}

struct Capture(&'static Mutex<Vec<Line>>);

struct Fields(Line);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        metadata.target() == gateway::access::TARGET
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields(Line::new());
        event.record(&mut fields);
        fields
            .0
            .insert("level".into(), event.metadata().level().to_string());
        self.0.lock().unwrap().push(fields.0);
    }
}

async fn line_for(request_id: &str) -> Line {
    for _ in 0..100 {
        if let Some(line) = access_lines()
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.get("request_id").map(String::as_str) == Some(request_id))
        {
            return line.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no access line for {request_id}");
}

#[tokio::test]
async fn each_request_writes_one_structured_access_line() {
    access_lines();
    let app = spawn_app().await;
    let session = app.register("access@example.com").await;

    let id = format!("access-{}", uuid::Uuid::new_v4().simple());
    let response = app
        .client
        .get(app.url("/api/v1/users/0190a0b0-0000-7000-8000-00000000abcd"))
        .bearer_auth(&session.access_token)
        .header("x-request-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let length = response.bytes().await.unwrap().len();
    let line = line_for(&id).await;
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "GET");
    assert_eq!(
        line["route"], "/api/v1/users/{id}",
        "the template, not the path"
    );
    assert_eq!(line["status"], "200");
    assert_eq!(line["bytes"], length.to_string());
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["user_id"], session.user_id);
    assert_eq!(line["upstream"], "users");
    assert_eq!(
        line["instance"],
        app.users.as_ref().unwrap().addr.to_string()
    );
    assert!(line["duration_ms"].parse::<f64>().unwrap() > 0.0);

    // Refused at the edge: no user, no instance, still one line.
    let id = format!("access-{}", uuid::Uuid::new_v4().simple());
    let response = app
        .client
        .get(app.url("/api/v1/users/me"))
        .bearer_auth("not-a-token")
        .header("x-request-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let _ = response.bytes().await;
    let line = line_for(&id).await;
    assert_eq!(line["status"], "401");
    assert_eq!(line["route"], "/api/v1/users/me");
    assert!(!line.contains_key("user_id"), "{line:?}");
    assert!(!line.contains_key("instance"), "{line:?}");
    assert_eq!(
        access_lines()
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.get("request_id") == Some(&id))
            .count(),
        1
    );
}

fn series<'a>(metrics: &'a str, name: &str, labels: &[&str]) -> Vec<&'a str> {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .collect()
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_upstream_instance() {
    let app = spawn_app().await;
    let session = app.register("metrics@example.com").await;
    let token = Some(session.access_token.as_str());
    for id in ["a1", "b2", "c3"] {
        let answer = app.get(&format!("/api/v1/users/{id}"), token).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    app.get("/api/v1/users/me/x/y/z", token).await;
    app.get("/api/v1/nothing/here", None).await;
    let metrics = app.metrics().await;

    let per_route = series(
        &metrics,
        "meetease_http_requests_total",
        &[
            "service=\"gateway\"",
            "route=\"/api/v1/users/{id}\"",
            "status=\"200\"",
        ],
    );
    assert_eq!(per_route.len(), 1, "{metrics}");
    assert!(per_route[0].ends_with(" 3"), "{}", per_route[0]);
    assert_eq!(
        series(
            &metrics,
            "meetease_http_request_duration_seconds_count",
            &["route=\"/api/v1/users/{id}\""]
        )
        .len(),
        1,
        "{metrics}"
    );
    // Raw paths never become labels: unknown ones share one bounded label.
    assert!(!metrics.contains("/api/v1/users/a1"), "{metrics}");
    assert!(!metrics.contains("/x/y/z"), "{metrics}");
    assert!(!metrics.contains("/nothing/here"), "{metrics}");
    assert_eq!(
        series(
            &metrics,
            "meetease_http_requests_total",
            &["route=\"<unknown users route>\""]
        )
        .len(),
        1,
        "{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            "meetease_http_requests_total",
            &["route=\"<unrouted>\"", "status=\"404\""]
        )
        .len(),
        1,
        "{metrics}"
    );

    let users = app.users.as_ref().unwrap().addr.to_string();
    let instance = format!("instance=\"{users}\"");
    let exchanges = series(
        &metrics,
        "meetease_gateway_upstream_requests_total",
        &[
            "class=\"api\"",
            "upstream=\"users\"",
            &instance,
            "outcome=\"200\"",
        ],
    );
    assert_eq!(exchanges.len(), 1, "{metrics}");
    assert!(exchanges[0].ends_with(" 4"), "{}", exchanges[0]);
    assert_eq!(
        series(
            &metrics,
            "meetease_gateway_upstream_duration_seconds_count",
            &["upstream=\"users\"", &instance]
        )
        .len(),
        1,
        "{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            "meetease_gateway_instance_state",
            &["upstream=\"users\"", &instance]
        )
        .len(),
        1,
        "{metrics}"
    );
}

#[tokio::test]
async fn request_ids_are_accepted_or_made_and_reach_the_service() {
    let app = spawn_app().await;
    let session = app.register("ids@example.com").await;
    let send = |id: Option<&str>| {
        let mut request = app
            .client
            .get(app.url("/api/v1/analytics/platform"))
            .bearer_auth(&session.access_token);
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };
    let answer = Answer::from(send(Some("client-chosen-42")).await.unwrap()).await;
    assert_eq!(answer.header("x-request-id"), Some("client-chosen-42"));
    assert_eq!(
        answer.body["headers"]["x-request-id"], "client-chosen-42",
        "the service sees the same id"
    );

    let mut made = Vec::new();
    for id in [None, Some("has spaces in it"), Some(&*"x".repeat(200))] {
        let answer = Answer::from(send(id).await.unwrap()).await;
        let echoed = answer.header("x-request-id").unwrap().to_owned();
        assert_ne!(Some(echoed.as_str()), id);
        assert!(!echoed.is_empty() && echoed.len() <= 64, "{echoed}");
        assert_eq!(answer.body["headers"]["x-request-id"], echoed.as_str());
        made.push(echoed);
    }
    made.sort();
    made.dedup();
    assert_eq!(made.len(), 3, "each made id is new");
}
