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
    SessionCreated, SetSubscription, SfuEvent, SubscriberAnswer, SubscriberOffer,
};
use servicekit::extract::{Json, Path};
use servicekit::{ApiError, Secret};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::error::RecvError;

/// Forwarded packets per second at which a node reports itself full (load 1.0).
/// From the capacity measured on the reference machine; see `docs/capacity.md`.
pub const FULL_PPS: f64 = 200_000.0;

#[derive(Clone)]
struct ControlState {
    workers: Arc<Vec<WorkerHandle>>,
    placement: Arc<Mutex<Placement>>,
    token: Arc<Secret<String>>,
}

/// Which worker holds each room and each participant. A room lives on one
/// worker, so its media never crosses threads (the hot path takes no lock).
#[derive(Default)]
struct Placement {
    rooms: HashMap<RoomId, usize>,
    participants: HashMap<ParticipantId, (usize, RoomId)>,
}

impl Placement {
    /// The room's worker, or the one with the fewest rooms for a new room.
    fn worker_for(&mut self, room: &RoomId, workers: usize) -> usize {
        if let Some(index) = self.rooms.get(room) {
            return *index;
        }
        let mut counts = vec![0usize; workers];
        for index in self.rooms.values() {
            if let Some(count) = counts.get_mut(*index) {
                *count += 1;
            }
        }
        let index = (0..workers).min_by_key(|i| counts[*i]).unwrap_or(0);
        self.rooms.insert(room.clone(), index);
        index
    }

    fn forget(&mut self, participant: ParticipantId) {
        if let Some((_, room)) = self.participants.remove(&participant)
            && !self.participants.values().any(|(_, r)| *r == room)
        {
            self.rooms.remove(&room);
        }
    }
}

pub fn router(workers: Vec<WorkerHandle>, token: Secret<String>) -> Router {
    let state = ControlState {
        workers: Arc::new(workers),
        placement: Arc::default(),
        token: Arc::new(token),
    };
    // Sessions the SFU ends by itself (media lost) leave the placement too.
    for worker in state.workers.iter() {
        let mut events = worker.subscribe();
        let placement = state.placement.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(SfuEvent::Disconnected { participant_id, .. }) => {
                        if let Ok(mut placement) = placement.lock() {
                            placement.forget(participant_id);
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }
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
        .route("/v1/drain", post(drain))
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

impl ControlState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Placement> {
        // Placement is only ever updated whole under the lock; a poisoned lock
        // still holds consistent maps.
        self.placement.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn worker_of(&self, participant: ParticipantId) -> Result<&WorkerHandle, ApiError> {
        let index = self
            .lock()
            .participants
            .get(&participant)
            .map(|(index, _)| *index)
            .ok_or_else(|| sfu_error(SfuError::UnknownParticipant))?;
        self.workers.get(index).ok_or_else(stopped)
    }
}

/// Run `f` on the worker that holds `participant`.
async fn run<T: Send + 'static>(
    state: &ControlState,
    participant: ParticipantId,
    f: impl FnOnce(&mut crate::core::Sfu, std::time::Instant) -> Result<T, SfuError> + Send + 'static,
) -> Result<T, ApiError> {
    let worker = state.worker_of(participant)?;
    worker.call(f).await.ok_or_else(stopped)?.map_err(sfu_error)
}

async fn create_session(
    State(state): State<ControlState>,
    Json(request): Json<CreateSession>,
) -> Result<(StatusCode, Json<SessionCreated>), ApiError> {
    let participant = request.participant;
    let room = request.room.clone();
    let index = {
        let mut placement = state.lock();
        if placement.participants.contains_key(&participant) {
            return Err(sfu_error(SfuError::DuplicateParticipant));
        }
        // Draining: rooms already here may still grow; new rooms go elsewhere.
        if state.workers.iter().any(|w| w.is_draining()) && !placement.rooms.contains_key(&room) {
            return Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "this SFU node is draining and takes no new rooms",
            )
            .with_retry_after(1));
        }
        let index = placement.worker_for(&room, state.workers.len());
        placement.participants.insert(participant, (index, room));
        index
    };
    let worker = state.workers.get(index).ok_or_else(stopped)?;
    let created = worker
        .call(move |sfu, now| sfu.create_session(now, request))
        .await;
    match created {
        Some(Ok(created)) => Ok((StatusCode::CREATED, Json(created))),
        other => {
            state.lock().forget(participant);
            Err(other.map_or_else(stopped, |r| {
                sfu_error(r.err().unwrap_or(SfuError::SessionFailed))
            }))
        }
    }
}

