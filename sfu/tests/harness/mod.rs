//! A deterministic world for the SFU core: str0m clients wired to [`Sfu`] in
//! memory, on a virtual clock, with optional loss. No sockets, no sleeps.
//!
//! Each client has the two connections MeetEase clients have: a publisher
//! `Rtc` that offers its tracks and a subscriber `Rtc` that answers the SFU.

#![allow(dead_code)]

use proto::ids::{ParticipantId, TrackId};
use proto::media::{Layer, RoomId, TrackSource};
use proto::sfu::{CreateSession, SfuEvent, SubscriberOffer, TrackDeclaration};
use sfu::core::{Sfu, SfuConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub const SFU_ADDR: &str = "127.0.0.1:10000";

/// A received RTP packet, as a subscriber client saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub mid: Mid,
    pub seq: u64,
    pub timestamp: u32,
    pub payload: Vec<u8>,
    pub audio_level: Option<i8>,
}

pub struct Client {
    pub id: ParticipantId,
    pub publisher: Rtc,
    pub subscriber: Rtc,
    pub pub_addr: SocketAddr,
    pub sub_addr: SocketAddr,
    pub pending: Option<SdpPendingOffer>,
    /// Publisher mids by what they carry.
    pub video_mid: Option<Mid>,
    pub audio_mid: Option<Mid>,
    pub simulcast: bool,
    /// The video codec this client publishes.
    pub video_codec: Codec,
    /// The video layers the SFU last asked this publisher to send
    /// (`PublisherLayers`); `None`: never asked, every layer goes.
    pub video_layers: Option<Vec<Layer>>,
    /// Per-layer sequence numbers the publisher uses.
    pub seq: HashMap<(Mid, Option<Rid>), u64>,
    /// What the SFU said each subscriber mid carries.
    pub subscribed: HashMap<Mid, TrackId>,
    pub received: Vec<Received>,
    pub keyframe_requests: Vec<(Mid, Option<Rid>)>,
    pub channel_messages: Vec<String>,
    /// Every subscriber offer the SFU made this client, as SDP.
    pub subscriber_sdps: Vec<String>,
}

pub struct World {
    pub now: Instant,
    pub sfu: Sfu,
    pub clients: Vec<Client>,
    pub events: Vec<SfuEvent>,
    /// Probability (0..1) of losing a packet SFU → subscriber.
    pub downlink_loss: f64,
    /// How long every datagram from the SFU to a client takes (the way back
    /// is instant), so the SFU's round trip to each client is about this.
    pub downlink_delay: Duration,
    /// Datagrams on their way to a client: when they arrive, the client, to
    /// its subscriber connection or not, the bytes.
    in_flight: std::collections::VecDeque<(Instant, usize, bool, Vec<u8>)>,
    pub rng: u64,
    pub dropped: u64,
    /// Lean subscribers: once connected, a subscriber connection is not fed
    /// the RTP the SFU sends it, only counts it (what the load test's lean
    /// receivers do), so a benchmark spends its time in the SFU.
    pub lean: bool,
    /// RTP datagrams (not padding) counted by lean subscribers.
    pub lean_received: u64,
    /// Each datagram a client sends is its own receive batch (one
    /// `send_written` after each), as on a live socket where a publisher's
    /// pacer spaces a frame's packets; by default a client's output is one
    /// batch.
    pub unbatched: bool,
    /// With `timing`, the thread CPU time spent inside the SFU core's inputs.
    pub timing: bool,
    pub sfu_cpu: Duration,
    /// With `timing`, the thread CPU time spent in the SFU's session calls
    /// (`create_session`, `subscriber_answer`): SDP work, not media.
    pub control_cpu: Duration,
    /// Publishers pause the video layers the SFU says nobody wants, as the web
    /// client does. Off by default, so that benchmarks keep the fixed load of
    /// a publisher sending every layer.
    pub dynacast: bool,
    /// Clients joining from now on ask for the room data channel on their
    /// subscriber connection (on by default; the browser client declines it).
    pub room_channel: bool,
    /// The video codec clients joining from now on publish (VP8 by default).
    /// Like browsers, every client offers all of VP8, H.264 and VP9.
    pub video_codec: Codec,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

impl World {
    pub fn new() -> World {
        let now = Instant::now();
        let config = SfuConfig {
            local_addr: addr(SFU_ADDR),
            candidate_addr: addr(SFU_ADDR),
            disconnect_grace: Duration::from_secs(5),
            ice_tcp: false,
        };
        World {
            now,
            sfu: Sfu::new(config, now),
            clients: Vec::new(),
            events: Vec::new(),
            downlink_loss: 0.0,
            downlink_delay: Duration::ZERO,
            in_flight: Default::default(),
            rng: 0x2545_f491_4f6c_dd1d,
            dropped: 0,
            lean: false,
            unbatched: false,
            lean_received: 0,
            timing: false,
            sfu_cpu: Duration::ZERO,
            control_cpu: Duration::ZERO,
            dynacast: false,
            room_channel: true,
            video_codec: Codec::Vp8,
        }
    }

