//! The CI gate (GATING.md §1.3), applied to one run's `run.json`:
//!
//! 1. correctness: a failed or interrupted run fails the gate (exit 1, "a phase failed");
//! 2. budgets from `reports/baseline.toml`, written in terms of the run's configuration: a
//!    figure fails when its median is over budget or any trial is over twice the budget;
//! 3. relative, against stored baseline samples: one-sided exact Mann–Whitney U, the
//!    Hodges–Lehmann ratio with its exact 95 % interval, a floor on the median difference,
//!    n ≥ 5 per side, Holm–Bonferroni across the gated figures ([`stats`]).
//!
//! A budget failure or a REGRESSED figure exits 3, one line per figure; INCONCLUSIVE warns.
//! Only medians are gated, never p90 or max (the max only against the coarse 2 × budget).

pub mod baseline;
pub mod cli;
pub mod compare;
pub mod config;
pub mod drive;
pub mod interleave;
pub mod junit;
pub mod markdown;
pub mod stats;

use crate::exit;
use crate::figure::Timings;
use crate::record::{RunData, Sample, Status};
use baseline::{Baseline, Configuration};
use config::{Gate, Thresholds};

/// Confidence of the Hodges–Lehmann interval.
pub const CONFIDENCE: f64 = 0.95;

/// The relative test's outcome for one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Regressed,
    Same,
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Regressed => "REGRESSED",
            Verdict::Same => "SAME",
            Verdict::Inconclusive => "INCONCLUSIVE",
        })
    }
}

/// The candidate against the baseline for one figure.
#[derive(Debug, Clone)]
pub struct Relative {
    pub n_baseline: usize,
    pub median_baseline_us: f64,
    /// Hodges–Lehmann ratio candidate / baseline and its interval (absent below n ≥ 2 or so).
    pub ratio: Option<f64>,
    pub interval: Option<(f64, f64)>,
    /// One-sided p (candidate slower), and after Holm across the gated figures.
    pub p: Option<f64>,
    pub p_holm: Option<f64>,
    pub verdict: Verdict,
    /// Why the verdict is INCONCLUSIVE (or a note on SAME).
    pub why: String,
}

/// The budget check of one figure.
#[derive(Debug, Clone)]
pub struct Budget {
    pub expr: String,
    pub budget_us: u64,
    /// Why it failed: the median, or the trials over 2 × budget.
    pub failures: Vec<String>,
}

/// Everything the gate says about one gated figure.
#[derive(Debug, Clone)]
pub struct FigureGate {
    pub key: String,
    /// The candidate's samples in µs, trial order.
    pub values_us: Vec<u64>,
    pub median_us: Option<f64>,
    pub max_us: Option<u64>,
    /// How the figure was measured (from its samples).
    pub how: String,
    pub budget: Budget,
    /// `None` when there is no baseline to compare with (`why_no_relative` says why).
    pub relative: Option<Relative>,
    pub why_no_relative: String,
    /// REGRESSED in this batch but not in the one it confirms (or is confirmed by): a warning.
    pub unconfirmed: bool,
}

impl FigureGate {
    /// A line per reason this figure fails the gate.
    pub fn failure_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .budget
            .failures
            .iter()
            .map(|f| format!("{} {f}", self.key))
            .collect();
        if let (Some(r), Some(m)) = (&self.relative, self.median_us) {
            if r.verdict == Verdict::Regressed && !self.unconfirmed {
                lines.push(format!(
                    "{} p50 {} vs {}, ratio {} {}, p = {}",
                    self.key,
                    fmt_us(m),
                    fmt_us(r.median_baseline_us),
                    fmt_ratio(r.ratio),
                    fmt_interval(r.interval),
                    fmt_p(r.p_holm)
                ));
            }
        }
        lines
    }

    /// The figure's summary verdict: FAIL (budget), REGRESSED, SAME, INCONCLUSIVE, PASS
    /// (budget only, nothing to compare with) or NOT MEASURED.
    pub fn status(&self) -> &'static str {
        if self.values_us.is_empty() {
            "NOT MEASURED"
        } else if !self.budget.failures.is_empty() {
            "FAIL"
        } else {
            match self.relative.as_ref().map(|r| r.verdict) {
                Some(Verdict::Regressed) if self.unconfirmed => "UNCONFIRMED",
                Some(Verdict::Regressed) => "REGRESSED",
                Some(Verdict::Same) => "SAME",
                Some(Verdict::Inconclusive) => "INCONCLUSIVE",
                None => "PASS",
            }
        }
    }
}

