//! Rate limiting with GCRA (the generic cell rate algorithm).
//!
//! A bucket is one number, its *theoretical arrival time* (TAT): the instant at
//! which it would be empty again if nothing more arrived. A quota lets one request
//! through every `emission` interval with a burst of `burst` requests, so over any
//! window of length `t` at most `burst + t / emission` requests pass. A request at
//! `now` is allowed when `max(tat, now) + emission - now <= burst × emission`, and
//! then moves the TAT forward by one emission interval; a refused request changes
//! nothing.
//!
//! Two backends implement [`RateLimiter`] and pass the same test suite
//! (`tests/api/ratelimit.rs`): [`RedisLimiter`] (one Lua script using Redis's own
//! clock, so every gateway replica shares each budget) and [`MemoryLimiter`] (one
//! process, the embedded mode).

mod memory;
mod redis_backend;

pub use memory::MemoryLimiter;
pub use redis_backend::{EdgeAnswer, EdgeCheck, RedisLimiter};

use servicekit::tokens::BoxFuture;
use std::time::Duration;

/// A budget: `burst` requests at once, then one per `emission` interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub burst: u32,
    pub emission: Duration,
}

impl Quota {
    /// `rate` requests per `period` on average, up to `burst` at once.
    pub fn new(rate: u32, period: Duration, burst: u32) -> Quota {
        let rate = rate.max(1);
        Quota {
            burst: burst.max(1),
            emission: (period / rate).max(Duration::from_micros(1)),
        }
    }

    /// Parse `RATE/UNIT,BURST`, where UNIT is `s`, `m` or `h`: `20/s,100` lets 100
    /// requests through at once, then 20 a second.
    pub fn parse(text: &str) -> Result<Quota, String> {
        let bad = || format!("`{text}` is not RATE/UNIT,BURST (for example 20/s,100)");
        let (rate, rest) = text.trim().split_once('/').ok_or_else(bad)?;
        let (unit, burst) = rest.split_once(',').ok_or_else(bad)?;
        let rate: u32 = rate.trim().parse().map_err(|_| bad())?;
        let burst: u32 = burst.trim().parse().map_err(|_| bad())?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if rate == 0 || burst == 0 {
            return Err(format!("`{text}`: rate and burst must be at least 1"));
        }
        Ok(Quota::new(rate, period, burst))
    }

    /// The emission interval in microseconds (at least 1).
    pub fn emission_us(&self) -> u64 {
        u64::try_from(self.emission.as_micros())
            .unwrap_or(u64::MAX / 4)
            .max(1)
    }

    /// How far ahead of now the TAT may run: `burst × emission`, in microseconds.
    pub fn tolerance_us(&self) -> u64 {
        self.emission_us().saturating_mul(u64::from(self.burst))
    }

    /// The decision for a bucket whose TAT, after this request, would be
    /// `new_tat_ahead` µs ahead of now (`tat_ahead` before it).
    pub(crate) fn decide(&self, tat_ahead: u64) -> Decision {
        let emission = self.emission_us();
        let tolerance = self.tolerance_us();
        let new_tat_ahead = tat_ahead.saturating_add(emission);
        if new_tat_ahead > tolerance {
            Decision {
                allowed: false,
                limit: self.burst,
                remaining: 0,
                reset: Duration::from_micros(tat_ahead),
                retry_after: Duration::from_micros(new_tat_ahead - tolerance),
            }
        } else {
            let remaining = (tolerance - new_tat_ahead) / emission;
            Decision {
                allowed: true,
                limit: self.burst,
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                reset: Duration::from_micros(new_tat_ahead),
                retry_after: Duration::ZERO,
            }
        }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The burst size (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests that would still pass right now (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Until the bucket is full again (`RateLimit-Reset`).
    pub reset: Duration,
    /// When refused: until one request would pass (`Retry-After`).
    pub retry_after: Duration,
}

impl Decision {
    /// Of two decisions, the one a client should be shown: a refusal first,
    /// otherwise the one with fewer requests left.
    pub fn tighter(self, other: Decision) -> Decision {
        match (self.allowed, other.allowed) {
            (false, true) => self,
            (true, false) => other,
            _ if other.remaining < self.remaining => other,
            _ => self,
        }
    }
}

/// The limiter could not answer (Redis down or slow).
#[derive(Debug, Clone, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterError(pub String);

/// A rate-limiter backend. `key` names the bucket; each call counts one request.
pub trait RateLimiter: Send + Sync + 'static {
    fn check<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<Decision, LimiterError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse_rate_unit_and_burst() {
        let q = Quota::parse("20/s,100").unwrap();
        assert_eq!(q.burst, 100);
        assert_eq!(q.emission, Duration::from_millis(50));
        assert_eq!(
            Quota::parse("10/m, 5").unwrap().emission,
            Duration::from_secs(6)
        );
        for bad in [
            "", "20", "20/s", "x/s,1", "20/d,1", "0/s,1", "1/s,0", "-1/s,2",
        ] {
            assert!(Quota::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decisions_count_down_the_burst_then_refuse() {
        let q = Quota::new(10, Duration::from_secs(1), 3); // 100 ms per request
        let first = q.decide(0);
        assert!(first.allowed);
        assert_eq!(first.remaining, 2);
        let third = q.decide(200_000);
        assert!(third.allowed);
        assert_eq!(third.remaining, 0);
        let fourth = q.decide(300_000);
        assert!(!fourth.allowed);
        assert_eq!(fourth.retry_after, Duration::from_millis(100));
    }

    #[test]
    fn the_tighter_decision_is_a_refusal_or_the_one_with_less_left() {
        let q = Quota::new(1, Duration::from_secs(1), 5);
        let roomy = q.decide(0);
        let tight = q.decide(3_000_000);
        let refused = q.decide(5_000_000);
        assert_eq!(roomy.tighter(tight), tight);
        assert_eq!(tight.tighter(refused), refused);
        assert_eq!(refused.tighter(roomy), refused);
    }
}
