//! Brute-force protection: failures counted per key (an account's email, a client
//! IP, a mailbox), with a delay that doubles after each failure past a free
//! allowance. A blocked key is answered `429 rate_limited` with `Retry-After` at
//! once, before any password is hashed.
//!
//! Two backends behind one [`Throttle`], chosen at start-up: with Redis configured
//! every auth replica counts in Redis ([`RedisCounts`], one Lua script per call,
//! Redis `TIME` as the clock), so N replicas allow no more attempts than one; without
//! Redis the counts are in process memory ([`MemoryCounts`]). Both follow the same
//! rule and pass the same tests (`auth/tests/api/throttle.rs`). If Redis does not
//! answer within [`REDIS_TIMEOUT`], that call falls back to this replica's memory
//! (logged): Redis down must not stop sign-ins, and the bound stays exponential.
//!
//! The account key is the normalised email whether or not the account exists, so
//! throttling reveals nothing about which emails are registered.

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a throttle waits for Redis before using its memory counts.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Where a throttle counts: one hash per key,
/// `{namespace}:{kind}:{base64url(SHA-256(key))}` with fields `failures`, `last`
/// (Unix ms of the last failure) and `until` (Unix ms the block ends, 0 for none),
/// expiring when the key would be forgotten anyway. The key is hashed so Redis
/// never holds an email address.
pub const DEFAULT_REDIS_NAMESPACE: &str = "auth:throttle";

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

/// Counts in this process. Cheap to clone. A std mutex is right here: it is held
/// for a few map operations and never across an `.await`.
#[derive(Clone)]
pub struct MemoryCounts {
    policy: Policy,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl MemoryCounts {
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

/// Fails the given key and answers the new block in ms (0: none).
const FAIL_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local free, base, max, forget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local f = redis.call('HMGET', KEYS[1], 'failures', 'last', 'until')
local failures = tonumber(f[1]) or 0
local last = tonumber(f[2]) or now
local blocked = tonumber(f[3]) or 0
if now - last >= forget and blocked <= now then failures = 0 end
failures = failures + 1
local delay = 0
local over = failures - free - 1
if over >= 0 then
  if over > 20 then over = 20 end
  delay = math.min(base * (2 ^ over), max)
  blocked = now + delay
end
redis.call('HSET', KEYS[1], 'failures', failures, 'last', now, 'until', blocked)
local ttl = forget
if blocked - now > ttl then ttl = blocked - now end
redis.call('PEXPIRE', KEYS[1], math.floor(ttl))
return math.floor(delay)
";

/// Answers the ms left on the key's block (0: not blocked).
const CHECK_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local blocked = tonumber(redis.call('HGET', KEYS[1], 'until')) or 0
if blocked > now then return blocked - now end
return 0
";

/// Counts in Redis, shared by every replica. Cheap to clone.
#[derive(Clone)]
pub struct RedisCounts {
    conn: ConnectionManager,
    /// `{namespace}:{kind}`
    prefix: String,
    fail: Arc<redis::Script>,
    check: Arc<redis::Script>,
}

impl RedisCounts {
    pub fn new(conn: ConnectionManager, namespace: &str, kind: &str) -> Self {
        Self {
            conn,
            prefix: format!("{namespace}:{kind}"),
            fail: Arc::new(redis::Script::new(FAIL_SCRIPT)),
            check: Arc::new(redis::Script::new(CHECK_SCRIPT)),
        }
    }

    fn redis_key(&self, key: &str) -> String {
        let digest = digest::digest(&digest::SHA256, key.as_bytes());
        format!("{}:{}", self.prefix, URL_SAFE_NO_PAD.encode(digest))
    }

    async fn check(&self, key: &str) -> Result<Option<Duration>, String> {
        let mut conn = self.conn.clone();
        let call = self.check.key(self.redis_key(key));
        let left: u64 = timed(call.invoke_async(&mut conn)).await?;
        Ok((left > 0).then(|| Duration::from_millis(left)))
    }

    async fn fail(&self, key: &str, policy: &Policy) -> Result<Option<Duration>, String> {
        let mut conn = self.conn.clone();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut call = self.fail.key(self.redis_key(key));
        call.arg(policy.free)
            .arg(ms(policy.base))
            .arg(ms(policy.max))
            .arg(ms(policy.forget_after));
        let delay: u64 = timed(call.invoke_async(&mut conn)).await?;
        Ok((delay > 0).then(|| Duration::from_millis(delay)))
    }

    async fn forget(&self, key: &str) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.redis_key(key));
        timed(cmd.query_async::<()>(&mut conn)).await
    }
}

async fn timed<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {REDIS_TIMEOUT:?}")),
    }
}

/// One kind of throttle (accounts, addresses, mailboxes, sign-ups) over either
/// backend. Cheap to clone.
#[derive(Clone)]
pub struct Throttle {
    memory: MemoryCounts,
    redis: Option<RedisCounts>,
}

impl Throttle {
    /// Counts in this process only.
    pub fn in_memory(policy: Policy) -> Self {
        Self {
            memory: MemoryCounts::new(policy),
            redis: None,
        }
    }

    /// Counts in Redis under `{namespace}:{kind}:…`, shared with every replica.
    pub fn in_redis(policy: Policy, conn: ConnectionManager, namespace: &str, kind: &str) -> Self {
        Self {
            memory: MemoryCounts::new(policy),
            redis: Some(RedisCounts::new(conn, namespace, kind)),
        }
    }

    /// Which backend counts: `"redis"` or `"memory"`.
    pub fn backend(&self) -> &'static str {
        if self.redis.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    /// `Err(retry_after)` while `key` is blocked.
    pub async fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if let Some(redis) = &self.redis {
            match redis.check(key).await {
                Ok(None) => return Ok(()),
                Ok(Some(left)) => return Err(left),
                Err(err) => {
                    tracing::warn!(error = %err, "throttle: Redis unavailable, counting in memory")
                }
            }
        }
        self.memory.check(key, now)
    }

    /// Count a failure; returns the new block, if this failure starts one.
    pub async fn fail(&self, key: &str, now: Instant) -> Option<Duration> {
        if let Some(redis) = &self.redis {
            match redis.fail(key, &self.memory.policy).await {
                Ok(delay) => return delay,
                Err(err) => {
                    tracing::warn!(error = %err, "throttle: Redis unavailable, counting in memory")
                }
            }
        }
        self.memory.fail(key, now)
    }

    /// Forget a key's failures (a successful sign-in).
    pub async fn succeed(&self, key: &str) {
        if let Some(redis) = &self.redis
            && let Err(err) = redis.forget(key).await
        {
            tracing::warn!(error = %err, "throttle: Redis unavailable");
        }
        self.memory.succeed(key);
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
        let throttle = MemoryCounts::new(policy());
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
        let throttle = MemoryCounts::new(policy());
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
