//! Coordinator settings and their validation (peer list, Raft timings).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::raft::NodeId;

/// Everything a coordinator needs besides its listener.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub node_id: NodeId,
    /// Every voter of the cluster, this node included: id → base URL (`http://host:port`).
    pub peers: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// The keys per role, or `--insecure`.
    pub keys: crate::auth::KeyConfig,
    /// Build a snapshot (and purge the log) after this many entries.
    pub snapshot_logs: u64,
    /// Failure-detection timings.
    pub detector: super::DetectorConfig,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--peers is empty")]
    NoPeers,
    #[error("--peers entry '{0}' is not ID=URL or URL")]
    BadPeer(String),
    #[error("--peers entry '{0}': the URL must start with http:// and name host:port")]
    BadPeerUrl(String),
    #[error("--peers names node {0} twice")]
    DuplicatePeer(NodeId),
    #[error("--peers ({peers}) does not contain this node (--node-id {node_id})")]
    SelfNotInPeers { node_id: NodeId, peers: String },
    #[error("--listen port {listen} differs from this node's own peer URL {url}")]
    ListenMismatch { listen: u16, url: String },
    #[error("Raft timings must satisfy 0 < heartbeat ({heartbeat_ms} ms) < election-min ({min_ms} ms) < election-max ({max_ms} ms)")]
    BadTimings {
        heartbeat_ms: u64,
        min_ms: u64,
        max_ms: u64,
    },
    #[error("contradictory timings: {0} (see ARCHITECTURE.md, 'The worker lease')")]
    BadLease(String),
    #[error("--peers differs between nodes: {0}; every node must be given the same --peers")]
    PeersMismatch(String),
    #[error("{0}")]
    Keys(String),
    #[error("--api-key was replaced by per-role keys: --peer-key, --operator-key, --read-key and --worker-secret (workers: --worker-token); see README.md, 'Security'")]
    ApiKeyReplaced,
}

/// Parse `--peers`: either `ID=URL,ID=URL,...` or plain `URL,URL,...` (node ids 1, 2, 3 in order).
pub fn parse_peers(spec: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    let items: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err(ConfigError::NoPeers);
    }
    for (position, item) in items.iter().enumerate() {
        let (id, url) = match item.split_once('=') {
            Some((id, url)) => (
                id.trim()
                    .parse::<NodeId>()
                    .map_err(|_| ConfigError::BadPeer(item.to_string()))?,
                url.trim(),
            ),
            None => (position as NodeId + 1, *item),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| ConfigError::BadPeerUrl(item.to_string()))?;
        let authority = rest.trim_end_matches('/');
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(ConfigError::BadPeerUrl(item.to_string())),
        }
        if peers
            .insert(id, url.trim_end_matches('/').to_string())
            .is_some()
        {
            return Err(ConfigError::DuplicatePeer(id));
        }
    }
    Ok(peers)
}

impl CoordinatorConfig {
    /// Check the settings against each other and the address actually bound.
    pub fn validate(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        if let Some(problem) = self.keys.problem() {
            return Err(ConfigError::Keys(problem));
        }
        if !(0 < self.heartbeat_ms
            && self.heartbeat_ms < self.election_min_ms
            && self.election_min_ms < self.election_max_ms)
        {
            return Err(ConfigError::BadTimings {
                heartbeat_ms: self.heartbeat_ms,
                min_ms: self.election_min_ms,
                max_ms: self.election_max_ms,
            });
        }
        self.check_lease()?;
        let own = self
            .peers
            .get(&self.node_id)
            .ok_or_else(|| ConfigError::SelfNotInPeers {
                node_id: self.node_id,
                peers: self
                    .peers
                    .iter()
                    .map(|(id, url)| format!("{id}={url}"))
                    .collect::<Vec<_>>()
                    .join(","),
            })?;
        let own_port = own
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        // Behind Docker port mapping the URL names the container port, which is what we bind.
        if own_port != Some(listen.port()) {
            return Err(ConfigError::ListenMismatch {
                listen: listen.port(),
                url: own.clone(),
            });
        }
        Ok(())
    }

    /// How old this node's last contact with a quorum may be for it to still act on it (grant
    /// leases, take decisions): one full election attempt, `election_min + election_max`.
    pub fn contact_window(&self) -> Duration {
        Duration::from_millis(self.election_min_ms + self.election_max_ms)
    }

    /// The lease inequalities (ARCHITECTURE.md, 'The worker lease'): a worker must have stopped
    /// a pipeline before any leader can declare it dead, whichever way it is declared.
    pub fn check_lease(&self) -> Result<(), ConfigError> {
        let d = &self.detector;
        let ms = |t: Duration| t.as_millis();
        let (lease, grace, dead, hb) = (d.lease, d.grace, d.ping_dead, d.heartbeat_interval);
        let sweep = d.grace + d.ping_dead + 2 * super::detector::ALIVE_REPORT_INTERVAL;
        let fail = |text: String| Err(ConfigError::BadLease(text));
        if hb.is_zero() || 2 * hb > dead {
            return fail(format!(
                "--heartbeat-interval-ms ({}) must be at most half of --ping-dead-ms ({}), so one late heartbeat does not move a link",
                ms(hb), ms(dead)
            ));
        }
        if dead >= lease - d.fence_budget() {
            return fail(format!(
                "--ping-dead-ms ({}) must be less than --lease-ms ({}) minus its stop budget ({}), so a worker leaves a silent coordinator before it must stop its pipelines",
                ms(dead), ms(lease), ms(d.fence_budget())
            ));
        }
        if lease >= grace {
            return fail(format!(
                "--lease-ms ({}) must be less than --grace-ms ({}): a pipeline could move while its old owner still runs it",
                ms(lease), ms(grace)
            ));
        }
        if lease >= d.rest_timeout {
            return fail(format!(
                "--lease-ms ({}) must be less than --rest-heartbeat-timeout-ms ({})",
                ms(lease),
                ms(d.rest_timeout)
            ));
        }
        if self.contact_window() + lease >= sweep {
            return fail(format!(
                "election-min + election-max ({}) + --lease-ms ({}) must be less than the liveness sweep's limit, grace + ping-dead + 2 alive reports ({})",
                ms(self.contact_window()), ms(lease), ms(sweep)
            ));
        }
        Ok(())
    }

