//! Meeting events into the analytics tables, each event once.
//!
//! Counters move with single-statement updates (`SET current = current + 1`,
//! `SET peak = current WHERE current > peak`), so two replicas consuming the same
//! queue cannot lose an increment; the `processed_events` insert in the same
//! transaction makes a redelivered event a no-op.

use proto::event::EventEnvelope;
use proto::ids::{MeetingId, ParticipantId};
use proto::meeting::{MeetingEvent, MeetingEventBody};
use proto::sfu::QualitySample;
use serde::Deserialize;
use servicekit::backends::Db;
use servicekit::bus::{Handler, HandlerError, claim_event};
use sqlx::{Any, Row, Transaction};
use std::sync::Arc;

/// Width of the usage buckets.
pub const HOUR_MS: i64 = 3_600_000;
/// Width of the quality buckets.
pub const QUALITY_BUCKET_MS: i64 = 10_000;

/// A quality sample forwarded onto the bus as `meeting.quality_sample`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct QualityEvent {
    pub meeting_id: MeetingId,
    pub occurred_at_ms: i64,
    pub sample: QualitySample,
}

pub fn handler(db: Db) -> Handler {
    Arc::new(move |event: EventEnvelope| {
        let db = db.clone();
        Box::pin(async move {
            let mut tx = db.begin().await.map_err(retry)?;
            let now = chrono::Utc::now().timestamp_millis();
            if !claim_event(&mut tx, event.id, now).await.map_err(retry)? {
                return Ok(());
            }
            apply(&mut tx, &event).await?;
            tx.commit().await.map_err(retry)?;
            Ok(())
        })
    })
}

fn retry(err: sqlx::Error) -> HandlerError {
    HandlerError::Retry(err.to_string())
}

fn reject(kind: &str, err: impl std::fmt::Display) -> HandlerError {
    HandlerError::Reject(format!("{kind}: {err}"))
}

async fn exec(
    tx: &mut Transaction<'_, Any>,
    sql: &'static str,
    binds: &[Bind<'_>],
) -> Result<u64, HandlerError> {
    let mut query = sqlx::query(sql);
    for bind in binds {
        query = match bind {
            Bind::Text(v) => query.bind(v.to_string()),
            Bind::OptText(v) => query.bind(v.map(str::to_owned)),
            Bind::Int(v) => query.bind(*v),
        };
    }
    Ok(query
        .execute(&mut **tx)
        .await
        .map_err(retry)?
        .rows_affected())
}

enum Bind<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
}
use Bind::{Int, OptText, Text};

async fn apply(tx: &mut Transaction<'_, Any>, event: &EventEnvelope) -> Result<(), HandlerError> {
    if event.kind == "meeting.quality_sample" {
        let q: QualityEvent =
            serde_json::from_value(event.payload.clone()).map_err(|e| reject(&event.kind, e))?;
        return quality(tx, &q).await;
    }
    let Ok(meeting) = serde_json::from_value::<MeetingEvent>(event.payload.clone()) else {
        if event.kind.starts_with("meeting.") {
            // A meeting event we cannot read would skew every figure: dead-letter it.
            return Err(reject(&event.kind, "unreadable payload"));
        }
        return Ok(());
    };
    let id = meeting.meeting_id.to_string();
    let at = meeting.occurred_at_ms;
    exec(
        tx,
        "INSERT INTO meetings (meeting_id) VALUES ($1) ON CONFLICT (meeting_id) DO NOTHING",
        &[Text(&id)],
    )
    .await?;
    if let Some(seq) = event.seq.and_then(|s| i64::try_from(s).ok()) {
        sequence(tx, &id, seq).await?;
    }
    match &meeting.body {
        MeetingEventBody::Scheduled { host_id, .. } => {
            exec(
                tx,
                "UPDATE meetings SET host_id = $1 WHERE meeting_id = $2",
                &[Text(&host_id.to_string()), Text(&id)],
            )
            .await?;
        }
        MeetingEventBody::Started {} => start(tx, &id, at).await?,
        MeetingEventBody::ParticipantJoined {
            participant_id,
            user_id,
            display_name,
        } => {
            start(tx, &id, at).await?;
            let user = user_id.map(|u| u.to_string());
            let inserted = exec(
                tx,
                "INSERT INTO participations (participant_id, meeting_id, user_id, joined_at, display_name) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (participant_id) DO NOTHING",
                &[Text(&participant_id.to_string()), Text(&id), OptText(user.as_deref()), Int(at), Text(display_name)],
            )
            .await?;
            if inserted == 1 {
                exec(
                    tx,
                    "UPDATE meetings SET current_participants = current_participants + 1, total_participants = total_participants + 1, ended_at = NULL WHERE meeting_id = $1",
                    &[Text(&id)],
                )
                .await?;
                exec(
                    tx,
                    "UPDATE meetings SET peak_participants = current_participants WHERE meeting_id = $1 AND current_participants > peak_participants",
                    &[Text(&id)],
                )
                .await?;
                platform(tx, at, 1).await?;
            }
        }
        MeetingEventBody::ParticipantLeft { participant_id, .. } => {
            leave(tx, &id, Some(*participant_id), at).await?;
        }
        MeetingEventBody::Ended {} => {
            leave(tx, &id, None, at).await?;
            exec(
                tx,
                "UPDATE meetings SET ended_at = $1 WHERE meeting_id = $2",
                &[Int(at), Text(&id)],
            )
            .await?;
        }
        MeetingEventBody::Updated { .. }
        | MeetingEventBody::Cancelled { .. }
        | MeetingEventBody::LobbyWaiting { .. } => {}
    }
    Ok(())
}

