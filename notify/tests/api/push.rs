//! Web push against a push service written here: it checks the VAPID JWT (ES256,
//! signed by the `k` key, `aud` = its own origin, `exp` at most 24 h ahead, a
//! `mailto:` subject) and decrypts the body as a browser would (RFC 8291, receiving
//! side) — with aws-lc-rs and jsonwebtoken, not the code under test.

use crate::alerts::token;
use crate::email::{meeting_event, on_both, scheduled};
use crate::helpers::{Stack, World, count};
use aws_lc_rs::{aead, agreement, hkdf};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proto::ids::{MeetingId, ParticipantId, UserId};
use proto::meeting::MeetingEventBody;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

/// A browser's side of a subscription: its ECDH key pair and auth secret.
pub struct Browser {
    private: agreement::PrivateKey,
    public: Vec<u8>,
    auth: [u8; 16],
}

impl Browser {
    pub fn new() -> Browser {
        let private = agreement::PrivateKey::generate(&agreement::ECDH_P256).unwrap();
        let public = private.compute_public_key().unwrap().as_ref().to_vec();
        assert_eq!(public.len(), 65);
        Browser {
            private,
            public,
            auth: rand::random(),
        }
    }

    /// `PushSubscription.toJSON()` for `endpoint`.
    pub fn subscription(&self, endpoint: &str) -> Value {
        json!({
            "endpoint": endpoint,
            "expirationTime": null,
            "keys": {"p256dh": b64(&self.public), "auth": b64(&self.auth)},
        })
    }

    /// RFC 8291 §3–4 and RFC 8188 §2, receiving side.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        if body.len() < 21 {
            return Err("body shorter than the aes128gcm header".into());
        }
        let salt = &body[..16];
        let rs = u32::from_be_bytes(body[16..20].try_into().unwrap()) as usize;
        let idlen = body[20] as usize;
        if idlen != 65 || body.len() < 21 + idlen {
            return Err(format!(
                "key id of {idlen} bytes, want the sender's 65-byte key"
            ));
        }
        let sender = &body[21..21 + idlen];
        let sealed = &body[21 + idlen..];
        if sealed.len() > rs || sealed.len() < 17 {
            return Err(format!(
                "record of {} bytes with rs {rs}: not one record",
                sealed.len()
            ));
        }
        let shared = agreement::agree(
            &self.private,
            agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, sender),
            "ECDH failed",
            |s| Ok(s.to_vec()),
        )?;
        struct Len(usize);
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let expand = |prk: &hkdf::Prk, info: &[&[u8]], n: usize| {
            let mut out = vec![0; n];
            prk.expand(info, Len(n)).unwrap().fill(&mut out).unwrap();
            out
        };
        let prk_key = hkdf::Salt::new(hkdf::HKDF_SHA256, &self.auth).extract(&shared);
        let ikm = expand(&prk_key, &[b"WebPush: info\0", &self.public, sender], 32);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&ikm);
        let cek = expand(&prk, &[b"Content-Encoding: aes128gcm\0"], 16);
        let nonce = expand(&prk, &[b"Content-Encoding: nonce\0"], 12);
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).unwrap());
        let mut buffer = sealed.to_vec();
        let plain = key
            .open_in_place(
                aead::Nonce::try_assume_unique_for_key(&nonce).unwrap(),
                aead::Aad::empty(),
                &mut buffer,
            )
            .map_err(|_| "the record does not decrypt (wrong keys or derivation)".to_string())?;
        // Padding is zeros after the delimiter; the last record's delimiter is 0x02.
        let end = plain.iter().rposition(|b| *b != 0).ok_or("no delimiter")?;
        if plain[end] != 0x02 {
            return Err(format!(
                "delimiter {:#x}, want 0x02 (last record)",
                plain[end]
            ));
        }
        Ok(plain[..end].to_vec())
    }
}

#[derive(Debug, serde::Deserialize)]
struct VapidClaims {
    aud: String,
    exp: i64,
    sub: String,
}

