//! The signaling WebSocket (`GET /rtc`): one session per connection.
//!
//! [`run_session`] holds the whole protocol and is generic over a `Sink` of
//! [`Outbound`] and a `Stream` of [`Inbound`], so tests drive it with channels; the
//! axum handler only adapts WebSocket frames to those two types. The protocol is
//! described in `docs/protocol.md`.
//!
//! A session goes: waiting for `join` → (lobby) → joined → gone. When the socket drops
//! without a `leave`, the participant stays in the room, silently, for the reconnect
//! grace period; a client that presents its `resume_token` in that time takes it over
//! (same participant id, ICE restart on the SFU). After it, the participant is
//! removed and the room is told.

use crate::live::{Direct, Live, update_error};
use crate::meetings::store as meetings;
use crate::room::{Audience, Entrant, EventBody, Room, RoomEvent};
use crate::{AppState, clock};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use proto::ErrorCode;
use proto::ids::ParticipantId;
use proto::media::RoomId;
use proto::room_token::RoomClaims;
use proto::sfu::{
    CreateSession, MuteTrack, PublisherOffer, RemoteCandidate, SessionCreated, SetSubscription,
    SfuEvent, SubscriberAnswer, TrackDeclaration,
};
use proto::signal::{
    ClientEnvelope, ClientMessage, MAX_CLIENT_MESSAGE, PROTOCOL_VERSION, ServerEnvelope,
    ServerMessage,
};
use rand::RngCore;
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use uuid::Uuid;

/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 2000;
/// Frames larger than this are refused by the WebSocket layer itself (the socket
/// closes with 1009); between [`MAX_CLIENT_MESSAGE`] and this, the client gets a
/// `payload_too_large` error and the session goes on.
pub const MAX_FRAME: usize = 1024 * 1024;
/// Dropped (rate-limited) messages after which the connection is closed.
const MAX_DROPPED: u32 = 500;

/// Close codes the server uses.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
}

/// A frame from the client, as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Text(String),
    /// A binary frame (not part of the protocol).
    Binary,
    /// A WebSocket ping or pong: the client is alive.
    Alive,
    /// The frame exceeded [`MAX_FRAME`]; the socket cannot go on.
    TooLarge,
}

/// A frame to the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Message(ServerEnvelope),
    Ping,
    Close(u16, String),
}

#[derive(Debug, Deserialize)]
pub struct RtcQuery {
    /// The room the client means to join; a token for another room is refused.
    #[serde(default)]
    room: Option<String>,
}

pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<RtcQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return servicekit::ApiError::new(
            ErrorCode::MalformedBody,
            "this is a WebSocket endpoint: connect with a WebSocket upgrade",
        )
        .into_response();
    };
    let live = state.live.clone();
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| serve_socket(live, socket, query.room))
}

async fn serve_socket(live: Live, socket: WebSocket, room: Option<String>) {
    let (sink, stream) = socket.split();
    let sink = sink.with(|out: Outbound| async move {
        Ok::<_, axum::Error>(match out {
            Outbound::Message(envelope) => {
                // Server messages are plain data: serialising cannot fail.
                Message::Text(serde_json::to_string(&envelope).unwrap_or_default().into())
            }
            Outbound::Ping => Message::Ping(Default::default()),
            Outbound::Close(code, reason) => Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })),
        })
    });
    let stream = stream
        .take_while(|frame| {
            let go_on = !matches!(frame, Ok(Message::Close(_)));
            async move { go_on }
        })
        .map(|frame| match frame {
            Ok(Message::Text(text)) => Inbound::Text(text.as_str().to_owned()),
            Ok(Message::Binary(_)) => Inbound::Binary,
            Ok(_) => Inbound::Alive,
            Err(_) => Inbound::TooLarge,
        });
    run_session(live, Box::pin(sink), Box::pin(stream), room).await;
}

/// Why a joined session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Exit {
    /// The client said `leave`.
    Left,
    /// Removed by a host, timed out, the media connection failed, or the meeting ended.
    Gone,
    /// Another connection took the participant over.
    Superseded,
    /// The socket dropped (or fell behind): the grace period starts.
    Dropped,
    /// The server is shutting down.
    Shutdown,
}

struct Conn<Tx> {
    tx: Tx,
    metrics: crate::live::RtcMetrics,
    open: bool,
    last_activity: Instant,
    tokens: f64,
    refilled: Instant,
    dropped: u32,
    last_limit_notice: Option<Instant>,
    rate: f64,
    burst: f64,
}

impl<Tx: Sink<Outbound> + Unpin> Conn<Tx> {
    async fn out(&mut self, frame: Outbound) {
        if self.open && self.tx.send(frame).await.is_err() {
            self.open = false;
        }
    }

    async fn send(&mut self, message: ServerMessage) {
        self.send_seq(None, message).await;
    }

    async fn send_seq(&mut self, seq: Option<u64>, message: ServerMessage) {
        let envelope = ServerEnvelope {
            v: PROTOCOL_VERSION,
            seq,
            message,
        };
        self.out(Outbound::Message(envelope)).await;
    }

    async fn error(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.metrics
            .errors
            .get_or_create(&crate::live::CodeLabel {
                code: code.as_str().to_owned(),
            })
            .inc();
        self.send(ServerMessage::Error {
            code: code.as_str().to_owned(),
            message: message.into(),
        })
        .await;
    }

