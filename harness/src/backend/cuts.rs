//! Per-link network cuts, shared by both backends: which directed links are cut, and the
//! nftables ruleset that enforces them inside one node's network namespace.
//!
//! A link `(from, to)` is cut when packets `from` sends never reach `to`. Each backend enforces
//! it the same way: in `to`'s network namespace an `input` rule drops packets whose source is
//! `from`'s address. The harness's own traffic comes from an address no rule names (the host end
//! of the run's network), so the harness keeps observing every node whatever is cut.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use super::NodeName;

/// `(from, to)`: packets from `from` do not reach `to`.
pub type Link = (NodeName, NodeName);

/// The set of cut links.
pub type Cuts = BTreeSet<Link>;

/// The nftables table every cut lives in (one per node namespace, replaced whole).
pub const TABLE: &str = "varpulis_cuts";

/// For each receiving node, the nodes whose packets it must drop.
pub fn sources_by_receiver(cuts: &Cuts) -> BTreeMap<NodeName, BTreeSet<NodeName>> {
    let mut out: BTreeMap<NodeName, BTreeSet<NodeName>> = BTreeMap::new();
    for &(from, to) in cuts {
        out.entry(to).or_default().insert(from);
    }
    out
}

/// An nft script that replaces this node's cut table atomically: it drops input from each of
/// `sources`, or (no sources) removes the table. `table X` before `delete table X` makes the
/// delete valid whether or not the table existed; the whole script is one transaction.
pub fn nft_script(sources: &BTreeSet<Ipv4Addr>) -> String {
    let mut s = format!("table inet {TABLE}\ndelete table inet {TABLE}\n");
    if !sources.is_empty() {
        let set: Vec<String> = sources.iter().map(Ipv4Addr::to_string).collect();
        s.push_str(&format!(
            "table inet {TABLE} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n    ip saddr {{ {} }} drop\n  }}\n}}\n",
            set.join(", ")
        ));
    }
    s
}

/// Run `program args` with `script` on stdin (`nft -f -` inside a namespace); an error names
/// the command and its stderr.
pub fn run_nft(program: &str, args: &[&str], script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {program} {}", args.join(" ")))?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The cut links, readable: `coordinator-1 ↔ coordinator-2` for both directions,
/// `worker-1 → broker` for one.
pub fn describe(cuts: &Cuts) -> String {
    let mut parts = Vec::new();
    for &(a, b) in cuts {
        if cuts.contains(&(b, a)) {
            if a < b {
                parts.push(format!("{a} ↔ {b}"));
            }
        } else {
            parts.push(format!("{a} → {b}"));
        }
    }
    if parts.is_empty() {
        "no link".into()
    } else {
        parts.join(", ")
    }
}

/// What is missing to run `program` (for the privilege checks): `None` when it is on `PATH`.
pub fn missing_program(program: &str, package: &str) -> Option<String> {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    (!found).then(|| format!("`{program}` is not installed (Debian package {package})"))
}

/// True when this process may administer network namespaces and netfilter: root, or both
/// CAP_NET_ADMIN and CAP_SYS_ADMIN in its effective set.
pub fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    eff & (1 << CAP_NET_ADMIN) != 0 && eff & (1 << CAP_SYS_ADMIN) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_replaces_the_table_or_removes_it() {
        let none = nft_script(&BTreeSet::new());
        assert_eq!(
            none,
            "table inet varpulis_cuts\ndelete table inet varpulis_cuts\n"
        );
        let two: BTreeSet<Ipv4Addr> = ["10.1.2.12".parse().unwrap(), "10.1.2.11".parse().unwrap()]
            .into_iter()
            .collect();
        let s = nft_script(&two);
        assert!(s.starts_with(&none), "{s}");
        assert!(s.contains("ip saddr { 10.1.2.11, 10.1.2.12 } drop"), "{s}");
        assert!(s.contains("hook input"), "{s}");
    }

    #[test]
    fn links_are_grouped_by_receiver_and_described_by_direction() {
        let (c1, c2, w1) = (
            NodeName::Coordinator(1),
            NodeName::Coordinator(2),
            NodeName::Worker(1),
        );
        let cuts: Cuts = [(c1, c2), (c2, c1), (w1, c1)].into_iter().collect();
        let by = sources_by_receiver(&cuts);
        assert_eq!(by[&c1], [c2, w1].into_iter().collect());
        assert_eq!(by[&c2], [c1].into_iter().collect());
        assert!(!by.contains_key(&w1));
        assert_eq!(
            describe(&cuts),
            "coordinator-1 ↔ coordinator-2, worker-1 → coordinator-1"
        );
        assert_eq!(describe(&Cuts::new()), "no link");
    }
}
