//! `/api/v1/meetings`: create, list, get, update, cancel, join, history.

use super::domain::{self, MeetingRecord};
use super::store::{self, When};
use crate::room_token::TokenRequest;
use crate::{AppState, clock, code, outbox};
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use proto::ErrorCode;
use proto::ids::{MeetingId, ParticipantId};
use proto::media::RoomId;
use proto::meeting::{
    Attendance, CreateMeeting, JoinParticipant, JoinRequest, JoinResponse, Meeting,
    MeetingEventBody, MeetingHistory, MeetingKind, MeetingList, MeetingStatus, UpdateMeeting,
};
use proto::room_token::{RoomGrants, RoomIdentity};
use serde::Deserialize;
use servicekit::ApiError;
use servicekit::extract::{Json, Path, Query};
use servicekit::tokens::{AuthUser, bearer_token};

/// Path of the signaling WebSocket, as told to joining clients.
pub const SIGNALING_PATH: &str = "/rtc";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/meetings", post(create).get(list))
        .route(
            "/api/v1/meetings/{meeting}",
            get(show).patch(update).delete(cancel),
        )
        .route("/api/v1/meetings/{meeting}/join", post(join))
        .route("/api/v1/meetings/{meeting}/history", get(history))
}

/// The caller when a bearer token is present, `None` when there is none. A token
/// that is present but bad is still refused.
pub struct MaybeUser(pub Option<AuthUser>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .is_none()
        {
            return Ok(MaybeUser(None));
        }
        let token = bearer_token(parts)?;
        let claims = state.verifier.verify(token).await?;
        Ok(MaybeUser(Some(AuthUser {
            claims,
            token: token.to_owned(),
        })))
    }
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::MeetingNotFound, "no such meeting")
}

/// A meeting by its id or its join code (any case, hyphens optional).
async fn find(state: &AppState, key: &str) -> Result<MeetingRecord, ApiError> {
    let found = if let Ok(id) = key.parse::<MeetingId>() {
        store::get(&state.db, id).await?
    } else if let Some(code) = code::normalize(key) {
        store::get_by_code(&state.db, &code).await?
    } else {
        None
    };
    found.ok_or_else(not_found)
}

async fn find_hosted(
    state: &AppState,
    key: &str,
    user: &AuthUser,
) -> Result<MeetingRecord, ApiError> {
    let meeting = find(state, key).await?;
    if !meeting.is_host(user.user_id()) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only the host may do this",
        ));
    }
    Ok(meeting)
}

async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<CreateMeeting>,
) -> Result<(StatusCode, Json<Meeting>), ApiError> {
    let now = clock::now_ms();
    let tz_name = body.time_zone.as_deref().unwrap_or("UTC");
    let tz = domain::parse_time_zone(tz_name)?;
    let (kind, starts_at) = match &body.starts_at {
        Some(start) => (
            MeetingKind::Scheduled,
            domain::parse_time("starts_at", start, tz)?,
        ),
        None => (MeetingKind::Instant, now),
    };
    let ends_at = domain::parse_end(
        starts_at,
        body.duration_minutes,
        body.ends_at.as_deref(),
        tz,
    )?;
    let default_title = match kind {
        MeetingKind::Instant => "Instant meeting",
        MeetingKind::Scheduled => "Meeting",
    };
    let title = domain::parse_title(body.title.as_deref(), default_title)?;
    let invitees = domain::parse_invitees(&body.invitees)?;
    let settings = body.settings.unwrap_or_default();
    domain::check_settings(&settings)?;
    if let Some(recurrence) = &body.recurrence {
        domain::check_recurrence(recurrence, kind)?;
    }
    let mut record = MeetingRecord {
        id: MeetingId::new(),
        code: code::generate(),
        host_id: user.user_id(),
        title,
        kind,
        status: MeetingStatus::Scheduled,
        starts_at,
        ends_at,
        time_zone: tz.name().to_owned(),
        settings,
        recurrence: body.recurrence,
        invitees,
        started_at: None,
        ended_at: None,
        created_at: now,
        updated_at: now,
    };
    if kind == MeetingKind::Scheduled && record.series_ends_at() <= now {
        return Err(ApiError::new(
            ErrorCode::InvalidSchedule,
            "the meeting would already be over",
        ));
    }
    let scheduled = outbox::event(
        record.id,
        MeetingEventBody::Scheduled {
            host_id: record.host_id,
            title: record.title.clone(),
            starts_at: clock::rfc3339(record.starts_at),
            time_zone: record.time_zone.clone(),
            invitees: record.invitees.clone(),
        },
    );
    // A code collision (about 1 in 10^14 per pair) draws another code.
    for _ in 0..5 {
        if store::insert(&state.db, &record, std::slice::from_ref(&scheduled)).await? {
            return Ok((StatusCode::CREATED, Json(record.view(true))));
        }
        record.code = code::generate();
    }
    Err(ApiError::internal("could not draw an unused join code"))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<ListQuery>,
) -> Result<Json<MeetingList>, ApiError> {
    let when = match query.when.as_deref() {
        None | Some("upcoming") => When::Upcoming,
        Some("past") => When::Past,
        Some(_) => return Err(ApiError::invalid_field("when", "upcoming or past")),
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "between 1 and 200"));
    }
    let records = store::list(
        &state.db,
        user.user_id(),
        &user.claims.email,
        when,
        clock::now_ms(),
        limit,
    )
    .await?;
    let meetings = records
        .iter()
        .map(|m| m.view(m.is_host(user.user_id())))
        .collect();
    Ok(Json(MeetingList { meetings }))
}

