//! The SFU core: every participant's two str0m `Rtc`s, the routing between them,
//! and the per-subscriber forwarding state.
//!
//! Sans-IO, like str0m itself: the core never touches a socket and never reads
//! the clock. The driver feeds it datagrams and time, and drains what it wants
//! sent and what it has to tell:
//!
//! ```text
//! loop {
//!     sfu.handle_datagram(now, source, bytes)   // or sfu.handle_timeout(now)
//!     while let Some(t) = sfu.poll_transmit() { socket.send_to(t.contents, t.destination) }
//!     while let Some(e) = sfu.poll_event()    { tell signaling }
//!     sleep until sfu.poll_timeout() or the next datagram
//! }
//! ```
//!
//! Commands from the control API (`create_session`, `publisher_offer`, ...) are
//! plain method calls with `now`.
//!
//! Each participant has a **publisher** `Rtc` (the client offers, we receive its
//! tracks) and a **subscriber** `Rtc` (we offer the room's tracks). An incoming
//! RTP packet on a publisher is written, rewritten per subscriber by its
//! [`forward::Forwarder`], into each subscriber's send stream, sharing the
//! payload allocation (`Arc<[u8]>`).
//!
//! Every `Rtc` call goes through [`drain`], which polls its output until
//! `Timeout` (str0m loses packets otherwise), and every call that can reach str0m
//! runs under `catch_unwind`: a panic in one participant's session closes that
//! session alone.

pub mod codec;
mod dtls;
pub mod dynacast;
pub mod forward;
pub mod speaker;

use codec::VideoCodec;
use dynacast::LayerGate;
use forward::{Decision, Forwarder, Incoming};
use proto::ids::{ParticipantId, TrackId};
use proto::media::{Layer, RoomId, TrackInfo, TrackKind, TrackSource};
use proto::sfu::{
    CreateSession, MuteTrack, NodeLoad, PeerRole, PublisherOffer, Quality, QualitySample,
    RemoteCandidate, RoomSnapshot, SdpAnswer, SessionCreated, SetSubscription, SfuEvent,
    SpeakerLevel, SubscribedTrack, SubscriberOffer, TrackDeclaration,
};
use rustc_hash::FxHashMap;
use speaker::SpeakerDetector;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer as StrSdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::{Codec, CodecSpec};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::{
    Candidate, Event, IceConnectionState, IceCreds, Input, Output, PacerReason, Reason, Rtc,
    RtcError,
};

/// The label of the data channel that relays participants' messages to the room.
pub const ROOM_CHANNEL: &str = "room";
/// Largest data-channel message relayed to the room.
pub const MAX_DATA_MESSAGE: usize = 16 * 1024;

/// How often per-subscriber layer choice, speakers and grace periods are revisited.
const TICK: Duration = Duration::from_millis(250);
/// How often a quality sample per participant is reported.
const QUALITY_EVERY: Duration = Duration::from_secs(2);
/// At most one keyframe request per publisher layer in this time, however many
/// subscribers ask (they are coalesced).
const KEYFRAME_THROTTLE: Duration = Duration::from_millis(500);
/// Bandwidth assumed towards a subscriber before the estimator has spoken.
const INITIAL_ESTIMATE_BPS: u64 = 1_500_000;
/// How long a subscriber's send streams keep what they sent, to answer NACKs
/// with (str0m keeps 3 s). A retransmission only helps while the receiver's
/// jitter buffer still waits for the packet: libwebrtc's own sender keeps
/// max(1 s, 3 × RTT), Janus 500 ms by default. Each second kept is a second of
/// every video copy held per subscriber (~150 KB at 1.2 Mbit/s), which
/// dominated an SFU participant's memory.
const RTX_HISTORY: Duration = Duration::from_secs(1);
/// The longest NACK history a far-away subscriber gets ([`nack_history`]):
/// str0m's own default.
const RTX_HISTORY_MAX: Duration = Duration::from_secs(3);
/// Budget kept for each audio track before video is given any.
const AUDIO_BPS: f64 = 48_000.0;
/// Closest together a subscriber session's housekeeping wake-ups run (see
/// [`schedule`]). A subscriber that gets media has a pass for each batch of
/// writes anyway.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(10);

/// Configuration of the core.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Address of the local UDP socket (what received datagrams were sent to).
    pub local_addr: SocketAddr,
    /// Host candidate offered to clients (the public address of the socket).
    pub candidate_addr: SocketAddr,
    /// How long a participant whose connection dropped is kept for a resume.
    pub disconnect_grace: Duration,
    /// Also offer a passive TCP host candidate on `candidate_addr` (ICE over
    /// TCP, RFC 6544): the driver listens on the same port number over TCP.
    pub ice_tcp: bool,
}

/// Why a control command failed. Each maps to a stable error code in the driver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfuError {
    #[error("no such participant session")]
    UnknownParticipant,
    #[error("a session for this participant already exists")]
    DuplicateParticipant,
    #[error("no such track")]
    UnknownTrack,
    #[error("the SDP could not be used: {0}")]
    BadSdp(String),
    #[error("there is no pending offer to answer")]
    NoPendingOffer,
    #[error("the ICE candidate could not be parsed")]
    BadCandidate,
    #[error("the session failed and was closed")]
    SessionFailed,
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// UDP, or TCP: a frame for the connection whose remote end is `destination`.
    pub proto: Protocol,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// Counters the driver exports as metrics.
#[derive(Debug, Default, Clone)]
pub struct SfuStats {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    /// Datagrams that are not STUN, DTLS, RTP or RTCP.
    pub malformed_datagrams: u64,
    /// Well-formed datagrams that belong to no session.
    pub unknown_datagrams: u64,
    pub rtp_in: u64,
    pub rtp_forwarded: u64,
    pub rtp_dropped: u64,
    pub keyframe_requests: u64,
    pub layer_switches: u64,
    pub data_messages_relayed: u64,
    /// Data-channel messages not relayed (binary, not UTF-8, or too large).
    pub data_messages_dropped: u64,
    pub sessions_failed: u64,
    /// `Rtc` timers served (str0m asks for them; each is a pass over a session).
    pub timer_wakeups: u64,
    /// Housekeeping wake-ups a subscriber session asked for sooner than
    /// `HOUSEKEEPING_EVERY` and got later (see `schedule`).
    pub timer_wakeups_coalesced: u64,
}

type PeerKey = u64;

struct Peer {
    rtc: Rtc,
    participant: ParticipantId,
    role: PeerRole,
    /// When this `Rtc` next wants `Input::Timeout`: the one live entry it has
    /// in [`Sfu::timeouts`]. `None` while it is being served, so that whatever
    /// str0m asks for next is always scheduled, even the same instant again.
    timeout: Option<Instant>,
    /// Media was written to it since its last pass: it is in [`Sfu::written`].
    written: bool,

    ufrag: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// Wanted, not yet in an offer.
    ToAdd,
    Negotiating(Mid),
    Open(Mid),
    /// To be removed in the next offer.
    ToStop(Mid),
    Stopping(Mid),
}

/// One remote track as one subscriber receives it.
struct Subscription {
    track: TrackId,
    state: OutState,
    forwarder: Forwarder<Option<Rid>>,
    /// `false` when the subscriber asked not to receive it.
    wanted: bool,
    /// Highest layer the subscriber wants (from its request or the tile size).
    max_layer: Layer,
    /// Dynacast: the highest layer of the track this subscriber would take if
    /// every layer were arriving (its tile size and its share of the
    /// bandwidth, judged by [`Sfu::select_layers`]); `None` while it takes no
    /// video of the track. A single-layer track's one layer is `High`.
    demand: Option<Layer>,
    /// Incoming payload type → outgoing payload type.
    pt_map: Vec<(Pt, Pt)>,
    /// The send stream this is written to, once found: str0m finds a stream
    /// by SSRC in a map, by mid only by a walk over every stream.
    out_ssrc: Option<(Mid, Ssrc)>,
}

/// The m-line a subscriber connection's first offer opens with, never stopped:
/// ICE and DTLS must run before any track exists, and a browser closes a
/// BUNDLE transport whose m-lines are all stopped (the last publisher leaving
/// would end the session).
#[derive(Debug, Clone, Copy)]
enum FirstLine {
    /// The `room` data channel, for clients that asked for it.
    RoomChannel,
    /// An inactive audio m-line: str0m makes no send stream for it, so it
    /// costs nothing per pass.
    Inactive,
}

struct Participant {
    id: ParticipantId,
    room: RoomId,
    publisher: PeerKey,
    subscriber: PeerKey,
    /// Sources the client declared, by its transceiver mid.
    declared: HashMap<String, TrackSource>,
    /// Tracks this participant publishes, by publisher mid.
    published: HashMap<Mid, TrackId>,
    /// Publisher SSRC → (track, simulcast layer), filled on first packet.
    ssrc_routes: HashMap<Ssrc, (TrackId, Option<Rid>)>,
    subscriptions: FxHashMap<TrackId, Subscription>,
    /// Subscriber mid → track, for keyframe requests.
    out_by_mid: HashMap<Mid, TrackId>,
    pending_offer: Option<SdpPendingOffer>,
    /// Data channels on the publisher connection, by id → label.
    publisher_channels: HashMap<ChannelId, String>,
    /// The subscriber connection's room channel, once open.
    room_channel: Option<ChannelId>,
    egress_estimate: Option<Bitrate>,
    connected: bool,
    disconnected_since: Option<Instant>,
    ingress_loss: f32,
    rtt: Option<Duration>,
    /// What the subscriber connection's video streams keep for NACKs, as last
    /// set from their round trip ([`nack_history`]).
    nack_history: Duration,
}

