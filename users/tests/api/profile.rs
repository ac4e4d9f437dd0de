//! `GET/PATCH /api/v1/users/me` and `GET /api/v1/users/{id}`.

use crate::helpers::TestApp;
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::json;

on_both_backends!(
    the_first_visit_creates_the_profile_from_the_token,
    a_profile_change_is_kept_and_read_back,
    a_patch_changes_only_the_fields_it_names,
    an_unknown_time_zone_is_refused_and_changes_nothing,
    invalid_fields_are_refused_with_their_code,
    a_one_megabyte_bio_is_refused,
    sql_ish_and_markup_strings_are_stored_verbatim,
    unknown_fields_and_wrong_types_are_malformed_bodies,
    a_public_profile_shows_only_name_and_avatar,
    an_unknown_user_is_user_not_found,
);

async fn the_first_visit_creates_the_profile_from_the_token(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let me = app.me(&ada).await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    assert_eq!(me.body["id"], ada.id);
    assert_eq!(me.body["email"], ada.email);
    assert_eq!(me.body["display_name"], "Ada Lovelace");
    assert_eq!(me.body["time_zone"], "UTC");
    assert_eq!(me.body["locale"], "en");
    assert_eq!(me.body["bio"], "");
    assert_eq!(me.body["has_avatar"], false);
    assert_eq!(
        me.body["preferences"],
        json!({"join_muted": false, "camera_off": false,
               "notifications": {"email": true, "push": true, "in_app": true}})
    );
    assert_eq!(
        me.body["avatar_url"],
        format!("/api/v1/users/{}/avatar?v=default", ada.id)
    );
    // Asking again finds the same profile.
    assert_eq!(app.me(&ada).await.body, me.body);
}

async fn a_profile_change_is_kept_and_read_back(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let changed = app
        .patch_me(
            &ada,
            json!({
                "display_name": "  Countess Ada  ",
                "time_zone": "Europe/London",
                "locale": "en-GB",
                "bio": "Analyst.\nPoet of numbers.",
                "preferences": {
                    "join_muted": true,
                    "camera_off": true,
                    "notifications": {"email": false, "push": true, "in_app": false}
                }
            }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    let me = app.me(&ada).await;
    assert_eq!(me.body, changed.body);
    assert_eq!(me.body["display_name"], "Countess Ada");
    assert_eq!(me.body["time_zone"], "Europe/London");
    assert_eq!(me.body["locale"], "en-GB");
    assert_eq!(me.body["bio"], "Analyst.\nPoet of numbers.");
    assert_eq!(
        me.body["preferences"],
        json!({"join_muted": true, "camera_off": true,
               "notifications": {"email": false, "push": true, "in_app": false}})
    );
}

async fn a_patch_changes_only_the_fields_it_names(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    app.patch_me(&ada, json!({"bio": "first", "time_zone": "Asia/Tokyo"}))
        .await;
    let me = app
        .patch_me(
            &ada,
            json!({"preferences": {"notifications": {"push": false}}}),
        )
        .await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    assert_eq!(me.body["bio"], "first");
    assert_eq!(me.body["time_zone"], "Asia/Tokyo");
    assert_eq!(me.body["display_name"], "Ada Lovelace");
    assert_eq!(
        me.body["preferences"]["notifications"],
        json!({"email": true, "push": false, "in_app": true})
    );
    // An empty patch is allowed and changes nothing.
    let again = app.patch_me(&ada, json!({})).await;
    assert_eq!(again.body, me.body);
}

async fn an_unknown_time_zone_is_refused_and_changes_nothing(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    for zone in [
        "Mars/Olympus_Mons",
        "",
        "GMT+25",
        "Europe/Paris'; DROP TABLE profiles; --",
    ] {
        let answer = app
            .patch_me(
                &ada,
                json!({"time_zone": zone, "bio": "should not be kept"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{zone}");
        assert_eq!(answer.code(), "unknown_time_zone", "{zone}");
    }
    let me = app.me(&ada).await;
    assert_eq!(me.body["time_zone"], "UTC");
    assert_eq!(me.body["bio"], "");
}

async fn invalid_fields_are_refused_with_their_code(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    for body in [
        json!({"display_name": "   "}),
        json!({"display_name": "x".repeat(101)}),
        json!({"display_name": "a\u{0007}b"}),
        json!({"locale": "english"}),
        json!({"locale": "en_US"}),
        json!({"bio": "nul \u{0000} inside"}),
    ] {
        let answer = app.patch_me(&ada, body.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(answer.code(), "invalid_field", "{body}");
    }
}

async fn a_one_megabyte_bio_is_refused(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    // Just under the 1 MiB body limit: the field's own limit refuses it.
    let answer = app
        .patch_me(&ada, json!({"bio": "b".repeat(1_000_000)}))
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.code(), "invalid_field");
    // Over the body limit: refused before it is parsed.
    // (Over a raw socket: the answer comes before the 2 MB are sent.)
    let body = json!({"bio": "b".repeat(2_000_000)}).to_string();
    let answer = app
        .raw_request(
            "PATCH",
            "/api/v1/users/me",
            "application/json",
            &ada,
            Some(body.len()),
            body.as_bytes(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "payload_too_large");
    assert_eq!(app.me(&ada).await.body["bio"], "");
}

async fn sql_ish_and_markup_strings_are_stored_verbatim(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let name = "Robert'); DROP TABLE profiles;--";
    let bio = "1' OR '1'='1 \\ $1 %s <script>alert(1)</script> \"quoted\" 🙂";
    let answer = app
        .patch_me(&ada, json!({"display_name": name, "bio": bio}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let me = app.me(&ada).await;
    assert_eq!(me.body["display_name"], name);
    assert_eq!(me.body["bio"], bio);
    // Others see the name as it was written, and the table is still there.
    let bob = app.sign_up("Bob").await;
    assert_eq!(app.public(&bob, &ada.id).await.body["display_name"], name);
}

async fn unknown_fields_and_wrong_types_are_malformed_bodies(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    for body in [
        json!({"email": "other@example.com"}),
        json!({"bio": 42}),
        json!({"preferences": {"join_muted": "yes"}}),
        json!({"preferences": {"notifications": {"sms": true}}}),
    ] {
        let answer = app.patch_me(&ada, body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.code(), "malformed_body", "{body}");
    }
    let answer = app
        .send(
            app.client
                .patch(app.url("/api/v1/users/me"))
                .bearer_auth(&ada.token)
                .header("content-type", "application/json")
                .body(vec![0xff, 0xfe, b'{']),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "malformed_body");
}

async fn a_public_profile_shows_only_name_and_avatar(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let bob = app.sign_up("Bob Builder").await;
    app.patch_me(
        &ada,
        json!({"bio": "private-ish", "time_zone": "Europe/Paris"}),
    )
    .await;
    let answer = app.public(&bob, &ada.id).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(
        answer.body,
        json!({
            "id": ada.id,
            "display_name": "Ada Lovelace",
            "avatar_url": format!("/api/v1/users/{}/avatar?v=default", ada.id),
        })
    );
    // Looking oneself up works before the first visit too.
    let carol = app.sign_up("Carol").await;
    assert_eq!(
        app.public(&carol, &carol.id).await.body["display_name"],
        "Carol"
    );
}

async fn an_unknown_user_is_user_not_found(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let answer = app.public(&ada, &uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.code(), "user_not_found");
    let answer = app.public(&ada, "not-a-uuid").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}
