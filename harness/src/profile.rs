//! Cluster profiles: how to start and read one implementation of the cluster API
//! (`profiles/*.toml`; the reference cluster's is built in and the default). A profile gives
//! each role's command line and environment as templates, where its API answers, and the
//! capabilities it declares; a planned step needing a capability the profile lacks is refused
//! before anything starts, naming it. Unknown keys are reported, not fatal: a profile written
//! for a newer harness still loads.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::backend::{home_of, Addressing, ClusterSpec, NodeName};
use crate::phase::{Phase, Planned};
use crate::step::Step;

/// A node's argv and environment.
pub type CommandLine = (Vec<String>, Vec<(String, String)>);

/// The reference cluster's profile (the same text as `profiles/reference.toml`).
pub const REFERENCE: &str = include_str!("../../profiles/reference.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub roles: Roles,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Where this implementation's answers differ from the reference wire types.
    #[serde(default)]
    pub dialect: crate::dialect::Dialect,
    /// How its pipelines' outputs differ from the reference workload's.
    #[serde(default)]
    pub workload: Workload,
    /// Keys this harness does not know (reported as warnings).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Roles {
    /// Absent: the implementation brings no broker of its own; runs need `--mqtt-url`.
    pub broker: Option<Role>,
    pub coordinator: Role,
    pub worker: Role,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Role {
    pub argv: Vec<Arg>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Readiness probe path (HTTP GET answering 2xx), for roles with an HTTP API.
    pub ready: Option<String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, toml::Value>,
}

/// The data plane's dialect.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Workload {
    /// The `event_type` outputs carry (default: the input's, `SensorReading`).
    pub output_event_type: Option<String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, toml::Value>,
}

/// One argv item, or a group kept only when every placeholder in it has a value.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Arg {
    One(String),
    Group(Vec<String>),
}

/// What an implementation offers beyond the common API; each false one refuses the steps that
/// need it (see [`Capability::of`]).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Capabilities {
    #[serde(default)]
    pub event_log: bool,
    #[serde(default)]
    pub placement_epochs: bool,
    #[serde(default)]
    pub link_ownership: bool,
    #[serde(default)]
    pub idempotent_deploy: bool,
    #[serde(default)]
    pub worker_api: bool,
    /// The topology reports each pipeline's status.
    #[serde(default)]
    pub pipeline_status: bool,
    /// The worker list names the coordinator holding each worker's link.
    #[serde(default)]
    pub worker_links: bool,
    /// `/health` names the Raft leader (`current_leader`).
    #[serde(default)]
    pub health_leader: bool,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, toml::Value>,
}

/// A capability a step may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    EventLog,
    PlacementEpochs,
    LinkOwnership,
    IdempotentDeploy,
    WorkerApi,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::EventLog => "event_log",
            Capability::PlacementEpochs => "placement_epochs",
            Capability::LinkOwnership => "link_ownership",
            Capability::IdempotentDeploy => "idempotent_deploy",
            Capability::WorkerApi => "worker_api",
        })
    }
}

impl Capability {
    /// The capabilities `step` cannot run without, with why.
    pub fn of(step: &Step) -> Vec<(Capability, &'static str)> {
        match step {
            Step::AssertWorkersReady(a) if a.since.is_some() => vec![(
                Capability::EventLog,
                "asserting that no worker was declared unhealthy since a mark needs every \
                 coordinator's event log (polling cannot prove an absence)",
            )],
            Step::AwaitWsConnections(_) | Step::CountWs(_) => vec![(
                Capability::LinkOwnership,
                "counting the worker links each coordinator holds",
            )],
            Step::AssertTopology(a) if a.kept_by.is_some() => vec![(
                Capability::PlacementEpochs,
                "a pipeline kept \"at the same epoch\"",
            )],
            Step::Deploy(a) if a.expect.is_some() => vec![(
                Capability::IdempotentDeploy,
                "expecting a second deploy of a group to find it deployed",
            )],
            _ => vec![],
        }
    }
}

