//! Rooms in Redis: many signaling replicas share them.
//!
//! Keys (every one starts with the store's prefix, `signaling:` in production):
//!
//! - [`room_key`] — `{prefix}room:{room}` → the room's JSON [`Room`] (participants,
//!   tracks, lobby, lock, `seq`, and the SFU node the room lives on: the room→node
//!   map). Expires [`ROOM_TTL_MS`] after its last change; every connected
//!   participant's replica refreshes it with a heartbeat, so a room whose replicas all
//!   crashed disappears by itself, and participants of one crashed replica are
//!   removed by [`Room::handle_expiry`] on the next change.
//! - [`events_channel`] — `{prefix}events:{room}`, a pub/sub channel carrying each
//!   JSON [`RoomEvent`] of the room, published in the same script as the change.
//! - [`nodes_key`] — `{prefix}sfu-nodes`, a hash: node control URL → JSON
//!   [`NodeStatus`] (heartbeat time and load). Entries older than [`NODE_TTL_MS`]
//!   count as dead and are pruned.
//!
//! A change is optimistic: read the room, apply the change in Rust, then a Lua script
//! writes it only if the stored value is still the one read (else retry), and
//! publishes its events in the same atomic step. Redis runs scripts one at a time, so
//! the order of a room's events on the channel is the order of its `seq`.

use super::state::{Room, RoomEvent};
use super::store::{
    Change, Hub, NODE_TTL_MS, NodeStatus, RoomStore, StoreError, UpdateError, Updated, settle,
};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use proto::media::RoomId;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use servicekit::Secret;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;

/// A room key lives this long after its last change.
pub const ROOM_TTL_MS: u64 = 120_000;
/// How many times a change is retried when another replica changed the room first.
const MAX_ATTEMPTS: usize = 50;
/// How long one Redis round trip may take before the caller gets an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub fn room_key(prefix: &str, room: &RoomId) -> String {
    format!("{prefix}room:{room}")
}

pub fn events_channel(prefix: &str, room: &RoomId) -> String {
    format!("{prefix}events:{room}")
}

pub fn nodes_key(prefix: &str) -> String {
    format!("{prefix}sfu-nodes")
}

/// Compare-and-set the room and publish its events.
/// KEYS[1] room key, KEYS[2] channel; ARGV[1] the value read ('' for none),
/// ARGV[2] the new value ('' to delete), ARGV[3] TTL in ms, ARGV[4..] events.
const CAS_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
for i = 4, #ARGV do redis.call('PUBLISH', KEYS[2], ARGV[i]) end
return 1
";

/// Rooms in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: String,
    conn: ConnectionManager,
    script: redis::Script,
    hub: Hub,
    client: redis::Client,
    /// The pub/sub connection's command half; replaced when it reconnects.
    /// Also serialises subscribing, so a room's first subscription is in place
    /// before anyone is told it is.
    sink: Mutex<Option<redis::aio::PubSubSink>>,
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError(err.to_string())
}

async fn timed<T>(
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StoreError("redis did not answer in time".into())),
    }
}

