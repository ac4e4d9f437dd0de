//! The SFU's internal control API (port 8006), spoken by signaling.
//!
//! Every participant has two peer connections to the SFU: a **publisher** one,
//! on which the client offers its tracks, and a **subscriber** one, on which the
//! SFU offers the room's tracks. Each side is always the offerer on its own
//! connection, so the two can never both offer at once (no glare).
//!
//! | call | body | answer |
//! |---|---|---|
//! | `POST /v1/sessions` | [`CreateSession`] | [`SessionCreated`] |
//! | `POST /v1/sessions/{participant}/publisher/offer` | [`PublisherOffer`] | [`SdpAnswer`] |
//! | `POST /v1/sessions/{participant}/subscriber/answer` | [`SubscriberAnswer`] | 204 |
//! | `POST /v1/sessions/{participant}/candidate` | [`RemoteCandidate`] | 204 |
//! | `POST /v1/sessions/{participant}/subscription` | [`SetSubscription`] | 204 |
//! | `POST /v1/sessions/{participant}/mute` | [`MuteTrack`] | 204 |
//! | `POST /v1/sessions/{participant}/ice-restart` | — | [`SubscriberOffer`] (the client restarts its publisher connection with a new offer itself) |
//! | `DELETE /v1/sessions/{participant}` | — | 204 |
//! | `GET /v1/rooms/{room}` | — | [`RoomSnapshot`] |
//! | `GET /v1/events` | — | server-sent events, each a JSON [`SfuEvent`] |
//! | `GET /v1/load` | — | [`NodeLoad`] |
//! | `POST /v1/drain` | — | 204; no new rooms from now on (SIGTERM does the same, then waits for the rooms to end) |
//!
//! Every call carries `Authorization: Bearer <service token>`.

use crate::ids::{ParticipantId, TrackId};
use crate::media::{Layer, RoomId, TrackInfo, TrackKind, TrackSource};
use serde::{Deserialize, Serialize};

/// A publisher track the client declares in its offer, by the transceiver `mid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackDeclaration {
    pub mid: String,
    pub source: TrackSource,
}

/// Open a session: the publisher offer and the tracks in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSession {
    pub room: RoomId,
    pub participant: ParticipantId,
    /// SDP offer for the publisher connection.
    pub publisher_offer: String,
    #[serde(default)]
    pub tracks: Vec<TrackDeclaration>,
    /// Subscribe to every track in the room automatically.
    #[serde(default = "yes")]
    pub auto_subscribe: bool,
    /// Open the room data channel on the subscriber connection (the default).
    /// `false` for clients that never read it, like the browser client, which
    /// carries chat over signaling: an SCTP association the client never uses
    /// still costs the SFU its timers on every pass over the connection.
    #[serde(default = "yes")]
    pub data_channel: bool,
}

fn yes() -> bool {
    true
}

/// The SFU's answer for the publisher connection and its offer for the subscriber one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCreated {
    pub publisher_answer: String,
    pub subscriber_offer: SubscriberOffer,
}

/// An SFU offer on the subscriber connection, with what each `mid` will carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberOffer {
    pub sdp: String,
    pub tracks: Vec<SubscribedTrack>,
}

/// One sending m-line on a subscriber connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribedTrack {
    pub mid: String,
    pub track_id: TrackId,
    pub participant_id: ParticipantId,
    pub kind: TrackKind,
    pub source: TrackSource,
}

/// A renegotiation of the publisher connection (a track added or removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublisherOffer {
    pub sdp: String,
    #[serde(default)]
    pub tracks: Vec<TrackDeclaration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SdpAnswer {
    pub sdp: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberAnswer {
    pub sdp: String,
}

/// Which of a participant's two connections a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerRole {
    Publisher,
    Subscriber,
}

/// A trickled ICE candidate from the client (`candidate:...` line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCandidate {
    pub target: PeerRole,
    pub candidate: String,
}

