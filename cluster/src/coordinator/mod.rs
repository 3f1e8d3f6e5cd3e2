//! A coordinator: one openraft node plus the HTTP API (REST, Raft RPCs, event log).

pub mod bodies;
mod bootstrap;
mod config;
mod detector;
mod driver;
mod error;
mod groups;
mod quorum;
mod routes;
mod workers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use tokio::net::TcpListener;

pub use config::{parse_peers, ConfigError, CoordinatorConfig};
pub use detector::DetectorConfig;
pub use error::AppError;
pub use routes::{Route, ROUTES};

use crate::api::model::{ClusterEventKind, RaftRole};
use crate::auth::Keys;
use crate::events::EventLog;
use crate::raft::network::HttpNetwork;
use crate::raft::store::{CommitIndex, SharedState};
use crate::raft::{Command, CommandResult, NodeId, Proposal, Raft};

/// Path of the internal route a follower uses to hand a write to the leader.
pub const PATH_FORWARD: &str = "/raft/write";
/// Path of the internal route coordinators use to tell the leader which workers are alive.
pub const PATH_ALIVE: &str = "/raft/alive";

/// Pause between write attempts while the cluster has no reachable leader. Short, because an
/// election typically completes within one election timeout.
const FORWARD_RETRY_MS: u64 = 50;

/// Why a forwarded write did not come back with a result.
enum ForwardFailed {
    /// The leader answered with an error: final.
    Answer(AppError),
    /// Transport error or leader change: retry.
    Transport(String),
}

