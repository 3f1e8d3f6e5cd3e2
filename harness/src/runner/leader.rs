//! Leaders and Raft roles: an agreed leader (and when it was elected), a node's role, a change
//! of leader.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::bail;
use cluster::api::model::{ClusterEventKind, RaftMetrics, RaftRole};

use super::trial::{Binding, Mark, Trial};
use super::Runner;
use crate::backend::{Backend, NodeName, WallUs};
use crate::poll::{poll_until, Poll};
use crate::probe::describe;
use crate::step::{AwaitLeaderArgs, AwaitRoleArgs, LeaderChangedArgs, Role};

impl<B: Backend> Runner<B> {
    pub(super) async fn await_leader_step(
        &mut self,
        a: &AwaitLeaderArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
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
        let (leader, term, mark) = self
            .await_leader(&excluded, min_term, trial.last_fault_us, timeout)
            .await?;
        if let Some(name) = &a.bind {
            trial.bindings.insert(
                name.clone(),
                Binding {
                    term,
                    ..Binding::node(leader)
                },
            );
        }
        let note = format!("leader {leader} in term {term} ({})", mark.how);
        trial.mark(&a.mark, mark);
        Ok(note)
    }

    /// Wait until a leader not in `excluded`, in a term ≥ `min_term`, is reported by every live
    /// coordinator that answers (at least a quorum of the whole cluster) and confirms it itself.
    /// Returns the leader, its term, and the earliest moment at or after `since_us` that any
    /// coordinator recorded it (a restarted node records its restored leadership anew).
    pub(super) async fn await_leader(
        &mut self,
        excluded: &HashSet<NodeName>,
        min_term: u64,
        since_us: WallUs,
        timeout: Duration,
    ) -> anyhow::Result<(NodeName, u64, Mark)> {
        let quorum = self.backend.spec().coordinators as usize / 2 + 1;
        let mut what = "a leader agreed by every live coordinator".to_string();
        if !excluded.is_empty() {
            let not: Vec<String> = excluded.iter().map(ToString::to_string).collect();
            what.push_str(&format!(", other than {}", not.join(", ")));
        }
        if min_term > 0 {
            what.push_str(&format!(", in term ≥ {min_term}"));
        }
        let seen = poll_until(what, timeout, async || {
            let live = self.live_coordinators();
            let answers = self.probe.raft_metrics_all(&live).await;
            Ok(match agreed_leader(&answers, quorum, excluded, min_term) {
                Some(found) => Poll::Ready(found),
                None => Poll::Pending(describe(&answers)),
            })
        })
        .await?;
        let (leader, term) = seen.value;
        let mark = match self.leader_event_time(leader, term, since_us).await {
            Ok(Some(mark)) => mark,
            Ok(None) => Mark::poll(
                seen.at_us,
                seen.resolution_us,
                "first poll showing the leader (no leader_changed event in any log)".into(),
            ),
            Err(e) => Mark::poll(
                seen.at_us,
                seen.resolution_us,
                format!("first poll showing the leader ({e:#})"),
            ),
        };
        Ok((NodeName::Coordinator(leader as u32), term, mark))
    }

    /// The earliest `leader_changed` event for (`leader`, `term`) recorded at or after
    /// `since_us`, in the event logs read so far.
    async fn leader_event_time(
        &mut self,
        leader: u64,
        term: u64,
        since_us: WallUs,
    ) -> anyhow::Result<Option<Mark>> {
        if !self.options.event_log {
            anyhow::bail!("the cluster profile declares no event log");
        }
        let live = self.live_coordinators();
        self.events.refresh(&self.probe, &live).await?;
        Ok(self
            .events
            .events()
            .filter(|(_, e)| e.ts_ms >= since_us / 1000)
            .filter(|(_, e)| {
                matches!(e.kind, ClusterEventKind::LeaderChanged { term: t, leader: Some(l) } if t == term && l == leader)
            })
            .min_by_key(|(_, e)| e.ts_ms)
            .map(|(node, e)| {
                Mark::event(
                    e.ts_ms,
                    format!("earliest leader_changed event (leader {leader}, term {term}), on {node}"),
                )
            }))
    }

    pub(super) async fn await_role_step(
        &mut self,
        a: &AwaitRoleArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let node = self.resolve(&a.target, trial).await?.node;
        let timeout = a
            .timeout_ms
            .map_or(self.options.leader_timeout, Duration::from_millis);
        let want = match a.role {
            Role::Leader => RaftRole::Leader,
            Role::Follower => RaftRole::Follower,
        };
        let seen = self.await_role(node, want, timeout).await?;
        trial.mark(
            &a.mark,
            Mark::poll(
                seen.at_us,
                seen.resolution_us,
                format!("first poll showing {node} as a caught-up {want}"),
            ),
        );
        let m = seen.value;
        Ok(format!(
            "{node} is {} in term {} (leader {})",
            m.state,
            m.current_term,
            m.current_leader.map_or("none".into(), |l| l.to_string())
        ))
    }

    /// Wait until `node` reports `want` with a known leader and, when it is a follower, holds
    /// the leader's whole log: a rejoined node that still lags is not "back" (and would make the
    /// next election asymmetric).
    async fn await_role(
        &mut self,
        node: NodeName,
        want: RaftRole,
        timeout: Duration,
    ) -> anyhow::Result<crate::poll::Observed<RaftMetrics>> {
        poll_until(format!("{node} a caught-up {want}"), timeout, async || {
            let live = self.live_coordinators();
            let answers = self.probe.raft_metrics_all(&live).await;
            let mine = answers.iter().find(|(n, _)| *n == node).map(|(_, a)| a);
            Ok(Poll::Pending(match mine {
                Some(Ok(m)) if m.state == want && m.current_leader.is_some() => {
                    let leader = answers.iter().find_map(|(_, a)| {
                        a.as_ref().ok().filter(|l| {
                            Some(l.id) == m.current_leader && l.state == RaftRole::Leader
                        })
                    });
                    match leader {
                        Some(l) if m.last_log_index >= l.last_log_index => {
                            return Ok(Poll::Ready(m.clone()))
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
            }))
        })
        .await
    }

    pub(super) async fn assert_leader_changed(
        &mut self,
        a: &LeaderChangedArgs,
        trial: &Trial,
    ) -> anyhow::Result<String> {
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
}

/// The leader every answering coordinator reports, if it is not excluded, its term is high
/// enough, a quorum answered, and the leader itself answered as leader of that term.
pub(super) fn agreed_leader(
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

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

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
}
