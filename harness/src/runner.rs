//! The runner: executes a plan of phases against a backend, step by step, recording what
//! happened. This file holds the one `match` on [`Step`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use cluster::api::model::{
    ClusterEventKind, Connector, GroupDef, GroupInfo, Health, PipelineDef, RaftMetrics, RaftRole,
    Topology, WorkerList, WorkerStatus,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;

use crate::backend::{now_us, Backend, NodeName, NodeState, WallUs};
use crate::phase::{placeholders, Phase, Planned};
use crate::probe::{describe, Probe};
use crate::record::{Sample, Status, StepRecord, TrialRecord};
use crate::step::{Role, Step, Target, WorkerStatusName};
use crate::traffic::{Collector, Counts, Ledger, Publisher, TrafficHandle};

/// Interval between polls of a wait. With server-side event timestamps the poll rate bounds
/// only how soon the harness moves on, not the precision of a figure; 20 ms keeps both small.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Settings of a runner.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub seed: u64,
    /// Default bound of waits for a leader or a role, when the step gives none.
    pub leader_timeout: Duration,
    /// Default bound for nodes to answer after (re)start.
    pub start_timeout: Duration,
}

impl RunnerOptions {
    /// Defaults derived from the Raft timings: an election needs at most a few election timeouts
    /// (lease + randomized timeout + split votes), so 4 × max + 5 s is generous without hiding a hang.
    pub fn for_raft(seed: u64, election_max_ms: u64) -> Self {
        RunnerOptions {
            seed,
            leader_timeout: Duration::from_millis(4 * election_max_ms + 5_000),
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// Bound of waiting for a group's pipelines to run after a deploy.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound of `await_delivery`: generous for a few thousand events on loopback, and it
/// returns as soon as the last expected event arrived.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A node remembered by `bind`, with the term in which it was seen leading (0 if not a leader)
/// and, for a worker, the pipelines (group, pipeline) it hosted when it was resolved.
#[derive(Debug, Clone)]
struct Binding {
    node: NodeName,
    term: u64,
    hosted: Vec<(String, String)>,
}

impl Binding {
    fn node(node: NodeName) -> Self {
        Binding {
            node,
            term: 0,
            hosted: Vec::new(),
        }
    }
}

/// Per-trial state: bindings, marks, samples, values for the detail line, and the seq window of
/// the events published in this trial.
#[derive(Debug, Default)]
struct Trial {
    bindings: HashMap<String, Binding>,
    marks: HashMap<String, Mark>,
    samples: Vec<Sample>,
    values: HashMap<String, String>,
    window: Option<Range<u64>>,
    /// Wall-clock moment of the latest fault in this trial: server events before it are old news.
    last_fault_us: WallUs,
    /// Intervals spent on the protocol's own clock: measured fault → recovery, hold windows.
    floor: Vec<(WallUs, WallUs)>,
    /// Named fault → recovery windows, for the timeline.
    windows: Vec<crate::record::Window>,
}

impl Trial {
    fn extend_window(&mut self, r: Range<u64>) {
        self.window = Some(match self.window.take() {
            Some(w) => w.start.min(r.start)..w.end.max(r.end),
            None => r,
        });
    }
}

/// The harness's MQTT side: publisher, collector and the ledger they share.
struct TrafficRig {
    ledger: Arc<Mutex<Ledger>>,
    publisher: Publisher,
    collector: Collector,
    paced: Option<TrafficHandle>,
}

/// A named instant and how it was observed.
#[derive(Debug, Clone)]
struct Mark {
    at_us: WallUs,
    how: String,
}

pub struct Runner<B: Backend> {
    backend: B,
    probe: Probe,
    options: RunnerOptions,
    rng: StdRng,
    traffic: Option<TrafficRig>,
    /// Nodes cut off by `partition` and not healed yet.
    partitioned: HashSet<NodeName>,
}

impl<B: Backend> Runner<B> {
    pub fn new(backend: B, options: RunnerOptions) -> anyhow::Result<Self> {
        Ok(Runner {
            probe: Probe::new(backend.spec().api_key.clone())?,
            backend,
            rng: StdRng::seed_from_u64(options.seed),
            options,
            traffic: None,
            partitioned: HashSet::new(),
        })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Run every planned phase; `on_trial` sees each trial record as it completes. A failed
    /// prerequisite fails the phases that depend on it without running them.
    pub async fn run_plan(
        &mut self,
        phases: &[Phase],
        plan: &[Planned],
        mut on_trial: impl FnMut(&TrialRecord),
    ) -> Vec<TrialRecord> {
        let mut records = Vec::new();
        let mut failed: HashSet<String> = HashSet::new();
        for planned in plan {
            let phase = &phases[planned.phase];
            let blocked: Vec<&String> = phase
                .requires
                .iter()
                .filter(|r| {
                    phases
                        .iter()
                        .any(|p| (p.id == **r || p.slug == **r) && failed.contains(&p.id))
                })
                .collect();
            for trial in 1..=planned.trials {
                let record = if blocked.is_empty() {
                    self.run_trial(phase, trial, planned.trials).await
                } else {
                    skipped(phase, trial, planned.trials, &blocked)
                };
                if record.status == Status::Fail {
                    failed.insert(phase.id.clone());
                }
                on_trial(&record);
                records.push(record);
            }
        }
        records
    }

    /// Run one trial of a phase; on failure, heal the cluster (restart what is down, resume
    /// what is paused) so the next trial starts from a whole cluster.
    pub async fn run_trial(&mut self, phase: &Phase, trial_no: u32, trials: u32) -> TrialRecord {
        tracing::info!(phase = %phase.id, name = %phase.name, trial = trial_no, "phase start");
        let started_us = now_us();
        let mut trial = Trial {
            last_fault_us: started_us,
            ..Trial::default()
        };
        let mut steps = Vec::new();
        let mut error = None;
        for (index, step) in phase.steps.iter().enumerate() {
            let location = phase.step_locations.get(index).cloned().unwrap_or_default();
            let step_start = now_us();
            tracing::info!(%step, %location, "step");
            let result = self.run_step(step, &mut trial).await;
            let ok = result.is_ok();
            let note = match &result {
                Ok(note) => note.clone(),
                Err(e) => format!("{e:#}"),
            };
            steps.push(StepRecord {
                index,
                action: step.action().into(),
                summary: step.to_string(),
                location: location.clone(),
                offset_us: step_start.saturating_sub(started_us),
                duration_us: now_us().saturating_sub(step_start),
                ok,
                note: note.clone(),
            });
            if !ok {
                tracing::warn!(%step, %location, "step failed: {note}");
                error = Some(format!("{location}: {step}: {note}"));
                break;
            }
        }
        let ended_us = now_us();
        let duration_us = ended_us.saturating_sub(started_us);
        let floor_us = union_length(&trial.floor, started_us, ended_us);
        let events = match (&self.traffic, &trial.window) {
            (Some(rig), Some(w)) => Some(
                rig.ledger
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .counts(w.clone()),
            ),
            _ => None,
        };
        if let Some(c) = &events {
            trial.values.insert(
                "events".into(),
                format!("{}/{} events", c.delivered, c.expected),
            );
        }
        if error.is_some() {
            if let Err(e) = self.heal().await {
                tracing::warn!("heal after failed trial: {e:#}");
            }
        }
        let details = render_details(&phase.detail, &trial);
        TrialRecord {
            id: phase.id.clone(),
            name: phase.name.clone(),
            description: phase.description.clone(),
            trial: trial_no,
            trials,
            status: if error.is_none() {
                Status::Pass
            } else {
                Status::Fail
            },
            started_us,
            duration_us,
            floor_us,
            windows: trial.windows,
            details,
            error,
            steps,
            samples: trial.samples,
            events,
            bindings: trial
                .bindings
                .iter()
                .map(|(k, b)| (k.clone(), b.node.to_string()))
                .collect(),
        }
    }

    /// Execute one step. The one `match` on `Step`. Returns a note on what was observed.
    async fn run_step(&mut self, step: &Step, trial: &mut Trial) -> anyhow::Result<String> {
        match step {
            Step::StartCluster(a) => {
                let timeout = a
                    .timeout_ms
                    .map_or(self.options.start_timeout, Duration::from_millis);
                // Broker and coordinators first, answering, then workers: a worker whose home
                // coordinator is not up yet would link elsewhere and stay there.
                let mut started = Vec::new();
                for workers in [false, true] {
                    let mut wave = Vec::new();
                    for node in self.backend.nodes() {
                        if matches!(node, NodeName::Worker(_)) == workers
                            && matches!(
                                self.backend.state(node),
                                NodeState::NotStarted | NodeState::Down
                            )
                        {
                            self.backend.start(node).await?;
                            wave.push(node);
                        }
                    }
                    for &node in &wave {
                        self.await_answering(node, timeout).await?;
                    }
                    started.extend(wave);
                }
                if self.traffic.is_none() && self.backend.spec().workers > 0 {
                    self.traffic = Some(self.start_traffic().await?);
                }
                Ok(format!("{} nodes started and answering", started.len()))
            }
            Step::AwaitLeader(a) => {
                let mut excluded = HashSet::new();
                let mut min_term = 0;
                for t in &a.exclude {
                    let b = self.resolve(t, trial).await?;
                    excluded.insert(b.node);
                    if b.term > 0 {
                        min_term = min_term.max(b.term + 1);
                    }
                }
                let timeout = a
                    .timeout_ms
                    .map_or(self.options.leader_timeout, Duration::from_millis);
                let (leader, term, mark) = self.await_leader(&excluded, min_term, timeout).await?;
                if let Some(name) = &a.bind {
                    trial.bindings.insert(
                        name.clone(),
                        Binding {
                            node: leader,
                            term,
                            hosted: Vec::new(),
                        },
                    );
                }
                let note = format!("leader {leader} in term {term} ({})", mark.how);
                if let Some(name) = &a.mark {
                    trial.marks.insert(name.clone(), mark);
                }
                Ok(note)
            }
            Step::Kill(a)
            | Step::Stop(a)
            | Step::Pause(a)
            | Step::Resume(a)
            | Step::Partition(a)
            | Step::Heal(a) => {
                let binding = self.resolve(&a.target, trial).await?;
                let node = binding.node;
                let docker = self.backend.name() == "docker";
                let (at, how) = match step {
                    Step::Kill(_) => (
                        self.backend.kill(node).await?,
                        if docker {
                            "container killed (SIGKILL)"
                        } else {
                            "SIGKILL delivered"
                        },
                    ),
                    Step::Stop(_) => (
                        self.backend.stop(node).await?,
                        if docker {
                            "container stopped (SIGTERM, then SIGKILL)"
                        } else {
                            "SIGTERM delivered"
                        },
                    ),
                    Step::Pause(_) => (
                        self.backend.pause(node).await?,
                        if docker {
                            "container paused"
                        } else {
                            "SIGSTOP delivered"
                        },
                    ),
                    Step::Resume(_) => (
                        self.backend.resume(node).await?,
                        if docker {
                            "container unpaused"
                        } else {
                            "SIGCONT delivered"
                        },
                    ),
                    Step::Partition(_) => {
                        let at = self.backend.partition(node).await?;
                        self.partitioned.insert(node);
                        (at, "disconnected from the network")
                    }
                    _ => {
                        let at = self.backend.heal(node).await?;
                        self.partitioned.remove(&node);
                        (at, "reconnected to the network")
                    }
                };
                if let Some(name) = &a.bind {
                    trial.bindings.insert(name.clone(), binding);
                }
                if let Some(name) = &a.mark {
                    trial.marks.insert(
                        name.clone(),
                        Mark {
                            at_us: at,
                            how: format!("{how} to {node}"),
                        },
                    );
                }
                Ok(format!("{node}: {how}"))
            }
            Step::Restart(a) => {
                let node = self.resolve(&a.target, trial).await?.node;
                if self.backend.state(node) != NodeState::Down {
                    self.backend.stop(node).await?;
                }
                let at = self.backend.start(node).await?;
                let timeout = a
                    .timeout_ms
                    .map_or(self.options.start_timeout, Duration::from_millis);
                self.await_answering(node, timeout).await?;
                if let Some(name) = &a.mark {
                    trial.marks.insert(
                        name.clone(),
                        Mark {
                            at_us: at,
                            how: format!("{node} spawned"),
                        },
                    );
                }
                Ok(format!("{node} restarted and answering"))
            }
            Step::MeasureGap(a) => {
                let mark = |name: &str| {
                    trial
                        .marks
                        .get(name)
                        .map(|m| m.at_us)
                        .with_context(|| format!("mark '{name}' was not recorded"))
                };
                let (from, to) = (mark(&a.from)?, mark(&a.to)?);
                let window = trial.window.clone().unwrap_or(0..0);
                let arrivals = {
                    let ledger = self.rig()?.ledger.lock().unwrap_or_else(|p| p.into_inner());
                    ledger.first_arrivals(window, &a.pipeline)
                };
                let (gap_us, at_us) = crate::steps_extra::longest_gap(&arrivals, from, to);
                let how = format!(
                    "{} silent from {} ms after {} ({} deliveries in the window)",
                    a.pipeline,
                    at_us.saturating_sub(from) / 1000,
                    a.from,
                    arrivals.len()
                );
                trial.samples.push(Sample {
                    name: a.name.clone(),
                    value_us: gap_us,
                    how: how.clone(),
                });
                Ok(format!("{} = {} ms: {how}", a.name, gap_us / 1000))
            }
            Step::Wipe(a) => {
                let node = self.resolve(&a.target, trial).await?.node;
                let at = self.backend.wipe(node).await?;
                if let Some(name) = &a.mark {
                    let how = format!("{node} data dir deleted");
                    trial.marks.insert(name.clone(), Mark { at_us: at, how });
                }
                Ok(format!("{node}: data dir deleted"))
            }
            Step::AwaitRole(a) => {
                let node = self.resolve(&a.target, trial).await?.node;
                let timeout = a
                    .timeout_ms
                    .map_or(self.options.leader_timeout, Duration::from_millis);
                let (metrics, at) = self.await_role(node, a.role, timeout).await?;
                if let Some(name) = &a.mark {
                    trial.marks.insert(
                        name.clone(),
                        Mark {
                            at_us: at,
                            how: format!("first poll showing {node} as {:?}", a.role),
                        },
                    );
                }
                Ok(format!(
                    "{node} is {} in term {} (leader {})",
                    metrics.state,
                    metrics.current_term,
                    metrics
                        .current_leader
                        .map_or("none".into(), |l| l.to_string())
                ))
            }
            Step::AssertLeaderChanged(a) => {
                let from = self.resolve(&a.from, trial).await?;
                let to = self.resolve(&a.to, trial).await?;
                if from.node == to.node {
                    bail!("leader did not change: {} before and after", from.node);
                }
                if to.term <= from.term {
                    bail!(
                        "new leader {} is in term {}, not above the old leader's term {}",
                        to.node,
                        to.term,
                        from.term
                    );
                }
                Ok(format!(
                    "{} (term {}) -> {} (term {})",
                    from.node, from.term, to.node, to.term
                ))
            }
            Step::Measure(a) => {
                let from = trial
                    .marks
                    .get(&a.from)
                    .with_context(|| format!("mark '{}' was not recorded", a.from))?;
                let to = trial
                    .marks
                    .get(&a.to)
                    .with_context(|| format!("mark '{}' was not recorded", a.to))?;
                if to.at_us < from.at_us {
                    bail!(
                        "'{}' ({}) precedes '{}' ({}) by {} µs",
                        a.to,
                        to.how,
                        a.from,
                        from.how,
                        from.at_us - to.at_us
                    );
                }
                let value_us = to.at_us - from.at_us;
                trial.floor.push((from.at_us, to.at_us));
                trial.windows.push(crate::record::Window {
                    name: a.name.trim_end_matches("_ms").to_string(),
                    from_us: from.at_us,
                    to_us: to.at_us,
                });
                trial.samples.push(Sample {
                    name: a.name.clone(),
                    value_us,
                    how: format!("{} → {}", from.how, to.how),
                });
                Ok(format!("{} = {:.1} ms", a.name, value_us as f64 / 1000.0))
            }
            Step::Bind(a) => {
                let b = self.resolve(&a.target, trial).await?;
                let note = format!("@{} = {}", a.bind, b.node);
                trial.bindings.insert(a.bind.clone(), b);
                Ok(note)
            }
            Step::Deploy(a) => {
                let base = match &a.via {
                    Some(t) => {
                        let node = self.resolve(t, trial).await?.node;
                        self.backend.endpoint(node)
                    }
                    None => {
                        let leader = self.resolve(&Target::Leader, trial).await?.node;
                        self.backend.endpoint(leader)
                    }
                };
                let timeout = a.timeout_ms.map_or(DEPLOY_TIMEOUT, Duration::from_millis);
                let (status, info) = self.deploy(&base, &a.group, &a.pipelines, timeout).await?;
                let placed: Vec<String> = info
                    .placements
                    .iter()
                    .map(|p| {
                        format!(
                            "{} on {}",
                            p.pipeline_name,
                            p.worker_id.as_deref().unwrap_or("none")
                        )
                    })
                    .collect();
                trial
                    .values
                    .insert(format!("deploy_{}", a.group), status.clone());
                Ok(format!(
                    "group {} {status} via {base}; running: {}",
                    a.group,
                    placed.join(", ")
                ))
            }
            Step::Publish(a) => {
                let rig = self.rig()?;
                let window = rig.publisher.publish_burst(a.count).await?;
                let acked = {
                    let ledger = rig.ledger.lock().unwrap_or_else(|p| p.into_inner());
                    ledger.counts(window.clone())
                };
                trial.extend_window(window.clone());
                Ok(format!(
                    "seq {}..{}: {} published, {} expected to match, {} unacknowledged",
                    window.start, window.end, acked.published, acked.expected, acked.unknown
                ))
            }
            Step::TrafficStart(a) => {
                let rig = self.rig_mut()?;
                if rig.paced.is_some() {
                    bail!("background traffic is already running");
                }
                rig.paced = Some(rig.publisher.start_paced(a.rate_per_s));
                Ok(format!("publishing {} events/s", a.rate_per_s))
            }
            Step::TrafficStop(_) => {
                let rig = self.rig_mut()?;
                let handle = rig
                    .paced
                    .take()
                    .context("no background traffic is running")?;
                let window = handle.stop().await?;
                trial.extend_window(window.clone());
                Ok(format!(
                    "stopped; seq {}..{} ({} events)",
                    window.start,
                    window.end,
                    window.end - window.start
                ))
            }
            Step::AwaitDelivery(a) => {
                let window = trial
                    .window
                    .clone()
                    .context("nothing was published in this trial")?;
                let timeout = a.timeout_ms.map_or(DELIVERY_TIMEOUT, Duration::from_millis);
                let counts = self
                    .rig()?
                    .collector
                    .await_delivery(window, timeout)
                    .await?;
                Ok(format!(
                    "{}/{} expected events delivered",
                    counts.delivered, counts.expected
                ))
            }
            Step::AssertCounts(a) => {
                let window = trial
                    .window
                    .clone()
                    .context("nothing was published in this trial")?;
                let c = self
                    .rig()?
                    .ledger
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .counts(window);
                let mut wrong = Vec::new();
                if let Some(e) = a.expected {
                    if c.expected != e {
                        wrong.push(format!(
                            "expected {} events, the ledger expects {}",
                            e, c.expected
                        ));
                    }
                }
                for (name, want, got) in [
                    ("lost", a.lost, c.lost),
                    ("duplicated", a.duplicated, c.duplicated),
                    ("unexpected", a.unexpected, c.unexpected),
                ] {
                    if want != got {
                        wrong.push(format!("{name} = {got}, want {want}"));
                    }
                }
                let summary = describe_counts(&c);
                if wrong.is_empty() {
                    Ok(summary)
                } else {
                    bail!("{} ({summary})", wrong.join("; "))
                }
            }
            Step::AwaitWorkerStatus(a) => {
                let b = self.resolve(&a.target, trial).await?;
                let id = b.node.to_string();
                let want = match a.status {
                    WorkerStatusName::Ready => WorkerStatus::Ready,
                    WorkerStatusName::Unhealthy => WorkerStatus::Unhealthy,
                    WorkerStatusName::Draining => WorkerStatus::Draining,
                };
                let timeout = a
                    .timeout_ms
                    .map_or(self.options.leader_timeout, Duration::from_millis);
                self.await_worker_status(&id, want, timeout).await?;
                let since = trial.last_fault_us;
                let mark = self
                    .earliest_event(since, |k| matches!(k, ClusterEventKind::WorkerStatusChanged { worker_id, status, .. } if *worker_id == id && *status == want))
                    .await
                    .unwrap_or_else(|| Mark { at_us: now_us(), how: format!("first poll showing {id} {want}") });
                let note = format!("{id} is {want} ({})", mark.how);
                if let Some(name) = &a.mark {
                    trial.marks.insert(
                        name.clone(),
                        Mark {
                            how: format!("{id} {want} committed ({})", mark.how),
                            ..mark
                        },
                    );
                }
                Ok(note)
            }
            Step::AwaitPlacementOff(a) => {
                let b = self.resolve(&a.target, trial).await?;
                let victim = b.node.to_string();
                if b.hosted.is_empty() {
                    bail!("{victim} hosted no pipeline when it was resolved: nothing to fail over");
                }
                let timeout = a
                    .timeout_ms
                    .map_or(self.options.leader_timeout, Duration::from_millis);
                let placed = self.await_moved(&victim, &b.hosted, timeout).await?;
                let since = trial.last_fault_us;
                let mut latest: Option<Mark> = None;
                for (group, pipeline, worker, epoch) in &placed {
                    let m = self
                        .earliest_event(since, |k| matches!(k, ClusterEventKind::PipelineRunning { group: g, pipeline: p, worker_id: w, epoch: e, .. } if g == group && p == pipeline && w == worker && e == epoch))
                        .await
                        .unwrap_or_else(|| Mark { at_us: now_us(), how: "first poll showing it running".into() });
                    if latest.as_ref().is_none_or(|l| m.at_us > l.at_us) {
                        latest = Some(Mark { how: format!("last of {} pipelines of {victim} running elsewhere: {group}/{pipeline} on {worker} ({})", placed.len(), m.how), ..m });
                    }
                }
                let moved: Vec<String> = placed
                    .iter()
                    .map(|(g, p, w, e)| format!("{g}/{p} -> {w} (epoch {e})"))
                    .collect();
                if let (Some(name), Some(m)) = (&a.mark, latest) {
                    trial.marks.insert(name.clone(), m);
                }
                Ok(moved.join(", "))
            }
            Step::AwaitWsConnections(a) => {
                let timeout = a
                    .timeout_ms
                    .map_or(self.options.leader_timeout, Duration::from_millis);
                let seen = self.await_ws(&a.expect, a.total, timeout).await?;
                if let Some(name) = &a.bind {
                    trial.values.insert(name.clone(), seen.clone());
                }
                Ok(seen)
            }
            Step::Hold(a) => {
                let start = match &a.since {
                    Some(m) => {
                        trial
                            .marks
                            .get(m)
                            .with_context(|| format!("mark '{m}' was not recorded"))?
                            .at_us
                    }
                    None => now_us(),
                };
                let until = start + a.ms * 1000;
                let now = now_us();
                if until > now {
                    tokio::time::sleep(Duration::from_micros(until - now)).await;
                }
                trial.floor.push((start, until));
                Ok(format!(
                    "held until {:.1} s after {}",
                    a.ms as f64 / 1000.0,
                    a.since.as_deref().unwrap_or("the step began")
                ))
            }
            Step::AssertWorkersReady(a) => {
                let list: WorkerList = self.get_any("/api/v1/cluster/workers").await?;
                let ready = list
                    .workers
                    .iter()
                    .filter(|w| w.status == WorkerStatus::Ready)
                    .count() as u64;
                if ready != a.count {
                    let seen: Vec<String> = list
                        .workers
                        .iter()
                        .map(|w| format!("{} {}", w.id, w.status))
                        .collect();
                    bail!(
                        "{ready} of {} workers ready, want {} ({})",
                        list.workers.len(),
                        a.count,
                        seen.join(", ")
                    );
                }
                if let Some(m) = &a.since {
                    let since = trial
                        .marks
                        .get(m)
                        .with_context(|| format!("mark '{m}' was not recorded"))?
                        .at_us;
                    if let Some(mark) = self
                        .earliest_event(since, |k| {
                            matches!(
                                k,
                                ClusterEventKind::WorkerStatusChanged {
                                    status: WorkerStatus::Unhealthy,
                                    ..
                                }
                            )
                        })
                        .await
                    {
                        bail!("a worker was declared unhealthy after '{m}' ({})", mark.how);
                    }
                }
                Ok(format!(
                    "{ready} workers ready{}",
                    a.since.as_ref().map_or(String::new(), |m| format!(
                        ", none declared unhealthy since {m}"
                    ))
                ))
            }
            Step::AssertTopology(a) => {
                let topology: Topology = self.get_any("/api/v1/cluster/topology").await?;
                let workers: WorkerList = self.get_any("/api/v1/cluster/workers").await?;
                let ready: HashSet<&str> = workers
                    .workers
                    .iter()
                    .filter(|w| w.status == WorkerStatus::Ready)
                    .map(|w| w.id.as_str())
                    .collect();
                let pipelines: Vec<String> = topology
                    .groups
                    .iter()
                    .flat_map(|g| g.pipelines.iter().map(move |p| (g, p)))
                    .map(|(g, p)| {
                        format!(
                            "{}/{} {} on {} (epoch {})",
                            g.group_name,
                            p.name,
                            p.status,
                            p.worker_id.as_deref().unwrap_or("none"),
                            p.epoch
                        )
                    })
                    .collect();
                let healthy = topology
                    .groups
                    .iter()
                    .flat_map(|g| &g.pipelines)
                    .filter(|p| {
                        p.status == "running"
                            && p.worker_id.as_deref().is_some_and(|w| ready.contains(w))
                    })
                    .count() as u64;
                if pipelines.len() as u64 != a.pipelines || healthy != a.pipelines {
                    bail!(
                        "want {} pipelines each running on a ready worker; have {}: {}",
                        a.pipelines,
                        pipelines.len(),
                        pipelines.join(", ")
                    );
                }
                Ok(pipelines.join(", "))
            }
            Step::CountWs(a) => {
                let node = self.resolve(&a.target, trial).await?.node;
                let url = format!("{}/health", self.backend.endpoint(node));
                let want = match (&a.expect, &a.one_less_than) {
                    (Some(n), _) => Some(*n),
                    (None, Some(name)) => {
                        let before: u64 = trial
                            .values
                            .get(name)
                            .and_then(|v| v.parse().ok())
                            .with_context(|| format!("no count recorded as '{name}'"))?;
                        Some(
                            before
                                .checked_sub(1)
                                .with_context(|| format!("'{name}' is 0"))?,
                        )
                    }
                    (None, None) => None,
                };
                let timeout = a
                    .timeout_ms
                    .map_or(self.options.leader_timeout, Duration::from_millis);
                let deadline = tokio::time::Instant::now() + timeout;
                let count = loop {
                    let health: Health = self.probe.get(url.clone()).await?;
                    if want.is_none_or(|e| e == health.ws_connections) {
                        break health.ws_connections;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        bail!(
                            "{node} holds {} worker links, not {want:?}, after {} ms",
                            health.ws_connections,
                            timeout.as_millis()
                        );
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                };
                trial.values.insert(a.bind.clone(), count.to_string());
                Ok(format!("{node} holds {count} worker links"))
            }
            Step::AwaitHealthy(a) => {
                let timeout = a
                    .timeout_ms
                    .map_or(self.options.leader_timeout, Duration::from_millis);
                let mut notes = Vec::new();
                for t in &a.targets {
                    let node = self.resolve(t, trial).await?.node;
                    let h = self.await_healthy(node, timeout).await?;
                    notes.push(format!(
                        "{node}: {} ({}, leader {})",
                        h.status,
                        h.raft_state,
                        h.current_leader.map_or("none".into(), |l| l.to_string())
                    ));
                }
                Ok(notes.join("; "))
            }
        }
    }

    /// Coordinators the backend reports running, with their endpoints.
    fn live_coordinators(&self) -> Vec<(NodeName, String)> {
        self.backend
            .nodes()
            .into_iter()
            .filter(|n| matches!(n, NodeName::Coordinator(_)))
            .filter(|n| self.backend.state(*n) == NodeState::Running)
            .map(|n| (n, self.backend.endpoint(n)))
            .collect()
    }

    async fn resolve(&mut self, target: &Target, trial: &Trial) -> anyhow::Result<Binding> {
        match target {
            Target::Coordinator(n) => Ok(Binding::node(NodeName::Coordinator(*n))),
            Target::Worker(n) => {
                let node = NodeName::Worker(*n);
                let hosted = self.hosted_by(&node.to_string()).await.unwrap_or_default();
                Ok(Binding {
                    node,
                    term: 0,
                    hosted,
                })
            }
            Target::Broker => Ok(Binding::node(NodeName::Broker)),
            Target::Bound(name) => trial
                .bindings
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow!("@{name} is not bound")),
            Target::Leader => {
                let (node, term, _) = self
                    .await_leader(&HashSet::new(), 0, self.options.leader_timeout)
                    .await?;
                Ok(Binding {
                    node,
                    term,
                    hosted: Vec::new(),
                })
            }
            Target::Follower => {
                let (leader, _, _) = self
                    .await_leader(&HashSet::new(), 0, self.options.leader_timeout)
                    .await?;
                let followers: Vec<NodeName> = self
                    .live_coordinators()
                    .into_iter()
                    .map(|(n, _)| n)
                    .filter(|n| *n != leader)
                    .collect();
                let node = *followers
                    .choose(&mut self.rng)
                    .ok_or_else(|| anyhow!("no live follower (leader {leader})"))?;
                Ok(Binding::node(node))
            }
            Target::WorkerHosting(pipeline) => {
                let topology: Topology = self.get_any("/api/v1/cluster/topology").await?;
                let worker = topology
                    .groups
                    .iter()
                    .flat_map(|g| &g.pipelines)
                    .find(|p| p.name == *pipeline)
                    .with_context(|| format!("no pipeline named '{pipeline}' is deployed"))?
                    .worker_id
                    .clone()
                    .with_context(|| format!("pipeline '{pipeline}' is placed on no worker"))?;
                let node = worker_node(&worker)?;
                let hosted = self.hosted_by(&worker).await?;
                Ok(Binding {
                    node,
                    term: 0,
                    hosted,
                })
            }
            Target::HomeOf(inner) => {
                let inner: Target = inner.parse().map_err(|e: String| anyhow!(e))?;
                let worker = Box::pin(self.resolve(&inner, trial))
                    .await?
                    .node
                    .to_string();
                let list: WorkerList = self.get_any("/api/v1/cluster/workers").await?;
                let w = list
                    .workers
                    .iter()
                    .find(|w| w.id == worker)
                    .with_context(|| format!("worker {worker} is not registered"))?;
                let c = w
                    .link_coordinator
                    .with_context(|| format!("{worker} holds no link to any coordinator"))?;
                Ok(Binding::node(NodeName::Coordinator(c as u32)))
            }
        }
    }

    /// Wait until a leader not in `excluded`, in a term ≥ `min_term`, is reported by every live
    /// coordinator that answers (at least a quorum of the whole cluster) and confirms it itself.
    /// Returns the leader, its term, and the earliest moment any coordinator recorded it.
    async fn await_leader(
        &mut self,
        excluded: &HashSet<NodeName>,
        min_term: u64,
        timeout: Duration,
    ) -> anyhow::Result<(NodeName, u64, Mark)> {
        let quorum = self.backend.spec().coordinators as usize / 2 + 1;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let live = self.live_coordinators();
            let answers = self.probe.raft_metrics_all(&live).await;
            let polled_at = now_us();
            if let Some((leader, term)) = agreed_leader(&answers, quorum, excluded, min_term) {
                let mark = self
                    .leader_event_time(&live, leader, term)
                    .await
                    .unwrap_or(Mark {
                        at_us: polled_at,
                        how: "first poll showing the leader (no event log)".into(),
                    });
                return Ok((NodeName::Coordinator(leader as u32), term, mark));
            }
            if tokio::time::Instant::now() >= deadline {
                let last_seen = describe(&answers);
                let names: Vec<String> = live.iter().map(|(n, _)| n.to_string()).collect();
                let not: Vec<String> = excluded.iter().map(ToString::to_string).collect();
                bail!(
                    "no leader{}{} agreed by [{}] within {} ms (last seen: {last_seen})",
                    if not.is_empty() {
                        String::new()
                    } else {
                        format!(" other than {}", not.join(", "))
                    },
                    if min_term > 0 {
                        format!(" in term ≥ {min_term}")
                    } else {
                        String::new()
                    },
                    names.join(", "),
                    timeout.as_millis()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The earliest `leader_changed` event for (`leader`, `term`) across the given nodes' logs.
    async fn leader_event_time(
        &self,
        live: &[(NodeName, String)],
        leader: u64,
        term: u64,
    ) -> Option<Mark> {
        let pages = self.probe.events_all(live).await;
        pages
            .into_iter()
            .filter_map(|(node, page)| {
                let page = page.ok()?;
                page.events
                    .iter()
                    .find(|e| {
                        matches!(e.kind, ClusterEventKind::LeaderChanged { term: t, leader: Some(l) } if t == term && l == leader)
                    })
                    .map(|e| (node, e.ts_ms))
            })
            .min_by_key(|(_, ts)| *ts)
            .map(|(node, ts_ms)| Mark {
                at_us: ts_ms * 1000,
                how: format!("earliest leader_changed event (leader {leader}, term {term}), on {node}"),
            })
    }

    /// Wait until `node` reports `role` with a known leader and, when it is a follower, holds
    /// the leader's whole log: a rejoined node that still lags is not "back" (and would make the
    /// next election asymmetric).
    async fn await_role(
        &mut self,
        node: NodeName,
        role: Role,
        timeout: Duration,
    ) -> anyhow::Result<(RaftMetrics, WallUs)> {
        let want = match role {
            Role::Leader => RaftRole::Leader,
            Role::Follower => RaftRole::Follower,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let live = self.live_coordinators();
            let answers = self.probe.raft_metrics_all(&live).await;
            let mine = answers.iter().find(|(n, _)| *n == node).map(|(_, a)| a);
            let seen = match mine {
                Some(Ok(m)) if m.state == want && m.current_leader.is_some() => {
                    let leader = answers.iter().find_map(|(_, a)| {
                        a.as_ref().ok().filter(|l| {
                            Some(l.id) == m.current_leader && l.state == RaftRole::Leader
                        })
                    });
                    match leader {
                        Some(l) if m.last_log_index >= l.last_log_index => {
                            return Ok((m.clone(), now_us()))
                        }
                        Some(l) => format!(
                            "{} term {}, log at {:?} behind the leader's {:?}",
                            m.state, m.current_term, m.last_log_index, l.last_log_index
                        ),
                        None => format!(
                            "{} term {}, its leader {:?} not confirmed",
                            m.state, m.current_term, m.current_leader
                        ),
                    }
                }
                Some(Ok(m)) => format!(
                    "{} term {} leader {:?}",
                    m.state, m.current_term, m.current_leader
                ),
                Some(Err(e)) => format!("unreachable: {e:#}"),
                None => "not running".into(),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{node} did not become a caught-up {want} within {} ms (last seen: {seen})",
                    timeout.as_millis()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Wait until a node answers its API.
    async fn await_answering(&mut self, node: NodeName, timeout: Duration) -> anyhow::Result<()> {
        let base = self.backend.endpoint(node);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let answer = match node {
                NodeName::Coordinator(_) => self.probe.raft_metrics(&base).await.map(|_| ()),
                NodeName::Worker(_) => self
                    .probe
                    .get::<serde_json::Value>(format!("{base}/health"))
                    .await
                    .map(|_| ()),
                NodeName::Broker => {
                    let (host, port) = self.backend.mqtt();
                    tokio::net::TcpStream::connect((host.as_str(), port))
                        .await
                        .map(|_| ())
                        .map_err(anyhow::Error::from)
                }
            };
            let err = match answer {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if self.backend.state(node) == NodeState::Down {
                bail!("{node} exited while starting (see logs/{node}.log): {err:#}");
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{node} did not answer {base}/raft/metrics within {} ms (last: {err:#})",
                    timeout.as_millis()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Every fault has its heal: resume paused nodes, start nodes that are down.
    pub async fn heal(&mut self) -> anyhow::Result<()> {
        if let Some(handle) = self.traffic.as_mut().and_then(|r| r.paced.take()) {
            handle.stop().await?;
        }
        for node in std::mem::take(&mut self.partitioned) {
            self.backend.heal(node).await?;
        }
        for node in self.backend.nodes() {
            match self.backend.state(node) {
                NodeState::Paused => {
                    self.backend.resume(node).await?;
                }
                NodeState::Down => {
                    self.backend.start(node).await?;
                    self.await_answering(node, self.options.start_timeout)
                        .await?;
                }
                NodeState::Running | NodeState::NotStarted => {}
            }
        }
        Ok(())
    }

    /// Stop every node.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(rig) = self.traffic.take() {
            if let Some(handle) = rig.paced {
                let _ = handle.stop().await;
            }
            rig.publisher.stop().await;
            rig.collector.stop().await;
        }
        self.backend.shutdown().await
    }

    fn rig(&self) -> anyhow::Result<&TrafficRig> {
        self.traffic
            .as_ref()
            .context("no traffic: the cluster has no broker and workers, or it was not started")
    }

    fn rig_mut(&mut self) -> anyhow::Result<&mut TrafficRig> {
        self.traffic
            .as_mut()
            .context("no traffic: the cluster has no broker and workers, or it was not started")
    }

    /// Connect the collector (first: rumqttd only keeps outputs for filters with a subscriber)
    /// and the publisher to the broker.
    async fn start_traffic(&mut self) -> anyhow::Result<TrafficRig> {
        let (host, port) = self.backend.mqtt();
        let ledger = Arc::new(Mutex::new(Ledger::new()));
        let seed = self.options.seed;
        let collector = Collector::start(
            &host,
            port,
            &format!("harness-collector-{seed:x}"),
            "e2e/output",
            ledger.clone(),
        )
        .await?;
        let publisher = Publisher::connect(
            &host,
            port,
            &format!("harness-publisher-{seed:x}"),
            ledger.clone(),
            Arc::new(AtomicU64::new(1)),
        )
        .await?;
        Ok(TrafficRig {
            ledger,
            publisher,
            collector,
            paced: None,
        })
    }

    /// GET a path from the first live coordinator that answers (reads are served by followers).
    async fn get_any<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let mut last = anyhow!("no live coordinator");
        for (_, base) in self.live_coordinators() {
            match self.probe.get(format!("{base}{path}")).await {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// (group, pipeline) pairs placed on `worker_id` now.
    async fn hosted_by(&self, worker_id: &str) -> anyhow::Result<Vec<(String, String)>> {
        let topology: Topology = self.get_any("/api/v1/cluster/topology").await?;
        Ok(topology
            .groups
            .iter()
            .flat_map(|g| g.pipelines.iter().map(move |p| (g, p)))
            .filter(|(_, p)| p.worker_id.as_deref() == Some(worker_id))
            .map(|(g, p)| (g.group_name.clone(), p.name.clone()))
            .collect())
    }

    /// The earliest event matching `want` decided at or after `since_us`, across the event logs
    /// of every live coordinator.
    async fn earliest_event(
        &self,
        since_us: WallUs,
        want: impl Fn(&ClusterEventKind) -> bool,
    ) -> Option<Mark> {
        let live = self.live_coordinators();
        let since_ms = since_us / 1000;
        self.probe
            .events_all(&live)
            .await
            .into_iter()
            .filter_map(|(node, page)| {
                let page = page.ok()?;
                page.events
                    .iter()
                    // A node replaying or catching up applies old decisions late: judge by when
                    // each change was decided, time it by when this node applied it.
                    .filter(|e| e.kind.decided_ms().unwrap_or(e.ts_ms) >= since_ms && want(&e.kind))
                    .map(|e| (node, e.ts_ms))
                    .min_by_key(|(_, ts)| *ts)
            })
            .min_by_key(|(_, ts)| *ts)
            .map(|(node, ts_ms)| Mark {
                at_us: ts_ms * 1000,
                how: format!("earliest matching event on {node}"),
            })
    }

    async fn deploy(
        &mut self,
        base: &str,
        group: &str,
        pipelines: &[String],
        timeout: Duration,
    ) -> anyhow::Result<(String, GroupInfo)> {
        let (host, port) = self.backend.mqtt();
        let connector = Connector {
            name: "mqtt_1".into(),
            connector_type: "mqtt".into(),
            params: [
                ("host".to_string(), serde_json::json!(host)),
                ("port".to_string(), serde_json::json!(port)),
            ]
            .into(),
        };
        let _: (reqwest::StatusCode, Connector) = self
            .probe
            .post(&format!("{base}/api/v1/cluster/connectors"), &connector)
            .await?;
        let def = GroupDef {
            name: group.into(),
            pipelines: pipelines
                .iter()
                .map(|p| {
                    Ok(PipelineDef {
                        name: p.clone(),
                        source: seed_pipeline_source(p)?,
                        worker_affinity: None,
                        replicas: 1,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            routes: vec![],
        };
        let (status, _): (reqwest::StatusCode, GroupInfo) = self
            .probe
            .post(&format!("{base}/api/v1/cluster/pipeline-groups"), &def)
            .await?;
        let status = if status == reqwest::StatusCode::CREATED {
            "created"
        } else {
            "already deployed (idempotent)"
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let info: anyhow::Result<GroupInfo> = self
                .get_any(&format!("/api/v1/cluster/pipeline-groups/{group}"))
                .await;
            let seen = match info {
                Ok(info) if info.placements.iter().all(|p| p.status == "running") => {
                    return Ok((status.into(), info))
                }
                Ok(info) => info
                    .placements
                    .iter()
                    .map(|p| format!("{}: {}", p.pipeline_name, p.status))
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "group {group} not running within {} ms (last seen: {seen})",
                    timeout.as_millis()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn await_worker_status(
        &self,
        id: &str,
        want: WorkerStatus,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = match self.get_any::<WorkerList>("/api/v1/cluster/workers").await {
                Ok(list) => match list.workers.iter().find(|w| w.id == id) {
                    Some(w) if w.status == want => return Ok(()),
                    Some(w) => format!("{id} is {}", w.status),
                    None => format!("{id} is not registered"),
                },
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{id} not {want} within {} ms (last seen: {seen})",
                    timeout.as_millis()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Wait until every pipeline in `hosted` runs on a worker other than `victim`; returns
    /// (group, pipeline, worker, epoch) of each.
    async fn await_moved(
        &self,
        victim: &str,
        hosted: &[(String, String)],
        timeout: Duration,
    ) -> anyhow::Result<Vec<(String, String, String, u64)>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = match self.get_any::<Topology>("/api/v1/cluster/topology").await {
                Ok(t) => {
                    let mut done = Vec::new();
                    let mut waiting = Vec::new();
                    for (group, pipeline) in hosted {
                        let p = t
                            .groups
                            .iter()
                            .filter(|g| g.group_name == *group)
                            .flat_map(|g| &g.pipelines)
                            .find(|p| p.name == *pipeline);
                        match p {
                            Some(p)
                                if p.status == "running"
                                    && p.worker_id.as_deref().is_some_and(|w| w != victim) =>
                            {
                                done.push((
                                    group.clone(),
                                    pipeline.clone(),
                                    p.worker_id.clone().unwrap_or_default(),
                                    p.epoch,
                                ));
                            }
                            Some(p) => waiting.push(format!(
                                "{group}/{pipeline}: {} on {}",
                                p.status,
                                p.worker_id.as_deref().unwrap_or("none")
                            )),
                            None => waiting.push(format!("{group}/{pipeline}: gone")),
                        }
                    }
                    if waiting.is_empty() {
                        return Ok(done);
                    }
                    waiting.join(", ")
                }
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "pipelines of {victim} not running elsewhere within {} ms (last seen: {seen})",
                    timeout.as_millis()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn await_ws(
        &self,
        expect: &BTreeMap<String, u64>,
        total: Option<u64>,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            let mut ok = true;
            if let Some(want) = total {
                let mut sum = 0;
                for (node, base) in self.live_coordinators() {
                    match self.probe.get::<Health>(format!("{base}/health")).await {
                        Ok(h) => {
                            sum += h.ws_connections;
                            seen.push(format!("{node}: {} WS", h.ws_connections));
                        }
                        Err(_) => seen.push(format!("{node}: unreachable")),
                    }
                }
                ok &= sum == want;
                seen.push(format!("total {sum}"));
            }
            for (name, want) in expect {
                let target: Target = name.parse().map_err(|e: String| anyhow!(e))?;
                let Target::Coordinator(n) = target else {
                    bail!("'{name}' is not a coordinator")
                };
                let base = self.backend.endpoint(NodeName::Coordinator(n));
                match self.probe.get::<Health>(format!("{base}/health")).await {
                    Ok(h) => {
                        ok &= h.ws_connections == *want;
                        seen.push(format!("coord-{n}: {} WS", h.ws_connections));
                    }
                    Err(_) => {
                        ok = false;
                        seen.push(format!("coord-{n}: unreachable"));
                    }
                }
            }
            let seen = seen.join(", ");
            if ok {
                return Ok(seen);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "worker links not as expected within {} ms (last seen: {seen})",
                    timeout.as_millis()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn await_healthy(&self, node: NodeName, timeout: Duration) -> anyhow::Result<Health> {
        let base = self.backend.endpoint(node);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = match self.probe.get::<Health>(format!("{base}/health")).await {
                Ok(h) if h.current_leader.is_some() && h.status != "critical" => return Ok(h),
                Ok(h) => format!("{} with leader {:?}", h.status, h.current_leader),
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{node} not healthy within {} ms (last seen: {seen})",
                    timeout.as_millis()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// The leader every answering coordinator reports, if it is not excluded, its term is high
/// enough, a quorum answered, and the leader itself answered as leader of that term.
fn agreed_leader(
    answers: &[(NodeName, anyhow::Result<RaftMetrics>)],
    quorum: usize,
    excluded: &HashSet<NodeName>,
    min_term: u64,
) -> Option<(u64, u64)> {
    let ok: Vec<&RaftMetrics> = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .collect();
    if ok.len() < quorum {
        return None;
    }
    let leader = ok[0].current_leader?;
    let term = ok[0].current_term;
    if excluded.contains(&NodeName::Coordinator(leader as u32)) || term < min_term {
        return None;
    }
    let all_agree = ok
        .iter()
        .all(|m| m.current_leader == Some(leader) && m.current_term == term);
    let confirmed = ok
        .iter()
        .any(|m| m.id == leader && m.state == RaftRole::Leader);
    (all_agree && confirmed).then_some((leader, term))
}

/// Fill a detail template: `{binding}` → the bound node's number, `{name_ms}` → seconds.
fn render_details(template: &str, trial: &Trial) -> String {
    let mut out = template.to_string();
    for name in placeholders(template) {
        let value = if let Some(b) = trial.bindings.get(name) {
            match b.node {
                NodeName::Coordinator(n) => n.to_string(),
                worker => worker.to_string(),
            }
        } else if let Some(s) = trial.samples.iter().find(|s| s.name == name) {
            format!("{:.1}s", s.value_us as f64 / 1e6)
        } else if let Some(v) = trial.values.get(name) {
            v.clone()
        } else {
            "?".into()
        };
        out = out.replace(&format!("{{{name}}}"), &value);
    }
    out
}

fn skipped(phase: &Phase, trial: u32, trials: u32, blocked: &[&String]) -> TrialRecord {
    let names: Vec<&str> = blocked.iter().map(|s| s.as_str()).collect();
    TrialRecord {
        id: phase.id.clone(),
        name: phase.name.clone(),
        description: phase.description.clone(),
        trial,
        trials,
        status: Status::Fail,
        started_us: now_us(),
        duration_us: 0,
        floor_us: 0,
        windows: vec![],
        details: format!("not run: prerequisite {} failed", names.join(", ")),
        error: Some(format!("not run: prerequisite {} failed", names.join(", "))),
        steps: vec![],
        samples: vec![],
        bindings: BTreeMap::new(),
        events: None,
    }
}

/// Total length of the union of `intervals`, clipped to [start, end].
fn union_length(intervals: &[(WallUs, WallUs)], start: WallUs, end: WallUs) -> u64 {
    let mut v: Vec<(WallUs, WallUs)> = intervals
        .iter()
        .map(|&(a, b)| (a.max(start), b.min(end)))
        .filter(|(a, b)| a < b)
        .collect();
    v.sort();
    let mut total = 0;
    let mut current: Option<(WallUs, WallUs)> = None;
    for (a, b) in v {
        current = match current {
            Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                total += cb - ca;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    total + current.map_or(0, |(a, b)| b - a)
}

/// `worker-3` → the backend's node.
fn worker_node(worker_id: &str) -> anyhow::Result<NodeName> {
    worker_id
        .strip_prefix("worker-")
        .and_then(|n| n.parse().ok())
        .map(NodeName::Worker)
        .with_context(|| format!("worker id '{worker_id}' is not one of this backend's workers"))
}

/// The seed's pipeline `sensor_filter_N`: events of `e2e/input/N` above 50.0 to `e2e/output`.
pub fn seed_pipeline_source(name: &str) -> anyhow::Result<String> {
    let n: u32 = name
        .strip_prefix("sensor_filter_")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("'{name}' is not a seed pipeline (sensor_filter_N)"))?;
    Ok(format!(
        "event SensorReading {{ sensor_id: str, temperature: float, seq: int }}\n\
         stream Input = SensorReading.from(mqtt_1, topic: \"e2e/input/{n}\")\n\
         stream HighTemp = Input.where(temperature > 50.0)\n\
         stream Output = HighTemp.to(mqtt_1, topic: \"e2e/output\")\n"
    ))
}

fn describe_counts(c: &Counts) -> String {
    let per: Vec<String> = c
        .per_pipeline
        .iter()
        .map(|(p, x)| format!("{p}: {}/{}", x.delivered, x.expected))
        .collect();
    format!(
        "{}/{} delivered, {} lost, {} duplicated, {} unexpected, {} unknown [{}]",
        c.delivered,
        c.expected,
        c.lost,
        c.duplicated,
        c.unexpected,
        c.unknown,
        per.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, state: RaftRole, term: u64, leader: Option<u64>) -> RaftMetrics {
        RaftMetrics {
            id,
            state,
            current_term: term,
            current_leader: leader,
            last_applied: None,
            last_log_index: None,
            commit_index: None,
            membership: vec![1, 2, 3],
        }
    }

    #[test]
    fn a_leader_counts_only_when_agreed_confirmed_and_not_excluded() {
        use RaftRole::*;
        let c = NodeName::Coordinator;
        let answers = vec![
            (c(2), Ok(m(2, Leader, 4, Some(2)))),
            (c(3), Ok(m(3, Follower, 4, Some(2)))),
        ];
        assert_eq!(agreed_leader(&answers, 2, &HashSet::new(), 0), Some((2, 4)));
        assert_eq!(
            agreed_leader(&answers, 2, &HashSet::new(), 5),
            None,
            "term too low"
        );
        assert_eq!(
            agreed_leader(&answers, 2, &[c(2)].into(), 0),
            None,
            "excluded"
        );
        let split = vec![
            (c(2), Ok(m(2, Leader, 4, Some(2)))),
            (c(3), Ok(m(3, Follower, 3, Some(1)))),
        ];
        assert_eq!(
            agreed_leader(&split, 2, &HashSet::new(), 0),
            None,
            "disagree"
        );
        let unconfirmed = vec![
            (c(2), Ok(m(2, Follower, 4, Some(1)))),
            (c(3), Ok(m(3, Follower, 4, Some(1)))),
        ];
        assert_eq!(
            agreed_leader(&unconfirmed, 2, &HashSet::new(), 0),
            None,
            "leader silent"
        );
        let one = vec![
            (c(2), Ok(m(2, Leader, 4, Some(2)))),
            (c(3), Err(anyhow!("down"))),
        ];
        assert_eq!(
            agreed_leader(&one, 2, &HashSet::new(), 0),
            None,
            "no quorum answered"
        );
    }

    #[test]
    fn floor_is_the_union_of_protocol_intervals() {
        // Two overlapping failovers count once; a hold apart adds; parts outside the trial do not.
        let intervals = [(10, 50), (30, 60), (80, 90), (0, 12), (95, 200)];
        assert_eq!(
            union_length(&intervals, 5, 100),
            (60 - 5) + (90 - 80) + (100 - 95)
        );
        assert_eq!(union_length(&[], 0, 100), 0);
    }

    #[test]
    fn details_render_nodes_and_seconds() {
        let mut t = Trial::default();
        t.bindings.insert(
            "old".into(),
            Binding {
                node: NodeName::Coordinator(1),
                term: 2,
                hosted: vec![],
            },
        );
        t.samples.push(Sample {
            name: "election_ms".into(),
            value_us: 5_234_000,
            how: String::new(),
        });
        assert_eq!(
            render_details("old leader: node {old}, election: {election_ms}", &t),
            "old leader: node 1, election: 5.2s"
        );
    }
}