    async fn close(&mut self, code: u16, reason: &str) {
        self.out(Outbound::Close(code, reason.to_owned())).await;
        self.open = false;
    }

    /// Token bucket: `true` if this message may be handled.
    fn admit(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// Handle a frame that is not a message to act on; returns the text to parse.
    async fn screen(&mut self, frame: Option<Inbound>) -> Screened {
        self.last_activity = Instant::now();
        let text = match frame {
            None => return Screened::Closed,
            Some(Inbound::Alive) => return Screened::Skip,
            Some(Inbound::TooLarge) => {
                self.error(ErrorCode::PayloadTooLarge, "message too large")
                    .await;
                self.close(close::TOO_BIG, "message too large").await;
                return Screened::Closed;
            }
            Some(Inbound::Binary) => None,
            Some(Inbound::Text(text)) => Some(text),
        };
        if !self.admit() {
            if self.dropped > MAX_DROPPED {
                self.error(ErrorCode::RateLimited, "too many messages")
                    .await;
                self.close(close::POLICY, "too many messages").await;
                return Screened::Closed;
            }
            let now = Instant::now();
            if self
                .last_limit_notice
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
            {
                self.last_limit_notice = Some(now);
                self.error(
                    ErrorCode::RateLimited,
                    "too many messages; some were dropped",
                )
                .await;
            }
            return Screened::Skip;
        }
        let Some(text) = text else {
            self.error(
                ErrorCode::MalformedMessage,
                "binary frames are not part of the protocol",
            )
            .await;
            return Screened::Skip;
        };
        match parse(&text) {
            Ok(message) => Screened::Message(Box::new(message)),
            Err((code, message)) => {
                self.error(code, message).await;
                Screened::Skip
            }
        }
    }
}

enum Screened {
    Message(Box<ClientMessage>),
    Skip,
    Closed,
}

const KNOWN_TYPES: &[&str] = &[
    "join",
    "publish_offer",
    "subscriber_answer",
    "candidate",
    "subscribe",
    "mute",
    "chat",
    "host_mute",
    "host_remove",
    "host_lock",
    "host_admit",
    "host_end_meeting",
    "ping",
    "leave",
];

/// Parse one client message, telling apart the ways it can be wrong.
pub fn parse(text: &str) -> Result<ClientMessage, (ErrorCode, String)> {
    if text.len() > MAX_CLIENT_MESSAGE {
        return Err((
            ErrorCode::PayloadTooLarge,
            format!("messages are at most {MAX_CLIENT_MESSAGE} bytes"),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| (ErrorCode::MalformedMessage, "not a JSON message".to_owned()))?;
    let Some(v) = value.get("v").and_then(serde_json::Value::as_u64) else {
        return Err((
            ErrorCode::MalformedMessage,
            "missing protocol version `v`".to_owned(),
        ));
    };
    if v != u64::from(PROTOCOL_VERSION) {
        return Err((
            ErrorCode::UnsupportedProtocolVersion,
            format!("this server speaks version {PROTOCOL_VERSION}"),
        ));
    }
    let Some(kind) = value
        .get("type")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
    else {
        return Err((
            ErrorCode::MalformedMessage,
            "missing message `type`".to_owned(),
        ));
    };
    if !KNOWN_TYPES.contains(&kind.as_str()) {
        return Err((
            ErrorCode::UnknownMessageType,
            "unknown message type".to_owned(),
        ));
    }
    serde_json::from_value::<ClientEnvelope>(value)
        .map(|envelope| envelope.message)
        .map_err(|err| {
            let detail: String = err.to_string().chars().take(160).collect();
            (
                ErrorCode::MalformedMessage,
                format!("bad `{kind}` message: {detail}"),
            )
        })
}

/// What a joined session knows about itself.
struct Me {
    claims: RoomClaims,
    room: RoomId,
    conn: Uuid,
    node: String,
    /// Room events up to this `seq` were in the `joined` snapshot.
    seen_seq: u64,
}

impl Me {
    fn id(&self) -> ParticipantId {
        self.claims.participant_id
    }
}

/// The join request, as sent.
struct JoinAsk {
    token: String,
    auto_subscribe: bool,
    data_channel: bool,
    publisher_offer: String,
    tracks: Vec<TrackDeclaration>,
    resume: Option<String>,
}

/// Serve one connection until it ends (and, after a drop, until the grace period is over).
pub async fn run_session<Tx, Rx>(live: Live, tx: Tx, mut rx: Rx, wanted_room: Option<String>)
where
    Tx: Sink<Outbound> + Unpin + Send,
    Rx: Stream<Item = Inbound> + Unpin + Send,
{
    let options = live.options().clone();
    let metrics = live.metrics().clone();
    metrics.sockets.inc();
    let _open = scopeguard(metrics.clone());
    let mut conn = Conn {
        tx,
        metrics,
        open: true,
        last_activity: Instant::now(),
        tokens: options.burst,
        refilled: Instant::now(),
        dropped: 0,
        last_limit_notice: None,
        rate: options.rate_per_sec,
        burst: options.burst,
    };
    let deadline = Instant::now() + options.join_timeout;
    // Waiting for `join`.
    let (me, mut events) = loop {
        let frame = tokio::select! {
            frame = rx.next() => frame,
            _ = tokio::time::sleep_until(deadline) => {
                conn.error(ErrorCode::UnexpectedMessage, "no join in time").await;
                conn.close(close::POLICY, "no join in time").await;
                return;
            }
            _ = live.shutdown().cancelled() => {
                conn.close(close::GOING_AWAY, "server shutting down").await;
                return;
            }
        };
        let message = match conn.screen(frame).await {
            Screened::Closed => return,
            Screened::Skip => continue,
            Screened::Message(message) => *message,
        };
        match message {
            ClientMessage::Join {
                token,
                publisher_offer,
                tracks,
                resume,
                auto_subscribe,
                data_channel,
            } => {
                let ask = JoinAsk {
                    token,
                    auto_subscribe: auto_subscribe.unwrap_or(true),
                    data_channel: data_channel.unwrap_or(true),
                    publisher_offer,
                    tracks,
                    resume,
                };
                match join(&live, &mut conn, &mut rx, ask, wanted_room.as_deref()).await {
                    JoinOutcome::Joined(me, events) => break (*me, events),
                    JoinOutcome::Retry => continue,
                    JoinOutcome::Over => return,
                }
            }
            ClientMessage::Ping => conn.send(ServerMessage::Pong).await,
            ClientMessage::Leave => {
                conn.close(close::NORMAL, "bye").await;
                return;
            }
            _ => conn.error(ErrorCode::UnexpectedMessage, "join first").await,
        }
    };
    live.metrics().joins.inc();
    let direct = live.register(me.id(), me.room.clone(), me.conn);
    let exit = joined(&live, &mut conn, &mut rx, &me, &mut events, &direct).await;
    match exit {
        Exit::Left => {
            leave(&live, &me, "left").await;
            conn.close(close::NORMAL, "bye").await;
        }
        Exit::Gone => {
            record_left(&live, &me, "removed", false).await;
            let _ = live.sfu().delete_session(&me.node, me.id()).await;
            conn.close(close::NORMAL, "removed").await;
        }
        Exit::Superseded => conn.close(close::NORMAL, "resumed elsewhere").await,
        Exit::Shutdown => conn.close(close::GOING_AWAY, "server shutting down").await,
        Exit::Dropped => {
            conn.close(close::INTERNAL, "connection lost; resume to continue")
                .await;
            // Let the socket go now: the grace period waits for a resume on
            // another connection, and must not hold this one open.
            drop(conn);
            drop(rx);
            grace(&live, &me, &mut events).await;
        }
    }
    live.unregister(me.id(), me.conn);
}

/// Counts the socket as closed when the session ends, however it ends.
struct SocketGuard(crate::live::RtcMetrics);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.sockets.dec();
    }
}

fn scopeguard(metrics: crate::live::RtcMetrics) -> SocketGuard {
    SocketGuard(metrics)
}

enum JoinOutcome {
    Joined(Box<Me>, tokio::sync::broadcast::Receiver<RoomEvent>),
    /// The join failed; the client may try again on this socket.
    Retry,
    /// The connection is over.
    Over,
}

fn resume_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn join<Tx, Rx>(
    live: &Live,
    conn: &mut Conn<Tx>,
    rx: &mut Rx,
    ask: JoinAsk,
    wanted_room: Option<&str>,
) -> JoinOutcome
where
    Tx: Sink<Outbound> + Unpin + Send,
    Rx: Stream<Item = Inbound> + Unpin + Send,
{
    let claims = match live.tokens().verify(&ask.token, ask.resume.is_some()) {
        Ok(claims) => claims,
        Err(crate::room_token::RoomTokenError::Expired) => {
            conn.error(
                ErrorCode::InvalidRoomToken,
                "the room token has expired; join again",
            )
            .await;
            return JoinOutcome::Retry;
        }
        Err(_) => {
            conn.error(ErrorCode::InvalidRoomToken, "invalid room token")
                .await;
            return JoinOutcome::Retry;
        }
    };
    let room = claims.room.clone();
    if wanted_room.is_some_and(|w| w != room.as_str())
        || room.as_str() != claims.meeting_id.to_string()
    {
        conn.error(ErrorCode::WrongRoom, "this token is for another room")
            .await;
        return JoinOutcome::Retry;
    }
    if let Some(track) = ask
        .tracks
        .iter()
        .find(|t| !claims.grants.can_publish.contains(&t.source))
    {
        conn.error(
            ErrorCode::PublishNotAllowed,
            format!("you may not publish {:?}", track.source).to_lowercase(),
        )
        .await;
        return JoinOutcome::Retry;
    }
    let meeting = match meetings::get(live.db(), claims.meeting_id).await {
        Ok(Some(meeting)) => meeting,
        Ok(None) => {
            conn.error(ErrorCode::MeetingNotFound, "no such meeting")
                .await;
            return JoinOutcome::Retry;
        }
        Err(err) => {
            tracing::warn!(%err, "cannot read the meeting");
            conn.error(ErrorCode::ServiceUnavailable, "try again").await;
            return JoinOutcome::Retry;
        }
    };
    if !meeting.joinable() {
        conn.error(ErrorCode::MeetingEnded, "the meeting has ended")
            .await;
        conn.close(close::NORMAL, "meeting ended").await;
        return JoinOutcome::Over;
    }
    // Subscribe before changing the room, so no event after the snapshot is missed.
    let mut events = match live.subscribe(&room).await {
        Ok(events) => events,
        Err(_) => {
            conn.error(
                ErrorCode::ServiceUnavailable,
                "room state temporarily unavailable",
            )
            .await;
            return JoinOutcome::Retry;
        }
    };
    let conn_id = Uuid::new_v4();
    if let Some(resume) = ask.resume.clone() {
        return resume_session(live, conn, claims, room, conn_id, &resume, ask, events).await;
    }
    let existing = match live.room(&room).await {
        Ok(existing) => existing,
        Err(_) => {
            conn.error(
                ErrorCode::ServiceUnavailable,
                "room state temporarily unavailable",
            )
            .await;
            return JoinOutcome::Retry;
        }
    };
    let node = match live.choose_node(existing.as_ref()).await {
        Ok(node) => node,
        Err(err) => {
            conn.error(err.code, err.message.to_string()).await;
            return JoinOutcome::Retry;
        }
    };
    let entrant = Entrant {
        participant_id: claims.participant_id,
        display_name: claims.display_name.clone(),
        user_id: claims.identity.user_id(),
        is_host: claims.grants.is_host,
        lobby: claims.lobby,
        conn: conn_id,
        resume_token: resume_token(),
    };
    let max = meeting.settings.max_participants;
    let meeting_id = meeting.id;
    let mut admitted_wait = false;
    let updated = loop {
        let now = clock::now_ms();
        let result = live
            .update(&room, |state| {
                let room_state =
                    state.get_or_insert_with(|| Room::new(room.clone(), meeting_id, max));
                if room_state.node.is_none() || room_state.participants.is_empty() {
                    room_state.node = Some(node.clone());
                }
                room_state.handle_enter(entrant.clone(), now).map(drop)
            })
            .await;
        let updated = match result {
            Ok(updated) => updated,
            Err(err) => {
                let (code, message) = update_error(&err);
                conn.error(code, message).await;
                return JoinOutcome::Retry;
            }
        };
        // A fresh stay in the lobby (the room asked the hosts): tell the host
        // wherever they are, through notify.
        let knocked = updated.events.iter().any(|e| {
            matches!(&e.body, EventBody::Message(ServerMessage::LobbyRequest { participant_id, .. })
                if *participant_id == entrant.participant_id)
        });
        if knocked
            && let Err(err) = crate::outbox::write_lobby_waiting(
                live.db(),
                meeting_id,
                entrant.participant_id,
                entrant.user_id,
                &entrant.display_name,
            )
            .await
        {
            tracing::warn!(%err, "lobby alert not recorded");
        }
        let inside = updated
            .room
            .as_ref()
            .is_some_and(|r| r.participants.contains_key(&entrant.participant_id));
        if inside {
            break updated;
        }
        if admitted_wait {
            conn.error(ErrorCode::Internal, "could not enter after admission")
                .await;
            return JoinOutcome::Retry;
        }
        conn.send(ServerMessage::Waiting).await;
        match wait_in_lobby(live, conn, rx, &room, entrant.participant_id, &mut events).await {
            LobbyOutcome::Admitted => admitted_wait = true,
            LobbyOutcome::Over => return JoinOutcome::Over,
        }
    };
    let Some(state) = updated.room else {
        return JoinOutcome::Retry;
    };
    let node = state.node.clone().unwrap_or(node);
    live.ensure_consumer(&node);
    let rejoined = existing
        .as_ref()
        .is_some_and(|r| r.participants.contains_key(&claims.participant_id));
    if rejoined {
        // The same participant joining again without resuming (a reload): its old
        // media session goes, a new one comes.
        let _ = live
            .sfu()
            .delete_session(&node, claims.participant_id)
            .await;
    }
    let request = CreateSession {
        room: room.clone(),
        participant: claims.participant_id,
        publisher_offer: ask.publisher_offer,
        tracks: ask.tracks,
        auto_subscribe: claims.grants.can_subscribe && ask.auto_subscribe,
        data_channel: ask.data_channel,
    };
    let created = match live.sfu().create_session(&node, request).await {
        Ok(created) => created,
        Err(err) => {
            tracing::warn!(%err, %node, "cannot open an sfu session");
            live.update(&room, |s| {
                if let Some(r) = s.as_mut() {
                    r.handle_leave(claims.participant_id, Some(conn_id), "failed");
                }
                Ok(())
            })
            .await
            .ok();
            let code = match err {
                crate::sfu::SfuError::Refused(_) => ErrorCode::MalformedMessage,
                crate::sfu::SfuError::Unavailable(_) => ErrorCode::UpstreamUnavailable,
            };
            conn.error(code, "the media server refused or is unavailable")
                .await;
            return JoinOutcome::Retry;
        }
    };
    if let Err(err) = meetings::participant_joined(
        live.db(),
        claims.meeting_id,
        claims.participant_id,
        claims.identity.user_id(),
        &claims.display_name,
        clock::now_ms(),
    )
    .await
    {
        tracing::warn!(%err, "cannot record a participant joining");
    }
    let resume = state
        .participants
        .get(&claims.participant_id)
        .map(|m| m.resume_token.clone())
        .unwrap_or_default();
    send_joined(conn, &claims, &state, resume, created).await;
    let me = Me {
        room,
        conn: conn_id,
        node,
        seen_seq: state.seq,
        claims,
    };
    JoinOutcome::Joined(Box::new(me), events)
}

#[allow(clippy::too_many_arguments)]
async fn resume_session<Tx>(
    live: &Live,
    conn: &mut Conn<Tx>,
    claims: RoomClaims,
    room: RoomId,
    conn_id: Uuid,
    resume: &str,
    ask: JoinAsk,
    events: tokio::sync::broadcast::Receiver<RoomEvent>,
) -> JoinOutcome
where
    Tx: Sink<Outbound> + Unpin + Send,
{
    let now = clock::now_ms();
    let participant = claims.participant_id;
    let result = live
        .update(&room, |state| match state.as_mut() {
            Some(r) => r.handle_resume(participant, resume, conn_id, now),
            None => Err(crate::room::RoomError::ResumeFailed),
        })
        .await;
    let state = match result {
        Ok(updated) => match updated.room {
            Some(state) => state,
            None => {
                conn.error(ErrorCode::ResumeFailed, "the room is gone")
                    .await;
                return JoinOutcome::Retry;
            }
        },
        Err(err) => {
            let (code, message) = update_error(&err);
            conn.error(code, message).await;
            return JoinOutcome::Retry;
        }
    };
    let Some(node) = state.node.clone() else {
        conn.error(ErrorCode::ResumeFailed, "the room has no media server")
            .await;
        return JoinOutcome::Retry;
    };
    live.ensure_consumer(&node);
    // With a publisher offer, the client brought new peer connections: its SFU session
    // is opened afresh under the same participant id (its old tracks go away, the new
    // ones are announced when they flow). Without one, the client keeps its connections
    // and the SFU restarts ICE on them; the client then restarts its publisher
    // connection with a `publish_offer`.
    let created = if ask.publisher_offer.is_empty() {
        match live.sfu().ice_restart(&node, participant).await {
            Err(crate::sfu::SfuError::Refused(_)) => {
                conn.error(
                    ErrorCode::ResumeFailed,
                    "the media session is gone: resume with a new publisher offer",
                )
                .await;
                return JoinOutcome::Retry;
            }
            other => other,
        }
    } else {
        let _ = live.sfu().delete_session(&node, participant).await;
        let request = CreateSession {
            room: room.clone(),
            participant,
            publisher_offer: ask.publisher_offer,
            tracks: ask.tracks,
            auto_subscribe: claims.grants.can_subscribe && ask.auto_subscribe,
            data_channel: ask.data_channel,
        };
        let created = live.sfu().create_session(&node, request).await;
        if created.is_ok() {
            let old: Vec<_> = state
                .participants
                .get(&participant)
                .map(|m| m.info.tracks.iter().map(|t| t.track_id).collect())
                .unwrap_or_default();
            let _ = live
                .update(&room, |s| {
                    if let Some(r) = s.as_mut() {
                        for track in &old {
                            r.handle_track_unpublished(participant, *track);
                        }
                    }
                    Ok(())
                })
                .await;
        }
        created
    };
    let created = match created {
        Ok(created) => created,
        Err(err) => {
            tracing::warn!(%err, "cannot resume the sfu session");
            conn.error(
                ErrorCode::UpstreamUnavailable,
                "the media server is unavailable",
            )
            .await;
            return JoinOutcome::Retry;
        }
    };
    send_joined(conn, &claims, &state, resume.to_owned(), created).await;
    let me = Me {
        room,
        conn: conn_id,
        node,
        seen_seq: state.seq,
        claims,
    };
    JoinOutcome::Joined(Box::new(me), events)
}

async fn send_joined<Tx: Sink<Outbound> + Unpin>(
    conn: &mut Conn<Tx>,
    claims: &RoomClaims,
    state: &Room,
    resume_token: String,
    created: SessionCreated,
) {
    // The snapshot's room sequence number rides in the envelope.
    conn.send_seq(
        Some(state.seq),
        ServerMessage::Joined {
            participant_id: claims.participant_id,
            resume_token,
            room: state.id.to_string(),
            participants: state.roster(),
            publisher_answer: created.publisher_answer,
            subscriber_offer: created.subscriber_offer,
            locked: state.locked,
        },
    )
    .await;
}

enum LobbyOutcome {
    Admitted,
    Over,
}

async fn wait_in_lobby<Tx, Rx>(
    live: &Live,
    conn: &mut Conn<Tx>,
    rx: &mut Rx,
    room: &RoomId,
    me: ParticipantId,
    events: &mut tokio::sync::broadcast::Receiver<RoomEvent>,
) -> LobbyOutcome
where
    Tx: Sink<Outbound> + Unpin + Send,
    Rx: Stream<Item = Inbound> + Unpin + Send,
{
    let options = live.options().clone();
    let mut heartbeat = tokio::time::interval(options.heartbeat_interval);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            frame = rx.next() => match conn.screen(frame).await {
                Screened::Closed => break,
                Screened::Skip => {}
                Screened::Message(message) => match *message {
                    ClientMessage::Ping => conn.send(ServerMessage::Pong).await,
                    ClientMessage::Leave => { conn.close(close::NORMAL, "bye").await; break; }
                    _ => conn.error(ErrorCode::UnexpectedMessage, "waiting for a host to admit you").await,
                },
            },
            event = events.recv() => match event {
                Ok(event) if event.to == Audience::One(me) => match event.body {
                    EventBody::Admitted => return LobbyOutcome::Admitted,
                    EventBody::Message(message) => {
                        let over = matches!(message, ServerMessage::Removed { .. });
                        conn.send(message).await;
                        if over {
                            conn.close(close::NORMAL, "not admitted").await;
                            return LobbyOutcome::Over;
                        }
                    }
                    EventBody::Superseded { .. } => {}
                },
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            _ = heartbeat.tick() => {
                let now = clock::now_ms();
                let _ = live.update(room, |s| {
                    if let Some(r) = s.as_mut() { r.handle_heartbeat(me, now); }
                    Ok(())
                }).await;
            }
            _ = live.shutdown().cancelled() => break,
        }
    }
    let _ = live
        .update(room, |s| {
            if let Some(r) = s.as_mut() {
                r.lobby.remove(&me);
            }
            Ok(())
        })
        .await;
    LobbyOutcome::Over
}

