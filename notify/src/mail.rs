//! Delivering one email: over SMTP (`SMTP_URL`: `smtp://` plain, `smtps://` TLS from the
//! first byte), or, with no SMTP configured, as an `.eml` file in `<data>/mail-outbox/`
//! so the embedded mode shows what it would send.

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use servicekit::{Secret, StartError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An email ready to go.
#[derive(Debug, Clone)]
pub struct Mail {
    pub id: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// `(method, calendar)` for invitations.
    pub ics: Option<(String, String)>,
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Never going to work (a malformed address): dead-letter at once.
    #[error("{0}")]
    Permanent(String),
    /// Try again later.
    #[error("{0}")]
    Transient(String),
}

#[derive(Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Folder(PathBuf),
}

impl Mailer {
    /// SMTP from `smtp://[user:pass@]host[:port]` (port 25) or
    /// `smtps://[user:pass@]host[:port]` (port 465, TLS verified against the system's
    /// roots plus `ca_file` if given), else the folder.
    pub fn new(
        smtp_url: Option<&Secret<String>>,
        ca_file: Option<&Path>,
        folder: PathBuf,
    ) -> Result<Mailer, StartError> {
        let Some(url) = smtp_url else {
            std::fs::create_dir_all(&folder).map_err(|err| {
                StartError::setting(
                    "MEETEASE_DATA_DIR",
                    format!("cannot create {}: {err}", folder.display()),
                )
            })?;
            return Ok(Mailer::Folder(folder));
        };
        let bad = |why: &str| StartError::setting("SMTP_URL", why.to_owned());
        let url = url.expose();
        let (rest, tls) = if let Some(rest) = url.strip_prefix("smtp://") {
            (rest, false)
        } else if let Some(rest) = url.strip_prefix("smtps://") {
            (rest, true)
        } else {
            return Err(bad("must start with smtp:// or smtps://"));
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, host_port) = match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (
                    Some(Credentials::new(user.to_owned(), pass.to_owned())),
                    host,
                )
            }
            None => (None, rest),
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
            None => (host_port, if tls { 465 } else { 25 }),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(Duration::from_secs(15)));
        if tls {
            let mut params = TlsParameters::builder(host.to_owned());
            if let Some(path) = ca_file {
                let bad_ca = |why: String| StartError::setting("SMTP_CA_FILE", why);
                let pem = std::fs::read(path)
                    .map_err(|err| bad_ca(format!("cannot read {}: {err}", path.display())))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|err| bad_ca(format!("not a PEM certificate: {err}")))?;
                params = params.add_root_certificate(cert);
            }
            let params = params
                .build_rustls()
                .map_err(|err| bad(&format!("TLS: {err}")))?;
            builder = builder.tls(Tls::Wrapper(params));
        } else if ca_file.is_some() {
            return Err(StartError::setting(
                "SMTP_CA_FILE",
                "only applies to smtps:// (SMTP_URL is smtp://)",
            ));
        }
        if let Some(credentials) = credentials {
            builder = builder.credentials(credentials);
        }
        Ok(Mailer::Smtp(builder.build()))
    }

    pub async fn send(&self, from: &str, mail: &Mail) -> Result<(), SendError> {
        let message = build_message(from, mail)?;
        match self {
            Mailer::Smtp(transport) => transport.send(message).await.map(|_| ()).map_err(|err| {
                if err.is_permanent() {
                    SendError::Permanent(err.to_string())
                } else {
                    SendError::Transient(err.to_string())
                }
            }),
            Mailer::Folder(folder) => {
                let path = folder.join(format!("{}.eml", mail.id));
                tokio::fs::write(&path, message.formatted())
                    .await
                    .map_err(|err| SendError::Transient(format!("{}: {err}", path.display())))
            }
        }
    }
}

pub fn build_message(from: &str, mail: &Mail) -> Result<Message, SendError> {
    let from: Mailbox = from
        .parse()
        .map_err(|err| SendError::Permanent(format!("sender address: {err}")))?;
    let to: Mailbox = mail
        .to
        .parse()
        .map_err(|err| SendError::Permanent(format!("recipient address: {err}")))?;
    let alternative = MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone());
    let builder = Message::builder()
        .from(from)
        .to(to)
        .subject(mail.subject.clone());
    let message = match &mail.ics {
        None => builder.multipart(alternative),
        Some((method, ics)) => {
            let content_type =
                ContentType::parse(&format!("text/calendar; charset=utf-8; method={method}"))
                    .map_err(|err| SendError::Permanent(err.to_string()))?;
            let name = if method == "CANCEL" {
                "cancel.ics"
            } else {
                "invite.ics"
            };
            builder.multipart(
                MultiPart::mixed()
                    .multipart(alternative)
                    .singlepart(Attachment::new(name.to_owned()).body(ics.clone(), content_type)),
            )
        }
    };
    message.map_err(|err| SendError::Permanent(err.to_string()))
}
