//! `nemesis`: a seeded random schedule of faults (kill, stop, pause, partition, restart) over
//! the leader, followers, workers and pipeline-hosting workers, under whatever traffic runs.
//! The schedule is drawn up front from the seed ([`schedule`], a pure function), so the same
//! command replays it; which node a fault hits is resolved when it starts (the leader then).
//! At most `max_concurrent` faults at once, and at most a minority of coordinators, so a quorum
//! stays. Every fault ends (restart, resume, heal) by the end of the window; then the cluster
//! must converge (one agreed leader, every worker ready, every pipeline running on a ready
//! worker) within `converge_ms`. `assert_counts` and `assert_invariants` follow in the phase.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use anyhow::{bail, Context};
use cluster::api::model::WorkerStatus;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::partition::links_of;
use super::trial::Trial;
use super::Runner;
use crate::backend::cuts::{self, Cuts};
use crate::backend::{now_us, Backend, NodeName, NodeState};
use crate::poll::{poll_until, Poll};
use crate::record::Sample;
use crate::step::{NemesisArgs, NemesisFault, NemesisTarget};

/// One planned fault: when (ms from the nemesis's start), how long, what, on what kind of node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub at_ms: u64,
    pub len_ms: u64,
    pub kind: NemesisFault,
    pub target: NemesisTarget,
}

/// The schedule a seed gives: gaps and lengths drawn uniformly from their ranges; a draw that
/// would exceed `max_concurrent` faults at once is dropped; a coordinator target while a
/// minority of coordinators is already faulted becomes a worker target (or is dropped). Every
/// fault ends by `duration_ms`.
pub fn schedule(seed: u64, a: &NemesisArgs, duration_ms: u64, coordinators: u32) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds = a.faults.clone().unwrap_or(NemesisFault::ALL.to_vec());
    let targets = a.targets.clone().unwrap_or(NemesisTarget::ALL.to_vec());
    let worker_targets: Vec<NemesisTarget> = targets
        .iter()
        .copied()
        .filter(|t| !t.is_coordinator())
        .collect();
    let minority = (coordinators.saturating_sub(1) / 2) as usize;
    let mut out: Vec<Planned> = Vec::new();
    let mut t = 0;
    loop {
        t += rng.random_range(a.gap_ms[0]..=a.gap_ms[1]);
        if t >= duration_ms {
            break;
        }
        let kind = *kinds.choose(&mut rng).expect("validated: kinds not empty");
        let mut target = *targets
            .choose(&mut rng)
            .expect("validated: targets not empty");
        let len = match kind {
            NemesisFault::Restart => 0,
            _ => rng.random_range(a.fault_ms[0]..=a.fault_ms[1]),
        };
        let active: Vec<&Planned> = out
            .iter()
            .filter(|p| p.at_ms <= t && t < p.at_ms + p.len_ms)
            .collect();
        if active.len() >= a.max_concurrent {
            continue;
        }
        if target.is_coordinator()
            && active.iter().filter(|p| p.target.is_coordinator()).count() >= minority
        {
            match worker_targets.choose(&mut rng) {
                Some(w) => target = *w,
                None => continue,
            }
        }
        out.push(Planned {
            at_ms: t,
            len_ms: len.min(duration_ms - t),
            kind,
            target,
        });
    }
    out
}

/// A fault in force: its node, and for a partition the links it cut.
#[derive(Debug, Clone)]
struct Applied {
    node: NodeName,
    kind: NemesisFault,
    links: Cuts,
}

