//! Raft RPCs over HTTP: each RPC is a JSON POST to `<peer>/raft/<rpc>` whose body is the
//! handler's `Result`, so transport failures (`RPCError::Unreachable`/`Network`) stay apart from
//! the remote node's own answer (`RPCError::RemoteError`).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{de::DeserializeOwned, Serialize};

use super::{Node, NodeId, TypeConfig};
use crate::auth::API_KEY_HEADER;
use crate::metrics::CoordinatorMetrics;

/// Paths of the Raft RPC routes, shared by client and server.
pub const PATH_APPEND: &str = "/raft/append";
pub const PATH_VOTE: &str = "/raft/vote";
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";

/// Connect timeout for peer RPCs: a dead peer on a LAN or loopback refuses or answers in far
/// less; anything slower is treated as unreachable so it never holds up an election.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Builds one HTTP client per peer; all share a connection pool.
#[derive(Debug, Clone)]
pub struct HttpNetwork {
    client: reqwest::Client,
    api_key: Option<String>,
    metrics: Arc<CoordinatorMetrics>,
}

impl HttpNetwork {
    pub fn new(api_key: Option<String>, metrics: Arc<CoordinatorMetrics>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(crate::http::CLIENT_POOL_IDLE)
            .build()?;
        Ok(HttpNetwork {
            client,
            api_key,
            metrics,
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerClient {
            client: self.client.clone(),
            api_key: self.api_key.clone(),
            target,
            base_url: node.addr.trim_end_matches('/').to_string(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The connection to one peer.
#[derive(Debug)]
pub struct PeerClient {
    client: reqwest::Client,
    api_key: Option<String>,
    target: NodeId,
    base_url: String,
    metrics: Arc<CoordinatorMetrics>,
}

impl PeerClient {
    /// One RPC; a failure is counted by peer, RPC and kind.
    async fn post<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result = self.call(path, req, option).await;
        if let Err(e) = &result {
            let kind = match e {
                RPCError::Unreachable(_) => "unreachable",
                RPCError::RemoteError(_) => "remote",
                _ => "network",
            };
            self.metrics.rpc_failed(self.target, rpc_label(path), kind);
        }
        result
    }

    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut request = self
            .client
            .post(format!("{}{}", self.base_url, path))
            // openraft's hard deadline for this RPC: never wait longer than the engine will.
            .timeout(option.hard_ttl())
            .json(req);
        if let Some(key) = &self.api_key {
            request = request.header(API_KEY_HEADER, key);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let err = std::io::Error::other(format!("{path} answered {status}: {body}"));
            return Err(RPCError::Network(NetworkError::new(&err)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> = response
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.post(PATH_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.post(PATH_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.post(PATH_VOTE, &rpc, &option).await
    }
}

/// The RPC's label (a bounded set).
fn rpc_label(path: &str) -> &'static str {
    match path {
        PATH_APPEND => "append",
        PATH_VOTE => "vote",
        PATH_SNAPSHOT => "snapshot",
        _ => "other",
    }
}
