//! Brute-force protection: failures counted per key (an account's email, a client
//! IP, a mailbox), with a delay that doubles after each failure past a free
//! allowance. A blocked key is answered `429 rate_limited` with `Retry-After` at
//! once, before any password is hashed.
//!
//! State is in process memory: each auth replica counts on its own, so N replicas
//! allow up to N times the attempts. That is still a hard exponential bound; a shared
//! Redis counter is the next step when auth runs replicated.
//!
//! The account key is the normalised email whether or not the account exists, so
//! throttling reveals nothing about which emails are registered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How one kind of key is throttled.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures allowed before any delay.
    pub free: u32,
    /// The first delay; each further failure doubles it.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A key with no failure for this long starts afresh.
    pub forget_after: Duration,
}

impl Policy {
    fn delay_after(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.free)?.checked_sub(1)?;
        let factor = 1u32.checked_shl(over.min(20)).unwrap_or(u32::MAX);
        Some(self.base.saturating_mul(factor).min(self.max))
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

/// Keys past this count trigger pruning of forgotten entries.
const PRUNE_AT: usize = 50_000;

/// Cheap to clone. A std mutex is right here: it is held for a few map operations
/// and never across an `.await`.
#[derive(Clone)]
pub struct Throttle {
    policy: Policy,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Throttle {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            entries: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Poisoning needs a panic inside the few lines below; the map is still valid.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(retry_after)` while `key` is blocked.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        match self.lock().get(key).and_then(|e| e.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Count a failure; returns the new block, if this failure starts one.
    pub fn fail(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut entries = self.lock();
        if entries.len() >= PRUNE_AT {
            let forget = self.policy.forget_after;
            entries.retain(|_, e| {
                now.duration_since(e.last_failure) < forget
                    || e.blocked_until.is_some_and(|u| u > now)
            });
        }
        let entry = entries.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            last_failure: now,
            blocked_until: None,
        });
        if now.duration_since(entry.last_failure) >= self.policy.forget_after
            && entry.blocked_until.is_none_or(|u| u <= now)
        {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        let delay = self.policy.delay_after(entry.failures)?;
        entry.blocked_until = Some(now + delay);
        Some(delay)
    }

    /// Forget a key's failures (a successful sign-in).
    pub fn succeed(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
pub fn retry_after_secs(delay: Duration) -> u64 {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            free: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            forget_after: Duration::from_secs(600),
        }
    }

    #[test]
    fn delays_start_after_the_free_failures_and_double() {
        let throttle = Throttle::new(policy());
        let t0 = Instant::now();
        assert_eq!(throttle.fail("k", t0), None);
        assert_eq!(throttle.fail("k", t0), None);
        assert_eq!(throttle.fail("k", t0), None);
        assert!(throttle.check("k", t0).is_ok());
        assert_eq!(throttle.fail("k", t0), Some(Duration::from_secs(1)));
        assert_eq!(throttle.check("k", t0), Err(Duration::from_secs(1)));
        assert_eq!(throttle.fail("k", t0), Some(Duration::from_secs(2)));
        assert_eq!(throttle.fail("k", t0), Some(Duration::from_secs(4)));
        for _ in 0..40 {
            throttle.fail("k", t0);
        }
        assert_eq!(throttle.check("k", t0), Err(Duration::from_secs(60)));
        assert!(throttle.check("k", t0 + Duration::from_secs(61)).is_ok());
        assert!(throttle.check("other", t0).is_ok());
    }

    #[test]
    fn success_and_time_forget_failures() {
        let throttle = Throttle::new(policy());
        let t0 = Instant::now();
        for _ in 0..4 {
            throttle.fail("k", t0);
        }
        throttle.succeed("k");
        assert!(throttle.check("k", t0).is_ok());
        for _ in 0..3 {
            throttle.fail("k", t0);
        }
        let later = t0 + Duration::from_secs(601);
        assert_eq!(throttle.fail("k", later), None);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
