//! Media vocabulary shared by the SFU, signaling and clients.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A room on an SFU node. Signaling uses the meeting id's text; the SFU only
/// needs it to be a short, safe token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId(String);

impl RoomId {
    pub const MAX_LEN: usize = 64;

    /// 1–64 characters of `[A-Za-z0-9_-]`.
    pub fn parse(value: impl Into<String>) -> Result<RoomId, InvalidRoomId> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(RoomId(value))
        } else {
            Err(InvalidRoomId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RoomId {
    type Error = InvalidRoomId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        RoomId::parse(value)
    }
}

impl From<RoomId> for String {
    fn from(value: RoomId) -> Self {
        value.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a room id is 1-64 characters of A-Z, a-z, 0-9, '-' and '_'")]
pub struct InvalidRoomId;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

/// What a track carries, as the person sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    ScreenShare,
    ScreenShareAudio,
}

impl TrackSource {
    pub fn kind(self) -> TrackKind {
        match self {
            TrackSource::Camera | TrackSource::ScreenShare => TrackKind::Video,
            TrackSource::Microphone | TrackSource::ScreenShareAudio => TrackKind::Audio,
        }
    }
}

/// A simulcast layer, lowest to highest. Browsers name them by RID; MeetEase
/// clients use `q` (quarter), `h` (half) and `f` (full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Low,
    Medium,
    High,
}

impl Layer {
    pub const ALL: [Layer; 3] = [Layer::Low, Layer::Medium, Layer::High];

    /// The RID MeetEase clients give this layer.
    pub fn rid(self) -> &'static str {
        match self {
            Layer::Low => "q",
            Layer::Medium => "h",
            Layer::High => "f",
        }
    }

    pub fn from_rid(rid: &str) -> Option<Layer> {
        match rid {
            "q" | "l" | "0" => Some(Layer::Low),
            "h" | "m" | "1" => Some(Layer::Medium),
            "f" | "2" => Some(Layer::High),
            _ => None,
        }
    }

    /// The layer that fits a video element of `height` pixels, assuming the
    /// usual 1/4, 1/2, full scaling of a 720p camera.
    pub fn for_height(height: u32) -> Layer {
        match height {
            0..=240 => Layer::Low,
            241..=480 => Layer::Medium,
            _ => Layer::High,
        }
    }
}

/// A track as announced to the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub track_id: crate::ids::TrackId,
    pub participant_id: crate::ids::ParticipantId,
    pub kind: TrackKind,
    pub source: TrackSource,
    /// Simulcast layers the publisher sends (empty: a single layer).
    #[serde(default)]
    pub layers: Vec<Layer>,
    #[serde(default)]
    pub muted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_short_safe_tokens() {
        assert!(RoomId::parse("abc-DEF_123").is_ok());
        assert!(RoomId::parse("").is_err());
        assert!(RoomId::parse("a".repeat(65)).is_err());
        assert!(RoomId::parse("a/b").is_err());
        assert!(serde_json::from_str::<RoomId>("\"../etc\"").is_err());
    }

    #[test]
    fn layers_map_from_rids_and_sizes() {
        for layer in Layer::ALL {
            assert_eq!(Layer::from_rid(layer.rid()), Some(layer));
        }
        assert_eq!(Layer::from_rid("x"), None);
        assert_eq!(Layer::for_height(180), Layer::Low);
        assert_eq!(Layer::for_height(360), Layer::Medium);
        assert_eq!(Layer::for_height(720), Layer::High);
    }
}
