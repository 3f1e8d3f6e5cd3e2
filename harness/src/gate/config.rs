//! `reports/baseline.toml`: which figures are gated, their budgets in terms of the run's
//! configuration, the relative test's thresholds, and where the baseline samples are kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::figure::Span;

/// The gate's file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateFile {
    /// The stored baseline samples, relative to this file (`baseline-samples.json`).
    #[serde(default = "default_samples")]
    pub samples: PathBuf,
    #[serde(default)]
    pub relative: Thresholds,
    /// Figure key (`coordinator-failover.election_ms`) → budget (`lease + election_max + tick`).
    /// Only these figures are gated.
    pub budget: BTreeMap<String, Span>,
}

fn default_samples() -> PathBuf {
    PathBuf::from("baseline-samples.json")
}

/// The relative test's parameters (GATING.md §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// REGRESSED needs the Hodges–Lehmann ratio ≥ `t`; SAME needs the interval's top < `t`.
    pub t: f64,
    /// REGRESSED needs the interval's bottom > `l`.
    pub l: f64,
    /// Family-wise significance level, shared by the gated figures through Holm.
    pub alpha: f64,
    /// Fewest trials per side for a verdict other than INCONCLUSIVE.
    pub min_n: usize,
    /// Smallest median difference that can count as a regression, before the Raft tick
    /// (the floor is the larger of the two).
    pub floor_ms: f64,
}

impl Default for Thresholds {
    /// Against a stored baseline: T, L = 1.5, 1.25; α = 0.01; n ≥ 5; floor 50 ms.
    fn default() -> Self {
        Thresholds {
            t: 1.5,
            l: 1.25,
            alpha: 0.01,
            min_n: 5,
            floor_ms: 50.0,
        }
    }
}

/// A loaded gate file and where its baseline samples live.
#[derive(Debug, Clone)]
pub struct Gate {
    pub path: PathBuf,
    pub file: GateFile,
}

impl Gate {
    pub fn load(path: &Path) -> anyhow::Result<Gate> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let file: GateFile =
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let t = &file.relative;
        if !(t.l > 0.0 && t.t > t.l && 0.0 < t.alpha && t.alpha < 1.0 && t.min_n >= 2) {
            anyhow::bail!(
                "{}: [relative] needs 0 < l < t, 0 < alpha < 1 and min_n ≥ 2",
                path.display()
            );
        }
        Ok(Gate {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn samples_path(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) => dir.join(&self.file.samples),
            None => self.file.samples.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_gate_file_loads_and_its_budgets_evaluate_at_seed_timings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports/baseline.toml");
        let gate = Gate::load(&path).unwrap();
        assert_eq!(gate.file.relative, Thresholds::default());
        let seed = crate::figure::Timings {
            raft: crate::backend::RaftTimings::SEED,
            detector: Some(crate::backend::DetectorTimings::SEED),
        };
        let budget = |key: &str| gate.file.budget[key].eval(&seed).unwrap().hi_us;
        // lease 3 s + election_max 3 s + tick 0.75 s + 100 ms.
        assert_eq!(budget("coordinator-failover.election_ms"), 6_850_000);
        assert_eq!(budget("worker-failover.failover_ms"), 5_500_000);
        assert_eq!(budget("worker-failover.detection_ms"), 5_200_000);
        assert!(gate
            .samples_path()
            .ends_with("reports/baseline-samples.json"));
    }

    #[test]
    fn unknown_keys_and_bad_budgets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        for (text, want) in [
            ("[budget]\n\"a.b\" = \"grace + 3\"\n", "needs a unit"),
            ("bogus = 1\n[budget]\n", "unknown field"),
            ("[relative]\nt = 1.1\nl = 1.2\n[budget]\n", "0 < l < t"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Gate::load(&path).unwrap_err());
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
