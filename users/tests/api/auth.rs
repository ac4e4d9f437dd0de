//! Every route needs a valid access token.

use crate::helpers::TestApp;
use crate::on_both_backends;
use reqwest::StatusCode;

on_both_backends!(
    every_route_without_a_token_is_401,
    a_bad_or_forged_token_is_401,
);

fn routes(id: &str) -> Vec<(reqwest::Method, String)> {
    use reqwest::Method;
    vec![
        (Method::GET, "/api/v1/users/me".into()),
        (Method::PATCH, "/api/v1/users/me".into()),
        (Method::PUT, "/api/v1/users/me/avatar".into()),
        (Method::DELETE, "/api/v1/users/me/avatar".into()),
        (Method::GET, format!("/api/v1/users/{id}")),
        (Method::GET, format!("/api/v1/users/{id}/avatar")),
    ]
}

async fn every_route_without_a_token_is_401(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    for (method, path) in routes(&ada.id) {
        let answer = app
            .send(
                app.client
                    .request(method.clone(), app.url(&path))
                    // `X-User-Id` alone is never trusted.
                    .header("x-user-id", &ada.id)
                    .header("content-type", "application/json")
                    .body("{}"),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(answer.code(), "unauthenticated", "{method} {path}");
    }
}

async fn a_bad_or_forged_token_is_401(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let mut flipped = ada.token.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for token in [
        "garbage",
        "a.b.c",
        // alg none
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.e30.",
        flipped.as_str(),
    ] {
        for (method, path) in routes(&ada.id) {
            let answer = app
                .send(
                    app.client
                        .request(method.clone(), app.url(&path))
                        .bearer_auth(token)
                        .header("content-type", "application/json")
                        .body("{}"),
                )
                .await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token}"
            );
            assert_eq!(answer.code(), "unauthenticated");
        }
    }
}
