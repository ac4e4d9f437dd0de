//! The thin I/O shell around the core: one worker thread owns a [`Sfu`] and
//! its UDP socket, so the hot path takes no lock. Control commands reach it as
//! closures over a channel; datagrams are read and sent in batches
//! ([`crate::udp`]); its events go to a broadcast channel that the control API
//! streams to signaling. With ICE over TCP on, the worker also owns a TCP
//! listener on the same port number ([`crate::tcp`]), whose connections feed
//! the core the same way.

use crate::core::{Sfu, SfuConfig, SfuStats, Transmit};
use crate::metrics::SfuMetrics;
use crate::tcp::{TcpInput, TcpMedia, TcpStats};
use crate::udp::{BATCH, MediaSocket, SendStats};
use proto::sfu::SfuEvent;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use str0m::net::Protocol;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A command run on the worker thread with the core and the current time.
type Command = Box<dyn FnOnce(&mut Sfu, Instant) + Send>;

/// Receive batches read in one go before the worker looks at timers and
/// commands again (each up to [`BATCH`] datagrams).
const READ_BATCHES: usize = 4;
/// A receive batch that was not full but took at least this long to feed
/// (a fan-out: routing one packet to 150 subscribers takes ~150 µs) is
/// followed by one more read before the passes. A browser sends a video
/// frame's packets back to back, so the rest of the frame has usually landed
/// meanwhile, and each subscriber then gets the whole frame in one pass and
/// one GSO run instead of its first packet alone. A quick batch (a meeting's
/// few copies) goes straight to its passes: an empty read would cost more
/// than it saves. See docs/benchmarks/sfu-core.md.
const LOOK_AGAIN_AFTER: Duration = Duration::from_micros(100);
/// How often the counters are pushed to the metrics (not per loop: a loop
/// turn can be a single datagram).
const REPORT_EVERY: Duration = Duration::from_millis(100);

/// A cheap-to-clone handle on a running worker.
#[derive(Clone)]
pub struct WorkerHandle {
    commands: mpsc::UnboundedSender<Command>,
    events: broadcast::Sender<SfuEvent>,
    /// Forwarded packets per second over the last second, as f64 bits.
    forwarded_pps: Arc<AtomicU64>,
    pub local_addr: SocketAddr,
    /// This worker's index (its metrics carry it as the `worker` label).
    pub index: usize,
    /// Set when the node shuts down: no new rooms (see [`WorkerHandle::start_draining`]).
    draining: Arc<AtomicBool>,
}

impl WorkerHandle {
    /// Run `f` on the worker with the core; `None` if the worker has stopped.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Sfu, Instant) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let command: Command = Box::new(move |sfu, now| {
            let _ = tx.send(f(sfu, now));
        });
        self.commands.send(command).ok()?;
        rx.await.ok()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SfuEvent> {
        self.events.subscribe()
    }

    /// Stop taking new rooms; rooms already here carry on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Participants on this worker now (`None` if it has stopped).
    pub async fn participants(&self) -> Option<u32> {
        self.call(|sfu, _| sfu.load(0.0, 0.0).participants).await
    }

    pub fn forwarded_pps(&self) -> f64 {
        f64::from_bits(self.forwarded_pps.load(Ordering::Relaxed))
    }
}

/// How a worker serves its participants, from the node's [`crate::Config`].
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// The address offered as the ICE host candidate (the port is the worker's).
    pub candidate_addr: SocketAddr,
    /// How long a participant whose media connection dropped is kept.
    pub disconnect_grace: Duration,
    /// Send runs to one destination as GSO datagrams (see [`crate::udp`]).
    pub gso: bool,
}

