//! Plots drawn from a hand-built run: every planned file is written, as a PNG of the expected
//! size and an SVG; the timeline's buckets are exact.

use std::collections::BTreeMap;

use super::timeline::{bucket_width_us, fault_lines, fault_windows, Buckets, FaultLine};
use super::*;
use crate::backend::RaftTimings;
use crate::record::{RunSettings, Sample, Status, StepRecord, TrialRecord, Window};
use crate::traffic::Counts;

const T0: u64 = 1_800_000_000_000_000;

fn step(index: usize, action: &str, summary: &str, offset_us: u64) -> StepRecord {
    StepRecord {
        index,
        action: action.into(),
        summary: summary.into(),
        location: String::new(),
        offset_us,
        duration_us: 1000,
        ok: true,
        note: String::new(),
    }
}

/// A phase-5-like trial `trial` of `trials`: kill at +0.1 s, leader elected at +0.1 s +
/// `election_ms`, 10 events sent every 100 ms from +0.05 s with 2 ms latency, except seq 3 (lost)
/// and seq 5 (delivered twice); a restart at +1.2 s.
fn trial(trial: u32, trials: u32, election_ms: u64) -> TrialRecord {
    let start = T0 + u64::from(trial) * 10_000_000;
    let sent: Vec<u64> = (0..10).map(|i| start + 50_000 + i * 100_000).collect();
    let delivered: Vec<u64> = sent
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, s)| *s)
        .collect();
    let events = Counts {
        tallies: crate::traffic::ledger::Tallies {
            published: 20,
            expected: 10,
            delivered: 9,
            lost: 1,
            duplicated: 1,
            ..Default::default()
        },
        latency_us: vec![2_000; 9],
        delivered_at_us: delivered.iter().map(|s| s + 2_000).collect(),
        lost_sent_at_us: vec![sent[3]],
        duplicated_sent_at_us: vec![sent[5]],
        ..Counts::default()
    };
    TrialRecord {
        id: "5".into(),
        slug: "coordinator-failover".into(),
        name: "Coordinator Failover (Raft)".into(),
        description: String::new(),
        trial,
        trials,
        status: Status::Pass,
        started_us: start,
        duration_us: 1_500_000,
        floor_us: 0,
        details: String::new(),
        error: None,
        steps: vec![
            step(0, "await_leader", "await_leader", 0),
            step(1, "kill", "kill @old_leader", 100_000),
            step(2, "restart", "restart @old_leader", 1_200_000),
        ],
        samples: vec![Sample {
            name: "election_ms".into(),
            value_us: election_ms * 1000,
            how: "SIGKILL → earliest leader_changed event".into(),
            method: "event log".into(),
            resolution_us: 1000,
            floor: Some(Floor {
                expr: "lease + election_min - heartbeat .. lease + election_max + tick".into(),
                lo_us: 800_000,
                hi_us: 1_350_000,
            }),
        }],
        windows: vec![Window {
            name: "election".into(),
            from_us: start + 100_000,
            to_us: start + 100_000 + election_ms * 1000,
        }],
        events: Some(events),
        bindings: BTreeMap::from([("old_leader".into(), "coordinator-2".into())]),
        metrics: None,
        check: Default::default(),
    }
}

