//! `Password` (the rules a new password must meet) and `PasswordHasher` (Argon2id on
//! the blocking pool, behind a semaphore).

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// A new password that meets the rules: 8–128 characters, not a well-known one.
///
/// Only new passwords go through this; a sign-in compares whatever was typed.
#[derive(Clone)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WeakPassword(pub &'static str);

/// Passwords of 8+ characters that top the breach lists (shorter ones fail the
/// length rule anyway). Compared case-insensitively.
const COMMON: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "password1234",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "12345678",
    "123456789",
    "1234567890",
    "12345678910",
    "0123456789",
    "87654321",
    "11111111",
    "00000000",
    "123123123",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "1qaz2wsx",
    "qwertyui",
    "qwertyuiop",
    "qwerty123",
    "qwerty12345",
    "asdfghjkl",
    "zxcvbnm123",
    "iloveyou",
    "iloveyou1",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "superman",
    "starwars",
    "whatever",
    "trustno1",
    "letmein1",
    "letmeinplease",
    "welcome1",
    "welcome123",
    "admin123",
    "administrator",
    "changeme",
    "changeme123",
    "computer",
    "internet",
    "michelle",
    "jennifer",
    "charlie1",
    "shadow123",
    "master123",
    "dragon123",
    "monkey123",
    "abc12345",
    "abcd1234",
    "abcdefgh",
    "aa123456",
    "q1w2e3r4",
    "q1w2e3r4t5",
    "default1",
    "meetease",
    "meetease1",
    "meetease123",
];

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: &str) -> Result<Password, WeakPassword> {
        let chars = raw.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(WeakPassword("the password must be at least 8 characters"));
        }
        if chars > Self::MAX_CHARS {
            return Err(WeakPassword("the password must be at most 128 characters"));
        }
        let lower = raw.to_lowercase();
        let mut distinct = lower.chars().collect::<Vec<_>>();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < 3 || COMMON.contains(&lower.as_str()) {
            return Err(WeakPassword("the password is too common"));
        }
        Ok(Password(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Why hashing did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every hashing slot stayed busy for the whole queue timeout: shed the request.
    #[error("password hashing is saturated")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Argon2id with the crate's defaults (the OWASP minimum: 19 MiB, t=2, p=1).
///
/// Hashing takes tens of milliseconds of CPU, so it runs on the blocking pool and at
/// most `concurrency` hashes run at once; others queue (at most `16 × concurrency` of
/// them, about half a second of work, for at most `queue_timeout`) and are otherwise
/// refused at once (503 `overloaded` + `Retry-After`) instead of piling up: at twice
/// the capacity, latency stays bounded (`docs/benchmarks/auth.md`). A sign-in for an
/// unknown account verifies against a dummy hash so it costs the same time as one
/// with a wrong password.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
    /// Requests waiting for a permit; past `max_waiting` new ones are refused at
    /// once, so a flood is shed in microseconds instead of timing out in the queue.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    dummy_hash: Arc<str>,
}

/// Decrements the waiting count however the wait ends.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PasswordHasher {
    pub async fn new(concurrency: usize, queue_timeout: Duration) -> Result<Self, HashError> {
        let concurrency = concurrency.max(1);
        let mut hasher = Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            queue_timeout,
            waiting: Arc::default(),
            // About half a second of work queued at ~30 ms per hash per core.
            max_waiting: concurrency * 16,
            dummy_hash: Arc::from(""),
        };
        let dummy = super::OpaqueToken::generate()
            .map_err(|_| HashError::Failed("no randomness for the dummy hash".into()))?;
        hasher.dummy_hash = Arc::from(hasher.hash_raw(dummy.expose().to_owned()).await?);
        Ok(hasher)
    }

    /// Whether the queue is full, so a hash asked for now would be refused: lets a
    /// handler shed a request before it spends database and Redis work on it.
    pub fn saturated(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) >= self.max_waiting
    }

    /// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) of a new password.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        self.hash_raw(password.expose().to_owned()).await
    }

    async fn hash_raw(&self, password: String) -> Result<String, HashError> {
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash: PasswordHash| hash.to_string())
                .map_err(|err| HashError::Failed(err.to_string()))
        })
        .await
    }

    /// Whether `password` matches `stored`; with no stored hash (no such account) the
    /// same work is done against the dummy hash and the answer is `false`.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, HashError> {
        let known = stored.is_some();
        let phc = stored.unwrap_or(&self.dummy_hash).to_owned();
        let password = password.to_owned();
        let matches = self
            .run(move || {
                let hash =
                    PasswordHash::new(&phc).map_err(|err| HashError::Failed(err.to_string()))?;
                Ok(Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(HashError::Busy);
        }
        let waiting = Waiting(self.waiting.clone());
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        drop(waiting);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|err| HashError::Failed(err.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_must_be_8_to_128_characters() {
        assert!(Password::parse("xkcd936").is_err());
        assert!(Password::parse("xkcd9362").is_ok());
        assert!(Password::parse(&"ab3".repeat(42)).is_ok());
        assert!(Password::parse(&"ab3".repeat(43)).is_err());
        // Characters, not bytes: 8 two-byte characters are enough.
        assert!(Password::parse("éàüößçñø").is_ok());
    }

    #[test]
    fn common_and_monotonous_passwords_are_refused() {
        for bad in [
            "password",
            "PassWord123",
            "12345678",
            "qwertyuiop",
            "aaaaaaaaaaaa",
            "abababab",
        ] {
            assert_eq!(
                Password::parse(bad).unwrap_err(),
                WeakPassword("the password is too common"),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_only_its_own_password() {
        let hasher = PasswordHasher::new(2, Duration::from_secs(5))
            .await
            .unwrap();
        let password = Password::parse("correct horse battery").unwrap();
        let phc = hasher.hash(&password).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(
            hasher
                .verify("correct horse battery", Some(&phc))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("correct horse batterz", Some(&phc))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("correct horse battery", None).await.unwrap());
    }

    #[tokio::test]
    async fn a_flood_beyond_the_queue_is_refused_at_once() {
        let hasher = PasswordHasher::new(1, Duration::from_secs(30))
            .await
            .unwrap();
        let attempts: Vec<_> = (0..60)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let result = hasher.verify("whatever it is", None).await;
                    (result.is_ok(), started.elapsed())
                })
            })
            .collect();
        let mut refused = 0;
        for attempt in attempts {
            let (ok, took) = attempt.await.unwrap();
            if !ok {
                refused += 1;
                assert!(
                    took < Duration::from_millis(100),
                    "refused slowly: {took:?}"
                );
            }
        }
        // One hashing, 16 queued: the other 43 are shed.
        assert!(refused >= 43, "{refused}");
        assert!(!hasher.saturated());
        assert_eq!(hasher.waiting.load(Ordering::Relaxed), 0);
    }
}
