//! `partition` and `heal`: which links a step cuts or heals, and the set of cut links the
//! runner keeps (the backend is always handed the whole set).

use std::collections::BTreeSet;

use super::trial::{Mark, Trial};
use super::Runner;
use crate::backend::cuts::{self, Cuts, Link};
use crate::backend::{Backend, NodeName};
use crate::step::{PartitionArgs, Peer, Step};

impl<B: Backend> Runner<B> {
    /// `partition {target, from, oneway}` or `heal {target, from, oneway}`.
    pub(super) async fn partition_step(
        &mut self,
        step: &Step,
        a: &PartitionArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let binding = self.resolve(&a.target, trial).await?;
        let node = binding.node;
        let heal = matches!(step, Step::Heal(_));
        let links: Cuts = match (&a.from, heal) {
            // `heal` without `from`: every cut link of the target, both directions.
            (None, true) => self
                .cuts
                .iter()
                .filter(|(x, y)| *x == node || *y == node)
                .copied()
                .collect(),
            _ => {
                let peers = self.resolve_peers(node, a.from.as_deref(), trial).await?;
                links_of(node, &peers, a.oneway)
            }
        };
        let mut next = self.cuts.clone();
        if heal {
            next.retain(|l| !links.contains(l));
        } else {
            next.extend(links.iter().copied());
        }
        let at = self.backend.cut(&next).await?;
        self.cuts = next;
        let how = format!(
            "{} {}",
            if heal { "healed" } else { "cut" },
            cuts::describe(&links)
        );
        self.record_fault(at, step.action(), node, &how);
        if !heal {
            trial.last_fault_us = at;
        }
        if let Some(name) = &a.bind {
            trial.bindings.insert(name.clone(), binding);
        }
        trial.mark(&a.mark, Mark::action(at, how.clone()));
        Ok(how)
    }

    /// The nodes named by `from` (default: every other node), without `node` itself.
    async fn resolve_peers(
        &mut self,
        node: NodeName,
        from: Option<&[Peer]>,
        trial: &Trial,
    ) -> anyhow::Result<BTreeSet<NodeName>> {
        let all = self.backend.nodes();
        let mut peers = BTreeSet::new();
        match from {
            None => peers.extend(all.iter().copied()),
            Some(list) => {
                for peer in list {
                    match peer {
                        Peer::Coordinators => peers.extend(
                            all.iter()
                                .filter(|n| matches!(n, NodeName::Coordinator(_)))
                                .copied(),
                        ),
                        Peer::Workers => peers.extend(
                            all.iter()
                                .filter(|n| matches!(n, NodeName::Worker(_)))
                                .copied(),
                        ),
                        Peer::Node(t) => {
                            peers.insert(self.resolve(t, trial).await?.node);
                        }
                    }
                }
            }
        }
        peers.remove(&node);
        Ok(peers)
    }

    /// Coordinators cut (in either direction) from so many others that they cannot be part of a
    /// majority: their view of the leader is not the cluster's.
    pub(super) fn cut_off_coordinators(&self) -> BTreeSet<NodeName> {
        cut_off(&self.backend.nodes(), &self.cuts)
    }
}

/// The directed links between `node` and each peer: both ways, or `node → peer` only.
pub fn links_of(node: NodeName, peers: &BTreeSet<NodeName>, oneway: bool) -> Cuts {
    let mut links: Cuts = BTreeSet::new();
    for &p in peers {
        links.insert((node, p));
        if !oneway {
            links.insert((p, node));
        }
    }
    links
}

/// Coordinators that, with the coordinators they still talk to both ways, are no majority.
pub fn cut_off(nodes: &[NodeName], cuts: &Cuts) -> BTreeSet<NodeName> {
    let coordinators: Vec<NodeName> = nodes
        .iter()
        .filter(|n| matches!(n, NodeName::Coordinator(_)))
        .copied()
        .collect();
    let majority = coordinators.len() / 2 + 1;
    let whole = |a: NodeName, b: NodeName| {
        let (ab, ba): (Link, Link) = ((a, b), (b, a));
        !cuts.contains(&ab) && !cuts.contains(&ba)
    };
    coordinators
        .iter()
        .filter(|&&c| coordinators.iter().filter(|&&o| whole(c, o)).count() < majority)
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_go_both_ways_unless_oneway() {
        let (c1, c2, b) = (
            NodeName::Coordinator(1),
            NodeName::Coordinator(2),
            NodeName::Broker,
        );
        let peers: BTreeSet<NodeName> = [c2, b].into_iter().collect();
        assert_eq!(links_of(c1, &peers, false).len(), 4);
        let one: Vec<Link> = links_of(c1, &peers, true).into_iter().collect();
        assert_eq!(one, [(c1, b), (c1, c2)]);
    }

    #[test]
    fn a_coordinator_cut_from_both_peers_is_cut_off_and_the_majority_is_not() {
        let nodes: Vec<NodeName> = (1..=3)
            .map(NodeName::Coordinator)
            .chain([NodeName::Broker, NodeName::Worker(1)])
            .collect();
        let c = NodeName::Coordinator;
        let peers: BTreeSet<NodeName> = [c(2), c(3)].into_iter().collect();
        let isolated = links_of(c(1), &peers, false);
        assert_eq!(cut_off(&nodes, &isolated), [c(1)].into_iter().collect());
        // One direction is enough to break the two-way talk a vote needs.
        let oneway = links_of(c(1), &peers, true);
        assert_eq!(cut_off(&nodes, &oneway), [c(1)].into_iter().collect());
        // A coordinator cut from workers only is still in the majority.
        let workers: BTreeSet<NodeName> = [NodeName::Worker(1)].into_iter().collect();
        assert!(cut_off(&nodes, &links_of(c(1), &workers, false)).is_empty());
        // Cut from one peer only: each of the two still has a majority with the third.
        let one_peer: BTreeSet<NodeName> = [c(2)].into_iter().collect();
        assert!(cut_off(&nodes, &links_of(c(1), &one_peer, false)).is_empty());
    }
}
