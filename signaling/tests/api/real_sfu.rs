//! Signaling with a real SFU node: str0m peers join through the WebSocket, the SDP
//! goes through signaling to the node's control API, the node's events come back
//! through signaling, and media flows between the peers through the node.

use crate::helpers::{AppOptions, Backend, Client, User, fresh_db, spawn_app_with, unique};
use proto::media::TrackSource;
use serde_json::{Value, json};
use servicekit::Secret;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "signaling-test-control-token-0123";

struct Node {
    http: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_node() -> Node {
    let shutdown = CancellationToken::new();
    let config = sfu::Config {
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        public_ip: "127.0.0.1".parse().unwrap(),
        control_token: Secret::new(TOKEN.to_owned()),
        disconnect_grace: Duration::from_secs(5),
        ice_tcp: true,
        socket_buffer: sfu::Config::DEFAULT_SOCKET_BUFFER,
        gso: true,
    };
    let router = sfu::build(config, shutdown.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(servicekit::http::serve(listener, router, shutdown.clone()));
    Node { http, shutdown }
}

/// A str0m peer connection on its own UDP socket.
struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    received_rtp: usize,
    video_mid: Option<Mid>,
    seq: u64,
    frame: u32,
}

impl Peer {
    fn new() -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Peer {
            rtc,
            socket,
            addr,
            received_rtp: 0,
            video_mid: None,
            seq: 1000,
            frame: 0,
        }
    }

    fn pump(&mut self) {
        self.drain();
        let mut buf = [0u8; 2048];
        while let Ok((len, source)) = self.socket.recv_from(&mut buf) {
            let Ok(contents) = buf[..len].try_into() else {
                continue;
            };
            let input = Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.addr,
                    contents,
                },
            );
            self.rtc.handle_input(input).unwrap();
            self.drain();
        }
        self.rtc
            .handle_input(Input::Timeout(Instant::now()))
            .unwrap();
        self.drain();
    }

    fn drain(&mut self) {
        while self.rtc.is_alive() {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::RtpPacket(_)) => self.received_rtp += 1,
                Output::Event(_) => {}
            }
        }
    }

    /// Send one VP8 frame (three packets) if connected.
    fn send_frame(&mut self) {
        let Some(mid) = self.video_mid else { return };
        if !self.rtc.is_connected() {
            return;
        }
        self.frame += 1;
        let frame = self.frame;
        let pt = self
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
            .unwrap();
        for part in 0..3u8 {
            self.seq += 1;
            let mut payload = vec![
                if part == 0 { 0x10 } else { 0 },
                if frame % 30 == 1 { 0 } else { 1 },
            ];
            payload.extend_from_slice(&[7; 900]);
            if let Some(stream) = self.rtc.direct_api().stream_tx_by_mid(mid, None) {
                stream.write_rtp(
                    RtpWrite::new(
                        pt,
                        SeqNo::from(self.seq),
                        frame * 3000,
                        Instant::now(),
                        payload,
                    )
                    .marker(part == 2)
                    .nackable(true),
                );
            }
            self.drain();
        }
    }
}

