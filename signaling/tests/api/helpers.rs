//! `spawn_app()` and friends.

use base64::Engine;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proto::auth::AccessClaims;
use proto::ids::{ParticipantId, UserId};
use proto::sfu::{
    CreateSession, MuteTrack, NodeLoad, PublisherOffer, RemoteCandidate, SdpAnswer, SessionCreated,
    SetSubscription, SfuEvent, SubscriberAnswer, SubscriberOffer,
};
use serde_json::{Value, json};
use servicekit::Secret;
use servicekit::backends::Db;
use servicekit::config::{BackendConfig, DatabaseConfig, SqliteLocation};
use servicekit::tokens::{KeyRing, StaticKeys, TokenVerifier, VerifierConfig};
use signaling::live::SessionOptions;
use signaling::sfu::{SfuClient, SfuError};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// An Ed25519 key for test access tokens (PKCS#8 DER) and its public half.
const TEST_KEY_PKCS8: &str = "MC4CAQAwBQYDK2VwBCIEIKyd+Y7Pt4nm5A91f9KR4Xm40nz6cwj1kkXhLdWrAU8j";
const TEST_KEY_X: &str = "oO96bo9MwK9YxKuA7Vd1sFJrmX5c0kuCn5-PNegiZDI";
/// Room-token secret shared by the apps under test, so tests can forge tokens.
pub const ROOM_SECRET: &str = "test-room-token-secret-0123456789abcdef";
pub const FAKE_NODE: &str = "http://sfu.test";

pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A fresh database: a new PostgreSQL schema, or a new SQLite file.
pub async fn fresh_db(backend: Backend) -> (Db, BackendConfig) {
    let config = match backend {
        Backend::Postgres => BackendConfig {
            database: DatabaseConfig::Postgres {
                url: Secret::new(database_url()),
            },
            ..BackendConfig::embedded(std::env::temp_dir())
        },
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(unique("signaling_test"));
            BackendConfig::embedded(dir)
        }
    };
    let db = match &config.database {
        DatabaseConfig::Postgres { .. } => {
            Db::connect_in_schema(&config.database, "signaling", &unique("signaling"))
                .await
                .expect("PostgreSQL at TEST_DATABASE_URL")
        }
        DatabaseConfig::Sqlite {
            location: SqliteLocation::Folder(_),
        }
        | DatabaseConfig::Sqlite { .. } => Db::connect(&config.database, "signaling")
            .await
            .expect("SQLite"),
    };
    (db, config)
}

/// Something a fake SFU was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum SfuCall {
    Create(CreateSession),
    PublisherOffer(ParticipantId, PublisherOffer),
    SubscriberAnswer(ParticipantId),
    Candidate(ParticipantId),
    Subscription(ParticipantId, SetSubscription),
    Mute(ParticipantId, MuteTrack),
    IceRestart(ParticipantId),
    Delete(ParticipantId),
}

/// A stand-in for an SFU node: answers every call with canned SDP, records it, and
/// plays the events a test pushes.
pub struct FakeSfu {
    pub calls: Mutex<Vec<SfuCall>>,
    /// Each node's load; `None`: the node does not answer. Unlisted nodes: 0.1.
    pub loads: Mutex<std::collections::HashMap<String, Option<f64>>>,
    /// Which node each session was opened on.
    pub placed: Mutex<Vec<(String, ParticipantId)>>,
    pub events: broadcast::Sender<SfuEvent>,
    pub sessions: Mutex<Vec<ParticipantId>>,
}

