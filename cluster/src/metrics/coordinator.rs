//! A coordinator's metrics. Gauges (Raft role, term, commit index, workers by status, groups,
//! deployments, links) are set from Raft and the applied state at each scrape; counters and
//! histograms are fed where things happen (the event log, the detector, forwarding, Raft RPCs).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{ELECTION_BUCKETS_SECONDS, OPERATION_BUCKETS_SECONDS};
use crate::api::model::{ClusterEventKind, RaftRole, WorkerStatus};
use crate::raft::state::ClusterState;

/// Name prefix of every coordinator metric (the seed's).
pub const PREFIX: &str = "varpulis_cluster";

/// The failure-detection layer that produced a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectionLayer {
    /// The WebSocket closed and the worker did not reconnect within the grace period.
    WsClose,
    /// No frame within the ping deadline (a hung process, a partition).
    PingDeadline,
    /// A REST-only worker whose heartbeats stopped.
    RestTimeout,
    /// The leader's sweep: no coordinator reported the worker alive.
    LivenessSweep,
}

impl DetectionLayer {
    pub fn as_str(self) -> &'static str {
        match self {
            DetectionLayer::WsClose => "ws_close",
            DetectionLayer::PingDeadline => "ping_deadline",
            DetectionLayer::RestTimeout => "rest_timeout",
            DetectionLayer::LivenessSweep => "liveness_sweep",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LayerLabel {
    layer: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabel {
    change: &'static str,
}

/// Peers are the voters of `--peers` (three here): a bounded label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
    rpc: &'static str,
    kind: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn operation_histogram() -> Histogram {
    Histogram::new(OPERATION_BUCKETS_SECONDS)
}

/// Every metric of one coordinator, registered once.
#[derive(Debug)]
pub struct CoordinatorMetrics {
    registry: Registry,
    raft_role: Gauge,
    raft_term: Gauge,
    raft_commit_index: Gauge,
    workers: Family<StatusLabel, Gauge>,
    pipeline_groups: Gauge,
    deployments: Gauge,
    migrations: Family<ResultLabel, Counter>,
    migration_duration: HistogramFamily<ResultLabel>,
    deploy_duration: HistogramFamily<ResultLabel>,
    health_sweep_duration: Histogram,
    health_sweep_workers: Gauge,
    leader_elections: Counter,
    leaderless_duration: Histogram,
    failure_detections: Family<LayerLabel, Counter>,
    worker_links: Gauge,
    worker_link_changes: Family<ChangeLabel, Counter>,
    forwarded_writes: Family<ResultLabel, Counter>,
    raft_rpc_errors: Family<PeerLabel, Counter>,
    start_time: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Migrations started and not finished: (group, pipeline) → started at (ms, proposer clock).
    in_flight: Mutex<HashMap<(String, String), u64>>,
    /// Wall clock at start: results of migrations that ended before it are replays of the log,
    /// not migrations this process saw.
    started_ms: u64,
    /// When this node last lost its leader (None: it knows one).
    leaderless_since: Mutex<Option<Instant>>,
}

impl CoordinatorMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let m = CoordinatorMetrics {
            raft_role: Gauge::default(),
            raft_term: Gauge::default(),
            raft_commit_index: Gauge::default(),
            workers: Family::default(),
            pipeline_groups: Gauge::default(),
            deployments: Gauge::default(),
            migrations: Family::default(),
            migration_duration: Family::new_with_constructor(operation_histogram),
            deploy_duration: Family::new_with_constructor(operation_histogram),
            health_sweep_duration: Histogram::new(OPERATION_BUCKETS_SECONDS),
            health_sweep_workers: Gauge::default(),
            leader_elections: Counter::default(),
            leaderless_duration: Histogram::new(ELECTION_BUCKETS_SECONDS),
            failure_detections: Family::default(),
            worker_links: Gauge::default(),
            worker_link_changes: Family::default(),
            forwarded_writes: Family::default(),
            raft_rpc_errors: Family::default(),
            start_time: Gauge::default(),
            in_flight: Mutex::new(HashMap::new()),
            started_ms: crate::events::now_ms(),
            leaderless_since: Mutex::new(Some(Instant::now())),
            registry: Registry::default(),
        };
        // The seed's ten (gauges without the `_total` the linter reserves for counters).
        let r = &mut registry;
        r.register(
            "raft_role",
            "Raft role of this coordinator: 0 follower (or learner), 1 candidate, 2 leader",
            m.raft_role.clone(),
        );
        r.register("raft_term", "Current Raft term", m.raft_term.clone());
        r.register(
            "raft_commit_index",
            "Raft commit index (highest log index known committed)",
            m.raft_commit_index.clone(),
        );
        r.register(
            "workers",
            "Workers by status (ready, unhealthy, draining), from the replicated state",
            m.workers.clone(),
        );
        r.register(
            "pipeline_groups",
            "Deployed pipeline groups",
            m.pipeline_groups.clone(),
        );
        r.register(
            "deployments",
            "Pipeline deployments: pipelines placed on a worker",
            m.deployments.clone(),
        );
        r.register("migrations", "Migrations this coordinator saw end, by result (success: the target runs it; failure: superseded by another move first)", m.migrations.clone());
        r.register(
            "migration_duration_seconds",
            "Migration duration, decision to running on the target, by result",
            m.migration_duration.clone(),
        );
        r.register(
            "deploy_duration_seconds",
            "Pipeline group deploy duration on this coordinator (request to commit), by result",
            m.deploy_duration.clone(),
        );
        r.register(
            "health_sweep_duration_seconds",
            "Duration of one leader liveness sweep, verdict commits included",
            m.health_sweep_duration.clone(),
        );
        // Beyond the seed.
        r.register("health_sweep_workers", "Workers checked by the latest liveness sweep (replaces the seed's unbounded workers_checked label)", m.health_sweep_workers.clone());
        r.register(
            "leader_elections",
            "Leader elections this coordinator saw (a leader known in a new term)",
            m.leader_elections.clone(),
        );
        r.register(
            "leaderless_duration_seconds",
            "Time this coordinator knew no leader, per interval without one",
            m.leaderless_duration.clone(),
        );
        r.register(
            "failure_detections",
            "Workers declared unhealthy by this coordinator's verdicts, by detection layer",
            m.failure_detections.clone(),
        );
        r.register(
            "worker_links",
            "Worker WebSocket links held by this coordinator",
            m.worker_links.clone(),
        );
        r.register(
            "worker_link_changes",
            "Worker WebSocket links opened and closed on this coordinator",
            m.worker_link_changes.clone(),
        );
        r.register("forwarded_writes", "Forward attempts of writes from this coordinator to the leader, by result (failure: transport error or the leader refused)", m.forwarded_writes.clone());
        r.register(
            "start_time_seconds",
            "When this coordinator process started (Unix time): a change means a restart",
            m.start_time.clone(),
        );
        r.register(
            "raft_rpc_errors",
            "Raft RPCs to a peer that failed, by peer, RPC and kind (unreachable, network, remote)",
            m.raft_rpc_errors.clone(),
        );
        // Every bounded label value exists from the start, at zero: a panel or a rate over
        // them shows 0 rather than "no data" before the first occurrence.
        for result in ["success", "failure"] {
            let label = ResultLabel { result };
            let _ = m.migrations.get_or_create(&label);
            let _ = m.migration_duration.get_or_create(&label);
            let _ = m.deploy_duration.get_or_create(&label);
            let _ = m.forwarded_writes.get_or_create(&label);
        }
        for layer in [
            DetectionLayer::WsClose,
            DetectionLayer::PingDeadline,
            DetectionLayer::RestTimeout,
            DetectionLayer::LivenessSweep,
        ] {
            let _ = m.failure_detections.get_or_create(&LayerLabel {
                layer: layer.as_str(),
            });
        }
        for change in ["opened", "closed"] {
            let _ = m.worker_link_changes.get_or_create(&ChangeLabel { change });
        }
        m.start_time.set(m.started_ms as f64 / 1000.0);
        CoordinatorMetrics { registry, ..m }
    }

    /// Set the gauges from Raft's metrics and the applied state; then encode everything.
    pub fn render(
        &self,
        role: RaftRole,
        term: u64,
        commit_index: Option<u64>,
        state: &ClusterState,
        links: usize,
    ) -> axum::response::Response {
        self.raft_role.set(match role {
            RaftRole::Leader => 2,
            RaftRole::Candidate => 1,
            _ => 0,
        });
        self.raft_term.set(term as i64);
        self.raft_commit_index.set(commit_index.unwrap_or(0) as i64);
        for (status, name) in [
            (WorkerStatus::Ready, "ready"),
            (WorkerStatus::Unhealthy, "unhealthy"),
            (WorkerStatus::Draining, "draining"),
        ] {
            let n = state
                .workers
                .values()
                .filter(|w| w.status == status)
                .count();
            self.workers
                .get_or_create(&StatusLabel { status: name })
                .set(n as i64);
        }
        self.pipeline_groups.set(state.groups.len() as i64);
        let placed = state
            .groups
            .values()
            .flat_map(|g| &g.pipelines)
            .filter(|p| p.worker.is_some())
            .count();
        self.deployments.set(placed as i64);
        self.worker_links.set(links as i64);
        super::render(&self.registry)
    }

    /// Feed the counters from one event of this node's event log.
    pub fn observe(&self, event: &ClusterEventKind) {
        match event {
            ClusterEventKind::MigrationStarted {
                group,
                pipeline,
                at_ms,
                ..
            } => {
                let previous =
                    lock(&self.in_flight).insert((group.clone(), pipeline.clone()), *at_ms);
                if let Some(started) = previous {
                    self.migration_ended("failure", started, *at_ms);
                }
            }
            ClusterEventKind::MigrationFinished {
                group,
                pipeline,
                at_ms,
                ..
            } => {
                let started = lock(&self.in_flight).remove(&(group.clone(), pipeline.clone()));
                if let Some(started) = started {
                    self.migration_ended("success", started, *at_ms);
                }
            }
            _ => {}
        }
    }

    fn migration_ended(&self, result: &'static str, started_ms: u64, at_ms: u64) {
        if at_ms < self.started_ms {
            return;
        }
        self.migrations.get_or_create(&ResultLabel { result }).inc();
        self.migration_duration
            .get_or_create(&ResultLabel { result })
            .observe(at_ms.saturating_sub(started_ms) as f64 / 1000.0);
    }

    /// This node's view of the leader changed: count elections, time leaderless intervals.
    pub fn leader_seen(&self, leader: Option<u64>, new_term_or_leader: bool) {
        let mut since = lock(&self.leaderless_since);
        match (leader, *since) {
            (None, None) => *since = Some(Instant::now()),
            (Some(_), Some(t)) => {
                self.leaderless_duration.observe(t.elapsed().as_secs_f64());
                *since = None;
                self.leader_elections.inc();
            }
            (Some(_), None) if new_term_or_leader => {
                self.leader_elections.inc();
            }
            _ => {}
        }
    }

    pub fn deploy_finished(&self, ok: bool, started: Instant) {
        let result = if ok { "success" } else { "failure" };
        self.deploy_duration
            .get_or_create(&ResultLabel { result })
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn sweep_finished(&self, workers_checked: usize, started: Instant) {
        self.health_sweep_workers.set(workers_checked as i64);
        self.health_sweep_duration
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn detected(&self, layer: DetectionLayer) {
        self.failure_detections
            .get_or_create(&LayerLabel {
                layer: layer.as_str(),
            })
            .inc();
    }

    pub fn link_changed(&self, opened: bool) {
        let change = if opened { "opened" } else { "closed" };
        self.worker_link_changes
            .get_or_create(&ChangeLabel { change })
            .inc();
    }

    pub fn forwarded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.forwarded_writes
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn rpc_failed(&self, peer: u64, rpc: &'static str, kind: &'static str) {
        self.raft_rpc_errors
            .get_or_create(&PeerLabel {
                peer: peer.to_string(),
                rpc,
                kind,
            })
            .inc();
    }
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
