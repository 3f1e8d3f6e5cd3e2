//! Test support: coordinators as real OS processes of the `cluster` binary, fast Raft timings,
//! free ports, per-node logs kept (and printed) when a test fails.

#![allow(dead_code)] // each test file uses a different part of this module

pub mod browser;
pub mod prom;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster::api::model::{RaftMetrics, RaftRole};

/// Fast Raft timings for tests: an election completes in well under a second.
pub const HEARTBEAT_MS: u64 = 50;
pub const ELECTION_MIN_MS: u64 = 150;
pub const ELECTION_MAX_MS: u64 = 300;
/// Bound of every wait in these tests: many election timeouts, far below a CI time limit.
pub const WAIT: Duration = Duration::from_secs(20);
/// The keys every test cluster runs with (see README.md, "Security").
pub const PEER_KEY: &str = "test-peer-key";
pub const OPERATOR_KEY: &str = "test-operator-key";
pub const READ_KEY: &str = "test-read-key";
pub const WORKER_SECRET: &str = "test-worker-secret";
/// The key the tests' own API calls present: the operator's.
pub const API_KEY: &str = OPERATOR_KEY;

/// Worker `id`'s token under the tests' worker secret.
pub fn worker_token(id: &str) -> String {
    cluster::auth::worker_token(WORKER_SECRET, id)
}
/// The broker account of a test's own MQTT client (client ids must start with its name).
pub const MQTT_CLIENT: (&str, &str) = ("test-client", "test-client-password");

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    broker: Option<(Child, u16)>,
    workers: std::collections::BTreeMap<String, Child>,
    /// Worker id → its API port.
    worker_ports: std::collections::BTreeMap<String, u16>,
    pub extra_args: Vec<String>,
    /// Raft timings: heartbeat, election min, election max (ms).
    pub raft: (u64, u64, u64),
    http: reqwest::Client,
}

pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

impl Cluster {
    /// A 3-coordinator cluster; nothing starts until [`Cluster::start`].
    pub fn new(extra_args: &[&str]) -> Self {
        Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            ports: free_ports(3),
            children: vec![None, None, None],
            broker: None,
            workers: Default::default(),
            worker_ports: Default::default(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            raft: (HEARTBEAT_MS, ELECTION_MIN_MS, ELECTION_MAX_MS),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .pool_idle_timeout(cluster::http::CLIENT_POOL_IDLE)
                // The operator key on every request (one that sets its own header overrides it).
                .default_headers(
                    [(
                        reqwest::header::HeaderName::from_static("x-api-key"),
                        reqwest::header::HeaderValue::from_static(OPERATOR_KEY),
                    )]
                    .into_iter()
                    .collect(),
                )
                .build()
                .expect("http client"),
        }
    }

