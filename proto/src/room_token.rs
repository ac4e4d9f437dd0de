//! Room tokens: what `POST /api/v1/meetings/{id}/join` hands a client so it may
//! open the signaling WebSocket (`/rtc`) and join one room.
//!
//! A room token is a JWT (HS256) signed by signaling with its own key, valid for
//! [`ROOM_TOKEN_TTL_SECS`]. Only signaling reads it; clients treat it as opaque.

use crate::ids::{MeetingId, ParticipantId, UserId};
use crate::media::{RoomId, TrackSource};
use serde::{Deserialize, Serialize};

/// `iss` of room tokens.
pub const ROOM_TOKEN_ISSUER: &str = "meetease-signaling";
/// `aud` of room tokens: the signaling WebSocket.
pub const ROOM_TOKEN_AUDIENCE: &str = "meetease-rtc";
/// How long a room token is valid after it is issued.
pub const ROOM_TOKEN_TTL_SECS: u64 = 600;

/// What the holder of a room token may do in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomGrants {
    /// Sources the holder may publish (empty: may not publish at all).
    #[serde(default)]
    pub can_publish: Vec<TrackSource>,
    #[serde(default)]
    pub can_subscribe: bool,
    /// May send chat and data-channel messages.
    #[serde(default)]
    pub can_publish_data: bool,
    /// May use the host controls (mute others, remove, lock, lobby, end for all).
    #[serde(default)]
    pub is_host: bool,
}

impl RoomGrants {
    /// Everything a participant may do; `is_host` as given.
    pub fn full(is_host: bool) -> Self {
        Self {
            can_publish: vec![
                TrackSource::Camera,
                TrackSource::Microphone,
                TrackSource::ScreenShare,
                TrackSource::ScreenShareAudio,
            ],
            can_subscribe: true,
            can_publish_data: true,
            is_host,
        }
    }
}

/// Who holds a room token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoomIdentity {
    /// A signed-in account.
    User { user_id: UserId },
    /// Someone who joined with a display name only.
    Guest,
}

impl RoomIdentity {
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            RoomIdentity::User { user_id } => Some(*user_id),
            RoomIdentity::Guest => None,
        }
    }
}

/// The claims of a room token. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomClaims {
    pub iss: String,
    pub aud: String,
    /// `user:{uuid}` or `guest:{participant uuid}`.
    pub sub: String,
    /// The room on the SFU: the meeting id's text.
    pub room: RoomId,
    pub meeting_id: MeetingId,
    /// The participant this token joins as; a resumed session keeps it.
    pub participant_id: ParticipantId,
    pub identity: RoomIdentity,
    pub display_name: String,
    pub grants: RoomGrants,
    /// The holder waits in the lobby until a host admits them.
    #[serde(default)]
    pub lobby: bool,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// This token's id.
    pub jti: uuid::Uuid,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_round_trip_through_json() {
        let claims = RoomClaims {
            iss: ROOM_TOKEN_ISSUER.into(),
            aud: ROOM_TOKEN_AUDIENCE.into(),
            sub: "guest:x".into(),
            room: RoomId::parse("abc").unwrap(),
            meeting_id: MeetingId::new(),
            participant_id: ParticipantId::new(),
            identity: RoomIdentity::Guest,
            display_name: "Ada".into(),
            grants: RoomGrants::full(false),
            lobby: true,
            iat: 1,
            nbf: 1,
            exp: 601,
            jti: uuid::Uuid::now_v7(),
        };
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(json["identity"]["kind"], "guest");
        assert_eq!(json["grants"]["can_publish"][0], "camera");
        let back: RoomClaims = serde_json::from_value(json).unwrap();
        assert_eq!(back, claims);
    }
}
