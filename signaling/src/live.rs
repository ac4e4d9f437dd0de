//! The live side of signaling on one replica: the room store, the SFU nodes, the
//! room tokens, and the sessions connected here.
//!
//! SFU events reach every replica (each consumes every node's `GET /v1/events`). An
//! event about one participant is acted on only by the replica holding that
//! participant's session, so a room change derived from it happens once; speaker
//! changes are acted on by the replica holding the loudest speaker.

use crate::clock;
use crate::room::state::RoomError;
use crate::room::{Room, RoomEvent, RoomStore, UpdateError, Updated};
use crate::room_token::RoomTokens;
use crate::sfu::SfuClient;
use crate::sfu::nodes;
use futures_util::StreamExt;
use proto::ErrorCode;
use proto::ids::ParticipantId;
use proto::media::RoomId;
use proto::sfu::SfuEvent;
use servicekit::ApiError;
use servicekit::backends::Db;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Timings of WebSocket sessions.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The first message (`join`) must come within this.
    pub join_timeout: Duration,
    /// The server pings this often.
    pub ping_interval: Duration,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// A dropped client may resume within this.
    pub reconnect_grace: Duration,
    /// How often a session refreshes its presence in the room store.
    pub heartbeat_interval: Duration,
    /// Sustained client messages per second.
    pub rate_per_sec: f64,
    /// Messages a client may send in a burst.
    pub burst: f64,
    /// How often every known SFU node's load is probed.
    pub probe_interval: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            join_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            reconnect_grace: Duration::from_secs(20),
            heartbeat_interval: Duration::from_secs(20),
            rate_per_sec: 20.0,
            burst: 50.0,
            probe_interval: nodes::PROBE_INTERVAL,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

/// Counters of the signaling WebSocket (registered on the service's `/metrics`).
#[derive(Clone, Default)]
pub struct RtcMetrics {
    /// Open `/rtc` connections.
    pub sockets: prometheus_client::metrics::gauge::Gauge,
    /// `error` messages sent to clients, by code (bad input is counted here).
    pub errors: prometheus_client::metrics::family::Family<
        CodeLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Participants who joined a room (fresh or resumed).
    pub joins: prometheus_client::metrics::counter::Counter,
    /// SFU events received.
    pub sfu_events: prometheus_client::metrics::counter::Counter,
}

impl RtcMetrics {
    pub fn register(&self, metrics: &servicekit::metrics::Metrics) {
        metrics.register(
            "signaling_ws_connections",
            "Open signaling WebSocket connections",
            self.sockets.clone(),
        );
        metrics.register(
            "signaling_ws_errors",
            "Error messages sent on the signaling WebSocket, by code",
            self.errors.clone(),
        );
        metrics.register(
            "signaling_joins",
            "Participants who joined or resumed a room",
            self.joins.clone(),
        );
        metrics.register(
            "signaling_sfu_events",
            "Events received from SFU nodes",
            self.sfu_events.clone(),
        );
    }
}

pub use crate::mailbox::Direct;
use crate::mailbox::Mailbox;

struct LocalSession {
    room: RoomId,
    conn: Uuid,
    /// What the SFU says to this session (see [`Mailbox`]).
    direct: Arc<Mailbox>,
}

/// One replica's live state. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    rooms: Arc<dyn RoomStore>,
    sfu: Arc<dyn SfuClient>,
    tokens: RoomTokens,
    db: Db,
    configured_nodes: Vec<String>,
    options: SessionOptions,
    local: Mutex<HashMap<ParticipantId, LocalSession>>,
    consuming: Mutex<HashSet<String>>,
    shutdown: CancellationToken,
    metrics: RtcMetrics,
}

