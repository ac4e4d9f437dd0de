//! One OpenAPI 3.1 document for the whole public API, and the route templates
//! the gateway labels its metrics and access lines with.
//!
//! Each service keeps its own fragment beside its code (`<service>/openapi.json`:
//! `paths` and `components.schemas`, hand-maintained). The gateway embeds them at
//! compile time and merges them with its own part: the error envelope and the
//! registry of error codes (`proto::ErrorCode`), the bearer scheme, the
//! `RateLimit-*`/`Retry-After` headers, and on every operation what the gateway
//! itself may answer (401 on token routes, 429, 503, 504, …) and whether it needs
//! a token — taken from the gateway's own route table ([`crate::routes`]), so the
//! document cannot claim a route is public when the gateway wants a token.
//!
//! Served at `GET /api/v1/openapi.json`; `GET /api/docs` is a page that renders it
//! with no third-party code (works offline, under a strict CSP). The gateway's
//! tests check that every route each service's router declares is documented and
//! every documented route is served, so the document cannot silently rot.

use crate::routes::{self, Access, UpstreamId};
use axum::http::Method;
use proto::ErrorCode;
use serde_json::{Map, Value, json};
use std::sync::{Arc, OnceLock};

/// The services' fragments, embedded at compile time.
pub const FRAGMENTS: &[(UpstreamId, &str)] = &[
    (UpstreamId::Auth, include_str!("../../auth/openapi.json")),
    (UpstreamId::Users, include_str!("../../users/openapi.json")),
    (
        UpstreamId::Signaling,
        include_str!("../../signaling/openapi.json"),
    ),
    (
        UpstreamId::Notify,
        include_str!("../../notify/openapi.json"),
    ),
    (
        UpstreamId::Analytics,
        include_str!("../../analytics/openapi.json"),
    ),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch"];

/// The merged document (built once; an error names the fragment at fault).
pub fn document() -> Result<&'static Value, String> {
    static DOC: OnceLock<Result<Value, String>> = OnceLock::new();
    DOC.get_or_init(build).as_ref().map_err(Clone::clone)
}

/// `{id}`-style templates filled with a sample value, to ask the route table.
pub fn sample_path(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                "sample"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn build() -> Result<Value, String> {
    let mut doc = base();
    for (upstream, text) in FRAGMENTS {
        let name = upstream.name();
        let fragment: Value = serde_json::from_str(text)
            .map_err(|err| format!("{name}/openapi.json is not JSON: {err}"))?;
        let paths = fragment["paths"]
            .as_object()
            .ok_or_else(|| format!("{name}/openapi.json has no `paths` object"))?;
        for (path, item) in paths {
            let item = item
                .as_object()
                .ok_or_else(|| format!("{name}: {path} is not an object"))?;
            let mut merged = Map::new();
            for (method, operation) in item {
                if !METHODS.contains(&method.as_str()) {
                    merged.insert(method.clone(), operation.clone());
                    continue;
                }
                let verb = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("{name}: {method} {path}: not a method"))?;
                let route = routes::classify(&verb, &sample_path(path)).ok_or_else(|| {
                    format!("{name}: {method} {path} is not routed by the gateway")
                })?;
                if route.upstream != *upstream {
                    return Err(format!(
                        "{name}: {method} {path} is routed to {}",
                        route.upstream.name()
                    ));
                }
                let mut operation = operation.clone();
                decorate(&mut operation, route.access, name, method, path)?;
                merged.insert(method.clone(), operation);
            }
            if doc["paths"].get(path).is_some() {
                return Err(format!("{name}: {path} is documented twice"));
            }
            doc["paths"][path] = Value::Object(merged);
        }
        if let Some(schemas) = fragment["components"]["schemas"].as_object() {
            for (schema, value) in schemas {
                if doc["components"]["schemas"].get(schema).is_some() {
                    return Err(format!("{name}: schema {schema} is defined twice"));
                }
                doc["components"]["schemas"][schema] = value.clone();
            }
        }
    }
    Ok(doc)
}