/// Measures a layer's bitrate over a sliding window, from packet sizes.
#[derive(Debug, Clone, Copy)]
struct RateMeter {
    window_start: Instant,
    bytes: u64,
    bps: f64,
}

impl RateMeter {
    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            bytes: 0,
            bps: 0.0,
        }
    }

    fn add(&mut self, bytes: usize, now: Instant) {
        self.bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= Duration::from_millis(500) {
            let instant = self.bytes as f64 * 8.0 / elapsed.as_secs_f64();
            // Smooth over windows so a keyframe does not look like a new layer.
            self.bps = if self.bps == 0.0 {
                instant
            } else {
                0.7 * self.bps + 0.3 * instant
            };
            self.bytes = 0;
            self.window_start = now;
        }
    }

    /// Bitrate, or `None` when the layer has been silent for a while.
    fn bps(&self, now: Instant) -> Option<f64> {
        let idle = now.saturating_duration_since(self.window_start);
        (self.bps > 0.0 && idle < Duration::from_secs(2)).then_some(self.bps)
    }

    /// The last bitrate measured, even of a layer silent since (paused by
    /// dynacast): what it will likely cost again once resumed.
    fn last_bps(&self) -> Option<f64> {
        (self.bps > 0.0).then_some(self.bps)
    }
}

struct Track {
    info: TrackInfo,
    room: RoomId,
    /// The publisher's mid for it.
    mid: Mid,
    /// Simulcast RIDs, lowest quality first; empty for a single layer.
    rids: Vec<Rid>,
    codec: VideoCodec,
    /// Payload type → codec, as negotiated with the publisher.
    specs: Vec<(Pt, CodecSpec)>,
    meters: HashMap<Option<Rid>, RateMeter>,
    last_keyframe_request: HashMap<Option<Rid>, Instant>,
    subscribers: Vec<ParticipantId>,
    /// Dynacast: the layers the publisher is asked to send (video only).
    gate: LayerGate,
}

impl Track {
    fn layer_of(&self, rid: Option<Rid>) -> Option<Layer> {
        let rid = rid?;
        Layer::from_rid(&rid).or_else(|| {
            let index = self.rids.iter().position(|r| *r == rid)?;
            Layer::ALL.get(index).copied()
        })
    }

    /// Guessed bitrate of a layer that has not been measured yet.
    fn nominal_bps(&self, rid: Option<Rid>) -> f64 {
        match self.layer_of(rid) {
            Some(Layer::Low) => 150_000.0,
            Some(Layer::Medium) => 500_000.0,
            Some(Layer::High) | None => 1_500_000.0,
        }
    }

    /// The layers dynacast can pause: the simulcast layers, or a single
    /// layer's one, counted as `High`.
    fn dynacast_layers(rids: &[Rid]) -> Vec<Layer> {
        if rids.is_empty() {
            return vec![Layer::High];
        }
        rids.iter()
            .enumerate()
            .filter_map(|(index, rid)| Layer::from_rid(rid).or(Layer::ALL.get(index).copied()))
            .collect()
    }
}

struct Room {
    participants: Vec<ParticipantId>,
    speakers: SpeakerDetector<ParticipantId>,
}

/// The SFU core. See the module docs for the polling contract.
pub struct Sfu {
    config: SfuConfig,
    /// str0m's crypto with DTLS set up once per process (see `dtls.rs`).
    crypto: std::sync::Arc<str0m::config::CryptoProvider>,
    /// This core's DTLS certificate, shared by its connections (`None`: each
    /// connection makes its own, as str0m does by default).
    certificate: Option<str0m::config::DtlsCert>,
    peers: FxHashMap<PeerKey, Peer>,
    next_peer: PeerKey,
    by_ufrag: HashMap<String, PeerKey>,
    /// By transport and remote address: a UDP and a TCP client can share one.
    by_addr: HashMap<(Protocol, SocketAddr), PeerKey>,
    participants: FxHashMap<ParticipantId, Participant>,
    rooms: HashMap<RoomId, Room>,
    tracks: FxHashMap<TrackId, Track>,
    /// Events from `Rtc`s not yet handled, in order.
    rtc_events: VecDeque<(PeerKey, Event)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    next_tick: Instant,
    next_quality: Instant,
    stats: SfuStats,
    /// Reused buffer of subscriber ids while routing one packet.
    scratch: Vec<ParticipantId>,
    /// Every peer's next timeout, earliest first. Entries go stale when a peer's
    /// timeout moves; they are skipped when popped (cheaper than a scan of all
    /// peers on every wake-up).
    timeouts: BinaryHeap<Reverse<(Instant, PeerKey)>>,
    /// Reused buffer of the peers due in one `handle_timeout`.
    due: Vec<PeerKey>,
    /// Subscriber sessions written to since their last pass, in the order of
    /// their first write. Their pass runs once for everything the inputs so
    /// far wrote (see [`Sfu::send_written`]), not once per packet.
    written: Vec<PeerKey>,
    /// The latest time an input brought: when written media is due.
    last_now: Instant,
    /// Subscribers whose subscriptions changed during this input, in order:
    /// each gets one offer when the input's events are all handled (see
    /// [`Sfu::renegotiate`]).
    offers_due: Vec<ParticipantId>,
}

impl Sfu {
    pub fn new(config: SfuConfig, now: Instant) -> Self {
        Self {
            config,
            crypto: dtls::crypto_provider(),
            certificate: dtls::certificate(),
            peers: FxHashMap::default(),
            next_peer: 1,
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            participants: FxHashMap::default(),
            rooms: HashMap::new(),
            tracks: FxHashMap::default(),
            rtc_events: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_tick: now + TICK,
            next_quality: now + QUALITY_EVERY,
            stats: SfuStats::default(),
            scratch: Vec::new(),
            timeouts: BinaryHeap::new(),
            due: Vec::new(),
            written: Vec::new(),
            last_now: now,
            offers_due: Vec::new(),
        }
    }

    pub fn stats(&self) -> &SfuStats {
        &self.stats
    }

    /// How long `participant`'s subscriber connection last kept its sent video
    /// for NACKs ([`nack_history`]); `None` for no such participant.
    pub fn nack_history(&self, participant: ParticipantId) -> Option<Duration> {
        self.participants.get(&participant).map(|p| p.nack_history)
    }

    pub fn load(&self, forwarded_pps: f64, max_pps: f64) -> NodeLoad {
        NodeLoad {
            rooms: self.rooms.len() as u32,
            participants: self.participants.len() as u32,
            tracks: self.tracks.len() as u32,
            forwarded_pps,
            draining: false,
            load: if max_pps > 0.0 {
                forwarded_pps / max_pps
            } else {
                0.0
            },
        }
    }

    pub fn room_snapshot(&self, room: &RoomId) -> Option<RoomSnapshot> {
        let state = self.rooms.get(room)?;
        let mut tracks: Vec<TrackInfo> = self
            .tracks
            .values()
            .filter(|t| &t.room == room)
            .map(|t| t.info.clone())
            .collect();
        tracks.sort_by_key(|t| t.track_id);
        Some(RoomSnapshot {
            room: room.clone(),
            participants: state.participants.clone(),
            tracks,
        })
    }

    // ----------------------------------------------------------------------------
    // Outputs
    // ----------------------------------------------------------------------------

