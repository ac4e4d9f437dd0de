//! The harness cannot rot: a few seconds with a handful of participants
//! against the real platform (joining through signaling) and a lone SFU process
//! (joining through its control API), with and without injected loss, and
//! against the Janus baseline.

use std::path::PathBuf;
use std::process::Command;

/// The runs take turns: each loads the machine's two cores on its own, so that
/// one run's targets are not missed because of another's load.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(args: &[&str], out: &PathBuf) -> serde_json::Value {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let status = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .status()
        .expect("loadtest runs");
    assert!(status.success(), "loadtest exited with {status:?}");
    let text = std::fs::read_to_string(out.join("result.json")).expect("result.json written");
    assert!(out.join("report.md").is_file());
    serde_json::from_str(&text).expect("valid JSON")
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meetease-loadtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_small_simulcast_room_forwards_media_and_reports_it() {
    let out = out_dir("smoke");
    let result = run(
        &[
            "--publishers",
            "2",
            "--subscribers",
            "3",
            "--video",
            "--simulcast",
            "--duration",
            "3",
            "--warmup",
            "2",
            "--max-loss",
            "1",
            "--max-p99-ms",
            "200",
        ],
        &out,
    );
    let r = &result[0];
    assert_eq!(r["participants"], 5);
    // Everyone joined through signaling and got media: a join time each.
    assert_eq!(r["join_time"]["samples"], 5, "{r}");
    assert!(r["forwarded_packets"].as_f64().unwrap() > 500.0, "{r}");
    assert!(r["received_packets"].as_u64().unwrap() > 500, "{r}");
    assert!(
        r["sfu_cpu_seconds"].as_f64().unwrap() > 0.0,
        "CPU read from /proc"
    );
    assert!(r["forwarded_per_cpu_second"].as_f64().unwrap() > 0.0);
    // Every receiver got video (the low layer alone is ~30 packets a second).
    for s in r["subscribers"].as_array().unwrap() {
        assert!(s["received"].as_u64().unwrap() > 50, "{s}");
        assert!(
            !s["layers"].as_str().unwrap().is_empty(),
            "simulcast layers are reported: {s}"
        );
    }
    let _ = std::fs::remove_dir_all(out);
}

/// A gallery: everyone draws the others' video 180 px high and says so over
/// signaling, as the web client does. The SFU then sends only the low layer
/// and asks each publisher to pause the two above it (dynacast), and the
/// synthetic publishers do, as browsers do.
#[test]
fn a_gallery_gets_the_low_layer_and_its_publishers_pause_the_rest() {
    let out = out_dir("gallery");
    let result = run(
        &[
            "--publishers",
            "3",
            "--subscribers",
            "0",
            "--video",
            "--simulcast",
            "--tile-height",
            "180",
            "--duration",
            "3",
            // Longer than the SFU waits before pausing an unwatched layer (3 s).
            "--warmup",
            "5",
        ],
        &out,
    );
    let r = &result[0];
    assert_eq!(r["scenario"]["tile_height"], 180, "{r}");
    for s in r["subscribers"].as_array().unwrap() {
        assert!(s["received"].as_u64().unwrap() > 50, "{s}");
        assert_eq!(s["layers"], "q", "only the low layer: {s}");
    }
    // Each publisher sends audio (50 packets a second) and its low layer
    // (~31); with its 1.2 Mbit/s top layer and the middle one it would send
    // ~256 a second.
    let received = r["sfu_received_pps"].as_f64().unwrap();
    assert!(
        received > 3.0 * 60.0 && received < 3.0 * 120.0,
        "RTP packets a second into the SFU: {received}"
    );
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn injected_loss_is_repaired_by_nack_and_retransmission() {
    let out = out_dir("loss");
    let result = run(
        &[
            "--join",
            "control",
            "--publishers",
            "1",
            "--subscribers",
            "2",
            "--video",
            "--duration",
            "4",
            "--warmup",
            "2",
            "--loss",
            "5",
        ],
        &out,
    );
    let r = &result[0];
    let loss = r["loss_percent"].as_f64().unwrap();
    let audio_loss = r["audio_loss_percent"].as_f64().unwrap();
    // 5% of datagrams are dropped on the way in. Audio is not retransmitted, so
    // its loss shows the impairment is real; NACK/RTX must bring video back.
    assert!(
        audio_loss > 2.0,
        "the impairment dropped audio too ({audio_loss}%)"
    );
    assert!(loss < 0.5, "video loss after repair was {loss}%");
    assert!(r["received_packets"].as_u64().unwrap() > 300, "{r}");
    // The SFU timed its forwarded copies itself (kernel arrival → send).
    let added = &r["sfu_added_latency"];
    assert!(added["samples"].as_u64().unwrap() > 300, "{added}");
    let p99 = added["p99_ms"].as_f64().unwrap();
    assert!(p99 > 0.0 && p99 < 100.0, "{added}");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn a_missed_target_exits_non_zero() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = out_dir("target");
    let status = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "--join",
            "control",
            "--publishers",
            "1",
            "--subscribers",
            "1",
            "--duration",
            "1",
            "--warmup",
            "1",
            "--quiet",
        ])
        .args(["--min-pps-per-cpu", "1e12"])
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Targets missed"));
    let _ = std::fs::remove_dir_all(out);
}