/// What the gateway adds to every routed operation: its security requirement and
/// its own answers, and the error codes it may produce merged into `x-error-codes`.
fn decorate(
    operation: &mut Value,
    access: Access,
    service: &str,
    method: &str,
    path: &str,
) -> Result<(), String> {
    let at = || format!("{service}: {method} {path}");
    let object = operation
        .as_object_mut()
        .ok_or_else(|| format!("{}: not an object", at()))?;
    let mut codes: Vec<String> = match object.get("x-error-codes") {
        None => Vec::new(),
        Some(list) => list
            .as_array()
            .ok_or_else(|| format!("{}: x-error-codes is not a list", at()))?
            .iter()
            .map(|code| {
                let code = code.as_str().unwrap_or_default();
                if ErrorCode::ALL.iter().any(|known| known.as_str() == code) {
                    Ok(code.to_owned())
                } else {
                    Err(format!("{}: `{code}` is not in proto::ErrorCode", at()))
                }
            })
            .collect::<Result<_, _>>()?,
    };
    let mut gateway_codes = vec![
        ErrorCode::MalformedRequest,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::RateLimited,
        ErrorCode::ServiceUnavailable,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::UpstreamTimeout,
    ];
    let responses = object
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| format!("{}: responses is not an object", at()))?;
    let mut add = |status: &str, reference: &str| {
        responses
            .entry(status)
            .or_insert_with(|| json!({ "$ref": format!("#/components/responses/{reference}") }));
    };
    add("400", "MalformedRequest");
    add("408", "RequestTimeout");
    add("413", "PayloadTooLarge");
    add("429", "RateLimited");
    add("503", "Unavailable");
    add("504", "UpstreamTimeout");
    add("default", "Error");
    match access {
        Access::Token => {
            add("401", "Unauthenticated");
            gateway_codes.extend([
                ErrorCode::Unauthenticated,
                ErrorCode::TokenExpired,
                ErrorCode::TokenRevoked,
            ]);
            object.insert("security".into(), json!([{ "bearer": [] }]));
        }
        Access::Public => {
            // A token is optional: when valid, the service learns who is calling.
            object.insert("security".into(), json!([{}, { "bearer": [] }]));
        }
    }
    for code in gateway_codes {
        if !codes.iter().any(|c| c == code.as_str()) {
            codes.push(code.as_str().to_owned());
        }
    }
    object.insert("x-error-codes".into(), json!(codes));
    object.insert(
        "x-access".into(),
        json!(match access {
            Access::Public => "public",
            Access::Token => "token",
        }),
    );
    Ok(())
}

