//! `--gate FILE` on a run: the gate drives the run, so it may run one pre-declared second
//! batch (the same plan once more, with the next seed), never more (GATING.md §1.3):
//!
//! - a figure INCONCLUSIVE: both batches pooled (n → 2n) and retested at α / 2; still
//!   INCONCLUSIVE is a warning, exit 0, never "rerun until significant";
//! - a figure REGRESSED against the stored baseline while every budget holds: a confirming
//!   batch, gated alone; only a figure REGRESSED in both fails (CockroachDB's consecutive runs).

use std::future::Future;
use std::path::{Path, PathBuf};

use super::cli::{apply_with, publish, stored_baseline};
use super::config::Gate;
use super::evaluate;
use crate::exit;
use crate::record::RunData;

/// Gate `first` (written in `dir`); `again` runs the second batch when one is needed.
/// Refreshes `out/latest` with what was gated. Returns the exit code.
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
    let report = evaluate(&first, gate, baseline.as_ref(), false).ok();
    let confirm = report.as_ref().and_then(|r| r.only_regressed());
    let pool = report
        .as_ref()
        .is_some_and(|r| r.exit_code() == exit::PASS && r.inconclusive());
    if confirm.is_none() && !pool {
        let code = apply_with(&dir, &first, gate, baseline.as_ref(), false, root);
        for file in ["gate.md", "junit.xml"] {
            let _ = std::fs::copy(dir.join(file), latest.join(file));
        }
        return code;
    }
    match &confirm {
        Some(keys) => eprintln!(
            "gate: REGRESSED in run {}: {}; running one confirming batch (against a stored \
             baseline a regression counts only when the rerun regresses too)",
            first.run_id,
            keys.join(", ")
        ),
        None => eprintln!(
            "gate: INCONCLUSIVE after run {}; running the pre-declared extra batch once",
            first.run_id
        ),
    }
    let (second, dir2) = match again().await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: second batch: {e:#}");
            return exit::HARNESS_ERROR;
        }
    };
    if second.interrupted {
        return exit::INTERRUPTED;
    }
    let (gated_dir, code) = match confirm {
        Some(keys) => {
            // Keep the first batch's verdict on disk, then gate the rerun alone.
            if let Some(r) = &report {
                let _ = std::fs::write(dir.join("gate.md"), super::markdown::render(r));
            }
            (
                dir2.clone(),
                confirmed(&dir2, &second, gate, baseline.as_ref(), &keys, root),
            )
        }
        None => {
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
            (merged_dir, code)
        }
    };
    if let Err(e) = crate::cli::mirror(&gated_dir, &latest) {
        eprintln!("warning: could not refresh {}: {e:#}", latest.display());
    }
    code
}

/// Gate the confirming batch alone; a figure it finds REGRESSED fails only if the first batch
/// found it REGRESSED too (`keys`).
fn confirmed(
    dir: &Path,
    data: &RunData,
    gate: &Gate,
    baseline: Option<&super::baseline::Baseline>,
    keys: &[String],
    root: &Path,
) -> u8 {
    let mut report = match evaluate(data, gate, baseline, false) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID_INPUT;
        }
    };
    for f in &mut report.figures {
        f.unconfirmed = !keys.contains(&f.key);
    }
    for key in keys {
        if !report
            .figures
            .iter()
            .any(|f| &f.key == key && f.status() == "REGRESSED")
        {
            eprintln!(
                "warning: {key} REGRESSED in the first batch only: unconfirmed, not a failure"
            );
        }
    }
    publish(dir, data, &report, root)
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

    fn same(n: usize, id: &str) -> RunData {
        let v: Vec<f64> = (0..n).map(|i| 1000.0 + 10.0 * i as f64).collect();
        let mut r = run(600, &[("coordinator-failover", "election_ms", &v)]);
        r.run_id = id.into();
        r
    }

    /// Drive `first` in a fresh tree; the second batch (if asked for) is `second`.
    async fn drive_two(g: &Gate, t: &Path, first: RunData, second: Option<RunData>) -> (u8, u32) {
        let dir1 = t.join("runs").join(&first.run_id);
        std::fs::create_dir_all(&dir1).unwrap();
        std::fs::create_dir_all(t.join("latest")).unwrap();
        let mut calls = 0;
        let code = drive(first, dir1, g, t, t, || {
            calls += 1;
            let second = second.expect("no second batch was expected");
            let dir2 = t.join("runs").join(&second.run_id);
            std::fs::create_dir_all(&dir2).unwrap();
            async move { Ok((second, dir2)) }
        })
        .await;
        (code, calls)
    }

    #[tokio::test]
    async fn a_regression_fails_only_when_the_confirming_batch_regresses_too() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let g = setup(t);
        let (code, calls) = drive_two(&g, t, slow(6, "b1"), Some(slow(6, "b2"))).await;
        assert_eq!((code, calls), (exit::GATE_FAILED, 1));
        let md = std::fs::read_to_string(t.join("latest/gate.md")).unwrap();
        assert!(
            md.contains("# Gate: run b2") && md.contains(&format!("| {KEY} | REGRESSED | 6 |")),
            "{md}"
        );

        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let g = setup(t);
        let (code, calls) = drive_two(&g, t, slow(6, "b1"), Some(same(6, "b2"))).await;
        assert_eq!((code, calls), (exit::PASS, 1));
        // The first batch's verdict stays on disk beside its run.
        let md1 = std::fs::read_to_string(t.join("runs/b1/gate.md")).unwrap();
        assert!(md1.contains(&format!("| {KEY} | REGRESSED | 6 |")), "{md1}");

        // Regressed in the rerun only: unconfirmed, a warning, skipped in JUnit.
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let mut g = setup(t);
        let other = "coordinator-failover.other_ms";
        g.file
            .budget
            .insert(other.into(), "10s".to_string().try_into().unwrap());
        let mut first = slow(6, "b1");
        let mut second = slow(6, "b2");
        for (r, name) in [(&mut first, "election_ms"), (&mut second, "other_ms")] {
            for t in &mut r.trials {
                t.samples[0].name = name.into();
            }
        }
        let mut base = Baseline::load(&t.join("baseline-samples.json")).unwrap();
        base.figures.insert(other.into(), base.figures[KEY].clone());
        base.save(&t.join("baseline-samples.json")).unwrap();
        let (code, _) = drive_two(&g, t, first, Some(second)).await;
        assert_eq!(code, exit::PASS);
        let md = std::fs::read_to_string(t.join("latest/gate.md")).unwrap();
        assert!(
            md.contains(&format!("| {other} | UNCONFIRMED | 6 |")),
            "{md}"
        );
        let xml = std::fs::read_to_string(t.join("latest/junit.xml")).unwrap();
        assert!(xml.contains("unconfirmed"), "{xml}");
    }

    #[tokio::test]
    async fn same_or_over_budget_runs_nothing_more() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let g = setup(t);
        assert_eq!(drive_two(&g, t, same(6, "b1"), None).await, (exit::PASS, 0));
        assert!(t.join("runs/b1/gate.md").exists() && t.join("latest/gate.md").exists());
        // Over budget needs no confirmation: the budget is coarse by design.
        let mut g = setup(t);
        g.file
            .budget
            .insert(KEY.into(), "1s".to_string().try_into().unwrap());
        assert_eq!(
            drive_two(&g, t, slow(6, "b3"), None).await,
            (exit::GATE_FAILED, 0)
        );
    }
}
