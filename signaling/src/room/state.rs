//! The room state machine: who is in a room, their tracks, the lobby, the lock, and
//! the per-room sequence number. Pure: no I/O, time is an argument.
//!
//! Use: call one `handle_*` (it checks the rule and changes the state), then drain
//! [`Room::poll_events`] and deliver what it returns. A store applies a whole
//! handle-then-poll step atomically, so the sequence numbers it hands out are gapless
//! and every replica sees the events in one order.
//!
//! Sequence numbers: an event for everyone ([`Audience::All`]) takes the next `seq`;
//! events for the hosts only or for one participant carry none, so no participant
//! ever sees a gap that is not a real miss.

use proto::ErrorCode;
use proto::ids::{MeetingId, ParticipantId, TrackId, UserId};
use proto::media::{RoomId, TrackInfo};
use proto::sfu::{Quality, SpeakerLevel};
use proto::signal::{ParticipantInfo, ServerMessage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A participant whose signaling replica stopped refreshing them (crashed) for this
/// long is removed by whoever touches the room next.
pub const PRESENCE_TIMEOUT_MS: i64 = 60_000;

/// Who an event is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    All,
    Hosts,
    One(ParticipantId),
}

/// What an event says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventBody {
    /// A message for clients, as is.
    Message(ServerMessage),
    /// For a waiting participant: a host let them in; they may join now.
    Admitted,
    /// For a participant's sessions: the connection `conn` no longer holds the
    /// participant (it resumed on another connection).
    Superseded { conn: Uuid },
}

/// One event of a room, in the order the room produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvent {
    pub room: RoomId,
    pub seq: Option<u64>,
    pub to: Audience,
    pub body: EventBody,
}

/// A participant in the room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub info: ParticipantInfo,
    /// Proves a reconnecting client is this participant.
    pub resume_token: String,
    /// The connection holding the participant now.
    pub conn: Uuid,
    /// `false` during the reconnect grace period.
    pub connected: bool,
    pub disconnected_at_ms: Option<i64>,
    /// Refreshed by the owning replica's heartbeats; see [`PRESENCE_TIMEOUT_MS`].
    pub last_seen_ms: i64,
    #[serde(default)]
    pub quality: Option<Quality>,
}

/// Someone waiting in the lobby.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    pub display_name: String,
    pub user_id: Option<UserId>,
    pub admitted: bool,
    pub last_seen_ms: i64,
}

/// The live state of one room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Room {
    pub id: RoomId,
    pub meeting_id: MeetingId,
    /// The sequence number of the last event sent to everyone.
    pub seq: u64,
    pub locked: bool,
    pub ended: bool,
    pub max_participants: u32,
    /// The SFU node (control URL) the room lives on, chosen at its first join.
    pub node: Option<String>,
    pub participants: BTreeMap<ParticipantId, Member>,
    pub lobby: BTreeMap<ParticipantId, Waiting>,
    /// Current active speakers, loudest first.
    #[serde(default)]
    pub speakers: Vec<ParticipantId>,
    #[serde(skip)]
    pending: Vec<RoomEvent>,
}

/// Why a room refused a change. Each maps to a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("the meeting is locked")]
    Locked,
    #[error("the meeting is full")]
    Full,
    #[error("the meeting has ended")]
    Ended,
    #[error("only a host may do this")]
    NotHost,
    #[error("no such participant")]
    NoParticipant,
    #[error("no such track")]
    NoTrack,
    #[error("cannot resume this session")]
    ResumeFailed,
}

impl RoomError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RoomError::Locked => ErrorCode::MeetingLocked,
            RoomError::Full => ErrorCode::MeetingFull,
            RoomError::Ended => ErrorCode::MeetingEnded,
            RoomError::NotHost => ErrorCode::Forbidden,
            RoomError::NoParticipant => ErrorCode::ParticipantNotFound,
            RoomError::NoTrack => ErrorCode::NotFound,
            RoomError::ResumeFailed => ErrorCode::ResumeFailed,
        }
    }
}

