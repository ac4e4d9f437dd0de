//! `loadtest`: measure what one MeetEase SFU carries.
//!
//! Starts the SFU as its own process on loopback, joins synthetic participants
//! through its control API and real WebRTC (ICE, DTLS, SRTP) from one lean
//! process, runs for a bounded time, and reports: join time, end-to-end latency
//! through the SFU, loss, freezes, bitrate and layer received, the SFU's CPU
//! seconds and memory from `/proc`, and forwarded packets per SFU CPU-second.
//! Exits non-zero when a target given on the command line is missed.
//!
//! ```sh
//! cargo run --release -p loadtest -- --rooms 1 --publishers 1 --subscribers 50 --video --simulcast --duration 20
//! ```

mod chart;
mod impair;
mod janus;
mod node;
mod peer;
mod pin;
mod platform;
mod report;
mod stats;

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::future::LocalBoxFuture;
use impair::{Impairment, ImpairmentConfig};
use janus::{JanusClient, JanusProcess};
use node::{ControlClient, ProcWatch, SfuProcess};
use peer::{Control, LiveCounters, Participant, Publish};
use platform::PlatformProcess;
use proto::ids::ParticipantId;
use proto::media::RoomId;
use proto::sfu::{CreateSession, SfuEvent};
use report::{RunResult, Scenario};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Longest run the harness agrees to, whatever it is asked.
const MAX_DURATION: Duration = Duration::from_secs(600);

#[derive(Parser, Debug, Clone)]
#[command(name = "loadtest", version, about = "MeetEase media load test")]
struct Cli {
    /// Rooms to fill.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Participants per room that publish (and receive everyone else).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Participants per room that only receive.
    #[arg(long, default_value_t = 4)]
    subscribers: usize,
    /// Publishers send video (VP8-shaped) as well as audio.
    #[arg(long)]
    video: bool,
    /// Video is sent as three simulcast layers (q, h, f).
    #[arg(long)]
    simulcast: bool,
    /// The first publisher of each room also shares a screen (a second video
    /// track: 5 frames a second, about 1 Mbit/s).
    #[arg(long)]
    screen_share: bool,
    /// Top-layer video bitrate, kbit/s.
    #[arg(long, default_value_t = 1200)]
    video_kbps: u64,
    /// Publishers send each video frame's packets back to back at the frame's
    /// time, as a browser does (headless Chromium's frames reached the SFU
    /// within 0.08 ms, median; see docs/benchmarks/sfu-core.md), and cut
    /// about equally as libwebrtc cuts it (the remainder one byte each on the
    /// last packets). By default a layer's packets are spread evenly over the
    /// frame interval, all of one size.
    #[arg(long)]
    frame_bursts: bool,
    /// Publishers keep sending every layer when the SFU asks them to pause
    /// the ones nobody watches (dynacast's `publisher_layers`). By default
    /// they pause and resume layers as asked, as browsers do.
    #[arg(long)]
    ignore_publisher_layers: bool,
    /// Every participant draws every remote video this many pixels high and
    /// tells the SFU so (a gallery: 180 fits the low layer), which picks the
    /// layer that fits and pauses the unwatched ones at the publishers. By
    /// default nobody says, and the SFU sends what the bandwidth allows.
    #[arg(long)]
    tile_height: Option<u32>,
    /// Seconds measured after everyone joined (and a warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// The server on CPU 0 and the load generator on the other CPUs, so the
    /// scheduler never runs the generator on the server's core (as a
    /// production server has its machine to itself). Default: both share
    /// every core.
    #[arg(long)]
    pin_cores: bool,
    /// Participants joining per second.
    #[arg(long, default_value_t = 50.0)]
    join_rate: f64,
    /// Churn during the measured window: this many receivers leave each second,
    /// and as many newcomers join their rooms.
    #[arg(long, default_value_t = 0)]
    churn: usize,
    /// Packet loss applied to what participants receive, percent.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Added one-way delay, milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Added jitter, milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Receive bandwidth cap per participant connection, kbit/s.
    #[arg(long)]
    bandwidth_kbps: Option<u64>,
    /// The `meetease-sfu` binary to start (default: next to this one).
    #[arg(long)]
    sfu_bin: Option<PathBuf>,
    /// Where to write `result.json` and `report.md`.
    #[arg(long, default_value = "target/loadtest")]
    out: PathBuf,
    /// Fail when receiver loss exceeds this, percent.
    #[arg(long)]
    max_loss: Option<f64>,
    /// Fail when p99 end-to-end latency exceeds this, milliseconds.
    #[arg(long)]
    max_p99_ms: Option<f64>,
    /// Fail when forwarded packets per SFU CPU-second fall below this.
    #[arg(long)]
    min_pps_per_cpu: Option<f64>,
    /// Raise subscribers per room (x1.5 a step) until a target breaks; report the last load that held.
    #[arg(long)]
    ramp: bool,
    /// With --ramp: the most subscribers per room to try.
    #[arg(long, default_value_t = 2000)]
    ramp_max: usize,
    /// A name for this scenario in the report.
    #[arg(long, default_value = "scenario")]
    name: String,
    /// Lean receivers: count media from the clear RTP header without decrypting
    /// it (no NACK or feedback from receivers). For measuring the SFU's raw
    /// forwarding cost when the load generator would otherwise be the bottleneck.
    #[arg(long)]
    lean_receivers: bool,
    /// Clients open data channels (the room channel on both of their
    /// connections), as an app built on them would. By default they do as the
    /// browser client, which carries chat over signaling: none, except on the
    /// publisher connection of a receiver that publishes nothing, where a
    /// channel is the one thing ICE and DTLS can run on.
    #[arg(long)]
    data_channels: bool,
    /// No progress bar (CI logs).
    #[arg(long)]
    quiet: bool,
    /// Which server to load: MeetEase's SFU, Janus's VideoRoom (the baseline,
    /// run in a network namespace the harness creates; needs root and
    /// Debian's `janus`), or both, one after the other, side by side in one report.
    #[arg(long, value_enum, default_value_t = Target::Meetease)]
    server: Target,
    /// How MeetEase participants join: through the whole platform (the
    /// `meetease` launcher: a meeting created over REST, guests joining with a
    /// room token over the signaling WebSocket, as the web client does), or
    /// straight through a lone SFU process's control API (its CPU is then the
    /// SFU's alone).
    #[arg(long, value_enum, default_value_t = JoinPath::Signaling)]
    join: JoinPath,
    /// The `meetease` launcher to start with `--join signaling` (default: next to this binary).
    #[arg(long)]
    platform_bin: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum JoinPath {
    Signaling,
    Control,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Meetease,
    Janus,
    Both,
}

/// One server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Meetease,
    Janus,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Meetease => "MeetEase",
            Server::Janus => "Janus",
        }
    }
}

