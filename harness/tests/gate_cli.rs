//! `harness gate` end to end on run directories written here (no cluster is started).

use std::path::Path;
use std::process::{Command, Output};

fn run_json(dir: &Path, election_max: u64, values_ms: &[f64], failed_trial: Option<usize>) {
    let trials: Vec<serde_json::Value> = values_ms
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let failed = failed_trial == Some(i);
            serde_json::json!({
                "id": "5", "slug": "coordinator-failover", "name": "Coordinator Failover (Raft)",
                "description": "", "trial": i + 1, "trials": values_ms.len(),
                "status": if failed { "FAIL" } else { "PASS" },
                "started_us": 0, "duration_us": 1_500_000, "details": "",
                "error": if failed { Some("await_leader timed out") } else { None },
                "steps": [], "bindings": {},
                "samples": [{"name": "election_ms", "value_us": (v * 1000.0) as u64,
                             "how": "kill → leader_changed", "method": "event log"}],
            })
        })
        .collect();
    let run = serde_json::json!({
        "run_id": dir.file_name().unwrap().to_str().unwrap(), "backend": "process", "seed": 7,
        "started_at": "2026-12-01T22:00:00Z", "command": "harness --phases 5",
        "interrupted": false, "trials": trials,
        "config": {"coordinators": 3, "workers": 4, "poll_interval_ms": 20,
            "probe_timeout_ms": 250, "cpu_cores": 2, "harness_version": "0",
            "raft": {"heartbeat_ms": 100, "election_min_ms": 300, "election_max_ms": election_max},
            "detector": {"grace_ms": 1000, "ping_interval_ms": 1000, "ping_dead_ms": 3000,
                         "rest_timeout_ms": 10000}},
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("run.json"), run.to_string()).unwrap();
}

fn gate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("gate")
        .args(args)
        .output()
        .unwrap()
}

fn ms(from: f64, step: f64) -> Vec<f64> {
    (0..10).map(|i| from + step * i as f64).collect()
}

