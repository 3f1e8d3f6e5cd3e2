//! Worker links and failure detection on a coordinator.
//!
//! Three layers, each ending in a committed `MarkWorkerUnhealthy`:
//! 1. WebSocket closed (crash, kill): the coordinator holding the link waits the grace period,
//!    then declares the worker unhealthy unless its link was committed again since (it moved to
//!    another coordinator, or came back) — the verdict names the link generation it saw die.
//! 2. Ping deadline: the holder pings every `ping_interval`; no frame for `ping_dead` closes the
//!    link (a SIGSTOPped process or a partition keeps TCP open) and goes down path 1.
//! 3. Liveness backstop on the leader: every coordinator reports the workers it holds links to,
//!    REST heartbeats count too; a ready worker not seen for its limit is declared unhealthy.
//!    This catches a worker whose link holder died with it, and workers without a WebSocket.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Coordinator;
use crate::api::model::{HeartbeatBody, WorkerStatus};
use crate::metrics::DetectionLayer;
use crate::raft::{Command, NodeId};

/// Failure-detection timings (flags; tests use short ones).
#[derive(Debug, Clone, Copy)]
pub struct DetectorConfig {
    /// After a link closes, how long the worker has to reconnect before it is declared unhealthy.
    pub grace: Duration,
    pub ping_interval: Duration,
    /// No frame from the worker for this long: the link is dead.
    pub ping_dead: Duration,
    /// Workers without a WebSocket: REST heartbeat silence after which they are unhealthy.
    pub rest_timeout: Duration,
    /// Interval the worker is told to send heartbeats at.
    pub heartbeat_interval: Duration,
    /// The worker's lease: it runs pipelines only until this long after sending the last
    /// heartbeat a coordinator in touch with its quorum acknowledged.
    pub lease: Duration,
}

impl DetectorConfig {
    /// The lease when none is given: the link deadline plus one heartbeat interval, so a
    /// worker leaving a silent coordinator has time to renew elsewhere before it must stop.
    pub fn default_lease(ping_dead: Duration, heartbeat_interval: Duration) -> Duration {
        ping_dead + heartbeat_interval
    }

    /// The part of the lease a worker spends stopping its pipelines (it begins this long before
    /// the lease ends): an eighth, at most 500 ms.
    pub fn fence_budget(&self) -> Duration {
        fence_budget(self.lease)
    }
}

/// See [`DetectorConfig::fence_budget`]; the worker computes the same from the lease it is given.
pub fn fence_budget(lease: Duration) -> Duration {
    (lease / 8).min(Duration::from_millis(500))
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            grace: Duration::from_secs(5),
            ping_interval: Duration::from_secs(1),
            ping_dead: Duration::from_secs(3),
            rest_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            lease: DetectorConfig::default_lease(Duration::from_secs(3), Duration::from_secs(1)),
        }
    }
}

/// How often a coordinator tells the leader which workers it holds links to.
pub const ALIVE_REPORT_INTERVAL: Duration = Duration::from_millis(1000);
/// How often the leader checks liveness.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// Body of `POST /raft/alive`: workers a coordinator saw alive since its last report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliveReport {
    pub from: NodeId,
    pub workers: Vec<String>,
}

/// Soft, local state of the detector.
#[derive(Debug, Default)]
pub struct Links {
    /// worker id → connection id of the link this coordinator holds.
    held: Mutex<HashMap<String, u64>>,
    next_conn: AtomicU64,
    /// Leader only: last time each worker was seen alive anywhere.
    alive: Mutex<HashMap<String, Instant>>,
    /// Workers seen alive here since the last report to the leader (REST heartbeats included).
    seen: Mutex<HashSet<String>>,
    /// Latest heartbeat of each worker linked here.
    pub heartbeats: Mutex<HashMap<String, HeartbeatBody>>,
    /// (pipeline_id, epoch) already proposed as running, to propose each once.
    proposed_running: Mutex<HashSet<(String, u64)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Links {
    /// Record a new link; returns its connection id.
    pub fn open(&self, worker_id: &str) -> u64 {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.held).insert(worker_id.to_string(), conn);
        self.saw(worker_id);
        conn
    }

    /// Forget the link if it is still this connection's; true when it was.
    pub fn close(&self, worker_id: &str, conn: u64) -> bool {
        let mut held = lock(&self.held);
        if held.get(worker_id) == Some(&conn) {
            held.remove(worker_id);
            true
        } else {
            false
        }
    }