impl Target {
    fn servers(self) -> Vec<Server> {
        match self {
            Target::Meetease => vec![Server::Meetease],
            Target::Janus => vec![Server::Janus],
            Target::Both => vec![Server::Meetease, Server::Janus],
        }
    }
}

fn sfu_binary(cli: &Cli) -> anyhow::Result<PathBuf> {
    sibling_binary(cli.sfu_bin.as_ref(), "meetease-sfu", "sfu")
}

fn platform_binary(cli: &Cli) -> anyhow::Result<PathBuf> {
    sibling_binary(cli.platform_bin.as_ref(), "meetease", "meetease")
}

fn sibling_binary(given: Option<&PathBuf>, name: &str, package: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.clone());
    }
    let me = std::env::current_exe()?;
    let candidate = me.with_file_name(name);
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "no {name} next to {} (build it with `cargo build -p {package}`, or pass its path)",
        me.display()
    )
}

fn scenario(cli: &Cli, subscribers: usize) -> Scenario {
    Scenario {
        name: cli.name.clone(),
        rooms: cli.rooms,
        publishers: cli.publishers,
        subscribers,
        video: cli.video,
        simulcast: cli.simulcast,
        screen_share: cli.screen_share,
        churn_per_second: cli.churn,
        video_kbps: cli.video_kbps,
        frame_bursts: cli.frame_bursts,
        publisher_layers: !cli.ignore_publisher_layers,
        tile_height: cli.tile_height,
        duration_s: cli.duration.min(MAX_DURATION.as_secs()),
        loss_percent: cli.loss,
        delay_ms: cli.delay_ms,
        jitter_ms: cli.jitter_ms,
        bandwidth_kbps: cli.bandwidth_kbps,
        lean_receivers: cli.lean_receivers,
        data_channels: cli.data_channels,
        pin_cores: cli.pin_cores,
    }
}

/// What a join phase leaves for the measured window.
struct Joined {
    watch: ProcWatch,
    rss_before: u64,
    members: Vec<Member>,
    /// Joins a replacement when someone leaves (churn).
    rejoin: Rejoin,
    counter: Forwarded,
    /// The server process (and, for Janus, its namespace): dropping it ends them.
    server: Box<dyn std::any::Any>,
}

/// How forwarded packets are counted.
#[derive(Clone)]
enum Forwarded {
    /// From the SFU's own `/metrics`.
    Metric(ControlClient),
    /// RTP packets arriving at the receivers' sockets (Janus exports no counter;
    /// on a lossless link the two are the same number).
    Arrivals(Arc<LiveCounters>),
}

impl Forwarded {
    async fn read(&self) -> Option<f64> {
        match self {
            Forwarded::Metric(_) => self.sfu_counter("meetease_sfu_rtp_forwarded_total").await,
            Forwarded::Arrivals(live) => Some(live.arrived.load(Ordering::Relaxed) as f64),
        }
    }

    /// One of the SFU's counters from its `/metrics` (`None`: Janus has none).
    async fn sfu_counter(&self, name: &str) -> Option<f64> {
        match self {
            Forwarded::Metric(control) => control.metric(name).await.ok(),
            Forwarded::Arrivals(_) => None,
        }
    }

    /// The SFU's sending counters so far (`None`: Janus has none).
    async fn sending(&self) -> Option<report::Sending> {
        Some(report::Sending {
            passes: self.sfu_counter("meetease_sfu_timer_wakeups_total").await?,
            datagrams: self
                .sfu_counter("meetease_sfu_datagrams_sent_total")
                .await?,
            send_calls: self
                .sfu_counter("meetease_sfu_udp_send_calls_total")
                .await?,
            gso_datagrams: self
                .sfu_counter("meetease_sfu_udp_gso_datagrams_total")
                .await?,
            rtp_received: self.sfu_counter("meetease_sfu_rtp_received_total").await?,
        })
    }

    /// The SFU's forward-latency histogram (see `report::RunResult::sfu_added_latency`).
    async fn added_latency(&self) -> Option<Vec<(f64, f64)>> {
        match self {
            Forwarded::Metric(control) => control
                .histogram("meetease_sfu_forward_latency_seconds")
                .await
                .ok()
                .filter(|buckets| !buckets.is_empty()),
            Forwarded::Arrivals(_) => None,
        }
    }
}

fn progress_bar(cli: &Cli, total: usize) -> Option<indicatif::ProgressBar> {
    (!cli.quiet).then(|| {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix("joining");
        bar
    })
}

