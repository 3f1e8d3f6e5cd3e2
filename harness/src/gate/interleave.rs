//! Interleaved mode: `harness gate --baseline-bin OLD --candidate-bin NEW --phases 3,5 --repeat
//! 10`. Runs the phases on the two cluster builds alternately on one machine, one trial each
//! (ABAB, each a whole run with its own cluster and the same seed for both sides of a round),
//! so machine noise lands on both sides alike; then gates NEW against OLD with the tighter
//! thresholds of GATING.md §1.3 (T, L = 1.2, 1.05). An INCONCLUSIVE verdict gets one extra
//! batch of as many rounds, retested at α / 2.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::baseline::Baseline;
use super::config::{Gate, Thresholds};
use crate::cli::RunArgs;
use crate::exit;
use crate::record::RunData;

/// Interleaved thresholds: both sides see the same machine, so a smaller ratio is trusted.
pub fn thresholds(stored: &Thresholds) -> Thresholds {
    Thresholds {
        t: 1.2,
        l: 1.05,
        ..*stored
    }
}

/// One run of a side: `repeat` = 1, the side's binary, the round's seed, its own out dir.
fn side_args(args: &RunArgs, bin: &Path, seed: u64, out: PathBuf) -> RunArgs {
    RunArgs {
        repeat: 1,
        cluster_bin: Some(bin.to_path_buf()),
        seed: Some(seed),
        out: Some(out),
        gate: None,
        ..args.clone()
    }
}

pub async fn run(args: &RunArgs, old: &Path, new: &Path, gate: &Gate, root: &Path) -> u8 {
    if args.repeat < gate.file.relative.min_n as u32 {
        eprintln!(
            "error: --repeat {} gives fewer than {} trials a side: nothing could be concluded",
            args.repeat, gate.file.relative.min_n
        );
        return exit::INVALID_INPUT;
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let out = args.out.clone().unwrap_or_else(|| root.join("reports"));
    let stamp = jiff::Zoned::now().strftime("%Y%m%d-%H%M%S").to_string();
    let work = out.join("runs").join(format!("{stamp}-interleaved"));
    let mut sides: [Vec<RunData>; 2] = [vec![], vec![]];
    let all = Rounds {
        args,
        old,
        new,
        work: &work,
        seed,
    };
    if let Err(code) = all.run(0..args.repeat, &mut sides).await {
        return code;
    }
    let mut gate = gate.clone();
    gate.file.relative = thresholds(&gate.file.relative);
    let (base, cand) = sides_as_runs(&sides, &stamp, &all.command());
    // The one pre-declared extra batch: as many rounds again, retested at α / 2.
    if let Ok(b) = Baseline::from_run(&base) {
        let first = super::evaluate(&cand, &gate, Some(&b), false);
        if matches!(first, Ok(r) if r.exit_code() == exit::PASS && r.inconclusive()) {
            eprintln!(
                "harness gate: INCONCLUSIVE; running the pre-declared extra batch of {} rounds once",
                args.repeat
            );
            if let Err(code) = all.run(args.repeat..2 * args.repeat, &mut sides).await {
                return code;
            }
            gate.file.relative.alpha /= 2.0;
        }
    }
    let (base, cand) = sides_as_runs(&sides, &stamp, &all.command());
    let saved = crate::report::save_run(&work.join("baseline"), &base)
        .and_then(|_| crate::report::save_run(&work, &cand));
    if let Err(e) = saved {
        eprintln!("error: {e:#}");
        return exit::HARNESS_ERROR;
    }
    let baseline = match Baseline::from_run(&base) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: the baseline build failed: {e:#}");
            return exit::PHASE_FAILED;
        }
    };
    super::cli::apply_with(&work, &cand, &gate, Some(&baseline), false, root)
}

/// What every round shares.
struct Rounds<'a> {
    args: &'a RunArgs,
    old: &'a Path,
    new: &'a Path,
    work: &'a Path,
    seed: u64,
}

impl Rounds<'_> {
    fn command(&self) -> String {
        format!(
            "harness gate --baseline-bin {} --candidate-bin {} --phases {} --repeat {} --seed {}",
            self.old.display(),
            self.new.display(),
            self.args.phases,
            self.args.repeat,
            self.seed
        )
    }

    /// Rounds `range` (0-based): baseline then candidate, one trial each, appended to `sides`.
    async fn run(
        &self,
        range: std::ops::Range<u32>,
        sides: &mut [Vec<RunData>; 2],
    ) -> Result<(), u8> {
        for round in range {
            for (i, (label, bin)) in [("baseline", self.old), ("candidate", self.new)]
                .into_iter()
                .enumerate()
            {
                let dir = self.work.join(format!("{label}-{:02}", round + 1));
                eprintln!(
                    "harness gate: round {}, {label} ({})",
                    round + 1,
                    bin.display()
                );
                let seed = self.seed.wrapping_add(round as u64);
                let code = crate::cli::run(side_args(self.args, bin, seed, dir.clone())).await;
                if matches!(
                    code,
                    exit::INVALID_INPUT | exit::HARNESS_ERROR | exit::INTERRUPTED
                ) {
                    return Err(code);
                }
                match super::cli::load_run(&dir.join("latest")) {
                    Ok(data) => sides[i].push(data),
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        return Err(exit::HARNESS_ERROR);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Each side's runs merged into one run: (baseline, candidate).
fn sides_as_runs(sides: &[Vec<RunData>; 2], stamp: &str, command: &str) -> (RunData, RunData) {
    (
        merge(&sides[0], &format!("{stamp}-baseline"), command),
        merge(&sides[1], &format!("{stamp}-candidate"), command),
    )
}

/// One side's runs as one run: trials in order, numbered per phase across the runs.
pub fn merge(runs: &[RunData], run_id: &str, command: &str) -> RunData {
    let mut merged = runs[0].clone();
    merged.run_id = run_id.to_string();
    merged.command = command.to_string();
    merged.trials = runs.iter().flat_map(|r| r.trials.iter().cloned()).collect();
    merged.interrupted = runs.iter().any(|r| r.interrupted);
    let mut totals: BTreeMap<String, u32> = BTreeMap::new();
    for t in &merged.trials {
        *totals.entry(t.id.clone()).or_default() += 1;
    }
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for t in &mut merged.trials {
        let n = seen.entry(t.id.clone()).or_default();
        *n += 1;
        t.trial = *n;
        t.trials = totals[&t.id];
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::tests::run;

    #[test]
    fn merged_runs_number_their_trials_across_rounds() {
        let one = |v: f64| run(600, &[("coordinator-failover", "election_ms", &[v])]);
        let merged = merge(&[one(1000.0), one(1100.0), one(1200.0)], "m", "cmd");
        let numbers: Vec<(u32, u32)> = merged.trials.iter().map(|t| (t.trial, t.trials)).collect();
        assert_eq!(numbers, [(1, 3), (2, 3), (3, 3)]);
        let b = Baseline::from_run(&merged).unwrap();
        assert_eq!(
            b.figures["coordinator-failover.election_ms"],
            [1_000_000, 1_100_000, 1_200_000]
        );
        assert_eq!(
            (merged.run_id.as_str(), merged.command.as_str()),
            ("m", "cmd")
        );
    }

    #[test]
    fn interleaved_thresholds_are_tighter() {
        let t = thresholds(&Thresholds::default());
        assert_eq!((t.t, t.l, t.alpha, t.min_n), (1.2, 1.05, 0.01, 5));
    }
}