    fn client_rtc(&self, addr: SocketAddr) -> Rtc {
        // What a browser offers: Opus, and every VP8, H.264 and VP9 configuration
        // (str0m's defaults mirror Chrome's list).
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        rtc
    }

    /// A connected fan-out: one client publishing audio and simulcast video in
    /// room "fanout", and `receivers` receive-only clients.
    pub fn fanout(&mut self, receivers: usize) {
        self.join("fanout", true, true);
        for _ in 0..receivers {
            self.join_receiver("fanout");
        }
        self.connect_all();
    }

    /// Join a client publishing audio and (optionally simulcast) video.
    pub fn join(&mut self, room: &str, video: bool, simulcast: bool) -> usize {
        self.join_as(room, true, video, simulcast)
    }

    /// Join a client that only receives: no tracks, just a data channel on its
    /// publisher connection to carry ICE and DTLS.
    pub fn join_receiver(&mut self, room: &str) -> usize {
        self.join_as(room, false, false, false)
    }

    fn join_as(&mut self, room: &str, audio: bool, video: bool, simulcast: bool) -> usize {
        let index = self.clients.len();
        // 127.0.1.1, 127.0.1.2, ... and on past 250 clients into 127.0.2.x.
        let host = format!("127.0.{}.{}", 1 + index / 250, index % 250 + 1);
        let pub_addr = addr(&format!("{host}:5000"));
        let sub_addr = addr(&format!("{host}:6000"));
        let mut publisher = self.client_rtc(pub_addr);
        let subscriber = self.client_rtc(sub_addr);
        let mut api = publisher.sdp_api();
        let audio_mid =
            audio.then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let video_mid = video.then(|| {
            let layers = simulcast.then(|| {
                let mut s = Simulcast::new();
                for rid in ["q", "h", "f"] {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            api.add_media(MediaKind::Video, Direction::SendOnly, None, None, layers)
        });
        api.add_channel("room".into());
        let (offer, pending) = api.apply().unwrap();
        let id = ParticipantId::new();
        let mut tracks = Vec::new();
        if let Some(mid) = audio_mid {
            tracks.push(TrackDeclaration {
                mid: mid.to_string(),
                source: TrackSource::Microphone,
            });
        }
        if let Some(mid) = video_mid {
            tracks.push(TrackDeclaration {
                mid: mid.to_string(),
                source: TrackSource::Camera,
            });
        }
        let request = CreateSession {
            room: RoomId::parse(room).unwrap(),
            participant: id,
            publisher_offer: offer.to_sdp_string(),
            tracks,
            auto_subscribe: true,
            data_channel: self.room_channel,
        };
        let created = timed(self.timing, &mut self.control_cpu, || {
            self.sfu.create_session(self.now, request)
        })
        .expect("session created");
        publisher
            .sdp_api()
            .accept_answer(
                pending,
                SdpAnswer::from_sdp_string(&created.publisher_answer).unwrap(),
            )
            .unwrap();
        self.clients.push(Client {
            id,
            publisher,
            subscriber,
            pub_addr,
            sub_addr,
            pending: None,
            video_mid,
            audio_mid,
            simulcast,
            video_codec: self.video_codec,
            video_layers: None,
            seq: HashMap::new(),
            subscribed: HashMap::new(),
            received: Vec::new(),
            keyframe_requests: Vec::new(),
            channel_messages: Vec::new(),
            subscriber_sdps: Vec::new(),
        });
        self.answer_subscriber_offer(index, created.subscriber_offer);
        index
    }

    pub fn answer_subscriber_offer(&mut self, index: usize, offer: SubscriberOffer) {
        let client = &mut self.clients[index];
        client.subscriber_sdps.push(offer.sdp.clone());
        for track in &offer.tracks {
            client
                .subscribed
                .insert(Mid::from(track.mid.as_str()), track.track_id);
        }
        let answer = client
            .subscriber
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&offer.sdp).unwrap())
            .unwrap();
        let id = client.id;
        let answer = answer.to_sdp_string();
        timed(self.timing, &mut self.control_cpu, || {
            self.sfu.subscriber_answer(self.now, id, &answer)
        })
        .expect("answer accepted");
    }

    fn chance(&mut self) -> f64 {
        // xorshift64: deterministic loss.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 1_000_000) as f64 / 1_000_000.0
    }

    /// Feed one client connection an input (a datagram, or just time) and
    /// drain it, as str0m requires after every mutation. What it sends goes
    /// straight to the SFU.
    fn pump_client(&mut self, index: usize, subscriber: bool, datagram: Option<&[u8]>) {
        let now = self.now;
        let client = &mut self.clients[index];
        let (rtc, local) = if subscriber {
            (&mut client.subscriber, client.sub_addr)
        } else {
            (&mut client.publisher, client.pub_addr)
        };
        if !rtc.is_alive() {
            return;
        }
        let input = match datagram {
            Some(data) => Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: addr(SFU_ADDR),
                    destination: local,
                    contents: data.try_into().unwrap(),
                },
            ),
            None => Input::Timeout(now),
        };
        rtc.handle_input(input).unwrap();
        self.poll_client(index, subscriber);
    }

