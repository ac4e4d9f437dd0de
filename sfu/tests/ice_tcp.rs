//! ICE over TCP through the real SFU node on 127.0.0.1: a str0m client whose
//! only transport is a TCP connection to the worker's media port (RFC 4571
//! framing) publishes to a UDP subscriber and receives a UDP publisher's
//! video, while hostile TCP clients (garbage, oversized lengths, silence) are
//! disconnected without harming the call.

use proto::ids::ParticipantId;
use proto::media::{RoomId, TrackSource};
use proto::sfu::{CreateSession, SessionCreated, SubscriberAnswer, TrackDeclaration};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest any step may take before the test fails with a message.
mod node;
use node::{Node, TOKEN, spawn_node};

const STEP: Duration = Duration::from_secs(10);

/// How a peer reaches the SFU.
enum Transport {
    Udp(UdpSocket),
    /// One TCP connection to the media port; `inbox` holds bytes read but not
    /// yet a whole frame, `outbox` framed bytes the socket has not taken yet.
    Tcp {
        stream: TcpStream,
        inbox: Vec<u8>,
        outbox: Vec<u8>,
    },
}

/// A str0m client on its own socket, UDP or TCP.
struct Peer {
    rtc: Rtc,
    transport: Transport,
    addr: SocketAddr,
    received_rtp: usize,
    video_mid: Option<Mid>,
    seq: u64,
    frame: u32,
}

impl Peer {
    fn rtc(now: Instant) -> Rtc {
        Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(now)
    }

    fn udp() -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let mut rtc = Peer::rtc(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Peer::with(rtc, Transport::Udp(socket), addr)
    }

    /// A peer whose only candidate is the local end of a TCP connection to
    /// the SFU's media port (an active candidate: we connect, the SFU listens).
    fn tcp(media: SocketAddr) -> Peer {
        let stream = TcpStream::connect_timeout(&media, STEP)
            .expect("the SFU accepts TCP on its media port");
        stream.set_nodelay(true).unwrap();
        stream.set_nonblocking(true).unwrap();
        let addr = stream.local_addr().unwrap();
        let mut rtc = Peer::rtc(Instant::now());
        let candidate = Candidate::builder()
            .tcp()
            .host(addr)
            .tcptype(TcpType::Active)
            .build()
            .unwrap();
        rtc.add_local_candidate(candidate);
        let transport = Transport::Tcp {
            stream,
            inbox: Vec::new(),
            outbox: Vec::new(),
        };
        Peer::with(rtc, transport, addr)
    }

    fn with(rtc: Rtc, transport: Transport, addr: SocketAddr) -> Peer {
        Peer {
            rtc,
            transport,
            addr,
            received_rtp: 0,
            video_mid: None,
            seq: 1000,
            frame: 0,
        }
    }

    /// Drain output, feed whatever arrived, then the time.
    fn pump(&mut self) {
        self.drain();
        for (proto, source, bytes) in self.receive() {
            let Ok(contents) = bytes.as_slice().try_into() else {
                continue;
            };
            let input = Input::Receive(
                Instant::now(),
                Receive {
                    proto,
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

    fn receive(&mut self) -> Vec<(Protocol, SocketAddr, Vec<u8>)> {
        let mut received = Vec::new();
        match &mut self.transport {
            Transport::Udp(socket) => {
                let mut buf = [0u8; 2048];
                while let Ok((len, source)) = socket.recv_from(&mut buf) {
                    received.push((Protocol::Udp, source, buf[..len].to_vec()));
                }
            }
            Transport::Tcp { stream, inbox, .. } => {
                let source = stream.peer_addr().unwrap();
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => panic!("the SFU closed a live TCP media connection"),
                        Ok(len) => inbox.extend_from_slice(&buf[..len]),
                        Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                        Err(err) => panic!("TCP media connection failed: {err}"),
                    }
                }
                // RFC 4571: a 16-bit big-endian length, then that many bytes.
                while inbox.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([inbox[0], inbox[1]]));
                    if inbox.len() < 2 + len {
                        break;
                    }
                    received.push((Protocol::Tcp, source, inbox[2..2 + len].to_vec()));
                    inbox.drain(..2 + len);
                }
            }
        }
        received
    }

