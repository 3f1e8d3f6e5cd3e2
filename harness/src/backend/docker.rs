//! The Docker backend: every node is a container of one image the harness builds itself (FROM
//! scratch + the host-built `cluster` binary and its shared objects, see `image.rs`: no registry,
//! nothing to pull), on a private
//! network, named as in the seed (`coordinator-1`, `worker-3`, `broker`), with the seed's ports
//! inside (coordinators 9100, workers 9000, broker 1883) published on loopback for the harness.
//! Faults go through the engine's API (bollard): kill, stop, pause/unpause, start again.
//! Partitions cut single links: nftables rules in a container's network namespace, entered
//! from the host with `nsenter -t <pid> -n` (so only with a local engine; the image has no nft
//! of its own). Everything created carries the label `varpulis.harness` and its run and owner
//! ([`super::ownership`]); containers are named `vp-<run-id>-<node>` with the seed's name as
//! their hostname and alias on the run's own network, so runs can share an engine. A run
//! removes its own containers and network at the end (also on Ctrl-C, panic or error), and
//! removes leftovers of runs whose harness is gone.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::ownership::{self, Owner, Verdict};
use super::{now_us, Backend, ClusterSpec, NodeName, NodeState, WallUs};
use crate::step::Fault;

/// Faults the Docker backend injects with any engine.
pub const FAULTS: &[Fault] = &[Fault::Kill, Fault::Stop, Fault::Pause, Fault::Restart];

/// Why this machine cannot cut links between containers, or `None` when it can: the engine must
/// be local (its containers' namespaces are entered from here), and root, `nsenter` and `nft`.
pub fn partition_refusal() -> Option<String> {
    partition_refusal_for(std::env::var("DOCKER_HOST").ok().as_deref())
}

fn partition_refusal_for(docker_host: Option<&str>) -> Option<String> {
    let mut missing = Vec::new();
    if docker_host.is_some_and(|h| !h.is_empty() && !h.starts_with("unix://")) {
        missing.push(format!(
            "a local engine (DOCKER_HOST={} is remote: the cuts are nftables rules entered into each container's network namespace from the engine's host)",
            docker_host.unwrap_or_default()
        ));
    }
    if !super::cuts::has_net_admin() {
        missing.push("CAP_NET_ADMIN and CAP_SYS_ADMIN (run the harness as root)".into());
    }
    missing.extend(super::cuts::missing_program("nsenter", "util-linux"));
    missing.extend(super::cuts::missing_program("nft", "nftables"));
    (!missing.is_empty()).then(|| {
        format!(
            "partitions on the Docker backend need: {}",
            missing.join("; ")
        )
    })
}

/// Faults the Docker backend injects from this machine.
pub fn faults_here() -> Vec<Fault> {
    let mut faults = FAULTS.to_vec();
    if partition_refusal().is_none() {
        faults.push(Fault::Partition);
    }
    faults
}

/// Label on everything the harness creates.
pub const LABEL: &str = ownership::LABEL;
/// Image repository of the node image; the tag is a hash of the binary.
const IMAGE_REPO: &str = "varpulis-cluster";
/// Ports inside the containers, as in the seed.
const COORDINATOR_PORT: u16 = 9100;
const WORKER_PORT: u16 = 9000;
const BROKER_PORT: u16 = 1883;
/// Seconds `docker stop` waits after SIGTERM before SIGKILL.
const STOP_GRACE_S: i32 = 5;
/// Bound of one engine call (a ping, a kill): a local engine answers in milliseconds.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connect to the engine (`DOCKER_HOST` or the local socket) and negotiate the API version.
pub async fn connect() -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_defaults().context("connect to the Docker engine")?;
    let docker = tokio::time::timeout(ENGINE_TIMEOUT, docker.negotiate_version())
        .await
        .context("the Docker engine did not answer in time")?
        .context("negotiate the Docker API version")?;
    tokio::time::timeout(ENGINE_TIMEOUT, docker.ping())
        .await
        .context("the Docker engine did not answer a ping in time")?
        .context("ping the Docker engine")?;
    Ok(docker)
}

