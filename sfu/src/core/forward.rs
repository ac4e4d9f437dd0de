//! Per-subscriber, per-track forwarding state: which simulcast layer is sent,
//! and the sequence-number and timestamp rewriting that makes the subscriber
//! see one continuous stream across layer switches.
//!
//! Pure: fed with packet facts, answers what to send. No str0m types, so it is
//! tested exhaustively on its own.

use std::time::Instant;

/// What to do with one incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Drop,
    /// Send with these rewritten values. `switched` is true on the first packet
    /// after a layer change (or the very first packet).
    Forward {
        seq: u64,
        timestamp: u32,
        switched: bool,
    },
}

/// One incoming packet, as the forwarder needs to see it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<L> {
    pub layer: L,
    /// Extended (rollover-free) sequence number of the publisher's stream.
    pub seq: u64,
    pub timestamp: u32,
    pub arrival: Instant,
    /// Begins a keyframe: a switch to this layer may happen here.
    pub keyframe_start: bool,
}

/// Forwarding state for one subscribed track.
#[derive(Debug, Clone)]
pub struct Forwarder<L> {
    /// Audio needs no keyframe to start or switch.
    needs_keyframe: bool,
    clock_rate: u32,
    /// The layer being sent now (`None`: nothing yet, or paused).
    current: Option<L>,
    /// The layer we want to send.
    target: Option<L>,
    /// `out = in + seq_offset` (wrapping) for the current layer.
    seq_offset: u64,
    /// `out = in + ts_offset` (wrapping) for the current layer.
    ts_offset: u32,
    /// First incoming sequence number of the current layer segment; older
    /// packets of that layer (reordered across the switch) are dropped.
    segment_start: u64,
    last_out: Option<LastOut>,
}

#[derive(Debug, Clone, Copy)]
struct LastOut {
    seq: u64,
    timestamp: u32,
    arrival: Instant,
}

impl<L: Copy + Eq> Forwarder<L> {
    pub fn new(needs_keyframe: bool, clock_rate: u32) -> Self {
        Self {
            needs_keyframe,
            clock_rate,
            current: None,
            target: None,
            seq_offset: 0,
            ts_offset: 0,
            segment_start: 0,
            last_out: None,
        }
    }

    pub fn current(&self) -> Option<L> {
        self.current
    }

    pub fn target(&self) -> Option<L> {
        self.target
    }

    /// Choose the layer to send. `None` pauses forwarding at once.
    /// Returns true when a keyframe of the new target is needed to switch.
    pub fn set_target(&mut self, target: Option<L>) -> bool {
        self.target = target;
        if target.is_none() {
            self.current = None;
            return false;
        }
        target != self.current && self.needs_keyframe
    }

    /// Is the forwarder waiting for a keyframe to start or switch?
    pub fn wants_keyframe(&self) -> bool {
        self.needs_keyframe && self.target.is_some() && self.target != self.current
    }

    pub fn handle(&mut self, packet: Incoming<L>) -> Decision {
        let Some(target) = self.target else {
            return Decision::Drop;
        };
        let mut switched = false;
        if packet.layer == target && self.current != Some(target) {
            // Switch (or start) only where the decoder can follow: a keyframe.
            if self.needs_keyframe && !packet.keyframe_start {
                // Not a switch point; the current layer's own packets keep flowing.
                return Decision::Drop;
            }
            self.begin_segment(packet);
            switched = true;
        } else if Some(packet.layer) != self.current {
            return Decision::Drop;
        }
        if packet.seq < self.segment_start {
            return Decision::Drop;
        }
        let seq = packet.seq.wrapping_add(self.seq_offset);
        let timestamp = packet.timestamp.wrapping_add(self.ts_offset);
        if self.last_out.is_none_or(|last| seq > last.seq) {
            self.last_out = Some(LastOut {
                seq,
                timestamp,
                arrival: packet.arrival,
            });
        }
        Decision::Forward {
            seq,
            timestamp,
            switched,
        }
    }

