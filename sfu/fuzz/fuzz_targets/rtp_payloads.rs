//! The keyframe parsers read untrusted RTP payloads: they must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu::core::codec::{VideoCodec, starts_keyframe};

fuzz_target!(|data: &[u8]| {
    for codec in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264, VideoCodec::Other] {
        let _ = starts_keyframe(codec, data);
    }
});
