//! What a participant joining a meeting costs the SFU core, by meeting size:
//! the session calls (`create_session`, then the subscriber answers to the
//! renegotiation every participant already in the room gets) and the core's
//! input work until everyone is connected again. str0m clients wired to the
//! core in memory on a virtual clock (the test harness), every participant
//! publishing Opus and three simulcast VP8 layers, offering every VP8, H.264
//! and VP9 configuration and declining the room data channel as a browser
//! running the web client does.
//!
//! ```text
//! cargo run --release -p sfu --example join_bench -- [participants]
//! ```

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::Duration;

fn main() {
    let participants: usize = std::env::args()
        .nth(1)
        .map(|n| {
            n.parse().unwrap_or_else(|_| {
                eprintln!("usage: join_bench [participants]");
                std::process::exit(2)
            })
        })
        .unwrap_or(25);
    let mut world = harness::World::new();
    world.room_channel = false;
    world.lean = true;
    world.timing = true;
    println!("joiner | session calls ms | subscriber offers | core input ms until connected");
    let mut total_control = Duration::ZERO;
    for k in 1..=participants {
        let control0 = world.control_cpu;
        let input0 = world.sfu_cpu;
        let offers0 = offer_count(&world);
        world.join("meeting", true, true);
        world.connect_all();
        // Let the renegotiations it set off settle.
        world.run(Duration::from_millis(100), 100);
        let control = world.control_cpu - control0;
        total_control += control;
        println!(
            "{k:>6} | {:>16.2} | {:>17} | {:>.2}",
            control.as_secs_f64() * 1e3,
            offer_count(&world) - offers0,
            (world.sfu_cpu - input0).as_secs_f64() * 1e3,
        );
    }
    println!(
        "session calls for {participants} joins: {:.1} ms of core CPU",
        total_control.as_secs_f64() * 1e3
    );
}

fn offer_count(world: &harness::World) -> usize {
    world
        .events
        .iter()
        .filter(|e| matches!(e, proto::sfu::SfuEvent::SubscriberOffer { .. }))
        .count()
}