/// True when an engine answers (for `--backend auto`).
pub async fn available() -> bool {
    connect().await.is_ok()
}

/// The host at which published ports are reached: the engine's host for `DOCKER_HOST=tcp://h:p`.
fn published_host() -> String {
    published_host_from(std::env::var("DOCKER_HOST").ok().as_deref())
}

fn published_host_from(docker_host: Option<&str>) -> String {
    docker_host
        .and_then(|h| {
            let rest = h.strip_prefix("tcp://")?;
            let rest = rest.trim_end_matches('/');
            let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
            (!host.is_empty()).then(|| host.to_string())
        })
        .unwrap_or_else(|| "127.0.0.1".into())
}

#[derive(Debug)]
pub struct DockerBackend {
    docker: Docker,
    run_dir: PathBuf,
    spec: ClusterSpec,
    network: String,
    image: String,
    host: String,
    ports: BTreeMap<NodeName, u16>,
    states: BTreeMap<NodeName, NodeState>,
    owner: Owner,
    cleaned: bool,
    /// The links cut now, and what each container's namespace drops (by container pid and source
    /// addresses), so a restarted container (a new namespace) gets its rules again.
    cuts: super::cuts::Cuts,
    applied: BTreeMap<NodeName, (i64, std::collections::BTreeSet<std::net::Ipv4Addr>)>,
    /// The published ports' reservation, held until the backend is dropped.
    _lease: super::ports::PortLease,
}

