//! Many signaling replicas sharing Redis, and SFU node placement.

use crate::helpers::{
    AppOptions, Backend, Client, FakeSfu, TestApp, User, fresh_db, redis_url, spawn_app_with,
    unique,
};
use proto::ids::{ParticipantId, TrackId};
use proto::media::{RoomId, TrackInfo, TrackKind, TrackSource};
use proto::sfu::SfuEvent;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Two replicas on one Redis prefix, one database and one (fake) SFU.
async fn two_replicas(nodes: Vec<String>) -> (TestApp, TestApp, Arc<FakeSfu>, String) {
    let prefix = format!("{}:", unique("test"));
    let db = fresh_db(Backend::Postgres).await;
    let sfu = FakeSfu::new();
    let mut apps = Vec::new();
    for _ in 0..2 {
        apps.push(
            spawn_app_with(AppOptions {
                redis_prefix: Some(prefix.clone()),
                db: Some(db.clone()),
                sfu: Some(sfu.clone()),
                nodes: nodes.clone(),
                ..AppOptions::default()
            })
            .await,
        );
    }
    let two = apps.pop().unwrap();
    let one = apps.pop().unwrap();
    (one, two, sfu, prefix)
}

async fn join(app: &TestApp, key: &str, user: &User) -> (Client, Value) {
    let token = app.room_token(key, Some(user), json!({})).await;
    let mut client = Client::connect(&app.ws_url()).await;
    let joined = client.join(&token).await;
    (client, joined)
}

/// The next room events (with a `seq`) a client receives, as `(seq, type)`.
async fn room_events(client: &mut Client, count: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while out.len() < count {
        let message = client.next().await.expect("open");
        if let Some(seq) = message["seq"].as_u64() {
            out.push((seq, message["type"].as_str().unwrap().to_owned()));
        }
    }
    out
}

#[tokio::test]
async fn clients_on_different_replicas_see_one_room_in_the_same_order() {
    let (one, two, sfu, _) = two_replicas(vec!["http://sfu.test".into()]).await;
    let host = User::new("Ada");
    let meeting = one.create_meeting(&host, json!({})).await;
    let key = meeting["id"].as_str().unwrap();
    let (mut a, _) = join(&one, key, &host).await;
    let (mut b, joined_b) = join(&two, key, &User::new("Bob")).await;
    assert_eq!(joined_b["participants"].as_array().unwrap().len(), 2);
    let b_id: ParticipantId = joined_b["participant_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // B's track (the node reports it to both replicas; only B's replica applies it).
    let track = TrackInfo {
        track_id: TrackId::new(),
        participant_id: b_id,
        kind: TrackKind::Audio,
        source: TrackSource::Microphone,
        layers: vec![],
        muted: false,
    };
    sfu.push(SfuEvent::TrackPublished {
        room: RoomId::parse(key).unwrap(),
        track: track.clone(),
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.send(json!({"v": 1, "type": "chat", "text": "from b"}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.send(json!({"v": 1, "type": "chat", "text": "from a"}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.send(json!({"v": 1, "type": "mute", "track_id": track.track_id, "muted": true}))
        .await;

    let seen_by_a = room_events(&mut a, 5).await;
    let seen_by_b = room_events(&mut b, 4).await;
    assert_eq!(
        seen_by_a,
        [
            (2, "participant_joined"),
            (3, "track_published"),
            (4, "chat"),
            (5, "chat"),
            (6, "track_muted")
        ]
        .map(|(s, t)| (s, t.to_owned()))
    );
    assert_eq!(seen_by_b, seen_by_a[1..]);
    b.send(json!({"v": 1, "type": "leave"})).await;
    let left = room_events(&mut a, 1).await;
    assert_eq!(left, [(7, "participant_left".to_owned())]);
}

#[tokio::test]
async fn a_client_resumes_on_another_replica_and_nobody_sees_it_leave() {
    let (one, two, _, _) = two_replicas(vec!["http://sfu.test".into()]).await;
    let host = User::new("Ada");
    let meeting = one.create_meeting(&host, json!({})).await;
    let key = meeting["id"].as_str().unwrap();
    let (mut a, _) = join(&one, key, &host).await;
    let bob = User::new("Bob");
    let token = one.room_token(key, Some(&bob), json!({})).await;
    let mut b = Client::connect(&one.ws_url()).await;
    let joined = b.join(&token).await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut b = Client::connect(&two.ws_url()).await;
    b.send(json!({"v": 1, "type": "join", "token": token, "publisher_offer": "", "resume": joined["resume_token"]})).await;
    assert_eq!(
        b.expect("joined").await["participant_id"],
        joined["participant_id"]
    );
    b.send(json!({"v": 1, "type": "chat", "text": "still here"}))
        .await;
    assert_eq!(
        room_events(&mut a, 2).await,
        [(2, "participant_joined".to_owned()), (3, "chat".to_owned())]
    );
}

#[tokio::test]
async fn new_rooms_go_to_the_least_loaded_live_node_and_stay_there() {
    let nodes = vec![
        "http://sfu-a.test".to_owned(),
        "http://sfu-b.test".to_owned(),
    ];
    let (one, two, sfu, prefix) = two_replicas(nodes.clone()).await;
    sfu.loads
        .lock()
        .unwrap()
        .insert(nodes[0].clone(), Some(0.2));
    sfu.loads
        .lock()
        .unwrap()
        .insert(nodes[1].clone(), Some(0.5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let node_of = |p: &Value| {
        let id: ParticipantId = p["participant_id"].as_str().unwrap().parse().unwrap();
        sfu.placed
            .lock()
            .unwrap()
            .iter()
            .find(|(_, q)| *q == id)
            .map(|(n, _)| n.clone())
            .unwrap()
    };
    let host = User::new("Ada");
    let first = one.create_meeting(&host, json!({})).await;
    let (_a, joined) = join(&one, first["id"].as_str().unwrap(), &host).await;
    assert_eq!(node_of(&joined), nodes[0]);

    // Node A fills up: a new room goes to B, but the first room stays on A.
    sfu.loads
        .lock()
        .unwrap()
        .insert(nodes[0].clone(), Some(0.9));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = one.create_meeting(&host, json!({})).await;
    let (_b, joined) = join(&two, second["id"].as_str().unwrap(), &host).await;
    assert_eq!(node_of(&joined), nodes[1]);
    let (_c, joined) = join(&two, first["id"].as_str().unwrap(), &User::new("Bob")).await;
    assert_eq!(node_of(&joined), nodes[0]);

    // Node B stops answering: once its heartbeat is old, it gets no new rooms.
    sfu.loads.lock().unwrap().insert(nodes[1].clone(), None);
    let client = ::redis::Client::open(redis_url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stale = json!({"url": nodes[1], "load": 0.0, "rooms": 0, "participants": 0,
                       "seen_ms": signaling::clock::now_ms() - 60_000});
    let _: () = ::redis::cmd("HSET")
        .arg(format!("{prefix}sfu-nodes"))
        .arg(&nodes[1])
        .arg(stale.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let third = one.create_meeting(&host, json!({})).await;
    let (_d, joined) = join(&one, third["id"].as_str().unwrap(), &host).await;
    assert_eq!(node_of(&joined), nodes[0]);
}
