//! Raft for the coordinators: openraft type config, the replicated command set, the durable store
//! (redb) and the HTTP transport.

pub mod network;
pub mod state;
pub mod store;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::api::model::{Capacity, Connector, GroupDef, WorkerStatus};

pub type NodeId = u64;
pub type Node = openraft::BasicNode;
pub type Raft = openraft::Raft<TypeConfig>;

openraft::declare_raft_types!(
    /// The coordinators' Raft: commands in, [`CommandResult`] out, nodes addressed by base URL.
    pub TypeConfig:
        D = Proposal,
        R = CommandResult,
        NodeId = NodeId,
        Node = Node,
        SnapshotData = Cursor<Vec<u8>>,
);

/// Every state change that matters is one of these, committed through Raft before it is acted on.
///
/// Applied by [`state::ClusterState::apply`], deterministically, on every coordinator: commands
/// carry the proposer's wall clock (`at_ms`) so applying never reads a clock. Conditional
/// commands (`expected_epoch`, `link_gen`) make a decision taken on stale information a no-op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Create or replace a connector by name.
    PutConnector {
        connector: Connector,
    },
    /// A worker registered (or re-registered): it is ready.
    RegisterWorker {
        worker_id: String,
        address: String,
        capacity: Capacity,
        at_ms: u64,
    },
    /// A worker's WebSocket link is now held by `coordinator` (bumps the link generation).
    WorkerLinked {
        worker_id: String,
        coordinator: NodeId,
        at_ms: u64,
    },
    /// Failure detection: unhealthy, unless the link moved since (`link_gen` no longer current).
    MarkWorkerUnhealthy {
        worker_id: String,
        /// The link generation the detector saw die; None: the detector had no link (REST).
        link_gen: Option<u64>,
        reason: String,
        at_ms: u64,
    },
    /// Operator: drain (placements move away) or back to ready.
    SetWorkerStatus {
        worker_id: String,
        status: WorkerStatus,
        at_ms: u64,
    },
    RemoveWorker {
        worker_id: String,
    },
    /// Deploy a group, idempotent by name; placement is decided here, deterministically.
    DeployGroup {
        group: GroupDef,
        at_ms: u64,
    },
    RemoveGroup {
        name: String,
    },
    /// Move (or first place) a pipeline, if its placement epoch is still `expected_epoch`.
    MovePipeline {
        group: String,
        pipeline: String,
        to_worker: String,
        expected_epoch: u64,
        reason: String,
        at_ms: u64,
    },
    /// Several moves decided in one pass of the placement driver, in one log entry: applied in
    /// order, each exactly as a [`Command::MovePipeline`] of its own (conditional on its epoch;
    /// a move to a worker that filled up with the earlier moves of the batch is a no-op).
    /// `changed` when any moved.
    MovePipelines {
        moves: Vec<Move>,
        at_ms: u64,
    },
    /// A worker reported a placed pipeline running at this epoch.
    PipelineRunning {
        group: String,
        pipeline: String,
        worker_id: String,
        epoch: u64,
        at_ms: u64,
    },
}

impl Command {
    /// Short name for logs and the event log.
    pub fn name(&self) -> &'static str {
        match self {
            Command::PutConnector { .. } => "put_connector",
            Command::RegisterWorker { .. } => "register_worker",
            Command::WorkerLinked { .. } => "worker_linked",
            Command::MarkWorkerUnhealthy { .. } => "mark_worker_unhealthy",
            Command::SetWorkerStatus { .. } => "set_worker_status",
            Command::RemoveWorker { .. } => "remove_worker",
            Command::DeployGroup { .. } => "deploy_group",
            Command::RemoveGroup { .. } => "remove_group",
            Command::MovePipeline { .. } => "move_pipeline",
            Command::MovePipelines { .. } => "move_pipelines",
            Command::PipelineRunning { .. } => "pipeline_running",
        }
    }
}

/// One move of a [`Command::MovePipelines`] batch (the fields of a [`Command::MovePipeline`]
/// but the proposer's clock, which the batch carries once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Move {
    pub group: String,
    pub pipeline: String,
    pub to_worker: String,
    pub expected_epoch: u64,
    pub reason: String,
}

/// One Raft log entry's payload: a command and the term its proposer decided it in.
///
/// A proposal applied under a newer term than its own is a no-op ([`CommandResult::stale`]):
/// a decision a leader took before it lost its quorum (or a write a follower forwarded across an
/// election) never lands after the cluster moved on. Client writes are re-proposed with the
/// current term; decisions (verdicts, moves) are not: they must be taken again on fresh state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub term: u64,
    pub command: Command,
}

/// What applying a [`Command`] produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Log index at which the command was applied.
    pub index: u64,
    /// `true` when the command changed the state (`false` for an idempotent repeat or a stale
    /// conditional command).
    pub changed: bool,
    /// `WorkerLinked`: the link generation this command created.
    #[serde(default)]
    pub link_gen: Option<u64>,
    /// Proposed under an older term than the one it was committed in: not applied.
    #[serde(default)]
    pub stale: bool,
}

/// The error openraft's RPC handlers return, carried over HTTP as JSON.
pub type RaftRpcError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
