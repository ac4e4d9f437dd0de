//! Verifying MeetEase access tokens in any service.
//!
//! The auth service signs access tokens with Ed25519 (`alg: EdDSA`, a `kid` in the
//! header) and publishes its public keys as a JWKS. A service builds one
//! [`TokenVerifier`] at start-up, keeps it in its state, and either calls
//! [`TokenVerifier::verify`] or takes the [`AuthUser`] extractor in a handler:
//!
//! ```no_run
//! # async fn demo() -> Result<(), servicekit::StartError> {
//! use servicekit::tokens::{AuthUser, TokenVerifier, VerifierConfig};
//! let verifier = TokenVerifier::from_jwks_url(
//!     "http://127.0.0.1:8001/api/v1/auth/jwks",
//!     VerifierConfig::default(),
//! )?;
//! async fn me(user: AuthUser) -> String {
//!     user.claims.sub.to_string()
//! }
//! let app: axum::Router = axum::Router::new()
//!     .route("/me", axum::routing::get(me))
//!     .with_state(verifier);
//! # Ok(()) }
//! ```
//!
//! What is checked: the algorithm is exactly EdDSA (so `alg: none` and HMAC tokens
//! "signed" with the public key are refused before any key is used), the `kid` names a
//! key in the current JWKS (an unknown `kid` triggers one re-fetch, rate-limited), the
//! signature, `exp` and `nbf` with at most [`MAX_LEEWAY_SECS`] of leeway, `iss` and
//! `aud`. Revocation is checked only when a [`RevocationCheck`] is attached
//! ([`RedisRevocations`] reads auth's Redis cache, [`IntrospectRevocations`] asks auth).

use crate::{ApiError, StartError};
use axum::extract::FromRef;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use proto::ErrorCode;
use proto::auth::{
    AccessClaims, DEFAULT_AUDIENCE, DEFAULT_ISSUER, Introspection, MAX_LEEWAY_SECS, revocation_keys,
};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A boxed future, for the object-safe traits here.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a token was not accepted. Each maps to a stable [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `Authorization: Bearer …` header.
    #[error("missing bearer token")]
    Missing,
    /// Not a JWT, wrong algorithm, unknown key, bad signature, wrong issuer or
    /// audience, not yet valid, or claims of the wrong shape.
    #[error("invalid token")]
    Invalid,
    /// Well signed but past its `exp`.
    #[error("token expired")]
    Expired,
    /// Signed out (the token itself or its whole session).
    #[error("token revoked")]
    Revoked,
    /// The keys or the revocation list could not be fetched; retry later.
    #[error("token verification temporarily unavailable")]
    Unavailable,
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Missing => {
                ApiError::new(ErrorCode::Unauthenticated, "missing bearer token")
            }
            TokenError::Invalid => ApiError::new(ErrorCode::Unauthenticated, "invalid token"),
            TokenError::Expired => ApiError::new(ErrorCode::TokenExpired, "the token has expired"),
            TokenError::Revoked => {
                ApiError::new(ErrorCode::TokenRevoked, "the token has been revoked")
            }
            TokenError::Unavailable => ApiError::new(
                ErrorCode::ServiceUnavailable,
                "token verification temporarily unavailable",
            )
            .with_retry_after(1),
        }
    }
}

/// What a verifier expects of a token.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    pub issuer: String,
    pub audience: String,
    /// Clock leeway for `exp`/`nbf`; capped at [`MAX_LEEWAY_SECS`].
    pub leeway: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            leeway: Duration::from_secs(MAX_LEEWAY_SECS),
        }
    }
}

/// The public keys a verifier accepts, by `kid`. Only Ed25519 keys for EdDSA are kept.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: HashMap<String, DecodingKey>,
}

impl KeyRing {
    /// Keep the usable keys of a JWKS: Ed25519 (`kty: OKP`, `crv: Ed25519`), with a
    /// `kid`, `alg` absent or `EdDSA`, `use` absent or `sig`. Anything else is ignored.
    pub fn from_jwks(set: &JwkSet) -> Self {
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            let alg_ok = matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::EdDSA));
            let use_ok = matches!(
                jwk.common.public_key_use,
                None | Some(PublicKeyUse::Signature)
            );
            let AlgorithmParameters::OctetKeyPair(params) = &jwk.algorithm else {
                continue;
            };
            if !alg_ok || !use_ok || params.curve != EllipticCurve::Ed25519 {
                continue;
            }
            match DecodingKey::from_jwk(jwk) {
                // An Ed25519 public key is 32 bytes; anything else cannot verify.
                Ok(key) if key.try_get_as_bytes().map(<[u8]>::len) == Ok(32) => {
                    keys.insert(kid.clone(), key);
                }
                _ => tracing::warn!(kid, "ignoring an unusable key in the JWKS"),
            }
        }
        Self { keys }
    }

    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Where a verifier gets its keys.
