//! The notify service: email, web push and in-app alerts driven by the events on
//! the bus.
//!
//! `build` turns typed configuration into the service's router; the binary in
//! `main.rs` and the all-in-one launcher both call it. Alongside the router it starts
//! two tasks: the bus consumer ([`events`]), which turns each event into rows of the
//! `mail_queue` table in the same transaction as its dedup record, and the sender
//! ([`sender`]), which delivers due rows with retries and gives up into
//! `mail_dead_letters`. Reminders are `mail_queue` rows due before a meeting starts,
//! so a restart neither loses nor repeats them. Alerts go to open in-app streams
//! ([`alerts`]) and, as `push_queue` rows, to browsers' push subscriptions ([`push`],
//! encrypted and signed by [`webpush`]), delivered by a third task with the same
//! retry rules.

pub mod alerts;
pub mod events;
pub mod ics;
pub mod mail;
pub mod push;
pub mod sender;
pub mod templates;
pub mod webpush;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::get;
use proto::event::{MEETING_EVENTS, USER_EVENTS};
use servicekit::backends::Db;
use servicekit::bus::{self, EventBus, Subscription};
use servicekit::config::BackendConfig;
use servicekit::http;
use servicekit::metrics::Metrics;
use servicekit::service::{Deps, Needs};
use servicekit::tokens::{TokenVerifier, VerifierConfig};
use servicekit::{Secret, StartError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The service's name in logs, metrics and its `*_PORT` setting.
pub const SERVICE: &str = "notify";
/// The port it listens on by default.
pub const DEFAULT_PORT: u16 = 8004;
/// Where auth answers when nothing else is configured.
pub const DEFAULT_AUTH_URL: &str = "http://127.0.0.1:8001";

static MIGRATIONS_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static MIGRATIONS_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Typed configuration of the notify service.
#[derive(Debug, Clone)]
pub struct Config {
    pub backends: BackendConfig,
    /// `smtp://` or `smtps://[user:pass@]host[:port]`; `None` writes `.eml` files to `mail_folder`.
    pub smtp_url: Option<Secret<String>>,
    /// An extra CA (PEM) to trust for `smtps://`, besides the system's roots.
    pub smtp_ca_file: Option<PathBuf>,
    /// The `From:` of every email.
    pub mail_from: String,
    /// Where emails are written without SMTP (`<data>/mail-outbox`).
    pub mail_folder: PathBuf,
    /// The address people open MeetEase at; links in emails start with it.
    pub public_url: String,
    /// How long before a meeting's start its reminder goes out.
    pub reminder_lead: Duration,
    /// Pause after the first failed send; doubles with each attempt.
    pub retry_base: Duration,
    /// Sends before an email is given up (dead-lettered).
    pub max_attempts: i64,
    /// auth's base URL: the alert stream checks access tokens against its JWKS.
    pub auth_url: String,
    /// The VAPID `sub` claim: how a push service reaches the operator
    /// (`mailto:` or `https:`).
    pub vapid_subject: String,
    /// The VAPID private key (base64url P-256 scalar); `None` uses the one notify
    /// made and stored in its database at first start.
    pub vapid_private_key: Option<Secret<String>>,
    /// Accept push endpoints on loopback addresses, over plain http too (tests and
    /// local development only; never on a public server).
    pub push_allow_loopback: bool,
    /// How long a push service keeps an undelivered message (the `TTL` header).
    pub push_ttl: Duration,
    /// The bus queue and exchanges (tests use unique names).
    pub queue: String,
    pub user_exchange: String,
    pub meeting_exchange: String,
}

impl Config {
    pub fn new(backends: BackendConfig) -> Self {
        let mail_folder = backends.data_dir.join("mail-outbox");
        Self {
            backends,
            smtp_url: None,
            smtp_ca_file: None,
            mail_from: "MeetEase <noreply@localhost>".to_owned(),
            mail_folder,
            public_url: "http://localhost:8000".to_owned(),
            reminder_lead: Duration::from_secs(10 * 60),
            retry_base: Duration::from_secs(2),
            max_attempts: 6,
            auth_url: DEFAULT_AUTH_URL.to_owned(),
            vapid_subject: "mailto:noreply@localhost".to_owned(),
            vapid_private_key: None,
            push_allow_loopback: false,
            push_ttl: Duration::from_secs(3600),
            queue: SERVICE.to_owned(),
            user_exchange: USER_EVENTS.to_owned(),
            meeting_exchange: MEETING_EVENTS.to_owned(),
        }
    }

    pub fn from_args(backends: BackendConfig, args: NotifyArgs) -> Result<Self, StartError> {
        let mut config = Self::new(backends);
        config.smtp_url = args.smtp_url;
        config.smtp_ca_file = args.smtp_ca_file;
        if args.mail_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(StartError::setting(
                "NOTIFY_MAIL_FROM",
                "is not an email address",
            ));
        }
        config.vapid_subject = match args.vapid_subject {
            Some(subject) if subject.starts_with("mailto:") || subject.starts_with("https://") => {
                subject
            }
            Some(_) => {
                return Err(StartError::setting(
                    "NOTIFY_VAPID_SUBJECT",
                    "must be a mailto: or https: URL",
                ));
            }
            // The sender address is the operator's contact unless told otherwise.
            None => args
                .mail_from
                .parse::<lettre::message::Mailbox>()
                .map(|m| format!("mailto:{}", m.email))
                .unwrap_or_else(|_| config.vapid_subject.clone()),
        };
        config.mail_from = args.mail_from;
        config.vapid_private_key = args.vapid_private_key;
        config.push_allow_loopback = args.push_allow_loopback;
        if !(args.public_url.starts_with("http://") || args.public_url.starts_with("https://")) {
            return Err(StartError::setting(
                "MEETEASE_PUBLIC_URL",
                "must be an http:// or https:// URL",
            ));
        }
        config.public_url = args.public_url.trim_end_matches('/').to_owned();
        config.reminder_lead = Duration::from_secs(args.reminder_minutes * 60);
        Ok(config)
    }
}

