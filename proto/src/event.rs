//! The envelope every event on the bus travels in.
//!
//! Producers write events to their outbox; the relay wraps each row in an
//! [`EventEnvelope`] and publishes it on a topic exchange with the event's `type` as
//! routing key. Consumers deduplicate by [`EventEnvelope::id`].

use crate::ids::EventId;
use serde::{Deserialize, Serialize};

/// Exchange for account events (`user.*`, `auth.*`), published by auth.
pub const USER_EVENTS: &str = "user.events";
/// Exchange for meeting events (`meeting.*`), published by signaling.
pub const MEETING_EVENTS: &str = "meeting.events";

/// Version of the envelope's shape.
pub const ENVELOPE_VERSION: u32 = 1;

/// One event as it crosses the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Unique per event; the outbox row's id. Consumers deduplicate by it.
    pub id: EventId,
    /// `user.registered`, `meeting.started`, …; also the routing key.
    #[serde(rename = "type")]
    pub kind: String,
    /// Version of the payload's schema for this type.
    pub version: u32,
    /// When the change happened (Unix milliseconds).
    pub occurred_at_ms: i64,
    /// The room (meeting id) the event is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Per-room order, when the producer assigns one: signaling numbers each
    /// meeting's changes 1, 2, 3… in the transaction that makes them (quality
    /// samples carry none). A consumer that sees a number skipped has missed an
    /// event (or will get it late); one below the highest seen arrived late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The producer's event body (for meeting events, a [`crate::meeting::MeetingEvent`]).
    pub payload: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_through_json_with_type_as_the_kind() {
        let env = EventEnvelope {
            id: EventId::new(),
            kind: "meeting.started".into(),
            version: 1,
            occurred_at_ms: 5,
            room: Some("r".into()),
            seq: None,
            payload: serde_json::json!({"a": 1}),
        };
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["type"], "meeting.started");
        assert!(json.get("seq").is_none());
        assert_eq!(serde_json::from_value::<EventEnvelope>(json).unwrap(), env);
    }
}
