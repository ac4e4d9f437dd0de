//! Synthetic participants: str0m clients that publish realistic RTP (with a
//! send timestamp and sequence in every payload, keyframes on request, NACKs
//! answered from str0m's packet cache) and receive without decoding.
//!
//! Each participant is one task owning its two `Rtc`s (publisher and
//! subscriber, like the web client) and their two UDP sockets on 127.0.0.1.

use crate::impair::Impairment;
use crate::stats::{Feedback, ParticipantReport, TrackRx};
use proto::media::Layer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Marks a synthetic payload: `b"ME"`.
pub const MAGIC: [u8; 2] = *b"ME";

/// Where `MAGIC` sits in every payload: after a 1-byte VP8 payload descriptor
/// and 10 bytes shaped like a VP8 payload header (frame tag, and on keyframes
/// the start code and size), so servers that parse VP8 to find keyframes
/// (Janus does, for simulcast) see real-looking frames.
pub const BODY_AT: usize = 11;

/// The first bytes of a synthetic video packet (RFC 7741 §4.2/§4.3, RFC 6386 §9.1).
fn vp8_header(start_of_frame: bool, key: bool) -> [u8; BODY_AT] {
    let mut h = [0u8; BODY_AT];
    h[0] = if start_of_frame { 0x10 } else { 0x00 };
    if start_of_frame {
        // Frame tag: P (bit 0) is 0 on keyframes; show_frame (bit 4) set.
        h[1] = if key { 0x10 } else { 0x11 };
        if key {
            h[4..7].copy_from_slice(&[0x9d, 0x01, 0x2a]);
            h[7..9].copy_from_slice(&640u16.to_le_bytes());
            h[9..11].copy_from_slice(&360u16.to_le_bytes());
        }
    }
    h
}

/// What one participant publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    pub audio: bool,
    pub video: bool,
    pub simulcast: bool,
    /// Video bitrate of the top layer, bits per second.
    pub video_bps: u64,
    /// A video frame's packets go back to back at the frame's time, as a
    /// browser's pacer sends them; otherwise evenly over the frame interval.
    pub frame_bursts: bool,
    /// A screen share as well: a second video track, 5 frames a second.
    pub screen: bool,
}

/// One simulcast layer the synthetic encoder produces.
#[derive(Debug, Clone, Copy)]
struct LayerSpec {
    rid: Option<&'static str>,
    fps: f64,
    /// Packets per second and bytes per packet for this layer.
    pps: f64,
    size: usize,
}

fn video_layers(publish: Publish) -> Vec<LayerSpec> {
    // Realistic packet sizes: full MTU-ish packets for the top layer, smaller
    // frames for lower ones; 30 fps.
    let top = publish.video_bps as f64;
    let layer = |rid, bps: f64, size: usize| LayerSpec {
        rid,
        fps: 30.0,
        pps: (bps / 8.0 / size as f64).max(30.0),
        size,
    };
    if publish.simulcast {
        vec![
            layer(Some("q"), top / 10.0, 600),
            layer(Some("h"), top / 3.3, 1000),
            layer(Some("f"), top, 1150),
        ]
    } else {
        vec![layer(None, top, 1150)]
    }
}

/// A screen share: few frames, each many full packets (text needs detail,
/// not motion), about 1 Mbit/s.
fn screen_layers() -> Vec<LayerSpec> {
    vec![LayerSpec {
        rid: None,
        fps: 5.0,
        pps: 1_000_000.0 / 8.0 / 1150.0,
        size: 1150,
    }]
}

struct OutTrack {
    mid: Mid,
    rid: Option<Rid>,
    pt: Pt,
    kind: MediaKind,
    /// Global id of this publisher track+layer, carried in the payload.
    wire_id: u32,
    interval: Duration,
    /// The time from one frame to the next, where a frame's packets go back
    /// to back (`Publish::frame_bursts`, video only); `None` to send every
    /// `interval`.
    frame_interval: Option<Duration>,
    size: usize,
    next_send: Instant,
    seq: u64,
    /// Packets into the current frame; a frame is ~ pps/30 packets.
    packets_per_frame: u32,
    in_frame: u32,
    frame: u32,
    keyframe_wanted: bool,
    /// Dynacast: the SFU asked for this layer to stop (nobody watches it).
    paused: bool,
}