    /// The openraft config for these timings.
    pub fn raft_config(&self) -> anyhow::Result<openraft::Config> {
        let config = openraft::Config {
            cluster_name: "varpulis-coordinators".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(node_id: NodeId, peers: &str) -> CoordinatorConfig {
        CoordinatorConfig {
            node_id,
            peers: parse_peers(peers).expect("valid peers"),
            data_dir: PathBuf::from("/tmp/unused"),
            heartbeat_ms: 50,
            election_min_ms: 150,
            election_max_ms: 300,
            keys: crate::auth::KeyConfig {
                insecure: true,
                ..Default::default()
            },
            snapshot_logs: 100,
            detector: crate::coordinator::DetectorConfig {
                grace: Duration::from_millis(1000),
                ping_interval: Duration::from_millis(100),
                ping_dead: Duration::from_millis(300),
                rest_timeout: Duration::from_millis(2000),
                heartbeat_interval: Duration::from_millis(100),
                lease: Duration::from_millis(400),
            },
        }
    }

    #[test]
    fn the_seed_timings_satisfy_the_lease_inequalities() {
        let mut c = config(1, "http://127.0.0.1:9101");
        (c.heartbeat_ms, c.election_min_ms, c.election_max_ms) = (500, 1500, 3000);
        c.detector = crate::coordinator::DetectorConfig::default();
        assert_eq!(c.detector.lease, Duration::from_millis(4000));
        assert_eq!(c.check_lease(), Ok(()));
    }

    #[test]
    fn contradictory_lease_timings_are_refused_by_name() {
        let mut c = config(1, "http://127.0.0.1:9101");
        assert_eq!(c.check_lease(), Ok(()));
        c.detector.lease = Duration::from_millis(1000);
        let err = c.validate("127.0.0.1:9101".parse().unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("--lease-ms (1000) must be less than --grace-ms (1000)"),
            "{err}"
        );
        c.detector.lease = Duration::from_millis(330);
        let err = c.check_lease().unwrap_err().to_string();
        assert!(
            err.contains("--ping-dead-ms (300) must be less than --lease-ms (330)"),
            "{err}"
        );
        c.detector.lease = Duration::from_millis(400);
        c.election_max_ms = 3000;
        let err = c.check_lease().unwrap_err().to_string();
        assert!(err.contains("liveness sweep"), "{err}");
    }

    #[test]
    fn peers_parse_in_both_forms() {
        let explicit = parse_peers("1=http://a:1,3=http://c:3/").unwrap();
        assert_eq!(explicit[&3], "http://c:3");
        assert_eq!(explicit.len(), 2);
        let positional = parse_peers("http://a:1, http://b:2,http://c:3").unwrap();
        assert_eq!(positional[&2], "http://b:2");
    }

    #[test]
    fn bad_peers_are_named() {
        assert_eq!(parse_peers(""), Err(ConfigError::NoPeers));
        assert_eq!(
            parse_peers("x=http://a:1"),
            Err(ConfigError::BadPeer("x=http://a:1".into()))
        );
        assert_eq!(
            parse_peers("https://a:1"),
            Err(ConfigError::BadPeerUrl("https://a:1".into()))
        );
        assert_eq!(
            parse_peers("http://a"),
            Err(ConfigError::BadPeerUrl("http://a".into()))
        );
        assert_eq!(
            parse_peers("1=http://a:1,1=http://b:2"),
            Err(ConfigError::DuplicatePeer(1))
        );
    }

    #[test]
    fn a_peer_list_without_this_node_is_refused() {
        let c = config(
            4,
            "http://127.0.0.1:9101,http://127.0.0.1:9102,http://127.0.0.1:9103",
        );
        let err = c.validate("127.0.0.1:9104".parse().unwrap()).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::SelfNotInPeers { node_id: 4, .. }
        ));
        assert!(err
            .to_string()
            .contains("does not contain this node (--node-id 4)"));
    }

    #[test]
    fn listen_port_must_match_own_url() {
        let c = config(1, "http://127.0.0.1:9101,http://127.0.0.1:9102");
        assert!(c.validate("127.0.0.1:9101".parse().unwrap()).is_ok());
        assert_eq!(
            c.validate("0.0.0.0:9999".parse().unwrap()),
            Err(ConfigError::ListenMismatch {
                listen: 9999,
                url: "http://127.0.0.1:9101".into()
            })
        );
    }

    #[test]
    fn timings_must_be_ordered() {
        let mut c = config(1, "http://127.0.0.1:9101");
        c.election_min_ms = 40;
        assert!(matches!(
            c.validate("127.0.0.1:9101".parse().unwrap()),
            Err(ConfigError::BadTimings { .. })
        ));
    }
}
