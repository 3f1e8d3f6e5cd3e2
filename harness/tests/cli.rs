//! The harness binary end to end: real phase files, real coordinator processes (fast Raft
//! timings), reports on disk, and one exit code per outcome.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `cluster` binary built by `cargo test --workspace`, next to this test's directory.
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

fn repo_phases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../phases")
}

/// Run the harness with fast Raft timings and a short drain; `CARGO` is removed so it never runs
/// a nested cargo.
fn harness(args: &[&str], out: &Path) -> Output {
    harness_command(args, out).output().expect("run harness")
}

fn harness_command(args: &[&str], out: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harness"));
    command
        .args(args)
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
    command
}

/// The `summary.json` of the latest run written under `out`.
fn read_summary(out: &Path) -> Value {
    let path = out.join("latest/summary.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Phase 5 three times (setup once): all pass, an election time per trial, reports written.
#[test]
fn t10_coordinator_failover_repeats_and_reports() {
    let out = tempfile::tempdir().expect("temp dir");
    let output = harness(
        &[
            "--phases",
            "5",
            "--repeat",
            "3",
            "--seed",
            "7",
            "--phases-dir",
            &repo_phases().display().to_string(),
        ],
        out.path(),
    );
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("RESULT: 4/4 phases passed"),
        "{}",
        show(&output)
    );

    let latest = out.path().join("latest");
    let summary = read_summary(out.path());
    assert_eq!(summary["seed"], 7);
    assert_eq!(summary["backend"], "process");
    let phases = summary["phases"].as_array().expect("phases");
    let ids: Vec<&str> = phases
        .iter()
        .map(|p| p["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["0", "5", "5", "5"]);
    assert!(phases.iter().all(|p| p["status"] == "PASS"));
    let election = &summary["timings"]["coordinator-failover.election_ms"];
    assert_eq!(election["n"], 3);
    // An election can not beat the minimum election timeout (150 ms), nor exceed the wait bound.
    let min = election["min"].as_f64().expect("min");
    let max = election["max"].as_f64().expect("max");
    assert!((150.0..6200.0).contains(&min) && max >= min, "{election}");

    let timings = std::fs::read_to_string(latest.join("timings.csv")).expect("timings.csv");
    assert_eq!(timings.lines().count(), 1 + 3, "{timings}");
    let results = std::fs::read_to_string(latest.join("results.md")).expect("results.md");
    assert!(
        results.contains("| coordinator-failover.election_ms | event log | ≤ 1 ms | 3 |"),
        "{results}"
    );
    // The run had keys, and says so; no key is ever written to a report.
    assert!(results.contains("**Security**: keys per role"), "{results}");
    for node in 1..=3 {
        assert!(latest
            .join(format!("logs/coordinator-{node}.log"))
            .is_file());
    }

    // `harness report DIR` rebuilds the same report from run.json.
    std::fs::remove_file(latest.join("results.md")).expect("remove");
    let rebuilt = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["report", &latest.display().to_string()])
        .output()
        .expect("harness report");
    assert_eq!(rebuilt.status.code(), Some(0), "{}", show(&rebuilt));
    assert_eq!(
        std::fs::read_to_string(latest.join("results.md")).expect("rebuilt results.md"),
        results
    );
}

fn phases_dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write phase");
    }
    dir
}

const SETUP: &str = "id = 0\nname = \"Setup\"\n\n[[step]]\ndo = \"start_cluster\"\n\n[[step]]\ndo = \"await_leader\"\n";

