//! The SFU's Prometheus metrics, fed from the core's counters by the worker.

use crate::core::SfuStats;
use crate::tcp::TcpStats;
use crate::udp::SendStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use proto::sfu::NodeLoad;
use servicekit::metrics::Metrics;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Default)]
pub struct SfuMetrics {
    datagrams_in: Counter,
    bytes_in: Counter,
    datagrams_out: Counter,
    bytes_out: Counter,
    malformed: Counter,
    unknown: Counter,
    rtp_in: Counter,
    rtp_forwarded: Counter,
    rtp_dropped: Counter,
    keyframe_requests: Counter,
    layer_switches: Counter,
    data_relayed: Counter,
    sessions_failed: Counter,
    timer_wakeups: Counter,
    timer_wakeups_coalesced: Counter,
    data_dropped: Counter,
    tcp_accepted: Counter,
    tcp_refused: Counter,
    tcp_bad_framing: Counter,
    tcp_timed_out: Counter,
    tcp_frames_dropped: Counter,
    socket_overflow_drops: Counter,
    udp_send_calls: Counter,
    udp_gso_datagrams: Counter,
    tcp_connections: Family<WorkerLabel, Gauge>,
    rooms: Family<WorkerLabel, Gauge>,
    participants: Family<WorkerLabel, Gauge>,
    tracks: Family<WorkerLabel, Gauge>,
    forwarded_pps: Family<WorkerLabel, Gauge<f64, AtomicU64>>,
    worker_cpu: Family<WorkerLabel, Gauge<f64, AtomicU64>>,
    forward_latency: ForwardLatency,
}

/// How long each forwarded copy of an incoming RTP packet spent in the SFU:
/// from the kernel's receive timestamp of the incoming datagram to the
/// moment `sendmmsg` took the copy. This is the SFU's added latency,
/// measured where it happens, not through a load generator sharing the CPU.
/// Copies a session's pacer held back and sent on a later timer are not
/// counted (they are not tied to their incoming packet any more).
#[derive(Clone)]
struct ForwardLatency(Histogram);

impl Default for ForwardLatency {
    fn default() -> Self {
        ForwardLatency(Histogram::new(FORWARD_LATENCY_BUCKETS.iter().copied()))
    }
}

/// Fine below the 2 ms goal, coarse above it.
const FORWARD_LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_5, 0.000_75, 0.001, 0.001_5, 0.002, 0.003, 0.005,
    0.007_5, 0.01, 0.02, 0.05, 0.1,
];

/// Per-worker gauges carry the worker's index.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    worker: String,
}

