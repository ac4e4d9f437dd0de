//! The baseline: Janus's VideoRoom (Debian's `janus`), driven with the same
//! synthetic participants as MeetEase so one run prints both side by side.
//!
//! Janus offers no ICE candidate on 127.0.0.1, so the harness creates a network
//! namespace of its own with a veth pair (`10.213.x.y/30`): Janus runs inside
//! it with a private config folder (HTTP API and media bound to the namespace's
//! address, every plugin but VideoRoom off), the load generator stays outside
//! and reaches it across the veth. Everything is torn down on drop: Janus is
//! killed by its PID and the namespace deleted (which deletes the veth).

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const JANUS_BIN: &str = "janus";
const LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu/janus";
const HTTP_PORT: u16 = 8088;

/// A Janus process in a namespace of the harness's own.
pub struct JanusProcess {
    child: Option<Child>,
    netns: String,
    /// The host end of the veth pair, deleted explicitly on drop.
    veth_host: String,
    dir: PathBuf,
    /// The load generator's side of the veth: participants bind here.
    pub host_ip: Ipv4Addr,
    /// Janus's side of the veth: its HTTP API and media candidates.
    pub janus_ip: Ipv4Addr,
}

fn sh(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

impl JanusProcess {
    /// Create the namespace, write the private config and start Janus.
    pub fn spawn() -> anyhow::Result<JanusProcess> {
        if Command::new(JANUS_BIN).arg("--version").output().is_err() {
            bail!(
                "Janus is not installed: `apt-get install -y janus` (Debian's package) puts it on PATH"
            );
        }
        let pid = std::process::id();
        // A /30 per harness process, derived from its PID, so two harnesses never collide.
        let block = pid % (64 * 250);
        let (third, fourth) = ((block / 64) as u8, ((block % 64) * 4) as u8);
        let host_ip = Ipv4Addr::new(10, 213, third, fourth + 1);
        let janus_ip = Ipv4Addr::new(10, 213, third, fourth + 2);
        // Names unique per Janus this process starts: a ramp starts one per step,
        // and the kernel tears a deleted namespace down asynchronously.
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100;
        let netns = format!("meetease-lt-{pid}-{n}");
        let (veth_host, veth_janus) = (format!("mlt{pid}{n}h"), format!("mlt{pid}{n}j"));
        sh("ip", &["netns", "add", &netns])
            .context("creating a network namespace (the baseline needs root)")?;
        // From here on `Drop` cleans up, even if Janus never starts.
        let mut process = JanusProcess {
            child: None,
            netns: netns.clone(),
            veth_host: veth_host.clone(),
            dir: std::env::temp_dir().join(format!("meetease-janus-{pid}")),
            host_ip,
            janus_ip,
        };
        let host_cidr = format!("{host_ip}/30");
        let janus_cidr = format!("{janus_ip}/30");
        sh(
            "ip",
            &[
                "link",
                "add",
                &veth_host,
                "type",
                "veth",
                "peer",
                "name",
                &veth_janus,
            ],
        )?;
        sh("ip", &["link", "set", &veth_janus, "netns", &netns])?;
        sh("ip", &["addr", "add", &host_cidr, "dev", &veth_host])?;
        sh("ip", &["link", "set", &veth_host, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", netns.as_str(), "ip"];
            all.extend_from_slice(args);
            sh("ip", &all)
        };
        in_ns(&["addr", "add", &janus_cidr, "dev", &veth_janus])?;
        in_ns(&["link", "set", &veth_janus, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;

        std::fs::create_dir_all(&process.dir)?;
        write_config(&process.dir, &veth_janus, janus_ip)?;
        let log = std::fs::File::create(process.dir.join("janus.log"))?;
        let dir = process.dir.to_string_lossy().into_owned();
        let config = process
            .dir
            .join("janus.jcfg")
            .to_string_lossy()
            .into_owned();
        let child = Command::new("ip")
            .args([
                "netns", "exec", &netns, JANUS_BIN, "-F", &dir, "-C", &config,
            ])
            .args(["-o", "-d", "3"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start Janus")?;
        process.child = Some(child);
        Ok(process)
    }

    pub fn api_base(&self) -> String {
        format!("http://{}:{HTTP_PORT}/janus", self.janus_ip)
    }

    /// `ip netns exec` execs Janus in place: this is Janus's own PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Wait until the HTTP API answers.
    pub async fn ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                bail!(
                    "Janus exited ({status}) before answering; its log: {}",
                    self.dir.join("janus.log").display()
                );
            }
            let probe = http
                .get(format!("{}/info", self.api_base()))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Janus did not answer within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for JanusProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting one end of a veth pair deletes both, synchronously; the
        // namespace itself goes away in the background.
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth_host])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The private config: VideoRoom over plain HTTP on the namespace's address,
/// media candidates only on its veth, event loops sized to the machine (Janus's
/// advice for many handles), no STUN, no event handlers or loggers.
fn write_config(dir: &std::path::Path, veth: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let disabled_plugins = [
        "audiobridge",
        "duktape",
        "echotest",
        "lua",
        "nosip",
        "recordplay",
        "sip",
        "streaming",
        "textroom",
        "videocall",
        "voicemail",
    ]
    .map(|p| format!("libjanus_{p}.so"))
    .join(",");
    let disabled_transports = ["mqtt", "nanomsg", "pfunix", "rabbitmq", "websockets"]
        .map(|p| format!("libjanus_{p}.so"))
        .join(",");
    let dir_s = dir.to_string_lossy();
    let main = format!(
        r#"general: {{
	configs_folder = "{dir_s}"
	plugins_folder = "{LIB_DIR}/plugins"
	transports_folder = "{LIB_DIR}/transports"
	events_folder = "{LIB_DIR}/events"
	loggers_folder = "{LIB_DIR}/loggers"
	debug_level = 3
	event_loops = {cores}
	session_timeout = 120
}}
media: {{
	rtp_port_range = "20000-60000"
}}
nat: {{
	ice_enforce_list = "{veth}"
}}
plugins: {{
	disable = "{disabled_plugins}"
}}
transports: {{
	disable = "{disabled_transports}"
}}
loggers: {{
	disable = "libjanus_jsonlog.so"
}}
events: {{
	broadcast = false
}}
"#
    );
    let http = format!(
        r#"general: {{
	json = "plain"
	base_path = "/janus"
	threads = "unlimited"
	http = true
	port = {HTTP_PORT}
	ip = "{ip}"
	https = false
}}
admin: {{
	admin_http = false
}}
"#
    );
    for (name, text) in [
        ("janus.jcfg", main),
        ("janus.transport.http.jcfg", http),
        ("janus.plugin.videoroom.jcfg", "general: {\n}\n".to_owned()),
    ] {
        std::fs::File::create(dir.join(name))?.write_all(text.as_bytes())?;
    }
    Ok(())
}