impl FakeSfu {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::new(Vec::new()),
            loads: Mutex::new(std::collections::HashMap::new()),
            placed: Mutex::new(Vec::new()),
            events: broadcast::channel(256).0,
            sessions: Mutex::new(Vec::new()),
        })
    }

    fn record(&self, call: SfuCall) {
        self.calls.lock().unwrap().push(call);
    }

    pub fn calls(&self) -> Vec<SfuCall> {
        self.calls.lock().unwrap().clone()
    }

    /// Send an event once someone is consuming the stream.
    pub async fn push(&self, event: SfuEvent) {
        for _ in 0..100 {
            if self.events.receiver_count() > 0 {
                self.events.send(event).unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("nobody consumes the fake sfu's events");
    }
}

fn created(participant: ParticipantId) -> SessionCreated {
    SessionCreated {
        publisher_answer: format!("answer-for-{participant}"),
        subscriber_offer: SubscriberOffer {
            sdp: format!("offer-for-{participant}"),
            tracks: vec![],
        },
    }
}

impl SfuClient for FakeSfu {
    fn create_session<'a>(
        &'a self,
        node: &'a str,
        request: CreateSession,
    ) -> BoxFuture<'a, Result<SessionCreated, SfuError>> {
        Box::pin(async move {
            let participant = request.participant;
            self.placed
                .lock()
                .unwrap()
                .push((node.to_owned(), participant));
            if request.publisher_offer == "refuse" {
                return Err(SfuError::Refused("bad sdp".into()));
            }
            self.record(SfuCall::Create(request));
            self.sessions.lock().unwrap().push(participant);
            Ok(created(participant))
        })
    }
    fn publisher_offer<'a>(
        &'a self,
        _node: &'a str,
        participant: ParticipantId,
        offer: PublisherOffer,
    ) -> BoxFuture<'a, Result<SdpAnswer, SfuError>> {
        Box::pin(async move {
            let sdp = format!("answer-to-{}", offer.sdp);
            self.record(SfuCall::PublisherOffer(participant, offer));
            Ok(SdpAnswer { sdp })
        })
    }
    fn subscriber_answer<'a>(
        &'a self,
        _node: &'a str,
        participant: ParticipantId,
        _answer: SubscriberAnswer,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            self.record(SfuCall::SubscriberAnswer(participant));
            Ok(())
        })
    }
    fn candidate<'a>(
        &'a self,
        _node: &'a str,
        participant: ParticipantId,
        _candidate: RemoteCandidate,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            self.record(SfuCall::Candidate(participant));
            Ok(())
        })
    }
    fn subscription<'a>(
        &'a self,
        _node: &'a str,
        participant: ParticipantId,
        subscription: SetSubscription,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            self.record(SfuCall::Subscription(participant, subscription));
            Ok(())
        })
    }
    fn mute<'a>(
        &'a self,
        _node: &'a str,
        participant: ParticipantId,
        mute: MuteTrack,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            self.record(SfuCall::Mute(participant, mute));
            Ok(())
        })
    }
    fn ice_restart<'a>(
        &'a self,
        _node: &'a str,
        participant: ParticipantId,
    ) -> BoxFuture<'a, Result<SessionCreated, SfuError>> {
        Box::pin(async move {
            self.record(SfuCall::IceRestart(participant));
            if self.sessions.lock().unwrap().contains(&participant) {
                Ok(created(participant))
            } else {
                Err(SfuError::Refused("no such session".into()))
            }
        })
    }
    fn delete_session<'a>(
        &'a self,
        _node: &'a str,
        participant: ParticipantId,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            self.record(SfuCall::Delete(participant));
            self.sessions.lock().unwrap().retain(|p| *p != participant);
            Ok(())
        })
    }
    fn load<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<NodeLoad, SfuError>> {
        Box::pin(async move {
            let load = self
                .loads
                .lock()
                .unwrap()
                .get(node)
                .copied()
                .unwrap_or(Some(0.1));
            match load {
                Some(load) => Ok(NodeLoad {
                    rooms: 0,
                    participants: 0,
                    tracks: 0,
                    forwarded_pps: 0.0,
                    load,
                    draining: false,
                }),
                None => Err(SfuError::Unavailable("down".into())),
            }
        })
    }
    fn events<'a>(
        &'a self,
        _node: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<'static, SfuEvent>, SfuError>> {
        Box::pin(async move {
            let receiver = self.events.subscribe();
            let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
                loop {
                    match receiver.recv().await {
                        Ok(event) => return Some((event, receiver)),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            });
            Ok(Box::pin(stream) as BoxStream<'static, SfuEvent>)
        })
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub sfu: Arc<FakeSfu>,
    pub db: Db,
    pub shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Options for [`spawn_app_with`].
pub struct AppOptions {
    pub backend: Backend,
    pub redis_prefix: Option<String>,
    pub grace: Duration,
    pub db: Option<(Db, BackendConfig)>,
    pub sfu: Option<Arc<FakeSfu>>,
    /// Real SFU nodes' control URLs and their token, instead of the fake.
    pub real_sfu: Option<(Vec<String>, String)>,
    /// The fake SFU nodes' URLs (default: one).
    pub nodes: Vec<String>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Postgres,
            redis_prefix: None,
            grace: Duration::from_secs(20),
            db: None,
            sfu: None,
            real_sfu: None,
            nodes: vec![FAKE_NODE.to_owned()],
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let (db, mut backends) = match options.db {
        Some(pair) => pair,
        None => fresh_db(options.backend).await,
    };
    if options.redis_prefix.is_some() {
        backends.redis_url = Some(Secret::new(redis_url()));
    }
    let mut config = signaling::Config::new(backends);
    config.sfu_urls = options.nodes.clone();
    config.room_token_secret = Some(Secret::new(ROOM_SECRET.to_owned()));
    config.reconnect_grace = options.grace;
    if let Some(prefix) = options.redis_prefix {
        config.redis_prefix = prefix;
    }
    let sfu = options.sfu.unwrap_or_else(FakeSfu::new);
    let real = options.real_sfu.is_some();
    if let Some((urls, token)) = options.real_sfu {
        config.sfu_urls = urls;
        config.sfu_token = Some(Secret::new(token));
    }
    let shutdown = CancellationToken::new();
    let parts = signaling::Parts {
        sfu: if real {
            None
        } else {
            Some(sfu.clone() as Arc<dyn SfuClient>)
        },
        verifier: Some(verifier()),
        session: Some(SessionOptions {
            join_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_millis(100),
            ..SessionOptions::default()
        }),
        db: Some(db.clone()),
    };
    let router = signaling::build_with(config, shutdown.clone(), parts)
        .await
        .expect("signaling builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(servicekit::http::serve(listener, router, shutdown.clone()));
    TestApp {
        addr,
        http: reqwest::Client::new(),
        sfu,
        db,
        shutdown,
    }
}

fn verifier() -> TokenVerifier {
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "x": TEST_KEY_X, "kid": "test", "alg": "EdDSA", "use": "sig"
    }]}))
    .unwrap();
    TokenVerifier::new(
        Arc::new(StaticKeys(Arc::new(KeyRing::from_jwks(&jwks)))),
        VerifierConfig::default(),
    )
}

