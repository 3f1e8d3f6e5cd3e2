//! `harness gate RUN_DIR` and `--gate FILE` on a run: load, evaluate, write `gate.md` and
//! `junit.xml` into the run directory, print one line per failure, return the exit code.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::baseline::Baseline;
use super::config::Gate;
use super::{evaluate, junit, markdown, GateError};
use crate::exit;
use crate::record::{RunData, Status};

#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    /// The run directory to gate (it holds run.json), e.g. reports/latest. With
    /// --update-baseline, up to three runs of one configuration to pool (oldest first).
    /// None with --baseline-bin/--candidate-bin.
    #[arg(num_args = 0..=3)]
    pub dirs: Vec<PathBuf>,
    /// Store the runs' samples as the baseline (the file named by the gate file's `samples`),
    /// instead of gating. Refused for a run with a failed trial.
    #[arg(long)]
    pub update_baseline: bool,
    /// Compare with a baseline taken under another configuration (the table says what differs).
    #[arg(long)]
    pub allow_config_change: bool,
    /// Interleaved mode: run the phases on this cluster build and on --candidate-bin
    /// alternately, one trial each (ABAB), and gate the candidate against it (T, L = 1.2, 1.05).
    #[arg(long, requires = "candidate_bin", conflicts_with_all = ["dirs", "update_baseline"])]
    pub baseline_bin: Option<PathBuf>,
    /// Interleaved mode: the cluster build under test.
    #[arg(long, requires = "baseline_bin")]
    pub candidate_bin: Option<PathBuf>,
    /// The run's flags (interleaved mode), and --gate FILE: the gate file (default
    /// reports/baseline.toml).
    #[command(flatten)]
    pub run: crate::cli::RunArgs,
}

/// The default gate file of a source tree.
pub fn default_gate_file(root: &Path) -> PathBuf {
    root.join("reports").join("baseline.toml")
}

/// The `gate` subcommand.
pub fn main(args: &GateArgs, root: &Path) -> u8 {
    let path = args
        .run
        .gate
        .clone()
        .unwrap_or_else(|| default_gate_file(root));
    let gate = match Gate::load(&path) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e:#}");
            return exit::INVALID_INPUT;
        }
    };
    if let (Some(a), Some(b)) = (&args.baseline_bin, &args.candidate_bin) {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: start runtime: {e}");
                return exit::HARNESS_ERROR;
            }
        };
        return runtime.block_on(super::interleave::run(&args.run, a, b, &gate, root));
    }
    if args.dirs.is_empty() {
        eprintln!("error: name a run directory to gate (or --baseline-bin and --candidate-bin)");
        return exit::INVALID_INPUT;
    }
    let mut runs = Vec::new();
    for dir in &args.dirs {
        match load_run(dir) {
            Ok(d) => runs.push(d),
            Err(e) => {
                eprintln!("error: {e:#}");
                return exit::INVALID_INPUT;
            }
        }
    }
    if args.update_baseline {
        return update_baseline(&runs, &gate);
    }
    let [dir] = args.dirs.as_slice() else {
        eprintln!("error: gate one run directory at a time (several only with --update-baseline)");
        return exit::INVALID_INPUT;
    };
    apply(dir, &runs[0], &gate, args.allow_config_change, root)
}

pub fn load_run(dir: &Path) -> anyhow::Result<RunData> {
    let path = dir.join(crate::report::RUN_DATA);
    let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))
}

fn update_baseline(runs: &[RunData], gate: &Gate) -> u8 {
    let baseline = match Baseline::pool(runs) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A failed run keeps "a phase failed"; runs of different configurations are bad input.
            let failed = runs
                .iter()
                .any(|r| r.interrupted || r.trials.iter().any(|t| t.status == Status::Fail));
            return if failed {
                exit::PHASE_FAILED
            } else {
                exit::INVALID_INPUT
            };
        }
    };
    let path = gate.samples_path();
    if let Err(e) = baseline.save(&path) {
        eprintln!("error: {e:#}");
        return exit::HARNESS_ERROR;
    }
    let figures: Vec<String> = baseline
        .figures
        .iter()
        .map(|(k, v)| format!("{k} (n = {})", v.len()))
        .collect();
    println!(
        "gate: baseline samples of run {} written to {}: {}",
        baseline.run_id,
        path.display(),
        figures.join(", ")
    );
    exit::PASS
}

/// Gate a run that is in `dir` against the stored baseline; writes `gate.md` and `junit.xml`.
pub fn apply(
    dir: &Path,
    data: &RunData,
    gate: &Gate,
    allow_config_change: bool,
    root: &Path,
) -> u8 {
    match stored_baseline(gate) {
        Ok(baseline) => apply_with(
            dir,
            data,
            gate,
            baseline.as_ref(),
            allow_config_change,
            root,
        ),
        Err(code) => code,
    }
}

/// The stored baseline samples, `None` (with a warning) when there are none; `Err(exit code)`
/// when they do not parse.
pub fn stored_baseline(gate: &Gate) -> Result<Option<Baseline>, u8> {
    let samples = gate.samples_path();
    if !samples.exists() {
        eprintln!(
            "warning: no baseline samples at {}: budgets only (write them with `harness gate --update-baseline RUN_DIR`)",
            samples.display()
        );
        return Ok(None);
    }
    match Baseline::load(&samples) {
        Ok(b) => Ok(Some(b)),
        Err(e) => {
            eprintln!("error: {e:#}");
            Err(exit::INVALID_INPUT)
        }
    }
}

/// Gate a run against a given baseline; writes `gate.md` and `junit.xml` into `dir`.
pub fn apply_with(
    dir: &Path,
    data: &RunData,
    gate: &Gate,
    baseline: Option<&Baseline>,
    allow_config_change: bool,
    root: &Path,
) -> u8 {
    let report = match evaluate(data, gate, baseline, allow_config_change) {
        Ok(r) => r,
        Err(e @ (GateError::Config(_) | GateError::Budget(_))) => {
            eprintln!("error: {e}");
            return exit::INVALID_INPUT;
        }
    };
    publish(dir, data, &report, root)
}

/// Write `gate.md` and `junit.xml` of a report into `dir`, print its lines; the exit code.
pub fn publish(dir: &Path, data: &RunData, report: &super::GateReport, root: &Path) -> u8 {
    let revision = git_revision(root);
    let written = std::fs::write(dir.join("gate.md"), markdown::render(report)).and_then(|_| {
        let id = junit::Identity {
            git_revision: &revision,
        };
        std::fs::write(dir.join("junit.xml"), junit::render(data, report, &id))
    });
    if let Err(e) = written {
        eprintln!("error: write the gate's reports in {}: {e}", dir.display());
        return exit::HARNESS_ERROR;
    }
    for line in report.warning_lines() {
        eprintln!("warning: {line}");
    }
    for line in report.failure_lines() {
        println!("{line}");
    }
    let code = report.exit_code();
    println!(
        "gate: {} ({} figure(s) gated); table: {}, JUnit: {}",
        if code == exit::PASS { "PASS" } else { "FAIL" },
        report.figures.len(),
        dir.join("gate.md").display(),
        dir.join("junit.xml").display()
    );
    code
}

/// The revision being gated: `GIT_COMMIT` (Jenkins), `GITHUB_SHA`, `CI_COMMIT_SHA` (GitLab),
/// else `git rev-parse HEAD` of the source tree, else `unknown`.
fn git_revision(root: &Path) -> String {
    for var in ["GIT_COMMIT", "GITHUB_SHA", "CI_COMMIT_SHA"] {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return v;
            }
        }
    }
    std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
