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
    /// `"keys"` (every protected route checks its role's key) or `"insecure"` (started with
    /// `--insecure`: every route open). Absent from clusters that do not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<String>,
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

/// `GET /api/v1/cluster/coordinators`: every voter of `--peers` as the answering coordinator
/// reaches it (its own Raft metrics, and each peer's `/raft/metrics` asked with a short
/// timeout). The `/cluster` page's Raft table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorList {
    pub answered_by: u64,
    pub coordinators: Vec<CoordinatorStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorStatus {
    pub id: u64,
    pub url: String,
    /// The peer's Raft metrics; None when it did not answer in time.
    pub raft: Option<RaftMetrics>,
    /// Why it did not answer.
    pub error: Option<String>,
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
    /// A worker's committed status changed (registration, failure detection, drain, return).
    /// `at_ms` (in every state event) is when the proposer decided it, so a node replaying or
    /// catching up on old entries records old decisions as old.
    WorkerStatusChanged {
        worker_id: String,
        status: WorkerStatus,
        reason: String,
        at_ms: u64,
    },
    /// A worker's WebSocket link was committed as held by `coordinator`.
    WorkerLinked {
        worker_id: String,
        coordinator: u64,
        at_ms: u64,
    },
    /// A pipeline's placement moved (committed, epoch + 1).
    MigrationStarted {
        migration_id: u64,
        group: String,
        pipeline: String,
        from_worker: Option<String>,
        to_worker: String,
        epoch: u64,
        at_ms: u64,
    },
    /// The target reported the moved pipeline running.
    MigrationFinished {
        migration_id: u64,
        group: String,
        pipeline: String,
        worker_id: String,
        epoch: u64,
        at_ms: u64,
    },
    /// A worker reported a placed pipeline running (committed).
    PipelineRunning {
        group: String,
        pipeline: String,
        worker_id: String,
        epoch: u64,
        at_ms: u64,
    },
}

impl ClusterEventKind {
    /// When the change was decided (the proposer's clock), for state events.
    pub fn decided_ms(&self) -> Option<u64> {
        match self {
            ClusterEventKind::WorkerStatusChanged { at_ms, .. }
            | ClusterEventKind::WorkerLinked { at_ms, .. }
            | ClusterEventKind::MigrationStarted { at_ms, .. }
            | ClusterEventKind::MigrationFinished { at_ms, .. }
            | ClusterEventKind::PipelineRunning { at_ms, .. } => Some(*at_ms),
            _ => None,
        }
    }
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

/// What a redacted secret reads as in every response.
pub const REDACTED: &str = "***";

impl Connector {
    /// This connector as answers show it: the value of every parameter whose name looks like a
    /// secret (contains `password`, `secret`, `token` or `key`, any case; nested objects
    /// included) replaced by [`REDACTED`].
    pub fn redacted(&self) -> Connector {
        Connector {
            params: self
                .params
                .iter()
                .map(|(k, v)| (k.clone(), redact(k, v)))
                .collect(),
            ..self.clone()
        }
    }
}

fn redact(name: &str, value: &serde_json::Value) -> serde_json::Value {
    let lower = name.to_ascii_lowercase();
    if ["password", "secret", "token", "key", "credential"]
        .iter()
        .any(|s| lower.contains(s))
    {
        return serde_json::Value::String(REDACTED.into());
    }
    match value {
        serde_json::Value::Object(map) => {
            serde_json::Value::Object(map.iter().map(|(k, v)| (k.clone(), redact(k, v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(|v| redact("", v)).collect())
        }
        other => other.clone(),
    }
}

/// `GET /api/v1/cluster/connectors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorList {
    pub connectors: Vec<Connector>,
    pub total: u64,
}

/// A worker's status in the replicated registry (lowercase on the wire, as in Varpulis v0.3.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    Ready,
    Unhealthy,
    Draining,
}

impl std::fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkerStatus::Ready => "ready",
            WorkerStatus::Unhealthy => "unhealthy",
            WorkerStatus::Draining => "draining",
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    #[serde(default)]
    pub cpu_cores: u32,
    #[serde(default)]
    pub pipelines_running: u32,
    #[serde(default = "default_max_pipelines")]
    pub max_pipelines: u32,
}

fn default_max_pipelines() -> u32 {
    100
}

/// `POST /api/v1/cluster/workers/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterWorker {
    pub worker_id: String,
    pub address: String,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub capacity: Capacity,
}

