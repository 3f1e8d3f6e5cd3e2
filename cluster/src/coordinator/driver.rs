//! The leader's placement driver: whenever the committed state has a pipeline on a worker that
//! is not ready (or on none), it commits a move to the least-loaded ready worker. Moves are
//! conditional on the epoch the driver saw, so a decision on stale state is a no-op.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::Coordinator;
use crate::raft::state::GroupRecord;
use crate::raft::Command;

/// Re-check even without a state change (e.g. a failed write to retry).
const DRIVER_TICK: Duration = Duration::from_millis(250);

impl Coordinator {
    pub async fn placement_loop(self: Arc<Self>) {
        let mut changes = self.state.changes();
        let mut proposed: HashSet<(String, String, u64)> = HashSet::new();
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(DRIVER_TICK) => {}
            }
            if self.raft.metrics().borrow().current_leader != Some(self.node_id) {
                proposed.clear();
                continue;
            }
            let moves: Vec<Command> = self.state.read(|a| {
                let empty = GroupRecord {
                    name: String::new(),
                    pipelines: vec![],
                    routes: vec![],
                };
                a.state
                    .misplaced()
                    .into_iter()
                    .filter(|(g, p, _, epoch)| !proposed.contains(&(g.clone(), p.clone(), *epoch)))
                    .filter_map(|(group, pipeline, from, epoch)| {
                        let affinity = a
                            .state
                            .groups
                            .get(&group)?
                            .pipelines
                            .iter()
                            .find(|p| p.def.name == pipeline)?
                            .def
                            .worker_affinity
                            .clone();
                        let to =
                            a.state
                                .choose_worker(affinity.as_deref(), from.as_deref(), &empty)?;
                        let reason = match &from {
                            Some(w) => format!(
                                "worker {w} is {}",
                                a.state
                                    .workers
                                    .get(w)
                                    .map_or("gone".to_string(), |w| w.status.to_string())
                            ),
                            None => "no worker was ready at deploy".to_string(),
                        };
                        Some(Command::MovePipeline {
                            group,
                            pipeline,
                            to_worker: to,
                            expected_epoch: epoch,
                            reason,
                            at_ms: crate::events::now_ms(),
                        })
                    })
                    .collect()
            });
            for command in moves {
                if let Command::MovePipeline {
                    group,
                    pipeline,
                    expected_epoch,
                    ..
                } = &command
                {
                    proposed.insert((group.clone(), pipeline.clone(), *expected_epoch));
                }
                if let Err(e) = self.write(command.clone()).await {
                    tracing::warn!("placement move failed: {}", e.body.error);
                    if let Command::MovePipeline {
                        group,
                        pipeline,
                        expected_epoch,
                        ..
                    } = &command
                    {
                        proposed.remove(&(group.clone(), pipeline.clone(), *expected_epoch));
                    }
                }
            }
        }
    }
}