impl OutTrack {
    /// Dynacast, as a browser's encoder does it: a layer the SFU no longer
    /// asks for stops sending, and one it asks for again starts over at once
    /// with a keyframe. A single-layer track counts as the high layer
    /// ([`proto::sfu::SfuEvent::PublisherLayers`]).
    fn set_active(&mut self, active: &[Layer], now: Instant) {
        let layer = self
            .rid
            .and_then(|rid| Layer::from_rid(&rid))
            .unwrap_or(Layer::High);
        let paused = !active.contains(&layer);
        if self.paused && !paused {
            self.keyframe_wanted = true;
            self.in_frame = 0;
            self.next_send = now;
        }
        self.paused = paused;
    }

    /// Count the packet about to go out and set when the next one is due:
    /// whether it starts a frame and whether it ends one (the marker bit).
    fn advance(&mut self) -> (bool, bool) {
        self.seq += 1;
        let start_of_frame = self.in_frame == 0;
        if start_of_frame {
            self.frame += 1;
        }
        self.in_frame += 1;
        let end_of_frame = self.in_frame >= self.packets_per_frame;
        if end_of_frame {
            self.in_frame = 0;
        }
        self.next_send += match self.frame_interval {
            // The rest of the frame goes now; the next frame at its time.
            Some(frame) if end_of_frame => frame,
            Some(_) => Duration::ZERO,
            None => self.interval,
        };
        (start_of_frame, end_of_frame)
    }

    /// The payload size of packet `index` (from 0) of the current frame.
    /// Evenly spread packets are all `size`. A frame sent as a burst is cut
    /// as libwebrtc cuts one (`RtpPacketizer::SplitAboutEqually`): its bytes
    /// shared equally, the remainder one byte each on the last packets; the
    /// frame's size varies by a few bytes from frame to frame, so every
    /// remainder occurs. (The SFU's GSO runs depend on it: a run is packets of
    /// one length, the last possibly shorter.)
    fn packet_size(&self, index: u32) -> usize {
        if self.frame_interval.is_none() || self.packets_per_frame <= 1 {
            return self.size;
        }
        let count = self.packets_per_frame as usize;
        let mix = (u64::from(self.frame).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ u64::from(self.wire_id))
            >> 32;
        let total = self.size * count - (mix as usize % count);
        let (base, larger) = (total / count, total % count);
        base + usize::from(index as usize >= count - larger)
    }
}

/// Counters the orchestrator reads while the test runs.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Synthetic media packets recorded by receivers (after impairment).
    pub received: AtomicU64,
    /// RTP media packets that reached a receiving socket (before impairment):
    /// what the server forwarded, for servers that do not count it themselves.
    pub arrived: AtomicU64,
}

/// Messages from the orchestrator to a participant task.
#[derive(Debug)]
pub enum Control {
    /// The SFU offers a new subscriber description: answer it.
    SubscriberOffer(String),
    /// Forget what was received so far (the warm-up is over).
    ResetStats,
    /// Join time counts from now: the request that will bring media is being
    /// made (Janus subscriptions come after everyone is created).
    StartJoinClock,
    /// Dynacast: send these layers of the video track `mid`, pause the rest.
    PublisherLayers { mid: String, active: Vec<Layer> },
}

pub struct Participant {
    pub index: usize,
    pub publisher: Rtc,
    pub subscriber: Rtc,
    pub_socket: UdpSocket,
    sub_socket: UdpSocket,
    pub pub_addr: SocketAddr,
    pub sub_addr: SocketAddr,
    pending: Option<SdpPendingOffer>,
    publish: Publish,
    mids: Vec<(Mid, MediaKind)>,
    out: Vec<OutTrack>,
    rx: HashMap<(u32, u8), TrackRx>,
    /// Per SSRC the subscriber receives, the publisher layer (wire id and
    /// layer tag) its last packet came from: a switch back to a layer seen
    /// before resumes that layer's stretch (see [`TrackRx::resume`]).
    last_layer: HashMap<u32, (u32, u8)>,
    epoch: Instant,
    impairment: Impairment,
    joined_at: Instant,
    first_media_at: Option<Instant>,
    live: Arc<LiveCounters>,
    pub sfu_addrs: Vec<SocketAddr>,
    /// Lean receiving: once connected, media is read from the clear RTP header
    /// (sequence number, timestamp) without decrypting or feeding str0m, so one
    /// load-generator core can outpace the SFU. No NACK, no feedback.
    lean: bool,
    /// Extended-sequence state per incoming SSRC in lean mode.
    lean_seq: HashMap<u32, (u16, u64)>,
    /// Lean mode: the smallest transit time seen per SSRC (µs, arbitrary origin).
    lean_base: HashMap<u32, i64>,
    /// The subscriber's latest ingress stats per (mid, rid): NACKs, PLIs, jitter in ms.
    ingress: HashMap<(Mid, Option<Rid>), (u64, u64, f64)>,
    /// NACK and PLI counts at the end of the warm-up, subtracted at the end.
    ingress_base: HashMap<(Mid, Option<Rid>), (u64, u64)>,
    /// The screen-share track's mid, when publishing one.
    screen_mid: Option<Mid>,
    /// The layers the SFU last asked for, per video track (dynacast); kept
    /// for tracks whose sending has not started yet.
    active_layers: HashMap<Mid, Vec<Layer>>,
    /// When the publisher and the subscriber `Rtc` next want a timeout, as
    /// their last drain said.
    next_timeout: [Instant; 2],
}