/// One worker in `GET /api/v1/cluster/workers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    pub address: String,
    pub status: WorkerStatus,
    pub pipelines_running: u64,
    pub max_pipelines: u32,
    pub assigned_pipelines: Vec<String>,
    pub events_processed: u64,
    /// Coordinator holding this worker's WebSocket link, if any (replicated).
    pub link_coordinator: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
    pub total: u64,
}

/// A running pipeline's counters as a worker reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineMetric {
    pub pipeline_id: String,
    pub epoch: u64,
    pub processed: u64,
    pub emitted: u64,
    pub rejected: u64,
}

/// `POST /api/v1/cluster/workers/{id}/heartbeat` (REST fallback) and the WS `Heartbeat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatBody {
    #[serde(default)]
    pub events_processed: u64,
    #[serde(default)]
    pub pipelines_running: u64,
    #[serde(default)]
    pub pipeline_metrics: Vec<PipelineMetric>,
}

/// What the committed placement asks one worker to run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Assignment {
    pub group: String,
    pub pipeline: String,
    /// `group/pipeline`: stable across moves.
    pub pipeline_id: String,
    pub source: String,
    /// Placement epoch: a worker runs a pipeline only while the placement names it with this epoch.
    pub epoch: u64,
}

/// WebSocket frames between a worker and a coordinator (JSON text, tagged by `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WsMessage {
    Identify {
        worker_id: String,
        #[serde(default)]
        api_key: Option<String>,
    },
    IdentifyAck {
        heartbeat_interval_secs: u64,
        coordinator_id: u64,
        /// Finer than `heartbeat_interval_secs` (which Varpulis v0.3.0 sends); preferred when present.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heartbeat_interval_ms: Option<u64>,
        /// The lease each granting `HeartbeatAck` renews, counted from the heartbeat's sending.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_ms: Option<u64>,
        /// Leave the link when no heartbeat was acknowledged with a lease for this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link_deadline_ms: Option<u64>,
    },
    Error {
        message: String,
    },
    Heartbeat(HeartbeatBody),
    /// `lease_ms` is set when the coordinator is in touch with a quorum: the lease is renewed.
    HeartbeatAck {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_ms: Option<u64>,
    },
    /// The full set of pipelines this worker must run now (sent on identify and on every change).
    Assignments {
        assignments: Vec<Assignment>,
    },
}

/// One pipeline of a `POST /api/v1/cluster/pipeline-groups` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineDef {
    pub name: String,
    pub source: String,
    #[serde(default)]
    pub worker_affinity: Option<String>,
    #[serde(default = "one")]
    pub replicas: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDef {
    pub name: String,
    pub pipelines: Vec<PipelineDef>,
    #[serde(default)]
    pub routes: Vec<serde_json::Value>,
}

/// Where a pipeline runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementInfo {
    pub pipeline_name: String,
    pub worker_id: Option<String>,
    pub worker_address: Option<String>,
    pub pipeline_id: String,
    pub epoch: u64,
    /// pending (no ready worker) | deploying | running
    pub status: String,
}

/// A deployed group: the `POST` answer and `GET pipeline-groups/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub id: String,
    pub name: String,
    pub placements: Vec<PlacementInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupList {
    pub groups: Vec<GroupInfo>,
    pub total: u64,
}

/// `GET /api/v1/cluster/topology`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub groups: Vec<TopologyGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyGroup {
    pub group_id: String,
    pub group_name: String,
    pub pipelines: Vec<TopologyPipeline>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyPipeline {
    pub name: String,
    pub worker_id: Option<String>,
    pub worker_address: Option<String>,
    pub epoch: u64,
    pub status: String,
}

/// One migration in `GET /api/v1/cluster/migrations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub id: u64,
    pub group: String,
    pub pipeline: String,
    pub from_worker: Option<String>,
    pub to_worker: String,
    pub epoch: u64,
    pub reason: String,
    /// Proposer's wall clock when the move was decided (ms since epoch).
    pub started_ms: u64,
    /// Wall clock when the target reported the pipeline running.
    pub finished_ms: Option<u64>,
    /// in_progress | completed
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationList {
    pub migrations: Vec<Migration>,
    pub total: u64,
}

/// `POST /api/v1/cluster/pipelines/{group}/{pipeline}/migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    pub target_worker_id: String,
}

/// Ids of workers, groups and pipelines: 1–64 of `[A-Za-z0-9_.-]` (they appear in paths and
/// MQTT client ids).
pub fn is_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
