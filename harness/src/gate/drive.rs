//! `--gate FILE` on a run: the gate drives the run, so an INCONCLUSIVE figure gets the one
//! pre-declared extra batch (GATING.md §1.3): the same plan once more with the next seed, both
//! batches pooled (n → 2n) and retested at α / 2. Still INCONCLUSIVE is a warning, exit 0;
//! never "rerun until significant".

use std::future::Future;
use std::path::{Path, PathBuf};

use super::cli::{apply_with, stored_baseline};
use super::config::Gate;
use super::evaluate;
use crate::exit;
use crate::record::RunData;

/// Gate `first` (written in `dir`); `again` runs the extra batch when one is needed. Refreshes
/// `out/latest` with what was gated. Returns the exit code.
pub async fn drive<F, Fut>(
    first: RunData,
    dir: PathBuf,
    gate: &Gate,
    root: &Path,
    out: &Path,
    again: F,
) -> u8
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<(RunData, PathBuf)>>,
{
    let baseline = match stored_baseline(gate) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let latest = out.join("latest");
    let needs_batch = matches!(
        evaluate(&first, gate, baseline.as_ref(), false),
        Ok(r) if r.exit_code() == exit::PASS && r.inconclusive()
    );
    if !needs_batch {
        let code = apply_with(&dir, &first, gate, baseline.as_ref(), false, root);
        for file in ["gate.md", "junit.xml"] {
            let _ = std::fs::copy(dir.join(file), latest.join(file));
        }
        return code;
    }
    eprintln!(
        "gate: INCONCLUSIVE after run {}; running the pre-declared extra batch once",
        first.run_id
    );
    let (second, dir2) = match again().await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: extra batch: {e:#}");
            return exit::HARNESS_ERROR;
        }
    };
    if second.interrupted {
        return exit::INTERRUPTED;
    }
    let id = format!("{}+{}", first.run_id, second.run_id);
    let merged = super::interleave::merge(&[first.clone(), second], &id, &first.command);
    let merged_dir = dir2
        .parent()
        .map_or_else(|| PathBuf::from(&id), |p| p.join(&id));
    if let Err(e) = crate::report::save_run(&merged_dir, &merged) {
        eprintln!("error: {e:#}");
        return exit::HARNESS_ERROR;
    }
    let mut retest = gate.clone();
    retest.file.relative.alpha /= 2.0;
    let code = apply_with(
        &merged_dir,
        &merged,
        &retest,
        baseline.as_ref(),
        false,
        root,
    );
    if let Err(e) = crate::cli::mirror(&merged_dir, &latest) {
        eprintln!("warning: could not refresh {}: {e:#}", latest.display());
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::baseline::Baseline;
    use crate::gate::tests::{gate, run};

    const KEY: &str = "coordinator-failover.election_ms";

    fn setup(t: &Path) -> Gate {
        let mut g = gate(&[(KEY, "10s")]);
        g.path = t.join("baseline.toml");
        let base: Vec<f64> = (0..10).map(|i| 1000.0 + 10.0 * i as f64).collect();
        Baseline::from_run(&run(600, &[("coordinator-failover", "election_ms", &base)]))
            .unwrap()
            .save(&t.join("baseline-samples.json"))
            .unwrap();
        g
    }

    fn slow(n: usize, id: &str) -> RunData {
        let v: Vec<f64> = (0..n).map(|i| 2000.0 + 10.0 * i as f64).collect();
        let mut r = run(600, &[("coordinator-failover", "election_ms", &v)]);
        r.run_id = id.into();
        r
    }

    #[tokio::test]
    async fn an_inconclusive_first_batch_gets_one_extra_batch_retested_at_half_alpha() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let g = setup(t);
        let runs = t.join("runs");
        let dir1 = runs.join("b1");
        std::fs::create_dir_all(&dir1).unwrap();
        let mut calls = 0;
        // 4 trials: INCONCLUSIVE (n < 5); with the extra batch 8, clearly slower.
        let code = drive(slow(4, "b1"), dir1, &g, t, t, || {
            calls += 1;
            let dir2 = runs.join("b2");
            std::fs::create_dir_all(&dir2).unwrap();
            async move { Ok((slow(4, "b2"), dir2)) }
        })
        .await;
        assert_eq!((code, calls), (exit::GATE_FAILED, 1));
        let md = std::fs::read_to_string(runs.join("b1+b2/gate.md")).unwrap();
        assert!(md.contains("REGRESSED when p < 0.005"), "{md}");
        assert!(md.contains(&format!("| {KEY} | REGRESSED | 8 |")), "{md}");
        assert!(t.join("latest/junit.xml").exists());
    }

    #[tokio::test]
    async fn a_conclusive_batch_runs_nothing_more() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let g = setup(t);
        let dir1 = t.join("runs/b1");
        std::fs::create_dir_all(&dir1).unwrap();
        std::fs::create_dir_all(t.join("latest")).unwrap();
        let code = drive(slow(6, "b1"), dir1.clone(), &g, t, t, || async {
            panic!("no extra batch for a conclusive verdict")
        })
        .await;
        assert_eq!(code, exit::GATE_FAILED);
        assert!(dir1.join("gate.md").exists() && t.join("latest/gate.md").exists());
    }
}
