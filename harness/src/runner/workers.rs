//! Workers, placements and links: a worker's committed status, its pipelines moving, worker
//! links per coordinator, coordinator health, and the topology.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use cluster::api::model::{ClusterEventKind, WorkerStatus};

use super::trial::{Hosted, Mark, Trial};
use super::Runner;
use crate::backend::{Backend, NodeName, WallUs};
use crate::poll::{poll_until, Observed, Poll};
use crate::step::{
    AssertTopologyArgs, AssertWorkersReadyArgs, AwaitHealthyArgs, AwaitPlacementOffArgs,
    AwaitWorkerStatusArgs, AwaitWsArgs, CountWsArgs, SpreadArgs, Target, WorkerStatusName,
};

impl<B: Backend> Runner<B> {
    /// The earliest event matching `want` decided at or after `since_us`, in the event logs of
    /// every live coordinator. Fails when a live coordinator's log cannot be read whole.
    pub(super) async fn earliest_event(
        &mut self,
        since_us: WallUs,
        want: impl Fn(&ClusterEventKind) -> bool,
    ) -> anyhow::Result<Option<Mark>> {
        if !self.options.event_log {
            bail!("the cluster profile declares no event log");
        }
        let live = self.live_coordinators();
        self.events.refresh(&self.probe, &live).await?;
        let since_ms = since_us / 1000;
        Ok(self
            .events
            .events()
            // A node replaying or catching up applies old decisions late: judge by when each
            // change was decided, time it by when this node applied it.
            .filter(|(_, e)| e.kind.decided_ms().unwrap_or(e.ts_ms) >= since_ms && want(&e.kind))
            .min_by_key(|(_, e)| e.ts_ms)
            .map(|(node, e)| Mark::event(e.ts_ms, format!("earliest matching event, on {node}"))))
    }

    /// A mark from the event logs when they have it, else the poll that saw the condition.
    async fn event_or_poll<T>(
        &mut self,
        seen: &Observed<T>,
        since_us: WallUs,
        what: &str,
        want: impl Fn(&ClusterEventKind) -> bool,
    ) -> Mark {
        match self.earliest_event(since_us, want).await {
            Ok(Some(m)) => Mark {
                how: format!("{what} ({})", m.how),
                ..m
            },
            Ok(None) => Mark::poll(
                seen.at_us,
                seen.resolution_us,
                format!("first poll showing {what} (no event in any log)"),
            ),
            Err(e) => Mark::poll(
                seen.at_us,
                seen.resolution_us,
                format!("first poll showing {what} ({e:#})"),
            ),
        }
    }

    pub(super) async fn await_worker_status_step(
        &mut self,
        a: &AwaitWorkerStatusArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let id = self.resolve(&a.target, trial).await?.node.to_string();
        let want = match a.status {
            WorkerStatusName::Ready => WorkerStatus::Ready,
            WorkerStatusName::Unhealthy => WorkerStatus::Unhealthy,
            WorkerStatusName::Draining => WorkerStatus::Draining,
        };
        let timeout = a
            .timeout_ms
            .map_or(self.options.leader_timeout, Duration::from_millis);
        let seen = poll_until(format!("{id} {want}"), timeout, async || {
            Ok(match self.worker_list().await {
                Ok(list) => match list.workers.iter().find(|w| w.id == id) {
                    Some(w) if w.status == want => Poll::Ready(()),
                    Some(w) => Poll::Pending(format!("{id} is {}", w.status)),
                    None => Poll::Pending(format!("{id} is not registered")),
                },
                Err(e) => Poll::Pending(format!("{e:#}")),
            })
        })
        .await?;
        let mark = self
            .event_or_poll(&seen, trial.last_fault_us, &format!("{id} {want} committed"), |k| {
                matches!(k, ClusterEventKind::WorkerStatusChanged { worker_id, status, .. } if *worker_id == id && *status == want)
            })
            .await;
        let note = format!("{id} is {want} ({})", mark.how);
        trial.mark(&a.mark, mark);
        Ok(note)
    }