impl Participant {
    pub async fn new(
        index: usize,
        bind: std::net::IpAddr,
        publish: Publish,
        epoch: Instant,
        impairment: Impairment,
        live: Arc<LiveCounters>,
        lean: bool,
    ) -> anyhow::Result<Participant> {
        let pub_socket = UdpSocket::bind((bind, 0)).await?;
        let sub_socket = UdpSocket::bind((bind, 0)).await?;
        let pub_addr = pub_socket.local_addr()?;
        let sub_addr = sub_socket.local_addr()?;
        let now = Instant::now();
        let build = |addr, stats: Option<Duration>| {
            // Offer what a browser offers (str0m's defaults mirror Chrome's list:
            // VP8, seven H.264 and two VP9 configurations), so that the SDP the
            // server writes and parses at every join is a browser's; send VP8.
            let mut rtc = Rtc::builder()
                .set_rtp_mode(true)
                .clear_codecs()
                .enable_opus(true, false)
                .enable_vp8(true)
                .enable_h264(true)
                .enable_vp9(true)
                .set_send_buffer_video(2000)
                .set_stats_interval(stats)
                .build(now);
            if let Ok(candidate) = Candidate::host(addr, "udp") {
                rtc.add_local_candidate(candidate);
            }
            rtc
        };
        Ok(Participant {
            index,
            publisher: build(pub_addr, None),
            // Receivers report what they asked of the server (NACK, PLI) and jitter.
            subscriber: build(sub_addr, Some(Duration::from_secs(1))),
            pub_socket,
            sub_socket,
            pub_addr,
            sub_addr,
            pending: None,
            publish,
            mids: Vec::new(),
            out: Vec::new(),
            rx: HashMap::new(),
            epoch,
            impairment,
            joined_at: now,
            first_media_at: None,
            live,
            sfu_addrs: Vec::new(),
            lean,
            lean_seq: HashMap::new(),
            last_layer: HashMap::new(),
            lean_base: HashMap::new(),
            ingress: HashMap::new(),
            ingress_base: HashMap::new(),
            next_timeout: [now; 2],
            screen_mid: None,
            active_layers: HashMap::new(),
        })
    }

    /// Join time counts from here (for participants that publish nothing,
    /// `publisher_offer` is never called).
    pub fn mark_joining(&mut self) {
        self.joined_at = Instant::now();
    }