    /// Drain one client connection after an input or a write.
    fn poll_client(&mut self, index: usize, subscriber: bool) {
        let now = self.now;
        let client = &mut self.clients[index];
        let (rtc, local) = if subscriber {
            (&mut client.subscriber, client.sub_addr)
        } else {
            (&mut client.publisher, client.pub_addr)
        };
        let mut events = Vec::new();
        let mut out = Vec::new();
        while rtc.is_alive() {
            match rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => out.push(Vec::from(t.contents)),
                Output::Event(e) => events.push(e),
            }
        }
        for event in events {
            handle_client_event(client, subscriber, event);
        }
        for datagram in &out {
            timed(self.timing, &mut self.sfu_cpu, || {
                self.sfu.handle_datagram(now, local, datagram);
                if self.unbatched {
                    self.sfu.send_written(now);
                }
            });
        }
        // What those wrote is sent by one pass per subscriber, as the driver
        // does after a `recvmmsg` batch (else the next `handle_timeout` would).
        if !out.is_empty() {
            timed(self.timing, &mut self.sfu_cpu, || {
                self.sfu.send_written(now)
            });
        }
        self.deliver();
    }

    /// Move the SFU's datagrams to the clients (with the configured loss) and
    /// its events to the test, answering subscriber offers like a client would.
    fn deliver(&mut self) {
        while let Some(t) = self.sfu.poll_transmit() {
            if self.downlink_loss > 0.0
                && t.destination.port() == 6000
                && self.chance() < self.downlink_loss
            {
                self.dropped += 1;
                continue;
            }
            let Some(index) = self
                .clients
                .iter()
                .position(|c| c.pub_addr == t.destination || c.sub_addr == t.destination)
            else {
                continue;
            };
            let subscriber = self.clients[index].sub_addr == t.destination;
            if self.lean
                && subscriber
                && sfu::core::codec::is_rtp(&t.contents)
                && self.clients[index].subscriber.is_connected()
            {
                // Padding (a bandwidth probe) is not media.
                if t.contents[0] & 0x20 == 0 {
                    self.lean_received += 1;
                }
                continue;
            }
            if !self.downlink_delay.is_zero() {
                let at = self.now + self.downlink_delay;
                self.in_flight
                    .push_back((at, index, subscriber, t.contents));
                continue;
            }
            self.pump_client(index, subscriber, Some(&t.contents));
        }
        while let Some(event) = self.sfu.poll_event() {
            if let SfuEvent::SubscriberOffer {
                participant_id,
                offer,
                ..
            } = &event
                && let Some(index) = self.clients.iter().position(|c| c.id == *participant_id)
            {
                let offer = offer.clone();
                self.events.push(event);
                self.answer_subscriber_offer(index, offer);
                continue;
            }
            if let SfuEvent::PublisherLayers {
                participant_id,
                mid,
                active,
                ..
            } = &event
                && let Some(client) = self
                    .clients
                    .iter_mut()
                    .find(|c| c.id == *participant_id && c.video_mid.is_some_and(|m| *m == **mid))
            {
                client.video_layers = Some(active.clone());
            }
            self.events.push(event);
        }
    }

    /// Advance the world by `step`, moving every datagram and event.
    pub fn step(&mut self, step: Duration) {
        self.now += step;
        while self
            .in_flight
            .front()
            .is_some_and(|(at, ..)| *at <= self.now)
        {
            if let Some((_, index, subscriber, data)) = self.in_flight.pop_front() {
                self.pump_client(index, subscriber, Some(&data));
            }
        }
        for index in 0..self.clients.len() {
            self.pump_client(index, false, None);
            self.pump_client(index, true, None);
        }
        timed(self.timing, &mut self.sfu_cpu, || {
            self.sfu.handle_timeout(self.now)
        });
        self.deliver();
    }

    /// Run for `duration`, letting every client publish media at real rates:
    /// audio every 20 ms, video at 30 fps (3 packets a frame), a keyframe every
    /// `keyframe_every` frames (or when asked).
    pub fn run(&mut self, duration: Duration, keyframe_every: u32) {
        let end = self.now + duration;
        let mut tick = 0u64;
        while self.now < end {
            self.step(Duration::from_millis(1));
            tick += 1;
            for i in 0..self.clients.len() {
                if tick.is_multiple_of(20) {
                    self.send_audio(i, -20);
                }
                if tick.is_multiple_of(33) && self.clients[i].video_mid.is_some() {
                    let frame = (tick / 33) as u32;
                    let asked = !self.clients[i].keyframe_requests.is_empty();
                    self.clients[i].keyframe_requests.clear();
                    let key = asked || frame % keyframe_every.max(1) == 1;
                    self.send_video_frame(i, key, frame);
                }
            }
        }
    }

    pub fn client_connected(&self, index: usize) -> bool {
        self.clients[index].publisher.is_connected()
            && self.clients[index].subscriber.is_connected()
    }

    /// Step until every client is connected both ways (or panic after 10 s).
    pub fn connect_all(&mut self) {
        for _ in 0..10_000 {
            if (0..self.clients.len()).all(|i| self.client_connected(i)) {
                return;
            }
            self.step(Duration::from_millis(1));
        }
        panic!("clients did not connect");
    }

    pub fn send_audio(&mut self, index: usize, level: i8) {
        let client = &mut self.clients[index];
        let Some(mid) = client.audio_mid else { return };
        if !client.publisher.is_connected() {
            return;
        }
        let Some(pt) = pt_of(&client.publisher, mid, Codec::Opus) else {
            return;
        };
        let seq = next_seq(client, mid, None);
        let payload = vec![0xfcu8; 80];
        let exts = ExtensionValues {
            audio_level: Some(level),
            voice_activity: Some(true),
            ..Default::default()
        };
        let now = self.now;
        if let Some(stream) = client.publisher.direct_api().stream_tx_by_mid(mid, None) {
            stream.write_rtp(
                RtpWrite::new(pt, SeqNo::from(seq), (seq * 960) as u32, now, payload)
                    .marker(true)
                    .ext_vals(exts),
            );
        }
        self.poll_client(index, false);
    }

    pub fn send_video_frame(&mut self, index: usize, keyframe: bool, frame: u32) {
        let client = &mut self.clients[index];
        let Some(mid) = client.video_mid else { return };
        if !client.publisher.is_connected() {
            return;
        }
        let Some(pt) = pt_of(&client.publisher, mid, client.video_codec) else {
            return;
        };
        let codec = client.video_codec;
        let mut rids: Vec<Option<Rid>> = if client.simulcast {
            vec![
                Some(Rid::from("q")),
                Some(Rid::from("h")),
                Some(Rid::from("f")),
            ]
        } else {
            vec![None]
        };
        if self.dynacast
            && let Some(active) = &client.video_layers
        {
            // A single layer counts as `High` (see `SfuEvent::PublisherLayers`).
            rids.retain(|rid| {
                let layer = rid.map_or(Some(Layer::High), |r| Layer::from_rid(&r));
                layer.is_some_and(|l| active.contains(&l))
            });
        }
        let now = self.now;
        for rid in rids {
            for part in 0..3u8 {
                let seq = next_seq(&mut self.clients[index], mid, rid);
                let mut payload = match codec {
                    // One NAL unit a packet: IDR slices (5) on keyframes, else non-IDR (1).
                    Codec::H264 => vec![if keyframe { 0x65 } else { 0x41 }],
                    // VP9 descriptor: B on the first packet, P (0x40) on inter frames.
                    Codec::Vp9 => {
                        vec![(if part == 0 { 0x08 } else { 0 }) | (if keyframe { 0 } else { 0x40 })]
                    }
                    // VP8 descriptor: S bit on the first packet; payload header P=0 on keyframes.
                    _ => vec![
                        if part == 0 { 0x10 } else { 0x00 },
                        if keyframe { 0x00 } else { 0x01 },
                    ],
                };
                payload.extend_from_slice(&[part; 300]);
                // The layer is visible in the payload so tests can tell what arrived.
                payload.push(rid.map(|r| r.as_bytes()[0]).unwrap_or(b'-'));
                let client = &mut self.clients[index];
                if let Some(stream) = client.publisher.direct_api().stream_tx_by_mid(mid, rid) {
                    stream.write_rtp(
                        RtpWrite::new(pt, SeqNo::from(seq), frame.wrapping_mul(3000), now, payload)
                            .marker(part == 2)
                            .nackable(true),
                    );
                }
                // str0m's rule: drain after every write, or packets are lost.
                self.poll_client(index, false);
            }
        }
    }

    pub fn find(&self, id: ParticipantId) -> usize {
        self.clients.iter().position(|c| c.id == id).unwrap()
    }
}