impl DockerBackend {
    /// Remove leftovers, build (or reuse) the image, create the network and every container
    /// (not started yet).
    pub async fn new(
        bin: &Path,
        run_dir: &Path,
        spec: ClusterSpec,
        run_id: &str,
    ) -> anyhow::Result<Self> {
        if let Some(url) = spec.mqtt_url.as_ref().filter(|u| u.is_loopback()) {
            bail!(
                "--mqtt-url {url} is a loopback address, which containers cannot reach: give the \
                 broker's address on a network the containers share (e.g. the host's LAN address)"
            );
        }
        let docker = connect().await?;
        let owner = Owner::this_process(run_id);
        remove_leftovers(&docker, run_id).await?;
        let image = ensure_image(&docker, bin).await?;
        let network = format!("varpulis-{run_id}");
        docker
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                driver: Some("bridge".into()),
                labels: Some(owner.labels()),
                ..Default::default()
            })
            .await
            .with_context(|| format!("create network {network}"))?;
        std::fs::create_dir_all(run_dir.join("logs"))?;
        let host = published_host();
        let mut backend = DockerBackend {
            docker,
            run_dir: run_dir.to_path_buf(),
            spec,
            network,
            image,
            ports: BTreeMap::new(),
            states: BTreeMap::new(),
            host,
            owner,
            cleaned: false,
            cuts: Default::default(),
            applied: BTreeMap::new(),
            _lease: Default::default(),
        };
        let nodes = backend.spec.nodes();
        // Published ports, reserved against concurrent runs ([`super::ports`]).
        let (reserved, lease) = super::ports::reserve(nodes.len())?;
        backend.ports = nodes.iter().copied().zip(reserved).collect();
        backend._lease = lease;
        for node in nodes {
            backend.create(node).await?;
            backend.states.insert(node, NodeState::NotStarted);
        }
        Ok(backend)
    }

    fn inner_port(node: NodeName) -> u16 {
        match node {
            NodeName::Broker => BROKER_PORT,
            NodeName::Coordinator(_) => COORDINATOR_PORT,
            NodeName::Worker(_) => WORKER_PORT,
        }
    }

    fn args(&self, node: NodeName) -> Vec<String> {
        let coordinator_url = |n: u32| format!("http://coordinator-{n}:{COORDINATOR_PORT}");
        let addressing = super::Addressing {
            listen: format!("0.0.0.0:{}", Self::inner_port(node)),
            coordinator_url: &coordinator_url,
            mqtt_url: match &self.spec.mqtt_url {
                Some(url) => url.with_login(),
                None => format!("mqtt://broker:{BROKER_PORT}"),
            },
            data_dir: "/data".into(),
            advertise: Some(format!("http://{node}:{WORKER_PORT}")),
        };
        super::node_args(&self.spec, node, &addressing)
    }

    /// The container's name: the run's own (`vp-<run-id>-<node>`); the seed's name is its
    /// hostname and alias on the run's network.
    fn container(&self, node: NodeName) -> String {
        format!("vp-{}-{node}", self.owner.run_id)
    }

    fn endpoint_settings(node: NodeName) -> EndpointSettings {
        EndpointSettings {
            aliases: Some(vec![node.to_string()]),
            ..Default::default()
        }
    }

    async fn create(&self, node: NodeName) -> anyhow::Result<()> {
        let name = self.container(node);
        let inner = format!("{}/tcp", Self::inner_port(node));
        let bind_ip = if self.host == "127.0.0.1" {
            "127.0.0.1"
        } else {
            "0.0.0.0"
        };
        let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = [(
            inner.clone(),
            Some(vec![PortBinding {
                host_ip: Some(bind_ip.into()),
                host_port: Some(self.ports[&node].to_string()),
            }]),
        )]
        .into();
        let mut env = vec![format!(
            "RUST_LOG={}",
            std::env::var("CLUSTER_LOG").unwrap_or_else(|_| "info,openraft=warn".into())
        )];
        env.extend(
            self.spec
                .node_env(node)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.args(node)),
            env: Some(env),
            hostname: Some(node.to_string()),
            labels: Some(self.owner.labels()),
            exposed_ports: Some(vec![inner]),
            host_config: Some(HostConfig {
                port_bindings: Some(port_bindings),
                network_mode: Some(self.network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(
                    [(self.network.clone(), Self::endpoint_settings(node))].into(),
                ),
            }),
            ..Default::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .with_context(|| format!("create container {name}"))?;
        Ok(())
    }

    /// Save each container's logs (`logs/<node>.log`, and all in `docker-logs.txt`).
    async fn save_logs(&self) -> anyhow::Result<()> {
        let mut all = std::fs::File::create(self.run_dir.join("docker-logs.txt"))?;
        for node in self.ports.keys() {
            let name = self.container(*node);
            let mut stream = self.docker.logs(
                &name,
                Some(LogsOptionsBuilder::new().stdout(true).stderr(true).build()),
            );
            let mut text = Vec::new();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(out) => text.extend_from_slice(&out.into_bytes()),
                    Err(e) => {
                        text.extend_from_slice(
                            format!("\n[harness: log stream ended: {e}]\n").as_bytes(),
                        );
                        break;
                    }
                }
            }
            std::fs::write(self.run_dir.join("logs").join(format!("{node}.log")), &text)?;
            writeln!(all, "===== {node} ({name}) =====")?;
            all.write_all(&text)?;
            writeln!(all)?;
        }
        Ok(())
    }

    /// A running container's pid and address on the run's network.
    async fn pid_and_addr(&self, node: NodeName) -> anyhow::Result<(i64, std::net::Ipv4Addr)> {
        let name = self.container(node);
        let info = self
            .engine(
                format!("inspect {name}"),
                self.docker.inspect_container(&name, None),
            )
            .await?;
        let pid = info
            .state
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .with_context(|| format!("{name} has no process"))?;
        let addr = info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(&self.network))
            .and_then(|e| e.ip_address)
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("{name} has no address on {}", self.network))?;
        Ok((pid, addr))
    }

    /// Make the cut links effective in every running container: each drops the packets of the
    /// nodes cut from it, by their current address. Re-applied after a (re)start, since a
    /// started container gets a fresh namespace and possibly a new address.
    async fn apply_cuts(&mut self) -> anyhow::Result<()> {
        if self.cuts.is_empty() && self.applied.is_empty() {
            return Ok(());
        }
        let mut live = BTreeMap::new();
        for (&node, &state) in &self.states {
            if matches!(state, NodeState::Running | NodeState::Paused) {
                live.insert(node, self.pid_and_addr(node).await?);
            }
        }
        let wanted = super::cuts::sources_by_receiver(&self.cuts);
        for (&node, &(pid, _)) in &live {
            let sources: std::collections::BTreeSet<std::net::Ipv4Addr> = wanted
                .get(&node)
                .into_iter()
                .flatten()
                .filter_map(|s| live.get(s).map(|(_, a)| *a))
                .collect();
            let fresh = (pid, sources);
            if self.applied.get(&node) == Some(&fresh)
                || (fresh.1.is_empty() && !self.applied.contains_key(&node))
            {
                continue;
            }
            let target = pid.to_string();
            super::cuts::run_nft(
                "nsenter",
                &["-t", &target, "-n", "nft", "-f", "-"],
                &super::cuts::nft_script(&fresh.1),
            )
            .with_context(|| format!("apply the cuts in {node}'s network namespace"))?;
            if fresh.1.is_empty() {
                self.applied.remove(&node);
            } else {
                self.applied.insert(node, fresh);
            }
        }
        Ok(())
    }

    async fn engine<T>(
        &self,
        what: String,
        call: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
    ) -> anyhow::Result<T> {
        tokio::time::timeout(ENGINE_TIMEOUT * 10, call)
            .await
            .with_context(|| format!("{what}: the engine did not answer"))?
            .with_context(|| what)
    }
}

