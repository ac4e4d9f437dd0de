//! The STUN USERNAME reader sees every datagram from unknown sources.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sfu::core::codec::stun_local_ufrag(data);
});
