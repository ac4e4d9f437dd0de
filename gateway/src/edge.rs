//! The request pipeline for every routed request (`/api/v1/*`, `/rtc`):
//!
//! 1. refuse paths with dot segments or encoded separators (`malformed_request`);
//! 2. find the route ([`crate::routes`]) or answer `not_found`;
//! 3. rate-limit by client address (and, for credential routes, a stricter
//!    per-address budget) — before any token is verified, so a flood of bogus
//!    tokens costs one Redis call each;
//! 4. identity ([`crate::identity`]): strip client `X-User-*` headers, verify the
//!    bearer token (required unless the route is public), set `X-User-Id`;
//! 5. rate-limit by user;
//! 6. body limits (declared length at once, streamed bytes as they come) and the
//!    concurrency cap;
//! 7. an instance of the upstream ([`crate::pool`]: fewest in flight among those
//!    not ejected; every instance ejected is the upstream's open breaker), then
//!    the exchange with the route class's timeout. A request without a body is
//!    retried on another instance when no connection could be made, and an
//!    idempotent one also when the exchange broke.

use crate::access;
use crate::body::{Cut, CutFlag, GuardedBody, Holding};
use crate::edge_metrics::{EdgeMetrics, Outcome};
use crate::identity;
use crate::openapi::RouteTemplates;
use crate::pool::{Instance, Pick, Pool};
use crate::proxy::{ForwardError, Proxy, is_websocket_upgrade};
use crate::ratelimit::{Decision, EdgeAnswer, EdgeCheck, Quota, RateLimiter};
use crate::routes::{self, Access, Route, RouteClass, UpstreamId};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::http::header::{CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING};
use axum::response::{IntoResponse, Response};
use proto::ErrorCode;
use proto::auth::AccessClaims;
use servicekit::ApiError;
use servicekit::metrics::RouteTemplate;
use servicekit::tokens::{TokenError, TokenVerifier};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Everything about the edge's behaviour that configuration decides.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Every routed request, per client address.
    pub per_ip: Quota,
    /// Every request with a valid token, per user.
    pub per_user: Quota,
    /// Sign-in, sign-up and password routes, per client address (on top of `per_ip`).
    pub credentials: Quota,
    /// Prefix of the rate-limit keys in Redis.
    pub rate_limit_prefix: String,
    /// How long to wait for a response head, per route class.
    pub api_timeout: Duration,
    pub credentials_timeout: Duration,
    pub upload_timeout: Duration,
    pub rtc_timeout: Duration,
    /// Largest request body for API routes and for the avatar upload.
    pub api_body_limit: usize,
    pub upload_body_limit: usize,
    /// A request body that sends nothing for this long is cut off (slow clients).
    pub body_idle_timeout: Duration,
    /// Requests in flight at once (from routing to the end of the response body);
    /// beyond that, 503 at once.
    pub max_concurrent_requests: usize,
    /// Open `/rtc` WebSocket tunnels at once.
    pub max_tunnels: usize,
    /// Passive health of each instance: failures in a row that eject it, and for how long.
    pub breaker: crate::breaker::BreakerConfig,
    /// How often each instance's `/health` is probed.
    pub probe_interval: Duration,
    /// Extra attempts (on another instance when there is one) for a request without
    /// a body when no connection could be made, or — idempotent methods only —
    /// when the exchange broke.
    pub connect_retries: u32,
    /// Origins allowed to call the API from another site (CORS). Empty: same origin only.
    pub cors_origins: Vec<String>,
    /// Peers (load balancers) whose `X-Forwarded-For` names the real client.
    /// Proxies (addresses or ranges) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<servicekit::net::IpNet>,
    /// Clock leeway when checking `exp`/`nbf` (at most 5 s).
    pub token_leeway: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            per_ip: Quota::new(50, Duration::from_secs(1), 200),
            per_user: Quota::new(30, Duration::from_secs(1), 120),
            credentials: Quota::new(20, Duration::from_secs(60), 20),
            rate_limit_prefix: "gateway:rl:".to_owned(),
            api_timeout: Duration::from_secs(15),
            credentials_timeout: Duration::from_secs(15),
            upload_timeout: Duration::from_secs(60),
            rtc_timeout: Duration::from_secs(10),
            api_body_limit: 1024 * 1024,
            upload_body_limit: 8 * 1024 * 1024,
            body_idle_timeout: Duration::from_secs(10),
            max_concurrent_requests: 1024,
            max_tunnels: 10_000,
            breaker: crate::breaker::BreakerConfig::default(),
            probe_interval: Duration::from_secs(2),
            connect_retries: 2,
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            token_leeway: Duration::from_secs(proto::auth::MAX_LEEWAY_SECS),
        }
    }
}

