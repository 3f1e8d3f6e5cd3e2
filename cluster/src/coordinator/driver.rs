//! The leader's placement driver: whenever the committed state has a pipeline on a worker that
//! is not ready (or on none), it commits a move to the least-loaded ready worker with room.
//! Moves are conditional on the epoch the driver saw and carry the term they were decided in,
//! so a decision on stale state, or by a leader that has since lost its term, is a no-op.
//! The moves of one pass are proposed as one entry ([`Command::MovePipelines`], at most
//! [`MAX_BATCH`] moves each): a dead worker's 300 pipelines move in one Raft commit, not 300
//! sequential ones.
//!
//! [`Planner`] is the pure part: which moves to propose for a state, and what to remember of
//! each outcome. A move that committed without effect (its target stopped being ready, or
//! filled up, before it applied) is planned again on the next pass.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::Coordinator;
use crate::raft::state::ClusterState;
use crate::raft::{Command, Move};

/// Re-check even without a state change (e.g. a failed write to retry).
const DRIVER_TICK: Duration = Duration::from_millis(250);

/// Most moves in one entry: bounds an entry's size (~150 bytes a move) for the Raft RPCs.
pub const MAX_BATCH: usize = 512;

/// (group, pipeline, epoch the move was decided on).
type MoveKey = (String, String, u64);

/// Which moves are in flight, so one pass does not propose what the last one still has pending.
#[derive(Debug, Default)]
pub struct Planner {
    proposed: HashSet<MoveKey>,
}

fn key(m: &Move) -> MoveKey {
    (m.group.clone(), m.pipeline.clone(), m.expected_epoch)
}

impl Planner {
    /// Forget everything (this node stopped leading).
    pub fn reset(&mut self) {
        self.proposed.clear();
    }

    /// The moves to propose now: each misplaced pipeline not already in flight, to the
    /// least-loaded ready worker with room, counting the moves chosen earlier in this pass.
    pub fn plan(&mut self, state: &ClusterState) -> Vec<Move> {
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
            moves.push(Move {
                group,
                pipeline,
                to_worker: to,
                expected_epoch: epoch,
                reason,
            });
        }
        moves
    }

    /// A batch was proposed and its outcome is known (committed and applied, or failed): none
    /// of its moves is in flight any more. The next pass reads the state it left: a move that
    /// took effect gave its pipeline a new epoch (and a ready worker), one that did not (its
    /// target stopped being ready, or filled up, first; or the write failed) is planned again,
    /// on the same epoch, so a late commit of the failed write makes the second a no-op.
    pub fn settled(&mut self, batch: &[Move]) {
        for m in batch {
            self.proposed.remove(&key(m));
        }
    }
}