fn label_filter() -> HashMap<String, Vec<String>> {
    [("label".to_string(), vec![LABEL.to_string()])].into()
}

fn run_filter(run_id: &str) -> HashMap<String, Vec<String>> {
    [(
        "label".to_string(),
        vec![format!("{}={run_id}", ownership::RUN_LABEL)],
    )]
    .into()
}

/// Remove the containers and network of run `run_id` (this run's, at its end).
pub async fn remove_run(docker: &Docker, run_id: &str) -> anyhow::Result<()> {
    remove_matching(docker, &run_filter(run_id), &|_, _| true).await
}

/// Remove containers and networks left by runs whose harness is gone (killed before it could
/// clean up); a live run's are never touched, whichever harness owns them.
pub async fn remove_leftovers(docker: &Docker, own_run: &str) -> anyhow::Result<()> {
    let now = ownership::now_s();
    let decide = |labels: &HashMap<String, String>, created: Option<u64>| match ownership::judge(
        labels,
        created,
        own_run,
        now,
        &ownership::owner_alive,
    ) {
        Verdict::Remove(why) => {
            eprintln!("harness: removing a leftover container or network ({why})");
            true
        }
        Verdict::Keep(why) => {
            tracing::debug!("keeping: {why}");
            false
        }
    };
    remove_matching(docker, &label_filter(), &decide).await
}

/// Decides from an object's labels and creation time (unix s) whether to remove it.
type RemovePredicate<'a> = dyn Fn(&HashMap<String, String>, Option<u64>) -> bool + Sync + 'a;

/// Remove the containers, then the networks, that `filters` lists and `remove` accepts.
async fn remove_matching(
    docker: &Docker,
    filters: &HashMap<String, Vec<String>>,
    remove: &RemovePredicate<'_>,
) -> anyhow::Result<()> {
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(filters)
                .build(),
        ))
        .await
        .context("list labelled containers")?;
    for c in containers {
        let labels = c.labels.unwrap_or_default();
        let created = c.created.and_then(|t| u64::try_from(t).ok());
        if let Some(id) = c.id.filter(|_| remove(&labels, created)) {
            docker
                .remove_container(
                    &id,
                    Some(
                        RemoveContainerOptionsBuilder::new()
                            .force(true)
                            .v(true)
                            .build(),
                    ),
                )
                .await
                .with_context(|| format!("remove container {id}"))?;
        }
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(filters).build(),
        ))
        .await
        .context("list labelled networks")?;
    for n in networks {
        let labels = n.labels.unwrap_or_default();
        if let Some(id) = n.id.filter(|_| remove(&labels, None)) {
            // An older harness's network still in use is refused by the engine: left for later.
            if let Err(e) = docker.remove_network(&id).await {
                tracing::warn!("network {id} not removed: {e}");
            }
        }
    }
    Ok(())
}

