//! One behavioural suite for every `RoomStore` backend: in memory and Redis.

use crate::helpers::{redis_url, unique};
use proto::ids::{MeetingId, ParticipantId};
use proto::media::RoomId;
use proto::signal::ServerMessage;
use servicekit::Secret;
use signaling::room::redis_store::RedisStore;
use signaling::room::{
    Entrant, EventBody, MemoryStore, NodeStatus, Room, RoomError, RoomStore, UpdateError,
};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

async fn redis_store(prefix: &str) -> Arc<dyn RoomStore> {
    let url = Secret::new(redis_url());
    let conn = servicekit::backends::connect_redis(&url)
        .await
        .expect("Redis at TEST_REDIS_URL");
    Arc::new(
        RedisStore::connect(&url, prefix, conn, CancellationToken::new())
            .await
            .unwrap(),
    )
}

fn room_id() -> RoomId {
    RoomId::parse(unique("room")).unwrap()
}

fn entrant() -> Entrant {
    Entrant {
        participant_id: ParticipantId::new(),
        display_name: "P".into(),
        user_id: None,
        is_host: true,
        lobby: false,
        conn: uuid::Uuid::new_v4(),
        resume_token: "t".into(),
    }
}

async fn enter(store: &dyn RoomStore, room: &RoomId, who: Entrant) -> Result<(), UpdateError> {
    let meeting = MeetingId::new();
    let mut change = |state: &mut Option<Room>| {
        let r = state.get_or_insert_with(|| Room::new(room.clone(), meeting, 100));
        r.handle_enter(who.clone(), 0).map(drop)
    };
    store.update(room, &mut change).await.map(drop)
}

async fn chat(store: &dyn RoomStore, room: &RoomId, who: ParticipantId) -> Result<(), UpdateError> {
    let mut change = |state: &mut Option<Room>| match state.as_mut() {
        Some(r) => r.handle_chat(who, "hi".into(), 0),
        None => Err(RoomError::NoParticipant),
    };
    store.update(room, &mut change).await.map(drop)
}

async fn updates_are_stored_and_published_in_sequence_order(store: Arc<dyn RoomStore>) {
    let room = room_id();
    let mut events = store.subscribe(&room).await.unwrap();
    let host = entrant();
    enter(store.as_ref(), &room, host.clone()).await.unwrap();
    for _ in 0..5 {
        chat(store.as_ref(), &room, host.participant_id)
            .await
            .unwrap();
    }
    let stored = store.load(&room).await.unwrap().unwrap();
    assert_eq!(stored.seq, 6);
    assert_eq!(stored.participants.len(), 1);
    for expected in 1..=6 {
        let event = events.recv().await.unwrap();
        assert_eq!(event.seq, Some(expected));
    }
}

async fn a_refused_change_leaves_the_room_as_it_was(store: Arc<dyn RoomStore>) {
    let room = room_id();
    let host = entrant();
    enter(store.as_ref(), &room, host.clone()).await.unwrap();
    let before = store.load(&room).await.unwrap();
    let err = chat(store.as_ref(), &room, ParticipantId::new())
        .await
        .unwrap_err();
    assert!(matches!(err, UpdateError::Room(RoomError::NoParticipant)));
    assert_eq!(store.load(&room).await.unwrap(), before);
}

async fn an_emptied_room_is_forgotten(store: Arc<dyn RoomStore>) {
    let room = room_id();
    let host = entrant();
    enter(store.as_ref(), &room, host.clone()).await.unwrap();
    let mut change = |state: &mut Option<Room>| {
        if let Some(r) = state.as_mut() {
            r.handle_leave(host.participant_id, None, "left");
        }
        Ok(())
    };
    let updated = store.update(&room, &mut change).await.unwrap();
    assert!(updated.room.is_none());
    assert_eq!(updated.events.len(), 1);
    assert!(store.load(&room).await.unwrap().is_none());
}

async fn concurrent_changes_never_share_or_skip_a_sequence_number(store: Arc<dyn RoomStore>) {
    let room = room_id();
    let host = entrant();
    enter(store.as_ref(), &room, host.clone()).await.unwrap();
    let mut events = store.subscribe(&room).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let room = room.clone();
            tokio::spawn(async move { chat(store.as_ref(), &room, host.participant_id).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let mut seqs = Vec::new();
    for _ in 0..20 {
        seqs.push(events.recv().await.unwrap().seq.unwrap());
    }
    assert_eq!(
        seqs,
        (2..=21).collect::<Vec<_>>(),
        "delivered in order, no gaps"
    );
}

async fn only_nodes_with_a_recent_heartbeat_are_live(store: Arc<dyn RoomStore>) {
    let now = signaling::clock::now_ms();
    let node = |url: &str, seen_ms: i64| NodeStatus {
        url: url.into(),
        load: 0.5,
        rooms: 1,
        participants: 2,
        seen_ms,
    };
    store.put_node(node("http://a", now)).await.unwrap();
    store
        .put_node(node("http://b", now - 60_000))
        .await
        .unwrap();
    let live = store.live_nodes(now).await.unwrap();
    assert_eq!(
        live.iter().map(|n| n.url.as_str()).collect::<Vec<_>>(),
        ["http://a"]
    );
    store.put_node(node("http://b", now)).await.unwrap();
    assert_eq!(store.live_nodes(now).await.unwrap().len(), 2);
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(std::sync::Arc::new(super::MemoryStore::new())).await; })*
        }
        mod redis {
            $(#[tokio::test] async fn $name() { super::$name(super::redis_store(&super::unique("test") ).await).await; })*
        }
    };
}

store_suite!(
    updates_are_stored_and_published_in_sequence_order,
    a_refused_change_leaves_the_room_as_it_was,
    an_emptied_room_is_forgotten,
    concurrent_changes_never_share_or_skip_a_sequence_number,
    only_nodes_with_a_recent_heartbeat_are_live,
);

#[tokio::test]
async fn events_published_by_one_redis_replica_reach_the_others_in_order() {
    let prefix = format!("{}:", unique("test"));
    let one = redis_store(&prefix).await;
    let two = redis_store(&prefix).await;
    let room = room_id();
    let mut on_two = two.subscribe(&room).await.unwrap();
    let host = entrant();
    enter(one.as_ref(), &room, host.clone()).await.unwrap();
    chat(two.as_ref(), &room, host.participant_id)
        .await
        .unwrap();
    chat(one.as_ref(), &room, host.participant_id)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(2), on_two.recv())
            .await
            .unwrap()
            .unwrap();
        seen.push(event.seq.unwrap());
        if let EventBody::Message(ServerMessage::ParticipantJoined { participant }) = &event.body {
            assert_eq!(participant.participant_id, host.participant_id);
        }
    }
    assert_eq!(seen, [1, 2, 3]);
}

#[tokio::test]
async fn redis_room_keys_expire_so_a_crashed_replica_leaves_no_ghosts() {
    let prefix = format!("{}:", unique("test"));
    let store = redis_store(&prefix).await;
    let room = room_id();
    enter(store.as_ref(), &room, entrant()).await.unwrap();
    let url = redis_url();
    let client = ::redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = signaling::room::redis_store::room_key(&prefix, &room);
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= signaling::room::redis_store::ROOM_TTL_MS as i64,
        "{ttl}"
    );
}
