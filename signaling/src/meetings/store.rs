//! Meetings in the relational store (PostgreSQL or SQLite through sqlx's `Any`).
//!
//! Every write that changes what notify or analytics care about also writes its
//! event to the outbox, in the same transaction.

use super::domain::MeetingRecord;
use crate::outbox;
use proto::ids::{MeetingId, ParticipantId, UserId};
use proto::meeting::{MeetingEvent, MeetingKind, MeetingStatus};
use servicekit::backends::Db;
use sqlx::Row;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, code, host_id, title, kind, status, starts_at, ends_at, time_zone, \
     settings, recurrence, started_at, ended_at, created_at, updated_at";

fn kind_str(kind: MeetingKind) -> &'static str {
    match kind {
        MeetingKind::Instant => "instant",
        MeetingKind::Scheduled => "scheduled",
    }
}

fn status_str(status: MeetingStatus) -> &'static str {
    match status {
        MeetingStatus::Scheduled => "scheduled",
        MeetingStatus::Live => "live",
        MeetingStatus::Ended => "ended",
        MeetingStatus::Cancelled => "cancelled",
    }
}

fn decode_err(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("bad {what} in the meetings table").into())
}

fn from_row(row: &AnyRow) -> Result<MeetingRecord, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let host: String = row.try_get("host_id")?;
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let settings: String = row.try_get("settings")?;
    let recurrence: Option<String> = row.try_get("recurrence")?;
    Ok(MeetingRecord {
        id: id.parse().map_err(|_| decode_err("id"))?,
        code: row.try_get("code")?,
        host_id: host.parse().map_err(|_| decode_err("host_id"))?,
        title: row.try_get("title")?,
        kind: serde_json::from_value(serde_json::Value::String(kind))
            .map_err(|_| decode_err("kind"))?,
        status: serde_json::from_value(serde_json::Value::String(status))
            .map_err(|_| decode_err("status"))?,
        starts_at: row.try_get("starts_at")?,
        ends_at: row.try_get("ends_at")?,
        time_zone: row.try_get("time_zone")?,
        settings: serde_json::from_str(&settings).map_err(|_| decode_err("settings"))?,
        recurrence: match recurrence {
            Some(text) => Some(serde_json::from_str(&text).map_err(|_| decode_err("recurrence"))?),
            None => None,
        },
        invitees: Vec::new(),
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn recurrence_json(record: &MeetingRecord) -> Option<String> {
    record
        .recurrence
        .and_then(|r| serde_json::to_string(&r).ok())
}

fn settings_json(record: &MeetingRecord) -> String {
    // Plain data with no maps keyed by non-strings: serialising cannot fail.
    serde_json::to_string(&record.settings).unwrap_or_else(|_| "{}".to_owned())
}

/// Insert a new meeting (and its invitees and `events`). A join-code collision is
/// reported as `Ok(false)` so the caller can draw another code.
pub async fn insert(
    db: &Db,
    record: &MeetingRecord,
    events: &[MeetingEvent],
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO meetings (id, code, host_id, title, kind, status, starts_at, ends_at, \
         duration_minutes, time_zone, settings, started_at, ended_at, created_at, updated_at, \
         recurrence, series_ends_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(record.id.to_string())
    .bind(&record.code)
    .bind(record.host_id.to_string())
    .bind(&record.title)
    .bind(kind_str(record.kind))
    .bind(status_str(record.status))
    .bind(record.starts_at)
    .bind(record.ends_at)
    .bind(i64::from(record.duration_minutes()))
    .bind(&record.time_zone)
    .bind(settings_json(record))
    .bind(record.started_at)
    .bind(record.ended_at)
    .bind(record.created_at)
    .bind(record.updated_at)
    .bind(recurrence_json(record))
    .bind(record.series_ends_at())
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(err)) if err.is_unique_violation() => return Ok(false),
        Err(err) => return Err(err),
    }
    write_invitees(&mut tx, record).await?;
    for event in events {
        outbox::write(&mut tx, event).await?;
    }
    tx.commit().await?;
    Ok(true)
}

async fn write_invitees(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    record: &MeetingRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM meeting_invitees WHERE meeting_id = $1")
        .bind(record.id.to_string())
        .execute(&mut **tx)
        .await?;
    for email in &record.invitees {
        sqlx::query("INSERT INTO meeting_invitees (meeting_id, email) VALUES ($1, $2)")
            .bind(record.id.to_string())
            .bind(email)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Write every field of an existing meeting (and its invitees, and `events`).
pub async fn update(
    db: &Db,
    record: &MeetingRecord,
    events: &[MeetingEvent],
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE meetings SET title = $2, status = $3, starts_at = $4, ends_at = $5, \
         duration_minutes = $6, time_zone = $7, settings = $8, started_at = $9, ended_at = $10, \
         updated_at = $11, recurrence = $12, series_ends_at = $13 WHERE id = $1",
    )
    .bind(record.id.to_string())
    .bind(&record.title)
    .bind(status_str(record.status))
    .bind(record.starts_at)
    .bind(record.ends_at)
    .bind(i64::from(record.duration_minutes()))
    .bind(&record.time_zone)
    .bind(settings_json(record))
    .bind(record.started_at)
    .bind(record.ended_at)
    .bind(record.updated_at)
    .bind(recurrence_json(record))
    .bind(record.series_ends_at())
    .execute(&mut *tx)
    .await?;
    write_invitees(&mut tx, record).await?;
    for event in events {
        outbox::write(&mut tx, event).await?;
    }
    tx.commit().await
}

async fn with_invitees(db: &Db, mut record: MeetingRecord) -> Result<MeetingRecord, sqlx::Error> {
    let rows =
        sqlx::query("SELECT email FROM meeting_invitees WHERE meeting_id = $1 ORDER BY email")
            .bind(record.id.to_string())
            .fetch_all(db.pool())
            .await?;
    record.invitees = rows
        .iter()
        .map(|row| row.try_get::<String, _>("email"))
        .collect::<Result<_, _>>()?;
    Ok(record)
}

pub async fn get(db: &Db, id: MeetingId) -> Result<Option<MeetingRecord>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM meetings WHERE id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(db.pool())
    .await?;
    match row {
        Some(row) => Ok(Some(with_invitees(db, from_row(&row)?).await?)),
        None => Ok(None),
    }
}

pub async fn get_by_code(db: &Db, code: &str) -> Result<Option<MeetingRecord>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM meetings WHERE code = $1"
    )))
    .bind(code)
    .fetch_optional(db.pool())
    .await?;
    match row {
        Some(row) => Ok(Some(with_invitees(db, from_row(&row)?).await?)),
        None => Ok(None),
    }
}

