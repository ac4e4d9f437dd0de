//! Dynacast: the publisher sends only the layers someone wants.
//!
//! Every 250 ms the core works out, for each published video track, the
//! highest layer any subscriber would take (its tile size and its bandwidth,
//! as layer selection judges them, but as if every layer were arriving: a
//! paused layer must be able to come back). A [`LayerGate`] per track turns
//! that into the set of layers the publisher is asked to send:
//!
//! - every layer up to the highest wanted one. The lower ones stay on as
//!   fall-backs: when a subscriber's bandwidth drops, layer selection can
//!   switch down at the next keyframe instead of waiting for the publisher to
//!   restart an encoder, and at ¼ and ½ scale they cost a fraction of the top;
//! - a layer turns on at once (a subscriber is waiting for it), and off only
//!   after it has been unwanted for [`OFF_AFTER`].
//!
//! Pure: time is an input, no I/O.

use proto::media::Layer;
use std::time::{Duration, Instant};

/// How long a layer must be unwanted before the publisher is told to pause
/// it. Tile sizes flap — a grid re-flows when someone joins, a pinned tile is
/// unpinned and pinned again, a window is resized — and each pause and resume
/// restarts an encoder on the publisher and costs a keyframe. Three seconds
/// covers such flapping; the bandwidth of a layer nobody watches is wasted
/// only that long.
pub const OFF_AFTER: Duration = Duration::from_secs(3);

/// The layers one track's publisher is asked to send, debounced.
#[derive(Debug, Clone)]
pub struct LayerGate {
    /// The track's layers, lowest first.
    layers: Vec<Layer>,
    /// What the publisher was last told to send (at first: everything, which
    /// is how a publisher starts).
    active: Vec<Layer>,
    /// Per entry of `layers`: since when it has been active but unwanted.
    unwanted_since: Vec<Option<Instant>>,
}

impl LayerGate {
    /// A gate for a track with these layers, all of them sending. A
    /// single-layer track is `[Layer::High]`.
    pub fn new(mut layers: Vec<Layer>) -> Self {
        layers.sort();
        layers.dedup();
        Self {
            active: layers.clone(),
            unwanted_since: vec![None; layers.len()],
            layers,
        }
    }

    /// What the publisher was last told to send, lowest first.
    pub fn active(&self) -> &[Layer] {
        &self.active
    }

    /// The highest layer any subscriber wants now (`None`: nobody watches).
    /// Returns the new active set when it changed.
    pub fn handle_wanted(&mut self, now: Instant, up_to: Option<Layer>) -> Option<Vec<Layer>> {
        let mut changed = false;
        for (index, layer) in self.layers.iter().enumerate() {
            let wanted = up_to.is_some_and(|top| *layer <= top);
            let active = self.active.contains(layer);
            if wanted {
                self.unwanted_since[index] = None;
                if !active {
                    self.active.push(*layer);
                    changed = true;
                }
            } else if active {
                let since = *self.unwanted_since[index].get_or_insert(now);
                if now.saturating_duration_since(since) >= OFF_AFTER {
                    self.active.retain(|l| l != layer);
                    self.unwanted_since[index] = None;
                    changed = true;
                }
            }
        }
        if !changed {
            return None;
        }
        self.active.sort();
        Some(self.active.clone())
    }

    /// The track is muted: nothing changes meanwhile, and a layer's time
    /// unwanted starts again after it.
    pub fn hold(&mut self) {
        self.unwanted_since.iter_mut().for_each(|s| *s = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Layer::{High, Low, Medium};

    fn gate() -> (LayerGate, Instant) {
        (LayerGate::new(vec![High, Low, Medium]), Instant::now())
    }

    #[test]
    fn every_layer_starts_active() {
        let (gate, _) = gate();
        assert_eq!(gate.active(), [Low, Medium, High]);
    }

    #[test]
    fn an_unwanted_layer_goes_off_only_after_the_delay() {
        let (mut gate, t0) = gate();
        assert_eq!(gate.handle_wanted(t0, Some(Low)), None);
        let almost = t0 + OFF_AFTER - Duration::from_millis(1);
        assert_eq!(gate.handle_wanted(almost, Some(Low)), None);
        assert_eq!(
            gate.handle_wanted(t0 + OFF_AFTER, Some(Low)),
            Some(vec![Low])
        );
        assert_eq!(gate.handle_wanted(t0 + OFF_AFTER * 2, Some(Low)), None);
    }

    #[test]
    fn a_wanted_layer_comes_back_at_once_with_those_below_it() {
        let (mut gate, t0) = gate();
        let t1 = t0 + OFF_AFTER;
        assert_eq!(gate.handle_wanted(t0, None), None);
        assert_eq!(gate.handle_wanted(t1, None), Some(vec![]));
        assert_eq!(
            gate.handle_wanted(t1 + Duration::from_millis(250), Some(High)),
            Some(vec![Low, Medium, High])
        );
    }

    #[test]
    fn flapping_within_the_delay_turns_nothing_off() {
        let (mut gate, t0) = gate();
        let step = OFF_AFTER / 2;
        for i in 0..10u32 {
            let up_to = if i % 2 == 0 { Low } else { High };
            assert_eq!(gate.handle_wanted(t0 + step * i, Some(up_to)), None);
        }
        assert_eq!(gate.active(), [Low, Medium, High]);
    }

    #[test]
    fn a_hold_restarts_the_delay() {
        let (mut gate, t0) = gate();
        gate.handle_wanted(t0, Some(Low));
        gate.hold();
        let later = t0 + OFF_AFTER;
        assert_eq!(gate.handle_wanted(later, Some(Low)), None);
        assert_eq!(
            gate.handle_wanted(later + OFF_AFTER, Some(Low)),
            Some(vec![Low])
        );
    }

    #[test]
    fn a_single_layer_track_is_on_or_off() {
        let mut gate = LayerGate::new(vec![High]);
        let t0 = Instant::now();
        gate.handle_wanted(t0, None);
        assert_eq!(gate.handle_wanted(t0 + OFF_AFTER, None), Some(vec![]));
        assert_eq!(
            gate.handle_wanted(t0 + OFF_AFTER, Some(High)),
            Some(vec![High])
        );
    }
}
