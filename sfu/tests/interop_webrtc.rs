//! webrtc-rs, a WebRTC stack written independently of str0m, as a publisher and
//! a subscriber through the real SFU node (UDP worker and HTTP control API on
//! 127.0.0.1). Two different implementations must agree on ICE, DTLS, SRTP,
//! SCTP and SDP over real sockets: media and its exact payload bytes reach the
//! subscriber, the subscriber's renegotiation is driven by the event stream the
//! way signaling drives it, a keyframe request travels back to the publisher,
//! and a message on the room data channel reaches the other participant.

use async_trait::async_trait;
use proto::ids::ParticipantId;
use proto::media::RoomId;
use proto::sfu::{CreateSession, SessionCreated, SfuEvent, SubscriberAnswer};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder, register_default_interceptors,
};

mod node;
use node::{Node, TOKEN, spawn_node};

const ROOM: &str = "interop-room";
/// Bound on every wait; on a quiet machine each step takes well under a second.
const WAIT: Duration = Duration::from_secs(20);
/// Payload types A's media engine offers; read back from the negotiated sender
/// parameters all the same, so a different answer would not break the test.
const VP8_PT: u8 = 96;
const OPUS_PT: u8 = 111;
/// Recognisable payload markers, so B can tell A's bytes from anything else.
const VIDEO_MARK: &[u8; 4] = b"MEv1";
const AUDIO_MARK: &[u8; 4] = b"MEa1";
/// Video packets B must receive, in order and intact (about 1 s of A's video).
const VIDEO_PACKETS: usize = 150;
const AUDIO_PACKETS: usize = 40;
const VIDEO_SSRC: u32 = 0x1111_0001;
const AUDIO_SSRC: u32 = 0x1111_0002;

/// `future`'s output, or a panic naming what never happened.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

// ---------------------------------------------------------------------------
// webrtc-rs peers
// ---------------------------------------------------------------------------

/// Forwards webrtc-rs's callbacks into channels the test awaits with timeouts.
struct Callbacks {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
    channels: mpsc::UnboundedSender<Arc<dyn DataChannel>>,
}

#[async_trait]
impl PeerConnectionEventHandler for Callbacks {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        let _ = self.channels.send(channel);
    }
}

/// webrtc-rs passes inbound RTCP to its interceptors only. This one, last in
/// the publisher's chain, marks keyframe requests (PLI, FIR) for the
/// application, so the test sees what the SFU asks of the publisher (as in
/// webrtc-rs's `rtcp-processing` example).
#[derive(Default)]
struct KeyframeRequestsToApp {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let packet = packet.as_any();
    packet.is::<PictureLossIndication>() || packet.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestsToApp {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = webrtc::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestsToApp {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// One webrtc-rs peer connection on its own UDP socket at 127.0.0.1.
struct Peer {
    sdp: Negotiator,
    state: watch::Receiver<RTCPeerConnectionState>,
    tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    channels: mpsc::UnboundedReceiver<Arc<dyn DataChannel>>,
}

/// The part of a peer that negotiates; cloned into the task that answers
/// renegotiations.
#[derive(Clone)]
struct Negotiator {
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
}

impl Negotiator {
    /// Set the local description and wait until ICE gathering is complete, so
    /// the SDP carries the host candidate (the SFU is ICE-lite and reads the
    /// candidates from the SDP; nothing is trickled here).
    async fn local_sdp(&mut self, description: RTCSessionDescription, who: &str) -> String {
        self.pc.set_local_description(description).await.unwrap();
        within(
            &format!("{who}: ICE gathering"),
            self.gathered.wait_for(|done| *done),
        )
        .await
        .unwrap();
        let sdp = self.pc.local_description().await.unwrap().sdp;
        assert!(
            sdp.contains("a=candidate:") && sdp.contains("127.0.0.1"),
            "{who} offers a loopback candidate:\n{sdp}"
        );
        sdp
    }

    /// Accept the SFU's subscriber `offer`, and hand it the answer.
    async fn answer_subscriber(
        &mut self,
        http: SocketAddr,
        participant: ParticipantId,
        offer: &str,
        who: &str,
    ) {
        let offer = RTCSessionDescription::offer(offer.to_owned()).unwrap();
        self.pc.set_remote_description(offer).await.unwrap();
        let answer = self.pc.create_answer(None).await.unwrap();
        let sdp = self.local_sdp(answer, who).await;
        let response = client()
            .post(format!(
                "http://{http}/v1/sessions/{participant}/subscriber/answer"
            ))
            .bearer_auth(TOKEN)
            .json(&SubscriberAnswer { sdp })
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{who}: subscriber answer accepted");
    }
}

impl Peer {
    async fn new(publisher: bool) -> Peer {
        // VP8 and Opus only, with the default interceptors (NACK, RTCP reports,
        // TWCC) a real webrtc-rs application would run.
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: vp8(),
                    payload_type: VP8_PT,
                },
                RtpCodecKind::Video,
            )
            .unwrap();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus(),
                    payload_type: OPUS_PT,
                },
                RtpCodecKind::Audio,
            )
            .unwrap();
        let mut registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
        if publisher {
            // Application-most, so every interceptor has seen the RTCP first.
            registry = registry.with(Slot::from(14_000), KeyframeRequestsToApp::default());
        }
        // Loopback only: webrtc-rs skips loopback candidates unless told, and
        // mDNS would hide the address behind a name the SFU cannot resolve.
        let settings = SettingEngineBuilder::new()
            .with_network_types(vec![NetworkType::Udp4])
            .with_include_loopback_candidate(true)
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .build();
        let (gathered_tx, gathered) = watch::channel(false);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let (channels_tx, channels) = mpsc::unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(Arc::new(Callbacks {
                gathered: gathered_tx,
                state: state_tx,
                tracks: tracks_tx,
                channels: channels_tx,
            }))
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await
            .unwrap();
        Peer {
            sdp: Negotiator {
                pc: Arc::new(pc),
                gathered,
            },
            state,
            tracks,
            channels,
        }
    }

    async fn connected(&mut self, who: &str) {
        within(&format!("{who}: connected to the SFU"), async {
            self.state
                .wait_for(|s| {
                    assert!(
                        !matches!(
                            s,
                            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                        ),
                        "{who} connection {s}"
                    );
                    *s == RTCPeerConnectionState::Connected
                })
                .await
                .map(|_| ())
        })
        .await
        .unwrap();
    }
}