/// Shared state of one coordinator's handlers.
pub struct Coordinator {
    pub node_id: NodeId,
    pub raft: Raft,
    pub state: SharedState,
    pub commit_index: CommitIndex,
    pub events: Arc<EventLog>,
    pub metrics: Arc<crate::metrics::CoordinatorMetrics>,
    pub keys: Keys,
    pub detector: DetectorConfig,
    /// Every voter, from `--peers`.
    pub peers: std::collections::BTreeMap<NodeId, String>,
    /// A pristine node joining an existing cluster: it refuses votes until it caught up.
    pub rejoining: std::sync::atomic::AtomicBool,
    links: detector::Links,
    /// When this node last knew itself in touch with a quorum.
    pub quorum: Arc<quorum::QuorumContact>,
    pub(crate) http: reqwest::Client,
    /// How long a write may wait for a leader before answering 421 (twice the max election timeout).
    write_budget: Duration,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Run a coordinator on `listener` until `shutdown` resolves.
pub async fn run(
    config: CoordinatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    config.validate(local)?;
    let events = Arc::new(EventLog::new(config.node_id));
    let metrics = Arc::new(crate::metrics::CoordinatorMetrics::new());
    {
        let metrics = metrics.clone();
        events.set_observer(Box::new(move |event| metrics.observe(event)));
    }
    let (log_store, sm_store) = crate::raft::store::open(&config.data_dir, events.clone())
        .with_context(|| format!("open Raft store in {}", config.data_dir.display()))?;
    let commit_index = log_store.commit_index();
    let state = sm_store.shared();
    let raft_config = Arc::new(config.raft_config()?);
    let keys = config.keys.keys();
    let network = HttpNetwork::new(keys.peer_key().map(str::to_string), metrics.clone())?;
    let raft = Raft::new(config.node_id, raft_config, network, log_store, sm_store)
        .await
        .context("start Raft")?;

    let pristine = !raft.is_initialized().await?;
    if !pristine {
        let m = raft.metrics().borrow().clone();
        bootstrap::check_stored_membership(&config, m.membership_config.membership())?;
    }

    let coordinator = Arc::new(Coordinator {
        node_id: config.node_id,
        raft: raft.clone(),
        state,
        commit_index,
        events: events.clone(),
        metrics: metrics.clone(),
        keys,
        detector: config.detector,
        peers: config.peers.clone(),
        rejoining: std::sync::atomic::AtomicBool::new(false),
        links: detector::Links::default(),
        quorum: Arc::new(quorum::QuorumContact::new(config.contact_window())),
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(crate::http::CLIENT_POOL_IDLE)
            .build()?,
        write_budget: Duration::from_millis(2 * config.election_max_ms),
    });
    tokio::spawn(watch_raft(raft.clone(), events, metrics));
    tokio::spawn(coordinator.quorum.clone().watch_leader(raft.clone()));
    tokio::spawn(coordinator.clone().report_alive_loop());
    tokio::spawn(coordinator.clone().sweep_loop());
    tokio::spawn(coordinator.clone().placement_loop());

    // Bootstrap (or rejoin) in the background: the peers probe each other's HTTP API.
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    if pristine {
        let c = coordinator.clone();
        tokio::spawn(async move {
            if let Err(e) = c.bootstrap().await {
                let _ = failed_tx.send(e);
            }
        });
    }
    tracing::info!(node_id = config.node_id, %local, "coordinator listening");
    let serve = crate::http::serve(
        listener,
        routes::router(coordinator),
        shutdown,
        crate::http::HEADER_READ_TIMEOUT,
    );
    tokio::select! {
        served = serve => served?,
        Ok(e) = failed_rx => {
            raft.shutdown().await.ok();
            return Err(e);
        }
    }
    raft.shutdown().await.ok();
    Ok(())
}

/// Record role, term and leader changes in the event log as openraft reports them.
async fn watch_raft(
    raft: Raft,
    events: Arc<EventLog>,
    metrics: Arc<crate::metrics::CoordinatorMetrics>,
) {
    let mut rx = raft.metrics();
    let mut last: Option<(RaftRole, u64, Option<NodeId>)> = None;
    loop {
        let (role, term, leader) = {
            let m = rx.borrow_and_update();
            (role_of(m.state), m.current_term, m.current_leader)
        };
        if last.map(|(r, _, _)| r) != Some(role) {
            events.push(ClusterEventKind::RoleChanged { term, role });
        }
        // A new leader, or the same leader re-elected in a new term; a term change with no
        // leader (an election under way) is recorded once the outcome is known.
        let leader_changed = match last {
            None => true,
            Some((_, last_term, last_leader)) => {
                last_leader != leader || (leader.is_some() && last_term != term)
            }
        };
        if leader_changed {
            events.push(ClusterEventKind::LeaderChanged { term, leader });
        }
        metrics.leader_seen(leader, leader_changed);
        last = Some((role, term, leader));
        if rx.changed().await.is_err() {
            return;
        }
    }
}

pub fn role_of(state: ServerState) -> RaftRole {
    match state {
        ServerState::Leader => RaftRole::Leader,
        ServerState::Follower => RaftRole::Follower,
        ServerState::Candidate => RaftRole::Candidate,
        ServerState::Learner => RaftRole::Learner,
        ServerState::Shutdown => RaftRole::Shutdown,
    }
}

impl Coordinator {
    /// Commit a client's `command` through Raft: locally when leader, else forwarded to the
    /// leader, retrying while an election is under way, each attempt proposed under the current
    /// term. 421 when no leader appears within the write budget; 503 `write_timeout` when a
    /// leader took it but did not commit it within the budget (it may have lost its quorum).
    pub async fn write(&self, command: Command) -> Result<CommandResult, AppError> {
        self.propose(command, None).await
    }

    /// Commit a decision (a verdict, a move) taken under `term`: it is applied only in that
    /// term, never re-proposed under a newer one (`stale_decision` then: decide again).
    pub async fn decide(&self, term: u64, command: Command) -> Result<CommandResult, AppError> {
        self.propose(command, Some(term)).await
    }

    /// The current term and whether this node leads it while in touch with a quorum: the
    /// condition for taking decisions.
    pub fn leading_term(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow().clone();
        (m.current_leader == Some(self.node_id)
            && m.state == ServerState::Leader
            && self.quorum.in_touch())
        .then_some(m.current_term)
    }

