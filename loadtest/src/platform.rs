//! The whole platform as users meet it: the `meetease` launcher (every service
//! in one process, embedded defaults, a private data folder), a host account
//! that creates a meeting through the gateway, and participants that join as
//! guests through signaling — `POST /api/v1/meetings/{code}/join` for a room
//! token, then the `/rtc` WebSocket carrying the SDP — exactly as the web
//! client does. Join time then runs from opening the WebSocket to the first
//! media packet.
//!
//! Joins go to signaling's own port rather than through the gateway: one load
//! generator is one IP address, and the gateway's per-IP limit (rightly) stops
//! a single address from joining hundreds of people a second.

use anyhow::{Context, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use proto::signal::{ClientEnvelope, ClientMessage, PROTOCOL_VERSION};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A running `meetease` launcher. Killed (by its PID) and its data folder
/// removed on drop.
pub struct PlatformProcess {
    child: Child,
    dir: PathBuf,
    pub gateway: SocketAddr,
    pub signaling: SocketAddr,
    pub sfu: SocketAddr,
}

impl PlatformProcess {
    pub fn spawn(binary: &Path) -> anyhow::Result<PlatformProcess> {
        let dir =
            std::env::temp_dir().join(format!("meetease-loadtest-data-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut command = Command::new(binary);
        for port in [
            "GATEWAY_PORT",
            "AUTH_PORT",
            "USERS_PORT",
            "SIGNALING_PORT",
            "NOTIFY_PORT",
            "ANALYTICS_PORT",
            "SFU_PORT",
            "SFU_UDP_PORT",
        ] {
            command.env(port, "0");
        }
        let mut child = command
            .env("MEETEASE_HOST", "127.0.0.1")
            .env("MEETEASE_DATA_DIR", &dir)
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("AMQP_URL")
            .env_remove("SMTP_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let (mut gateway, mut signaling, mut sfu) = (None, None, None);
        crate::node::wait_for_start(
            &mut child,
            "the platform",
            Duration::from_secs(60),
            |line| {
                if line.starts_with("MeetEase is running") {
                    return Ok(true);
                }
                if let Some((name, addr)) = line.split_once(" listening on http://") {
                    let addr: SocketAddr = addr.trim().parse()?;
                    match name {
                        "gateway" => gateway = Some(addr),
                        "signaling" => signaling = Some(addr),
                        "sfu" => sfu = Some(addr),
                        _ => {}
                    }
                }
                Ok(false)
            },
        )?;
        let (Some(gateway), Some(signaling), Some(sfu)) = (gateway, signaling, sfu) else {
            let _ = child.kill();
            bail!("the launcher did not say where the gateway, signaling and the SFU listen");
        };
        for addr in [gateway, signaling, sfu] {
            if !addr.ip().is_loopback() {
                let _ = child.kill();
                bail!("refusing to load a platform listening on {addr}, not loopback");
            }
        }
        Ok(PlatformProcess {
            child,
            dir,
            gateway,
            signaling,
            sfu,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PlatformProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sign up a host through the gateway and create one meeting per room that
/// guests may join without a lobby. Returns the meetings' join codes.
pub async fn create_meetings(
    http: &reqwest::Client,
    gateway: SocketAddr,
    rooms: usize,
    size: usize,
) -> anyhow::Result<Vec<String>> {
    let email = format!("loadtest-{}@example.com", std::process::id());
    let registered: Value = http
        .post(format!("http://{gateway}/api/v1/auth/register"))
        .json(&json!({"email": email, "password": "load-test-host-password-1", "display_name": "Load test host"}))
        .send()
        .await?
        .error_for_status()
        .context("registering the host")?
        .json()
        .await?;
    let token = registered["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned();
    let mut codes = Vec::new();
    for room in 0..rooms {
        let meeting: Value = http
            .post(format!("http://{gateway}/api/v1/meetings"))
            .bearer_auth(&token)
            .json(&json!({
                "title": format!("load test room {room}"),
                "settings": {"guests_allowed": true, "lobby": false, "mute_on_entry": false,
                             "max_participants": size.clamp(2, 500)},
            }))
            .send()
            .await?
            .error_for_status()
            .context("creating a meeting")?
            .json()
            .await?;
        codes.push(
            meeting["code"]
                .as_str()
                .context("no meeting code")?
                .to_owned(),
        );
    }
    Ok(codes)
}

/// A guest's room token for a meeting.
pub async fn guest_join(
    http: &reqwest::Client,
    signaling: SocketAddr,
    code: &str,
    name: &str,
) -> anyhow::Result<String> {
    let response = http
        .post(format!("http://{signaling}/api/v1/meetings/{code}/join"))
        .json(&json!({"display_name": name}))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "guest join: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let joined: Value = response.json().await?;
    Ok(joined["room_token"]
        .as_str()
        .context("no room token")?
        .to_owned())
}

/// What `joined` brought back.
pub struct Joined {
    pub publisher_answer: String,
    pub subscriber_offer: String,
    pub participant_id: String,
    /// The video tracks the others in the room already publish.
    pub video_tracks: Vec<String>,
}

/// How a participant follows the room after joining, as the web client does.
#[derive(Debug, Clone, Copy)]
pub struct Follow {
    /// Pass the SFU's `publisher_layers` to the publisher (dynacast).
    pub publisher_layers: bool,
    /// Draw every remote video at this height (`subscribe` with
    /// `max_height`); `None`: the client never says, the SFU sends the best
    /// layer the bandwidth allows.
    pub tile_height: Option<u32>,
}

/// The video track a `track_published` message (or a participant's entry in
/// `joined`) announces, unless it is `me`'s own.
fn remote_video_track<'a>(track: &'a Value, me: &str) -> Option<&'a str> {
    (track["kind"] == "video" && track["participant_id"] != me)
        .then(|| track["track_id"].as_str())
        .flatten()
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One participant's signaling WebSocket.
pub struct Signal {
    socket: Socket,
}

fn frame(message: ClientMessage) -> anyhow::Result<Message> {
    let envelope = ClientEnvelope {
        v: PROTOCOL_VERSION,
        message,
    };
    Ok(Message::text(serde_json::to_string(&envelope)?))
}

impl Signal {
    pub async fn connect(signaling: SocketAddr) -> anyhow::Result<Signal> {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{signaling}/rtc"))
            .await
            .context("opening the signaling WebSocket")?;
        Ok(Signal { socket })
    }

    /// Send `join` and wait for `joined` (room events that arrive first are skipped).
    pub async fn join(
        &mut self,
        token: String,
        publisher_offer: String,
        tracks: Vec<proto::sfu::TrackDeclaration>,
        data_channel: bool,
    ) -> anyhow::Result<Joined> {
        self.socket
            .send(frame(ClientMessage::Join {
                token,
                publisher_offer,
                tracks,
                resume: None,
                auto_subscribe: None,
                data_channel: Some(data_channel),
            })?)
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .context("no `joined` within 20 s")?
                .context("signaling closed the socket")??;
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text)?;
            match value["type"].as_str() {
                Some("joined") => {
                    let participant_id = value["participant_id"]
                        .as_str()
                        .context("no participant id")?
                        .to_owned();
                    let video_tracks = value["participants"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|p| p["tracks"].as_array().into_iter().flatten())
                        .filter_map(|t| remote_video_track(t, &participant_id))
                        .map(str::to_owned)
                        .collect();
                    return Ok(Joined {
                        participant_id,
                        video_tracks,
                        publisher_answer: value["publisher_answer"]
                            .as_str()
                            .context("no publisher answer")?
                            .to_owned(),
                        subscriber_offer: value["subscriber_offer"]["sdp"]
                            .as_str()
                            .context("no subscriber offer")?
                            .to_owned(),
                    });
                }
                Some("error") | Some("removed") => bail!("join refused: {text}"),
                _ => {}
            }
        }
    }

    pub async fn send_subscriber_answer(&mut self, sdp: String) -> anyhow::Result<()> {
        self.socket
            .send(frame(ClientMessage::SubscriberAnswer { sdp })?)
            .await?;
        Ok(())
    }

    /// Ask for a remote video track at the tile height, as the web client
    /// does for each video it draws.
    async fn draw_at(&mut self, track_id: &str, height: u32) -> anyhow::Result<()> {
        let message = ClientMessage::Subscribe {
            track_id: track_id.parse().context("a track id")?,
            subscribed: true,
            max_layer: None,
            max_height: Some(height),
        };
        self.socket.send(frame(message)?).await?;
        Ok(())
    }

    /// Keep the session going until the socket closes or `stop`: SFU
    /// renegotiations go to the participant (`offers`), its answers come back
    /// on `answers` and go out; the rest as `follow` says.
    pub async fn run(
        mut self,
        joined: Joined,
        offers: mpsc::UnboundedSender<crate::peer::Control>,
        mut answers: mpsc::UnboundedReceiver<String>,
        stop: tokio_util::sync::CancellationToken,
        follow: Follow,
    ) {
        if let Some(height) = follow.tile_height {
            for track in &joined.video_tracks {
                if self.draw_at(track, height).await.is_err() {
                    return;
                }
            }
        }
        let me = joined.participant_id;
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = self.socket.send(frame(ClientMessage::Leave).unwrap_or(Message::Close(None))).await;
                    let _ = self.socket.close(None).await;
                    return;
                }
                answer = answers.recv() => match answer {
                    Some(sdp) => {
                        if self.send_subscriber_answer(sdp).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                message = self.socket.next() => {
                    let Some(Ok(message)) = message else { return };
                    let Message::Text(text) = message else { continue };
                    let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
                    if value["type"] == "subscriber_offer"
                        && let Some(sdp) = value["offer"]["sdp"].as_str()
                    {
                        let _ = offers.send(crate::peer::Control::SubscriberOffer(sdp.to_owned()));
                    } else if let (Some(height), Some(track)) = (
                        follow.tile_height,
                        (value["type"] == "track_published")
                            .then(|| remote_video_track(&value["track"], &me))
                            .flatten(),
                    ) {
                        if self.draw_at(track, height).await.is_err() {
                            return;
                        }
                    } else if follow.publisher_layers
                        && value["type"] == "publisher_layers"
                        && let (Some(mid), Ok(active)) = (
                            value["mid"].as_str(),
                            serde_json::from_value(value["active"].clone()),
                        )
                    {
                        let _ = offers.send(crate::peer::Control::PublisherLayers {
                            mid: mid.to_owned(),
                            active,
                        });
                    }
                }
            }
        }
    }
}