    fn drain(&mut self) {
        while self.rtc.is_alive() {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => match &mut self.transport {
                    Transport::Udp(socket) => {
                        let _ = socket.send_to(&t.contents, t.destination);
                    }
                    Transport::Tcp { stream, outbox, .. } => {
                        assert_eq!(t.proto, Protocol::Tcp, "a TCP peer only sends over TCP");
                        assert_eq!(Some(t.destination), stream.peer_addr().ok());
                        let len = u16::try_from(t.contents.len()).unwrap();
                        outbox.extend_from_slice(&len.to_be_bytes());
                        outbox.extend_from_slice(&t.contents);
                    }
                },
                Output::Event(Event::RtpPacket(_)) => self.received_rtp += 1,
                Output::Event(_) => {}
            }
        }
        if let Transport::Tcp { stream, outbox, .. } = &mut self.transport {
            while !outbox.is_empty() {
                match stream.write(outbox) {
                    Ok(0) => panic!("the SFU closed a live TCP media connection"),
                    Ok(n) => {
                        outbox.drain(..n);
                    }
                    // The rest goes on the next pump.
                    Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                    Err(err) => panic!("TCP media connection failed: {err}"),
                }
            }
        }
    }

    /// Write one 30 fps VP8 frame in three packets (a keyframe each second)
    /// if this peer publishes and is connected.
    fn publish_frame(&mut self) {
        let Some(mid) = self.video_mid else {
            return;
        };
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
            .expect("VP8 was negotiated");
        for part in 0..3u8 {
            self.seq += 1;
            let key = frame % 30 == 1;
            let mut payload = vec![if part == 0 { 0x10 } else { 0 }, if key { 0 } else { 1 }];
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

/// Run the peers (every publisher sending 30 fps) until `done` holds; fail
/// with `what` if it does not within [`STEP`].
async fn run_until(
    peers: Vec<Peer>,
    what: &'static str,
    done: impl Fn(&[Peer]) -> bool + Send + 'static,
) -> Vec<Peer> {
    tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        let start = Instant::now();
        let mut next_frame = start;
        while !done(&peers) {
            assert!(start.elapsed() < STEP, "timed out waiting until {what}");
            for peer in &mut peers {
                peer.pump();
            }
            if Instant::now() >= next_frame {
                next_frame += Duration::from_millis(33);
                for peer in &mut peers {
                    peer.publish_frame();
                }
            }
            // Pacing the loop, not a wait for an outcome.
            std::thread::sleep(Duration::from_millis(1));
        }
        peers
    })
    .await
    .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn create_session(
    node: &Node,
    room: &str,
    publisher: &mut Peer,
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
    subscriber: &mut Peer,
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

/// Poll `/v1/rooms/{room}` until it lists `tracks` tracks.
async fn wait_for_tracks(node: &Node, room: &str, tracks: usize, peers: Vec<Peer>) -> Vec<Peer> {
    let start = Instant::now();
    let mut peers = peers;
    loop {
        let snapshot: serde_json::Value = client()
            .get(format!("http://{}/v1/rooms/{room}", node.http))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if snapshot["tracks"].as_array().map_or(0, Vec::len) >= tracks {
            return peers;
        }
        assert!(
            start.elapsed() < STEP,
            "the room never had {tracks} published tracks: {snapshot}"
        );
        // Keep the peers running between polls.
        let until = Instant::now() + Duration::from_millis(100);
        peers = run_until(peers, "the poll interval passed", move |_| {
            Instant::now() >= until
        })
        .await;
    }
}

async fn metrics(node: &Node) -> String {
    client()
        .get(format!("http://{}/metrics", node.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Wait until the SFU closes `stream`; fail with `what` if it has not within
/// `limit`.
async fn expect_closed(mut stream: tokio::net::TcpStream, limit: Duration, what: &str) {
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // Nothing is ever sent to these; keep reading until the end.
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the SFU kept open {what} for {limit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_tcp_only_publishes_and_receives_while_hostile_tcp_clients_are_cut_off() {
    let node = spawn_node().await;
    let room = "tcp-room";

    // B publishes over UDP first, so A's first subscriber offer carries B's video.
    let mut b_pub = Peer::udp();
    let b_sub = Peer::udp();
    let (_b, _) = create_session(&node, room, &mut b_pub, true).await;
    let peers = run_until(vec![b_pub, b_sub], "B connected over UDP", |p| {
        p[0].rtc.is_connected()
    })
    .await;
    let peers = wait_for_tracks(&node, room, 1, peers).await;

    // A has nothing but TCP connections to the media port, one per session.
    let mut a_pub = Peer::tcp(node.media);
    let mut a_sub = Peer::tcp(node.media);
    let (a, a_created) = create_session(&node, room, &mut a_pub, true).await;
    assert!(
        a_created.publisher_answer.contains("tcptype passive"),
        "the SFU offers a passive TCP candidate:\n{}",
        a_created.publisher_answer
    );
    assert_eq!(
        a_created.subscriber_offer.tracks.len(),
        1,
        "A is offered B's video"
    );
    answer_subscriber(&node, a, &mut a_sub, &a_created).await;
    let mut peers = peers;
    peers.push(a_pub);
    peers.push(a_sub);
    let peers = run_until(peers, "A connected over TCP both ways", |p| {
        p[2].rtc.is_connected() && p[3].rtc.is_connected()
    })
    .await;
    let peers = wait_for_tracks(&node, room, 2, peers).await;

    // C subscribes over UDP and is offered A's video (and B's).
    let mut c_pub = Peer::udp();
    let mut c_sub = Peer::udp();
    let (c, c_created) = create_session(&node, room, &mut c_pub, false).await;
    assert_eq!(
        c_created.subscriber_offer.tracks.len(),
        2,
        "C is offered A's and B's video"
    );
    answer_subscriber(&node, c, &mut c_sub, &c_created).await;
    let mut peers = peers;
    peers.push(c_pub);
    peers.push(c_sub);

    // Hostile TCP clients at the same port, while the call goes on.
    let garbage = async {
        let mut http = tokio::net::TcpStream::connect(node.media).await.unwrap();
        // "GE" read as a length is 18245: over the 2048-byte limit.
        let _ = http.write_all(b"GET / HTTP/1.1\r\nHost: sfu\r\n\r\n").await;
        expect_closed(http, STEP, "a connection speaking HTTP").await;

        let mut oversized = tokio::net::TcpStream::connect(node.media).await.unwrap();
        let _ = oversized.write_all(&[0xFF, 0xFF, 0x80, 0x00]).await;
        expect_closed(
            oversized,
            STEP,
            "a connection announcing a 65535-byte frame",
        )
        .await;

        // A well-framed first frame that is RTP, not the STUN check ICE starts with.
        let mut not_stun = tokio::net::TcpStream::connect(node.media).await.unwrap();
        let mut frame = vec![0x00, 0x64, 0x80, 0x60];
        frame.extend_from_slice(&[0; 98]);
        let _ = not_stun.write_all(&frame).await;
        expect_closed(not_stun, STEP, "a connection whose first frame is not STUN").await;
    };
    let silent = async {
        let silent = tokio::net::TcpStream::connect(node.media).await.unwrap();
        expect_closed(
            silent,
            sfu::tcp::HANDSHAKE_TIMEOUT + Duration::from_secs(3),
            "a connection that never sends a STUN check",
        )
        .await;
    };
    let call = run_until(peers, "A's and B's video reached C and A", |p| {
        p[3].received_rtp > 150 && p[5].received_rtp > 300
    });
    let (peers, (), ()) = tokio::join!(call, garbage, silent);

    // The call carried on after the hostile clients were cut off.
    let (a_got, c_got) = (peers[3].received_rtp, peers[5].received_rtp);
    let peers = run_until(peers, "media kept flowing over TCP", move |p| {
        p[3].received_rtp > a_got + 60 && p[5].received_rtp > c_got + 60
    })
    .await;
    assert!(
        peers[2].rtc.is_connected() && peers[3].rtc.is_connected(),
        "A is still connected over TCP"
    );

    // Counters are pushed every 100 ms: poll until they show everything.
    let start = Instant::now();
    loop {
        let metrics = metrics(&node).await;
        let counted = metric(&metrics, "meetease_sfu_tcp_connections_accepted_total") >= 6.0
            && metric(&metrics, "meetease_sfu_tcp_connections_bad_framing_total") >= 3.0
            && metric(&metrics, "meetease_sfu_tcp_connections_timed_out_total") >= 1.0
            && metric(&metrics, "meetease_sfu_tcp_connections{") == 2.0;
        if counted {
            assert_eq!(metric(&metrics, "meetease_sfu_sessions_failed_total"), 0.0);
            break;
        }
        assert!(
            start.elapsed() < STEP,
            "TCP connections were not counted as expected:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(peers);
}
