//! Backends: where the cluster's nodes run and how faults reach them. The trait is small and
//! declares its capabilities, so a phase asking for a fault a backend cannot inject is refused
//! before anything starts.

pub mod broker;
pub mod cuts;
pub mod docker;
pub mod image;
pub mod netns;
pub mod ownership;
pub mod ports;
pub mod process;

use std::fmt;
use std::future::Future;
use std::sync::LazyLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::step::Fault;

/// A node of the reference cluster, named as in the seed (`coordinator-1`, `worker-3`, `broker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeName {
    // Variant order is start order: the broker, then coordinators, then workers.
    Broker,
    Coordinator(u32),
    Worker(u32),
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeName::Coordinator(n) => write!(f, "coordinator-{n}"),
            NodeName::Worker(n) => write!(f, "worker-{n}"),
            NodeName::Broker => f.write_str("broker"),
        }
    }
}

/// Raft timings handed to every coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftTimings {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl RaftTimings {
    /// The seed suite's configuration: heartbeat 500 ms, election timeout 1500–3000 ms.
    pub const SEED: RaftTimings = RaftTimings {
        heartbeat_ms: 500,
        election_min_ms: 1500,
        election_max_ms: 3000,
    };
}

/// Failure-detection timings handed to every coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorTimings {
    pub grace_ms: u64,
    pub ping_interval_ms: u64,
    pub ping_dead_ms: u64,
    pub rest_timeout_ms: u64,
}

impl DetectorTimings {
    /// The seed's design: 5 s grace, ping every 1 s, dead after 3 s, REST heartbeat timeout 10 s.
    pub const SEED: DetectorTimings = DetectorTimings {
        grace_ms: 5000,
        ping_interval_ms: 1000,
        ping_dead_ms: 3000,
        rest_timeout_ms: 10_000,
    };
}

/// The cluster a backend stands up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub coordinators: u32,
    pub workers: u32,
    pub raft: RaftTimings,
    pub detector: DetectorTimings,
    /// The operator key: the harness's own API calls present it; a profile whose cluster takes
    /// one key for everything (`{api_key}`) gets this one. Never written to reports.
    #[serde(skip)]
    pub api_key: Option<String>,
    /// The coordinators' peer key (never written to reports).
    #[serde(skip)]
    pub peer_key: Option<String>,
    /// The secret each worker's token is derived from; coordinators and the embedded broker
    /// check the tokens with it (never written to reports).
    #[serde(skip)]
    pub worker_secret: Option<String>,
    /// The cluster runs without keys (`--insecure`): every route open.
    #[serde(default)]
    pub insecure: bool,
    /// An external broker (`--mqtt-url`): no broker node is started, everything uses this one.
    #[serde(default)]
    pub mqtt_url: Option<broker::MqttUrl>,
    /// The publisher's and the collector's broker accounts (never written to reports).
    #[serde(skip)]
    pub mqtt_logins: Option<broker::HarnessLogins>,
    /// Filter pipelines of the workload (`sensor_filter_1..=N`; the seed's three by default).
    #[serde(default = "seed_pipelines")]
    pub pipelines: u32,
}

fn seed_pipelines() -> u32 {
    crate::topology::SEED_PIPELINES
}

/// A fresh random secret (32 bytes from the OS's generator, hex): the run's keys are its own,
/// never derived from the seed, so a replayed run does not reuse them.
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A worker's own default room (`cluster worker --max-pipelines`): at most this many pipelines
/// run with the flag left out.
pub const WORKER_DEFAULT_MAX_PIPELINES: u32 = 100;

impl ClusterSpec {
    /// The keys of one run: fresh random peer key, operator key and worker secret; or none.
    pub fn with_keys(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        if insecure {
            (self.api_key, self.peer_key, self.worker_secret) = (None, None, None);
        } else {
            self.api_key = Some(random_secret());
            self.peer_key = Some(random_secret());
            self.worker_secret = Some(random_secret());
        }
        // The publisher's and collector's broker accounts: an external broker's URL account, or
        // fresh ones on the embedded broker (none when it runs --insecure).
        self.mqtt_logins = match &self.mqtt_url {
            Some(url) => broker::HarnessLogins::generate(Some(url)),
            None if insecure => None,
            None => broker::HarnessLogins::generate(None),
        };
        self
    }

    /// Worker `node`'s token under the run's worker secret.
    pub fn worker_token(&self, node: NodeName) -> Option<String> {
        match node {
            NodeName::Worker(_) => self
                .worker_secret
                .as_ref()
                .map(|s| cluster::auth::worker_token(s, &node.to_string())),
            _ => None,
        }
    }

