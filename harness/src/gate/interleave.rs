//! Interleaved mode: `harness gate --baseline-bin OLD --candidate-bin NEW --phases 3,5 --repeat
//! 10`. Runs the phases on the two cluster builds alternately on one machine, one trial each
//! (ABAB, each a whole run with its own cluster and the same seed for both sides of a round),
//! so machine noise lands on both sides alike; then gates NEW against OLD with the tighter
//! thresholds of GATING.md §1.3 (T, L = 1.2, 1.05).

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
    for round in 0..args.repeat {
        for (i, (label, bin)) in [("baseline", old), ("candidate", new)]
            .into_iter()
            .enumerate()
        {
            let dir = work.join(format!("{label}-{:02}", round + 1));
            eprintln!(
                "harness gate: round {}/{}, {label} ({})",
                round + 1,
                args.repeat,
                bin.display()
            );
            let round_seed = seed.wrapping_add(round as u64);
            let code = crate::cli::run(side_args(args, bin, round_seed, dir.clone())).await;
            if matches!(
                code,
                exit::INVALID_INPUT | exit::HARNESS_ERROR | exit::INTERRUPTED
            ) {
                return code;
            }
            match super::cli::load_run(&dir.join("latest")) {
                Ok(data) => sides[i].push(data),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return exit::HARNESS_ERROR;
                }
            }
        }
    }
    let command = format!(
        "harness gate --baseline-bin {} --candidate-bin {} --phases {} --repeat {} --seed {seed}",
        old.display(),
        new.display(),
        args.phases,
        args.repeat
    );
    let [base_runs, cand_runs] = sides;
    let base = merge(&base_runs, &format!("{stamp}-baseline"), &command);
    let cand = merge(&cand_runs, &format!("{stamp}-candidate"), &command);
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
    let mut gate = gate.clone();
    gate.file.relative = thresholds(&gate.file.relative);
    super::cli::apply_with(&work, &cand, &gate, Some(&baseline), false, root)
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
