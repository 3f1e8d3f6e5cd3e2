//! The runner: executes a plan of phases against a backend, step by step, recording what
//! happened. This module holds the one `match` on [`Step`]; each arm calls the submodule that
//! owns that kind of step:
//! - [`trial`]: per-trial state (bindings, marks, samples), detail lines, the configured floor;
//! - [`targets`]: resolving `leader`, `worker-hosting:p`, `home-of:w`, `@name` to a node;
//! - [`faults`]: starting nodes, faults and restarts, healing after a failed trial;
//! - [`leader`]: leaders and Raft roles;
//! - [`workers`]: worker status, placements, links, topology, health;
//! - [`traffic`]: deploys, publishing, delivery and counts.
//!
//! Every wait is [`crate::poll::poll_until`]; every URL is built by [`crate::probe::Probe`].

mod faults;
mod fill;
mod isolation;
mod leader;
mod nemesis;
mod partition;
mod targets;
mod traffic;
mod trial;
mod workers;

use std::collections::HashSet;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::backend::{now_us, Backend, NodeName, NodeState};
use crate::figure::Timings;
use crate::phase::{Phase, Planned};
use crate::probe::{EventTail, Probe};
use crate::record::{Status, StepRecord, TrialRecord};
use crate::step::Step;
use crate::traffic::DrainSettings;

pub use crate::poll::POLL_INTERVAL;
pub use traffic::seed_pipeline_source;
use traffic::TrafficRig;
use trial::{skipped, Trial};

/// Settings of a runner.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub seed: u64,
    /// Default bound of waits for a leader or a role, when the step gives none.
    pub leader_timeout: Duration,
    /// Default bound for nodes to answer after (re)start.
    pub start_timeout: Duration,
    /// The drain every event verdict waits for (and the final drain).
    pub drain: DrainSettings,
    /// Readiness paths (coordinator, worker) of a foreign profile; `None`: the reference
    /// cluster's own probes (`/raft/metrics` parsed, worker `/health`).
    pub ready_paths: Option<(String, String)>,
    /// A foreign profile's field dialect (empty: the reference wire types as they are).
    pub dialect: crate::dialect::Dialect,
    /// Placements carry epochs (a move is a higher epoch); else judged by worker alone.
    pub placement_epochs: bool,
    /// The topology reports each pipeline's status; else a placement counts as running and
    /// the delivery counts that follow are what show it ran.
    pub pipeline_status: bool,
    /// The worker list names each worker's link holder; else `home-of` is the configured home.
    pub worker_links: bool,
    /// `/health` names the Raft leader; else `await_healthy` takes the one the coordinators'
    /// `/raft/metrics` agree on.
    pub health_leader: bool,
    /// The coordinators keep an event log (`/api/v1/cluster/events`); else marks are polls.
    pub event_log: bool,
    /// `--nemesis-ms`: overrides every nemesis step's duration (a longer soak).
    pub nemesis_ms: Option<u64>,
    /// `--fill-entries`: overrides every `fill_log` step's entry count.
    pub fill_entries: Option<u64>,
    /// The command that replays this run (printed when a nemesis fails).
    pub replay: String,
}

/// Default quiet period of a drain: copies that follow their original (a redelivery, a stale
/// owner's buffer) come within milliseconds on loopback; anything later is still charged to
/// its phase by the run-wide checker.
pub const DRAIN_QUIET: Duration = Duration::from_millis(250);

impl RunnerOptions {
    /// Defaults derived from the Raft timings: an election needs at most a few election timeouts
    /// (lease + randomized timeout + split votes), so 4 × max + 5 s is generous without hiding a hang.
    pub fn for_raft(seed: u64, election_max_ms: u64) -> Self {
        RunnerOptions {
            seed,
            leader_timeout: Duration::from_millis(4 * election_max_ms + 5_000),
            start_timeout: Duration::from_secs(30),
            ready_paths: None,
            dialect: Default::default(),
            placement_epochs: true,
            pipeline_status: true,
            worker_links: true,
            health_leader: true,
            event_log: true,
            drain: DrainSettings::quiet(DRAIN_QUIET),
            nemesis_ms: None,
            fill_entries: None,
            replay: String::new(),
        }
    }
}