/// Run `f`, adding the thread CPU time it used to `total` when `on`.
fn timed<T>(on: bool, total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let started = on.then(thread_cpu);
    let out = f();
    if let Some(started) = started {
        *total += thread_cpu().saturating_sub(started);
    }
    out
}

/// CPU time this thread has used.
pub fn thread_cpu() -> Duration {
    let spec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("the thread CPU clock is readable");
    Duration::from(spec)
}

fn next_seq(client: &mut Client, mid: Mid, rid: Option<Rid>) -> u64 {
    let counter = client
        .seq
        .entry((mid, rid))
        .or_insert(match rid.as_deref() {
            Some("q") => 1000,
            Some("h") => 20_000,
            Some("f") => 40_000,
            _ => 500,
        });
    *counter += 1;
    *counter
}

/// The payload type of `codec` that the SFU's answer took on `mid`: clients
/// offer several configurations of a codec, and the first offered may not be it.
fn pt_of(rtc: &Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let accepted = rtc.media(mid)?.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec && accepted.contains(&p.pt()))
        .map(|p| p.pt())
}

fn handle_client_event(client: &mut Client, subscriber: bool, event: Event) {
    match event {
        Event::RtpPacket(packet) if subscriber => record(client, packet),
        Event::KeyframeRequest(request) if !subscriber => {
            client.keyframe_requests.push((request.mid, request.rid));
        }
        Event::ChannelData(data) if subscriber => {
            client
                .channel_messages
                .push(String::from_utf8_lossy(&data.data).into_owned());
        }
        _ => {}
    }
}

fn record(client: &mut Client, packet: RtpPacket) {
    let ssrc = packet.header.ssrc;
    let mid = client
        .subscriber
        .direct_api()
        .stream_rx(&ssrc)
        .map(|s| s.mid())
        .unwrap_or_else(|| Mid::from("?"));
    client.received.push(Received {
        at: packet.timestamp,
        mid,
        seq: *packet.seq_no,
        timestamp: packet.header.timestamp,
        payload: packet.payload.to_vec(),
        audio_level: packet.header.ext_vals.audio_level,
    });
}