async fn joined<Tx, Rx>(
    live: &Live,
    conn: &mut Conn<Tx>,
    rx: &mut Rx,
    me: &Me,
    events: &mut tokio::sync::broadcast::Receiver<RoomEvent>,
    direct: &crate::mailbox::Mailbox,
) -> Exit
where
    Tx: Sink<Outbound> + Unpin + Send,
    Rx: Stream<Item = Inbound> + Unpin + Send,
{
    let options = live.options().clone();
    let mut ping = tokio::time::interval(options.ping_interval);
    ping.tick().await;
    let mut heartbeat = tokio::time::interval(options.heartbeat_interval);
    heartbeat.tick().await;
    loop {
        if !conn.open {
            return Exit::Dropped;
        }
        tokio::select! {
            frame = rx.next() => match conn.screen(frame).await {
                Screened::Closed => return Exit::Dropped,
                Screened::Skip => {}
                Screened::Message(message) => {
                    if let Some(exit) = handle_client(live, conn, me, *message).await {
                        return exit;
                    }
                }
            },
            event = events.recv() => match event {
                Ok(event) => {
                    if let Some(exit) = deliver(conn, me, event).await {
                        return exit;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, participant = %me.id(), "session fell behind its room");
                    return Exit::Dropped;
                }
                Err(RecvError::Closed) => return Exit::Dropped,
            },
            message = direct.recv() => match message {
                Some(Direct::Sfu(event)) => {
                    if let Some(exit) = on_direct(conn, event).await {
                        return exit;
                    }
                }
                None => return Exit::Superseded,
            },
            _ = ping.tick() => {
                if conn.last_activity.elapsed() > options.idle_timeout {
                    return Exit::Dropped;
                }
                conn.out(Outbound::Ping).await;
            }
            _ = heartbeat.tick() => {
                let now = clock::now_ms();
                let id = me.id();
                let _ = live.update(&me.room, |s| {
                    if let Some(r) = s.as_mut() { r.handle_heartbeat(id, now); }
                    Ok(())
                }).await;
            }
            _ = live.shutdown().cancelled() => return Exit::Shutdown,
        }
    }
}