/// The commands proposing `moves`: one [`Command::MovePipelines`] per [`MAX_BATCH`] moves.
pub fn batches(moves: Vec<Move>, at_ms: u64) -> Vec<Command> {
    moves
        .chunks(MAX_BATCH)
        .map(|c| Command::MovePipelines {
            moves: c.to_vec(),
            at_ms,
        })
        .collect()
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
            let moves = self.state.read(|a| planner.plan(&a.state));
            // A planted regression for demonstrating the CI gate (README "Gating CI"): a build
            // with this feature moves pipelines one second late.
            #[cfg(feature = "planted-failover-delay")]
            if !moves.is_empty() {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            for command in batches(moves, crate::events::now_ms()) {
                if let Err(e) = self.decide(term, command.clone()).await {
                    tracing::warn!("placement moves failed: {}", e.body.error);
                }
                if let Command::MovePipelines { moves, .. } = &command {
                    planner.settled(moves);
                }
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

    fn targets(moves: &[Move]) -> Vec<String> {
        moves.iter().map(|m| m.to_worker.clone()).collect()
    }

    /// Apply `moves` as the driver proposes them; the number of log entries it took.
    fn commit(state: &mut ClusterState, moves: &[Move], planner: &mut Planner) -> usize {
        let commands = batches(moves.to_vec(), 10);
        for c in &commands {
            state.apply(0, c);
        }
        planner.settled(moves);
        commands.len()
    }

    #[test]
    fn a_move_that_committed_without_effect_is_planned_again() {
        let mut state = three_on_a_dead_worker(&[("w2", 10), ("w3", 10), ("w4", 10)]);
        let mut planner = Planner::default();
        let moves = planner.plan(&state);
        assert_eq!(targets(&moves), ["w2", "w3", "w4"]);
        assert!(
            planner.plan(&state).is_empty(),
            "moves in flight are not planned twice"
        );
        // w2 dies between the decision and the apply: its move commits without effect.
        unhealthy(&mut state, "w2");
        assert_eq!(commit(&mut state, &moves, &mut planner), 1);
        assert_eq!(state.groups["g"].pipelines[0].worker.as_deref(), Some("w1"));
        let again = planner.plan(&state);
        assert_eq!(
            targets(&again),
            ["w3"],
            "p1 must be moved again, to the least-loaded ready worker"
        );
    }

    #[test]
    fn one_pass_spreads_moves_and_respects_max_pipelines() {
        let state = three_on_a_dead_worker(&[("w2", 10), ("w3", 10), ("w4", 10)]);
        let spread = targets(&Planner::default().plan(&state));
        assert_eq!(
            spread,
            ["w2", "w3", "w4"],
            "one pass put several moves on one worker"
        );

        let state = three_on_a_dead_worker(&[("w2", 1), ("w3", 1)]);
        let capped = targets(&Planner::default().plan(&state));
        assert_eq!(
            capped,
            ["w2", "w3"],
            "a third move would exceed max_pipelines"
        );
    }

    /// A dead worker's `n` pipelines (all deployed on it), and `others` ready workers of room 1000.
    fn n_on_a_dead_worker(n: usize, others: usize) -> ClusterState {
        let mut state = ClusterState::default();
        register(&mut state, "w0", 1000);
        let pipelines = (1..=n)
            .map(|i| PipelineDef {
                name: format!("p{i}"),
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
        for w in 1..=others {
            register(&mut state, &format!("w{w}"), 1000);
        }
        unhealthy(&mut state, "w0");
        state
    }

    #[test]
    fn a_dead_workers_300_pipelines_move_in_one_entry() {
        let mut state = n_on_a_dead_worker(300, 3);
        let mut planner = Planner::default();
        let moves = planner.plan(&state);
        assert_eq!(moves.len(), 300);
        assert_eq!(commit(&mut state, &moves, &mut planner), 1, "log entries");
        assert!(state.misplaced().is_empty());
        assert_eq!(state.migrations.len(), 300);
        let load = state.load(&[]);
        assert_eq!(
            (load["w0"], load["w1"], load["w2"], load["w3"]),
            (0, 100, 100, 100)
        );
        assert!(planner.plan(&state).is_empty(), "nothing left to move");
    }

    #[test]
    fn a_pass_beyond_max_batch_takes_one_entry_per_max_batch_moves() {
        let mut state = n_on_a_dead_worker(MAX_BATCH + 1, 2);
        let mut planner = Planner::default();
        let moves = planner.plan(&state);
        assert_eq!(commit(&mut state, &moves, &mut planner), 2, "log entries");
        assert!(state.misplaced().is_empty());
    }

    #[test]
    fn a_batch_move_to_a_worker_filled_by_its_earlier_moves_is_a_no_op() {
        // Decided on two different states, both moves target w1, which has room for one: the
        // batch applies the first and skips the second, deterministically.
        let mut state = three_on_a_dead_worker(&[("w2", 1)]);
        let mv = |p: &str| Move {
            group: "g".into(),
            pipeline: p.into(),
            to_worker: "w2".into(),
            expected_epoch: 1,
            reason: "test".into(),
        };
        let (result, events) = state.apply(
            7,
            &Command::MovePipelines {
                moves: vec![mv("p1"), mv("p2")],
                at_ms: 3,
            },
        );
        assert!(result.changed);
        assert_eq!(events.len(), 1, "one migration started: {events:?}");
        let on: Vec<_> = state.groups["g"]
            .pipelines
            .iter()
            .map(|p| p.worker.as_deref())
            .collect();
        assert_eq!(on, [Some("w2"), Some("w1"), Some("w1")]);
    }

    #[test]
    fn entries_of_both_move_commands_are_read_back() {
        // Logs written before the batch command hold `move_pipeline` entries: they must still
        // parse (a coordinator replays its log at start).
        let old = r#"{"type":"move_pipeline","group":"g","pipeline":"p1","to_worker":"w2","expected_epoch":1,"reason":"r","at_ms":3}"#;
        let parsed: Command = serde_json::from_str(old).expect("old entry parses");
        assert!(matches!(parsed, Command::MovePipeline { .. }));
        let batch = batches(
            Planner::default().plan(&three_on_a_dead_worker(&[("w2", 10)])),
            4,
        );
        let json = serde_json::to_string(&batch[0]).expect("serializes");
        assert!(
            json.starts_with(r#"{"type":"move_pipelines","moves":[{"group":"g""#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<Command>(&json).expect("parses"),
            batch[0]
        );
    }
}
