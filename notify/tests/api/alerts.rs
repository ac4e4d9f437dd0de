//! In-app alerts over Server-Sent Events.

use crate::email::{meeting_event, on_both, scheduled};
use crate::helpers::{Stack, World};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proto::auth::AccessClaims;
use proto::ids::{MeetingId, ParticipantId, UserId};
use proto::meeting::MeetingEventBody;
use serde_json::json;
use servicekit::tokens::{KeyRing, StaticKeys, TokenVerifier, VerifierConfig};
use std::sync::Arc;
use std::time::Duration;

/// An Ed25519 key for test access tokens (PKCS#8 DER) and its public half.
const TEST_KEY_PKCS8: &str = "MC4CAQAwBQYDK2VwBCIEIKyd+Y7Pt4nm5A91f9KR4Xm40nz6cwj1kkXhLdWrAU8j";
const TEST_KEY_X: &str = "oO96bo9MwK9YxKuA7Vd1sFJrmX5c0kuCn5-PNegiZDI";

pub fn verifier() -> TokenVerifier {
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "x": TEST_KEY_X, "kid": "test", "alg": "EdDSA", "use": "sig"
    }]}))
    .unwrap();
    TokenVerifier::new(
        Arc::new(StaticKeys(Arc::new(KeyRing::from_jwks(&jwks)))),
        VerifierConfig::default(),
    )
}

pub fn token(user: UserId) -> String {
    let now = chrono::Utc::now().timestamp() as u64;
    let claims = AccessClaims {
        sub: user,
        sid: uuid::Uuid::now_v7(),
        jti: uuid::Uuid::now_v7(),
        iss: proto::auth::DEFAULT_ISSUER.into(),
        aud: proto::auth::DEFAULT_AUDIENCE.into(),
        iat: now,
        nbf: now,
        exp: now + 900,
        email: "host@example.com".into(),
        email_verified: true,
        name: "Host".into(),
    };
    let der = base64::engine::general_purpose::STANDARD
        .decode(TEST_KEY_PKCS8)
        .unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("test".into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&der)).unwrap()
}

async fn a_signed_in_user_gets_alerts_over_the_stream(stack: Stack) {
    let world = World::new(stack).await;
    let (_, addr) = world.spawn_notify_at(world.config()).await;
    let url = format!("http://{addr}/api/v1/notifications/stream");
    let client = reqwest::Client::new();
    let denied = client.get(&url).send().await.unwrap();
    assert_eq!(denied.status(), 401);

    let host = UserId::new();
    let mut stream = client
        .get(&url)
        .bearer_auth(token(host))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let meeting = MeetingId::new();
    let mut body = scheduled("2026-12-01T14:00:00Z", "UTC", &[]);
    if let MeetingEventBody::Scheduled { host_id, .. } = &mut body {
        *host_id = host;
    }
    let x = world.meeting_exchange();
    world
        .publish(&x, "meeting.scheduled", meeting_event(meeting, body))
        .await;
    world
        .publish(
            &x,
            "meeting.participant_joined",
            meeting_event(
                meeting,
                MeetingEventBody::ParticipantJoined {
                    participant_id: ParticipantId::new(),
                    user_id: None,
                    display_name: "Bea".into(),
                },
            ),
        )
        .await;
    world
        .publish(
            &world.user_exchange(),
            "user.email_verified",
            json!({"user_id": host, "email": "host@example.com"}),
        )
        .await;
    // Someone else's alert does not reach this stream.
    world
        .publish(
            &world.user_exchange(),
            "user.email_verified",
            json!({"user_id": UserId::new(), "email": "other@example.com"}),
        )
        .await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(seen.contains("event: user.email_verified")
        && seen.contains("event: meeting.participant_joined"))
    {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("alerts within 20 s")
            .unwrap()
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains("Bea joined \\\"Quarterly planning\\\""),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("\"meeting_id\":\"{meeting}\"")),
        "{seen}"
    );
    assert!(seen.contains("Your email address is confirmed"));
    // Someone knocks: the host's stream says so.
    world
        .publish(
            &x,
            "meeting.lobby_waiting",
            meeting_event(
                meeting,
                MeetingEventBody::LobbyWaiting {
                    participant_id: ParticipantId::new(),
                    user_id: None,
                    display_name: "Cy".into(),
                },
            ),
        )
        .await;
    while !seen.contains("event: meeting.lobby_waiting") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("the lobby alert within 20 s")
            .unwrap()
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains("Cy is waiting in the lobby of \\\"Quarterly planning\\\""),
        "{seen}"
    );
    assert_eq!(seen.matches("event: user.email_verified").count(), 1);
    world.cleanup().await;
}

on_both!(a_signed_in_user_gets_alerts_over_the_stream);