    /// The publisher offer and the track declarations that go with it; with
    /// `data_channel`, the `room` channel a data-channel client opens (always
    /// when there is no media to offer: an offer needs one m-line).
    pub fn publisher_offer(
        &mut self,
        data_channel: bool,
    ) -> (String, Vec<proto::sfu::TrackDeclaration>) {
        use proto::media::TrackSource;
        let mut api = self.publisher.sdp_api();
        let mut tracks = Vec::new();
        if self.publish.audio {
            let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            self.mids.push((mid, MediaKind::Audio));
            tracks.push(proto::sfu::TrackDeclaration {
                mid: mid.to_string(),
                source: TrackSource::Microphone,
            });
        }
        if self.publish.video {
            let simulcast = self.publish.simulcast.then(|| {
                let mut s = Simulcast::new();
                for rid in ["q", "h", "f"] {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
            self.mids.push((mid, MediaKind::Video));
            tracks.push(proto::sfu::TrackDeclaration {
                mid: mid.to_string(),
                source: TrackSource::Camera,
            });
        }
        if self.publish.screen {
            let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
            self.screen_mid = Some(mid);
            self.mids.push((mid, MediaKind::Video));
            tracks.push(proto::sfu::TrackDeclaration {
                mid: mid.to_string(),
                source: TrackSource::ScreenShare,
            });
        }
        if data_channel || self.mids.is_empty() {
            api.add_channel("room".into());
        }
        let (offer, pending) = api.apply().expect("an offer with media or a data channel");
        self.pending = Some(pending);
        self.joined_at = Instant::now();
        (offer.to_sdp_string(), tracks)
    }

    pub fn accept_publisher_answer(&mut self, sdp: &str) -> anyhow::Result<()> {
        let answer = SdpAnswer::from_sdp_string(sdp)?;
        let pending = self
            .pending
            .take()
            .ok_or_else(|| anyhow::anyhow!("no pending offer"))?;
        self.publisher.sdp_api().accept_answer(pending, answer)?;
        self.sfu_addrs.extend(candidate_addrs(sdp));
        Ok(())
    }

    pub fn answer_subscriber_offer(&mut self, sdp: &str) -> anyhow::Result<String> {
        let offer = SdpOffer::from_sdp_string(sdp)?;
        self.sfu_addrs.extend(candidate_addrs(sdp));
        let answer = self.subscriber.sdp_api().accept_offer(offer)?;
        Ok(answer.to_sdp_string())
    }

    /// Publisher tracks are set up once the connection is up (payload types
    /// are known only then).
    fn setup_out_tracks(&mut self, now: Instant, next_wire_id: &AtomicU64) {
        if !self.out.is_empty() || !self.publisher.is_connected() {
            return;
        }
        let pt_of = |rtc: &Rtc, codec| {
            rtc.codec_config()
                .params()
                .iter()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
        };
        for (mid, kind) in self.mids.clone() {
            let (codec, layers) = match kind {
                MediaKind::Audio => (
                    Codec::Opus,
                    vec![LayerSpec {
                        rid: None,
                        fps: 50.0,
                        pps: 50.0,
                        size: 100,
                    }],
                ),
                MediaKind::Video if Some(mid) == self.screen_mid => (Codec::Vp8, screen_layers()),
                MediaKind::Video => (Codec::Vp8, video_layers(self.publish)),
            };
            let Some(pt) = pt_of(&self.publisher, codec) else {
                continue;
            };
            for layer in layers {
                let packets_per_frame = ((layer.pps / layer.fps).round() as u32).max(1);
                self.out.push(OutTrack {
                    mid,
                    rid: layer.rid.map(Rid::from),
                    pt,
                    kind,
                    wire_id: next_wire_id.fetch_add(1, Ordering::Relaxed) as u32,
                    interval: Duration::from_secs_f64(1.0 / layer.pps),
                    frame_interval: (self.publish.frame_bursts && kind == MediaKind::Video)
                        .then(|| Duration::from_secs_f64(1.0 / layer.fps)),
                    size: layer.size,
                    next_send: now,
                    seq: 0,
                    packets_per_frame,
                    in_frame: 0,
                    frame: 0,
                    keyframe_wanted: true,
                    paused: false,
                });
            }
        }
        for (mid, active) in self.active_layers.clone() {
            self.set_publisher_layers(mid, &active, now);
        }
    }

    /// Dynacast: the SFU wants these layers of the video track `mid` (see
    /// [`OutTrack::set_active`]). Audio is never paused this way.
    fn set_publisher_layers(&mut self, mid: Mid, active: &[Layer], now: Instant) {
        for t in &mut self.out {
            if t.mid == mid && t.kind == MediaKind::Video {
                t.set_active(active, now);
            }
        }
        self.active_layers.insert(mid, active.to_vec());
    }

    /// Run until `stop`; then return what this participant measured.
    pub async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        answers: mpsc::UnboundedSender<(usize, String)>,
        next_wire_id: Arc<AtomicU64>,
        stop: CancellationToken,
    ) -> ParticipantReport {
        let mut pub_buf = vec![0u8; 2048];
        let mut sub_buf = vec![0u8; 2048];
        let mut delayed: std::collections::VecDeque<(Instant, bool, Vec<u8>, SocketAddr)> =
            Default::default();
        loop {
            let now = Instant::now();
            self.setup_out_tracks(now, &next_wire_id);
            let mut deadline = now + Duration::from_millis(50);
            for t in self.out.iter().filter(|t| !t.paused) {
                deadline = deadline.min(t.next_send);
            }
            if let Some((at, ..)) = delayed.front() {
                deadline = deadline.min(*at);
            }
            deadline = deadline.min(self.next_timeout[0]).min(self.next_timeout[1]);
            tokio::select! {
                _ = stop.cancelled() => break,
                message = control.recv() => match message {
                    Some(Control::SubscriberOffer(sdp)) => {
                        if let Ok(answer) = self.answer_subscriber_offer(&sdp) {
                            let _ = answers.send((self.index, answer));
                        }
                    }
                    Some(Control::StartJoinClock) => self.mark_joining(),
                    Some(Control::PublisherLayers { mid, active }) => {
                        self.set_publisher_layers(Mid::from(mid.as_str()), &active, Instant::now());
                    }
                    Some(Control::ResetStats) => {
                        self.rx.values_mut().for_each(TrackRx::start_window);
                        self.ingress_base = self
                            .ingress
                            .iter()
                            .map(|(k, (n, p, _))| (*k, (*n, *p)))
                            .collect();
                    }
                    None => break,
                },
                received = self.pub_socket.recv_from(&mut pub_buf) => {
                    if let Ok((len, source)) = received {
                        let data = pub_buf[..len].to_vec();
                        self.receive(true, source, data, &mut delayed);
                    }
                }
                received = self.sub_socket.recv_from(&mut sub_buf) => {
                    if let Ok((len, source)) = received {
                        let data = sub_buf[..len].to_vec();
                        self.receive(false, source, data, &mut delayed);
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
            let now = Instant::now();
            while delayed.front().is_some_and(|(at, ..)| *at <= now) {
                if let Some((_, publisher, data, source)) = delayed.pop_front() {
                    self.feed(publisher, source, &data, now);
                }
            }
            // str0m's rule: every input, a timeout too, is drained before the next one.
            for publisher in [true, false] {
                if now >= self.next_timeout[usize::from(!publisher)] {
                    let rtc = if publisher {
                        &mut self.publisher
                    } else {
                        &mut self.subscriber
                    };
                    if rtc.is_alive() {
                        let _ = rtc.handle_input(Input::Timeout(now));
                    }
                    self.drain(publisher, now);
                }
            }
            self.send_media(now);
        }
        self.report()
    }

    /// Impairment applies on the way in: loss drops, delay and jitter queue.
    fn receive(
        &mut self,
        publisher: bool,
        source: SocketAddr,
        data: Vec<u8>,
        delayed: &mut std::collections::VecDeque<(Instant, bool, Vec<u8>, SocketAddr)>,
    ) {
        let now = Instant::now();
        if !publisher && looks_like_rtp_media(&data) {
            self.live.arrived.fetch_add(1, Ordering::Relaxed);
        }
        if self.lean && !publisher && self.subscriber.is_connected() && self.record_lean(&data, now)
        {
            return;
        }
        match self.impairment.admit(now, data.len()) {
            None => {}
            Some(at) if at <= now && delayed.is_empty() => {
                self.feed(publisher, source, &data, now);
            }
            Some(at) => {
                // Keep order: jitter never reorders past what is already queued.
                let at = delayed.back().map_or(at, |(last, ..)| at.max(*last));
                delayed.push_back((at, publisher, data, source));
            }
        }
    }

    fn feed(&mut self, publisher: bool, source: SocketAddr, data: &[u8], now: Instant) {
        let (rtc, local) = if publisher {
            (&mut self.publisher, self.pub_addr)
        } else {
            (&mut self.subscriber, self.sub_addr)
        };
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: local,
                contents,
            },
        );
        if rtc.is_alive() && rtc.handle_input(input).is_ok() {
            self.drain(publisher, now);
        }
    }

    /// Poll one `Rtc` dry: transmit, record, and react (keyframes).
    fn drain(&mut self, publisher: bool, now: Instant) {
        let at = self.drain_until(publisher, now);
        self.next_timeout[usize::from(!publisher)] = at;
    }

    fn drain_until(&mut self, publisher: bool, now: Instant) -> Instant {
        loop {
            let rtc = if publisher {
                &mut self.publisher
            } else {
                &mut self.subscriber
            };
            if !rtc.is_alive() {
                return now + Duration::from_secs(1);
            }
            let output = match rtc.poll_output() {
                Ok(output) => output,
                Err(_) => return now + Duration::from_secs(1),
            };
            match output {
                Output::Timeout(at) => return at,
                Output::Transmit(t) => {
                    let socket = if publisher {
                        &self.pub_socket
                    } else {
                        &self.sub_socket
                    };
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(Event::RtpPacket(packet)) if !publisher => self.record(packet, now),
                Output::Event(Event::MediaIngressStats(stats)) if !publisher => {
                    let clock = match self.subscriber.media(stats.mid).map(|m| m.kind()) {
                        Some(MediaKind::Audio) => 48.0,
                        _ => 90.0,
                    };
                    self.ingress.insert(
                        (stats.mid, stats.rid),
                        (stats.nacks, stats.plis, f64::from(stats.jitter) / clock),
                    );
                }
                Output::Event(Event::KeyframeRequest(request)) if publisher => {
                    for t in &mut self.out {
                        if t.mid == request.mid && (request.rid.is_none() || t.rid == request.rid) {
                            t.keyframe_wanted = true;
                        }
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    fn record(&mut self, packet: RtpPacket, now: Instant) {
        let payload = &packet.payload;
        // [vp8 descriptor + header: BODY_AT bytes] "ME" wire_id:u32 layer:u8 seq:u64 sent_us:u64
        let Some(body) = payload.get(BODY_AT..) else {
            return;
        };
        if body.len() < 23 || body[..2] != MAGIC {
            return;
        }
        let wire_id = u32::from_be_bytes([body[2], body[3], body[4], body[5]]);
        let layer = body[6];
        let seq = u64::from_be_bytes(body[7..15].try_into().unwrap_or_default());
        let sent_us = u64::from_be_bytes(body[15..23].try_into().unwrap_or_default());
        let now_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let latency_us = now_us.saturating_sub(sent_us);
        if self.first_media_at.is_none() {
            self.first_media_at = Some(now);
        }
        self.live.received.fetch_add(1, Ordering::Relaxed);
        let rx = self.rx.entry((wire_id, layer)).or_default();
        let previous = self
            .last_layer
            .insert(*packet.header.ssrc, (wire_id, layer));
        if previous.is_some_and(|p| p != (wire_id, layer)) {
            // The SFU switched this stream to this layer: what the layer sent
            // while the stream carried another is no loss of this receiver's.
            rx.resume();
        }
        rx.record(seq, latency_us, now, payload.len());
    }

    /// Lean mode: count an SRTP media packet from its clear header. Returns
    /// false for anything that is not RTP media (STUN, DTLS, RTCP), which then
    /// goes to str0m as usual.
    fn record_lean(&mut self, data: &[u8], now: Instant) -> bool {
        if !looks_like_rtp_media(data) {
            return false;
        }
        let pt = data[1] & 0x7f;
        let seq = u16::from_be_bytes([data[2], data[3]]);
        let timestamp = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        let params = self.subscriber.codec_config().params();
        if is_resend(params, pt) {
            // A retransmission, or a bandwidth probe's padding made of one: it
            // carries the timestamp of a packet sent up to seconds ago (the
            // SFU's RTX cache), so it would count as that much latency. Not new
            // media either, like the SFU's forwarded count. Consumed, not fed
            // to the stack (lean receivers never NACK).
            return true;
        }
        let clock = params
            .iter()
            .find(|p| *p.pt() == pt)
            .map(|p| {
                if p.spec().codec == Codec::Opus {
                    48_000.0
                } else {
                    90_000.0
                }
            })
            .unwrap_or(90_000.0);
        let entry = self.lean_seq.entry(ssrc).or_insert((seq, u64::from(seq)));
        let (last, ext) = *entry;
        let delta = seq.wrapping_sub(last) as i16;
        let extended = (ext as i64 + i64::from(delta)).max(0) as u64;
        if delta > 0 {
            *entry = (seq, extended);
        }
        // The publisher stamps RTP time from the shared epoch, but a server may
        // rebase timestamps per subscriber (Janus does; MeetEase keeps them), so
        // the absolute offset is unknown here. What a lean receiver measures is
        // the delay above the fastest packet of the stream so far: queueing in
        // the server, which is what grows when it saturates.
        let now_ticks =
            (now.saturating_duration_since(self.epoch).as_secs_f64() * clock) as u64 as u32;
        let transit_us = (f64::from(now_ticks.wrapping_sub(timestamp) as i32) / clock * 1e6) as i64;
        let base = self.lean_base.entry(ssrc).or_insert(transit_us);
        *base = (*base).min(transit_us);
        let latency_us = (transit_us - *base) as u64;
        if self.first_media_at.is_none() {
            self.first_media_at = Some(now);
        }
        self.live.received.fetch_add(1, Ordering::Relaxed);
        let tag = if clock == 48_000.0 { b'a' } else { b'v' };
        self.rx
            .entry((ssrc, tag))
            .or_default()
            .record(extended, latency_us, now, data.len());
        true
    }

    fn send_media(&mut self, now: Instant) {
        let epoch = self.epoch;
        for i in 0..self.out.len() {
            while !self.out[i].paused && self.out[i].next_send <= now {
                let t = &mut self.out[i];
                let index = t.in_frame;
                let (start_of_frame, marker) = t.advance();
                let size = t.packet_size(index);
                let key = t.kind == MediaKind::Video
                    && start_of_frame
                    && (t.keyframe_wanted || t.frame % 90 == 1);
                if key {
                    t.keyframe_wanted = false;
                }
                let mut payload = Vec::with_capacity(size.max(BODY_AT + 23));
                payload.extend_from_slice(&vp8_header(start_of_frame, key));
                payload.extend_from_slice(&MAGIC);
                payload.extend_from_slice(&t.wire_id.to_be_bytes());
                // Layer tag: the RID letter, '-' for single-layer video, 'a' for audio.
                let tag = match (t.kind, t.rid) {
                    (MediaKind::Audio, _) => b'a',
                    (_, Some(rid)) => rid.as_bytes()[0],
                    (_, None) => b'-',
                };
                payload.push(tag);
                payload.extend_from_slice(&t.seq.to_be_bytes());
                let sent_us = now.saturating_duration_since(epoch).as_micros() as u64;
                payload.extend_from_slice(&sent_us.to_be_bytes());
                payload.resize(size.max(payload.len()), 0x5a);
                let clock = if t.kind == MediaKind::Audio {
                    48_000
                } else {
                    90_000
                };
                let rtp_time =
                    (now.saturating_duration_since(epoch).as_secs_f64() * f64::from(clock)) as u32;
                let (mid, rid, pt, seq) = (t.mid, t.rid, t.pt, t.seq);
                let audio = t.kind == MediaKind::Audio;
                let ext = ExtensionValues {
                    audio_level: audio.then_some(-30),
                    voice_activity: audio.then_some(true),
                    ..Default::default()
                };
                if let Some(stream) = self.publisher.direct_api().stream_tx_by_mid(mid, rid) {
                    stream.write_rtp(
                        RtpWrite::new(pt, SeqNo::from(seq), rtp_time, now, payload)
                            .marker(marker || audio)
                            .nackable(!audio)
                            .ext_vals(ext),
                    );
                }
                // str0m's rule: drain after every write.
                self.drain(true, now);
            }
        }
    }

    fn report(self) -> ParticipantReport {
        let end = Instant::now();
        let feedback = (!self.lean && !self.ingress.is_empty()).then(|| {
            let mut f = Feedback::default();
            for (key, (nacks, plis, jitter)) in &self.ingress {
                let (n0, p0) = self.ingress_base.get(key).copied().unwrap_or_default();
                f.nacks += nacks.saturating_sub(n0);
                f.plis += plis.saturating_sub(p0);
                f.jitter_ms = f.jitter_ms.max(*jitter);
            }
            f
        });
        ParticipantReport {
            feedback,
            index: self.index,
            join_time: self
                .first_media_at
                .map(|t| t.saturating_duration_since(self.joined_at)),
            tracks: self
                .rx
                .into_iter()
                .map(|((_, layer), rx)| rx.finish(layer, end))
                // A track (or layer) heard only in the warm-up is not part of the window.
                .filter(|track| track.received > 0)
                .collect(),
        }
    }
}

/// Whether `pt` is a negotiated RTX payload type (RFC 4588).
fn is_resend(params: &[str0m::format::PayloadParams], pt: u8) -> bool {
    params.iter().any(|p| p.resend().is_some_and(|r| *r == pt))
}

/// An RTP (not RTCP, STUN or DTLS) packet, judged from its clear header.
fn looks_like_rtp_media(data: &[u8]) -> bool {
    // RTCP packet types 200-206 show up as PT 72-78 with the marker bit.
    data.len() >= 12 && data[0] >> 6 == 2 && !(72..=78).contains(&(data[1] & 0x7f))
}

/// The `IP:port` of each host candidate in an SDP.
pub fn candidate_addrs(sdp: &str) -> Vec<SocketAddr> {
    sdp.lines()
        .filter_map(|line| line.strip_prefix("a=candidate:"))
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let ip = parts.get(4)?.parse().ok()?;
            let port = parts.get(5)?.parse().ok()?;
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A top layer at 1.2 Mbit/s: 130 packets a second, 4 to a frame.
    fn track(frame_interval: Option<Duration>, start: Instant) -> OutTrack {
        OutTrack {
            mid: Mid::from("1"),
            rid: Some(Rid::from("f")),
            pt: Pt::from(96),
            kind: MediaKind::Video,
            wire_id: 0,
            interval: Duration::from_secs_f64(1.0 / 130.0),
            frame_interval,
            size: 1150,
            next_send: start,
            seq: 0,
            packets_per_frame: 4,
            in_frame: 0,
            frame: 0,
            keyframe_wanted: true,
            paused: false,
        }
    }

    /// The send times of (almost: no rounding at the edge) one second of a
    /// track, as `send_media` paces it.
    fn one_second(mut t: OutTrack, start: Instant) -> Vec<(Duration, bool)> {
        let mut sent = Vec::new();
        while t.next_send < start + Duration::from_millis(995) {
            let at = t.next_send - start;
            let (_, end_of_frame) = t.advance();
            sent.push((at, end_of_frame));
        }
        sent
    }

    #[test]
    fn frame_bursts_send_a_frame_back_to_back_and_frames_at_the_frame_rate() {
        let start = Instant::now();
        let sent = one_second(track(Some(Duration::from_secs(1) / 30), start), start);
        assert_eq!(sent.len(), 30 * 4, "30 frames of 4 packets");
        for (n, frame) in sent.chunks(4).enumerate() {
            let at = Duration::from_secs(1) / 30 * n as u32;
            assert!(frame.iter().all(|(t, _)| *t == at), "frame {n}: {frame:?}");
            let markers: Vec<bool> = frame.iter().map(|(_, m)| *m).collect();
            assert_eq!(markers, [false, false, false, true], "frame {n}");
        }
    }

    #[test]
    fn a_burst_frame_is_split_about_equally_with_the_larger_packets_last() {
        let start = Instant::now();
        let mut t = track(Some(Duration::from_secs(1) / 30), start);
        let mut remainders = std::collections::BTreeSet::new();
        for _ in 0..60 {
            let sizes: Vec<usize> = (0..4)
                .map(|_| {
                    let index = t.in_frame;
                    t.advance();
                    t.packet_size(index)
                })
                .collect();
            let total: usize = sizes.iter().sum();
            assert!(total <= 4 * 1150 && total > 4 * 1150 - 4, "{sizes:?}");
            assert!(
                sizes.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1),
                "{sizes:?}"
            );
            remainders.insert(sizes.iter().filter(|&&s| s > sizes[0]).count());
        }
        assert_eq!(
            remainders.len(),
            4,
            "every remainder occurs: {remainders:?}"
        );
        // Spread packets keep the layer's size.
        let spread = track(None, start);
        assert!((0..4).all(|i| spread.packet_size(i) == 1150));
    }

    #[test]
    fn a_paused_layer_sends_nothing_and_resumes_with_a_keyframe_at_once() {
        let start = Instant::now();
        let mut t = track(Some(Duration::from_secs(1) / 30), start);
        t.advance();
        t.keyframe_wanted = false;
        // The SFU asks for the low and medium layers only: "f" stops.
        t.set_active(&[Layer::Low, Layer::Medium], start);
        assert!(t.paused);
        // Asked again, it leaves now, a new frame starting with a keyframe.
        let later = start + Duration::from_secs(5);
        t.set_active(&Layer::ALL, later);
        assert!(!t.paused);
        assert_eq!((t.next_send, t.in_frame), (later, 0));
        assert!(t.keyframe_wanted);
        // A single-layer track is the high layer.
        let mut single = track(None, start);
        single.rid = None;
        single.set_active(&[Layer::Low], start);
        assert!(single.paused);
        single.set_active(&[Layer::High], start);
        assert!(!single.paused);
        // Asking for a running layer again changes nothing.
        let mut running = track(None, start);
        running.keyframe_wanted = false;
        running.set_active(&[Layer::High], later);
        assert_eq!((running.paused, running.keyframe_wanted), (false, false));
        assert_eq!(running.next_send, start);
    }

    #[test]
    fn without_frame_bursts_packets_are_spread_evenly() {
        let start = Instant::now();
        let sent = one_second(track(None, start), start);
        assert_eq!(sent.len(), 130);
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(
            gaps.iter()
                .all(|g| *g == Duration::from_secs_f64(1.0 / 130.0))
        );
        assert_eq!(sent.iter().filter(|(_, m)| *m).count(), 130 / 4);
    }

    #[test]
    fn rtx_payload_types_are_told_apart_from_media() {
        let rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(Instant::now());
        let params = rtc.codec_config().params();
        let vp8 = params
            .iter()
            .find(|p| p.spec().codec == Codec::Vp8)
            .expect("VP8 configured");
        let rtx = vp8.resend().expect("VP8 comes with RTX");
        assert!(is_resend(params, *rtx));
        assert!(!is_resend(params, *vp8.pt()));
        let opus = params
            .iter()
            .find(|p| p.spec().codec == Codec::Opus)
            .unwrap();
        assert!(!is_resend(params, *opus.pt()));
    }
}
