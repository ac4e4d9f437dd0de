//! Test harness: start the real `meetease` launcher on ephemeral ports and talk to it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The backing services the test command guarantees (it starts them if needed).
pub fn postgres_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub const SERVICES: [&str; 7] = [
    "gateway",
    "auth",
    "users",
    "signaling",
    "notify",
    "analytics",
    "sfu",
];

/// A running launcher. Killed on drop.
pub struct Platform {
    pub child: Child,
    pub addrs: HashMap<String, SocketAddr>,
    pub banner: String,
    _data: TempDir,
}

/// A fresh folder under the target dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("meetease-test-{tag}-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// The launcher command with every TCP port ephemeral and a private data folder.
/// Flags in `overridden` are left for the caller to set.
pub fn launcher(data: &TempDir, overridden: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meetease"));
    for service in SERVICES {
        let flag = format!("--{service}-port");
        if !overridden.contains(&flag.as_str()) {
            cmd.arg(flag).arg("0");
        }
    }
    cmd.arg("--sfu-udp-port").arg("0");
    cmd.arg("--data-dir").arg(&data.0);
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "AMQP_URL",
        "GATEWAY_PORT",
        "MEETEASE_DATA_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

impl Platform {
    /// Start the launcher with `extra_env` and wait for its banner.
    pub fn start(extra_env: &[(&str, String)]) -> Platform {
        let data = TempDir::new("platform");
        let mut cmd = launcher(&data, &[]);
        for (key, value) in extra_env {
            cmd.env(key, value);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the meetease binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addrs = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let banner = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some((name, rest)) = line.split_once(" listening on http://") {
                        addrs.insert(name.to_owned(), rest.parse().unwrap());
                    } else if line.starts_with("MeetEase is running at ") {
                        break line;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let mut err = String::new();
                    let _ = stderr.read_to_string(&mut err);
                    panic!("launcher did not start; stderr:\n{err}");
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = stderr.read_to_string(&mut sink);
        });
        Platform {
            child,
            addrs,
            banner,
            _data: data,
        }
    }

    pub fn url(&self, service: &str, path: &str) -> String {
        format!("http://{}{path}", self.addrs[service])
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "launcher did not stop within 20 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the launcher expecting it to fail; returns (exit code, stderr).
pub fn start_expecting_failure(args: &[&str], extra_env: &[(&str, &str)]) -> (Option<i32>, String) {
    let data = TempDir::new("fail");
    let mut cmd = launcher(&data, args);
    cmd.args(args);
    for (key, value) in extra_env {
        cmd.env(key, value);
    }
    let output = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}
