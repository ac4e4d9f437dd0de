//! Change password, verify email, reset a forgotten password, delete the account.

use super::session::verification_event;
use super::{UserView, hash_error, rate_limited, weak};
use crate::domain::{Email, OpaqueToken, Password};
use crate::store::{Millis, NewOneTimeToken, OutboxEvent, Purpose, UserRecord};
use crate::{AppState, now_ms};
use axum::extract::State;
use axum::http::StatusCode;
use proto::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use servicekit::ApiError;
use servicekit::extract::Json;
use servicekit::tokens::AuthUser;
use std::time::{Duration, Instant};

fn ms(duration: Duration) -> Millis {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn invalid_one_time() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidOneTimeToken,
        "the link is invalid, expired or already used",
    )
}

/// One-time tokens are 43 characters; allow some slack, refuse anything huge
/// before hashing it.
fn plausible_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= 256
}

#[derive(Debug, Deserialize)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

/// The caller proves they hold the account's password (after the throttle
/// check); a wrong one counts as a failed sign-in for the account.
async fn confirm_password(
    state: &AppState,
    user: &UserRecord,
    account_key: &str,
    password: &str,
    wrong: &'static str,
) -> Result<(), ApiError> {
    let matches = !password.is_empty()
        && password.len() <= 4 * 128
        && user.has_password()
        && state
            .hasher
            .verify(password, Some(&user.password_hash))
            .await
            .map_err(hash_error)?;
    if !matches {
        state
            .throttles
            .account
            .fail(account_key, Instant::now())
            .await;
        return Err(ApiError::new(ErrorCode::InvalidCredentials, wrong));
    }
    Ok(())
}

/// Change the password: the current one is checked (and throttled like a sign-in),
/// every other session is signed out, the caller's stays.
pub async fn change_password(
    State(state): State<AppState>,
    caller: AuthUser,
    Json(body): Json<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let started = Instant::now();
    let user = state
        .store
        .user_by_id(caller.claims.sub)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "the account no longer exists"))?;
    let account_key = format!("account:{}", user.email);
    state
        .throttles
        .account
        .check(&account_key, started)
        .await
        .map_err(rate_limited)?;
    let new_password = Password::parse(&body.new_password).map_err(weak)?;
    confirm_password(
        &state,
        &user,
        &account_key,
        &body.current_password,
        "the current password is wrong",
    )
    .await?;
    let hash = state.hasher.hash(&new_password).await.map_err(hash_error)?;
    let now = now_ms();
    let event = OutboxEvent {
        kind: "auth.password_changed",
        payload: json!({
            "user_id": user.id,
            "email": user.email,
            "display_name": user.display_name,
            "how": "changed",
        }),
    };
    let revoked = state
        .store
        .change_password(user.id, &hash, Some(caller.claims.sid), now, &[event])
        .await?;
    state.revocations.sessions_revoked(&revoked).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    pub token: String,
}

#[derive(Debug, Serialize)]
pub struct UserBody {
    pub user: UserView,
}

/// Use a verification link's token.
pub async fn verify_email(
    State(state): State<AppState>,
    Json(body): Json<TokenRequest>,
) -> Result<Json<UserBody>, ApiError> {
    if !plausible_token(&body.token) {
        return Err(invalid_one_time());
    }
    let user = state
        .store
        .verify_email(
            &OpaqueToken::hash_presented(&body.token),
            now_ms(),
            |user| {
                vec![OutboxEvent {
                    kind: "user.email_verified",
                    payload: json!({ "user_id": user.id, "email": user.email }),
                }]
            },
        )
        .await?
        .ok_or_else(invalid_one_time)?;
    Ok(Json(UserBody {
        user: UserView::from(&user),
    }))
}

/// Send a new verification link to the caller (throttled per mailbox).
pub async fn resend_verification(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<StatusCode, ApiError> {
    let user = state
        .store
        .user_by_id(caller.claims.sub)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "the account no longer exists"))?;
    if user.email_verified_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "the email is already verified",
        ));
    }
    let mail_key = format!("mail:{}", user.email);
    let now_instant = Instant::now();
    state
        .throttles
        .mail
        .check(&mail_key, now_instant)
        .await
        .map_err(rate_limited)?;
    state.throttles.mail.fail(&mail_key, now_instant).await;
    let now = now_ms();
    let token = OpaqueToken::generate().map_err(|_| ApiError::internal("the system RNG failed"))?;
    let expires_at = now + ms(state.settings.tokens.verify_email_ttl);
    state
        .store
        .issue_one_time_token(
            &NewOneTimeToken {
                hash: token.hash(),
                purpose: Purpose::VerifyEmail,
                user_id: user.id,
                now,
                expires_at,
            },
            &[verification_event(&user, &token, expires_at)],
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize)]
pub struct ResetRequest {
    pub email: String,
}

