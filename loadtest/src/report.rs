//! Turning measurements into `result.json`, `report.md` and PNG charts.

use crate::chart;
use crate::stats::{ParticipantReport, Percentiles, latency_histogram};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub rooms: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub video: bool,
    pub simulcast: bool,
    pub screen_share: bool,
    /// Receivers replaced each second of the window.
    pub churn_per_second: usize,
    pub video_kbps: u64,
    /// A video frame's packets are sent back to back (see `--frame-bursts`).
    pub frame_bursts: bool,
    /// Publishers pause the layers the SFU says nobody watches, as browsers
    /// do (dynacast; off with `--ignore-publisher-layers`).
    pub publisher_layers: bool,
    /// Every remote video is drawn this high (see `--tile-height`).
    pub tile_height: Option<u32>,
    pub duration_s: u64,
    pub loss_percent: f64,
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub bandwidth_kbps: Option<u64>,
    /// Receivers read clear RTP headers only (see `--lean-receivers`).
    pub lean_receivers: bool,
    /// Clients open data channels (see `--data-channels`).
    pub data_channels: bool,
    /// The server had CPU 0 to itself, the load generator the rest (`--pin-cores`).
    pub pin_cores: bool,
}

/// One second of the measured window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub forwarded_pps: f64,
    pub sfu_cpu_percent: f64,
    pub received_pps: f64,
}

/// What the orchestrator measured around the window.
pub struct Measured {
    /// Receivers that left (and were replaced) during the window.
    pub churned: usize,
    pub window: Duration,
    pub sfu_cpu_s: f64,
    pub worker_cpu_s: f64,
    pub forwarded: f64,
    pub received: u64,
    pub rss_before: u64,
    pub rss_joined: u64,
    pub rss_end: u64,
    /// Keyframe requests the server sent publishers (`None`: it does not count them).
    pub keyframe_requests: Option<f64>,
    /// The SFU's own measure of the latency it adds (`None`: it has none).
    pub sfu_added_latency: Option<Percentiles>,
    /// Datagrams the kernel dropped on the SFU's full media socket since it
    /// started, joins included (`None`: the server does not say).
    pub socket_drops: Option<f64>,
    /// What the SFU's sending did in the window (`None`: it does not say).
    pub sending: Option<Sending>,
    pub timeline: Vec<Sample>,
}

/// The SFU's sending counters (cumulative as read, or a window's difference).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sending {
    /// Session passes (`meetease_sfu_timer_wakeups_total`: each runs a
    /// subscriber's or publisher's `Rtc` once).
    pub passes: f64,
    pub datagrams: f64,
    /// `sendmmsg`/`sendmsg` calls.
    pub send_calls: f64,
    /// Datagrams sent as segments of GSO runs.
    pub gso_datagrams: f64,
    /// RTP packets received from publishers (`meetease_sfu_rtp_received_total`).
    pub rtp_received: f64,
}

