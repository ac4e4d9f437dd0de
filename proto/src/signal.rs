//! The signaling WebSocket protocol (`/rtc`), between a client and signaling.
//!
//! Every message is one JSON text frame with a protocol version `v` and a `type`.
//! Server messages that describe the room carry `seq`, a per-room sequence number
//! that increases by one with each room event, so a client can tell it missed one
//! (and then asks for a fresh [`ServerMessage::Joined`] snapshot by resuming).
//! The full description, with a worked session, is in `docs/protocol.md`.

use crate::ids::{ParticipantId, TrackId};
use crate::media::{Layer, TrackInfo};
use crate::sfu::{PeerRole, Quality, SpeakerLevel, SubscriberOffer, TrackDeclaration};
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest message a client may send, in bytes.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// A client → server message: `{"v": 1, "type": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientEnvelope {
    pub v: u32,
    #[serde(flatten)]
    pub message: ClientMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First message: the room token from `POST /api/v1/meetings/{id}/join`, and
    /// the publisher connection's offer. `resume` carries the resume token of an
    /// earlier session to take it over after a reconnect.
    Join {
        token: String,
        publisher_offer: String,
        #[serde(default)]
        tracks: Vec<TrackDeclaration>,
        #[serde(default)]
        resume: Option<String>,
        /// Receive every track in the room without asking (the default); `false`:
        /// only the tracks asked for with [`ClientMessage::Subscribe`].
        #[serde(default)]
        auto_subscribe: Option<bool>,
        /// Open the room data channel on the subscriber connection (the
        /// default); `false` when the client never reads it.
        #[serde(default)]
        data_channel: Option<bool>,
    },
    /// Renegotiate the publisher connection (a track added or removed).
    PublishOffer {
        sdp: String,
        #[serde(default)]
        tracks: Vec<TrackDeclaration>,
    },
    /// The answer to a [`ServerMessage::SubscriberOffer`].
    SubscriberAnswer {
        sdp: String,
    },
    /// A trickled ICE candidate (`candidate:...`), for one of the two connections.
    Candidate {
        target: PeerRole,
        candidate: String,
    },
    /// Choose what to receive of one remote track.
    Subscribe {
        track_id: TrackId,
        #[serde(default = "yes")]
        subscribed: bool,
        #[serde(default)]
        max_layer: Option<Layer>,
        /// Height in pixels the video is drawn at.
        #[serde(default)]
        max_height: Option<u32>,
    },
    /// The client muted or unmuted its own track.
    Mute {
        track_id: TrackId,
        muted: bool,
    },
    /// A chat message to the room.
    Chat {
        text: String,
    },
    /// Host controls.
    HostMute {
        participant_id: ParticipantId,
        track_id: TrackId,
    },
    HostRemove {
        participant_id: ParticipantId,
    },
    HostLock {
        locked: bool,
    },
    HostAdmit {
        participant_id: ParticipantId,
        admit: bool,
    },
    HostEndMeeting,
    /// Keep-alive; answered with `pong`.
    Ping,
    Leave,
}

fn yes() -> bool {
    true
}

/// A participant as the room sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub participant_id: ParticipantId,
    pub display_name: String,
    /// The account, for signed-in people; `None` for guests.
    #[serde(default)]
    pub user_id: Option<crate::ids::UserId>,
    #[serde(default)]
    pub is_host: bool,
    #[serde(default)]
    pub tracks: Vec<TrackInfo>,
}

/// A server → client message: `{"v": 1, "type": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerEnvelope {
    pub v: u32,
    /// Per-room sequence number for room events; absent on replies to one client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub message: ServerMessage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The join succeeded: who you are, who is here, and the SFU's SDP.
    Joined {
        participant_id: ParticipantId,
        /// Present this on reconnect to resume the same session.
        resume_token: String,
        room: String,
        participants: Vec<ParticipantInfo>,
        publisher_answer: String,
        subscriber_offer: SubscriberOffer,
        // The room sequence number of the snapshot travels in the envelope's
        // `seq` (a field here too would clash with it when parsing).
        locked: bool,
    },
    /// Waiting for the host to admit you (lobby).
    Waiting,
    PublisherAnswer {
        sdp: String,
    },
    SubscriberOffer {
        offer: SubscriberOffer,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant_id: ParticipantId,
        reason: String,
    },
    ParticipantUpdated {
        participant: ParticipantInfo,
    },
    TrackPublished {
        track: TrackInfo,
    },
    TrackUnpublished {
        participant_id: ParticipantId,
        track_id: TrackId,
    },
    TrackMuted {
        participant_id: ParticipantId,
        track_id: TrackId,
        muted: bool,
    },
    Speakers {
        speakers: Vec<SpeakerLevel>,
    },
    Quality {
        participant_id: ParticipantId,
        quality: Quality,
    },
    LayerChanged {
        track_id: TrackId,
        layer: Option<Layer>,
    },
    /// To a publisher only (dynacast): send these layers of your track `mid`
    /// and pause the others (`[]`: nobody watches it). A single-layer track's
    /// one layer is `high`. See [`crate::sfu::SfuEvent::PublisherLayers`].
    PublisherLayers {
        track_id: TrackId,
        mid: String,
        active: Vec<Layer>,
    },
    Chat {
        participant_id: ParticipantId,
        display_name: String,
        text: String,
        sent_at_ms: i64,
    },
    /// Host only: someone waits in the lobby.
    LobbyRequest {
        participant_id: ParticipantId,
        display_name: String,
    },
    RoomLocked {
        locked: bool,
    },
    /// You were removed, the meeting ended, or you were denied entry. The socket closes after.
    Removed {
        reason: String,
    },
    MeetingEnded,
    Pong,
    /// Something the client sent was wrong. `code` is stable (see `ErrorCode`).
    Error {
        code: String,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_from_the_documented_shape() {
        let raw = r#"{"v":1,"type":"subscribe","track_id":"0190a1b2-0000-7000-8000-000000000001","max_height":180}"#;
        let env: ClientEnvelope = serde_json::from_str(raw).unwrap();
        assert_eq!(env.v, 1);
        match env.message {
            ClientMessage::Subscribe {
                subscribed,
                max_height,
                ..
            } => {
                assert!(subscribed);
                assert_eq!(max_height, Some(180));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(serde_json::from_str::<ClientEnvelope>(r#"{"v":1,"type":"nope"}"#).is_err());
    }

    #[test]
    fn joined_round_trips_with_its_snapshot_sequence_in_the_envelope() {
        let env = ServerEnvelope {
            v: PROTOCOL_VERSION,
            seq: Some(42),
            message: ServerMessage::Joined {
                participant_id: ParticipantId::new(),
                resume_token: "r".into(),
                room: "room".into(),
                participants: vec![],
                publisher_answer: "a".into(),
                subscriber_offer: SubscriberOffer {
                    sdp: "o".into(),
                    tracks: vec![],
                },
                locked: false,
            },
        };
        let json = serde_json::to_string(&env).unwrap();
        let back: ServerEnvelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn server_messages_carry_version_and_sequence() {
        let env = ServerEnvelope {
            v: PROTOCOL_VERSION,
            seq: Some(7),
            message: ServerMessage::Pong,
        };
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["seq"], 7);
        assert_eq!(json["type"], "pong");
    }
}
