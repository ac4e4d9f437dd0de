//! The real SFU node: UDP worker and HTTP control API on 127.0.0.1, with str0m
//! clients on their own UDP sockets. Checks that media crosses the real driver,
//! that hostile datagrams at the live port harm no call, and that the control
//! API answers bad requests with stable codes.

use proto::ids::ParticipantId;
use proto::media::{RoomId, TrackSource};
use proto::sfu::{CreateSession, SessionCreated, SubscriberAnswer, TrackDeclaration};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio_util::sync::CancellationToken;

mod node;
use node::{Node, TOKEN, spawn_node, spawn_node_with};

/// A str0m peer on its own UDP socket.
struct UdpPeer {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    received_rtp: usize,
    /// The video mid this peer publishes on, if any.
    video_mid: Option<str0m::media::Mid>,
    /// Publisher counters, kept across calls to `run_call`.
    seq: u64,
    frame: u32,
}

impl UdpPeer {
    fn new() -> UdpPeer {
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
        UdpPeer {
            rtc,
            socket,
            addr,
            received_rtp: 0,
            video_mid: None,
            seq: 1000,
            frame: 0,
        }
    }

    /// Drain output to the socket, then feed whatever arrived and the time.
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
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn create_session(
    node: &Node,
    room: &str,
    publisher: &mut UdpPeer,
    video: bool,
) -> (ParticipantId, SessionCreated) {
    let mut api = publisher.rtc.sdp_api();
    let mut tracks = Vec::new();
    if video {
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        publisher.video_mid = Some(mid);
        tracks.push(TrackDeclaration {
            mid: mid.to_string(),
            source: TrackSource::Camera,
        });
    }
    api.add_channel("room".into());
    let (offer, pending) = api.apply().unwrap();
    let participant = ParticipantId::new();
    let response = client()
        .post(format!("http://{}/v1/sessions", node.http))
        .bearer_auth(TOKEN)
        .json(&CreateSession {
            room: RoomId::parse(room).unwrap(),
            participant,
            publisher_offer: offer.to_sdp_string(),
            tracks,
            auto_subscribe: true,
            data_channel: true,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: SessionCreated = response.json().await.unwrap();
    publisher
        .rtc
        .sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&created.publisher_answer).unwrap(),
        )
        .unwrap();
    (participant, created)
}

async fn answer_subscriber(
    node: &Node,
    participant: ParticipantId,
    subscriber: &mut UdpPeer,
    created: &SessionCreated,
) {
    let answer = subscriber
        .rtc
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&created.subscriber_offer.sdp).unwrap())
        .unwrap();
    let response = client()
        .post(format!(
            "http://{}/v1/sessions/{participant}/subscriber/answer",
            node.http
        ))
        .bearer_auth(TOKEN)
        .json(&SubscriberAnswer {
            sdp: answer.to_sdp_string(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

/// Run the peers for `duration`, A sending 30 fps VP8 (keyframe each second),
/// optionally spraying garbage at the media port. Returns B's received packets.
fn run_call(
    mut peers: Vec<UdpPeer>,
    media: SocketAddr,
    duration: Duration,
    garbage: bool,
) -> Vec<UdpPeer> {
    let start = Instant::now();
    let mut next_frame = start;
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut noise = 99u64;
    while start.elapsed() < duration {
        for peer in &mut peers {
            peer.pump();
        }
        let publisher = &mut peers[0];
        if Instant::now() >= next_frame && publisher.rtc.is_connected() {
            next_frame += Duration::from_millis(33);
            publisher.frame += 1;
            let frame = publisher.frame;
            let pt = publisher
                .rtc
                .codec_config()
                .params()
                .iter()
                .find(|p| p.spec().codec == Codec::Vp8)
                .map(|p| p.pt())
                .unwrap();
            let mid = publisher.video_mid;
            for part in 0..3u8 {
                publisher.seq += 1;
                let seq = publisher.seq;
                let key = frame % 30 == 1;
                let mut payload = vec![if part == 0 { 0x10 } else { 0 }, if key { 0 } else { 1 }];
                payload.extend_from_slice(&[7; 900]);
                if let Some(mid) = mid
                    && let Some(stream) = publisher.rtc.direct_api().stream_tx_by_mid(mid, None)
                {
                    stream.write_rtp(
                        RtpWrite::new(pt, SeqNo::from(seq), frame * 3000, Instant::now(), payload)
                            .marker(part == 2)
                            .nackable(true),
                    );
                }
                publisher.drain();
            }
        }
        if garbage {
            for i in 0..20usize {
                noise = noise.wrapping_mul(6364136223846793005).wrapping_add(1);
                let len = (noise >> 40) as usize % 1400;
                let mut datagram: Vec<u8> = (0..len).map(|j| (noise >> (j % 50)) as u8).collect();
                if let Some(first) = datagram.first_mut() {
                    *first = [0x80, 0x16, 0x00, 0x90, *first][i % 5];
                }
                let _ = attacker.send_to(&datagram, media);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    peers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_crosses_the_real_udp_driver_even_under_a_datagram_flood() {
    let node = spawn_node().await;
    let mut a_pub = UdpPeer::new();
    let a_sub = UdpPeer::new();
    let (_a, _a_created) = create_session(&node, "driver-room", &mut a_pub, true).await;
    // str0m announces a publisher's track once its connection is up; join B
    // after that so B's first offer already carries it.
    let media = node.media;
    let mut peers = tokio::task::spawn_blocking(move || {
        run_call(
            vec![a_pub, a_sub],
            media,
            Duration::from_millis(1500),
            false,
        )
    })
    .await
    .unwrap();
    assert!(
        peers[0].rtc.is_connected(),
        "A connected to the SFU over UDP"
    );
    let mut b_pub = UdpPeer::new();
    let mut b_sub = UdpPeer::new();
    let (b, b_created) = create_session(&node, "driver-room", &mut b_pub, false).await;
    assert_eq!(
        b_created.subscriber_offer.tracks.len(),
        1,
        "B is offered A's video"
    );
    answer_subscriber(&node, b, &mut b_sub, &b_created).await;

    peers.push(b_pub);
    peers.push(b_sub);
    let peers =
        tokio::task::spawn_blocking(move || run_call(peers, media, Duration::from_secs(3), false))
            .await
            .unwrap();
    let clean = peers[3].received_rtp;
    assert!(clean > 150, "B received {clean} video packets in 3 s");

    // Same call, now with garbage sprayed at the media port all along.
    let peers =
        tokio::task::spawn_blocking(move || run_call(peers, media, Duration::from_secs(3), true))
            .await
            .unwrap();
    let flooded = peers[3].received_rtp - clean;
    assert!(
        flooded > 150,
        "B still received {flooded} packets during the flood"
    );

    let metrics = client()
        .get(format!("http://{}/metrics", node.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("meetease_sfu_rtp_forwarded_total") > 300.0,
        "{metrics}"
    );
    assert!(
        value("meetease_sfu_malformed_datagrams_total")
            + value("meetease_sfu_unknown_datagrams_total")
            > 100.0,
        "garbage was counted"
    );
    assert_eq!(value("meetease_sfu_sessions_failed_total"), 0.0);
    // What the kernel dropped on a full socket is exported (its value depends
    // on how busy the machine was, so only its presence is checked here;
    // `udp.rs`'s tests check the count against a real overflow).
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("meetease_sfu_udp_receive_buffer_drops_total")),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_control_api_needs_the_service_token_and_rejects_bad_input_with_codes() {
    let node = spawn_node().await;
    let base = format!("http://{}", node.http);
    // No token, wrong token.
    let response = client()
        .get(format!("{base}/v1/load"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    let response = client()
        .get(format!("{base}/v1/load"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Health stays open.
    assert_eq!(
        client()
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(format!("{base}/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let post = |path: &str, body: &'static str| {
        client()
            .post(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (post("/v1/sessions", "{not json"), 400, "malformed_body"),
        (
            post(
                "/v1/sessions",
                r#"{"room":"../x","participant":"0190a1b2-0000-7000-8000-000000000001","publisher_offer":"v=0"}"#,
            ),
            400,
            "malformed_body",
        ),
        (
            post(
                "/v1/sessions",
                r#"{"room":"r1","participant":"0190a1b2-0000-7000-8000-000000000001","publisher_offer":"garbage"}"#,
            ),
            422,
            "invalid_field",
        ),
        (
            post(
                "/v1/sessions/0190a1b2-0000-7000-8000-000000000009/subscriber/answer",
                r#"{"sdp":"v=0"}"#,
            ),
            404,
            "not_found",
        ),
        (
            post(
                "/v1/sessions/not-a-uuid/candidate",
                r#"{"target":"publisher","candidate":"x"}"#,
            ),
            404,
            "not_found",
        ),
        (
            post(
                "/v1/sessions/0190a1b2-0000-7000-8000-000000000009/ice-restart",
                "",
            ),
            404,
            "not_found",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "expected {code}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    let big = "x".repeat(2 * 1024 * 1024);
    let response = client()
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_workers_and_media_flows_on_each() {
    let node = spawn_node_with(2).await;
    assert_eq!(node.all_media.len(), 2);
    assert_ne!(node.all_media[0], node.all_media[1]);
    let media_port = |created: &SessionCreated| {
        created
            .publisher_answer
            .lines()
            .find_map(|l| l.strip_prefix("a=candidate:"))
            .and_then(|l| l.split_whitespace().nth(5))
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap()
    };
    let mut a_pub = UdpPeer::new();
    let (_, a_created) = create_session(&node, "room-one", &mut a_pub, true).await;
    let mut c_pub = UdpPeer::new();
    let (_, c_created) = create_session(&node, "room-two", &mut c_pub, true).await;
    // Two rooms, two workers: each room's media goes to its own worker's port.
    let ports = [media_port(&a_created), media_port(&c_created)];
    assert_ne!(ports[0], ports[1], "rooms placed on different workers");
    for port in ports {
        assert!(node.all_media.iter().any(|m| m.port() == port));
    }
    // A second participant in room two lands on the same worker, and gets media.
    let media = node.all_media[node
        .all_media
        .iter()
        .position(|m| m.port() == ports[1])
        .unwrap()];
    let c_sub = UdpPeer::new();
    let peers = tokio::task::spawn_blocking(move || {
        run_call(
            vec![c_pub, c_sub],
            media,
            Duration::from_millis(1500),
            false,
        )
    })
    .await
    .unwrap();
    let mut d_pub = UdpPeer::new();
    let mut d_sub = UdpPeer::new();
    let (d, d_created) = create_session(&node, "room-two", &mut d_pub, false).await;
    assert_eq!(media_port(&d_created), ports[1], "same room, same worker");
    answer_subscriber(&node, d, &mut d_sub, &d_created).await;
    let mut peers = peers;
    peers.push(d_pub);
    peers.push(d_sub);
    let peers =
        tokio::task::spawn_blocking(move || run_call(peers, media, Duration::from_secs(3), false))
            .await
            .unwrap();
    assert!(
        peers[3].received_rtp > 100,
        "room two on worker two forwards ({})",
        peers[3].received_rtp
    );
    let load: serde_json::Value = client()
        .get(format!("http://{}/v1/load", node.http))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(load["rooms"], 2);
    assert_eq!(load["participants"], 3);
}

#[tokio::test]
async fn a_draining_node_takes_no_new_rooms_keeps_its_own_and_stops_when_empty() {
    let node = spawn_node().await;
    let base = format!("http://{}", node.http);
    let mut a_pub = UdpPeer::new();
    let (a, _) = create_session(&node, "staying-room", &mut a_pub, false).await;

    let signal = CancellationToken::new();
    let stop = CancellationToken::new();
    sfu::drain_then_stop(
        node.handles.clone(),
        signal.clone(),
        stop.clone(),
        Duration::from_secs(30),
    );
    signal.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let load: serde_json::Value = client()
        .get(format!("{base}/v1/load"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(load["draining"], true);
    assert_eq!(load["load"].as_f64().unwrap(), proto::sfu::DRAINING_LOAD);
    assert_eq!(
        client()
            .get(format!("{base}/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    // A new room is refused; the room already here still takes people.
    let mut new_pub = UdpPeer::new();
    let (offer, _) = {
        let mut api = new_pub.rtc.sdp_api();
        api.add_channel("room".into());
        api.apply().unwrap()
    };
    let refused = client()
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(TOKEN)
        .json(&CreateSession {
            room: RoomId::parse("new-room").unwrap(),
            participant: ParticipantId::new(),
            publisher_offer: offer.to_sdp_string(),
            tracks: vec![],
            auto_subscribe: true,
            data_channel: true,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let mut b_pub = UdpPeer::new();
    let (b, _) = create_session(&node, "staying-room", &mut b_pub, false).await;

    // Not stopped while people remain; stopped soon after the last one leaves.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!stop.is_cancelled(), "the node waits for its rooms");
    for participant in [a, b] {
        let response = client()
            .delete(format!("{base}/v1/sessions/{participant}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    tokio::time::timeout(Duration::from_secs(5), stop.cancelled())
        .await
        .expect("the node stops once drained");
}
