//! The signaling WebSocket, end to end: a real server and socket, a fake SFU node.

use crate::helpers::{
    AppOptions, Client, ROOM_SECRET, SfuCall, TestApp, User, spawn_app, spawn_app_with,
};
use futures_util::SinkExt;
use futures_util::StreamExt;
use proto::ids::TrackId;
use proto::media::{TrackInfo, TrackKind, TrackSource};
use proto::sfu::{SfuEvent, SubscriberOffer};
use serde_json::{Value, json};
use servicekit::Secret;
use signaling::room_token::RoomTokens;
use sqlx::Row;
use std::time::Duration;

fn tokens() -> RoomTokens {
    RoomTokens::new(&Secret::new(ROOM_SECRET.to_owned())).unwrap()
}

/// A meeting hosted by a new user, and that user.
async fn meeting(app: &TestApp, settings: Value) -> (User, Value) {
    let host = User::new("Host");
    let meeting = app
        .create_meeting(&host, json!({"title": "Call", "settings": settings}))
        .await;
    (host, meeting)
}

fn id(meeting: &Value) -> &str {
    meeting["id"].as_str().unwrap()
}

async fn join_as(app: &TestApp, meeting: &Value, user: &User) -> (Client, Value) {
    let token = app.room_token(id(meeting), Some(user), json!({})).await;
    let mut client = Client::connect(&app.ws_url()).await;
    let joined = client.join(&token).await;
    (client, joined)
}

#[tokio::test]
async fn a_participant_joins_with_its_room_token_and_gets_the_sfus_sdp() {
    let app = spawn_app().await;
    let (host, meeting) = meeting(&app, json!({})).await;
    let (_client, joined) = join_as(&app, &meeting, &host).await;
    let me = joined["participant_id"].as_str().unwrap();
    assert_eq!(joined["v"], 1);
    assert_eq!(joined["room"], meeting["id"]);
    assert_eq!(joined["publisher_answer"], format!("answer-for-{me}"));
    assert_eq!(joined["subscriber_offer"]["sdp"], format!("offer-for-{me}"));
    assert_eq!(joined["seq"], 1);
    assert_eq!(joined["participants"][0]["participant_id"], me);
    assert_eq!(joined["participants"][0]["is_host"], true);
    assert!(joined["resume_token"].as_str().unwrap().len() >= 32);
    let created = app.sfu.calls().into_iter().find_map(|c| match c {
        SfuCall::Create(create) => Some(create),
        _ => None,
    });
    let created = created.expect("an sfu session");
    assert_eq!(created.room.as_str(), id(&meeting));
    assert_eq!(created.tracks[0].source, TrackSource::Microphone);
    // The meeting went live, and the history and outbox know.
    let (_, shown) = app
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/meetings/{}", id(&meeting)),
            Some(&host),
            None,
        )
        .await;
    assert_eq!(shown["status"], "live");
    let types: Vec<String> = sqlx::query("SELECT type FROM outbox ORDER BY created_at, id")
        .fetch_all(app.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("type"))
        .collect();
    assert_eq!(
        types,
        [
            "meeting.scheduled",
            "meeting.started",
            "meeting.participant_joined"
        ]
    );
}

#[tokio::test]
async fn participants_see_each_other_with_gapless_sequence_numbers() {
    let app = spawn_app().await;
    let (host, meeting) = meeting(&app, json!({})).await;
    let (mut a, joined_a) = join_as(&app, &meeting, &host).await;
    let (mut b, joined_b) = join_as(&app, &meeting, &User::new("Bob")).await;
    let b_id = joined_b["participant_id"].clone();
    assert_eq!(joined_b["seq"], 2);
    assert_eq!(joined_b["participants"].as_array().unwrap().len(), 2);
    let seen = a.expect("participant_joined").await;
    assert_eq!(
        (
            seen["seq"].clone(),
            seen["participant"]["participant_id"].clone()
        ),
        (json!(2), b_id.clone())
    );
    b.send(json!({"v": 1, "type": "chat", "text": "hello"}))
        .await;
    for client in [&mut a, &mut b] {
        let chat = client.expect("chat").await;
        assert_eq!(
            (
                chat["seq"].clone(),
                chat["text"].clone(),
                chat["display_name"].clone()
            ),
            (json!(3), json!("hello"), json!("Bob"))
        );
    }
    b.send(json!({"v": 1, "type": "leave"})).await;
    assert!(b.drain().await.iter().all(|m| m["type"] != "error"));
    let left = a.expect("participant_left").await;
    assert_eq!(
        (
            left["seq"].clone(),
            left["participant_id"].clone(),
            left["reason"].clone()
        ),
        (json!(4), b_id, json!("left"))
    );
    let _ = joined_a;
    a.send(json!({"v": 1, "type": "ping"})).await;
    assert!(a.expect("pong").await.get("seq").is_none());
    assert!(
        app.sfu
            .calls()
            .iter()
            .any(|c| matches!(c, SfuCall::Delete(_)))
    );
}

