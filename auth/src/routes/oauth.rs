//! Sign-in with an OpenID provider (authorization code + PKCE).
//!
//! 1. `GET /api/v1/auth/oauth/{provider}/start`: stores a flow (state, nonce, PKCE
//!    verifier, 10 min, single use) and answers 303 to the provider, setting the
//!    cookie `meetease_oauth` that binds the flow to this browser (login CSRF).
//! 2. The provider sends the browser to `GET /api/v1/auth/oauth/{provider}/callback`
//!    with `code` and `state` (or `error`). The flow is used up; the code exchanged;
//!    the ID token verified (JWKS signature, `iss`, `aud`, `exp`, `nonce`); the
//!    account found by identity, linked by a *verified* email, or created. The
//!    answer is 303 to the web client, `{return_url}#oauth_code=<one-time code>`.
//! 3. The web client posts `{"code"}` to `POST /api/v1/auth/oauth/exchange` and gets
//!    the usual `AuthResponse`. Tokens never travel in a URL; the code lives 60 s.

use super::AuthResponse;
use super::session::start_session;
use crate::domain::{DisplayName, Email, OpaqueToken};
use crate::oidc::id_token::{self, Expected, IdTokenError};
use crate::oidc::{Provider, ProviderError};
use crate::store::{
    Millis, NewOAuthFlow, NewOneTimeToken, OidcLogin, OidcOutcome, OutboxEvent, Purpose, UserRecord,
};
use crate::{AppState, now_ms};
use aws_lc_rs::digest;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proto::ErrorCode;
use proto::ids::UserId;
use serde::Deserialize;
use serde_json::json;
use servicekit::ApiError;
use servicekit::extract::{Json, Path, Query};
use std::sync::Arc;
use std::time::Duration;

/// The cookie that ties a flow to the browser that started it.
pub const FLOW_COOKIE: &str = "meetease_oauth";
/// How long a started sign-in may take.
pub const FLOW_TTL: Duration = Duration::from_secs(10 * 60);
/// How long the one-time login code handed to the web client lives.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(60);

fn ms(duration: Duration) -> Millis {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn random() -> Result<OpaqueToken, ApiError> {
    OpaqueToken::generate().map_err(|_| ApiError::internal("the system RNG failed"))
}

fn invalid_state(why: &'static str) -> ApiError {
    ApiError::new(ErrorCode::InvalidOauthState, why)
}

fn provider_error(err: ProviderError) -> ApiError {
    match err {
        ProviderError::Refused(error) => {
            tracing::warn!(%error, "the provider refused the code exchange");
            ApiError::new(
                ErrorCode::OauthProviderError,
                format!("the provider refused the sign-in ({error})"),
            )
        }
        ProviderError::Unavailable(why) => {
            tracing::warn!(%why, "OpenID provider unavailable");
            ApiError::new(
                ErrorCode::ProviderUnavailable,
                "the sign-in provider cannot be reached; try again later",
            )
            .with_retry_after(5)
        }
    }
}

fn lookup(state: &AppState, name: &str) -> Result<Arc<Provider>, ApiError> {
    state.oidc.get(name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownProvider,
            "no sign-in provider of this name",
        )
    })
}

/// `{public_url}/api/v1/auth/oauth/{name}/callback`: what the provider must have
/// registered for this client.
pub fn redirect_uri(state: &AppState, name: &str) -> String {
    format!(
        "{}/api/v1/auth/oauth/{name}/callback",
        state.settings.oauth.public_url.trim_end_matches('/')
    )
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

fn cookie(state: &AppState, value: &str, max_age: u64) -> Result<HeaderValue, ApiError> {
    let secure = if state.settings.oauth.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{FLOW_COOKIE}={value}; Path=/api/v1/auth/oauth; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .map_err(ApiError::internal)
}

fn see_other(location: &str) -> Result<Response, ApiError> {
    let location = HeaderValue::from_str(location).map_err(ApiError::internal)?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The flow cookie's value, if the browser sent one.
fn flow_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == FLOW_COOKIE)
        .map(|(_, value)| value)
}

/// `GET /api/v1/auth/oauth/providers`: the names the web client may offer.
pub async fn providers(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "providers": state.oidc.names() }))
}

/// Whether a request is a browser's page navigation (it asks for HTML): a
/// refusal then goes back to the web client rather than showing raw JSON.
fn is_navigation(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// A refusal of `start` or `callback`: JSON for an API client; for a browser, 303
/// to `{return_url}#oauth_error=<code>` (the code only: the web client words it),
/// the flow cookie cleared.
fn refusal(state: &AppState, headers: &HeaderMap, err: ApiError) -> Result<Response, ApiError> {
    if !is_navigation(headers) {
        return Err(err);
    }
    tracing::info!(code = %err.code, message = %err.message, "OpenID sign-in refused");
    let mut response = see_other(&format!(
        "{}#oauth_error={}",
        state.settings.oauth.return_url,
        err.code.as_str()
    ))?;
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(state, "", 0)?);
    Ok(response)
}

