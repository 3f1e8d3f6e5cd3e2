//! Network namespaces for the process backend's partitions: one namespace per node, each with
//! one macvlan interface (bridge mode) on a device the run creates, addresses in a private /24
//! chosen free, and the harness in the root namespace on a macvlan of its own. Cuts are
//! nftables rules inside the receiving node's namespace (see [`super::cuts`]); the harness's
//! address is never in a rule, so it keeps reaching every node.
//!
//! Why macvlan and not veth + bridge: with Docker installed, `br_netfilter` sends bridged
//! frames through the host's iptables FORWARD chain, whose policy Docker sets to DROP, so nodes
//! on a plain Linux bridge cannot reach each other without editing the host's firewall. Frames
//! between macvlan interfaces of one parent are switched inside the macvlan driver and never
//! meet the host's filter. The parent is an empty bridge device of the run's own (a dummy
//! device would do, but some kernels lack that module).
//!
//! Names carry the run id and the harness's pid: namespaces `vp-<run id>-<pid>-<node>`, links
//! `vpb<tag>` (parent), `vph<tag>` (the harness's end), `vpn<tag><i>` (a node's, before it is
//! moved and renamed `eth0`); the parent's alias records the owner. Everything is removed at
//! the end of the run, on drop (error, panic, Ctrl-C), and a later run removes what a killed
//! harness left (namespaces and links whose owning pid is gone).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use super::cuts::{self, Cuts};
use super::NodeName;

/// First two octets of the private test subnets (`10.231.S.0/24`).
const NET_PREFIX: [u8; 2] = [10, 231];
/// Prefix of every namespace the harness creates.
const NS_PREFIX: &str = "vp-";
/// Alias of the parent device: `varpulis-harness <pid> <run id>`.
const ALIAS: &str = "varpulis-harness";

/// Why partitions cannot run here, or `None` when they can: privileges and programs.
pub fn preflight() -> Option<String> {
    let mut missing = Vec::new();
    if !cuts::has_net_admin() {
        missing.push(
            "CAP_NET_ADMIN and CAP_SYS_ADMIN (run the harness as root) to create network namespaces"
                .to_string(),
        );
    }
    missing.extend(cuts::missing_program("ip", "iproute2"));
    missing.extend(cuts::missing_program("nft", "nftables"));
    (!missing.is_empty()).then(|| {
        format!(
            "partitions on the process backend run each node in its own network namespace, and this needs: {}",
            missing.join("; ")
        )
    })
}

/// The run's namespaces, addresses and links.
#[derive(Debug)]
pub struct NetNs {
    tag: String,
    parent: String,
    host_if: String,
    host_ip: Ipv4Addr,
    nodes: BTreeMap<NodeName, (String, Ipv4Addr)>,
    /// What each node's namespace drops now (by source node), to apply only changes.
    applied: BTreeMap<NodeName, BTreeSet<NodeName>>,
    removed: bool,
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("run ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove namespaces and parent devices left by harnesses that are gone (killed with SIGKILL:
/// their nodes died with them through PDEATHSIG, but the kernel objects stay).
fn remove_leftovers() {
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let Some(rest) = name.strip_prefix(NS_PREFIX) else {
                continue;
            };
            // vp-<date>-<time>-<seed>-<pid>-<node>
            let pid = rest.split('-').nth(3).and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !pid_alive(p)) {
                let _ = ip(&["netns", "delete", name]);
            }
        }
    }
    if let Ok(links) = ip(&["-o", "link", "show", "type", "bridge"]) {
        for line in links.lines() {
            let Some(dev) = line
                .split(": ")
                .nth(1)
                .map(|d| d.split('@').next().unwrap_or(d))
            else {
                continue;
            };
            if !dev.starts_with("vpb") {
                continue;
            }
            let alias = line.split("alias ").nth(1).unwrap_or("");
            let pid = alias
                .strip_prefix(ALIAS)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !pid_alive(p)) {
                let _ = ip(&["link", "delete", dev]);
            }
        }
    }
}

/// A free `/24` under `10.231/16`: no address of the host's namespace is in it.
fn free_subnet(start: u8) -> anyhow::Result<u8> {
    let addrs = ip(&["-4", "-o", "addr", "show"])?;
    let used: BTreeSet<u8> = addrs
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next()?.parse::<Ipv4Addr>().ok())
        .filter(|a| a.octets()[..2] == NET_PREFIX)
        .map(|a| a.octets()[2])
        .collect();
    (0..=255u16)
        .map(|i| start.wrapping_add(i as u8))
        .find(|s| !used.contains(s))
        .context("no free /24 under 10.231.0.0/16 for the run's network")
}

