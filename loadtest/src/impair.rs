//! Network impairment inside the load generator (the kernel here has no
//! netem): random loss, delay with jitter, and a bandwidth cap, applied to what
//! each synthetic participant receives.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ImpairmentConfig {
    /// Fraction of datagrams dropped (0..1).
    pub loss: f64,
    pub delay: Duration,
    /// Extra delay drawn uniformly from 0..jitter.
    pub jitter: Duration,
    /// Receive bandwidth cap, bits per second (None: unlimited).
    pub bandwidth_bps: Option<u64>,
}

/// Per-participant impairment state.
#[derive(Debug, Clone)]
pub struct Impairment {
    config: ImpairmentConfig,
    rng: u64,
    /// When the bandwidth-capped link is next free.
    link_free_at: Option<Instant>,
}

/// A queue deeper than this behind the bandwidth cap drops (a router buffer).
const MAX_QUEUE: Duration = Duration::from_millis(300);

impl Impairment {
    pub fn new(config: ImpairmentConfig, seed: u64) -> Self {
        Self {
            config,
            rng: seed | 1,
            link_free_at: None,
        }
    }

    fn next_unit(&mut self) -> f64 {
        // xorshift64*: cheap and deterministic per participant.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// When a datagram of `len` bytes arriving `now` is delivered, or `None`
    /// if the network drops it.
    pub fn admit(&mut self, now: Instant, len: usize) -> Option<Instant> {
        if self.config.loss > 0.0 && self.next_unit() < self.config.loss {
            return None;
        }
        let mut at = now;
        if let Some(bps) = self.config.bandwidth_bps {
            let start = self.link_free_at.map_or(now, |free| free.max(now));
            if start.saturating_duration_since(now) > MAX_QUEUE {
                return None;
            }
            let wire = Duration::from_secs_f64((len as f64 + 28.0) * 8.0 / bps.max(1) as f64);
            self.link_free_at = Some(start + wire);
            at = start + wire;
        }
        at += self.config.delay;
        if !self.config.jitter.is_zero() {
            at += self.config.jitter.mul_f64(self.next_unit());
        }
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_drops_about_the_configured_fraction() {
        let mut imp = Impairment::new(
            ImpairmentConfig {
                loss: 0.1,
                ..Default::default()
            },
            42,
        );
        let now = Instant::now();
        let dropped = (0..100_000)
            .filter(|_| imp.admit(now, 1000).is_none())
            .count();
        assert!((9_000..11_000).contains(&dropped), "{dropped}");
    }

    #[test]
    fn a_bandwidth_cap_spaces_packets_and_drops_when_the_queue_is_full() {
        let mut imp = Impairment::new(
            ImpairmentConfig {
                bandwidth_bps: Some(1_000_000),
                ..Default::default()
            },
            1,
        );
        let now = Instant::now();
        let first = imp.admit(now, 1222).unwrap();
        let second = imp.admit(now, 1222).unwrap();
        // 1250 bytes on the wire at 1 Mbps is 10 ms.
        assert_eq!(second - first, Duration::from_millis(10));
        let delivered = (0..100).filter(|_| imp.admit(now, 1222).is_some()).count();
        assert!(
            delivered < 40,
            "a 300 ms buffer holds about 30 packets, got {delivered}"
        );
    }

    #[test]
    fn delay_and_jitter_add_up() {
        let mut imp = Impairment::new(
            ImpairmentConfig {
                delay: Duration::from_millis(50),
                jitter: Duration::from_millis(10),
                ..Default::default()
            },
            7,
        );
        let now = Instant::now();
        for _ in 0..100 {
            let at = imp.admit(now, 100).unwrap() - now;
            assert!(at >= Duration::from_millis(50) && at <= Duration::from_millis(60));
        }
    }
}
