//! The HTTP API under `/api/v1/users`. Every route needs a bearer access token,
//! verified here against auth's JWKS (never trusting `X-User-Id`).
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/users/me` | the caller's profile (created from the token on first access) |
//! | `PATCH /api/v1/users/me` | change display name, time zone, locale, bio, preferences |
//! | `PUT /api/v1/users/me/avatar` | the raw image bytes as the body (PNG, JPEG or WebP, ≤ 5 MiB) |
//! | `DELETE /api/v1/users/me/avatar` | back to the generated avatar |
//! | `GET /api/v1/users/{id}` | someone's public profile: id, display name, avatar URL |
//! | `GET /api/v1/users/{id}/avatar?size=64\|256` | the avatar image (PNG, or the generated SVG) |

use crate::avatar;
use crate::domain::{Bio, DisplayName, Locale, Preferences, PreferencesPatch, TimeZone};
use crate::store::{AvatarImage, Profile, ProfileChange};
use crate::{AppState, now_ms};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use proto::ErrorCode;
use proto::ids::UserId;
use serde::{Deserialize, Serialize};
use servicekit::ApiError;
use servicekit::extract::{Json, Path, Query};
use servicekit::tokens::AuthUser;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/users/me", get(get_me).patch(patch_me))
        .route(
            "/api/v1/users/me/avatar",
            put(put_avatar)
                .delete(delete_avatar)
                // The body is read by the handler with its own limit (and answer).
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/users/{id}", get(get_public))
        .route("/api/v1/users/{id}/avatar", get(get_avatar))
        .with_state(state)
}

/// The caller's own profile.
#[derive(Debug, Serialize)]
pub struct MeView {
    pub id: UserId,
    /// From the access token (auth owns the email).
    pub email: String,
    pub display_name: String,
    pub time_zone: String,
    pub locale: String,
    pub bio: String,
    pub avatar_url: String,
    /// Whether an uploaded avatar is set (otherwise `avatar_url` serves the generated one).
    pub has_avatar: bool,
    pub preferences: Preferences,
}

/// What anyone signed in may see about a person.
#[derive(Debug, Serialize)]
pub struct PublicView {
    pub id: UserId,
    pub display_name: String,
    pub avatar_url: String,
}

/// `/api/v1/users/{id}/avatar`, with `?v=` naming the current image so a changed
/// avatar gets a new URL.
fn avatar_url(profile: &Profile) -> String {
    let version = profile.avatar_version.as_deref().unwrap_or("default");
    format!("/api/v1/users/{}/avatar?v={version}", profile.user_id)
}

fn me_view(profile: Profile, user: &AuthUser) -> MeView {
    MeView {
        id: profile.user_id,
        email: user.claims.email.clone(),
        avatar_url: avatar_url(&profile),
        has_avatar: profile.avatar_version.is_some(),
        display_name: profile.display_name,
        time_zone: profile.time_zone,
        locale: profile.locale,
        bio: profile.bio,
        preferences: profile.preferences,
    }
}

/// The caller's profile, created from the token's claims when it does not exist yet.
async fn own_profile(state: &AppState, user: &AuthUser) -> Result<Profile, ApiError> {
    let name = DisplayName::from_claim(&user.claims.name);
    Ok(state
        .store
        .ensure_profile(user.user_id(), &name, now_ms())
        .await?)
}

async fn get_me(State(state): State<AppState>, user: AuthUser) -> Result<Json<MeView>, ApiError> {
    let profile = own_profile(&state, &user).await?;
    Ok(Json(me_view(profile, &user)))
}

/// `PATCH /api/v1/users/me`: every field optional; absent fields stay as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    pub display_name: Option<String>,
    pub time_zone: Option<String>,
    pub locale: Option<String>,
    pub bio: Option<String>,
    pub preferences: Option<PreferencesPatch>,
}

async fn patch_me(
    State(state): State<AppState>,
    user: AuthUser,
    Json(patch): Json<ProfilePatch>,
) -> Result<Json<MeView>, ApiError> {
    // Parse every field before touching anything: a request changes all or nothing.
    let mut change = ProfileChange {
        display_name: patch
            .display_name
            .as_deref()
            .map(DisplayName::parse)
            .transpose()?,
        time_zone: patch
            .time_zone
            .as_deref()
            .map(TimeZone::parse)
            .transpose()?,
        locale: patch.locale.as_deref().map(Locale::parse).transpose()?,
        bio: patch.bio.as_deref().map(Bio::parse).transpose()?,
        preferences: None,
    };
    let profile = own_profile(&state, &user).await?;
    if let Some(prefs) = patch.preferences {
        let mut preferences = profile.preferences;
        preferences.apply(prefs);
        // Only a real change is stored and announced.
        if preferences != profile.preferences {
            change.preferences = Some(preferences);
        }
    }
    let profile = state
        .store
        .update_profile(user.user_id(), &change, now_ms())
        .await?
        .ok_or_else(|| ApiError::internal("profile vanished during update"))?;
    Ok(Json(me_view(profile, &user)))
}

/// `PUT /api/v1/users/me/avatar`: the body is the image file itself (any
/// `Content-Type`; the content decides). Answers the updated profile.
async fn put_avatar(
    State(state): State<AppState>,
    user: AuthUser,
    request: Request,
) -> Result<Json<MeView>, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > avatar::MAX_UPLOAD_BYTES as u64) {
        return Err(avatar::too_many_bytes());
    }
    let bytes = read_limited(request.into_body(), avatar::MAX_UPLOAD_BYTES).await?;
    if bytes.is_empty() {
        return Err(ApiError::new(
            ErrorCode::UnsupportedImage,
            "the body is empty: send the image file as the request body",
        ));
    }
    // Format and dimensions from the header, before any pixel is decoded.
    avatar::inspect(&bytes)?;
    let _permit = state.decoders.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            "too many images being processed",
        )
        .with_retry_after(1)
    })?;
    let images = tokio::task::spawn_blocking(move || avatar::process(&bytes))
        .await
        .map_err(ApiError::internal)??;
    let profile = own_profile(&state, &user).await?;
    let version = uuid::Uuid::new_v4().simple().to_string();
    let images: Vec<(u32, AvatarImage)> = images
        .into_iter()
        .map(|(size, data)| {
            (
                size,
                AvatarImage {
                    content_type: avatar::STORED_CONTENT_TYPE.to_owned(),
                    data,
                },
            )
        })
        .collect();
    state
        .store
        .set_avatar(profile.user_id, &version, &images, now_ms())
        .await?;
    let profile = own_profile(&state, &user).await?;
    Ok(Json(me_view(profile, &user)))
}

/// Read a body up to `limit` bytes; more is `payload_too_large`.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let too_large = std::error::Error::source(&err)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            avatar::too_many_bytes()
        } else {
            ApiError::new(ErrorCode::MalformedBody, "the body could not be read")
        }
    })
}

async fn delete_avatar(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<StatusCode, ApiError> {
    let profile = own_profile(&state, &user).await?;
    state.store.delete_avatar(profile.user_id, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_public(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<UserId>,
) -> Result<Json<PublicView>, ApiError> {
    let profile = if id == user.user_id() {
        Some(own_profile(&state, &user).await?)
    } else {
        state.store.profile(id).await?
    };
    let profile = profile.ok_or_else(no_such_user)?;
    Ok(Json(PublicView {
        id: profile.user_id,
        avatar_url: avatar_url(&profile),
        display_name: profile.display_name,
    }))
}

fn no_such_user() -> ApiError {
    ApiError::new(ErrorCode::UserNotFound, "no such user")
}

/// `?size=64|256`. The `v` that `avatar_url` adds is only a cache buster for
/// browsers; unknown query parameters are ignored.
#[derive(Debug, Deserialize)]
pub struct AvatarQuery {
    pub size: Option<u32>,
}

/// Browsers may keep an avatar 5 minutes, then revalidate with the ETag.
const AVATAR_CACHE: &str = "private, max-age=300";

async fn get_avatar(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<UserId>,
    Query(query): Query<AvatarQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let size = query.size.unwrap_or(avatar::DEFAULT_SIZE);
    if !avatar::SIZES.contains(&size) {
        return Err(ApiError::invalid_field("size", "must be 64 or 256"));
    }
    let profile = if id == user.user_id() {
        Some(own_profile(&state, &user).await?)
    } else {
        state.store.profile(id).await?
    };
    let profile = profile.ok_or_else(no_such_user)?;
    let stored = match &profile.avatar_version {
        Some(version) => state
            .store
            .avatar(profile.user_id, size)
            .await?
            .map(|image| (version.clone(), image)),
        None => None,
    };
    let (etag, content_type, body) = match stored {
        Some((version, image)) => (
            format!("\"{version}-{size}\""),
            image.content_type,
            image.data,
        ),
        None => {
            let svg =
                avatar::default_svg(&profile.user_id.to_string(), &profile.display_name, size);
            (
                format!("\"d{:016x}\"", avatar::fnv1a(svg.as_bytes())),
                "image/svg+xml".to_owned(),
                svg.into_bytes(),
            )
        }
    };
    let etag_value = HeaderValue::from_str(&etag).map_err(ApiError::internal)?;
    let mut response = if if_none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = body.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&content_type).map_err(ApiError::internal)?,
        );
        response
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag_value);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(AVATAR_CACHE),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // An SVG opened on its own must not run anything.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    Ok(response)
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}
