//! Tests of the gate's verdicts on runs written here; the fixtures are shared with the
//! other gate modules' tests.

use super::*;
use std::collections::BTreeMap;

/// A run of `figures` (phase slug, figure name, values in ms), one trial per value, with
/// the fast timings of CI (heartbeat 100, election 300–`election_max`, grace 1000).
pub(crate) fn run(election_max: u64, figures: &[(&str, &str, &[f64])]) -> RunData {
    let mut trials = Vec::new();
    for (slug, name, values) in figures {
        for (i, v) in values.iter().enumerate() {
            trials.push(serde_json::json!({
                "id": "5", "slug": slug, "name": "Phase", "description": "",
                "trial": i + 1, "trials": values.len(), "status": "PASS",
                "started_us": 0, "duration_us": 1_500_000, "details": "", "error": null,
                "steps": [], "bindings": {},
                "samples": [{"name": name, "value_us": (v * 1000.0) as u64,
                             "how": "kill → leader_changed", "method": "event log"}],
            }));
        }
    }
    serde_json::from_value(serde_json::json!({
        "run_id": "r1", "backend": "process", "seed": 7, "started_at": "2026-12-01T22:00:00Z",
        "command": "harness --phases 5", "interrupted": false, "trials": trials,
        "config": {"coordinators": 3, "workers": 4, "poll_interval_ms": 20,
            "probe_timeout_ms": 250, "cpu_cores": 2, "harness_version": "0",
            "raft": {"heartbeat_ms": 100, "election_min_ms": 300, "election_max_ms": election_max},
            "detector": {"grace_ms": 1000, "ping_interval_ms": 1000, "ping_dead_ms": 3000,
                         "rest_timeout_ms": 10000}},
    }))
    .unwrap()
}

pub(crate) fn gate(budgets: &[(&str, &str)]) -> Gate {
    let budget: BTreeMap<String, crate::figure::Span> = budgets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string().try_into().unwrap()))
        .collect();
    Gate {
        path: "reports/baseline.toml".into(),
        file: config::GateFile {
            samples: "baseline-samples.json".into(),
            relative: Thresholds::default(),
            budget,
        },
    }
}

const ELECTION: &str = "coordinator-failover.election_ms";
const ELECTION_BUDGET: &str = "lease + election_max + tick + 100ms";

fn ms(from: f64, step: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| from + step * i as f64).collect()
}

fn baseline_of(values: &[f64]) -> Baseline {
    Baseline::from_run(&run(
        600,
        &[("coordinator-failover", "election_ms", values)],
    ))
    .unwrap()
}

#[test]
fn budgets_are_evaluated_against_the_runs_own_configuration() {
    let g = gate(&[(ELECTION, ELECTION_BUDGET)]);
    let values = ms(1400.0, 10.0, 5); // p50 1420 ms
                                      // election_max 600: 600 + 600 + 150 + 100 = 1450 ms → within.
    let r = evaluate(
        &run(600, &[("coordinator-failover", "election_ms", &values)]),
        &g,
        None,
        false,
    )
    .unwrap();
    assert_eq!(r.figures[0].budget.budget_us, 1_450_000);
    assert_eq!((r.exit_code(), r.figures[0].status()), (0, "PASS"));
    // election_max 500: 1250 ms → the median is over.
    let r = evaluate(
        &run(500, &[("coordinator-failover", "election_ms", &values)]),
        &g,
        None,
        false,
    )
    .unwrap();
    assert_eq!(r.exit_code(), exit::GATE_FAILED);
    assert_eq!(
        r.failure_lines(),
        vec![format!(
            "{ELECTION} p50 1.42 s over its budget 1.25 s ({ELECTION_BUDGET})"
        )]
    );
}

#[test]
fn one_trial_over_twice_the_budget_fails_though_the_median_is_fine() {
    let g = gate(&[(ELECTION, ELECTION_BUDGET)]);
    let values = [1000.0, 1010.0, 3000.0, 1020.0, 1030.0];
    let r = evaluate(
        &run(600, &[("coordinator-failover", "election_ms", &values)]),
        &g,
        None,
        false,
    )
    .unwrap();
    assert_eq!(r.exit_code(), exit::GATE_FAILED);
    assert_eq!(
        r.failure_lines(),
        vec![format!(
            "{ELECTION} trial 3 3.00 s over twice its budget 2.90 s ({ELECTION_BUDGET})"
        )]
    );
}