    /// The next datagram to send. Media written by the inputs so far waits
    /// for [`Sfu::send_written`] (or the next [`Sfu::handle_timeout`], due at
    /// once then).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let transmit = self.transmits.pop_front()?;
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += transmit.contents.len() as u64;
        Some(transmit)
    }

    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    /// When the core next needs [`Sfu::handle_timeout`] (at once while
    /// written media waits for its pass).
    pub fn poll_timeout(&self) -> Instant {
        if !self.written.is_empty() {
            return self.last_now;
        }
        let periodic = self.next_tick.min(self.next_quality);
        match self.timeouts.peek() {
            Some(Reverse((at, _))) => periodic.min(*at),
            None => periodic,
        }
    }

    // ----------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------

    /// A datagram arrived on the media socket from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        self.handle_receive(now, Protocol::Udp, source, data);
    }

    /// A datagram arrived over `proto` from `source`: a UDP datagram, or one
    /// RFC 4571 frame of the TCP connection from `source`. Returns whether a
    /// session took it (the driver keeps a TCP connection only while one does).
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        data: &[u8],
    ) -> bool {
        self.last_now = self.last_now.max(now);
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let Ok(contents) = data.try_into() else {
            self.stats.malformed_datagrams += 1;
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination: self.config.local_addr,
                contents,
            },
        );
        let accepts = |peers: &FxHashMap<PeerKey, Peer>, key: PeerKey| {
            peers.get(&key).is_some_and(|peer| {
                catch_unwind(AssertUnwindSafe(|| peer.rtc.accepts(&input))).unwrap_or(false)
            })
        };
        // The 4-tuple first (the hot path), then the ICE username for STUN.
        let mut key = self
            .by_addr
            .get(&(proto, source))
            .copied()
            .filter(|k| accepts(&self.peers, *k));
        if key.is_none()
            && let Some(ufrag) = codec::stun_local_ufrag(data)
        {
            key = self
                .by_ufrag
                .get(ufrag)
                .copied()
                .filter(|k| accepts(&self.peers, *k));
            if let Some(k) = key {
                self.by_addr.insert((proto, source), k);
            }
        }
        match key {
            Some(key) => self.feed(now, key, input),
            None => self.stats.unknown_datagrams += 1,
        }
        self.process(now);
        key.is_some()
    }

    /// Time has passed: drive every `Rtc` that asked for it, and the periodic work.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        self.send_written(now);
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        while let Some(Reverse((at, key))) = self.timeouts.peek().copied() {
            if at > now {
                break;
            }
            self.timeouts.pop();
            // Stale entries (the peer moved its timeout, or is gone) are skipped.
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            if peer.timeout != Some(at) {
                continue;
            }
            peer.timeout = None;
            due.push(key);
        }
        self.stats.timer_wakeups += due.len() as u64;
        for &key in &due {
            self.feed(now, key, Input::Timeout(now));
        }
        self.due = due;
        self.process(now);
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.tick(now);
        }
        if now >= self.next_quality {
            self.next_quality = now + QUALITY_EVERY;
            self.report_quality();
        }
    }

    /// Run one pass over each subscriber session that media was written to
    /// since its last one, which sends what was written. A driver calls it
    /// after feeding a batch of datagrams, so that a session that got several
    /// packets of the batch (a video frame, or the tracks of a meeting) sends
    /// them all in one pass: str0m's pass walks the whole session, and it is
    /// most of what a forwarded copy costs. [`Sfu::handle_timeout`] runs it
    /// too, and [`Sfu::poll_timeout`] asks for that at once while media waits.
    pub fn send_written(&mut self, now: Instant) {
        // Handling the passes' events can write more (a publisher's pass may
        // release held-back packets): go round until nothing waits.
        while !self.written.is_empty() {
            let mut written = std::mem::take(&mut self.written);
            for &key in &written {
                let Some(peer) = self.peers.get_mut(&key) else {
                    continue; // removed since
                };
                peer.written = false;
                peer.timeout = None;
                self.stats.timer_wakeups += 1;
                self.feed(now, key, Input::Timeout(now));
            }
            written.clear();
            self.written = written; // the buffer, kept for the next batch
            self.process(now);
        }
    }

    // ----------------------------------------------------------------------------
    // Commands
    // ----------------------------------------------------------------------------

    /// Open a participant's session: answer its publisher offer and make the
    /// first subscriber offer (the room data channel unless the client declined it,
    /// plus every track in the room).
    pub fn create_session(
        &mut self,
        now: Instant,
        request: CreateSession,
    ) -> Result<SessionCreated, SfuError> {
        if self.participants.contains_key(&request.participant) {
            return Err(SfuError::DuplicateParticipant);
        }
        let offer = SdpOffer::from_sdp_string(&request.publisher_offer)
            .map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let pid = request.participant;
        let first_line = if request.data_channel {
            FirstLine::RoomChannel
        } else {
            FirstLine::Inactive
        };
        let publisher = self.add_peer(now, pid, PeerRole::Publisher);
        let subscriber = self.add_peer(now, pid, PeerRole::Subscriber);
        let mut participant = Participant {
            id: pid,
            room: request.room.clone(),
            publisher,
            subscriber,
            declared: declarations(&request.tracks),
            published: HashMap::new(),
            ssrc_routes: HashMap::new(),
            subscriptions: FxHashMap::default(),
            out_by_mid: HashMap::new(),
            pending_offer: None,
            publisher_channels: HashMap::new(),
            room_channel: None,
            egress_estimate: None,
            connected: false,
            disconnected_since: None,
            ingress_loss: 0.0,
            rtt: None,
            nack_history: RTX_HISTORY,
        };
        // Subscribe to what the room already publishes.
        if request.auto_subscribe {
            for track in self.tracks.values_mut().filter(|t| t.room == request.room) {
                participant
                    .subscriptions
                    .insert(track.info.track_id, new_subscription(track));
                track.subscribers.push(pid);
            }
        }
        self.participants.insert(pid, participant);
        self.rooms
            .entry(request.room.clone())
            .or_insert_with(|| Room {
                participants: Vec::new(),
                speakers: SpeakerDetector::default(),
            })
            .participants
            .push(pid);

        let answer = self.with_rtc(now, publisher, |rtc| {
            rtc.sdp_api()
                .accept_offer(offer)
                .map_err(|e| SfuError::BadSdp(e.to_string()))
        });
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                self.remove_participant(pid, None);
                return Err(err);
            }
        };
        let subscriber_offer = match self.make_subscriber_offer(now, pid, Some(first_line)) {
            Ok(Some(offer)) => offer,
            Ok(None) => {
                self.remove_participant(pid, None);
                return Err(SfuError::SessionFailed);
            }
            Err(err) => {
                self.remove_participant(pid, None);
                return Err(err);
            }
        };
        self.process(now);
        Ok(SessionCreated {
            publisher_answer: answer.to_sdp_string(),
            subscriber_offer,
        })
    }

    /// The client renegotiates its publisher connection (tracks added or
    /// removed, or an ICE restart).
    pub fn publisher_offer(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        offer: PublisherOffer,
    ) -> Result<SdpAnswer, SfuError> {
        let parsed =
            SdpOffer::from_sdp_string(&offer.sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let participant = self
            .participants
            .get_mut(&pid)
            .ok_or(SfuError::UnknownParticipant)?;
        participant.declared.extend(declarations(&offer.tracks));
        let key = participant.publisher;
        let answer = self.with_rtc(now, key, |rtc| {
            rtc.sdp_api()
                .accept_offer(parsed)
                .map_err(|e| SfuError::BadSdp(e.to_string()))
        })?;
        self.process(now);
        Ok(SdpAnswer {
            sdp: answer.to_sdp_string(),
        })
    }

    /// The client's answer to our last subscriber offer.
    pub fn subscriber_answer(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        sdp: &str,
    ) -> Result<(), SfuError> {
        let answer =
            StrSdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let participant = self
            .participants
            .get_mut(&pid)
            .ok_or(SfuError::UnknownParticipant)?;
        let pending = participant
            .pending_offer
            .take()
            .ok_or(SfuError::NoPendingOffer)?;
        let key = participant.subscriber;
        self.with_rtc(now, key, |rtc| {
            rtc.sdp_api()
                .accept_answer(pending, answer)
                .map_err(|e| SfuError::BadSdp(e.to_string()))
        })?;
        let participant = self
            .participants
            .get_mut(&pid)
            .ok_or(SfuError::UnknownParticipant)?;
        let mut stopped = Vec::new();
        for sub in participant.subscriptions.values_mut() {
            match sub.state {
                OutState::Negotiating(mid) => {
                    sub.state = OutState::Open(mid);
                    participant.out_by_mid.insert(mid, sub.track);
                }
                OutState::Stopping(mid) => {
                    participant.out_by_mid.remove(&mid);
                    stopped.push(sub.track);
                }
                _ => {}
            }
        }
        for track in stopped {
            participant.subscriptions.remove(&track);
        }
        // Forwarded video is already paced by its publisher's encoder; pacing it
        // again would cost a timer wake-up per packet per subscriber. The
        // estimator still runs on the transport-wide feedback.
        let opened: Vec<Mid> = participant
            .subscriptions
            .values()
            .filter_map(|sub| match sub.state {
                OutState::Open(mid) => Some(mid),
                _ => None,
            })
            .collect();
        let _ = self.with_rtc(now, key, |rtc| {
            let mut api = rtc.direct_api();
            for mid in opened {
                if let Some(stream) = api.stream_tx_by_mid(mid, None) {
                    stream.set_unpaced(true);
                }
            }
            Ok(())
        });
        self.select_layers(now, pid);
        self.renegotiate(pid);
        self.process(now);
        Ok(())
    }

    /// A trickled ICE candidate from the client.
    pub fn add_candidate(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        candidate: &RemoteCandidate,
    ) -> Result<(), SfuError> {
        let line = candidate.candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() {
            // End-of-candidates marker: nothing to do for an ICE-lite server.
            return Ok(());
        }
        let parsed = Candidate::from_sdp_string(line).map_err(|_| SfuError::BadCandidate)?;
        let participant = self
            .participants
            .get(&pid)
            .ok_or(SfuError::UnknownParticipant)?;
        let key = match candidate.target {
            PeerRole::Publisher => participant.publisher,
            PeerRole::Subscriber => participant.subscriber,
        };
        self.with_rtc(now, key, |rtc| {
            rtc.add_remote_candidate(parsed);
            Ok(())
        })?;
        self.process(now);
        Ok(())
    }

    /// What a subscriber wants of one track: on/off and the layer cap.
    pub fn set_subscription(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        request: &SetSubscription,
    ) -> Result<(), SfuError> {
        let participant = self
            .participants
            .get_mut(&pid)
            .ok_or(SfuError::UnknownParticipant)?;
        let sub = participant
            .subscriptions
            .get_mut(&request.track_id)
            .ok_or(SfuError::UnknownTrack)?;
        sub.wanted = request.subscribed;
        sub.max_layer = match (request.max_layer, request.max_height) {
            (Some(layer), Some(height)) => layer.min(Layer::for_height(height)),
            (Some(layer), None) => layer,
            (None, Some(height)) => Layer::for_height(height),
            (None, None) => Layer::High,
        };
        self.select_layers(now, pid);
        self.process(now);
        Ok(())
    }

    /// Host control (or the participant itself): stop or resume forwarding a track.
    pub fn mute_track(&mut self, now: Instant, request: &MuteTrack) -> Result<(), SfuError> {
        let track = self
            .tracks
            .get_mut(&request.track_id)
            .ok_or(SfuError::UnknownTrack)?;
        if track.info.muted == request.muted {
            return Ok(());
        }
        track.info.muted = request.muted;
        let room = track.room.clone();
        let publisher = track.info.participant_id;
        let subscribers = track.subscribers.clone();
        self.events.push_back(SfuEvent::TrackMuted {
            room,
            participant_id: publisher,
            track_id: request.track_id,
            muted: request.muted,
        });
        // Muting pauses every forwarder; unmuting lets layer selection restart
        // them (video at the next keyframe, which it asks for).
        for sub_id in subscribers {
            if let Some(sub) = self
                .participants
                .get_mut(&sub_id)
                .and_then(|p| p.subscriptions.get_mut(&request.track_id))
            {
                sub.forwarder.set_target(None);
            }
            self.select_layers(now, sub_id);
        }
        self.process(now);
        Ok(())
    }

    /// Restart ICE on the subscriber connection (the client restarts its
    /// publisher connection itself, through a new publisher offer).
    pub fn ice_restart(
        &mut self,
        now: Instant,
        pid: ParticipantId,
    ) -> Result<SubscriberOffer, SfuError> {
        let participant = self
            .participants
            .get_mut(&pid)
            .ok_or(SfuError::UnknownParticipant)?;
        participant.disconnected_since = None;
        // An offer the client never answered is void: fold its changes into this one.
        if participant.pending_offer.take().is_some() {
            for sub in participant.subscriptions.values_mut() {
                sub.state = match sub.state {
                    OutState::Negotiating(_) => OutState::ToAdd,
                    OutState::Stopping(mid) => OutState::ToStop(mid),
                    other => other,
                };
            }
        }
        let key = participant.subscriber;
        self.with_rtc(now, key, |rtc| {
            rtc.sdp_api().ice_restart(true);
            Ok(())
        })?;
        self.refresh_ufrag(key);
        let offer = self.make_subscriber_offer_inner(now, pid, None, true)?;
        self.process(now);
        offer.ok_or(SfuError::SessionFailed)
    }

    /// End a participant's session (left, removed, or replaced).
    pub fn remove_session(&mut self, now: Instant, pid: ParticipantId) -> Result<(), SfuError> {
        if !self.participants.contains_key(&pid) {
            return Err(SfuError::UnknownParticipant);
        }
        self.remove_participant(pid, None);
        self.process(now);
        Ok(())
    }

    // ----------------------------------------------------------------------------
    // Internals
    // ----------------------------------------------------------------------------

    fn add_peer(&mut self, now: Instant, participant: ParticipantId, role: PeerRole) -> PeerKey {
        let creds = IceCreds {
            ufrag: random_token(16),
            pass: random_token(32),
        };
        let mut config = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_local_ice_credentials(creds.clone())
            .set_stats_interval(Some(QUALITY_EVERY))
            .set_crypto_provider(self.crypto.clone());
        media_codecs(config.codec_config());
        if role == PeerRole::Subscriber {
            config = config
                .enable_bwe(Some(Bitrate::bps(INITIAL_ESTIMATE_BPS)))
                // At most 1 000 video packets (1 s of 2.5 Mbit/s is ~250).
                .set_send_buffer_video(1000)
                .set_send_buffer_age(RTX_HISTORY);
        }
        if let Some(cert) = &self.certificate {
            config = config.set_dtls_cert(cert.clone());
        }
        let mut rtc = config.build(now);
        if let Ok(candidate) = Candidate::host(self.config.candidate_addr, "udp") {
            rtc.add_local_candidate(candidate);
        }
        // Passive: clients connect to us (RFC 6544); UDP stays preferred by priority.
        if self.config.ice_tcp
            && let Ok(candidate) = Candidate::builder()
                .tcp()
                .host(self.config.candidate_addr)
                .tcptype(TcpType::Passive)
                .build()
        {
            rtc.add_local_candidate(candidate);
        }
        let key = self.next_peer;
        self.next_peer += 1;
        self.by_ufrag.insert(creds.ufrag.clone(), key);
        self.timeouts.push(Reverse((now, key)));
        self.peers.insert(
            key,
            Peer {
                rtc,
                participant,
                role,
                timeout: Some(now),
                written: false,
                ufrag: creds.ufrag,
            },
        );
        key
    }

    /// Run `f` on one peer's `Rtc`, drain it, and keep the ufrag map current.
    /// A panic or an error inside str0m closes that participant's session.
    fn with_rtc<T>(
        &mut self,
        now: Instant,
        key: PeerKey,
        f: impl FnOnce(&mut Rtc) -> Result<T, SfuError>,
    ) -> Result<T, SfuError> {
        let Some(peer) = self.peers.get_mut(&key) else {
            return Err(SfuError::UnknownParticipant);
        };
        let transmits = &mut self.transmits;
        let events = &mut self.rtc_events;
        let timeouts = &mut self.timeouts;
        let coalesced = &mut self.stats.timer_wakeups_coalesced;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let value = f(&mut peer.rtc);
            drain(now, key, peer, transmits, events, timeouts, coalesced).map(|()| value)
        }));
        match outcome {
            Ok(Ok(value)) => value,
            Ok(Err(err)) => {
                let participant = peer.participant;
                tracing::warn!(%participant, error = %err, "session failed");
                self.fail_participant(participant, format!("media error: {err}"));
                Err(SfuError::SessionFailed)
            }
            Err(_) => {
                let participant = peer.participant;
                tracing::error!(%participant, "str0m panicked; closing this session only");
                self.fail_participant(participant, "internal error".to_owned());
                Err(SfuError::SessionFailed)
            }
        }
    }

    /// SDP operations can change a peer's local ICE credentials (an ICE
    /// restart): keep the ufrag → peer map current. Not on the hot path.
    fn refresh_ufrag(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag != peer.ufrag {
            self.by_ufrag.remove(&peer.ufrag);
            self.by_ufrag.insert(ufrag.clone(), key);
            peer.ufrag = ufrag;
        }
    }

    fn feed(&mut self, now: Instant, key: PeerKey, input: Input<'_>) {
        let _ = self.with_rtc(now, key, |rtc| {
            rtc.handle_input(input).map_err(|e| {
                tracing::debug!(error = %e, "input rejected");
                SfuError::SessionFailed
            })
        });
    }

    /// Keep as much of a subscriber stream's sent video for NACKs as its
    /// round trip calls for ([`nack_history`]), without dropping what is kept.
    fn follow_round_trip(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        key: PeerKey,
        mid: Mid,
        rid: Option<Rid>,
        rtt: Duration,
    ) {
        let history = nack_history(rtt);
        let changed = self.with_rtc(now, key, |rtc| {
            Ok(match rtc.direct_api().stream_tx_by_mid(mid, rid) {
                Some(stream) if stream.rtx_cache_age() != history => {
                    stream.set_rtx_cache_age(history);
                    true
                }
                _ => false,
            })
        });
        if matches!(changed, Ok(true))
            && let Some(p) = self.participants.get_mut(&pid)
        {
            tracing::debug!(participant = %pid, %mid, ?rtt, ?history, "NACK history");
            p.nack_history = history;
        }
    }

    fn fail_participant(&mut self, pid: ParticipantId, reason: String) {
        self.stats.sessions_failed += 1;
        self.remove_participant(pid, Some(reason));
    }

    /// Handle every queued `Rtc` event (handling one may queue more), then
    /// make the subscriber offers the changes asked for.
    fn process(&mut self, now: Instant) {
        loop {
            self.handle_rtc_events(now);
            if self.offers_due.is_empty() {
                return;
            }
            for pid in std::mem::take(&mut self.offers_due) {
                if let Ok(Some(offer)) = self.make_subscriber_offer(now, pid, None)
                    && let Some(p) = self.participants.get(&pid)
                {
                    self.events.push_back(SfuEvent::SubscriberOffer {
                        room: p.room.clone(),
                        participant_id: pid,
                        offer,
                    });
                }
            }
        }
    }

    fn handle_rtc_events(&mut self, now: Instant) {
        while let Some((key, event)) = self.rtc_events.pop_front() {
            let Some(peer) = self.peers.get(&key) else {
                continue;
            };
            let (pid, role) = (peer.participant, peer.role);
            match (role, event) {
                (PeerRole::Publisher, Event::RtpPacket(packet)) => {
                    self.route_rtp(now, pid, key, packet)
                }
                (PeerRole::Publisher, Event::MediaAdded(added)) => {
                    let rids = added
                        .simulcast
                        .map(|s| {
                            let layers = if s.recv.is_empty() { s.send } else { s.recv };
                            layers.into_iter().map(|l| l.rid).collect()
                        })
                        .unwrap_or_default();
                    self.publish_track(pid, added.mid, added.kind, rids);
                }
                (PeerRole::Publisher, Event::MediaChanged(changed))
                    if !changed.direction.is_receiving() =>
                {
                    self.unpublish_track(pid, changed.mid);
                }
                (PeerRole::Publisher, Event::ChannelOpen(id, label)) => {
                    if let Some(p) = self.participants.get_mut(&pid) {
                        p.publisher_channels.insert(id, label);
                    }
                }
                (PeerRole::Publisher, Event::ChannelData(data)) => self.relay_data(now, pid, data),
                (PeerRole::Publisher, Event::MediaIngressStats(stats)) => {
                    if let Some(p) = self.participants.get_mut(&pid) {
                        if let Some(loss) = stats.loss {
                            p.ingress_loss = loss;
                        }
                        if stats.rtt.is_some() {
                            p.rtt = stats.rtt;
                        }
                    }
                }
                (PeerRole::Subscriber, Event::KeyframeRequest(request)) => {
                    let track = self
                        .participants
                        .get(&pid)
                        .and_then(|p| p.out_by_mid.get(&request.mid).map(|t| (*t, p)))
                        .and_then(|(t, p)| {
                            p.subscriptions.get(&t).map(|s| (t, s.forwarder.current()))
                        });
                    if let Some((track, Some(rid))) = track {
                        self.request_keyframe(now, track, rid, request.kind);
                    }
                }
                (PeerRole::Subscriber, Event::MediaEgressStats(stats)) => {
                    // The stream's round trip, from the receiver's reports.
                    if let Some(rtt) = stats.rtt {
                        self.follow_round_trip(now, pid, key, stats.mid, stats.rid, rtt);
                    }
                }
                (
                    PeerRole::Subscriber,
                    Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }),
                ) => {
                    if let Some(p) = self.participants.get_mut(&pid) {
                        p.egress_estimate = Some(estimate);
                    }
                }
                (PeerRole::Subscriber, Event::ChannelOpen(id, label)) => {
                    if label == ROOM_CHANNEL
                        && let Some(p) = self.participants.get_mut(&pid)
                    {
                        p.room_channel = Some(id);
                    }
                }
                (_, Event::IceConnectionStateChange(state)) => {
                    self.ice_state(pid, role, state, now)
                }
                (_, Event::Closed) => {
                    self.fail_participant(pid, "the client closed the connection".into())
                }
                _ => {}
            }
        }
    }

    fn ice_state(
        &mut self,
        pid: ParticipantId,
        role: PeerRole,
        state: IceConnectionState,
        now: Instant,
    ) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        match state {
            IceConnectionState::Connected | IceConnectionState::Completed => {
                p.disconnected_since = None;
                if role == PeerRole::Publisher && !p.connected {
                    p.connected = true;
                    self.events.push_back(SfuEvent::Connected {
                        room: p.room.clone(),
                        participant_id: pid,
                    });
                }
            }
            IceConnectionState::Disconnected => {
                // Keep the session for a while: the client may be moving
                // networks and resume with an ICE restart.
                p.disconnected_since.get_or_insert(now);
            }
            _ => {}
        }
    }

    fn publish_track(&mut self, pid: ParticipantId, mid: Mid, kind: MediaKind, mut rids: Vec<Rid>) {
        let Some(participant) = self.participants.get_mut(&pid) else {
            return;
        };
        if participant.published.contains_key(&mid) {
            return;
        }
        let kind = match kind {
            MediaKind::Audio => TrackKind::Audio,
            MediaKind::Video => TrackKind::Video,
        };
        let source = participant
            .declared
            .get(&*mid)
            .copied()
            .unwrap_or(match kind {
                TrackKind::Audio => TrackSource::Microphone,
                TrackKind::Video => TrackSource::Camera,
            });
        // Lowest quality first; RIDs we do not know keep the publisher's order.
        rids.sort_by_key(|rid| Layer::from_rid(rid).map(|l| l as u8).unwrap_or(u8::MAX));
        let layers = rids.iter().filter_map(|r| Layer::from_rid(r)).collect();
        let track_id = TrackId::new();
        participant.published.insert(mid, track_id);
        let room = participant.room.clone();
        let info = TrackInfo {
            track_id,
            participant_id: pid,
            kind,
            source: if source.kind() == kind {
                source
            } else {
                match kind {
                    TrackKind::Audio => TrackSource::Microphone,
                    TrackKind::Video => TrackSource::Camera,
                }
            },
            layers,
            muted: false,
        };
        let gate = LayerGate::new(Track::dynacast_layers(&rids));
        let mut track = Track {
            info: info.clone(),
            room: room.clone(),
            mid,
            rids,
            codec: VideoCodec::Other,
            specs: Vec::new(),
            meters: HashMap::new(),
            last_keyframe_request: HashMap::new(),
            subscribers: Vec::new(),
            gate,
        };
        let others: Vec<ParticipantId> = self
            .rooms
            .get(&room)
            .map(|r| {
                r.participants
                    .iter()
                    .copied()
                    .filter(|p| *p != pid)
                    .collect()
            })
            .unwrap_or_default();
        for other in &others {
            if let Some(p) = self.participants.get_mut(other) {
                p.subscriptions.insert(track_id, new_subscription(&track));
                track.subscribers.push(*other);
            }
        }
        self.tracks.insert(track_id, track);
        tracing::info!(%pid, %track_id, ?kind, "track published");
        self.events
            .push_back(SfuEvent::TrackPublished { room, track: info });
        for other in others {
            self.renegotiate(other);
        }
    }

    fn unpublish_track(&mut self, pid: ParticipantId, mid: Mid) {
        let Some(track_id) = self
            .participants
            .get_mut(&pid)
            .and_then(|p| p.published.remove(&mid))
        else {
            return;
        };
        if let Some(p) = self.participants.get_mut(&pid) {
            p.ssrc_routes.retain(|_, (t, _)| *t != track_id);
        }
        self.drop_track(track_id);
    }

    /// A published track is gone: tell the room and stop it at every subscriber.
    fn drop_track(&mut self, track_id: TrackId) {
        let Some(track) = self.tracks.remove(&track_id) else {
            return;
        };
        let pid = track.info.participant_id;
        self.events.push_back(SfuEvent::TrackUnpublished {
            room: track.room.clone(),
            participant_id: pid,
            track_id,
        });
        for sub_id in track.subscribers {
            let Some(p) = self.participants.get_mut(&sub_id) else {
                continue;
            };
            let remove_now = match p.subscriptions.get_mut(&track_id) {
                Some(sub) => match sub.state {
                    OutState::ToAdd => true,
                    OutState::Open(m) | OutState::Negotiating(m) => {
                        sub.state = OutState::ToStop(m);
                        sub.forwarder.set_target(None);
                        false
                    }
                    _ => false,
                },
                None => false,
            };
            if remove_now {
                p.subscriptions.remove(&track_id);
            }
            self.renegotiate(sub_id);
        }
    }

    /// Ask for a new subscriber offer if something changed and no offer is
    /// outstanding; it goes to the client through signaling as an event.
    ///
    /// The offer is made once the current input is handled, not here: a
    /// joiner's microphone and camera are published one after the other, and
    /// an offer made at once for the first would be outstanding when the
    /// second comes, so every other participant would negotiate twice per
    /// joiner. SDP is most of what a join costs the core (`join_bench`).
    fn renegotiate(&mut self, pid: ParticipantId) {
        if !self.offers_due.contains(&pid) {
            self.offers_due.push(pid);
        }
    }

    fn make_subscriber_offer(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        first: Option<FirstLine>,
    ) -> Result<Option<SubscriberOffer>, SfuError> {
        self.make_subscriber_offer_inner(now, pid, first, false)
    }

    fn make_subscriber_offer_inner(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        first: Option<FirstLine>,
        force: bool,
    ) -> Result<Option<SubscriberOffer>, SfuError> {
        let participant = self
            .participants
            .get_mut(&pid)
            .ok_or(SfuError::UnknownParticipant)?;
        if participant.pending_offer.is_some() {
            // One offer at a time; the answer triggers the next.
            return Ok(None);
        }
        let key = participant.subscriber;
        let tracks = &self.tracks;
        let Some(peer) = self.peers.get_mut(&key) else {
            return Err(SfuError::UnknownParticipant);
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut api = peer.rtc.sdp_api();
            match first {
                Some(FirstLine::RoomChannel) => {
                    api.add_channel(ROOM_CHANNEL.to_owned());
                }
                Some(FirstLine::Inactive) => {
                    api.add_media(MediaKind::Audio, Direction::Inactive, None, None, None);
                }
                None => {}
            }
            for sub in participant.subscriptions.values_mut() {
                match sub.state {
                    OutState::ToAdd => {
                        let Some(track) = tracks.get(&sub.track) else {
                            continue;
                        };
                        let kind = match track.info.kind {
                            TrackKind::Audio => MediaKind::Audio,
                            TrackKind::Video => MediaKind::Video,
                        };
                        let mid = api.add_media(
                            kind,
                            Direction::SendOnly,
                            Some(track.info.participant_id.to_string()),
                            Some(track.info.track_id.to_string()),
                            None,
                        );
                        sub.state = OutState::Negotiating(mid);
                    }
                    OutState::ToStop(mid) => {
                        api.stop_media(mid);
                        sub.state = OutState::Stopping(mid);
                    }
                    _ => {}
                }
            }
            if !api.has_changes() && !force {
                return None;
            }
            api.apply()
        }));
        let applied = match outcome {
            Ok(applied) => applied,
            Err(_) => {
                self.fail_participant(pid, "internal error".to_owned());
                return Err(SfuError::SessionFailed);
            }
        };
        let Some((offer, pending)) = applied else {
            return Ok(None);
        };
        participant.pending_offer = Some(pending);
        let mut listed: Vec<SubscribedTrack> = participant
            .subscriptions
            .values()
            .filter_map(|sub| {
                let mid = match sub.state {
                    OutState::Negotiating(m) | OutState::Open(m) => m,
                    _ => return None,
                };
                let track = self.tracks.get(&sub.track)?;
                Some(SubscribedTrack {
                    mid: mid.to_string(),
                    track_id: sub.track,
                    participant_id: track.info.participant_id,
                    kind: track.info.kind,
                    source: track.info.source,
                })
            })
            .collect();
        listed.sort_by(|a, b| a.mid.cmp(&b.mid));
        // The SDP changes may have produced output (none expected, but drain anyway).
        self.with_rtc(now, key, |_| Ok(()))?;
        Ok(Some(SubscriberOffer {
            sdp: offer.to_sdp_string(),
            tracks: listed,
        }))
    }

    /// The hot path: one RTP packet from a publisher, out to its subscribers.
    fn route_rtp(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        publisher_key: PeerKey,
        packet: RtpPacket,
    ) {
        self.stats.rtp_in += 1;
        let ssrc = packet.header.ssrc;
        let Some(participant) = self.participants.get_mut(&pid) else {
            return;
        };
        let route = match participant.ssrc_routes.get(&ssrc) {
            Some(route) => Some(*route),
            None => {
                let found = self.peers.get_mut(&publisher_key).and_then(|peer| {
                    let mut api = peer.rtc.direct_api();
                    let stream = api.stream_rx(&ssrc)?;
                    Some((stream.mid(), stream.rid()))
                });
                found.and_then(|(mid, rid)| {
                    let track = *participant.published.get(&mid)?;
                    participant.ssrc_routes.insert(ssrc, (track, rid));
                    Some((track, rid))
                })
            }
        };
        let Some((track_id, rid)) = route else {
            self.stats.rtp_dropped += 1;
            return;
        };
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        track
            .meters
            .entry(rid)
            .or_insert_with(|| RateMeter::new(now))
            .add(packet.payload.len(), now);
        let pt_in = packet.header.payload_type;
        if !track.specs.iter().any(|(pt, _)| *pt == pt_in) {
            let spec = self.peers.get(&publisher_key).and_then(|peer| {
                peer.rtc
                    .codec_config()
                    .params()
                    .iter()
                    .find(|p| p.pt() == pt_in)
                    .map(|p| p.spec())
            });
            match spec {
                Some(spec) => {
                    track.specs.push((pt_in, spec));
                    track.codec = match spec.codec {
                        Codec::Vp8 => VideoCodec::Vp8,
                        Codec::Vp9 => VideoCodec::Vp9,
                        Codec::H264 => VideoCodec::H264,
                        _ => VideoCodec::Other,
                    };
                }
                None => {
                    self.stats.rtp_dropped += 1;
                    return;
                }
            }
        }
        let is_audio = track.info.kind == TrackKind::Audio;
        if is_audio
            && let Some(level) = packet.header.ext_vals.audio_level
            && let Some(room) = self.rooms.get_mut(&track.room)
            && !track.info.muted
        {
            room.speakers.handle_level(pid, level, now);
        }
        if track.info.muted {
            return;
        }
        let keyframe_start = !is_audio && codec::starts_keyframe(track.codec, &packet.payload);
        let spec = track
            .specs
            .iter()
            .find(|(pt, _)| *pt == pt_in)
            .map(|(_, s)| *s);
        let room = track.room.clone();
        let mut subscribers = std::mem::take(&mut self.scratch);
        subscribers.clear();
        subscribers.extend_from_slice(&track.subscribers);
        let ext = ExtensionValues {
            audio_level: packet.header.ext_vals.audio_level,
            voice_activity: packet.header.ext_vals.voice_activity,
            video_orientation: packet.header.ext_vals.video_orientation,
            ..Default::default()
        };
        let incoming = Incoming {
            layer: rid,
            seq: *packet.seq_no,
            timestamp: packet.header.timestamp,
            arrival: packet.timestamp,
            keyframe_start,
        };
        for sub_id in &subscribers {
            let Some(sub_part) = self.participants.get_mut(sub_id) else {
                continue;
            };
            let Some(sub) = sub_part.subscriptions.get_mut(&track_id) else {
                continue;
            };
            let OutState::Open(mid) = sub.state else {
                continue;
            };
            let (seq, timestamp, switched) = match sub.forwarder.handle(incoming) {
                Decision::Drop => continue,
                Decision::Forward {
                    seq,
                    timestamp,
                    switched,
                } => (seq, timestamp, switched),
            };
            let subscriber_key = sub_part.subscriber;
            let Some(peer) = self.peers.get_mut(&subscriber_key) else {
                continue;
            };
            let pt_out = match sub.pt_map.iter().find(|(i, _)| *i == pt_in) {
                Some((_, out)) => Some(*out),
                None => {
                    let out =
                        spec.and_then(|spec| matching_pt(peer.rtc.codec_config().params(), spec));
                    if let Some(out) = out {
                        sub.pt_map.push((pt_in, out));
                    }
                    out
                }
            };
            let Some(pt_out) = pt_out else {
                self.stats.rtp_dropped += 1;
                continue;
            };
            let write = RtpWrite::new(
                pt_out,
                SeqNo::from(seq),
                timestamp,
                packet.timestamp,
                packet.payload.clone(),
            )
            .marker(packet.header.marker)
            .nackable(!is_audio)
            .ext_vals(ext.clone());
            let written = catch_unwind(AssertUnwindSafe(|| {
                let mut api = peer.rtc.direct_api();
                // One hash lookup by the SSRC found last time; by mid (a walk)
                // only the first time or when the stream was replaced.
                let cached = sub.out_ssrc.filter(|(m, _)| *m == mid).map(|(_, s)| s);
                let unwritten = match cached.and_then(|ssrc| api.stream_tx(&ssrc)) {
                    Some(stream) => {
                        stream.write_rtp(write);
                        None
                    }
                    None => Some(write),
                };
                if let Some(write) = unwritten {
                    let Some(stream) = api.stream_tx_by_mid(mid, None) else {
                        return false;
                    };
                    sub.out_ssrc = Some((mid, stream.ssrc()));
                    stream.write_rtp(write);
                }
                // str0m sends what was written on the session's next pass
                // (`send_written`): one for all this input batch wrote to it.
                if !peer.written {
                    peer.written = true;
                    self.written.push(subscriber_key);
                }
                true
            }));
            match written {
                Ok(true) => {
                    self.stats.rtp_forwarded += 1;
                    if switched {
                        self.stats.layer_switches += 1;
                        let layer = track.layer_of(rid);
                        self.events.push_back(SfuEvent::LayerChanged {
                            room: room.clone(),
                            participant_id: *sub_id,
                            track_id,
                            layer,
                        });
                    }
                }
                Ok(false) => self.stats.rtp_dropped += 1,
                Err(_) => {
                    // Closing needs `&mut self`; do it after the loop.
                    self.rtc_events.push_back((subscriber_key, Event::Closed));
                }
            }
        }
        self.scratch = subscribers;
    }

    /// Ask a publisher for a keyframe of one layer, at most once per throttle
    /// window however many subscribers want it.
    fn request_keyframe(
        &mut self,
        now: Instant,
        track_id: TrackId,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    ) {
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        if track.info.kind != TrackKind::Video {
            return;
        }
        if let Some(last) = track.last_keyframe_request.get(&rid)
            && now.saturating_duration_since(*last) < KEYFRAME_THROTTLE
        {
            return;
        }
        track.last_keyframe_request.insert(rid, now);
        let mid = track.mid;
        let publisher = track.info.participant_id;
        let Some(key) = self.participants.get(&publisher).map(|p| p.publisher) else {
            return;
        };
        self.stats.keyframe_requests += 1;
        let _ = self.with_rtc(now, key, |rtc| {
            if let Some(stream) = rtc.direct_api().stream_rx_by_mid(mid, rid) {
                stream.request_keyframe(kind);
            }
            Ok(())
        });
    }

    /// Choose, for each video track a subscriber receives, the best layer that
    /// its requested size and its bandwidth estimate allow; pause video rather
    /// than starve audio.
    fn select_layers(&mut self, now: Instant, pid: ParticipantId) {
        let Some(participant) = self.participants.get_mut(&pid) else {
            return;
        };
        let estimate = participant
            .egress_estimate
            .map(|b| b.as_f64())
            .unwrap_or(INITIAL_ESTIMATE_BPS as f64);
        let mut budget = estimate;
        let mut desired = 0.0;
        let mut keyframes = Vec::new();
        // Audio first: it is cheap and matters most.
        let mut video: Vec<(TrackId, u8)> = Vec::new();
        for sub in participant.subscriptions.values_mut() {
            let Some(track) = self.tracks.get(&sub.track) else {
                continue;
            };
            if !matches!(sub.state, OutState::Open(_)) {
                sub.demand = None;
                continue;
            }
            if !sub.wanted || track.info.muted {
                sub.forwarder.set_target(None);
                sub.demand = None;
                continue;
            }
            match track.info.kind {
                TrackKind::Audio => {
                    sub.forwarder.set_target(Some(None));
                    budget -= AUDIO_BPS;
                    desired += AUDIO_BPS;
                }
                TrackKind::Video => {
                    let priority = match track.info.source {
                        TrackSource::ScreenShare => 0,
                        _ => 1 + (2 - sub.max_layer as u8),
                    };
                    video.push((sub.track, priority));
                }
            }
        }
        video.sort_by_key(|(id, priority)| (*priority, *id));
        // Dynacast's budget: the same choice made as if every layer were
        // arriving (see `Subscription::demand`).
        let mut want_budget = budget;
        for (track_id, _) in video {
            let (Some(sub), Some(track)) = (
                participant.subscriptions.get_mut(&track_id),
                self.tracks.get(&track_id),
            ) else {
                continue;
            };
            let choice = if track.rids.is_empty() {
                let bps = track
                    .meters
                    .get(&None)
                    .and_then(|m| m.bps(now))
                    .unwrap_or(300_000.0);
                desired += bps;
                budget -= bps;
                // A single layer is on whenever someone receives the track.
                sub.demand = Some(Layer::High);
                want_budget -= track
                    .meters
                    .get(&None)
                    .and_then(RateMeter::last_bps)
                    .unwrap_or(bps);
                Some(None)
            } else {
                let allowed: Vec<Rid> = track
                    .rids
                    .iter()
                    .copied()
                    .filter(|rid| {
                        track
                            .layer_of(Some(*rid))
                            .is_none_or(|l| l <= sub.max_layer)
                    })
                    .collect();
                let cost = |rid: Rid| {
                    track
                        .meters
                        .get(&Some(rid))
                        .and_then(|m| m.bps(now))
                        .unwrap_or_else(|| track.nominal_bps(Some(rid)))
                };
                if let Some(top) = allowed.last() {
                    desired += cost(*top);
                }
                // Dynacast asks for what this subscriber would pick if every
                // layer were arriving, so that a paused layer can come back;
                // a paused layer costs what it did when last measured.
                let want_cost = |rid: Rid| {
                    track
                        .meters
                        .get(&Some(rid))
                        .and_then(RateMeter::last_bps)
                        .unwrap_or_else(|| track.nominal_bps(Some(rid)))
                };
                let wants = allowed
                    .iter()
                    .rev()
                    .find(|rid| want_cost(**rid) <= want_budget)
                    .or_else(|| allowed.first())
                    .copied();
                if let Some(rid) = wants {
                    want_budget -= want_cost(rid);
                }
                sub.demand = wants.and_then(|rid| track.layer_of(Some(rid)));
                // Layers that are not arriving (paused by the publisher) cannot be chosen.
                let live = |rid: &Rid| {
                    track
                        .meters
                        .get(&Some(*rid))
                        .is_some_and(|m| m.bps(now).is_some())
                };
                let pick = allowed
                    .iter()
                    .rev()
                    .find(|rid| live(rid) && cost(**rid) <= budget)
                    .or_else(|| allowed.iter().find(|rid| live(rid)))
                    .or_else(|| allowed.first())
                    .copied();
                match pick {
                    // Too little bandwidth for even the lowest layer: pause video.
                    Some(rid)
                        if cost(rid) > budget + estimate * 0.25
                            && cost(rid) > budget.max(0.0) * 2.0 =>
                    {
                        None
                    }
                    Some(rid) => {
                        budget -= cost(rid);
                        Some(Some(rid))
                    }
                    None => None,
                }
            };
            if sub.forwarder.target() != choice
                && sub.forwarder.set_target(choice)
                && let Some(rid) = choice
            {
                keyframes.push((track_id, rid));
            }
        }
        let subscriber_key = participant.subscriber;
        if let Some(peer) = self.peers.get_mut(&subscriber_key) {
            let desired = Bitrate::bps(desired.max(100_000.0) as u64);
            let _ = catch_unwind(AssertUnwindSafe(|| {
                peer.rtc.bwe().set_bitrate(Bitrate::kbps(100), desired)
            }));
        }
        for (track_id, rid) in keyframes {
            self.request_keyframe(now, track_id, rid, KeyframeRequestKind::Pli);
        }
    }

    fn relay_data(&mut self, now: Instant, pid: ParticipantId, data: str0m::channel::ChannelData) {
        let Some(participant) = self.participants.get(&pid) else {
            return;
        };
        if participant
            .publisher_channels
            .get(&data.id)
            .map(String::as_str)
            != Some(ROOM_CHANNEL)
        {
            return;
        }
        if data.binary || data.data.len() > MAX_DATA_MESSAGE {
            self.stats.data_messages_dropped += 1;
            return;
        }
        let Ok(text) = std::str::from_utf8(&data.data) else {
            self.stats.data_messages_dropped += 1;
            return;
        };
        let envelope = serde_json::json!({ "from": pid, "text": text }).to_string();
        let room = participant.room.clone();
        let others: Vec<(PeerKey, ChannelId)> = self
            .rooms
            .get(&room)
            .map(|r| {
                r.participants
                    .iter()
                    .filter(|p| **p != pid)
                    .filter_map(|p| self.participants.get(p))
                    .filter_map(|p| p.room_channel.map(|c| (p.subscriber, c)))
                    .collect()
            })
            .unwrap_or_default();
        for (key, channel) in others {
            let sent = self.with_rtc(now, key, |rtc| {
                if let Some(mut ch) = rtc.channel(channel) {
                    let _ = ch.write(false, envelope.as_bytes());
                }
                Ok(())
            });
            if sent.is_ok() {
                self.stats.data_messages_relayed += 1;
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
        for pid in &ids {
            self.select_layers(now, *pid);
            // A keyframe request can be lost; keep asking while a switch waits.
            let waiting: Vec<(TrackId, Option<Rid>)> = self
                .participants
                .get(pid)
                .map(|p| {
                    p.subscriptions
                        .values()
                        .filter(|s| {
                            matches!(s.state, OutState::Open(_)) && s.forwarder.wants_keyframe()
                        })
                        .filter_map(|s| s.forwarder.target().map(|rid| (s.track, rid)))
                        .collect()
                })
                .unwrap_or_default();
            for (track, rid) in waiting {
                self.request_keyframe(now, track, rid, KeyframeRequestKind::Pli);
            }
        }
        self.update_publisher_layers(now);
        for (room_id, room) in &mut self.rooms {
            if let Some(speakers) = room.speakers.poll_change(now) {
                self.events.push_back(SfuEvent::Speakers {
                    room: room_id.clone(),
                    speakers: speakers
                        .into_iter()
                        .map(|(participant_id, level)| SpeakerLevel {
                            participant_id,
                            level,
                        })
                        .collect(),
                });
            }
        }
        let expired: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| {
                p.disconnected_since.is_some_and(|t| {
                    now.saturating_duration_since(t) >= self.config.disconnect_grace
                })
            })
            .map(|p| p.id)
            .collect();
        for pid in expired {
            self.fail_participant(pid, "media connection lost".into());
        }
        let dead: Vec<ParticipantId> = self
            .peers
            .values()
            .filter(|p| !p.rtc.is_alive())
            .map(|p| p.participant)
            .collect();
        for pid in dead {
            if self.participants.contains_key(&pid) {
                self.fail_participant(pid, "media connection closed".into());
            }
        }
        self.process(now);
    }

    /// Dynacast: tell each publisher which layers of its video tracks its
    /// subscribers want (see [`dynacast`]). Runs on the tick after every
    /// subscriber's layer choice, so each `Subscription::demand` is current; a
    /// track nobody subscribes to wants nothing. A muted track is left as it
    /// is: its publisher sends nothing anyway, and unmuting must not wait.
    fn update_publisher_layers(&mut self, now: Instant) {
        for (track_id, track) in &mut self.tracks {
            if track.info.kind != TrackKind::Video {
                continue;
            }
            if track.info.muted {
                track.gate.hold();
                continue;
            }
            let up_to = track
                .subscribers
                .iter()
                .filter_map(|s| self.participants.get(s)?.subscriptions.get(track_id))
                .filter_map(|sub| sub.demand)
                .max();
            if let Some(active) = track.gate.handle_wanted(now, up_to) {
                tracing::debug!(%track_id, ?active, "publisher layers");
                self.events.push_back(SfuEvent::PublisherLayers {
                    room: track.room.clone(),
                    participant_id: track.info.participant_id,
                    track_id: *track_id,
                    mid: track.mid.to_string(),
                    active,
                });
            }
        }
    }

    fn report_quality(&mut self) {
        for p in self.participants.values() {
            let quality = if p.disconnected_since.is_some() {
                Quality::Lost
            } else if p.ingress_loss > 0.10 || p.rtt.is_some_and(|r| r > Duration::from_millis(400))
            {
                Quality::Poor
            } else if p.ingress_loss > 0.02 || p.rtt.is_some_and(|r| r > Duration::from_millis(150))
            {
                Quality::Good
            } else {
                Quality::Excellent
            };
            self.events.push_back(SfuEvent::Quality {
                room: p.room.clone(),
                sample: QualitySample {
                    participant_id: p.id,
                    quality,
                    egress_estimate_bps: p.egress_estimate.map(|b| b.as_u64()),
                    ingress_loss: p.ingress_loss,
                    rtt_ms: p.rtt.map(|r| r.as_secs_f32() * 1000.0),
                },
            });
        }
    }

    /// Remove a participant and everything that hangs off it. With a `reason`,
    /// the SFU decided (failure or timeout) and signaling is told.
    fn remove_participant(&mut self, pid: ParticipantId, reason: Option<String>) {
        let Some(participant) = self.participants.remove(&pid) else {
            return;
        };
        for key in [participant.publisher, participant.subscriber] {
            if let Some(peer) = self.peers.remove(&key) {
                self.by_ufrag.remove(&peer.ufrag);
            }
        }
        self.by_addr
            .retain(|_, key| *key != participant.publisher && *key != participant.subscriber);
        for track_id in participant.subscriptions.keys() {
            if let Some(track) = self.tracks.get_mut(track_id) {
                track.subscribers.retain(|s| *s != pid);
            }
        }
        if let Some(room) = self.rooms.get_mut(&participant.room) {
            room.participants.retain(|p| *p != pid);
            room.speakers.remove(pid);
        }
        // Its tracks go away for everyone else (this may renegotiate them).
        let mut published: Vec<TrackId> = participant.published.into_values().collect();
        published.sort();
        for track_id in published {
            self.drop_track(track_id);
        }
        if self
            .rooms
            .get(&participant.room)
            .is_some_and(|r| r.participants.is_empty())
        {
            self.rooms.remove(&participant.room);
        }
        if let Some(reason) = reason {
            tracing::info!(%pid, %reason, "session closed by the SFU");
            self.events.push_back(SfuEvent::Disconnected {
                room: participant.room,
                participant_id: pid,
                reason,
            });
        }
    }
}

