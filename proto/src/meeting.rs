//! The meetings REST API (`/api/v1/meetings`, served by signaling) and the meeting
//! events signaling publishes for notify and analytics.
//!
//! Times are RFC 3339 strings in UTC (`2026-12-01T08:00:00Z`); a meeting also keeps
//! the IANA time zone it was scheduled in, for display and reminders.

use crate::ids::{EventId, MeetingId, ParticipantId, UserId};
use crate::room_token::RoomGrants;
use serde::{Deserialize, Serialize};

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Most invitees one meeting may have.
pub const MAX_INVITEES: usize = 200;
/// Longest meeting, in minutes.
pub const MAX_DURATION_MINUTES: u32 = 24 * 60;
/// Duration of a meeting created without one.
pub const DEFAULT_DURATION_MINUTES: u32 = 60;
/// Largest `max_participants` a meeting may ask for.
pub const MAX_PARTICIPANTS_LIMIT: u32 = 500;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// How a meeting behaves when people join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingSettings {
    /// People who are not signed in may join with a display name.
    #[serde(default)]
    pub guests_allowed: bool,
    /// Everyone but the host and the invitees waits in a lobby until a host admits them.
    #[serde(default)]
    pub lobby: bool,
    /// Participants are asked to join with their microphone muted.
    #[serde(default)]
    pub mute_on_entry: bool,
    /// Most people in the room at once (host included).
    #[serde(default = "default_max_participants")]
    pub max_participants: u32,
}

fn default_max_participants() -> u32 {
    100
}

impl Default for MeetingSettings {
    fn default() -> Self {
        Self {
            guests_allowed: false,
            lobby: false,
            mute_on_entry: false,
            max_participants: default_max_participants(),
        }
    }
}

/// Most occurrences a recurring meeting may have.
pub const MAX_OCCURRENCES: u32 = 52;

/// How often a meeting repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frequency {
    Daily,
    /// Monday to Friday.
    Weekdays,
    Weekly,
}

/// A meeting that repeats `count` times (the first included), at the same wall-clock
/// time in the meeting's time zone (so it follows daylight-saving changes). Every
/// occurrence uses the same join code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recurrence {
    pub frequency: Frequency,
    /// 2 to [`MAX_OCCURRENCES`].
    pub count: u32,
}

/// A partial update of [`MeetingSettings`]: absent fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsPatch {
    pub guests_allowed: Option<bool>,
    pub lobby: Option<bool>,
    pub mute_on_entry: Option<bool>,
    pub max_participants: Option<u32>,
}

/// `POST /api/v1/meetings`. Without `starts_at` the meeting is instant (it starts now).
///
/// `starts_at` is either an RFC 3339 time with an offset, or a local wall-clock time
/// without one (`2026-12-01T09:00`), read in `time_zone`. The end is given by
/// `duration_minutes` or `ends_at` (same two forms), not both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMeeting {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub starts_at: Option<String>,
    /// IANA name, `UTC` when absent.
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub duration_minutes: Option<u32>,
    #[serde(default)]
    pub ends_at: Option<String>,
    #[serde(default)]
    pub invitees: Vec<String>,
    #[serde(default)]
    pub settings: Option<MeetingSettings>,
    /// Repeat the meeting (scheduled meetings only).
    #[serde(default)]
    pub recurrence: Option<Recurrence>,
}

/// `PATCH /api/v1/meetings/{id}` (host only): absent fields keep their value;
/// `invitees`, when present, replaces the list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeeting {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub starts_at: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub duration_minutes: Option<u32>,
    #[serde(default)]
    pub ends_at: Option<String>,
    #[serde(default)]
    pub invitees: Option<Vec<String>>,
    #[serde(default)]
    pub settings: Option<SettingsPatch>,
    /// Set (or change) how the meeting repeats.
    #[serde(default)]
    pub recurrence: Option<Recurrence>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeetingKind {
    Instant,
    Scheduled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeetingStatus {
    /// Nobody has joined yet (or everyone left and it may be joined again).
    Scheduled,
    /// Someone is in the room.
    Live,
    /// The host ended it for everyone; it cannot be joined again.
    Ended,
    /// The host cancelled it; it cannot be joined.
    Cancelled,
}

/// A meeting as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meeting {
    pub id: MeetingId,
    /// The short join code, `abc-defg-hjk`.
    pub code: String,
    /// `/m/{code}`.
    pub join_url: String,
    pub title: String,
    pub host_id: UserId,
    pub kind: MeetingKind,
    pub status: MeetingStatus,
    pub starts_at: String,
    pub ends_at: String,
    pub time_zone: String,
    pub duration_minutes: u32,
    /// Shown to the host only; empty for everyone else.
    pub invitees: Vec<String>,
    pub settings: MeetingSettings,
    /// How the meeting repeats, if it does.
    #[serde(default)]
    pub recurrence: Option<Recurrence>,
    /// Start of every occurrence (one for a meeting that does not repeat).
    #[serde(default)]
    pub occurrences: Vec<String>,
    /// When the room was first joined.
    pub started_at: Option<String>,
    /// When the room last emptied or was ended.
    pub ended_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// `GET /api/v1/meetings?when=upcoming|past`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingList {
    pub meetings: Vec<Meeting>,
}