/// The baseline cannot rot either: the same small room through Janus's
/// VideoRoom (in a namespace the harness makes and removes), reported beside
/// MeetEase in one run.
#[test]
fn the_janus_baseline_runs_side_by_side_and_cleans_up() {
    let out = out_dir("janus");
    let namespaces_before = namespaces();
    let result = run(
        &[
            "--server",
            "both",
            "--publishers",
            "2",
            "--subscribers",
            "2",
            "--video",
            "--simulcast",
            "--duration",
            "3",
            "--warmup",
            "3",
            "--max-loss",
            "2",
        ],
        &out,
    );
    let runs = result.as_array().unwrap();
    assert_eq!(runs.len(), 2, "one result per server: {result}");
    assert_eq!(runs[0]["server"], "MeetEase");
    assert_eq!(runs[1]["server"], "Janus");
    let janus = &runs[1];
    assert_eq!(janus["participants"], 4);
    assert!(janus["sfu_cpu_seconds"].as_f64().unwrap() > 0.0, "{janus}");
    assert!(
        janus["forwarded_packets"].as_f64().unwrap() > 300.0,
        "{janus}"
    );
    // Every receiver got video and audio from Janus, with the payload intact
    // (the latency comes from the send timestamp inside it).
    for s in janus["subscribers"].as_array().unwrap() {
        assert!(s["received"].as_u64().unwrap() > 50, "{s}");
    }
    assert!(
        janus["latency"]["p50_ms"].as_f64().unwrap() > 0.0,
        "{janus}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| Janus |"), "{report}");
    // Janus was stopped and its namespace removed.
    assert_eq!(namespaces(), namespaces_before);
    let _ = std::fs::remove_dir_all(out);
}

fn namespaces() -> Vec<String> {
    let listed = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip runs");
    let mut names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.starts_with("meetease-lt-"))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// Churn: receivers leave during the window (signaling is told) and newcomers
/// join the room through signaling and get media.
#[test]
fn churn_replaces_receivers_during_the_window() {
    let out = out_dir("churn");
    let result = run(
        &[
            "--publishers",
            "1",
            "--subscribers",
            "2",
            "--video",
            "--churn",
            "1",
            "--duration",
            "3",
            "--warmup",
            "2",
        ],
        &out,
    );
    let r = &result[0];
    assert_eq!(r["churned"], 3, "{r}");
    assert_eq!(r["participants"], 3 + 3, "{r}");
    // The newcomers got media too: a join time for every receiver that ever joined
    // (the publisher receives nothing in a one-publisher room).
    assert_eq!(r["join_time"]["samples"], 5, "{r}");
    let _ = std::fs::remove_dir_all(out);
}