    async fn propose(
        &self,
        command: Command,
        decided_in: Option<u64>,
    ) -> Result<CommandResult, AppError> {
        let deadline = tokio::time::Instant::now() + self.write_budget;
        let mut last_error = String::from("no leader known");
        loop {
            let term = decided_in.unwrap_or_else(|| self.raft.metrics().borrow().current_term);
            let proposal = Proposal {
                term,
                command: command.clone(),
            };
            let outcome =
                match tokio::time::timeout_at(deadline, self.raft.client_write(proposal.clone()))
                    .await
                {
                    Err(_) => return Err(self.write_timeout(&command)),
                    Ok(Ok(response)) => Some(response.data),
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                        match (forward.leader_id, forward.leader_node) {
                            (Some(id), Some(node)) => {
                                match self
                                    .forward_and_apply(id, &node.addr, &proposal, deadline)
                                    .await
                                {
                                    Ok(result) => Some(result),
                                    Err(ForwardFailed::Answer(e)) => return Err(e),
                                    Err(ForwardFailed::Transport(e)) => {
                                        last_error = e;
                                        None
                                    }
                                }
                            }
                            _ => None,
                        }
                    }
                    Ok(Err(e)) => return Err(AppError::internal(e)),
                };
            match outcome {
                Some(result) if !result.stale => return Ok(result),
                Some(result) if decided_in.is_some() => {
                    return Err(AppError::stale_decision(format!(
                        "{} decided in term {term} was committed in a newer term at index {}: not applied",
                        command.name(),
                        result.index
                    )))
                }
                // A client write proposed in a term that ended: propose it again.
                Some(_) => last_error = format!("term {term} ended before the write committed"),
                None => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AppError::not_leader(format!(
                    "no leader accepted the write within {} ms: {last_error}",
                    self.write_budget.as_millis()
                )));
            }
            tokio::time::sleep(Duration::from_millis(FORWARD_RETRY_MS)).await;
        }
    }

    fn write_timeout(&self, command: &Command) -> AppError {
        AppError::write_timeout(format!(
            "{} not committed within the write budget of {} ms (node {} may be out of touch with its quorum)",
            command.name(),
            self.write_budget.as_millis(),
            self.node_id
        ))
    }

    /// Commit locally only (the leader's side of forwarding), within the write budget.
    pub async fn write_local(&self, proposal: Proposal) -> Result<CommandResult, AppError> {
        let command = proposal.command.clone();
        match tokio::time::timeout(self.write_budget, self.raft.client_write(proposal)).await {
            Err(_) => Err(self.write_timeout(&command)),
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(AppError::not_leader(format!(
                    "node {} is not the leader (leader: {:?})",
                    self.node_id, f.leader_id
                )))
            }
            Ok(Err(e)) => Err(AppError::internal(e)),
        }
    }

    /// Forward to the leader `leader_id`, given up as soon as this node sees another leader (a
    /// frozen leader's socket still accepts: it must not hold a write for the whole budget while
    /// the cluster elects a new one); then wait until this node applied the result too
    /// (read-your-writes).
    async fn forward_and_apply(
        &self,
        leader_id: NodeId,
        leader_url: &str,
        proposal: &Proposal,
        deadline: tokio::time::Instant,
    ) -> Result<CommandResult, ForwardFailed> {
        let mut metrics = self.raft.metrics();
        let replaced = async {
            loop {
                let leader = metrics.borrow_and_update().current_leader;
                if leader.is_some_and(|l| l != leader_id) {
                    return leader;
                }
                if metrics.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        };
        let outcome = tokio::select! {
            r = self.forward(leader_url, proposal, deadline) => r,
            new = replaced => Err(anyhow::anyhow!("leader {leader_id} replaced by {new:?}")),
        };
        self.metrics.forwarded(matches!(outcome, Ok(Ok(_))));
        match outcome {
            Ok(Ok(result)) => {
                let _ = self
                    .raft
                    .wait(Some(self.write_budget))
                    .applied_index_at_least(Some(result.index), "forwarded write")
                    .await;
                Ok(result)
            }
            Ok(Err(answer)) => Err(ForwardFailed::Answer(answer)),
            Err(e) => Err(ForwardFailed::Transport(format!(
                "forward to {leader_url}: {e:#}"
            ))),
        }
    }

    /// Outer error: transport (retry); inner: the leader's answer (final).
    async fn forward(
        &self,
        leader_url: &str,
        proposal: &Proposal,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<Result<CommandResult, AppError>> {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut request = self
            .http
            .post(format!("{leader_url}{PATH_FORWARD}"))
            .timeout(remaining.max(Duration::from_millis(1)))
            .json(proposal);
        if let Some(key) = self.keys.peer_key() {
            request = request.header(crate::auth::API_KEY_HEADER, key);
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(Ok(response.json().await?));
        }
        let body: crate::api::model::ApiError = response.json().await?;
        if body.code == "not_leader" {
            anyhow::bail!("{}", body.error);
        }
        Ok(Err(AppError { status, body }))
    }
}
