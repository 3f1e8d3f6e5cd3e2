//! `harness compare`'s statistics table: every later run against the first, per figure they
//! share, with the gate's relative test and thresholds (GATING.md §1.3: one-sided exact
//! Mann–Whitney U, Hodges–Lehmann ratio with its exact 95 % interval, Holm across the figures of
//! one pair). Unlike the gate, runs of different configurations are compared (that is often the
//! point); the table says where they differ.

use std::fmt::Write as _;

use super::baseline::Configuration;
use super::config::Thresholds;
use super::{fmt_interval, fmt_p, fmt_ratio, fmt_us, relative, settle, stats, Relative};
use crate::record::RunData;

/// One figure of one pair.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: String,
    pub n: usize,
    pub median_us: f64,
    pub relative: Relative,
}

/// The rows of `candidate` against `base`: figures both have, in the base's order.
pub fn rows(base: &RunData, candidate: &RunData, th: &Thresholds) -> Vec<Row> {
    let base_figures = base.samples_by_figure();
    let cand_figures = candidate.samples_by_figure();
    let mut rows: Vec<Row> = base_figures
        .iter()
        .filter_map(|(key, b)| {
            let (_, c) = cand_figures.iter().find(|(k, _)| k == key)?;
            let base_us: Vec<u64> = b.iter().map(|s| s.value_us).collect();
            let cand: Vec<f64> = c.iter().map(|s| s.value_us as f64).collect();
            Some(Row {
                key: key.clone(),
                n: cand.len(),
                median_us: stats::median(&cand).unwrap_or(0.0),
                relative: relative(&cand, &base_us),
            })
        })
        .collect();
    let tick_ms = 1.5 * candidate.config.raft.heartbeat_ms as f64;
    let floor_us = th.floor_ms.max(tick_ms) * 1000.0;
    let mut items: Vec<_> = rows
        .iter_mut()
        .map(|r| (r.n, r.median_us, &mut r.relative))
        .collect();
    settle(&mut items, th, floor_us);
    rows
}

/// The markdown section: a table per later run against the first.
pub fn table(runs: &[(String, &RunData)], th: &Thresholds) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Each run against **{}**, per figure both measured: one-sided exact Mann–Whitney U \
         (is the later run slower?), Holm-adjusted across the pair's figures; Hodges–Lehmann \
         ratio (median of the pairwise ratios later/first) with its exact 95 % interval. \
         REGRESSED when p < {}, ratio ≥ {}, interval low > {} and the medians differ by at least \
         max({} ms, one Raft tick); SAME when the interval high < {}; else INCONCLUSIVE. \
         n ≥ {} per side.\n",
        runs.first().map_or("-", |r| r.0.as_str()),
        th.alpha,
        th.t,
        th.l,
        th.floor_ms,
        th.t,
        th.min_n
    );
    let Some(((base_label, base), rest)) = runs.split_first() else {
        return md;
    };
    for (label, cand) in rest {
        let _ = writeln!(md, "### {label} vs {base_label}\n");
        let diff = Configuration::of(base).differences(&Configuration::of(cand));
        if !diff.is_empty() {
            let _ = writeln!(md, "Configurations differ: {}.\n", diff.join(", "));
        }
        let rows = rows(base, cand, th);
        if rows.is_empty() {
            let _ = writeln!(md, "No figure in common.\n");
            continue;
        }
        md.push_str(
            "| figure | verdict | n | p50 | first n | first p50 | ratio [95 %] | p | p (Holm) | why |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &rows {
            let x = &r.relative;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} {} | {} | {} | {} |",
                r.key,
                x.verdict,
                r.n,
                fmt_us(r.median_us),
                x.n_baseline,
                fmt_us(x.median_baseline_us),
                fmt_ratio(x.ratio),
                fmt_interval(x.interval),
                fmt_p(x.p),
                fmt_p(x.p_holm),
                x.why
            );
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::tests::run;
    use crate::gate::Verdict;

    #[test]
    fn a_slower_run_is_regressed_and_the_same_run_is_same() {
        // Election medians 1.1 s vs 2.2 s over 8 trials each: every later trial above every
        // earlier one, so the exact one-sided U p is 1 / C(16, 8) = 7.8e-5.
        let fast: Vec<f64> = (0..8).map(|i| 1100.0 + 10.0 * i as f64).collect();
        let slow: Vec<f64> = fast.iter().map(|v| v * 2.0).collect();
        let a = run(600, &[("coordinator-failover", "election_ms", &fast)]);
        let b = run(1200, &[("coordinator-failover", "election_ms", &slow)]);
        let th = Thresholds::default();
        let rows = rows(&a, &b, &th);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].relative.verdict, Verdict::Regressed);
        let p = rows[0].relative.p.unwrap();
        assert!((p - 1.0 / 12870.0).abs() < 1e-9, "p = {p}");
        let ratio = rows[0].relative.ratio.unwrap();
        assert!((ratio - 2.0).abs() < 1e-9, "ratio {ratio}");
        let same = rows_of(&a, &a, &th);
        assert_eq!(same, vec![Verdict::Same]);
        let md = table(&[("A".into(), &a), ("B".into(), &b)], &th);
        assert!(md.contains("### B vs A"), "{md}");
        assert!(
            md.contains("Configurations differ: election_max_ms"),
            "{md}"
        );
        assert!(
            md.contains("| coordinator-failover.election_ms | REGRESSED | 8 | 2.27 s | 8 |"),
            "{md}"
        );
    }

    fn rows_of(a: &RunData, b: &RunData, th: &Thresholds) -> Vec<Verdict> {
        rows(a, b, th).iter().map(|r| r.relative.verdict).collect()
    }

    #[test]
    fn figures_only_one_run_has_are_left_out() {
        let a = run(600, &[("coordinator-failover", "election_ms", &[1.0; 5])]);
        let b = run(600, &[("worker-failover", "failover_ms", &[1.0; 5])]);
        assert!(rows(&a, &b, &Thresholds::default()).is_empty());
        let md = table(
            &[("A".into(), &a), ("B".into(), &b)],
            &Thresholds::default(),
        );
        assert!(md.contains("No figure in common."), "{md}");
    }
}
