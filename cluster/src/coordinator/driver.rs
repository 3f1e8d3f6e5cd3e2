//! The leader's placement driver: whenever the committed state has a pipeline on a worker that
//! is not ready (or on none), it commits a move to the least-loaded ready worker with room.
//! Moves are conditional on the epoch the driver saw and carry the term they were decided in,
//! so a decision on stale state, or by a leader that has since lost its term, is a no-op.
//!
//! [`Planner`] is the pure part: which moves to propose for a state, and what to remember of
//! each outcome. A move that committed without effect (its target stopped being ready, or
//! filled up, before it applied) is planned again on the next pass.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::Coordinator;
use crate::raft::state::ClusterState;
use crate::raft::{Command, CommandResult};

/// Re-check even without a state change (e.g. a failed write to retry).
const DRIVER_TICK: Duration = Duration::from_millis(250);

/// (group, pipeline, epoch the move was decided on).
type MoveKey = (String, String, u64);

/// Which moves are in flight, so one pass does not propose what the last one still has pending.
#[derive(Debug, Default)]
pub struct Planner {
    proposed: HashSet<MoveKey>,
}

fn key(command: &Command) -> Option<MoveKey> {
    match command {
        Command::MovePipeline {
            group,
            pipeline,
            expected_epoch,
            ..
        } => Some((group.clone(), pipeline.clone(), *expected_epoch)),
        _ => None,
    }
}

impl Planner {
    /// Forget everything (this node stopped leading).
    pub fn reset(&mut self) {
        self.proposed.clear();
    }

    /// The moves to propose now: each misplaced pipeline not already in flight, to the
    /// least-loaded ready worker with room, counting the moves chosen earlier in this pass.
    pub fn plan(&mut self, state: &ClusterState, at_ms: u64) -> Vec<Command> {
        let mut chosen: Vec<String> = Vec::new();
        let mut moves = Vec::new();
        for (group, pipeline, from, epoch) in state.misplaced() {
            if self
                .proposed
                .contains(&(group.clone(), pipeline.clone(), epoch))
            {
                continue;
            }
            let Some(def) = state
                .groups
                .get(&group)
                .and_then(|g| g.pipelines.iter().find(|p| p.def.name == pipeline))
                .map(|p| p.def.clone())
            else {
                continue;
            };
            let pending: Vec<&str> = chosen.iter().map(String::as_str).collect();
            let Some(to) =
                state.choose_worker(def.worker_affinity.as_deref(), from.as_deref(), &pending)
            else {
                continue;
            };
            let reason = match &from {
                Some(w) => format!(
                    "worker {w} is {}",
                    state
                        .workers
                        .get(w)
                        .map_or("gone".to_string(), |w| w.status.to_string())
                ),
                None => "no worker was ready at deploy".to_string(),
            };
            chosen.push(to.clone());
            self.proposed
                .insert((group.clone(), pipeline.clone(), epoch));
            moves.push(Command::MovePipeline {
                group,
                pipeline,
                to_worker: to,
                expected_epoch: epoch,
                reason,
                at_ms,
            });
        }
        moves
    }

    /// The outcome of proposing `command`: a move that failed, or committed without effect,
    /// is no longer in flight and is planned again.
    pub fn settled(&mut self, command: &Command, outcome: Option<&CommandResult>) {
        let done = outcome.is_some_and(|r| r.changed);
        if !done {
            if let Some(k) = key(command) {
                self.proposed.remove(&k);
            }
        }
    }
}

impl Coordinator {
    pub async fn placement_loop(self: Arc<Self>) {
        let mut changes = self.state.changes();
        let mut planner = Planner::default();
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(DRIVER_TICK) => {}
            }
            // No moves from a leader out of touch with its quorum.
            let Some(term) = self.leading_term() else {
                planner.reset();
                continue;
            };
            let now = crate::events::now_ms();
            let moves = self.state.read(|a| planner.plan(&a.state, now));
            // A planted regression for demonstrating the CI gate (README "Gating CI"): a build
            // with this feature moves pipelines one second late.
            #[cfg(feature = "planted-failover-delay")]
            if !moves.is_empty() {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            for command in moves {
                let outcome = self.decide(term, command.clone()).await;
                if let Err(e) = &outcome {
                    tracing::warn!("placement move failed: {}", e.body.error);
                }
                planner.settled(&command, outcome.as_ref().ok());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::{Capacity, GroupDef, PipelineDef};

    fn register(state: &mut ClusterState, id: &str, max_pipelines: u32) {
        state.apply(
            0,
            &Command::RegisterWorker {
                worker_id: id.into(),
                address: format!("http://{id}"),
                capacity: Capacity {
                    cpu_cores: 1,
                    pipelines_running: 0,
                    max_pipelines,
                },
                at_ms: 1,
            },
        );
    }

    fn unhealthy(state: &mut ClusterState, id: &str) {
        state.apply(
            0,
            &Command::MarkWorkerUnhealthy {
                worker_id: id.into(),
                link_gen: None,
                reason: "test".into(),
                at_ms: 2,
            },
        );
    }

    /// Three pipelines all on w1 (the only worker at deploy), then `others` join and w1 dies.
    fn three_on_a_dead_worker(others: &[(&str, u32)]) -> ClusterState {
        let mut state = ClusterState::default();
        register(&mut state, "w1", 10);
        let pipelines = ["p1", "p2", "p3"]
            .iter()
            .map(|p| PipelineDef {
                name: p.to_string(),
                source: "src".into(),
                worker_affinity: None,
                replicas: 1,
            })
            .collect();
        state.apply(
            0,
            &Command::DeployGroup {
                group: GroupDef {
                    name: "g".into(),
                    pipelines,
                    routes: vec![],
                },
                at_ms: 1,
            },
        );
        for (w, max) in others {
            register(&mut state, w, *max);
        }
        unhealthy(&mut state, "w1");
        state
    }

    fn targets(moves: &[Command]) -> Vec<String> {
        moves
            .iter()
            .filter_map(|m| match m {
                Command::MovePipeline { to_worker, .. } => Some(to_worker.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_move_that_committed_without_effect_is_planned_again() {
        let mut state = three_on_a_dead_worker(&[("w2", 10), ("w3", 10), ("w4", 10)]);
        let mut planner = Planner::default();
        let moves = planner.plan(&state, 5);
        assert_eq!(targets(&moves), ["w2", "w3", "w4"]);
        // w2 dies between the decision and the apply: its move commits without effect.
        unhealthy(&mut state, "w2");
        let (result, _) = state.apply(10, &moves[0]);
        assert!(!result.changed);
        planner.settled(&moves[0], Some(&result));
        for m in &moves[1..] {
            let (r, _) = state.apply(11, m);
            planner.settled(m, Some(&r));
        }
        let again = planner.plan(&state, 6);
        assert_eq!(
            targets(&again),
            ["w3"],
            "p1 must be moved again, to the least-loaded ready worker"
        );
    }

    #[test]
    fn one_pass_spreads_moves_and_respects_max_pipelines() {
        let state = three_on_a_dead_worker(&[("w2", 10), ("w3", 10), ("w4", 10)]);
        let spread = targets(&Planner::default().plan(&state, 5));
        assert_eq!(
            spread,
            ["w2", "w3", "w4"],
            "one pass put several moves on one worker"
        );

        let state = three_on_a_dead_worker(&[("w2", 1), ("w3", 1)]);
        let capped = targets(&Planner::default().plan(&state, 5));
        assert_eq!(
            capped,
            ["w2", "w3"],
            "a third move would exceed max_pipelines"
        );
    }
}
