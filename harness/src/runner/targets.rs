//! Target resolution: `coordinator-2`, `worker-1`, `leader`, `follower`,
//! `worker-hosting:sensor_filter_1`, `home-of:worker-3`, `@name` → a node, at run time.

use std::collections::HashSet;

use anyhow::{anyhow, Context};
use cluster::api::model::{Topology, WorkerList};
use rand::seq::IndexedRandom;

use super::trial::{Binding, Hosted, Trial};
use super::Runner;
use crate::backend::{Backend, NodeName};
use crate::step::Target;

impl<B: Backend> Runner<B> {
    pub(super) async fn resolve(
        &mut self,
        target: &Target,
        trial: &Trial,
    ) -> anyhow::Result<Binding> {
        match target {
            Target::Coordinator(n) => Ok(Binding::node(NodeName::Coordinator(*n))),
            Target::Worker(n) => {
                let node = NodeName::Worker(*n);
                let hosted = self
                    .hosted_by(&node.to_string())
                    .await
                    .map_err(|e| format!("{e:#}"));
                Ok(Binding {
                    hosted,
                    ..Binding::node(node)
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
                    .await_leader(&HashSet::new(), 0, 0, self.options.leader_timeout)
                    .await?;
                Ok(Binding {
                    term,
                    ..Binding::node(node)
                })
            }
            Target::Follower => {
                let (leader, _, _) = self
                    .await_leader(&HashSet::new(), 0, 0, self.options.leader_timeout)
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
                let topology = self.topology().await?;
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
                let hosted = Ok(self.hosted_by(&worker).await?);
                Ok(Binding {
                    hosted,
                    ..Binding::node(node)
                })
            }
            Target::HomeOf(inner) => {
                let inner: Target = inner.parse().map_err(|e: String| anyhow!(e))?;
                let worker = Box::pin(self.resolve(&inner, trial))
                    .await?
                    .node
                    .to_string();
                let list = self.worker_list().await?;
                let w = list
                    .workers
                    .iter()
                    .find(|w| w.id == worker)
                    .with_context(|| format!("worker {worker} is not registered"))?;
                let c = match (w.link_coordinator, &inner) {
                    (Some(c), _) => c as u32,
                    // An implementation whose worker list names no link (a foreign profile
                    // without `worker_links`): the coordinator the worker was configured with.
                    (None, _) if !self.options.worker_links => {
                        let NodeName::Worker(n) = worker_node(&worker)? else {
                            anyhow::bail!("{worker} is not a worker");
                        };
                        crate::backend::home_of(n, self.backend.spec().coordinators)
                    }
                    (None, _) => anyhow::bail!("{worker} holds no link to any coordinator"),
                };
                Ok(Binding::node(NodeName::Coordinator(c)))
            }
        }
    }

    /// The pipelines placed on `worker_id` now.
    pub(super) async fn hosted_by(&self, worker_id: &str) -> anyhow::Result<Vec<Hosted>> {
        let topology = self.topology().await?;
        Ok(topology
            .groups
            .iter()
            .flat_map(|g| g.pipelines.iter().map(move |p| (g, p)))
            .filter(|(_, p)| p.worker_id.as_deref() == Some(worker_id))
            .map(|(g, p)| Hosted {
                group: g.group_name.clone(),
                pipeline: p.name.clone(),
                epoch: p.epoch,
            })
            .collect())
    }
}

/// `worker-3` → the backend's node.
pub(super) fn worker_node(worker_id: &str) -> anyhow::Result<NodeName> {
    worker_id
        .strip_prefix("worker-")
        .and_then(|n| n.parse().ok())
        .map(NodeName::Worker)
        .with_context(|| format!("worker id '{worker_id}' is not one of this backend's workers"))
}

impl<B: Backend> Runner<B> {
    /// The topology, from the first live coordinator that answers.
    pub(super) async fn topology(&self) -> anyhow::Result<Topology> {
        let live = self.live_coordinators();
        self.probe
            .read_any(&live, async |p, base| p.topology(base).await)
            .await
    }

    /// The registered workers, from the first live coordinator that answers.
    pub(super) async fn worker_list(&self) -> anyhow::Result<WorkerList> {
        let live = self.live_coordinators();
        self.probe
            .read_any(&live, async |p, base| p.workers(base).await)
            .await
    }
}