/// Anyone with the id or code may see a meeting (the join page needs its title and
/// whether guests may join); only the host sees the invitees.
async fn show(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Path(key): Path<String>,
) -> Result<Json<Meeting>, ApiError> {
    let meeting = find(&state, &key).await?;
    let full = user.is_some_and(|u| meeting.is_host(u.user_id()));
    Ok(Json(meeting.view(full)))
}

async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(key): Path<String>,
    Json(body): Json<UpdateMeeting>,
) -> Result<Json<Meeting>, ApiError> {
    let mut meeting = find_hosted(&state, &key, &user).await?;
    if !meeting.joinable() {
        return Err(ApiError::new(
            ErrorCode::MeetingEnded,
            "the meeting is over",
        ));
    }
    let tz_name = body
        .time_zone
        .clone()
        .unwrap_or_else(|| meeting.time_zone.clone());
    let tz = domain::parse_time_zone(&tz_name)?;
    if let Some(title) = &body.title {
        meeting.title = domain::parse_title(Some(title), "")?;
    }
    let rescheduled =
        body.starts_at.is_some() || body.duration_minutes.is_some() || body.ends_at.is_some();
    if rescheduled {
        let starts_at = match &body.starts_at {
            Some(start) => domain::parse_time("starts_at", start, tz)?,
            None => meeting.starts_at,
        };
        let duration = match (&body.duration_minutes, &body.ends_at) {
            (None, None) => Some(meeting.duration_minutes()),
            (minutes, _) => *minutes,
        };
        meeting.ends_at = domain::parse_end(starts_at, duration, body.ends_at.as_deref(), tz)?;
        meeting.starts_at = starts_at;
        meeting.kind = MeetingKind::Scheduled;
    }
    meeting.time_zone = tz.name().to_owned();
    if let Some(recurrence) = &body.recurrence {
        domain::check_recurrence(recurrence, meeting.kind)?;
        meeting.recurrence = Some(*recurrence);
    }
    if let Some(invitees) = &body.invitees {
        meeting.invitees = domain::parse_invitees(invitees)?;
    }
    if let Some(patch) = &body.settings {
        let s = &mut meeting.settings;
        s.guests_allowed = patch.guests_allowed.unwrap_or(s.guests_allowed);
        s.lobby = patch.lobby.unwrap_or(s.lobby);
        s.mute_on_entry = patch.mute_on_entry.unwrap_or(s.mute_on_entry);
        s.max_participants = patch.max_participants.unwrap_or(s.max_participants);
        domain::check_settings(s)?;
    }
    meeting.updated_at = clock::now_ms();
    let updated = outbox::event(
        meeting.id,
        MeetingEventBody::Updated {
            title: meeting.title.clone(),
            starts_at: clock::rfc3339(meeting.starts_at),
            time_zone: meeting.time_zone.clone(),
            invitees: meeting.invitees.clone(),
        },
    );
    store::update(&state.db, &meeting, &[updated]).await?;
    Ok(Json(meeting.view(true)))
}

async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut meeting = find_hosted(&state, &key, &user).await?;
    if meeting.status == MeetingStatus::Cancelled {
        return Ok(StatusCode::NO_CONTENT);
    }
    meeting.status = MeetingStatus::Cancelled;
    meeting.updated_at = clock::now_ms();
    let cancelled = outbox::event(
        meeting.id,
        MeetingEventBody::Cancelled {
            invitees: meeting.invitees.clone(),
        },
    );
    store::update(&state.db, &meeting, &[cancelled]).await?;
    // Anyone still in the room is told the meeting ended.
    state.live.end_room(&room_of(&meeting)?).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The room of a meeting: the meeting id's text (36 characters of hex digits and