fn impairment_of(scenario: &Scenario, index: usize) -> Impairment {
    Impairment::new(
        ImpairmentConfig {
            loss: scenario.loss_percent / 100.0,
            delay: Duration::from_millis(scenario.delay_ms),
            jitter: Duration::from_millis(scenario.jitter_ms),
            bandwidth_bps: scenario.bandwidth_kbps.map(|k| k * 1000),
        },
        0x9e37_79b9 ^ index as u64,
    )
}

fn publish_of(scenario: &Scenario, seat: usize) -> Publish {
    let publishing = seat < scenario.publishers;
    Publish {
        audio: publishing,
        video: publishing && scenario.video,
        simulcast: scenario.simulcast,
        video_bps: scenario.video_kbps * 1000,
        frame_bursts: scenario.frame_bursts,
        screen: publishing && seat == 0 && scenario.screen_share,
    }
}

/// Run one scenario against a fresh server process.
async fn run_once(cli: &Cli, scenario: &Scenario, server: Server) -> anyhow::Result<RunResult> {
    let epoch = Instant::now();
    let stop = CancellationToken::new();
    let live = Arc::new(LiveCounters::default());
    let progress = progress_bar(
        cli,
        scenario.rooms * (scenario.publishers + scenario.subscribers),
    );
    let common = Common {
        epoch,
        live: live.clone(),
        stop: stop.clone(),
        wire_ids: Arc::new(AtomicU64::new(1)),
        scenario: scenario.clone(),
        lean: cli.lean_receivers,
    };
    let joined = match server {
        Server::Meetease if cli.join == JoinPath::Signaling => {
            join_platform(cli, common, &progress).await
        }
        Server::Meetease => join_meetease(cli, common, &progress).await,
        Server::Janus => join_janus(cli, common, &progress).await,
    };
    let mut joined = match joined {
        Ok(joined) => joined,
        Err(err) => {
            stop.cancel();
            return Err(err);
        }
    };
    let result = measure(cli, scenario, server, &mut joined, &live, progress).await;
    stop.cancel();
    let mut participants = Vec::new();
    for member in joined.members {
        if let Ok(report) = member.task.await {
            participants.push(report);
        }
    }
    drop(joined.server);
    let measured = result?;
    Ok(report::summarise(
        scenario.clone(),
        server.name(),
        participants,
        measured,
    ))
}

/// One participant the run started.
struct Member {
    task: tokio::task::JoinHandle<stats::ParticipantReport>,
    control: mpsc::UnboundedSender<Control>,
    /// Ends this participant alone (churn); a child of the run's stop token.
    leave: CancellationToken,
    room: usize,
    publishes: bool,
    /// Tells the server this participant left (what a closing browser tab does).
    hang_up: Option<HangUp>,
}

type HangUp = Box<dyn FnOnce() -> LocalBoxFuture<'static, ()>>;

/// Joins one more receiver to room `.0` as participant `.1` (for churn).
type Rejoin = Box<dyn Fn(usize, usize) -> LocalBoxFuture<'static, anyhow::Result<Member>>>;

/// What every join path shares.
#[derive(Clone)]
struct Common {
    epoch: Instant,
    live: Arc<LiveCounters>,
    stop: CancellationToken,
    wire_ids: Arc<AtomicU64>,
    scenario: Scenario,
    lean: bool,
}

impl Common {
    async fn participant(
        &self,
        index: usize,
        bind: std::net::IpAddr,
        seat: usize,
    ) -> anyhow::Result<Participant> {
        Participant::new(
            index,
            bind,
            publish_of(&self.scenario, seat),
            self.epoch,
            impairment_of(&self.scenario, index),
            self.live.clone(),
            self.lean,
        )
        .await
    }

    /// Start the participant's task; its answers to renegotiations go to `answers`.
    fn start(
        &self,
        participant: Participant,
        room: usize,
        publishes: bool,
        control: (
            mpsc::UnboundedSender<Control>,
            mpsc::UnboundedReceiver<Control>,
        ),
        answers: mpsc::UnboundedSender<(usize, String)>,
    ) -> Member {
        let leave = self.stop.child_token();
        let task =
            tokio::spawn(participant.run(control.1, answers, self.wire_ids.clone(), leave.clone()));
        Member {
            task,
            control: control.0,
            leave,
            room,
            publishes,
            hang_up: None,
        }
    }
}

const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The lone-SFU path: sessions made through the SFU's control API.
#[derive(Clone)]
struct ControlJoin {
    control: ControlClient,
    routes: Arc<Mutex<HashMap<ParticipantId, mpsc::UnboundedSender<Control>>>>,
    ids: Arc<Mutex<Vec<ParticipantId>>>,
    answers: mpsc::UnboundedSender<(usize, String)>,
    tiles: Option<Tiles>,
    common: Common,
}

/// `--tile-height` on the control path: every member of a room asks for
/// every other member's video at the tile height, as the web client does
/// through signaling. Members and tracks are met in either order (a track
/// published before or after someone joins), so both are remembered.
#[derive(Clone)]
struct Tiles {
    height: u32,
    control: ControlClient,
    rooms: Arc<Mutex<HashMap<RoomId, TileRoom>>>,
}

#[derive(Default)]
struct TileRoom {
    members: Vec<ParticipantId>,
    /// Video tracks and their publishers.
    videos: Vec<(ParticipantId, proto::ids::TrackId)>,
}

impl Tiles {
    fn joined(&self, room: &RoomId, member: ParticipantId) {
        let videos = {
            let Ok(mut rooms) = self.rooms.lock() else {
                return;
            };
            let room = rooms.entry(room.clone()).or_default();
            room.members.push(member);
            room.videos.clone()
        };
        for (publisher, track) in videos {
            if publisher != member {
                self.draw(member, track);
            }
        }
    }

