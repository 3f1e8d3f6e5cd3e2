//! The harness's view of the cluster: a client for the coordinator API that asks every live
//! node at once, with short timeouts, so a dead or frozen node never delays the others.

use std::time::Duration;

use anyhow::{bail, Context};
use cluster::api::model::{EventsPage, RaftMetrics};
use futures::future::join_all;
use serde::de::DeserializeOwned;

use crate::backend::NodeName;

/// Per-request timeout of a probe. Loopback and LAN answers take well under 10 ms; a node that
/// needs longer is reported unreachable for this poll and asked again on the next one.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// Bound of a write (deploy, connector): a commit through Raft, forwarded from a follower
/// while an election may be under way (the cluster itself gives up after 2 × election max).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Probe {
    client: reqwest::Client,
    writer: reqwest::Client,
    api_key: Option<String>,
}

/// One node's answer to one poll.
pub type Answer<T> = (NodeName, anyhow::Result<T>);

impl Probe {
    pub fn new(api_key: Option<String>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .connect_timeout(PROBE_TIMEOUT)
            .build()?;
        let writer = reqwest::Client::builder()
            .timeout(WRITE_TIMEOUT)
            .connect_timeout(PROBE_TIMEOUT)
            .build()?;
        Ok(Probe {
            client,
            writer,
            api_key,
        })
    }

    /// POST a JSON body with the API key; returns the status and the JSON answer.
    pub async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        url: &str,
        body: &B,
    ) -> anyhow::Result<(reqwest::StatusCode, T)> {
        let mut request = self.writer.post(url).json(body);
        if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("POST {url}: {status}: {body}");
        }
        Ok((
            status,
            response
                .json()
                .await
                .with_context(|| format!("POST {url}: bad body"))?,
        ))
    }

    pub async fn get<T: DeserializeOwned>(&self, url: String) -> anyhow::Result<T> {
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("GET {url}: {status}: {body}");
        }
        response
            .json()
            .await
            .with_context(|| format!("GET {url}: bad body"))
    }

    pub async fn raft_metrics(&self, base: &str) -> anyhow::Result<RaftMetrics> {
        self.get(format!("{base}/raft/metrics")).await
    }

    pub async fn events(&self, base: &str, since: u64) -> anyhow::Result<EventsPage> {
        self.get(format!("{base}/api/v1/cluster/events?since={since}"))
            .await
    }

    /// `/raft/metrics` of every given node, concurrently.
    pub async fn raft_metrics_all(&self, nodes: &[(NodeName, String)]) -> Vec<Answer<RaftMetrics>> {
        join_all(
            nodes
                .iter()
                .map(|(node, base)| async move { (*node, self.raft_metrics(base).await) }),
        )
        .await
    }

    /// The event logs of every given node, concurrently.
    pub async fn events_all(&self, nodes: &[(NodeName, String)]) -> Vec<Answer<EventsPage>> {
        join_all(
            nodes
                .iter()
                .map(|(node, base)| async move { (*node, self.events(base, 0).await) }),
        )
        .await
    }
}

/// One line per node for "last seen" in wait errors: `coordinator-2: Follower term 3 leader 1`.
pub fn describe(answers: &[Answer<RaftMetrics>]) -> String {
    if answers.is_empty() {
        return "no live coordinator".into();
    }
    answers
        .iter()
        .map(|(node, a)| match a {
            Ok(m) => format!(
                "{node}: {} term {} {}",
                m.state,
                m.current_term,
                m.current_leader
                    .map_or("no leader".to_string(), |l| format!("leader {l}"))
            ),
            Err(e) => format!("{node}: unreachable ({})", root_cause(e)),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn root_cause(e: &anyhow::Error) -> String {
    e.chain()
        .last()
        .map(ToString::to_string)
        .unwrap_or_default()
}
