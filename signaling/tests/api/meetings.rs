//! `/api/v1/meetings` against real PostgreSQL (and SQLite where said).

use crate::helpers::{AppOptions, Backend, User, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::json;
use sqlx::Row;

#[tokio::test]
async fn an_instant_meeting_gets_a_join_code_and_link() {
    let app = spawn_app().await;
    let host = User::new("Ada");
    let meeting = app.create_meeting(&host, json!({})).await;
    let code = meeting["code"].as_str().unwrap();
    assert_eq!(code.len(), 12);
    assert_eq!(meeting["join_url"], format!("/m/{code}"));
    assert_eq!(meeting["kind"], "instant");
    assert_eq!(meeting["status"], "scheduled");
    assert_eq!(meeting["title"], "Instant meeting");
    assert_eq!(meeting["duration_minutes"], 60);
    assert_eq!(meeting["host_id"], host.id.to_string());
    // Found by id and by code, typed any way.
    let typed = code.replace('-', "").to_uppercase();
    for key in [meeting["id"].as_str().unwrap(), code, typed.as_str()] {
        let (status, found) = app
            .request(
                Method::GET,
                &format!("/api/v1/meetings/{key}"),
                Some(&host),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(found["id"], meeting["id"]);
    }
}

#[tokio::test]
async fn a_scheduled_meeting_is_read_in_its_time_zone() {
    let app = spawn_app().await;
    let host = User::new("Ada");
    let meeting = app
        .create_meeting(
            &host,
            json!({"title": "Planning", "starts_at": "2030-01-15T09:30", "time_zone": "Europe/Paris",
                   "duration_minutes": 45, "invitees": ["Bob@Example.com", "bob@example.com", "eve@example.org"],
                   "settings": {"guests_allowed": true, "lobby": true, "mute_on_entry": true, "max_participants": 10}}),
        )
        .await;
    assert_eq!(meeting["kind"], "scheduled");
    assert_eq!(meeting["starts_at"], "2030-01-15T08:30:00Z");
    assert_eq!(meeting["ends_at"], "2030-01-15T09:15:00Z");
    assert_eq!(meeting["time_zone"], "Europe/Paris");
    assert_eq!(
        meeting["invitees"],
        json!(["bob@example.com", "eve@example.org"])
    );
    assert_eq!(meeting["settings"]["max_participants"], 10);
    assert_eq!(meeting["settings"]["lobby"], true);
    // The schedule went to the outbox for notify.
    let row = sqlx::query("SELECT type, payload FROM outbox WHERE published_at IS NULL")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("type"), "meeting.scheduled");
    let payload: serde_json::Value =
        serde_json::from_str(&row.get::<String, _>("payload")).unwrap();
    assert_eq!(payload["meeting_id"], meeting["id"]);
    assert_eq!(payload["invitees"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_meeting_input_gets_a_stable_4xx_code() {
    let app = spawn_app().await;
    let host = User::new("Ada");
    let many: Vec<String> = (0..10_000).map(|i| format!("p{i}@example.com")).collect();
    let cases = [
        (
            json!({"starts_at": "2030-01-15T09:30", "time_zone": "Mars/Olympus"}),
            422,
            "unknown_time_zone",
        ),
        (
            json!({"starts_at": "2030-01-15T09:30:00Z", "ends_at": "2030-01-15T08:00:00Z"}),
            422,
            "invalid_schedule",
        ),
        (
            json!({"starts_at": "2030-01-15T09:30:00Z", "duration_minutes": 0}),
            422,
            "invalid_schedule",
        ),
        (
            json!({"starts_at": "2001-01-15T09:30:00Z"}),
            422,
            "invalid_schedule",
        ),
        (
            json!({"starts_at": "next tuesday"}),
            422,
            "invalid_schedule",
        ),
        (json!({"invitees": many}), 422, "too_many_invitees"),
        (json!({"invitees": ["not-an-email"]}), 422, "invalid_field"),
        (json!({"title": "x".repeat(201)}), 422, "invalid_field"),
        (
            json!({"title": "x".repeat(1_100_000)}),
            413,
            "payload_too_large",
        ),
        (
            json!({"settings": {"max_participants": 100000}}),
            422,
            "invalid_field",
        ),
        (json!({"surprise": true}), 400, "malformed_body"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = app
            .request(Method::POST, "/api/v1/meetings", Some(&host), Some(body))
            .await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
    }
    let (status, answer) = app
        .request(Method::POST, "/api/v1/meetings", None, Some(json!({})))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    for key in [
        "abc-defg-hjk",
        "nonsense",
        "0190a1b2-0000-7000-8000-000000000001",
    ] {
        let (status, answer) = app.join(key, Some(&host), json!({})).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (404, Some("meeting_not_found")),
            "{key}"
        );
    }
}

#[tokio::test]
async fn the_list_shows_upcoming_and_past_meetings_of_hosts_and_invitees() {
    let app = spawn_app().await;
    let host = User::new("Ada");
    let guest = User::new("Bob");
    let stranger = User::new("Eve");
    let soon = app
        .create_meeting(&host, json!({"title": "Soon", "starts_at": "2030-01-01T10:00:00Z", "invitees": [guest.email]}))
        .await;
    let later = app
        .create_meeting(
            &host,
            json!({"title": "Later", "starts_at": "2031-01-01T10:00:00Z"}),
        )
        .await;
    let cancelled = app
        .create_meeting(
            &host,
            json!({"title": "Off", "starts_at": "2030-06-01T10:00:00Z"}),
        )
        .await;
    let (status, _) = app
        .request(
            Method::DELETE,
            &format!("/api/v1/meetings/{}", cancelled["id"].as_str().unwrap()),
            Some(&host),
            None,
        )
        .await;
    assert_eq!(status, 204);

    let titles = |list: &serde_json::Value| -> Vec<String> {
        list["meetings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, upcoming) = app
        .request(Method::GET, "/api/v1/meetings", Some(&host), None)
        .await;
    assert_eq!(titles(&upcoming), ["Soon", "Later"]);
    let (_, past) = app
        .request(Method::GET, "/api/v1/meetings?when=past", Some(&host), None)
        .await;
    assert_eq!(titles(&past), ["Off"]);
    let (_, invited) = app
        .request(Method::GET, "/api/v1/meetings", Some(&guest), None)
        .await;
    assert_eq!(titles(&invited), ["Soon"]);
    // Invitees see the meeting but not who else is invited.
    assert_eq!(invited["meetings"][0]["invitees"], json!([]));
    let (_, none) = app
        .request(Method::GET, "/api/v1/meetings", Some(&stranger), None)
        .await;
    assert_eq!(titles(&none), Vec::<String>::new());
    let (status, _) = app
        .request(
            Method::GET,
            "/api/v1/meetings?when=soonish",
            Some(&host),
            None,
        )
        .await;
    assert_eq!(status, 422);
    let _ = (soon, later);
}

#[tokio::test]
async fn only_the_host_may_update_or_cancel() {
    let app = spawn_app().await;
    let host = User::new("Ada");
    let other = User::new("Bob");
    let meeting = app
        .create_meeting(&host, json!({"starts_at": "2030-01-01T10:00:00Z"}))
        .await;
    let path = format!("/api/v1/meetings/{}", meeting["id"].as_str().unwrap());
    let patch = json!({"title": "Renamed", "starts_at": "2030-01-01T12:00", "time_zone": "America/New_York",
                       "settings": {"guests_allowed": true}});
    let (status, answer) = app
        .request(Method::PATCH, &path, Some(&other), Some(patch.clone()))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, updated) = app
        .request(Method::PATCH, &path, Some(&host), Some(patch))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["title"], "Renamed");
    assert_eq!(updated["starts_at"], "2030-01-01T17:00:00Z");
    assert_eq!(updated["duration_minutes"], 60);
    assert_eq!(updated["settings"]["guests_allowed"], true);
    assert_eq!(updated["settings"]["lobby"], false);
    let (status, _) = app
        .request(
            Method::PATCH,
            &path,
            Some(&host),
            Some(json!({"ends_at": "2029-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = app.request(Method::DELETE, &path, Some(&other), None).await;
    assert_eq!(status, 403);
    let (status, _) = app.request(Method::DELETE, &path, Some(&host), None).await;
    assert_eq!(status, 204);
    let (status, answer) = app
        .join(meeting["code"].as_str().unwrap(), Some(&host), json!({}))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (410, Some("meeting_ended"))
    );
    let types: Vec<String> = sqlx::query("SELECT type FROM outbox ORDER BY created_at, id")
        .fetch_all(app.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("type"))
        .collect();
    assert_eq!(
        types,
        ["meeting.scheduled", "meeting.updated", "meeting.cancelled"]
    );
}

#[tokio::test]
async fn joining_hands_out_a_room_token_with_the_callers_grants() {
    let app = spawn_app().await;
    let host = User::new("Ada");
    let other = User::new("Bob");
    let meeting = app
        .create_meeting(&host, json!({"settings": {"lobby": true}}))
        .await;
    let code = meeting["code"].as_str().unwrap();
    let (status, joined) = app.join(code, Some(&host), json!({})).await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["signaling_url"], "/rtc");
    assert_eq!(joined["participant"]["display_name"], "Ada");
    assert_eq!(joined["participant"]["grants"]["is_host"], true);
    assert_eq!(joined["participant"]["lobby"], false);
    assert_eq!(joined["meeting"]["id"], meeting["id"]);
    let tokens = signaling::room_token::RoomTokens::new(&servicekit::Secret::new(
        crate::helpers::ROOM_SECRET.to_owned(),
    ))
    .unwrap();
    let claims = tokens
        .verify(joined["room_token"].as_str().unwrap(), false)
        .unwrap();
    assert_eq!(claims.room.as_str(), meeting["id"].as_str().unwrap());
    assert_eq!(
        claims.participant_id.to_string(),
        joined["participant"]["participant_id"].as_str().unwrap()
    );
    assert_eq!(claims.grants.can_publish.len(), 4);
    assert!(claims.exp - claims.iat <= 600);
    // Someone else, not invited, waits in the lobby.
    let (_, joined) = app
        .join(code, Some(&other), json!({"display_name": "Bobby"}))
        .await;
    assert_eq!(joined["participant"]["lobby"], true);
    assert_eq!(joined["participant"]["grants"]["is_host"], false);
    assert_eq!(joined["participant"]["display_name"], "Bobby");
}

#[tokio::test]
async fn guests_join_only_when_the_meeting_allows_it_and_with_a_name() {
    let app = spawn_app().await;
    let host = User::new("Ada");
    let closed = app.create_meeting(&host, json!({})).await;
    let open = app
        .create_meeting(&host, json!({"settings": {"guests_allowed": true}}))
        .await;
    let (status, answer) = app
        .join(
            closed["code"].as_str().unwrap(),
            None,
            json!({"display_name": "Guest"}),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("guests_not_allowed"))
    );
    let open_code = open["code"].as_str().unwrap();
    let (status, _) = app.join(open_code, None, json!({})).await;
    assert_eq!(status, 422);
    let (status, _) = app
        .join(open_code, None, json!({"display_name": "x".repeat(65)}))
        .await;
    assert_eq!(status, 422);
    let (status, joined) = app
        .join(open_code, None, json!({"display_name": " Guest "}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(joined["participant"]["display_name"], "Guest");
    assert_eq!(joined["participant"]["user_id"], serde_json::Value::Null);
    // A bad token is refused even where guests are welcome.
    let (status, _) = app
        .request(
            Method::POST,
            &format!("/api/v1/meetings/{open_code}/join"),
            Some(&crate::helpers::User {
                token: "bad".into(),
                ..host.clone()
            }),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn meetings_work_the_same_on_sqlite() {
    let app = spawn_app_with(AppOptions {
        backend: Backend::Sqlite,
        ..AppOptions::default()
    })
    .await;
    let host = User::new("Ada");
    let meeting = app
        .create_meeting(&host, json!({"starts_at": "2030-01-15T09:30", "time_zone": "Asia/Tokyo", "invitees": ["b@example.com"]}))
        .await;
    assert_eq!(meeting["starts_at"], "2030-01-15T00:30:00Z");
    let (_, list) = app
        .request(Method::GET, "/api/v1/meetings", Some(&host), None)
        .await;
    assert_eq!(list["meetings"].as_array().unwrap().len(), 1);
    assert_eq!(list["meetings"][0]["invitees"], json!(["b@example.com"]));
    let (status, _) = app
        .join(meeting["code"].as_str().unwrap(), Some(&host), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/meetings/{}", meeting["id"].as_str().unwrap()),
            Some(&host),
            Some(json!({"title": "New"})),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_recurring_meeting_lists_its_occurrences_and_stays_upcoming_until_the_last() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let app = spawn_app_with(AppOptions {
            backend,
            ..AppOptions::default()
        })
        .await;
        let host = User::new("Ada");
        // Started yesterday, daily for a week: still upcoming.
        let start = (chrono::Utc::now() - chrono::Duration::days(1))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let meeting = app
            .create_meeting(
                &host,
                json!({"title": "Standup", "starts_at": start, "duration_minutes": 15,
                                          "recurrence": {"frequency": "daily", "count": 7}}),
            )
            .await;
        assert_eq!(
            meeting["recurrence"],
            json!({"frequency": "daily", "count": 7})
        );
        assert_eq!(meeting["occurrences"].as_array().unwrap().len(), 7);
        assert_eq!(meeting["occurrences"][0], meeting["starts_at"]);
        let (_, upcoming) = app
            .request(Method::GET, "/api/v1/meetings", Some(&host), None)
            .await;
        assert_eq!(
            upcoming["meetings"].as_array().unwrap().len(),
            1,
            "{backend:?}"
        );
        let path = format!("/api/v1/meetings/{}", meeting["id"].as_str().unwrap());
        let (status, updated) = app
            .request(
                Method::PATCH,
                &path,
                Some(&host),
                Some(json!({"recurrence": {"frequency": "weekly", "count": 2}})),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(updated["occurrences"].as_array().unwrap().len(), 2);
        for bad in [
            json!({"recurrence": {"frequency": "daily", "count": 1}}),
            json!({"recurrence": {"frequency": "daily", "count": 53}}),
            json!({"recurrence": {"frequency": "hourly", "count": 3}}),
        ] {
            let (status, _) = app
                .request(Method::PATCH, &path, Some(&host), Some(bad.clone()))
                .await;
            assert!(status == 422 || status == 400, "{bad}: {status}");
        }
        let (status, answer) = app
            .request(
                Method::POST,
                "/api/v1/meetings",
                Some(&host),
                Some(json!({"recurrence": {"frequency": "daily", "count": 3}})),
            )
            .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some("invalid_schedule"))
        );
    }
}
