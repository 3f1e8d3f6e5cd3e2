//! `harness bench` end to end, tiny: a real cluster (fast Raft timings), two short ramp steps
//! per path at low rates (plus the 50 % and 90 % steps), the report's files on disk, and exact
//! counts: the broker path delivers every event it published, the pipelines every expected one.

use std::path::{Path, PathBuf};

use harness::bench::cli::{run, BenchArgs};
use harness::bench::drive::Route;
use harness::topology::ClusterArgs;

/// The `cluster` binary built by `cargo test --workspace`, next to this test's directory.
fn cluster_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("cluster");
    assert!(
        bin.is_file(),
        "{} is missing: run the workspace tests (cargo test --workspace) so it is built",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_low_steps_per_path_deliver_exactly_and_write_the_report() {
    let out = tempfile::tempdir().expect("temp dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let args = BenchArgs {
        step_ms: 400,
        start_rate: 100,
        max_rate: 200,
        bisections: 0,
        latency_bound_ms: 1000,
        tail_ms: 5000,
        seed: Some(7),
        out: Some(out.path().to_path_buf()),
        phases_dir: None,
        cluster_bin: Some(cluster_bin()),
        heartbeat_ms: 50,
        election_min_ms: 150,
        election_max_ms: 300,
        cluster: ClusterArgs::default(),
    };
    let (t, dir) = run(&args, &root).await.expect("the bench runs");

    for file in [
        "throughput.md",
        "throughput.csv",
        "throughput-cpu.csv",
        "throughput.json",
        "plots/throughput.png",
        "plots/throughput.svg",
    ] {
        assert!(
            dir.join(file).is_file(),
            "{file} missing in {}",
            dir.display()
        );
    }
    let ramp = |route| {
        t.steps
            .iter()
            .filter(move |s| s.route == route && s.purpose == harness::bench::drive::Purpose::Ramp)
            .map(|s| s.target_per_s)
            .collect::<Vec<_>>()
    };
    // A loaded machine may fail a step (then the ramp bisects below it): only the first step's
    // rate is certain.
    assert_eq!(ramp(Route::Broker)[0], 100);
    assert_eq!(ramp(Route::Pipelines)[0], 100);
    for st in &t.steps {
        assert!(st.sent > 0, "{st:?}");
        assert_eq!(st.duplicated, 0, "{st:?}");
        match st.route {
            // Every event sent was acked and came back once.
            Route::Broker => {
                assert_eq!(
                    (st.acked, st.expected, st.delivered),
                    (st.sent, st.sent, st.sent),
                    "{st:?}"
                )
            }
            // Every acked event passing the filter came back once.
            Route::Pipelines => {
                assert_eq!(st.acked, st.sent, "{st:?}");
                assert_eq!(st.delivered, st.expected, "{st:?}");
                assert!(st.expected >= st.sent / 2 - 1, "{st:?}");
            }
        }
        let names: Vec<&str> = st.usage.iter().map(|u| u.name.as_str()).collect();
        for name in ["broker", "coordinator-1", "worker-1", "harness", "machine"] {
            assert!(names.contains(&name), "{name} not measured: {names:?}");
        }
    }
    let md = std::fs::read_to_string(dir.join("throughput.md")).expect("throughput.md");
    assert_eq!(md, t.to_markdown());
    let loaded = harness::bench::Throughput::load(&dir).expect("throughput.json reads back");
    assert_eq!(loaded.to_markdown(), md);
    assert!(
        md.contains("## Ceilings") && md.contains("Ratio pipeline / broker"),
        "{md}"
    );
    let csv = std::fs::read_to_string(dir.join("throughput.csv")).expect("throughput.csv");
    assert_eq!(csv.lines().count(), 1 + t.steps.len(), "{csv}");
}

/// Flags the bench cannot run with are refused before anything starts (exit 2, the reason).
#[test]
fn bad_flags_are_refused_with_exit_2() {
    for (args, says) in [
        (
            &["--heartbeat-ms", "5000"][..],
            "0 < --heartbeat-ms < --election-min-ms",
        ),
        (&["--profile", "profiles/none.toml"][..], "no --profile"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
            .arg("bench")
            .args(args)
            .env_remove("CARGO")
            .output()
            .expect("run harness bench");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