impl SfuMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self::default();
        let counters: [(&str, &str, &Counter); 16] = [
            (
                "sfu_datagrams_received",
                "UDP datagrams received on the media port",
                &m.datagrams_in,
            ),
            (
                "sfu_received_bytes",
                "Bytes received on the media port",
                &m.bytes_in,
            ),
            (
                "sfu_datagrams_sent",
                "UDP datagrams sent from the media port",
                &m.datagrams_out,
            ),
            (
                "sfu_sent_bytes",
                "Bytes sent from the media port",
                &m.bytes_out,
            ),
            (
                "sfu_malformed_datagrams",
                "Datagrams that were not STUN, DTLS, RTP or RTCP (dropped)",
                &m.malformed,
            ),
            (
                "sfu_unknown_datagrams",
                "Datagrams that belonged to no session (dropped)",
                &m.unknown,
            ),
            (
                "sfu_rtp_received",
                "RTP packets received from publishers",
                &m.rtp_in,
            ),
            (
                "sfu_rtp_forwarded",
                "RTP packets forwarded to subscribers",
                &m.rtp_forwarded,
            ),
            (
                "sfu_rtp_dropped",
                "RTP packets dropped (unknown stream, no codec match)",
                &m.rtp_dropped,
            ),
            (
                "sfu_keyframe_requests",
                "Keyframe requests (PLI) sent to publishers",
                &m.keyframe_requests,
            ),
            (
                "sfu_layer_switches",
                "Simulcast layer switches towards subscribers",
                &m.layer_switches,
            ),
            (
                "sfu_data_messages_relayed",
                "Data-channel messages relayed to the room",
                &m.data_relayed,
            ),
            (
                "sfu_sessions_failed",
                "Participant sessions closed by an error or timeout",
                &m.sessions_failed,
            ),
            (
                "sfu_timer_wakeups",
                "Session timers served",
                &m.timer_wakeups,
            ),
            (
                "sfu_timer_wakeups_coalesced",
                "Subscriber housekeeping wake-ups put off to run at most every 10 ms",
                &m.timer_wakeups_coalesced,
            ),
            (
                "sfu_data_messages_dropped",
                "Data-channel messages not relayed (binary, not UTF-8 or too large)",
                &m.data_dropped,
            ),
        ];
        let tcp_counters: [(&str, &str, &Counter); 5] = [
            (
                "sfu_tcp_connections_accepted",
                "ICE-over-TCP media connections accepted",
                &m.tcp_accepted,
            ),
            (
                "sfu_tcp_connections_refused",
                "ICE-over-TCP connections closed at once: the worker's limit was reached",
                &m.tcp_refused,
            ),
            (
                "sfu_tcp_connections_bad_framing",
                "ICE-over-TCP connections closed for a malformed RFC 4571 frame",
                &m.tcp_bad_framing,
            ),
            (
                "sfu_tcp_connections_timed_out",
                "ICE-over-TCP connections closed because no session took their frames in time",
                &m.tcp_timed_out,
            ),
            (
                "sfu_tcp_frames_dropped",
                "Frames to a TCP client dropped: its connection was gone or its queue full",
                &m.tcp_frames_dropped,
            ),
        ];
        metrics.register(
            "sfu_udp_receive_buffer_drops",
            "Datagrams the kernel dropped on a media socket whose receive buffer was full \
             (raise SFU_SOCKET_BUFFER_BYTES and net.core.rmem_max if this grows)",
            m.socket_overflow_drops.clone(),
        );
        metrics.register(
            "sfu_udp_send_calls",
            "System calls that sent media-socket datagrams (sendmmsg, or sendmsg of a GSO run)",
            m.udp_send_calls.clone(),
        );
        metrics.register(
            "sfu_udp_gso_datagrams",
            "Datagrams sent as segments of GSO runs (one destination, one call)",
            m.udp_gso_datagrams.clone(),
        );
        for (name, help, counter) in counters.into_iter().chain(tcp_counters) {
            metrics.register(name, help, counter.clone());
        }
        metrics.register(
            "sfu_tcp_connections",
            "ICE-over-TCP media connections open",
            m.tcp_connections.clone(),
        );
        metrics.register("sfu_rooms", "Rooms on this node", m.rooms.clone());
        metrics.register(
            "sfu_participants",
            "Participants on this node",
            m.participants.clone(),
        );
        metrics.register(
            "sfu_tracks",
            "Published tracks on this node",
            m.tracks.clone(),
        );
        metrics.register(
            "sfu_forwarded_packets_per_second",
            "Forwarded RTP packets per second over the last second",
            m.forwarded_pps.clone(),
        );
        metrics.register(
            "sfu_worker_cpu_seconds",
            "CPU seconds used by each media worker thread",
            m.worker_cpu.clone(),
        );
        metrics.register(
            "sfu_forward_latency_seconds",
            "Time from an RTP datagram's arrival (kernel timestamp) to each forwarded copy's send",
            m.forward_latency.0.clone(),
        );
        m
    }

    /// One forwarded copy left `latency` after its packet arrived.
    pub fn observe_forward_latency(&self, latency: std::time::Duration) {
        self.forward_latency.0.observe(latency.as_secs_f64());
    }

    pub fn add_delta(&self, before: &SfuStats, now: &SfuStats) {
        let add = |c: &Counter, a: u64, b: u64| {
            if b > a {
                c.inc_by(b - a);
            }
        };
        add(&self.datagrams_in, before.datagrams_in, now.datagrams_in);
        add(&self.bytes_in, before.bytes_in, now.bytes_in);
        add(&self.datagrams_out, before.datagrams_out, now.datagrams_out);
        add(&self.bytes_out, before.bytes_out, now.bytes_out);
        add(
            &self.malformed,
            before.malformed_datagrams,
            now.malformed_datagrams,
        );
        add(
            &self.unknown,
            before.unknown_datagrams,
            now.unknown_datagrams,
        );
        add(&self.rtp_in, before.rtp_in, now.rtp_in);
        add(&self.rtp_forwarded, before.rtp_forwarded, now.rtp_forwarded);
        add(&self.rtp_dropped, before.rtp_dropped, now.rtp_dropped);
        add(
            &self.keyframe_requests,
            before.keyframe_requests,
            now.keyframe_requests,
        );
        add(
            &self.layer_switches,
            before.layer_switches,
            now.layer_switches,
        );
        add(
            &self.data_relayed,
            before.data_messages_relayed,
            now.data_messages_relayed,
        );
        add(
            &self.sessions_failed,
            before.sessions_failed,
            now.sessions_failed,
        );
        add(&self.timer_wakeups, before.timer_wakeups, now.timer_wakeups);
        add(
            &self.timer_wakeups_coalesced,
            before.timer_wakeups_coalesced,
            now.timer_wakeups_coalesced,
        );
        add(
            &self.data_dropped,
            before.data_messages_dropped,
            now.data_messages_dropped,
        );
    }

    pub fn add_tcp_delta(&self, before: &TcpStats, now: &TcpStats) {
        let add = |c: &Counter, a: u64, b: u64| {
            if b > a {
                c.inc_by(b - a);
            }
        };
        add(&self.tcp_accepted, before.accepted, now.accepted);
        add(&self.tcp_refused, before.refused, now.refused);
        add(&self.tcp_bad_framing, before.bad_framing, now.bad_framing);
        add(&self.tcp_timed_out, before.timed_out, now.timed_out);
        add(
            &self.tcp_frames_dropped,
            before.frames_dropped,
            now.frames_dropped,
        );
    }

    /// `dropped` more datagrams were lost on a full media socket buffer.
    pub fn add_socket_overflow_drops(&self, dropped: u32) {
        self.socket_overflow_drops.inc_by(u64::from(dropped));
    }

    /// The media socket's sending since the last report.
    pub fn add_send_delta(&self, before: &SendStats, now: &SendStats) {
        self.udp_send_calls
            .inc_by(now.calls.saturating_sub(before.calls));
        self.udp_gso_datagrams
            .inc_by(now.gso_datagrams.saturating_sub(before.gso_datagrams));
    }

    pub fn set_tcp_connections(&self, worker: &str, open: usize) {
        let label = WorkerLabel {
            worker: worker.to_owned(),
        };
        self.tcp_connections
            .get_or_create(&label)
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    pub fn set_load(&self, worker: &str, load: &NodeLoad, cpu_seconds: Option<f64>) {
        let label = WorkerLabel {
            worker: worker.to_owned(),
        };
        self.rooms.get_or_create(&label).set(i64::from(load.rooms));
        self.participants
            .get_or_create(&label)
            .set(i64::from(load.participants));
        self.tracks
            .get_or_create(&label)
            .set(i64::from(load.tracks));
        self.forwarded_pps
            .get_or_create(&label)
            .set(load.forwarded_pps);
        if let Some(cpu) = cpu_seconds {
            self.worker_cpu.get_or_create(&label).set(cpu);
        }
    }
}
