//! The scale command's plumbing: the points it runs and the reports it renders from a fixed
//! result (exact), without starting a cluster.

use clap::Parser;

use super::render;
use super::*;

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    scale: ScaleArgs,
}

fn args(flags: &[&str]) -> ScaleArgs {
    Wrap::parse_from(std::iter::once("scale").chain(flags.iter().copied())).scale
}

/// (curve, size, phases, workers, pipelines, entries, trials) of a point.
type Shape = (Curve, u64, String, u32, u32, Option<u64>, u32);

/// A failover leaves the killed worker's pipelines on the survivor: the failover curves' trials
/// each get a fresh cluster, or trial 2 of "300 hosted" killed a worker hosting 600 (seen: its
/// figure named "last of 600 pipelines", 2.5 s against trial 1's 1.8 s). The election curve's
/// trials share one cluster.
#[test]
fn failover_curves_run_each_trial_on_a_fresh_cluster() {
    let specs = points(&args(&[
        "--repeat",
        "3",
        "--hosted",
        "300",
        "--workers",
        "4",
        "--entries",
        "0",
    ]));
    let runs: Vec<(Curve, Vec<(u32, String)>)> =
        specs.iter().map(|s| (s.curve, child_runs(s))).collect();
    let trials = |base: &str| -> Vec<(u32, String)> {
        (1..=3).map(|t| (1, format!("{base}/trial-{t}"))).collect()
    };
    assert_eq!(
        runs,
        vec![
            (Curve::Pipelines, trials("points/pipelines-300")),
            (Curve::Workers, trials("points/workers-4")),
            (Curve::Election, vec![(3, "points/election-0".to_string())]),
            (Curve::Suite, vec![(1, "points/suite-4".to_string())]),
        ]
    );
}

#[test]
fn each_curve_runs_its_phase_on_its_shape() {
    let shapes: Vec<Shape> = points(&args(&[]))
        .into_iter()
        .map(|p| {
            (
                p.curve,
                p.size,
                p.phases,
                p.workers,
                p.pipelines,
                p.fill_entries,
                p.repeat,
            )
        })
        .collect();
    let f = "worker-failover".to_string();
    let e = "election-after-log".to_string();
    let all = "all".to_string();
    assert_eq!(
        shapes,
        vec![
            (Curve::Pipelines, 3, f.clone(), 2, 6, None, 3),
            (Curve::Pipelines, 30, f.clone(), 2, 60, None, 3),
            (Curve::Pipelines, 300, f.clone(), 2, 600, None, 3),
            (Curve::Workers, 4, f.clone(), 4, 4, None, 3),
            (Curve::Workers, 8, f.clone(), 8, 8, None, 3),
            (Curve::Workers, 16, f.clone(), 16, 16, None, 3),
            (Curve::Election, 0, e.clone(), 4, 3, Some(0), 3),
            (Curve::Election, 10_000, e.clone(), 4, 3, Some(10_000), 3),
            (Curve::Election, 100_000, e, 4, 3, Some(100_000), 3),
            (Curve::Suite, 4, all.clone(), 4, 3, None, 1),
            (Curve::Suite, 8, all.clone(), 8, 3, None, 1),
            (Curve::Suite, 16, all, 16, 3, None, 1),
        ]
    );
    let one = points(&args(&[
        "--curves",
        "workers",
        "--workers",
        "4",
        "--repeat",
        "1",
    ]));
    assert_eq!(one.len(), 1);
    assert_eq!(
        (one[0].curve, one[0].workers, one[0].repeat),
        (Curve::Workers, 4, 1)
    );
}

fn point(curve: Curve, size: u64, figures: &[(&str, &[f64])]) -> Point {
    let spec = points(&args(&[]))
        .into_iter()
        .find(|p| p.curve == curve && p.size == size)
        .expect("a default point");
    Point {
        spec,
        figures: figures
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect(),
        passed: 4,
        trials: 4,
        error: None,
        wall_s: 30.0,
        run_dir: format!("points/{}-{size}/runs/r", curve.name()),
    }
}

