//! What each email says, as a real mail parser reads it.

use crate::helpers::{SmtpSink, Stack, World, wait_for_mails};
use proto::ids::{EventId, MeetingId, UserId};
use proto::meeting::{MeetingEvent, MeetingEventBody};
use serde_json::json;

pub fn meeting_event(meeting: MeetingId, body: MeetingEventBody) -> serde_json::Value {
    serde_json::to_value(MeetingEvent {
        event_id: EventId::new(),
        occurred_at_ms: chrono::Utc::now().timestamp_millis(),
        meeting_id: meeting,
        body,
    })
    .unwrap()
}

pub fn scheduled(starts_at: &str, tz: &str, invitees: &[&str]) -> MeetingEventBody {
    MeetingEventBody::Scheduled {
        host_id: UserId::new(),
        title: "Quarterly planning".into(),
        starts_at: starts_at.into(),
        time_zone: tz.into(),
        invitees: invitees.iter().map(|s| s.to_string()).collect(),
    }
}

/// Structural checks of an iCalendar object: balanced components, CRLF lines no
/// longer than 75 octets, the properties RFC 5545 requires.
fn assert_valid_ics(ics: &str) {
    let unfolded = ics.replace("\r\n ", "");
    let mut stack = Vec::new();
    for line in unfolded.split("\r\n").filter(|l| !l.is_empty()) {
        if let Some(name) = line.strip_prefix("BEGIN:") {
            stack.push(name.to_owned());
        } else if let Some(name) = line.strip_prefix("END:") {
            assert_eq!(stack.pop().as_deref(), Some(name), "unbalanced {name}");
        } else {
            assert!(line.contains(':'), "not a content line: {line}");
        }
    }
    assert!(stack.is_empty());
    for needed in [
        "VERSION:2.0",
        "PRODID:",
        "UID:",
        "DTSTAMP:",
        "DTSTART;TZID=",
        "BEGIN:VTIMEZONE",
    ] {
        assert!(unfolded.contains(needed), "missing {needed} in {ics}");
    }
    assert!(ics.split("\r\n").all(|l| l.len() <= 75));
}