/// `GET /api/v1/auth/oauth/{provider}/start`
pub async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match start_flow(&state, name).await {
        Err(err) => refusal(&state, &headers, err),
        ok => ok,
    }
}

async fn start_flow(state: &AppState, name: String) -> Result<Response, ApiError> {
    let provider = lookup(state, &name)?;
    let discovery = state
        .oidc
        .discovery(&provider)
        .await
        .map_err(provider_error)?;
    let (flow_state, nonce, verifier, browser) = (random()?, random()?, random()?, random()?);
    let now = now_ms();
    state
        .store
        .insert_oauth_flow(&NewOAuthFlow {
            state_hash: flow_state.hash(),
            provider: name.clone(),
            nonce: nonce.expose().to_owned(),
            code_verifier: verifier.expose().to_owned(),
            browser_hash: browser.hash(),
            now,
            expires_at: now + ms(FLOW_TTL),
        })
        .await?;
    let config = &provider.config;
    let url = reqwest::Url::parse_with_params(
        &discovery.authorization_endpoint,
        &[
            ("response_type", "code"),
            ("client_id", config.client_id.as_str()),
            ("redirect_uri", redirect_uri(state, &name).as_str()),
            ("scope", config.scope().as_str()),
            ("state", flow_state.expose()),
            ("nonce", nonce.expose()),
            ("code_challenge", challenge(verifier.expose()).as_str()),
            ("code_challenge_method", "S256"),
        ],
    )
    .map_err(ApiError::internal)?;
    let mut response = see_other(url.as_str())?;
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie(state, browser.expose(), FLOW_TTL.as_secs())?,
    );
    Ok(response)
}

/// What the provider sends back (RFC 6749 §4.1.2, RFC 9207's `iss`).
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub iss: Option<String>,
}

/// `GET /api/v1/auth/oauth/{provider}/callback`
pub async fn callback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, ApiError> {
    match finish_flow(&state, name, &headers, query).await {
        Err(err) => refusal(&state, &headers, err),
        ok => ok,
    }
}

async fn finish_flow(
    state: &AppState,
    name: String,
    headers: &HeaderMap,
    query: CallbackQuery,
) -> Result<Response, ApiError> {
    let provider = lookup(state, &name)?;
    let presented = query
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .ok_or_else(|| invalid_state("the sign-in has no state; start again"))?;
    let now = now_ms();
    // Used up here, whatever follows: a state works once.
    let flow = state
        .store
        .take_oauth_flow(&OpaqueToken::hash_presented(presented), now)
        .await?
        .ok_or_else(|| {
            invalid_state("this sign-in is unknown, expired or already used; start again")
        })?;
    if flow.provider != name {
        return Err(invalid_state(
            "this sign-in was started with another provider",
        ));
    }
    let same_browser =
        flow_cookie(headers).is_some_and(|c| OpaqueToken::hash_presented(c) == flow.browser_hash);
    if !same_browser {
        return Err(invalid_state(
            "this sign-in was started in another browser; start again",
        ));
    }
    if let Some(error) = &query.error {
        let error = crate::oidc::sanitize(error);
        return Err(ApiError::new(
            ErrorCode::OauthProviderError,
            format!("the provider did not sign you in ({error})"),
        ));
    }
    // RFC 9207: when the provider names itself, it must be the one we asked.
    if query
        .iss
        .as_ref()
        .is_some_and(|iss| *iss != provider.config.issuer)
    {
        return Err(ApiError::new(
            ErrorCode::OauthProviderError,
            "the answer came from another provider",
        ));
    }
    let code = query
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 2048)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::OauthProviderError,
                "the provider sent no authorization code",
            )
        })?;
    let discovery = state
        .oidc
        .discovery(&provider)
        .await
        .map_err(provider_error)?;
    let tokens = state
        .oidc
        .exchange(
            &provider,
            &discovery,
            code,
            &flow.code_verifier,
            &redirect_uri(state, &name),
        )
        .await
        .map_err(provider_error)?;
    let id_token = tokens
        .id_token
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidIdToken, "the provider sent no ID token"))?;
    let expect = Expected {
        issuer: &provider.config.issuer,
        client_id: &provider.config.client_id,
        nonce: &flow.nonce,
    };
    let keys = state
        .oidc
        .jwks(&provider, &discovery, false)
        .await
        .map_err(provider_error)?;
    let claims = match id_token::verify(id_token, &keys, expect) {
        // The provider may have rotated its keys since we fetched them.
        Err(IdTokenError::UnknownKey) => {
            let keys = state
                .oidc
                .jwks(&provider, &discovery, true)
                .await
                .map_err(provider_error)?;
            id_token::verify(id_token, &keys, expect)
        }
        other => other,
    }
    .map_err(|err| {
        tracing::warn!(provider = %name, error = %err, "ID token refused");
        ApiError::new(ErrorCode::InvalidIdToken, err.to_string())
    })?;

    // Email and name: from the ID token, else from userinfo (for the same `sub`).
    let (mut email, mut verified, mut display) = (
        claims.email.clone(),
        id_token::truthy(claims.email_verified.as_ref()),
        claims.name.clone(),
    );
    if email.is_none()
        && let Some(access) = &tokens.access_token
    {
        let info = state
            .oidc
            .userinfo(&discovery, access)
            .await
            .map_err(provider_error)?;
        if !info.is_null() {
            if info["sub"].as_str() != Some(claims.sub.as_str()) {
                return Err(ApiError::new(
                    ErrorCode::InvalidIdToken,
                    "the provider's userinfo is for someone else",
                ));
            }
            email = info["email"].as_str().map(str::to_owned);
            verified = id_token::truthy(info.get("email_verified"));
            display = display.or_else(|| info["name"].as_str().map(str::to_owned));
        }
    }
    let email = email.and_then(|e| Email::parse(&e).ok());
    let (user, outcome, login_code) =
        sign_in(state, &name, &claims.sub, email, verified, display).await?;
    if let OidcOutcome::Linked { revoked } = &outcome
        && !revoked.is_empty()
    {
        state.revocations.sessions_revoked(revoked).await;
    }
    tracing::info!(provider = %name, user = %user.id, ?outcome, "signed in with a provider");
    user_redirect(state, &login_code)
}