/// Poll one `Rtc` until it has nothing more to say. The only place `poll_output`
/// is called: str0m requires a full drain after every input or API call.
fn drain(
    now: Instant,
    key: PeerKey,
    peer: &mut Peer,
    transmits: &mut VecDeque<Transmit>,
    events: &mut VecDeque<(PeerKey, Event)>,
    timeouts: &mut BinaryHeap<Reverse<(Instant, PeerKey)>>,
    coalesced: &mut u64,
) -> Result<(), RtcError> {
    loop {
        match peer.rtc.poll_output()? {
            Output::Timeout(at) => {
                schedule(now, key, peer, at, timeouts, coalesced);
                return Ok(());
            }
            Output::Transmit(t) => transmits.push_back(Transmit {
                proto: t.proto,
                destination: t.destination,
                contents: t.contents.into(),
            }),
            Output::Event(event) => events.push_back((key, event)),
        }
    }
}

/// When to next give a session `Input::Timeout`, given that str0m asked for
/// `at`. Exactly then, except a subscriber's housekeeping (stats, the pacer's
/// budget refresh, the pause check), which runs at most every
/// [`HOUSEKEEPING_EVERY`]. Publishers are left exact: their NACK timers
/// matter to loss repair. A write or an incoming datagram re-runs this with
/// what str0m wants then, so media is never held back by it.
///
/// The estimator's delay controller (`Reason::BweDelayControl`) is exact too:
/// put off to 10 ms, the estimates of full WebRTC receivers fell, and in ten
/// 4-person meetings a quarter of the receivers switched down a layer against
/// a tenth with it exact (three runs each) and some runs lost video. That went
/// unseen while str0m's pacer gave every sent packet a pass of its own, which
/// served the controller's timer in passing; since a pass sends a whole burst
/// (`vendor/str0m/PATCHES.md`) the timer has to be served for itself.
fn schedule(
    now: Instant,
    key: PeerKey,
    peer: &mut Peer,
    at: Instant,
    timeouts: &mut BinaryHeap<Reverse<(Instant, PeerKey)>>,
    coalesced: &mut u64,
) {
    let reason = peer.rtc.last_timeout_reason();
    let lenient = if peer.role == PeerRole::Subscriber
        && matches!(
            reason,
            Reason::Stats | Reason::PauseCheck | Reason::Pacer(PacerReason::Handle)
        ) {
        if at < now + HOUSEKEEPING_EVERY {
            *coalesced += 1;
        }
        Some(at.max(now + HOUSEKEEPING_EVERY))
    } else {
        None
    };
    let at = match (lenient, peer.timeout) {
        // Already due a little sooner than that: keep it, no new heap entry.
        (Some(latest), Some(live)) if live > now && live <= latest => return,
        (Some(latest), _) => latest,
        (None, _) => at,
    };
    if peer.timeout != Some(at) {
        peer.timeout = Some(at);
        timeouts.push(Reverse((at, key)));
    }
}

