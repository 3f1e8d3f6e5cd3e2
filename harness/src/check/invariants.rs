//! Invariants over the coordinators' event logs (Jepsen's "checkers over the history"), beside
//! the per-seq ledger: pure functions of the events every coordinator logged and of the faults
//! the harness injected.
//!
//! - **Leaders in a term only move up**: openraft 0.9 (default, "advanced" leader ids) orders
//!   leaders by (term, node id), so one term may see several leaders, each later one with a
//!   higher id (two nodes initializing at once at bootstrap both win term 1, 1 then 2). So in
//!   each node's log (per incarnation), a term's `leader_changed` events name strictly
//!   increasing leader ids; a lower id after a higher one in the same term is a violation.
//! - **Epochs only grow, one owner each**: in each node's log (per incarnation: a restarted
//!   node's log starts again at seq 1 and replays), a pipeline's `migration_started` epochs
//!   strictly increase; over all logs, a (pipeline, epoch) is placed on (moved to, or reported
//!   running by) one worker only.
//! - **No unhealthy verdict for a worker the harness never faulted**: a worker declared
//!   unhealthy must have been faulted (kill, stop, pause, partition, restart) in a window that
//!   began before the verdict's decision time and ended no earlier than that time minus the
//!   detection bound.

use std::collections::{BTreeMap, BTreeSet};

use cluster::api::model::{ClusterEvent, ClusterEventKind, WorkerStatus};

use crate::history::Fault;

/// A fault window on one node: from its fault to its heal (or the end of the run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub node: String,
    pub from_us: u64,
    pub to_us: Option<u64>,
}

/// Fault windows from the history's fault rows: `kill`/`stop`/`pause`/`partition` open one on
/// their node, `restart`/`resume`/`heal`/`start` close it; a `restart` alone is a window of its
/// own (the node was down between the stop and the start).
pub fn windows(faults: &[Fault]) -> Vec<Window> {
    let mut open: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for f in faults {
        match f.action.as_str() {
            "kill" | "stop" | "pause" | "partition" => {
                open.entry(f.node.clone()).or_insert(f.at_us);
            }
            "resume" | "heal" | "restart" | "start" => {
                let from = open.remove(&f.node).unwrap_or(f.at_us);
                out.push(Window {
                    node: f.node.clone(),
                    from_us: from,
                    to_us: Some(f.at_us),
                });
            }
            _ => {}
        }
    }
    out.extend(open.into_iter().map(|(node, from_us)| Window {
        node,
        from_us,
        to_us: None,
    }));
    out
}

