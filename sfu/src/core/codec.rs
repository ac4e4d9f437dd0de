//! What the SFU reads from RTP payloads itself: whether a packet starts a
//! keyframe (the only safe point to switch a subscriber to another simulcast
//! layer). Every parser here takes untrusted bytes, so each index is checked;
//! malformed input answers `false`, never panics (fuzzed in `fuzz/`).

/// The video codecs whose keyframes the SFU can recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    /// Anything else: the SFU forwards it but never switches layers mid-stream.
    Other,
}

/// Does this RTP payload begin a keyframe?
pub fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_starts_keyframe(payload),
        VideoCodec::Vp9 => vp9_starts_keyframe(payload),
        VideoCodec::H264 => h264_starts_keyframe(payload),
        VideoCodec::Other => false,
    }
}

/// RFC 7741 §4.2: payload descriptor, then the VP8 payload header whose lowest
/// bit (P) is 0 for a key frame. Only the first packet of partition 0 has it.
pub fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let extended = first & 0x80 != 0;
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&flags) = payload.get(at) else {
            return false;
        };
        at += 1;
        let has_picture_id = flags & 0x80 != 0;
        let has_tl0 = flags & 0x40 != 0;
        let has_tid_or_key = flags & 0x30 != 0;
        if has_picture_id {
            let Some(&pid) = payload.get(at) else {
                return false;
            };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if has_tl0 {
            at += 1;
        }
        if has_tid_or_key {
            at += 1;
        }
    }
    match payload.get(at) {
        Some(&header) => header & 0x01 == 0,
        None => false,
    }
}

/// VP9 payload descriptor (RFC 9628 §4.2): B (begin of frame) set and P
/// (inter-picture predicted) clear means an intra frame starts here.
pub fn vp9_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let inter_predicted = first & 0x40 != 0;
    let begins_frame = first & 0x08 != 0;
    begins_frame && !inter_predicted
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// RFC 6184: a single NAL unit, an aggregation (STAP-A) or the first fragment
/// (FU-A with S set) carrying an SPS or an IDR slice.
pub fn h264_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        H264_IDR | H264_SPS => true,
        H264_STAP_A => {
            let mut at = 1;
            while let (Some(&hi), Some(&lo)) = (payload.get(at), payload.get(at + 1)) {
                let size = usize::from(hi) << 8 | usize::from(lo);
                at += 2;
                let Some(&nal) = payload.get(at) else {
                    return false;
                };
                if matches!(nal & 0x1f, H264_IDR | H264_SPS) {
                    return true;
                }
                if size == 0 {
                    return false;
                }
                at += size;
            }
            false
        }
        H264_FU_A => match payload.get(1) {
            Some(&fu) => fu & 0x80 != 0 && matches!(fu & 0x1f, H264_IDR | H264_SPS),
            None => false,
        },
        _ => false,
    }
}

/// Whether a datagram is RTP (not RTCP, STUN or DTLS), from its first bytes,
/// which SRTP leaves in the clear. RFC 5761: RTCP packet types 192-223 take
/// the second byte's values 64-95 once the marker bit is masked off.
pub fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() >= 12 && datagram[0] >> 6 == 2 && !(64..96).contains(&(datagram[1] & 0x7f))
}

/// Pull the ICE username (`local:remote` ufrags) out of a STUN binding request,
/// so the datagram reaches the right peer without asking every peer.
/// Returns the local (our) ufrag.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    // RFC 8489 §5: type (2) length (2) magic cookie (4) transaction id (12).
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    const USERNAME: u16 = 0x0006;
    if datagram.len() < 20 || datagram[0] & 0xc0 != 0 || datagram[4..8] != MAGIC {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let body = datagram.get(20..20 + body_len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        // Attributes are padded to 4 bytes.
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframes_are_recognised_with_and_without_extensions() {
        // S=1, PID=0, no X; payload header P=0.
        assert!(vp8_starts_keyframe(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // P=1: an inter frame.
        assert!(!vp8_starts_keyframe(&[0x10, 0x01]));
        // Not the start of a partition.
        assert!(!vp8_starts_keyframe(&[0x00, 0x00]));
        // X=1, I=1 with a 15-bit picture id, L=1, T=1: descriptor is 6 bytes.
        assert!(vp8_starts_keyframe(&[
            0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x00
        ]));
        assert!(!vp8_starts_keyframe(&[
            0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x01
        ]));
        // Truncated descriptors are never keyframes.
        assert!(!vp8_starts_keyframe(&[0x90, 0xe0, 0x80]));
        assert!(!vp8_starts_keyframe(&[]));
    }

    #[test]
    fn h264_keyframes_are_recognised_in_every_packetization() {
        assert!(h264_starts_keyframe(&[0x65, 0x88])); // IDR slice
        assert!(h264_starts_keyframe(&[0x67, 0x42])); // SPS
        assert!(!h264_starts_keyframe(&[0x41, 0x9a])); // non-IDR slice
        // STAP-A with SPS then PPS.
        assert!(h264_starts_keyframe(&[
            0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce
        ]));
        // STAP-A with only a non-IDR slice.
        assert!(!h264_starts_keyframe(&[0x78, 0x00, 0x02, 0x41, 0x9a]));
        // FU-A start of an IDR slice, and a middle fragment.
        assert!(h264_starts_keyframe(&[0x7c, 0x85, 0x88]));
        assert!(!h264_starts_keyframe(&[0x7c, 0x05, 0x88]));
        // Lengths that run past the end.
        assert!(!h264_starts_keyframe(&[0x78, 0xff, 0xff]));
        assert!(!h264_starts_keyframe(&[0x78, 0x00, 0x00]));
    }

    #[test]
    fn vp9_keyframes_need_begin_of_frame_and_no_inter_prediction() {
        assert!(vp9_starts_keyframe(&[0x08]));
        assert!(!vp9_starts_keyframe(&[0x48]));
        assert!(!vp9_starts_keyframe(&[0x00]));
    }

    #[test]
    fn stun_username_is_read_from_a_binding_request() {
        let mut msg = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        msg.extend_from_slice(&[7; 12]);
        let username = b"srvfrag:clientfrag";
        let mut attr = vec![0x00, 0x06, 0x00, username.len() as u8];
        attr.extend_from_slice(username);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let len = attr.len() as u16;
        msg[2..4].copy_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(&attr);
        assert_eq!(stun_local_ufrag(&msg), Some("srvfrag"));
        // A length field that lies is rejected, not trusted.
        msg[3] = msg[3].wrapping_add(40);
        assert_eq!(stun_local_ufrag(&msg), None);
        assert_eq!(stun_local_ufrag(&[0u8; 10]), None);
    }
}