/// Build the node image from `bin` unless an image of this exact binary exists; remove images
/// of older binaries. Returns the image reference.
async fn ensure_image(docker: &Docker, bin: &Path) -> anyhow::Result<String> {
    let root_fs = super::image::root_fs(bin)?;
    let bytes: usize = root_fs.iter().map(|e| e.data.len()).sum();
    let mut hasher = Sha256::new();
    for e in &root_fs {
        hasher.update(e.path.as_bytes());
        hasher.update(&e.data);
    }
    let digest = hasher.finalize();
    let tag: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let image = format!("{IMAGE_REPO}:{tag}");
    let existing = docker
        .list_images(Some(
            ListImagesOptionsBuilder::new()
                .filters(&label_filter())
                .build(),
        ))
        .await
        .context("list images")?;
    let mut have = false;
    for img in existing {
        if img.repo_tags.contains(&image) {
            have = true;
        } else {
            // An image of an older binary. Not forced: the engine refuses while a container
            // (another live run's) uses it, and a later run removes it.
            let _ = docker
                .remove_image(
                    &img.id,
                    Some(RemoveImageOptionsBuilder::new().force(false).build()),
                    None,
                )
                .await;
        }
    }
    if have {
        return Ok(image);
    }
    let started = std::time::Instant::now();
    let tar = super::image::context(&root_fs)?;
    let options = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(&image)
        .rm(true)
        .forcerm(true)
        .labels(&[(LABEL.to_string(), "1".to_string())].into())
        .build();
    let mut build = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
    while let Some(info) = build.next().await {
        let info = info.context("build the node image")?;
        if let Some(detail) = info.error_detail {
            bail!(
                "build the node image: {}",
                detail.message.unwrap_or_default()
            );
        }
    }
    eprintln!(
        "harness: built image {image} ({:.1} MB: the binary and {} shared object(s)) in {:.1} s",
        bytes as f64 / 1e6,
        root_fs.len() - 1,
        started.elapsed().as_secs_f64()
    );
    Ok(image)
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn faults(&self) -> Vec<Fault> {
        faults_here()
    }

    fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    fn nodes(&self) -> Vec<NodeName> {
        self.ports.keys().copied().collect()
    }

    fn endpoint(&self, node: NodeName) -> String {
        let port = self.ports.get(&node).copied().unwrap_or(0);
        match node {
            NodeName::Broker => {
                let (host, port) = self.mqtt();
                format!("mqtt://{host}:{port}")
            }
            _ => format!("http://{}:{port}", self.host),
        }
    }

    fn mqtt(&self) -> (String, u16) {
        match &self.spec.mqtt_url {
            Some(url) => (url.host.clone(), url.port),
            None => (
                self.host.clone(),
                self.ports.get(&NodeName::Broker).copied().unwrap_or(0),
            ),
        }
    }

    fn state(&self, node: NodeName) -> NodeState {
        self.states
            .get(&node)
            .copied()
            .unwrap_or(NodeState::NotStarted)
    }

    async fn start(&mut self, node: NodeName) -> anyhow::Result<WallUs> {
        let name = self.container(node);
        self.engine(
            format!("start {name}"),
            self.docker.start_container(&name, None),
        )
        .await?;
        let at = now_us();
        self.states.insert(node, NodeState::Running);
        // A started container has a new namespace (and maybe a new address): cut it again.
        self.applied.remove(&node);
        self.apply_cuts().await?;
        Ok(at)
    }

    async fn kill(&mut self, node: NodeName) -> anyhow::Result<WallUs> {
        let name = self.container(node);
        // The engine signals the process as soon as it takes the call, then waits for the exit
        // and cleans up (~120 ms here) before answering, and its `FinishedAt` lags the same way.
        // So the mark is the moment the call was issued: figures measured from it are upper
        // bounds, off by at most the engine's dispatch time.
        let issued = now_us();
        self.engine(
            format!("kill {name}"),
            self.docker.kill_container(
                &name,
                Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
            ),
        )
        .await?;
        self.states.insert(node, NodeState::Down);
        Ok(issued)
    }

    async fn stop(&mut self, node: NodeName) -> anyhow::Result<WallUs> {
        let name = self.container(node);
        // SIGTERM leaves when the call is issued; the call returns once the container exited.
        let at = now_us();
        self.engine(
            format!("stop {name}"),
            self.docker.stop_container(
                &name,
                Some(StopContainerOptionsBuilder::new().t(STOP_GRACE_S).build()),
            ),
        )
        .await?;
        self.states.insert(node, NodeState::Down);
        Ok(at)
    }

    async fn pause(&mut self, node: NodeName) -> anyhow::Result<WallUs> {
        let name = self.container(node);
        // The freeze happens during the call: mark its start (figures from it are upper bounds).
        let issued = now_us();
        self.engine(format!("pause {name}"), self.docker.pause_container(&name))
            .await?;
        self.states.insert(node, NodeState::Paused);
        Ok(issued)
    }

    async fn resume(&mut self, node: NodeName) -> anyhow::Result<WallUs> {
        let name = self.container(node);
        self.engine(
            format!("unpause {name}"),
            self.docker.unpause_container(&name),
        )
        .await?;
        self.states.insert(node, NodeState::Running);
        Ok(now_us())
    }

    async fn cut(&mut self, cuts: &super::cuts::Cuts) -> anyhow::Result<WallUs> {
        if !cuts.is_empty() {
            if let Some(why) = partition_refusal() {
                bail!("{why}");
            }
        }
        let issued = now_us();
        self.cuts = cuts.clone();
        self.apply_cuts().await?;
        Ok(issued)
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        let logs = self.save_logs().await;
        let cleanup = remove_run(&self.docker, &self.owner.run_id).await;
        self.cleaned = cleanup.is_ok();
        logs.and(cleanup)
    }
}

