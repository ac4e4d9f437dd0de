//! Register, sign in, refresh, sign out, sign out everywhere.

use super::{
    AuthResponse, ClientIp, UserView, access_token, hash_error, parse_display_name, parse_email,
    rate_limited, weak,
};
use crate::domain::{Email, OpaqueToken, Password};
use crate::store::{
    Millis, NewOneTimeToken, NewSession, OutboxEvent, Purpose, RevokeReason, Rotation, UserRecord,
};
use crate::{AppState, now_ms};
use axum::extract::State;
use axum::http::StatusCode;
use proto::ErrorCode;
use proto::ids::UserId;
use serde::Deserialize;
use serde_json::json;
use servicekit::ApiError;
use servicekit::extract::Json;
use servicekit::tokens::AuthUser;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Longest password a sign-in hashes; anything longer cannot be a valid password
/// (new ones are at most 128 characters) and is refused without hashing.
const MAX_LOGIN_PASSWORD_BYTES: usize = 4 * 128;

fn ms(duration: Duration) -> Millis {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn opaque() -> Result<OpaqueToken, ApiError> {
    OpaqueToken::generate().map_err(|_| ApiError::internal("the system RNG failed"))
}

#[derive(Debug, Deserialize)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    pub display_name: String,
}

pub async fn register(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(body): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<AuthResponse>), ApiError> {
    let email = parse_email(&body.email)?;
    let display_name = parse_display_name(&body.display_name)?;
    let password = Password::parse(&body.password).map_err(weak)?;
    // Every account created counts against the address: a script creating accounts
    // in bulk meets growing delays after the first 20 in an hour.
    let ip_key = ip.key();
    let now_instant = Instant::now();
    state
        .throttles
        .register
        .check(&ip_key, now_instant)
        .await
        .map_err(rate_limited)?;
    state.throttles.register.fail(&ip_key, now_instant).await;
    let password_hash = state.hasher.hash(&password).await.map_err(hash_error)?;
    let now = now_ms();
    let user = UserRecord {
        id: UserId::new(),
        email: email.as_str().to_owned(),
        display_name: display_name.as_str().to_owned(),
        password_hash,
        email_verified_at: None,
        created_at: now,
    };
    let verification = opaque()?;
    let verify_expires = now + ms(state.settings.tokens.verify_email_ttl);
    let events = [
        OutboxEvent {
            kind: "user.registered",
            payload: json!({
                "user_id": user.id,
                "email": user.email,
                "display_name": user.display_name,
                "registered_at": now,
            }),
        },
        verification_event(&user, &verification, verify_expires),
    ];
    state
        .store
        .create_user(
            &user,
            &NewOneTimeToken {
                hash: verification.hash(),
                purpose: Purpose::VerifyEmail,
                user_id: user.id,
                now,
                expires_at: verify_expires,
            },
            &events,
        )
        .await?;
    let response = start_session(&state, &user, now).await?;
    Ok((StatusCode::CREATED, Json(response)))
}

/// The outbox event that asks notify to send a verification link.
pub(super) fn verification_event(
    user: &UserRecord,
    token: &OpaqueToken,
    expires_at: Millis,
) -> OutboxEvent {
    OutboxEvent {
        kind: "auth.email_verification_requested",
        payload: json!({
            "user_id": user.id,
            "email": user.email,
            "display_name": user.display_name,
            "token": token.expose(),
            "expires_at": expires_at,
        }),
    }
}

/// A new session with its first refresh token, and the answer carrying both.
pub(super) async fn start_session(
    state: &AppState,
    user: &UserRecord,
    now: Millis,
) -> Result<AuthResponse, ApiError> {
    let tokens = &state.settings.tokens;
    let refresh = opaque()?;
    let session_expires = now + ms(tokens.session_ttl);
    let session = NewSession {
        id: Uuid::now_v7(),
        user_id: user.id,
        now,
        expires_at: session_expires,
        refresh_hash: refresh.hash(),
        refresh_expires_at: (now + ms(tokens.refresh_ttl)).min(session_expires),
    };
    state.store.create_session(&session).await?;
    let (access, expires_in) = access_token(state, user, session.id)?;
    Ok(AuthResponse {
        access_token: access,
        refresh_token: refresh.expose().to_owned(),
        token_type: "Bearer",
        expires_in,
        user: UserView::from(user),
    })
}

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(ErrorCode::InvalidCredentials, "wrong email or password")
}

pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(body): Json<LoginRequest>,
) -> Result<Json<AuthResponse>, ApiError> {
    let started = Instant::now();
    // At capacity, shed before any database or Redis work is spent on this one.
    if state.hasher.saturated() {
        return Err(hash_error(crate::domain::HashError::Busy));
    }
    let ip_key = ip.key();
    state
        .throttles
        .ip
        .check(&ip_key, started)
        .await
        .map_err(rate_limited)?;
    let Ok(email) = Email::parse(&body.email) else {
        // No account can have this address; it is not a secret that it is malformed.
        state.throttles.ip.fail(&ip_key, started).await;
        return Err(invalid_credentials());
    };
    let account_key = format!("account:{email}");
    state
        .throttles
        .account
        .check(&account_key, started)
        .await
        .map_err(rate_limited)?;
    let user = state.store.user_by_email(email.as_str()).await?;
    let matches = if body.password.len() > MAX_LOGIN_PASSWORD_BYTES {
        false
    } else {
        state
            .hasher
            .verify(
                &body.password,
                // An account without a password (made by an OpenID sign-in) costs
                // the same dummy hash as an unknown one, and matches nothing.
                user.as_ref()
                    .filter(|u| u.has_password())
                    .map(|u| u.password_hash.as_str()),
            )
            .await
            .map_err(hash_error)?
    };
    let Some(user) = user.filter(|_| matches) else {
        let now = Instant::now();
        state.throttles.ip.fail(&ip_key, now).await;
        if let Some(delay) = state.throttles.account.fail(&account_key, now).await
            && let Some(user) = state.store.user_by_email(email.as_str()).await?
        {
            lockout_notice(&state, &user, delay).await;
        }
        return Err(invalid_credentials());
    };
    state.throttles.account.succeed(&account_key).await;
    Ok(Json(start_session(&state, &user, now_ms()).await?))
}

/// Tell the owner their account is being guessed at (once per block).
async fn lockout_notice(state: &AppState, user: &UserRecord, delay: Duration) {
    let event = OutboxEvent {
        kind: "auth.sign_in_throttled",
        payload: json!({
            "user_id": user.id,
            "email": user.email,
            "display_name": user.display_name,
            "retry_after_secs": crate::throttle::retry_after_secs(delay),
        }),
    };
    if let Err(err) = state.store.append_outbox(&event, now_ms()).await {
        tracing::warn!(error = %err, "cannot record a lockout notice");
    }
}

#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

fn invalid_refresh() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRefreshToken,
        "the refresh token is not valid; sign in again",
    )
}

pub async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<AuthResponse>, ApiError> {
    if body.refresh_token.is_empty() || body.refresh_token.len() > 256 {
        return Err(invalid_refresh());
    }
    let now = now_ms();
    let tokens = &state.settings.tokens;
    let next = opaque()?;
    let rotation = state
        .store
        .rotate_refresh_token(
            &OpaqueToken::hash_presented(&body.refresh_token),
            &next.hash(),
            now + ms(tokens.refresh_ttl),
            now,
        )
        .await?;
    match rotation {
        Rotation::Rotated { session_id, user } => {
            let (access, expires_in) = access_token(&state, &user, session_id)?;
            Ok(Json(AuthResponse {
                access_token: access,
                refresh_token: next.expose().to_owned(),
                token_type: "Bearer",
                expires_in,
                user: UserView::from(&user),
            }))
        }
        Rotation::Reused { session_id } => {
            tracing::warn!(%session_id, "refresh token reused; the session is revoked");
            state.revocations.sessions_revoked(&[session_id]).await;
            Err(invalid_refresh())
        }
        Rotation::Invalid => Err(invalid_refresh()),
    }
}

/// Sign out this session: its refresh tokens stop working and this access token
/// (and every other one of the session) is revoked until it would have expired.
pub async fn logout(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<StatusCode, ApiError> {
    let now = now_ms();
    let claims = &caller.claims;
    let exp_ms = i64::try_from(claims.exp)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    state
        .revocations
        .revoke_token(claims.jti, exp_ms, now)
        .await?;
    state
        .store
        .revoke_session(claims.sid, RevokeReason::Logout, now)
        .await?;
    state.revocations.sessions_revoked(&[claims.sid]).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Sign out every session of the caller.
pub async fn logout_all(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<StatusCode, ApiError> {
    let now = now_ms();
    let claims = &caller.claims;
    let exp_ms = i64::try_from(claims.exp)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    state
        .revocations
        .revoke_token(claims.jti, exp_ms, now)
        .await?;
    let mut revoked = state
        .store
        .revoke_user_sessions(claims.sub, RevokeReason::LogoutAll, now)
        .await?;
    // The caller's own session may have been revoked already by a racing request.
    if !revoked.contains(&claims.sid) {
        revoked.push(claims.sid);
    }
    state.revocations.sessions_revoked(&revoked).await;
    Ok(StatusCode::NO_CONTENT)
}