    pub(super) async fn await_placement_off(
        &mut self,
        a: &AwaitPlacementOffArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let b = self.resolve(&a.target, trial).await?;
        let victim = b.node.to_string();
        let hosted = b.hosted.map_err(|e| {
            anyhow!("what {victim} hosted could not be read when it was resolved: {e}")
        })?;
        if hosted.is_empty() {
            bail!("{victim} hosted no pipeline when it was resolved: nothing to fail over");
        }
        let timeout = a
            .timeout_ms
            .map_or(self.options.leader_timeout, Duration::from_millis);
        let seen = self.await_moved(&victim, &hosted, timeout).await?;
        let since = trial.last_fault_us;
        let mut latest: Option<Mark> = None;
        for (h, worker, epoch) in &seen.value {
            let m = self
                .event_or_poll(&seen, since, &format!("{}/{} running on {worker}", h.group, h.pipeline), |k| {
                    matches!(k, ClusterEventKind::PipelineRunning { group: g, pipeline: p, worker_id: w, epoch: e, .. } if *g == h.group && *p == h.pipeline && w == worker && e == epoch)
                })
                .await;
            if latest.as_ref().is_none_or(|l| m.at_us > l.at_us) {
                latest = Some(m);
            }
        }
        let moved: Vec<String> = seen
            .value
            .iter()
            .map(|(h, w, e)| format!("{}/{} -> {w} (epoch {e})", h.group, h.pipeline))
            .collect();
        if let Some(m) = latest {
            let how = format!(
                "last of {} pipelines of {victim} running elsewhere: {}",
                seen.value.len(),
                m.how
            );
            trial.mark(&a.mark, Mark { how, ..m });
        }
        Ok(moved.join(", "))
    }

    /// Wait until every pipeline in `hosted` runs on a worker other than `victim`, at a newer
    /// epoch; returns each with its new worker and epoch.
    async fn await_moved(
        &self,
        victim: &str,
        hosted: &[Hosted],
        timeout: Duration,
    ) -> anyhow::Result<Observed<Vec<(Hosted, String, u64)>>> {
        let what = format!("pipelines of {victim} running elsewhere");
        poll_until(what, timeout, async || {
            let t = match self.topology().await {
                Ok(t) => t,
                Err(e) => return Ok(Poll::Pending(format!("{e:#}"))),
            };
            let mut done = Vec::new();
            let mut waiting = Vec::new();
            for h in hosted {
                let p = t
                    .groups
                    .iter()
                    .filter(|g| g.group_name == h.group)
                    .flat_map(|g| &g.pipelines)
                    .find(|p| p.name == h.pipeline);
                match p {
                    // Without pipeline status or epochs (a foreign profile), a move is judged by
                    // the worker the topology names; the report lists the fallback.
                    Some(p)
                        if (!self.options.pipeline_status || p.status == "running")
                            && (!self.options.placement_epochs || p.epoch > h.epoch)
                            && p.worker_id.as_deref().is_some_and(|w| w != victim) =>
                    {
                        done.push((h.clone(), p.worker_id.clone().unwrap_or_default(), p.epoch));
                    }
                    Some(p) => waiting.push(format!(
                        "{}/{}: {} on {} (epoch {})",
                        h.group,
                        h.pipeline,
                        p.status,
                        p.worker_id.as_deref().unwrap_or("none"),
                        p.epoch
                    )),
                    None => waiting.push(format!("{}/{}: gone", h.group, h.pipeline)),
                }
            }
            Ok(if waiting.is_empty() {
                Poll::Ready(done)
            } else {
                Poll::Pending(waiting.join(", "))
            })
        })
        .await
    }

