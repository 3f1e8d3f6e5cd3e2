//! Raft for the coordinators: openraft type config, the replicated command set, the durable store
//! (redb) and the HTTP transport.

pub mod network;
pub mod state;
pub mod store;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::api::model::Connector;

pub type NodeId = u64;
pub type Node = openraft::BasicNode;
pub type Raft = openraft::Raft<TypeConfig>;

openraft::declare_raft_types!(
    /// The coordinators' Raft: commands in, [`CommandResult`] out, nodes addressed by base URL.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = Node,
        SnapshotData = Cursor<Vec<u8>>,
);

/// Every state change that matters is one of these, committed through Raft before it is acted on.
///
/// The enum grows with the cluster (workers, groups, placements, migrations); each variant is
/// applied by [`state::ClusterState::apply`], deterministically, on every coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Create or replace a connector by name.
    PutConnector { connector: Connector },
}

impl Command {
    /// Short name for logs and the event log.
    pub fn name(&self) -> &'static str {
        match self {
            Command::PutConnector { .. } => "put_connector",
        }
    }
}

/// What applying a [`Command`] produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Log index at which the command was applied.
    pub index: u64,
    /// `true` when the command changed the state (`false` for an idempotent repeat).
    pub changed: bool,
}

/// The error openraft's RPC handlers return, carried over HTTP as JSON.
pub type RaftRpcError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
