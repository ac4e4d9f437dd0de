//! From events to emails, push messages and in-app alerts: each event becomes
//! `mail_queue` and `push_queue` rows in one transaction with its
//! `processed_events` record, so a redelivered event sends nothing twice.

use crate::alerts::{Alert, Alerts};
use crate::ics::Invite;
use crate::templates::{self, Rendered};
use crate::{Config, push};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use proto::event::EventEnvelope;
use proto::ids::UserId;
use proto::meeting::{MeetingEvent, MeetingEventBody};
use serde::Deserialize;
use servicekit::backends::Db;
use servicekit::bus::{Handler, HandlerError, claim_event};
use sqlx::{Any, Row, Transaction};
use std::sync::Arc;

/// Wakes the senders when an event queued something for them.
#[derive(Clone, Default)]
pub struct Wake {
    pub mail: Arc<tokio::sync::Notify>,
    pub push: Arc<tokio::sync::Notify>,
}

/// The bus handler: decode, then [`apply`] in a transaction.
pub fn handler(db: Db, config: Arc<Config>, wake: Wake, alerts: Alerts) -> Handler {
    Arc::new(move |event: EventEnvelope| {
        let db = db.clone();
        let config = config.clone();
        let wake = wake.clone();
        let alerts = alerts.clone();
        Box::pin(async move {
            let retry = |err: sqlx::Error| HandlerError::Retry(err.to_string());
            let mut tx = db.begin().await.map_err(retry)?;
            let now = Utc::now();
            if !claim_event(&mut tx, event.id, now.timestamp_millis())
                .await
                .map_err(retry)?
            {
                return Ok(());
            }
            let mut out = Vec::new();
            apply(&mut tx, &config, &event, now, &mut out).await?;
            // Meeting alerts are about someone there now: push them at once.
            let urgency = if event.kind.starts_with("meeting.") {
                push::Urgency::High
            } else {
                push::Urgency::Normal
            };
            let mut in_app = Vec::with_capacity(out.len());
            let mut pushed = 0;
            for (user, title, meeting) in out {
                let alert = Alert {
                    id: event.id.to_string(),
                    kind: event.kind.clone(),
                    title,
                    meeting_id: meeting,
                    at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                };
                pushed += push::queue(&mut tx, &config, user, &alert, urgency)
                    .await
                    .map_err(db_retry)?;
                if in_app_allowed(&mut tx, user).await? {
                    in_app.push((user, alert));
                }
            }
            tx.commit().await.map_err(retry)?;
            wake.mail.notify_one();
            if pushed > 0 {
                wake.push.notify_one();
            }
            // Only after the commit: an alert never announces an effect that was rolled back.
            for (user, alert) in in_app {
                alerts.send(user, alert);
            }
            Ok(())
        })
    })
}

/// Account events carry who and (for links) the one-time token.
#[derive(Deserialize)]
struct AccountPayload {
    email: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    user_id: Option<UserId>,
}

/// `user.preferences_changed` (from users): the person's channel switches.
#[derive(Deserialize)]
struct PreferencesChanged {
    user_id: UserId,
    notifications: Channels,
}

#[derive(Deserialize)]
#[serde(default)]
struct Channels {
    email: bool,
    push: bool,
    in_app: bool,
}

impl Default for Channels {
    fn default() -> Self {
        Self {
            email: true,
            push: true,
            in_app: true,
        }
    }
}

/// Emails a person may switch off. Account emails (verification, reset, password
/// changed) always go: they are part of signing in and of account security.
const OPTIONAL_KINDS: &[&str] = &[
    "welcome",
    "invitation",
    "cancellation",
    "reminder",
    "summary",
];

async fn email_allowed(tx: &mut Transaction<'_, Any>, to: &str) -> Result<bool, HandlerError> {
    let off =
        sqlx::query("SELECT COUNT(*) AS n FROM people WHERE email = $1 AND email_enabled = 0")
            .bind(to)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_retry)?
            .try_get::<i64, _>("n")
            .map_err(db_retry)?;
    Ok(off == 0)
}

