//! Web push: the VAPID key, browsers' subscriptions, and delivery.
//!
//! - `GET /api/v1/notifications/push/key` — the public key browsers subscribe with.
//! - `POST /api/v1/notifications/push/subscriptions` — a browser's `PushSubscription`
//!   (`{endpoint, keys: {p256dh, auth}}`), checked strictly; one row per endpoint.
//! - `DELETE /api/v1/notifications/push/subscriptions/{id}` — unsubscribe.
//!
//! Alerts for people whose push switch is on become `push_queue` rows (one per
//! subscription) in the same transaction as the event's dedup record ([`queue`]);
//! [`run`] delivers them with the mail sender's lease, retry and dead-letter rules:
//! 201/202/200 is done, 404/410 means the browser unsubscribed (the subscription
//! and its queued messages are deleted), 429 and 5xx and network failures are
//! retried with doubling delay (at least `Retry-After`), other answers are
//! dead-lettered at once into `push_dead_letters`.
//!
//! Endpoints are URLs strangers choose, and notify sends requests to them: only
//! `https://` on a DNS name is accepted (no IP literals, no `localhost`, no
//! credentials), redirects are not followed, and the loopback exception exists only
//! when the configuration says so (tests and local development).

use crate::alerts::Alert;
use crate::webpush::{self, SubscriberKeys, VapidKey};
use crate::{AppState, Config};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use proto::ErrorCode;
use proto::ids::UserId;
use serde::{Deserialize, Serialize};
use servicekit::backends::Db;
use servicekit::extract::{Json, Path};
use servicekit::tokens::AuthUser;
use servicekit::{ApiError, StartError};
use sqlx::{Any, Row, Transaction};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest endpoint accepted (real ones are a few hundred characters).
pub const MAX_ENDPOINT_LEN: usize = 2048;
/// Subscriptions one account may hold (browsers × devices).
pub const MAX_SUBSCRIPTIONS_PER_USER: i64 = 20;
/// VAPID JWTs are valid this long (RFC 8292 allows at most 24 h).
pub const JWT_LIFETIME_SECS: i64 = 12 * 3600;
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn invalid(message: &'static str) -> ApiError {
    ApiError::new(ErrorCode::InvalidPushSubscription, message)
}

/// The VAPID key: from configuration, else the one in the database (made at first
/// start, so restarts and replicas share it — as auth does with its signing keys).
pub async fn load_key(db: &Db, configured: Option<&str>) -> Result<VapidKey, StartError> {
    if let Some(text) = configured {
        return VapidKey::from_b64(text).ok_or_else(|| {
            StartError::setting(
                "NOTIFY_VAPID_PRIVATE_KEY",
                "is not a base64url P-256 private key (32 bytes)",
            )
        });
    }
    let db_err = |err: sqlx::Error| StartError::other(format!("notify: VAPID key: {err}"));
    let fresh = VapidKey::generate();
    // Two replicas starting at once: the first insert wins, both read the winner.
    sqlx::query(
        "INSERT INTO vapid_keys (id, private_key, created_at) VALUES ('current', $1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(fresh.private_b64())
    .bind(now_ms())
    .execute(db.pool())
    .await
    .map_err(db_err)?;
    let stored: String = sqlx::query("SELECT private_key FROM vapid_keys WHERE id = 'current'")
        .fetch_one(db.pool())
        .await
        .map_err(db_err)?
        .try_get("private_key")
        .map_err(db_err)?;
    VapidKey::from_b64(&stored)
        .ok_or_else(|| StartError::other("notify: the stored VAPID key is damaged"))
}

/// A push endpoint that passed [`Endpoint::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: reqwest::Url,
}

