//! Hostile input: clean 4xx answers with stable codes, never a hang or a crash.

use crate::helpers::*;
use reqwest::StatusCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
    let app = spawn_app().await;
    let answer = Answer::from(
        app.client
            .post(app.url("/api/v1/auth/login"))
            .body(vec![b'x'; 2 * 1024 * 1024])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "payload_too_large");
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_cut_off() {
    let app = spawn_app().await;
    let session = app.register("stream@example.com").await;
    let chunks = futures_util::stream::iter((0..40).map(|_| {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(vec![
            b'x';
            64 * 1024
        ])))
    }));
    let answer = Answer::from(
        app.client
            .post(app.url("/api/v1/meetings"))
            .bearer_auth(&session.access_token)
            .body(reqwest::Body::wrap(http_body_util::StreamBody::new(chunks)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        answer.body
    );
    assert_eq!(answer.code(), "payload_too_large");
}

#[tokio::test]
async fn the_avatar_upload_may_be_larger_than_other_bodies() {
    let app = spawn_app().await;
    let session = app.register("avatar@example.com").await;
    let answer = Answer::from(
        app.client
            .put(app.url("/api/v1/users/me/avatar"))
            .bearer_auth(&session.access_token)
            .body(vec![0u8; 3 * 1024 * 1024])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["body_len"], 3 * 1024 * 1024);
}

#[tokio::test]
async fn dot_segments_and_encoded_slashes_are_refused() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/auth/login/../../users/me",
        "/api/v1/auth/%2e%2e/users/me",
        "/api/v1/auth%2Flogin",
        "/api//v1/users/me",
    ] {
        // Raw socket: HTTP clients normalise dot segments themselves.
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = raw(app.addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("malformed_request"), "{path}: {answer}");
    }
}

#[tokio::test]
async fn bad_headers_get_clean_answers() {
    let app = spawn_app().await;
    // A non-UTF-8 bearer token.
    let answer = raw(
        app.addr,
        b"GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("unauthenticated"), "{answer}");
    // An absurdly long token.
    let long = "a".repeat(20_000);
    let answer = app.get("/api/v1/users/me", Some(&long)).await;
    assert_eq!(answer.code(), "unauthenticated");
    // A malformed Content-Length never reaches a service.
    let answer = raw(
        app.addr,
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected() {
    let app = spawn_app().await;
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(b"GET /api/v1/auth/jwks HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The test server's header deadline is 500 ms.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), socket.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection stayed open");
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_off_with_408() {
    let app = spawn_app_with(Mode::Embedded, |edge| {
        edge.body_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"em")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buf)).await;
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}