#[test]
fn a_doubled_election_regresses_with_its_line() {
    let g = gate(&[(ELECTION, "10s")]);
    let base = baseline_of(&ms(1000.0, 10.0, 10));
    let cand = run(
        600,
        &[("coordinator-failover", "election_ms", &ms(2000.0, 25.0, 10))],
    );
    let r = evaluate(&cand, &g, Some(&base), false).unwrap();
    let rel = r.figures[0].relative.as_ref().unwrap();
    assert_eq!(rel.verdict, Verdict::Regressed, "{rel:?}");
    // scipy: mannwhitneyu(c, b, alternative='greater', method='exact') with
    // b = [1000+10*i for i in range(10)], c = [2000+25*i for i in range(10)]
    // → 5.412544112234515e-06 (= 1/C(20,10)); numpy HL as in stats.rs: 2.0215…
    // [1.9524, 2.0913]; medians 2112.5 ms and 1045 ms.
    assert!((rel.p.unwrap() - 5.412544112234515e-06).abs() < 1e-15);
    assert_eq!(r.exit_code(), exit::GATE_FAILED);
    assert_eq!(
        r.failure_lines(),
        vec![format!(
            "{ELECTION} p50 2.11 s vs 1.04 s, ratio 2.02 [1.95, 2.09], p = 5.4e-6"
        )]
    );
}

#[test]
fn the_same_distribution_is_same_and_passes() {
    let g = gate(&[(ELECTION, "10s")]);
    let base = baseline_of(&ms(1000.0, 20.0, 10));
    let cand = run(
        600,
        &[("coordinator-failover", "election_ms", &ms(1010.0, 20.0, 10))],
    );
    let r = evaluate(&cand, &g, Some(&base), false).unwrap();
    assert_eq!(r.figures[0].status(), "SAME", "{:?}", r.figures[0]);
    assert_eq!(r.exit_code(), exit::PASS);
    assert!(r.failure_lines().is_empty() && r.warning_lines().is_empty());
}

#[test]
fn fewer_than_five_a_side_is_inconclusive_and_says_why() {
    let g = gate(&[(ELECTION, "10s")]);
    let base = baseline_of(&ms(1000.0, 10.0, 10));
    let cand = run(
        600,
        &[("coordinator-failover", "election_ms", &ms(3000.0, 10.0, 4))],
    );
    let r = evaluate(&cand, &g, Some(&base), false).unwrap();
    assert_eq!(r.exit_code(), exit::PASS);
    assert_eq!(
        r.warning_lines(),
        vec![format!("{ELECTION} INCONCLUSIVE: n = 4 candidate, 10 baseline: fewer than 5 per side (the smallest one-sided p at 4×4 is 0.014)")]
    );
}

#[test]
fn a_difference_under_one_tick_cannot_regress() {
    // Tripled, but by 100 ms < the floor max(50 ms, 1.5 × 100 ms heartbeat) = 150 ms.
    let g = gate(&[(ELECTION, "10s")]);
    let base = baseline_of(&ms(50.0, 1.0, 10));
    let cand = run(
        600,
        &[("coordinator-failover", "election_ms", &ms(150.0, 1.0, 10))],
    );
    let r = evaluate(&cand, &g, Some(&base), false).unwrap();
    assert_eq!(r.floor_us, 150_000.0);
    assert_eq!(r.exit_code(), exit::PASS);
    let w = &r.warning_lines()[0];
    assert!(w.contains("median difference 100 ms < floor 150 ms"), "{w}");
}