impl Capabilities {
    pub fn has(&self, c: Capability) -> bool {
        match c {
            Capability::EventLog => self.event_log,
            Capability::PlacementEpochs => self.placement_epochs,
            Capability::LinkOwnership => self.link_ownership,
            Capability::IdempotentDeploy => self.idempotent_deploy,
            Capability::WorkerApi => self.worker_api,
        }
    }
}

impl Profile {
    /// The reference cluster's profile.
    pub fn reference() -> Profile {
        Profile::parse(REFERENCE, "profiles/reference.toml").expect("the built-in profile parses")
    }

    pub fn load(path: &Path) -> anyhow::Result<Profile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        Profile::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Profile> {
        let profile: Profile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            anyhow::anyhow!("{origin}:{line}: {}", e.message().trim())
        })?;
        Ok(profile)
    }

    /// Keys this harness ignored, for a warning (`roles.worker.foo`, `bar`).
    pub fn ignored_keys(&self) -> Vec<String> {
        let mut out: Vec<String> = self.unknown.keys().cloned().collect();
        out.extend(self.roles.unknown.keys().map(|k| format!("roles.{k}")));
        out.extend(
            self.capabilities
                .unknown
                .keys()
                .map(|k| format!("capabilities.{k}")),
        );
        out.extend(
            self.workload
                .unknown
                .keys()
                .map(|k| format!("workload.{k}")),
        );
        for (name, role) in [
            ("broker", self.roles.broker.as_ref()),
            ("coordinator", Some(&self.roles.coordinator)),
            ("worker", Some(&self.roles.worker)),
        ] {
            if let Some(r) = role {
                out.extend(r.unknown.keys().map(|k| format!("roles.{name}.{k}")));
            }
        }
        out
    }

    pub fn is_reference(&self) -> bool {
        self.name == "reference"
    }

    fn role(&self, node: NodeName) -> anyhow::Result<&Role> {
        match node {
            NodeName::Broker => self.roles.broker.as_ref().with_context(|| {
                format!(
                    "profile {} has no broker role: give an external broker with --mqtt-url",
                    self.name
                )
            }),
            NodeName::Coordinator(_) => Ok(&self.roles.coordinator),
            NodeName::Worker(_) => Ok(&self.roles.worker),
        }
    }

    /// The readiness path of a node's role, if it has an HTTP API.
    pub fn ready_path(&self, node: NodeName) -> Option<&str> {
        self.role(node).ok()?.ready.as_deref()
    }

    /// A node's command line and environment, its templates filled in.
    pub fn render(
        &self,
        spec: &ClusterSpec,
        node: NodeName,
        a: &Addressing<'_>,
    ) -> anyhow::Result<CommandLine> {
        let role = self.role(node)?;
        let values = values(spec, node, a);
        let mut argv = Vec::new();
        for arg in &role.argv {
            match arg {
                Arg::One(t) => argv.push(fill(t, &values)?),
                Arg::Group(items) => {
                    let filled: Vec<Option<String>> =
                        items.iter().map(|t| fill_optional(t, &values)).collect();
                    if filled.iter().all(Option::is_some) {
                        argv.extend(filled.into_iter().flatten());
                    }
                }
            }
        }
        let mut env = Vec::new();
        for (k, t) in &role.env {
            // A variable whose value is unset (no API key) is left out.
            if let Some(v) = fill_optional(t, &values) {
                env.push((k.clone(), v));
            }
        }
        Ok((argv, env))
    }

    /// Steps of the planned phases needing a capability this profile lacks, as
    /// `file:line: step: why`.
    pub fn refused(&self, phases: &[Phase], plan: &[Planned]) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for planned in plan {
            if !seen.insert(planned.phase) {
                continue;
            }
            let phase = &phases[planned.phase];
            for (i, step) in phase.steps.iter().enumerate() {
                for (cap, why) in Capability::of(step) {
                    if !self.capabilities.has(cap) {
                        out.push(format!(
                            "{}: step `{}`: needs capability `{cap}` ({why}), which profile {} does not declare",
                            phase.step_locations.get(i).map_or("?", String::as_str),
                            step.action(),
                            self.name
                        ));
                    }
                }
            }
        }
        out
    }

    /// One line per figure source that falls back, for the report.
    pub fn fallbacks(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.capabilities.placement_epochs {
            out.push(
                "no placement epochs: a pipeline has moved once the topology names another \
                 worker (no epoch check)"
                    .to_string(),
            );
        }
        if !self.capabilities.pipeline_status {
            out.push(
                "no pipeline status in the topology: failover ends when the placement names \
                 another worker, not when the pipeline runs there (the delivery counts that \
                 follow show whether it ran)"
                    .to_string(),
            );
        }
        if !self.capabilities.worker_links {
            out.push(
                "no link holder in the worker list: `home-of:w` is the coordinator w was \
                 configured with"
                    .to_string(),
            );
        }
        if !self.capabilities.health_leader {
            out.push(
                "no leader in /health: `await_healthy` checks each coordinator's status and takes \
                 the leader every coordinator's /raft/metrics agrees on"
                    .to_string(),
            );
        }
        if !self.capabilities.event_log {
            out.push(
                "no event log: election, detection and failover marks are the first poll that \
                 saw the change (figures keyed `(poll)`, resolution = the poll gap)"
                    .to_string(),
            );
        }
        out
    }
}