/// The last step of the callback, split out: store, then the redirect's code.
async fn sign_in(
    state: &AppState,
    provider: &str,
    subject: &str,
    email: Option<Email>,
    verified: bool,
    display: Option<String>,
) -> Result<(UserRecord, OidcOutcome, OpaqueToken), ApiError> {
    let now = now_ms();
    let display_name = display
        .as_deref()
        .and_then(|n| DisplayName::parse(n).ok())
        .or_else(|| {
            email
                .as_ref()
                .and_then(|e| DisplayName::parse(e.as_str().split('@').next()?).ok())
        })
        .map(|n| n.as_str().to_owned())
        .unwrap_or_else(|| "MeetEase user".to_owned());
    let new_user = UserRecord {
        id: UserId::new(),
        email: email
            .as_ref()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        display_name,
        password_hash: String::new(),
        email_verified_at: verified.then_some(now),
        created_at: now,
    };
    let verification = if verified { None } else { Some(random()?) };
    let verify_expires = now + ms(state.settings.tokens.verify_email_ttl);
    let login_code = random()?;
    let stored = state
        .store
        .oidc_sign_in(
            &OidcLogin {
                provider,
                subject,
                email: email.as_ref().map(Email::as_str),
                email_verified: verified,
                verification: verification.as_ref().map(|token| NewOneTimeToken {
                    hash: token.hash(),
                    purpose: Purpose::VerifyEmail,
                    user_id: new_user.id,
                    now,
                    expires_at: verify_expires,
                }),
                new_user: new_user.clone(),
                login_code_hash: login_code.hash(),
                login_code_expires_at: now + ms(LOGIN_CODE_TTL),
                now,
            },
            |user, outcome| match outcome {
                OidcOutcome::Returning => vec![],
                OidcOutcome::Linked { .. } => vec![OutboxEvent {
                    kind: "auth.identity_linked",
                    payload: json!({
                        "user_id": user.id,
                        "email": user.email,
                        "display_name": user.display_name,
                        "provider": provider,
                    }),
                }],
                OidcOutcome::Created => {
                    let mut events = vec![OutboxEvent {
                        kind: "user.registered",
                        payload: json!({
                            "user_id": user.id,
                            "email": user.email,
                            "display_name": user.display_name,
                            "registered_at": now,
                            "provider": provider,
                        }),
                    }];
                    if let Some(token) = &verification {
                        events.push(super::session::verification_event(
                            user,
                            token,
                            verify_expires,
                        ));
                    }
                    events
                }
            },
        )
        .await?;
    Ok((stored.0, stored.1, login_code))
}

/// 303 to the web client with the one-time login code in the fragment (which
/// browsers never send to a server, so it stays out of logs and `Referer`).
fn user_redirect(state: &AppState, code: &OpaqueToken) -> Result<Response, ApiError> {
    let mut response = see_other(&format!(
        "{}#oauth_code={}",
        state.settings.oauth.return_url,
        code.expose()
    ))?;
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(state, "", 0)?);
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct ExchangeRequest {
    pub code: String,
}

/// `POST /api/v1/auth/oauth/exchange` `{"code"}`: the sign-in's tokens, once.
pub async fn exchange(
    State(state): State<AppState>,
    Json(body): Json<ExchangeRequest>,
) -> Result<Json<AuthResponse>, ApiError> {
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidOneTimeToken,
            "the sign-in code is invalid, expired or already used",
        )
    };
    if body.code.is_empty() || body.code.len() > 256 {
        return Err(invalid());
    }
    let now = now_ms();
    let user = state
        .store
        .take_login_code(&OpaqueToken::hash_presented(&body.code), now)
        .await?
        .ok_or_else(invalid)?;
    Ok(Json(start_session(&state, &user, now).await?))
}
