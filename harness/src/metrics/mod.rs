//! The metrics cross-check: every live node's `/metrics` is scraped before and after each phase;
//! the changes are kept (`run.json`, results.md), and a phase fails when a metric contradicts
//! what the harness itself observed over the API: a coordinator reporting `raft_role` 2 in the
//! agreed leader's term (or later) while another node leads it, a commit index that went
//! backwards within one process, or a migration count that differs from the migrations the
//! coordinator's own API shows completed over the phase.

pub mod text;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::backend::NodeName;
use crate::probe::Probe;

pub const ROLE: &str = "varpulis_cluster_raft_role";
pub const TERM: &str = "varpulis_cluster_raft_term";
pub const COMMIT: &str = "varpulis_cluster_raft_commit_index";
pub const MIGRATED: &str = "varpulis_cluster_migrations_total{result=\"success\"}";
const COORDINATOR_START: &str = "varpulis_cluster_start_time_seconds";
const WORKER_START: &str = "varpulis_worker_start_time_seconds";
/// Reads of a coordinator's migration list around its scrape before the pair counts as
/// unstable (a migration completing right then) and is not compared.
const STABLE_READS: usize = 3;

/// One node's samples (series → value), or why it could not be scraped.
pub type Scrape = Result<BTreeMap<String, f64>, String>;

/// What the harness saw of the cluster at a phase boundary.
#[derive(Debug, Clone, Default)]
pub struct Boundary {
    /// Each live node's samples (or why it could not be scraped).
    pub nodes: BTreeMap<NodeName, Scrape>,
    /// The leader every live coordinator agreed on, before and after the scrapes alike.
    pub leader: Option<(u64, u64)>,
    /// Per coordinator: migration ids its API showed completed, read just before and just after
    /// its scrape with the same answer (absent: not stable within [`STABLE_READS`]).
    pub completed: BTreeMap<NodeName, BTreeSet<u64>>,
}

/// One phase's metric changes and what was checked (kept in `run.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsCheck {
    /// Node → series → (before, after), for series that changed or appeared non-zero;
    /// histogram buckets are left out (their `_count` and `_sum` say it).
    pub deltas: BTreeMap<String, BTreeMap<String, (Option<f64>, f64)>>,
    /// What the harness compared and found consistent.
    pub checked: Vec<String>,
    /// What contradicted the harness's own observation: each fails the phase.
    pub contradictions: Vec<String>,
    /// Nodes that could not be scraped.
    pub unreadable: Vec<String>,
    /// Nodes whose process changed over the phase: their "before" is another process's.
    #[serde(default)]
    pub restarted: Vec<String>,
}

/// Scrape every given node (coordinators and workers) and read what the checks compare.
pub async fn boundary(
    probe: &Probe,
    nodes: &[(NodeName, String)],
    agreed: impl AsyncFn() -> Option<(u64, u64)>,
) -> Boundary {
    let leader_before = agreed().await;
    let mut b = Boundary::default();
    let scrapes = futures::future::join_all(nodes.iter().map(|(node, base)| async move {
        let coordinator = matches!(node, NodeName::Coordinator(_));
        let mut completed = None;
        let mut samples = Err(String::new());
        for _ in 0..STABLE_READS {
            let first = if coordinator {
                completed_ids(probe, base).await
            } else {
                None
            };
            samples = match probe.metrics_text(base).await {
                Ok(t) => text::parse(&t).map_err(|e| format!("{e:#}")),
                Err(e) => Err(format!("{e:#}")),
            };
            if !coordinator || samples.is_err() {
                break;
            }
            let second = completed_ids(probe, base).await;
            if first.is_some() && first == second {
                completed = first;
                break;
            }
        }
        (*node, samples, completed)
    }))
    .await;
    for (node, samples, completed) in scrapes {
        b.nodes.insert(node, samples);
        if let Some(ids) = completed {
            b.completed.insert(node, ids);
        }
    }
    let leader_after = agreed().await;
    b.leader = leader_before.filter(|_| leader_before == leader_after);
    b
}

