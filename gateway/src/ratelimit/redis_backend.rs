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

/// The address buckets, the revocation check and the user's bucket of one
/// request with a validly signed token, in one round trip (they were three).
///
/// KEYS: the buckets (address ones first, then the user's), then auth's
/// revocation keys: the completeness marker, `jti`, `sid`. ARGV[1] bucket count,
/// ARGV[2] how many are address buckets (checked before the revocation), then
/// emission and tolerance µs per bucket. Buckets are checked in order and the
/// first refusal stops the script (later buckets are not charged), as separate
/// checks would. Answers `{status, allowed₁, ahead₁, …}`, status `ok`,
/// `limited`, `revoked` or `unavailable` (no marker: fail closed).
const EDGE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local before = tonumber(ARGV[2])
local out = {'ok'}
for i = 1, n do
  if i == before + 1 then
    local v = redis.call('MGET', KEYS[n + 1], KEYS[n + 2], KEYS[n + 3])
    if not v[1] then out[1] = 'unavailable'; return out end
    if v[2] or v[3] then out[1] = 'revoked'; return out end
  end
  local emission = tonumber(ARGV[1 + 2 * i])
  local tolerance = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + emission
  if new_tat - now > tolerance then
    table.insert(out, 0)
    table.insert(out, string.format('%.0f', tat - now))
    out[1] = 'limited'
    return out
  end
  redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
  table.insert(out, 1)
  table.insert(out, string.format('%.0f', tat - now))
end
return out
";

/// What [`EdgeCheck::run`] found.
#[derive(Debug)]
pub enum EdgeAnswer {
    /// Every bucket let it through (decisions in bucket order).
    Allowed(Vec<Decision>),
    /// The last decision refused; the earlier ones allowed.
    Limited(Vec<Decision>),
    /// Revoked (decisions of the address buckets).
    Revoked(Vec<Decision>),
    /// Revocation cannot be known (auth has not seeded Redis).
    Unavailable(Vec<Decision>),
}

/// The combined check of [`EDGE`]. Cheap to clone.
#[derive(Clone)]
pub struct EdgeCheck {
    conn: ConnectionManager,
    script: redis::Script,
    prefix: String,
}

impl EdgeCheck {
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self {
            conn,
            script: redis::Script::new(EDGE),
            prefix: prefix.into(),
        }
    }

    /// `address` buckets, then the revocation of `(jti, sid)`, then `user`.
    pub async fn run(
        &self,
        address: &[(String, Quota)],
        user: (String, Quota),
        claims: &proto::auth::AccessClaims,
    ) -> Result<EdgeAnswer, LimiterError> {
        use proto::auth::revocation_keys;
        let mut conn = self.conn.clone();
        let buckets: Vec<&(String, Quota)> = address.iter().chain(Some(&user)).collect();
        let mut invocation = self.script.prepare_invoke();
        for (key, _) in &buckets {
            invocation.key(format!("{}{key}", self.prefix));
        }
        invocation
            .key(revocation_keys::COMPLETE)
            .key(revocation_keys::jti(&claims.jti))
            .key(revocation_keys::sid(&claims.sid))
            .arg(buckets.len())
            .arg(address.len());
        for (_, quota) in &buckets {
            invocation
                .arg(quota.emission_us())
                .arg(quota.tolerance_us());
        }
        let call = invocation.invoke_async::<Vec<redis::Value>>(&mut conn);
        let answer = match tokio::time::timeout(CHECK_TIMEOUT, call).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => return Err(LimiterError(err.to_string())),
            Err(_) => return Err(LimiterError(format!("no answer within {CHECK_TIMEOUT:?}"))),
        };
        let text = |value: &redis::Value| -> Option<String> {
            redis::from_redis_value::<String>(value.clone()).ok()
        };
        let status = answer.first().and_then(text).unwrap_or_default();
        let mut decisions = Vec::new();
        for (i, pair) in answer[1.min(answer.len())..].chunks(2).enumerate() {
            let (Some(quota), [allowed, ahead]) = (buckets.get(i).map(|b| b.1), pair) else {
                return Err(LimiterError("script answered an odd list".into()));
            };
            let allowed = redis::from_redis_value::<i64>(allowed.clone())
                .map_err(|err| LimiterError(err.to_string()))?;
            let ahead: u64 = text(ahead)
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| LimiterError("script answered a bad TAT".into()))?;
            let decision = quota.decide(ahead);
            if decision.allowed != (allowed == 1) {
                return Err(LimiterError("script and rule disagree".into()));
            }
            decisions.push(decision);
        }
        Ok(match status.as_str() {
            "ok" => EdgeAnswer::Allowed(decisions),
            "limited" => EdgeAnswer::Limited(decisions),
            "revoked" => EdgeAnswer::Revoked(decisions),
            "unavailable" => EdgeAnswer::Unavailable(decisions),
            other => return Err(LimiterError(format!("script answered `{other}`"))),
        })
    }
}