#[tokio::test]
async fn mail_goes_over_smtps_to_a_server_the_configured_ca_vouches_for_and_never_to_one_it_does_not()
 {
    let (smtp, ca) = SmtpSink::start_tls().await;
    let tls_url = format!("smtps://localhost:{}", smtp.port);
    // Without the private CA the server's certificate is not trusted: nothing is sent.
    let untrusted = World::new(Stack::Embedded).await;
    let mut config = untrusted.config();
    config.smtp_url = Some(servicekit::Secret::new(tls_url.clone()));
    untrusted.spawn_notify(config).await;
    untrusted
        .publish(
            &untrusted.user_exchange(),
            "user.registered",
            serde_json::json!({"email": "eve@example.com", "display_name": "Eve"}),
        )
        .await;
    for _ in 0..100 {
        if crate::helpers::count(
            &untrusted.db,
            "SELECT COUNT(*) FROM mail_queue WHERE attempts > 0 AND last_error IS NOT NULL",
        )
        .await
            > 0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    use sqlx::Row;
    let errors: Vec<String> = sqlx::query(
        "SELECT last_error FROM mail_queue WHERE sent_at IS NULL AND last_error IS NOT NULL",
    )
    .fetch_all(untrusted.db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get("last_error"))
    .collect();
    assert_eq!(errors.len(), 1, "the welcome failed and was not sent");
    assert!(
        errors[0].to_lowercase().contains("certificate"),
        "{}",
        errors[0]
    );
    untrusted.cleanup().await;
    // With it, the welcome arrives over TLS.
    let world = World::new(Stack::Embedded).await;
    let mut config = world.config();
    config.smtp_url = Some(servicekit::Secret::new(tls_url));
    config.smtp_ca_file = Some(ca);
    world.spawn_notify(config).await;
    world
        .publish(
            &world.user_exchange(),
            "user.registered",
            serde_json::json!({"email": "ann@example.com", "display_name": "Ann"}),
        )
        .await;
    let mails = wait_for_mails(&smtp.maildir, |m| !m.is_empty()).await;
    assert_eq!(mails.len(), 1, "only the trusted notify delivered");
    assert_eq!(mails[0].to, "ann@example.com");
    world.cleanup().await;
}

#[test]
fn smtp_settings_are_checked_at_start() {
    let folder = std::env::temp_dir();
    let url = |u: &str| Some(servicekit::Secret::new(u.to_owned()));
    let err = |u: &str, ca: Option<&std::path::Path>| {
        notify::mail::Mailer::new(url(u).as_ref(), ca, folder.clone())
            .err()
            .map(|e| e.to_string())
    };
    assert!(err("smtps://relay.example", None).is_none());
    assert!(err("smtp://relay.example:2525", None).is_none());
    assert!(
        err("http://relay.example", None)
            .unwrap()
            .contains("SMTP_URL")
    );
    let missing = std::path::Path::new("/nonexistent/ca.pem");
    assert!(
        err("smtps://relay.example", Some(missing))
            .unwrap()
            .contains("SMTP_CA_FILE")
    );
    // A CA file with plain smtp:// is a mistake worth saying.
    assert!(
        err("smtp://relay.example", Some(missing))
            .unwrap()
            .contains("SMTP_CA_FILE")
    );
}

#[tokio::test]
async fn an_invitation_arrives_over_smtp_with_an_ics_naming_the_start_in_the_meetings_time_zone() {
    let smtp = SmtpSink::start().await;
    let world = World::new(Stack::Embedded).await;
    let mut config = world.config();
    config.smtp_url = Some(servicekit::Secret::new(smtp.url()));
    world.spawn_notify(config).await;
    let meeting = MeetingId::new();
    // 14:00 UTC on 1 December is 09:00 in New York (EST, UTC-5).
    world
        .publish(
            &world.meeting_exchange(),
            "meeting.scheduled",
            meeting_event(
                meeting,
                scheduled(
                    "2026-12-01T14:00:00Z",
                    "America/New_York",
                    &["bob@example.com"],
                ),
            ),
        )
        .await;
    let mails = wait_for_mails(&smtp.maildir, |m| !m.is_empty()).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.to, "bob@example.com");
    assert_eq!(mail.subject, "Invitation: Quarterly planning");
    assert!(
        mail.text()
            .contains("Tuesday 1 December 2026, 09:00 (America/New_York)"),
        "{}",
        mail.text()
    );
    assert!(
        mail.text()
            .contains(&format!("https://meet.example/m/{meeting}"))
    );
    assert!(mail.part("text/html").is_some());
    let ics = mail.part("text/calendar").expect("an .ics attachment");
    assert_eq!(
        ics.params.get("method").map(String::as_str),
        Some("REQUEST")
    );
    assert_eq!(ics.filename.as_deref(), Some("invite.ics"));
    assert_valid_ics(&ics.text);
    assert!(ics.text.contains("METHOD:REQUEST\r\n"));
    assert!(
        ics.text
            .contains("DTSTART;TZID=America/New_York:20261201T090000\r\n")
    );
    assert!(ics.text.contains("TZOFFSETTO:-0500\r\n"));
    assert!(ics.text.contains(&format!("UID:{meeting}\r\n")));
    assert!(ics.text.contains("SEQUENCE:0\r\n"));
    assert!(ics.text.replace("\r\n ", "").contains(
        "ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob@example.com"
    ));
    world.cleanup().await;
}