pub trait KeySource: Send + Sync + 'static {
    /// The current keys. `refresh` is set when a token names a `kid` the last answer
    /// did not hold: a remote source should re-fetch (at a bounded rate).
    fn keys(&self, refresh: bool) -> BoxFuture<'_, Result<Arc<KeyRing>, TokenError>>;
}

/// A fixed key set (tests, or a service holding the keys itself).
pub struct StaticKeys(pub Arc<KeyRing>);

impl KeySource for StaticKeys {
    fn keys(&self, _refresh: bool) -> BoxFuture<'_, Result<Arc<KeyRing>, TokenError>> {
        let keys = self.0.clone();
        Box::pin(async move { Ok(keys) })
    }
}

/// A JWKS fetched over HTTP and cached.
///
/// The cache is re-fetched when older than `max_age`, or when a token names an
/// unknown `kid` (at most once per `min_refetch`, so a flood of tokens with made-up
/// `kid`s cannot turn into a flood of fetches). One fetch runs at a time; a failed
/// fetch keeps serving the keys it had.
pub struct HttpJwks {
    url: String,
    client: reqwest::Client,
    max_age: Duration,
    min_refetch: Duration,
    cache: RwLock<Cached>,
    /// Held while fetching, so concurrent misses wait for one fetch.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cached {
    keys: Option<Arc<KeyRing>>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

impl HttpJwks {
    /// `url` must be `http://` or `https://` (only plain HTTP is compiled in: the JWKS
    /// is fetched from auth inside the deployment).
    pub fn new(url: &str) -> Result<Self, StartError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(StartError::setting(
                "AUTH_JWKS_URL",
                format!("`{url}` is not an http:// URL"),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|err| StartError::setting("AUTH_JWKS_URL", err))?;
        Ok(Self {
            url: url.to_owned(),
            client,
            max_age: Duration::from_secs(300),
            min_refetch: Duration::from_secs(5),
            cache: RwLock::new(Cached::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// Change how often the key set is re-fetched (tests shorten these).
    pub fn with_intervals(mut self, max_age: Duration, min_refetch: Duration) -> Self {
        self.max_age = max_age;
        self.min_refetch = min_refetch;
        self
    }

    fn snapshot(&self) -> (Option<Arc<KeyRing>>, Option<Instant>, Option<Instant>) {
        // A poisoned lock only means a panic elsewhere mid-update of plain data;
        // the data is still a consistent value.
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        (cache.keys.clone(), cache.fetched_at, cache.attempted_at)
    }

    fn needs_fetch(&self, refresh: bool) -> bool {
        let (keys, fetched_at, attempted_at) = self.snapshot();
        let now = Instant::now();
        let recently_tried =
            attempted_at.is_some_and(|at| now.duration_since(at) < self.min_refetch);
        match (keys, fetched_at) {
            (None, _) | (_, None) => !recently_tried,
            (Some(_), Some(at)) => {
                let stale = now.duration_since(at) >= self.max_age;
                (stale || refresh) && !recently_tried
            }
        }
    }

    async fn fetch(&self) -> Result<KeyRing, String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|err| err.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let set: JwkSet = response.json().await.map_err(|err| err.to_string())?;
        Ok(KeyRing::from_jwks(&set))
    }
}

impl KeySource for HttpJwks {
    fn keys(&self, refresh: bool) -> BoxFuture<'_, Result<Arc<KeyRing>, TokenError>> {
        Box::pin(async move {
            if self.needs_fetch(refresh) {
                let _one_at_a_time = self.fetching.lock().await;
                // Another task may have fetched while this one waited.
                if self.needs_fetch(refresh) {
                    let result = self.fetch().await;
                    let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
                    cache.attempted_at = Some(Instant::now());
                    match result {
                        Ok(keys) => {
                            cache.keys = Some(Arc::new(keys));
                            cache.fetched_at = Some(Instant::now());
                        }
                        Err(err) => {
                            tracing::warn!(url = %self.url, error = %err, "cannot fetch the JWKS");
                        }
                    }
                }
            }
            self.snapshot().0.ok_or(TokenError::Unavailable)
        })
    }
}

/// Decides whether a verified token has been revoked.
pub trait RevocationCheck: Send + Sync + 'static {
    /// `Ok(true)` when revoked; `Err(Unavailable)` when it cannot be known now.
    fn is_revoked<'a>(
        &'a self,
        token: &'a str,
        claims: &'a AccessClaims,
    ) -> BoxFuture<'a, Result<bool, TokenError>>;
}

/// Reads auth's revocation cache in Redis (key shapes in
/// [`proto::auth::revocation_keys`]). Fails closed: when the completeness marker is
/// missing (Redis restarted and auth has not re-seeded it yet) the answer is
/// `Unavailable`, never "not revoked".
#[derive(Clone)]
pub struct RedisRevocations(pub redis::aio::ConnectionManager);

impl RevocationCheck for RedisRevocations {
    fn is_revoked<'a>(
        &'a self,
        _token: &'a str,
        claims: &'a AccessClaims,
    ) -> BoxFuture<'a, Result<bool, TokenError>> {
        Box::pin(async move {
            let mut conn = self.0.clone();
            let keys = [
                revocation_keys::COMPLETE.to_owned(),
                revocation_keys::jti(&claims.jti),
                revocation_keys::sid(&claims.sid),
            ];
            let mut cmd = redis::cmd("MGET");
            cmd.arg(&keys[..]);
            let query = cmd.query_async::<Vec<Option<String>>>(&mut conn);
            let values = match tokio::time::timeout(Duration::from_secs(1), query).await {
                Ok(Ok(values)) => values,
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "revocation check in Redis failed");
                    return Err(TokenError::Unavailable);
                }
                Err(_) => {
                    tracing::warn!("revocation check in Redis timed out");
                    return Err(TokenError::Unavailable);
                }
            };
            match values.as_slice() {
                [Some(_), jti, sid] => Ok(jti.is_some() || sid.is_some()),
                _ => Err(TokenError::Unavailable),
            }
        })
    }
}

