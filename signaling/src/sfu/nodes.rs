//! Which SFU node a new room goes to.
//!
//! Nodes are known from configuration (`--sfu-url`) and, with Redis, from the node
//! registry (see [`crate::room::redis_store::nodes_key`]), where any replica's probe —
//! or a node itself — records a heartbeat and the load. Every replica probes every
//! known node's `GET /v1/load` every few seconds; a node that stops answering drops
//! out of the live set after `NODE_TTL_MS` and gets no new rooms. A room stays on the
//! node it was placed on.

use crate::clock;
use crate::room::{NodeStatus, RoomStore};
use crate::sfu::SfuClient;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often each known node's load is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(3);

/// The least-loaded live node: lowest `load`, then fewest participants, then URL.
pub fn least_loaded(nodes: &[NodeStatus]) -> Option<&NodeStatus> {
    nodes.iter().min_by(|a, b| {
        a.load
            .total_cmp(&b.load)
            .then(a.participants.cmp(&b.participants))
            .then(a.url.cmp(&b.url))
    })
}

/// Probe one node and record it; `false` when it did not answer.
pub async fn probe(sfu: &dyn SfuClient, store: &dyn RoomStore, url: &str) -> bool {
    match sfu.load(url).await {
        Ok(load) => {
            let status = NodeStatus {
                url: url.to_owned(),
                load: if load.load.is_finite() {
                    load.load.max(0.0)
                } else {
                    f64::MAX
                },
                rooms: load.rooms,
                participants: load.participants,
                seen_ms: clock::now_ms(),
            };
            if let Err(err) = store.put_node(status).await {
                tracing::warn!(%err, "cannot record an sfu node");
            }
            true
        }
        Err(err) => {
            tracing::debug!(node = url, %err, "sfu node did not answer its load probe");
            false
        }
    }
}

/// Probe the configured nodes and those in the registry until `shutdown`.
pub async fn run_prober(
    configured: Vec<String>,
    sfu: Arc<dyn SfuClient>,
    store: Arc<dyn RoomStore>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut urls = configured.clone();
        // Registry entries recently alive (a node may have registered itself).
        if let Ok(live) = store.live_nodes(clock::now_ms()).await {
            for node in live {
                if !urls.contains(&node.url) {
                    urls.push(node.url);
                }
            }
        }
        let probes = urls
            .iter()
            .map(|url| probe(sfu.as_ref(), store.as_ref(), url));
        futures_util::future::join_all(probes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(url: &str, load: f64, participants: u32) -> NodeStatus {
        NodeStatus {
            url: url.into(),
            load,
            rooms: 0,
            participants,
            seen_ms: 0,
        }
    }

    #[test]
    fn the_least_loaded_node_wins_ties_by_participants_then_url() {
        let nodes = [node("b", 0.5, 1), node("a", 0.2, 9), node("c", 0.2, 3)];
        assert_eq!(least_loaded(&nodes).unwrap().url, "c");
        let tied = [node("b", 0.0, 0), node("a", 0.0, 0)];
        assert_eq!(least_loaded(&tied).unwrap().url, "a");
        assert!(least_loaded(&[]).is_none());
    }
}