    fn begin_segment(&mut self, packet: Incoming<L>) {
        let (first_seq, first_ts) = match self.last_out {
            Some(last) => {
                let elapsed = packet.arrival.saturating_duration_since(last.arrival);
                let ticks = (elapsed.as_secs_f64() * f64::from(self.clock_rate)) as u64;
                let ticks = ticks.clamp(1, u64::from(u32::MAX / 2)) as u32;
                (last.seq + 1, last.timestamp.wrapping_add(ticks))
            }
            // A new stream must start with rollover counter 0 (str0m cannot tell
            // the receiver otherwise): keep the low 16 bits.
            None => (packet.seq & 0xffff, packet.timestamp),
        };
        self.seq_offset = first_seq.wrapping_sub(packet.seq);
        self.ts_offset = first_ts.wrapping_sub(packet.timestamp);
        self.segment_start = packet.seq;
        self.current = Some(packet.layer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pkt(layer: u8, seq: u64, ts: u32, at_ms: u64, key: bool, t0: Instant) -> Incoming<u8> {
        Incoming {
            layer,
            seq,
            timestamp: ts,
            arrival: t0 + Duration::from_millis(at_ms),
            keyframe_start: key,
        }
    }

    fn seq_of(d: Decision) -> u64 {
        match d {
            Decision::Forward { seq, .. } => seq,
            Decision::Drop => panic!("expected forward"),
        }
    }

    #[test]
    fn video_waits_for_a_keyframe_before_starting() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(true, 90_000);
        assert!(f.set_target(Some(0u8)));
        assert_eq!(f.handle(pkt(0, 100, 1000, 0, false, t0)), Decision::Drop);
        assert!(f.wants_keyframe());
        let d = f.handle(pkt(0, 101, 4000, 33, true, t0));
        assert_eq!(
            d,
            Decision::Forward {
                seq: 101,
                timestamp: 4000,
                switched: true
            }
        );
        assert_eq!(seq_of(f.handle(pkt(0, 102, 4000, 34, false, t0))), 102);
        assert!(!f.wants_keyframe());
    }

    #[test]
    fn a_layer_switch_keeps_sequence_numbers_contiguous() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(true, 90_000);
        f.set_target(Some(0u8));
        f.handle(pkt(0, 500, 9000, 0, true, t0));
        f.handle(pkt(0, 501, 9000, 1, false, t0));
        // Ask for layer 1; until its keyframe, layer 0 keeps flowing and layer 1 is dropped.
        assert!(f.set_target(Some(1)));
        assert_eq!(
            f.handle(pkt(1, 7000, 123_000, 2, false, t0)),
            Decision::Drop
        );
        assert_eq!(seq_of(f.handle(pkt(0, 502, 12_000, 33, false, t0))), 502);
        // Layer 1's keyframe: the switch happens, numbering continues at 503.
        let d = f.handle(pkt(1, 7001, 126_000, 66, true, t0));
        match d {
            Decision::Forward {
                seq,
                timestamp,
                switched,
            } => {
                assert_eq!(seq, 503);
                assert!(switched);
                // 33 ms after the last packet at 90 kHz is 2970 ticks.
                assert_eq!(timestamp, 12_000 + 2970);
            }
            Decision::Drop => panic!("switch expected"),
        }
        assert_eq!(seq_of(f.handle(pkt(1, 7002, 126_000, 67, false, t0))), 504);
        // Old layer is now dropped, and so is a layer-1 packet from before the switch.
        assert_eq!(f.handle(pkt(0, 503, 15_000, 68, false, t0)), Decision::Drop);
        assert_eq!(
            f.handle(pkt(1, 7000, 123_000, 69, false, t0)),
            Decision::Drop
        );
    }

    #[test]
    fn the_first_sequence_number_has_no_rollover() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(false, 48_000);
        f.set_target(Some(0u8));
        let first = seq_of(f.handle(pkt(0, 3 * 65_536 + 17, 0, 0, false, t0)));
        assert_eq!(first, 17);
        assert_eq!(
            seq_of(f.handle(pkt(0, 3 * 65_536 + 18, 960, 20, false, t0))),
            18
        );
    }

    #[test]
    fn audio_switches_without_a_keyframe_and_pausing_stops_forwarding() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(false, 48_000);
        assert!(!f.set_target(Some(0u8)));
        assert!(matches!(
            f.handle(pkt(0, 10, 0, 0, false, t0)),
            Decision::Forward { .. }
        ));
        f.set_target(None);
        assert_eq!(f.handle(pkt(0, 11, 960, 20, false, t0)), Decision::Drop);
        // Resuming continues the numbering after a gap-free restart.
        f.set_target(Some(0));
        assert_eq!(seq_of(f.handle(pkt(0, 40, 30_000, 600, false, t0))), 11);
    }

    #[test]
    fn late_packets_of_the_current_layer_keep_their_place() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(true, 90_000);
        f.set_target(Some(0u8));
        f.handle(pkt(0, 10, 0, 0, true, t0));
        f.handle(pkt(0, 12, 0, 2, false, t0));
        // 11 arrives late (a retransmission): it keeps its own slot.
        assert_eq!(seq_of(f.handle(pkt(0, 11, 0, 3, false, t0))), 11);
        assert_eq!(seq_of(f.handle(pkt(0, 13, 0, 4, false, t0))), 13);
    }
}