impl Endpoint {
    /// Accept `https://<dns name>[:port]/…`; with `allow_loopback`, also
    /// `http(s)://` to `127.0.0.0/8`, `[::1]` or `localhost`.
    pub fn parse(text: &str, allow_loopback: bool) -> Result<Endpoint, ApiError> {
        if text.len() > MAX_ENDPOINT_LEN {
            return Err(invalid("endpoint: too long"));
        }
        let url = reqwest::Url::parse(text).map_err(|_| invalid("endpoint: not a URL"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("endpoint: must not carry credentials"));
        }
        if url.fragment().is_some() {
            return Err(invalid("endpoint: must not have a fragment"));
        }
        let loopback = match url.host() {
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.');
                if name == "localhost" || name.ends_with(".localhost") {
                    true
                } else if name.contains('.') {
                    false
                } else {
                    return Err(invalid("endpoint: the host must be a public DNS name"));
                }
            }
            Some(url::Host::Ipv4(ip)) if allow_loopback && IpAddr::V4(ip).is_loopback() => true,
            Some(url::Host::Ipv6(ip)) if allow_loopback && IpAddr::V6(ip).is_loopback() => true,
            Some(_) => {
                return Err(invalid(
                    "endpoint: the host must be a DNS name, not an address",
                ));
            }
            None => return Err(invalid("endpoint: no host")),
        };
        match (url.scheme(), loopback) {
            (_, true) if !allow_loopback => {
                Err(invalid("endpoint: the host must be a public DNS name"))
            }
            ("https", _) | ("http", true) => Ok(Endpoint { url }),
            _ => Err(invalid("endpoint: must be an https:// URL")),
        }
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The JWT audience: scheme, host and port (RFC 8292 §2).
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }
}

/// A browser's `PushSubscription.toJSON()`. Other fields (`expirationTime`) are ignored.
#[derive(Debug, Deserialize)]
pub struct SubscriptionBody {
    pub endpoint: String,
    pub keys: KeysBody,
}