/// Forward a room event to the client if it is for them; `Some` when it ends the session.
async fn deliver<Tx: Sink<Outbound> + Unpin>(
    conn: &mut Conn<Tx>,
    me: &Me,
    event: RoomEvent,
) -> Option<Exit> {
    let for_me = match &event.to {
        Audience::All => event.seq.is_none_or(|seq| seq > me.seen_seq),
        Audience::Hosts => me.claims.grants.is_host,
        Audience::One(p) => *p == me.id(),
    };
    if !for_me {
        return None;
    }
    match event.body {
        EventBody::Superseded { conn: old } if old == me.conn => Some(Exit::Superseded),
        EventBody::Superseded { .. } | EventBody::Admitted => None,
        EventBody::Message(message) => {
            let gone = match &message {
                ServerMessage::ParticipantLeft {
                    participant_id,
                    reason,
                } if *participant_id == me.id() => Some(reason.clone()),
                ServerMessage::MeetingEnded => Some("meeting_ended".to_owned()),
                ServerMessage::Removed { reason } => Some(reason.clone()),
                _ => None,
            };
            let is_removed = matches!(message, ServerMessage::Removed { .. });
            conn.send_seq(event.seq, message).await;
            match gone {
                Some(reason) => {
                    if !is_removed {
                        conn.send(ServerMessage::Removed { reason }).await;
                    }
                    Some(Exit::Gone)
                }
                None => None,
            }
        }
    }
}