/// Every placeholder's value for `node` (absent: not set for this node).
fn values(
    spec: &ClusterSpec,
    node: NodeName,
    a: &Addressing<'_>,
) -> BTreeMap<&'static str, String> {
    let mut v = BTreeMap::new();
    let (r, d) = (spec.raft, spec.detector);
    let urls: Vec<String> = (1..=spec.coordinators)
        .map(|n| (a.coordinator_url)(n))
        .collect();
    let (host, port) = a
        .listen
        .rsplit_once(':')
        .map_or((a.listen.clone(), String::new()), |(h, p)| {
            (h.to_string(), p.to_string())
        });
    v.insert("node", node.to_string());
    v.insert("listen", a.listen.clone());
    v.insert("host", host);
    v.insert("port", port);
    v.insert("data_dir", a.data_dir.clone());
    v.insert(
        "peers",
        urls.iter()
            .enumerate()
            .map(|(i, u)| format!("{}={u}", i + 1))
            .collect::<Vec<_>>()
            .join(","),
    );
    v.insert("peer_urls", urls.join(","));
    v.insert("mqtt_url", a.mqtt_url.clone());
    if let Some((h, p)) = a
        .mqtt_url
        .strip_prefix("mqtt://")
        .map(|r| r.rsplit_once('@').map_or(r, |(_, host)| host))
        .and_then(|r| r.rsplit_once(':'))
    {
        v.insert("mqtt_host", h.to_string());
        v.insert("mqtt_port", p.to_string());
    }
    if let Some(key) = &spec.api_key {
        v.insert("api_key", key.clone());
        v.insert("operator_key", key.clone());
    }
    if let Some(key) = &spec.peer_key {
        v.insert("peer_key", key.clone());
    }
    if let Some(secret) = &spec.worker_secret {
        v.insert("worker_secret", secret.clone());
    }
    if let Some(token) = spec.worker_token(node) {
        v.insert("worker_token", token);
    }
    if spec.insecure {
        v.insert("insecure_flag", "--insecure".to_string());
    }
    if let (NodeName::Broker, Some(logins)) = (node, &spec.mqtt_logins) {
        v.insert("mqtt_clients", logins.broker_clients());
    }
    if let Some(adv) = &a.advertise {
        v.insert("advertise", adv.clone());
    }
    if let Some(max) = spec.worker_max_pipelines() {
        v.insert("max_pipelines", max.to_string());
    }
    for (k, ms) in [
        ("heartbeat_ms", r.heartbeat_ms),
        ("election_min_ms", r.election_min_ms),
        ("election_max_ms", r.election_max_ms),
        ("grace_ms", d.grace_ms),
        ("ping_interval_ms", d.ping_interval_ms),
        ("ping_dead_ms", d.ping_dead_ms),
        ("rest_timeout_ms", d.rest_timeout_ms),
    ] {
        v.insert(k, ms.to_string());
    }
    // Whole seconds, rounded up, for implementations that take seconds.
    v.insert("grace_s", d.grace_ms.div_ceil(1000).to_string());
    v.insert(
        "rest_timeout_s",
        d.rest_timeout_ms.div_ceil(1000).to_string(),
    );
    match node {
        NodeName::Coordinator(n) => {
            v.insert("id", n.to_string());
        }
        NodeName::Worker(n) => {
            v.insert("id", n.to_string());
            let home = home_of(n, spec.coordinators);
            v.insert("home_url", (a.coordinator_url)(home));
            let order: Vec<String> = std::iter::once(home)
                .chain((1..=spec.coordinators).filter(|c| *c != home))
                .map(|c| (a.coordinator_url)(c))
                .collect();
            v.insert("coordinators", order.join(","));
        }
        NodeName::Broker => {}
    }
    v
}