#[test]
fn gate_exit_codes_and_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let g = t.join("gate.toml");
    std::fs::write(
        &g,
        "samples = \"samples.json\"\n[budget]\n\"coordinator-failover.election_ms\" = \"lease + election_max + tick + 1s\"\n",
    )
    .unwrap();
    let g = g.to_str().unwrap();
    let dir = |name: &str| t.join(name).to_str().unwrap().to_string();
    run_json(&t.join("base"), 600, &ms(1000.0, 10.0), None);
    run_json(&t.join("slow"), 600, &ms(2000.0, 25.0), None);
    run_json(&t.join("same"), 600, &ms(1005.0, 10.0), None);
    run_json(&t.join("other"), 1200, &ms(2000.0, 25.0), None);
    run_json(&t.join("failed"), 600, &ms(1000.0, 10.0), Some(3));

    // No baseline yet: budgets only, with a warning.
    let out = gate(&["--gate", g, &dir("slow")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no baseline samples"));

    let out = gate(&["--gate", g, "--update-baseline", &dir("base")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let samples: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("samples.json")).unwrap()).unwrap();
    assert_eq!(
        samples["figures"]["coordinator-failover.election_ms"][0],
        1_000_000
    );
    assert_eq!(samples["config"]["raft"]["election_max_ms"], 600);

    // Doubled: exit 3 and the line (values as in the unit test a_doubled_election_regresses).
    let out = gate(&["--gate", g, &dir("slow")]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().next().unwrap(),
        "coordinator-failover.election_ms p50 2.11 s vs 1.04 s, ratio 2.02 [1.95, 2.09], p = 5.4e-6"
    );
    assert!(t.join("slow/gate.md").exists() && t.join("slow/junit.xml").exists());

    assert_eq!(gate(&["--gate", g, &dir("same")]).status.code(), Some(0));

    // Another configuration: refused as bad input unless allowed.
    let out = gate(&["--gate", g, &dir("other")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("election_max_ms 600 → 1200"));
    let out = gate(&["--gate", g, "--allow-config-change", &dir("other")]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    // A failed phase keeps its exit code, and never becomes a baseline.
    assert_eq!(gate(&["--gate", g, &dir("failed")]).status.code(), Some(1));
    let out = gate(&["--gate", g, "--update-baseline", &dir("failed")]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // A gate file that does not parse, or a missing run: bad input.
    std::fs::write(t.join("bad.toml"), "[budget]\n\"a.b\" = \"soon\"\n").unwrap();
    let bad = t.join("bad.toml");
    assert_eq!(
        gate(&["--gate", bad.to_str().unwrap(), &dir("same")])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(gate(&["--gate", g, &dir("missing")]).status.code(), Some(2));
}

#[test]
fn interleaved_mode_refuses_what_cannot_conclude() {
    // clap's usage errors exit 2, like every other bad input.
    let out = gate(&["--baseline-bin", "/bin/true"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--candidate-bin"));
    // Four rounds give four trials a side: below n ≥ 5, refused before anything starts.
    let out = gate(&[
        "--baseline-bin",
        "/bin/true",
        "--candidate-bin",
        "/bin/true",
        "--repeat",
        "4",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("fewer than 5 trials a side"));
    assert_eq!(gate(&[]).status.code(), Some(2));
}

/// The `cluster` binary built by `cargo test --workspace`, next to this test's directory.
fn cluster_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("cluster");
    assert!(
        bin.is_file(),
        "{} is missing: run cargo test --workspace",
        bin.display()
    );
    bin
}

#[test]
fn gate_flag_on_a_real_run_fails_a_budget_it_cannot_meet() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // No election can take 10 ms: the budget fails, exit 3, with the line; no baseline samples.
    let tight = t.join("tight.toml");
    std::fs::write(
        &tight,
        "[budget]\n\"coordinator-failover.election_ms\" = \"10ms\"\n",
    )
    .unwrap();
    let run = |gate: &Path| {
        Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(["--phases", "5", "--repeat", "2", "--backend", "process"])
            .args([
                "--heartbeat-ms",
                "50",
                "--election-min-ms",
                "150",
                "--election-max-ms",
                "300",
            ])
            .arg("--cluster-bin")
            .arg(cluster_bin())
            .arg("--out")
            .arg(t.join("reports"))
            .arg("--gate")
            .arg(gate)
            .env_remove("CARGO")
            .output()
            .unwrap()
    };
    let out = run(&tight);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("coordinator-failover.election_ms p50 ")
                && l.ends_with(" over its budget 10 ms (10ms)")),
        "{stdout}"
    );
    let latest = t.join("reports/latest");
    let md = std::fs::read_to_string(latest.join("gate.md")).unwrap();
    assert!(
        md.contains("| coordinator-failover.election_ms | FAIL | 2 |"),
        "{md}"
    );
    assert!(latest.join("junit.xml").exists());
    // A gate file that does not parse is bad input, refused before any node starts.
    let bad = t.join("bad.toml");
    std::fs::write(&bad, "[budget]\n\"a.b\" = \"grace +\"\n").unwrap();
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("harness: run "));
}

#[test]
fn compare_writes_the_gates_statistics_and_an_overlay_per_shared_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    run_json(&t.join("base"), 600, &ms(1000.0, 10.0), None);
    run_json(&t.join("slow"), 1200, &ms(2000.0, 25.0), None);
    let out_dir = t.join("cmp");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["compare", "--out"])
        .arg(&out_dir)
        .arg(t.join("base"))
        .arg(t.join("slow"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let md = std::fs::read_to_string(out_dir.join("compare.md")).unwrap();
    assert!(md.contains("### slow vs base"), "{md}");
    assert!(
        md.contains("Configurations differ: election_max_ms 600 → 1200"),
        "{md}"
    );
    // 10 against 10, every later trial slower: exact one-sided p = 1 / C(20, 10) = 5.4e-6.
    assert!(
        md.contains("| coordinator-failover.election_ms | REGRESSED | 10 | 2.11 s | 10 | 1.04 s |"),
        "{md}"
    );
    assert!(md.contains("| 5.4e-6 |"), "{md}");
    assert!(out_dir
        .join("ecdf-coordinator-failover.election_ms.png")
        .is_file());
}
