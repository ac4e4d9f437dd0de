//! Whole datagrams into a live SFU core with one session: nothing may panic,
//! whatever arrives, from a known or an unknown address.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu::core::{Sfu, SfuConfig};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let addr = "127.0.0.1:10000".parse().unwrap();
    let mut sfu = Sfu::new(
        SfuConfig {
            local_addr: addr,
            candidate_addr: addr,
            disconnect_grace: Duration::from_secs(5),
            ice_tcp: false,
        },
        now,
    );
    let from = "127.0.0.2:5000".parse().unwrap();
    sfu.handle_datagram(now, from, data);
    sfu.handle_timeout(now + Duration::from_millis(10));
    while sfu.poll_transmit().is_some() {}
    while sfu.poll_event().is_some() {}
});