/// Ask for a reset link. Always 202 with the same body, whether or not the account
/// exists, so the answer reveals nothing.
pub async fn request_reset(
    State(state): State<AppState>,
    Json(body): Json<ResetRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let accepted = || {
        Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "status": "if the account exists, a reset link is on its way" })),
        ))
    };
    let Ok(email) = Email::parse(&body.email) else {
        return accepted();
    };
    let mail_key = format!("mail:{email}");
    let now_instant = Instant::now();
    if state
        .throttles
        .mail
        .check(&mail_key, now_instant)
        .await
        .is_err()
    {
        return accepted();
    }
    let Some(user) = state.store.user_by_email(email.as_str()).await? else {
        return accepted();
    };
    state.throttles.mail.fail(&mail_key, now_instant).await;
    let now = now_ms();
    let token = OpaqueToken::generate().map_err(|_| ApiError::internal("the system RNG failed"))?;
    let expires_at = now + ms(state.settings.tokens.reset_password_ttl);
    state
        .store
        .issue_one_time_token(
            &NewOneTimeToken {
                hash: token.hash(),
                purpose: Purpose::ResetPassword,
                user_id: user.id,
                now,
                expires_at,
            },
            &[OutboxEvent {
                kind: "auth.password_reset_requested",
                payload: json!({
                    "user_id": user.id,
                    "email": user.email,
                    "display_name": user.display_name,
                    "token": token.expose(),
                    "expires_at": expires_at,
                }),
            }],
        )
        .await?;
    accepted()
}

#[derive(Debug, Deserialize)]
pub struct ConfirmResetRequest {
    pub token: String,
    pub new_password: String,
}

/// Set a new password with a reset link's token; every session is signed out.
pub async fn confirm_reset(
    State(state): State<AppState>,
    Json(body): Json<ConfirmResetRequest>,
) -> Result<StatusCode, ApiError> {
    if !plausible_token(&body.token) {
        return Err(invalid_one_time());
    }
    // Check the new password before using up the link, so a weak choice can be retried.
    let password = Password::parse(&body.new_password).map_err(weak)?;
    let hash = state.hasher.hash(&password).await.map_err(hash_error)?;
    let (user, revoked) = state
        .store
        .reset_password(
            &OpaqueToken::hash_presented(&body.token),
            &hash,
            now_ms(),
            |user| {
                vec![OutboxEvent {
                    kind: "auth.password_changed",
                    payload: json!({
                        "user_id": user.id,
                        "email": user.email,
                        "display_name": user.display_name,
                        "how": "reset",
                    }),
                }]
            },
        )
        .await?
        .ok_or_else(invalid_one_time)?;
    state.revocations.sessions_revoked(&revoked).await;
    // The owner proved the mailbox: lift any sign-in block on the account.
    state
        .throttles
        .account
        .succeed(&format!("account:{}", user.email))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// An account without a password (OpenID only) may be deleted by a session that
/// signed in at most this long ago.
pub const RECENT_SIGN_IN: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Deserialize)]
pub struct DeleteAccountRequest {
    /// Required when the account has a password.
    #[serde(default)]
    pub password: Option<String>,
}

/// `DELETE /api/v1/auth/account` (bearer, `{"password"}`): delete the caller's
/// account. The password is confirmed (throttled like a sign-in); an account with
/// none needs a session that signed in within [`RECENT_SIGN_IN`]. Every session is
/// revoked and `user.deleted` goes out through the outbox, in one transaction.
pub async fn delete_account(
    State(state): State<AppState>,
    caller: AuthUser,
    Json(body): Json<DeleteAccountRequest>,
) -> Result<StatusCode, ApiError> {
    let started = Instant::now();
    let user = state
        .store
        .user_by_id(caller.claims.sub)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "the account no longer exists"))?;
    if user.has_password() {
        let account_key = format!("account:{}", user.email);
        state
            .throttles
            .account
            .check(&account_key, started)
            .await
            .map_err(rate_limited)?;
        let password = body.password.as_deref().unwrap_or_default();
        confirm_password(
            &state,
            &user,
            &account_key,
            password,
            "the password is wrong",
        )
        .await?;
    } else {
        let signed_in = state.store.session_started(caller.claims.sid).await?;
        let recent = signed_in.is_some_and(|at| now_ms() - at <= ms(RECENT_SIGN_IN));
        if !recent {
            return Err(ApiError::new(
                ErrorCode::ReauthenticationRequired,
                "sign in again, then delete the account within 10 minutes",
            ));
        }
    }
    let now = now_ms();
    let event = OutboxEvent {
        kind: "user.deleted",
        payload: json!({ "user_id": user.id, "deleted_at": now }),
    };
    let revoked = state
        .store
        .delete_account(user.id, now, &[event])
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "the account no longer exists"))?;
    state.revocations.sessions_revoked(&revoked).await;
    tracing::info!(user = %user.id, sessions = revoked.len(), "account deleted");
    Ok(StatusCode::NO_CONTENT)
}
