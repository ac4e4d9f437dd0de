//! The SFU under test: started as its own process (so its CPU and memory can
//! be read from `/proc`), driven through its control API, stopped by PID.

use anyhow::{Context, bail};
use proto::sfu::{CreateSession, SessionCreated, SetSubscription, SfuEvent, SubscriberAnswer};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running SFU process. Killed (by its PID, nothing else) on drop.
pub struct SfuProcess {
    child: Child,
    pub http: SocketAddr,
    pub token: String,
    clock_ticks: f64,
}

impl SfuProcess {
    /// Start `binary` (the `meetease-sfu` executable) on loopback, every port free.
    pub fn spawn(binary: &Path) -> anyhow::Result<SfuProcess> {
        use rand::Rng;
        use rand::distr::Alphanumeric;
        let token: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let mut child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", "0", "--udp-port", "0"])
            .env("SFU_CONTROL_TOKEN", &token)
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("AMQP_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut http = None;
        wait_for_start(&mut child, "the SFU", Duration::from_secs(30), |line| {
            if let Some(addr) = line.strip_prefix("sfu listening on http://") {
                http = Some(addr.trim().parse()?);
            }
            Ok(http.is_some())
        })?;
        let http = http.context("the SFU did not say where it listens")?;
        let clock_ticks = ProcWatch::new(0).clock_ticks;
        Ok(SfuProcess {
            child,
            http,
            token,
            clock_ticks,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn watch(&self) -> ProcWatch {
        ProcWatch {
            pid: self.pid(),
            clock_ticks: self.clock_ticks,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

impl Drop for SfuProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Read a starting child's stdout, line by line, until `ready` says it is
/// up — for at most `limit`, whatever the child does (a silent child is
/// killed, not waited on forever). Its stdout is drained for the rest of its
/// life, so it never blocks on a full pipe.
pub fn wait_for_start(
    child: &mut Child,
    what: &str,
    limit: Duration,
    mut ready: impl FnMut(&str) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Once the caller stops listening, keep draining regardless.
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + limit;
    let outcome = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => match ready(&line) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(err) => break Err(err),
            },
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                break Err(anyhow::anyhow!("{what} did not start within {limit:?}"));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!("{what} exited before it was ready"));
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

/// CPU time and memory of the server under test, read from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct ProcWatch {
    pub pid: u32,
    clock_ticks: f64,
}

impl ProcWatch {
    pub fn new(pid: u32) -> ProcWatch {
        let clock_ticks = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0);
        ProcWatch { pid, clock_ticks }
    }

    /// CPU seconds used so far by the whole process and by its threads named
    /// `sfu-worker` (MeetEase's media threads; none in other servers).
    pub fn cpu_seconds(&self) -> (f64, f64) {
        let pid = self.pid;
        let process =
            read_stat_ticks(&format!("/proc/{pid}/stat")).unwrap_or(0) as f64 / self.clock_ticks;
        let mut worker = 0.0;
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let path = task.path();
                let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                if comm.trim() == "sfu-worker" {
                    worker += read_stat_ticks(&path.join("stat").to_string_lossy()).unwrap_or(0)
                        as f64
                        / self.clock_ticks;
                }
            }
        }
        (process, worker)
    }

    /// Resident memory in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

/// utime + stime (clock ticks) from a `/proc/.../stat` line.
fn read_stat_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ... utime is field 14, stime 15 overall → 11, 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A control-API client for one SFU.
#[derive(Clone)]
pub struct ControlClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ControlClient {
    pub fn new(base: String, token: String) -> Self {
        Self {
            http: reqwest::Client::new(),
            base,
            token,
        }
    }

    /// POST `body` to `path` with the service credential; a refusal is an
    /// error that names `what` and carries the SFU's answer.
    async fn post(
        &self,
        what: &str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<reqwest::Response> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "{what}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(response)
    }

    pub async fn create_session(&self, request: &CreateSession) -> anyhow::Result<SessionCreated> {
        let response = self.post("create session", "/v1/sessions", request).await?;
        Ok(response.json().await?)
    }

    pub async fn subscriber_answer(
        &self,
        participant: proto::ids::ParticipantId,
        sdp: String,
    ) -> anyhow::Result<()> {
        let path = format!("/v1/sessions/{participant}/subscriber/answer");
        self.post("subscriber answer", &path, &SubscriberAnswer { sdp })
            .await?;
        Ok(())
    }

    /// What `participant` wants of one remote track (its tile size, say).
    pub async fn set_subscription(
        &self,
        participant: proto::ids::ParticipantId,
        request: &SetSubscription,
    ) -> anyhow::Result<()> {
        let path = format!("/v1/sessions/{participant}/subscription");
        self.post("subscription", &path, request).await?;
        Ok(())
    }

    /// End a participant's session (they left).
    pub async fn remove_session(
        &self,
        participant: proto::ids::ParticipantId,
    ) -> anyhow::Result<()> {
        self.http
            .delete(format!("{}/v1/sessions/{participant}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// The SFU's Prometheus counter `name`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.metrics_text().await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// A histogram's cumulative buckets from `/metrics`: (upper bound, count),
    /// lowest first, the last one `+Inf`.
    pub async fn histogram(&self, name: &str) -> anyhow::Result<Vec<(f64, f64)>> {
        let text = self.metrics_text().await?;
        let prefix = format!("{name}_bucket{{");
        let mut buckets: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(&prefix)?;
                let le = rest.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                let count = line.rsplit(' ').next()?.parse().ok()?;
                Some((le, count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(buckets)
    }

    /// The SFU's `/metrics` page (Prometheus text).
    async fn metrics_text(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?)
    }

    /// Follow the SFU's event stream, calling `on_event` for each event.
    pub async fn follow_events(&self, mut on_event: impl FnMut(SfuEvent)) -> anyhow::Result<()> {
        let mut response = self
            .http
            .get(format!("{}/v1/events", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let mut buffer = String::new();
        while let Some(chunk) = response.chunk().await? {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let message: String = buffer.drain(..end + 2).collect();
                for line in message.lines() {
                    if let Some(data) = line.strip_prefix("data:")
                        && let Ok(event) = serde_json::from_str::<SfuEvent>(data.trim())
                    {
                        on_event(event);
                    }
                }
            }
        }
        Ok(())
    }
}