async fn on_direct<Tx: Sink<Outbound> + Unpin>(
    conn: &mut Conn<Tx>,
    event: SfuEvent,
) -> Option<Exit> {
    match event {
        SfuEvent::SubscriberOffer { offer, .. } => {
            conn.send(ServerMessage::SubscriberOffer { offer }).await;
            None
        }
        SfuEvent::LayerChanged {
            track_id, layer, ..
        } => {
            conn.send(ServerMessage::LayerChanged { track_id, layer })
                .await;
            None
        }
        SfuEvent::PublisherLayers {
            track_id,
            mid,
            active,
            ..
        } => {
            conn.send(ServerMessage::PublisherLayers {
                track_id,
                mid,
                active,
            })
            .await;
            None
        }
        SfuEvent::Disconnected { .. } => {
            conn.send(ServerMessage::Removed {
                reason: "media_disconnected".to_owned(),
            })
            .await;
            Some(Exit::Gone)
        }
        _ => None,
    }
}

fn sfu_error(err: &crate::sfu::SfuError) -> (ErrorCode, &'static str) {
    match err {
        crate::sfu::SfuError::Refused(_) => {
            (ErrorCode::MalformedMessage, "the media server refused this")
        }
        crate::sfu::SfuError::Unavailable(_) => (
            ErrorCode::UpstreamUnavailable,
            "the media server is unavailable",
        ),
    }
}

