//! Active-speaker detection from the RFC 6464 audio-level header extension.
//!
//! Each audio packet carries the sender's level in -dBov (0 loudest, 127
//! silence). Levels are smoothed per participant with an exponential moving
//! average, so a cough does not steal the highlight and a pause of a breath
//! does not drop it; speakers are those above a threshold, loudest first.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Loudness (0 silence .. 127 loudest) above which someone counts as speaking.
/// Speech is typically -40..-10 dBov, i.e. 87..117 here; room noise sits lower.
pub const SPEAKING_THRESHOLD: f32 = 70.0;

/// How quickly the smoothed level follows the instant one, per 20 ms packet.
const SMOOTHING: f32 = 0.15;

/// Silence assumed for someone whose audio stopped arriving.
const STALE_AFTER: Duration = Duration::from_millis(600);

/// Active speakers among a room's participants.
#[derive(Debug)]
pub struct SpeakerDetector<P> {
    levels: HashMap<P, Level>,
    last_reported: Vec<P>,
}

#[derive(Debug, Clone, Copy)]
struct Level {
    smoothed: f32,
    last_packet: Instant,
}

impl<P: Copy + Eq + Hash + Ord> Default for SpeakerDetector<P> {
    fn default() -> Self {
        Self {
            levels: HashMap::new(),
            last_reported: Vec::new(),
        }
    }
}

impl<P: Copy + Eq + Hash + Ord> SpeakerDetector<P> {
    /// One audio packet's level, as carried in the extension (-dBov, 0..=127;
    /// negative values as str0m reports them are accepted too).
    pub fn handle_level(&mut self, participant: P, dbov: i8, now: Instant) {
        let loudness = 127.0 - f32::from(dbov.unsigned_abs().min(127));
        let entry = self.levels.entry(participant).or_insert(Level {
            smoothed: 0.0,
            last_packet: now,
        });
        entry.smoothed += SMOOTHING * (loudness - entry.smoothed);
        entry.last_packet = now;
    }

    pub fn remove(&mut self, participant: P) {
        self.levels.remove(&participant);
    }

    /// Current speakers, loudest first, each with its smoothed loudness (0..127).
    pub fn speakers(&self, now: Instant) -> Vec<(P, u8)> {
        let mut speaking: Vec<(P, f32)> = self
            .levels
            .iter()
            .filter(|(_, level)| now.saturating_duration_since(level.last_packet) < STALE_AFTER)
            .filter(|(_, level)| level.smoothed >= SPEAKING_THRESHOLD)
            .map(|(p, level)| (*p, level.smoothed))
            .collect();
        speaking.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        speaking
            .into_iter()
            .map(|(p, level)| (p, level.round().clamp(0.0, 127.0) as u8))
            .collect()
    }

    /// The speakers if the *set* changed since the last report (levels alone
    /// changing is not news), `None` otherwise.
    pub fn poll_change(&mut self, now: Instant) -> Option<Vec<(P, u8)>> {
        let current = self.speakers(now);
        let mut ids: Vec<P> = current.iter().map(|(p, _)| *p).collect();
        ids.sort();
        if ids == self.last_reported {
            return None;
        }
        self.last_reported = ids;
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loud_participant_becomes_the_speaker_and_silence_ends_it() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        for i in 0..50u64 {
            let now = t0 + Duration::from_millis(20 * i);
            d.handle_level(1u32, 20, now); // -20 dBov: speech
            d.handle_level(2u32, 120, now); // near silence
        }
        let now = t0 + Duration::from_millis(1000);
        let change = d.poll_change(now).expect("speaker set changed");
        assert_eq!(change.len(), 1);
        assert_eq!(change[0].0, 1);
        assert!(d.poll_change(now).is_none(), "no change, no report");
        // Participant 1 goes quiet: after the smoothing catches up, nobody speaks.
        for i in 50..150u64 {
            d.handle_level(1u32, 127, t0 + Duration::from_millis(20 * i));
        }
        assert_eq!(
            d.poll_change(t0 + Duration::from_millis(3000)),
            Some(vec![])
        );
    }

    #[test]
    fn a_single_loud_packet_does_not_make_a_speaker() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        d.handle_level(1u32, 0, t0);
        assert!(d.speakers(t0).is_empty());
    }

    #[test]
    fn speakers_whose_audio_stopped_arriving_are_dropped() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        for i in 0..50u64 {
            d.handle_level(1u32, 10, t0 + Duration::from_millis(20 * i));
        }
        assert_eq!(d.speakers(t0 + Duration::from_millis(1000)).len(), 1);
        assert!(d.speakers(t0 + Duration::from_secs(5)).is_empty());
    }
}