impl EdgeConfig {
    fn timeout(&self, class: RouteClass) -> Duration {
        match class {
            RouteClass::Api => self.api_timeout,
            RouteClass::Credentials => self.credentials_timeout,
            RouteClass::Upload => self.upload_timeout,
            RouteClass::Rtc => self.rtc_timeout,
        }
    }

    fn body_limit(&self, class: RouteClass) -> usize {
        match class {
            RouteClass::Upload => self.upload_body_limit,
            _ => self.api_body_limit,
        }
    }
}

/// Tokens remembered as verified at most (about 1 KiB each).
const VERIFIED_TOKENS: usize = 50_000;
/// How long a verified signature is remembered at most.
const VERIFIED_FOR: Duration = Duration::from_secs(60);

/// The shared state of the pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Edge {
    inner: Arc<EdgeInner>,
}

struct EdgeInner {
    /// Indexed by [`UpstreamId::index`].
    upstreams: Vec<Pool>,
    proxy: Proxy,
    verifier: TokenVerifier,
    limiter: Arc<dyn RateLimiter>,
    /// With Redis: address limits, revocation and user limit in one round trip.
    combined: Option<EdgeCheck>,
    /// Tokens whose signature already verified (used with `combined`).
    verified: identity::VerifiedTokens,
    config: EdgeConfig,
    requests: Arc<Semaphore>,
    tunnels: Arc<Semaphore>,
    metrics: EdgeMetrics,
    templates: RouteTemplates,
}

impl Edge {
    pub fn new(
        upstreams: &crate::Upstreams,
        verifier: TokenVerifier,
        limiter: Arc<dyn RateLimiter>,
        combined: Option<EdgeCheck>,
        config: EdgeConfig,
        metrics: EdgeMetrics,
        templates: RouteTemplates,
    ) -> Self {
        let upstreams = UpstreamId::ALL
            .iter()
            .map(|id| {
                let upstream = upstreams.get(*id);
                Pool::new(upstream.name, upstream.bases(), config.breaker)
            })
            .collect();
        Self {
            inner: Arc::new(EdgeInner {
                upstreams,
                proxy: Proxy::new(),
                verifier,
                limiter,
                combined,
                verified: identity::VerifiedTokens::new(
                    VERIFIED_TOKENS,
                    VERIFIED_FOR,
                    config.token_leeway,
                ),
                requests: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
                tunnels: Arc::new(Semaphore::new(config.max_tunnels.max(1))),
                config,
                metrics,
                templates,
            }),
        }
    }

    pub fn upstream(&self, id: UpstreamId) -> &Pool {
        &self.inner.upstreams[id.index()]
    }

    pub fn proxy(&self) -> &Proxy {
        &self.inner.proxy
    }

    pub fn metrics(&self) -> &EdgeMetrics {
        &self.inner.metrics
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.inner.config
    }

    /// The client's address: the peer, or — when the peer is a trusted proxy —
    /// the right-most `X-Forwarded-For` entry that is not one.
    fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = &self.inner.config.trusted_proxies;
        if !servicekit::net::any_contains(trusted, peer) {
            return peer;
        }
        let mut hops: Vec<IpAddr> = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(value) = value.to_str() else {
                return peer;
            };
            for hop in value.split(',') {
                match hop.trim().parse() {
                    Ok(ip) => hops.push(ip),
                    Err(_) => return peer,
                }
            }
        }
        hops.into_iter()
            .rev()
            .find(|ip| !servicekit::net::any_contains(trusted, *ip))
            .unwrap_or(peer)
    }

    /// Count one request against `key`; a limiter outage lets the request through
    /// (logged and counted) rather than taking the whole API down with Redis.
    async fn limit(&self, key: &str, quota: Quota) -> Option<Decision> {
        match self.inner.limiter.check(key, quota).await {
            Ok(decision) => Some(decision),
            Err(err) => {
                tracing::warn!(error = %err, "rate limiter unavailable; request let through");
                self.inner.metrics.refused("limiter_unavailable");
                None
            }
        }
    }

    fn refuse(&self, reason: &'static str, error: ApiError) -> Response {
        self.inner.metrics.refused(reason);
        error.into_response()
    }
}