/// The gateway's own part of the document.
fn base() -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let statuses: Map<String, Value> = ErrorCode::ALL
        .iter()
        .map(|c| (c.as_str().to_owned(), json!(c.http_status())))
        .collect();
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        })
    };
    let rate_headers = json!({
        "RateLimit-Limit": {"$ref": "#/components/headers/RateLimit-Limit"},
        "RateLimit-Remaining": {"$ref": "#/components/headers/RateLimit-Remaining"},
        "RateLimit-Reset": {"$ref": "#/components/headers/RateLimit-Reset"},
        "Retry-After": {"$ref": "#/components/headers/Retry-After"},
    });
    let mut rate_limited = error(
        "Too many requests (`rate_limited`): per address, per user, and stricter on sign-in, sign-up and password routes.",
    );
    rate_limited["headers"] = rate_headers;
    let mut unavailable = error(
        "The service is unavailable (`upstream_unavailable`, every instance down or its breaker open) or the gateway is at capacity (`service_unavailable`).",
    );
    unavailable["headers"] = json!({"Retry-After": {"$ref": "#/components/headers/Retry-After"}});
    let plain = |description: &str, schema: Value| json!({"description": description, "content": {"application/json": {"schema": schema}}});
    let upstream_health = upstream_health_schema();
    let paths = json!({
        "/health": {"get": {
            "tags": ["gateway"], "summary": "Liveness of the gateway (whatever its upstreams do)",
            "responses": {"200": plain("Alive.", json!({"type": "object", "properties": {"status": {"type": "string"}}}))},
        }},
        "/health/upstreams": {"get": {
            "tags": ["gateway"], "summary": "Each upstream's breaker and each instance's health and last probe",
            "responses": {"200": plain("The view (200 even when degraded).", json!({"$ref": "#/components/schemas/UpstreamHealth"}))},
        }},
        "/api/v1/openapi.json": {"get": {
            "tags": ["gateway"], "summary": "This document",
            "responses": {"200": plain("OpenAPI 3.1.", json!({"type": "object"}))},
        }},
        "/api/docs": {"get": {
            "tags": ["gateway"], "summary": "A page that renders this document (no third-party code; works offline)",
            "responses": {"200": {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}}},
        }},
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "MeetEase API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every public route of MeetEase, as served by the gateway. Errors share one envelope `{\"error\": {\"code\", \"message\"}}`; `code` is stable (see the ErrorCode schema), `message` is for people. Each API answer carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a 429 or 503 carries `Retry-After`. Every answer carries `X-Request-Id` (sent by the client or generated).",
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "auth", "description": "Accounts, sessions and tokens (the auth service)."},
            {"name": "users", "description": "Profiles, preferences and avatars (the users service)."},
            {"name": "meetings", "description": "Meetings and the signaling WebSocket (the signaling service)."},
            {"name": "notifications", "description": "Real-time alerts (the notify service)."},
            {"name": "analytics", "description": "Meeting and platform figures (the analytics service)."},
            {"name": "gateway", "description": "The gateway's own routes."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "An access token from auth (sign-in, sign-up or refresh). The gateway verifies it and checks revocation; the service verifies it again."},
            },
            "headers": {
                "RateLimit-Limit": {"description": "Requests allowed in a burst.", "schema": {"type": "integer"}},
                "RateLimit-Remaining": {"description": "Requests left now.", "schema": {"type": "integer"}},
                "RateLimit-Reset": {"description": "Seconds until the budget is full again.", "schema": {"type": "integer"}},
                "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}},
            },
            "responses": {
                "Error": error("An error; `code` says which (see x-error-codes)."),
                "Unauthenticated": error("No valid access token (`unauthenticated`, `token_expired`, `token_revoked`)."),
                "MalformedRequest": error("A path or header the gateway refuses (`malformed_request`)."),
                "RequestTimeout": error("The request body arrived too slowly (`request_timeout`)."),
                "PayloadTooLarge": error("The request body is too large (`payload_too_large`): 1 MiB, 8 MiB for the avatar."),
                "RateLimited": rate_limited,
                "Unavailable": unavailable,
                "UpstreamTimeout": error("The service did not answer in time (`upstream_timeout`)."),
            },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"$ref": "#/components/schemas/ErrorCode"},
                        "message": {"type": "string", "description": "For people; may change."},
                    }}},
                },
                "ErrorCode": {
                    "type": "string", "enum": codes,
                    "description": "A stable, machine-readable error code. `x-http-status` gives the status each is answered with.",
                    "x-http-status": statuses,
                },
                "UpstreamHealth": upstream_health,
            },
        },
    })
}

fn upstream_health_schema() -> Value {
    json!({
        "type": "object", "required": ["status", "upstreams"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "upstreams": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["breaker", "instances"],
                "properties": {
                    "breaker": {"type": "string", "enum": ["closed", "half_open", "open"], "description": "Open only when every instance is ejected."},
                    "instances": {"type": "array", "items": {
                        "type": "object", "required": ["address", "state", "consecutive_failures", "in_flight"],
                        "properties": {
                            "address": {"type": "string"},
                            "state": {"type": "string", "enum": ["up", "probation", "ejected"]},
                            "consecutive_failures": {"type": "integer"},
                            "in_flight": {"type": "integer"},
                            "last_probe": {"type": ["object", "null"], "properties": {
                                "ok": {"type": "boolean"}, "at_ms": {"type": "integer"},
                                "latency_ms": {"type": "number"}, "detail": {"type": "string"},
                            }},
                        },
                    }},
                },
            }},
        },
    })
}

/// The route templates of one upstream, to label a request by the route it
/// matched (bounded: the documented templates, plus one "unknown" per upstream).
pub struct RouteTemplates {
    /// Indexed by [`UpstreamId::index`].
    by_upstream: Vec<Vec<Template>>,
    unknown: Vec<Arc<str>>,
    unrouted: Arc<str>,
}

struct Template {
    text: Arc<str>,
    /// `None` for a `{parameter}` segment.
    segments: Vec<Option<Box<str>>>,
    literals: usize,
}

