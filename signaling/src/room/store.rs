//! The `RoomStore` trait and its in-memory backend (the embedded mode).
//!
//! A store keeps each room's [`Room`] state, applies a change and publishes the events
//! it produced as one atomic step (so sequence numbers and delivery order agree on
//! every replica), delivers a room's events to local subscribers, and keeps the SFU
//! node registry.

use super::state::{Room, RoomError, RoomEvent};
use futures_util::future::BoxFuture;
use proto::media::RoomId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// How many events a slow subscriber may fall behind before it is told it lagged.
pub const SUBSCRIBER_BUFFER: usize = 256;
/// A node whose heartbeat is older than this is dead: it gets no new rooms.
pub const NODE_TTL_MS: i64 = 15_000;

#[derive(Debug, Clone, thiserror::Error)]
#[error("room store unavailable: {0}")]
pub struct StoreError(pub String);

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Room(#[from] RoomError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A change to a room. It may run more than once (optimistic concurrency), so it must
/// only touch the room it is given. `None` in: the room does not exist (create it if
/// the change calls for it); `None` left: delete it.
pub type Change<'a> = dyn FnMut(&mut Option<Room>) -> Result<(), RoomError> + Send + 'a;

/// What an update left behind.
#[derive(Debug, Clone)]
pub struct Updated {
    pub room: Option<Room>,
    pub events: Vec<RoomEvent>,
}

/// An SFU node as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's control API base URL.
    pub url: String,
    /// Unitless; 1.0 is full.
    pub load: f64,
    pub rooms: u32,
    pub participants: u32,
    /// Last heartbeat, Unix ms.
    pub seen_ms: i64,
}

pub trait RoomStore: Send + Sync + 'static {
    fn load<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<Option<Room>, StoreError>>;

    /// Apply `change` atomically and publish the events it produced (drained from
    /// [`Room::poll_events`]) to the room's subscribers, in order. An empty or ended
    /// room is deleted.
    fn update<'a>(
        &'a self,
        room: &'a RoomId,
        change: &'a mut Change<'a>,
    ) -> BoxFuture<'a, Result<Updated, UpdateError>>;

    /// Receive the room's events from now on (from every replica). Resolves once the
    /// subscription is in place, so an update made after it is never missed.
    fn subscribe<'a>(
        &'a self,
        room: &'a RoomId,
    ) -> BoxFuture<'a, Result<broadcast::Receiver<RoomEvent>, StoreError>>;

    /// Record a node's heartbeat and load.
    fn put_node<'a>(&'a self, node: NodeStatus) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Nodes that heart-beat within [`NODE_TTL_MS`] of `now_ms`.
    fn live_nodes(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<NodeStatus>, StoreError>>;
}

/// Finish a change: drain the room's events and decide whether to keep it.
pub(crate) fn settle(room: &mut Option<Room>) -> Vec<RoomEvent> {
    let events = room.as_mut().map(Room::poll_events).unwrap_or_default();
    if room.as_ref().is_some_and(|r| r.is_empty() || r.ended) {
        *room = None;
    }
    events
}

/// Local fan-out: one broadcast channel per room with local subscribers.
#[derive(Default)]
pub(crate) struct Hub {
    rooms: Mutex<HashMap<RoomId, broadcast::Sender<RoomEvent>>>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, broadcast::Sender<RoomEvent>>> {
        // The map holds plain channels; a panic elsewhere cannot leave it half-changed.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribe; `true` with it when the room had no local subscribers before.
    pub(crate) fn subscribe(&self, room: &RoomId) -> (broadcast::Receiver<RoomEvent>, bool) {
        let mut rooms = self.lock();
        match rooms.get(room) {
            Some(sender) => (sender.subscribe(), false),
            None => {
                let (sender, receiver) = broadcast::channel(SUBSCRIBER_BUFFER);
                rooms.insert(room.clone(), sender);
                (receiver, true)
            }
        }
    }

    pub(crate) fn deliver(&self, event: RoomEvent) {
        if let Some(sender) = self.lock().get(&event.room) {
            // No receiver left is fine: the sweep removes the room.
            let _ = sender.send(event);
        }
    }

    /// Forget one room's channel (its subscription could not be set up).
    pub(crate) fn forget(&self, room: &RoomId) {
        self.lock().remove(room);
    }

    /// Forget rooms nobody here listens to any more; returns them.
    pub(crate) fn sweep(&self) -> Vec<RoomId> {
        let mut rooms = self.lock();
        let idle: Vec<RoomId> = rooms
            .iter()
            .filter(|(_, s)| s.receiver_count() == 0)
            .map(|(r, _)| r.clone())
            .collect();
        for room in &idle {
            rooms.remove(room);
        }
        idle
    }

    pub(crate) fn rooms(&self) -> Vec<RoomId> {
        self.lock().keys().cloned().collect()
    }
}

/// Rooms in this process's memory: the embedded mode (one signaling replica).
#[derive(Default, Clone)]
pub struct MemoryStore {
    inner: Arc<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    rooms: Mutex<HashMap<RoomId, Room>>,
    nodes: Mutex<HashMap<String, NodeStatus>>,
    hub: Hub,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl RoomStore for MemoryStore {
    fn load<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<Option<Room>, StoreError>> {
        Box::pin(async move {
            let rooms = self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner());
            Ok(rooms.get(room).cloned())
        })
    }

    fn update<'a>(
        &'a self,
        room: &'a RoomId,
        change: &'a mut Change<'a>,
    ) -> BoxFuture<'a, Result<Updated, UpdateError>> {
        Box::pin(async move {
            // Held across the change and the delivery (no await inside), so events
            // reach subscribers in sequence order.
            let mut rooms = self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner());
            let mut state = rooms.get(room).cloned();
            change(&mut state)?;
            let events = settle(&mut state);
            match &state {
                Some(updated) => {
                    rooms.insert(room.clone(), updated.clone());
                }
                None => {
                    rooms.remove(room);
                }
            }
            for event in &events {
                self.inner.hub.deliver(event.clone());
            }
            Ok(Updated {
                room: state,
                events,
            })
        })
    }

    fn subscribe<'a>(
        &'a self,
        room: &'a RoomId,
    ) -> BoxFuture<'a, Result<broadcast::Receiver<RoomEvent>, StoreError>> {
        Box::pin(async move {
            let _rooms = self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner());
            // Forget rooms nobody listens to any more, then listen to this one.
            self.inner.hub.sweep();
            Ok(self.inner.hub.subscribe(room).0)
        })
    }

    fn put_node<'a>(&'a self, node: NodeStatus) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut nodes = self.inner.nodes.lock().unwrap_or_else(|e| e.into_inner());
            nodes.insert(node.url.clone(), node);
            Ok(())
        })
    }

    fn live_nodes(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<NodeStatus>, StoreError>> {
        Box::pin(async move {
            let nodes = self.inner.nodes.lock().unwrap_or_else(|e| e.into_inner());
            let mut live: Vec<NodeStatus> = nodes
                .values()
                .filter(|n| now_ms - n.seen_ms <= NODE_TTL_MS)
                .cloned()
                .collect();
            live.sort_by(|a, b| a.url.cmp(&b.url));
            Ok(live)
        })
    }
}
