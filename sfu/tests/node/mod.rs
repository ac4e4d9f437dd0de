//! The real SFU node for integration tests: UDP (and TCP) media workers and
//! the HTTP control API on 127.0.0.1, every port free. Shared by the driver,
//! ICE-over-TCP and webrtc-rs interop tests.

#![allow(dead_code)]

use servicekit::Secret;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The control API's service credential in these tests.
pub const TOKEN: &str = "test-control-token-0123456789";

pub struct Node {
    pub http: SocketAddr,
    /// The first worker's media port, UDP and TCP.
    pub media: SocketAddr,
    /// Every worker's media address (the first is `media`).
    pub all_media: Vec<SocketAddr>,
    pub handles: Vec<sfu::driver::WorkerHandle>,
    pub shutdown: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_node() -> Node {
    spawn_node_with(1).await
}

pub async fn spawn_node_with(workers: usize) -> Node {
    let shutdown = CancellationToken::new();
    let config = sfu::Config {
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        public_ip: "127.0.0.1".parse().unwrap(),
        control_token: Secret::new(TOKEN.to_owned()),
        disconnect_grace: Duration::from_secs(5),
        ice_tcp: true,
        socket_buffer: sfu::Config::DEFAULT_SOCKET_BUFFER,
        gso: true,
    };
    let (router, handles) = sfu::build_with_workers(config, workers, shutdown.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(servicekit::http::serve(listener, router, shutdown.clone()));
    Node {
        http,
        media: handles[0].local_addr,
        all_media: handles.iter().map(|w| w.local_addr).collect(),
        handles,
        shutdown,
    }
}