/// Start a worker on its own thread, serving `socket` (and, for ICE over TCP,
/// `tcp`, bound to the same port number) until `shutdown`.
pub fn spawn(
    index: usize,
    socket: std::net::UdpSocket,
    tcp: Option<std::net::TcpListener>,
    settings: WorkerSettings,
    metrics: SfuMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<WorkerHandle> {
    let WorkerSettings {
        candidate_addr,
        disconnect_grace,
        gso,
    } = settings;
    socket.set_nonblocking(true)?;
    let local_addr = socket.local_addr()?;
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (events, _) = broadcast::channel(4096);
    let forwarded_pps = Arc::new(AtomicU64::new(0));
    let handle = WorkerHandle {
        commands,
        events: events.clone(),
        forwarded_pps: forwarded_pps.clone(),
        local_addr,
        index,
        draining: Arc::new(AtomicBool::new(false)),
    };
    // Export this worker's gauges from the start, before its first report.
    metrics.set_load(
        &index.to_string(),
        &proto::sfu::NodeLoad {
            rooms: 0,
            participants: 0,
            tracks: 0,
            forwarded_pps: 0.0,
            load: 0.0,
            draining: false,
        },
        None,
    );
    let config = SfuConfig {
        local_addr,
        candidate_addr: SocketAddr::new(candidate_addr.ip(), local_addr.port()),
        disconnect_grace,
        ice_tcp: tcp.is_some(),
    };
    std::thread::Builder::new()
        .name("sfu-worker".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    tracing::error!(%err, "cannot start the SFU worker runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                let socket = match UdpSocket::from_std(socket) {
                    Ok(socket) => socket,
                    Err(err) => {
                        tracing::error!(%err, "cannot register the media socket");
                        return;
                    }
                };
                let tcp = match tcp.map(TcpMedia::start).transpose() {
                    Ok(tcp) => tcp,
                    Err(err) => {
                        tracing::error!(%err, "cannot register the TCP media listener");
                        return;
                    }
                };
                let worker = Worker {
                    sfu: Sfu::new(config, Instant::now()),
                    socket: {
                        // On where the kernel knows it (probed by `new`).
                        let mut socket = MediaSocket::new(socket);
                        if !gso {
                            socket.set_gso(false);
                        }
                        socket
                    },
                    tcp,
                    reported_tcp: TcpStats::default(),
                    outbox: VecDeque::new(),
                    reported_at: Instant::now(),
                    commands: command_rx,
                    events,
                    metrics,
                    reported: SfuStats::default(),
                    forwarded_pps,
                    rate_window: (Instant::now(), 0),
                    label: index.to_string(),
                    reported_overflow: 0,
                    reported_sends: SendStats::default(),
                };
                worker.run(shutdown).await;
            });
        })?;
    Ok(handle)
}

struct Worker {
    sfu: Sfu,
    socket: MediaSocket,
    /// ICE over TCP, when on.
    tcp: Option<TcpMedia>,
    /// TCP counters as last pushed to the metrics.
    reported_tcp: TcpStats,
    /// Datagrams the core produced that the socket has not taken yet, each
    /// with the arrival time of the RTP packet it is a copy of, when it is one.
    outbox: VecDeque<(Transmit, Option<Instant>)>,
    reported_at: Instant,
    commands: mpsc::UnboundedReceiver<Command>,
    events: broadcast::Sender<SfuEvent>,
    metrics: SfuMetrics,
    /// Stats as last pushed to the metrics, to add only the difference.
    reported: SfuStats,
    forwarded_pps: Arc<AtomicU64>,
    rate_window: (Instant, u64),
    /// The `worker` label of this worker's gauges.
    label: String,
    /// The socket's overflow-drop count as last pushed to the metrics.
    reported_overflow: u32,
    reported_sends: SendStats,
}