    fn published(&self, room: &RoomId, publisher: ParticipantId, track: proto::ids::TrackId) {
        let members = {
            let Ok(mut rooms) = self.rooms.lock() else {
                return;
            };
            let room = rooms.entry(room.clone()).or_default();
            room.videos.push((publisher, track));
            room.members.clone()
        };
        for member in members {
            if member != publisher {
                self.draw(member, track);
            }
        }
    }

    /// `member` hung up (churn): nobody draws its videos, it draws nothing.
    fn left(&self, room: &RoomId, member: ParticipantId) {
        if let Ok(mut rooms) = self.rooms.lock()
            && let Some(room) = rooms.get_mut(room)
        {
            room.members.retain(|m| *m != member);
            room.videos.retain(|(publisher, _)| *publisher != member);
        }
    }

    fn draw(&self, member: ParticipantId, track: proto::ids::TrackId) {
        let control = self.control.clone();
        let request = proto::sfu::SetSubscription {
            track_id: track,
            subscribed: true,
            max_layer: None,
            max_height: Some(self.height),
        };
        tokio::spawn(async move {
            if let Err(err) = control.set_subscription(member, &request).await {
                eprintln!("warning: tile height for {member}: {err:#}");
            }
        });
    }
}

impl ControlJoin {
    async fn one(self, room: usize, seat: usize, index: usize) -> anyhow::Result<Member> {
        let room_id = RoomId::parse(format!("load-{room}")).context("room id")?;
        let mut participant = self.common.participant(index, LOOPBACK, seat).await?;
        let publishes = publish_of(&self.common.scenario, seat).audio;
        let (offer, tracks) = participant.publisher_offer(self.common.scenario.data_channels);
        let id = ParticipantId::new();
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(id, tx.clone());
        {
            let mut ids = self.ids.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            // Answers find their session by participant index.
            ids.resize(index + 1, id);
            ids[index] = id;
        }
        let created = self
            .control
            .create_session(&CreateSession {
                room: room_id.clone(),
                participant: id,
                publisher_offer: offer,
                tracks,
                auto_subscribe: true,
                data_channel: self.common.scenario.data_channels,
            })
            .await?;
        if let Some(tiles) = &self.tiles {
            tiles.joined(&room_id, id);
        }
        participant.accept_publisher_answer(&created.publisher_answer)?;
        let answer = participant.answer_subscriber_offer(&created.subscriber_offer.sdp)?;
        if let Some(bad) = participant.sfu_addrs.iter().find(|a| !a.ip().is_loopback()) {
            bail!("the SFU offered a non-loopback media address {bad}; refusing to send there");
        }
        self.control.subscriber_answer(id, answer).await?;
        let mut member =
            self.common
                .start(participant, room, publishes, (tx, rx), self.answers.clone());
        let control = self.control.clone();
        let tiles = self.tiles.clone();
        member.hang_up = Some(Box::new(move || {
            Box::pin(async move {
                if let Some(tiles) = tiles {
                    tiles.left(&room_id, id);
                }
                let _ = control.remove_session(id).await;
            })
        }));
        Ok(member)
    }
}

/// Join every seat of every room in order, at the configured rate.
async fn join_seats(
    cli: &Cli,
    scenario: &Scenario,
    progress: &Option<indicatif::ProgressBar>,
    one: impl Fn(usize, usize, usize) -> LocalBoxFuture<'static, anyhow::Result<Member>>,
) -> anyhow::Result<Vec<Member>> {
    let join_gap = Duration::from_secs_f64(1.0 / cli.join_rate.max(0.1));
    let mut members = Vec::new();
    for room in 0..scenario.rooms {
        for seat in 0..(scenario.publishers + scenario.subscribers) {
            members.push(one(room, seat, members.len()).await?);
            if let Some(bar) = progress {
                bar.inc(1);
            }
            tokio::time::sleep(join_gap).await;
            // Publishers must be connected before receivers join, so their
            // tracks are in the receivers' first offer: give the first ones time.
            if seat + 1 == scenario.publishers {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    Ok(members)
}

async fn join_meetease(
    cli: &Cli,
    common: Common,
    progress: &Option<indicatif::ProgressBar>,
) -> anyhow::Result<Joined> {
    let scenario = common.scenario.clone();
    let sfu = SfuProcess::spawn(&sfu_binary(cli)?)?;
    if !sfu.http.ip().is_loopback() {
        bail!("refusing to load a non-loopback SFU at {}", sfu.http);
    }
    let control = ControlClient::new(sfu.url(""), sfu.token.clone());
    let watch = sfu.watch();
    if cli.pin_cores {
        pin::split(sfu.pid())?;
    }
    let rss_before = watch.rss_bytes();

    let tiles = scenario.tile_height.map(|height| Tiles {
        height,
        control: control.clone(),
        rooms: Arc::default(),
    });
    // SFU events → the participant that must answer a new subscriber offer.
    let routes: Arc<Mutex<HashMap<ParticipantId, mpsc::UnboundedSender<Control>>>> = Arc::default();
    {
        let routes = routes.clone();
        let control = control.clone();
        let stop = common.stop.clone();
        let publisher_layers = scenario.publisher_layers;
        let tiles = tiles.clone();
        tokio::spawn(async move {
            let follow = control.follow_events(move |event| {
                let (participant_id, message) = match event {
                    SfuEvent::TrackPublished { room, track } => {
                        if let Some(tiles) = &tiles
                            && track.kind == proto::media::TrackKind::Video
                        {
                            tiles.published(&room, track.participant_id, track.track_id);
                        }
                        return;
                    }
                    SfuEvent::SubscriberOffer {
                        participant_id,
                        offer,
                        ..
                    } => (participant_id, Control::SubscriberOffer(offer.sdp)),
                    SfuEvent::PublisherLayers {
                        participant_id,
                        mid,
                        active,
                        ..
                    } if publisher_layers => {
                        (participant_id, Control::PublisherLayers { mid, active })
                    }
                    _ => return,
                };
                if let Some(tx) = routes
                    .lock()
                    .ok()
                    .and_then(|r| r.get(&participant_id).cloned())
                {
                    let _ = tx.send(message);
                }
            });
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = follow => {}
            }
        });
    }
    // Participants' answers → the SFU.
    let (answer_tx, mut answer_rx) = mpsc::unbounded_channel::<(usize, String)>();
    let ids: Arc<Mutex<Vec<ParticipantId>>> = Arc::default();
    {
        let control = control.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            while let Some((index, sdp)) = answer_rx.recv().await {
                let id = ids.lock().ok().and_then(|ids| ids.get(index).copied());
                if let Some(id) = id {
                    let _ = control.subscriber_answer(id, sdp).await;
                }
            }
        });
    }
    let joiner = ControlJoin {
        control: control.clone(),
        routes,
        ids,
        answers: answer_tx,
        tiles,
        common,
    };
    let members = join_seats(cli, &scenario, progress, |room, seat, index| {
        Box::pin(joiner.clone().one(room, seat, index))
    })
    .await?;
    let receivers_seat = scenario.publishers;
    Ok(Joined {
        watch,
        rss_before,
        members,
        rejoin: Box::new(move |room, index| {
            Box::pin(joiner.clone().one(room, receivers_seat, index))
        }),
        counter: Forwarded::Metric(control),
        server: Box::new(sfu),
    })
}

