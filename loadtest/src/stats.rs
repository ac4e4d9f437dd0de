//! What subscribers measure: per received track and layer, packets, loss,
//! latency (from the send timestamp in each payload), freezes and bitrate.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// A gap longer than this between video packets of a track counts as a freeze.
pub const FREEZE_GAP: Duration = Duration::from_millis(300);

pub fn latency_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

/// How long a lost packet may take to be repaired. str0m's receiver asks up
/// to five times, an RTT (100 ms until it has measured one) apart, so half a
/// second covers every retry. A hole younger than this at the end of the
/// window is a repair still in flight, not a loss.
pub const REPAIR_HORIZON: Duration = Duration::from_millis(500);

/// Receive state for one publisher track+layer at one subscriber.
pub struct TrackRx {
    seqs: BTreeSet<u64>,
    /// The highest sequence number seen before the measured window began.
    /// A packet at or below it that arrives later is the repair of a loss
    /// from before the window: counting it would stretch the window back over
    /// packets that were received and then forgotten, and report them lost.
    floor: Option<u64>,
    /// Arrivals of the last [`REPAIR_HORIZON`], oldest first, and the highest
    /// sequence number among those that left it: holes up to that number had
    /// their whole chance of repair.
    recent: VecDeque<(Instant, u64)>,
    settled: Option<u64>,
    /// Sequence numbers this layer sent while the subscriber's stream carried
    /// another layer (first and last of each run): not holes.
    elsewhere: Vec<(u64, u64)>,
    /// The next packet comes after a switch back to this layer.
    resuming: bool,
    latency: Histogram<u64>,
    first_at: Instant,
    last_at: Instant,
    freezes: u32,
    bytes: u64,
}

impl TrackRx {
    pub fn new() -> Self {
        let now = Instant::now();
        Self {
            seqs: BTreeSet::new(),
            floor: None,
            recent: VecDeque::new(),
            settled: None,
            elsewhere: Vec::new(),
            resuming: false,
            latency: latency_histogram(),
            first_at: now,
            last_at: now,
            freezes: 0,
            bytes: 0,
        }
    }

    /// The subscriber's stream of this track comes from this layer again,
    /// after packets of another: the next packet starts a new stretch, and
    /// the sequence numbers between this layer's last packet and it were
    /// sent while the stream carried the other layer (a layer switch starts
    /// a new stretch, never a hole), and the time since its last packet is
    /// no freeze.
    pub fn resume(&mut self) {
        self.resuming = !self.seqs.is_empty();
    }

    pub fn record(&mut self, seq: u64, latency_us: u64, now: Instant, bytes: usize) {
        if self.floor.is_some_and(|floor| seq <= floor) {
            return;
        }
        let resumed = std::mem::take(&mut self.resuming);
        if resumed
            && let Some(&last) = self.seqs.last()
            && seq > last + 1
        {
            self.elsewhere.push((last + 1, seq - 1));
        }
        if self.seqs.is_empty() {
            self.first_at = now;
        } else if !resumed && now.saturating_duration_since(self.last_at) > FREEZE_GAP {
            // (After a switch back, the stream was carried by another layer.)
            self.freezes += 1;
        }
        self.last_at = now;
        self.seqs.insert(seq);
        self.bytes += bytes as u64;
        let _ = self.latency.record(latency_us.max(1));
        self.settle(now);
        self.recent.push_back((now, seq));
    }

    /// Move arrivals older than the repair horizon (as of `now`) out of `recent`.
    fn settle(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.recent.front() {
            if now.saturating_duration_since(at) < REPAIR_HORIZON {
                break;
            }
            self.recent.pop_front();
            self.settled = self.settled.max(Some(seq));
        }
    }

    /// Forget what was received so far (the warm-up) and measure from here:
    /// only packets newer than anything already seen count from now on.
    pub fn start_window(&mut self) {
        let floor = self.seqs.last().copied().max(self.floor);
        *self = Self {
            floor,
            ..Self::new()
        };
    }

    /// Summarise at `end`, the end of the window. Loss counts the holes
    /// between the first sequence number received and the highest one that
    /// arrived a [`REPAIR_HORIZON`] before `end` (a layer switch starts a new
    /// stretch, never a hole); `expected` is what was received plus those holes.
    pub fn finish(mut self, layer: u8, end: Instant) -> TrackReport {
        self.settle(end);
        let received = self.seqs.len() as u64;
        let holes = match (self.seqs.first(), self.settled) {
            (Some(&first), Some(settled)) if settled >= first => {
                let span = settled - first + 1;
                let elsewhere: u64 = self
                    .elsewhere
                    .iter()
                    .map(|&(lo, hi)| (hi.min(settled) + 1).saturating_sub(lo.max(first)))
                    .sum();
                // Saturating: a late packet of this layer inside a run it sent
                // elsewhere would be counted twice.
                span.saturating_sub(self.seqs.range(first..=settled).count() as u64 + elsewhere)
            }
            _ => 0,
        };
        TrackReport {
            layer: layer as char,
            received,
            expected: received + holes,
            freezes: self.freezes,
            bytes: self.bytes,
            latency: self.latency,
        }
    }
}