    /// The reference cluster's credentials for `node`, as environment variables (never on the
    /// command line, where `ps` shows them): a coordinator's three keys, a worker's token, the
    /// embedded broker's worker secret and the harness's client accounts.
    pub fn node_env(&self, node: NodeName) -> Vec<(String, String)> {
        let mut env = Vec::new();
        match node {
            NodeName::Coordinator(_) => {
                for (name, value) in [
                    ("VARPULIS_PEER_KEY", &self.peer_key),
                    ("VARPULIS_OPERATOR_KEY", &self.api_key),
                    ("VARPULIS_WORKER_SECRET", &self.worker_secret),
                ] {
                    if let Some(v) = value {
                        env.push((name.to_string(), v.clone()));
                    }
                }
            }
            NodeName::Worker(_) => {
                if let Some(token) = self.worker_token(node) {
                    env.push(("VARPULIS_WORKER_TOKEN".to_string(), token));
                }
            }
            NodeName::Broker => {
                if let Some(secret) = &self.worker_secret {
                    env.push(("VARPULIS_WORKER_SECRET".to_string(), secret.clone()));
                }
                if let Some(logins) = &self.mqtt_logins {
                    env.push(("VARPULIS_MQTT_CLIENTS".to_string(), logins.broker_clients()));
                }
            }
        }
        env
    }

    /// `--max-pipelines` for every worker when the workload is bigger than a worker's default
    /// room: then any one worker can host every pipeline (the scaling runs put hundreds on one
    /// worker); `None` otherwise, so a seed-sized command line stays the seed's.
    pub fn worker_max_pipelines(&self) -> Option<u32> {
        (self.pipelines > WORKER_DEFAULT_MAX_PIPELINES).then_some(self.pipelines)
    }

    /// The nodes of the topology in start order: the broker (unless external), coordinators,
    /// workers.
    pub fn nodes(&self) -> Vec<NodeName> {
        let broker = self.mqtt_url.is_none().then_some(NodeName::Broker);
        broker
            .into_iter()
            .chain((1..=self.coordinators).map(NodeName::Coordinator))
            .chain((1..=self.workers).map(NodeName::Worker))
            .collect()
    }
}

/// What a node is doing, as far as the backend knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    NotStarted,
    Running,
    Paused,
    /// Exited (killed, stopped, crashed).
    Down,
}

/// Wall-clock microseconds since the Unix epoch: the time base of marks and server events.
pub type WallUs = u64;

/// The wall clock read once, with the monotonic instant it was read at.
static ANCHOR: LazyLock<(Instant, WallUs)> = LazyLock::new(|| {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    (Instant::now(), wall)
});

/// Now, in wall-clock µs, advanced by the monotonic clock from one reading of the wall clock:
/// comparable with the nodes' event timestamps (same machine clock), yet a clock step during the
/// run (NTP) can neither reorder two marks nor make a duration negative.
pub fn now_us() -> WallUs {
    let (instant, wall) = *ANCHOR;
    wall + instant.elapsed().as_micros() as u64
}