/// The gate's verdict on a run.
#[derive(Debug, Clone)]
pub struct GateReport {
    pub run_id: String,
    /// Failed trials (`phase 5 trial 3/10: …`), and an interrupted run.
    pub correctness: Vec<String>,
    pub figures: Vec<FigureGate>,
    pub thresholds: Thresholds,
    /// Smallest median difference a regression must have, µs.
    pub floor_us: f64,
    /// Where the baseline came from, or why there is none.
    pub baseline: String,
    /// Configuration fields in which the baseline differs (compared only when allowed).
    pub config_differences: Vec<String>,
}

impl GateReport {
    /// 0 pass (warnings allowed), 1 a phase failed, 3 a figure failed its budget or regressed.
    pub fn exit_code(&self) -> u8 {
        if !self.correctness.is_empty() {
            exit::PHASE_FAILED
        } else if self.figures.iter().any(|f| !f.failure_lines().is_empty()) {
            exit::GATE_FAILED
        } else {
            exit::PASS
        }
    }

    /// One line per failure: the correctness failures, then each figure's.
    pub fn failure_lines(&self) -> Vec<String> {
        let mut lines = self.correctness.clone();
        lines.extend(self.figures.iter().flat_map(|f| f.failure_lines()));
        lines
    }

    /// Figures that fail only by the relative test (their budgets hold), if nothing else fails:
    /// what a confirming batch is run for.
    pub fn only_regressed(&self) -> Option<Vec<String>> {
        let budget_ok = self.figures.iter().all(|f| f.budget.failures.is_empty());
        let keys: Vec<String> = self
            .figures
            .iter()
            .filter(|f| f.status() == "REGRESSED")
            .map(|f| f.key.clone())
            .collect();
        (self.correctness.is_empty() && budget_ok && !keys.is_empty()).then_some(keys)
    }

    /// Whether any gated figure's relative verdict is INCONCLUSIVE.
    pub fn inconclusive(&self) -> bool {
        self.figures.iter().any(|f| f.status() == "INCONCLUSIVE")
    }

    /// One line per INCONCLUSIVE figure, saying why.
    pub fn warning_lines(&self) -> Vec<String> {
        self.figures
            .iter()
            .filter_map(|f| match (&f.relative, f.status()) {
                (Some(r), "INCONCLUSIVE") => Some(format!("{} INCONCLUSIVE: {}", f.key, r.why)),
                (Some(_), "UNCONFIRMED") => Some(format!(
                    "{} REGRESSED in one batch, not in the other: unconfirmed, not a failure",
                    f.key
                )),
                _ => None,
            })
            .collect()
    }
}

/// Why the relative test cannot use a baseline: there is none, or its configuration differs.
#[derive(Debug, thiserror::Error)]
#[error("the baseline samples ({run_id}) were taken under another configuration: {}; take them again with `harness gate --update-baseline RUN_DIR`, or pass --allow-config-change to compare anyway", differences.join(", "))]
pub struct ConfigMismatch {
    pub run_id: String,
    pub differences: Vec<String>,
}

/// Apply the gate to a run. `baseline` is the stored samples, if any; a baseline taken under a
/// different configuration is refused unless `allow_config_change`.
pub fn evaluate(
    run: &RunData,
    gate: &Gate,
    baseline: Option<&Baseline>,
    allow_config_change: bool,
) -> Result<GateReport, GateError> {
    let thresholds = gate.file.relative;
    let timings = Timings {
        raft: run.config.raft,
        detector: run.config.detector,
    };
    let tick_ms = 1.5 * run.config.raft.heartbeat_ms as f64;
    let floor_us = thresholds.floor_ms.max(tick_ms) * 1000.0;
    let config_differences = match baseline {
        Some(b) => b.config.differences(&Configuration::of(run)),
        None => vec![],
    };
    if let Some(b) = baseline {
        if !config_differences.is_empty() && !allow_config_change {
            return Err(GateError::Config(ConfigMismatch {
                run_id: b.run_id.clone(),
                differences: config_differences,
            }));
        }
    }
    let by_key = run.samples_by_figure();
    let mut figures = Vec::new();
    for (key, span) in &gate.file.budget {
        let budget_us = span
            .eval(&timings)
            .map_err(|e| GateError::Budget(format!("budget of {key} ('{span}'): {e}")))?
            .hi_us;
        let samples: Vec<&Sample> = by_key
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        let values_us: Vec<u64> = samples.iter().map(|s| s.value_us).collect();
        figures.push(figure(
            key,
            span.text(),
            budget_us,
            values_us,
            how(&samples),
            baseline,
        ));
    }
    holm_across(&mut figures, &thresholds, floor_us);
    let mut correctness: Vec<String> = run
        .trials
        .iter()
        .filter(|t| t.status == Status::Fail)
        .map(|t| {
            format!(
                "phase {} {} trial {}/{} FAIL: {}",
                t.id,
                t.name,
                t.trial,
                t.trials,
                t.error.as_deref().unwrap_or("no error recorded")
            )
        })
        .collect();
    if run.interrupted {
        correctness.push("the run was interrupted before it finished".into());
    }
    Ok(GateReport {
        run_id: run.run_id.clone(),
        correctness,
        figures,
        thresholds,
        floor_us,
        baseline: match baseline {
            Some(b) => format!("run {} ({})", b.run_id, b.command),
            None => format!(
                "none: {} does not exist (write it with `harness gate --update-baseline RUN_DIR`)",
                gate.samples_path().display()
            ),
        },
        config_differences,
    })
}