/// A malformed phase file: exit 2, the error names file:line, and no node was started.
#[test]
fn t20_bad_phase_files_exit_2_before_anything_starts() {
    let cases = [
        ("01-bad.toml", "id = 1\nname = \"x\"\n\n[[step]]\ndo = \"explode\"\n", "01-bad.toml:5:6: unknown variant `explode`"),
        ("01-bad.toml", "id = 1\nname = \"x\"\n\n[[step]]\ndo = \"kill\"\ntarget = \"coordinator-7\"\n", "01-bad.toml:4:1: step `kill`: unknown target 'coordinator-7'"),
        ("01-bad.toml", "id = 1\nname = \"x\"\n\n[[step]]\ndo = \"kill\"\ntarget = \"leader\"\nsignal = \"TERM\"\n", "01-bad.toml:7:1: unknown field `signal`"),
        ("01-bad.toml", "id = 1\nname = \"x\"\n[[step]\n", "01-bad.toml:3:"),
        ("01-bad.toml", "id = 1\nname = \"x\"\n\n[[step]]\ndo = \"partition\"\ntarget = \"worker-1\"\nfrom = [\"brokers\"]\n", "01-bad.toml:7:8: unknown target 'brokers'"),
    ];
    for (name, text, expected) in cases {
        let dir = phases_dir_with(&[("00-setup.toml", SETUP), (name, text)]);
        let out = tempfile::tempdir().expect("temp dir");
        let output = harness(
            &[
                // Phase 1 is planned: a fault the backend lacks is refused for planned phases.
                "--phases",
                "0,1",
                "--phases-dir",
                &dir.path().display().to_string(),
            ],
            out.path(),
        );
        assert_eq!(output.status.code(), Some(2), "{}", show(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(expected),
            "expected '{expected}':\n{}",
            show(&output)
        );
        assert!(stderr.contains("nothing was started"), "{}", show(&output));
        assert!(
            !out.path().join("runs").exists(),
            "no run directory for refused input"
        );
    }
    // An unknown phase in --phases is refused the same way.
    let dir = phases_dir_with(&[("00-setup.toml", SETUP)]);
    let out = tempfile::tempdir().expect("temp dir");
    let output = harness(
        &[
            "--phases",
            "42",
            "--phases-dir",
            &dir.path().display().to_string(),
        ],
        out.path(),
    );
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown phase '42'"));
}

/// A phase whose assertion fails: exit 1, the failing step's file:line in the report.
#[test]
fn t30_failed_phase_exits_1_with_its_location() {
    let failing = "id = 1\nname = \"Same leader\"\nrequires = [\"0\"]\n\n[[step]]\ndo = \"await_leader\"\nbind = \"a\"\n\n[[step]]\ndo = \"await_leader\"\nbind = \"b\"\n\n[[step]]\ndo = \"assert_leader_changed\"\nfrom = \"@a\"\nto = \"@b\"\n";
    let dir = phases_dir_with(&[("00-setup.toml", SETUP), ("01-same.toml", failing)]);
    let out = tempfile::tempdir().expect("temp dir");
    let output = harness(
        &[
            "--phases",
            "1",
            "--phases-dir",
            &dir.path().display().to_string(),
        ],
        out.path(),
    );
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let summary = read_summary(out.path());
    assert_eq!(summary["phases"][0]["status"], "PASS");
    assert_eq!(summary["phases"][1]["status"], "FAIL");
    let error = summary["phases"][1]["error"].as_str().expect("error");
    assert!(
        error.contains("01-same.toml:13: assert_leader_changed @a -> @b: leader did not change"),
        "{error}"
    );
}

/// Phase 3 (setup first): 100 events/s flow through a worker kill; every matching event comes
/// out exactly once, detection and failover are measured, the victim comes back.
#[test]
fn t40_worker_kill_under_traffic_loses_nothing() {
    let out = tempfile::tempdir().expect("temp dir");
    let output = harness(
        &[
            "--phases",
            "3",
            "--grace-ms",
            "500",
            // The worker lease (ping-dead + heartbeat = 400 ms) must end within the grace.
            "--ping-interval-ms",
            "100",
            "--ping-dead-ms",
            "300",
            "--seed",
            "11",
            "--phases-dir",
            &repo_phases().display().to_string(),
        ],
        out.path(),
    );
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let summary = read_summary(out.path());
    let failover = &summary["phases"][1];
    assert_eq!(failover["id"], "3");
    let events = &failover["events"];
    assert_eq!(events["lost"], 0, "{failover}");
    assert_eq!(events["duplicated"], 0, "{failover}");
    assert_eq!(events["unexpected"], 0, "{failover}");
    assert_eq!(events["unknown"], 0, "{failover}");
    assert_eq!(events["malformed"], 0, "{failover}");
    assert_eq!(events["undecodable"], 0, "{failover}");
    // Every publish of the window was recorded: nothing shrank the total.
    assert_eq!(
        events["published"].as_u64(),
        Some(500 + failover["paced"][0]["sent"].as_u64().unwrap_or(0)),
        "{failover}"
    );
    // The paced run: 100/s requested, the achieved rate measured beside it.
    assert_eq!(failover["paced"][0]["requested_per_s"], 100, "{failover}");
    // Pacing never runs ahead: one event at once, then one per 10 ms (summary rounds to 0.001).
    let paced = &failover["paced"][0];
    let achieved = paced["achieved_per_s"].as_f64().unwrap_or(0.0);
    let elapsed_s = paced["elapsed_s"].as_f64().unwrap_or(0.0);
    assert!(elapsed_s > 0.0 && achieved > 0.0, "{failover}");
    assert!(achieved <= 100.0 + 1.0 / elapsed_s + 0.01, "{failover}");
    // The run-wide checker found no late copy.
    assert_eq!(summary["run_passed"], true, "{summary}");
    assert!(failover.get("late_findings").is_none(), "{failover}");
    assert_eq!(summary["undecodable"], 0, "{summary}");
    // 500 burst events (250 matching) plus what the paced traffic sent through the kill.
    assert!(events["expected"].as_u64().unwrap_or(0) > 250, "{failover}");
    assert_eq!(events["delivered"], events["expected"], "{failover}");
    assert_eq!(summary["timings"]["worker-failover.detection_ms"]["n"], 1);
    assert_eq!(summary["timings"]["worker-failover.failover_ms"]["n"], 1);
    // Failover can not beat the grace period it includes.
    assert!(
        summary["timings"]["worker-failover.failover_ms"]["min"]
            .as_f64()
            .unwrap_or(0.0)
            >= 500.0
    );

    // The timeline counts every delivery of the phase once, and marks the failover window.
    let timeline =
        std::fs::read_to_string(out.path().join("latest/timeline.csv")).expect("timeline.csv");
    let rows: Vec<Vec<&str>> = timeline
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<&str>>())
        .filter(|r| r[0] == "3")
        .collect();
    let deliveries: u64 = rows.iter().map(|r| r[3].parse::<u64>().unwrap_or(0)).sum();
    assert_eq!(Some(deliveries), events["delivered"].as_u64(), "{timeline}");
    // A failover window of at least the 500 ms grace: at least 5 buckets of 100 ms.
    let shaded = rows.iter().filter(|r| r[4].contains("failover")).count();
    assert!(shaded >= 5, "{timeline}");
    let per_pipeline =
        std::fs::read_to_string(out.path().join("latest/events.csv")).expect("events.csv");
    assert_eq!(
        per_pipeline
            .lines()
            .filter(|l| l.starts_with("3,1,sensor_filter_"))
            .count(),
        3,
        "{per_pipeline}"
    );
}