impl Drop for DockerBackend {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // Ctrl-C, panic or error before shutdown: remove what this run created. Drop cannot be
        // async, so a thread with its own runtime does it, and we wait for it.
        let run_id = self.owner.run_id.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let docker = connect().await.ok()?;
                remove_run(&docker, &run_id).await.ok()
            })
        });
        if handle.join().ok().flatten().is_none() {
            eprintln!(
                "harness: could not remove the run's containers; the next run removes them once this harness is gone (label {}={})",
                ownership::RUN_LABEL,
                self.owner.run_id
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_engine_refuses_partitions_and_says_why() {
        let why = partition_refusal_for(Some("tcp://10.0.0.7:2375")).expect("refused");
        assert!(
            why.contains("DOCKER_HOST=tcp://10.0.0.7:2375 is remote"),
            "{why}"
        );
        if let Some(why) = partition_refusal_for(Some("unix:///var/run/docker.sock")) {
            assert!(!why.contains("remote"), "{why}");
        }
    }

    #[test]
    fn published_ports_are_reached_on_the_engines_host() {
        assert_eq!(published_host_from(None), "127.0.0.1");
        assert_eq!(
            published_host_from(Some("unix:///var/run/docker.sock")),
            "127.0.0.1"
        );
        assert_eq!(published_host_from(Some("tcp://10.0.0.7:2375")), "10.0.0.7");
        assert_eq!(
            published_host_from(Some("tcp://docker.lan:2376/")),
            "docker.lan"
        );
    }
}