async fn completed_ids(probe: &Probe, base: &str) -> Option<BTreeSet<u64>> {
    let list = probe.migrations(base).await.ok()?;
    Some(
        list.migrations
            .iter()
            .filter(|m| m.status == "completed")
            .map(|m| m.id)
            .collect(),
    )
}

/// Compare a phase's two boundaries: deltas, checks and contradictions.
pub fn compare(before: &Boundary, after: &Boundary) -> MetricsCheck {
    let mut check = MetricsCheck::default();
    for (node, samples) in &after.nodes {
        let now = match samples {
            Ok(s) => s,
            Err(e) => {
                check.unreadable.push(format!("{node}: {e}"));
                continue;
            }
        };
        let then = before.nodes.get(node).and_then(|s| s.as_ref().ok());
        let changed: BTreeMap<String, (Option<f64>, f64)> = now
            .iter()
            .filter(|(series, v)| !series.contains("_bucket{") && v.is_finite())
            .filter_map(|(series, &v)| {
                let old = then.and_then(|t| t.get(series)).copied();
                let changed = match old {
                    Some(old) => old != v,
                    None => v != 0.0,
                };
                changed.then(|| (series.clone(), (old, v)))
            })
            .collect();
        if !changed.is_empty() {
            check.deltas.insert(node.to_string(), changed);
        }
    }
    for b in [before, after] {
        leader_roles(b, &mut check);
    }
    for (node, now) in &after.nodes {
        let (Ok(now), Some(Ok(then))) = (now, before.nodes.get(node)) else {
            continue;
        };
        let start = match node {
            NodeName::Coordinator(_) => COORDINATOR_START,
            _ => WORKER_START,
        };
        if then.get(start) != now.get(start) || now.get(start).is_none() {
            check.restarted.push(node.to_string());
            continue;
        }
        if !matches!(node, NodeName::Coordinator(_)) {
            continue;
        }
        if let (Some(a), Some(b)) = (then.get(COMMIT), now.get(COMMIT)) {
            if b < a {
                check.contradictions.push(format!(
                    "{node}: raft_commit_index went backwards within one process: {a} → {b}"
                ));
            } else {
                check
                    .checked
                    .push(format!("{node}: commit index {a} → {b}"));
            }
        }
        let (Some(ids_then), Some(ids_now)) =
            (before.completed.get(node), after.completed.get(node))
        else {
            continue;
        };
        let seen = ids_now.difference(ids_then).count() as f64;
        let counted =
            now.get(MIGRATED).copied().unwrap_or(0.0) - then.get(MIGRATED).copied().unwrap_or(0.0);
        if counted == seen {
            check.checked.push(format!(
                "{node}: {seen} migration(s) completed, counted {counted}"
            ));
        } else {
            check.contradictions.push(format!(
                "{node}: migrations_total{{result=\"success\"}} grew by {counted} while its API shows {seen} migration(s) completed over the phase"
            ));
        }
    }
    check.contradictions.dedup();
    check
}