/// Check `Authorization: vapid t=<jwt>, k=<key>` for `origin`; returns the key.
fn verify_vapid(authorization: &str, origin: &str) -> Result<String, String> {
    let params = authorization
        .strip_prefix("vapid ")
        .ok_or("not the vapid scheme")?;
    let (mut t, mut k) = (None, None);
    for part in params.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.trim()),
            Some(("k", v)) => k = Some(v.trim()),
            _ => return Err(format!("unexpected parameter {part:?}")),
        }
    }
    let (t, k) = (t.ok_or("no t=")?, k.ok_or("no k=")?);
    let point = unb64(k);
    if point.len() != 65 || point[0] != 4 {
        return Err("k is not an uncompressed P-256 point".into());
    }
    let key =
        jsonwebtoken::DecodingKey::from_ec_components(&b64(&point[1..33]), &b64(&point[33..]))
            .map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[origin]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<VapidClaims>(t, &key, &validation)
        .map_err(|e| format!("JWT: {e}"))?;
    let claims = data.claims;
    let now = chrono::Utc::now().timestamp();
    if claims.exp > now + 24 * 3600 {
        return Err(format!("exp {} is more than 24 h ahead", claims.exp));
    }
    if claims.aud != origin {
        return Err(format!("aud {}", claims.aud));
    }
    if !claims.sub.starts_with("mailto:") {
        return Err(format!("sub {}", claims.sub));
    }
    Ok(k.to_owned())
}

/// What the push service saw in one request.
#[derive(Debug, Clone)]
pub struct Received {
    pub subscription: String,
    pub ttl: Option<String>,
    pub urgency: Option<String>,
    /// The decrypted JSON, or why the request was refused.
    pub message: Result<Value, String>,
    pub vapid_key: Option<String>,
}

