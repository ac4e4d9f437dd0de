//! Extractors whose rejections are [`ApiError`]s with stable codes instead of
//! axum's plain-text defaults.

use crate::ApiError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use proto::ErrorCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// JSON body extractor and response: malformed, oversized or mistyped bodies
/// become `malformed_body`, `payload_too_large` or `unsupported_media_type`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected `Content-Type: application/json`",
        ),
        JsonRejection::JsonDataError(err) => {
            // serde's message names the field and the expected type; it holds no
            // server internals, so it is safe and useful to return.
            ApiError::new(ErrorCode::MalformedBody, truncate(err.body_text()))
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::new(ErrorCode::MalformedBody, "the body is not valid JSON")
        }
        JsonRejection::BytesRejection(err) => {
            if err.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "the body is too large")
            } else {
                ApiError::new(ErrorCode::MalformedBody, "the body could not be read")
            }
        }
        other => ApiError::new(ErrorCode::MalformedBody, truncate(other.body_text())),
    }
}

/// Path parameters; a value that does not parse is a 404 for the resource, not a 500.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => {
                Err(ApiError::not_found("no such resource"))
            }
            Err(other) => Err(ApiError::internal(other.body_text())),
        }
    }
}

/// Query string; malformed values are `invalid_field`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(err)) => Err(ApiError::new(
                ErrorCode::InvalidField,
                truncate(err.body_text()),
            )),
            Err(other) => Err(ApiError::new(
                ErrorCode::InvalidField,
                truncate(other.body_text()),
            )),
        }
    }
}

/// Serde messages can quote the input; keep them short.
fn truncate(mut text: String) -> String {
    const MAX: usize = 200;
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
