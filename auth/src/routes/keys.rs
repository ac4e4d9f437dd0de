//! The public keys, and token introspection for other services.

use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use proto::auth::Introspection;
use serde::Deserialize;
use servicekit::ApiError;
use servicekit::extract::Json;
use servicekit::tokens::TokenError;

/// `GET /api/v1/auth/jwks` (and `/.well-known/jwks.json`): the Ed25519 public keys
/// that verify access tokens, by `kid`. Cacheable for a few minutes; a verifier that
/// meets an unknown `kid` fetches again.
pub async fn jwks(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.keys.fresh_jwks().await.as_ref().clone()),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct IntrospectRequest {
    pub token: String,
}

/// `POST /api/v1/auth/introspect` `{"token": "<access token>"}`: `{"active": true,
/// …claims}` for a token that verifies and is not revoked, otherwise
/// `{"active": false}` and nothing more (RFC 7662 style). 503 only when revocation
/// cannot be checked.
pub async fn introspect(
    State(state): State<AppState>,
    Json(body): Json<IntrospectRequest>,
) -> Result<Json<Introspection>, ApiError> {
    match state.verifier.verify(&body.token).await {
        Ok(claims) => Ok(Json(Introspection {
            active: true,
            claims: Some(claims),
        })),
        Err(TokenError::Unavailable) => Err(TokenError::Unavailable.into()),
        Err(_) => Ok(Json(Introspection {
            active: false,
            claims: None,
        })),
    }
}
