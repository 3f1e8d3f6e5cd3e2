//! The harness driving clusters other than its default one: an external broker (Debian's
//! mosquitto, started here on a free loopback port), and runs that share a machine.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Bound on mosquitto accepting connections after its start (it takes milliseconds).
const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(10);

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

fn repo_phases() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../phases")
        .display()
        .to_string()
}

/// The harness on processes with the CI's fast timings (.ci/run); `CARGO` removed so it never
/// runs a nested cargo.
fn harness_command(args: &[&str], out: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harness"));
    command
        .args(args)
        .args(["--out", &out.display().to_string()])
        .args([
            "--backend",
            "process",
            "--heartbeat-ms",
            "100",
            "--election-min-ms",
            "300",
            "--election-max-ms",
            "600",
            "--grace-ms",
            "3000",
            "--ping-interval-ms",
            "500",
            "--ping-dead-ms",
            "2000",
            "--drain-quiet-ms",
            "100",
        ])
        .arg("--cluster-bin")
        .arg(cluster_bin())
        .env_remove("CARGO");
    command
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn read_summary(out: &Path) -> Value {
    let path = out.join("latest/summary.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every trial passed with exact counts: nothing lost, duplicated, unexpected or unknown.
fn assert_all_exact(summary: &Value, phases: &[&str]) {
    let trials = summary["phases"].as_array().expect("phases");
    let ids: Vec<&str> = trials.iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, phases, "{summary}");
    for trial in trials {
        assert_eq!(trial["status"], "PASS", "{trial}");
        let events = &trial["events"];
        for count in [
            "lost",
            "duplicated",
            "unexpected",
            "unknown",
            "malformed",
            "undecodable",
        ] {
            assert_eq!(events[count], 0, "{count} in {trial}");
        }
        assert_eq!(events["delivered"], events["expected"], "{trial}");
        assert!(events["expected"].as_u64().unwrap_or(0) > 0, "{trial}");
    }
    assert_eq!(summary["run_passed"], true, "{summary}");
}

/// The account on mosquitto (no anonymous access): the harness gets it in `--mqtt-url` and
/// hands it to the publisher, the collector and every worker.
const MOSQUITTO_USER: &str = "varpulis-test";
const MOSQUITTO_PASSWORD: &str = "mosquitto-s3cret";

/// Debian's mosquitto on a free loopback port, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Mosquitto {
    /// Offline queues unbounded (`max_queued_messages 0`: the default 1000 drops the newest
    /// silently); no persistence, since the broker is never restarted during a run. Only
    /// [`MOSQUITTO_USER`] may connect (a password file made by `mosquitto_passwd`).
    fn start(dir: &Path) -> Mosquitto {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "mosquitto is not installed: install the Debian package `mosquitto` \
                     (apt-get install mosquitto; .ci/run does)"
                )
            });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let passwords = dir.join("mosquitto.passwd");
        let made = Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(&passwords)
            .args([MOSQUITTO_USER, MOSQUITTO_PASSWORD])
            .output()
            .expect("run mosquitto_passwd (Debian package `mosquitto`)");
        assert!(made.status.success(), "mosquitto_passwd: {made:?}");
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
                 max_queued_messages 0\npersistence false\nset_tcp_nodelay true\n\
                 log_dest stderr\nlog_type all\n",
                passwords.display()
            ),
        )
        .expect("write mosquitto.conf");
        let log = dir.join("mosquitto.log");
        let file = std::fs::File::create(&log).expect("mosquitto.log");
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn mosquitto");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "mosquitto exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < BROKER_READY_TIMEOUT,
                "mosquitto did not accept connections on port {port} within {BROKER_READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Mosquitto { child, port, log }
    }

    /// Without credentials, as reports show it.
    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// With the account, as the harness is given it.
    fn url_with_login(&self) -> String {
        format!(
            "mqtt://{MOSQUITTO_USER}:{MOSQUITTO_PASSWORD}@127.0.0.1:{}",
            self.port
        )
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--mqtt-url` at mosquitto: setup, baseline and a worker kill under traffic pass with exact
/// counts; no broker was started, the nodes' pipelines held their sessions on mosquitto (which
/// lets in only its one account, given in the URL), and the report names the broker without
/// the password.
#[test]
fn external_mosquitto_carries_setup_baseline_and_worker_failover() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start(dir.path());
    let out = dir.path().join("reports");
    let url = broker.url();
    let output = harness_command(
        &[
            "--phases",
            "0,1,3",
            "--mqtt-url",
            &broker.url_with_login(),
            "--seed",
            "13",
            "--phases-dir",
            &repo_phases(),
        ],
        &out,
    )
    .output()
    .expect("run harness");
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let summary = read_summary(&out);
    assert_all_exact(&summary, &["0", "1", "3"]);
    // No broker node: its log would be there.
    assert!(!out.join("latest/logs/broker.log").exists());
    let results = std::fs::read_to_string(out.join("latest/results.md")).expect("results.md");
    assert!(
        results.contains(&format!("| MQTT broker | external, {url} (--mqtt-url")),
        "{results}"
    );
    // The pipelines' persistent sessions and the harness's clients were on mosquitto.
    let log = std::fs::read_to_string(&broker.log).expect("mosquitto.log");
    for client in [
        "as varpulis~",
        "as harness-publisher-d",
        "as harness-collector-d",
    ] {
        assert!(log.contains(client), "no '{client}' in mosquitto's log");
    }
    // Every client logged in with the account (mosquitto names it: `u'varpulis-test'`), and
    // no connection was refused.
    let logins = log.matches(&format!("u'{MOSQUITTO_USER}'")).count();
    assert!(
        logins >= 3,
        "{logins} logins as {MOSQUITTO_USER} in mosquitto's log"
    );
    assert!(
        !log.contains("not authorised"),
        "a refused connection: {log}"
    );
    for report in [
        "latest/results.md",
        "latest/run.json",
        "latest/summary.json",
    ] {
        let text = std::fs::read_to_string(out.join(report)).unwrap_or_default();
        assert!(
            !text.contains(MOSQUITTO_PASSWORD),
            "the password is in {report}"
        );
    }
}

/// A broker step (kill broker) is refused before anything starts when the broker is external.
#[test]
fn external_broker_cannot_be_faulted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let phases = dir.path().join("phases");
    std::fs::create_dir_all(&phases).expect("mkdir");
    std::fs::write(
        phases.join("00-setup.toml"),
        "name = \"Setup\"\n[[step]]\ndo = \"start_cluster\"\n",
    )
    .expect("write");
    std::fs::write(
        phases.join("01-broker.toml"),
        "name = \"Broker kill\"\nrequires = [\"setup\"]\n[[step]]\ndo = \"kill\"\ntarget = \"broker\"\n",
    )
    .expect("write");
    let output = harness_command(
        &[
            "--phases",
            "broker",
            "--mqtt-url",
            "mqtt://127.0.0.1:1",
            "--phases-dir",
            &phases.display().to_string(),
        ],
        &dir.path().join("reports"),
    )
    .output()
    .expect("run harness");
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .contains("01-broker.toml:3: step `kill`: the broker is external (mqtt://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!dir.path().join("reports/runs").exists(), "{stderr}");
}

/// The run directory a harness run reported on stdout (`report: DIR/results.md`).
fn reported_dir(output: &Output) -> PathBuf {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .unwrap_or_else(|| panic!("no report line in {}", show(output)));
    PathBuf::from(line)
        .parent()
        .expect("results.md in a run dir")
        .to_path_buf()
}

/// Two runs at once on one machine, same seed and same reports directory (so the same run id
/// is wanted by both): each gets its own run dir, ports, data dirs and broker, and both pass
/// setup, baseline and a worker kill under traffic with exact counts.
#[test]
fn two_runs_at_once_on_processes_both_pass() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("reports");
    let args = [
        "--phases",
        "0,1,3",
        "--seed",
        "21",
        "--phases-dir",
        &repo_phases(),
    ];
    // Output to files, not pipes: a pipe nobody reads while the other run is awaited could fill
    // and stall a run.
    let spawn = |name: &str| {
        let (o, e) = (
            dir.path().join(name),
            dir.path().join(format!("{name}.err")),
        );
        let child = harness_command(&args, &out)
            .stdout(std::fs::File::create(&o).expect("stdout file"))
            .stderr(std::fs::File::create(&e).expect("stderr file"))
            .spawn()
            .expect("spawn harness");
        (child, o, e)
    };
    let finish = |(mut child, o, e): (Child, PathBuf, PathBuf)| Output {
        status: child.wait().expect("wait harness"),
        stdout: std::fs::read(o).expect("stdout"),
        stderr: std::fs::read(e).expect("stderr"),
    };
    // Both started before either is waited for.
    let (a, b) = (spawn("a"), spawn("b"));
    let (a, b) = (finish(a), finish(b));
    for output in [&a, &b] {
        assert_eq!(output.status.code(), Some(0), "{}", show(output));
    }
    let (dir_a, dir_b) = (reported_dir(&a), reported_dir(&b));
    assert_ne!(dir_a, dir_b);
    for run in [&dir_a, &dir_b] {
        let bytes = std::fs::read(run.join("summary.json")).expect("summary.json");
        let summary: Value = serde_json::from_slice(&bytes).expect("summary");
        assert_all_exact(&summary, &["0", "1", "3"]);
    }
    // `latest` is one run's whole copy.
    let latest = read_summary(&out);
    assert_all_exact(&latest, &["0", "1", "3"]);
}

/// 5 coordinators, 8 workers, 4 pipelines: setup homes the links as `home_of` spreads them
/// and says so, every pipeline gets both matching and filtered events (an even count pairs
/// seqs), and the baseline and a leader kill pass with exact counts.
#[test]
fn five_coordinators_eight_workers_four_pipelines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("reports");
    let output = harness_command(
        &[
            "--phases",
            "0,1,2,5",
            "--coordinators",
            "5",
            "--workers",
            "8",
            "--pipelines",
            "4",
            "--seed",
            "58",
            "--phases-dir",
            &repo_phases(),
        ],
        &out,
    )
    .output()
    .expect("run harness");
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let summary = read_summary(&out);
    let trials = summary["phases"].as_array().expect("phases");
    // Phase 2 publishes nothing: judge the others' counts, and phase 2 by its detail.
    let ids: Vec<&str> = trials.iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, ["0", "1", "2", "5"], "{summary}");
    assert!(trials.iter().all(|t| t["status"] == "PASS"), "{summary}");
    assert_eq!(
        trials[2]["details"],
        "coordinator-1: 3 WS, coordinator-2: 2 WS, coordinator-3: 1 WS, coordinator-4: 1 WS, \
         coordinator-5: 1 WS (homed as configured: coordinator-1 = 3, coordinator-2 = 2, \
         coordinator-3 = 1, coordinator-4 = 1, coordinator-5 = 1)",
        "{summary}"
    );
    for t in [&trials[1], &trials[3]] {
        let events = &t["events"];
        for count in ["lost", "duplicated", "unexpected", "unknown"] {
            assert_eq!(events[count], 0, "{count} in {t}");
        }
        assert_eq!(events["delivered"], events["expected"], "{t}");
    }
    // Baseline: 500 events, 250 matching, over four pipelines, each with its share.
    let csv = std::fs::read_to_string(out.join("latest/events.csv")).expect("events.csv");
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .filter(|l| l.starts_with("1,1,"))
        .map(|l| l.split(',').collect())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[2]).collect();
    assert_eq!(
        names,
        [
            "sensor_filter_1",
            "sensor_filter_2",
            "sensor_filter_3",
            "sensor_filter_4"
        ],
        "{csv}"
    );
    let expected: Vec<u64> = rows.iter().map(|r| r[3].parse().expect("n")).collect();
    assert_eq!(expected.iter().sum::<u64>(), 250, "{csv}");
    assert!(expected.iter().all(|&n| (62..=63).contains(&n)), "{csv}");
    let results = std::fs::read_to_string(out.join("latest/results.md")).expect("results.md");
    for row in [
        "| Coordinators | 5 (quorum 3) |",
        "| Workers | 8 |",
        "| Pipelines | 4 |",
    ] {
        assert!(results.contains(row), "{row} not in {results}");
    }
}

/// A topology the planned phases cannot run is refused before anything starts.
#[test]
fn a_topology_the_phases_cannot_use_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("reports");
    let phases = repo_phases();
    let run = |extra: &[&str]| {
        let mut args = vec!["--phases-dir", phases.as_str()];
        args.extend_from_slice(extra);
        harness_command(&args, &out).output().expect("run harness")
    };
    let output = run(&["--phases", "4", "--pipelines", "2"]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("04-cascading-failure.toml")
            && stderr
                .contains("pipeline sensor_filter_3 is not part of this workload (--pipelines 2"),
        "{stderr}"
    );
    let output = run(&["--phases", "0", "--coordinators", "4"]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("3 or 5 coordinators"),
        "{}",
        show(&output)
    );
    assert!(!out.join("runs").exists());
}

/// The reference profile given as a file runs the cluster as the built-in one does; a profile
/// lacking a capability a planned step needs is refused before anything starts, naming it, and
/// an unknown key is only warned about.
#[test]
fn profiles_start_the_cluster_and_refuse_what_they_cannot_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("reports");
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/reference.toml");
    let phases = repo_phases();
    let output = harness_command(
        &[
            "--phases",
            "0,1",
            "--profile",
            &reference.display().to_string(),
            "--phases-dir",
            &phases,
        ],
        &out,
    )
    .output()
    .expect("run harness");
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_all_exact(&read_summary(&out), &["0", "1"]);
    let results = std::fs::read_to_string(out.join("latest/results.md")).expect("results.md");
    assert!(
        results.contains("| Cluster profile | reference: "),
        "{results}"
    );

    let text = std::fs::read_to_string(&reference).expect("reference.toml");
    let lacking = dir.path().join("no-log.toml");
    std::fs::write(
        &lacking,
        format!(
            "future_key = 1\n{}",
            text.replace("event_log = true", "event_log = false")
        ),
    )
    .expect("write profile");
    let output = harness_command(
        &[
            "--phases",
            "5",
            "--profile",
            &lacking.display().to_string(),
            "--phases-dir",
            &phases,
        ],
        &dir.path().join("refused"),
    )
    .output()
    .expect("run harness");
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("05-coordinator-failover.toml")
            && stderr.contains("step `assert_workers_ready`: needs capability `event_log`")
            && stderr.contains("warning: profile reference: unknown key `future_key` ignored"),
        "{stderr}"
    );
    assert!(!dir.path().join("refused/runs").exists(), "{stderr}");
}