/// The handler for every routed path. Each answer carries its route template
/// (for the per-route metrics) and an [`access::Note`] (for the access line).
pub async fn handle(
    State(edge): State<Edge>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let path = request.uri().path();
    let templates = &edge.inner.templates;
    let mut note = access::Note {
        client_ip: peer.ip(),
        user_id: None,
        upstream: None,
        instance: None,
    };
    let (template, mut response) = if routes::is_suspicious(path) {
        let refused = edge.refuse(
            "malformed_request",
            ApiError::new(ErrorCode::MalformedRequest, "malformed request path"),
        );
        (templates.unrouted(), refused)
    } else if let Some(route) = routes::classify(request.method(), path) {
        let template = templates.find(route.upstream, path);
        note.upstream = Some(route.upstream.name());
        note.client_ip = edge.client_ip(peer.ip(), request.headers());
        (template, pipeline(&edge, route, request, &mut note).await)
    } else {
        let refused = edge.refuse(
            "not_found",
            ApiError::new(ErrorCode::NotFound, "no such API"),
        );
        (templates.unrouted(), refused)
    };
    let extensions = response.extensions_mut();
    extensions.insert(RouteTemplate(template));
    extensions.insert(note);
    response
}

async fn pipeline(
    edge: &Edge,
    route: Route,
    request: Request,
    note: &mut access::Note,
) -> Response {
    let client_ip = note.client_ip;
    let config = edge.config();
    let address: Vec<(String, Quota)> = [
        Some(("ip", config.per_ip)),
        (route.class == RouteClass::Credentials).then_some(("cred", config.credentials)),
    ]
    .into_iter()
    .flatten()
    .map(|(bucket, quota)| (format!("{bucket}:{client_ip}"), quota))
    .collect();
    let (mut parts, body) = request.into_parts();
    identity::strip_identity(&mut parts.headers);
    let bearer = match (route.access, identity::bearer(&parts.headers)) {
        (_, Ok(token)) => token,
        (Access::Public, Err(_)) => None,
        (Access::Token, Err(err)) => {
            return match limit_address(edge, &address).await {
                Ok(_) => edge.refuse("unauthenticated", err.into()),
                Err(refused) => refused,
            };
        }
    };

    let checked = match (&edge.inner.combined, bearer) {
        // Redis: the signature first (no I/O), then one round trip for the
        // address limits, the revocation and the user's limit.
        (Some(combined), Some(token)) => match verify_signed(edge, token).await {
            Ok(claims) => combined_check(edge, combined, route, &address, claims).await,
            Err(err) => bad_token(edge, route, &address, err).await,
        },
        // Otherwise one check after the other: address limits (before any token
        // work), identity, the user's limit.
        (_, token) => separate_checks(edge, route, &address, token).await,
    };
    let (claims, shown) = match checked {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    if let Some(claims) = &claims {
        identity::set_identity(&mut parts.headers, claims);
        if tracing::enabled!(target: access::TARGET, tracing::Level::INFO) {
            note.user_id = Some(claims.sub.to_string());
        }
    }

    let mut response = forward(edge, route, client_ip, parts, body, note).await;
    if let Some(decision) = shown {
        set_rate_headers(response.headers_mut(), &decision);
    }
    response
}

/// The caller (when known) and the rate-limit decision to show, or the refusal.
type Checked = Result<(Option<Arc<AccessClaims>>, Option<Decision>), Response>;

/// Signature and claims, from the cache of tokens already verified when there.
async fn verify_signed(edge: &Edge, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
    if let Some(claims) = edge.inner.verified.get(token) {
        return Ok(claims);
    }
    let claims = edge.inner.verifier.verify_signed(token).await?;
    Ok(edge.inner.verified.put(token, claims))
}

fn tighter(shown: Option<Decision>, decisions: &[Decision]) -> Option<Decision> {
    decisions
        .iter()
        .fold(shown, |shown, d| Some(shown.map_or(*d, |s| s.tighter(*d))))
}

/// The address buckets one by one; the decision to show, or the refusal.
async fn limit_address(
    edge: &Edge,
    address: &[(String, Quota)],
) -> Result<Option<Decision>, Response> {
    let mut shown = None;
    for (key, quota) in address {
        if let Some(decision) = edge.limit(key, *quota).await {
            if !decision.allowed {
                return Err(rate_limited(edge, decision));
            }
            shown = tighter(shown, &[decision]);
        }
    }
    Ok(shown)
}

async fn separate_checks(
    edge: &Edge,
    route: Route,
    address: &[(String, Quota)],
    token: Option<&str>,
) -> Checked {
    let mut shown = limit_address(edge, address).await?;
    let claims = match (route.access, token) {
        (Access::Token, None) => {
            return Err(edge.refuse("unauthenticated", TokenError::Missing.into()));
        }
        (Access::Token, Some(token)) => match edge.inner.verifier.verify(token).await {
            Ok(claims) => Some(Arc::new(claims)),
            Err(err) => return Err(refuse_token(edge, err)),
        },
        // A public route: the user is forwarded when the token is good, and the
        // token goes on untouched either way (the service decides what it means).
        (Access::Public, Some(token)) => edge.inner.verifier.verify(token).await.ok().map(Arc::new),
        (Access::Public, None) => None,
    };
    if let Some(claims) = &claims
        && let Some(decision) = edge
            .limit(&format!("user:{}", claims.sub), edge.config().per_user)
            .await
    {
        if !decision.allowed {
            return Err(rate_limited(edge, decision));
        }
        shown = tighter(shown, &[decision]);
    }
    Ok((claims, shown))
}

/// A token whose signature or claims fail: still counted against the address,
/// so a flood of bogus tokens is limited like any other.
async fn bad_token(
    edge: &Edge,
    route: Route,
    address: &[(String, Quota)],
    err: TokenError,
) -> Checked {
    let shown = limit_address(edge, address).await?;
    match route.access {
        Access::Token => Err(refuse_token(edge, err)),
        Access::Public => Ok((None, shown)),
    }
}

async fn combined_check(
    edge: &Edge,
    combined: &EdgeCheck,
    route: Route,
    address: &[(String, Quota)],
    claims: Arc<AccessClaims>,
) -> Checked {
    let user = (format!("user:{}", claims.sub), edge.config().per_user);
    let answer = match combined.run(address, user, &claims).await {
        Ok(answer) => answer,
        Err(err) => {
            // Without Redis neither limits nor revocation can be read: limits
            // would let the request through, revocation fails closed.
            tracing::warn!(error = %err, "rate limits and revocation unavailable");
            edge.inner.metrics.refused("limiter_unavailable");
            return match route.access {
                Access::Token => Err(refuse_token(edge, TokenError::Unavailable)),
                Access::Public => Ok((None, None)),
            };
        }
    };
    match answer {
        EdgeAnswer::Allowed(decisions) => Ok((Some(claims), tighter(None, &decisions))),
        EdgeAnswer::Limited(decisions) => {
            // The script stops at the first refusal: it is the last decision.
            let refused = decisions.last().copied();
            Err(match refused {
                Some(decision) => rate_limited(edge, decision),
                None => refuse_token(edge, TokenError::Unavailable),
            })
        }
        EdgeAnswer::Revoked(decisions) | EdgeAnswer::Unavailable(decisions)
            if route.access == Access::Public =>
        {
            Ok((None, tighter(None, &decisions)))
        }
        EdgeAnswer::Revoked(_) => Err(refuse_token(edge, TokenError::Revoked)),
        EdgeAnswer::Unavailable(_) => Err(refuse_token(edge, TokenError::Unavailable)),
    }
}

fn refuse_token(edge: &Edge, err: TokenError) -> Response {
    let reason = match err {
        TokenError::Expired => "token_expired",
        TokenError::Revoked => "token_revoked",
        TokenError::Unavailable => "verification_unavailable",
        TokenError::Missing | TokenError::Invalid => "unauthenticated",
    };
    edge.refuse(reason, err.into())
}

async fn forward(
    edge: &Edge,
    route: Route,
    client_ip: IpAddr,
    parts: axum::http::request::Parts,
    body: Body,
    note: &mut access::Note,
) -> Response {
    let config = edge.config();
    let limit = config.body_limit(route.class);
    let declared = match parts.headers.get(CONTENT_LENGTH) {
        None => None,
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(length) => Some(length),
            None => {
                return edge.refuse(
                    "malformed_request",
                    ApiError::new(ErrorCode::MalformedRequest, "invalid Content-Length"),
                );
            }
        },
    };
    if declared.is_some_and(|length| length > limit as u64) {
        return edge.refuse("payload_too_large", too_large(limit));
    }
    let has_body =
        declared.is_some_and(|length| length > 0) || parts.headers.contains_key(TRANSFER_ENCODING);
    let upgrade = route.class == RouteClass::Rtc && is_websocket_upgrade(&parts.headers);

    // The permit lives until the response body is sent (or the tunnel closes).
    let semaphore = if upgrade {
        &edge.inner.tunnels
    } else {
        &edge.inner.requests
    };
    let Ok(permit) = semaphore.clone().try_acquire_owned() else {
        return edge.refuse(
            "overloaded",
            ApiError::new(ErrorCode::ServiceUnavailable, "the gateway is at capacity")
                .with_retry_after(1),
        );
    };

    let pool = edge.upstream(route.upstream);
    let mut pick = match admit(edge, pool, 0) {
        Ok(pick) => pick,
        Err(error) => return edge.refuse("breaker_open", error),
    };

    // What a retry needs to build the request again (a body cannot be replayed).
    let retry_template = (!has_body && !upgrade).then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.version,
            parts.headers.clone(),
        )
    });
    let cut = CutFlag::default();
    let mut request = Request::from_parts(
        parts,
        Body::new(GuardedBody::new(
            body,
            limit,
            config.body_idle_timeout,
            cut.clone(),
        )),
    );
    let timeout = config.timeout(route.class);
    let (mut tunnel_permit, request_permit) = if upgrade {
        (Some(permit), None)
    } else {
        (None, Some(permit))
    };
    let mut tried = 0u64;
    let mut attempt = 0;
    loop {
        let Pick {
            index,
            instance,
            pass,
            in_flight,
        } = pick;
        tried |= 1 << index;
        note.instance = Some(instance.address.clone());
        let started = Instant::now();
        // A tunnel holds its permit and its place in the instance's count for as
        // long as it lives; a plain exchange until its response body is sent.
        let (tunnel_guard, in_flight) = match tunnel_permit.take() {
            Some(permit) => (Some(Box::new((permit, in_flight)) as Box<dyn Send>), None),
            None => (None, Some(in_flight)),
        };
        let result = edge
            .proxy()
            .forward(
                pool.name,
                &instance.authority,
                request,
                client_ip,
                timeout,
                tunnel_guard,
            )
            .await;
        let outcome = match &result {
            Ok(response) => Outcome::Status(response.status().as_u16()),
            Err(ForwardError::Timeout) => Outcome::Timeout,
            Err(_) => Outcome::Error,
        };
        edge.metrics().exchange(
            route.class.as_str(),
            pool.name,
            &instance.address,
            outcome,
            started.elapsed().as_secs_f64(),
        );
        let err = match result {
            Ok(response) => {
                pass.success();
                edge.metrics().instance_state(pool, &instance);
                return match request_permit {
                    Some(permit) => response.map(|body| Holding::wrap(body, (permit, in_flight))),
                    None => response,
                };
            }
            Err(err) => err,
        };
        let retryable = match &err {
            ForwardError::Connect(_) => true,
            ForwardError::Exchange(_) => method_is_idempotent(&retry_template),
            ForwardError::Timeout | ForwardError::BadTarget => false,
        };
        let retry = match &retry_template {
            Some(template)
                if retryable && attempt < config.connect_retries && cut.get().is_none() =>
            {
                template
            }
            _ => return failed(edge, pass, pool, &instance, &cut, err, limit),
        };
        tracing::debug!(
            upstream = pool.name,
            instance = &*instance.address,
            ?err,
            attempt,
            "exchange failed; retrying"
        );
        pass.failure();
        edge.metrics().instance_state(pool, &instance);
        attempt += 1;
        pick = match admit(edge, pool, tried) {
            Ok(pick) => pick,
            Err(error) => return edge.refuse("breaker_open", error),
        };
        if tried & (1 << pick.index) != 0 {
            // The same instance again (the only one left): give it a moment.
            tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
        }
        let (method, uri, version, headers) = retry;
        let mut next = Request::new(Body::empty());
        *next.method_mut() = method.clone();
        *next.uri_mut() = uri.clone();
        *next.version_mut() = *version;
        *next.headers_mut() = headers.clone();
        request = next;
    }
}