/// The platform path: guests joining through REST and the signaling WebSocket.
#[derive(Clone)]
struct PlatformJoin {
    http: reqwest::Client,
    signaling: std::net::SocketAddr,
    codes: Arc<Vec<String>>,
    sockets: Arc<Mutex<HashMap<usize, mpsc::UnboundedSender<String>>>>,
    answers: mpsc::UnboundedSender<(usize, String)>,
    common: Common,
}

impl PlatformJoin {
    async fn one(self, room: usize, seat: usize, index: usize) -> anyhow::Result<Member> {
        let code = self.codes.get(room).context("no such room")?;
        let mut participant = self.common.participant(index, LOOPBACK, seat).await?;
        let publishes = publish_of(&self.common.scenario, seat).audio;
        let (offer, tracks) = participant.publisher_offer(self.common.scenario.data_channels);
        let token =
            platform::guest_join(&self.http, self.signaling, code, &format!("Load {index}"))
                .await?;
        // Join time: from opening the signaling socket to the first media packet.
        participant.mark_joining();
        let mut signal = platform::Signal::connect(self.signaling).await?;
        let joined = signal
            .join(token, offer, tracks, self.common.scenario.data_channels)
            .await?;
        participant.accept_publisher_answer(&joined.publisher_answer)?;
        let answer = participant.answer_subscriber_offer(&joined.subscriber_offer)?;
        if let Some(bad) = participant.sfu_addrs.iter().find(|a| !a.ip().is_loopback()) {
            bail!("the SFU offered a non-loopback media address {bad}; refusing to send there");
        }
        signal.send_subscriber_answer(answer).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (socket_tx, socket_rx) = mpsc::unbounded_channel();
        self.sockets
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(index, socket_tx);
        let member = self.common.start(
            participant,
            room,
            publishes,
            (tx.clone(), rx),
            self.answers.clone(),
        );
        // The socket lives as long as the participant: leaving sends `leave`.
        let follow = platform::Follow {
            publisher_layers: self.common.scenario.publisher_layers,
            tile_height: self.common.scenario.tile_height,
        };
        tokio::spawn(signal.run(joined, tx, socket_rx, member.leave.clone(), follow));
        Ok(member)
    }
}

/// MeetEase as users meet it: the launcher, meetings over REST, guests joining
/// over the signaling WebSocket (see `platform.rs`).
async fn join_platform(
    cli: &Cli,
    common: Common,
    progress: &Option<indicatif::ProgressBar>,
) -> anyhow::Result<Joined> {
    let scenario = common.scenario.clone();
    let platform = PlatformProcess::spawn(&platform_binary(cli)?)?;
    let watch = ProcWatch::new(platform.pid());
    if cli.pin_cores {
        pin::split(platform.pid())?;
    }
    let rss_before = watch.rss_bytes();
    let http = reqwest::Client::new();
    let size = scenario.publishers + scenario.subscribers;
    let codes =
        platform::create_meetings(&http, platform.gateway, scenario.rooms, size + 10).await?;
    // Participants' answers to renegotiations → their own WebSocket.
    let (answer_tx, mut answer_rx) = mpsc::unbounded_channel::<(usize, String)>();
    let sockets: Arc<Mutex<HashMap<usize, mpsc::UnboundedSender<String>>>> = Arc::default();
    {
        let sockets = sockets.clone();
        tokio::spawn(async move {
            while let Some((index, sdp)) = answer_rx.recv().await {
                let socket = sockets.lock().ok().and_then(|s| s.get(&index).cloned());
                if let Some(socket) = socket {
                    let _ = socket.send(sdp);
                }
            }
        });
    }
    let joiner = PlatformJoin {
        http,
        signaling: platform.signaling,
        codes: Arc::new(codes),
        sockets,
        answers: answer_tx,
        common,
    };
    let members = join_seats(cli, &scenario, progress, |room, seat, index| {
        Box::pin(joiner.clone().one(room, seat, index))
    })
    .await?;
    let control = ControlClient::new(format!("http://{}", platform.sfu), String::new());
    let receivers_seat = scenario.publishers;
    Ok(Joined {
        watch,
        rss_before,
        members,
        rejoin: Box::new(move |room, index| {
            Box::pin(joiner.clone().one(room, receivers_seat, index))
        }),
        counter: Forwarded::Metric(control),
        server: Box::new(platform),
    })
}

