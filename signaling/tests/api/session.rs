//! The session logic driven directly through channels (no socket): timings.

use crate::helpers::{Backend, FAKE_NODE, FakeSfu, User, fresh_db, spawn_app};
use futures_util::StreamExt;
use serde_json::json;
use servicekit::Secret;
use signaling::live::{Live, SessionOptions};
use signaling::room::MemoryStore;
use signaling::room_token::RoomTokens;
use signaling::rtc::{Inbound, Outbound, close, run_session};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Harness {
    to_session: mpsc::Sender<Inbound>,
    from_session: mpsc::Receiver<Outbound>,
    done: tokio::task::JoinHandle<()>,
}

fn start(live: Live) -> Harness {
    let (to_session, inbound) = mpsc::channel::<Inbound>(16);
    let (outbound, from_session) = mpsc::channel::<Outbound>(16);
    let sink = futures_util::sink::unfold(outbound, |tx, frame: Outbound| async move {
        tx.send(frame).await.map(|_| tx).map_err(|_| ())
    });
    let stream =
        futures_util::stream::unfold(
            inbound,
            |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
        );
    let done = tokio::spawn(run_session(live, Box::pin(sink), stream.boxed(), None));
    Harness {
        to_session,
        from_session,
        done,
    }
}

async fn live(options: SessionOptions) -> Live {
    let (db, _) = fresh_db(Backend::Sqlite).await;
    // No migrations: this session never gets as far as reading a meeting.
    let tokens = RoomTokens::new(&Secret::new(crate::helpers::ROOM_SECRET.to_owned())).unwrap();
    Live::new(
        Arc::new(MemoryStore::new()),
        FakeSfu::new(),
        tokens,
        db,
        vec![FAKE_NODE.to_owned()],
        options,
        CancellationToken::new(),
    )
}

#[tokio::test]
async fn a_client_that_never_joins_is_closed_after_the_join_timeout() {
    let live = live(SessionOptions {
        join_timeout: Duration::from_millis(100),
        ..SessionOptions::default()
    })
    .await;
    let mut harness = start(live);
    let Some(Outbound::Message(error)) = harness.from_session.recv().await else {
        panic!("an error first")
    };
    assert_eq!(
        serde_json::to_value(&error).unwrap()["code"],
        "unexpected_message"
    );
    assert!(matches!(
        harness.from_session.recv().await,
        Some(Outbound::Close(close::POLICY, _))
    ));
    harness.done.await.unwrap();
    drop(harness.to_session);
}

#[tokio::test]
async fn a_silent_client_is_pinged_then_dropped_and_removed_after_the_grace_period() {
    // A real app gives us a meeting and a token; the session under test shares its database.
    let app = spawn_app().await;
    let host = User::new("Ada");
    let meeting = app.create_meeting(&host, json!({})).await;
    let token = app
        .room_token(meeting["id"].as_str().unwrap(), Some(&host), json!({}))
        .await;
    let tokens = RoomTokens::new(&Secret::new(crate::helpers::ROOM_SECRET.to_owned())).unwrap();
    let sfu = FakeSfu::new();
    let live = Live::new(
        Arc::new(MemoryStore::new()),
        sfu.clone(),
        tokens,
        app.db.clone(),
        vec![FAKE_NODE.to_owned()],
        SessionOptions {
            ping_interval: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(200),
            reconnect_grace: Duration::from_millis(100),
            ..SessionOptions::default()
        },
        CancellationToken::new(),
    );
    let mut harness = start(live);
    let join = json!({"v": 1, "type": "join", "token": token, "publisher_offer": "o"});
    harness
        .to_session
        .send(Inbound::Text(join.to_string()))
        .await
        .unwrap();
    let Some(Outbound::Message(joined)) = harness.from_session.recv().await else {
        panic!("joined")
    };
    assert_eq!(serde_json::to_value(&joined).unwrap()["type"], "joined");
    let mut pings = 0;
    loop {
        match harness.from_session.recv().await {
            Some(Outbound::Ping) => pings += 1,
            Some(Outbound::Close(code, _)) => {
                assert_eq!(code, close::INTERNAL);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 2, "{pings} pings before giving up");
    // The session ends once the grace period is over, after removing the participant.
    tokio::time::timeout(Duration::from_secs(2), harness.done)
        .await
        .unwrap()
        .unwrap();
    assert!(
        sfu.calls()
            .iter()
            .any(|c| matches!(c, crate::helpers::SfuCall::Delete(_)))
    );
}