/// Bad gate input: exit 2.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Config(#[from] ConfigMismatch),
    #[error("{0}")]
    Budget(String),
}

fn figure(
    key: &str,
    expr: &str,
    budget_us: u64,
    values_us: Vec<u64>,
    how: String,
    baseline: Option<&Baseline>,
) -> FigureGate {
    let as_f64: Vec<f64> = values_us.iter().map(|&v| v as f64).collect();
    let median_us = stats::median(&as_f64);
    let max_us = values_us.iter().copied().max();
    let mut failures = Vec::new();
    if let Some(m) = median_us {
        if m > budget_us as f64 {
            failures.push(format!(
                "p50 {} over its budget {} ({expr})",
                fmt_us(m),
                fmt_us(budget_us as f64)
            ));
        }
    }
    let over: Vec<String> = values_us
        .iter()
        .enumerate()
        .filter(|(_, &v)| v > 2 * budget_us)
        .map(|(i, &v)| format!("trial {} {}", i + 1, fmt_us(v as f64)))
        .collect();
    if !over.is_empty() {
        failures.push(format!(
            "{} over twice its budget {} ({expr})",
            over.join(", "),
            fmt_us(2.0 * budget_us as f64)
        ));
    }
    let (relative, why_no_relative) = match baseline.map(|b| b.figures.get(key)) {
        _ if values_us.is_empty() => (None, "not measured in this run".to_string()),
        None => (None, "no baseline samples".into()),
        Some(None) => (None, "the baseline has no samples of this figure".into()),
        Some(Some(base)) => (Some(relative(&as_f64, base)), String::new()),
    };
    FigureGate {
        key: key.to_string(),
        values_us,
        median_us,
        max_us,
        how,
        budget: Budget {
            expr: expr.to_string(),
            budget_us,
            failures,
        },
        relative,
        why_no_relative,
        unconfirmed: false,
    }
}

/// How a figure was measured: its method(s), resolution and the first trial's endpoints.
fn how(samples: &[&Sample]) -> String {
    let Some(first) = samples.first() else {
        return String::new();
    };
    let mut methods: Vec<&str> = samples.iter().map(|s| s.method.as_str()).collect();
    methods.sort_unstable();
    methods.dedup();
    let resolution = samples.iter().map(|s| s.resolution_us).max().unwrap_or(0);
    format!(
        "{} over {} trial(s), resolution ≤ {}; trial 1: {}",
        methods.join(", "),
        samples.len(),
        fmt_us(resolution as f64),
        first.how
    )
}

/// The test statistics of one figure; the verdict is settled by [`holm_across`].
pub(crate) fn relative(candidate: &[f64], base: &[u64]) -> Relative {
    let base: Vec<f64> = base.iter().map(|&v| v as f64).collect();
    let hl = stats::hodges_lehmann(candidate, &base, CONFIDENCE);
    Relative {
        n_baseline: base.len(),
        median_baseline_us: stats::median(&base).unwrap_or(0.0),
        ratio: hl.map(|h| h.ratio),
        interval: hl.and_then(|h| h.interval),
        p: stats::mann_whitney_greater(candidate, &base).map(|m| m.p),
        p_holm: None,
        verdict: Verdict::Inconclusive,
        why: String::new(),
    }
}

/// Holm across the figures that have a p, then each figure's verdict.
fn holm_across(figures: &mut [FigureGate], th: &Thresholds, floor_us: f64) {
    let mut items: Vec<Compared> = figures
        .iter_mut()
        .filter_map(|f| {
            let (n, median) = (f.values_us.len(), f.median_us.unwrap_or(0.0));
            f.relative.as_mut().map(|r| (n, median, r))
        })
        .collect();
    settle(&mut items, th, floor_us);
}