#[tokio::test]
async fn bad_input_gets_an_error_with_a_stable_code_and_the_server_keeps_going() {
    let app = spawn_app().await;
    let (host, meeting) = meeting(&app, json!({})).await;
    let token = app.room_token(id(&meeting), Some(&host), json!({})).await;
    let mut expired = tokens().verify(&token, false).unwrap();
    expired.exp = expired.iat - 30;
    expired.nbf = expired.iat - 60;
    let mut no_publish = tokens().verify(&token, false).unwrap();
    no_publish.grants.can_publish.clear();
    let join = |token: &str| {
        json!({"v": 1, "type": "join", "token": token, "publisher_offer": "o",
                                    "tracks": [{"mid": "0", "source": "camera"}]})
        .to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "malformed_message"),
        (r#"{"v":1,"type":"nope"}"#.into(), "unknown_message_type"),
        (
            r#"{"v":2,"type":"ping"}"#.into(),
            "unsupported_protocol_version",
        ),
        (r#"{"type":"ping"}"#.into(), "malformed_message"),
        (
            r#"{"v":1,"type":"subscribe","track_id":42}"#.into(),
            "malformed_message",
        ),
        (
            r#"{"v":1,"type":"publish_offer","sdp":"x"}"#.into(),
            "unexpected_message",
        ),
        (join("garbage"), "invalid_room_token"),
        (join(&tokens().sign_claims(&expired)), "invalid_room_token"),
        (
            join(&RoomTokens::generate().sign_claims(&no_publish)),
            "invalid_room_token",
        ),
        (
            join(&tokens().sign_claims(&no_publish)),
            "publish_not_allowed",
        ),
        (
            format!(
                r#"{{"v":1,"type":"chat","text":"{}"}}"#,
                "x".repeat(100_000)
            ),
            "payload_too_large",
        ),
    ];
    let mut client = Client::connect(&app.ws_url()).await;
    for (text, code) in cases {
        client.send_raw(text.clone()).await;
        let answer = client.next().await.expect("an answer, not a closed socket");
        assert_eq!(
            (answer["type"].as_str(), answer["code"].as_str()),
            (Some("error"), Some(code)),
            "{}",
            &text[..text.len().min(80)]
        );
    }
    client.send(json!({"v": 1, "type": "ping"})).await;
    client.expect("pong").await;
    let joined = client.join(&token).await;
    assert_eq!(joined["type"], "joined");
    client
        .send(json!({"v": 1, "type": "join", "token": token, "publisher_offer": "o"}))
        .await;
    assert_eq!(client.expect("error").await["code"], "unexpected_message");

    // A token for another room than the client asked for.
    let mut other = Client::connect(&format!("{}?room=someone-elses-room", app.ws_url())).await;
    other.send_raw(join(&token)).await;
    assert_eq!(other.expect("error").await["code"], "wrong_room");
}

#[tokio::test]
async fn a_ten_megabyte_message_closes_that_socket_but_not_the_server() {
    let app = spawn_app().await;
    let mut client = Client::connect(&app.ws_url()).await;
    client.send_raw("x".repeat(10 * 1024 * 1024)).await;
    let rest = client.drain().await;
    assert!(
        rest.iter()
            .all(|m| m["type"] == "error" && m["code"] == "payload_too_large"),
        "{rest:?}"
    );
    let mut fresh = Client::connect(&app.ws_url()).await;
    fresh.send(json!({"v": 1, "type": "ping"})).await;
    fresh.expect("pong").await;
}

#[tokio::test]
async fn a_flood_of_messages_is_rate_limited_then_cut_off() {
    let app = spawn_app().await;
    let (host, meeting) = meeting(&app, json!({})).await;
    let (mut client, _) = join_as(&app, &meeting, &host).await;
    for _ in 0..1000 {
        let frame =
            tokio_tungstenite::tungstenite::Message::Text(r#"{"v":1,"type":"ping"}"#.into());
        if client.ws.feed(frame).await.is_err() {
            break;
        }
    }
    let _ = client.ws.flush().await;
    let messages = client.drain().await;
    let pongs = messages.iter().filter(|m| m["type"] == "pong").count();
    assert!((40..=200).contains(&pongs), "{pongs} pongs");
    assert!(messages.iter().any(|m| m["code"] == "rate_limited"));
    let mut fresh = Client::connect(&app.ws_url()).await;
    fresh.send(json!({"v": 1, "type": "ping"})).await;
    fresh.expect("pong").await;
}

#[tokio::test]
async fn a_dropped_client_resumes_its_session_and_nobody_sees_it_leave() {
    let app = spawn_app().await;
    let (host, meeting) = meeting(&app, json!({})).await;
    let (mut a, _) = join_as(&app, &meeting, &host).await;
    let bob = User::new("Bob");
    let token = app.room_token(id(&meeting), Some(&bob), json!({})).await;
    let mut b = Client::connect(&app.ws_url()).await;
    let joined = b.join(&token).await;
    a.expect("participant_joined").await;
    drop(b); // the network goes away: no close frame, no leave
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut b = Client::connect(&app.ws_url()).await;
    b.send(
        json!({"v": 1, "type": "join", "token": token, "publisher_offer": "",
                  "resume": joined["resume_token"]}),
    )
    .await;
    let resumed = b.expect("joined").await;
    assert_eq!(resumed["participant_id"], joined["participant_id"]);
    assert_eq!(resumed["participants"].as_array().unwrap().len(), 2);
    assert!(
        app.sfu
            .calls()
            .iter()
            .any(|c| matches!(c, SfuCall::IceRestart(_)))
    );
    b.send(json!({"v": 1, "type": "chat", "text": "back"}))
        .await;
    let next = a.next().await.unwrap();
    assert_eq!(
        (next["type"].as_str(), next["seq"].as_u64()),
        (Some("chat"), Some(3)),
        "{next}"
    );
    // A wrong resume token is refused.
    let mut c = Client::connect(&app.ws_url()).await;
    c.send(
        json!({"v": 1, "type": "join", "token": token, "publisher_offer": "", "resume": "nope"}),
    )
    .await;
    assert_eq!(c.expect("error").await["code"], "resume_failed");
}

#[tokio::test]
async fn a_client_that_closes_its_socket_is_let_go_at_once_and_may_still_resume() {
    let app = spawn_app().await;
    let (host, meeting) = meeting(&app, json!({})).await;
    let (mut a, _) = join_as(&app, &meeting, &host).await;
    let bob = User::new("Bob");
    let token = app.room_token(id(&meeting), Some(&bob), json!({})).await;
    let mut b = Client::connect(&app.ws_url()).await;
    let joined = b.join(&token).await;
    a.expect("participant_joined").await;
    // A close handshake (a tab closing, a page reload) ends the connection at
    // once, although the 20 s grace period for a resume is still running.
    b.ws.close(None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(_)) = b.ws.next().await {}
    })
    .await
    .expect("the server let the socket go within 3 s");
    let mut b = Client::connect(&app.ws_url()).await;
    b.send(
        json!({"v": 1, "type": "join", "token": token, "publisher_offer": "",
                  "resume": joined["resume_token"]}),
    )
    .await;
    let resumed = b.expect("joined").await;
    assert_eq!(resumed["participant_id"], joined["participant_id"]);
}