    pub(super) async fn await_ws_step(
        &mut self,
        a: &AwaitWsArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let timeout = a
            .timeout_ms
            .map_or(self.options.leader_timeout, Duration::from_millis);
        let spec = self.backend.spec();
        let mut expect = a.expect.clone();
        if a.homed {
            for (c, n) in crate::topology::homes(spec.coordinators, spec.workers) {
                expect.insert(NodeName::Coordinator(c).to_string(), n);
            }
        }
        let total = a.total.map(|t| t.resolve(u64::from(spec.workers)));
        let seen = self.await_ws(&expect, total, timeout).await?;
        // The seed's topology asserts its 2/1/1 as the phase file says; others say what they
        // asserted instead.
        let seed = (spec.coordinators, spec.workers)
            == (
                crate::topology::SEED_COORDINATORS,
                crate::topology::SEED_WORKERS,
            );
        let seen = if a.homed && !seed {
            format!("{seen} (homed as configured: {})", describe_homes(&expect))
        } else {
            seen
        };
        if let Some(name) = &a.bind {
            trial.values.insert(name.clone(), seen.clone());
        }
        Ok(seen)
    }

    async fn await_ws(
        &self,
        expect: &BTreeMap<String, u64>,
        total: Option<u64>,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let mut wanted = Vec::new();
        for (name, want) in expect {
            let target: Target = name.parse().map_err(|e: String| anyhow!(e))?;
            let Target::Coordinator(n) = target else {
                bail!("'{name}' is not a coordinator")
            };
            wanted.push((NodeName::Coordinator(n), *want));
        }
        let seen = poll_until("worker links as expected", timeout, async || {
            let live = self.live_coordinators();
            let answers = self.probe.health_all(&live).await;
            let mut seen = Vec::new();
            let mut ok = true;
            let mut sum = 0;
            for (node, h) in &answers {
                match h {
                    Ok(h) => {
                        sum += h.ws_connections;
                        seen.push(format!("{node}: {} WS", h.ws_connections));
                    }
                    Err(_) => {
                        ok = false;
                        seen.push(format!("{node}: unreachable"));
                    }
                }
            }
            for (node, want) in &wanted {
                let got = answers
                    .iter()
                    .find(|(n, _)| n == node)
                    .and_then(|(_, h)| h.as_ref().ok())
                    .map(|h| h.ws_connections);
                ok &= got == Some(*want);
            }
            if let Some(want) = total {
                ok &= sum == want;
                seen.push(format!("total {sum}"));
            }
            let seen = seen.join(", ");
            Ok(if ok {
                Poll::Ready(seen)
            } else {
                Poll::Pending(seen)
            })
        })
        .await?;
        Ok(seen.value)
    }

    pub(super) async fn count_ws(
        &mut self,
        a: &CountWsArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let node = self.resolve(&a.target, trial).await?.node;
        let base = self.backend.endpoint(node);
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
        let what = match want {
            Some(n) => format!("{node} holding {n} worker links"),
            None => format!("{node} answering /health"),
        };
        let seen = poll_until(what, timeout, async || {
            Ok(match self.probe.health(&base).await {
                Ok(h) if want.is_none_or(|e| e == h.ws_connections) => {
                    Poll::Ready(h.ws_connections)
                }
                Ok(h) => Poll::Pending(format!("{} links", h.ws_connections)),
                Err(e) => Poll::Pending(format!("{e:#}")),
            })
        })
        .await?;
        trial.values.insert(a.bind.clone(), seen.value.to_string());
        Ok(format!("{node} holds {} worker links", seen.value))
    }