fn fixed() -> ScaleData {
    ScaleData {
        started_at: "2026-12-07T00:00:00Z".into(),
        command: "harness scale".into(),
        timings: Timings {
            heartbeat_ms: 100,
            election_min_ms: 300,
            election_max_ms: 600,
            grace_ms: 1000,
            ping_interval_ms: 100,
            ping_dead_ms: 300,
        },
        cpu_cores: 2,
        points: vec![
            point(
                Curve::Pipelines,
                3,
                &[
                    ("detection_ms", &[1010.0, 1020.0, 1000.0]),
                    ("failover_ms", &[1100.0, 1200.0, 1150.0]),
                ],
            ),
            point(
                Curve::Pipelines,
                300,
                &[("detection_ms", &[1005.0]), ("failover_ms", &[2500.0])],
            ),
            point(Curve::Election, 0, &[("election_ms", &[900.0, 1000.0])]),
            point(
                Curve::Election,
                100_000,
                &[("election_ms", &[950.0, 1050.0]), ("fill_ms", &[50_000.0])],
            ),
        ],
        throughput: Some(render::nest_throughput(
            "# Throughput: run r\n\n![throughput](plots/throughput.png)",
            "points/throughput/runs/r",
        )),
    }
}

#[test]
fn the_tables_csv_and_targets_are_rendered_from_the_result() {
    let md = render::markdown(&fixed());
    for line in [
        "| pipelines hosted by the killed worker | workers | pipelines | detection_ms (ms) | failover_ms (ms) | trials passed | run |",
        "| 3 | 2 | 6 | 1010.0 (1000.0–1020.0) | 1150.0 (1100.0–1200.0) | 4/4 | `points/pipelines-3/runs/r` |",
        "| 300 | 2 | 600 | 1005.0 | 2500.0 | 4/4 | `points/pipelines-300/runs/r` |",
        "| 0 | 4 | 3 | 950.0 (900.0–1000.0) | – | 4/4 | `points/election-0/runs/r` |",
        "- failover_ms at 300 pipelines: median 2500.0 ms against grace + 1 s = 2000 ms: missed",
        "- election_ms after 100 000 entries: median 1000.0 ms against the empty log's 950.0 ms + 100 ms = 1050.0 ms: met",
        "Filling the log (fill_ms): the log grown to 100000 entries in 50.0 s (2000 entries/s).",
        "### Throughput: run r",
        "![throughput](points/throughput/runs/r/plots/throughput.png)",
    ] {
        assert!(md.lines().any(|l| l == line), "missing line {line:?} in:\n{md}");
    }
    assert!(md.contains(
        "Measured: detection_ms: median 1010.0 ms at 3 → 1005.0 ms at 300 (-0.5 %, -0.017 ms per unit of size); failover_ms: median 1150.0 ms at 3 → 2500.0 ms at 300 (+117.4 %, +4.545 ms per unit of size)."
    ), "{md}");
    let csv = render::csv(&fixed());
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "curve,size,workers,pipelines,figure,unit,n,median,min,max,passed,trials",
            "pipelines,3,2,6,detection_ms,ms,3,1010.000,1000.000,1020.000,4,4",
            "pipelines,3,2,6,failover_ms,ms,3,1150.000,1100.000,1200.000,4,4",
        ]
    );
    assert_eq!(lines.len(), 1 + 2 + 2 + 1 + 2);
    let samples = render::samples_csv(&fixed());
    assert_eq!(samples.lines().count(), 1 + 6 + 2 + 2 + 3);
    assert!(samples.contains("\nelection,100000,fill_ms,1,50000.000\n"));
}

#[test]
fn every_curve_gets_its_plot_and_the_reports_are_written() {
    let dir = tempfile::tempdir().unwrap();
    render::write_all(dir.path(), &fixed()).unwrap();
    for name in [
        render::MARKDOWN,
        render::CSV,
        render::SAMPLES_CSV,
        render::JSON,
        "plots/scale-pipelines.png",
        "plots/scale-pipelines.svg",
        "plots/scale-election.png",
        "plots/scale-election.svg",
    ] {
        let len = std::fs::metadata(dir.path().join(name)).map(|m| m.len());
        assert!(len.as_ref().is_ok_and(|n| *n > 0), "{name}: {len:?}");
    }
    assert!(!dir.path().join("plots/scale-workers.png").exists());
    let back: ScaleData =
        serde_json::from_slice(&std::fs::read(dir.path().join(render::JSON)).unwrap()).unwrap();
    assert_eq!(render::markdown(&back), render::markdown(&fixed()));
}
