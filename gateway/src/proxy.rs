//! Reverse proxy to one upstream: streaming bodies both ways, hop-by-hop headers
//! stripped, `X-Forwarded-*` set, WebSocket upgrades tunnelled. Policy (which
//! upstream, identity, limits, retries, breakers) lives in [`crate::edge`].

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{Request, StatusCode, Uri};
use axum::response::Response;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use servicekit::StartError;
use std::net::IpAddr;
use std::time::Duration;

/// One upstream service: a name for logs and the base URLs of its instances
/// (`http://host:port`), balanced by [`crate::pool::Pool`].
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: &'static str,
    bases: Vec<String>,
}

impl Upstream {
    /// Parse `http://host:port`, or several separated by commas (one per instance);
    /// anything else is a configuration error naming `name`.
    pub fn parse(name: &'static str, urls: &str) -> Result<Upstream, StartError> {
        let setting = format!("{}_URL", name.to_ascii_uppercase());
        let mut bases = Vec::new();
        for url in urls.split(',').map(str::trim) {
            let base = parse_base(url).map_err(|why| StartError::setting(&setting, why))?;
            if bases.contains(&base) {
                return Err(StartError::setting(
                    &setting,
                    format!("`{url}` is listed twice"),
                ));
            }
            bases.push(base);
        }
        if bases.len() > crate::pool::MAX_INSTANCES {
            return Err(StartError::setting(
                &setting,
                format!("at most {} instances", crate::pool::MAX_INSTANCES),
            ));
        }
        Ok(Upstream { name, bases })
    }

    /// The first instance's base URL (where the gateway reads auth's JWKS).
    pub fn base(&self) -> &str {
        // `parse` never returns an empty list: `split` yields at least one item,
        // and an empty item is refused.
        &self.bases[0]
    }

    /// Every instance's base URL, in configuration order.
    pub fn bases(&self) -> &[String] {
        &self.bases
    }
}

fn parse_base(url: &str) -> Result<String, String> {
    let uri: Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!("`{url}` must look like http://host:port"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!("`{url}` must not have a path"));
    }
    Ok(format!(
        "http://{}",
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    ))
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

    /// Send `request` to `upstream` and stream its answer back. `timeout` bounds
    /// the wait for the response head (the body then streams on its own); a
    /// WebSocket handshake, once answered with 101, becomes a tunnel that lives as
    /// long as both sockets.
    pub async fn forward(
        &self,
        name: &'static str,
        authority: &Authority,
        mut request: Request<Body>,
        client: IpAddr,
        timeout: Duration,
        tunnel_guard: Option<Box<dyn Send>>,
    ) -> Result<Response, ForwardError> {
        // Built from parts: the instance's authority (parsed once, at start-up)
        // and the request's own path and query (shared bytes), never re-parsed.
        let mut target = axum::http::uri::Parts::default();
        target.scheme = Some(Scheme::HTTP);
        target.authority = Some(authority.clone());
        target.path_and_query = Some(
            request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        let uri = Uri::from_parts(target).map_err(|_| ForwardError::BadTarget)?;
        let upgrade = is_websocket_upgrade(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));

        let (mut parts, body) = request.into_parts();
        parts.uri = uri;
        strip_hop_by_hop(&mut parts.headers, upgrade);
        set_forwarded_for(&mut parts.headers, client);
        parts.headers.remove(header::HOST);
        // Extensions are the gateway's own (connection info, matched path, upgrade
        // handle): none of them belongs to the next hop.
        parts.extensions = Default::default();

        let outgoing = Request::from_parts(parts, body);
        let mut response = match tokio::time::timeout(timeout, self.client.request(outgoing)).await
        {
            Err(_) => return Err(ForwardError::Timeout),
            Ok(Err(err)) if err.is_connect() => return Err(ForwardError::Connect(err.to_string())),
            Ok(Err(err)) => return Err(ForwardError::Exchange(error_chain(&err))),
            Ok(Ok(response)) => response,
        };

        if let Some(client_upgrade) = client_upgrade
            && response.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                // Held for as long as the tunnel lives: the cap on open tunnels and
                // the instance's count of exchanges in flight.
                let _guard = tunnel_guard;
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
            return Ok(Response::from_parts(parts, Body::empty()));
        }

        strip_hop_by_hop(response.headers_mut(), false);
        Ok(response.map(Body::new))
    }

    /// `GET {upstream}/health`: the status it answered within `timeout`.
    pub async fn probe(&self, base: &str, timeout: Duration) -> Result<StatusCode, ForwardError> {
        let uri = format!("{base}/health")
            .parse::<Uri>()
            .map_err(|_| ForwardError::BadTarget)?;
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = uri;
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            // Read the (small) body so the connection goes back to the pool.
            let _ = http_body_util::BodyExt::collect(response.into_body()).await;
            Ok::<_, hyper_util::client::legacy::Error>(status)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(ForwardError::Timeout),
            Ok(Err(err)) if err.is_connect() => Err(ForwardError::Connect(error_chain(&err))),
            Ok(Err(err)) => Err(ForwardError::Exchange(error_chain(&err))),
            Ok(Ok(status)) => Ok(status),
        }
    }
}

/// Why an exchange with an upstream failed. Each counts against its breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardError {
    /// No connection could be made: nothing was sent, so any request may be retried.
    Connect(String),
    /// The connection broke during the exchange (or the request body failed).
    Exchange(String),
    /// No response head within the route's timeout.
    Timeout,
    /// The request target cannot be combined with the upstream's base.
    BadTarget,
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
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

fn set_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    // The gateway is the edge: whatever the client claims is replaced, never trusted.
    if let Ok(value) = HeaderValue::from_str(&client.to_string()) {
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
    fn an_upstream_may_list_several_instances() {
        let upstream =
            Upstream::parse("users", "http://127.0.0.1:8002, http://127.0.0.1:9002").unwrap();
        assert_eq!(
            upstream.bases(),
            ["http://127.0.0.1:8002", "http://127.0.0.1:9002"]
        );
        assert_eq!(upstream.base(), "http://127.0.0.1:8002");
        for bad in [
            "http://a:1,",
            "http://a:1,,http://b:2",
            "http://a:1,http://a:1",
            "http://a:1,ftp://b",
        ] {
            let err = Upstream::parse("users", bad).unwrap_err();
            assert_eq!(err.setting.as_deref(), Some("USERS_URL"), "{bad}");
        }
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