impl Sending {
    /// What happened between `before` and these counters.
    pub fn since(&self, before: &Sending) -> Sending {
        Sending {
            passes: self.passes - before.passes,
            datagrams: self.datagrams - before.datagrams,
            send_calls: self.send_calls - before.send_calls,
            gso_datagrams: self.gso_datagrams - before.gso_datagrams,
            rtp_received: self.rtp_received - before.rtp_received,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriberSummary {
    pub index: usize,
    /// Video packets received.
    pub received: u64,
    pub loss_percent: f64,
    pub freezes: u32,
    pub video_kbps: f64,
    /// Simulcast layers received (by RID letter).
    pub layers: String,
    /// NACKs and PLIs this receiver sent and its largest jitter (full receivers only).
    pub feedback: Option<crate::stats::Feedback>,
    /// From the start of joining to this participant's first media packet.
    pub join_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyBucket {
    pub upper_ms: f64,
    pub packets: u64,
}

/// Bucket bounds for the latency histogram, milliseconds (the last is open).
const LATENCY_BOUNDS_MS: [f64; 12] = [
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0,
];

fn latency_buckets(latency: &hdrhistogram::Histogram<u64>) -> Vec<LatencyBucket> {
    let mut low = 0u64;
    let mut buckets = Vec::new();
    for upper_ms in LATENCY_BOUNDS_MS {
        let high = (upper_ms * 1000.0) as u64;
        buckets.push(LatencyBucket {
            upper_ms,
            packets: latency.count_between(low, high.saturating_sub(1)),
        });
        low = high;
    }
    buckets.push(LatencyBucket {
        upper_ms: f64::INFINITY,
        packets: latency.count_between(low, latency.max().max(low)),
    });
    buckets
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// The server under test: `MeetEase` or `Janus`.
    pub server: String,
    pub scenario: Scenario,
    /// Receivers that left and were replaced during the window.
    pub churned: usize,
    pub participants: usize,
    pub window_s: f64,
    pub received_packets: u64,
    pub forwarded_packets: f64,
    pub forwarded_pps: f64,
    pub sfu_cpu_seconds: f64,
    pub sfu_worker_cpu_seconds: f64,
    /// Forwarded RTP packets per second of SFU process CPU time.
    pub forwarded_per_cpu_second: f64,
    /// Video packets missing at the receivers after repair (NACK/RTX), percent.
    pub loss_percent: f64,
    /// Audio packets missing at the receivers (audio is not retransmitted), percent.
    pub audio_loss_percent: f64,
    pub freezes: u32,
    /// End to end on loopback, publisher send → subscriber receive, through the SFU.
    pub latency: Percentiles,
    /// Measured inside the SFU (MeetEase only): from the kernel's arrival
    /// stamp of an incoming RTP datagram to each forwarded copy's `sendmmsg`,
    /// so the load generator's share of the CPU is not in it.
    pub sfu_added_latency: Option<Percentiles>,
    /// End-to-end latency histogram: packets per bucket, buckets bounded above by `upper_ms`.
    pub latency_histogram: Vec<LatencyBucket>,
    pub join_time: Percentiles,
    pub sfu_rss_mib: f64,
    pub memory_per_participant_kib: f64,
    pub keyframe_requests: Option<f64>,
    /// Datagrams the kernel dropped on the SFU's full media socket, joins
    /// included (MeetEase only).
    pub sfu_socket_drops: Option<f64>,
    /// Session passes per forwarded packet in the window: how much of the
    /// forwarding shared a pass (MeetEase only).
    pub sfu_passes_per_packet: Option<f64>,
    /// Datagrams per send system call, and the share of datagrams that went
    /// in GSO runs, in the window (MeetEase only).
    pub sfu_datagrams_per_send_call: Option<f64>,
    pub sfu_gso_share: Option<f64>,
    /// RTP packets a second the SFU received from publishers in the window
    /// (MeetEase only): layers paused by dynacast are not among them.
    pub sfu_received_pps: Option<f64>,
    /// NACKs and PLIs all receivers sent in the window, and the largest jitter
    /// any of them saw (full receivers only).
    pub nacks_sent: Option<u64>,
    pub plis_sent: Option<u64>,
    pub jitter_ms_max: Option<f64>,
    pub subscribers: Vec<SubscriberSummary>,
    pub timeline: Vec<Sample>,
}

pub fn summarise(
    scenario: Scenario,
    server: &str,
    participants: Vec<ParticipantReport>,
    measured: Measured,
) -> RunResult {
    let mut latency = latency_histogram();
    let mut joins = latency_histogram();
    let (mut received, mut expected, mut freezes) = (0u64, 0u64, 0u32);
    let (mut audio_received, mut audio_expected) = (0u64, 0u64);
    let mut subscribers = Vec::new();
    for p in &participants {
        if let Some(join) = p.join_time {
            let _ = joins.record((join.as_micros() as u64).max(1));
        }
        let (mut r, mut e, mut f, mut kbps) = (0u64, 0u64, 0u32, 0.0);
        let mut layers = String::new();
        for t in &p.tracks {
            let _ = latency.add(&t.latency);
            if t.layer == 'a' {
                // Audio is not retransmitted (Opus conceals loss): counted apart.
                audio_received += t.received;
                audio_expected += t.expected;
                continue;
            }
            r += t.received;
            e += t.expected;
            f += t.freezes;
            kbps += t.bytes as f64 * 8.0 / 1000.0 / measured.window.as_secs_f64().max(1e-9);
            if t.layer != '-' && !layers.contains(t.layer) {
                layers.push(t.layer);
            }
        }
        received += r;
        expected += e;
        freezes += f;
        subscribers.push(SubscriberSummary {
            index: p.index,
            received: r,
            loss_percent: if e > 0 {
                (1.0 - r as f64 / e as f64) * 100.0
            } else {
                0.0
            },
            freezes: f,
            video_kbps: kbps,
            layers,
            feedback: p.feedback,
            join_ms: p.join_time.map(|t| t.as_secs_f64() * 1000.0),
        });
    }
    let window_s = measured.window.as_secs_f64();
    let count = participants.len().max(1);
    RunResult {
        server: server.to_owned(),
        churned: measured.churned,
        scenario,
        participants: participants.len(),
        window_s,
        received_packets: measured.received,
        forwarded_packets: measured.forwarded,
        forwarded_pps: measured.forwarded / window_s.max(1e-9),
        sfu_cpu_seconds: measured.sfu_cpu_s,
        sfu_worker_cpu_seconds: measured.worker_cpu_s,
        forwarded_per_cpu_second: if measured.sfu_cpu_s > 0.0 {
            measured.forwarded / measured.sfu_cpu_s
        } else {
            0.0
        },
        loss_percent: if expected > 0 {
            (1.0 - received as f64 / expected as f64) * 100.0
        } else {
            0.0
        },
        audio_loss_percent: if audio_expected > 0 {
            (1.0 - audio_received as f64 / audio_expected as f64) * 100.0
        } else {
            0.0
        },
        freezes,
        latency: Percentiles::of(&latency, true),
        latency_histogram: latency_buckets(&latency),
        join_time: Percentiles::of(&joins, true),
        sfu_rss_mib: measured.rss_end as f64 / 1048576.0,
        memory_per_participant_kib: measured.rss_joined.saturating_sub(measured.rss_before) as f64
            / 1024.0
            / count as f64,
        keyframe_requests: measured.keyframe_requests,
        sfu_socket_drops: measured.socket_drops,
        sfu_passes_per_packet: measured
            .sending
            .filter(|_| measured.forwarded > 0.0)
            .map(|s| s.passes / measured.forwarded),
        sfu_datagrams_per_send_call: measured
            .sending
            .filter(|s| s.send_calls > 0.0)
            .map(|s| s.datagrams / s.send_calls),
        sfu_gso_share: measured
            .sending
            .filter(|s| s.datagrams > 0.0)
            .map(|s| s.gso_datagrams / s.datagrams),
        sfu_received_pps: measured
            .sending
            .map(|s| s.rtp_received / window_s.max(1e-9)),
        sfu_added_latency: measured.sfu_added_latency,
        nacks_sent: feedback_total(&subscribers, |f| f.nacks),
        plis_sent: feedback_total(&subscribers, |f| f.plis),
        jitter_ms_max: subscribers
            .iter()
            .filter_map(|s| s.feedback.map(|f| f.jitter_ms))
            .reduce(f64::max),
        subscribers,
        timeline: measured.timeline,
    }
}

fn feedback_total(
    subscribers: &[SubscriberSummary],
    count: impl Fn(&crate::stats::Feedback) -> u64,
) -> Option<u64> {
    subscribers
        .iter()
        .filter_map(|s| s.feedback.as_ref().map(&count))
        .reduce(|a, b| a + b)
}

pub fn one_line(r: &RunResult) -> String {
    format!(
        "{} {}: {} rooms × ({} pub + {} sub){}: {:.0} pkt/s forwarded, {:.2} SFU CPU-s → {:.0} pkt per CPU-s; video loss {:.3}% (audio {:.3}%), latency p50 {:.2} ms p99 {:.2} ms{}, join p50 {:.0} ms p99 {:.0} ms, {:.0} KiB/participant{}{}",
        r.server,
        r.scenario.name,
        r.scenario.rooms,
        r.scenario.publishers,
        r.scenario.subscribers,
        if r.scenario.video {
            if r.scenario.simulcast {
                " video+simulcast"
            } else {
                " video"
            }
        } else {
            " audio"
        },
        r.forwarded_pps,
        r.sfu_cpu_seconds,
        r.forwarded_per_cpu_second,
        r.loss_percent,
        r.audio_loss_percent,
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.sfu_added_latency.map_or(String::new(), |l| format!(
            " (SFU-added p50 {:.2} ms p99 {:.2} ms)",
            l.p50_ms, l.p99_ms
        )),
        r.join_time.p50_ms,
        r.join_time.p99_ms,
        r.memory_per_participant_kib,
        r.sfu_socket_drops
            .filter(|d| *d > 0.0)
            .map_or(String::new(), |d| format!(
                ", {d:.0} datagrams dropped on the SFU's full socket"
            )),
        sending_line(r),
    )
}

/// The SFU's sending, when it says: passes per packet, GSO share, batching,
/// and what it received.
fn sending_line(r: &RunResult) -> String {
    match (
        r.sfu_passes_per_packet,
        r.sfu_gso_share,
        r.sfu_datagrams_per_send_call,
    ) {
        (Some(passes), Some(gso), Some(per_call)) => {
            format!(
                "; {passes:.2} session passes per forwarded packet, {:.0}% of datagrams in GSO runs, {per_call:.1} datagrams per send call",
                gso * 100.0
            ) + &r.sfu_received_pps.map_or(String::new(), |pps| {
                format!(", {pps:.0} RTP packets/s in from publishers")
            })
        }
        _ => String::new(),
    }
}

/// Write `result.json`, `report.md` and `throughput.svg` under `dir`.
pub fn write(dir: &Path, results: &[RunResult], missed: &[String]) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("result.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    let mut md = String::from("# MeetEase load test\n\n");
    md.push_str("| server | scenario | participants | forwarded pkt/s | SFU CPU-s | pkt per SFU CPU-s | video / audio loss | latency p50 / p99 | join p50 / p99 | freezes | NACK / PLI sent | max jitter | KiB per participant |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in results {
        md.push_str(&format!(
            "| {} | {} ({} × {}+{}{}) | {} | {:.0} | {:.2} | {:.0} | {:.3}% / {:.3}% | {:.2} / {:.2} ms | {:.0} / {:.0} ms | {} | {} / {} | {} | {:.0} |\n",
            r.server,
            r.scenario.name,
            r.scenario.rooms,
            r.scenario.publishers,
            r.scenario.subscribers,
            if r.scenario.simulcast { ", simulcast" } else if r.scenario.video { ", video" } else { ", audio" },
            r.participants,
            r.forwarded_pps,
            r.sfu_cpu_seconds,
            r.forwarded_per_cpu_second,
            r.loss_percent,
            r.audio_loss_percent,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.join_time.p50_ms,
            r.join_time.p99_ms,
            r.freezes,
            r.nacks_sent.map_or("—".to_owned(), |n| n.to_string()),
            r.plis_sent.map_or("—".to_owned(), |n| n.to_string()),
            r.jitter_ms_max
                .map_or("—".to_owned(), |j| format!("{j:.1} ms")),
            r.memory_per_participant_kib,
        ));
    }
    if missed.is_empty() {
        md.push_str("\nEvery target given held.\n");
    } else {
        md.push_str("\nTargets missed:\n");
        for m in missed {
            md.push_str(&format!("- {m}\n"));
        }
    }
    // Charts for the last run of each server (the heaviest step of a ramp).
    let mut servers: Vec<&str> = results.iter().map(|r| r.server.as_str()).collect();
    servers.dedup();
    for server in servers {
        let Some(last) = results.iter().rev().find(|r| r.server == server) else {
            continue;
        };
        md.push_str(&charts(dir, last)?);
    }
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}

/// Write the three PNG charts of one run; returns the Markdown that shows them.
fn charts(dir: &Path, r: &RunResult) -> anyhow::Result<String> {
    let prefix = r.server.to_ascii_lowercase();
    let (throughput, latency, loss) = (
        format!("{prefix}-throughput.png"),
        format!("{prefix}-latency.png"),
        format!("{prefix}-loss.png"),
    );
    let pps: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .map(|s| (s.t_s, s.forwarded_pps))
        .collect();
    let cpu: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .map(|s| (s.t_s, s.sfu_cpu_percent))
        .collect();
    let max_pps = pps.iter().map(|p| p.1).fold(1.0, f64::max);
    let max_cpu = cpu.iter().map(|p| p.1).fold(100.0, f64::max);
    chart::lines(
        &dir.join(&throughput),
        &[(chart::BLUE, pps, max_pps), (chart::RED, cpu, max_cpu)],
        "s",
    )?;
    let counts: Vec<f64> = r
        .latency_histogram
        .iter()
        .map(|b| b.packets as f64)
        .collect();
    chart::bars(&dir.join(&latency), &counts, chart::GREEN, ("0.1", "500"))?;
    let losses: Vec<f64> = r.subscribers.iter().map(|s| s.loss_percent).collect();
    let last = r.subscribers.len().saturating_sub(1).to_string();
    chart::bars(&dir.join(&loss), &losses, chart::RED, ("0", &last))?;
    let name = &r.server;
    Ok(format!(
        "\n### {name}: {scenario}, {subs} subscribers per room\n\n\
         Forwarded packets per second (blue, axis max on the left, top) and server CPU as % of one core \
         (red, second number) over the measured window:\n\n![{name} throughput and CPU]({throughput})\n\n\
         End-to-end latency histogram: packets per bucket, buckets ≤0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, \
         200, 500 ms and above:\n\n![{name} latency histogram]({latency})\n\n\
         Video loss after repair per receiver, percent, in join order:\n\n![{name} loss per subscriber]({loss})\n",
        scenario = r.scenario.name,
        subs = r.scenario.subscribers,
    ))
}