pub struct Runner<B: Backend> {
    backend: B,
    probe: Probe,
    /// Everything read so far of every coordinator's event log.
    events: EventTail,
    options: RunnerOptions,
    rng: StdRng,
    traffic: Option<TrafficRig>,
    /// How the last deploy's write went when it was not accepted at once (its step's note).
    deploy_note: Option<String>,
    /// Links cut by `partition` and not healed yet.
    cuts: crate::backend::cuts::Cuts,
    /// Nemesis steps run so far (each draws its schedule from its own seed).
    nemesis_runs: u64,
}

impl<B: Backend> Runner<B> {
    pub fn new(backend: B, options: RunnerOptions) -> anyhow::Result<Self> {
        Ok(Runner {
            probe: Probe::new(backend.spec().api_key.clone())?
                .with_dialect(options.dialect.clone()),
            backend,
            events: EventTail::default(),
            rng: StdRng::seed_from_u64(options.seed),
            options,
            traffic: None,
            deploy_note: None,
            cuts: Default::default(),
            nemesis_runs: 0,
        })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The configuration figures' floors are computed from.
    fn timings(&self) -> Timings {
        let spec = self.backend.spec();
        Timings {
            raft: spec.raft,
            detector: (spec.workers > 0).then_some(spec.detector),
        }
    }

    /// Coordinators the backend reports running (not paused, not cut off from a majority of
    /// their peers), with endpoints: the ones every observation must be able to read.
    fn live_coordinators(&self) -> Vec<(NodeName, String)> {
        let cut_off = self.cut_off_coordinators();
        self.backend
            .nodes()
            .into_iter()
            .filter(|n| matches!(n, NodeName::Coordinator(_)))
            .filter(|n| self.backend.state(*n) == NodeState::Running)
            .filter(|n| !cut_off.contains(n))
            .map(|n| (n, self.backend.endpoint(n)))
            .collect()
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
        let mut trial = Trial::new(started_us);
        let spec = self.backend.spec();
        for (name, n) in [
            ("coordinators", spec.coordinators),
            ("workers", spec.workers),
            ("pipelines", spec.pipelines),
        ] {
            trial.values.insert(name.into(), n.to_string());
        }
        trial.events_from = self.history_rows();
        let metrics_before = self.metrics_boundary().await;
        let mut steps = Vec::new();
        let mut error = None;
        crate::progress::trial_started(&phase.id, &phase.name, trial_no, trials, phase.steps.len());
        for (index, step) in phase.steps.iter().enumerate() {
            let location = phase.step_locations.get(index).cloned().unwrap_or_default();
            let step_start = now_us();
            tracing::info!(%step, %location, "step");
            crate::progress::step_started(index, step.action(), &step.to_string());
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
            crate::progress::step_finished(
                ok,
                Duration::from_micros(now_us().saturating_sub(step_start)),
                &note,
            );
            if !ok {
                tracing::warn!(%step, %location, "step failed: {note}");
                error = Some(format!("{location}: {step}: {note}"));
                break;
            }
        }
        // The trial's verdict on its events: after a drain, on the history as it then stands.
        let verdict = self.trial_verdict(&trial, error.is_some()).await;
        if let Some(v) = verdict.as_ref().filter(|v| !v.passed()) {
            error.get_or_insert_with(|| {
                format!("events at the trial's end: {}", v.findings.join("; "))
            });
        }
        let metrics = crate::metrics::compare(&metrics_before, &self.metrics_boundary().await);
        if !metrics.contradictions.is_empty() {
            error.get_or_insert_with(|| {
                format!(
                    "a metric contradicts the harness's observation: {}",
                    metrics.contradictions.join("; ")
                )
            });
        }
        let ended_us = now_us();
        let events = verdict
            .as_ref()
            .filter(|_| trial.window.is_some())
            .map(|v| &v.counts);
        if let Some(c) = events {
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
        let mut record =
            trial.into_record(phase, trial_no, trials, ended_us, error, steps, verdict);
        record.metrics = Some(metrics);
        record
    }

    /// Every live node's `/metrics` (coordinators and workers not down or paused; a cut node is
    /// still reached, through a path the cuts leave alone),
    /// with the leader the coordinators agree on around the scrapes.
    async fn metrics_boundary(&self) -> crate::metrics::Boundary {
        let nodes: Vec<(NodeName, String)> = self
            .backend
            .nodes()
            .into_iter()
            .filter(|n| !matches!(n, NodeName::Broker))
            .filter(|n| self.backend.state(*n) == NodeState::Running)
            .map(|n| (n, self.backend.endpoint(n)))
            .collect();
        let coordinators = self.live_coordinators();
        let quorum = self.backend.spec().coordinators as usize / 2 + 1;
        let agreed = async || {
            let answers = self.probe.raft_metrics_all(&coordinators).await;
            leader::agreed_leader(&answers, quorum, &HashSet::new(), 0)
        };
        crate::metrics::boundary(&self.probe, &nodes, agreed).await
    }

    /// Execute one step. The one `match` on `Step`. Returns a note on what was observed.
    async fn run_step(&mut self, step: &Step, trial: &mut Trial) -> anyhow::Result<String> {
        match step {
            Step::StartCluster(a) => self.start_cluster(a).await,
            Step::Kill(a) | Step::Stop(a) | Step::Pause(a) | Step::Resume(a) => {
                self.fault(step, a, trial).await
            }
            Step::Partition(a) | Step::Heal(a) => self.partition_step(step, a, trial).await,
            Step::Restart(a) => self.restart(a, trial).await,
            Step::Wipe(a) => self.wipe(a, trial).await,
            Step::MeasureGap(a) => self.measure_gap(a, trial),
            Step::AwaitLeader(a) => self.await_leader_step(a, trial).await,
            Step::AwaitRole(a) => self.await_role_step(a, trial).await,
            Step::AssertLeaderChanged(a) => self.assert_leader_changed(a, trial).await,
            Step::Measure(a) => trial.measure(a, &self.timings()),
            Step::Bind(a) => {
                let b = self.resolve(&a.target, trial).await?;
                let note = format!("@{} = {}", a.bind, b.node);
                trial.bindings.insert(a.bind.clone(), b);
                Ok(note)
            }
            Step::Hold(a) => trial.hold(a).await,
            Step::Deploy(a) => self.deploy_step(a, trial).await,
            Step::Publish(a) => self.publish(a, trial).await,
            Step::TrafficStart(a) => self.traffic_start(a),
            Step::TrafficStop(_) => self.traffic_stop(trial).await,
            Step::AwaitDelivery(a) => self.await_delivery(a, trial).await,
            Step::AssertCounts(a) => self.assert_counts(a, trial).await,
            Step::AwaitWorkerStatus(a) => self.await_worker_status_step(a, trial).await,
            Step::AwaitPlacementOff(a) => self.await_placement_off(a, trial).await,
            Step::AwaitWsConnections(a) => self.await_ws_step(a, trial).await,
            Step::CountWs(a) => self.count_ws(a, trial).await,
            Step::AwaitHealthy(a) => self.await_healthy_step(a, trial).await,
            Step::AssertWorkersReady(a) => self.assert_workers_ready(a, trial).await,
            Step::AssertTopology(a) => self.assert_topology(a, trial).await,
            Step::Spread(a) => self.spread(a).await,
            Step::AssertWriteAnswered(a) => self.assert_write_answered(a, trial).await,
            Step::AssertNoMoves(a) => self.assert_no_moves(a, trial).await,
            Step::AwaitFenced(a) => self.await_fenced(a, trial).await,
            Step::Nemesis(a) => self.nemesis(a, trial).await,
            Step::AssertInvariants(a) => self.assert_invariants(a).await,
            Step::FillLog(a) => self.fill_log(a, trial).await,
        }
    }

    /// Disconnect the runner's publisher and collector (the cluster keeps running), so a driver
    /// of its own (`harness bench`) has the broker to itself.
    pub async fn stop_traffic(&mut self) {
        if let Some(rig) = self.traffic.take() {
            rig.stop().await;
        }
    }

    /// Stop every node.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(rig) = self.traffic.take() {
            rig.stop().await;
        }
        self.backend.shutdown().await
    }
}