#[derive(Debug, Deserialize)]
pub struct KeysBody {
    pub p256dh: String,
    pub auth: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SubscriptionView {
    pub id: String,
    pub endpoint: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KeyView {
    /// Base64url of the uncompressed P-256 point: the `applicationServerKey`.
    pub public_key: String,
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/notifications/push/key", get(key))
        .route("/api/v1/notifications/push/subscriptions", post(subscribe))
        .route(
            "/api/v1/notifications/push/subscriptions/{id}",
            delete(unsubscribe),
        )
}

async fn key(State(state): State<AppState>, _user: AuthUser) -> Json<KeyView> {
    Json(KeyView {
        public_key: state.push.key.public_key_b64(),
    })
}

fn db_error(err: sqlx::Error) -> ApiError {
    ApiError::unavailable(err)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn subscribe(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<SubscriptionBody>,
) -> Result<(StatusCode, Json<SubscriptionView>), ApiError> {
    let endpoint = Endpoint::parse(&body.endpoint, state.push.allow_loopback)?;
    SubscriberKeys::parse(&body.keys.p256dh, &body.keys.auth)
        .map_err(|err| ApiError::new(ErrorCode::InvalidPushSubscription, err.to_string()))?;
    let me = user.user_id().to_string();
    let now = now_ms();
    let mut tx = state.db.begin().await.map_err(db_error)?;
    let existing = sqlx::query("SELECT id, created_at FROM push_subscriptions WHERE endpoint = $1")
        .bind(endpoint.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
    if let Some(row) = existing {
        // The same browser again (perhaps signed in as someone else now): it is theirs.
        let id: String = row.try_get("id").map_err(db_error)?;
        let created: i64 = row.try_get("created_at").map_err(db_error)?;
        sqlx::query(
            "UPDATE push_subscriptions SET user_id = $1, p256dh = $2, auth = $3 WHERE id = $4",
        )
        .bind(&me)
        .bind(&body.keys.p256dh)
        .bind(&body.keys.auth)
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        return Ok((
            StatusCode::OK,
            Json(SubscriptionView {
                id,
                endpoint: endpoint.as_str().to_owned(),
                created_at: rfc3339(created),
            }),
        ));
    }
    let held: i64 = sqlx::query("SELECT COUNT(*) AS n FROM push_subscriptions WHERE user_id = $1")
        .bind(&me)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?
        .try_get("n")
        .map_err(db_error)?;
    if held >= MAX_SUBSCRIPTIONS_PER_USER {
        return Err(ApiError::new(
            ErrorCode::TooManyPushSubscriptions,
            "too many push subscriptions; remove one first",
        ));
    }
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(&me)
    .bind(endpoint.as_str())
    .bind(&body.keys.p256dh)
    .bind(&body.keys.auth)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok((
        StatusCode::CREATED,
        Json(SubscriptionView {
            id,
            endpoint: endpoint.as_str().to_owned(),
            created_at: rfc3339(now),
        }),
    ))
}

async fn unsubscribe(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<uuid::Uuid>,
) -> Result<StatusCode, ApiError> {
    let id = id.to_string();
    let mut tx = state.db.begin().await.map_err(db_error)?;
    let gone = sqlx::query("DELETE FROM push_subscriptions WHERE id = $1 AND user_id = $2")
        .bind(&id)
        .bind(user.user_id().to_string())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
    if gone == 0 {
        return Err(ApiError::not_found("no such push subscription"));
    }
    sqlx::query("DELETE FROM push_queue WHERE subscription_id = $1 AND sent_at IS NULL")
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a push message carries: the alert, and where a click should take the person.
#[derive(Debug, Clone, Serialize)]
pub struct PushMessage<'a> {
    #[serde(flatten)]
    pub alert: &'a Alert,
    pub url: String,
}

/// How soon a push message matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    Normal,
    /// Someone is waiting: deliver now, even to a device saving battery.
    High,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// Queue `alert` for every push subscription of `user`, inside the event's
/// transaction, unless the person switched push off.
pub async fn queue(
    tx: &mut Transaction<'_, Any>,
    config: &Config,
    user: UserId,
    alert: &Alert,
    urgency: Urgency,
) -> Result<usize, sqlx::Error> {
    let user = user.to_string();
    let off: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM people WHERE user_id = $1 AND push_enabled = 0")
            .bind(&user)
            .fetch_one(&mut **tx)
            .await?
            .try_get("n")?;
    if off > 0 {
        return Ok(0);
    }
    let subscriptions = sqlx::query("SELECT id FROM push_subscriptions WHERE user_id = $1")
        .bind(&user)
        .fetch_all(&mut **tx)
        .await?;
    if subscriptions.is_empty() {
        return Ok(0);
    }
    let url = match &alert.meeting_id {
        Some(id) => format!("{}/m/{id}", config.public_url),
        None => format!("{}/", config.public_url),
    };
    let payload = serde_json::to_string(&PushMessage { alert, url })
        .map_err(|err| sqlx::Error::Encode(err.into()))?;
    let ttl = i64::try_from(config.push_ttl.as_secs()).unwrap_or(i64::MAX);
    let now = now_ms();
    for row in &subscriptions {
        let subscription: String = row.try_get("id")?;
        sqlx::query(
            "INSERT INTO push_queue (id, subscription_id, payload, urgency, ttl_seconds, due_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(subscription)
        .bind(&payload)
        .bind(urgency.as_str())
        .bind(ttl)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(subscriptions.len())
}

/// What the sender needs. Cheap to clone.
#[derive(Clone)]
pub struct Pusher {
    pub key: VapidKey,
    pub client: reqwest::Client,
}

impl Pusher {
    pub fn new(key: VapidKey) -> Result<Pusher, StartError> {
        let client = reqwest::Client::builder()
            // An endpoint must not bounce us elsewhere (the checks were on this URL).
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|err| StartError::other(format!("notify: push client: {err}")))?;
        Ok(Pusher { key, client })
    }
}

/// How one delivery attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// 404/410: the subscription no longer exists.
    Gone,
    /// Try again later, not before the given pause if the service named one.
    Retry(String, Option<Duration>),
    /// Never going to work: dead-letter now.
    Permanent(String),
}

/// One POST to the push service.
pub async fn deliver(
    pusher: &Pusher,
    subject: &str,
    endpoint: &Endpoint,
    keys: &SubscriberKeys,
    payload: &[u8],
    urgency: &str,
    ttl_seconds: i64,
) -> Outcome {
    let body = match webpush::encrypt(payload, keys) {
        Ok(body) => body,
        Err(err) => return Outcome::Permanent(err.to_string()),
    };
    let expires = chrono::Utc::now().timestamp() + JWT_LIFETIME_SECS;
    let authorization = pusher
        .key
        .authorization(&endpoint.origin(), expires, subject);
    let sent = pusher
        .client
        .post(endpoint.url.clone())
        .header("authorization", authorization)
        .header("content-encoding", "aes128gcm")
        .header("content-type", "application/octet-stream")
        .header("ttl", ttl_seconds.max(0).to_string())
        .header("urgency", urgency)
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) => return Outcome::Retry(format!("push service unreachable: {err}"), None),
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match status.as_u16() {
        200..=299 => Outcome::Delivered,
        404 | 410 => Outcome::Gone,
        429 | 500..=599 => Outcome::Retry(format!("push service answered {status}"), retry_after),
        _ => Outcome::Permanent(format!("push service answered {status}")),
    }
}

/// Deliver due push messages until `shutdown`.
pub async fn run(
    db: Db,
    pusher: Pusher,
    config: Arc<Config>,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let pause = crate::sender::pause_after(send_due(&db, &pusher, &config).await, "push");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Send what is due now. Returns how many rows were handled.
pub async fn send_due(db: &Db, pusher: &Pusher, config: &Config) -> Result<usize, sqlx::Error> {
    let now = now_ms();
    let rows = sqlx::query(
        "SELECT q.id, q.subscription_id, q.payload, q.urgency, q.ttl_seconds, q.due_at, q.attempts, s.endpoint, s.p256dh, s.auth FROM push_queue q LEFT JOIN push_subscriptions s ON s.id = q.subscription_id WHERE q.sent_at IS NULL AND q.failed_at IS NULL AND q.due_at <= $1 ORDER BY q.due_at LIMIT 20",
    )
    .bind(now)
    .fetch_all(db.pool())
    .await?;
    let mut handled = 0;
    for row in rows {
        let id: String = row.try_get("id")?;
        let subscription: String = row.try_get("subscription_id")?;
        let due_at: i64 = row.try_get("due_at")?;
        let attempts: i64 = row.try_get::<i64, _>("attempts")? + 1;
        if !crate::sender::claim(db, crate::sender::Queue::Push, &id, due_at, attempts, now).await?
        {
            continue;
        }
        handled += 1;
        let endpoint: Option<String> = row.try_get("endpoint")?;
        let p256dh: Option<String> = row.try_get("p256dh")?;
        let auth: Option<String> = row.try_get("auth")?;
        let (Some(endpoint), Some(p256dh), Some(auth)) = (endpoint, p256dh, auth) else {
            // Unsubscribed since it was queued.
            sqlx::query("DELETE FROM push_queue WHERE id = $1")
                .bind(&id)
                .execute(db.pool())
                .await?;
            continue;
        };
        // Stored rows passed these checks when they were written; a failure here
        // means the rules tightened since, and the row can never be sent.
        let parsed = Endpoint::parse(&endpoint, config.push_allow_loopback)
            .map_err(|err| err.message.to_string())
            .and_then(|e| {
                SubscriberKeys::parse(&p256dh, &auth)
                    .map(|k| (e, k))
                    .map_err(|err| err.to_string())
            });
        let outcome = match parsed {
            Ok((endpoint, keys)) => {
                let payload: String = row.try_get("payload")?;
                let urgency: String = row.try_get("urgency")?;
                let ttl: i64 = row.try_get("ttl_seconds")?;
                deliver(
                    pusher,
                    &config.vapid_subject,
                    &endpoint,
                    &keys,
                    payload.as_bytes(),
                    &urgency,
                    ttl,
                )
                .await
            }
            Err(why) => Outcome::Permanent(why),
        };
        match outcome {
            Outcome::Delivered => {
                sqlx::query("UPDATE push_queue SET sent_at = $1, payload = '' WHERE id = $2")
                    .bind(now_ms())
                    .bind(&id)
                    .execute(db.pool())
                    .await?;
                tracing::info!(push = %id, "push message delivered");
            }
            Outcome::Gone => {
                tracing::info!(push = %id, %subscription, "push subscription gone; removed");
                let mut tx = db.begin().await?;
                sqlx::query(
                    "DELETE FROM push_queue WHERE subscription_id = $1 AND sent_at IS NULL",
                )
                .bind(&subscription)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM push_subscriptions WHERE id = $1")
                    .bind(&subscription)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Outcome::Retry(message, _) | Outcome::Permanent(message)
                if attempts >= config.max_attempts =>
            {
                dead_letter(db, &id, &subscription, attempts, &message).await?;
            }
            Outcome::Permanent(message) => {
                dead_letter(db, &id, &subscription, attempts, &message).await?;
            }
            Outcome::Retry(message, at_least) => {
                let delay = crate::sender::retry_delay(config.retry_base, attempts)
                    .max(at_least.unwrap_or_default().min(Duration::from_secs(600)));
                tracing::warn!(push = %id, %message, attempts, "push failed; retrying");
                sqlx::query("UPDATE push_queue SET due_at = $1, last_error = $2 WHERE id = $3")
                    .bind(now_ms() + delay.as_millis() as i64)
                    .bind(&message)
                    .bind(&id)
                    .execute(db.pool())
                    .await?;
            }
        }
    }
    Ok(handled)
}

async fn dead_letter(
    db: &Db,
    id: &str,
    subscription: &str,
    attempts: i64,
    message: &str,
) -> Result<(), sqlx::Error> {
    tracing::error!(push = %id, %message, attempts, "push message dead-lettered");
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE push_queue SET failed_at = $1, last_error = $2, payload = '' WHERE id = $3",
    )
    .bind(now_ms())
    .bind(message)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO push_dead_letters (push_id, subscription_id, attempts, last_error, failed_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(subscription)
    .bind(attempts)
    .bind(message)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Drop delivered or dead-lettered push rows older than `cutoff_ms`.
pub async fn prune(db: &Db, cutoff_ms: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM push_queue WHERE (sent_at IS NOT NULL AND sent_at < $1) OR (failed_at IS NOT NULL AND failed_at < $2)",
    )
    .bind(cutoff_ms)
    .bind(cutoff_ms)
    .execute(db.pool())
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str, loopback: bool) -> Result<String, String> {
        Endpoint::parse(text, loopback)
            .map(|e| e.origin())
            .map_err(|e| e.message.to_string())
    }

    #[test]
    fn endpoints_must_be_https_on_a_dns_name() {
        assert_eq!(
            code("https://fcm.googleapis.com/fcm/send/abc:def", false).unwrap(),
            "https://fcm.googleapis.com"
        );
        assert_eq!(
            code("https://push.example:8443/x", false).unwrap(),
            "https://push.example:8443"
        );
        for bad in [
            "http://push.example/x",
            "ftp://push.example/x",
            "javascript:alert(1)",
            "https://127.0.0.1/x",
            "https://10.0.0.5/x",
            "https://[::1]/x",
            "https://localhost/x",
            "https://a.localhost/x",
            "https://intranet/x",
            "https://user:pw@push.example/x",
            "https://push.example/x#frag",
            "not a url",
            "",
        ] {
            assert!(code(bad, false).is_err(), "{bad} was accepted");
        }
        let long = format!("https://push.example/{}", "a".repeat(MAX_ENDPOINT_LEN));
        assert!(code(&long, false).is_err());
    }

    #[test]
    fn loopback_endpoints_are_allowed_only_when_configured() {
        assert_eq!(
            code("http://127.0.0.1:9/push/1", true).unwrap(),
            "http://127.0.0.1:9"
        );
        assert!(code("http://[::1]:9/p", true).is_ok());
        assert!(code("http://localhost:9/p", true).is_ok());
        assert!(code("http://127.0.0.1:9/push/1", false).is_err());
        // Even in that mode, plain http to anything else and other addresses stay refused.
        assert!(code("http://push.example/p", true).is_err());
        assert!(code("http://10.1.2.3/p", true).is_err());
        assert!(code("https://192.168.1.1/p", true).is_err());
    }
}