/// Asks auth: `POST {introspect_url}` with `{"token": …}`. One request per check;
/// prefer [`RedisRevocations`] where Redis is configured.
pub struct IntrospectRevocations {
    url: String,
    client: reqwest::Client,
}

impl IntrospectRevocations {
    pub fn new(introspect_url: &str) -> Result<Self, StartError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|err| StartError::setting("AUTH_URL", err))?;
        Ok(Self {
            url: introspect_url.to_owned(),
            client,
        })
    }
}

impl RevocationCheck for IntrospectRevocations {
    fn is_revoked<'a>(
        &'a self,
        token: &'a str,
        _claims: &'a AccessClaims,
    ) -> BoxFuture<'a, Result<bool, TokenError>> {
        Box::pin(async move {
            let response = self
                .client
                .post(&self.url)
                .json(&serde_json::json!({ "token": token }))
                .send()
                .await
                .map_err(|err| {
                    tracing::warn!(error = %err, "introspection failed");
                    TokenError::Unavailable
                })?;
            if !response.status().is_success() {
                tracing::warn!(status = %response.status(), "introspection failed");
                return Err(TokenError::Unavailable);
            }
            let answer: Introspection = response.json().await.map_err(|err| {
                tracing::warn!(error = %err, "introspection answered nonsense");
                TokenError::Unavailable
            })?;
            Ok(!answer.active)
        })
    }
}

/// Verifies access tokens. Cheap to clone; build one per service.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<dyn KeySource>,
    validation: Arc<Validation>,
    revocations: Option<Arc<dyn RevocationCheck>>,
}