/// A signed-in person.
#[derive(Clone, Debug)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub token: String,
}

impl User {
    pub fn new(name: &str) -> Self {
        let id = UserId::new();
        let email = format!(
            "{}-{}@example.com",
            name.to_lowercase(),
            &id.to_string()[..8]
        );
        let now = chrono::Utc::now().timestamp() as u64;
        let claims = AccessClaims {
            sub: id,
            sid: uuid::Uuid::now_v7(),
            jti: uuid::Uuid::now_v7(),
            iss: proto::auth::DEFAULT_ISSUER.into(),
            aud: proto::auth::DEFAULT_AUDIENCE.into(),
            iat: now,
            nbf: now,
            exp: now + 900,
            email: email.clone(),
            email_verified: true,
            name: name.to_owned(),
        };
        let der = base64::engine::general_purpose::STANDARD
            .decode(TEST_KEY_PKCS8)
            .unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("test".into());
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&der)).unwrap();
        Self { id, email, token }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/rtc", self.addr)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        user: Option<&User>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(user) = user {
            request = request.bearer_auth(&user.token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn create_meeting(&self, user: &User, body: Value) -> Value {
        let (status, body) = self
            .request(
                reqwest::Method::POST,
                "/api/v1/meetings",
                Some(user),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    pub async fn join(&self, key: &str, user: Option<&User>, body: Value) -> (u16, Value) {
        self.request(
            reqwest::Method::POST,
            &format!("/api/v1/meetings/{key}/join"),
            user,
            Some(body),
        )
        .await
    }

    /// Join over REST and return the room token.
    pub async fn room_token(&self, key: &str, user: Option<&User>, body: Value) -> String {
        let (status, body) = self.join(key, user, body).await;
        assert_eq!(status, 200, "{body}");
        body["room_token"].as_str().unwrap().to_owned()
    }
}

/// A WebSocket client speaking the signaling protocol.
pub struct Client {
    pub ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Self { ws }
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, text: String) {
        let _ = self.ws.send(Message::Text(text.into())).await;
    }

    /// The next protocol message (skipping pings), or `None` when the socket closed.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("a message within 5 s");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(text.as_str()).unwrap());
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next message of `kind`, skipping others.
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let message = self
                .next()
                .await
                .unwrap_or_else(|| panic!("closed while waiting for {kind}"));
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Join with a room token; returns the `joined` message.
    pub async fn join(&mut self, token: &str) -> Value {
        self.send(
            json!({"v": 1, "type": "join", "token": token, "publisher_offer": "offer",
            "tracks": [{"mid": "0", "source": "microphone"}]}),
        )
        .await;
        self.expect("joined").await
    }

    /// Collect messages until the socket closes.
    pub async fn drain(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(message) = self.next().await {
            out.push(message);
        }
        out
    }
}