/// Act on one client message in a joined session; `Some` when it ends the session.
async fn handle_client<Tx: Sink<Outbound> + Unpin>(
    live: &Live,
    conn: &mut Conn<Tx>,
    me: &Me,
    message: ClientMessage,
) -> Option<Exit> {
    let grants = &me.claims.grants;
    let id = me.id();
    let sfu = live.sfu();
    match message {
        ClientMessage::Join { .. } => {
            conn.error(ErrorCode::UnexpectedMessage, "already joined")
                .await
        }
        ClientMessage::Ping => conn.send(ServerMessage::Pong).await,
        ClientMessage::Leave => return Some(Exit::Left),
        ClientMessage::PublishOffer { sdp, tracks } => {
            if let Some(track) = tracks
                .iter()
                .find(|t| !grants.can_publish.contains(&t.source))
            {
                let text = format!("you may not publish {:?}", track.source).to_lowercase();
                conn.error(ErrorCode::PublishNotAllowed, text).await;
                return None;
            }
            match sfu
                .publisher_offer(&me.node, id, PublisherOffer { sdp, tracks })
                .await
            {
                Ok(answer) => {
                    conn.send(ServerMessage::PublisherAnswer { sdp: answer.sdp })
                        .await
                }
                Err(err) => {
                    let (code, text) = sfu_error(&err);
                    conn.error(code, text).await;
                }
            }
        }
        ClientMessage::SubscriberAnswer { sdp } => {
            if let Err(err) = sfu
                .subscriber_answer(&me.node, id, SubscriberAnswer { sdp })
                .await
            {
                let (code, text) = sfu_error(&err);
                conn.error(code, text).await;
            }
        }
        ClientMessage::Candidate { target, candidate } => {
            if candidate.len() > 1024 {
                conn.error(ErrorCode::MalformedMessage, "candidate too long")
                    .await;
                return None;
            }
            if let Err(err) = sfu
                .candidate(&me.node, id, RemoteCandidate { target, candidate })
                .await
            {
                let (code, text) = sfu_error(&err);
                conn.error(code, text).await;
            }
        }
        ClientMessage::Subscribe {
            track_id,
            subscribed,
            max_layer,
            max_height,
        } => {
            if !grants.can_subscribe {
                conn.error(ErrorCode::Forbidden, "you may not subscribe")
                    .await;
                return None;
            }
            let request = SetSubscription {
                track_id,
                subscribed,
                max_layer,
                max_height,
            };
            if let Err(err) = sfu.subscription(&me.node, id, request).await {
                let (code, text) = sfu_error(&err);
                conn.error(code, text).await;
            }
        }
        ClientMessage::Mute { track_id, muted } => {
            let owns = match live.room(&me.room).await {
                Ok(Some(room)) => room
                    .participants
                    .get(&id)
                    .is_some_and(|m| m.info.tracks.iter().any(|t| t.track_id == track_id)),
                _ => false,
            };
            if !owns {
                conn.error(ErrorCode::NotFound, "no such track of yours")
                    .await;
                return None;
            }
            if let Err(err) = sfu.mute(&me.node, id, MuteTrack { track_id, muted }).await {
                let (code, text) = sfu_error(&err);
                conn.error(code, text).await;
                return None;
            }
            room_change(live, conn, me, |r| {
                r.handle_track_muted(id, track_id, muted)
            })
            .await;
        }
        ClientMessage::Chat { text } => {
            if !grants.can_publish_data {
                conn.error(ErrorCode::Forbidden, "you may not send messages")
                    .await;
                return None;
            }
            let count = text.chars().count();
            if count == 0 || count > MAX_CHAT_CHARS {
                conn.error(ErrorCode::InvalidField, "text: 1 to 2000 characters")
                    .await;
                return None;
            }
            let now = clock::now_ms();
            room_change(live, conn, me, |r| r.handle_chat(id, text.clone(), now)).await;
        }
        host_message => {
            if !grants.is_host {
                conn.error(ErrorCode::Forbidden, "only a host may do this")
                    .await;
                return None;
            }
            return host_control(live, conn, me, host_message).await;
        }
    }
    None
}