impl<B: Backend> Runner<B> {
    pub(super) async fn nemesis(
        &mut self,
        a: &NemesisArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let duration = self.options.nemesis_ms.unwrap_or(a.duration_ms);
        // Each nemesis step of a run gets its own seed from the run's: the same command draws
        // the same schedules, whatever other steps drew from the runner's generator.
        let seed = self
            .options
            .seed
            .wrapping_add(0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(self.nemesis_runs + 1));
        self.nemesis_runs += 1;
        let plan = schedule(seed, a, duration, self.backend.spec().coordinators);
        let replay = format!("replay: {} (nemesis seed {seed})", self.options.replay);
        let mut lines = vec![format!(
            "{} faults planned over {duration} ms (seed {seed})",
            plan.len()
        )];
        let mut counts: BTreeMap<&'static str, u32> = BTreeMap::new();
        match self
            .run_schedule(&plan, trial, &mut lines, &mut counts)
            .await
        {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!("nemesis schedule so far:\n{}", lines.join("\n"));
                return Err(e.context(replay));
            }
        }
        let healed_us = now_us();
        let converged = self
            .converge(Duration::from_millis(a.converge_ms))
            .await
            .with_context(|| replay.clone())?;
        trial.samples.push(Sample {
            name: "converge_ms".into(),
            value_us: converged - healed_us,
            how: "last heal → first poll showing one agreed leader, every worker ready, every pipeline running on a ready worker".into(),
            method: "poll".into(),
            resolution_us: crate::poll::POLL_INTERVAL.as_micros() as u64,
            floor: None,
        });
        let kinds: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        trial
            .values
            .insert("nemesis".into(), format!("faults: {}", kinds.join(", ")));
        lines.push(format!(
            "converged {:.1} s after the last heal; {replay}",
            (converged - healed_us) as f64 / 1e6
        ));
        // A nested list in results.md: one line per fault start and end.
        Ok(lines.join("\n  - "))
    }

    async fn run_schedule(
        &mut self,
        plan: &[Planned],
        trial: &mut Trial,
        lines: &mut Vec<String>,
        counts: &mut BTreeMap<&'static str, u32>,
    ) -> anyhow::Result<()> {
        let start = tokio::time::Instant::now();
        // Ends before starts at the same instant, so `max_concurrent` holds.
        let mut moments: Vec<(u64, bool, usize)> = plan
            .iter()
            .enumerate()
            .flat_map(|(i, p)| [(p.at_ms, false, i), (p.at_ms + p.len_ms, true, i)])
            .filter(|(_, end, i)| !*end || plan[*i].kind != NemesisFault::Restart)
            .collect();
        moments.sort_by_key(|&(t, end, i)| (t, !end, i));
        let mut active: BTreeMap<usize, Applied> = BTreeMap::new();
        for (t, end, i) in moments {
            tokio::time::sleep_until(start + Duration::from_millis(t)).await;
            let offset = start.elapsed().as_millis();
            if end {
                if let Some(applied) = active.remove(&i) {
                    let what = self.end_fault(&applied, i).await?;
                    lines.push(format!("#{i} {offset:>6} ms: {what}"));
                }
                continue;
            }
            let p = plan[i];
            match self.pick(p.target, &active).await {
                Ok(node) => {
                    let (applied, what) = self.start_fault(p.kind, node, i).await?;
                    trial.last_fault_us = now_us();
                    *counts.entry(kind_name(p.kind)).or_default() += 1;
                    lines.push(format!(
                        "#{i} {offset:>6} ms: {} {} → {node} for {} ms: {what}",
                        kind_name(p.kind),
                        target_name(p.target),
                        p.len_ms
                    ));
                    if let Some(applied) = applied {
                        active.insert(i, applied);
                    }
                }
                Err(why) => lines.push(format!(
                    "#{i} {offset:>6} ms: skipped {} {}: {why}",
                    kind_name(p.kind),
                    target_name(p.target)
                )),
            }
        }
        // Every fault ended on schedule; anything left (none by construction) ends now.
        let left: Vec<(usize, Applied)> = std::mem::take(&mut active).into_iter().collect();
        for (i, applied) in left {
            let what = self.end_fault(&applied, i).await?;
            lines.push(format!("#{i} end: {what}"));
        }
        Ok(())
    }

    /// The node a target kind names now, not already under a fault; `Err` says why none.
    async fn pick(
        &mut self,
        target: NemesisTarget,
        active: &BTreeMap<usize, Applied>,
    ) -> Result<NodeName, String> {
        let busy: BTreeSet<NodeName> = active.values().map(|a| a.node).collect();
        if target.is_coordinator() && busy.iter().any(|n| matches!(n, NodeName::Coordinator(_))) {
            return Err("a coordinator is already faulted (a quorum must stay)".into());
        }
        let free = |n: &NodeName| !busy.contains(n);
        let candidates: Vec<NodeName> = match target {
            NemesisTarget::Leader | NemesisTarget::Follower => {
                let (leader, _, _) = self
                    .await_leader(&HashSet::new(), 0, 0, self.options.leader_timeout)
                    .await
                    .map_err(|e| format!("no agreed leader: {e:#}"))?;
                if target == NemesisTarget::Leader {
                    vec![leader]
                } else {
                    self.live_coordinators()
                        .into_iter()
                        .map(|(n, _)| n)
                        .filter(|n| *n != leader)
                        .collect()
                }
            }
            NemesisTarget::Worker => self
                .backend
                .nodes()
                .into_iter()
                .filter(|n| matches!(n, NodeName::Worker(_)))
                .collect(),
            NemesisTarget::Hosting => {
                let topology = self
                    .topology()
                    .await
                    .map_err(|e| format!("no topology: {e:#}"))?;
                let hosts: BTreeSet<String> = topology
                    .groups
                    .iter()
                    .flat_map(|g| g.pipelines.iter())
                    .filter_map(|p| p.worker_id.clone())
                    .collect();
                self.backend
                    .nodes()
                    .into_iter()
                    .filter(|n| hosts.contains(&n.to_string()))
                    .collect()
            }
        };
        let candidates: Vec<NodeName> = candidates
            .into_iter()
            .filter(free)
            .filter(|n| self.backend.state(*n) == NodeState::Running)
            .collect();
        candidates
            .choose(&mut self.rng)
            .copied()
            .ok_or_else(|| "every such node is already faulted".into())
    }

    async fn start_fault(
        &mut self,
        kind: NemesisFault,
        node: NodeName,
        i: usize,
    ) -> anyhow::Result<(Option<Applied>, String)> {
        let tag = format!("nemesis #{i}");
        let mut links = Cuts::new();
        let (at, how) = match kind {
            NemesisFault::Kill => (self.backend.kill(node).await?, "SIGKILL".to_string()),
            NemesisFault::Stop => (self.backend.stop(node).await?, "SIGTERM".to_string()),
            NemesisFault::Pause => (self.backend.pause(node).await?, "SIGSTOP".to_string()),
            NemesisFault::Partition => {
                let peers: BTreeSet<NodeName> = self
                    .backend
                    .nodes()
                    .into_iter()
                    .filter(|n| matches!(n, NodeName::Coordinator(_)) && *n != node)
                    .collect();
                links = links_of(node, &peers, false);
                let mut next = self.cuts.clone();
                next.extend(links.iter().copied());
                let at = self.backend.cut(&next).await?;
                self.cuts = next;
                (at, format!("cut {}", cuts::describe(&links)))
            }
            NemesisFault::Restart => {
                if self.backend.state(node) != NodeState::Down {
                    self.backend.stop(node).await?;
                }
                let at = self.start_node(node).await?;
                self.record_fault(at, "restart", node, &format!("{tag}: stopped and spawned"));
                self.await_answering(node, self.options.start_timeout)
                    .await?;
                return Ok((None, "stopped, spawned and answering".into()));
            }
        };
        self.record_fault(at, kind_name(kind), node, &format!("{tag}: {how}"));
        Ok((Some(Applied { node, kind, links }), how))
    }

    async fn end_fault(&mut self, a: &Applied, i: usize) -> anyhow::Result<String> {
        let tag = format!("nemesis #{i}");
        let node = a.node;
        match a.kind {
            NemesisFault::Kill | NemesisFault::Stop => {
                let at = self.start_node(node).await?;
                self.record_fault(at, "start", node, &format!("{tag}: spawned"));
                self.await_answering(node, self.options.start_timeout)
                    .await?;
                Ok(format!("{node} spawned and answering"))
            }
            NemesisFault::Pause => {
                let at = self.backend.resume(node).await?;
                self.record_fault(at, "resume", node, &format!("{tag}: SIGCONT"));
                Ok(format!("{node} resumed"))
            }
            NemesisFault::Partition => {
                let mut next = self.cuts.clone();
                next.retain(|l| !a.links.contains(l));
                let at = self.backend.cut(&next).await?;
                self.cuts = next;
                let how = format!("healed {}", cuts::describe(&a.links));
                self.record_fault(at, "heal", node, &format!("{tag}: {how}"));
                Ok(how)
            }
            NemesisFault::Restart => Ok(String::new()),
        }
    }

    /// One agreed leader, every worker ready, every deployed pipeline running once on a ready
    /// worker; returns when that was first seen.
    async fn converge(&mut self, bound: Duration) -> anyhow::Result<u64> {
        let started = std::time::Instant::now();
        self.await_leader(&HashSet::new(), 0, 0, bound)
            .await
            .context("converge: no agreed leader after the nemesis")?;
        let left = bound.saturating_sub(started.elapsed());
        let expected = self.backend.spec().workers as usize;
        let seen = poll_until(
            "one leader, every worker ready, every pipeline running on a ready worker",
            left,
            async || {
                let (workers, topology) = match (self.worker_list().await, self.topology().await)
                {
                    (Ok(w), Ok(t)) => (w, t),
                    (Err(e), _) | (_, Err(e)) => return Ok(Poll::Pending(format!("{e:#}"))),
                };
                let ready: BTreeSet<&str> = workers
                    .workers
                    .iter()
                    .filter(|w| w.status == WorkerStatus::Ready)
                    .map(|w| w.id.as_str())
                    .collect();
                let pipelines: Vec<_> = topology
                    .groups
                    .iter()
                    .flat_map(|g| g.pipelines.iter())
                    .collect();
                let running = pipelines
                    .iter()
                    .filter(|p| {
                        p.status == "running"
                            && p.worker_id.as_deref().is_some_and(|w| ready.contains(w))
                    })
                    .count();
                Ok(if ready.len() == expected && running == pipelines.len() {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!(
                        "{} of {expected} workers ready, {running} of {} pipelines running on a ready worker",
                        ready.len(),
                        pipelines.len()
                    ))
                })
            },
        )
        .await?;
        if seen.at_us == 0 {
            bail!("converge: no time");
        }
        Ok(seen.at_us)
    }
}

