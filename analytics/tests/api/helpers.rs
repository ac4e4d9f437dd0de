use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proto::auth::AccessClaims;
use proto::event::EventEnvelope;
use proto::ids::{EventId, MeetingId, UserId};
use proto::meeting::{MeetingEvent, MeetingEventBody};
use serde_json::json;
use servicekit::Secret;
use servicekit::backends::{AmqpLink, Db};
use servicekit::bus::{AmqpBus, EventBus, MemoryBus};
use servicekit::config::{BackendConfig, DatabaseConfig, SqliteLocation};
use servicekit::tokens::{KeyRing, StaticKeys, TokenVerifier, VerifierConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// An Ed25519 key for test access tokens (PKCS#8 DER) and its public half.
const TEST_KEY_PKCS8: &str = "MC4CAQAwBQYDK2VwBCIEIKyd+Y7Pt4nm5A91f9KR4Xm40nz6cwj1kkXhLdWrAU8j";
const TEST_KEY_X: &str = "oO96bo9MwK9YxKuA7Vd1sFJrmX5c0kuCn5-PNegiZDI";

#[derive(Clone, Copy, Debug)]
pub enum Stack {
    Embedded,
    Servers,
}

pub struct TestApp {
    pub addr: SocketAddr,
    db: Db,
    pub bus: Arc<dyn EventBus>,
    pub exchange: String,
    queue: String,
    link: Option<AmqpLink>,
    shutdown: CancellationToken,
    client: reqwest::Client,
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

pub async fn spawn_app(stack: Stack) -> TestApp {
    let shutdown = CancellationToken::new();
    let dir = std::env::temp_dir().join(format!("analytics-{}", uuid::Uuid::new_v4()));
    let (db, bus, link): (Db, Arc<dyn EventBus>, _) = match stack {
        Stack::Embedded => (
            Db::connect(
                &DatabaseConfig::Sqlite {
                    location: SqliteLocation::Folder(dir.clone()),
                },
                "analytics",
            )
            .await
            .unwrap(),
            Arc::new(MemoryBus::new()),
            None,
        ),
        Stack::Servers => {
            let url = std::env::var("TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
            let amqp = std::env::var("TEST_AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
            let db = Db::connect_in_schema(
                &DatabaseConfig::Postgres {
                    url: Secret::new(url),
                },
                "analytics",
                &format!("analytics_{}", uuid::Uuid::new_v4().simple()),
            )
            .await
            .expect("PostgreSQL must answer at TEST_DATABASE_URL");
            let link = AmqpLink::connect(&Secret::new(amqp), shutdown.clone())
                .await
                .expect("RabbitMQ must answer at TEST_AMQP_URL");
            (db, Arc::new(AmqpBus::new(link.clone())), Some(link))
        }
    };
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut config = analytics::Config::new(BackendConfig::embedded(&dir));
    config.queue = format!("{prefix}.analytics");
    config.meeting_exchange = format!("{prefix}.meeting");
    let (queue, exchange) = (config.queue.clone(), config.meeting_exchange.clone());
    let router = analytics::build_with(
        config,
        shutdown.clone(),
        analytics::Parts {
            db: Some(db.clone()),
            bus: Some(bus.clone()),
            verifier: Some(verifier()),
        },
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(servicekit::http::serve(listener, router, shutdown.clone()));
    TestApp {
        addr,
        db,
        bus,
        exchange,
        queue,
        link,
        shutdown,
        client: reqwest::Client::new(),
    }
}

/// A signed-in person.
#[derive(Clone, Debug)]
pub struct User {
    pub id: UserId,
    pub token: String,
}

impl User {
    pub fn new() -> Self {
        let id = UserId::new();
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
            email: format!("{id}@example.com"),
            email_verified: true,
            name: "Test".into(),
        };
        let der = base64::engine::general_purpose::STANDARD
            .decode(TEST_KEY_PKCS8)
            .unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("test".into());
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&der)).unwrap();
        Self { id, token }
    }
}

impl TestApp {
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn queue_name(&self) -> String {
        self.queue.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str, user: Option<&User>) -> (u16, serde_json::Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(user) = user {
            req = req.bearer_auth(&user.token);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Publish a meeting event as signaling's relay would; returns the envelope.
    pub async fn meeting_event(
        &self,
        meeting: MeetingId,
        at_ms: i64,
        body: MeetingEventBody,
    ) -> EventEnvelope {
        let event = MeetingEvent {
            event_id: EventId::new(),
            occurred_at_ms: at_ms,
            meeting_id: meeting,
            body,
        };
        let envelope = EventEnvelope {
            id: event.event_id,
            kind: event.body.type_name().to_owned(),
            version: 1,
            occurred_at_ms: at_ms,
            room: Some(meeting.to_string()),
            seq: None,
            payload: serde_json::to_value(&event).unwrap(),
        };
        self.bus.publish(&self.exchange, &envelope).await.unwrap();
        envelope
    }

    pub async fn publish(&self, envelope: &EventEnvelope) {
        self.bus.publish(&self.exchange, envelope).await.unwrap();
    }

    pub async fn cleanup(&self) {
        self.shutdown.cancel();
        if let Some(link) = &self.link
            && let Ok(ch) = link.channel().await
        {
            let dead = format!("{}.dead", self.queue);
            let _ = ch
                .queue_delete(self.queue.as_str().into(), Default::default())
                .await;
            let _ = ch
                .queue_delete(dead.as_str().into(), Default::default())
                .await;
            let _ = ch
                .exchange_delete(self.exchange.as_str().into(), Default::default())
                .await;
        }
    }
}