impl NetNs {
    /// Create the run's network: the parent device, the harness's end, and a namespace per node
    /// with its address. On error, whatever was made is removed.
    pub fn create(run_id: &str, nodes: &[NodeName]) -> anyhow::Result<NetNs> {
        if let Some(why) = preflight() {
            bail!("{why}");
        }
        remove_leftovers();
        let pid = std::process::id();
        let digest = Sha256::digest(format!("{run_id}/{pid}").as_bytes());
        let tag = format!("{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2]);
        let subnet = free_subnet(digest[3])?;
        let addr = |host: u8| Ipv4Addr::new(NET_PREFIX[0], NET_PREFIX[1], subnet, host);
        let mut net = NetNs {
            parent: format!("vpb{tag}"),
            host_if: format!("vph{tag}"),
            host_ip: addr(1),
            tag,
            nodes: BTreeMap::new(),
            applied: BTreeMap::new(),
            removed: false,
        };
        for (i, node) in nodes.iter().enumerate() {
            let ns = format!("{NS_PREFIX}{run_id}-{pid}-{node}");
            net.nodes.insert(*node, (ns, addr(10 + i as u8)));
        }
        if let Err(e) = net.build(run_id, pid) {
            net.remove();
            return Err(e.context("set up the run's network namespaces"));
        }
        Ok(net)
    }

    fn build(&self, run_id: &str, pid: u32) -> anyhow::Result<()> {
        let (parent, host) = (self.parent.as_str(), self.host_if.as_str());
        ip(&["link", "add", parent, "type", "bridge"])?;
        ip(&[
            "link",
            "set",
            parent,
            "alias",
            &format!("{ALIAS} {pid} {run_id}"),
        ])?;
        ip(&["link", "set", parent, "up"])?;
        ip(&[
            "link", "add", host, "link", parent, "type", "macvlan", "mode", "bridge",
        ])?;
        ip(&["addr", "add", &format!("{}/24", self.host_ip), "dev", host])?;
        ip(&["link", "set", host, "up"])?;
        for (i, (ns, addr)) in self.nodes.values().enumerate() {
            let dev = format!("vpn{}{i}", self.tag);
            ip(&["netns", "add", ns])?;
            ip(&[
                "link", "add", &dev, "link", parent, "type", "macvlan", "mode", "bridge",
            ])?;
            ip(&["link", "set", &dev, "netns", ns])?;
            ip(&["-n", ns, "link", "set", &dev, "name", "eth0"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The node's address on the run's network.
    pub fn addr(&self, node: NodeName) -> Ipv4Addr {
        self.nodes
            .get(&node)
            .map_or(Ipv4Addr::UNSPECIFIED, |(_, a)| *a)
    }

    /// The address the harness reaches the nodes from.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The command prefix that runs a program inside the node's namespace (same pid: `ip netns
    /// exec` enters the namespace and execs).
    pub fn exec_prefix(&self, node: NodeName) -> Vec<String> {
        let ns = self.nodes.get(&node).map_or("", |(n, _)| n.as_str());
        vec!["netns".into(), "exec".into(), ns.into()]
    }

    /// Make exactly `cuts` effective: replace the rules of each namespace whose set changed.
    pub fn apply(&mut self, cuts: &Cuts) -> anyhow::Result<()> {
        let wanted = cuts::sources_by_receiver(cuts);
        for (node, (ns, _)) in &self.nodes {
            let want = wanted.get(node).cloned().unwrap_or_default();
            let have = self.applied.get(node).cloned().unwrap_or_default();
            if want == have {
                continue;
            }
            let addrs: BTreeSet<Ipv4Addr> = want
                .iter()
                .filter_map(|s| self.nodes.get(s).map(|(_, a)| *a))
                .collect();
            cuts::run_nft(
                "ip",
                &["netns", "exec", ns, "nft", "-f", "-"],
                &cuts::nft_script(&addrs),
            )
            .with_context(|| format!("apply the cuts into {node}'s namespace {ns}"))?;
            self.applied.insert(*node, want);
        }
        Ok(())
    }

    /// Remove every namespace and link of the run (nodes must be gone first). Best effort and
    /// idempotent; a failure is logged.
    pub fn remove(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        for (ns, _) in self.nodes.values() {
            if let Err(e) = ip(&["netns", "delete", ns]) {
                if !e.to_string().contains("No such file") {
                    tracing::warn!("remove namespace {ns}: {e:#}");
                }
            }
        }
        // Deleting the parent removes the macvlans on it.
        if let Err(e) = ip(&["link", "delete", &self.parent]) {
            if !e.to_string().contains("Cannot find device") {
                tracing::warn!("remove link {}: {e:#}", self.parent);
            }
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.remove();
    }
}