/// `POST /api/v1/meetings/{id or code}/join`. Signed-in callers send `{}` (or a
/// display name to use instead of their account's); guests must send a display name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    #[serde(default)]
    pub display_name: Option<String>,
}

/// Who the caller will be in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinParticipant {
    pub participant_id: ParticipantId,
    pub display_name: String,
    pub user_id: Option<UserId>,
    pub grants: RoomGrants,
    /// The caller will wait in the lobby until a host admits them.
    pub lobby: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    pub room_token: String,
    /// Path of the signaling WebSocket, relative to the API's origin.
    pub signaling_url: String,
    /// When the room token expires (RFC 3339).
    pub expires_at: String,
    pub meeting: Meeting,
    pub participant: JoinParticipant,
}

/// One person's stay in a meeting, for its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attendance {
    pub participant_id: ParticipantId,
    pub user_id: Option<UserId>,
    pub display_name: String,
    pub joined_at: String,
    pub left_at: Option<String>,
    /// Seconds in the room (until now while still there).
    pub seconds: u64,
}

/// `GET /api/v1/meetings/{id}/history` (host only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingHistory {
    pub meeting_id: MeetingId,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub attendance: Vec<Attendance>,
}

/// A meeting event as signaling writes it to its outbox (and the relay publishes it
/// on the `meeting.events` exchange with routing key `type`). Consumers deduplicate by
/// `event_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingEvent {
    pub event_id: EventId,
    /// Unix milliseconds.
    pub occurred_at_ms: i64,
    pub meeting_id: MeetingId,
    #[serde(flatten)]
    pub body: MeetingEventBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MeetingEventBody {
    #[serde(rename = "meeting.scheduled")]
    Scheduled {
        host_id: UserId,
        title: String,
        starts_at: String,
        time_zone: String,
        invitees: Vec<String>,
    },
    #[serde(rename = "meeting.updated")]
    Updated {
        title: String,
        starts_at: String,
        time_zone: String,
        invitees: Vec<String>,
    },
    #[serde(rename = "meeting.cancelled")]
    Cancelled { invitees: Vec<String> },
    #[serde(rename = "meeting.started")]
    Started {},
    #[serde(rename = "meeting.participant_joined")]
    ParticipantJoined {
        participant_id: ParticipantId,
        user_id: Option<UserId>,
        display_name: String,
    },
    #[serde(rename = "meeting.participant_left")]
    ParticipantLeft {
        participant_id: ParticipantId,
        user_id: Option<UserId>,
        reason: String,
    },
    #[serde(rename = "meeting.ended")]
    Ended {},
    /// Someone is waiting in the meeting's lobby for a host to let them in (sent
    /// once per stay in the lobby).
    #[serde(rename = "meeting.lobby_waiting")]
    LobbyWaiting {
        participant_id: ParticipantId,
        user_id: Option<UserId>,
        display_name: String,
    },
}

impl MeetingEventBody {
    /// The event's type, as in its JSON and the routing key.
    pub fn type_name(&self) -> &'static str {
        match self {
            MeetingEventBody::Scheduled { .. } => "meeting.scheduled",
            MeetingEventBody::Updated { .. } => "meeting.updated",
            MeetingEventBody::Cancelled { .. } => "meeting.cancelled",
            MeetingEventBody::Started {} => "meeting.started",
            MeetingEventBody::ParticipantJoined { .. } => "meeting.participant_joined",
            MeetingEventBody::ParticipantLeft { .. } => "meeting.participant_left",
            MeetingEventBody::Ended {} => "meeting.ended",
            MeetingEventBody::LobbyWaiting { .. } => "meeting.lobby_waiting",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_names_match_their_json_tag() {
        let body = MeetingEventBody::Started {};
        let event = MeetingEvent {
            event_id: EventId::new(),
            occurred_at_ms: 1,
            meeting_id: MeetingId::new(),
            body: body.clone(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], body.type_name());
        assert_eq!(serde_json::from_value::<MeetingEvent>(json).unwrap(), event);
    }

    #[test]
    fn settings_default_when_fields_are_absent() {
        let settings: MeetingSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(settings, MeetingSettings::default());
    }
}
