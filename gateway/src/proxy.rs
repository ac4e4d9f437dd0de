//! Reverse proxy to one upstream: streaming bodies both ways, hop-by-hop headers
//! stripped, `X-Forwarded-*` set, WebSocket upgrades tunnelled.

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proto::ErrorCode;
use servicekit::{ApiError, StartError};
use std::net::SocketAddr;
use std::time::Duration;

/// How long an upstream may take to start answering an ordinary request.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// One upstream service: a name for logs and its base URL (`http://host:port`).
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: &'static str,
    base: String,
}

impl Upstream {
    /// Parse `http://host:port`; anything else is a configuration error naming `name`.
    pub fn parse(name: &'static str, url: &str) -> Result<Upstream, StartError> {
        let setting = format!("{}_URL", name.to_ascii_uppercase());
        let uri: Uri = url
            .parse()
            .map_err(|_| StartError::setting(&setting, format!("`{url}` is not a URL")))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(StartError::setting(
                &setting,
                format!("`{url}` must look like http://host:port"),
            ));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(StartError::setting(
                &setting,
                format!("`{url}` must not have a path"),
            ));
        }
        let base = format!(
            "http://{}",
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        Ok(Upstream { name, base })
    }

    pub fn base(&self) -> &str {
        &self.base
    }
}

/// A pooled HTTP/1 client shared by every route.
#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Body>,
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

impl Proxy {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client }
    }

    /// Send `request` to `upstream` and stream its answer back.
    pub async fn forward(
        &self,
        upstream: &Upstream,
        mut request: Request<Body>,
        client: SocketAddr,
    ) -> Response {
        let path_and_query = request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let Ok(uri) = format!("{}{}", upstream.base, path_and_query).parse::<Uri>() else {
            return ApiError::new(ErrorCode::MalformedBody, "malformed request target")
                .into_response();
        };
        let upgrade = is_websocket_upgrade(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));

        let (mut parts, body) = request.into_parts();
        parts.uri = uri;
        strip_hop_by_hop(&mut parts.headers, upgrade);
        append_forwarded_for(&mut parts.headers, client);
        parts.headers.remove(header::HOST);

        let outgoing = Request::from_parts(parts, body);
        let answer = if upgrade {
            // The handshake answers at once; the tunnel then lives as long as the socket.
            tokio::time::timeout(Duration::from_secs(10), self.client.request(outgoing)).await
        } else {
            tokio::time::timeout(UPSTREAM_TIMEOUT, self.client.request(outgoing)).await
        };
        let mut response = match answer {
            Err(_) => {
                tracing::warn!(upstream = upstream.name, "upstream timed out");
                return ApiError::new(
                    ErrorCode::UpstreamTimeout,
                    "the service did not answer in time",
                )
                .into_response();
            }
            Ok(Err(err)) => {
                tracing::warn!(upstream = upstream.name, error = %err, "upstream unreachable");
                return ApiError::new(ErrorCode::UpstreamUnavailable, "the service is unavailable")
                    .with_retry_after(1)
                    .into_response();
            }
            Ok(Ok(response)) => response,
        };

        if let Some(client_upgrade) = client_upgrade
            && response.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let name = upstream.name;
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client_io, upstream_io)) => {
                        let mut client_io = TokioIo::new(client_io);
                        let mut upstream_io = TokioIo::new(upstream_io);
                        let _ =
                            tokio::io::copy_bidirectional(&mut client_io, &mut upstream_io).await;
                    }
                    Err(err) => {
                        tracing::debug!(upstream = name, error = %err, "websocket upgrade failed")
                    }
                }
            });
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, Body::empty());
        }

        strip_hop_by_hop(response.headers_mut(), false);
        response.map(Body::new)
    }
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .map(|v| {
                    v.split(',')
                        .any(|part| part.trim().eq_ignore_ascii_case(token))
                })
                .unwrap_or(false)
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// Remove the headers that describe one hop (RFC 9110 §7.6.1), including any the
/// `Connection` header names. An upgrade keeps `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, client: SocketAddr) {
    // The gateway is the edge: whatever the client claims is replaced, never trusted.
    if let Ok(value) = HeaderValue::from_str(&client.ip().to_string()) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_must_be_plain_http_bases() {
        assert_eq!(
            Upstream::parse("auth", "http://127.0.0.1:8001")
                .unwrap()
                .base(),
            "http://127.0.0.1:8001"
        );
        let err = Upstream::parse("auth", "ftp://x").unwrap_err();
        assert_eq!(err.setting.as_deref(), Some("AUTH_URL"));
        assert!(Upstream::parse("auth", "http://h:1/path").is_err());
        assert!(Upstream::parse("auth", "not a url").is_err());
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.get("x-secret-hop").is_none());
        assert!(headers.get(header::TE).is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get("x-kept").is_some());
    }
}
