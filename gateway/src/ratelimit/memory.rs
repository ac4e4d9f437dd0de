//! The in-process GCRA limiter (embedded mode: one gateway process).

use super::{Decision, LimiterError, Quota, RateLimiter};
use servicekit::tokens::BoxFuture;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets are swept of idle entries once the map holds this many.
const SWEEP_AT: usize = 100_000;

/// GCRA buckets in a map: key → TAT in µs since `epoch`.
pub struct MemoryLimiter {
    epoch: Instant,
    // A std mutex is right here: held for a map lookup and an add, never across
    // an `.await`.
    buckets: Mutex<HashMap<String, u64>>,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLimiter {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX / 2)
    }

    /// The decision, applied. Synchronous: the async trait wraps it.
    pub fn check_now(&self, key: &str, quota: Quota) -> Decision {
        let now = self.now_us();
        // A poisoned lock only means a panic elsewhere between two plain integer
        // writes: the map is still consistent.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT {
            // A bucket whose TAT has passed is full again: forgetting it changes nothing.
            buckets.retain(|_, tat| *tat > now);
        }
        let tat = buckets.get(key).copied().unwrap_or(now).max(now);
        let decision = quota.decide(tat - now);
        if decision.allowed {
            let new_tat = tat.saturating_add(quota.emission_us());
            match buckets.get_mut(key) {
                Some(slot) => *slot = new_tat,
                None => {
                    buckets.insert(key.to_owned(), new_tat);
                }
            }
        }
        decision
    }
}

impl RateLimiter for MemoryLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<Decision, LimiterError>> {
        let decision = self.check_now(key, quota);
        Box::pin(async move { Ok(decision) })
    }
}
