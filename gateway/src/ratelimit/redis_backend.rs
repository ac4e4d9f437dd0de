//! The Redis GCRA limiter: every gateway replica shares each budget.
//!
//! Key shape: `{prefix}{bucket}` (the gateway uses `gateway:rl:{class}:{ip|user}:{id}`),
//! a string holding the bucket's TAT in µs of Redis's clock, expiring when the
//! bucket is full again. The whole decision is one Lua script reading `TIME` inside
//! Redis, so it is atomic and independent of the replicas' clocks.

use super::{Decision, LimiterError, Quota, RateLimiter};
use redis::aio::ConnectionManager;
use servicekit::tokens::BoxFuture;
use std::time::Duration;

/// KEYS[1] the bucket; ARGV[1] emission interval µs; ARGV[2] tolerance µs
/// (burst × emission). Returns {allowed 0|1, tat_ahead_before µs}.
///
/// Lua numbers are doubles: µs since the epoch (≈ 1.8e15) are exact below 2^53.
/// `%.0f` keeps SET from writing them in exponent notation.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + emission
if new_tat - now > tolerance then
  return {0, string.format('%.0f', tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, string.format('%.0f', tat - now)}
";

/// How long a check may take before the gateway answers without it.
const CHECK_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct RedisLimiter {
    conn: ConnectionManager,
    script: redis::Script,
    prefix: String,
}

impl RedisLimiter {
    /// Keys are `{prefix}{key}`.
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self {
            conn,
            script: redis::Script::new(GCRA),
            prefix: prefix.into(),
        }
    }
}

impl RateLimiter for RedisLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<Decision, LimiterError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut invocation = self.script.key(format!("{}{key}", self.prefix));
            invocation
                .arg(quota.emission_us())
                .arg(quota.tolerance_us());
            let call = invocation.invoke_async::<(i64, String)>(&mut conn);
            let (allowed, tat_ahead) = match tokio::time::timeout(CHECK_TIMEOUT, call).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(err)) => return Err(LimiterError(err.to_string())),
                Err(_) => return Err(LimiterError(format!("no answer within {CHECK_TIMEOUT:?}"))),
            };
            let tat_ahead: u64 = tat_ahead
                .parse()
                .map_err(|_| LimiterError(format!("script answered `{tat_ahead}`")))?;
            let decision = quota.decide(tat_ahead);
            if decision.allowed != (allowed == 1) {
                // Cannot happen unless the script and `decide` disagree on the rule.
                return Err(LimiterError("script and rule disagree".into()));
            }
            Ok(decision)
        })
    }
}
