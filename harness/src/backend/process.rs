//! The process backend: each node is an OS process of the `cluster` binary on 127.0.0.1 with
//! free ports, its own log file and data dir under the run dir. Faults are real signals
//! (SIGKILL, SIGTERM, SIGSTOP/SIGCONT). Children die with the harness: each gets
//! PR_SET_PDEATHSIG=SIGKILL, and the backend kills them on drop (Ctrl-C, panic, error).
//!
//! A run that partitions (and only such a run) puts each node in a network namespace of its
//! own ([`super::netns`]) with an address on the run's private subnet instead of loopback;
//! cuts are nftables rules inside the namespaces.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::cuts::Cuts;
use super::netns::NetNs;
use super::{now_us, Backend, ClusterSpec, NodeName, NodeState, WallUs};
use crate::step::Fault;

/// Faults the process backend always injects.
pub const FAULTS: &[Fault] = &[
    Fault::Kill,
    Fault::Stop,
    Fault::Pause,
    Fault::Restart,
    Fault::Wipe,
];

/// Faults the process backend injects on this machine: [`FAULTS`], and `partition` when the
/// harness may create network namespaces (see [`super::netns::preflight`]).
pub fn faults_here() -> Vec<Fault> {
    let mut faults = FAULTS.to_vec();
    if super::netns::preflight().is_none() {
        faults.push(Fault::Partition);
    }
    faults
}

/// How long a SIGTERMed node may take to exit before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Poll interval while waiting for a signalled process to exit.
const REAP_POLL: Duration = Duration::from_millis(5);

#[derive(Debug)]
pub struct ProcessBackend {
    bin: PathBuf,
    run_dir: PathBuf,
    spec: ClusterSpec,
    ports: BTreeMap<NodeName, u16>,
    children: BTreeMap<NodeName, Child>,
    paused: BTreeMap<NodeName, bool>,
    starts: BTreeMap<NodeName, u32>,
    /// The run's network namespaces, when the run partitions.
    net: Option<NetNs>,
    /// How to start each role (`--profile`; the reference cluster's by default).
    profile: crate::profile::Profile,
    /// The nodes' ports, reserved against concurrent runs until the backend is dropped.
    _lease: super::ports::PortLease,
}

impl ProcessBackend {
    /// Reserve a free loopback port for every node ([`super::ports`]); nothing starts yet.
    pub fn new(bin: PathBuf, run_dir: &Path, spec: ClusterSpec) -> anyhow::Result<Self> {
        let nodes = spec.nodes();
        let (reserved, lease) = super::ports::reserve(nodes.len())?;
        let ports: BTreeMap<NodeName, u16> = nodes.into_iter().zip(reserved).collect();
        std::fs::create_dir_all(run_dir.join("logs"))?;
        Ok(ProcessBackend {
            bin,
            run_dir: run_dir.to_path_buf(),
            spec,
            ports,
            children: BTreeMap::new(),
            paused: BTreeMap::new(),
            starts: BTreeMap::new(),
            net: None,
            profile: crate::profile::Profile::reference(),
            _lease: lease,
        })
    }

    /// Run every node in a network namespace of its own (for a run that partitions): nodes
    /// listen on their address on the run's subnet; nothing else changes. Fails, before any node
    /// starts, with what is missing when the harness may not create namespaces.
    pub fn with_network_namespaces(mut self, run_id: &str) -> anyhow::Result<Self> {
        let nodes: Vec<NodeName> = self.ports.keys().copied().collect();
        let net = NetNs::create(run_id, &nodes)?;
        tracing::info!(host = %net.host_addr(), "nodes run in network namespaces");
        self.net = Some(net);
        Ok(self)
    }

    /// The address the node listens on and is reached at.
    fn host(&self, node: NodeName) -> String {
        match &self.net {
            Some(net) => net.addr(node).to_string(),
            None => "127.0.0.1".into(),
        }
    }

    /// Start nodes as `profile` describes (another implementation's binary: `bin`).
    pub fn with_profile(mut self, profile: crate::profile::Profile) -> Self {
        self.profile = profile;
        self
    }

    /// A node's command line and environment, from the profile's templates.
    fn command_line(&self, node: NodeName) -> anyhow::Result<crate::profile::CommandLine> {
        let coordinator_url = |n: u32| self.endpoint(NodeName::Coordinator(n));
        let addressing = super::Addressing {
            listen: format!("{}:{}", self.host(node), self.ports[&node]),
            coordinator_url: &coordinator_url,
            mqtt_url: match &self.spec.mqtt_url {
                Some(url) => url.with_login(),
                None => self.endpoint(NodeName::Broker),
            },
            data_dir: self.data_dir(node).display().to_string(),
            advertise: None,
        };
        self.profile.render(&self.spec, node, &addressing)
    }