/// Leader kill (writes through a follower, workers keep their links), recovery (idempotent
/// re-deploy, a worker back within the grace keeps its pipeline) and a full-cluster restart
/// (SIGKILL of all three coordinators): all pass, and no event is lost or duplicated.
#[test]
fn t50_coordinator_faults_and_full_restart_lose_nothing() {
    let out = tempfile::tempdir().expect("temp dir");
    let output = harness(
        &[
            "--phases",
            "5,6,full-cluster-restart",
            "--grace-ms",
            "1000",
            // The worker lease (ping-dead + heartbeat = 400 ms) must end within the grace.
            "--ping-interval-ms",
            "100",
            "--ping-dead-ms",
            "300",
            "--seed",
            "13",
            "--phases-dir",
            &repo_phases().display().to_string(),
        ],
        out.path(),
    );
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let summary = read_summary(out.path());
    let ids: Vec<&str> = summary["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["0", "5", "6", "full-cluster-restart"]);
    for phase in summary["phases"].as_array().expect("phases") {
        let e = &phase["events"];
        assert_eq!(
            (
                e["lost"].as_u64(),
                e["duplicated"].as_u64(),
                e["unexpected"].as_u64()
            ),
            (Some(0), Some(0), Some(0)),
            "{phase}"
        );
        assert_eq!(e["delivered"], e["expected"], "{phase}");
    }
    assert_eq!(
        summary["phases"][2]["details"]
            .as_str()
            .map(|d| d.contains("already deployed (idempotent)")),
        Some(true)
    );
}

/// Bound on a whole run of the late-copy test (setup, a 3 s hold, reports).
const LATE_RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The broker's port of the run being written under `out`, from its log's first line.
/// A `cluster broker --insecure` of the test's own, killed on drop: the late copy's injector
/// needs a broker that lets it in, and the broker a run starts admits only the run's own clients
/// (with secrets the harness draws at random).
struct OpenBroker {
    child: std::process::Child,
    port: u16,
}

impl OpenBroker {
    fn start() -> OpenBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new(cluster_bin())
            .args([
                "broker",
                "--insecure",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn cluster broker");
        // The broker listens only once rumqttd answers: a TCP connect means it is ready.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("cluster broker exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "cluster broker not listening within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        OpenBroker { child, port }
    }
}

impl Drop for OpenBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of setup's seq 2 (with a send time the publisher never used) published on the
/// output topic by another client while phase 1 runs: the run fails, and the report charges it
/// to the setup phase, naming the seq, the changed field and when it came.
#[test]
fn t60_a_late_copy_fails_the_phase_that_published_it() {
    let setup = std::fs::read_to_string(repo_phases().join("00-setup.toml")).expect("setup");
    // Two holds: the first one's progress line says phase 1 has begun; the copy is injected
    // then, inside the second (3 s), so it arrives during phase 1 and not between trials.
    let quiet = "id = 1\nname = \"Quiet\"\nrequires = [\"setup\"]\n\n[[step]]\ndo = \"hold\"\nms = 1\n\n[[step]]\ndo = \"hold\"\nms = 3000\n";
    let dir = phases_dir_with(&[("00-setup.toml", &setup), ("01-quiet.toml", quiet)]);
    let out = tempfile::tempdir().expect("temp dir");
    let broker = OpenBroker::start();
    let mut child = harness_command(
        &[
            "--phases",
            "1",
            "--phases-dir",
            &dir.path().display().to_string(),
            "--mqtt-url",
            &format!("mqtt://127.0.0.1:{}", broker.port),
        ],
        out.path(),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn harness");
    let (lines_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + LATE_RUN_TIMEOUT;
    // Setup's verdict is in once its trial line is printed; phase 1 has begun once its first
    // step's line is printed, and then holds for 3 s.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("setup finishes in time");
        if line.starts_with("harness: phase 0 Setup") {
            assert!(line.contains("PASS"), "{line}");
            break;
        }
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("phase 1 begins in time");
        if line.contains("phase 1 trial 1 step 1/2 hold: ok") {
            break;
        }
    }
    let copy = harness::traffic::SensorReading::new(2, 1).to_json();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(common::inject(broker.port, copy));
    let status = loop {
        if let Some(status) = child.try_wait().expect("harness status") {
            break status;
        }
        assert!(Instant::now() < deadline, "the harness ends in time");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    let summary = read_summary(out.path());
    assert_eq!(summary["run_passed"], false, "{summary}");
    let setup = &summary["phases"][0];
    assert_eq!(setup["status"], "FAIL", "{setup}");
    assert_eq!(
        setup["events"]["duplicated"], 0,
        "the judged counts stay: {setup}"
    );
    assert_eq!(
        setup["late_findings"],
        serde_json::json!([
            "1 arrival(s) of its events after its verdict: seq 2 copy 2, sent_at_us changed during phase 1 [1/1]",
            "after the final drain: duplicated = 1, want 0 (seqs [2])",
            "after the final drain: malformed = 1, want 0 (seq 2 copy 2: sent_at_us)",
        ]),
        "{setup}"
    );
    assert_eq!(summary["phases"][1]["status"], "PASS", "{summary}");
    let results = std::fs::read_to_string(out.path().join("latest/results.md")).expect("results");
    assert!(
        results.contains("Phase 0: Setup .............................. FAIL"),
        "{results}"
    );
}

/// `--phases 5,2`: after the leader's kill its workers move their links; once it is back they
/// move them home again, so phase 2's 2/1/1 holds whatever ran before it (it failed before
/// workers returned home: coordinator-1: 3 WS, coordinator-3: 0 WS).
#[test]
fn t70_links_return_home_so_phase_2_holds_after_a_leader_kill() {
    let out = tempfile::tempdir().expect("temp dir");
    let output = harness(
        &[
            "--phases",
            "5,2",
            "--seed",
            "3",
            "--phases-dir",
            &repo_phases().display().to_string(),
        ],
        out.path(),
    );
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let summary = read_summary(out.path());
    let ids: Vec<&str> = summary["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["0", "5", "2"]);
}