#[tokio::test]
async fn after_the_grace_period_a_dropped_client_is_removed_and_the_room_told() {
    let app = spawn_app_with(AppOptions {
        grace: Duration::from_millis(500),
        ..AppOptions::default()
    })
    .await;
    let (host, meeting) = meeting(&app, json!({})).await;
    let (mut a, _) = join_as(&app, &meeting, &host).await;
    let (b, joined) = join_as(&app, &meeting, &User::new("Bob")).await;
    a.expect("participant_joined").await;
    drop(b);
    let left = a.expect("participant_left").await;
    assert_eq!(
        (left["participant_id"].clone(), left["reason"].clone()),
        (joined["participant_id"].clone(), json!("timeout"))
    );
    let participant: proto::ids::ParticipantId =
        joined["participant_id"].as_str().unwrap().parse().unwrap();
    assert!(app.sfu.calls().contains(&SfuCall::Delete(participant)));
}

#[tokio::test]
async fn host_controls_are_enforced_by_the_server() {
    let app = spawn_app().await;
    let (host, meeting) = meeting(&app, json!({})).await;
    let (mut h, _) = join_as(&app, &meeting, &host).await;
    let (mut b, joined_b) = join_as(&app, &meeting, &User::new("Bob")).await;
    let b_id = joined_b["participant_id"].clone();
    h.expect("participant_joined").await;
    for attempt in [
        json!({"type": "host_lock", "locked": true}),
        json!({"type": "host_remove", "participant_id": b_id}),
        json!({"type": "host_end_meeting"}),
    ] {
        let mut message = attempt.clone();
        message["v"] = json!(1);
        b.send(message).await;
        assert_eq!(b.expect("error").await["code"], "forbidden", "{attempt}");
    }
    h.send(json!({"v": 1, "type": "host_lock", "locked": true}))
        .await;
    assert_eq!(b.expect("room_locked").await["locked"], true);
    let (status, answer) = app
        .join(id(&meeting), Some(&User::new("Late")), json!({}))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("meeting_locked"))
    );
    // Muting someone's track goes to the SFU and the room.
    let track = TrackInfo {
        track_id: TrackId::new(),
        participant_id: b_id.as_str().unwrap().parse().unwrap(),
        kind: TrackKind::Audio,
        source: TrackSource::Microphone,
        layers: vec![],
        muted: false,
    };
    app.sfu
        .push(SfuEvent::TrackPublished {
            room: proto::media::RoomId::parse(id(&meeting)).unwrap(),
            track: track.clone(),
        })
        .await;
    assert_eq!(
        h.expect("track_published").await["track"]["track_id"],
        track.track_id.to_string()
    );
    h.send(
        json!({"v": 1, "type": "host_mute", "participant_id": b_id, "track_id": track.track_id}),
    )
    .await;
    let muted = b.expect("track_muted").await;
    assert_eq!(muted["muted"], true);
    assert!(
        app.sfu
            .calls()
            .iter()
            .any(|c| matches!(c, SfuCall::Mute(p, m) if *p == track.participant_id && m.muted))
    );
    h.send(json!({"v": 1, "type": "host_remove", "participant_id": b_id}))
        .await;
    let rest = b.drain().await;
    assert!(
        rest.iter()
            .any(|m| m["type"] == "removed" && m["reason"] == "removed"),
        "{rest:?}"
    );
    assert_eq!(h.expect("participant_left").await["reason"], "removed");
}

