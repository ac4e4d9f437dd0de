//! The HTTP API under `/api/v1/auth`.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | `/api/v1/auth/register` | `{email, password, display_name}` | 201 [`AuthResponse`] |
//! | POST | `/api/v1/auth/login` | `{email, password}` | 200 [`AuthResponse`] |
//! | POST | `/api/v1/auth/refresh` | `{refresh_token}` | 200 [`AuthResponse`] |
//! | POST | `/api/v1/auth/logout` | bearer | 204 |
//! | POST | `/api/v1/auth/logout-all` | bearer | 204 |
//! | POST | `/api/v1/auth/password` | bearer, `{current_password, new_password}` | 204 |
//! | POST | `/api/v1/auth/verify-email` | `{token}` | 200 `{user}` |
//! | POST | `/api/v1/auth/verify-email/resend` | bearer | 202 |
//! | POST | `/api/v1/auth/password-reset` | `{email}` | 202 (always) |
//! | POST | `/api/v1/auth/password-reset/confirm` | `{token, new_password}` | 204 |
//! | GET | `/api/v1/auth/jwks`, `/.well-known/jwks.json` | | 200 JWKS |
//! | POST | `/api/v1/auth/introspect` | `{token}` | 200 `{active, …claims}` |
//! | DELETE | `/api/v1/auth/account` | bearer, `{password}` (none for OpenID-only accounts) | 204 |
//! | GET | `/api/v1/auth/oauth/providers` | | 200 `{providers: [name]}` |
//! | GET | `/api/v1/auth/oauth/{provider}/start` | | 303 to the provider, sets `meetease_oauth` |
//! | GET | `/api/v1/auth/oauth/{provider}/callback` | `code`, `state` (or `error`) | 303 to `{return_url}#oauth_code=…` |
//! | POST | `/api/v1/auth/oauth/exchange` | `{code}` | 200 [`AuthResponse`] |

mod account;
mod keys;
pub mod oauth;
mod session;

use crate::AppState;
use crate::domain::{DisplayName, Email};
use crate::store::UserRecord;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::routing::{delete, get, post};
use proto::ErrorCode;
use proto::auth::AccessClaims;
use serde::Serialize;
use servicekit::ApiError;
use std::net::{IpAddr, SocketAddr};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/auth/register", post(session::register))
        .route("/api/v1/auth/login", post(session::login))
        .route("/api/v1/auth/refresh", post(session::refresh))
        .route("/api/v1/auth/logout", post(session::logout))
        .route("/api/v1/auth/logout-all", post(session::logout_all))
        .route("/api/v1/auth/password", post(account::change_password))
        .route("/api/v1/auth/verify-email", post(account::verify_email))
        .route(
            "/api/v1/auth/verify-email/resend",
            post(account::resend_verification),
        )
        .route("/api/v1/auth/password-reset", post(account::request_reset))
        .route(
            "/api/v1/auth/password-reset/confirm",
            post(account::confirm_reset),
        )
        .route("/api/v1/auth/jwks", get(keys::jwks))
        .route("/.well-known/jwks.json", get(keys::jwks))
        .route("/api/v1/auth/introspect", post(keys::introspect))
        .route("/api/v1/auth/account", delete(account::delete_account))
        .route("/api/v1/auth/oauth/providers", get(oauth::providers))
        .route("/api/v1/auth/oauth/{provider}/start", get(oauth::start))
        .route(
            "/api/v1/auth/oauth/{provider}/callback",
            get(oauth::callback),
        )
        .route("/api/v1/auth/oauth/exchange", post(oauth::exchange))
        .with_state(state)
}

/// The answer to register, login and refresh.
#[derive(Debug, Serialize)]
pub struct AuthResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub user: UserView,
}

/// An account as its owner sees it.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub email_verified: bool,
}

impl From<&UserRecord> for UserView {
    fn from(user: &UserRecord) -> Self {
        Self {
            id: user.id.to_string(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            email_verified: user.email_verified_at.is_some(),
        }
    }
}

/// Sign an access token for `user` in session `sid`; returns it with its lifetime.
fn access_token(
    state: &AppState,
    user: &UserRecord,
    sid: uuid::Uuid,
) -> Result<(String, u64), ApiError> {
    let tokens = &state.settings.tokens;
    let iat = u64::try_from(crate::now_ms() / 1000).unwrap_or(0);
    let ttl = tokens.access_ttl.as_secs();
    let claims = AccessClaims {
        sub: user.id,
        sid,
        jti: uuid::Uuid::now_v7(),
        iss: tokens.issuer.clone(),
        aud: tokens.audience.clone(),
        iat,
        nbf: iat,
        exp: iat + ttl,
        email: user.email.clone(),
        email_verified: user.email_verified_at.is_some(),
        name: user.display_name.clone(),
    };
    let token = state.keys.sign(&claims).map_err(ApiError::internal)?;
    Ok((token, ttl))
}

/// The client's address: the peer, or the last `X-Forwarded-For` entry when the
/// peer is a trusted proxy (the gateway replaces that header with what it saw).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl axum::extract::FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Ok(ClientIp(None));
        };
        let peer = peer.ip();
        if !servicekit::net::any_contains(&state.settings.trusted_proxies, peer) {
            return Ok(ClientIp(Some(peer)));
        }
        Ok(ClientIp(Some(
            forwarded_for(&parts.headers).unwrap_or(peer),
        )))
    }
}

fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()?;
    last.trim().parse().ok()
}

impl ClientIp {
    /// The throttle key for this address ("ip:unknown" when there is none).
    fn key(&self) -> String {
        match self.0 {
            Some(IpAddr::V4(ip)) => format!("ip:{ip}"),
            // One IPv6 host usually holds a whole /64: count the prefix.
            Some(IpAddr::V6(ip)) => {
                let s = ip.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            None => "ip:unknown".to_owned(),
        }
    }
}

fn parse_email(raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw).map_err(|err| ApiError::invalid_field("email", &err.to_string()))
}

fn parse_display_name(raw: &str) -> Result<DisplayName, ApiError> {
    DisplayName::parse(raw).map_err(|err| ApiError::invalid_field("display_name", &err.to_string()))
}

fn weak(err: crate::domain::WeakPassword) -> ApiError {
    ApiError::new(ErrorCode::WeakPassword, err.0)
}

fn hash_error(err: crate::domain::HashError) -> ApiError {
    match err {
        crate::domain::HashError::Busy => ApiError::new(
            ErrorCode::Overloaded,
            "too many sign-ins at once; retry shortly",
        )
        .with_retry_after(1),
        other => ApiError::internal(other),
    }
}

fn rate_limited(delay: std::time::Duration) -> ApiError {
    ApiError::new(
        ErrorCode::RateLimited,
        "too many attempts; wait before trying again",
    )
    .with_retry_after(crate::throttle::retry_after_secs(delay))
}