impl TokenVerifier {
    pub fn new(keys: Arc<dyn KeySource>, config: VerifierConfig) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Exactly one algorithm: `none`, HMAC and every other family are refused
        // before a key is looked at.
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.leeway = config.leeway.as_secs().min(MAX_LEEWAY_SECS);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[config.issuer]);
        validation.set_audience(&[config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        Self {
            keys,
            validation: Arc::new(validation),
            revocations: None,
        }
    }

    /// A verifier that fetches the JWKS from `jwks_url` (auth's
    /// `/api/v1/auth/jwks`), caching it.
    pub fn from_jwks_url(jwks_url: &str, config: VerifierConfig) -> Result<Self, StartError> {
        Ok(Self::new(Arc::new(HttpJwks::new(jwks_url)?), config))
    }

    /// Also check revocation on every [`verify`](Self::verify).
    pub fn with_revocations(mut self, check: Arc<dyn RevocationCheck>) -> Self {
        self.revocations = Some(check);
        self
    }

    /// Verify a token's signature and claims, then (when configured) revocation.
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let claims = self.verify_signed(token).await?;
        if let Some(check) = &self.revocations
            && check.is_revoked(token, &claims).await?
        {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    /// Verify signature and claims only, without the revocation check.
    pub async fn verify_signed(&self, token: &str) -> Result<AccessClaims, TokenError> {
        // Cheap shape checks first: a JWT is three base64url parts and a sane size.
        if token.len() > 8 * 1024 || token.split('.').count() != 3 {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let mut keys = self.keys.keys(false).await?;
        if keys.get(&kid).is_none() {
            keys = self.keys.keys(true).await?;
        }
        let key = keys.get(&kid).ok_or(TokenError::Invalid)?;
        match jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(err) => match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(TokenError::Expired),
                _ => Err(TokenError::Invalid),
            },
        }
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(parts: &Parts) -> Result<&str, TokenError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(TokenError::Missing)?
        .to_str()
        .map_err(|_| TokenError::Invalid)?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token)
}

/// The caller, authenticated by `Authorization: Bearer <access token>`.
///
/// Rejects with `unauthenticated`, `token_expired`, `token_revoked` (401) or
/// `service_unavailable` (503) when the keys cannot be fetched. The state must give a
/// [`TokenVerifier`] through [`FromRef`].
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub claims: AccessClaims,
    /// The token itself, for services that forward it.
    pub token: String,
}

impl AuthUser {
    pub fn user_id(&self) -> proto::ids::UserId {
        self.claims.sub
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    TokenVerifier: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = TokenVerifier::from_ref(state);
        let token = bearer_token(parts)?;
        let claims = verifier.verify(token).await?;
        Ok(AuthUser {
            claims,
            token: token.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;

    fn jwk(json: serde_json::Value) -> Jwk {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_key_ring_keeps_only_ed25519_signing_keys_with_a_kid() {
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let set = JwkSet {
            keys: vec![
                jwk(
                    serde_json::json!({"kty":"OKP","crv":"Ed25519","x":x,"kid":"good","alg":"EdDSA","use":"sig"}),
                ),
                jwk(serde_json::json!({"kty":"OKP","crv":"Ed25519","x":x})),
                jwk(serde_json::json!({"kty":"OKP","crv":"Ed25519","x":x,"kid":"enc","use":"enc"})),
                jwk(serde_json::json!({"kty":"oct","k":"c2VjcmV0","kid":"hmac","alg":"HS256"})),
                jwk(serde_json::json!({"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"short"})),
            ],
        };
        let ring = KeyRing::from_jwks(&set);
        assert_eq!(ring.len(), 1);
        assert!(ring.get("good").is_some());
    }

    #[test]
    fn bearer_tokens_need_the_bearer_scheme() {
        let parts = |value: &str| {
            let (parts, ()) = axum::http::Request::builder()
                .header(AUTHORIZATION, value)
                .body(())
                .unwrap()
                .into_parts();
            parts
        };
        assert_eq!(bearer_token(&parts("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(&parts("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer_token(&parts("Basic abc")), Err(TokenError::Missing));
        assert_eq!(bearer_token(&parts("Bearer ")), Err(TokenError::Missing));
        assert_eq!(bearer_token(&parts("Bearer")), Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn garbage_and_foreign_algorithms_are_invalid() {
        let verifier = TokenVerifier::new(
            Arc::new(StaticKeys(Arc::new(KeyRing::default()))),
            VerifierConfig::default(),
        );
        for token in [
            "",
            "abc",
            "a.b.c",
            // {"alg":"none","typ":"JWT"} . {} . (no signature)
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.e30.",
            // {"alg":"HS256","kid":"k"} . {} . x
            "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsifQ.e30.eA",
        ] {
            assert_eq!(
                verifier.verify(token).await,
                Err(TokenError::Invalid),
                "{token}"
            );
        }
    }
}