/// A compared figure: the candidate's n and median (µs), and its relative test.
type Compared<'a> = (usize, f64, &'a mut Relative);

/// Holm across the figures that have a p, then each one's verdict (the gate's and
/// `harness compare`'s).
pub(crate) fn settle(items: &mut [Compared], th: &Thresholds, floor_us: f64) {
    let with_p: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].2.p.is_some())
        .collect();
    let ps: Vec<f64> = with_p
        .iter()
        .map(|&i| items[i].2.p.unwrap_or(1.0))
        .collect();
    for (&i, adj) in with_p.iter().zip(stats::holm(&ps)) {
        items[i].2.p_holm = Some(adj);
    }
    for (n, median, r) in items.iter_mut() {
        let (verdict, why) = decide(r, *n, *median, th, floor_us, with_p.len());
        r.verdict = verdict;
        r.why = why;
    }
}

/// GATING.md §1.3's verdict: REGRESSED when p < α, ratio ≥ T, interval low > L and the median
/// difference ≥ the floor; SAME when the interval's high < T; else INCONCLUSIVE, saying why.
fn decide(
    r: &Relative,
    n: usize,
    median_us: f64,
    th: &Thresholds,
    floor_us: f64,
    family: usize,
) -> (Verdict, String) {
    if n < th.min_n || r.n_baseline < th.min_n {
        return (
            Verdict::Inconclusive,
            format!(
                "n = {n} candidate, {} baseline: fewer than {} per side (the smallest one-sided p at 4×4 is 0.014)",
                r.n_baseline, th.min_n
            ),
        );
    }
    let (Some(ratio), Some((lo, hi)), Some(p)) = (r.ratio, r.interval, r.p_holm) else {
        return (
            Verdict::Inconclusive,
            "no interval at these sample sizes".into(),
        );
    };
    let diff = median_us - r.median_baseline_us;
    let mut missing = Vec::new();
    if p >= th.alpha {
        // Even total separation may be unable to reach α: say so, and what would.
        let best = (smallest_p(n, r.n_baseline) * family as f64).min(1.0);
        if best >= th.alpha {
            missing.push(format!(
                "p = {} ≥ {}: {n}×{} trials across {family} figure(s) cannot go below {} (more trials)",
                fmt_p(Some(p)),
                th.alpha,
                r.n_baseline,
                fmt_p(Some(best))
            ));
        } else {
            missing.push(format!("p = {} ≥ {}", fmt_p(Some(p)), th.alpha));
        }
    }
    if ratio < th.t {
        missing.push(format!("ratio {ratio:.2} < {}", th.t));
    }
    if lo <= th.l {
        missing.push(format!("interval low {lo:.2} ≤ {}", th.l));
    }
    if diff < floor_us {
        missing.push(format!(
            "median difference {} < floor {}",
            fmt_signed_us(diff),
            fmt_us(floor_us)
        ));
    }
    if missing.is_empty() {
        (Verdict::Regressed, String::new())
    } else if hi < th.t {
        (Verdict::Same, format!("interval high {hi:.2} < {}", th.t))
    } else {
        (
            Verdict::Inconclusive,
            format!(
                "interval [{lo:.2}, {hi:.2}] reaches {} but not regressed: {}",
                th.t,
                missing.join(", ")
            ),
        )
    }
}

/// The smallest one-sided p of an exact U test at n×m: every candidate above every baseline,
/// `1 / C(n + m, n)`.
fn smallest_p(n: usize, m: usize) -> f64 {
    (1..=n).fold(1.0, |acc, i| acc * i as f64 / (m + i) as f64)
}

/// `9.10 s`, `452 ms`.
pub fn fmt_us(us: f64) -> String {
    if us.abs() >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else {
        format!("{:.0} ms", us / 1e3)
    }
}

fn fmt_signed_us(us: f64) -> String {
    if us < 0.0 {
        format!("−{}", fmt_us(-us))
    } else {
        fmt_us(us)
    }
}

pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

pub fn fmt_interval(i: Option<(f64, f64)>) -> String {
    i.map_or("[-]".into(), |(lo, hi)| format!("[{lo:.2}, {hi:.2}]"))
}

/// `3.0e-5`, `0.042`.
pub fn fmt_p(p: Option<f64>) -> String {
    match p {
        None => "-".into(),
        Some(p) if p < 0.001 => format!("{p:.1e}"),
        Some(p) => format!("{p:.3}"),
    }
}

#[cfg(test)]
pub(crate) mod tests;