/// One Janus session driven over the HTTP API; plugin events (answers to
/// asynchronous requests) arrive on a long poll and are routed back to the
/// request that caused them by transaction id.
#[derive(Clone)]
pub struct JanusClient {
    http: reqwest::Client,
    session_url: String,
    next: Arc<AtomicU64>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>,
}

/// A plugin handle attached to VideoRoom.
#[derive(Clone, Copy, Debug)]
pub struct Handle(u64);

impl JanusClient {
    /// Create a session and start its event long poll (it also keeps the session alive).
    pub async fn connect(
        http: reqwest::Client,
        base: String,
        stop: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<JanusClient> {
        let created: Value = http
            .post(&base)
            .json(&json!({"janus": "create", "transaction": "create"}))
            .send()
            .await?
            .json()
            .await?;
        let id = created["data"]["id"]
            .as_u64()
            .with_context(|| format!("Janus did not create a session: {created}"))?;
        let client = JanusClient {
            http,
            session_url: format!("{base}/{id}"),
            next: Arc::new(AtomicU64::new(1)),
            waiting: Arc::default(),
        };
        let poller = client.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = poller.poll_events() => {}
            }
        });
        Ok(client)
    }

    async fn poll_events(&self) {
        loop {
            let response = self
                .http
                .get(format!("{}?maxev=50", self.session_url))
                .timeout(Duration::from_secs(40))
                .send()
                .await;
            let Ok(response) = response else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let Ok(body) = response.json::<Value>().await else {
                continue;
            };
            let events = match body {
                Value::Array(events) => events,
                one => vec![one],
            };
            for event in events {
                let Some(transaction) = event["transaction"].as_str() else {
                    continue;
                };
                if event["janus"] == "ack" {
                    continue;
                }
                let waiter = self
                    .waiting
                    .lock()
                    .ok()
                    .and_then(|mut w| w.remove(transaction));
                if let Some(tx) = waiter {
                    let _ = tx.send(event);
                }
            }
        }
    }

    fn transaction(&self) -> String {
        format!("t{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    pub async fn attach(&self) -> anyhow::Result<Handle> {
        let reply: Value = self
            .http
            .post(&self.session_url)
            .json(&json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": self.transaction()}))
            .send()
            .await?
            .json()
            .await?;
        reply["data"]["id"]
            .as_u64()
            .map(Handle)
            .with_context(|| format!("attach failed: {reply}"))
    }

    /// Close a handle and its PeerConnection (a participant left).
    pub async fn detach(&self, handle: Handle) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/{}", self.session_url, handle.0))
            .json(&json!({"janus": "detach", "transaction": self.transaction()}))
            .send()
            .await?;
        Ok(())
    }

    /// A request VideoRoom answers at once (`create`, `configure` ...).
    pub async fn request(&self, handle: Handle, body: Value) -> anyhow::Result<Value> {
        let reply: Value = self
            .http
            .post(format!("{}/{}", self.session_url, handle.0))
            .json(&json!({"janus": "message", "body": body, "transaction": self.transaction()}))
            .send()
            .await?
            .json()
            .await?;
        let data = &reply["plugindata"]["data"];
        if data.get("error").is_some() || reply["janus"] == "error" {
            bail!("Janus refused {body}: {reply}");
        }
        Ok(data.clone())
    }

    /// An asynchronous request (`join`, `publish`, `start`): acked at once,
    /// answered later on the event stream. Returns the event (with its `jsep`).
    pub async fn message(
        &self,
        handle: Handle,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<Value> {
        let transaction = self.transaction();
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(transaction.clone(), tx);
        let mut request = json!({"janus": "message", "body": body, "transaction": transaction});
        if let Some(jsep) = jsep {
            request["jsep"] = jsep;
        }
        let reply: Value = self
            .http
            .post(format!("{}/{}", self.session_url, handle.0))
            .json(&request)
            .send()
            .await?
            .json()
            .await?;
        if reply["janus"] == "error" {
            bail!("Janus refused {body}: {reply}");
        }
        let event = tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .context("no answer from Janus within 20 s")?
            .context("Janus event stream ended")?;
        let data = &event["plugindata"]["data"];
        if data.get("error").is_some() {
            bail!("Janus refused {body}: {event}");
        }
        Ok(event)
    }
}

/// The SDP from an event's `jsep`.
pub fn jsep_sdp(event: &Value) -> anyhow::Result<String> {
    event["jsep"]["sdp"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no SDP in {event}"))
}
