//! The SFU control API (`proto::sfu`) behind a trait, so session logic can be tested
//! against a fake node; [`HttpSfu`] is the real client.

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use proto::ids::ParticipantId;
use proto::sfu::SubscriberOffer;
use proto::sfu::{
    CreateSession, MuteTrack, NodeLoad, PublisherOffer, RemoteCandidate, SdpAnswer, SessionCreated,
    SetSubscription, SfuEvent, SubscriberAnswer,
};
use servicekit::Secret;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SfuError {
    /// The node could not be reached or answered with a server error.
    #[error("sfu unavailable: {0}")]
    Unavailable(String),
    /// The node refused the request (a 4xx): bad SDP, unknown session, ...
    #[error("sfu refused: {0}")]
    Refused(String),
}

/// One SFU node's control API, addressed by its base URL.
pub trait SfuClient: Send + Sync + 'static {
    fn create_session<'a>(
        &'a self,
        node: &'a str,
        request: CreateSession,
    ) -> BoxFuture<'a, Result<SessionCreated, SfuError>>;
    fn publisher_offer<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
        offer: PublisherOffer,
    ) -> BoxFuture<'a, Result<SdpAnswer, SfuError>>;
    fn subscriber_answer<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
        answer: SubscriberAnswer,
    ) -> BoxFuture<'a, Result<(), SfuError>>;
    fn candidate<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
        candidate: RemoteCandidate,
    ) -> BoxFuture<'a, Result<(), SfuError>>;
    fn subscription<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
        subscription: SetSubscription,
    ) -> BoxFuture<'a, Result<(), SfuError>>;
    fn mute<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
        mute: MuteTrack,
    ) -> BoxFuture<'a, Result<(), SfuError>>;
    /// Restart ICE on the participant's existing connections: a new subscriber offer
    /// (and, from nodes that do it, a publisher answer; else `publisher_answer` is empty).
    fn ice_restart<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
    ) -> BoxFuture<'a, Result<SessionCreated, SfuError>>;
    fn delete_session<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
    ) -> BoxFuture<'a, Result<(), SfuError>>;
    fn load<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<NodeLoad, SfuError>>;
    /// The node's event stream; it ends when the connection does.
    fn events<'a>(
        &'a self,
        node: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<'static, SfuEvent>, SfuError>>;
}

/// The real client: JSON over HTTP with `Authorization: Bearer <control token>`.
#[derive(Clone)]
pub struct HttpSfu {
    client: reqwest::Client,
    /// No overall timeout: for the long-lived event stream.
    streaming: reqwest::Client,
    token: Option<Secret<String>>,
}

