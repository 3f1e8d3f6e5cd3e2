//! Arguments of the partition, isolation and nemesis steps (re-exported by [`super`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Fault, Target};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionArgs {
    pub target: Target,
    /// Nodes or groups on the other side: `coordinators`, `workers`, or any target (`broker`,
    /// `worker-2`, `leader`, `@name`, `worker-hosting:p`). The target itself is skipped.
    pub from: Option<Vec<Peer>>,
    /// Cut one direction only: what the target sends to them is dropped (they still reach it).
    #[serde(default)]
    pub oneway: bool,
    /// Remember the resolved target under this name.
    pub bind: Option<String>,
    /// Record the moment the cut (or heal) was issued under this mark name.
    pub mark: Option<String>,
}

/// One entry of a partition's `from`: a group of nodes, or a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum Peer {
    Coordinators,
    Workers,
    Node(Target),
}

impl TryFrom<String> for Peer {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "coordinators" => Ok(Peer::Coordinators),
            "workers" => Ok(Peer::Workers),
            _ => s
                .parse::<Target>()
                .map(Peer::Node)
                .map_err(|e| format!("{e} (or a group: coordinators, workers)")),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Coordinators => f.write_str("coordinators"),
            Peer::Workers => f.write_str("workers"),
            Peer::Node(t) => t.fmt(f),
        }
    }
}

impl PartitionArgs {
    /// `from coordinators, broker` (or `from every node`), `one way` when so.
    pub fn describe_from(&self) -> String {
        let from = match &self.from {
            Some(peers) => peers
                .iter()
                .map(Peer::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            None => "every node".into(),
        };
        format!("from {from}{}", if self.oneway { " (one way)" } else { "" })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteAnsweredArgs {
    pub via: Target,
    /// Timing name of the answer time (ends in `_ms`).
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinceArgs {
    pub since: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwaitFencedArgs {
    pub target: Target,
    pub mark: Option<String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NemesisFault {
    Kill,
    Stop,
    Pause,
    Partition,
    Restart,
}

impl NemesisFault {
    pub const ALL: [NemesisFault; 5] = [
        NemesisFault::Kill,
        NemesisFault::Stop,
        NemesisFault::Pause,
        NemesisFault::Partition,
        NemesisFault::Restart,
    ];

    pub fn fault(self) -> Fault {
        match self {
            NemesisFault::Kill => Fault::Kill,
            NemesisFault::Stop => Fault::Stop,
            NemesisFault::Pause => Fault::Pause,
            NemesisFault::Partition => Fault::Partition,
            NemesisFault::Restart => Fault::Restart,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NemesisTarget {
    Leader,
    Follower,
    Worker,
    Hosting,
}

impl NemesisTarget {
    pub const ALL: [NemesisTarget; 4] = [
        NemesisTarget::Leader,
        NemesisTarget::Follower,
        NemesisTarget::Worker,
        NemesisTarget::Hosting,
    ];

    pub fn is_coordinator(self) -> bool {
        matches!(self, NemesisTarget::Leader | NemesisTarget::Follower)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NemesisArgs {
    /// How long faults are injected (`--nemesis-ms` overrides it).
    pub duration_ms: u64,
    /// Fault kinds to draw from (default: all).
    pub faults: Option<Vec<NemesisFault>>,
    /// Target kinds to draw from (default: all): `hosting` is a worker hosting a pipeline.
    pub targets: Option<Vec<NemesisTarget>>,
    /// A fault's length, drawn uniformly from `[lo, hi]` ms (a restart has none).
    pub fault_ms: [u64; 2],
    /// The gap before the next fault, drawn from `[lo, hi]` ms.
    pub gap_ms: [u64; 2],
    /// At most this many faults at once (coordinators: at most a minority, whatever this says).
    #[serde(default = "default_concurrent")]
    pub max_concurrent: usize,
    /// Bound for the cluster to converge after the last heal.
    #[serde(default = "default_converge")]
    pub converge_ms: u64,
}

fn default_concurrent() -> usize {
    2
}

fn default_converge() -> u64 {
    60_000
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvariantArgs {
    /// After a fault window of a worker ends, how long an unhealthy verdict for it is still
    /// explained (default: grace + ping deadline + 2 s, the liveness sweep's limit).
    pub bound_ms: Option<u64>,
}
