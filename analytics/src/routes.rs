//! `GET /api/v1/analytics/meetings/{id}`, `/users/me`, `/users/me/meetings` and
//! `/platform`.
//!
//! Times are RFC 3339 (UTC); minutes are fractional. A meeting's figures are shown
//! to its host and to the people who attended it; anyone else gets
//! `meeting_not_found`, as for a meeting that does not exist.

use crate::AppState;
use crate::ingest::HOUR_MS;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use proto::ErrorCode;
use serde::{Deserialize, Serialize};
use servicekit::ApiError;
use servicekit::extract::{Path, Query};
use servicekit::tokens::AuthUser;
use sqlx::Row;
use std::collections::BTreeMap;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/analytics/meetings/{id}", get(meeting))
        .route("/api/v1/analytics/users/me", get(me))
        .route("/api/v1/analytics/users/me/meetings", get(my_meetings))
        .route("/api/v1/analytics/platform", get(platform))
        .with_state(state)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn db_error(err: sqlx::Error) -> ApiError {
    ApiError::unavailable(err)
}

fn minutes(ms: i64) -> f64 {
    (ms.max(0) as f64 / 60_000.0 * 100.0).round() / 100.0
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ParticipantStay {
    pub participant_id: String,
    pub user_id: Option<String>,
    /// The name the participant joined with (absent for stays recorded before it was kept).
    pub display_name: Option<String>,
    pub joined_at: String,
    pub left_at: Option<String>,
    pub minutes: f64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct QualityPoint {
    pub at: String,
    pub quality: String,
    pub ingress_loss: f64,
    pub rtt_ms: Option<f64>,
    pub egress_bps: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct MeetingSummary {
    pub meeting_id: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub live: bool,
    pub duration_seconds: i64,
    pub peak_participants: i64,
    pub total_participants: i64,
    pub participant_minutes: f64,
    pub participants: Vec<ParticipantStay>,
    /// The highest per-meeting sequence number (`seq`) of the events counted.
    pub last_seq: i64,
    /// Numbered events not (yet) received: numbers below `last_seq` never seen.
    pub missing_events: i64,
    /// Events that arrived after one with a higher number.
    pub late_events: i64,
    /// Per participant id: 10-second buckets, oldest first.
    pub quality: BTreeMap<String, Vec<QualityPoint>>,
}

async fn meeting(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<MeetingSummary>, ApiError> {
    let not_found = || ApiError::new(ErrorCode::MeetingNotFound, "no such meeting");
    let pool = state.db.pool();
    let Some(row) = sqlx::query(
        "SELECT host_id, started_at, ended_at, peak_participants, total_participants, max_seq, seq_count, late_events FROM meetings WHERE meeting_id = $1",
    )
    .bind(&id)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?
    else {
        return Err(not_found());
    };
    let me = user.user_id().to_string();
    let host: Option<String> = row.try_get("host_id").map_err(db_error)?;
    let stays = sqlx::query(
        "SELECT participant_id, user_id, display_name, joined_at, left_at FROM participations WHERE meeting_id = $1 ORDER BY joined_at, participant_id",
    )
    .bind(&id)
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    let now = now_ms();
    let mut participants = Vec::new();
    let mut attended = false;
    let mut total_ms = 0;
    for s in &stays {
        let user_id: Option<String> = s.try_get("user_id").map_err(db_error)?;
        attended |= user_id.as_deref() == Some(me.as_str());
        let joined: i64 = s.try_get("joined_at").map_err(db_error)?;
        let left: Option<i64> = s.try_get("left_at").map_err(db_error)?;
        let ms = left.unwrap_or(now) - joined;
        total_ms += ms.max(0);
        participants.push(ParticipantStay {
            participant_id: s.try_get("participant_id").map_err(db_error)?,
            user_id,
            display_name: s.try_get("display_name").map_err(db_error)?,
            joined_at: rfc3339(joined),
            left_at: left.map(rfc3339),
            minutes: minutes(ms),
        });
    }
    if host.as_deref() != Some(me.as_str()) && !attended {
        return Err(not_found());
    }
    let started: Option<i64> = row.try_get("started_at").map_err(db_error)?;
    let ended: Option<i64> = row.try_get("ended_at").map_err(db_error)?;
    let live = started.is_some() && ended.is_none();
    let duration_seconds = match started {
        Some(s) => (ended.unwrap_or(now) - s).max(0) / 1000,
        None => 0,
    };
    let mut quality: BTreeMap<String, Vec<QualityPoint>> = BTreeMap::new();
    for q in sqlx::query(
        "SELECT participant_id, bucket_start, quality, ingress_loss, rtt_ms, egress_bps FROM quality_buckets WHERE meeting_id = $1 ORDER BY bucket_start",
    )
    .bind(&id)
    .fetch_all(pool)
    .await
    .map_err(db_error)?
    {
        quality
            .entry(q.try_get("participant_id").map_err(db_error)?)
            .or_default()
            .push(QualityPoint {
                at: rfc3339(q.try_get("bucket_start").map_err(db_error)?),
                quality: q.try_get("quality").map_err(db_error)?,
                ingress_loss: q.try_get("ingress_loss").map_err(db_error)?,
                rtt_ms: q.try_get("rtt_ms").map_err(db_error)?,
                egress_bps: q.try_get("egress_bps").map_err(db_error)?,
            });
    }
    Ok(Json(MeetingSummary {
        meeting_id: id,
        started_at: started.map(rfc3339),
        ended_at: ended.map(rfc3339),
        live,
        duration_seconds,
        peak_participants: row.try_get("peak_participants").map_err(db_error)?,
        total_participants: row.try_get("total_participants").map_err(db_error)?,
        participant_minutes: minutes(total_ms),
        participants,
        last_seq: row.try_get("max_seq").map_err(db_error)?,
        missing_events: (row.try_get::<i64, _>("max_seq").map_err(db_error)?
            - row.try_get::<i64, _>("seq_count").map_err(db_error)?)
        .max(0),
        late_events: row.try_get("late_events").map_err(db_error)?,
        quality,
    }))
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct UserSummary {
    pub meetings_attended: i64,
    pub minutes: f64,
    /// The quality label of most of the user's 10-second buckets, if any were sampled.
    pub typical_quality: Option<String>,
}

/// Buckets per quality label (`excellent`, `good`, `poor`, `lost`).
async fn quality_counts(
    pool: &sqlx::AnyPool,
    sql: &'static str,
    bind: String,
) -> Result<BTreeMap<String, i64>, ApiError> {
    let mut out = BTreeMap::new();
    for r in sqlx::query(sql)
        .bind(bind)
        .fetch_all(pool)
        .await
        .map_err(db_error)?
    {
        out.insert(
            r.try_get::<String, _>("quality").map_err(db_error)?,
            r.try_get::<i64, _>("n").map_err(db_error)?,
        );
    }
    Ok(out)
}

async fn me(State(state): State<AppState>, user: AuthUser) -> Result<Json<UserSummary>, ApiError> {
    let rows =
        sqlx::query("SELECT meeting_id, joined_at, left_at FROM participations WHERE user_id = $1")
            .bind(user.user_id().to_string())
            .fetch_all(state.db.pool())
            .await
            .map_err(db_error)?;
    let now = now_ms();
    let mut meetings = std::collections::HashSet::new();
    let mut total = 0;
    for r in rows {
        meetings.insert(r.try_get::<String, _>("meeting_id").map_err(db_error)?);
        let joined: i64 = r.try_get("joined_at").map_err(db_error)?;
        let left: Option<i64> = r.try_get("left_at").map_err(db_error)?;
        total += (left.unwrap_or(now) - joined).max(0);
    }
    let counts = quality_counts(
        state.db.pool(),
        "SELECT q.quality AS quality, COUNT(*) AS n FROM quality_buckets q JOIN participations p ON p.participant_id = q.participant_id WHERE p.user_id = $1 GROUP BY q.quality",
        user.user_id().to_string(),
    )
    .await?;
    let typical_quality = counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(quality, _)| quality);
    Ok(Json(UserSummary {
        meetings_attended: meetings.len() as i64,
        minutes: minutes(total),
        typical_quality,
    }))
}

#[derive(Debug, Deserialize)]
pub struct MyMeetingsQuery {
    /// How many, most recent first (1-100, default 20).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct MyMeeting {
    pub meeting_id: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub live: bool,
    pub peak_participants: i64,
    pub total_participants: i64,
    /// Whether the caller hosts it (else they attended).
    pub hosted: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct MyMeetings {
    pub meetings: Vec<MyMeeting>,
}

/// The meetings the caller hosted or attended that have started, newest first:
/// the ones whose figures [`meeting`] shows them.
async fn my_meetings(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<MyMeetingsQuery>,
) -> Result<Json<MyMeetings>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 100",
        ));
    }
    let me = user.user_id().to_string();
    let rows = sqlx::query(
        "SELECT meeting_id, host_id, started_at, ended_at, peak_participants, total_participants FROM meetings WHERE started_at IS NOT NULL AND (host_id = $1 OR meeting_id IN (SELECT meeting_id FROM participations WHERE user_id = $2)) ORDER BY started_at DESC, meeting_id LIMIT $3",
    )
    .bind(&me)
    .bind(&me)
    .bind(i64::from(limit))
    .fetch_all(state.db.pool())
    .await
    .map_err(db_error)?;
    let mut meetings = Vec::with_capacity(rows.len());
    for r in rows {
        let host: Option<String> = r.try_get("host_id").map_err(db_error)?;
        let started: i64 = r.try_get("started_at").map_err(db_error)?;
        let ended: Option<i64> = r.try_get("ended_at").map_err(db_error)?;
        meetings.push(MyMeeting {
            meeting_id: r.try_get("meeting_id").map_err(db_error)?,
            started_at: rfc3339(started),
            ended_at: ended.map(rfc3339),
            live: ended.is_none(),
            peak_participants: r.try_get("peak_participants").map_err(db_error)?,
            total_participants: r.try_get("total_participants").map_err(db_error)?,
            hosted: host.as_deref() == Some(me.as_str()),
        });
    }
    Ok(Json(MyMeetings { meetings }))
}

#[derive(Debug, Deserialize)]
pub struct PlatformQuery {
    /// Days back from today (1-366, default 30).
    pub days: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct DayCount {
    /// `2026-11-27` (UTC).
    pub day: String,
    pub meetings: i64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PlatformSummary {
    pub days: u32,
    pub meetings_per_day: Vec<DayCount>,
    pub concurrent_peak: i64,
    pub concurrent_now: i64,
    pub participant_joins: i64,
    /// 10-second quality buckets per label over the window.
    pub quality_distribution: BTreeMap<String, i64>,
}

async fn platform(
    State(state): State<AppState>,
    _user: AuthUser,
    Query(q): Query<PlatformQuery>,
) -> Result<Json<PlatformSummary>, ApiError> {
    let days = q.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::invalid_field("days", "must be between 1 and 366"));
    }
    const DAY_MS: i64 = 24 * HOUR_MS;
    let today = now_ms().div_euclid(DAY_MS) * DAY_MS;
    let since = today - i64::from(days - 1) * DAY_MS;
    let pool = state.db.pool();
    let rows = sqlx::query(
        "SELECT hour_start, meetings_started, joins, peak_concurrent FROM usage_hours WHERE hour_start >= $1 ORDER BY hour_start",
    )
    .bind(since)
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    let mut per_day: BTreeMap<i64, i64> = BTreeMap::new();
    let (mut peak, mut joins) = (0, 0);
    for r in rows {
        let hour: i64 = r.try_get("hour_start").map_err(db_error)?;
        let started: i64 = r.try_get("meetings_started").map_err(db_error)?;
        *per_day.entry(hour.div_euclid(DAY_MS) * DAY_MS).or_default() += started;
        peak = peak.max(r.try_get::<i64, _>("peak_concurrent").map_err(db_error)?);
        joins += r.try_get::<i64, _>("joins").map_err(db_error)?;
    }
    let concurrent_now: i64 = sqlx::query("SELECT concurrent FROM platform_state WHERE id = 1")
        .fetch_one(pool)
        .await
        .map_err(db_error)?
        .try_get("concurrent")
        .map_err(db_error)?;
    let quality_distribution = quality_counts(
        pool,
        "SELECT quality, COUNT(*) AS n FROM quality_buckets WHERE bucket_start >= CAST($1 AS BIGINT) GROUP BY quality",
        since.to_string(),
    )
    .await?;
    Ok(Json(PlatformSummary {
        quality_distribution,
        days,
        meetings_per_day: per_day
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(day, meetings)| DayCount {
                day: rfc3339(day)[..10].to_owned(),
                meetings,
            })
            .collect(),
        concurrent_peak: peak,
        concurrent_now,
        participant_joins: joins,
    }))
}