/// A VideoRoom's number and its publishers' feed ids.
type JanusRoom = (u64, Vec<u64>);

/// The Janus path's shared state: its API session and each room's feeds.
#[derive(Clone)]
struct JanusJoin {
    janus: JanusClient,
    bind: std::net::IpAddr,
    janus_ip: std::net::IpAddr,
    /// Per room: its VideoRoom number and its publishers' feed ids.
    rooms: Arc<Mutex<Vec<JanusRoom>>>,
    common: Common,
}

impl JanusJoin {
    fn only_janus(&self, sdp: &str) -> anyhow::Result<()> {
        if let Some(bad) = peer::candidate_addrs(sdp)
            .into_iter()
            .find(|a| a.ip() != self.janus_ip)
        {
            bail!(
                "Janus offered {bad}, outside the namespace the harness made; refusing to send there"
            );
        }
        Ok(())
    }

    /// Subscribe a running participant to `feeds` in one multistream
    /// subscription: Janus offers, the participant answers through `answers`.
    async fn subscribe(
        &self,
        room_number: u64,
        feeds: &[u64],
        index: usize,
        control: &mpsc::UnboundedSender<Control>,
        answers: &mut mpsc::UnboundedReceiver<(usize, String)>,
    ) -> anyhow::Result<Option<janus::Handle>> {
        if feeds.is_empty() {
            return Ok(None);
        }
        let _ = control.send(Control::StartJoinClock);
        let handle = self.janus.attach().await?;
        let streams: Vec<_> = feeds
            .iter()
            .map(|f| serde_json::json!({"feed": f}))
            .collect();
        let join = serde_json::json!({
            "request": "join", "ptype": "subscriber",
            "room": room_number, "streams": streams,
        });
        // Until a publisher's connection is up Janus answers "no such feed".
        let deadline = Instant::now() + Duration::from_secs(15);
        let attached = loop {
            match self.janus.message(handle, join.clone(), None).await {
                Ok(attached) => break attached,
                Err(err)
                    if Instant::now() < deadline && format!("{err}").contains("No such feed") =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err),
            }
        };
        let offer = janus::jsep_sdp(&attached)?;
        self.only_janus(&offer)?;
        control
            .send(Control::SubscriberOffer(offer))
            .map_err(|_| anyhow::anyhow!("participant {index} stopped"))?;
        let answer = loop {
            let (from, answer) = tokio::time::timeout(Duration::from_secs(10), answers.recv())
                .await
                .context("a participant did not answer Janus's offer")?
                .context("participants stopped")?;
            if from == index {
                break answer;
            }
        };
        self.janus
            .message(
                handle,
                serde_json::json!({"request": "start"}),
                Some(serde_json::json!({"type": "answer", "sdp": answer, "trickle": false})),
            )
            .await?;
        Ok(Some(handle))
    }

    /// One more receiver (churn): its own answer channel, subscribed to every feed.
    async fn one_receiver(self, room: usize, index: usize) -> anyhow::Result<Member> {
        let (room_number, feeds) = self
            .rooms
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .get(room)
            .cloned()
            .context("no such room")?;
        let seat = self.common.scenario.publishers;
        let mut participant = self.common.participant(index, self.bind, seat).await?;
        participant.mark_joining();
        let (answer_tx, mut answer_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut member = self
            .common
            .start(participant, room, false, (tx.clone(), rx), answer_tx);
        let handle = self
            .subscribe(room_number, &feeds, index, &tx, &mut answer_rx)
            .await?;
        member.hang_up = self.hang_up(handle);
        Ok(member)
    }

    fn hang_up(&self, handle: Option<janus::Handle>) -> Option<HangUp> {
        let handle = handle?;
        let janus = self.janus.clone();
        Some(Box::new(move || {
            Box::pin(async move {
                let _ = janus.detach(handle).await;
            })
        }))
    }
}