fn method_is_idempotent(
    template: &Option<(Method, axum::http::Uri, axum::http::Version, HeaderMap)>,
) -> bool {
    template
        .as_ref()
        .is_some_and(|(method, ..)| method.is_idempotent())
}

/// An instance of `pool` for one exchange, or the fail-fast error when every
/// instance is ejected (answered with reason `breaker_open`).
fn admit(edge: &Edge, pool: &Pool, tried: u64) -> Result<Pick, ApiError> {
    pool.pick(tried).map_err(|wait| {
        edge.metrics().upstream_state(pool);
        ApiError::new(
            ErrorCode::UpstreamUnavailable,
            format!("the {} service is unavailable", pool.name),
        )
        .with_retry_after(wait.as_secs_f64().ceil().clamp(1.0, 3600.0) as u64)
    })
}

/// The answer when the exchange failed: the client's fault (body too large or too
/// slow) leaves the instance's health alone; anything else counts against it.
fn failed(
    edge: &Edge,
    pass: crate::breaker::Pass,
    pool: &Pool,
    instance: &Instance,
    cut: &CutFlag,
    err: ForwardError,
    limit: usize,
) -> Response {
    match cut.get() {
        Some(Cut::TooLarge) => {
            drop(pass);
            return edge.refuse("payload_too_large", too_large(limit));
        }
        Some(Cut::TooSlow) => {
            drop(pass);
            return edge.refuse(
                "request_timeout",
                ApiError::new(
                    ErrorCode::RequestTimeout,
                    "the request body arrived too slowly",
                ),
            );
        }
        None => {}
    }
    let answer = match &err {
        ForwardError::BadTarget => {
            drop(pass);
            return edge.refuse(
                "malformed_request",
                ApiError::new(ErrorCode::MalformedRequest, "malformed request target"),
            );
        }
        ForwardError::Timeout => {
            tracing::warn!(
                upstream = pool.name,
                instance = &*instance.address,
                "upstream timed out"
            );
            ApiError::new(
                ErrorCode::UpstreamTimeout,
                "the service did not answer in time",
            )
        }
        ForwardError::Connect(cause) | ForwardError::Exchange(cause) => {
            tracing::warn!(
                upstream = pool.name,
                instance = &*instance.address,
                %cause,
                "upstream exchange failed"
            );
            ApiError::new(
                ErrorCode::UpstreamUnavailable,
                format!("the {} service is unavailable", pool.name),
            )
            .with_retry_after(1)
        }
    };
    pass.failure();
    edge.metrics().instance_state(pool, instance);
    edge.refuse("upstream_failed", answer)
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the request body is larger than {limit} bytes"),
    )
}

fn rate_limited(edge: &Edge, decision: Decision) -> Response {
    let retry_after = decision.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = edge.refuse(
        "rate_limited",
        ApiError::new(ErrorCode::RateLimited, "too many requests; slow down")
            .with_retry_after(retry_after),
    );
    set_rate_headers(response.headers_mut(), &decision);
    response
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// `RateLimit-Limit`, `-Remaining` and `-Reset` (seconds until the bucket is full).
fn set_rate_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(decision.limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(
        RATELIMIT_RESET,
        HeaderValue::from(decision.reset.as_secs_f64().ceil() as u64),
    );
}