#[tokio::test]
async fn the_lobby_holds_people_until_a_host_admits_them() {
    let app = spawn_app().await;
    let (host, meeting) = meeting(&app, json!({"lobby": true})).await;
    let (mut h, _) = join_as(&app, &meeting, &host).await;
    let bob = User::new("Bob");
    let token = app.room_token(id(&meeting), Some(&bob), json!({})).await;
    let mut b = Client::connect(&app.ws_url()).await;
    b.send(json!({"v": 1, "type": "join", "token": token, "publisher_offer": "o"}))
        .await;
    b.expect("waiting").await;
    let request = h.expect("lobby_request").await;
    assert_eq!(request["display_name"], "Bob");
    assert!(request.get("seq").is_none());
    // And on the bus, for the host's alerts elsewhere (notify): once per stay.
    let mut waiting = Vec::new();
    for _ in 0..100 {
        waiting = sqlx::query("SELECT payload FROM outbox WHERE type = 'meeting.lobby_waiting'")
            .fetch_all(app.db.pool())
            .await
            .unwrap();
        if !waiting.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(waiting.len(), 1);
    let payload: serde_json::Value =
        serde_json::from_str(&sqlx::Row::get::<String, _>(&waiting[0], "payload")).unwrap();
    assert_eq!(payload["display_name"], "Bob");
    assert_eq!(payload["participant_id"], request["participant_id"]);
    assert_eq!(payload["meeting_id"], id(&meeting));
    h.send(json!({"v": 1, "type": "host_admit", "participant_id": request["participant_id"], "admit": true})).await;
    let joined = b.expect("joined").await;
    assert_eq!(joined["participant_id"], request["participant_id"]);
    assert_eq!(h.expect("participant_joined").await["seq"], 2);
    // Denied: told so, and the socket closes.
    let eve = User::new("Eve");
    let token = app.room_token(id(&meeting), Some(&eve), json!({})).await;
    let mut e = Client::connect(&app.ws_url()).await;
    e.send(json!({"v": 1, "type": "join", "token": token, "publisher_offer": "o"}))
        .await;
    e.expect("waiting").await;
    let request = h.expect("lobby_request").await;
    h.send(json!({"v": 1, "type": "host_admit", "participant_id": request["participant_id"], "admit": false})).await;
    assert_eq!(e.expect("removed").await["reason"], "denied");
    assert!(e.next().await.is_none());
}

#[tokio::test]
async fn sfu_events_reach_the_participants_they_concern() {
    let app = spawn_app().await;
    let (host, meeting) = meeting(&app, json!({})).await;
    let (mut h, joined) = join_as(&app, &meeting, &host).await;
    let me: proto::ids::ParticipantId = joined["participant_id"].as_str().unwrap().parse().unwrap();
    let room = proto::media::RoomId::parse(id(&meeting)).unwrap();
    app.sfu
        .push(SfuEvent::SubscriberOffer {
            room: room.clone(),
            participant_id: me,
            offer: SubscriberOffer {
                sdp: "renegotiate".into(),
                tracks: vec![],
            },
        })
        .await;
    let offer = h.expect("subscriber_offer").await;
    assert_eq!(offer["offer"]["sdp"], "renegotiate");
    h.send(json!({"v": 1, "type": "subscriber_answer", "sdp": "answer"}))
        .await;
    h.send(json!({"v": 1, "type": "candidate", "target": "publisher", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"})).await;
    h.send(json!({"v": 1, "type": "publish_offer", "sdp": "again", "tracks": [{"mid": "1", "source": "screen_share"}]})).await;
    assert_eq!(h.expect("publisher_answer").await["sdp"], "answer-to-again");
    app.sfu
        .push(SfuEvent::Speakers {
            room: room.clone(),
            speakers: vec![proto::sfu::SpeakerLevel {
                participant_id: me,
                level: 90,
            }],
        })
        .await;
    assert_eq!(
        h.expect("speakers").await["speakers"][0]["participant_id"],
        me.to_string()
    );
    app.sfu
        .push(SfuEvent::Quality {
            room: room.clone(),
            sample: proto::sfu::QualitySample {
                participant_id: me,
                quality: proto::sfu::Quality::Poor,
                egress_estimate_bps: None,
                ingress_loss: 0.1,
                rtt_ms: None,
            },
        })
        .await;
    assert_eq!(h.expect("quality").await["quality"], "poor");
    let calls = app.sfu.calls();
    assert!(calls.contains(&SfuCall::SubscriberAnswer(me)));
    assert!(calls.contains(&SfuCall::Candidate(me)));
    app.sfu
        .push(SfuEvent::Disconnected {
            room,
            participant_id: me,
            reason: "ice failed".into(),
        })
        .await;
    assert_eq!(h.expect("removed").await["reason"], "media_disconnected");
}

#[tokio::test]
async fn ending_the_meeting_for_all_closes_every_session_and_the_meeting() {
    let app = spawn_app().await;
    let (host, meeting) = meeting(&app, json!({})).await;
    let (mut h, _) = join_as(&app, &meeting, &host).await;
    let (mut b, _) = join_as(&app, &meeting, &User::new("Bob")).await;
    h.expect("participant_joined").await;
    h.send(json!({"v": 1, "type": "host_end_meeting"})).await;
    for client in [&mut h, &mut b] {
        let rest = client.drain().await;
        assert!(
            rest.iter()
                .any(|m| m["type"] == "meeting_ended" && m["seq"].is_u64()),
            "{rest:?}"
        );
    }
    let (status, answer) = app.join(id(&meeting), Some(&host), json!({})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (410, Some("meeting_ended"))
    );
    let (_, history) = app
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/meetings/{}/history", id(&meeting)),
            Some(&host),
            None,
        )
        .await;
    let attendance = history["attendance"].as_array().unwrap();
    assert_eq!(attendance.len(), 2);
    assert!(attendance.iter().all(|a| a["left_at"].is_string()));
    assert!(history["started_at"].is_string() && history["ended_at"].is_string());
}

#[tokio::test]
async fn bad_input_is_counted_and_a_plain_get_on_rtc_is_a_json_error() {
    let app = spawn_app().await;
    let mut client = Client::connect(&app.ws_url()).await;
    client.send_raw("garbage".into()).await;
    assert_eq!(client.expect("error").await["code"], "malformed_message");
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("meetease_signaling_ws_connections"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("meetease_signaling_ws_errors_total")
                && l.contains("malformed_message")),
        "{metrics}"
    );
    let (status, body) = app.request(reqwest::Method::GET, "/rtc", None, None).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "malformed_body");
}

#[tokio::test]
async fn a_client_may_decline_the_room_data_channel() {
    let app = spawn_app().await;
    let (host, meeting) = meeting(&app, json!({})).await;
    let creates = |app: &TestApp| -> Vec<bool> {
        app.sfu
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                SfuCall::Create(create) => Some(create.data_channel),
                _ => None,
            })
            .collect()
    };
    // Unsaid, the SFU opens the channel, as it always did; `false` declines
    // it; not a boolean is a clear error and opens no session.
    let cases = [
        (host, None, "joined", vec![true]),
        (
            User::new("Bob"),
            Some(json!(false)),
            "joined",
            vec![true, false],
        ),
        (
            User::new("Eve"),
            Some(json!("no")),
            "error",
            vec![true, false],
        ),
    ];
    let mut clients = Vec::new();
    for (user, data_channel, reply, sessions) in cases {
        let token = app.room_token(id(&meeting), Some(&user), json!({})).await;
        let mut join = json!({"v": 1, "type": "join", "token": token, "publisher_offer": "o"});
        if let Some(value) = data_channel {
            join["data_channel"] = value;
        }
        let mut client = Client::connect(&app.ws_url()).await;
        client.send(join).await;
        let message = client.expect(reply).await;
        if reply == "error" {
            assert_eq!(message["code"], "malformed_message");
        }
        assert_eq!(creates(&app), sessions, "{message}");
        clients.push(client);
    }
}