impl RouteTemplates {
    pub fn from_document(doc: &Value) -> Self {
        let mut by_upstream: Vec<Vec<Template>> =
            UpstreamId::ALL.iter().map(|_| Vec::new()).collect();
        if let Some(paths) = doc["paths"].as_object() {
            for path in paths.keys() {
                let Some(route) = routes::classify(&Method::GET, &sample_path(path))
                    .or_else(|| routes::classify(&Method::POST, &sample_path(path)))
                else {
                    continue;
                };
                let segments: Vec<Option<Box<str>>> = path
                    .split('/')
                    .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.into()))
                    .collect();
                let literals = segments.iter().filter(|s| s.is_some()).count();
                by_upstream[route.upstream.index()].push(Template {
                    text: Arc::from(path.as_str()),
                    segments,
                    literals,
                });
            }
        }
        Self {
            by_upstream,
            unknown: UpstreamId::ALL
                .iter()
                .map(|id| Arc::from(format!("<unknown {} route>", id.name())))
                .collect(),
            unrouted: Arc::from("<unrouted>"),
        }
    }

    /// The template `path` matches among `upstream`'s (literal segments win over
    /// parameters), or that upstream's "unknown" label.
    pub fn find(&self, upstream: UpstreamId, path: &str) -> Arc<str> {
        let count = path.split('/').count();
        let mut best: Option<&Template> = None;
        for template in &self.by_upstream[upstream.index()] {
            if template.segments.len() != count
                || best.is_some_and(|b| b.literals >= template.literals)
            {
                continue;
            }
            let matches =
                template
                    .segments
                    .iter()
                    .zip(path.split('/'))
                    .all(|(want, got)| match want {
                        Some(literal) => **literal == *got,
                        None => !got.is_empty(),
                    });
            if matches {
                best = Some(template);
            }
        }
        best.map_or_else(
            || self.unknown[upstream.index()].clone(),
            |t| t.text.clone(),
        )
    }

    /// The label of a path no upstream owns.
    pub fn unrouted(&self) -> Arc<str> {
        self.unrouted.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_merges_every_fragment() {
        let doc = document().expect("the fragments merge");
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/api/v1/auth/login",
            "/api/v1/users/me",
            "/api/v1/meetings/{meeting}/join",
            "/api/v1/notifications/stream",
            "/api/v1/analytics/platform",
            "/rtc",
            "/health/upstreams",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
        // Access comes from the gateway's route table.
        assert_eq!(
            doc["paths"]["/api/v1/auth/login"]["post"]["x-access"],
            "public"
        );
        assert_eq!(doc["paths"]["/api/v1/users/me"]["get"]["x-access"], "token");
        assert_eq!(
            doc["paths"]["/api/v1/meetings/{meeting}"]["get"]["x-access"],
            "public"
        );
        assert_eq!(
            doc["paths"]["/api/v1/meetings/{meeting}"]["patch"]["x-access"],
            "token"
        );
        let codes = doc["paths"]["/api/v1/users/me"]["get"]["x-error-codes"]
            .as_array()
            .unwrap();
        assert!(codes.contains(&json!("rate_limited")));
        assert!(codes.contains(&json!("token_revoked")));
    }

    #[test]
    fn route_templates_prefer_literal_segments_and_bound_the_rest() {
        let templates = RouteTemplates::from_document(document().unwrap());
        assert_eq!(
            &*templates.find(UpstreamId::Users, "/api/v1/users/me"),
            "/api/v1/users/me"
        );
        assert_eq!(
            &*templates.find(UpstreamId::Users, "/api/v1/users/0190a0b0"),
            "/api/v1/users/{id}"
        );
        assert_eq!(
            &*templates.find(UpstreamId::Signaling, "/api/v1/meetings/abc-def/join"),
            "/api/v1/meetings/{meeting}/join"
        );
        assert_eq!(&*templates.find(UpstreamId::Signaling, "/rtc"), "/rtc");
        assert_eq!(
            &*templates.find(UpstreamId::Users, "/api/v1/users/a/b/c/d"),
            "<unknown users route>"
        );
        assert_eq!(
            &*templates.find(UpstreamId::Users, "/api/v1/users//avatar"),
            "<unknown users route>"
        );
    }
}