fn run(trials: u32) -> RunData {
    RunData {
        run_id: "20261201-000000-abcd".into(),
        backend: "process".into(),
        seed: 1,
        started_at: String::new(),
        command: String::new(),
        config: RunSettings {
            coordinators: 3,
            workers: 4,
            raft: RaftTimings {
                heartbeat_ms: 100,
                election_min_ms: 300,
                election_max_ms: 600,
            },
            poll_interval_ms: 20,
            probe_timeout_ms: 250,
            detector: None,
            cpu_cores: 2,
            harness_version: "0".into(),
            drain_quiet_ms: 250,
            broker: None,
            security: None,
            pipelines: 3,
            profile: None,
            fallbacks: vec![],
        },
        trials: (1..=trials)
            .map(|i| trial(i, trials, 900 + 17 * u64::from(i)))
            .collect(),
        interrupted: false,
        history: Default::default(),
        final_drain: None,
        tally: None,
    }
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn buckets_are_exact_by_publish_time() {
    let t = trial(1, 1, 900);
    let b = Buckets::of(&t, 100_000).unwrap();
    // 1.5 s trial in 100 ms buckets: 16 (the end instant opens a last, empty one).
    assert_eq!(b.published.len(), 16);
    let mut published = vec![1u64; 10];
    published.extend([0; 6]);
    assert_eq!(b.published, published);
    assert_eq!(
        b.lost,
        [0, 0, 0, 1]
            .iter()
            .chain(&[0; 12])
            .copied()
            .collect::<Vec<_>>()
    );
    assert_eq!(b.duplicated[5], 1);
    assert_eq!(b.duplicated.iter().sum::<u64>(), 1);
    assert_eq!(b.delivered.iter().sum::<u64>(), 9);
    assert_eq!(b.delivered[3], 0);
    assert_eq!(b.unknown.iter().sum::<u64>(), 0);
    assert_eq!(bucket_width_us(1_500_000), 50_000);
    assert_eq!(bucket_width_us(25_000_000), 500_000);
}

#[test]
fn fault_lines_resolve_bindings() {
    let lines = fault_lines(&trial(1, 1, 900));
    let labels: Vec<(&str, f64)> = lines.iter().map(|l| (l.label.as_str(), l.at_s)).collect();
    assert_eq!(
        labels,
        [("kill coordinator-2", 0.1), ("restart coordinator-2", 1.2)]
    );
}

#[test]
fn a_cut_is_shaded_until_the_heal_of_its_node_and_a_pause_until_its_resume() {
    let line = |at_s: f64, action: &str, label: &str| FaultLine {
        at_s,
        action: action.into(),
        label: label.into(),
    };
    let lines = [
        line(
            1.0,
            "partition",
            "partition coordinator-1 from coordinators",
        ),
        line(2.0, "pause", "pause worker-2"),
        line(3.0, "heal", "heal worker-9"),
        line(4.0, "resume", "resume worker-2"),
        line(6.0, "heal", "heal coordinator-1 from every node"),
        line(7.0, "partition", "partition worker-3 from coordinators"),
        line(8.0, "kill", "kill worker-4"),
    ];
    assert_eq!(
        fault_windows(&lines, 9.5),
        vec![
            ("links cut".to_string(), 1.0, 6.0),
            ("paused".to_string(), 2.0, 4.0),
            ("links cut".to_string(), 7.0, 9.5),
        ]
    );
}

#[test]
fn plan_follows_the_sample_counts() {
    let kinds = |n: u32| -> Vec<(Kind, String)> {
        plan(&run(n))
            .into_iter()
            .map(|p| (p.kind, p.stem))
            .collect()
    };
    let one = kinds(1);
    assert!(!one
        .iter()
        .any(|(k, s)| *k == Kind::Ecdf && s.contains("election")));
    assert!(one.contains(&(Kind::Timeline, "timeline-coordinator-failover-1".into())));
    let many = kinds(20);
    assert!(many.contains(&(Kind::Ecdf, "ecdf-coordinator-failover.election_ms".into())));
    assert!(many.contains(&(
        Kind::Histogram,
        "hist-coordinator-failover.election_ms".into()
    )));
    assert!(!many
        .iter()
        .any(|(k, s)| *k == Kind::Hdr && s.contains("election")));
    // Per trial, 8 delivered events are sent inside the election window (+0.15 … +0.95 s) and
    // 1 before it: 160 fault-window latencies (an HDR plot), 20 steady ones (none).
    assert!(many.contains(&(Kind::Hdr, "hdr-run.e2e_latency_fault_ms".into())));
    assert!(many.contains(&(Kind::Histogram, "hist-run.e2e_latency_steady_ms".into())));
    assert!(!many.contains(&(Kind::Hdr, "hdr-run.e2e_latency_steady_ms".into())));
}

#[test]
fn every_planned_plot_is_a_png_and_an_svg() {
    let data = run(20);
    let dir = tempfile::tempdir().unwrap();
    let written = write_all(dir.path(), &data).unwrap();
    let planned = plan(&data);
    assert_eq!(written.len(), planned.len() * 2);
    for p in &planned {
        let png = std::fs::read(dir.path().join(DIR).join(format!("{}.png", p.stem))).unwrap();
        let expected = if p.kind == Kind::Timeline {
            timeline::SIZE
        } else {
            SIZE
        };
        assert_eq!(png_size(&png), expected, "{}", p.stem);
        let svg =
            std::fs::read_to_string(dir.path().join(DIR).join(format!("{}.svg", p.stem))).unwrap();
        assert!(svg.starts_with("<svg"), "{}", p.stem);
        assert!(
            svg.contains(&format!(r#"width="{}""#, expected.0)),
            "{}",
            p.stem
        );
        assert!(svg.trim_end().ends_with("</svg>"), "{}", p.stem);
        // The title is text in the SVG: the font was found and the text laid out.
        assert!(svg.contains("<text"), "{}", p.stem);
    }
    let md = markdown(&data);
    assert!(md.contains("![coordinator-failover.election_ms: ECDF of 20 trials](plots/ecdf-coordinator-failover.election_ms.png)"), "{md}");
}

#[test]
fn compare_overlays_shared_figures() {
    let a = compare::Input {
        label: "a".into(),
        data: run(5),
    };
    let b = compare::Input {
        label: "b".into(),
        data: run(3),
    };
    let shared = compare::shared_figures(&[a.clone(), b.clone()]);
    let keys: Vec<&str> = shared.iter().map(|s| s.key.as_str()).collect();
    assert!(
        keys.contains(&"coordinator-failover.election_ms"),
        "{keys:?}"
    );
    let e = compare::overlay(&shared[0]);
    assert_eq!(e.series.len(), 2);
    assert_eq!(e.series[0].sorted_ms.len(), 5);
    assert!(e.floor.is_some(), "same configuration: the floor is drawn");
    let dir = tempfile::tempdir().unwrap();
    let md = compare::write(dir.path(), &[a, b], Some("| figure | verdict |\n")).unwrap();
    let text = std::fs::read_to_string(md).unwrap();
    assert!(
        text.contains("## Statistics\n\n| figure | verdict |"),
        "{text}"
    );
    let png = std::fs::read(dir.path().join("ecdf-coordinator-failover.election_ms.png")).unwrap();
    assert_eq!(png_size(&png), SIZE);
}
