//! Signed-out access tokens and sessions.
//!
//! The relational store is the source of truth (`revoked_access_tokens`, and
//! `sessions.revoked_at`); Redis, when configured, is a cache other services can read
//! without calling auth (key shapes in [`proto::auth::revocation_keys`]).
//!
//! Keeping the cache honest: every revocation is written to the database first, then
//! to Redis. If the Redis write fails, the completeness marker is deleted, so readers
//! stop trusting the cache. A maintenance task re-seeds Redis from the database
//! whenever the marker is missing (after a Redis restart, or such a failure) and then
//! sets it again. Readers that find no marker fall back (auth reads the database;
//! `servicekit::tokens::RedisRevocations` fails closed).

use crate::store::{Millis, Store, StoreError};
use proto::auth::{AccessClaims, revocation_keys};
use redis::aio::ConnectionManager;
use servicekit::tokens::{BoxFuture, RevocationCheck, TokenError};
use std::time::Duration;
use uuid::Uuid;

/// How long a Redis call may take before the database answers instead.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// Cache entries outlive what they guard by this much (clock leeway of verifiers).
const MARGIN_MS: Millis = 10_000;

/// Cheap to clone.
#[derive(Clone)]
pub struct Revocations {
    store: Store,
    redis: Option<ConnectionManager>,
    /// Access-token lifetime: a revoked session matters for this long.
    access_ttl_ms: Millis,
}

impl Revocations {
    pub fn new(store: Store, redis: Option<ConnectionManager>, access_ttl: Duration) -> Self {
        Self {
            store,
            redis,
            access_ttl_ms: i64::try_from(access_ttl.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Sign out one access token until it would have expired.
    pub async fn revoke_token(
        &self,
        jti: Uuid,
        expires_at: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.store.revoke_access_token(jti, expires_at).await?;
        self.cache(&[(revocation_keys::jti(&jti), expires_at - now + MARGIN_MS)])
            .await;
        Ok(())
    }

    /// Put sessions already revoked in the database into the cache.
    pub async fn sessions_revoked(&self, sessions: &[Uuid]) {
        let ttl = self.access_ttl_ms + MARGIN_MS;
        let entries: Vec<_> = sessions
            .iter()
            .map(|sid| (revocation_keys::sid(sid), ttl))
            .collect();
        self.cache(&entries).await;
    }

    async fn cache(&self, entries: &[(String, Millis)]) {
        let Some(redis) = &self.redis else { return };
        if entries.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (key, ttl_ms) in entries {
            if *ttl_ms > 0 {
                pipe.cmd("SET")
                    .arg(key)
                    .arg("1")
                    .arg("PX")
                    .arg(*ttl_ms)
                    .ignore();
            }
        }
        let mut conn = redis.clone();
        let result = tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::warn!("cannot cache a revocation in Redis; marking the cache incomplete");
            let mut conn = redis.clone();
            let _ = tokio::time::timeout(
                REDIS_TIMEOUT,
                redis::cmd("DEL")
                    .arg(revocation_keys::COMPLETE)
                    .query_async::<()>(&mut conn),
            )
            .await;
        }
    }

    /// Whether a token (or its session) is revoked: Redis when it is complete,
    /// otherwise the database.
    pub async fn is_revoked(&self, jti: Uuid, sid: Uuid) -> Result<bool, StoreError> {
        if let Some(redis) = &self.redis {
            let mut conn = redis.clone();
            let mut cmd = redis::cmd("MGET");
            cmd.arg(revocation_keys::COMPLETE)
                .arg(revocation_keys::jti(&jti))
                .arg(revocation_keys::sid(&sid));
            let query = cmd.query_async::<Vec<Option<String>>>(&mut conn);
            if let Ok(Ok(values)) = tokio::time::timeout(REDIS_TIMEOUT, query).await
                && let [Some(_), by_jti, by_sid] = values.as_slice()
            {
                return Ok(by_jti.is_some() || by_sid.is_some());
            }
        }
        self.store.is_revoked(jti, sid).await
    }

    /// Re-fill Redis from the database if its completeness marker is missing.
    /// Returns whether it seeded.
    pub async fn reseed_if_needed(&self, now: Millis) -> Result<bool, String> {
        let Some(redis) = &self.redis else {
            return Ok(false);
        };
        let mut conn = redis.clone();
        let exists = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("EXISTS")
                .arg(revocation_keys::COMPLETE)
                .query_async::<i64>(&mut conn),
        )
        .await
        .map_err(|_| "redis timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        if exists == 1 {
            return Ok(false);
        }
        let active = self
            .store
            .active_revocations(now, self.access_ttl_ms + MARGIN_MS)
            .await
            .map_err(|e| e.to_string())?;
        let mut pipe = redis::pipe();
        for (jti, expires_at) in &active.tokens {
            pipe.cmd("SET")
                .arg(revocation_keys::jti(jti))
                .arg("1")
                .arg("PX")
                .arg((expires_at - now + MARGIN_MS).max(1))
                .ignore();
        }
        for (sid, revoked_at) in &active.sessions {
            pipe.cmd("SET")
                .arg(revocation_keys::sid(sid))
                .arg("1")
                .arg("PX")
                .arg((revoked_at + self.access_ttl_ms + MARGIN_MS - now).max(1))
                .ignore();
        }
        pipe.cmd("SET")
            .arg(revocation_keys::COMPLETE)
            .arg("1")
            .ignore();
        tokio::time::timeout(Duration::from_secs(5), pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| "redis timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        tracing::info!(
            tokens = active.tokens.len(),
            sessions = active.sessions.len(),
            "seeded the revocation cache in Redis"
        );
        Ok(true)
    }
}

impl RevocationCheck for Revocations {
    fn is_revoked<'a>(
        &'a self,
        _token: &'a str,
        claims: &'a AccessClaims,
    ) -> BoxFuture<'a, Result<bool, TokenError>> {
        Box::pin(async move {
            Revocations::is_revoked(self, claims.jti, claims.sid)
                .await
                .map_err(|err| {
                    tracing::warn!(error = %err, "revocation check failed");
                    TokenError::Unavailable
                })
        })
    }
}
