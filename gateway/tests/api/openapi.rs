//! The combined OpenAPI document and its docs page: valid OpenAPI 3.1, and in step
//! with what the services really serve (so it cannot silently rot).

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Routes a service serves that the gateway deliberately does not expose.
const NOT_THROUGH_THE_GATEWAY: &[(&str, &str)] = &[
    // The JWKS's well-known alias, for verifiers that talk to auth directly;
    // through the gateway it is `/api/v1/auth/jwks`.
    ("GET", "/.well-known/jwks.json"),
];

const SERVICES: &[&str] = &["auth", "users", "signaling", "notify", "analytics"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(METHOD, path)` of every `.route("path", get(..).post(..))` in a service's
/// sources: what its axum router declares.
fn declared_routes(service: &str) -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    rust_files(&workspace().join(service).join("src"), &mut files);
    let mut routes = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let call = balanced(rest);
            let Some(path) = call
                .trim_start()
                .strip_prefix('"')
                .and_then(|p| p.split('"').next())
            else {
                continue;
            };
            let chain = &call[call.find(',').unwrap_or(call.len())..];
            let mut found = false;
            for method in ["get", "post", "put", "patch", "delete"] {
                let needle = format!("{method}(");
                let mut from = 0;
                while let Some(i) = chain[from..].find(&needle) {
                    let i = from + i;
                    let before = chain[..i].chars().next_back().unwrap_or(' ');
                    if !(before.is_alphanumeric() || before == '_') {
                        routes.insert((method.to_ascii_uppercase(), path.to_owned()));
                        found = true;
                    }
                    from = i + needle.len();
                }
            }
            assert!(
                found,
                "{}: cannot tell the methods of route {path}",
                file.display()
            );
        }
    }
    routes
}

/// The text of a call's arguments, up to its closing parenthesis.
fn balanced(text: &str) -> &str {
    let mut depth = 1;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[..i];
                }
            }
            _ => {}
        }
    }
    text
}

fn documented(doc: &Value, service: &str) -> BTreeSet<(String, String)> {
    let fragment: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join(service).join("openapi.json")).unwrap(),
    )
    .unwrap();
    let mut routes = BTreeSet::new();
    for (path, item) in fragment["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                doc["paths"][path].get(method).is_some(),
                "{service}: {method} {path} is missing from the merged document"
            );
            routes.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    routes
}

#[tokio::test]
async fn every_route_each_service_declares_is_documented_and_nothing_else_is() {
    let app = spawn_app().await;
    let doc = app.get("/api/v1/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    for service in SERVICES {
        let declared: BTreeSet<_> = declared_routes(service)
            .into_iter()
            .filter(|(m, p)| !NOT_THROUGH_THE_GATEWAY.contains(&(m.as_str(), p.as_str())))
            .collect();
        assert!(!declared.is_empty(), "{service}: no routes found");
        let documented = documented(&doc.body, service);
        let missing: Vec<_> = declared.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "{service} serves routes its {service}/openapi.json does not describe: {missing:?}"
        );
        let stale: Vec<_> = documented.difference(&declared).collect();
        assert!(
            stale.is_empty(),
            "{service}/openapi.json describes routes {service} does not serve: {stale:?}"
        );
    }
}

#[tokio::test]
async fn every_public_route_of_the_gateway_is_documented_as_public() {
    let app = spawn_app().await;
    let doc = app.get("/api/v1/openapi.json", None).await.body;
    for (method, path) in gateway::routes::PUBLIC {
        if *method == reqwest::Method::HEAD {
            continue;
        }
        let operation = &doc["paths"][*path][method.as_str().to_ascii_lowercase()];
        assert_eq!(operation["x-access"], "public", "{method} {path}");
    }
    let operations = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .count();
    assert!(operations >= 30, "{operations} operations");
}

#[tokio::test]
async fn every_documented_auth_operation_reaches_a_real_handler() {
    // The real auth service, asked directly: no operation may fall to its router's
    // "no such route" or "method not allowed" answers.
    let app = spawn_app().await;
    let doc = app.get("/api/v1/openapi.json", None).await.body;
    let client = reqwest::Client::new();
    for (method, path) in documented(&doc, "auth") {
        let url = format!("{}{}", app.auth.url(), gateway::openapi::sample_path(&path));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let answer = Answer::from(
            client
                .request(method.clone(), url)
                .json(&json!({}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let fallback = answer.code() == "method_not_allowed"
            || (answer.code() == "not_found" && answer.body["error"]["message"] == "no such route");
        assert!(!fallback, "{method} {path}: {:?}", answer.body);
    }
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let text = response.text().await.unwrap();
    let file = std::env::temp_dir().join(format!(
        "meetease-openapi-{}.json",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&file, &text).unwrap();
    // openapi-spec-validator (PyPI), installed by scripts/test.
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\n\
             from openapi_spec_validator import OpenAPIV31SpecValidator, validate\n\
             validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)\n\
             print('valid')",
        ])
        .arg(&file)
        .output()
        .expect("python3 runs (scripts/test installs openapi-spec-validator)");
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "the document is not valid OpenAPI 3.1 (or python3 lacks openapi-spec-validator: \
         pip install openapi-spec-validator):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_docs_page_works_offline_under_a_strict_csp() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/api/docs", "text/html"),
        ("/api/docs/docs.js", "text/javascript"),
        ("/api/docs/docs.css", "text/css"),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        let text = response.text().await.unwrap();
        // Nothing from another origin: no CDN, works offline.
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{path} loads something from elsewhere"
        );
        if kind == "text/html" {
            assert!(!text.contains("<script>"), "no inline script");
            assert!(text.contains("/api/docs/docs.js"));
        }
    }
}