async fn host_control<Tx: Sink<Outbound> + Unpin>(
    live: &Live,
    conn: &mut Conn<Tx>,
    me: &Me,
    message: ClientMessage,
) -> Option<Exit> {
    let id = me.id();
    match message {
        ClientMessage::HostMute {
            participant_id,
            track_id,
        } => {
            let known = match live.room(&me.room).await {
                Ok(Some(room)) => room
                    .participants
                    .get(&participant_id)
                    .is_some_and(|m| m.info.tracks.iter().any(|t| t.track_id == track_id)),
                _ => false,
            };
            if !known {
                conn.error(
                    ErrorCode::ParticipantNotFound,
                    "no such participant or track",
                )
                .await;
                return None;
            }
            let mute = MuteTrack {
                track_id,
                muted: true,
            };
            if let Err(err) = live.sfu().mute(&me.node, participant_id, mute).await {
                let (code, text) = sfu_error(&err);
                conn.error(code, text).await;
                return None;
            }
            room_change(live, conn, me, |r| {
                if !r.is_host(id) {
                    return Err(crate::room::RoomError::NotHost);
                }
                r.handle_track_muted(participant_id, track_id, true)
            })
            .await;
        }
        ClientMessage::HostRemove { participant_id } => {
            let removed =
                room_change(live, conn, me, |r| r.handle_remove(id, participant_id)).await;
            if removed {
                let _ = live.sfu().delete_session(&me.node, participant_id).await;
            }
        }
        ClientMessage::HostLock { locked } => {
            room_change(live, conn, me, |r| r.handle_lock(id, locked)).await;
        }
        ClientMessage::HostAdmit {
            participant_id,
            admit,
        } => {
            room_change(live, conn, me, |r| {
                r.handle_admit(id, participant_id, admit)
            })
            .await;
        }
        ClientMessage::HostEndMeeting => {
            let ended = room_change(live, conn, me, |r| r.handle_end(id)).await;
            let at = clock::now_ms();
            if ended
                && let Err(err) = meetings::ended_by_host(live.db(), me.claims.meeting_id, at).await
            {
                tracing::warn!(%err, "cannot record the meeting's end");
            }
        }
        _ => {}
    }
    None
}

