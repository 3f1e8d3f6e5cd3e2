//! Wire types of the coordinator API (DESIGN.md §4), the only part of `cluster` the harness imports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every error body: `{"error": "...", "code": "snake_case_code"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    pub code: String,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// healthy | degraded | no_workers | critical
    pub status: String,
    pub role: String,
    pub version: String,
    pub node_id: u64,
    pub raft_state: RaftRole,
    pub current_term: u64,
    pub current_leader: Option<u64>,
    pub workers: WorkerCounts,
    pub ws_connections: u64,
    pub pipeline_groups: u64,
    pub active_migrations: u64,
    pub connectors: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounts {
    pub total: u64,
    pub healthy: u64,
    pub unhealthy: u64,
    pub draining: u64,
}

/// A node's Raft role, spelled as openraft's `ServerState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RaftRole {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl RaftRole {
    /// The `varpulis_cluster_raft_role` gauge value: 0 follower, 1 candidate, 2 leader.
    pub fn gauge(self) -> u8 {
        match self {
            RaftRole::Leader => 2,
            RaftRole::Candidate => 1,
            RaftRole::Follower | RaftRole::Learner | RaftRole::Shutdown => 0,
        }
    }
}

impl std::fmt::Display for RaftRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// `GET /raft/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaftMetrics {
    pub id: u64,
    pub state: RaftRole,
    pub current_term: u64,
    pub current_leader: Option<u64>,
    pub last_applied: Option<u64>,
    pub last_log_index: Option<u64>,
    /// The highest log index known committed by this node (persisted by the log store).
    pub commit_index: Option<u64>,
    /// Voter ids of the current membership config.
    pub membership: Vec<u64>,
}

/// One entry of a coordinator's timestamped event log (`GET /api/v1/cluster/events`).
///
/// The log is local to each coordinator: it records what *this* node observed and when, by its
/// wall clock, so the harness can time failures to the millisecond without polling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterEvent {
    /// Position in this node's log, from 1; `?since=seq` returns the events after it.
    pub seq: u64,
    /// Wall-clock time of the observation, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// The node that recorded the event.
    pub node_id: u64,
    #[serde(flatten)]
    pub kind: ClusterEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClusterEventKind {
    /// This node now sees `leader` (None: no known leader) in `term`.
    LeaderChanged { term: u64, leader: Option<u64> },
    /// This node's own Raft role changed.
    RoleChanged { term: u64, role: RaftRole },
    /// A replicated command was applied on this node.
    CommandApplied { index: u64, command: String },
}

/// `GET /api/v1/cluster/events?since=N`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsPage {
    pub node_id: u64,
    pub events: Vec<ClusterEvent>,
    /// Pass as `since` to get only newer events.
    pub last_seq: u64,
    /// True when older events were dropped from the bounded log after `since`.
    pub truncated: bool,
}

/// A connector definition: `POST /api/v1/cluster/connectors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connector {
    pub name: String,
    pub connector_type: String,
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// `GET /api/v1/cluster/connectors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorList {
    pub connectors: Vec<Connector>,
    pub total: u64,
}