#[derive(Default)]
struct Inner {
    browsers: Vec<(String, Arc<Browser>)>,
    answers: VecDeque<(u16, Option<&'static str>)>,
    received: Vec<Received>,
}

/// The push service: `POST /push/{subscription}` on 127.0.0.1.
#[derive(Clone)]
pub struct PushService {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

async fn receive(
    State(service): State<PushService>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, HeaderMap) {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let origin = format!("http://{}", service.addr);
    let browser = {
        let inner = service.inner.lock().unwrap();
        inner
            .browsers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.clone())
    };
    let vapid = header("authorization")
        .ok_or_else(|| "no Authorization".to_string())
        .and_then(|a| verify_vapid(&a, &origin));
    let message = match (&vapid, browser) {
        (Err(e), _) => Err(e.clone()),
        (_, None) => Err(format!("unknown subscription {name}")),
        (Ok(_), Some(_)) if header("content-encoding").as_deref() != Some("aes128gcm") => {
            Err("Content-Encoding is not aes128gcm".into())
        }
        (Ok(_), Some(browser)) => browser.decrypt(&body).and_then(|plain| {
            serde_json::from_slice::<Value>(&plain).map_err(|e| format!("not JSON: {e}"))
        }),
    };
    let ok = message.is_ok();
    let mut inner = service.inner.lock().unwrap();
    inner.received.push(Received {
        subscription: name,
        ttl: header("ttl"),
        urgency: header("urgency"),
        message,
        vapid_key: vapid.ok(),
    });
    if !ok {
        // A real push service refuses what it cannot verify.
        return (StatusCode::BAD_REQUEST, HeaderMap::new());
    }
    let (status, retry_after) = inner.answers.pop_front().unwrap_or((201, None));
    let mut out = HeaderMap::new();
    if let Some(seconds) = retry_after {
        out.insert("retry-after", seconds.parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), out)
}

impl PushService {
    pub async fn start() -> PushService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let service = PushService {
            addr: listener.local_addr().unwrap(),
            inner: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/push/{name}", post(receive))
            .with_state(service.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        service
    }

    /// A new browser subscribed at `/push/{name}`; returns its subscription JSON.
    pub fn browser(&self, name: &str) -> Value {
        let browser = Arc::new(Browser::new());
        let json = browser.subscription(&format!("http://{}/push/{name}", self.addr));
        self.inner
            .lock()
            .unwrap()
            .browsers
            .push((name.to_owned(), browser));
        json
    }

    /// Answer the next requests with these statuses (then 201).
    pub fn answer(&self, answers: &[(u16, Option<&'static str>)]) {
        self.inner
            .lock()
            .unwrap()
            .answers
            .extend(answers.iter().copied());
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Wait until `n` requests arrived (at most 20 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..200 {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "timed out waiting for {n} push requests; have {:?}",
            self.received()
        );
    }
}

struct App {
    base: String,
    client: reqwest::Client,
    stop: tokio_util::sync::CancellationToken,
}

impl App {
    async fn start(world: &World, config: notify::Config) -> App {
        let (stop, addr) = world.spawn_notify_at(config).await;
        App {
            base: format!("http://{addr}/api/v1/notifications/push"),
            client: reqwest::Client::new(),
            stop,
        }
    }

    async fn key(&self, user: UserId) -> String {
        let r = self
            .client
            .get(format!("{}/key", self.base))
            .bearer_auth(token(user))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["public_key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn subscribe(&self, user: UserId, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/subscriptions", self.base))
            .bearer_auth(token(user))
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn unsubscribe(&self, user: UserId, id: &str) -> (u16, Value) {
        let r = self
            .client
            .delete(format!("{}/subscriptions/{id}", self.base))
            .bearer_auth(token(user))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

fn push_config(world: &World) -> notify::Config {
    let mut config = world.config();
    config.push_allow_loopback = true;
    config.vapid_subject = "mailto:ops@meet.example".into();
    config.max_attempts = 3;
    config
}

async fn email_verified(world: &World, user: UserId) -> proto::event::EventEnvelope {
    world
        .publish(
            &world.user_exchange(),
            "user.email_verified",
            json!({"user_id": user, "email": "p@example.com"}),
        )
        .await
}

async fn an_alert_reaches_a_subscribed_browser_encrypted_and_signed(stack: Stack) {
    let world = World::new(stack).await;
    let push = PushService::start().await;
    let app = App::start(&world, push_config(&world)).await;
    let ada = UserId::new();
    let key = app.key(ada).await;
    assert_eq!(unb64(&key).len(), 65);
    let (status, sub) = app.subscribe(ada, &push.browser("ada")).await;
    assert_eq!(status, 201, "{sub}");
    assert!(sub["id"].as_str().is_some());

    let event = email_verified(&world, ada).await;
    let got = push.wait_for(1).await;
    let r = &got[0];
    let message = r.message.clone().expect("the push verifies and decrypts");
    assert_eq!(r.subscription, "ada");
    assert_eq!(r.vapid_key.as_deref(), Some(key.as_str()));
    assert_eq!(r.ttl.as_deref(), Some("3600"));
    assert_eq!(r.urgency.as_deref(), Some("normal"));
    assert_eq!(message["id"], event.id.to_string());
    assert_eq!(message["kind"], "user.email_verified");
    assert_eq!(message["title"], "Your email address is confirmed");
    assert_eq!(message["url"], "https://meet.example/");
    assert!(message.get("meeting_id").is_none());
    assert!(message["at"].as_str().unwrap().ends_with('Z'));

    // A meeting alert (someone joined the host's meeting) is urgent and links to it.
    let meeting = MeetingId::new();
    let mut body = scheduled("2026-12-01T14:00:00Z", "UTC", &[]);
    if let MeetingEventBody::Scheduled { host_id, .. } = &mut body {
        *host_id = ada;
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
    let got = push.wait_for(2).await;
    let message = got[1].message.clone().unwrap();
    assert_eq!(got[1].urgency.as_deref(), Some("high"));
    assert_eq!(message["kind"], "meeting.participant_joined");
    assert_eq!(message["title"], "Bea joined \"Quarterly planning\"");
    assert_eq!(message["meeting_id"], meeting.to_string());
    assert_eq!(message["url"], format!("https://meet.example/m/{meeting}"));
    // Someone waiting in the lobby: the host hears of it wherever they are.
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
    let got = push.wait_for(3).await;
    let message = got[2].message.clone().unwrap();
    assert_eq!(got[2].urgency.as_deref(), Some("high"));
    assert_eq!(message["kind"], "meeting.lobby_waiting");
    assert_eq!(
        message["title"],
        "Cy is waiting in the lobby of \"Quarterly planning\""
    );
    // A redelivered event pushes nothing twice.
    world
        .bus
        .publish(&world.user_exchange(), &event)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(push.received().len(), 3);
    world.cleanup().await;
}

async fn people_who_switched_push_off_get_no_push(stack: Stack) {
    let world = World::new(stack).await;
    let push = PushService::start().await;
    let app = App::start(&world, push_config(&world)).await;
    let (off, on) = (UserId::new(), UserId::new());
    assert_eq!(app.subscribe(off, &push.browser("off")).await.0, 201);
    assert_eq!(app.subscribe(on, &push.browser("on")).await.0, 201);
    world
        .publish(
            &world.user_exchange(),
            "user.preferences_changed",
            json!({"user_id": off, "notifications": {"email": true, "push": false, "in_app": true}}),
        )
        .await;
    email_verified(&world, off).await;
    email_verified(&world, on).await;
    push.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = push.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].subscription, "on");
    world.cleanup().await;
}

async fn a_gone_subscription_is_removed_and_failures_are_retried_then_dead_lettered(stack: Stack) {
    let world = World::new(stack).await;
    let push = PushService::start().await;
    let app = App::start(&world, push_config(&world)).await;
    let (gone, flaky, broken) = (UserId::new(), UserId::new(), UserId::new());
    app.subscribe(gone, &push.browser("gone")).await;
    // 410: the browser unsubscribed. Its subscription goes, and nothing is retried.
    push.answer(&[(410, None)]);
    email_verified(&world, gone).await;
    push.wait_for(1).await;
    crate::helpers::eventually(|| async {
        count(&world.db, "SELECT COUNT(*) FROM push_subscriptions").await == 0
    })
    .await;
    assert_eq!(count(&world.db, "SELECT COUNT(*) FROM push_queue").await, 0);
    assert_eq!(
        count(&world.db, "SELECT COUNT(*) FROM push_dead_letters").await,
        0
    );

    // 503 then 429 (with Retry-After): retried, delivered on the third attempt.
    app.subscribe(flaky, &push.browser("flaky")).await;
    push.answer(&[(503, None), (429, Some("0"))]);
    email_verified(&world, flaky).await;
    let got = push.wait_for(4).await;
    assert!(
        got[1..4]
            .iter()
            .all(|r| r.subscription == "flaky" && r.message.is_ok())
    );
    crate::helpers::eventually(|| async {
        count(
            &world.db,
            "SELECT COUNT(*) FROM push_queue WHERE sent_at IS NOT NULL AND attempts = 3",
        )
        .await
            == 1
    })
    .await;

    // 500 every time: after max_attempts (3) it is a dead letter; the subscription stays.
    app.subscribe(broken, &push.browser("broken")).await;
    push.answer(&[(500, None), (500, None), (500, None)]);
    email_verified(&world, broken).await;
    push.wait_for(7).await;
    crate::helpers::eventually(|| async {
        count(
            &world.db,
            "SELECT COUNT(*) FROM push_dead_letters WHERE attempts = 3",
        )
        .await
            == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(push.received().len(), 7);
    assert_eq!(
        count(&world.db, "SELECT COUNT(*) FROM push_subscriptions").await,
        2
    );
    world.cleanup().await;
}

async fn a_refused_push_is_dead_lettered_at_once(stack: Stack) {
    let world = World::new(stack).await;
    let push = PushService::start().await;
    let app = App::start(&world, push_config(&world)).await;
    let ann = UserId::new();
    app.subscribe(ann, &push.browser("ann")).await;
    // 403: the push service does not accept our VAPID key for this subscription.
    push.answer(&[(403, None)]);
    email_verified(&world, ann).await;
    push.wait_for(1).await;
    crate::helpers::eventually(|| async {
        count(
            &world.db,
            "SELECT COUNT(*) FROM push_dead_letters WHERE attempts = 1",
        )
        .await
            == 1
    })
    .await;
    world.cleanup().await;
}

on_both!(
    an_alert_reaches_a_subscribed_browser_encrypted_and_signed,
    people_who_switched_push_off_get_no_push,
    a_gone_subscription_is_removed_and_failures_are_retried_then_dead_lettered,
    a_refused_push_is_dead_lettered_at_once,
);

#[tokio::test]
async fn the_vapid_key_is_kept_across_restarts_or_taken_from_configuration() {
    let world = World::new(Stack::Embedded).await;
    let user = UserId::new();
    let restart = |app: App| async move {
        app.stop.cancel();
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let app = App::start(&world, world.config()).await;
    let first = app.key(user).await;
    restart(app).await;
    let app = App::start(&world, world.config()).await;
    assert_eq!(app.key(user).await, first);
    restart(app).await;
    let mut config = world.config();
    // RFC 8291 Appendix A's application server key: its public half is known.
    config.vapid_private_key = Some(servicekit::Secret::new(
        "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw".to_owned(),
    ));
    let configured = App::start(&world, config).await.key(user).await;
    assert_eq!(
        configured,
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
    );
    world.cleanup().await;
}

#[tokio::test]
async fn hostile_subscriptions_are_refused_with_stable_codes() {
    let world = World::new(Stack::Embedded).await;
    // Production rules: no loopback exception.
    let app = App::start(&world, world.config()).await;
    let user = UserId::new();
    let browser = Browser::new();
    let good = browser.subscription("https://push.example/sub/1");
    let with = |endpoint: &str, p256dh: &str, auth: &str| json!({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}});
    let p256dh = good["keys"]["p256dh"].as_str().unwrap().to_owned();
    let auth = good["keys"]["auth"].as_str().unwrap().to_owned();
    let long = format!("https://push.example/{}", "a".repeat(3000));
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            with("http://push.example/x", &p256dh, &auth),
            422,
            "invalid_push_subscription",
        ),
        (
            with("http://127.0.0.1:9/x", &p256dh, &auth),
            422,
            "invalid_push_subscription",
        ),
        (
            with("https://169.254.169.254/latest", &p256dh, &auth),
            422,
            "invalid_push_subscription",
        ),
        (
            with("https://localhost/x", &p256dh, &auth),
            422,
            "invalid_push_subscription",
        ),
        (
            with("https://u:p@push.example/x", &p256dh, &auth),
            422,
            "invalid_push_subscription",
        ),
        (
            with("file:///etc/passwd", &p256dh, &auth),
            422,
            "invalid_push_subscription",
        ),
        (
            with("javascript:alert(1)", &p256dh, &auth),
            422,
            "invalid_push_subscription",
        ),
        (
            with(&long, &p256dh, &auth),
            422,
            "invalid_push_subscription",
        ),
        (
            with("https://push.example/x", "BAAA", &auth),
            422,
            "invalid_push_subscription",
        ),
        (
            with("https://push.example/x", &p256dh[..p256dh.len() - 4], &auth),
            422,
            "invalid_push_subscription",
        ),
        (
            with("https://push.example/x", "!!!not base64!!!", &auth),
            422,
            "invalid_push_subscription",
        ),
        (
            with("https://push.example/x", &b64(&[4u8; 65]), &auth),
            422,
            "invalid_push_subscription",
        ),
        (
            with("https://push.example/x", &p256dh, &b64(&[1u8; 8])),
            422,
            "invalid_push_subscription",
        ),
        (
            with("https://push.example/x", &p256dh, ""),
            422,
            "invalid_push_subscription",
        ),
        (
            json!({"endpoint": "https://push.example/x"}),
            400,
            "malformed_body",
        ),
        (
            json!({"endpoint": 5, "keys": {"p256dh": p256dh, "auth": auth}}),
            400,
            "malformed_body",
        ),
        (json!([]), 400, "malformed_body"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = app.subscribe(user, &body).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    let client = reqwest::Client::new();
    let url = format!("{}/subscriptions", app.base);
    let r = client.post(&url).json(&good).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(&url)
        .bearer_auth(token(user))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .post(&url)
        .bearer_auth(token(user))
        .header("content-type", "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = client
        .post(&url)
        .bearer_auth(token(user))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        count(&world.db, "SELECT COUNT(*) FROM push_subscriptions").await,
        0
    );

    // The same endpoint twice is one subscription; someone else cannot remove it.
    let (status, first) = app.subscribe(user, &good).await;
    assert_eq!(status, 201);
    let (status, second) = app.subscribe(user, &good).await;
    assert_eq!((status, &second["id"]), (200, &first["id"]));
    let id = first["id"].as_str().unwrap();
    let (status, answer) = app.unsubscribe(UserId::new(), id).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = app.unsubscribe(user, "not-a-uuid").await;
    assert_eq!(status, 404);
    assert_eq!(app.unsubscribe(user, id).await.0, 204);
    assert_eq!(app.unsubscribe(user, id).await.0, 404);

    // At most MAX_SUBSCRIPTIONS_PER_USER browsers per account.
    for i in 0..notify::push::MAX_SUBSCRIPTIONS_PER_USER {
        let body = Browser::new().subscription(&format!("https://push.example/many/{i}"));
        assert_eq!(app.subscribe(user, &body).await.0, 201);
    }
    let (status, answer) = app
        .subscribe(
            user,
            &Browser::new().subscription("https://push.example/one-more"),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("too_many_push_subscriptions"))
    );
    world.cleanup().await;
}