fn fill_optional(template: &str, values: &BTreeMap<&'static str, String>) -> Option<String> {
    fill(template, values).ok()
}

/// Replace every `{name}`; an unknown or unset placeholder is an error naming it.
fn fill(template: &str, values: &BTreeMap<&'static str, String>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            bail!("'{template}': unclosed {{");
        };
        let name = &rest[start + 1..start + len];
        match values.get(name) {
            Some(v) => out.push_str(v),
            None => bail!("'{template}': placeholder {{{name}}} has no value here"),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{node_args, DetectorTimings, RaftTimings};

    fn spec() -> ClusterSpec {
        ClusterSpec {
            coordinators: 3,
            workers: 4,
            raft: RaftTimings::SEED,
            detector: DetectorTimings::SEED,
            api_key: Some("the-operator-key".into()),
            peer_key: Some("the-peer-key".into()),
            worker_secret: Some("the-worker-secret".into()),
            insecure: false,
            mqtt_url: None,
            mqtt_logins: crate::backend::broker::HarnessLogins::generate(None),
            pipelines: 3,
        }
    }

    /// The built-in reference profile renders exactly the command lines the backends give the
    /// `cluster` binary, on both addressings (with and without `--advertise`).
    #[test]
    fn the_reference_profile_is_the_reference_command_line() {
        let profile = Profile::reference();
        assert!(
            profile.ignored_keys().is_empty(),
            "{:?}",
            profile.ignored_keys()
        );
        let url = |n: u32| format!("http://127.0.0.1:{}", 9100 + n);
        for advertise in [None, Some("http://worker-1:9000".to_string())] {
            let a = Addressing {
                listen: "127.0.0.1:7000".into(),
                coordinator_url: &url,
                mqtt_url: "mqtt://127.0.0.1:1883".into(),
                data_dir: "/data".into(),
                advertise: advertise.clone(),
            };
            // 300 pipelines: more than a worker's default room, so every worker gets
            // `--max-pipelines 300`; 3: none.
            let big = ClusterSpec {
                pipelines: 300,
                ..spec()
            };
            for s in [spec(), spec().with_keys(true), big] {
                for node in s.nodes() {
                    let (argv, mut env) = profile.render(&s, node, &a).unwrap();
                    assert_eq!(argv, node_args(&s, node, &a), "{node}");
                    let room = argv.iter().position(|x| x == "--max-pipelines");
                    let expected = matches!(node, NodeName::Worker(_)) && s.pipelines > 100;
                    assert_eq!(room.is_some(), expected, "{node}: {argv:?}");
                    if let Some(i) = room {
                        assert_eq!(argv[i + 1], "300");
                    }
                    env.sort();
                    let mut want = s.node_env(node);
                    want.sort();
                    assert_eq!(env, want, "{node}");
                    for (_, secret) in s.node_env(node) {
                        assert!(
                            !argv.iter().any(|arg| arg.contains(&secret)),
                            "{node}: {argv:?}"
                        );
                    }
                }
            }
        }
    }

    /// A cluster taking one key for everything gets the run's operator key, and none at all in
    /// a run without keys.
    #[test]
    fn the_varpulis_profile_gets_the_operator_key_or_none() {
        let text = include_str!("../../profiles/varpulis-0.3.0.toml");
        let profile = Profile::parse(text, "varpulis-0.3.0.toml").unwrap();
        let url = |n: u32| format!("http://127.0.0.1:{}", 9100 + n);
        let a = Addressing {
            listen: "127.0.0.1:7000".into(),
            coordinator_url: &url,
            mqtt_url: "mqtt://127.0.0.1:1883".into(),
            data_dir: "/data".into(),
            advertise: None,
        };
        for node in [NodeName::Coordinator(1), NodeName::Worker(1)] {
            let (argv, _) = profile.render(&spec(), node, &a).unwrap();
            let at = argv
                .iter()
                .position(|x| x == "--api-key")
                .expect("--api-key");
            assert_eq!(argv[at + 1], "the-operator-key", "{node}");
            let (argv, _) = profile.render(&spec().with_keys(true), node, &a).unwrap();
            assert!(!argv.iter().any(|x| x == "--api-key"), "{node}: {argv:?}");
        }
    }

    #[test]
    fn unknown_keys_are_reported_not_fatal_and_bad_templates_name_the_placeholder() {
        let text = format!("future_thing = 1\n{REFERENCE}\npartitions = true\n");
        let p = Profile::parse(&text, "x.toml").unwrap();
        assert_eq!(
            p.ignored_keys(),
            ["future_thing", "capabilities.partitions"]
        );
        let bad = REFERENCE.replace("\"{listen}\"", "\"{lisen}\"");
        let p = Profile::parse(&bad, "bad.toml").unwrap();
        let url = |n: u32| format!("http://h:{n}");
        let a = Addressing {
            listen: "h:1".into(),
            coordinator_url: &url,
            mqtt_url: "mqtt://h:2".into(),
            data_dir: "/d".into(),
            advertise: None,
        };
        let e = p.render(&spec(), NodeName::Coordinator(1), &a).unwrap_err();
        assert!(e.to_string().contains("{lisen}"), "{e}");
        let e = Profile::parse("name = 1", "n.toml").unwrap_err();
        assert!(e.to_string().starts_with("n.toml:1:"), "{e}");
    }

    #[test]
    fn a_missing_capability_refuses_the_steps_that_need_it() {
        let text = REFERENCE.replace("event_log = true", "event_log = false");
        let p = Profile::parse(&text, "p.toml").unwrap();
        let step: Step =
            toml::from_str("do = \"assert_workers_ready\"\ncount = \"all\"\nsince = \"m\"")
                .unwrap();
        let phase = Phase {
            id: "5".into(),
            number: Some(5),
            slug: "x".into(),
            name: "X".into(),
            description: String::new(),
            requires: vec![],
            detail: String::new(),
            steps: vec![step],
            step_locations: vec!["x.toml:9".into()],
            path: "x.toml".into(),
        };
        let plan = [Planned {
            phase: 0,
            trials: 1,
        }];
        let refused = p.refused(std::slice::from_ref(&phase), &plan);
        assert_eq!(refused.len(), 1);
        assert!(
            refused[0]
                .starts_with("x.toml:9: step `assert_workers_ready`: needs capability `event_log`"),
            "{refused:?}"
        );
        assert!(Profile::reference()
            .refused(std::slice::from_ref(&phase), &plan)
            .is_empty());
        assert_eq!(p.fallbacks().len(), 1, "{:?}", p.fallbacks());
    }
}