/// The same participants through Janus's VideoRoom: a room per scenario room,
/// each publisher joins and publishes (one send-only connection), then every
/// participant subscribes to all the room's other feeds in one multistream
/// subscription (one receive-only connection offered by Janus) — the same two
/// connections per person MeetEase uses.
async fn join_janus(
    cli: &Cli,
    common: Common,
    progress: &Option<indicatif::ProgressBar>,
) -> anyhow::Result<Joined> {
    let scenario = common.scenario.clone();
    if scenario.tile_height.is_some() {
        // Its subscribers could pick a substream, but nothing here asks for
        // one: a Janus row would compare its top layer with our low one.
        bail!("--tile-height is not implemented for Janus's VideoRoom");
    }
    let mut process = JanusProcess::spawn()?;
    let http = reqwest::Client::new();
    process.ready(&http).await?;
    let watch = ProcWatch::new(process.pid());
    if cli.pin_cores {
        pin::split(process.pid())?;
    }
    let rss_before = watch.rss_bytes();
    let janus = JanusClient::connect(http, process.api_base(), common.stop.clone()).await?;
    let joiner = JanusJoin {
        janus: janus.clone(),
        bind: std::net::IpAddr::from(process.host_ip),
        janus_ip: std::net::IpAddr::from(process.janus_ip),
        rooms: Arc::default(),
        common: common.clone(),
    };
    let join_gap = Duration::from_secs_f64(1.0 / cli.join_rate.max(0.1));
    // Subscriptions are made one at a time, so answers come back in order.
    let (answer_tx, mut answer_rx) = mpsc::unbounded_channel::<(usize, String)>();
    let mut members = Vec::new();
    let mut index = 0;
    for room in 0..scenario.rooms {
        let room_number = 1000 + room as u64;
        let admin = janus.attach().await?;
        janus
            .request(
                admin,
                serde_json::json!({
                    "request": "create", "room": room_number,
                    "publishers": scenario.publishers.max(1),
                    "audiocodec": "opus", "videocodec": "vp8",
                    "audiolevel_ext": true, "bitrate": 0, "fir_freq": 0,
                    "notify_joining": false,
                }),
            )
            .await?;
        let mut seats = Vec::new();
        let mut feeds = Vec::new();
        for seat in 0..(scenario.publishers + scenario.subscribers) {
            let publish = publish_of(&scenario, seat);
            let mut participant = common.participant(index, joiner.bind, seat).await?;
            let mut feed = None;
            if publish.audio {
                let handle = janus.attach().await?;
                let joined = janus
                    .message(
                        handle,
                        serde_json::json!({"request": "join", "ptype": "publisher", "room": room_number}),
                        None,
                    )
                    .await?;
                let id = joined["plugindata"]["data"]["id"]
                    .as_u64()
                    .with_context(|| format!("no publisher id in {joined}"))?;
                let (offer, _) = participant.publisher_offer(false);
                let answer = janus
                    .message(
                        handle,
                        serde_json::json!({"request": "publish"}),
                        // Our layers are listed low to high (q;h;f); Janus assumes the reverse unless told.
                        Some(serde_json::json!({"type": "offer", "sdp": offer, "trickle": false, "rid_order": "lmh"})),
                    )
                    .await?;
                let answer = janus::jsep_sdp(&answer)?;
                joiner.only_janus(&answer)?;
                participant.accept_publisher_answer(&answer)?;
                feeds.push(id);
                feed = Some(id);
            } else {
                participant.mark_joining();
            }
            // Running from now: a feed exists in Janus only once its media flows.
            let (tx, rx) = mpsc::unbounded_channel();
            let member = common.start(
                participant,
                room,
                publish.audio,
                (tx, rx),
                answer_tx.clone(),
            );
            seats.push((index, members.len(), feed));
            members.push(member);
            index += 1;
            if let Some(bar) = progress {
                bar.inc(1);
            }
            tokio::time::sleep(join_gap).await;
        }
        joiner
            .rooms
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push((room_number, feeds.clone()));
        // Publishers are in: everyone subscribes to everyone else.
        for (index, at, own) in seats {
            let others: Vec<u64> = feeds.iter().copied().filter(|f| Some(*f) != own).collect();
            let control = members[at].control.clone();
            let handle = joiner
                .subscribe(room_number, &others, index, &control, &mut answer_rx)
                .await?;
            members[at].hang_up = joiner.hang_up(handle);
        }
    }
    Ok(Joined {
        watch,
        rss_before,
        members,
        rejoin: Box::new(move |room, index| Box::pin(joiner.clone().one_receiver(room, index))),
        counter: Forwarded::Arrivals(common.live.clone()),
        server: Box::new(process),
    })
}

/// One receiver leaves (its task ends, the server is told) and a newcomer
/// joins the same room.
async fn churn_one(joined: &mut Joined) -> anyhow::Result<()> {
    let Some(at) = joined
        .members
        .iter()
        .position(|m| !m.publishes && !m.leave.is_cancelled())
    else {
        bail!("churn needs receivers (--subscribers) to replace");
    };
    let leaving = &mut joined.members[at];
    leaving.leave.cancel();
    if let Some(hang_up) = leaving.hang_up.take() {
        hang_up().await;
    }
    let room = leaving.room;
    let index = joined.members.len();
    let newcomer = (joined.rejoin)(room, index).await?;
    let _ = newcomer.control.send(Control::ResetStats);
    joined.members.push(newcomer);
    Ok(())
}

