//! `Step`: the closed set of things a phase can do, as plain data parsed from `phases/*.toml`.
//!
//! A step is a TOML table whose first key is `do = "<action>"`; the rest are that action's
//! arguments. Parsing dispatches on the action and deserializes the remaining keys straight from
//! the TOML document, so every error (unknown action, unknown key, bad target) carries the exact
//! span of the offending text. Adding a step is one variant here, one arm in `runner.rs`, one
//! parser test.

use std::fmt;

use serde::de::{self, value::MapAccessDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

mod chaos;
mod load;
mod target;
pub use chaos::{
    AwaitFencedArgs, InvariantArgs, NemesisArgs, NemesisFault, NemesisTarget, PartitionArgs, Peer,
    SinceArgs, WriteAnsweredArgs,
};
pub use load::FillLogArgs;
pub use target::{is_name, Target};

/// One typed step of a phase.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Start every node of the topology that is not running, and wait until each answers.
    StartCluster(StartArgs),
    /// Wait until the live coordinators agree on a leader that is not excluded.
    AwaitLeader(AwaitLeaderArgs),
    /// SIGKILL (process) / kill (container) a node.
    Kill(FaultArgs),
    /// Graceful stop: SIGTERM, then SIGKILL after the stop grace.
    Stop(FaultArgs),
    /// Freeze a node (SIGSTOP / container pause); it keeps its sockets open but answers nothing.
    Pause(FaultArgs),
    /// Undo `pause`.
    Resume(FaultArgs),
    /// Cut the links between a node and others (default: every other node); its process keeps
    /// running and the harness keeps reaching it.
    Partition(PartitionArgs),
    /// Make whole again the links `partition` with the same arguments cut (without `from`:
    /// every cut link of the target).
    Heal(PartitionArgs),
    /// Start a stopped or killed node again with the same arguments and data, and wait until it answers.
    Restart(RestartArgs),
    /// Delete a stopped coordinator's data dir (Raft log, vote, snapshots): a lost disk.
    Wipe(FaultArgs),
    /// Wait until a coordinator reports the given Raft role (and knows a leader).
    AwaitRole(AwaitRoleArgs),
    /// Fail unless the leader bound as `to` differs from `from` and was elected in a higher term.
    AssertLeaderChanged(LeaderChangedArgs),
    /// Record the interval between two marks as a named timing sample.
    Measure(MeasureArgs),
    /// Record the longest stretch between two marks in which a pipeline delivered nothing.
    MeasureGap(MeasureGapArgs),
    /// Resolve a target now and remember it (`worker-hosting:p` before killing it).
    Bind(BindArgs),
    /// Register the MQTT connector and deploy a group of seed pipelines; wait until all run.
    Deploy(DeployArgs),
    /// Publish a burst of numbered events.
    Publish(PublishArgs),
    /// Start publishing at a steady rate in the background.
    TrafficStart(TrafficStartArgs),
    /// Stop the background traffic.
    TrafficStop(NoArgs),
    /// Wait until every expected event published in this trial was delivered.
    AwaitDelivery(TimeoutArgs),
    /// Exact checks on this trial's events (lost, duplicated, unexpected default to 0).
    AssertCounts(AssertCountsArgs),
    /// Wait until a worker's committed status is the given one.
    AwaitWorkerStatus(AwaitWorkerStatusArgs),
    /// Wait until every pipeline the (killed) worker hosted runs on another worker.
    AwaitPlacementOff(AwaitPlacementOffArgs),
    /// Wait until coordinators hold exactly these numbers of worker links (or this total).
    AwaitWsConnections(AwaitWsArgs),
    /// Record how many worker links a coordinator holds, as a value for the detail line.
    CountWs(CountWsArgs),
    /// Wait until the given coordinators answer `/health` with a known leader.
    AwaitHealthy(AwaitHealthyArgs),
    /// Let time pass for a protocol-defined window (traffic before/after a fault). Never a
    /// stand-in for waiting on a condition: every condition has its `await_*` step.
    Hold(HoldArgs),
    /// Fail unless every worker is ready now and none turned unhealthy since a mark.
    AssertWorkersReady(AssertWorkersReadyArgs),
    /// Fail unless exactly this many pipelines are deployed, each running on a ready worker.
    AssertTopology(AssertTopologyArgs),
    /// Spread pipelines over the ready workers (at most one per worker while one hosts none).
    Spread(SpreadArgs),
    /// Send a write to one coordinator and fail unless it answers (success or error) within the
    /// cluster's write budget (2 × election max); the answer time is a figure.
    AssertWriteAnswered(WriteAnsweredArgs),
    /// Fail if any coordinator's event log holds a placement move decided since a mark.
    AssertNoMoves(SinceArgs),
    /// Wait until a worker runs no pipeline (asked on its own `/health`): fenced.
    AwaitFenced(AwaitFencedArgs),
    /// A seeded random schedule of faults under whatever traffic runs; everything healed at
    /// the end, then the cluster must converge within a bound.
    Nemesis(NemesisArgs),
    /// The invariants over every coordinator's event log (a term's leader ids only grow, growing epochs
    /// with one owner each, no unhealthy verdict outside a fault window of that worker).
    AssertInvariants(InvariantArgs),
    /// Grow the Raft log to at least `entries` by committing connector writes through the
    /// leader (`concurrency` at once); the filling time is a figure (`fill_ms`).
    FillLog(FillLogArgs),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureGapArgs {
    /// Timing name (ends in `_ms`).
    pub name: String,
    /// Seed pipeline name, e.g. `sensor_filter_1`.
    pub pipeline: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldArgs {
    pub ms: u64,
    /// Hold until `ms` after this mark instead of after now.
    pub since: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertWorkersReadyArgs {
    /// How many workers must be ready: a number, or `"all"` (every worker of the topology).
    pub count: Count,
    /// No `unhealthy` verdict may have been committed since this mark.
    pub since: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertTopologyArgs {
    /// A number, or `"all"` (every pipeline of the run's topology, `--pipelines`).
    pub pipelines: Count,
    /// `@w`: every pipeline @w hosted when it was bound is still on it, at the same epoch.
    pub kept_by: Option<Target>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadArgs {
    /// Move pipelines (the cluster's manual migrate) until no ready worker hosts two while
    /// another hosts none: re-establishes the placement a phase's targets assume.
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutArgs {
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindArgs {
    pub target: Target,
    pub bind: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployArgs {
    pub group: String,
    /// Seed pipelines by name: `sensor_filter_N` filters `e2e/input/N` into `e2e/output`.
    /// Left out: the group's share of the run's pipelines (`--pipelines`; by default the seed's
    /// c1 = sensor_filter_1, sensor_filter_2 and c2 = sensor_filter_3).
    #[serde(default)]
    pub pipelines: Option<Vec<String>>,
    /// The coordinator to send the deploy to (default: the leader).
    pub via: Option<Target>,
    /// `created` (201) or `existing` (the idempotent answer for a group already deployed):
    /// fail on the other.
    pub expect: Option<DeployOutcome>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployOutcome {
    Created,
    Existing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    NoWorkers,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::NoWorkers => "no_workers",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishArgs {
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficStartArgs {
    pub rate_per_s: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertCountsArgs {
    /// Exact number of expected (matching, broker-acknowledged) events, if given.
    pub expected: Option<u64>,
    #[serde(default)]
    pub lost: u64,
    #[serde(default)]
    pub duplicated: u64,
    #[serde(default)]
    pub unexpected: u64,
    /// Publishes the broker never acknowledged (outcome unknown).
    #[serde(default)]
    pub unknown: u64,
    /// Arrivals with a field missing or changed, each copy.
    #[serde(default)]
    pub malformed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatusName {
    Ready,
    Unhealthy,
    Draining,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwaitWorkerStatusArgs {
    pub target: Target,
    pub status: WorkerStatusName,
    pub mark: Option<String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwaitPlacementOffArgs {
    pub target: Target,
    pub mark: Option<String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwaitWsArgs {
    /// `coordinator-N` → number of worker links it must hold.
    #[serde(default)]
    pub expect: std::collections::BTreeMap<String, u64>,
    /// Every coordinator holds exactly the links of the workers homed on it (the seed's
    /// topology: 2/1/1; others: as `home_of` spreads them, named in the step's note).
    #[serde(default)]
    pub homed: bool,
    /// Total links over every live coordinator: a number or `"all"` (one per worker).
    pub total: Option<Count>,
    /// Remember the observed distribution as a detail value under this name.
    pub bind: Option<String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountWsArgs {
    pub target: Target,
    pub bind: String,
    /// Wait (bounded) until the count equals this.
    pub expect: Option<u64>,
    /// Wait (bounded) until the count is one less than a value recorded earlier (after a kill).
    pub one_less_than: Option<String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwaitHealthyArgs {
    pub targets: Vec<Target>,
    /// The `/health` status each must report (default `healthy`).
    pub status: Option<HealthStatus>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartArgs {
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwaitLeaderArgs {
    /// Coordinators that may not be the answer (e.g. the one just killed).
    #[serde(default)]
    pub exclude: Vec<Target>,
    /// Remember the leader under this name (`@name` in later steps).
    pub bind: Option<String>,
    /// Record the moment the leader was first reported under this mark name.
    pub mark: Option<String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultArgs {
    pub target: Target,
    /// Remember the resolved node under this name.
    pub bind: Option<String>,
    /// Record the moment the fault was delivered under this mark name.
    pub mark: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartArgs {
    pub target: Target,
    pub mark: Option<String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwaitRoleArgs {
    pub target: Target,
    pub role: Role,
    pub mark: Option<String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Leader,
    Follower,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderChangedArgs {
    pub from: Target,
    pub to: Target,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureArgs {
    /// Timing name, unit last (`election_ms`).
    pub name: String,
    pub from: String,
    pub to: String,
    /// What the configuration alone demands of this interval (see [`crate::figure`]), printed
    /// beside the figure: `grace`, `lease + election_min - heartbeat .. lease + election_max + tick`.
    pub floor: Option<crate::figure::Span>,
}

/// The action names, in the `do = "..."` key.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    StartCluster,
    AwaitLeader,
    Kill,
    Stop,
    Pause,
    Resume,
    Partition,
    Heal,
    Restart,
    Wipe,
    AwaitRole,
    AssertLeaderChanged,
    Measure,
    MeasureGap,
    Bind,
    Deploy,
    Publish,
    TrafficStart,
    TrafficStop,
    AwaitDelivery,
    AssertCounts,
    AwaitWorkerStatus,
    AwaitPlacementOff,
    AwaitWsConnections,
    CountWs,
    AwaitHealthy,
    Hold,
    AssertWorkersReady,
    AssertTopology,
    Spread,
    AssertWriteAnswered,
    AssertNoMoves,
    AwaitFenced,
    Nemesis,
    AssertInvariants,
    FillLog,
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StepVisitor)
    }
}

struct StepVisitor;

impl<'de> Visitor<'de> for StepVisitor {
    type Value = Step;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a step table starting with do = \"<action>\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Step, A::Error> {
        match map.next_key::<String>()?.as_deref() {
            Some("do") => {}
            Some(other) => {
                return Err(de::Error::custom(format!(
                    "a step must start with `do = \"<action>\"`, found `{other}` first"
                )))
            }
            None => return Err(de::Error::custom("empty step: add `do = \"<action>\"`")),
        }
        let action: Action = map.next_value()?;
        let rest = MapAccessDeserializer::new(map);
        Ok(match action {
            Action::StartCluster => Step::StartCluster(Deserialize::deserialize(rest)?),
            Action::AwaitLeader => Step::AwaitLeader(Deserialize::deserialize(rest)?),
            Action::Kill => Step::Kill(Deserialize::deserialize(rest)?),
            Action::Stop => Step::Stop(Deserialize::deserialize(rest)?),
            Action::Pause => Step::Pause(Deserialize::deserialize(rest)?),
            Action::Resume => Step::Resume(Deserialize::deserialize(rest)?),
            Action::Partition => Step::Partition(Deserialize::deserialize(rest)?),
            Action::Heal => Step::Heal(Deserialize::deserialize(rest)?),
            Action::Restart => Step::Restart(Deserialize::deserialize(rest)?),
            Action::Wipe => Step::Wipe(Deserialize::deserialize(rest)?),
            Action::AwaitRole => Step::AwaitRole(Deserialize::deserialize(rest)?),
            Action::AssertLeaderChanged => {
                Step::AssertLeaderChanged(Deserialize::deserialize(rest)?)
            }
            Action::Measure => Step::Measure(Deserialize::deserialize(rest)?),
            Action::MeasureGap => Step::MeasureGap(Deserialize::deserialize(rest)?),
            Action::Bind => Step::Bind(Deserialize::deserialize(rest)?),
            Action::Deploy => Step::Deploy(Deserialize::deserialize(rest)?),
            Action::Publish => Step::Publish(Deserialize::deserialize(rest)?),
            Action::TrafficStart => Step::TrafficStart(Deserialize::deserialize(rest)?),
            Action::TrafficStop => Step::TrafficStop(Deserialize::deserialize(rest)?),
            Action::AwaitDelivery => Step::AwaitDelivery(Deserialize::deserialize(rest)?),
            Action::AssertCounts => Step::AssertCounts(Deserialize::deserialize(rest)?),
            Action::AwaitWorkerStatus => Step::AwaitWorkerStatus(Deserialize::deserialize(rest)?),
            Action::AwaitPlacementOff => Step::AwaitPlacementOff(Deserialize::deserialize(rest)?),
            Action::AwaitWsConnections => Step::AwaitWsConnections(Deserialize::deserialize(rest)?),
            Action::CountWs => Step::CountWs(Deserialize::deserialize(rest)?),
            Action::AwaitHealthy => Step::AwaitHealthy(Deserialize::deserialize(rest)?),
            Action::Hold => Step::Hold(Deserialize::deserialize(rest)?),
            Action::AssertWorkersReady => Step::AssertWorkersReady(Deserialize::deserialize(rest)?),
            Action::AssertTopology => Step::AssertTopology(Deserialize::deserialize(rest)?),
            Action::Spread => Step::Spread(Deserialize::deserialize(rest)?),
            Action::AssertWriteAnswered => {
                Step::AssertWriteAnswered(Deserialize::deserialize(rest)?)
            }
            Action::AssertNoMoves => Step::AssertNoMoves(Deserialize::deserialize(rest)?),
            Action::AwaitFenced => Step::AwaitFenced(Deserialize::deserialize(rest)?),
            Action::Nemesis => Step::Nemesis(Deserialize::deserialize(rest)?),
            Action::AssertInvariants => Step::AssertInvariants(Deserialize::deserialize(rest)?),
            Action::FillLog => Step::FillLog(Deserialize::deserialize(rest)?),
        })
    }
}

impl Step {
    /// The `do` name of this step.
    pub fn action(&self) -> &'static str {
        match self {
            Step::StartCluster(_) => "start_cluster",
            Step::AwaitLeader(_) => "await_leader",
            Step::Kill(_) => "kill",
            Step::Stop(_) => "stop",
            Step::Pause(_) => "pause",
            Step::Resume(_) => "resume",
            Step::Partition(_) => "partition",
            Step::Heal(_) => "heal",
            Step::Restart(_) => "restart",
            Step::Wipe(_) => "wipe",
            Step::AwaitRole(_) => "await_role",
            Step::AssertLeaderChanged(_) => "assert_leader_changed",
            Step::Measure(_) => "measure",
            Step::MeasureGap(_) => "measure_gap",
            Step::Bind(_) => "bind",
            Step::Deploy(_) => "deploy",
            Step::Publish(_) => "publish",
            Step::TrafficStart(_) => "traffic_start",
            Step::TrafficStop(_) => "traffic_stop",
            Step::AwaitDelivery(_) => "await_delivery",
            Step::AssertCounts(_) => "assert_counts",
            Step::AwaitWorkerStatus(_) => "await_worker_status",
            Step::AwaitPlacementOff(_) => "await_placement_off",
            Step::AwaitWsConnections(_) => "await_ws_connections",
            Step::CountWs(_) => "count_ws",
            Step::AwaitHealthy(_) => "await_healthy",
            Step::Hold(_) => "hold",
            Step::AssertWorkersReady(_) => "assert_workers_ready",
            Step::AssertTopology(_) => "assert_topology",
            Step::Spread(_) => "spread",
            Step::AssertWriteAnswered(_) => "assert_write_answered",
            Step::AssertNoMoves(_) => "assert_no_moves",
            Step::AwaitFenced(_) => "await_fenced",
            Step::Nemesis(_) => "nemesis",
            Step::AssertInvariants(_) => "assert_invariants",
            Step::FillLog(_) => "fill_log",
        }
    }

    /// True when the step needs the broker and workers (a data-plane topology).
    pub fn needs_workers(&self) -> bool {
        matches!(
            self,
            Step::Deploy(_)
                | Step::Publish(_)
                | Step::TrafficStart(_)
                | Step::TrafficStop(_)
                | Step::AwaitDelivery(_)
                | Step::AssertCounts(_)
                | Step::AwaitWorkerStatus(_)
                | Step::AwaitPlacementOff(_)
                | Step::AwaitWsConnections(_)
                | Step::CountWs(_)
                | Step::AssertWorkersReady(_)
                | Step::AssertTopology(_)
                | Step::Spread(_)
                | Step::AssertNoMoves(_)
                | Step::AwaitFenced(_)
                | Step::Nemesis(_)
        )
    }

    /// The fault this step injects, for the backend capability check.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            Step::Kill(_) => Some(Fault::Kill),
            Step::Stop(_) => Some(Fault::Stop),
            Step::Pause(_) | Step::Resume(_) => Some(Fault::Pause),
            Step::Partition(_) | Step::Heal(_) => Some(Fault::Partition),
            Step::Restart(_) => Some(Fault::Restart),
            Step::Wipe(_) => Some(Fault::Wipe),
            _ => None,
        }
    }

    /// Every fault this step may inject (a nemesis: each kind it draws from).
    pub fn faults_needed(&self) -> Vec<Fault> {
        match self {
            Step::Nemesis(a) => {
                let mut kinds: Vec<Fault> = a
                    .faults
                    .as_deref()
                    .unwrap_or(&NemesisFault::ALL)
                    .iter()
                    .map(|k| k.fault())
                    .collect();
                kinds.dedup();
                kinds
            }
            other => other.fault().into_iter().collect(),
        }
    }

    /// Targets named by this step (for validation).
    pub fn targets(&self) -> Vec<&Target> {
        match self {
            Step::AwaitLeader(a) => a.exclude.iter().collect(),
            Step::Kill(a) | Step::Stop(a) | Step::Pause(a) | Step::Resume(a) | Step::Wipe(a) => {
                vec![&a.target]
            }
            Step::Partition(a) | Step::Heal(a) => std::iter::once(&a.target)
                .chain(a.from.iter().flatten().filter_map(|p| match p {
                    Peer::Node(t) => Some(t),
                    _ => None,
                }))
                .collect(),
            Step::Restart(a) => vec![&a.target],
            Step::AwaitRole(a) => vec![&a.target],
            Step::AssertLeaderChanged(a) => vec![&a.from, &a.to],
            Step::Bind(a) => vec![&a.target],
            Step::Deploy(a) => a.via.iter().collect(),
            Step::AwaitWorkerStatus(a) => vec![&a.target],
            Step::AwaitPlacementOff(a) => vec![&a.target],
            Step::CountWs(a) => vec![&a.target],
            Step::AwaitHealthy(a) => a.targets.iter().collect(),
            Step::AssertTopology(a) => a.kept_by.iter().collect(),
            Step::AssertWriteAnswered(a) => vec![&a.via],
            Step::AwaitFenced(a) => vec![&a.target],
            Step::StartCluster(_)
            | Step::Measure(_)
            | Step::MeasureGap(_)
            | Step::Publish(_)
            | Step::TrafficStart(_)
            | Step::TrafficStop(_)
            | Step::AwaitDelivery(_)
            | Step::AssertCounts(_)
            | Step::AwaitWsConnections(_)
            | Step::Hold(_)
            | Step::AssertWorkersReady(_)
            | Step::Spread(_)
            | Step::AssertNoMoves(_)
            | Step::Nemesis(_)
            | Step::AssertInvariants(_)
            | Step::FillLog(_) => vec![],
        }
    }

    /// The name this step binds, if any.
    pub fn binds(&self) -> Option<&str> {
        match self {
            Step::AwaitLeader(a) => a.bind.as_deref(),
            Step::Kill(a) | Step::Stop(a) | Step::Pause(a) | Step::Resume(a) => a.bind.as_deref(),
            Step::Partition(a) | Step::Heal(a) => a.bind.as_deref(),
            Step::Bind(a) => Some(&a.bind),
            Step::CountWs(a) => Some(&a.bind),
            Step::AwaitWsConnections(a) => a.bind.as_deref(),
            _ => None,
        }
    }

    /// The mark this step records, if any.
    pub fn marks(&self) -> Option<&str> {
        match self {
            Step::AwaitLeader(a) => a.mark.as_deref(),
            Step::Kill(a) | Step::Stop(a) | Step::Pause(a) | Step::Resume(a) | Step::Wipe(a) => {
                a.mark.as_deref()
            }
            Step::Partition(a) | Step::Heal(a) => a.mark.as_deref(),
            Step::Restart(a) => a.mark.as_deref(),
            Step::AwaitRole(a) => a.mark.as_deref(),
            Step::AwaitWorkerStatus(a) => a.mark.as_deref(),
            Step::AwaitPlacementOff(a) => a.mark.as_deref(),
            Step::AwaitFenced(a) => a.mark.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.action())?;
        match self {
            Step::AwaitLeader(a) if !a.exclude.is_empty() => {
                let names: Vec<String> = a.exclude.iter().map(Target::to_string).collect();
                write!(f, " (not {})", names.join(", "))
            }
            Step::Kill(a) | Step::Stop(a) | Step::Pause(a) | Step::Resume(a) | Step::Wipe(a) => {
                write!(f, " {}", a.target)
            }
            Step::Partition(a) | Step::Heal(a) => write!(f, " {} {}", a.target, a.describe_from()),
            Step::Restart(a) => write!(f, " {}", a.target),
            Step::AwaitRole(a) => write!(f, " {} {:?}", a.target, a.role),
            Step::AssertLeaderChanged(a) => write!(f, " {} -> {}", a.from, a.to),
            Step::Measure(a) => write!(f, " {} = {} -> {}", a.name, a.from, a.to),
            Step::MeasureGap(a) => write!(
                f,
                " {} = {} silent, {} -> {}",
                a.name, a.pipeline, a.from, a.to
            ),
            Step::Bind(a) => write!(f, " {} as @{}", a.target, a.bind),
            Step::Deploy(a) => match &a.pipelines {
                Some(p) => write!(f, " {} [{}]", a.group, p.join(", ")),
                None => write!(f, " {}", a.group),
            },
            Step::Publish(a) => write!(f, " {}", a.count),
            Step::TrafficStart(a) => write!(f, " {}/s", a.rate_per_s),
            Step::AwaitWorkerStatus(a) => write!(f, " {} {:?}", a.target, a.status),
            Step::AwaitPlacementOff(a) => write!(f, " {}", a.target),
            Step::CountWs(a) => write!(f, " {}", a.target),
            Step::Hold(a) => match &a.since {
                Some(m) => write!(f, " until {} ms after {m}", a.ms),
                None => write!(f, " {} ms", a.ms),
            },
            Step::AssertWorkersReady(a) => write!(f, " {}", a.count),
            Step::AssertTopology(a) => write!(f, " {} pipelines", a.pipelines),
            Step::AssertWriteAnswered(a) => write!(f, " via {}", a.via),
            Step::AssertNoMoves(a) => write!(f, " since {}", a.since),
            Step::AwaitFenced(a) => write!(f, " {}", a.target),
            Step::FillLog(a) => write!(f, " to {} entries, {} at once", a.entries, a.concurrency),
            Step::Nemesis(a) => write!(
                f,
                " faults {}–{} ms, gaps {}–{} ms, ≤ {} at once",
                a.fault_ms[0], a.fault_ms[1], a.gap_ms[0], a.gap_ms[1], a.max_concurrent
            ),
            _ => Ok(()),
        }
    }
}

/// A number a phase asserts: exact, or `"all"` (every worker, or every pipeline, of the run's
/// topology), so one phase file holds at any `--workers` / `--pipelines`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Count {
    Exactly(u64),
    All(AllKeyword),
}

/// The keyword `"all"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AllKeyword {
    #[serde(rename = "all")]
    All,
}

impl Count {
    /// The number, with `all` standing for `every`.
    pub fn resolve(self, every: u64) -> u64 {
        match self {
            Count::Exactly(n) => n,
            Count::All(_) => every,
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Exactly(n) => write!(f, "{n}"),
            Count::All(_) => f.write_str("all"),
        }
    }
}

/// Faults a backend may or may not be able to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    Kill,
    Stop,
    Pause,
    Restart,
    Partition,
    /// Delete a stopped node's data dir.
    Wipe,
}

impl Fault {
    /// Every fault a phase can name.
    pub const ALL: [Fault; 6] = [
        Fault::Kill,
        Fault::Stop,
        Fault::Pause,
        Fault::Restart,
        Fault::Partition,
        Fault::Wipe,
    ];
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Kill => "kill",
            Fault::Stop => "stop",
            Fault::Pause => "pause",
            Fault::Restart => "restart",
            Fault::Partition => "partition",
            Fault::Wipe => "wipe",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print_back() {
        for s in [
            "coordinator-2",
            "worker-4",
            "broker",
            "leader",
            "follower",
            "worker-hosting:sensor_filter_1",
            "home-of:worker-3",
            "@old_leader",
        ] {
            let t: Target = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn bad_targets_say_why() {
        for (s, why) in [
            ("coordinator-0", "not a node number"),
            ("coordinator-x", "not a node number"),
            ("leaderr", "expected coordinator-N"),
            ("@", "not a name"),
            ("worker-hosting:", "not a name"),
        ] {
            let err = s.parse::<Target>().unwrap_err();
            assert!(err.contains(why), "{s}: {err}");
        }
    }

    #[test]
    fn a_partition_names_its_peers_and_direction() {
        let step: Step = toml::from_str(
            "do = \"partition\"\ntarget = \"@old\"\nfrom = [\"coordinators\", \"broker\", \"worker-hosting:p\"]\noneway = true",
        )
        .expect("a partition step");
        assert_eq!(step.fault(), Some(Fault::Partition));
        assert_eq!(
            step.to_string(),
            "partition @old from coordinators, broker, worker-hosting:p (one way)"
        );
        let targets: Vec<String> = step.targets().iter().map(|t| t.to_string()).collect();
        assert_eq!(targets, ["@old", "broker", "worker-hosting:p"]);
        let heal: Step = toml::from_str("do = \"heal\"\ntarget = \"worker-1\"").expect("heal");
        assert_eq!(heal.to_string(), "heal worker-1 from every node");
        let bad = toml::from_str::<Step>(
            "do = \"partition\"\ntarget = \"worker-1\"\nfrom = [\"brokers\"]",
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("or a group: coordinators, workers"), "{bad}");
    }

    #[test]
    fn wipe_parses_as_a_fault_step() {
        let step: Step = toml::from_str("do = \"wipe\"\ntarget = \"@victim\"\nmark = \"wiped\"")
            .expect("a wipe step");
        assert_eq!(step.fault(), Some(Fault::Wipe));
        assert_eq!(step.marks(), Some("wiped"));
        assert_eq!(step.to_string(), "wipe @victim");
    }
}