/// Order and completeness of a meeting's numbered events (the envelope's `seq`):
/// the counters behind a summary's `missing_events` and `late_events`. Each event
/// reaches here once (deduplicated by id), so `seq_count` counts distinct numbers.
async fn sequence(tx: &mut Transaction<'_, Any>, id: &str, seq: i64) -> Result<(), HandlerError> {
    let highest: i64 = sqlx::query("SELECT max_seq FROM meetings WHERE meeting_id = $1")
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .map_err(retry)?
        .try_get("max_seq")
        .map_err(retry)?;
    if seq < highest {
        tracing::info!(meeting = %id, seq, highest, "meeting event arrived after a later one");
        exec(
            tx,
            "UPDATE meetings SET late_events = late_events + 1 WHERE meeting_id = $1",
            &[Text(id)],
        )
        .await?;
    } else if seq > highest + 1 {
        tracing::warn!(meeting = %id, seq, expected = highest + 1, "meeting events missing (a gap in seq)");
    }
    exec(
        tx,
        "UPDATE meetings SET seq_count = seq_count + 1, max_seq = CASE WHEN max_seq < $1 THEN $2 ELSE max_seq END WHERE meeting_id = $3",
        &[Int(seq), Int(seq), Text(id)],
    )
    .await?;
    Ok(())
}

fn hour(at: i64) -> i64 {
    at.div_euclid(HOUR_MS) * HOUR_MS
}

async fn bucket(tx: &mut Transaction<'_, Any>, at: i64) -> Result<(), HandlerError> {
    exec(
        tx,
        "INSERT INTO usage_hours (hour_start) VALUES ($1) ON CONFLICT (hour_start) DO NOTHING",
        &[Int(hour(at))],
    )
    .await
    .map(|_| ())
}

/// The meeting started (first event that says so wins).
async fn start(tx: &mut Transaction<'_, Any>, id: &str, at: i64) -> Result<(), HandlerError> {
    let first = exec(
        tx,
        "UPDATE meetings SET started_at = $1 WHERE meeting_id = $2 AND started_at IS NULL",
        &[Int(at), Text(id)],
    )
    .await?;
    if first == 1 {
        bucket(tx, at).await?;
        exec(
            tx,
            "UPDATE usage_hours SET meetings_started = meetings_started + 1 WHERE hour_start = $1",
            &[Int(hour(at))],
        )
        .await?;
    }
    Ok(())
}