impl HttpSfu {
    pub fn new(token: Option<Secret<String>>) -> Result<Self, SfuError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|err| SfuError::Unavailable(err.to_string()))?;
        let streaming = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|err| SfuError::Unavailable(err.to_string()))?;
        Ok(Self {
            client,
            streaming,
            token,
        })
    }

    fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        url: String,
    ) -> reqwest::RequestBuilder {
        let builder = client.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token.expose()),
            None => builder,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response, SfuError> {
        let mut builder = self.request(&self.client, method, url);
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder
            .send()
            .await
            .map_err(|err| SfuError::Unavailable(err.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(response)
        } else if status.is_client_error() {
            let text = response.text().await.unwrap_or_default();
            Err(SfuError::Refused(format!(
                "{status}: {}",
                text.chars().take(200).collect::<String>()
            )))
        } else {
            Err(SfuError::Unavailable(format!("status {status}")))
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<serde_json::Value>,
    ) -> Result<T, SfuError> {
        self.send(method, url, body)
            .await?
            .json()
            .await
            .map_err(|err| SfuError::Unavailable(format!("bad answer: {}", err.without_url())))
    }
}

fn json<T: serde::Serialize>(value: &T) -> Option<serde_json::Value> {
    serde_json::to_value(value).ok()
}

fn session_url(node: &str, participant: ParticipantId, rest: &str) -> String {
    format!(
        "{}/v1/sessions/{participant}{rest}",
        node.trim_end_matches('/')
    )
}

impl SfuClient for HttpSfu {
    fn create_session<'a>(
        &'a self,
        node: &'a str,
        request: CreateSession,
    ) -> BoxFuture<'a, Result<SessionCreated, SfuError>> {
        Box::pin(async move {
            let url = format!("{}/v1/sessions", node.trim_end_matches('/'));
            self.call(reqwest::Method::POST, url, json(&request)).await
        })
    }

    fn publisher_offer<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
        offer: PublisherOffer,
    ) -> BoxFuture<'a, Result<SdpAnswer, SfuError>> {
        Box::pin(async move {
            let url = session_url(node, participant, "/publisher/offer");
            self.call(reqwest::Method::POST, url, json(&offer)).await
        })
    }

    fn subscriber_answer<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
        answer: SubscriberAnswer,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            let url = session_url(node, participant, "/subscriber/answer");
            self.send(reqwest::Method::POST, url, json(&answer))
                .await
                .map(drop)
        })
    }

    fn candidate<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
        candidate: RemoteCandidate,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            let url = session_url(node, participant, "/candidate");
            self.send(reqwest::Method::POST, url, json(&candidate))
                .await
                .map(drop)
        })
    }

    fn subscription<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
        subscription: SetSubscription,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            let url = session_url(node, participant, "/subscription");
            self.send(reqwest::Method::POST, url, json(&subscription))
                .await
                .map(drop)
        })
    }

    fn mute<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
        mute: MuteTrack,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            let url = session_url(node, participant, "/mute");
            self.send(reqwest::Method::POST, url, json(&mute))
                .await
                .map(drop)
        })
    }

    fn ice_restart<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
    ) -> BoxFuture<'a, Result<SessionCreated, SfuError>> {
        Box::pin(async move {
            let url = session_url(node, participant, "/ice-restart");
            // The contract names `SessionCreated`; the node answers with the new
            // subscriber offer alone (the client restarts its publisher connection
            // itself, with a new publisher offer). Accept both.
            let value: serde_json::Value = self.call(reqwest::Method::POST, url, None).await?;
            if let Ok(created) = serde_json::from_value::<SessionCreated>(value.clone()) {
                return Ok(created);
            }
            let offer: SubscriberOffer = serde_json::from_value(value)
                .map_err(|err| SfuError::Unavailable(format!("bad ice-restart answer: {err}")))?;
            Ok(SessionCreated {
                publisher_answer: String::new(),
                subscriber_offer: offer,
            })
        })
    }

    fn delete_session<'a>(
        &'a self,
        node: &'a str,
        participant: ParticipantId,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            let url = session_url(node, participant, "");
            match self.send(reqwest::Method::DELETE, url, None).await {
                // Already gone is what we wanted.
                Ok(_) | Err(SfuError::Refused(_)) => Ok(()),
                Err(err) => Err(err),
            }
        })
    }

    fn load<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<NodeLoad, SfuError>> {
        Box::pin(async move {
            let url = format!("{}/v1/load", node.trim_end_matches('/'));
            self.call(reqwest::Method::GET, url, None).await
        })
    }

    fn events<'a>(
        &'a self,
        node: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<'static, SfuEvent>, SfuError>> {
        Box::pin(async move {
            let url = format!("{}/v1/events", node.trim_end_matches('/'));
            let response = self
                .request(&self.streaming, reqwest::Method::GET, url)
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .send()
                .await
                .map_err(|err| SfuError::Unavailable(err.without_url().to_string()))?;
            if !response.status().is_success() {
                return Err(SfuError::Unavailable(format!(
                    "status {}",
                    response.status()
                )));
            }
            let state = (
                response,
                SseParser::default(),
                std::collections::VecDeque::new(),
            );
            let stream = futures_util::stream::unfold(
                state,
                |(mut response, mut parser, mut ready)| async move {
                    loop {
                        if let Some(event) = ready.pop_front() {
                            return Some((event, (response, parser, ready)));
                        }
                        match response.chunk().await {
                            Ok(Some(bytes)) => ready.extend(parser.feed(&bytes)),
                            Ok(None) | Err(_) => return None,
                        }
                    }
                },
            );
            Ok(Box::pin(stream) as BoxStream<'static, SfuEvent>)
        })
    }
}

/// Server-sent events: `data:` lines up to a blank line make one event. Comments
/// (`:` lines, keep-alives) and other fields are ignored; an event that is not a
/// known [`SfuEvent`] is logged and skipped.
#[derive(Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    data: String,
    /// The `event:` name of the event being read; only unnamed (`message`) events
    /// carry an [`SfuEvent`] (the SFU names others, such as `lagged`).
    name: Option<String>,
}

/// Longest line kept; a longer one is dropped (nothing from the network may make us
/// hold unbounded memory).
const MAX_SSE_LINE: usize = 1024 * 1024;

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SfuEvent> {
        let mut out = Vec::new();
        self.buffer.extend_from_slice(bytes);
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let name = self.name.take();
                if !self.data.is_empty() {
                    match name.as_deref() {
                        None | Some("message") => {
                            match serde_json::from_str::<SfuEvent>(&self.data) {
                                Ok(event) => out.push(event),
                                Err(err) => tracing::warn!(%err, "unknown event from the sfu"),
                            }
                        }
                        Some(other) => {
                            tracing::warn!(event = other, data = %self.data, "sfu event stream notice")
                        }
                    }
                    self.data.clear();
                }
            } else if let Some(name) = line.strip_prefix("event:") {
                self.name = Some(name.trim().chars().take(64).collect());
            } else if let Some(data) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(data.strip_prefix(' ').unwrap_or(data));
                if self.data.len() > MAX_SSE_LINE {
                    self.data.clear();
                }
            }
        }
        if self.buffer.len() > MAX_SSE_LINE {
            self.buffer.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sent_events_are_parsed_across_chunks() {
        let mut parser = SseParser::default();
        let event = r#"{"type":"connected","room":"r1","participant_id":"0190a1b2-0000-7000-8000-000000000001"}"#;
        let text = format!(
            ": keep-alive\n\ndata: {event}\n\ndata: not json\n\nevent: lagged\ndata: 5\n\n"
        );
        let (a, b) = text.as_bytes().split_at(30);
        let mut events = parser.feed(a);
        events.extend(parser.feed(b));
        assert_eq!(events.len(), 1);
        assert!(matches!(events[0], SfuEvent::Connected { .. }));
    }
}
