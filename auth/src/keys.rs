//! The Ed25519 signing keys: kept in the database (so a restart, or another replica,
//! signs with the same key), rotated with an overlap, published as a JWKS.
//!
//! The newest key that is not retiring signs. When a key is older than
//! `rotate_after`, a new one is made and every older key gets `retire_at = now +
//! overlap` (at least one access-token lifetime), so tokens signed just before the
//! rotation keep verifying until they expire. A retired key leaves the JWKS and
//! tokens naming it are refused.

use crate::store::{KeyRecord, Millis, Store, StoreError};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proto::auth::AccessClaims;
use servicekit::tokens::{BoxFuture, KeyRing, KeySource, TokenError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

const ALGORITHM: &str = "EdDSA";

/// When keys rotate.
#[derive(Debug, Clone, Copy)]
pub struct RotationPolicy {
    /// A signing key older than this is replaced.
    pub rotate_after: Duration,
    /// How long a replaced key stays published.
    pub overlap: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing key {kid} is unusable: {why}")]
    Unusable { kid: String, why: String },
    #[error("cannot generate a key")]
    Generate,
    #[error("no signing key")]
    None,
    #[error("signing failed: {0}")]
    Sign(String),
}

struct Loaded {
    signer_kid: String,
    signer: EncodingKey,
    jwks: Arc<JwkSet>,
    ring: Arc<KeyRing>,
    loaded_at: Instant,
}

/// The service's signing keys. Cheap to clone.
#[derive(Clone)]
pub struct SigningKeys {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    policy: RotationPolicy,
    loaded: RwLock<Arc<Loaded>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

fn millis(duration: Duration) -> Millis {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl SigningKeys {
    /// Load the keys, creating or rotating the signing key when due.
    pub async fn open(store: Store, policy: RotationPolicy, now: Millis) -> Result<Self, KeyError> {
        let loaded = load(&store, policy, now).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                policy,
                loaded: RwLock::new(Arc::new(loaded)),
                reloading: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        // Poisoning only follows a panic while swapping an Arc: the value is whole.
        self.inner
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-read the keys (another replica may have rotated), rotating when due.
    pub async fn reload(&self, now: Millis) -> Result<(), KeyError> {
        let _one = self.inner.reloading.lock().await;
        let loaded = load(&self.inner.store, self.inner.policy, now).await?;
        *self.inner.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    /// Sign access-token claims with the current key (`kid` in the header).
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        let loaded = self.current();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(loaded.signer_kid.clone());
        jsonwebtoken::encode(&header, claims, &loaded.signer)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// The public keys, as served at `/jwks`.
    pub fn jwks(&self) -> Arc<JwkSet> {
        self.current().jwks.clone()
    }

    /// The public keys, re-read from the database first if the copy in memory is
    /// more than a second old: another replica may have rotated, and a verifier
    /// asking for the JWKS is usually looking for a key it has not seen.
    pub async fn fresh_jwks(&self) -> Arc<JwkSet> {
        if self.current().loaded_at.elapsed() >= Duration::from_secs(1)
            && let Err(err) = self.reload(crate::now_ms()).await
        {
            tracing::warn!(error = %err, "cannot reload signing keys");
        }
        self.jwks()
    }

    pub fn signing_kid(&self) -> String {
        self.current().signer_kid.clone()
    }
}

/// Auth verifies its own tokens from the keys it holds; an unknown `kid` (a key
/// another replica just made) reloads from the database, at most once a second.
impl KeySource for SigningKeys {
    fn keys(&self, refresh: bool) -> BoxFuture<'_, Result<Arc<KeyRing>, TokenError>> {
        Box::pin(async move {
            let current = self.current();
            if refresh && current.loaded_at.elapsed() >= Duration::from_secs(1) {
                if let Err(err) = self.reload(crate::now_ms()).await {
                    tracing::warn!(error = %err, "cannot reload signing keys");
                }
                return Ok(self.current().ring.clone());
            }
            Ok(current.ring.clone())
        })
    }
}

async fn load(store: &Store, policy: RotationPolicy, now: Millis) -> Result<Loaded, KeyError> {
    let mut records = live(store.signing_keys().await?, now);
    let due = match signer(&records) {
        None => true,
        Some(newest) => now - newest.created_at >= millis(policy.rotate_after),
    };
    if due {
        let record = generate(now)?;
        tracing::info!(kid = %record.kid, "created a new signing key");
        store
            .add_signing_key(&record, now + millis(policy.overlap))
            .await?;
        records = live(store.signing_keys().await?, now);
    }
    let newest = signer(&records).ok_or(KeyError::None)?;
    let der = STANDARD
        .decode(&newest.private_key)
        .map_err(|e| unusable(newest, e))?;
    Ed25519KeyPair::from_pkcs8(&der).map_err(|e| unusable(newest, e))?;
    let mut jwks = JwkSet { keys: Vec::new() };
    for record in &records {
        let jwk = serde_json::from_value(serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": record.public_key,
            "kid": record.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }))
        .map_err(|e| unusable(record, e))?;
        jwks.keys.push(jwk);
    }
    Ok(Loaded {
        signer_kid: newest.kid.clone(),
        signer: EncodingKey::from_ed_der(&der),
        ring: Arc::new(KeyRing::from_jwks(&jwks)),
        jwks: Arc::new(jwks),
        loaded_at: Instant::now(),
    })
}

/// The key that signs: the newest one not scheduled to retire. (Two replicas that
/// rotate at once each retire the other's key; both then pick the same newest.)
fn signer(records: &[KeyRecord]) -> Option<&KeyRecord> {
    records.iter().rev().find(|r| r.retire_at.is_none())
}

/// Keys still published, oldest first.
fn live(mut records: Vec<KeyRecord>, now: Millis) -> Vec<KeyRecord> {
    records.retain(|r| r.algorithm == ALGORITHM && r.retire_at.is_none_or(|at| at > now));
    records.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
    records
}

fn unusable(record: &KeyRecord, why: impl std::fmt::Display) -> KeyError {
    KeyError::Unusable {
        kid: record.kid.clone(),
        why: why.to_string(),
    }
}

fn generate(now: Millis) -> Result<KeyRecord, KeyError> {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&rng).map_err(|_| KeyError::Generate)?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::Generate)?;
    let mut kid = [0u8; 12];
    rng.fill(&mut kid).map_err(|_| KeyError::Generate)?;
    Ok(KeyRecord {
        kid: URL_SAFE_NO_PAD.encode(kid),
        algorithm: ALGORITHM.to_owned(),
        private_key: STANDARD.encode(pkcs8.as_ref()),
        public_key: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        created_at: now,
        retire_at: None,
    })
}