async fn an_update_and_a_cancellation_reach_invitees_with_a_growing_sequence(stack: Stack) {
    let world = World::new(stack).await;
    world.spawn_notify(world.config()).await;
    let meeting = MeetingId::new();
    let x = world.meeting_exchange();
    world
        .publish(
            &x,
            "meeting.scheduled",
            meeting_event(
                meeting,
                scheduled(
                    "2026-07-01T07:00:00Z",
                    "Europe/Berlin",
                    &["a@example.com", "b@example.com"],
                ),
            ),
        )
        .await;
    wait_for_mails(&world.mail_folder(), |m| m.len() == 2).await;
    world
        .publish(
            &x,
            "meeting.updated",
            meeting_event(
                meeting,
                MeetingEventBody::Updated {
                    title: "Quarterly planning".into(),
                    starts_at: "2026-07-01T08:30:00Z".into(),
                    time_zone: "Europe/Berlin".into(),
                    invitees: vec!["a@example.com".into()],
                },
            ),
        )
        .await;
    let mails = wait_for_mails(&world.mail_folder(), |m| m.len() == 4).await;
    let updated = mails
        .iter()
        .find(|m| m.subject.starts_with("Updated"))
        .unwrap();
    assert_eq!(updated.to, "a@example.com");
    let ics = &updated.part("text/calendar").unwrap().text;
    assert!(
        ics.contains("SEQUENCE:1\r\n")
            && ics.contains("DTSTART;TZID=Europe/Berlin:20260701T103000\r\n"),
        "{ics}"
    );
    let dropped = mails
        .iter()
        .find(|m| m.subject.starts_with("Cancelled"))
        .unwrap();
    assert_eq!(dropped.to, "b@example.com");
    assert!(
        dropped
            .part("text/calendar")
            .unwrap()
            .text
            .contains("METHOD:CANCEL\r\n")
    );
    world
        .publish(
            &x,
            "meeting.cancelled",
            meeting_event(
                meeting,
                MeetingEventBody::Cancelled {
                    invitees: vec!["a@example.com".into()],
                },
            ),
        )
        .await;
    let mails = wait_for_mails(&world.mail_folder(), |m| m.len() == 5).await;
    let cancel = mails
        .iter()
        .find(|m| m.to == "a@example.com" && m.subject.starts_with("Cancelled"))
        .unwrap();
    let ics = &cancel.part("text/calendar").unwrap();
    assert_eq!(ics.params.get("method").map(String::as_str), Some("CANCEL"));
    assert!(ics.text.contains("METHOD:CANCEL\r\n") && ics.text.contains("SEQUENCE:2\r\n"));
    assert_valid_ics(&ics.text);
    world.cleanup().await;
}

async fn account_events_send_welcome_verification_and_reset_links(stack: Stack) {
    let world = World::new(stack).await;
    world.spawn_notify(world.config()).await;
    let x = world.user_exchange();
    let who = json!({"user_id": UserId::new(), "email": "ann@example.com", "display_name": "Ann"});
    let with_token = |t: &str| {
        let mut v = who.clone();
        v["token"] = json!(t);
        v
    };
    world.publish(&x, "user.registered", who.clone()).await;
    world
        .publish(
            &x,
            "auth.email_verification_requested",
            with_token("verify-123"),
        )
        .await;
    world
        .publish(&x, "auth.password_reset_requested", with_token("reset-456"))
        .await;
    world.publish(&x, "user.email_verified", who.clone()).await;
    let mails = wait_for_mails(&world.mail_folder(), |m| m.len() == 3).await;
    let by = |s: &str| {
        mails
            .iter()
            .find(|m| m.subject == s)
            .unwrap_or_else(|| panic!("no {s}"))
    };
    assert!(by("Welcome to MeetEase").text().contains("Hello Ann,"));
    assert!(
        by("Confirm your email address")
            .text()
            .contains("https://meet.example/verify-email?token=verify-123")
    );
    let reset = by("Reset your MeetEase password");
    assert!(
        reset
            .text()
            .contains("https://meet.example/reset?token=reset-456")
    );
    assert!(
        reset
            .part("text/html")
            .unwrap()
            .text
            .contains("href=\"https://meet.example/reset?token=reset-456\"")
    );
    // Once sent, the token no longer sits in notify's database.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        crate::helpers::count(&world.db, "SELECT COUNT(*) FROM mail_queue WHERE body_text LIKE '%reset-456%' OR body_text LIKE '%verify-123%'").await,
        0
    );
    world.cleanup().await;
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test]
            async fn $name() { super::$name(super::Stack::Embedded).await })*
        }
        mod servers {
            $(#[tokio::test]
            async fn $name() { super::$name(super::Stack::Servers).await })*
        }
    };
}
pub(crate) use on_both;

