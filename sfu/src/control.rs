//! The internal control API (port 8006) that signaling drives; see
//! `proto::sfu` for every call and body. Each handler hands one closure to the
//! worker that owns the core and waits for its answer.

use crate::core::SfuError;
use crate::driver::WorkerHandle;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures_util::Stream;
use proto::ErrorCode;
use proto::ids::ParticipantId;
use proto::media::RoomId;
use proto::sfu::{
    CreateSession, MuteTrack, NodeLoad, PublisherOffer, RemoteCandidate, RoomSnapshot, SdpAnswer,
    SessionCreated, SetSubscription, SubscriberAnswer, SubscriberOffer,
};
use servicekit::extract::{Json, Path};
use servicekit::{ApiError, Secret};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// Forwarded packets per second at which a node reports itself full (load 1.0).
/// From the capacity measured on the reference machine; see `docs/capacity.md`.
pub const FULL_PPS: f64 = 200_000.0;

#[derive(Clone)]
struct ControlState {
    worker: WorkerHandle,
    token: Arc<Secret<String>>,
}

pub fn router(worker: WorkerHandle, token: Secret<String>) -> Router {
    let state = ControlState {
        worker,
        token: Arc::new(token),
    };
    Router::new()
        .route("/v1/sessions", post(create_session))
        .route("/v1/sessions/{participant}", delete(remove_session))
        .route(
            "/v1/sessions/{participant}/publisher/offer",
            post(publisher_offer),
        )
        .route(
            "/v1/sessions/{participant}/subscriber/answer",
            post(subscriber_answer),
        )
        .route("/v1/sessions/{participant}/candidate", post(candidate))
        .route(
            "/v1/sessions/{participant}/subscription",
            post(subscription),
        )
        .route("/v1/sessions/{participant}/mute", post(mute))
        .route("/v1/sessions/{participant}/ice-restart", post(ice_restart))
        .route("/v1/rooms/{room}", get(room))
        .route("/v1/events", get(events))
        .route("/v1/load", get(load))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_service_token,
        ))
        .with_state(state)
}

/// Every control call needs the service credential; compared in constant time.
async fn require_service_token(
    State(state): State<ControlState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !constant_time_eq(presented.as_bytes(), state.token.expose().as_bytes()) {
        return ApiError::new(
            ErrorCode::Unauthenticated,
            "a valid service token is required",
        )
        .into_response();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn stopped() -> ApiError {
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        "the SFU worker is not running",
    )
    .with_retry_after(1)
}

fn sfu_error(err: SfuError) -> ApiError {
    let message = err.to_string();
    ApiError::new(ErrorCode::from(err), message)
}

async fn run<T: Send + 'static>(
    state: &ControlState,
    f: impl FnOnce(&mut crate::core::Sfu, std::time::Instant) -> Result<T, SfuError> + Send + 'static,
) -> Result<T, ApiError> {
    state
        .worker
        .call(f)
        .await
        .ok_or_else(stopped)?
        .map_err(sfu_error)
}

async fn create_session(
    State(state): State<ControlState>,
    Json(request): Json<CreateSession>,
) -> Result<(StatusCode, Json<SessionCreated>), ApiError> {
    let created = run(&state, move |sfu, now| sfu.create_session(now, request)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn publisher_offer(
    State(state): State<ControlState>,
    Path(participant): Path<ParticipantId>,
    Json(offer): Json<PublisherOffer>,
) -> Result<Json<SdpAnswer>, ApiError> {
    let answer = run(&state, move |sfu, now| {
        sfu.publisher_offer(now, participant, offer)
    })
    .await?;
    Ok(Json(answer))
}

async fn subscriber_answer(
    State(state): State<ControlState>,
    Path(participant): Path<ParticipantId>,
    Json(answer): Json<SubscriberAnswer>,
) -> Result<StatusCode, ApiError> {
    run(&state, move |sfu, now| {
        sfu.subscriber_answer(now, participant, &answer.sdp)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn candidate(
    State(state): State<ControlState>,
    Path(participant): Path<ParticipantId>,
    Json(candidate): Json<RemoteCandidate>,
) -> Result<StatusCode, ApiError> {
    run(&state, move |sfu, now| {
        sfu.add_candidate(now, participant, &candidate)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn subscription(
    State(state): State<ControlState>,
    Path(participant): Path<ParticipantId>,
    Json(request): Json<SetSubscription>,
) -> Result<StatusCode, ApiError> {
    run(&state, move |sfu, now| {
        sfu.set_subscription(now, participant, &request)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn mute(
    State(state): State<ControlState>,
    Path(_participant): Path<ParticipantId>,
    Json(request): Json<MuteTrack>,
) -> Result<StatusCode, ApiError> {
    run(&state, move |sfu, now| sfu.mute_track(now, &request)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ice_restart(
    State(state): State<ControlState>,
    Path(participant): Path<ParticipantId>,
) -> Result<Json<SubscriberOffer>, ApiError> {
    let offer = run(&state, move |sfu, now| sfu.ice_restart(now, participant)).await?;
    Ok(Json(offer))
}

async fn remove_session(
    State(state): State<ControlState>,
    Path(participant): Path<ParticipantId>,
) -> Result<StatusCode, ApiError> {
    run(&state, move |sfu, now| sfu.remove_session(now, participant)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn room(
    State(state): State<ControlState>,
    Path(room): Path<RoomId>,
) -> Result<Json<RoomSnapshot>, ApiError> {
    let snapshot = state
        .worker
        .call(move |sfu, _| sfu.room_snapshot(&room))
        .await
        .ok_or_else(stopped)?;
    snapshot
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such room on this node"))
}

async fn load(State(state): State<ControlState>) -> Result<Json<NodeLoad>, ApiError> {
    let pps = state.worker.forwarded_pps();
    let load = state
        .worker
        .call(move |sfu, _| sfu.load(pps, FULL_PPS))
        .await
        .ok_or_else(stopped)?;
    Ok(Json(load))
}

/// Server-sent events, one JSON [`proto::sfu::SfuEvent`] each, for as long as the
/// connection lasts. A listener that falls behind gets a `lagged` event and
/// should re-read the rooms it cares about.
async fn events(
    State(state): State<ControlState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.worker.subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(event) => Event::default().data(serde_json::to_string(&event).unwrap_or_default()),
            Err(RecvError::Lagged(missed)) => {
                Event::default().event("lagged").data(missed.to_string())
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_by_value() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
