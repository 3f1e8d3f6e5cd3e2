//! Test support: coordinators as real OS processes of the `cluster` binary, fast Raft timings,
//! free ports, per-node logs kept (and printed) when a test fails.

#![allow(dead_code)] // each test file uses a different part of this module

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
pub const API_KEY: &str = "test-key";

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    pub extra_args: Vec<String>,
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
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
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
                &self.peers(),
                "--data-dir",
                &self
                    .dir
                    .path()
                    .join(format!("data-{id}"))
                    .display()
                    .to_string(),
                "--heartbeat-ms",
                &HEARTBEAT_MS.to_string(),
                "--election-min-ms",
                &ELECTION_MIN_MS.to_string(),
                "--election-max-ms",
                &ELECTION_MAX_MS.to_string(),
                "--api-key",
                API_KEY,
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
        for id in 1..=3 {
            let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
            eprintln!(
                "==== coordinator-{id} log ({}) ====\n{text}",
                self.log_path(id).display()
            );
        }
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        Path::new(self.dir.path()).join(format!("data-{id}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}