/// Which meetings a list asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Live, or scheduled and not over yet: soonest first.
    Upcoming,
    /// Over, ended or cancelled: latest first.
    Past,
}

/// The meetings `user` hosts or is invited to (by `email`).
pub async fn list(
    db: &Db,
    user: UserId,
    email: &str,
    when: When,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<MeetingRecord>, sqlx::Error> {
    let filter = match when {
        When::Upcoming => {
            "(status = 'live' OR (status = 'scheduled' AND series_ends_at >= $3)) ORDER BY starts_at ASC"
        }
        When::Past => {
            "(status IN ('ended', 'cancelled') OR (status = 'scheduled' AND series_ends_at < $3)) \
             ORDER BY starts_at DESC"
        }
    };
    // `filter` is one of the two constants above; the values are bound.
    let sql = format!(
        "SELECT {COLUMNS} FROM meetings WHERE (host_id = $1 OR id IN \
         (SELECT meeting_id FROM meeting_invitees WHERE email = $2)) AND {filter} LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user.to_string())
        .bind(email.trim().to_ascii_lowercase())
        .bind(now_ms)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(with_invitees(db, from_row(row)?).await?);
    }
    Ok(out)
}

/// Someone entered the room: their attendance row, the meeting goes live (first
/// time: `meeting.started`), and `meeting.participant_joined`.
pub async fn participant_joined(
    db: &Db,
    meeting: MeetingId,
    participant: ParticipantId,
    user: Option<UserId>,
    display_name: &str,
    at_ms: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO meeting_attendance (participant_id, meeting_id, user_id, display_name, joined_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(participant.to_string())
    .bind(meeting.to_string())
    .bind(user.map(|u| u.to_string()))
    .bind(display_name)
    .bind(at_ms)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        // Joined before (a resumed session): nothing new to record.
        Err(sqlx::Error::Database(err)) if err.is_unique_violation() => return Ok(()),
        Err(err) => return Err(err),
    }
    let went_live = sqlx::query(
        "UPDATE meetings SET status = 'live', started_at = COALESCE(started_at, $2), \
         ended_at = NULL, updated_at = $2 WHERE id = $1 AND status = 'scheduled'",
    )
    .bind(meeting.to_string())
    .bind(at_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    if went_live {
        outbox::write(
            &mut tx,
            &outbox::event(meeting, proto::meeting::MeetingEventBody::Started {}),
        )
        .await?;
    }
    let joined = proto::meeting::MeetingEventBody::ParticipantJoined {
        participant_id: participant,
        user_id: user,
        display_name: display_name.to_owned(),
    };
    outbox::write(&mut tx, &outbox::event(meeting, joined)).await?;
    tx.commit().await
}

/// Someone left the room for good. `room_empty`: it was the last one, so the meeting
/// stops being live (`meeting.ended`).
pub async fn participant_left(
    db: &Db,
    meeting: MeetingId,
    participant: ParticipantId,
    user: Option<UserId>,
    reason: &str,
    room_empty: bool,
    at_ms: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let updated = sqlx::query(
        "UPDATE meeting_attendance SET left_at = $2 WHERE participant_id = $1 AND left_at IS NULL",
    )
    .bind(participant.to_string())
    .bind(at_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated > 0 {
        let left = proto::meeting::MeetingEventBody::ParticipantLeft {
            participant_id: participant,
            user_id: user,
            reason: reason.to_owned(),
        };
        outbox::write(&mut tx, &outbox::event(meeting, left)).await?;
    }
    if room_empty {
        end(&mut tx, meeting, MeetingStatus::Scheduled, at_ms).await?;
    }
    tx.commit().await
}

/// The host ended the meeting for everyone.
pub async fn ended_by_host(db: &Db, meeting: MeetingId, at_ms: i64) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE meeting_attendance SET left_at = $2 WHERE meeting_id = $1 AND left_at IS NULL",
    )
    .bind(meeting.to_string())
    .bind(at_ms)
    .execute(&mut *tx)
    .await?;
    end(&mut tx, meeting, MeetingStatus::Ended, at_ms).await?;
    tx.commit().await
}

async fn end(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    meeting: MeetingId,
    status: MeetingStatus,
    at_ms: i64,
) -> Result<(), sqlx::Error> {
    let ended = sqlx::query(
        "UPDATE meetings SET status = $2, ended_at = $3, updated_at = $3 \
         WHERE id = $1 AND status IN ('live', 'scheduled')",
    )
    .bind(meeting.to_string())
    .bind(status_str(status))
    .bind(at_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        > 0;
    if ended {
        outbox::write(
            tx,
            &outbox::event(meeting, proto::meeting::MeetingEventBody::Ended {}),
        )
        .await?;
    }
    Ok(())
}

/// One row of a meeting's history.
#[derive(Debug, Clone)]
pub struct AttendanceRow {
    pub participant_id: ParticipantId,
    pub user_id: Option<UserId>,
    pub display_name: String,
    pub joined_at: i64,
    pub left_at: Option<i64>,
}

pub async fn attendance(db: &Db, meeting: MeetingId) -> Result<Vec<AttendanceRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT participant_id, user_id, display_name, joined_at, left_at FROM meeting_attendance \
         WHERE meeting_id = $1 ORDER BY joined_at, participant_id",
    )
    .bind(meeting.to_string())
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let participant: String = row.try_get("participant_id")?;
            let user: Option<String> = row.try_get("user_id")?;
            Ok(AttendanceRow {
                participant_id: participant
                    .parse()
                    .map_err(|_| decode_err("participant_id"))?,
                user_id: match user {
                    Some(u) => Some(u.parse().map_err(|_| decode_err("user_id"))?),
                    None => None,
                },
                display_name: row.try_get("display_name")?,
                joined_at: row.try_get("joined_at")?,
                left_at: row.try_get("left_at")?,
            })
        })
        .collect()
}

/// Outbox rows not yet published, oldest first: `(type, payload)`.
pub async fn unpublished_events(db: &Db, limit: i64) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT type, payload FROM outbox WHERE published_at IS NULL ORDER BY created_at, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("type")?, row.try_get("payload")?)))
        .collect()
}