/// How long a subscriber stream keeps what it sent for NACKs, at this round
/// trip: libwebrtc's max(1 s, 3 × RTT) (a NACK can come a round trip after
/// the loss, and again after each lost retransmission), at most
/// [`RTX_HISTORY_MAX`]. Rounded up to 100 ms; a change costs nothing (what
/// is held stays, only the age it is evicted at moves).
fn nack_history(rtt: Duration) -> Duration {
    let wanted = (rtt * 3).clamp(RTX_HISTORY, RTX_HISTORY_MAX);
    Duration::from_millis((wanted.as_millis() as u64).div_ceil(100) * 100)
}

fn declarations(tracks: &[TrackDeclaration]) -> HashMap<String, TrackSource> {
    tracks.iter().map(|t| (t.mid.clone(), t.source)).collect()
}

fn new_subscription(track: &Track) -> Subscription {
    let (needs_keyframe, clock_rate) = match track.info.kind {
        TrackKind::Audio => (false, 48_000),
        TrackKind::Video => (true, 90_000),
    };
    Subscription {
        track: track.info.track_id,
        state: OutState::ToAdd,
        forwarder: Forwarder::new(needs_keyframe, clock_rate),
        wanted: true,
        max_layer: Layer::High,
        demand: None,
        pt_map: Vec::new(),
        out_ssrc: None,
    }
}

