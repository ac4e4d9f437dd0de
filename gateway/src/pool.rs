//! Several instances behind one upstream: balancing and passive health.
//!
//! Each [`Instance`] has its own [`Breaker`], which is its passive health: a run
//! of failed exchanges (no connection, a broken exchange, a timeout — never an
//! HTTP status) ejects it for the breaker's open time, after which one request
//! or health probe may try it again (half-open). The health prober feeds the same
//! breakers, so a dead idle instance is ejected and a restarted one returns
//! without waiting for traffic.
//!
//! [`Pool::pick`] chooses among the instances that are up the one with the fewest
//! exchanges in flight, ties broken round-robin (so two idle instances take turns).
//! Only when no instance is up does it try an ejected one whose time is over (a
//! half-open probe). The upstream as a whole is unavailable — its breaker "open" —
//! only when every instance is out ([`Pool::state`]).

use crate::breaker::{Breaker, BreakerConfig, BreakerState, Pass};
use axum::http::uri::Authority;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Instances one upstream may list (one bit each in a retry's `tried` set).
pub const MAX_INSTANCES: usize = 64;

/// The last health probe of one instance.
#[derive(Debug, Clone)]
pub struct Probe {
    pub ok: bool,
    pub at: SystemTime,
    pub latency: Duration,
    /// Public (shown in `/health/upstreams`): a word, never an internal error.
    pub detail: String,
}

/// One address of an upstream service.
#[derive(Debug)]
pub struct Instance {
    /// `http://host:port`.
    pub base: String,
    /// `host:port`: the instance in logs, metrics and `/health/upstreams`.
    pub address: Arc<str>,
    /// The same, parsed: the authority of every request sent to it.
    pub authority: Authority,
    pub breaker: Breaker,
    /// Exchanges sent and not yet finished (until the response body is sent, or
    /// the WebSocket tunnel closes): the balancing signal.
    in_flight: AtomicUsize,
    // A std mutex is right here: a clone or a store, never held across `.await`.
    last_probe: Mutex<Option<Probe>>,
}

impl Instance {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn last_probe(&self) -> Option<Probe> {
        self.last_probe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_probe(&self, probe: Probe) {
        *self.last_probe.lock().unwrap_or_else(|e| e.into_inner()) = Some(probe);
    }

    /// `up`, `ejected`, or `probation` (the ejection is over; the next exchange decides).
    pub fn health(&self) -> &'static str {
        match self.breaker.state() {
            BreakerState::Closed => "up",
            BreakerState::Open => "ejected",
            BreakerState::HalfOpen => "probation",
        }
    }
}

/// Counts one exchange in flight on an instance until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Instance>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The instances of one upstream service.
#[derive(Debug)]
pub struct Pool {
    pub name: &'static str,
    instances: Vec<Arc<Instance>>,
    /// Where the round-robin tie-break starts next.
    next: AtomicUsize,
}

/// The instance chosen for one exchange.
pub struct Pick {
    pub index: usize,
    pub instance: Arc<Instance>,
    /// Report the exchange's outcome on it (passive health).
    pub pass: Pass,
    /// Keep until the exchange is over.
    pub in_flight: InFlight,
}

impl Pool {
    /// At most [`MAX_INSTANCES`] (`Upstream::parse` refuses more).
    pub fn new(name: &'static str, bases: &[String], breaker: BreakerConfig) -> Self {
        let instances = bases
            .iter()
            .take(MAX_INSTANCES)
            .map(|base| {
                let address = base.trim_start_matches("http://");
                Arc::new(Instance {
                    // `Upstream::parse` made `base` from a parsed authority.
                    authority: Authority::try_from(address)
                        .unwrap_or_else(|_| Authority::from_static("invalid.invalid")),
                    address: Arc::from(address),
                    base: base.clone(),
                    breaker: Breaker::new(breaker),
                    in_flight: AtomicUsize::new(0),
                    last_probe: Mutex::new(None),
                })
            })
            .collect();
        Self {
            name,
            instances,
            next: AtomicUsize::new(0),
        }
    }

    pub fn instances(&self) -> &[Arc<Instance>] {
        &self.instances
    }

    /// An instance for one exchange, avoiding the instances in `tried` (a bit per
    /// index) when any other will do; or how long until one may be tried.
    pub fn pick(&self, tried: u64) -> Result<Pick, Duration> {
        let tried = |i: &usize| tried & (1 << i) != 0;
        let count = self.instances.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count.max(1);
        let order = (0..count).map(|i| (start + i) % count);
        // Up instances not yet tried, fewest in flight first (round-robin on ties).
        let best = order
            .clone()
            .filter(|i| !tried(i))
            .filter(|i| self.instances[*i].breaker.state() == BreakerState::Closed)
            .min_by_key(|i| self.instances[*i].in_flight());
        if let Some(index) = best
            && let Ok(pass) = self.instances[index].breaker.admit()
        {
            return Ok(self.take(index, pass));
        }
        // None up (or all tried): an instance whose ejection is over may be probed,
        // then anything that admits, tried ones last.
        let mut wait = Duration::MAX;
        let untried = order.clone().filter(|i| !tried(i));
        let retried = order.filter(tried);
        for index in untried.chain(retried) {
            match self.instances[index].breaker.admit() {
                Ok(pass) => return Ok(self.take(index, pass)),
                Err(until) => wait = wait.min(until),
            }
        }
        Err(wait)
    }

    fn take(&self, index: usize, pass: Pass) -> Pick {
        let instance = self.instances[index].clone();
        instance.in_flight.fetch_add(1, Ordering::Relaxed);
        Pick {
            index,
            in_flight: InFlight(instance.clone()),
            instance,
            pass,
        }
    }

    /// The upstream as a whole: closed while any instance is up, open when every
    /// instance is ejected, half-open otherwise (some may be probed).
    pub fn state(&self) -> BreakerState {
        let mut any_half_open = false;
        for instance in &self.instances {
            match instance.breaker.state() {
                BreakerState::Closed => return BreakerState::Closed,
                BreakerState::HalfOpen => any_half_open = true,
                BreakerState::Open => {}
            }
        }
        if any_half_open {
            BreakerState::HalfOpen
        } else {
            BreakerState::Open
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize, open_for: Duration) -> Pool {
        let bases: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 9000 + i))
            .collect();
        Pool::new(
            "users",
            &bases,
            BreakerConfig {
                failure_threshold: 2,
                open_for,
            },
        )
    }

    #[test]
    fn idle_instances_take_turns() {
        let pool = pool(3, Duration::from_secs(60));
        let mut seen = [0; 3];
        for _ in 0..30 {
            let pick = pool.pick(0).unwrap();
            seen[pick.index] += 1;
            pick.pass.success();
        }
        assert_eq!(seen, [10, 10, 10]);
    }

    #[test]
    fn the_instance_with_fewer_exchanges_in_flight_is_chosen() {
        let pool = pool(2, Duration::from_secs(60));
        let busy = pool.pick(0).unwrap();
        for _ in 0..5 {
            let pick = pool.pick(0).unwrap();
            assert_ne!(pick.index, busy.index);
        }
        drop(busy);
        assert_eq!(pool.instances()[0].in_flight(), 0);
        assert_eq!(pool.instances()[1].in_flight(), 0);
    }

    #[test]
    fn a_failing_instance_is_ejected_and_the_upstream_stays_closed_until_all_are() {
        let pool = pool(2, Duration::from_secs(60));
        pool.instances()[1].breaker.record_failure();
        pool.instances()[1].breaker.record_failure();
        assert_eq!(pool.instances()[1].health(), "ejected");
        assert_eq!(pool.state(), BreakerState::Closed);
        for _ in 0..10 {
            assert_eq!(pool.pick(0).unwrap().index, 0);
        }
        pool.instances()[0].breaker.record_failure();
        pool.instances()[0].breaker.record_failure();
        assert_eq!(pool.state(), BreakerState::Open);
        assert!(pool.pick(0).is_err());
    }

    #[test]
    fn a_retry_goes_to_another_instance_when_there_is_one() {
        let pool = pool(2, Duration::from_secs(60));
        for _ in 0..5 {
            let first = pool.pick(0).unwrap();
            let second = pool.pick(1 << first.index).unwrap();
            assert_ne!(first.index, second.index);
        }
        let single = self::pool(1, Duration::from_secs(60));
        assert_eq!(single.pick(1).unwrap().index, 0, "the only one, again");
    }

    #[test]
    fn after_the_ejection_one_probe_may_pass() {
        let pool = pool(1, Duration::ZERO);
        pool.instances()[0].breaker.record_failure();
        pool.instances()[0].breaker.record_failure();
        assert_eq!(pool.state(), BreakerState::HalfOpen);
        let probe = pool.pick(0).expect("a probe passes");
        assert!(pool.pick(0).is_err(), "one probe at a time");
        probe.pass.success();
        assert_eq!(pool.state(), BreakerState::Closed);
    }
}