async fn publisher_offer(
    State(state): State<ControlState>,
    Path(participant): Path<ParticipantId>,
    Json(offer): Json<PublisherOffer>,
) -> Result<Json<SdpAnswer>, ApiError> {
    let answer = run(&state, participant, move |sfu, now| {
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
    run(&state, participant, move |sfu, now| {
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
    run(&state, participant, move |sfu, now| {
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
    run(&state, participant, move |sfu, now| {
        sfu.set_subscription(now, participant, &request)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn mute(
    State(state): State<ControlState>,
    Path(participant): Path<ParticipantId>,
    Json(request): Json<MuteTrack>,
) -> Result<StatusCode, ApiError> {
    run(&state, participant, move |sfu, now| {
        sfu.mute_track(now, &request)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ice_restart(
    State(state): State<ControlState>,
    Path(participant): Path<ParticipantId>,
) -> Result<Json<SubscriberOffer>, ApiError> {
    let offer = run(&state, participant, move |sfu, now| {
        sfu.ice_restart(now, participant)
    })
    .await?;
    Ok(Json(offer))
}

async fn remove_session(
    State(state): State<ControlState>,
    Path(participant): Path<ParticipantId>,
) -> Result<StatusCode, ApiError> {
    let result = run(&state, participant, move |sfu, now| {
        sfu.remove_session(now, participant)
    })
    .await;
    state.lock().forget(participant);
    result?;
    Ok(StatusCode::NO_CONTENT)
}

async fn room(
    State(state): State<ControlState>,
    Path(room): Path<RoomId>,
) -> Result<Json<RoomSnapshot>, ApiError> {
    let index = state.lock().rooms.get(&room).copied();
    let Some(worker) = index.and_then(|i| state.workers.get(i)) else {
        return Err(ApiError::not_found("no such room on this node"));
    };
    let snapshot = worker
        .call(move |sfu, _| sfu.room_snapshot(&room))
        .await
        .ok_or_else(stopped)?;
    snapshot
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such room on this node"))
}

/// Start draining now (an orchestrator's pre-stop hook calls this before
/// SIGTERM): no new rooms; the rooms here carry on.
async fn drain(State(state): State<ControlState>) -> StatusCode {
    for worker in state.workers.iter() {
        worker.start_draining();
    }
    tracing::info!("draining on request: no new rooms");
    StatusCode::NO_CONTENT
}

/// The node's load: the sum over its workers, full when every worker is.
async fn load(State(state): State<ControlState>) -> Result<Json<NodeLoad>, ApiError> {
    let mut total = NodeLoad {
        rooms: 0,
        participants: 0,
        tracks: 0,
        forwarded_pps: 0.0,
        load: 0.0,
        draining: false,
    };
    for worker in state.workers.iter() {
        let pps = worker.forwarded_pps();
        let load = worker
            .call(move |sfu, _| sfu.load(pps, FULL_PPS))
            .await
            .ok_or_else(stopped)?;
        total.rooms += load.rooms;
        total.participants += load.participants;
        total.tracks += load.tracks;
        total.forwarded_pps += load.forwarded_pps;
        total.load += load.load / state.workers.len() as f64;
    }
    if state.workers.iter().any(|w| w.is_draining()) {
        total.draining = true;
        total.load = proto::sfu::DRAINING_LOAD;
    }
    Ok(Json(total))
}

/// Server-sent events, one JSON [`proto::sfu::SfuEvent`] each, for as long as the
/// connection lasts. A listener that falls behind gets a `lagged` event and
/// should re-read the rooms it cares about.
async fn events(
    State(state): State<ControlState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let streams = state
        .workers
        .iter()
        .map(|worker| events_of(worker.subscribe()));
    Sse::new(futures_util::stream::select_all(streams)).keep_alive(KeepAlive::default())
}

type EventStream = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;

/// One worker's events as server-sent events.
fn events_of(receiver: tokio::sync::broadcast::Receiver<SfuEvent>) -> EventStream {
    Box::pin(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move {
            let event = match receiver.recv().await {
                Ok(event) => {
                    Event::default().data(serde_json::to_string(&event).unwrap_or_default())
                }
                Err(RecvError::Lagged(missed)) => {
                    Event::default().event("lagged").data(missed.to_string())
                }
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), receiver))
        },
    ))
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