async fn in_app_allowed(tx: &mut Transaction<'_, Any>, user: UserId) -> Result<bool, HandlerError> {
    let off =
        sqlx::query("SELECT COUNT(*) AS n FROM people WHERE user_id = $1 AND in_app_enabled = 0")
            .bind(user.to_string())
            .fetch_one(&mut **tx)
            .await
            .map_err(db_retry)?
            .try_get::<i64, _>("n")
            .map_err(db_retry)?;
    Ok(off == 0)
}

/// In-app alerts to send once the transaction commits: (user, title, meeting).
type Out = Vec<(UserId, String, Option<String>)>;

fn reject(what: &str, err: impl std::fmt::Display) -> HandlerError {
    HandlerError::Reject(format!("{what}: {err}"))
}

async fn apply(
    tx: &mut Transaction<'_, Any>,
    config: &Config,
    event: &EventEnvelope,
    now: DateTime<Utc>,
    out: &mut Out,
) -> Result<(), HandlerError> {
    let url = &config.public_url;
    let account = || {
        serde_json::from_value::<AccountPayload>(event.payload.clone())
            .map_err(|err| reject(&event.kind, err))
    };
    let token = |p: &AccountPayload| {
        p.token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| reject(&event.kind, "no token"))
    };
    match event.kind.as_str() {
        "user.registered" => {
            let p = account()?;
            if let Some(user) = p.user_id {
                sqlx::query(
                    "INSERT INTO people (user_id, email) VALUES ($1, $2) ON CONFLICT (user_id) DO UPDATE SET email = excluded.email",
                )
                .bind(user.to_string())
                .bind(&p.email)
                .execute(&mut **tx)
                .await
                .map_err(db_retry)?;
            }
            let r = templates::welcome(&p.display_name, url);
            queue(tx, "welcome", &p.email, &r, None, None, now, now).await
        }
        "auth.email_verification_requested" => {
            let p = account()?;
            let r = templates::verify_email(&p.display_name, url, &token(&p)?);
            queue(tx, "verify_email", &p.email, &r, None, None, now, now).await
        }
        "auth.password_reset_requested" => {
            let p = account()?;
            let r = templates::password_reset(&p.display_name, url, &token(&p)?);
            queue(tx, "password_reset", &p.email, &r, None, None, now, now).await
        }
        "user.email_verified" => {
            if let Some(user) = account()?.user_id {
                out.push((user, "Your email address is confirmed".into(), None));
            }
            Ok(())
        }
        "auth.password_changed" => {
            let p = account()?;
            if let Some(user) = p.user_id {
                out.push((user, "Your password was changed".into(), None));
            }
            let r = templates::password_changed(&p.display_name);
            queue(tx, "password_changed", &p.email, &r, None, None, now, now).await
        }
        kind if kind.starts_with("meeting.") => {
            let meeting: MeetingEvent = serde_json::from_value(event.payload.clone())
                .map_err(|err| reject(&event.kind, err))?;
            apply_meeting(tx, config, &meeting, now, out).await
        }
        "user.preferences_changed" => {
            let p: PreferencesChanged = serde_json::from_value(event.payload.clone())
                .map_err(|err| reject(&event.kind, err))?;
            sqlx::query(
                "INSERT INTO people (user_id, email_enabled, in_app_enabled, push_enabled) VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET email_enabled = excluded.email_enabled, in_app_enabled = excluded.in_app_enabled, push_enabled = excluded.push_enabled",
            )
            .bind(p.user_id.to_string())
            .bind(i64::from(p.notifications.email))
            .bind(i64::from(p.notifications.in_app))
            .bind(i64::from(p.notifications.push))
            .execute(&mut **tx)
            .await
            .map_err(db_retry)?;
            Ok(())
        }
        // auth.sign_in_throttled, …: nothing to send.
        _ => Ok(()),
    }
}