    /// Each target answers `/health` with the wanted status (default `healthy`) and names, as
    /// leader, the leader every live coordinator agrees on.
    pub(super) async fn await_healthy_step(
        &mut self,
        a: &AwaitHealthyArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let timeout = a
            .timeout_ms
            .map_or(self.options.leader_timeout, Duration::from_millis);
        let want = a.status.map_or("healthy", |s| s.as_str());
        let (leader, _, _) = self.await_leader(&HashSet::new(), 0, 0, timeout).await?;
        let NodeName::Coordinator(leader_id) = leader else {
            unreachable!("a leader is a coordinator")
        };
        let mut notes = Vec::new();
        for t in &a.targets {
            let node = self.resolve(t, trial).await?.node;
            let base = self.backend.endpoint(node);
            let what = format!("{node} {want} with leader {leader_id}");
            let h = poll_until(what, timeout, async || {
                Ok(match self.probe.health(&base).await {
                    // Without a leader in /health (a foreign profile), the leader is the one
                    // every coordinator's /raft/metrics agreed on just above.
                    Ok(h)
                        if h.status == want
                            && (!self.options.health_leader
                                || h.current_leader == Some(u64::from(leader_id))) =>
                    {
                        Poll::Ready(h)
                    }
                    Ok(h) => {
                        Poll::Pending(format!("{} with leader {:?}", h.status, h.current_leader))
                    }
                    Err(e) => Poll::Pending(format!("{e:#}")),
                })
            })
            .await?
            .value;
            notes.push(format!(
                "{node}: {} ({}, leader {leader_id})",
                h.status, h.raft_state
            ));
        }
        Ok(notes.join("; "))
    }

    pub(super) async fn assert_workers_ready(
        &mut self,
        a: &AssertWorkersReadyArgs,
        trial: &Trial,
    ) -> anyhow::Result<String> {
        let list = self.worker_list().await?;
        let ready = list
            .workers
            .iter()
            .filter(|w| w.status == WorkerStatus::Ready)
            .count() as u64;
        let want = a.count.resolve(u64::from(self.backend.spec().workers));
        if ready != want {
            let seen: Vec<String> = list
                .workers
                .iter()
                .map(|w| format!("{} {}", w.id, w.status))
                .collect();
            bail!(
                "{ready} of {} workers ready, want {want} ({})",
                list.workers.len(),
                seen.join(", ")
            );
        }
        if let Some(m) = &a.since {
            let since = trial.mark_at(m)?.at_us;
            let verdict = self
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
                .with_context(|| {
                    format!("cannot tell whether a worker was declared unhealthy since '{m}'")
                })?;
            if let Some(mark) = verdict {
                bail!("a worker was declared unhealthy after '{m}' ({})", mark.how);
            }
        }
        Ok(format!(
            "{ready} workers ready{}",
            a.since.as_ref().map_or(String::new(), |m| format!(
                ", none declared unhealthy since {m} (every live coordinator's event log read)"
            ))
        ))
    }

    pub(super) async fn assert_topology(
        &mut self,
        a: &AssertTopologyArgs,
        trial: &Trial,
    ) -> anyhow::Result<String> {
        let topology = self.topology().await?;
        let workers = self.worker_list().await?;
        let ready: HashSet<&str> = workers
            .workers
            .iter()
            .filter(|w| w.status == WorkerStatus::Ready)
            .map(|w| w.id.as_str())
            .collect();
        let all: Vec<_> = topology
            .groups
            .iter()
            .flat_map(|g| g.pipelines.iter().map(move |p| (g, p)))
            .collect();
        let described: Vec<String> = all
            .iter()
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
        let healthy = all
            .iter()
            .filter(|(_, p)| {
                p.status == "running" && p.worker_id.as_deref().is_some_and(|w| ready.contains(w))
            })
            .count() as u64;
        let want = a
            .pipelines
            .resolve(u64::from(self.backend.spec().pipelines));
        if all.len() as u64 != want || healthy != want {
            bail!(
                "want {want} pipelines each running on a ready worker; have {}: {}",
                all.len(),
                described.join(", ")
            );
        }
        // `kept_by = "@w"`: the pipelines @w hosted when it was bound are still on it, at the
        // same epoch (a worker back within the grace period keeps what it ran).
        if let Some(Target::Bound(name)) = &a.kept_by {
            let b = trial
                .bindings
                .get(name)
                .with_context(|| format!("@{name} is not bound"))?;
            let hosted = b
                .hosted
                .as_ref()
                .map_err(|e| anyhow!("what @{name} hosted could not be read: {e}"))?;
            if hosted.is_empty() {
                bail!("@{name} ({}) hosted no pipeline when it was bound", b.node);
            }
            let worker = b.node.to_string();
            for h in hosted {
                let now = all
                    .iter()
                    .find(|(g, p)| g.group_name == h.group && p.name == h.pipeline)
                    .map(|(_, p)| p);
                match now {
                    Some(p) if p.worker_id.as_deref() == Some(&*worker) && p.epoch == h.epoch => {}
                    Some(p) => bail!(
                        "{}/{} was on {worker} at epoch {}; now on {} at epoch {}",
                        h.group,
                        h.pipeline,
                        h.epoch,
                        p.worker_id.as_deref().unwrap_or("none"),
                        p.epoch
                    ),
                    None => bail!("{}/{} is gone", h.group, h.pipeline),
                }
            }
        }
        Ok(described.join(", "))
    }

