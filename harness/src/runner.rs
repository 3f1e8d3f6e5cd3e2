//! The runner: executes a plan of phases against a backend, step by step, recording what
//! happened. This file holds the one `match` on [`Step`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use cluster::api::model::{ClusterEventKind, RaftMetrics, RaftRole};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;

use crate::backend::{now_us, Backend, NodeName, NodeState, WallUs};
use crate::phase::{placeholders, Phase, Planned};
use crate::probe::{describe, Probe};
use crate::record::{Sample, Status, StepRecord, TrialRecord};
use crate::step::{Role, Step, Target};

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

/// A node remembered by `bind`, with the term in which it was seen leading (0 if not a leader).
#[derive(Debug, Clone, Copy)]
struct Binding {
    node: NodeName,
    term: u64,
}

/// Per-trial state: bindings, marks and samples.
#[derive(Debug, Default)]
struct Trial {
    bindings: HashMap<String, Binding>,
    marks: HashMap<String, Mark>,
    samples: Vec<Sample>,
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
}

impl<B: Backend> Runner<B> {
    pub fn new(backend: B, options: RunnerOptions) -> anyhow::Result<Self> {
        Ok(Runner {
            backend,
            probe: Probe::new()?,
            rng: StdRng::seed_from_u64(options.seed),
            options,
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
        let mut trial = Trial::default();
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
        let duration_us = now_us().saturating_sub(started_us);
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
            details,
            error,
            steps,
            samples: trial.samples,
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
                let mut started = Vec::new();
                for node in self.backend.nodes() {
                    if matches!(
                        self.backend.state(node),
                        NodeState::NotStarted | NodeState::Down
                    ) {
                        self.backend.start(node).await?;
                        started.push(node);
                    }
                }
                for &node in &started {
                    self.await_answering(node, timeout).await?;
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
                    trial
                        .bindings
                        .insert(name.clone(), Binding { node: leader, term });
                }
                let note = format!("leader {leader} in term {term} ({})", mark.how);
                if let Some(name) = &a.mark {
                    trial.marks.insert(name.clone(), mark);
                }
                Ok(note)
            }
            Step::Kill(a) | Step::Stop(a) | Step::Pause(a) | Step::Resume(a) => {
                let binding = self.resolve(&a.target, trial).await?;
                let node = binding.node;
                let (at, how) = match step {
                    Step::Kill(_) => (self.backend.kill(node).await?, "SIGKILL delivered"),
                    Step::Stop(_) => (self.backend.stop(node).await?, "SIGTERM delivered"),
                    Step::Pause(_) => (self.backend.pause(node).await?, "SIGSTOP delivered"),
                    _ => (self.backend.resume(node).await?, "SIGCONT delivered"),
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
                trial.samples.push(Sample {
                    name: a.name.clone(),
                    value_us,
                    how: format!("{} → {}", from.how, to.how),
                });
                Ok(format!("{} = {:.1} ms", a.name, value_us as f64 / 1000.0))
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
            Target::Coordinator(n) => Ok(Binding {
                node: NodeName::Coordinator(*n),
                term: 0,
            }),
            Target::Worker(n) => Ok(Binding {
                node: NodeName::Worker(*n),
                term: 0,
            }),
            Target::Broker => Ok(Binding {
                node: NodeName::Broker,
                term: 0,
            }),
            Target::Bound(name) => trial
                .bindings
                .get(name)
                .copied()
                .ok_or_else(|| anyhow!("@{name} is not bound")),
            Target::Leader => {
                let (node, term, _) = self
                    .await_leader(&HashSet::new(), 0, self.options.leader_timeout)
                    .await?;
                Ok(Binding { node, term })
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
                Ok(Binding { node, term: 0 })
            }
            Target::WorkerHosting(_) | Target::HomeOf(_) => {
                bail!("target '{target}' needs workers, which this cluster does not run yet")
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
            let err = match self.probe.raft_metrics(&base).await {
                Ok(_) => return Ok(()),
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
        self.backend.shutdown().await
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
                NodeName::Coordinator(n) | NodeName::Worker(n) => n.to_string(),
                NodeName::Broker => "broker".into(),
            }
        } else if let Some(s) = trial.samples.iter().find(|s| s.name == name) {
            format!("{:.1}s", s.value_us as f64 / 1e6)
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
        details: format!("not run: prerequisite {} failed", names.join(", ")),
        error: Some(format!("not run: prerequisite {} failed", names.join(", "))),
        steps: vec![],
        samples: vec![],
        bindings: BTreeMap::new(),
    }
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
    fn details_render_nodes_and_seconds() {
        let mut t = Trial::default();
        t.bindings.insert(
            "old".into(),
            Binding {
                node: NodeName::Coordinator(1),
                term: 2,
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
