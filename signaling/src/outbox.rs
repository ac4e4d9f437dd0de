//! The transactional outbox: meeting events are written to the `outbox` table in the
//! same transaction as the change they describe, so none is lost while the broker is
//! down. A relay (another component) publishes unpublished rows to the
//! `meeting.events` exchange and sets `published_at`.
//!
//! Each meeting change also takes the next number of its meeting (`room_seq`, from
//! `room_sequences`, in the same transaction), which the relay puts in the
//! envelope's `seq`: 1, 2, 3… per meeting, with no gaps, so a consumer can tell a
//! missing or late event. The upsert locks the meeting's counter row until commit,
//! so numbers follow commit order. Quality samples are measurements, not changes:
//! they take no number.

use crate::clock;
use proto::ids::{EventId, MeetingId};
use proto::meeting::{MeetingEvent, MeetingEventBody};
use sqlx::{Any, Row, Transaction};

/// A new event about `meeting`, happening now.
pub fn event(meeting: MeetingId, body: MeetingEventBody) -> MeetingEvent {
    MeetingEvent {
        event_id: EventId::new(),
        occurred_at_ms: clock::now_ms(),
        meeting_id: meeting,
        body,
    }
}

/// Record an SFU quality sample as a `meeting.quality_sample` event (the shape
/// analytics reads: `{meeting_id, occurred_at_ms, sample}`). Samples are not
/// part of a meeting change, so each is its own small transaction.
pub async fn write_quality(
    db: &servicekit::backends::Db,
    meeting: MeetingId,
    sample: &proto::sfu::QualitySample,
) -> Result<(), sqlx::Error> {
    let id = EventId::new();
    let now = clock::now_ms();
    let payload = serde_json::json!({
        "event_id": id,
        "meeting_id": meeting,
        "occurred_at_ms": now,
        "sample": sample,
    });
    sqlx::query("INSERT INTO outbox (id, type, payload, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id.to_string())
        .bind("meeting.quality_sample")
        .bind(payload.to_string())
        .bind(now)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Record that someone entered the lobby of `meeting` (notify tells its host).
/// The room lives in the room store, not in this database, so this is its own
/// transaction after the room changed: if it fails, the host still sees the
/// request in the meeting, and only the alert elsewhere is lost.
pub async fn write_lobby_waiting(
    db: &servicekit::backends::Db,
    meeting: MeetingId,
    participant_id: proto::ids::ParticipantId,
    user_id: Option<proto::ids::UserId>,
    display_name: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    write(
        &mut tx,
        &event(
            meeting,
            MeetingEventBody::LobbyWaiting {
                participant_id,
                user_id,
                display_name: display_name.to_owned(),
            },
        ),
    )
    .await?;
    tx.commit().await
}

/// Add `event` to the outbox inside `tx`, with the next sequence number of its
/// meeting. Returns that number.
pub async fn write(
    tx: &mut Transaction<'_, Any>,
    event: &MeetingEvent,
) -> Result<i64, sqlx::Error> {
    let payload = serde_json::to_string(event).map_err(|err| sqlx::Error::Encode(err.into()))?;
    let seq: i64 = sqlx::query(
        "INSERT INTO room_sequences (meeting_id, last_seq) VALUES ($1, 1) ON CONFLICT (meeting_id) DO UPDATE SET last_seq = room_sequences.last_seq + 1 RETURNING last_seq",
    )
    .bind(event.meeting_id.to_string())
    .fetch_one(&mut **tx)
    .await?
    .try_get("last_seq")?;
    sqlx::query(
        "INSERT INTO outbox (id, type, payload, created_at, room_seq) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event.event_id.to_string())
    .bind(event.body.type_name())
    .bind(payload)
    .bind(event.occurred_at_ms)
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}