impl RedisStore {
    /// Connect (commands and pub/sub) and start the subscriber task, which stops with
    /// `shutdown`.
    pub async fn connect(
        url: &Secret<String>,
        prefix: &str,
        conn: ConnectionManager,
        shutdown: CancellationToken,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url.expose().as_str()).map_err(unavailable)?;
        let store = RedisStore {
            inner: Arc::new(Inner {
                prefix: prefix.to_owned(),
                conn,
                script: redis::Script::new(CAS_SCRIPT),
                hub: Hub::default(),
                client,
                sink: Mutex::new(None),
            }),
        };
        let stream = store.open_pubsub().await?;
        tokio::spawn(store.clone().run_subscriber(stream, shutdown));
        Ok(store)
    }

    async fn open_pubsub(&self) -> Result<redis::aio::PubSubStream, StoreError> {
        let pubsub = timed(self.inner.client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        let rooms = self.inner.hub.rooms();
        if !rooms.is_empty() {
            let channels: Vec<String> = rooms
                .iter()
                .map(|r| events_channel(&self.inner.prefix, r))
                .collect();
            timed(sink.subscribe(channels)).await?;
        }
        *self.inner.sink.lock().await = Some(sink);
        Ok(stream)
    }

    /// Deliver published events to local subscribers; reconnect when the pub/sub
    /// connection drops (events published meanwhile are lost: clients see the gap in
    /// `seq` and resume); forget rooms nobody listens to.
    async fn run_subscriber(
        self,
        mut stream: redis::aio::PubSubStream,
        shutdown: CancellationToken,
    ) {
        let mut sweep = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sweep.tick() => {
                    let idle = self.inner.hub.sweep();
                    if !idle.is_empty() && let Some(sink) = self.inner.sink.lock().await.as_mut() {
                        let channels: Vec<String> =
                            idle.iter().map(|r| events_channel(&self.inner.prefix, r)).collect();
                        let _ = timed(sink.unsubscribe(channels)).await;
                    }
                }
                message = stream.next() => match message {
                    Some(message) => {
                        let payload: Vec<u8> = message.get_payload_bytes().to_vec();
                        match serde_json::from_slice::<RoomEvent>(&payload) {
                            Ok(event) => self.inner.hub.deliver(event),
                            Err(err) => tracing::warn!(%err, "undecodable room event on redis"),
                        }
                    }
                    None => {
                        tracing::warn!("redis pub/sub connection lost; reconnecting");
                        *self.inner.sink.lock().await = None;
                        let mut backoff = Duration::from_millis(100);
                        loop {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            match self.open_pubsub().await {
                                Ok(fresh) => { stream = fresh; break; }
                                Err(err) => tracing::debug!(%err, "redis pub/sub reconnect failed"),
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
        }
    }

    async fn get_raw(&self, room: &RoomId) -> Result<Option<String>, StoreError> {
        let mut conn = self.inner.conn.clone();
        timed(conn.get(room_key(&self.inner.prefix, room))).await
    }
}

fn decode(raw: &str) -> Result<Room, StoreError> {
    serde_json::from_str(raw).map_err(|err| StoreError(format!("undecodable room: {err}")))
}

impl RoomStore for RedisStore {
    fn load<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<Option<Room>, StoreError>> {
        Box::pin(async move {
            match self.get_raw(room).await? {
                Some(raw) => Ok(Some(decode(&raw)?)),
                None => Ok(None),
            }
        })
    }

    fn update<'a>(
        &'a self,
        room: &'a RoomId,
        change: &'a mut Change<'a>,
    ) -> BoxFuture<'a, Result<Updated, UpdateError>> {
        Box::pin(async move {
            let key = room_key(&self.inner.prefix, room);
            let channel = events_channel(&self.inner.prefix, room);
            for _ in 0..MAX_ATTEMPTS {
                let raw = self.get_raw(room).await?;
                let mut state = match &raw {
                    Some(raw) => Some(decode(raw)?),
                    None => None,
                };
                change(&mut state)?;
                let events = settle(&mut state);
                let new_value = match &state {
                    Some(room) => serde_json::to_string(room).map_err(unavailable)?,
                    None => String::new(),
                };
                let mut invocation = self.inner.script.key(&key);
                invocation
                    .key(&channel)
                    .arg(raw.as_deref().unwrap_or(""))
                    .arg(&new_value)
                    .arg(ROOM_TTL_MS);
                for event in &events {
                    invocation.arg(serde_json::to_string(event).map_err(unavailable)?);
                }
                let mut conn = self.inner.conn.clone();
                let written: i64 = timed(invocation.invoke_async(&mut conn)).await?;
                if written == 1 {
                    return Ok(Updated {
                        room: state,
                        events,
                    });
                }
            }
            Err(StoreError("the room changed too often to update it".into()).into())
        })
    }

    fn subscribe<'a>(
        &'a self,
        room: &'a RoomId,
    ) -> BoxFuture<'a, Result<broadcast::Receiver<RoomEvent>, StoreError>> {
        Box::pin(async move {
            let mut sink = self.inner.sink.lock().await;
            let (receiver, first) = self.inner.hub.subscribe(room);
            if first {
                let subscribed = match sink.as_mut() {
                    Some(sink) => {
                        timed(sink.subscribe(events_channel(&self.inner.prefix, room))).await
                    }
                    None => Err(StoreError("redis pub/sub is reconnecting".into())),
                };
                if let Err(err) = subscribed {
                    // The next subscriber must try again, not trust a channel that never was.
                    self.inner.hub.forget(room);
                    return Err(err);
                }
            }
            Ok(receiver)
        })
    }

    fn put_node<'a>(&'a self, node: NodeStatus) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let value = serde_json::to_string(&node).map_err(unavailable)?;
            let mut conn = self.inner.conn.clone();
            timed(conn.hset::<_, _, _, ()>(nodes_key(&self.inner.prefix), &node.url, value)).await
        })
    }

    fn live_nodes(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<NodeStatus>, StoreError>> {
        Box::pin(async move {
            let key = nodes_key(&self.inner.prefix);
            let mut conn = self.inner.conn.clone();
            let all: std::collections::HashMap<String, String> = timed(conn.hgetall(&key)).await?;
            let mut live = Vec::new();
            let mut dead = Vec::new();
            for (url, raw) in all {
                match serde_json::from_str::<NodeStatus>(&raw) {
                    Ok(node) if now_ms - node.seen_ms <= NODE_TTL_MS => live.push(node),
                    // Long dead (or garbage): prune. Recently dead: keep, it may come back.
                    Ok(node) if now_ms - node.seen_ms <= 10 * NODE_TTL_MS => {}
                    _ => dead.push(url),
                }
            }
            if !dead.is_empty() {
                let _ = timed(conn.hdel::<_, _, ()>(&key, dead)).await;
            }
            live.sort_by(|a, b| a.url.cmp(&b.url));
            Ok(live)
        })
    }
}