impl Worker {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let deadline = tokio::time::Instant::from_std(self.sfu.poll_timeout());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => command(&mut self.sfu, Instant::now()),
                    None => break,
                },
                readable = self.socket.readable() => {
                    if let Err(err) = readable {
                        tracing::warn!(%err, "media socket failed");
                        break;
                    }
                    self.receive();
                }
                input = recv_tcp(&mut self.tcp) => match input {
                    Some(input) => self.receive_tcp(input),
                    None => {
                        tracing::warn!("TCP media listener stopped");
                        self.tcp = None;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let now = Instant::now();
            if now >= self.sfu.poll_timeout() {
                self.sfu.handle_timeout(now);
            }
            self.flush().await;
            if now.saturating_duration_since(self.reported_at) >= REPORT_EVERY {
                self.reported_at = now;
                if let Some(tcp) = &mut self.tcp {
                    tcp.close_expired(now);
                }
                self.report(now);
            }
        }
        tracing::info!("SFU worker stopped");
    }

    /// Feed the core what is queued on the socket, a batch at a time. The
    /// media a batch brings is written to the subscribers' sessions, then
    /// each session that got some sends it all in one pass
    /// ([`Sfu::send_written`]); what that produces is sent as soon as a whole
    /// `sendmmsg` batch of it is ready, not after the turn. A batch that took
    /// long to feed is joined by one more read first ([`LOOK_AGAIN_AFTER`]).
    fn receive(&mut self) {
        // Copies are timed from the kernel's stamp of the earliest RTP packet
        // fed since the last passes, put on this thread's clock (a copy cannot
        // tell which packet it is a copy of).
        let mut earliest: Option<Instant> = None;
        let mut unsent = false;
        let mut looked_again = false;
        for _ in 0..READ_BATCHES {
            match self.socket.try_recv_batch() {
                Ok(count) => {
                    let now = Instant::now();
                    let wall = SystemTime::now();
                    for index in 0..count {
                        let (received, bytes) = self.socket.datagram(index);
                        self.sfu.handle_datagram(now, received.source, bytes);
                        if let Some(arrived) = received
                            .arrived
                            .filter(|_| crate::core::codec::is_rtp(bytes))
                        {
                            let waited = wall.duration_since(arrived).unwrap_or_default();
                            let arrived = now.checked_sub(waited).unwrap_or(now);
                            earliest = Some(earliest.map_or(arrived, |e| e.min(arrived)));
                        }
                        // What a datagram is answered with (STUN, DTLS,
                        // RTCP) is queued untimed: it is not a copy.
                        self.take_transmits(None);
                    }
                    unsent = true;
                    if count < BATCH && !looked_again && now.elapsed() >= LOOK_AGAIN_AFTER {
                        looked_again = true;
                        continue;
                    }
                    self.send_written(earliest.take());
                    unsent = false;
                    if count < BATCH {
                        return; // the queue is empty
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    tracing::debug!(%err, "recvmmsg failed");
                    break;
                }
            }
        }
        if unsent {
            self.send_written(earliest);
        }
    }

    /// One pass for each session media was written to, its output queued and
    /// sent as soon as a whole `sendmmsg` batch is ready.
    fn send_written(&mut self, earliest: Option<Instant>) {
        self.sfu.send_written(Instant::now());
        self.take_transmits(earliest);
        if self.outbox.len() >= BATCH {
            self.send_batches(BATCH);
        }
    }

    /// Feed the core a TCP input and whatever else the connections queued,
    /// up to as many as one turn of [`Worker::receive`] reads.
    fn receive_tcp(&mut self, first: TcpInput) {
        let Some(tcp) = &mut self.tcp else {
            return;
        };
        let now = Instant::now();
        let sfu = &mut self.sfu;
        let mut feed = |remote, bytes: &[u8]| sfu.handle_receive(now, Protocol::Tcp, remote, bytes);
        tcp.handle_input(first, now, &mut feed);
        for _ in 1..READ_BATCHES * BATCH {
            let Some(input) = tcp.try_recv() else {
                return;
            };
            tcp.handle_input(input, now, &mut feed);
        }
    }

    /// Move what the core has produced to the outbox (UDP) or to its TCP
    /// connection. `arrived`: these are copies of an RTP packet that arrived
    /// then (their send is timed for the forward-latency metric).
    fn take_transmits(&mut self, arrived: Option<Instant>) {
        while let Some(transmit) = self.sfu.poll_transmit() {
            match (transmit.proto, &mut self.tcp) {
                (Protocol::Udp, _) => self.outbox.push_back((transmit, arrived)),
                (_, Some(tcp)) => tcp.send(transmit.destination, transmit.contents),
                // No TCP here: nothing can have come in over it to answer.
                (_, None) => {}
            }
        }
    }

    /// Send from the outbox while at least `min` datagrams wait, without
    /// waiting; `true` when the socket buffer is full.
    fn send_batches(&mut self, min: usize) -> bool {
        while self.outbox.len() >= min.max(1) {
            let batch = self
                .outbox
                .iter()
                .map(|(t, _)| (t.destination, t.contents.as_slice()));
            match self.socket.try_send_batch(batch) {
                Ok(sent) => {
                    let at = Instant::now();
                    // The kernel always takes at least one; never spin on none.
                    for (_, arrived) in self.outbox.drain(..sent.clamp(1, self.outbox.len())) {
                        if let Some(arrived) = arrived {
                            self.metrics
                                .observe_forward_latency(at.saturating_duration_since(arrived));
                        }
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(err) => {
                    // The first datagram's destination was refused: drop it alone.
                    if let Some((transmit, _)) = self.outbox.pop_front() {
                        tracing::debug!(%err, destination = %transmit.destination, "send failed");
                    }
                }
            }
        }
        false
    }

    async fn flush(&mut self) {
        self.take_transmits(None);
        while !self.outbox.is_empty() {
            // The socket buffer is full: wait for room rather than drop.
            if self.send_batches(1) && self.socket.writable().await.is_err() {
                self.outbox.clear();
            }
        }
        while let Some(event) = self.sfu.poll_event() {
            // No listener yet is fine: signaling reads the room state on connect.
            let _ = self.events.send(event);
        }
    }

    fn report(&mut self, now: Instant) {
        let stats = self.sfu.stats().clone();
        self.metrics.add_delta(&self.reported, &stats);
        let overflow = self.socket.overflow_drops();
        // The kernel's counter is a u32 that may wrap.
        self.metrics
            .add_socket_overflow_drops(overflow.wrapping_sub(self.reported_overflow));
        self.reported_overflow = overflow;
        let sends = self.socket.send_stats();
        self.metrics.add_send_delta(&self.reported_sends, &sends);
        self.reported_sends = sends;
        if let Some(tcp) = &self.tcp {
            self.metrics.add_tcp_delta(&self.reported_tcp, &tcp.stats);
            self.metrics.set_tcp_connections(&self.label, tcp.open());
            self.reported_tcp = tcp.stats.clone();
        }
        let (since, at_start) = self.rate_window;
        let elapsed = now.saturating_duration_since(since);
        if elapsed >= Duration::from_secs(1) {
            let pps = (stats.rtp_forwarded - at_start) as f64 / elapsed.as_secs_f64();
            self.forwarded_pps.store(pps.to_bits(), Ordering::Relaxed);
            self.rate_window = (now, stats.rtp_forwarded);
            let load = self.sfu.load(pps, 0.0);
            self.metrics
                .set_load(&self.label, &load, thread_cpu_seconds());
        }
        self.reported = stats;
    }
}

/// The next input of the TCP side; never ready when ICE over TCP is off.
async fn recv_tcp(tcp: &mut Option<TcpMedia>) -> Option<TcpInput> {
    match tcp {
        Some(tcp) => tcp.recv().await,
        None => std::future::pending().await,
    }
}

/// CPU seconds this thread has used, from `/proc/thread-self/stat` (Linux);
/// `None` elsewhere. Read once a second, off the packet path.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks as f64 / 100.0)
}
