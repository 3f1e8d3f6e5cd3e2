//! The harness's view of the cluster: the one client of the coordinator API. Every URL the
//! harness uses is built here. It asks every live node at once, with short timeouts, so a dead
//! or frozen node never delays the others; and it keeps a tail of every node's event log.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use cluster::api::model::{
    ClusterEvent, Connector, EventsPage, GroupDef, GroupInfo, Health, MigrationList, RaftMetrics,
    Topology, WorkerList,
};
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
    /// A foreign profile's field dialect, applied to answers before they are parsed.
    dialect: crate::dialect::Dialect,
}

/// One node's answer to one poll.
pub type Answer<T> = (NodeName, anyhow::Result<T>);

impl Probe {
    pub fn new(api_key: Option<String>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .connect_timeout(PROBE_TIMEOUT)
            .pool_idle_timeout(cluster::http::CLIENT_POOL_IDLE)
            .build()?;
        let writer = reqwest::Client::builder()
            .timeout(WRITE_TIMEOUT)
            .connect_timeout(PROBE_TIMEOUT)
            .pool_idle_timeout(cluster::http::CLIENT_POOL_IDLE)
            .build()?;
        Ok(Probe {
            client,
            writer,
            api_key,
            dialect: Default::default(),
        })
    }

    pub fn with_dialect(mut self, dialect: crate::dialect::Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// Parse an answer, through the dialect's rules for `url` when it has some.
    async fn parse<T: DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
        response: reqwest::Response,
    ) -> anyhow::Result<T> {
        let Some(rules) = crate::dialect::rules_for(&self.dialect, url) else {
            return response
                .json()
                .await
                .with_context(|| format!("{what} {url}: bad body"));
        };
        let mut value: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("{what} {url}: bad body"))?;
        crate::dialect::apply(rules, &mut value);
        serde_json::from_value(value)
            .with_context(|| format!("{what} {url}: bad body (after the dialect)"))
    }

    /// POST a JSON body with the API key; returns the status and the JSON answer.
    pub async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        url: &str,
        body: &B,
    ) -> anyhow::Result<(reqwest::StatusCode, T)> {
        let mut request = match crate::dialect::request_rules_for(&self.dialect, url) {
            Some(rules) => {
                let mut value = serde_json::to_value(body)?;
                crate::dialect::apply(rules, &mut value);
                self.writer.post(url).json(&value)
            }
            None => self.writer.post(url).json(body),
        };
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
        Ok((status, self.parse(url, "POST", response).await?))
    }

    pub async fn get<T: DeserializeOwned>(&self, url: String) -> anyhow::Result<T> {
        let mut request = self.client.get(&url);
        // Reads other than /health, /ready and /metrics need the read or operator key.
        if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key);
        }
        let response = request.send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("GET {url}: {status}: {body}");
        }
        self.parse(&url, "GET", response).await
    }

    /// GET `url` and require a 2xx answer, whatever its body (a profile's readiness probe).
    pub async fn get_ok(&self, url: &str) -> anyhow::Result<()> {
        let mut request = self.client.get(url);
        if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key);
        }
        let response = request.send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            bail!("GET {url}: {status}");
        }
        Ok(())
    }

    pub async fn health(&self, base: &str) -> anyhow::Result<Health> {
        self.get(format!("{base}/health")).await
    }

    /// A worker's `/health` (any JSON: the harness only asks whether it answers).
    pub async fn worker_health(&self, base: &str) -> anyhow::Result<serde_json::Value> {
        self.get(format!("{base}/health")).await
    }

    pub async fn workers(&self, base: &str) -> anyhow::Result<WorkerList> {
        self.get(format!("{base}/api/v1/cluster/workers")).await
    }

    pub async fn topology(&self, base: &str) -> anyhow::Result<Topology> {
        self.get(format!("{base}/api/v1/cluster/topology")).await
    }

    /// A group by name. An implementation that finds groups only by id (404 by name) is asked
    /// for its list, and the group is picked from it by name.
    pub async fn group(&self, base: &str, name: &str) -> anyhow::Result<GroupInfo> {
        let by_name = self
            .get(format!("{base}/api/v1/cluster/pipeline-groups/{name}"))
            .await;
        match by_name {
            Err(e) if format!("{e:#}").contains("404") => {
                let list: serde_json::Value = self
                    .get(format!("{base}/api/v1/cluster/pipeline-groups"))
                    .await?;
                let groups = list
                    .get("pipeline_groups")
                    .or_else(|| list.get("groups"))
                    .and_then(|g| g.as_array())
                    .with_context(|| format!("{base}: no group list in {list}"))?;
                let mut found = groups
                    .iter()
                    .filter(|g| g.get("name").and_then(|n| n.as_str()) == Some(name));
                let group = found.next().with_context(|| format!("{e:#}"))?.clone();
                if found.next().is_some() {
                    bail!("{base}: more than one group named {name} (a deploy was not idempotent)");
                }
                let mut group = group;
                if let Some(rules) = crate::dialect::rules_for(
                    &self.dialect,
                    &format!("{base}/api/v1/cluster/pipeline-groups/{name}"),
                ) {
                    crate::dialect::apply(rules, &mut group);
                }
                serde_json::from_value(group).with_context(|| format!("{base}: group {name}"))
            }
            other => other,
        }
    }

    /// Put the connector. An implementation that refuses a second POST of a connector (Varpulis:
    /// 400 "already exists") is then asked for its connectors: the existing one must have the
    /// same parameters.
    pub async fn put_connector(&self, base: &str, connector: &Connector) -> anyhow::Result<()> {
        let url = format!("{base}/api/v1/cluster/connectors");
        let posted: anyhow::Result<(reqwest::StatusCode, serde_json::Value)> =
            self.post(&url, connector).await;
        let e = match posted {
            Ok(_) => return Ok(()),
            Err(e) if format!("{e:#}").contains("already exists") => e,
            Err(e) => return Err(e),
        };
        let list: serde_json::Value = self.get(url.clone()).await?;
        let items = list
            .as_array()
            .or_else(|| list.get("connectors").and_then(|c| c.as_array()))
            .with_context(|| format!("{e:#}; and no connector list at {url}: {list}"))?;
        let existing = items
            .iter()
            .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(connector.name.as_str()))
            .with_context(|| format!("{e:#}; yet {url} does not list it"))?;
        let same = |key: &str| {
            let want = connector
                .params
                .get(key)
                .map(|v| v.to_string().replace('"', ""));
            let have = existing
                .get("params")
                .and_then(|p| p.get(key))
                .map(|v| v.to_string().replace('"', ""));
            want == have
        };
        if same("host") && same("port") {
            Ok(())
        } else {
            bail!(
                "connector {} exists with other parameters: {existing}",
                connector.name
            )
        }
    }

    /// Put a connector and return whatever status the node answers with (an error status is an
    /// answer too); `Err` only when no answer came (transport error, or the write timeout).
    pub async fn connector_answer(
        &self,
        base: &str,
        connector: &Connector,
    ) -> anyhow::Result<(reqwest::StatusCode, String)> {
        let url = format!("{base}/api/v1/cluster/connectors");
        let mut request = self.writer.post(&url).json(connector);
        if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    /// Deploy a group; true when the cluster created it (201), false when it already had it.
    pub async fn deploy(&self, base: &str, def: &GroupDef) -> anyhow::Result<(bool, GroupInfo)> {
        let (status, info): (reqwest::StatusCode, GroupInfo) = self
            .post(&format!("{base}/api/v1/cluster/pipeline-groups"), def)
            .await?;
        Ok((status == reqwest::StatusCode::CREATED, info))
    }

    /// Ask the cluster to move one pipeline to `target_worker_id`.
    pub async fn migrate(
        &self,
        base: &str,
        group: &str,
        pipeline: &str,
        target_worker_id: &str,
    ) -> anyhow::Result<()> {
        let _: (reqwest::StatusCode, serde_json::Value) = self
            .post(
                &format!("{base}/api/v1/cluster/pipelines/{group}/{pipeline}/migrate"),
                &serde_json::json!({ "target_worker_id": target_worker_id }),
            )
            .await?;
        Ok(())
    }

    /// The first answer of `read` among `nodes`, in order (reads are served by followers).
    pub async fn read_any<T>(
        &self,
        nodes: &[(NodeName, String)],
        read: impl AsyncFn(&Probe, &str) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut last = anyhow!("no live coordinator");
        for (_, base) in nodes {
            match read(self, base).await {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A node's `/metrics` (Prometheus text), unparsed.
    pub async fn metrics_text(&self, base: &str) -> anyhow::Result<String> {
        let url = format!("{base}/metrics");
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            bail!("GET {url}: {status}");
        }
        response
            .text()
            .await
            .with_context(|| format!("GET {url}: bad body"))
    }

    pub async fn migrations(&self, base: &str) -> anyhow::Result<MigrationList> {
        self.get(format!("{base}/api/v1/cluster/migrations")).await
    }

    /// One connector write, answered once committed (`fill_log`: a Raft entry per call).
    pub async fn post_connector(&self, base: &str, connector: &Connector) -> anyhow::Result<()> {
        let url = format!("{base}/api/v1/cluster/connectors");
        let _: (reqwest::StatusCode, serde_json::Value) = self.post(&url, connector).await?;
        Ok(())
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

    /// `/health` of every given node, concurrently.
    pub async fn health_all(&self, nodes: &[(NodeName, String)]) -> Vec<Answer<Health>> {
        join_all(
            nodes
                .iter()
                .map(|(node, base)| async move { (*node, self.health(base).await) }),
        )
        .await
    }
}

/// What the harness has read of every coordinator's event log: each node's events in order,
/// fetched incrementally (`?since=`), across restarts of the node: a restarted node's log
/// starts again from 1, so the runner calls [`EventTail::restarted`] whenever it starts one.
#[derive(Debug, Default)]
pub struct EventTail {
    logs: BTreeMap<NodeName, NodeLog>,
}

#[derive(Debug, Default)]
struct NodeLog {
    /// Events of earlier incarnations of the node, then of the current one.
    events: Vec<ClusterEvent>,
    cursor: u64,
}

impl EventTail {
    /// Read what is new in the logs of `nodes`. Fails closed: a node that does not answer, or
    /// whose log dropped events the harness had not read yet, is an error naming it, never a
    /// silent gap that would let an assertion about "no such event" pass.
    pub async fn refresh(
        &mut self,
        probe: &Probe,
        nodes: &[(NodeName, String)],
    ) -> anyhow::Result<()> {
        let cursors: Vec<u64> = nodes
            .iter()
            .map(|(n, _)| self.logs.get(n).map_or(0, |l| l.cursor))
            .collect();
        let pages = join_all(
            nodes
                .iter()
                .zip(&cursors)
                .map(|((node, base), &since)| async move {
                    (*node, since, probe.events(base, since).await)
                }),
        )
        .await;
        let mut failures = Vec::new();
        for (node, since, page) in pages {
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("{node}: {}", root_cause(&e)));
                    continue;
                }
            };
            let log = self.logs.entry(node).or_default();
            if page.last_seq < since {
                failures.push(format!(
                    "{node}: its event log went back from seq {since} to {} (restarted without \
                     the harness knowing?)",
                    page.last_seq
                ));
                continue;
            }
            if page.truncated {
                failures.push(format!(
                    "{node}: its event log dropped events after seq {} before they were read",
                    log.cursor
                ));
                continue;
            }
            log.cursor = page.last_seq;
            log.events.extend(page.events);
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("could not read every event log ({})", failures.join("; "))
        }
    }

    /// `node` was (re)started: keep what was read of its earlier life, read its new log from 1.
    pub fn restarted(&mut self, node: NodeName) {
        if let Some(log) = self.logs.get_mut(&node) {
            log.cursor = 0;
        }
    }

    /// Every event read so far, with the node whose log held it.
    pub fn events(&self) -> impl Iterator<Item = (NodeName, &ClusterEvent)> {
        self.logs
            .iter()
            .flat_map(|(n, l)| l.events.iter().map(move |e| (*n, e)))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nobody listens on: bind, note it, close.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn an_event_log_that_cannot_be_read_is_an_error_naming_the_node() {
        let probe = Probe::new(None).unwrap();
        let mut tail = EventTail::default();
        let nodes = vec![(
            NodeName::Coordinator(2),
            format!("http://127.0.0.1:{}", closed_port()),
        )];
        let err = tail.refresh(&probe, &nodes).await.unwrap_err().to_string();
        assert!(
            err.starts_with("could not read every event log (coordinator-2: "),
            "{err}"
        );
        assert_eq!(tail.events().count(), 0);
    }
}