/// Apply a change to my room; errors go to the client. `true` when it was applied.
async fn room_change<Tx: Sink<Outbound> + Unpin>(
    live: &Live,
    conn: &mut Conn<Tx>,
    me: &Me,
    mut change: impl FnMut(&mut Room) -> Result<(), crate::room::RoomError> + Send,
) -> bool {
    let result = live
        .update(&me.room, |state| match state.as_mut() {
            Some(room) => change(room),
            None => Err(crate::room::RoomError::NoParticipant),
        })
        .await;
    match result {
        Ok(_) => true,
        Err(err) => {
            let (code, message) = update_error(&err);
            conn.error(code, message).await;
            false
        }
    }
}

/// Leave for good: out of the room, off the SFU, into the history.
async fn leave(live: &Live, me: &Me, reason: &str) {
    let id = me.id();
    let conn = me.conn;
    let result = live
        .update(&me.room, |state| {
            if let Some(room) = state.as_mut() {
                room.handle_leave(id, Some(conn), reason);
            }
            Ok(())
        })
        .await;
    let empty = matches!(&result, Ok(updated) if updated.room.is_none());
    if let Err(err) = live.sfu().delete_session(&me.node, id).await {
        tracing::warn!(%err, "cannot close the sfu session");
    }
    record_left(live, me, reason, empty).await;
}

async fn record_left(live: &Live, me: &Me, reason: &str, room_empty: bool) {
    if let Err(err) = meetings::participant_left(
        live.db(),
        me.claims.meeting_id,
        me.id(),
        me.claims.identity.user_id(),
        reason,
        room_empty,
        clock::now_ms(),
    )
    .await
    {
        tracing::warn!(%err, "cannot record a participant leaving");
    }
}

/// The socket dropped: keep the participant for the grace period, then remove them
/// unless they resumed (here or on another replica) or were removed meanwhile.
async fn grace(live: &Live, me: &Me, events: &mut tokio::sync::broadcast::Receiver<RoomEvent>) {
    let id = me.id();
    let conn = me.conn;
    let now = clock::now_ms();
    let _ = live
        .update(&me.room, |state| {
            if let Some(room) = state.as_mut() {
                room.handle_disconnect(id, conn, now);
            }
            Ok(())
        })
        .await;
    let deadline = Instant::now() + live.options().reconnect_grace;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = live.shutdown().cancelled() => return,
            event = events.recv() => match event {
                Ok(event) => match (&event.to, &event.body) {
                    (Audience::One(p), EventBody::Superseded { conn: old }) if *p == id && *old == conn => return,
                    (Audience::All, EventBody::Message(ServerMessage::ParticipantLeft { participant_id, .. }))
                        if *participant_id == id => return,
                    (Audience::All, EventBody::Message(ServerMessage::MeetingEnded)) => return,
                    _ => {}
                },
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
        }
    }
    // Only removes the participant if this connection still holds it.
    let still_mine = match live.room(&me.room).await {
        Ok(Some(room)) => room.participants.get(&id).is_some_and(|m| m.conn == conn),
        _ => false,
    };
    if still_mine {
        leave(live, me, "timeout").await;
    }
}