impl<B: Backend> Runner<B> {
    /// `assert_invariants {bound_ms}`: the checkers of [`crate::check::invariants`] over every
    /// coordinator's event log read so far (refreshed now) and the faults in the history.
    pub(super) async fn assert_invariants(
        &mut self,
        a: &crate::step::InvariantArgs,
    ) -> anyhow::Result<String> {
        let live = self.live_coordinators();
        self.events
            .refresh(&self.probe, &live)
            .await
            .context("cannot read every live coordinator's event log")?;
        let faults = match &self.traffic {
            Some(rig) => crate::traffic::publisher::lock(&rig.ledger)
                .history()
                .faults
                .clone(),
            None => Vec::new(),
        };
        let d = self.backend.spec().detector;
        let bound_ms = a.bound_ms.unwrap_or(d.grace_ms + d.ping_dead_ms + 2000);
        let events: Vec<(String, &cluster::api::model::ClusterEvent)> = self
            .events
            .events()
            .map(|(n, e)| (n.to_string(), e))
            .collect();
        let count = events.len();
        let violations = crate::check::invariants::check(events, &faults, bound_ms);
        if !violations.is_empty() {
            bail!(
                "{} invariant violation(s): {}",
                violations.len(),
                violations.join("; ")
            );
        }
        Ok(format!(
            "a term's leader ids only grow, growing epochs with one owner each, no unhealthy verdict outside a fault window + {bound_ms} ms: held over {count} events of every coordinator's log and {} faults",
            faults.len()
        ))
    }
}