/// Warm-up, then the measured window, sampled every second.
async fn measure(
    cli: &Cli,
    scenario: &Scenario,
    server: Server,
    joined: &mut Joined,
    live: &LiveCounters,
    progress: Option<indicatif::ProgressBar>,
) -> anyhow::Result<report::Measured> {
    let watch = joined.watch;
    let rss_joined = watch.rss_bytes();
    tokio::time::sleep(Duration::from_secs(cli.warmup)).await;
    let (cpu0, worker0) = watch.cpu_seconds();
    let forwarded0 = joined.counter.read().await.unwrap_or(0.0);
    let added_latency0 = joined.counter.added_latency().await;
    let sending0 = joined.counter.sending().await;
    let received0 = live.received.load(Ordering::Relaxed);
    // Receivers forget the warm-up: loss and latency describe the window only.
    for member in &joined.members {
        let _ = member.control.send(Control::ResetStats);
    }
    let window_start = Instant::now();
    let mut timeline = Vec::new();
    if let Some(bar) = &progress {
        bar.set_prefix(server.name());
        bar.set_length(scenario.duration_s);
        bar.set_position(0);
    }
    let mut last = (window_start, cpu0, forwarded0, received0);
    let mut churned = 0usize;
    for second in 0..scenario.duration_s {
        let tick = tokio::time::Instant::now() + Duration::from_secs(1);
        // Churn: the longest-staying receivers leave, as many newcomers join their rooms.
        for _ in 0..scenario.churn_per_second {
            churn_one(joined).await?;
            churned += 1;
        }
        tokio::time::sleep_until(tick).await;
        let now = Instant::now();
        let (cpu, _) = watch.cpu_seconds();
        let forwarded = joined.counter.read().await.unwrap_or(last.2);
        let received = live.received.load(Ordering::Relaxed);
        let dt = now.saturating_duration_since(last.0).as_secs_f64();
        timeline.push(report::Sample {
            t_s: (second + 1) as f64,
            forwarded_pps: (forwarded - last.2) / dt,
            sfu_cpu_percent: (cpu - last.1) / dt * 100.0,
            received_pps: received.saturating_sub(last.3) as f64 / dt,
        });
        last = (now, cpu, forwarded, received);
        if let Some(bar) = &progress {
            bar.set_position(second + 1);
            bar.set_message(format!(
                "{:.0} pkt/s forwarded",
                timeline.last().map_or(0.0, |s| s.forwarded_pps)
            ));
        }
    }
    let window = window_start.elapsed();
    let (cpu1, worker1) = watch.cpu_seconds();
    let forwarded1 = joined.counter.read().await.unwrap_or(forwarded0);
    let received1 = live.received.load(Ordering::Relaxed);
    let sfu_added_latency = match (added_latency0, joined.counter.added_latency().await) {
        (Some(before), Some(after)) => Some(stats::Percentiles::from_buckets(&before, &after)),
        _ => None,
    };
    let sending = match (sending0, joined.counter.sending().await) {
        (Some(before), Some(after)) => Some(after.since(&before)),
        _ => None,
    };
    let keyframe_requests = joined
        .counter
        .sfu_counter("meetease_sfu_keyframe_requests_total")
        .await;
    let socket_drops = joined
        .counter
        .sfu_counter("meetease_sfu_udp_receive_buffer_drops_total")
        .await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(report::Measured {
        churned,
        window,
        sfu_cpu_s: cpu1 - cpu0,
        worker_cpu_s: worker1 - worker0,
        forwarded: forwarded1 - forwarded0,
        received: received1 - received0,
        rss_before: joined.rss_before,
        rss_joined,
        rss_end: watch.rss_bytes(),
        keyframe_requests,
        sfu_added_latency,
        socket_drops,
        sending,
        timeline,
    })
}

fn targets_met(cli: &Cli, result: &RunResult) -> Vec<String> {
    let mut missed = Vec::new();
    if let Some(max) = cli.max_loss
        && result.loss_percent > max
    {
        missed.push(format!("loss {:.3}% > {max}%", result.loss_percent));
    }
    if let Some(max) = cli.max_p99_ms
        && result.latency.p99_ms > max
    {
        missed.push(format!(
            "p99 latency {:.2} ms > {max} ms",
            result.latency.p99_ms
        ));
    }
    if let Some(min) = cli.min_pps_per_cpu
        && result.forwarded_per_cpu_second < min
    {
        missed.push(format!(
            "{:.0} forwarded pkt per SFU CPU-s < {min}",
            result.forwarded_per_cpu_second
        ));
    }
    if result.received_packets == 0 {
        missed.push("no media arrived".to_owned());
    }
    missed
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Ctrl-C or SIGTERM drops the run, and with it every process and namespace
    // it started (each is ended in its `Drop`).
    let outcome = tokio::select! {
        outcome = run(cli) => outcome,
        _ = interrupted() => Err(anyhow::anyhow!("interrupted; everything started was stopped")),
    };
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(err) => {
            eprintln!("loadtest: error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    // The harness bounds itself: a run that overstays is ended, whatever happens inside.
    let budget = Duration::from_secs(cli.duration.min(MAX_DURATION.as_secs()) + cli.warmup + 120);
    std::fs::create_dir_all(&cli.out)
        .with_context(|| format!("cannot create {}", cli.out.display()))?;
    let mut results = Vec::new();
    let mut missed_all = Vec::new();
    let mut all_held = true;
    for server in cli.server.servers() {
        if !cli.ramp {
            let scenario = scenario(&cli, cli.subscribers);
            let result = tokio::time::timeout(budget, run_once(&cli, &scenario, server))
                .await
                .context("the run exceeded its time budget")??;
            let missed = targets_met(&cli, &result);
            println!("{}", report::one_line(&result));
            for m in &missed {
                println!("target missed: {}: {m}", server.name());
                missed_all.push(format!("{}: {m}", server.name()));
            }
            all_held &= missed.is_empty();
            results.push(result);
            continue;
        }
        let mut subscribers = cli.subscribers.max(1);
        let mut last_good = None;
        loop {
            let scenario = scenario(&cli, subscribers);
            let result = tokio::time::timeout(budget, run_once(&cli, &scenario, server))
                .await
                .context("a ramp step exceeded its time budget")??;
            let missed = targets_met(&cli, &result);
            println!(
                "{}{}",
                report::one_line(&result),
                if missed.is_empty() {
                    ""
                } else {
                    "  ← target missed"
                }
            );
            results.push(result);
            if !missed.is_empty() {
                println!(
                    "{}: last load that held: {}",
                    server.name(),
                    last_good.map_or("none".to_owned(), |s: usize| format!(
                        "{s} subscribers per room"
                    ))
                );
                missed_all.extend(missed.iter().map(|m| format!("{}: {m}", server.name())));
                all_held &= last_good.is_some();
                break;
            }
            last_good = Some(subscribers);
            if subscribers >= cli.ramp_max {
                println!(
                    "{}: ramp reached --ramp-max ({subscribers}) with every target held",
                    server.name()
                );
                break;
            }
            subscribers = ((subscribers as f64 * 1.5).ceil() as usize).min(cli.ramp_max);
        }
    }
    report::write(&cli.out, &results, &missed_all)?;
    Ok(all_held)
}