/// Pump every peer for `duration`, the first one sending 30 fps video.
fn run(mut peers: Vec<Peer>, duration: Duration) -> Vec<Peer> {
    let start = Instant::now();
    let mut next_frame = start;
    while start.elapsed() < duration {
        for peer in &mut peers {
            peer.pump();
        }
        if Instant::now() >= next_frame {
            next_frame += Duration::from_millis(33);
            peers[0].send_frame();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    peers
}

/// A publisher offer (video if `video`, and the data channel every client opens).
fn offer(publisher: &mut Peer, video: bool) -> (String, Vec<Value>, SdpPendingOffer) {
    let mut api = publisher.rtc.sdp_api();
    let mut tracks = Vec::new();
    if video {
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        publisher.video_mid = Some(mid);
        tracks.push(json!({"mid": mid.to_string(), "source": TrackSource::Camera}));
    }
    api.add_channel("room".into());
    let (offer, pending) = api.apply().unwrap();
    (offer.to_sdp_string(), tracks, pending)
}

/// Join through signaling with real SDP; returns the client and its two peers.
async fn join(url: &str, token: &str, video: bool) -> (Client, Value, Peer, Peer) {
    join_or_resume(url, token, video, None).await
}

/// Join, or with `resume` take an earlier session over with new peer connections.
async fn join_or_resume(
    url: &str,
    token: &str,
    video: bool,
    resume: Option<&Value>,
) -> (Client, Value, Peer, Peer) {
    let mut publisher = Peer::new();
    let mut subscriber = Peer::new();
    let (sdp, tracks, pending) = offer(&mut publisher, video);
    let mut client = Client::connect(url).await;
    let mut join =
        json!({"v": 1, "type": "join", "token": token, "publisher_offer": sdp, "tracks": tracks});
    if let Some(resume) = resume {
        join["resume"] = resume.clone();
    }
    client.send(join).await;
    let joined = client.expect("joined").await;
    let answer = SdpAnswer::from_sdp_string(joined["publisher_answer"].as_str().unwrap()).unwrap();
    publisher
        .rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .unwrap();
    let offer =
        SdpOffer::from_sdp_string(joined["subscriber_offer"]["sdp"].as_str().unwrap()).unwrap();
    let answer = subscriber.rtc.sdp_api().accept_offer(offer).unwrap();
    client
        .send(json!({"v": 1, "type": "subscriber_answer", "sdp": answer.to_sdp_string()}))
        .await;
    (client, joined, publisher, subscriber)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_flows_between_two_participants_joined_through_signaling() {
    let node = spawn_node().await;
    let app = spawn_app_with(AppOptions {
        real_sfu: Some((vec![format!("http://{}", node.http)], TOKEN.to_owned())),
        ..AppOptions::default()
    })
    .await;
    let host = User::new("Ada");
    let meeting = app.create_meeting(&host, json!({})).await;
    let id = meeting["id"].as_str().unwrap().to_owned();

    let token = app.room_token(&id, Some(&host), json!({})).await;
    let (mut a, joined_a, a_pub, a_sub) = join(&app.ws_url(), &token, true).await;
    assert_eq!(joined_a["seq"], 1);
    // The node announces A's video once A's connection is up; signaling tells the room.
    let peers =
        tokio::task::spawn_blocking(move || run(vec![a_pub, a_sub], Duration::from_millis(1500)))
            .await
            .unwrap();
    assert!(
        peers[0].rtc.is_connected(),
        "A's publisher connected to the node"
    );
    let published = a.expect("track_published").await;
    assert_eq!(
        published["track"]["participant_id"],
        joined_a["participant_id"]
    );
    assert_eq!(published["track"]["source"], "camera");
    // A quality sample from the node may precede it (room events share the sequence).
    assert!(published["seq"].as_u64().unwrap() >= 2);

    let bob = User::new("Bob");
    let token = app.room_token(&id, Some(&bob), json!({})).await;
    let (mut b, joined_b, b_pub, b_sub) = join(&app.ws_url(), &token, false).await;
    assert_eq!(
        joined_b["subscriber_offer"]["tracks"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "B is offered A's video"
    );
    let a_roster = &joined_b["participants"];
    assert!(
        a_roster
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["tracks"].as_array().is_some_and(|t| t.len() == 1))
    );
    // Joined, the track, then B; the SFU's periodic quality samples are room
    // events too and may come in between, so only the order is fixed.
    let seq = a.expect("participant_joined").await["seq"]
        .as_u64()
        .unwrap();
    assert!(
        seq >= 3,
        "B's arrival follows A's join and track (seq {seq})"
    );

    let mut peers = peers;
    peers.push(b_pub);
    peers.push(b_sub);
    let peers = tokio::task::spawn_blocking(move || run(peers, Duration::from_secs(3)))
        .await
        .unwrap();
    let received = peers[3].received_rtp;
    assert!(
        received > 100,
        "B received {received} video packets through the node"
    );

    // B leaves: the node forgets its session, A is told.
    b.send(json!({"v": 1, "type": "leave"})).await;
    b.drain().await;
    let left = a.expect("participant_left").await;
    assert_eq!(left["participant_id"], joined_b["participant_id"]);
    let snapshot: Value = reqwest::Client::new()
        .get(format!("http://{}/v1/rooms/{id}", node.http))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        snapshot["participants"],
        json!([joined_a["participant_id"]])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_socket_drops_mid_call_resumes_and_media_flows_again() {
    let node = spawn_node().await;
    let app = spawn_app_with(AppOptions {
        real_sfu: Some((vec![format!("http://{}", node.http)], TOKEN.to_owned())),
        ..AppOptions::default()
    })
    .await;
    let host = User::new("Ada");
    let meeting = app.create_meeting(&host, json!({})).await;
    let id = meeting["id"].as_str().unwrap().to_owned();
    let token = app.room_token(&id, Some(&host), json!({})).await;
    let (mut a, _, a_pub, a_sub) = join(&app.ws_url(), &token, true).await;
    let peers =
        tokio::task::spawn_blocking(move || run(vec![a_pub, a_sub], Duration::from_millis(1500)))
            .await
            .unwrap();
    a.expect("track_published").await;

    let bob = User::new("Bob");
    let b_token = app.room_token(&id, Some(&bob), json!({})).await;
    let (b, joined_b, b_pub, b_sub) = join(&app.ws_url(), &b_token, false).await;
    // Joined, the track, then B; the SFU's periodic quality samples are room
    // events too and may come in between, so only the order is fixed.
    let seq = a.expect("participant_joined").await["seq"]
        .as_u64()
        .unwrap();
    assert!(
        seq >= 3,
        "B's arrival follows A's join and track (seq {seq})"
    );
    let mut peers = peers;
    peers.push(b_pub);
    peers.push(b_sub);
    let mut peers = tokio::task::spawn_blocking(move || run(peers, Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(
        peers[3].received_rtp > 50,
        "B received {} packets before the drop",
        peers[3].received_rtp
    );

    // B's network changes: the socket and both peer connections are gone.
    drop(b);
    peers.truncate(2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut b, resumed, b_pub, b_sub) = join_or_resume(
        &app.ws_url(),
        &b_token,
        false,
        Some(&joined_b["resume_token"]),
    )
    .await;
    assert_eq!(resumed["participant_id"], joined_b["participant_id"]);
    assert_eq!(
        resumed["subscriber_offer"]["tracks"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "A's video again"
    );
    peers.push(b_pub);
    peers.push(b_sub);
    let peers = tokio::task::spawn_blocking(move || run(peers, Duration::from_secs(3)))
        .await
        .unwrap();
    assert!(
        peers[3].received_rtp > 50,
        "B received {} packets after resuming",
        peers[3].received_rtp
    );

    // Nobody saw B leave: up to B's chat, A saw no `participant_left`.
    b.send(json!({"v": 1, "type": "chat", "text": "back"}))
        .await;
    loop {
        let message = a.next().await.expect("open");
        assert_ne!(message["type"], "participant_left", "{message}");
        if message["type"] == "chat" {
            break;
        }
    }
}

async fn room_on(node: &Node, room: &str) -> Option<Value> {
    let response = reqwest::Client::new()
        .get(format!("http://{}/v1/rooms/{room}", node.http))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    if response.status().is_success() {
        Some(response.json().await.unwrap())
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_and_two_nodes_share_rooms_and_spread_them() {
    let nodes = [spawn_node().await, spawn_node().await];
    let urls: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.http)).collect();
    let prefix = format!("{}:", unique("test"));
    let db = fresh_db(Backend::Postgres).await;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(
            spawn_app_with(AppOptions {
                real_sfu: Some((urls.clone(), TOKEN.to_owned())),
                redis_prefix: Some(prefix.clone()),
                db: Some(db.clone()),
                ..AppOptions::default()
            })
            .await,
        );
    }
    let host = User::new("Ada");
    let first = replicas[0].create_meeting(&host, json!({})).await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    let token = replicas[0]
        .room_token(&first_id, Some(&host), json!({}))
        .await;
    let (mut a, joined_a, a_pub, a_sub) = join(&replicas[0].ws_url(), &token, true).await;
    let peers =
        tokio::task::spawn_blocking(move || run(vec![a_pub, a_sub], Duration::from_millis(1500)))
            .await
            .unwrap();
    let published = a.expect("track_published").await;

    // Bob joins the same room through the other replica.
    let bob = User::new("Bob");
    let token = replicas[1]
        .room_token(&first_id, Some(&bob), json!({}))
        .await;
    let (mut b, joined_b, b_pub, b_sub) = join(&replicas[1].ws_url(), &token, false).await;
    assert_eq!(joined_b["participants"].as_array().unwrap().len(), 2);
    assert_eq!(
        a.expect("participant_joined").await["participant"]["participant_id"],
        joined_b["participant_id"]
    );
    let mut peers = peers;
    peers.push(b_pub);
    peers.push(b_sub);
    let peers = tokio::task::spawn_blocking(move || run(peers, Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(
        peers[3].received_rtp > 50,
        "B received {} packets across replicas",
        peers[3].received_rtp
    );

    // The room lives on exactly one node.
    let on: Vec<usize> =
        futures_util::future::join_all(nodes.iter().map(|n| room_on(n, &first_id)))
            .await
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|_| i))
            .collect();
    assert_eq!(on.len(), 1, "the room is on one node");
    let busy = on[0];

    // A new room goes to the other, idle node.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = replicas[1].create_meeting(&host, json!({})).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let token = replicas[1]
        .room_token(&second_id, Some(&host), json!({}))
        .await;
    let (_c, _, _c_pub, _c_sub) = join(&replicas[1].ws_url(), &token, false).await;
    assert!(
        room_on(&nodes[1 - busy], &second_id).await.is_some(),
        "the second room is on the idle node"
    );
    assert!(room_on(&nodes[busy], &second_id).await.is_none());

    // Mute and leave are seen by both replicas' clients in one order.
    b.send(json!({"v": 1, "type": "chat", "text": "hi"})).await;
    let chat_a = a.expect("chat").await;
    let chat_b = b.expect("chat").await;
    assert_eq!(chat_a["seq"], chat_b["seq"]);
    a.send(
        json!({"v": 1, "type": "mute", "track_id": published["track"]["track_id"], "muted": true}),
    )
    .await;
    let muted_a = a.expect("track_muted").await;
    let muted_b = b.expect("track_muted").await;
    assert_eq!(
        (muted_a["seq"].clone(), muted_a["participant_id"].clone()),
        (muted_b["seq"].clone(), joined_a["participant_id"].clone())
    );
    b.send(json!({"v": 1, "type": "leave"})).await;
    assert_eq!(
        a.expect("participant_left").await["participant_id"],
        joined_b["participant_id"]
    );
    drop(peers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_is_told_to_pause_video_nobody_watches_and_to_resume_it() {
    let node = spawn_node().await;
    let app = spawn_app_with(AppOptions {
        real_sfu: Some((vec![format!("http://{}", node.http)], TOKEN.to_owned())),
        ..AppOptions::default()
    })
    .await;
    let host = User::new("Ada");
    let meeting = app.create_meeting(&host, json!({})).await;
    let id = meeting["id"].as_str().unwrap().to_owned();
    let token = app.room_token(&id, Some(&host), json!({})).await;
    let (mut a, _, a_pub, a_sub) = join(&app.ws_url(), &token, true).await;
    let mid = a_pub.video_mid.unwrap().to_string();

    // Ada is alone: once the node's off-delay (3 s) has passed, her socket is
    // told that nobody wants her video. Her peers keep running meanwhile.
    let media =
        tokio::task::spawn_blocking(move || run(vec![a_pub, a_sub], Duration::from_secs(5)));
    let published = a.expect("track_published").await;
    let paused = a.expect("publisher_layers").await;
    assert_eq!(paused["track_id"], published["track"]["track_id"]);
    assert_eq!(paused["mid"], mid.as_str());
    assert_eq!(paused["active"], json!([]));
    assert!(paused.get("seq").is_none(), "not a room event: {paused}");
    let mut peers = media.await.unwrap();

    // Bob joins and receives it: it is turned on at once (a single layer is `high`).
    let bob = User::new("Bob");
    let b_token = app.room_token(&id, Some(&bob), json!({})).await;
    let (mut b, _, b_pub, b_sub) = join(&app.ws_url(), &b_token, false).await;
    peers.push(b_pub);
    peers.push(b_sub);
    let media = tokio::task::spawn_blocking(move || run(peers, Duration::from_secs(2)));
    let resumed = a.expect("publisher_layers").await;
    assert_eq!(resumed["mid"], mid.as_str());
    assert_eq!(resumed["active"], json!(["high"]));
    let peers = media.await.unwrap();
    assert!(
        peers[3].received_rtp > 20,
        "Bob received {} packets after the resume",
        peers[3].received_rtp
    );

    // Only the publisher hears about its layers.
    b.send(json!({"v": 1, "type": "chat", "text": "hi"})).await;
    loop {
        let message = b.next().await.expect("open");
        assert_ne!(message["type"], "publisher_layers", "{message}");
        if message["type"] == "chat" {
            break;
        }
    }
}