    fn data_dir(&self, node: NodeName) -> std::path::PathBuf {
        self.run_dir.join("data").join(node.to_string())
    }

    fn log_file(&self, node: NodeName) -> anyhow::Result<File> {
        let path = self.run_dir.join("logs").join(format!("{node}.log"));
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))
    }

    fn pid(&self, node: NodeName) -> anyhow::Result<Pid> {
        match self.children.get(&node) {
            Some(child) => Ok(Pid::from_raw(child.id() as i32)),
            None => bail!("{node} is not running"),
        }
    }

    fn signal(&mut self, node: NodeName, signal: Signal) -> anyhow::Result<WallUs> {
        let pid = self.pid(node)?;
        kill(pid, signal).with_context(|| format!("send {signal} to {node}"))?;
        Ok(now_us())
    }

    /// Wait for `node` to exit, at most `limit`; true when it did.
    /// Polls without blocking the runtime: the collector and the pacer keep their clocks.
    async fn reap(&mut self, node: NodeName, limit: Duration) -> anyhow::Result<bool> {
        let started = std::time::Instant::now();
        let Some(child) = self.children.get_mut(&node) else {
            return Ok(true);
        };
        loop {
            if let Some(status) = child.try_wait()? {
                tracing::debug!(%node, %status, "node exited");
                self.children.remove(&node);
                self.paused.remove(&node);
                return Ok(true);
            }
            if started.elapsed() >= limit {
                return Ok(false);
            }
            tokio::time::sleep(REAP_POLL).await;
        }
    }

    async fn kill_now(&mut self, node: NodeName) -> anyhow::Result<WallUs> {
        let at = self.signal(node, Signal::SIGKILL)?;
        // SIGKILL cannot be caught; the kernel reaps within milliseconds.
        if !self.reap(node, STOP_GRACE).await? {
            bail!("{node} did not exit within {STOP_GRACE:?} of SIGKILL");
        }
        Ok(at)
    }
}

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn faults(&self) -> Vec<Fault> {
        let mut faults = FAULTS.to_vec();
        if self.net.is_some() {
            faults.push(Fault::Partition);
        }
        faults
    }

    fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    fn nodes(&self) -> Vec<NodeName> {
        self.ports.keys().copied().collect()
    }

    fn endpoint(&self, node: NodeName) -> String {
        let port = self.ports.get(&node).copied().unwrap_or(0);
        let host = self.host(node);
        match node {
            NodeName::Broker => {
                let (host, port) = self.mqtt();
                format!("mqtt://{host}:{port}")
            }
            _ => format!("http://{host}:{port}"),
        }
    }

    fn mqtt(&self) -> (String, u16) {
        match &self.spec.mqtt_url {
            Some(url) => (url.host.clone(), url.port),
            None => (
                self.host(NodeName::Broker),
                self.ports.get(&NodeName::Broker).copied().unwrap_or(0),
            ),
        }
    }

    fn state(&self, node: NodeName) -> NodeState {
        if self.children.contains_key(&node) {
            if self.paused.get(&node).copied().unwrap_or(false) {
                NodeState::Paused
            } else {
                NodeState::Running
            }
        } else if self.starts.contains_key(&node) {
            NodeState::Down
        } else {
            NodeState::NotStarted
        }
    }

    fn os_pid(&self, node: NodeName) -> Option<u32> {
        self.children.get(&node).map(Child::id)
    }

    fn exited(&mut self, node: NodeName) -> Option<String> {
        let status = self.children.get_mut(&node)?.try_wait().ok()??;
        self.children.remove(&node);
        self.paused.remove(&node);
        let path = self.run_dir.join("logs").join(format!("{node}.log"));
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Some(format!(
            "{status}; last lines of logs/{node}.log: {}",
            tail.join(" | ")
        ))
    }

    async fn start(&mut self, node: NodeName) -> anyhow::Result<WallUs> {
        if self.children.contains_key(&node) {
            bail!("{node} is already running");
        }
        let (args, env) = self.command_line(node)?;
        let count = self.starts.entry(node).or_insert(0);
        *count += 1;
        let count = *count;
        let mut log = self.log_file(node)?;
        writeln!(
            log,
            "==== harness: start #{count} of {node} at {} µs: {} {}",
            now_us(),
            self.bin.display(),
            args.join(" ")
        )?;
        let mut command = match &self.net {
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(net.exec_prefix(node)).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Own process group: a terminal Ctrl-C reaches the harness, which then stops nodes
            // in order and keeps their logs, instead of every node dying mid-write.
            .process_group(0)
            .env(
                "RUST_LOG",
                std::env::var("CLUSTER_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            );
        command.envs(env);
        #[allow(unsafe_code)]
        // pre_exec is unsafe; the closure only makes one async-signal-safe syscall.
        unsafe {
            command.pre_exec(|| {
                // If the harness dies (even by SIGKILL), the kernel kills this node.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawn {} for {node}", self.bin.display()))?;
        let at = now_us();
        self.children.insert(node, child);
        self.paused.insert(node, false);
        Ok(at)
    }

    async fn kill(&mut self, node: NodeName) -> anyhow::Result<WallUs> {
        self.kill_now(node).await
    }

    async fn stop(&mut self, node: NodeName) -> anyhow::Result<WallUs> {
        let at = self.signal(node, Signal::SIGTERM)?;
        if self.paused.get(&node).copied().unwrap_or(false) {
            // A stopped process only acts on SIGTERM once continued.
            self.signal(node, Signal::SIGCONT)?;
        }
        if !self.reap(node, STOP_GRACE).await? {
            tracing::warn!(%node, "did not stop within {STOP_GRACE:?} of SIGTERM; sending SIGKILL");
            self.kill_now(node).await?;
        }
        Ok(at)
    }

    async fn wipe(&mut self, node: NodeName) -> anyhow::Result<WallUs> {
        if self.children.contains_key(&node) {
            bail!("{node} is running: stop or kill it before wiping its data dir");
        }
        let dir = self.data_dir(node);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("wipe {}", dir.display())),
        }
        Ok(now_us())
    }

    async fn pause(&mut self, node: NodeName) -> anyhow::Result<WallUs> {
        let at = self.signal(node, Signal::SIGSTOP)?;
        self.paused.insert(node, true);
        Ok(at)
    }

    async fn resume(&mut self, node: NodeName) -> anyhow::Result<WallUs> {
        let at = self.signal(node, Signal::SIGCONT)?;
        self.paused.insert(node, false);
        Ok(at)
    }

    async fn cut(&mut self, cuts: &Cuts) -> anyhow::Result<WallUs> {
        let Some(net) = self.net.as_mut() else {
            if cuts.is_empty() {
                return Ok(now_us());
            }
            bail!("this run's nodes share the loopback network (no phase planned a partition), so no link can be cut");
        };
        // The mark is the moment the first rule is issued, as for the Docker backend's calls.
        let issued = now_us();
        net.apply(cuts)?;
        Ok(issued)
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        let nodes: Vec<NodeName> = self.children.keys().copied().collect();
        for node in nodes {
            self.kill_now(node).await?;
        }
        if let Some(net) = self.net.as_mut() {
            net.remove();
        }
        Ok(())
    }
}

impl Drop for ProcessBackend {
    fn drop(&mut self) {
        for (node, child) in &mut self.children {
            // Best effort: the process may already be gone.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            tracing::debug!(%node, "killed on drop");
        }
    }
}

/// Find the `cluster` binary, building it first when the harness runs under `cargo run`.
///
/// Order: `explicit` (flag or `HARNESS_CLUSTER_BIN`); else, under cargo (`CARGO` is set),
/// `cargo build -p harness -p cluster --bin cluster` with the harness's own profile (reusing
/// the harness's build), so a fresh clone needs nothing but `cargo run -p harness`; else the
/// `cluster` file next to the harness executable.
pub fn locate_cluster_bin(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path);
        }
        bail!("cluster binary {} does not exist", path.display());
    }
    let profile_dir = profile_dir()?;
    let profile_dir = profile_dir.as_path();
    let candidate = profile_dir.join("cluster");
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut build = Command::new(cargo);
        // `-p harness` too: cargo then resolves features for both packages together, exactly as
        // for the harness's own build (whose graph holds the cluster library), so every shared
        // dependency is already built and only the binary is compiled and linked. `-p cluster`
        // alone resolves its own, narrower feature set and rebuilds the shared crates (minutes).
        build.args([
            "build", "--quiet", "-p", "harness", "-p", "cluster", "--bin", "cluster",
        ]);
        if release {
            build.arg("--release");
        }
        if let Some(target_dir) = profile_dir.parent() {
            build.arg("--target-dir").arg(target_dir);
        }
        eprintln!(
            "harness: building the cluster binary (cargo build -p harness -p cluster --bin cluster{})",
            if release { " --release" } else { "" }
        );
        let status = build.status().context("run cargo build --bin cluster")?;
        if !status.success() {
            bail!("cargo build --bin cluster failed ({status})");
        }
    }
    if candidate.is_file() {
        Ok(candidate)
    } else {
        bail!(
            "no cluster binary at {}; build it with `cargo build -p cluster` or pass --cluster-bin",
            candidate.display()
        )
    }
}

/// `target/<profile>`: where the harness executable lives (`target/<profile>/harness`, or
/// `target/<profile>/deps/<test>` for test binaries).
fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locate the harness executable")?;
    let dir = exe
        .parent()
        .context("the harness executable has no directory")?;
    Ok(if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    }
    .to_path_buf())
}