/// The codecs every connection negotiates: one configuration per codec, the one
/// every browser that has the codec can send and decode.
///
/// str0m's defaults list seven H.264 profiles and two VP9 profiles, each with its
/// RTX twin: 20 payload types on every video m-line. A subscriber connection in a
/// 25-person meeting has ~50 m-lines and is renegotiated at each join, and most
/// of a renegotiation's cost is writing and parsing those lines (see
/// `docs/benchmarks/sfu-join.md`). Browsers publish VP8 first; Safari and
/// Firefox's H.264 is Constrained Baseline with packetization mode 1, which
/// Chrome offers too; VP9 profile 2 is 10-bit and rarely sent. Forwarding needs
/// the subscriber to take the very configuration the publisher sends, so a
/// single shared list keeps both sides matching.
fn media_codecs(codecs: &mut str0m::format::CodecConfig) {
    use str0m::format::FormatParams;
    use str0m::media::Frequency;
    codecs.clear();
    codecs.enable_opus(true, false);
    codecs.enable_vp8(true);
    // Constrained Baseline, level 3.1, packetization mode 1 (str0m's 108/109).
    codecs.add_h264(108.into(), Some(109.into()), true, 0x42e01f);
    codecs.add_config(
        98.into(),
        Some(99.into()),
        Codec::Vp9,
        Frequency::NINETY_KHZ,
        None,
        FormatParams {
            profile_id: Some(0),
            ..Default::default()
        },
    );
}