fn kind_name(k: NemesisFault) -> &'static str {
    match k {
        NemesisFault::Kill => "kill",
        NemesisFault::Stop => "stop",
        NemesisFault::Pause => "pause",
        NemesisFault::Partition => "partition",
        NemesisFault::Restart => "restart",
    }
}

fn target_name(t: NemesisTarget) -> &'static str {
    match t {
        NemesisTarget::Leader => "leader",
        NemesisTarget::Follower => "follower",
        NemesisTarget::Worker => "worker",
        NemesisTarget::Hosting => "hosting worker",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> NemesisArgs {
        NemesisArgs {
            duration_ms: 60_000,
            faults: None,
            targets: None,
            fault_ms: [1000, 5000],
            gap_ms: [500, 3000],
            max_concurrent: 2,
            converge_ms: 30_000,
        }
    }

    #[test]
    fn a_seed_gives_one_schedule_within_its_bounds() {
        let a = args();
        let one = schedule(7, &a, a.duration_ms, 3);
        assert_eq!(
            one,
            schedule(7, &a, a.duration_ms, 3),
            "same seed, same schedule"
        );
        assert_ne!(
            one,
            schedule(8, &a, a.duration_ms, 3),
            "another seed, another one"
        );
        assert!(one.len() >= 10, "{} faults in 60 s", one.len());
        for p in &one {
            assert!(
                p.at_ms + p.len_ms <= a.duration_ms,
                "{p:?} ends after the window"
            );
            if p.kind != NemesisFault::Restart {
                assert!(p.len_ms <= a.fault_ms[1], "{p:?}");
            }
            let at_once: Vec<&Planned> = one
                .iter()
                .filter(|q| q.at_ms <= p.at_ms && p.at_ms < q.at_ms + q.len_ms)
                .collect();
            assert!(at_once.len() <= a.max_concurrent, "{at_once:?}");
            assert!(
                at_once.iter().filter(|q| q.target.is_coordinator()).count() <= 1,
                "two coordinators at once: {at_once:?}"
            );
        }
        let kinds: BTreeSet<NemesisFault> = one.iter().map(|p| p.kind).collect();
        assert!(kinds.len() >= 4, "kinds drawn: {kinds:?}");
    }

    #[test]
    fn a_narrowed_schedule_draws_only_what_it_names() {
        let a = NemesisArgs {
            faults: Some(vec![NemesisFault::Pause]),
            targets: Some(vec![NemesisTarget::Worker]),
            ..args()
        };
        let plan = schedule(1, &a, a.duration_ms, 3);
        assert!(!plan.is_empty());
        assert!(plan
            .iter()
            .all(|p| p.kind == NemesisFault::Pause && p.target == NemesisTarget::Worker));
    }
}