/// `raft_role` 2 on a node other than the agreed leader, in the leader's term or later, is a
/// contradiction (a node restarted from an older term may still call itself leader of that term).
fn leader_roles(b: &Boundary, check: &mut MetricsCheck) {
    let Some((leader, term)) = b.leader else {
        return;
    };
    for (node, samples) in &b.nodes {
        let (NodeName::Coordinator(id), Ok(s)) = (node, samples) else {
            continue;
        };
        let (role, node_term) = (s.get(ROLE).copied(), s.get(TERM).copied().unwrap_or(0.0));
        if role == Some(2.0) && u64::from(*id) != leader && node_term >= term as f64 {
            check.contradictions.push(format!(
                "{node} reports raft_role 2 in term {node_term}, but the coordinators agree on coordinator-{leader} leading term {term}"
            ));
        } else if u64::from(*id) == leader && role == Some(2.0) {
            let line =
                format!("raft_role 2 on coordinator-{leader}, the agreed leader of term {term}");
            if !check.checked.contains(&line) {
                check.checked.push(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(pairs: &[(&str, f64)]) -> Scrape {
        Ok(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    fn coordinator(role: f64, term: f64, commit: f64, migrated: f64) -> Scrape {
        node(&[
            (ROLE, role),
            (TERM, term),
            (COMMIT, commit),
            (MIGRATED, migrated),
            (COORDINATOR_START, 1.0),
        ])
    }

    fn boundary(nodes: Vec<(u32, Scrape)>, leader: Option<(u64, u64)>) -> Boundary {
        Boundary {
            nodes: nodes
                .into_iter()
                .map(|(n, s)| (NodeName::Coordinator(n), s))
                .collect(),
            leader,
            completed: BTreeMap::new(),
        }
    }

    #[test]
    fn consistent_phases_pass_and_keep_their_deltas() {
        let before = boundary(
            vec![
                (1, coordinator(2.0, 3.0, 10.0, 0.0)),
                (2, coordinator(0.0, 3.0, 10.0, 0.0)),
            ],
            Some((1, 3)),
        );
        let after = boundary(
            vec![
                (1, coordinator(2.0, 3.0, 14.0, 0.0)),
                (2, coordinator(0.0, 3.0, 14.0, 0.0)),
            ],
            Some((1, 3)),
        );
        let c = compare(&before, &after);
        assert!(c.contradictions.is_empty(), "{c:?}");
        assert_eq!(c.deltas["coordinator-1"][COMMIT], (Some(10.0), 14.0));
        assert!(
            !c.deltas["coordinator-1"].contains_key(ROLE),
            "unchanged series are not kept"
        );
    }

    #[test]
    fn role_2_on_a_non_leader_in_the_current_term_contradicts() {
        let b = boundary(
            vec![
                (1, coordinator(2.0, 3.0, 10.0, 0.0)),
                (2, coordinator(2.0, 3.0, 10.0, 0.0)),
            ],
            Some((1, 3)),
        );
        let c = compare(&b, &b);
        assert_eq!(c.contradictions.len(), 1, "{c:?}");
        assert!(c.contradictions[0].contains("coordinator-2 reports raft_role 2"));
        // A restarted former leader still calling itself leader of an older term is not.
        let b = boundary(
            vec![
                (1, coordinator(2.0, 3.0, 10.0, 0.0)),
                (2, coordinator(2.0, 2.0, 10.0, 0.0)),
            ],
            Some((1, 3)),
        );
        assert!(compare(&b, &b).contradictions.is_empty());
    }

    #[test]
    fn commit_index_backwards_within_a_process_contradicts_and_a_restart_is_excused() {
        let before = boundary(vec![(1, coordinator(0.0, 3.0, 10.0, 0.0))], None);
        let after = boundary(vec![(1, coordinator(0.0, 3.0, 9.0, 0.0))], None);
        assert_eq!(compare(&before, &after).contradictions.len(), 1);
        let mut restarted = after.clone();
        if let Ok(s) = restarted.nodes.get_mut(&NodeName::Coordinator(1)).unwrap() {
            s.insert(COORDINATOR_START.into(), 2.0);
        }
        assert!(compare(&before, &restarted).contradictions.is_empty());
    }

    #[test]
    fn migrations_counted_must_match_migrations_completed() {
        let mut before = boundary(vec![(1, coordinator(0.0, 3.0, 10.0, 1.0))], None);
        let mut after = boundary(vec![(1, coordinator(0.0, 3.0, 12.0, 3.0))], None);
        before
            .completed
            .insert(NodeName::Coordinator(1), BTreeSet::from([1]));
        after
            .completed
            .insert(NodeName::Coordinator(1), BTreeSet::from([1, 2]));
        let c = compare(&before, &after);
        assert_eq!(c.contradictions.len(), 1, "{c:?}");
        assert!(c.contradictions[0].contains("grew by 2"), "{c:?}");
        after
            .completed
            .insert(NodeName::Coordinator(1), BTreeSet::from([1, 2, 3]));
        assert!(compare(&before, &after).contradictions.is_empty());
    }
}