/// The subscriber-side payload type for the codec the publisher used.
fn matching_pt(params: &[str0m::format::PayloadParams], spec: CodecSpec) -> Option<Pt> {
    params
        .iter()
        .find(|p| p.spec() == spec)
        .or_else(|| {
            params.iter().find(|p| {
                let s = p.spec();
                s.codec == spec.codec
                    && s.clock_rate == spec.clock_rate
                    && (spec.codec != Codec::H264
                        || (s.format.profile_level_id == spec.format.profile_level_id
                            && s.format.packetization_mode == spec.format.packetization_mode))
            })
        })
        .or_else(|| {
            params
                .iter()
                .find(|p| p.spec().codec == spec.codec && p.spec().clock_rate == spec.clock_rate)
        })
        .map(|p| p.pt())
}

fn random_token(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl From<SfuError> for proto::ErrorCode {
    fn from(err: SfuError) -> Self {
        use proto::ErrorCode;
        match err {
            SfuError::UnknownParticipant | SfuError::UnknownTrack => ErrorCode::NotFound,
            SfuError::DuplicateParticipant | SfuError::NoPendingOffer => ErrorCode::Conflict,
            SfuError::BadSdp(_) | SfuError::BadCandidate => ErrorCode::InvalidField,
            SfuError::SessionFailed => ErrorCode::Conflict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nack_history_is_three_round_trips_between_one_and_three_seconds() {
        let ms = Duration::from_millis;
        assert_eq!(nack_history(ms(20)), RTX_HISTORY);
        assert_eq!(nack_history(ms(333)), RTX_HISTORY);
        assert_eq!(nack_history(ms(400)), ms(1200));
        // Rounded up to 100 ms: 3 × 401 ms = 1 203 ms.
        assert_eq!(nack_history(ms(401)), ms(1300));
        assert_eq!(nack_history(ms(900)), ms(2700));
        assert_eq!(nack_history(ms(1100)), RTX_HISTORY_MAX);
        assert_eq!(nack_history(Duration::from_secs(5)), RTX_HISTORY_MAX);
    }
}