/// Close one participation (or all open ones of the meeting).
async fn leave(
    tx: &mut Transaction<'_, Any>,
    id: &str,
    participant: Option<ParticipantId>,
    at: i64,
) -> Result<(), HandlerError> {
    let closed = match participant {
        Some(p) => exec(
            tx,
            "UPDATE participations SET left_at = $1 WHERE participant_id = $2 AND left_at IS NULL",
            &[Int(at), Text(&p.to_string())],
        )
        .await?,
        None => {
            exec(
                tx,
                "UPDATE participations SET left_at = $1 WHERE meeting_id = $2 AND left_at IS NULL",
                &[Int(at), Text(id)],
            )
            .await?
        }
    } as i64;
    if closed > 0 {
        exec(
            tx,
            "UPDATE meetings SET current_participants = current_participants - $1 WHERE meeting_id = $2",
            &[Int(closed), Text(id)],
        )
        .await?;
        platform(tx, at, -closed).await?;
    }
    Ok(())
}

/// Move the platform-wide count of people in meetings and the hour's peak.
async fn platform(tx: &mut Transaction<'_, Any>, at: i64, delta: i64) -> Result<(), HandlerError> {
    exec(
        tx,
        "UPDATE platform_state SET concurrent = concurrent + $1 WHERE id = 1",
        &[Int(delta)],
    )
    .await?;
    let now: i64 = sqlx::query("SELECT concurrent FROM platform_state WHERE id = 1")
        .fetch_one(&mut **tx)
        .await
        .map_err(retry)?
        .try_get("concurrent")
        .map_err(retry)?;
    bucket(tx, at).await?;
    if delta > 0 {
        exec(
            tx,
            "UPDATE usage_hours SET joins = joins + $1 WHERE hour_start = $2",
            &[Int(delta), Int(hour(at))],
        )
        .await?;
    }
    exec(
        tx,
        "UPDATE usage_hours SET peak_concurrent = $1 WHERE hour_start = $2 AND peak_concurrent < $3",
        &[Int(now), Int(hour(at)), Int(now)],
    )
    .await?;
    Ok(())
}

async fn quality(tx: &mut Transaction<'_, Any>, q: &QualityEvent) -> Result<(), HandlerError> {
    let bucket = q.occurred_at_ms.div_euclid(QUALITY_BUCKET_MS) * QUALITY_BUCKET_MS;
    let participant = q.sample.participant_id.to_string();
    let quality = serde_json::to_value(q.sample.quality)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    sqlx::query("DELETE FROM quality_buckets WHERE participant_id = $1 AND bucket_start = $2")
        .bind(&participant)
        .bind(bucket)
        .execute(&mut **tx)
        .await
        .map_err(retry)?;
    sqlx::query(
        "INSERT INTO quality_buckets (participant_id, bucket_start, meeting_id, quality, ingress_loss, rtt_ms, egress_bps) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&participant)
    .bind(bucket)
    .bind(q.meeting_id.to_string())
    .bind(quality)
    .bind(f64::from(q.sample.ingress_loss))
    .bind(q.sample.rtt_ms.map(f64::from))
    .bind(q.sample.egress_estimate_bps.map(|b| b.min(i64::MAX as u64) as i64))
    .execute(&mut **tx)
    .await
    .map_err(retry)?;
    Ok(())
}

/// How long an event id is remembered for deduplication: redeliveries come within
/// minutes, so a month is ample.
pub const DEDUP_RETENTION_MS: i64 = 30 * 24 * HOUR_MS;

/// Retention: drop quality buckets older than `quality_retention_ms` and dedup
/// records older than [`DEDUP_RETENTION_MS`]. Meeting, participation and hourly
/// rows are small and kept. Returns the number of rows removed.
pub async fn prune(db: &Db, quality_retention_ms: i64, now_ms: i64) -> Result<u64, sqlx::Error> {
    let quality = sqlx::query("DELETE FROM quality_buckets WHERE bucket_start < $1")
        .bind(now_ms - quality_retention_ms)
        .execute(db.pool())
        .await?
        .rows_affected();
    let dedup = sqlx::query("DELETE FROM processed_events WHERE processed_at < $1")
        .bind(now_ms - DEDUP_RETENTION_MS)
        .execute(db.pool())
        .await?
        .rows_affected();
    Ok(quality + dedup)
}