    /// `spread`: while a ready worker hosts two or more pipelines and another hosts none, move
    /// one (the cluster's manual migrate) and wait until it runs there. Re-establishes "each
    /// pipeline on its own worker", which `worker-hosting:` targets of different pipelines
    /// assume, whatever earlier phases or trials did.
    pub(super) async fn spread(&mut self, a: &SpreadArgs) -> anyhow::Result<String> {
        let timeout = a
            .timeout_ms
            .map_or(self.options.leader_timeout, Duration::from_millis);
        let mut moves = Vec::new();
        loop {
            let topology = self.topology().await?;
            let workers = self.worker_list().await?;
            let mut load: BTreeMap<&str, Vec<(&str, &str)>> = workers
                .workers
                .iter()
                .filter(|w| w.status == WorkerStatus::Ready)
                .map(|w| (w.id.as_str(), Vec::new()))
                .collect();
            for g in &topology.groups {
                for p in &g.pipelines {
                    if let Some(list) = p.worker_id.as_deref().and_then(|w| load.get_mut(w)) {
                        list.push((g.group_name.as_str(), p.name.as_str()));
                    }
                }
            }
            let idle = load.iter().find(|(_, l)| l.is_empty()).map(|(w, _)| *w);
            let crowded = load
                .iter()
                .find(|(_, l)| l.len() > 1)
                .map(|(_, l)| l[l.len() - 1]);
            let (Some(to), Some((group, pipeline))) = (idle, crowded) else {
                break;
            };
            if moves.len() > topology.groups.iter().map(|g| g.pipelines.len()).sum() {
                bail!(
                    "spread does not converge (moves so far: {})",
                    moves.join(", ")
                );
            }
            let (group, pipeline, to) = (group.to_string(), pipeline.to_string(), to.to_string());
            let live = self.live_coordinators();
            let (_, base) = live.first().context("no live coordinator")?;
            self.probe.migrate(base, &group, &pipeline, &to).await?;
            poll_until(
                format!("{group}/{pipeline} running on {to}"),
                timeout,
                async || {
                    Ok(match self.topology().await {
                        Ok(t) => {
                            let now = t
                                .groups
                                .iter()
                                .filter(|g| g.group_name == group)
                                .flat_map(|g| &g.pipelines)
                                .find(|p| p.name == pipeline);
                            match now {
                                Some(p)
                                    if (!self.options.pipeline_status || p.status == "running")
                                        && p.worker_id.as_deref() == Some(&*to) =>
                                {
                                    Poll::Ready(())
                                }
                                Some(p) => Poll::Pending(format!(
                                    "{} on {}",
                                    p.status,
                                    p.worker_id.as_deref().unwrap_or("none")
                                )),
                                None => Poll::Pending("gone".into()),
                            }
                        }
                        Err(e) => Poll::Pending(format!("{e:#}")),
                    })
                },
            )
            .await?;
            moves.push(format!("{group}/{pipeline} -> {to}"));
        }
        Ok(if moves.is_empty() {
            "already spread: no ready worker hosts two pipelines while another hosts none".into()
        } else {
            format!("moved {}", moves.join(", "))
        })
    }
}

/// `coordinator-1 = 2, coordinator-2 = 1, ...`
fn describe_homes(expect: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = expect.iter().map(|(c, n)| format!("{c} = {n}")).collect();
    parts.join(", ")
}