/// Every violation found, one line each (empty: the invariants held). `events` are each
/// coordinator's log in order (all incarnations), `bound_ms` the detection bound.
pub fn check<'a>(
    events: impl IntoIterator<Item = (String, &'a ClusterEvent)>,
    faults: &[Fault],
    bound_ms: u64,
) -> Vec<String> {
    let mut violations = Vec::new();
    // Per node: the highest leader id seen per term in this incarnation.
    let mut leaders: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut owners: BTreeMap<(String, u64), BTreeSet<String>> = BTreeMap::new();
    // Per node: the last seq seen (a lower one starts a new incarnation) and the highest
    // migration epoch per pipeline in this incarnation.
    let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
    let mut epochs: BTreeMap<(String, String), u64> = BTreeMap::new();
    let windows = windows(faults);
    for (node, e) in events {
        let prev = last_seq.insert(node.clone(), e.seq);
        if prev.is_some_and(|p| e.seq <= p) {
            epochs.retain(|(n, _), _| *n != node);
            leaders.retain(|(n, _), _| *n != node);
        }
        match &e.kind {
            ClusterEventKind::LeaderChanged {
                term,
                leader: Some(l),
            } => {
                match leaders.get(&(node.clone(), *term)) {
                    Some(&high) if *l < high => violations.push(format!(
                        "{node}: term {term} had leader {l} after leader {high} (a term's leader ids only grow)"
                    )),
                    _ => {
                        leaders.insert((node.clone(), *term), *l);
                    }
                }
            }
            ClusterEventKind::MigrationStarted {
                group,
                pipeline,
                to_worker,
                epoch,
                ..
            } => {
                let id = format!("{group}/{pipeline}");
                let key = (node.clone(), id.clone());
                if let Some(&high) = epochs.get(&key) {
                    if *epoch <= high {
                        violations.push(format!(
                            "{node}: {id} moved at epoch {epoch} after epoch {high} (epochs must grow)"
                        ));
                    }
                }
                epochs.insert(key, *epoch);
                owners
                    .entry((id, *epoch))
                    .or_default()
                    .insert(to_worker.clone());
            }
            ClusterEventKind::PipelineRunning {
                group,
                pipeline,
                worker_id,
                epoch,
                ..
            } => {
                owners
                    .entry((format!("{group}/{pipeline}"), *epoch))
                    .or_default()
                    .insert(worker_id.clone());
            }
            ClusterEventKind::WorkerStatusChanged {
                worker_id,
                status: WorkerStatus::Unhealthy,
                at_ms,
                reason,
            } => {
                let at_us = at_ms * 1000;
                let excused = windows.iter().any(|w| {
                    w.node == *worker_id
                        && w.from_us <= at_us
                        && w.to_us.is_none_or(|to| at_us <= to + bound_ms * 1000)
                });
                if !excused {
                    violations.push(format!(
                        "{node}: {worker_id} declared unhealthy at {at_ms} ms ({reason}) outside any fault window of it plus {bound_ms} ms"
                    ));
                }
            }
            _ => {}
        }
    }
    for ((id, epoch), set) in owners {
        if set.len() > 1 {
            violations.push(format!(
                "{id} epoch {epoch} had {} owners: {set:?}",
                set.len()
            ));
        }
    }
    // A verdict is logged by every coordinator that applies it: report each once.
    violations.dedup();
    let mut seen = BTreeSet::new();
    violations.retain(|v| {
        let key = v.split_once(": ").map_or(v.as_str(), |(_, rest)| rest);
        seen.insert(key.to_string())
    });
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, kind: ClusterEventKind) -> ClusterEvent {
        ClusterEvent {
            seq,
            ts_ms: 1000 + seq,
            node_id: 1,
            kind,
        }
    }

    fn fault(at_us: u64, action: &str, node: &str) -> Fault {
        Fault {
            at_us,
            action: action.into(),
            node: node.into(),
            how: String::new(),
        }
    }

    fn moved(seq: u64, p: &str, to: &str, epoch: u64) -> ClusterEvent {
        ev(
            seq,
            ClusterEventKind::MigrationStarted {
                migration_id: seq,
                group: "g".into(),
                pipeline: p.into(),
                from_worker: None,
                to_worker: to.into(),
                epoch,
                at_ms: 0,
            },
        )
    }

    fn unhealthy(seq: u64, w: &str, at_ms: u64) -> ClusterEvent {
        ev(
            seq,
            ClusterEventKind::WorkerStatusChanged {
                worker_id: w.into(),
                status: WorkerStatus::Unhealthy,
                reason: "grace".into(),
                at_ms,
            },
        )
    }

    #[test]
    fn a_terms_leader_ids_only_grow_in_each_log() {
        let leader = |seq: u64, term: u64, l: u64| {
            ev(
                seq,
                ClusterEventKind::LeaderChanged {
                    term,
                    leader: Some(l),
                },
            )
        };
        // Bootstrap in openraft's default mode: 1 then 2 both lead term 1; then term 2.
        let (a, b, c) = (leader(1, 1, 1), leader(2, 1, 2), leader(3, 2, 1));
        let ok = [
            ("c1".to_string(), &a),
            ("c1".to_string(), &b),
            ("c1".to_string(), &c),
        ];
        assert!(check(ok, &[], 0).is_empty());
        // Two nodes that each saw one of them: fine too.
        assert!(check([("c1".to_string(), &a), ("c2".to_string(), &b)], &[], 0).is_empty());
        // A lower id after a higher one in the same term, in one log: a violation.
        let back = leader(3, 1, 1);
        let v = check([("c1".to_string(), &b), ("c1".to_string(), &back)], &[], 0);
        assert_eq!(
            v,
            ["c1: term 1 had leader 1 after leader 2 (a term's leader ids only grow)"]
        );
    }

    #[test]
    fn epochs_must_grow_per_incarnation_and_have_one_owner() {
        let (m1, m2, m2_other) = (
            moved(1, "p", "worker-1", 1),
            moved(2, "p", "worker-2", 2),
            moved(3, "p", "worker-3", 2),
        );
        let v = check(
            [
                ("c1".to_string(), &m1),
                ("c1".to_string(), &m2),
                ("c1".to_string(), &m2_other),
            ],
            &[],
            0,
        );
        assert_eq!(
            v,
            [
                "c1: g/p moved at epoch 2 after epoch 2 (epochs must grow)",
                "g/p epoch 2 had 2 owners: {\"worker-2\", \"worker-3\"}"
            ]
        );
        // A restarted node replays from seq 1: its epochs start again without a violation.
        let replay = moved(1, "p", "worker-1", 1);
        let v = check(
            [
                ("c1".to_string(), &m1),
                ("c1".to_string(), &m2),
                ("c1".to_string(), &replay),
            ],
            &[],
            0,
        );
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn an_unhealthy_verdict_needs_a_fault_window_of_that_worker() {
        let faults = [
            fault(10_000_000, "pause", "worker-1"),
            fault(20_000_000, "resume", "worker-1"),
        ];
        // Within the window, and within the bound after it: excused.
        let inside = unhealthy(1, "worker-1", 15_000);
        let after = unhealthy(2, "worker-1", 24_000);
        assert!(check(
            [("c1".to_string(), &inside), ("c1".to_string(), &after)],
            &faults,
            5000
        )
        .is_empty());
        // Past the bound, before the fault, or another worker: violations.
        let late = unhealthy(3, "worker-1", 26_000);
        let early = unhealthy(4, "worker-1", 9_000);
        let other = unhealthy(5, "worker-2", 15_000);
        let v = check(
            [
                ("c1".to_string(), &late),
                ("c1".to_string(), &early),
                ("c1".to_string(), &other),
                ("c2".to_string(), &other),
            ],
            &faults,
            5000,
        );
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[2].contains("worker-2 declared unhealthy"), "{v:?}");
    }
}