// ---------------------------------------------------------------------------
// The control API, as signaling drives it
// ---------------------------------------------------------------------------

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A participant with both its connections: `publisher` (whose offer the SFU
/// answers; tracks are added by the caller beforehand) and `subscriber` (for
/// which the SFU makes the offers).
struct Participant {
    id: ParticipantId,
    publisher: Peer,
    subscriber: Peer,
    /// The room data channel on the publisher connection.
    room_channel: Arc<dyn DataChannel>,
    created: SessionCreated,
}

async fn join(node: &Node, mut publisher: Peer, who: &str) -> Participant {
    let room_channel = publisher
        .sdp
        .pc
        .create_data_channel(sfu::core::ROOM_CHANNEL, None)
        .await
        .unwrap();
    let offer = publisher.sdp.pc.create_offer(None).await.unwrap();
    let offer = publisher.sdp.local_sdp(offer, who).await;
    let id = ParticipantId::new();
    let response = client()
        .post(format!("http://{}/v1/sessions", node.http))
        .bearer_auth(TOKEN)
        .json(&CreateSession {
            room: RoomId::parse(ROOM).unwrap(),
            participant: id,
            publisher_offer: offer,
            tracks: vec![],
            auto_subscribe: true,
            data_channel: true,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{who}: session created");
    let created: SessionCreated = response.json().await.unwrap();
    publisher
        .sdp
        .pc
        .set_remote_description(
            RTCSessionDescription::answer(created.publisher_answer.clone()).unwrap(),
        )
        .await
        .unwrap();
    let mut subscriber = Peer::new(false).await;
    subscriber
        .sdp
        .answer_subscriber(node.http, id, &created.subscriber_offer.sdp, who)
        .await;
    Participant {
        id,
        publisher,
        subscriber,
        room_channel,
        created,
    }
}

/// Open the SFU's event stream (server-sent events, one JSON `SfuEvent` each).
/// Returns once the SFU has subscribed, so no later event is missed.
async fn open_events(node: &Node) -> mpsc::UnboundedReceiver<SfuEvent> {
    let mut response = client()
        .get(format!("http://{}/v1/events", node.http))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                for data in block.lines().filter_map(|l| l.strip_prefix("data:")) {
                    if let Ok(event) = serde_json::from_str::<SfuEvent>(data.trim_start()) {
                        let _ = tx.send(event);
                    }
                }
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------
// A's media: VP8-shaped and Opus-shaped RTP with payloads B can check
// ---------------------------------------------------------------------------

/// A video packet's bytes after the two-byte VP8 descriptor/header: the
/// marker, the packet's index in A's stream, and filler derived from it.
fn video_body(index: u32) -> Vec<u8> {
    let mut body = VIDEO_MARK.to_vec();
    body.extend_from_slice(&index.to_be_bytes());
    body.extend((0..600u32).map(|i| (index.wrapping_mul(31).wrapping_add(i)) as u8));
    body
}

fn audio_payload(index: u32) -> Vec<u8> {
    let mut payload = AUDIO_MARK.to_vec();
    payload.extend_from_slice(&index.to_be_bytes());
    payload.extend((0..80u32).map(|i| (index.wrapping_mul(7).wrapping_add(i)) as u8));
    payload
}

/// The index in A's stream a payload carries, if it carries `mark` at `at`.
fn index_of(payload: &[u8], mark: &[u8; 4], at: usize) -> Option<u32> {
    if payload.get(at..at + 4)? != mark {
        return None;
    }
    Some(u32::from_be_bytes(
        payload.get(at + 4..at + 8)?.try_into().ok()?,
    ))
}

/// RFC 7741: S bit and partition 0 in the descriptor, P bit clear in the
/// payload header: the first packet of a key frame.
fn is_vp8_keyframe_start(payload: &[u8]) -> bool {
    payload.len() > 2 && payload[0] & 0x10 != 0 && payload[1] & 0x01 == 0
}

/// A sender track with a fixed SSRC (webrtc-rs sends RTP only on the SSRCs
/// its track declares).
fn local_track(kind: RtpCodecKind, codec: RTCRtpCodec, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "interop-a".to_owned(),
        format!("interop-a-{kind}"),
        format!("interop-a-{kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )))
}

fn rtp(
    pt: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    marker: bool,
    payload: Vec<u8>,
) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp,
            ssrc,
            ..Default::default()
        },
        payload: payload.into(),
    }
}

/// What A's media loop is told and tells.
struct PublisherState {
    /// Set when a keyframe request arrives; the next frame is a key frame.
    keyframe_wanted: AtomicBool,
    /// How many PLI/FIR packets the SFU has sent A.
    keyframe_requests: watch::Sender<usize>,
}

/// A's "encoder": 50 frames/s of three VP8 packets, a key frame every second
/// and whenever asked, plus one Opus packet per 20 ms. Stops with `stop`.
fn run_publisher(
    video: Arc<TrackLocalStaticRTP>,
    audio: Arc<TrackLocalStaticRTP>,
    (video_pt, audio_pt): (u8, u8),
    state: Arc<PublisherState>,
    stop: CancellationToken,
) {
    // Keyframe requests arrive as RTCP events on the video track.
    let rtcp_video = video.clone();
    let rtcp_state = state.clone();
    let rtcp_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = rtcp_video.poll() => event,
                () = rtcp_stop.cancelled() => return,
            };
            let Some(TrackLocalEvent::OnRtcpPacket(packets)) = event else {
                if event.is_none() {
                    return;
                }
                continue;
            };
            let requests = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .count();
            if requests > 0 {
                rtcp_state.keyframe_wanted.store(true, Ordering::SeqCst);
                rtcp_state
                    .keyframe_requests
                    .send_modify(|count| *count += requests);
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut frame = 0u32;
        let mut video_index = 0u32;
        let mut audio_index = 0u32;
        let (mut video_seq, mut audio_seq) = (40_000u16, 7_000u16);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let key =
                frame.is_multiple_of(50) || state.keyframe_wanted.swap(false, Ordering::SeqCst);
            for part in 0..3u8 {
                // VP8 payload descriptor (S bit on the first packet) and
                // payload header (P bit clear on a key frame).
                let mut payload = vec![if part == 0 { 0x10 } else { 0x00 }, u8::from(!key)];
                payload.extend(video_body(video_index));
                let packet = rtp(
                    video_pt,
                    video_seq,
                    frame.wrapping_mul(1800),
                    VIDEO_SSRC,
                    part == 2,
                    payload,
                );
                if video.write_rtp(packet).await.is_err() {
                    return;
                }
                video_index += 1;
                video_seq = video_seq.wrapping_add(1);
            }
            let packet = rtp(
                audio_pt,
                audio_seq,
                audio_index.wrapping_mul(960),
                AUDIO_SSRC,
                false,
                audio_payload(audio_index),
            );
            if audio.write_rtp(packet).await.is_err() {
                return;
            }
            audio_index += 1;
            audio_seq = audio_seq.wrapping_add(1);
            frame += 1;
        }
    });
}

