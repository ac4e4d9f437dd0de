//! A circuit breaker per upstream.
//!
//! Closed: requests pass; `failure_threshold` consecutive failures (no connection,
//! a broken exchange, a timeout — never an HTTP status, which proves the service
//! answered) open it. Open: requests fail at once with `upstream_unavailable` until
//! `open_for` has passed. Then one request (or the health prober) goes through as a
//! probe (half-open); its success closes the breaker, its failure opens it again.
//! The prober (`crate::health`) feeds the same counters, so an idle upstream that
//! dies still shows as open, and one that comes back closes without traffic.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before a probe may pass.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
        }
    }
}

/// The state as shown in `/health/upstreams` and the `breaker_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    /// 0 closed, 1 half-open, 2 open (the gauge's value).
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    /// A half-open probe is in flight: other requests still fail fast.
    probing: bool,
}

/// One upstream's breaker. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    // A std mutex is right here: held for a few field updates, never across `.await`.
    inner: Arc<Mutex<Inner>>,
}

/// Leave to send one request; report its outcome with [`Pass::success`] or
/// [`Pass::failure`]. Dropped without either (the client went away), a probe frees
/// the half-open slot.
#[derive(Debug)]
pub struct Pass {
    breaker: Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Arc::new(Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: None,
                probing: false,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Poisoning only means a panic between plain field writes; the state is valid.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pass for one request, or how long until one may be tried.
    pub fn admit(&self) -> Result<Pass, Duration> {
        let mut inner = self.lock();
        let probe = match inner.state {
            BreakerState::Closed => false,
            BreakerState::Open => {
                let elapsed = inner.opened_at.map_or(Duration::MAX, |at| at.elapsed());
                if elapsed < self.config.open_for {
                    return Err(self.config.open_for - elapsed);
                }
                inner.state = BreakerState::HalfOpen;
                inner.probing = true;
                true
            }
            BreakerState::HalfOpen => {
                if inner.probing {
                    return Err(Duration::from_secs(1));
                }
                inner.probing = true;
                true
            }
        };
        Ok(Pass {
            breaker: self.clone(),
            probe,
            reported: false,
        })
    }

    /// The upstream answered (a request or a health probe).
    pub fn record_success(&self) {
        let mut inner = self.lock();
        inner.state = BreakerState::Closed;
        inner.consecutive_failures = 0;
        inner.opened_at = None;
        inner.probing = false;
    }

    /// The upstream did not answer.
    pub fn record_failure(&self) {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let trip = match inner.state {
            BreakerState::Closed => inner.consecutive_failures >= self.config.failure_threshold,
            BreakerState::HalfOpen => true,
            // Already open: keep the timer running from the first trip.
            BreakerState::Open => false,
        };
        if trip {
            inner.state = BreakerState::Open;
            inner.opened_at = Some(Instant::now());
        }
        inner.probing = false;
    }

    /// The state now: an open breaker whose timer has run out shows as half-open.
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.state {
            BreakerState::Open
                if inner
                    .opened_at
                    .is_some_and(|at| at.elapsed() >= self.config.open_for) =>
            {
                BreakerState::HalfOpen
            }
            state => state,
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.lock().consecutive_failures
    }
}

impl Pass {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record_success();
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record_failure();
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            self.breaker.lock().probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for: Duration) -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 3,
            open_for,
        })
    }

    #[test]
    fn it_opens_after_consecutive_failures_only() {
        let b = breaker(Duration::from_secs(60));
        b.admit().unwrap().failure();
        b.admit().unwrap().failure();
        b.admit().unwrap().success();
        b.admit().unwrap().failure();
        b.admit().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.admit().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().is_err());
    }

    #[test]
    fn after_the_open_time_one_probe_passes_and_its_outcome_decides() {
        let b = breaker(Duration::ZERO);
        for _ in 0..3 {
            b.record_failure();
        }
        let probe = b.admit().expect("the probe passes");
        assert!(b.admit().is_err(), "only one probe at a time");
        probe.failure();
        assert_eq!(b.state(), BreakerState::HalfOpen); // open, timer already over
        let probe = b.admit().unwrap();
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit().is_ok());
    }

    #[test]
    fn a_dropped_probe_frees_the_half_open_slot() {
        let b = breaker(Duration::ZERO);
        for _ in 0..3 {
            b.record_failure();
        }
        drop(b.admit().unwrap());
        assert!(b.admit().is_ok());
    }
}