on_both!(
    an_update_and_a_cancellation_reach_invitees_with_a_growing_sequence,
    account_events_send_welcome_verification_and_reset_links,
    people_who_switched_email_off_get_no_optional_email_but_still_account_mail,
    the_host_gets_a_summary_when_the_meeting_ends,
);

async fn people_who_switched_email_off_get_no_optional_email_but_still_account_mail(stack: Stack) {
    let world = World::new(stack).await;
    world.spawn_notify(world.config()).await;
    let ann = UserId::new();
    let ux = world.user_exchange();
    world
        .publish(
            &ux,
            "user.registered",
            json!({"user_id": ann, "email": "ann@example.com", "display_name": "Ann"}),
        )
        .await;
    wait_for_mails(&world.mail_folder(), |m| m.len() == 1).await;
    world
        .publish(
            &ux,
            "user.preferences_changed",
            json!({"user_id": ann, "notifications": {"email": false, "push": true, "in_app": true}}),
        )
        .await;
    world
        .publish(
            &world.meeting_exchange(),
            "meeting.scheduled",
            meeting_event(
                MeetingId::new(),
                scheduled(
                    "2026-12-01T14:00:00Z",
                    "UTC",
                    &["ann@example.com", "bob@example.com"],
                ),
            ),
        )
        .await;
    world
        .publish(
            &ux,
            "auth.password_reset_requested",
            json!({"user_id": ann, "email": "ann@example.com", "token": "t-1"}),
        )
        .await;
    let mails = wait_for_mails(&world.mail_folder(), |m| m.len() == 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mails_now = crate::helpers::read_mails(&world.mail_folder());
    assert_eq!(mails_now.len(), 3);
    let mut got: Vec<(String, String)> = mails
        .iter()
        .map(|m| (m.to.clone(), m.subject.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "ann@example.com".into(),
                "Reset your MeetEase password".into()
            ),
            ("ann@example.com".into(), "Welcome to MeetEase".into()),
            (
                "bob@example.com".into(),
                "Invitation: Quarterly planning".into()
            ),
        ]
    );
    world.cleanup().await;
}

async fn the_host_gets_a_summary_when_the_meeting_ends(stack: Stack) {
    let world = World::new(stack).await;
    world.spawn_notify(world.config()).await;
    let host = UserId::new();
    world
        .publish(
            &world.user_exchange(),
            "user.registered",
            json!({"user_id": host, "email": "host@example.com"}),
        )
        .await;
    let meeting = MeetingId::new();
    let mut body = scheduled("2026-12-01T14:00:00Z", "UTC", &[]);
    if let MeetingEventBody::Scheduled { host_id, .. } = &mut body {
        *host_id = host;
    }
    let x = world.meeting_exchange();
    let at = |ms: i64| {
        let mut v = meeting_event(meeting, MeetingEventBody::Started {});
        v["occurred_at_ms"] = json!(ms);
        v
    };
    world
        .publish(&x, "meeting.scheduled", meeting_event(meeting, body))
        .await;
    world.publish(&x, "meeting.started", at(1_000_000)).await;
    for _ in 0..2 {
        let mut v = meeting_event(
            meeting,
            MeetingEventBody::ParticipantJoined {
                participant_id: proto::ids::ParticipantId::new(),
                user_id: None,
                display_name: "P".into(),
            },
        );
        v["occurred_at_ms"] = json!(1_000_000);
        world.publish(&x, "meeting.participant_joined", v).await;
    }
    let mut ended = meeting_event(meeting, MeetingEventBody::Ended {});
    ended["occurred_at_ms"] = json!(1_000_000 + 25 * 60_000);
    world.publish(&x, "meeting.ended", ended).await;
    let mails = wait_for_mails(&world.mail_folder(), |m| {
        m.iter().any(|m| m.subject == "Summary: Quarterly planning")
    })
    .await;
    let summary = mails
        .iter()
        .find(|m| m.subject.starts_with("Summary"))
        .unwrap();
    assert_eq!(summary.to, "host@example.com");
    assert!(
        summary
            .text()
            .contains("It lasted 25 min and 2 people joined."),
        "{}",
        summary.text()
    );
    world.cleanup().await;
}