/// What a subscriber wants of one remote track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetSubscription {
    pub track_id: TrackId,
    /// `false` stops the track being forwarded (the m-line stays, inactive).
    #[serde(default = "yes")]
    pub subscribed: bool,
    /// Highest layer wanted; `None` means "the best the bandwidth allows".
    #[serde(default)]
    pub max_layer: Option<Layer>,
    /// Size the video is drawn at; the SFU picks the layer that fits.
    #[serde(default)]
    pub max_height: Option<u32>,
}

/// Host control: stop forwarding a participant's track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MuteTrack {
    pub track_id: TrackId,
    pub muted: bool,
}

/// A participant's current speech level, 0 (silence) to 127 (loudest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeakerLevel {
    pub participant_id: ParticipantId,
    pub level: u8,
}

/// Connection quality of one participant as the SFU sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Excellent,
    Good,
    Poor,
    Lost,
}

/// Per-participant numbers behind [`Quality`], for analytics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualitySample {
    pub participant_id: ParticipantId,
    pub quality: Quality,
    /// Estimated bandwidth towards the participant, bits per second.
    pub egress_estimate_bps: Option<u64>,
    /// Fraction of the participant's published packets lost on the way in (0..1).
    pub ingress_loss: f32,
    /// Round-trip time in milliseconds, when known.
    pub rtt_ms: Option<f32>,
}

/// What a node reports about itself; signaling places rooms on the least loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub rooms: u32,
    pub participants: u32,
    pub tracks: u32,
    /// Forwarded packets per second over the last few seconds.
    pub forwarded_pps: f64,
    /// A unitless load figure; 1.0 is "full". A draining node reports
    /// [`DRAINING_LOAD`] so placement passes it over.
    pub load: f64,
    /// The node is shutting down: it takes no new rooms, and its rooms carry on
    /// until they end (or a time limit).
    #[serde(default)]
    pub draining: bool,
}

/// The load a draining node reports: finite (JSON has no infinity), and higher
/// than any working node's.
pub const DRAINING_LOAD: f64 = 1e9;

/// A room as the SFU sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSnapshot {
    pub room: RoomId,
    pub participants: Vec<ParticipantId>,
    pub tracks: Vec<TrackInfo>,
}

/// Events the SFU pushes to signaling over `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SfuEvent {
    /// The subscriber connection needs renegotiating: send this offer to the client.
    SubscriberOffer {
        room: RoomId,
        participant_id: ParticipantId,
        offer: SubscriberOffer,
    },
    /// A participant's media connection is up.
    Connected {
        room: RoomId,
        participant_id: ParticipantId,
    },
    TrackPublished {
        room: RoomId,
        track: TrackInfo,
    },
    TrackUnpublished {
        room: RoomId,
        participant_id: ParticipantId,
        track_id: TrackId,
    },
    TrackMuted {
        room: RoomId,
        participant_id: ParticipantId,
        track_id: TrackId,
        muted: bool,
    },
    /// Active speakers, loudest first (empty: nobody speaks).
    Speakers {
        room: RoomId,
        speakers: Vec<SpeakerLevel>,
    },
    /// The simulcast layer a subscriber now receives of a track.
    LayerChanged {
        room: RoomId,
        participant_id: ParticipantId,
        track_id: TrackId,
        layer: Option<Layer>,
    },
    Quality {
        room: RoomId,
        sample: QualitySample,
    },
    /// Dynacast: the layers of one of `participant_id`'s video tracks that its
    /// subscribers want, so the publisher sends these and pauses the rest.
    /// Always the whole set, never a change. A simulcast track names its
    /// layers; a single-layer track counts as one layer, [`Layer::High`]:
    /// `[High]` sends it, `[]` pauses it (nobody watches). Audio and muted
    /// tracks are never paused this way.
    PublisherLayers {
        room: RoomId,
        participant_id: ParticipantId,
        track_id: TrackId,
        /// The publisher's own transceiver `mid` for the track.
        mid: String,
        /// Lowest first.
        active: Vec<Layer>,
    },
    /// The media connection failed or timed out; the session is gone.
    Disconnected {
        room: RoomId,
        participant_id: ParticipantId,
        reason: String,
    },
    /// A message a participant sent on a data channel, relayed to the room.
    Data {
        room: RoomId,
        participant_id: ParticipantId,
        label: String,
        text: String,
    },
}