#[test]
fn holm_shares_alpha_across_the_gated_figures() {
    // Each figure alone: 5×5 fully separated, p = 1/252 = 0.00397 < 0.01. Two figures:
    // Holm multiplies the smaller by 2 → 0.0079 (still < 0.01), and the larger (same p)
    // by 1, raised to 0.0079. With three, 3/252 = 0.0119 ≥ 0.01: none regresses.
    let fig = |name: &'static str| ("coordinator-failover", name, ms(1000.0, 10.0, 5));
    let names = ["a_ms", "b_ms", "c_ms"];
    let base_figs: Vec<_> = names.iter().map(|n| fig(n)).collect();
    let base_refs: Vec<(&str, &str, &[f64])> = base_figs
        .iter()
        .map(|(s, n, v)| (*s, *n, v.as_slice()))
        .collect();
    let base = Baseline::from_run(&run(600, &base_refs)).unwrap();
    let slow = ms(3000.0, 10.0, 5);
    let cand_refs: Vec<(&str, &str, &[f64])> = names
        .iter()
        .map(|n| ("coordinator-failover", *n, slow.as_slice()))
        .collect();
    let cand = run(600, &cand_refs);
    let keys: Vec<String> = names
        .iter()
        .map(|n| format!("coordinator-failover.{n}"))
        .collect();
    let two = gate(&[(&keys[0], "10s"), (&keys[1], "10s")]);
    let r = evaluate(&cand, &two, Some(&base), false).unwrap();
    for f in &r.figures {
        let rel = f.relative.as_ref().unwrap();
        assert!((rel.p_holm.unwrap() - 2.0 / 252.0).abs() < 1e-12, "{rel:?}");
        assert_eq!(rel.verdict, Verdict::Regressed);
    }
    let three = gate(&[(&keys[0], "10s"), (&keys[1], "10s"), (&keys[2], "10s")]);
    let r = evaluate(&cand, &three, Some(&base), false).unwrap();
    assert!(
        r.warning_lines()[0]
            .contains("5×5 trials across 3 figure(s) cannot go below 0.012 (more trials)"),
        "{:?}",
        r.warning_lines()
    );
    assert!(
        r.figures.iter().all(|f| f.status() == "INCONCLUSIVE"),
        "{:?}",
        r.warning_lines()
    );
    assert_eq!(r.exit_code(), exit::PASS);
}

#[test]
fn a_baseline_of_another_configuration_is_refused_unless_allowed() {
    let g = gate(&[(ELECTION, "10s")]);
    let base = baseline_of(&ms(1000.0, 10.0, 10));
    let cand = run(
        1200,
        &[("coordinator-failover", "election_ms", &ms(2000.0, 25.0, 10))],
    );
    let err = evaluate(&cand, &g, Some(&base), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("election_max_ms 600 → 1200"), "{err}");
    assert!(err.contains("--allow-config-change"), "{err}");
    let r = evaluate(&cand, &g, Some(&base), true).unwrap();
    assert_eq!(r.config_differences, vec!["election_max_ms 600 → 1200"]);
    assert_eq!(r.exit_code(), exit::GATE_FAILED);
}

#[test]
fn a_failed_phase_fails_the_gate_with_exit_1() {
    let g = gate(&[(ELECTION, ELECTION_BUDGET)]);
    let mut cand = run(
        600,
        &[("coordinator-failover", "election_ms", &ms(1000.0, 10.0, 5))],
    );
    cand.trials[2].status = Status::Fail;
    cand.trials[2].error =
        Some("step 4 await_leader (05-coordinator-failover.toml:20): timed out".into());
    let r = evaluate(&cand, &g, None, false).unwrap();
    assert_eq!(r.exit_code(), exit::PHASE_FAILED);
    assert_eq!(
        r.failure_lines(),
        vec!["phase 5 Phase trial 3/5 FAIL: step 4 await_leader (05-coordinator-failover.toml:20): timed out"]
    );
    assert!(Baseline::from_run(&cand)
        .unwrap_err()
        .to_string()
        .contains("passing run only"));
}

#[test]
fn an_unmeasured_figure_is_reported_not_failed() {
    let g = gate(&[
        (ELECTION, ELECTION_BUDGET),
        ("hung-worker.detection_ms", "grace"),
    ]);
    let cand = run(
        600,
        &[("coordinator-failover", "election_ms", &ms(1000.0, 10.0, 5))],
    );
    let r = evaluate(&cand, &g, None, false).unwrap();
    assert_eq!(r.figures[1].status(), "NOT MEASURED");
    assert_eq!(r.exit_code(), exit::PASS);
    let md = markdown::render(&r);
    assert!(
        md.contains("| hung-worker.detection_ms | NOT MEASURED | 0 |"),
        "{md}"
    );
    assert!(
        md.contains("- `coordinator-failover.election_ms`: event log over 5 trial(s), resolution ≤ 0 ms; trial 1: kill → leader_changed"),
        "{md}"
    );
}