/// The notify flags (also taken by the launcher).
#[derive(Debug, Clone, clap::Args)]
pub struct NotifyArgs {
    /// SMTP server for outgoing email: `smtp://[user:pass@]host[:port]` (plain, port
    /// 25) or `smtps://…` (TLS, port 465). Without it, emails are written as `.eml`
    /// files to `<data dir>/mail-outbox/`.
    #[arg(long = "smtp-url", env = "SMTP_URL")]
    pub smtp_url: Option<Secret<String>>,
    /// A CA certificate (PEM file) to trust for `smtps://` besides the system's roots
    /// (a private relay's own CA).
    #[arg(long = "smtp-ca-file", env = "SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,
    /// Sender address of every email.
    #[arg(
        long = "mail-from",
        env = "NOTIFY_MAIL_FROM",
        default_value = "MeetEase <noreply@localhost>"
    )]
    pub mail_from: String,
    /// Public address of the web client, for links in emails.
    // Its own id: the launcher flattens every service's flags into one command,
    // and auth has a `public_url` too.
    #[arg(
        id = "notify_public_url",
        value_name = "URL",
        long = "public-url",
        env = "MEETEASE_PUBLIC_URL",
        default_value = "http://localhost:8000"
    )]
    pub public_url: String,
    /// Minutes before a meeting's start its reminder is sent.
    #[arg(
        long = "reminder-minutes",
        env = "NOTIFY_REMINDER_MINUTES",
        default_value_t = 10
    )]
    pub reminder_minutes: u64,
    /// Contact for push services in VAPID tokens (`mailto:` or `https:`); defaults
    /// to `mailto:` the sender address.
    #[arg(long = "vapid-subject", env = "NOTIFY_VAPID_SUBJECT")]
    pub vapid_subject: Option<String>,
    /// The VAPID private key (base64url, 32 bytes). Without it notify makes one at
    /// first start and keeps it in its database. Changing it invalidates every
    /// browser's push subscription.
    #[arg(long = "vapid-private-key", env = "NOTIFY_VAPID_PRIVATE_KEY")]
    pub vapid_private_key: Option<Secret<String>>,
    /// Accept push endpoints on loopback addresses over plain http (tests and local
    /// development only).
    #[arg(long = "push-allow-loopback", env = "NOTIFY_PUSH_ALLOW_LOOPBACK")]
    pub push_allow_loopback: bool,
}