/// hyphens, so always a valid room id; the error path is never taken).
pub(crate) fn room_of(meeting: &MeetingRecord) -> Result<RoomId, ApiError> {
    RoomId::parse(meeting.id.to_string()).map_err(ApiError::internal)
}

/// Who may join, and how:
/// - the host: straight in, with the host grants;
/// - invitees (by the email in their access token): straight in;
/// - other signed-in people: in, or the lobby when it is on;
/// - guests (no token) with a display name: only when the meeting allows guests; the
///   lobby when it is on.
///
/// The meeting must not be cancelled or ended, the room not locked (except for the
/// host) nor full.
async fn join(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Path(key): Path<String>,
    Json(body): Json<JoinRequest>,
) -> Result<Json<JoinResponse>, ApiError> {
    let meeting = find(&state, &key).await?;
    if !meeting.joinable() {
        return Err(ApiError::new(
            ErrorCode::MeetingEnded,
            "the meeting has ended or was cancelled",
        ));
    }
    let (identity, display_name, is_host, invited) = match &user {
        Some(user) => {
            let name = match &body.display_name {
                Some(name) => domain::parse_display_name(name)?,
                None => domain::parse_display_name(&user.claims.name)
                    .or_else(|_| domain::parse_display_name(&user.claims.email))?,
            };
            (
                RoomIdentity::User {
                    user_id: user.user_id(),
                },
                name,
                meeting.is_host(user.user_id()),
                meeting.is_invited(&user.claims.email),
            )
        }
        None => {
            if !meeting.settings.guests_allowed {
                return Err(ApiError::new(
                    ErrorCode::GuestsNotAllowed,
                    "sign in to join this meeting",
                ));
            }
            let Some(name) = &body.display_name else {
                return Err(ApiError::invalid_field(
                    "display_name",
                    "guests must give one",
                ));
            };
            (
                RoomIdentity::Guest,
                domain::parse_display_name(name)?,
                false,
                false,
            )
        }
    };
    let room = room_of(&meeting)?;
    if let Some(live) = state.live.room(&room).await? {
        if live.ended {
            return Err(ApiError::new(
                ErrorCode::MeetingEnded,
                "the meeting has ended",
            ));
        }
        if live.locked && !is_host {
            return Err(ApiError::new(
                ErrorCode::MeetingLocked,
                "the meeting is locked",
            ));
        }
        if live.participants.len() >= meeting.settings.max_participants as usize && !is_host {
            return Err(ApiError::new(ErrorCode::MeetingFull, "the meeting is full"));
        }
    }
    let lobby = meeting.settings.lobby && !is_host && !invited;
    let grants = RoomGrants::full(is_host);
    let participant_id = ParticipantId::new();
    let (room_token, claims) = state.live.tokens().issue(TokenRequest {
        room,
        meeting_id: meeting.id,
        participant_id,
        identity: identity.clone(),
        display_name: display_name.clone(),
        grants: grants.clone(),
        lobby,
    });
    Ok(Json(JoinResponse {
        room_token,
        signaling_url: SIGNALING_PATH.to_owned(),
        expires_at: clock::rfc3339(i64::try_from(claims.exp).unwrap_or(0) * 1000),
        meeting: meeting.view(is_host),
        participant: JoinParticipant {
            participant_id,
            display_name,
            user_id: identity.user_id(),
            grants,
            lobby,
        },
    }))
}

async fn history(
    State(state): State<AppState>,
    user: AuthUser,
    Path(key): Path<String>,
) -> Result<Json<MeetingHistory>, ApiError> {
    let meeting = find_hosted(&state, &key, &user).await?;
    let now = clock::now_ms();
    let rows = store::attendance(&state.db, meeting.id).await?;
    let attendance = rows
        .into_iter()
        .map(|row| Attendance {
            participant_id: row.participant_id,
            user_id: row.user_id,
            display_name: row.display_name,
            joined_at: clock::rfc3339(row.joined_at),
            left_at: row.left_at.map(clock::rfc3339),
            seconds: u64::try_from((row.left_at.unwrap_or(now) - row.joined_at) / 1000)
                .unwrap_or(0),
        })
        .collect();
    Ok(Json(MeetingHistory {
        meeting_id: meeting.id,
        started_at: meeting.started_at.map(clock::rfc3339),
        ended_at: meeting.ended_at.map(clock::rfc3339),
        attendance,
    }))
}