/// Someone asking to enter.
#[derive(Debug, Clone)]
pub struct Entrant {
    pub participant_id: ParticipantId,
    pub display_name: String,
    pub user_id: Option<UserId>,
    pub is_host: bool,
    /// Must wait in the lobby (unless a host already admitted them).
    pub lobby: bool,
    pub conn: Uuid,
    pub resume_token: String,
}

/// What became of an entrant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Joined,
    Waiting,
}

impl Room {
    pub fn new(id: RoomId, meeting_id: MeetingId, max_participants: u32) -> Self {
        Self {
            id,
            meeting_id,
            seq: 0,
            locked: false,
            ended: false,
            max_participants,
            node: None,
            participants: BTreeMap::new(),
            lobby: BTreeMap::new(),
            speakers: Vec::new(),
            pending: Vec::new(),
        }
    }

    // --- getters ---

    /// Nobody is in the room or waiting for it: the store may forget it.
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty() && self.lobby.is_empty()
    }

    pub fn is_host(&self, participant: ParticipantId) -> bool {
        self.participants
            .get(&participant)
            .is_some_and(|m| m.info.is_host)
    }

    /// Everyone in the room, as clients see them.
    pub fn roster(&self) -> Vec<ParticipantInfo> {
        self.participants.values().map(|m| m.info.clone()).collect()
    }

    // --- handlers ---

    /// Someone enters: into the room, or the lobby.
    pub fn handle_enter(&mut self, who: Entrant, now_ms: i64) -> Result<Entry, RoomError> {
        if self.ended {
            return Err(RoomError::Ended);
        }
        if let Some(member) = self.participants.get_mut(&who.participant_id) {
            // The same participant joining again (a reload): the new connection takes over.
            let old = std::mem::replace(&mut member.conn, who.conn);
            member.connected = true;
            member.disconnected_at_ms = None;
            member.last_seen_ms = now_ms;
            member.resume_token = who.resume_token;
            self.push(
                Audience::One(who.participant_id),
                EventBody::Superseded { conn: old },
            );
            return Ok(Entry::Joined);
        }
        let admitted = self
            .lobby
            .get(&who.participant_id)
            .is_some_and(|w| w.admitted);
        if !who.is_host && !admitted {
            if self.locked {
                return Err(RoomError::Locked);
            }
            if who.lobby {
                let fresh = !self.lobby.contains_key(&who.participant_id);
                self.lobby.insert(
                    who.participant_id,
                    Waiting {
                        display_name: who.display_name.clone(),
                        user_id: who.user_id,
                        admitted: false,
                        last_seen_ms: now_ms,
                    },
                );
                if fresh {
                    self.push(
                        Audience::Hosts,
                        EventBody::Message(ServerMessage::LobbyRequest {
                            participant_id: who.participant_id,
                            display_name: who.display_name,
                        }),
                    );
                }
                return Ok(Entry::Waiting);
            }
        }
        if self.participants.len() >= self.max_participants as usize {
            return Err(RoomError::Full);
        }
        self.lobby.remove(&who.participant_id);
        let info = ParticipantInfo {
            participant_id: who.participant_id,
            display_name: who.display_name,
            user_id: who.user_id,
            is_host: who.is_host,
            tracks: Vec::new(),
        };
        self.participants.insert(
            who.participant_id,
            Member {
                info: info.clone(),
                resume_token: who.resume_token,
                conn: who.conn,
                connected: true,
                disconnected_at_ms: None,
                last_seen_ms: now_ms,
                quality: None,
            },
        );
        self.emit(ServerMessage::ParticipantJoined { participant: info });
        Ok(Entry::Joined)
    }

    /// A reconnecting client takes its participant over on connection `conn`.
    pub fn handle_resume(
        &mut self,
        participant: ParticipantId,
        resume_token: &str,
        conn: Uuid,
        now_ms: i64,
    ) -> Result<(), RoomError> {
        if self.ended {
            return Err(RoomError::Ended);
        }
        let member = self
            .participants
            .get_mut(&participant)
            .filter(|m| constant_time_eq(m.resume_token.as_bytes(), resume_token.as_bytes()))
            .ok_or(RoomError::ResumeFailed)?;
        let old = std::mem::replace(&mut member.conn, conn);
        member.connected = true;
        member.disconnected_at_ms = None;
        member.last_seen_ms = now_ms;
        self.push(
            Audience::One(participant),
            EventBody::Superseded { conn: old },
        );
        Ok(())
    }

    /// The socket of `conn` dropped: the grace period starts. No one is told.
    pub fn handle_disconnect(&mut self, participant: ParticipantId, conn: Uuid, now_ms: i64) {
        if let Some(member) = self.participants.get_mut(&participant)
            && member.conn == conn
        {
            member.connected = false;
            member.disconnected_at_ms = Some(now_ms);
        }
    }

    /// The owning replica's periodic refresh.
    pub fn handle_heartbeat(&mut self, participant: ParticipantId, now_ms: i64) {
        if let Some(member) = self.participants.get_mut(&participant) {
            member.last_seen_ms = now_ms;
        }
        if let Some(waiting) = self.lobby.get_mut(&participant) {
            waiting.last_seen_ms = now_ms;
        }
    }

    /// `participant` leaves for good. With `conn`, only if that connection still holds
    /// it (a grace timer must not remove a participant that resumed elsewhere).
    /// Returns whether they were removed.
    pub fn handle_leave(
        &mut self,
        participant: ParticipantId,
        conn: Option<Uuid>,
        reason: &str,
    ) -> bool {
        if self.lobby.remove(&participant).is_some() {
            return true;
        }
        let holds = self
            .participants
            .get(&participant)
            .is_some_and(|m| conn.is_none_or(|c| c == m.conn));
        if !holds {
            return false;
        }
        self.participants.remove(&participant);
        self.speakers.retain(|p| *p != participant);
        self.emit(ServerMessage::ParticipantLeft {
            participant_id: participant,
            reason: reason.to_owned(),
        });
        true
    }

    fn require_host(&self, host: ParticipantId) -> Result<(), RoomError> {
        if self.is_host(host) {
            Ok(())
        } else {
            Err(RoomError::NotHost)
        }
    }

    /// A host admits or denies someone in the lobby.
    pub fn handle_admit(
        &mut self,
        host: ParticipantId,
        participant: ParticipantId,
        admit: bool,
    ) -> Result<(), RoomError> {
        self.require_host(host)?;
        if !self.lobby.contains_key(&participant) {
            return Err(RoomError::NoParticipant);
        }
        if admit {
            if let Some(waiting) = self.lobby.get_mut(&participant) {
                waiting.admitted = true;
            }
            self.push(Audience::One(participant), EventBody::Admitted);
        } else {
            self.lobby.remove(&participant);
            self.push(
                Audience::One(participant),
                EventBody::Message(ServerMessage::Removed {
                    reason: "denied".to_owned(),
                }),
            );
        }
        Ok(())
    }

    pub fn handle_lock(&mut self, host: ParticipantId, locked: bool) -> Result<(), RoomError> {
        self.require_host(host)?;
        if self.locked != locked {
            self.locked = locked;
            self.emit(ServerMessage::RoomLocked { locked });
        }
        Ok(())
    }

    /// A host removes someone (from the room or the lobby).
    pub fn handle_remove(
        &mut self,
        host: ParticipantId,
        participant: ParticipantId,
    ) -> Result<(), RoomError> {
        self.require_host(host)?;
        if self.lobby.remove(&participant).is_some() {
            self.push(
                Audience::One(participant),
                EventBody::Message(ServerMessage::Removed {
                    reason: "denied".to_owned(),
                }),
            );
            return Ok(());
        }
        if !self.handle_leave(participant, None, "removed") {
            return Err(RoomError::NoParticipant);
        }
        Ok(())
    }

    /// A host ends the meeting for everyone.
    pub fn handle_end(&mut self, host: ParticipantId) -> Result<(), RoomError> {
        self.require_host(host)?;
        self.ended = true;
        self.emit(ServerMessage::MeetingEnded);
        for participant in std::mem::take(&mut self.lobby).into_keys() {
            self.push(
                Audience::One(participant),
                EventBody::Message(ServerMessage::Removed {
                    reason: "meeting_ended".to_owned(),
                }),
            );
        }
        self.participants.clear();
        Ok(())
    }

    /// The meeting was cancelled or ended from outside the room (REST): end it.
    pub fn handle_cancel(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.emit(ServerMessage::MeetingEnded);
        for participant in std::mem::take(&mut self.lobby).into_keys() {
            self.push(
                Audience::One(participant),
                EventBody::Message(ServerMessage::Removed {
                    reason: "meeting_ended".to_owned(),
                }),
            );
        }
        self.participants.clear();
    }

    /// A track's mute state (set by its owner, or by a host).
    pub fn handle_track_muted(
        &mut self,
        participant: ParticipantId,
        track: TrackId,
        muted: bool,
    ) -> Result<(), RoomError> {
        let member = self
            .participants
            .get_mut(&participant)
            .ok_or(RoomError::NoParticipant)?;
        let info = member
            .info
            .tracks
            .iter_mut()
            .find(|t| t.track_id == track)
            .ok_or(RoomError::NoTrack)?;
        if info.muted != muted {
            info.muted = muted;
            self.emit(ServerMessage::TrackMuted {
                participant_id: participant,
                track_id: track,
                muted,
            });
        }
        Ok(())
    }

    pub fn handle_track_published(&mut self, track: TrackInfo) -> Result<(), RoomError> {
        let member = self
            .participants
            .get_mut(&track.participant_id)
            .ok_or(RoomError::NoParticipant)?;
        match member
            .info
            .tracks
            .iter_mut()
            .find(|t| t.track_id == track.track_id)
        {
            Some(existing) if *existing == track => return Ok(()),
            Some(existing) => *existing = track.clone(),
            None => member.info.tracks.push(track.clone()),
        }
        self.emit(ServerMessage::TrackPublished { track });
        Ok(())
    }

    pub fn handle_track_unpublished(&mut self, participant: ParticipantId, track: TrackId) {
        let Some(member) = self.participants.get_mut(&participant) else {
            return;
        };
        let before = member.info.tracks.len();
        member.info.tracks.retain(|t| t.track_id != track);
        if member.info.tracks.len() != before {
            self.emit(ServerMessage::TrackUnpublished {
                participant_id: participant,
                track_id: track,
            });
        }
    }

    /// Active speakers; told to the room when who speaks (not how loud) changes.
    pub fn handle_speakers(&mut self, speakers: Vec<SpeakerLevel>) {
        let speakers: Vec<SpeakerLevel> = speakers
            .into_iter()
            .filter(|s| self.participants.contains_key(&s.participant_id))
            .collect();
        let ids: Vec<ParticipantId> = speakers.iter().map(|s| s.participant_id).collect();
        if ids != self.speakers {
            self.speakers = ids;
            self.emit(ServerMessage::Speakers { speakers });
        }
    }

    pub fn handle_quality(&mut self, participant: ParticipantId, quality: Quality) {
        let Some(member) = self.participants.get_mut(&participant) else {
            return;
        };
        if member.quality != Some(quality) {
            member.quality = Some(quality);
            self.emit(ServerMessage::Quality {
                participant_id: participant,
                quality,
            });
        }
    }

    pub fn handle_chat(
        &mut self,
        participant: ParticipantId,
        text: String,
        now_ms: i64,
    ) -> Result<(), RoomError> {
        let member = self
            .participants
            .get(&participant)
            .ok_or(RoomError::NoParticipant)?;
        let display_name = member.info.display_name.clone();
        self.emit(ServerMessage::Chat {
            participant_id: participant,
            display_name,
            text,
            sent_at_ms: now_ms,
        });
        Ok(())
    }

    /// Remove whoever stopped being refreshed (their replica died) or whose grace
    /// period (`grace_ms`) is over while nobody was there to end it.
    pub fn handle_expiry(&mut self, now_ms: i64, grace_ms: i64) {
        let stale: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, m)| {
                now_ms - m.last_seen_ms > PRESENCE_TIMEOUT_MS
                    || m.disconnected_at_ms
                        .is_some_and(|at| now_ms - at > grace_ms + PRESENCE_TIMEOUT_MS / 2)
            })
            .map(|(id, _)| *id)
            .collect();
        for participant in stale {
            self.handle_leave(participant, None, "timeout");
        }
        self.lobby
            .retain(|_, w| now_ms - w.last_seen_ms <= PRESENCE_TIMEOUT_MS);
    }

    // --- pollers ---

    /// The events produced since the last poll, in order. Drain after every handler.
    pub fn poll_events(&mut self) -> Vec<RoomEvent> {
        std::mem::take(&mut self.pending)
    }

    // --- internals ---

    fn emit(&mut self, message: ServerMessage) {
        self.seq += 1;
        self.pending.push(RoomEvent {
            room: self.id.clone(),
            seq: Some(self.seq),
            to: Audience::All,
            body: EventBody::Message(message),
        });
    }

    fn push(&mut self, to: Audience, body: EventBody) {
        self.pending.push(RoomEvent {
            room: self.id.clone(),
            seq: None,
            to,
            body,
        });
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::media::{TrackKind, TrackSource};

    fn room() -> Room {
        Room::new(RoomId::parse("r").unwrap(), MeetingId::new(), 3)
    }

    fn entrant(is_host: bool, lobby: bool) -> Entrant {
        Entrant {
            participant_id: ParticipantId::new(),
            display_name: "P".into(),
            user_id: None,
            is_host,
            lobby,
            conn: Uuid::new_v4(),
            resume_token: "secret".into(),
        }
    }

    fn messages(events: &[RoomEvent]) -> Vec<(Option<u64>, &ServerMessage)> {
        events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Message(m) => Some((e.seq, m)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn room_events_carry_gapless_sequence_numbers() {
        let mut room = room();
        let host = entrant(true, false);
        room.handle_enter(host.clone(), 0).unwrap();
        room.handle_lock(host.participant_id, true).unwrap();
        room.handle_lock(host.participant_id, true).unwrap(); // no change, no event
        room.handle_chat(host.participant_id, "hi".into(), 1)
            .unwrap();
        let events = room.poll_events();
        let seqs: Vec<_> = messages(&events).iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![Some(1), Some(2), Some(3)]);
        assert!(room.poll_events().is_empty());
    }

    #[test]
    fn the_lobby_holds_guests_until_a_host_admits_them() {
        let mut room = room();
        let host = entrant(true, true);
        let guest = entrant(false, true);
        assert_eq!(room.handle_enter(host.clone(), 0), Ok(Entry::Joined));
        assert_eq!(room.handle_enter(guest.clone(), 0), Ok(Entry::Waiting));
        let events = room.poll_events();
        let last = events.last().unwrap();
        assert_eq!(last.to, Audience::Hosts);
        assert_eq!(last.seq, None);
        assert_eq!(
            room.handle_admit(guest.participant_id, guest.participant_id, true),
            Err(RoomError::NotHost)
        );
        room.handle_admit(host.participant_id, guest.participant_id, true)
            .unwrap();
        assert_eq!(room.poll_events()[0].body, EventBody::Admitted);
        assert_eq!(room.handle_enter(guest, 0), Ok(Entry::Joined));
        assert_eq!(room.participants.len(), 2);
        assert!(room.lobby.is_empty());
    }

    #[test]
    fn locked_and_full_rooms_refuse_newcomers_but_not_hosts() {
        let mut room = room();
        let host = entrant(true, false);
        room.handle_enter(host.clone(), 0).unwrap();
        room.handle_lock(host.participant_id, true).unwrap();
        assert_eq!(
            room.handle_enter(entrant(false, false), 0),
            Err(RoomError::Locked)
        );
        room.handle_lock(host.participant_id, false).unwrap();
        room.handle_enter(entrant(false, false), 0).unwrap();
        room.handle_enter(entrant(false, false), 0).unwrap();
        assert_eq!(
            room.handle_enter(entrant(false, false), 0),
            Err(RoomError::Full)
        );
    }

    #[test]
    fn a_resume_needs_the_resume_token_and_supersedes_the_old_connection() {
        let mut room = room();
        let who = entrant(false, false);
        room.handle_enter(who.clone(), 0).unwrap();
        room.handle_disconnect(who.participant_id, who.conn, 10);
        assert!(!room.participants[&who.participant_id].connected);
        let conn = Uuid::new_v4();
        assert_eq!(
            room.handle_resume(who.participant_id, "wrong", conn, 20),
            Err(RoomError::ResumeFailed)
        );
        room.poll_events();
        room.handle_resume(who.participant_id, "secret", conn, 20)
            .unwrap();
        assert_eq!(
            room.poll_events()[0].body,
            EventBody::Superseded { conn: who.conn }
        );
        // The old connection's grace timer must not remove the resumed participant.
        assert!(!room.handle_leave(who.participant_id, Some(who.conn), "timeout"));
        assert!(room.handle_leave(who.participant_id, Some(conn), "left"));
    }

    #[test]
    fn tracks_and_mutes_are_announced_once() {
        let mut room = room();
        let who = entrant(false, false);
        room.handle_enter(who.clone(), 0).unwrap();
        room.poll_events();
        let track = TrackInfo {
            track_id: TrackId::new(),
            participant_id: who.participant_id,
            kind: TrackKind::Audio,
            source: TrackSource::Microphone,
            layers: vec![],
            muted: false,
        };
        room.handle_track_published(track.clone()).unwrap();
        room.handle_track_published(track.clone()).unwrap();
        room.handle_track_muted(who.participant_id, track.track_id, true)
            .unwrap();
        room.handle_track_muted(who.participant_id, track.track_id, true)
            .unwrap();
        assert_eq!(room.poll_events().len(), 2);
        assert_eq!(
            room.handle_track_muted(who.participant_id, TrackId::new(), true),
            Err(RoomError::NoTrack)
        );
    }

    #[test]
    fn participants_whose_replica_died_expire() {
        let mut room = room();
        let who = entrant(false, false);
        room.handle_enter(who.clone(), 0).unwrap();
        room.poll_events();
        room.handle_expiry(PRESENCE_TIMEOUT_MS, 20_000);
        assert_eq!(room.participants.len(), 1);
        room.handle_expiry(PRESENCE_TIMEOUT_MS + 1, 20_000);
        assert!(room.is_empty());
        assert!(matches!(
            &room.poll_events()[0].body,
            EventBody::Message(ServerMessage::ParticipantLeft { reason, .. }) if reason == "timeout"
        ));
    }

    #[test]
    fn ending_the_meeting_empties_the_room_and_refuses_newcomers() {
        let mut room = room();
        let host = entrant(true, false);
        room.handle_enter(host.clone(), 0).unwrap();
        room.handle_enter(entrant(false, false), 0).unwrap();
        assert_eq!(
            room.handle_end(
                room.participants
                    .keys()
                    .copied()
                    .find(|p| *p != host.participant_id)
                    .unwrap()
            ),
            Err(RoomError::NotHost)
        );
        room.handle_end(host.participant_id).unwrap();
        assert!(room.is_empty());
        assert_eq!(
            room.handle_enter(entrant(true, false), 0),
            Err(RoomError::Ended)
        );
    }
}
