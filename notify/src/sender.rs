//! Delivers due `mail_queue` rows. A row is claimed by moving its `due_at` ahead
//! (a lease) in a conditional update, so two replicas never send the same row at
//! once; success sets `sent_at` (and blanks the bodies of emails that carried a
//! one-time token); failure schedules a retry with doubling delay, and after
//! `max_attempts` moves the row to `mail_dead_letters`.
//!
//! Delivery is at least once: a crash between the SMTP answer and `sent_at`
//! sends that one email again after the lease expires.

use crate::Config;
use crate::mail::{Mail, Mailer, SendError};
use servicekit::backends::Db;
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a claimed row is reserved for the sender that claimed it.
const LEASE_MS: i64 = 60_000;
/// Kinds whose bodies hold a one-time token: blanked once sent.
const SECRET_KINDS: &[&str] = &["verify_email", "password_reset"];

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The delivery queues that share the lease-claim scheme.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Queue {
    Mail,
    Push,
}

impl Queue {
    fn claim_sql(self) -> &'static str {
        match self {
            Queue::Mail => {
                "UPDATE mail_queue SET due_at = $1, attempts = $2 WHERE id = $3 AND due_at = $4 AND sent_at IS NULL"
            }
            Queue::Push => {
                "UPDATE push_queue SET due_at = $1, attempts = $2 WHERE id = $3 AND due_at = $4 AND sent_at IS NULL"
            }
        }
    }
}

/// Claim one due row of a delivery queue for `LEASE_MS`, counting the
/// attempt. False: another sender claimed it first.
pub(crate) async fn claim(
    db: &Db,
    queue: Queue,
    id: &str,
    due_at: i64,
    attempts: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query(queue.claim_sql())
        .bind(now + LEASE_MS)
        .bind(attempts)
        .bind(id)
        .bind(due_at)
        .execute(db.pool())
        .await?;
    Ok(claimed.rows_affected() == 1)
}

/// How long a queue worker rests after a pass that handled `handled` rows.
pub(crate) fn pause_after(handled: Result<usize, sqlx::Error>, queue: &str) -> Duration {
    match handled {
        Ok(n) if n > 0 => Duration::ZERO,
        Ok(_) => Duration::from_millis(500),
        Err(err) => {
            tracing::warn!(%err, "{queue} queue unavailable");
            Duration::from_secs(2)
        }
    }
}

pub async fn run(
    db: Db,
    mailer: Mailer,
    config: Arc<Config>,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        if last_prune.is_none_or(|at| at.elapsed() > Duration::from_secs(3600)) {
            last_prune = Some(tokio::time::Instant::now());
            if let Err(err) = prune(&db, now_ms()).await {
                tracing::warn!(%err, "notify retention failed");
            }
        }
        let pause = pause_after(send_due(&db, &mailer, &config).await, "mail");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Send what is due now. Returns how many rows were handled.
pub async fn send_due(db: &Db, mailer: &Mailer, config: &Config) -> Result<usize, sqlx::Error> {
    let now = now_ms();
    let rows = sqlx::query(
        "SELECT id, kind, recipient, subject, body_text, body_html, ics, ics_method, due_at, attempts FROM mail_queue WHERE sent_at IS NULL AND failed_at IS NULL AND due_at <= $1 ORDER BY due_at LIMIT 20",
    )
    .bind(now)
    .fetch_all(db.pool())
    .await?;
    let mut handled = 0;
    for row in rows {
        let id: String = row.try_get("id")?;
        let due_at: i64 = row.try_get("due_at")?;
        let attempts: i64 = row.try_get::<i64, _>("attempts")? + 1;
        if !claim(db, Queue::Mail, &id, due_at, attempts, now).await? {
            continue;
        }
        handled += 1;
        let kind: String = row.try_get("kind")?;
        let method: Option<String> = row.try_get("ics_method")?;
        let ics: Option<String> = row.try_get("ics")?;
        let mail = Mail {
            id: id.clone(),
            to: row.try_get("recipient")?,
            subject: row.try_get("subject")?,
            text: row.try_get("body_text")?,
            html: row.try_get("body_html")?,
            ics: method.zip(ics),
        };
        match mailer.send(&config.mail_from, &mail).await {
            Ok(()) => {
                let sql = if SECRET_KINDS.contains(&kind.as_str()) {
                    "UPDATE mail_queue SET sent_at = $1, body_text = '', body_html = '' WHERE id = $2"
                } else {
                    "UPDATE mail_queue SET sent_at = $1 WHERE id = $2"
                };
                sqlx::query(sql)
                    .bind(now_ms())
                    .bind(&id)
                    .execute(db.pool())
                    .await?;
                tracing::info!(mail = %id, %kind, "email sent");
            }
            Err(err) => {
                let permanent = matches!(err, SendError::Permanent(_));
                let message = err.to_string();
                if permanent || attempts >= config.max_attempts {
                    tracing::error!(mail = %id, %kind, %message, attempts, "email dead-lettered");
                    let mut tx = db.begin().await?;
                    sqlx::query(
                        "UPDATE mail_queue SET failed_at = $1, last_error = $2 WHERE id = $3",
                    )
                    .bind(now_ms())
                    .bind(&message)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO mail_dead_letters (mail_id, kind, recipient, attempts, last_error, failed_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&id)
                    .bind(&kind)
                    .bind(&mail.to)
                    .bind(attempts)
                    .bind(&message)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                } else {
                    let delay = retry_delay(config.retry_base, attempts);
                    tracing::warn!(mail = %id, %kind, %message, attempts, "email failed; retrying");
                    sqlx::query("UPDATE mail_queue SET due_at = $1, last_error = $2 WHERE id = $3")
                        .bind(now_ms() + delay.as_millis() as i64)
                        .bind(&message)
                        .bind(&id)
                        .execute(db.pool())
                        .await?;
                }
            }
        }
    }
    Ok(handled)
}

/// The pause after the `attempts`-th failure: `base`, doubling, at most 10 minutes.
/// Email and push retry alike.
pub fn retry_delay(base: Duration, attempts: i64) -> Duration {
    let factor = 1u32 << (attempts.clamp(1, 10) - 1);
    base.saturating_mul(factor).min(Duration::from_secs(600))
}

/// How long sent or dead-lettered emails and dedup records are kept.
pub const RETENTION_MS: i64 = 30 * 24 * 3_600_000;

/// Drop sent or dead-lettered emails and push messages, and dedup records, older than [`RETENTION_MS`]
/// (the dead-letter table itself is kept for operators). Returns rows removed.
pub async fn prune(db: &Db, now_ms: i64) -> Result<u64, sqlx::Error> {
    let cutoff = now_ms - RETENTION_MS;
    let mail = sqlx::query(
        "DELETE FROM mail_queue WHERE (sent_at IS NOT NULL AND sent_at < $1) OR (failed_at IS NOT NULL AND failed_at < $2)",
    )
    .bind(cutoff)
    .bind(cutoff)
    .execute(db.pool())
    .await?
    .rows_affected();
    let push = crate::push::prune(db, cutoff).await?;
    let dedup = sqlx::query("DELETE FROM processed_events WHERE processed_at < $1")
        .bind(cutoff)
        .execute(db.pool())
        .await?
        .rows_affected();
    Ok(mail + push + dedup)
}