/// What invitees were last told about a meeting.
struct Calendar {
    sequence: i64,
    title: String,
    starts_at: String,
    time_zone: String,
    invitees: Vec<String>,
    host_id: Option<String>,
}

async fn load_calendar(
    tx: &mut Transaction<'_, Any>,
    meeting: &str,
) -> Result<Option<Calendar>, HandlerError> {
    let row = sqlx::query(
        "SELECT sequence, title, starts_at, time_zone, invitees, host_id FROM meeting_calendar WHERE meeting_id = $1",
    )
    .bind(meeting)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_retry)?;
    row.map(|row| {
        Ok(Calendar {
            sequence: row.try_get("sequence").map_err(db_retry)?,
            title: row.try_get("title").map_err(db_retry)?,
            starts_at: row.try_get("starts_at").map_err(db_retry)?,
            time_zone: row.try_get("time_zone").map_err(db_retry)?,
            invitees: serde_json::from_str(
                &row.try_get::<String, _>("invitees").map_err(db_retry)?,
            )
            .unwrap_or_default(),
            host_id: row.try_get("host_id").map_err(db_retry)?,
        })
    })
    .transpose()
}

async fn save_calendar(
    tx: &mut Transaction<'_, Any>,
    meeting: &str,
    cal: &Calendar,
) -> Result<(), HandlerError> {
    sqlx::query("DELETE FROM meeting_calendar WHERE meeting_id = $1")
        .bind(meeting)
        .execute(&mut **tx)
        .await
        .map_err(db_retry)?;
    sqlx::query(
        "INSERT INTO meeting_calendar (meeting_id, sequence, title, starts_at, time_zone, invitees, host_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(meeting)
    .bind(cal.sequence)
    .bind(&cal.title)
    .bind(&cal.starts_at)
    .bind(&cal.time_zone)
    .bind(serde_json::Value::from(cal.invitees.clone()).to_string())
    .bind(cal.host_id.clone())
    .execute(&mut **tx)
    .await
    .map_err(db_retry)?;
    Ok(())
}

fn db_retry(err: sqlx::Error) -> HandlerError {
    HandlerError::Retry(err.to_string())
}

/// "Tuesday 1 December 2026, 09:00 (America/New_York)".
fn local_when(start: DateTime<Utc>, tz: Tz) -> String {
    let local = tz.from_utc_datetime(&start.naive_utc());
    format!("{} ({})", local.format("%A %-d %B %Y, %H:%M"), tz.name())
}

async fn apply_meeting(
    tx: &mut Transaction<'_, Any>,
    config: &Config,
    event: &MeetingEvent,
    now: DateTime<Utc>,
    out: &mut Out,
) -> Result<(), HandlerError> {
    let id = event.meeting_id.to_string();
    let join_url = format!("{}/m/{id}", config.public_url);
    let (title, starts_at, time_zone, invitees, host) = match &event.body {
        MeetingEventBody::Scheduled {
            host_id,
            title,
            starts_at,
            time_zone,
            invitees,
        } => (
            title,
            starts_at,
            time_zone,
            invitees,
            Some(host_id.to_string()),
        ),
        MeetingEventBody::Updated {
            title,
            starts_at,
            time_zone,
            invitees,
        } => (title, starts_at, time_zone, invitees, None),
        MeetingEventBody::Started {} => {
            sqlx::query(
                "UPDATE meeting_calendar SET session_started_at = $1 WHERE meeting_id = $2 AND session_started_at IS NULL",
            )
            .bind(event.occurred_at_ms)
            .bind(&id)
            .execute(&mut **tx)
            .await
            .map_err(db_retry)?;
            return Ok(());
        }
        MeetingEventBody::Ended {} => return summary(tx, config, &id, event, now).await,
        MeetingEventBody::ParticipantJoined {
            user_id,
            display_name,
            ..
        } => {
            sqlx::query(
                "UPDATE meeting_calendar SET session_participants = session_participants + 1, session_started_at = COALESCE(session_started_at, $1) WHERE meeting_id = $2",
            )
            .bind(event.occurred_at_ms)
            .bind(&id)
            .execute(&mut **tx)
            .await
            .map_err(db_retry)?;
            let Some(cal) = load_calendar(tx, &id).await? else {
                return Ok(());
            };
            let host = cal.host_id.and_then(|h| h.parse::<UserId>().ok());
            if let Some(host) = host
                && *user_id != Some(host)
            {
                out.push((
                    host,
                    format!("{display_name} joined \"{}\"", cal.title),
                    Some(id),
                ));
            }
            return Ok(());
        }
        MeetingEventBody::LobbyWaiting { display_name, .. } => {
            let Some(cal) = load_calendar(tx, &id).await? else {
                return Ok(());
            };
            if let Some(host) = cal.host_id.and_then(|h| h.parse::<UserId>().ok()) {
                out.push((
                    host,
                    format!(
                        "{display_name} is waiting in the lobby of \"{}\"",
                        cal.title
                    ),
                    Some(id),
                ));
            }
            return Ok(());
        }
        MeetingEventBody::Cancelled { invitees } => {
            let Some(mut cal) = load_calendar(tx, &id).await? else {
                return Ok(());
            };
            cal.sequence += 1;
            let (start, tz) = parse_when(&cal.starts_at, &cal.time_zone)?;
            for to in invitees {
                let r = templates::cancellation(&cal.title, &local_when(start, tz));
                let ics = invite(
                    config,
                    &id,
                    &cal.title,
                    start,
                    tz,
                    cal.sequence,
                    to,
                    &join_url,
                    true,
                    now,
                );
                queue(tx, "cancellation", to, &r, Some(ics), Some(&id), now, now).await?;
            }
            delete_reminders(tx, &id).await?;
            return save_calendar(tx, &id, &cal).await;
        }
        _ => return Ok(()),
    };
    let (start, tz) = parse_when(starts_at, time_zone)?;
    let previous = load_calendar(tx, &id).await?;
    let updated = host.is_none();
    let host = host.or_else(|| previous.as_ref().and_then(|p| p.host_id.clone()));
    let sequence = previous.as_ref().map_or(0, |c| c.sequence + 1);
    let when = local_when(start, tz);
    for to in invitees {
        let r = templates::invitation(title, &when, &join_url, updated && previous.is_some());
        let ics = invite(
            config, &id, title, start, tz, sequence, to, &join_url, false, now,
        );
        queue(tx, "invitation", to, &r, Some(ics), Some(&id), now, now).await?;
    }
    // Invitees taken off the list get a cancellation.
    if let Some(prev) = &previous {
        let (old_start, old_tz) = parse_when(&prev.starts_at, &prev.time_zone)?;
        for to in prev.invitees.iter().filter(|p| !invitees.contains(p)) {
            let r = templates::cancellation(&prev.title, &local_when(old_start, old_tz));
            let ics = invite(
                config,
                &id,
                &prev.title,
                old_start,
                old_tz,
                sequence,
                to,
                &join_url,
                true,
                now,
            );
            queue(tx, "cancellation", to, &r, Some(ics), Some(&id), now, now).await?;
        }
    }
    delete_reminders(tx, &id).await?;
    let remind_at = start - chrono::Duration::from_std(config.reminder_lead).unwrap_or_default();
    if remind_at > now {
        for to in invitees {
            let r = templates::reminder(title, &when, &join_url);
            queue(tx, "reminder", to, &r, None, Some(&id), remind_at, now).await?;
        }
    }
    save_calendar(
        tx,
        &id,
        &Calendar {
            sequence,
            title: title.clone(),
            starts_at: starts_at.clone(),
            time_zone: time_zone.clone(),
            invitees: invitees.clone(),
            host_id: host,
        },
    )
    .await
}

/// The host's summary when a session of the meeting ends (the room emptied or
/// the host ended it); the session counters start again for the next one.
async fn summary(
    tx: &mut Transaction<'_, Any>,
    config: &Config,
    id: &str,
    event: &MeetingEvent,
    now: DateTime<Utc>,
) -> Result<(), HandlerError> {
    let row = sqlx::query(
        "SELECT c.title, c.session_started_at, c.session_participants, p.email FROM meeting_calendar c LEFT JOIN people p ON p.user_id = c.host_id WHERE c.meeting_id = $1",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_retry)?;
    let Some(row) = row else { return Ok(()) };
    let title: String = row.try_get("title").map_err(db_retry)?;
    let started: Option<i64> = row.try_get("session_started_at").map_err(db_retry)?;
    let participants: i64 = row.try_get("session_participants").map_err(db_retry)?;
    let email: Option<String> = row.try_get("email").map_err(db_retry)?;
    sqlx::query(
        "UPDATE meeting_calendar SET session_started_at = NULL, session_participants = 0 WHERE meeting_id = $1",
    )
    .bind(id)
    .execute(&mut **tx)
    .await
    .map_err(db_retry)?;
    let (Some(started), Some(email)) = (started, email.filter(|e| !e.is_empty())) else {
        return Ok(());
    };
    let minutes = (event.occurred_at_ms - started).max(0) / 60_000;
    let r = templates::summary(&title, minutes, participants, &config.public_url);
    queue(tx, "summary", &email, &r, None, Some(id), now, now).await
}

fn parse_when(starts_at: &str, time_zone: &str) -> Result<(DateTime<Utc>, Tz), HandlerError> {
    let start = DateTime::parse_from_rfc3339(starts_at)
        .map_err(|err| reject("starts_at", err))?
        .with_timezone(&Utc);
    let tz: Tz = time_zone.parse().map_err(|err| reject("time_zone", err))?;
    Ok((start, tz))
}

#[allow(clippy::too_many_arguments)]
fn invite(
    config: &Config,
    id: &str,
    title: &str,
    start: DateTime<Utc>,
    tz: Tz,
    sequence: i64,
    to: &str,
    join_url: &str,
    cancelled: bool,
    now: DateTime<Utc>,
) -> (String, String) {
    let organizer = config
        .mail_from
        .parse::<lettre::message::Mailbox>()
        .map(|m| m.email.to_string())
        .unwrap_or_else(|_| config.mail_from.clone());
    let invite = Invite {
        meeting_id: id,
        title,
        starts_at: start,
        time_zone: tz,
        sequence,
        organizer: &organizer,
        attendee: to,
        join_url,
        cancelled,
        now,
    };
    (invite.method().to_owned(), invite.render())
}

async fn delete_reminders(
    tx: &mut Transaction<'_, Any>,
    meeting: &str,
) -> Result<(), HandlerError> {
    sqlx::query(
        "DELETE FROM mail_queue WHERE meeting_id = $1 AND kind = 'reminder' AND sent_at IS NULL AND failed_at IS NULL",
    )
    .bind(meeting)
    .execute(&mut **tx)
    .await
    .map_err(db_retry)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn queue(
    tx: &mut Transaction<'_, Any>,
    kind: &str,
    to: &str,
    r: &Rendered,
    ics: Option<(String, String)>,
    meeting: Option<&str>,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), HandlerError> {
    if OPTIONAL_KINDS.contains(&kind) && !email_allowed(tx, to).await? {
        return Ok(());
    }
    let (method, ics) = match ics {
        Some((m, i)) => (Some(m), Some(i)),
        None => (None, None),
    };
    sqlx::query(
        "INSERT INTO mail_queue (id, kind, recipient, subject, body_text, body_html, ics, ics_method, meeting_id, due_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(kind)
    .bind(to)
    .bind(&r.subject)
    .bind(&r.text)
    .bind(&r.html)
    .bind(ics)
    .bind(method)
    .bind(meeting)
    .bind(due.timestamp_millis())
    .bind(now.timestamp_millis())
    .execute(&mut **tx)
    .await
    .map_err(db_retry)?;
    Ok(())
}
