use crate::helpers::{Stack, User, spawn_app};
use proto::ids::{MeetingId, ParticipantId, UserId};
use proto::meeting::MeetingEventBody;
use proto::sfu::{Quality, QualitySample};
use serde_json::json;
use std::time::Duration;

const MIN: i64 = 60_000;

fn joined(p: ParticipantId, user: Option<UserId>) -> MeetingEventBody {
    MeetingEventBody::ParticipantJoined {
        participant_id: p,
        user_id: user,
        display_name: "x".into(),
    }
}

fn left(p: ParticipantId, user: Option<UserId>) -> MeetingEventBody {
    MeetingEventBody::ParticipantLeft {
        participant_id: p,
        user_id: user,
        reason: "left".into(),
    }
}

async fn a_simulated_meetings_events_give_the_right_summary(stack: Stack) {
    let app = spawn_app(stack).await;
    let (host, ann, bob) = (User::new(), User::new(), User::new());
    let meeting = MeetingId::new();
    // An hour ago, on the minute, so every stay is a whole number of minutes.
    let t0 = (chrono::Utc::now().timestamp_millis() - 60 * MIN) / MIN * MIN;
    let (pa, pb, pg) = (
        ParticipantId::new(),
        ParticipantId::new(),
        ParticipantId::new(),
    );
    app.meeting_event(
        meeting,
        t0 - 10 * MIN,
        MeetingEventBody::Scheduled {
            host_id: host.id,
            title: "Standup".into(),
            starts_at: "2026-01-01T00:00:00Z".into(),
            time_zone: "UTC".into(),
            invitees: vec![],
        },
    )
    .await;
    app.meeting_event(meeting, t0, MeetingEventBody::Started {})
        .await;
    let ann_joins = app
        .meeting_event(meeting, t0, joined(pa, Some(ann.id)))
        .await;
    app.meeting_event(meeting, t0 + MIN, joined(pb, Some(bob.id)))
        .await;
    app.meeting_event(meeting, t0 + 2 * MIN, joined(pg, None))
        .await;
    // Redelivered: must not count twice.
    app.publish(&ann_joins).await;
    for (i, (quality, loss)) in [(Quality::Excellent, 0.0), (Quality::Poor, 0.08)]
        .into_iter()
        .enumerate()
    {
        let env = proto::event::EventEnvelope {
            id: proto::ids::EventId::new(),
            kind: "meeting.quality_sample".into(),
            version: 1,
            occurred_at_ms: t0 + i as i64 * 10_000,
            room: Some(meeting.to_string()),
            seq: None,
            payload: json!({
                "meeting_id": meeting,
                "occurred_at_ms": t0 + i as i64 * 10_000,
                "sample": QualitySample {
                    participant_id: pa,
                    quality,
                    egress_estimate_bps: Some(1_500_000),
                    ingress_loss: loss,
                    rtt_ms: Some(40.0),
                },
            }),
        };
        app.publish(&env).await;
    }
    app.meeting_event(meeting, t0 + 3 * MIN, left(pb, Some(bob.id)))
        .await;
    app.meeting_event(meeting, t0 + 5 * MIN, MeetingEventBody::Ended {})
        .await;

    let path = format!("/api/v1/analytics/meetings/{meeting}");
    let mut summary = json!(null);
    for _ in 0..200 {
        let (status, body) = app.get(&path, Some(&host)).await;
        if status == 200 && body["ended_at"].is_string() {
            summary = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let any redelivery land before checking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, summary2) = app.get(&path, Some(&host)).await;
    assert_eq!(summary, summary2);
    assert_eq!(summary["duration_seconds"], 300, "{summary}");
    assert_eq!(summary["peak_participants"], 3);
    assert_eq!(summary["total_participants"], 3);
    // Ann 5 + Bob 2 + the guest 3.
    assert_eq!(summary["participant_minutes"], 10.0);
    assert_eq!(summary["live"], false);
    assert_eq!(summary["participants"].as_array().unwrap().len(), 3);
    assert_eq!(summary["participants"][0]["display_name"], "x");
    let timeline = summary["quality"][pa.to_string()].as_array().unwrap();
    assert_eq!(timeline.len(), 2);
    assert_eq!(timeline[1]["quality"], "poor");
    assert!((timeline[1]["ingress_loss"].as_f64().unwrap() - 0.08).abs() < 1e-6);

    // Attendees see it too, and their own totals.
    let (status, _) = app.get(&path, Some(&bob)).await;
    assert_eq!(status, 200);
    let (status, me) = app.get("/api/v1/analytics/users/me", Some(&ann)).await;
    assert_eq!(status, 200);
    assert_eq!(me["meetings_attended"], 1);
    assert_eq!(me["minutes"], 5.0);
    // One excellent and one poor bucket: either may be typical, but one is named.
    assert!(["excellent", "poor"].contains(&me["typical_quality"].as_str().unwrap()));
    // The dashboard's list of one's meetings: hosted or attended, newest first.
    let rfc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let (status, mine) = app
        .get("/api/v1/analytics/users/me/meetings", Some(&host))
        .await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(
        mine["meetings"],
        json!([{
            "meeting_id": meeting.to_string(),
            "started_at": rfc(t0),
            "ended_at": rfc(t0 + 5 * MIN),
            "live": false,
            "peak_participants": 3,
            "total_participants": 3,
            "hosted": true,
        }])
    );
    let (_, bobs) = app
        .get("/api/v1/analytics/users/me/meetings?limit=5", Some(&bob))
        .await;
    assert_eq!(bobs["meetings"][0]["hosted"], false);
    assert_eq!(bobs["meetings"].as_array().unwrap().len(), 1);
    let (_, bob_me) = app.get("/api/v1/analytics/users/me", Some(&bob)).await;
    assert_eq!(bob_me["minutes"], 2.0);
    assert_eq!(bob_me["typical_quality"], json!(null));

    let (status, platform) = app
        .get("/api/v1/analytics/platform?days=2", Some(&host))
        .await;
    assert_eq!(status, 200, "{platform}");
    assert_eq!(platform["concurrent_peak"], 3);
    assert_eq!(platform["concurrent_now"], 0);
    assert_eq!(platform["participant_joins"], 3);
    assert_eq!(
        platform["quality_distribution"],
        json!({"excellent": 1, "poor": 1})
    );
    let day = chrono::DateTime::from_timestamp_millis(t0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(
        platform["meetings_per_day"],
        json!([{"day": day, "meetings": 1}])
    );
    app.cleanup().await;
}

async fn a_meeting_is_hidden_from_people_who_neither_hosted_nor_attended_it(stack: Stack) {
    let app = spawn_app(stack).await;
    let meeting = MeetingId::new();
    let now = chrono::Utc::now().timestamp_millis();
    app.meeting_event(
        meeting,
        now,
        joined(ParticipantId::new(), Some(UserId::new())),
    )
    .await;
    let path = format!("/api/v1/analytics/meetings/{meeting}");
    let stranger = User::new();
    for _ in 0..100 {
        // Wait until it is ingested (then the answer stays 404 for a stranger).
        let (_, platform) = app.get("/api/v1/analytics/platform", Some(&stranger)).await;
        if platform["participant_joins"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = app.get(&path, Some(&stranger)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "meeting_not_found");
    let (status, body) = app.get(&path, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthenticated");
    let (status, body) = app
        .get("/api/v1/analytics/users/me/meetings", Some(&stranger))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["meetings"], json!([]));
    for bad in [
        "/api/v1/analytics/platform?days=0",
        "/api/v1/analytics/platform?days=many",
        "/api/v1/analytics/users/me/meetings?limit=0",
        "/api/v1/analytics/users/me/meetings?limit=101",
        "/api/v1/analytics/users/me/meetings?limit=-1",
    ] {
        let (status, body) = app.get(bad, Some(&stranger)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("invalid_field")),
            "{bad}"
        );
    }
    app.cleanup().await;
}

async fn a_malformed_meeting_event_is_dead_lettered_and_counting_goes_on(stack: Stack) {
    let app = spawn_app(stack).await;
    let bad = proto::event::EventEnvelope {
        id: proto::ids::EventId::new(),
        kind: "meeting.participant_joined".into(),
        version: 1,
        occurred_at_ms: 0,
        room: None,
        seq: None,
        payload: json!({"nonsense": true}),
    };
    app.publish(&bad).await;
    let user = User::new();
    let now = chrono::Utc::now().timestamp_millis();
    app.meeting_event(
        MeetingId::new(),
        now,
        joined(ParticipantId::new(), Some(user.id)),
    )
    .await;
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead.extend(app.bus.take_dead_letters(&app.queue_name()).await.unwrap());
        let (_, me) = app.get("/api/v1/analytics/users/me", Some(&user)).await;
        if !dead.is_empty() && me["meetings_attended"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead, vec![servicekit::bus::DeadLetter::Event(bad)]);
    app.cleanup().await;
}

async fn numbered_events_show_what_is_missing_and_what_came_late(stack: Stack) {
    let app = spawn_app(stack).await;
    let host = User::new();
    let meeting = MeetingId::new();
    let now = chrono::Utc::now().timestamp_millis();
    let numbered = |seq: u64, body: MeetingEventBody| {
        let event = proto::meeting::MeetingEvent {
            event_id: proto::ids::EventId::new(),
            occurred_at_ms: now,
            meeting_id: meeting,
            body,
        };
        proto::event::EventEnvelope {
            id: event.event_id,
            kind: event.body.type_name().to_owned(),
            version: 1,
            occurred_at_ms: now,
            room: Some(meeting.to_string()),
            seq: Some(seq),
            payload: serde_json::to_value(&event).unwrap(),
        }
    };
    let (pa, pb) = (ParticipantId::new(), ParticipantId::new());
    let scheduled = numbered(
        1,
        MeetingEventBody::Scheduled {
            host_id: host.id,
            title: "Numbers".into(),
            starts_at: "2026-01-01T00:00:00Z".into(),
            time_zone: "UTC".into(),
            invitees: vec![],
        },
    );
    let third = numbered(3, joined(pb, None));
    app.publish(&scheduled).await;
    app.publish(&numbered(2, joined(pa, None))).await;
    app.publish(&numbered(4, left(pa, None))).await;
    // Redelivered: counted once.
    app.publish(&scheduled).await;
    let path = format!("/api/v1/analytics/meetings/{meeting}");
    let wait_for = |want: (i64, i64, i64)| {
        let path = path.clone();
        let app = &app;
        let host = &host;
        async move {
            let mut last = json!(null);
            for _ in 0..200 {
                let (_, s) = app.get(&path, Some(host)).await;
                let got = (
                    s["last_seq"].as_i64().unwrap_or(-1),
                    s["missing_events"].as_i64().unwrap_or(-1),
                    s["late_events"].as_i64().unwrap_or(-1),
                );
                if got == want {
                    return;
                }
                last = s;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("want (last, missing, late) = {want:?}; have {last}");
        }
    };
    // 3 has not come: one missing.
    wait_for((4, 1, 0)).await;
    // Now it comes, after 4: nothing missing, one late.
    app.publish(&third).await;
    wait_for((4, 0, 1)).await;
    app.cleanup().await;
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

on_both!(
    a_simulated_meetings_events_give_the_right_summary,
    a_meeting_is_hidden_from_people_who_neither_hosted_nor_attended_it,
    a_malformed_meeting_event_is_dead_lettered_and_counting_goes_on,
    numbered_events_show_what_is_missing_and_what_came_late,
);

#[tokio::test]
async fn quality_buckets_older_than_the_retention_are_pruned() {
    let app = spawn_app(Stack::Embedded).await;
    let user = User::new();
    let meeting = MeetingId::new();
    let now = chrono::Utc::now().timestamp_millis();
    let p = ParticipantId::new();
    app.meeting_event(meeting, now, joined(p, Some(user.id)))
        .await;
    // 60 days old: kept by the service's own 90-day retention (which also runs
    // in the background), removed by the 30-day prune below.
    for at in [now - 60 * 24 * 60 * MIN, now] {
        let env = proto::event::EventEnvelope {
            id: proto::ids::EventId::new(),
            kind: "meeting.quality_sample".into(),
            version: 1,
            occurred_at_ms: at,
            room: None,
            seq: None,
            payload: json!({"meeting_id": meeting, "occurred_at_ms": at, "sample": QualitySample {
                participant_id: p, quality: Quality::Good, egress_estimate_bps: None, ingress_loss: 0.0, rtt_ms: None,
            }}),
        };
        app.publish(&env).await;
    }
    let path = format!("/api/v1/analytics/meetings/{meeting}");
    let mut points = 0;
    for _ in 0..100 {
        let (_, body) = app.get(&path, Some(&user)).await;
        points = body["quality"][p.to_string()]
            .as_array()
            .map_or(0, Vec::len);
        if points == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(points, 2);
    let removed = analytics::ingest::prune(app.db(), 30 * 24 * 60 * MIN, now)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let (_, body) = app.get(&path, Some(&user)).await;
    assert_eq!(body["quality"][p.to_string()].as_array().unwrap().len(), 1);
    app.cleanup().await;
}