impl Live {
    pub fn new(
        rooms: Arc<dyn RoomStore>,
        sfu: Arc<dyn SfuClient>,
        tokens: RoomTokens,
        db: Db,
        configured_nodes: Vec<String>,
        options: SessionOptions,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                rooms,
                sfu,
                tokens,
                db,
                configured_nodes,
                options,
                local: Mutex::new(HashMap::new()),
                consuming: Mutex::new(HashSet::new()),
                shutdown,
                metrics: RtcMetrics::default(),
            }),
        }
    }

    /// Start the background work: probing node load, and consuming the configured
    /// nodes' event streams.
    pub fn start(&self) {
        tokio::spawn(nodes::run_prober(
            self.inner.configured_nodes.clone(),
            self.inner.sfu.clone(),
            self.inner.rooms.clone(),
            self.inner.options.probe_interval,
            self.inner.shutdown.clone(),
        ));
        for node in self.inner.configured_nodes.clone() {
            self.ensure_consumer(&node);
        }
    }

    pub fn tokens(&self) -> &RoomTokens {
        &self.inner.tokens
    }

    pub fn rooms(&self) -> &dyn RoomStore {
        self.inner.rooms.as_ref()
    }

    pub fn sfu(&self) -> &dyn SfuClient {
        self.inner.sfu.as_ref()
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn options(&self) -> &SessionOptions {
        &self.inner.options
    }

    pub fn metrics(&self) -> &RtcMetrics {
        &self.inner.metrics
    }

    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// A room's live state, for the REST join's checks.
    pub async fn room(&self, room: &RoomId) -> Result<Option<Room>, ApiError> {
        self.inner
            .rooms
            .load(room)
            .await
            .map_err(ApiError::unavailable)
    }

    /// Apply a change to a room (see [`RoomStore::update`]).
    pub async fn update(
        &self,
        room: &RoomId,
        mut change: impl FnMut(&mut Option<Room>) -> Result<(), RoomError> + Send,
    ) -> Result<Updated, UpdateError> {
        let now = clock::now_ms();
        let grace =
            i64::try_from(self.inner.options.reconnect_grace.as_millis()).unwrap_or(i64::MAX);
        let mut wrapped = |state: &mut Option<Room>| {
            if let Some(room) = state.as_mut() {
                room.handle_expiry(now, grace);
            }
            change(state)
        };
        self.inner.rooms.update(room, &mut wrapped).await
    }

    pub async fn subscribe(
        &self,
        room: &RoomId,
    ) -> Result<broadcast::Receiver<RoomEvent>, ApiError> {
        self.inner
            .rooms
            .subscribe(room)
            .await
            .map_err(ApiError::unavailable)
    }

    /// End a room from outside (the meeting was cancelled).
    pub async fn end_room(&self, room: &RoomId) {
        let result = self
            .update(room, |state| {
                if let Some(room) = state.as_mut() {
                    room.handle_cancel();
                }
                Ok(())
            })
            .await;
        if let Err(err) = result {
            tracing::warn!(%err, %room, "could not end the room");
        }
    }

    /// The node for `room`: the one it lives on, or the least-loaded live node.
    pub async fn choose_node(&self, existing: Option<&Room>) -> Result<String, ApiError> {
        let now = clock::now_ms();
        let mut live = self
            .inner
            .rooms
            .live_nodes(now)
            .await
            .map_err(ApiError::unavailable)?;
        if live.is_empty() {
            // Nothing probed yet (just started) or every node is down: ask now.
            for url in &self.inner.configured_nodes {
                nodes::probe(self.inner.sfu.as_ref(), self.inner.rooms.as_ref(), url).await;
            }
            live = self
                .inner
                .rooms
                .live_nodes(clock::now_ms())
                .await
                .map_err(ApiError::unavailable)?;
        }
        if let Some(node) = existing.and_then(|r| r.node.as_ref()) {
            // A room stays on its node while anyone is in it.
            let occupied = existing.is_some_and(|r| !r.participants.is_empty());
            if occupied || live.iter().any(|n| &n.url == node) {
                return Ok(node.clone());
            }
        }
        nodes::least_loaded(&live)
            .map(|n| n.url.clone())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UpstreamUnavailable,
                    "no media server is available",
                )
            })
    }

    /// Consume `node`'s event stream (once per node, for the replica's lifetime).
    pub fn ensure_consumer(&self, node: &str) {
        {
            let mut consuming = self
                .inner
                .consuming
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !consuming.insert(node.to_owned()) {
                return;
            }
        }
        tokio::spawn(self.clone().consume(node.to_owned()));
    }

    /// One long-lived connection to the node's events, reconnecting with backoff.
    async fn consume(self, node: String) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.inner.sfu.events(&node).await {
                Ok(mut stream) => {
                    tracing::info!(%node, "consuming sfu events");
                    backoff = Duration::from_millis(200);
                    loop {
                        tokio::select! {
                            _ = self.inner.shutdown.cancelled() => return,
                            event = stream.next() => match event {
                                Some(event) => self.on_sfu_event(event).await,
                                None => break,
                            }
                        }
                    }
                    tracing::warn!(%node, "sfu event stream ended; reconnecting");
                }
                Err(err) => tracing::debug!(%node, %err, "cannot open the sfu event stream"),
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    // --- local sessions ---

    pub fn register(&self, participant: ParticipantId, room: RoomId, conn: Uuid) -> Arc<Mailbox> {
        let mailbox = Arc::new(Mailbox::new());
        let mut local = self.inner.local.lock().unwrap_or_else(|e| e.into_inner());
        let previous = local.insert(
            participant,
            LocalSession {
                room: room.clone(),
                conn,
                direct: mailbox.clone(),
            },
        );
        // The session this one takes over (a resume): what the SFU said to it
        // and it had not sent yet (an offer waiting for an answer, say) goes
        // to this one, then its mailbox ends. Posts cannot slip in between:
        // they find the session under the lock held here.
        if let Some(previous) = previous {
            if previous.room == room {
                mailbox.take_over(&previous.direct);
            }
            previous.direct.close();
        }
        mailbox
    }

    pub fn unregister(&self, participant: ParticipantId, conn: Uuid) {
        let mut local = self.inner.local.lock().unwrap_or_else(|e| e.into_inner());
        if local.get(&participant).is_some_and(|s| s.conn == conn)
            && let Some(session) = local.remove(&participant)
        {
            session.direct.close();
        }
    }

    fn is_local(&self, room: &RoomId, participant: ParticipantId) -> bool {
        let local = self.inner.local.lock().unwrap_or_else(|e| e.into_inner());
        local.get(&participant).is_some_and(|s| &s.room == room)
    }

    fn has_local_in(&self, room: &RoomId) -> bool {
        let local = self.inner.local.lock().unwrap_or_else(|e| e.into_inner());
        local.values().any(|s| &s.room == room)
    }

    fn direct(&self, room: &RoomId, participant: ParticipantId, message: Direct) {
        let local = self.inner.local.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(session) = local.get(&participant).filter(|s| &s.room == room) {
            // Never blocks and never loses the latest state (see `Mailbox`).
            session.direct.post(message);
        }
    }

    // --- SFU events ---

    /// Act on one SFU event (see the module doc for who acts on what).
    pub async fn on_sfu_event(&self, event: SfuEvent) {
        self.inner.metrics.sfu_events.inc();
        let result = match event {
            SfuEvent::SubscriberOffer {
                ref room,
                participant_id,
                ..
            }
            | SfuEvent::LayerChanged {
                ref room,
                participant_id,
                ..
            }
            // To the publisher: `participant_id` is whose track it is.
            | SfuEvent::PublisherLayers {
                ref room,
                participant_id,
                ..
            }
            | SfuEvent::Disconnected {
                ref room,
                participant_id,
                ..
            } => {
                let room = room.clone();
                self.direct(&room, participant_id, Direct::Sfu(event));
                return;
            }
            SfuEvent::Connected {
                room,
                participant_id,
            } => {
                tracing::debug!(%room, %participant_id, "media connected");
                return;
            }
            SfuEvent::TrackPublished { room, track } => {
                if !self.is_local(&room, track.participant_id) {
                    return;
                }
                self.update(&room, |state| {
                    if let Some(r) = state.as_mut() {
                        let _ = r.handle_track_published(track.clone());
                    }
                    Ok(())
                })
                .await
            }
            SfuEvent::TrackUnpublished {
                room,
                participant_id,
                track_id,
            } => {
                if !self.is_local(&room, participant_id) {
                    return;
                }
                self.update(&room, |state| {
                    if let Some(r) = state.as_mut() {
                        r.handle_track_unpublished(participant_id, track_id);
                    }
                    Ok(())
                })
                .await
            }
            SfuEvent::TrackMuted {
                room,
                participant_id,
                track_id,
                muted,
            } => {
                if !self.is_local(&room, participant_id) {
                    return;
                }
                self.update(&room, |state| {
                    if let Some(r) = state.as_mut() {
                        let _ = r.handle_track_muted(participant_id, track_id, muted);
                    }
                    Ok(())
                })
                .await
            }
            SfuEvent::Speakers { room, speakers } => {
                let acts = match speakers.first() {
                    Some(loudest) => self.is_local(&room, loudest.participant_id),
                    None => self.has_local_in(&room),
                };
                if !acts {
                    return;
                }
                self.update(&room, |state| {
                    if let Some(r) = state.as_mut() {
                        r.handle_speakers(speakers.clone());
                    }
                    Ok(())
                })
                .await
            }
            SfuEvent::Quality { room, sample } => {
                if !self.is_local(&room, sample.participant_id) {
                    return;
                }
                // For analytics: the sample goes on the bus through the outbox
                // (written by the one replica holding the participant).
                if let Ok(meeting) = room.as_str().parse::<proto::ids::MeetingId>()
                    && let Err(err) =
                        crate::outbox::write_quality(self.db(), meeting, &sample).await
                {
                    tracing::debug!(%err, "cannot record a quality sample");
                }
                self.update(&room, |state| {
                    if let Some(r) = state.as_mut() {
                        r.handle_quality(sample.participant_id, sample.quality);
                    }
                    Ok(())
                })
                .await
            }
            SfuEvent::Data {
                room,
                participant_id,
                label,
                text,
            } => {
                if label != "chat" || !self.is_local(&room, participant_id) {
                    return;
                }
                let text: String = text.chars().take(crate::rtc::MAX_CHAT_CHARS).collect();
                let now = clock::now_ms();
                self.update(&room, |state| {
                    if let Some(r) = state.as_mut() {
                        let _ = r.handle_chat(participant_id, text.clone(), now);
                    }
                    Ok(())
                })
                .await
            }
        };
        if let Err(err) = result {
            tracing::warn!(%err, "could not apply an sfu event");
        }
    }
}

/// What a failed room change means for a client.
pub fn update_error(err: &UpdateError) -> (ErrorCode, String) {
    match err {
        UpdateError::Room(err) => (err.code(), err.to_string()),
        UpdateError::Store(err) => {
            tracing::warn!(%err, "room store unavailable");
            (
                ErrorCode::ServiceUnavailable,
                "room state temporarily unavailable".to_owned(),
            )
        }
    }
}
