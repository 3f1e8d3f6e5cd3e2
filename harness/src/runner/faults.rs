//! Starting nodes and breaking them: start, kill, stop, pause, resume, partition, heal, restart;
//! and healing the whole cluster after a failed trial.

use std::time::Duration;

use anyhow::bail;

use super::trial::{Mark, Trial};
use super::Runner;
use crate::backend::{Backend, NodeName, NodeState, WallUs};
use crate::poll::{poll_until, Poll};
use crate::step::{FaultArgs, RestartArgs, StartArgs, Step};

impl<B: Backend> Runner<B> {
    pub(super) async fn start_cluster(&mut self, a: &StartArgs) -> anyhow::Result<String> {
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
                    self.start_node(node).await?;
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

    /// Start a node; a coordinator's event log begins again.
    pub(super) async fn start_node(&mut self, node: NodeName) -> anyhow::Result<WallUs> {
        let at = self.backend.start(node).await?;
        self.events.restarted(node);
        Ok(at)
    }

    /// kill | stop | pause | resume (partition and heal: `partition.rs`).
    pub(super) async fn fault(
        &mut self,
        step: &Step,
        a: &FaultArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let binding = self.resolve(&a.target, trial).await?;
        let node = binding.node;
        let docker = self.backend.name() == "docker";
        let pick = |process: &'static str, container: &'static str| {
            if docker {
                container
            } else {
                process
            }
        };
        let (at, how) = match step {
            Step::Kill(_) => (
                self.backend.kill(node).await?,
                pick("SIGKILL delivered", "container killed (SIGKILL)"),
            ),
            Step::Stop(_) => (
                self.backend.stop(node).await?,
                pick(
                    "SIGTERM delivered",
                    "container stopped (SIGTERM, then SIGKILL)",
                ),
            ),
            Step::Pause(_) => (
                self.backend.pause(node).await?,
                pick("SIGSTOP delivered", "container paused"),
            ),
            Step::Resume(_) => (
                self.backend.resume(node).await?,
                pick("SIGCONT delivered", "container unpaused"),
            ),
            other => bail!("'{}' is not a fault", other.action()),
        };
        self.record_fault(at, step.action(), node, how);
        if !matches!(step, Step::Resume(_)) {
            trial.last_fault_us = at;
        }
        if let Some(name) = &a.bind {
            trial.bindings.insert(name.clone(), binding);
        }
        trial.mark(&a.mark, Mark::action(at, format!("{how} to {node}")));
        Ok(format!("{node}: {how}"))
    }

    pub(super) async fn restart(
        &mut self,
        a: &RestartArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let node = self.resolve(&a.target, trial).await?.node;
        if self.backend.state(node) != NodeState::Down {
            self.backend.stop(node).await?;
        }
        let at = self.start_node(node).await?;
        self.record_fault(at, "restart", node, "spawned");
        trial.last_fault_us = trial.last_fault_us.max(at);
        let timeout = a
            .timeout_ms
            .map_or(self.options.start_timeout, Duration::from_millis);
        self.await_answering(node, timeout).await?;
        trial.mark(&a.mark, Mark::action(at, format!("{node} spawned")));
        Ok(format!("{node} restarted and answering"))
    }

    /// Wait until a node answers its API (the broker: accepts a TCP connection).
    pub(super) async fn await_answering(
        &mut self,
        node: NodeName,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let base = self.backend.endpoint(node);
        let what = match node {
            NodeName::Coordinator(_) => format!("{node} answering {base}/raft/metrics"),
            NodeName::Worker(_) => format!("{node} answering {base}/health"),
            NodeName::Broker => format!("{node} accepting MQTT connections at {base}"),
        };
        let ready = self.options.ready_paths.clone();
        poll_until(what, timeout, async || {
            let answer = match (node, &ready) {
                (NodeName::Coordinator(_), Some((path, _)))
                | (NodeName::Worker(_), Some((_, path))) => {
                    self.probe.get_ok(&format!("{base}{path}")).await
                }
                (NodeName::Coordinator(_), None) => {
                    self.probe.raft_metrics(&base).await.map(|_| ())
                }
                (NodeName::Worker(_), None) => self.probe.worker_health(&base).await.map(|_| ()),
                (NodeName::Broker, _) => {
                    let (host, port) = self.backend.mqtt();
                    tokio::net::TcpStream::connect((host.as_str(), port))
                        .await
                        .map(|_| ())
                        .map_err(anyhow::Error::from)
                }
            };
            if answer.is_ok() {
                return Ok(Poll::Ready(()));
            }
            if let Some(why) = self.backend.exited(node) {
                bail!("{node} exited while starting ({why})")
            }
            match answer {
                Ok(()) => Ok(Poll::Ready(())),
                Err(e) if self.backend.state(node) == NodeState::Down => {
                    bail!("{node} exited while starting (see logs/{node}.log): {e:#}")
                }
                Err(e) => Ok(Poll::Pending(format!("{e:#}"))),
            }
        })
        .await
        .map(|_| ())
    }

    /// Every fault has its heal: stop background traffic, reconnect what is partitioned, resume
    /// what is paused, start what is down.
    pub async fn heal(&mut self) -> anyhow::Result<()> {
        if let Some(handle) = self.traffic.as_mut().and_then(|r| r.paced.take()) {
            handle.stop().await?;
        }
        if !self.cuts.is_empty() {
            self.backend.cut(&Default::default()).await?;
            self.cuts.clear();
        }
        for node in self.backend.nodes() {
            match self.backend.state(node) {
                NodeState::Paused => {
                    self.backend.resume(node).await?;
                }
                NodeState::Down => {
                    self.start_node(node).await?;
                    self.await_answering(node, self.options.start_timeout)
                        .await?;
                }
                NodeState::Running | NodeState::NotStarted => {}
            }
        }
        Ok(())
    }

    /// `wipe`: delete a stopped node's data dir (a lost disk).
    pub(super) async fn wipe(
        &mut self,
        a: &crate::step::FaultArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let binding = self.resolve(&a.target, trial).await?;
        let node = binding.node;
        let at = self.backend.wipe(node).await?;
        self.record_fault(at, "wipe", node, "data dir deleted");
        if let Some(name) = &a.bind {
            trial.bindings.insert(name.clone(), binding);
        }
        trial.mark(
            &a.mark,
            Mark::action(at, format!("{node} data dir deleted")),
        );
        Ok(format!("{node}: data dir deleted"))
    }
}
