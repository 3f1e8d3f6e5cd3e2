//! Partitions on the process backend, end to end: real network namespaces and nftables rules
//! (root, `ip` and `nft` needed: `.ci/run` installs iproute2 and nftables), a leader cut from its
//! peers, the majority electing another, the heal; the run's namespaces gone afterwards; and the
//! refusal, before anything starts, when the tools are missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn cluster_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("cluster");
    assert!(
        bin.is_file(),
        "{} is missing: run the workspace tests (cargo test --workspace) so it is built",
        bin.display()
    );
    bin
}

fn harness(args: &[&str], phases: &Path, out: &Path, path_env: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harness"));
    command
        .args(args)
        .args(["--phases-dir", &phases.display().to_string()])
        .args(["--out", &out.display().to_string()])
        .args([
            "--backend",
            "process",
            "--heartbeat-ms",
            "50",
            "--election-min-ms",
            "150",
            "--election-max-ms",
            "300",
            "--drain-quiet-ms",
            "50",
        ])
        .arg("--cluster-bin")
        .arg(cluster_bin())
        .env_remove("CARGO");
    if let Some(path) = path_env {
        command.env("PATH", path);
    }
    command.output().expect("run harness")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const SETUP: &str = "id = 0\nname = \"Setup\"\n\n[[step]]\ndo = \"start_cluster\"\n\n[[step]]\ndo = \"await_leader\"\n";

const ISOLATE: &str = r#"name = "Isolate"
requires = ["setup"]

[[step]]
do = "await_leader"
bind = "old"

[[step]]
do = "partition"
target = "@old"
from = ["coordinators"]
mark = "cut"

[[step]]
do = "await_leader"
exclude = ["@old"]
bind = "new"

[[step]]
do = "assert_write_answered"
via = "@old"
name = "isolated_write_ms"

[[step]]
do = "heal"
target = "@old"

[[step]]
do = "await_role"
target = "@old"
role = "follower"

[[step]]
do = "assert_leader_changed"
from = "@old"
to = "@new"
"#;

fn phases(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write phase");
    }
    dir
}

fn namespaces() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list (Debian package iproute2)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The leader cut from both peers (its workers and the broker still reach it): the others
/// elect a new leader, a write to the old one is answered, and healed it follows. The run's
/// namespaces and links are gone afterwards, and run.json names the cut links.
#[test]
fn t10_a_leader_cut_from_its_peers_is_replaced_and_rejoins() {
    let dir = phases(&[("00-setup.toml", SETUP), ("isolate.toml", ISOLATE)]);
    let out = tempfile::tempdir().expect("temp dir");
    let output = harness(&["--phases", "isolate"], dir.path(), out.path(), None);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let latest = out.path().join("latest");
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(latest.join("run.json")).expect("run.json"))
            .expect("run.json is JSON");
    let run_id = run["run_id"].as_str().expect("run id").to_string();
    let faults = run["history"]["faults"].as_array().expect("faults");
    let hows: Vec<&str> = faults.iter().filter_map(|f| f["how"].as_str()).collect();
    assert_eq!(hows.len(), 2, "{hows:?}");
    assert!(
        hows[0].starts_with("cut coordinator-") && hows[0].contains(" ↔ "),
        "{hows:?}"
    );
    assert!(hows[1].starts_with("healed coordinator-"), "{hows:?}");
    assert!(
        !namespaces().contains(&run_id),
        "namespaces of run {run_id} left behind:\n{}",
        namespaces()
    );
}

/// Without `ip` and `nft` (here: an empty PATH) a run that partitions is refused before any
/// node starts, naming what is missing; the exit code is bad input.
#[test]
fn t20_partition_without_the_tools_is_refused_before_anything_starts() {
    let dir = phases(&[("00-setup.toml", SETUP), ("isolate.toml", ISOLATE)]);
    let out = tempfile::tempdir().expect("temp dir");
    let empty = tempfile::tempdir().expect("empty PATH dir");
    let output = harness(
        &["--phases", "isolate"],
        dir.path(),
        out.path(),
        Some(empty.path()),
    );
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "isolate.toml:8: step `partition`: the process backend cannot partition a node",
        "`ip` is not installed (Debian package iproute2)",
        "`nft` is not installed (Debian package nftables)",
        "nothing was started",
    ] {
        assert!(
            stderr.contains(expected),
            "want '{expected}':\n{}",
            show(&output)
        );
    }
    assert!(!out.path().join("runs").exists(), "no run directory");
}

const SOAK: &str = r#"name = "Soak"
requires = ["setup"]
detail = "{nemesis}, converged in {converge_ms}, {events}"

[[step]]
do = "deploy"
group = "c1"
pipelines = ["sensor_filter_1", "sensor_filter_2", "sensor_filter_3"]

[[step]]
do = "traffic_start"
rate_per_s = 50

[[step]]
do = "nemesis"
duration_ms = 8000
fault_ms = [500, 1500]
gap_ms = [300, 800]
converge_ms = 30000

[[step]]
do = "traffic_stop"

[[step]]
do = "await_delivery"
timeout_ms = 30000

[[step]]
do = "assert_counts"

[[step]]
do = "assert_invariants"
"#;

/// A short seeded nemesis: faults drawn, injected and healed (the history names each), the
/// cluster converges, counts exact and invariants held; the same seed draws the same schedule.
#[test]
fn t30_a_seeded_nemesis_heals_everything_and_replays_its_schedule() {
    let dir = phases(&[("00-setup.toml", SETUP), ("soak.toml", SOAK)]);
    let mut schedules = Vec::new();
    for _ in 0..2 {
        let out = tempfile::tempdir().expect("temp dir");
        let output = harness(
            &["--phases", "soak", "--seed", "5"],
            dir.path(),
            out.path(),
            None,
        );
        assert_eq!(output.status.code(), Some(0), "{}", show(&output));
        let run: Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("latest/run.json")).expect("run.json"),
        )
        .expect("JSON");
        let faults = run["history"]["faults"].as_array().expect("faults");
        let nemesis: Vec<&Value> = faults
            .iter()
            .filter(|f| {
                f["how"]
                    .as_str()
                    .is_some_and(|h| h.starts_with("nemesis #"))
            })
            .collect();
        assert!(nemesis.len() >= 4, "{faults:?}");
        let soak = run["trials"]
            .as_array()
            .and_then(|t| t.last())
            .expect("the soak trial");
        let events = &soak["events"];
        assert!(
            events["expected"].as_u64().is_some_and(|n| n > 0)
                && events["delivered"] == events["expected"]
                && events["duplicated"] == 0,
            "{}",
            events["per_pipeline"]
        );
        let note = soak["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["action"] == "nemesis"))
            .and_then(|s| s["note"].as_str())
            .expect("the nemesis step's note")
            .to_string();
        assert!(note.contains("--seed 5"), "{note}");
        // The planned schedule (first line) is the seed's; which node each fault hit may differ.
        schedules.push(note.lines().next().unwrap_or_default().to_string());
    }
    assert_eq!(schedules[0], schedules[1]);
}
