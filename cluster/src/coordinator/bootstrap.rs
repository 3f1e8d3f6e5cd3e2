//! Start-up against the peers.
//!
//! - Every node must be given the same `--peers`: a node that finds a peer configured
//!   otherwise (or its own stored membership naming other addresses) refuses to run.
//! - Any pristine node can bootstrap the cluster, but only a cluster that does not exist yet. A
//!   node whose data dir is empty asks its peers first (waiting until one answers: alone it
//!   could not elect anyone anyway). If one already holds entries a leader committed (log
//!   index ≥ 1), this node's state was lost (a wiped data dir) or it joins late: it does not
//!   initialize and refuses to vote until it holds the log of a leader. Granting votes with an
//!   empty log could elect a node that lacks committed entries.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use super::{ConfigError, Coordinator, CoordinatorConfig};
use crate::raft::NodeId;

/// Path of the route peers compare their start-up facts on.
pub const PATH_PEERS: &str = "/raft/peers";

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const PROBE_PAUSE: Duration = Duration::from_millis(200);
const CATCH_UP_POLL: Duration = Duration::from_millis(50);

/// Body of `GET /raft/peers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerFacts {
    pub node_id: NodeId,
    pub peers: BTreeMap<NodeId, String>,
    pub last_log_index: Option<u64>,
}

/// A restarted node: its stored membership must name the nodes `--peers` names.
pub fn check_stored_membership(
    config: &CoordinatorConfig,
    membership: &openraft::Membership<NodeId, BasicNode>,
) -> Result<(), ConfigError> {
    let stored: BTreeMap<NodeId, String> = membership
        .nodes()
        .map(|(id, node)| (*id, node.addr.clone()))
        .collect();
    if stored.is_empty() || stored == config.peers {
        return Ok(());
    }
    Err(ConfigError::PeersMismatch(format!(
        "this node's stored membership is {}, but --peers is {}",
        show(&stored),
        show(&config.peers)
    )))
}

fn show(peers: &BTreeMap<NodeId, String>) -> String {
    peers
        .iter()
        .map(|(id, url)| format!("{id}={url}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Coordinator {
    pub fn peer_facts(&self) -> PeerFacts {
        PeerFacts {
            node_id: self.node_id,
            peers: self.peers.clone(),
            last_log_index: self.raft.metrics().borrow().last_log_index,
        }
    }

    /// A pristine node: bootstrap a new cluster, or rejoin an existing one without voting
    /// until it caught up. Err: a peer was configured with other `--peers`.
    pub async fn bootstrap(self: Arc<Self>) -> anyhow::Result<()> {
        let formed = self.probe_peers().await?;
        if formed {
            tracing::warn!(
                "empty data dir, but the cluster already exists: not initializing; no votes until this node holds the leader's log"
            );
            self.rejoining.store(true, Ordering::SeqCst);
            self.catch_up().await;
            self.rejoining.store(false, Ordering::SeqCst);
            tracing::info!("caught up with the leader's log: voting again");
            return Ok(());
        }
        let members: BTreeMap<NodeId, BasicNode> = self
            .peers
            .iter()
            .map(|(id, url)| (*id, BasicNode::new(url)))
            .collect();
        // openraft documents that several nodes initializing with the same config is safe.
        match self.raft.initialize(members).await {
            Ok(()) => tracing::info!("initialized the cluster membership"),
            Err(e) => tracing::info!("not initialized here: {e}"),
        }
        Ok(())
    }

    /// True when a peer already holds a leader's entries; waits until at least one answers.
    async fn probe_peers(&self) -> anyhow::Result<bool> {
        let others: Vec<(NodeId, String)> = self
            .peers
            .iter()
            .filter(|(id, _)| **id != self.node_id)
            .map(|(id, url)| (*id, url.clone()))
            .collect();
        if others.is_empty() {
            return Ok(false);
        }
        loop {
            let mut answered = false;
            let mut formed = false;
            for (id, url) in &others {
                let Some(facts) = self.peer_facts_of(url).await else {
                    continue;
                };
                answered = true;
                if facts.peers != self.peers {
                    return Err(ConfigError::PeersMismatch(format!(
                        "node {id} runs with --peers {}, this node with {}",
                        show(&facts.peers),
                        show(&self.peers)
                    ))
                    .into());
                }
                formed |= facts.last_log_index.is_some_and(|i| i >= 1);
            }
            if answered {
                return Ok(formed);
            }
            tokio::time::sleep(PROBE_PAUSE).await;
        }
    }

    async fn peer_facts_of(&self, url: &str) -> Option<PeerFacts> {
        let mut request = self
            .http
            .get(format!("{url}{PATH_PEERS}"))
            .timeout(PROBE_TIMEOUT);
        if let Some(key) = self.keys.peer_key() {
            request = request.header(crate::auth::API_KEY_HEADER, key);
        }
        let response = request.send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Wait until a leader (another node) is known and this node's log reaches the leader's
    /// last log index as first seen from here.
    async fn catch_up(&self) {
        let mut target: Option<u64> = None;
        loop {
            let m = self.raft.metrics().borrow().clone();
            if let Some(t) = target {
                if m.last_log_index.is_some_and(|i| i >= t) {
                    return;
                }
            } else if let Some(leader) = m.current_leader.filter(|l| *l != self.node_id) {
                if let Some(url) = self.peers.get(&leader) {
                    target = self.peer_facts_of(url).await.and_then(|f| f.last_log_index);
                }
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
    }
}