impl Default for TrackRx {
    fn default() -> Self {
        Self::new()
    }
}

pub struct TrackReport {
    pub layer: char,
    pub received: u64,
    pub expected: u64,
    pub freezes: u32,
    pub bytes: u64,
    pub latency: Histogram<u64>,
}

pub struct ParticipantReport {
    pub index: usize,
    /// Join (offer sent) to first media packet received.
    pub join_time: Option<Duration>,
    pub tracks: Vec<TrackReport>,
    /// What this receiver's WebRTC stack asked of the server (str0m's ingress
    /// stats): NACKs and PLIs sent, and the largest interarrival jitter, ms.
    /// `None` for lean receivers, which do not run the stack on media.
    pub feedback: Option<Feedback>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Feedback {
    pub nacks: u64,
    pub plis: u64,
    pub jitter_ms: f64,
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>, unit_us: bool) -> Self {
        let scale = if unit_us { 1000.0 } else { 1.0 };
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50_ms: h.value_at_quantile(0.50) as f64 / scale,
            p95_ms: h.value_at_quantile(0.95) as f64 / scale,
            p99_ms: h.value_at_quantile(0.99) as f64 / scale,
            max_ms: h.max() as f64 / scale,
            samples: h.len(),
        }
    }
}

impl Percentiles {
    /// Percentiles of what a Prometheus histogram counted between two scrapes:
    /// `before` and `after` are its cumulative buckets (upper bound in seconds,
    /// count), as [`crate::node::ControlClient::histogram`] reads them. Linear
    /// within a bucket; the open top bucket is reported at its lower bound, and
    /// `max_ms` is the upper bound of the highest bucket that counted anything.
    pub fn from_buckets(before: &[(f64, f64)], after: &[(f64, f64)]) -> Self {
        let counts: Vec<(f64, f64)> = after
            .iter()
            .map(|(le, n)| {
                let earlier = before
                    .iter()
                    .find(|(b, _)| b == le)
                    .map_or(0.0, |(_, n)| *n);
                (*le, (n - earlier).max(0.0))
            })
            .collect();
        let total = counts.last().map_or(0.0, |(_, n)| *n);
        if total <= 0.0 {
            return Self::default();
        }
        let quantile = |q: f64| {
            let rank = q * total;
            let mut lower = (0.0, 0.0);
            for &(le, n) in &counts {
                if n >= rank {
                    if le.is_infinite() {
                        return lower.0;
                    }
                    let within = if n > lower.1 {
                        (rank - lower.1) / (n - lower.1)
                    } else {
                        1.0
                    };
                    return lower.0 + (le - lower.0) * within;
                }
                lower = (le, n);
            }
            lower.0
        };
        let mut max = 0.0;
        let mut below = 0.0;
        let mut previous_le = 0.0;
        for &(le, n) in &counts {
            if n > below {
                max = if le.is_infinite() { previous_le } else { le };
            }
            below = n;
            previous_le = le;
        }
        Self {
            p50_ms: quantile(0.50) * 1000.0,
            p95_ms: quantile(0.95) * 1000.0,
            p99_ms: quantile(0.99) * 1000.0,
            max_ms: max * 1000.0,
            samples: total as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_prometheus_buckets_count_only_the_window() {
        // Before the window: 100 fast samples. In it: 90 in (0, 1 ms], 10 in
        // (1 ms, 2 ms].
        let before = [(0.001, 100.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        let after = [(0.001, 190.0), (0.002, 200.0), (f64::INFINITY, 200.0)];
        let p = Percentiles::from_buckets(&before, &after);
        assert_eq!(p.samples, 100);
        assert!((p.p50_ms - 0.5556).abs() < 0.001, "{p:?}");
        assert!((p.p95_ms - 1.5).abs() < 0.001, "{p:?}");
        assert!((p.p99_ms - 1.9).abs() < 0.001, "{p:?}");
        assert_eq!(p.max_ms, 2.0);
        // Nothing counted: all zero, not NaN.
        let none = Percentiles::from_buckets(&after, &after);
        assert_eq!(none.samples, 0);
        assert_eq!(none.p99_ms, 0.0);
        // Past the last finite bound: reported at that bound.
        let over = Percentiles::from_buckets(&[], &[(0.001, 0.0), (f64::INFINITY, 5.0)]);
        assert_eq!(over.p99_ms, 1.0);
        assert_eq!(over.max_ms, 1.0);
    }

    #[test]
    fn loss_counts_holes_and_freezes_count_long_gaps() {
        let t0 = Instant::now();
        let mut rx = TrackRx::new();
        for (i, seq) in [1u64, 2, 3, 5, 6, 10].iter().enumerate() {
            let at = t0 + Duration::from_millis(if i == 5 { 1000 } else { 10 * i as u64 });
            rx.record(*seq, 500, at, 1000);
        }
        let report = rx.finish(b'f', t0 + Duration::from_secs(2));
        assert_eq!(report.received, 6);
        assert_eq!(report.expected, 10);
        assert_eq!(report.freezes, 1);
        let p = Percentiles::of(&report.latency, true);
        assert!((p.p50_ms - 0.5).abs() < 0.01);
    }

    #[test]
    fn a_repair_of_a_warm_up_loss_does_not_count_as_window_loss() {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(2);
        let mut rx = TrackRx::new();
        // Warm-up: 4 is lost, 5..=9 arrive.
        for seq in [1u64, 2, 3, 5, 6, 7, 8, 9] {
            rx.record(seq, 500, t0, 1000);
        }
        rx.start_window();
        // The retransmission of 4 lands after the window began, then new media.
        rx.record(4, 30_000, t0, 1000);
        for seq in 10u64..=20 {
            rx.record(seq, 500, t0, 1000);
        }
        let report = rx.finish(b'f', end);
        assert_eq!(report.received, 11);
        assert_eq!(report.expected, 11, "5..=9 were received, not lost");
        // The late repair is not window latency either.
        assert_eq!(Percentiles::of(&report.latency, true).max_ms, 0.5);
        // A second window keeps the floor where the first left it.
        let mut rx = TrackRx::new();
        rx.start_window();
        rx.record(7, 500, t0, 1000);
        rx.start_window();
        rx.record(3, 500, t0, 1000);
        rx.record(8, 500, t0, 1000);
        assert_eq!(rx.finish(b'f', end).expected, 1);
    }

    #[test]
    fn what_a_layer_sent_while_the_stream_carried_another_is_no_hole() {
        let t0 = Instant::now();
        let mut rx = TrackRx::new();
        // 1..=5 (3 lost), then the stream is switched to another layer while
        // this one sends 6..=40, then back: 41..=50 (45 lost).
        for seq in [1u64, 2, 4, 5] {
            rx.record(seq, 500, t0, 1000);
        }
        rx.resume();
        // A second later: the stream was not frozen, only elsewhere.
        let back = t0 + Duration::from_secs(1);
        for seq in (41u64..=50).filter(|s| *s != 45) {
            rx.record(seq, 500, back, 1000);
        }
        let report = rx.finish(b'f', t0 + Duration::from_secs(2));
        assert_eq!(report.received, 13);
        assert_eq!(report.expected, 15, "3 and 45 are lost, 6..=40 are not");
        assert_eq!(report.freezes, 0);
        // Without the switch the same arrivals are 35 more holes and a freeze.
        let mut rx = TrackRx::new();
        for seq in [1u64, 2, 4, 5] {
            rx.record(seq, 500, t0, 1000);
        }
        for seq in (41u64..=50).filter(|s| *s != 45) {
            rx.record(seq, 500, back, 1000);
        }
        let report = rx.finish(b'f', t0 + Duration::from_secs(2));
        assert_eq!(report.expected, 50);
        assert_eq!(report.freezes, 1);
    }

    #[test]
    fn a_hole_still_within_its_repair_time_at_the_end_is_not_loss() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut rx = TrackRx::new();
        // 1..=10 at 10 ms apart, 4 missing; then 12..=14 in the last 100 ms, 11 missing.
        for seq in [1u64, 2, 3, 5, 6, 7, 8, 9, 10] {
            rx.record(seq, 500, ms(seq * 10), 1000);
        }
        for seq in [12u64, 13, 14] {
            rx.record(seq, 500, ms(1000 + seq), 1000);
        }
        let report = rx.finish(b'f', ms(1100));
        assert_eq!(report.received, 12, "every packet counts as received");
        assert_eq!(
            report.expected, 13,
            "4 had its chance of repair and is lost; 11 may still come"
        );
        // Given its chance, 11 counts too.
        let mut rx = TrackRx::new();
        for seq in [1u64, 2, 3, 5, 6, 7, 8, 9, 10, 12, 13, 14] {
            rx.record(seq, 500, ms(seq * 10), 1000);
        }
        assert_eq!(rx.finish(b'f', ms(1000)).expected, 14);
    }
}