/// Where nodes run. Fault methods return the wall-clock moment the fault was delivered.
pub trait Backend: Send {
    fn name(&self) -> &'static str;
    /// Faults this backend can inject.
    fn faults(&self) -> Vec<Fault>;
    fn spec(&self) -> &ClusterSpec;
    /// Every node of the topology.
    fn nodes(&self) -> Vec<NodeName>;
    /// Base URL at which the harness reaches the node's HTTP API (for the broker: `mqtt://h:p`).
    fn endpoint(&self, node: NodeName) -> String;
    /// Host and port of the MQTT broker, as the harness reaches it.
    fn mqtt(&self) -> (String, u16);
    fn state(&self, node: NodeName) -> NodeState;
    /// Start the node (again), with the same arguments and data directory.
    fn start(&mut self, node: NodeName) -> impl Future<Output = anyhow::Result<WallUs>> + Send;
    fn kill(&mut self, node: NodeName) -> impl Future<Output = anyhow::Result<WallUs>> + Send;
    fn stop(&mut self, node: NodeName) -> impl Future<Output = anyhow::Result<WallUs>> + Send;
    fn pause(&mut self, node: NodeName) -> impl Future<Output = anyhow::Result<WallUs>> + Send;
    fn resume(&mut self, node: NodeName) -> impl Future<Output = anyhow::Result<WallUs>> + Send;
    /// Make exactly these directed links cut, and every other link whole (only backends
    /// declaring `Fault::Partition`). The harness's own path to every node is never cut.
    fn cut(&mut self, cuts: &cuts::Cuts) -> impl Future<Output = anyhow::Result<WallUs>> + Send {
        let name = self.name();
        let any = !cuts.is_empty();
        async move {
            if any {
                anyhow::bail!("the {name} backend cannot cut links")
            }
            Ok(now_us())
        }
    }
    /// Delete a stopped node's data dir (only backends declaring `Fault::Wipe`).
    fn wipe(&mut self, node: NodeName) -> impl Future<Output = anyhow::Result<WallUs>> + Send {
        let name = self.name();
        async move { anyhow::bail!("the {name} backend cannot wipe {node}") }
    }
    /// If `node` was started and has exited by itself since, why: its exit status and the last
    /// lines of its log (a node refusing its configuration exits at once; no wait should run
    /// out its timeout on it). Backends that cannot tell answer `None`.
    fn exited(&mut self, node: NodeName) -> Option<String> {
        let _ = node;
        None
    }
    /// The node's OS process id as this host sees it (for `/proc`), while it runs; backends
    /// whose nodes are not this host's processes answer `None`.
    fn os_pid(&self, node: NodeName) -> Option<u32> {
        let _ = node;
        None
    }
    /// Kill every node and release everything the backend created; logs stay in the run dir.
    fn shutdown(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Why this machine cannot partition on that backend (privileges, programs, a remote engine),
/// or `None` when it can.
pub fn partition_refusal(docker: bool) -> Option<String> {
    if docker {
        docker::partition_refusal()
    } else {
        netns::preflight()
    }
}

/// How one backend addresses things, for [`node_args`].
pub struct Addressing<'a> {
    /// The address the node listens on.
    pub listen: String,
    /// Base URL of coordinator N as the node reaches it.
    pub coordinator_url: &'a dyn Fn(u32) -> String,
    /// The broker as the node reaches it (`mqtt://host:port`).
    pub mqtt_url: String,
    /// A coordinator's data dir.
    pub data_dir: String,
    /// The URL a worker reports at registration (default: derived from `listen`).
    pub advertise: Option<String>,
}

/// The `cluster` command line of a node: the same flags on every backend, only addresses differ.
pub fn node_args(spec: &ClusterSpec, node: NodeName, a: &Addressing<'_>) -> Vec<String> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    match node {
        NodeName::Broker => {
            let mut args = strings(&["broker", "--listen", &a.listen]);
            if spec.insecure {
                args.push("--insecure".to_string());
            }
            args
        }
        NodeName::Coordinator(id) => {
            let peers: Vec<String> = (1..=spec.coordinators)
                .map(|n| format!("{n}={}", (a.coordinator_url)(n)))
                .collect();
            let (r, d) = (spec.raft, spec.detector);
            let mut args = strings(&[
                "coordinator",
                "--node-id",
                &id.to_string(),
                "--listen",
                &a.listen,
                "--peers",
                &peers.join(","),
                "--data-dir",
                &a.data_dir,
                "--heartbeat-ms",
                &r.heartbeat_ms.to_string(),
                "--election-min-ms",
                &r.election_min_ms.to_string(),
                "--election-max-ms",
                &r.election_max_ms.to_string(),
                "--grace-ms",
                &d.grace_ms.to_string(),
                "--ping-interval-ms",
                &d.ping_interval_ms.to_string(),
                "--ping-dead-ms",
                &d.ping_dead_ms.to_string(),
                "--rest-heartbeat-timeout-ms",
                &d.rest_timeout_ms.to_string(),
            ]);
            if spec.insecure {
                args.push("--insecure".to_string());
            }
            args
        }
        NodeName::Worker(n) => {
            let home = home_of(n, spec.coordinators);
            // Home first, then the others in order: where the link moves when home dies.
            let order: Vec<String> = std::iter::once(home)
                .chain((1..=spec.coordinators).filter(|c| *c != home))
                .map(|c| (a.coordinator_url)(c))
                .collect();
            let mut args = strings(&[
                "worker",
                "--worker-id",
                &node.to_string(),
                "--listen",
                &a.listen,
                "--coordinators",
                &order.join(","),
                "--mqtt-url",
                &a.mqtt_url,
            ]);
            if let Some(url) = &a.advertise {
                args.extend(strings(&["--advertise", url]));
            }
            if let Some(max) = spec.worker_max_pipelines() {
                args.extend(strings(&["--max-pipelines", &max.to_string()]));
            }
            args
        }
    }
}

/// The coordinator a worker links to first, as in the seed: workers 1 and 2 on coordinator-1,
/// worker 3 on coordinator-2, worker 4 on coordinator-3 (further workers round-robin).
pub fn home_of(worker: u32, coordinators: u32) -> u32 {
    if worker <= 2 || coordinators < 2 {
        1
    } else {
        ((worker - 2) % coordinators) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_homed_as_in_the_seed() {
        let homes: Vec<u32> = (1..=4).map(|w| home_of(w, 3)).collect();
        assert_eq!(homes, [1, 1, 2, 3]);
    }
}