#[tokio::test]
async fn a_client_may_ask_to_subscribe_manually() {
    let app = spawn_app().await;
    let (host, meeting) = meeting(&app, json!({})).await;
    let token = app.room_token(id(&meeting), Some(&host), json!({})).await;
    let mut client = Client::connect(&app.ws_url()).await;
    client
        .send(json!({"v": 1, "type": "join", "token": token, "publisher_offer": "o", "auto_subscribe": false}))
        .await;
    client.expect("joined").await;
    let create = app.sfu.calls().into_iter().find_map(|c| match c {
        SfuCall::Create(create) => Some(create),
        _ => None,
    });
    assert!(!create.unwrap().auto_subscribe);
    let track = TrackId::new();
    client
        .send(json!({"v": 1, "type": "subscribe", "track_id": track, "max_height": 360}))
        .await;
    client.send(json!({"v": 1, "type": "ping"})).await;
    client.expect("pong").await;
    assert!(app.sfu.calls().iter().any(|c| matches!(c, SfuCall::Subscription(_, s) if s.track_id == track && s.max_height == Some(360))));
}

#[tokio::test]
async fn joining_again_with_the_same_token_replaces_the_first_connection() {
    let app = spawn_app().await;
    let (host, meeting) = meeting(&app, json!({})).await;
    let token = app.room_token(id(&meeting), Some(&host), json!({})).await;
    let mut first = Client::connect(&app.ws_url()).await;
    let joined = first.join(&token).await;
    let mut second = Client::connect(&app.ws_url()).await;
    let again = second.join(&token).await;
    assert_eq!(again["participant_id"], joined["participant_id"]);
    assert_eq!(again["participants"].as_array().unwrap().len(), 1);
    first.drain().await; // closed: another connection holds the participant
    let participant: proto::ids::ParticipantId =
        joined["participant_id"].as_str().unwrap().parse().unwrap();
    let calls = app.sfu.calls();
    let creates = calls
        .iter()
        .filter(|c| matches!(c, SfuCall::Create(_)))
        .count();
    assert_eq!(creates, 2);
    assert!(calls.contains(&SfuCall::Delete(participant)));
    second.send(json!({"v": 1, "type": "ping"})).await;
    second.expect("pong").await;
}