    pub fn url(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.ports[id as usize - 1])
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("coordinator-{id}.log"))
    }

    pub fn peers(&self) -> String {
        (1..=3)
            .map(|id| format!("{id}={}", self.url(id)))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn start(&mut self, id: u64) {
        let peers = self.peers();
        self.start_with_peers(id, &peers);
    }

    /// Wait (bounded) for one of the coordinators `ids` to exit on its own: (id, exit code).
    pub fn wait_any_exit(&mut self, ids: &[u64], why: &str) -> (u64, Option<i32>) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            for &id in ids {
                let slot = &mut self.children[id as usize - 1];
                let Some(child) = slot.as_mut() else { continue };
                if let Some(status) = child.try_wait().expect("try_wait") {
                    *slot = None;
                    return (id, status.code());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.dump_logs();
        panic!("none of coordinators {ids:?} exited within {WAIT:?}: {why}");
    }

    /// Start coordinator `id` with the given `--peers` (normally [`Cluster::peers`]).
    pub fn start_with_peers(&mut self, id: u64, peers: &str) {
        assert!(
            self.children[id as usize - 1].is_none(),
            "coordinator-{id} already running"
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("open log");
        let child = Command::new(env!("CARGO_BIN_EXE_cluster"))
            .args([
                "coordinator",
                "--node-id",
                &id.to_string(),
                "--listen",
                &format!("127.0.0.1:{}", self.ports[id as usize - 1]),
                "--peers",
                peers,
                "--data-dir",
                &self
                    .dir
                    .path()
                    .join(format!("data-{id}"))
                    .display()
                    .to_string(),
                "--heartbeat-ms",
                &self.raft.0.to_string(),
                "--election-min-ms",
                &self.raft.1.to_string(),
                "--election-max-ms",
                &self.raft.2.to_string(),
                "--peer-key",
                PEER_KEY,
                "--operator-key",
                OPERATOR_KEY,
                "--read-key",
                READ_KEY,
                "--worker-secret",
                WORKER_SECRET,
            ])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn cluster coordinator");
        self.children[id as usize - 1] = Some(child);
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children[id as usize - 1].take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn metrics(&self, id: u64) -> anyhow::Result<RaftMetrics> {
        Ok(self
            .http
            .get(format!("{}/raft/metrics", self.url(id)))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Wait until every listed node reports the same leader, which is one of them and says it
    /// leads (a restarted node may briefly report the leader it remembers).
    pub async fn await_leader(&self, ids: &[u64], why: &str) -> (u64, u64) {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut seen = Vec::new();
            for &id in ids {
                match self.metrics(id).await {
                    Ok(m) => seen.push(m),
                    Err(e) => last = format!("coordinator-{id}: {e}"),
                }
            }
            if seen.len() == ids.len() {
                if let Some(leader) = seen[0].current_leader {
                    let term = seen[0].current_term;
                    let agreed = seen
                        .iter()
                        .all(|m| m.current_leader == Some(leader) && m.current_term == term);
                    let confirmed = seen
                        .iter()
                        .any(|m| m.id == leader && m.state == RaftRole::Leader);
                    if ids.contains(&leader) && agreed && confirmed {
                        return (leader, term);
                    }
                }
                last = format!("{seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.dump_logs();
        panic!("no agreed leader among {ids:?} within {WAIT:?} {why} (last seen: {last})");
    }

    /// Print every node's log (called before a test fails, so CI shows what the nodes did).
    pub fn dump_logs(&self) {
        let mut names: Vec<String> = (1..=3).map(|id| format!("coordinator-{id}")).collect();
        names.extend(self.workers.keys().cloned());
        names.push("broker".into());
        for name in names {
            let path = self.dir.path().join(format!("{name}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            eprintln!("==== {name} log ({}) ====\n{text}", path.display());
        }
    }

    fn spawn_logged(&self, name: &str, args: &[String]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .expect("open log");
        Command::new(env!("CARGO_BIN_EXE_cluster"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"))
    }

    /// Start the embedded broker (`cluster broker`) on a free port.
    pub fn start_broker(&mut self) -> u16 {
        let port = free_ports(1)[0];
        let args = [
            "broker".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--worker-secret".into(),
            WORKER_SECRET.into(),
            "--mqtt-client".into(),
            format!("{}:{}", MQTT_CLIENT.0, MQTT_CLIENT.1),
        ];
        let child = self.spawn_logged("broker", &args);
        self.broker = Some((child, port));
        port
    }

    /// The broker's MQTT port.
    pub fn broker_port(&self) -> u16 {
        self.broker.as_ref().expect("broker started").1
    }

    /// Start a worker whose link goes to `coordinators` in that order (home first).
    pub fn start_worker(&mut self, id: &str, coordinators: &[u64]) {
        let broker = self.broker.as_ref().expect("start the broker first").1;
        let port = free_ports(1)[0];
        let urls: Vec<String> = coordinators.iter().map(|c| self.url(*c)).collect();
        let args: Vec<String> = [
            "worker",
            "--worker-id",
            id,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--coordinators",
            &urls.join(","),
            "--worker-token",
            &worker_token(id),
            "--mqtt-url",
            &format!("mqtt://127.0.0.1:{broker}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let child = self.spawn_logged(id, &args);
        self.workers.insert(id.to_string(), child);
        self.worker_ports.insert(id.to_string(), port);
    }

    /// A worker's API base URL.
    pub fn worker_url(&self, id: &str) -> String {
        format!("http://127.0.0.1:{}", self.worker_ports[id])
    }

    /// Ids of the running workers.
    pub fn worker_ids(&self) -> Vec<String> {
        self.workers.keys().cloned().collect()
    }

    /// Whether coordinator `id` runs.
    pub fn is_running(&self, id: u64) -> bool {
        self.children[id as usize - 1].is_some()
    }

    /// A worker's own `/health` (its running pipelines, its link, its lease).
    pub async fn worker_health(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        let port = self.worker_ports[id];
        Ok(self
            .http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await?
            .json()
            .await?)
    }

    /// SIGSTOP (or SIGCONT, `pause = false`) worker `id`.
    pub fn pause_worker(&self, id: &str, pause: bool) {
        use nix::sys::signal::Signal;
        let child = self
            .workers
            .get(id)
            .unwrap_or_else(|| panic!("{id} is not running"));
        let signal = if pause {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)
            .unwrap_or_else(|e| panic!("{signal} {id}: {e}"));
    }

    /// SIGSTOP coordinator `id` (its sockets stay open, it answers nothing).
    pub fn pause(&self, id: u64) {
        self.signal(id, nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT coordinator `id`.
    pub fn resume(&self, id: u64) {
        self.signal(id, nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, id: u64, signal: nix::sys::signal::Signal) {
        let child = self.children[id as usize - 1]
            .as_ref()
            .unwrap_or_else(|| panic!("coordinator-{id} is not running"));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal)
            .unwrap_or_else(|e| panic!("{signal} coordinator-{id}: {e}"));
    }

    /// SIGKILL a worker and reap it.
    pub fn kill_worker(&mut self, id: &str) {
        let mut child = self.workers.remove(id).expect("worker running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// GET a JSON document from coordinator `id`.
    pub async fn get(&self, id: u64, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}{path}", self.url(id)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POST JSON with the API key; returns status and body.
    pub async fn post(
        &self,
        id: u64,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url(id)))
            .header("x-api-key", API_KEY)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Poll `check` on coordinator `id`'s answer to `path` until it returns Some (bounded).
    pub async fn wait_for<T>(
        &self,
        id: u64,
        path: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            if let Ok(r) = self
                .http
                .get(format!("{}{path}", self.url(id)))
                .send()
                .await
            {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    if let Some(t) = check(&v) {
                        return t;
                    }
                    last = v;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.dump_logs();
        panic!("{what}: not within {WAIT:?} (last {path} on coordinator-{id}: {last})");
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        Path::new(self.dir.path()).join(format!("data-{id}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let extra = self
            .broker
            .iter_mut()
            .map(|(c, _)| c)
            .chain(self.workers.values_mut());
        for child in extra {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        for child in self.children.iter_mut().flatten() {
            // A paused child still dies of SIGKILL; SIGCONT first so nothing lingers stopped.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}