/// The payload type a sender negotiated for `mime`.
async fn negotiated_pt(pc: &Arc<dyn PeerConnection>, kind: RtpCodecKind, mime: &str) -> u8 {
    for sender in pc.get_senders().await {
        if sender.track().kind().await != kind {
            continue;
        }
        let parameters = sender.get_parameters().await.unwrap();
        if let Some(codec) = parameters
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        {
            return codec.payload_type;
        }
    }
    panic!("no {mime} negotiated on the publisher connection");
}

/// Read a remote track's RTP into `packets`, tagged with its kind.
fn read_track(
    track: Arc<dyn TrackRemote>,
    kind: RtpCodecKind,
    packets: mpsc::UnboundedSender<(RtpCodecKind, rtc::rtp::Packet)>,
) {
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            let TrackRemoteEvent::OnRtpPacket(packet) = event else {
                if matches!(event, TrackRemoteEvent::OnEnded) {
                    return;
                }
                continue;
            };
            if packets.send((kind, packet)).is_err() {
                return;
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_publisher_and_subscriber_interoperate_through_the_real_udp_driver() {
    let node = spawn_node().await;
    let mut events = open_events(&node).await;

    // B joins the empty room first, so A's tracks reach B by renegotiation.
    let b = join(&node, Peer::new(true).await, "B").await;
    let Participant {
        id: b_id,
        publisher: mut b_pub,
        subscriber: mut b_sub,
        created: b_created,
        ..
    } = b;
    assert!(
        b_created.subscriber_offer.tracks.is_empty(),
        "the room was empty"
    );
    b_pub.connected("B publisher").await;
    b_sub.connected("B subscriber").await;
    // The SFU opens the room channel on each subscriber connection.
    let b_room = within("B: the SFU's room data channel", b_sub.channels.recv())
        .await
        .unwrap();
    assert_eq!(b_room.label().await.unwrap(), sfu::core::ROOM_CHANNEL);

    // A publishes VP8 video and Opus audio.
    let a_pub = Peer::new(true).await;
    let video = local_track(RtpCodecKind::Video, vp8(), VIDEO_SSRC);
    let audio = local_track(RtpCodecKind::Audio, opus(), AUDIO_SSRC);
    a_pub.sdp.pc.add_track(video.clone()).await.unwrap();
    a_pub.sdp.pc.add_track(audio.clone()).await.unwrap();
    let a = join(&node, a_pub, "A").await;
    let Participant {
        id: a_id,
        publisher: mut a_pub,
        subscriber: mut a_sub,
        room_channel: a_room,
        ..
    } = a;
    a_pub.connected("A publisher").await;
    a_sub.connected("A subscriber").await;

    // Signaling's part: answer every subscriber offer the SFU pushes for B.
    let renegotiations = Arc::new(AtomicUsize::new(0));
    let mut b_signal = b_sub.sdp.clone();
    let http = node.http;
    let offered = renegotiations.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let SfuEvent::SubscriberOffer {
                participant_id,
                offer,
                ..
            } = event
                && participant_id == b_id
            {
                // Counted first: B's tracks may fire before the answer's 204.
                offered.fetch_add(1, Ordering::SeqCst);
                b_signal
                    .answer_subscriber(http, b_id, &offer.sdp, "B renegotiation")
                    .await;
            }
        }
    });

    let state = Arc::new(PublisherState {
        keyframe_wanted: AtomicBool::new(false),
        keyframe_requests: watch::Sender::new(0),
    });
    let stop = CancellationToken::new();
    let pts = (
        negotiated_pt(&a_pub.sdp.pc, RtpCodecKind::Video, MIME_TYPE_VP8).await,
        negotiated_pt(&a_pub.sdp.pc, RtpCodecKind::Audio, MIME_TYPE_OPUS).await,
    );
    run_publisher(video, audio, pts, state.clone(), stop.clone());

    // B's on_track fires for A's video and audio.
    let (packets_tx, mut packets) = mpsc::unbounded_channel();
    let mut video_track = None;
    let mut audio_seen = false;
    within("B: on_track for A's video and audio", async {
        while video_track.is_none() || !audio_seen {
            let track = b_sub.tracks.recv().await.unwrap();
            let kind = track.kind().await;
            match kind {
                RtpCodecKind::Video => video_track = Some(track.clone()),
                RtpCodecKind::Audio => audio_seen = true,
                _ => {}
            }
            read_track(track, kind, packets_tx.clone());
        }
    })
    .await;
    let video_track = video_track.unwrap();
    assert!(
        renegotiations.load(Ordering::SeqCst) >= 1,
        "A's tracks reached B through a renegotiation"
    );

    // A's bytes arrive intact, in order, without gaps worth the name.
    let mut video_indices = Vec::new();
    let mut audio_indices = Vec::new();
    let mut video_seqs = Vec::new();
    within("B: A's video and audio packets", async {
        while video_indices.len() < VIDEO_PACKETS || audio_indices.len() < AUDIO_PACKETS {
            let (kind, packet) = packets.recv().await.unwrap();
            let payload = &packet.payload[..];
            if payload.is_empty() {
                // Padding (bandwidth probing) carries no media.
                continue;
            }
            match kind {
                RtpCodecKind::Video => {
                    let index = index_of(payload, VIDEO_MARK, 2)
                        .unwrap_or_else(|| panic!("B got video that A did not send: {payload:?}"));
                    assert_eq!(&payload[2..], video_body(index), "video bytes intact");
                    if video_indices.is_empty() {
                        assert!(
                            is_vp8_keyframe_start(payload),
                            "B's video starts on a key frame"
                        );
                    }
                    video_indices.push(index);
                    video_seqs.push(packet.header.sequence_number);
                }
                RtpCodecKind::Audio => {
                    let index = index_of(payload, AUDIO_MARK, 0)
                        .unwrap_or_else(|| panic!("B got audio that A did not send: {payload:?}"));
                    assert_eq!(payload, audio_payload(index), "audio bytes intact");
                    audio_indices.push(index);
                }
                _ => {}
            }
        }
    })
    .await;
    check_order("video", &video_indices);
    check_order("audio", &audio_indices);
    // The SFU renumbers per subscriber: B sees one continuous sequence.
    let seq_jumps = video_seqs
        .windows(2)
        .filter(|w| w[1] != w[0].wrapping_add(1))
        .count();
    assert!(
        seq_jumps <= VIDEO_PACKETS / 50,
        "{seq_jumps} breaks in B's RTP sequence numbers"
    );

    // B asks for a keyframe; the SFU relays it to A. The SFU asks by itself
    // only while a subscriber waits for a keyframe, and B already receives
    // video, so a request A sees from now on is B's. Asked again if none
    // comes, as the SFU coalesces requests within 500 ms.
    let mut requests = state.keyframe_requests.subscribe();
    let before = *requests.borrow_and_update();
    let media_ssrc = *video_track.ssrcs().await.first().unwrap();
    within("A: a keyframe request relayed from B's PLI", async {
        loop {
            video_track
                .write_rtcp(vec![Box::new(PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                })])
                .await
                .unwrap();
            let relayed = requests.wait_for(|count| *count > before);
            if tokio::time::timeout(Duration::from_millis(600), relayed)
                .await
                .is_ok()
            {
                break;
            }
        }
    })
    .await;

    // A's message on its publisher room channel reaches B's room channel.
    within("A: its room data channel open", async {
        while a_room.ready_state().await.unwrap() != webrtc::data_channel::RTCDataChannelState::Open
        {
            match a_room.poll().await {
                Some(DataChannelEvent::OnOpen) => break,
                Some(_) => {}
                None => panic!("A's room channel closed"),
            }
        }
    })
    .await;
    a_room.send_text("hello from webrtc-rs A").await.unwrap();
    let message = within("B: A's room message", async {
        loop {
            match b_room.poll().await {
                Some(DataChannelEvent::OnMessage(message)) => break message,
                Some(_) => {}
                None => panic!("B's room channel closed"),
            }
        }
    })
    .await;
    assert!(message.is_string);
    let envelope: serde_json::Value = serde_json::from_slice(&message.data).unwrap();
    assert_eq!(envelope["from"], a_id.to_string());
    assert_eq!(envelope["text"], "hello from webrtc-rs A");

    stop.cancel();
    for peer in [&a_pub, &a_sub, &b_pub, &b_sub] {
        let _ = peer.sdp.pc.close().await;
    }
}

/// Indices as B received them: strictly increasing (in order), and at most
/// 2% of the span missing. Loopback loses nothing; the slack is for a busy
/// 2-core machine dropping the odd datagram.
fn check_order(what: &str, indices: &[u32]) {
    let out_of_order = indices.windows(2).filter(|w| w[1] <= w[0]).count();
    assert_eq!(out_of_order, 0, "{what} arrived out of order: {indices:?}");
    let span = (indices[indices.len() - 1] - indices[0] + 1) as usize;
    let missing = span - indices.len();
    assert!(
        missing * 50 <= span,
        "{what}: {missing} of {span} packets missing: {indices:?}"
    );
}
