//! Turning measurements into `result.json`, `report.md` and an SVG chart.

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
    pub video_kbps: u64,
    pub duration_s: u64,
    pub loss_percent: f64,
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub bandwidth_kbps: Option<u64>,
    /// Receivers read clear RTP headers only (see `--lean-receivers`).
    pub lean_receivers: bool,
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
    pub timeline: Vec<Sample>,
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
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// The server under test: `MeetEase` or `Janus`.
    pub server: String,
    pub scenario: Scenario,
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
    pub join_time: Percentiles,
    pub sfu_rss_mib: f64,
    pub memory_per_participant_kib: f64,
    pub keyframe_requests: Option<f64>,
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
        });
    }
    let window_s = measured.window.as_secs_f64();
    let count = participants.len().max(1);
    RunResult {
        server: server.to_owned(),
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
        join_time: Percentiles::of(&joins, true),
        sfu_rss_mib: measured.rss_end as f64 / 1048576.0,
        memory_per_participant_kib: measured.rss_joined.saturating_sub(measured.rss_before) as f64
            / 1024.0
            / count as f64,
        keyframe_requests: measured.keyframe_requests,
        subscribers,
        timeline: measured.timeline,
    }
}

pub fn one_line(r: &RunResult) -> String {
    format!(
        "{} {}: {} rooms × ({} pub + {} sub){}: {:.0} pkt/s forwarded, {:.2} SFU CPU-s → {:.0} pkt per CPU-s; video loss {:.3}% (audio {:.3}%), latency p50 {:.2} ms p99 {:.2} ms, join p50 {:.0} ms, {:.0} KiB/participant",
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
        r.join_time.p50_ms,
        r.memory_per_participant_kib,
    )
}

/// Write `result.json`, `report.md` and `throughput.svg` under `dir`.
pub fn write(dir: &Path, results: &[RunResult], missed: &[String]) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("result.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    let mut md = String::from("# MeetEase load test\n\n");
    md.push_str("| server | scenario | participants | forwarded pkt/s | SFU CPU-s | pkt per SFU CPU-s | video / audio loss | latency p50 / p99 | join p50 / p99 | freezes | KiB per participant |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in results {
        md.push_str(&format!(
            "| {} | {} ({} × {}+{}{}) | {} | {:.0} | {:.2} | {:.0} | {:.3}% / {:.3}% | {:.2} / {:.2} ms | {:.0} / {:.0} ms | {} | {:.0} |\n",
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
    if let Some(last) = results.last() {
        md.push_str("\n![throughput and SFU CPU over time](throughput.svg)\n");
        std::fs::write(dir.join("throughput.svg"), timeline_svg(&last.timeline))?;
    }
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}

/// A small dependency-free SVG line chart: forwarded pkt/s and SFU CPU % per second.
fn timeline_svg(samples: &[Sample]) -> String {
    let (w, h, pad) = (640.0, 240.0, 40.0);
    let max_pps = samples.iter().map(|s| s.forwarded_pps).fold(1.0, f64::max);
    let max_t = samples.last().map_or(1.0, |s| s.t_s.max(1.0));
    let x = |t: f64| pad + (t / max_t) * (w - 2.0 * pad);
    let line = |value: &dyn Fn(&Sample) -> f64, max: f64| -> String {
        samples
            .iter()
            .map(|s| {
                format!(
                    "{:.1},{:.1}",
                    x(s.t_s),
                    h - pad - (value(s) / max) * (h - 2.0 * pad)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="#888"/>
<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{pps}"/>
<polyline fill="none" stroke="#d1242f" stroke-width="2" points="{cpu}"/>
<text x="{pad}" y="20" fill="#1f6feb">forwarded pkt/s (max {max_pps:.0})</text>
<text x="{half}" y="20" fill="#d1242f">SFU CPU % (0–100 scale)</text>
<text x="{r}" y="{label}" text-anchor="end">{max_t:.0} s</text>
</svg>
"##,
        b = h - pad,
        r = w - pad,
        half = w / 2.0,
        label = h - 10.0,
        pps = line(&|s: &Sample| s.forwarded_pps, max_pps),
        cpu = line(&|s: &Sample| s.sfu_cpu_percent.min(100.0), 100.0),
    )
}
