//! What one forwarded packet costs the SFU core, without sockets or a kernel:
//! one simulcast video publisher and N receivers, str0m clients wired to the
//! core in memory on a virtual clock (the test harness), real ICE, DTLS and
//! SRTP. Only the thread CPU time spent inside the core's inputs is counted,
//! so the figure is steady on a shared machine where the load test's is not,
//! and it isolates our code and str0m from the kernel's UDP path.
//!
//! ```text
//! cargo run --release -p sfu --example forward_bench -- [receivers] [seconds] [--full] [--room-channel] [--unbatched]
//! ```
//!
//! `--full` feeds every receiver the media (decrypt, NACK, TWCC feedback and
//! the estimator); by default receivers are lean, like the load test's.
//! `--room-channel` gives every subscriber connection the room data channel;
//! by default they decline it, as the browser client does.
//! `--unbatched` makes each datagram the publisher sends a receive batch of
//! its own, as on a live socket below saturation, where the publisher's pacer
//! spaces a frame's packets; by default a frame arrives as one batch.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

fn main() {
    let mut receivers = 300usize;
    let mut seconds = 5u64;
    let mut full = false;
    let mut room_channel = false;
    let mut unbatched = false;
    let mut numbers = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--full" => full = true,
            "--room-channel" => room_channel = true,
            "--unbatched" => unbatched = true,
            other => numbers.push(other.parse::<u64>().unwrap_or_else(|_| {
                eprintln!(
                    "usage: forward_bench [receivers] [seconds] [--full] [--room-channel] [--unbatched]"
                );
                std::process::exit(2)
            })),
        }
    }
    if let Some(n) = numbers.first() {
        receivers = *n as usize;
    }
    if let Some(s) = numbers.get(1) {
        seconds = *s;
    }

    let mut world = harness::World::new();
    world.room_channel = room_channel;
    world.fanout(receivers);
    world.lean = !full;
    world.unbatched = unbatched;
    // Warm up: layer choice settles, the estimator starts.
    world.run(Duration::from_secs(2), 100);

    let before = world.sfu.stats().clone();
    let lean_at_start = world.lean_received;
    world.timing = true;
    let wall = Instant::now();
    world.run(Duration::from_secs(seconds), 100);
    let wall = wall.elapsed();
    world.timing = false;
    let after = world.sfu.stats().clone();

    let forwarded = after.rtp_forwarded - before.rtp_forwarded;
    let sent = after.datagrams_out - before.datagrams_out;
    let received = world.lean_received - lean_at_start;
    let wakeups = after.timer_wakeups - before.timer_wakeups;
    let coalesced = after.timer_wakeups_coalesced - before.timer_wakeups_coalesced;
    let cpu = world.sfu_cpu.as_secs_f64();
    println!(
        "{receivers} {} receivers{}{}, {seconds} s of media: {forwarded} packets forwarded, \
         core CPU {:.3} s -> {:.2} us per packet, {:.0} packets per core CPU-second; \
         {:.2} session wake-ups per packet ({:.2} housekeeping deferrals); {sent} datagrams sent, \
         {received} RTP packets counted by lean receivers; bench wall time {:.1} s",
        if full { "full" } else { "lean" },
        if room_channel {
            " with room channels"
        } else {
            ""
        },
        if unbatched { ", unbatched" } else { "" },
        cpu,
        cpu * 1e6 / forwarded.max(1) as f64,
        forwarded as f64 / cpu.max(1e-9),
        wakeups as f64 / forwarded.max(1) as f64,
        coalesced as f64 / forwarded.max(1) as f64,
        wall.as_secs_f64(),
    );
}
