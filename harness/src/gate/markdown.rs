//! `gate.md`: the whole table, with the thresholds, the baseline's origin and how each figure
//! was measured.

use std::fmt::Write;

use super::{fmt_interval, fmt_p, fmt_ratio, fmt_us, GateReport};

pub fn render(r: &GateReport) -> String {
    let th = &r.thresholds;
    let mut md = String::new();
    let _ = writeln!(md, "# Gate: run {}\n", r.run_id);
    let verdict = match r.exit_code() {
        0 => "PASS",
        1 => "FAIL (a phase failed)",
        _ => "FAIL (a figure is over budget or regressed)",
    };
    let _ = writeln!(md, "**{verdict}** (exit {})\n", r.exit_code());
    for line in r.failure_lines() {
        let _ = writeln!(md, "- {line}");
    }
    for line in r.warning_lines() {
        let _ = writeln!(md, "- warning: {line}");
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "Baseline: {}.", r.baseline);
    if !r.config_differences.is_empty() {
        let _ = writeln!(
            md,
            "Compared although the configuration differs (--allow-config-change): {}.",
            r.config_differences.join(", ")
        );
    }
    let _ = writeln!(
        md,
        "\nBudget: p50 ≤ budget and every trial ≤ 2 × budget, the budget evaluated against this \
         run's configuration. Relative (GATING.md §1.3): one-sided exact Mann–Whitney U on the \
         trials (candidate slower), Holm-adjusted across the {} compared figure(s); Hodges–Lehmann \
         ratio candidate/baseline (median of the pairwise ratios) with its exact 95 % interval. \
         REGRESSED when p < {}, ratio ≥ {}, interval low > {} and the medians differ by at least \
         {} (max({} ms, one Raft tick)); SAME when the interval high < {}; else INCONCLUSIVE \
         (a warning). n ≥ {} per side. Medians are exact sample medians; p90 and max are never \
         gated.\n",
        r.figures
            .iter()
            .filter(|f| f.relative.as_ref().is_some_and(|x| x.p_holm.is_some()))
            .count(),
        th.alpha,
        th.t,
        th.l,
        fmt_us(r.floor_us),
        th.floor_ms,
        th.t,
        th.min_n
    );
    md.push_str(
        "| figure | verdict | n | p50 | max | budget | baseline n | baseline p50 | ratio [95 %] | p | p (Holm) | why |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for f in &r.figures {
        let opt = |v: Option<f64>| v.map_or("-".into(), fmt_us);
        let budget = format!(
            "{} = `{}`",
            fmt_us(f.budget.budget_us as f64),
            f.budget.expr
        );
        let (bn, bm, ratio, p, ph, why) = match &f.relative {
            Some(x) => (
                x.n_baseline.to_string(),
                fmt_us(x.median_baseline_us),
                format!("{} {}", fmt_ratio(x.ratio), fmt_interval(x.interval)),
                fmt_p(x.p),
                fmt_p(x.p_holm),
                x.why.clone(),
            ),
            None => (
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                f.why_no_relative.clone(),
            ),
        };
        let why = if f.budget.failures.is_empty() {
            why
        } else {
            f.budget.failures.join("; ")
        };
        let verdict = match &f.relative {
            Some(x) if f.status() == "FAIL" => format!("FAIL (relative: {})", x.verdict),
            _ => f.status().to_string(),
        };
        let _ = writeln!(
            md,
            "| {} | {verdict} | {} | {} | {} | {budget} | {bn} | {bm} | {ratio} | {p} | {ph} | {} |",
            f.key,
            f.values_us.len(),
            opt(f.median_us),
            opt(f.max_us.map(|v| v as f64)),
            why.replace('|', "\\|")
        );
    }
    md.push_str("\nHow each figure was measured:\n\n");
    for f in r.figures.iter().filter(|f| !f.how.is_empty()) {
        let _ = writeln!(md, "- `{}`: {}", f.key, f.how);
    }
    if !r.correctness.is_empty() {
        md.push_str("\nCorrectness (a failed phase fails the gate with exit 1):\n\n");
        for c in &r.correctness {
            let _ = writeln!(md, "- {c}");
        }
    }
    md
}