    pub fn holds(&self, worker_id: &str) -> bool {
        lock(&self.held).contains_key(worker_id)
    }

    pub fn count(&self) -> usize {
        lock(&self.held).len()
    }

    pub fn saw(&self, worker_id: &str) {
        lock(&self.seen).insert(worker_id.to_string());
    }

    fn take_seen(&self) -> Vec<String> {
        let mut seen = lock(&self.seen);
        let held: Vec<String> = lock(&self.held).keys().cloned().collect();
        seen.extend(held);
        seen.drain().collect()
    }

    /// Leader: mark workers alive now.
    pub fn mark_alive(&self, workers: &[String]) {
        let now = Instant::now();
        let mut alive = lock(&self.alive);
        for w in workers {
            alive.insert(w.clone(), now);
        }
    }

    /// True the first time (pipeline_id, epoch) is seen.
    pub fn first_running_report(&self, pipeline_id: &str, epoch: u64) -> bool {
        lock(&self.proposed_running).insert((pipeline_id.to_string(), epoch))
    }

    pub fn forget_running_report(&self, pipeline_id: &str, epoch: u64) {
        lock(&self.proposed_running).remove(&(pipeline_id.to_string(), epoch));
    }
}

impl Coordinator {
    /// A link closed on this coordinator: after the grace period, declare the worker unhealthy
    /// unless it reconnected (here, or anywhere: the committed link generation moved on).
    pub fn link_lost(
        self: &Arc<Self>,
        worker_id: String,
        link_gen: Option<u64>,
        reason: String,
        layer: DetectionLayer,
    ) {
        let c = self.clone();
        tokio::spawn(async move {
            let term = c.grace_in_touch().await;
            if c.links.holds(&worker_id) {
                return;
            }
            let still_same = c.state.read(|a| {
                a.state.workers.get(&worker_id).is_some_and(|w| {
                    w.status != WorkerStatus::Unhealthy && link_gen.is_none_or(|g| g == w.link_gen)
                })
            });
            if !still_same {
                return;
            }
            tracing::warn!(%worker_id, %reason, "worker did not reconnect within the grace period");
            let command = Command::MarkWorkerUnhealthy {
                worker_id: worker_id.clone(),
                link_gen,
                reason: format!(
                    "{reason}; no reconnect within {} ms grace",
                    c.detector.grace.as_millis()
                ),
                at_ms: crate::events::now_ms(),
            };
            match c.decide(term, command).await {
                Ok(r) if r.changed => c.metrics.detected(layer),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%worker_id, "could not commit unhealthy: {}", e.body.error)
                }
            }
        });
    }

    /// Sleep for the grace period counted within one term while this node is in touch with a
    /// quorum; returns that term, the one the verdict is decided in. If this node loses touch
    /// (an election, a pause) or the term changes, the count starts again: a worker's new link
    /// holder then gets the whole grace with a leader to commit its `WorkerLinked` first, and a
    /// verdict decided before an election is a no-op after it.
    async fn grace_in_touch(&self) -> u64 {
        let step = (self.detector.grace / 10).max(Duration::from_millis(10));
        let term_now = || self.raft.metrics().borrow().current_term;
        let mut term = term_now();
        let mut counted = Duration::ZERO;
        let mut last = Instant::now();
        while counted < self.detector.grace {
            tokio::time::sleep(step.min(self.detector.grace - counted)).await;
            let now = Instant::now();
            let t = term_now();
            if self.quorum.in_touch() && t == term {
                counted += now - last;
            } else {
                (counted, term) = (Duration::ZERO, t);
            }
            last = now;
        }
        term
    }

    /// Every coordinator: report held links (and REST-seen workers) to the leader.
    pub async fn report_alive_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(ALIVE_REPORT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let workers = self.links.take_seen();
            if workers.is_empty() {
                continue;
            }
            self.forward_alive(workers).await;
        }
    }

    /// Deliver "these workers are alive" to the leader (or record it, if this is the leader).
    pub async fn forward_alive(&self, workers: Vec<String>) {
        let m = self.raft.metrics().borrow().clone();
        match m.current_leader {
            Some(leader) if leader == self.node_id => self.links.mark_alive(&workers),
            Some(leader) => {
                let Some(node) = m.membership_config.membership().get_node(&leader).cloned() else {
                    return;
                };
                let mut request = self
                    .http
                    .post(format!("{}{}", node.addr, super::PATH_ALIVE))
                    .timeout(ALIVE_REPORT_INTERVAL)
                    .json(&AliveReport {
                        from: self.node_id,
                        workers,
                    });
                if let Some(key) = self.keys.peer_key() {
                    request = request.header(crate::auth::API_KEY_HEADER, key);
                }
                if let Err(e) = request.send().await {
                    tracing::debug!("alive report to leader {leader}: {e}");
                }
            }
            None => {}
        }
    }

    /// Leader only: declare unhealthy the ready workers not seen alive within their limit.
    pub async fn sweep_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = false;
        loop {
            tick.tick().await;
            // A leader out of touch with its quorum judges no one: what it has not heard may
            // simply not have reached it. Back in touch, it starts every clock afresh.
            let Some(term) = self.leading_term() else {
                was_leader = false;
                continue;
            };
            let now = Instant::now();
            let mut checked = 0;
            if !was_leader {
                // A new leader knows nothing yet: give every worker a full period from now.
                lock(&self.links.alive).clear();
                was_leader = true;
            }
            let ws_limit =
                self.detector.grace + self.detector.ping_dead + 2 * ALIVE_REPORT_INTERVAL;
            let stale: Vec<(String, u64, Duration, DetectionLayer)> = self.state.read(|a| {
                let mut alive = lock(&self.links.alive);
                a.state
                    .workers
                    .values()
                    .filter(|w| w.status != WorkerStatus::Unhealthy)
                    .inspect(|_| checked += 1)
                    .filter_map(|w| {
                        let seen = *alive.entry(w.id.clone()).or_insert(now);
                        let (limit, layer) = if w.link.is_some() {
                            (ws_limit, DetectionLayer::LivenessSweep)
                        } else {
                            (self.detector.rest_timeout, DetectionLayer::RestTimeout)
                        };
                        (now.duration_since(seen) > limit)
                            .then(|| (w.id.clone(), w.link_gen, limit, layer))
                    })
                    .collect()
            });
            for (worker_id, link_gen, limit, layer) in stale {
                tracing::warn!(%worker_id, "not seen alive for {} ms", limit.as_millis());
                let command = Command::MarkWorkerUnhealthy {
                    worker_id,
                    link_gen: Some(link_gen),
                    reason: format!(
                        "not seen alive by any coordinator for {} ms",
                        limit.as_millis()
                    ),
                    at_ms: crate::events::now_ms(),
                };
                match self.decide(term, command).await {
                    Ok(r) if r.changed => self.metrics.detected(layer),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("sweep could not commit: {}", e.body.error),
                }
            }
            self.metrics.sweep_finished(checked, now);
        }
    }

    /// A heartbeat arrived (WS or REST): remember it, and propose running pipelines once.
    pub fn heartbeat(self: &Arc<Self>, worker_id: &str, body: HeartbeatBody) {
        self.links.saw(worker_id);
        let to_propose: Vec<(String, String, u64)> = self.state.read(|a| {
            body.pipeline_metrics
                .iter()
                .filter_map(|m| {
                    let (group, pipeline) = m.pipeline_id.split_once('/')?;
                    let p = a
                        .state
                        .groups
                        .get(group)?
                        .pipelines
                        .iter()
                        .find(|p| p.def.name == pipeline)?;
                    (p.worker.as_deref() == Some(worker_id) && p.epoch == m.epoch && !p.running)
                        .then(|| (group.to_string(), pipeline.to_string(), m.epoch))
                })
                .collect()
        });
        lock(&self.links.heartbeats).insert(worker_id.to_string(), body);
        for (group, pipeline, epoch) in to_propose {
            let pid = crate::raft::state::pipeline_id(&group, &pipeline);
            if !self.links.first_running_report(&pid, epoch) {
                continue;
            }
            let c = self.clone();
            let worker_id = worker_id.to_string();
            tokio::spawn(async move {
                let command = Command::PipelineRunning {
                    group,
                    pipeline,
                    worker_id,
                    epoch,
                    at_ms: crate::events::now_ms(),
                };
                if let Err(e) = c.write(command).await {
                    tracing::warn!(%pid, "could not commit running: {}", e.body.error);
                    c.links.forget_running_report(&pid, epoch);
                }
            });
        }
    }
}