/// Parts tests pass in instead of having `build` make them.
#[derive(Default)]
pub struct Parts {
    pub db: Option<Db>,
    pub bus: Option<Arc<dyn EventBus>>,
    pub verifier: Option<TokenVerifier>,
}

/// What handlers need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub alerts: alerts::Alerts,
    pub verifier: TokenVerifier,
    pub db: Db,
    pub push: Arc<PushState>,
}

/// What the push routes need.
pub struct PushState {
    pub key: webpush::VapidKey,
    pub allow_loopback: bool,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> TokenVerifier {
        state.verifier.clone()
    }
}

/// Connect the service's backends and build its router.
pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Router, StartError> {
    build_with(config, shutdown, Parts::default()).await
}

/// As [`build`], with some parts given instead of made.
pub async fn build_with(
    config: Config,
    shutdown: CancellationToken,
    parts: Parts,
) -> Result<Router, StartError> {
    let deps = Deps::connect(
        &config.backends,
        SERVICE,
        Needs {
            database: parts.db.is_none(),
            redis: false,
            amqp: parts.bus.is_none(),
        },
        shutdown.clone(),
    )
    .await?;
    let mut readiness = deps.readiness;
    let db = match (parts.db, deps.db) {
        (Some(db), _) => {
            readiness = readiness.with(db.readiness_check());
            db
        }
        (None, Some(db)) => db,
        (None, None) => return Err(StartError::other("notify needs a database")),
    };
    db.migrate(&MIGRATIONS_POSTGRES, &MIGRATIONS_SQLITE).await?;
    let bus = parts.bus.unwrap_or_else(|| bus::for_link(deps.amqp));
    let mailer = mail::Mailer::new(
        config.smtp_url.as_ref(),
        config.smtp_ca_file.as_deref(),
        config.mail_folder.clone(),
    )?;
    let verifier = match parts.verifier {
        Some(verifier) => verifier,
        None => {
            let jwks = format!("{}/api/v1/auth/jwks", config.auth_url.trim_end_matches('/'));
            TokenVerifier::from_jwks_url(&jwks, VerifierConfig::default())
                .map_err(|err| StartError::setting("AUTH_URL", err.message))?
        }
    };
    let vapid = push::load_key(
        &db,
        config
            .vapid_private_key
            .as_ref()
            .map(|k| k.expose().as_str()),
    )
    .await?;
    let pusher = push::Pusher::new(vapid.clone())?;
    let alerts = alerts::Alerts::default();
    let config = Arc::new(config);
    let wake = events::Wake::default();

    let subscription = Subscription::new(config.queue.clone())
        .bind(config.user_exchange.clone(), "user.#")
        .bind(config.user_exchange.clone(), "auth.#")
        .bind(config.meeting_exchange.clone(), "meeting.#");
    let handler = events::handler(db.clone(), config.clone(), wake.clone(), alerts.clone());
    bus.subscribe(subscription, handler, shutdown.clone())
        .await
        .map_err(|err| StartError::setting("AMQP_URL", err.to_string()))?;
    tokio::spawn(sender::run(
        db.clone(),
        mailer,
        config.clone(),
        wake.mail,
        shutdown.clone(),
    ));
    tokio::spawn(push::run(
        db.clone(),
        pusher,
        config.clone(),
        wake.push,
        shutdown,
    ));

    let metrics = Metrics::new(SERVICE);
    let push_state = Arc::new(PushState {
        key: vapid,
        allow_loopback: config.push_allow_loopback,
    });
    let api = Router::new()
        .route("/api/v1/notifications/stream", get(alerts::stream))
        .merge(push::routes())
        .with_state(AppState {
            alerts,
            verifier,
            db,
            push: push_state,
        });
    Ok(http::service_router(SERVICE, api, readiness, metrics))
}
