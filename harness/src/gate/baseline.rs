//! Stored baseline samples (`reports/baseline-samples.json`): the raw per-trial µs of each
//! figure of one passing run, with the configuration they were taken under. Samples taken under
//! another configuration are not compared unless the caller says so.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::backend::{DetectorTimings, RaftTimings};
use crate::record::{RunData, Status};

/// What a figure's distribution depends on besides the code: compared field by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    pub backend: String,
    pub coordinators: u32,
    pub workers: u32,
    pub raft: RaftTimings,
    pub detector: Option<DetectorTimings>,
    pub poll_interval_ms: u64,
    pub probe_timeout_ms: u64,
}

impl Configuration {
    pub fn of(run: &RunData) -> Self {
        let c = &run.config;
        Configuration {
            backend: run.backend.clone(),
            coordinators: c.coordinators,
            workers: c.workers,
            raft: c.raft,
            detector: c.detector,
            poll_interval_ms: c.poll_interval_ms,
            probe_timeout_ms: c.probe_timeout_ms,
        }
    }

    /// Each field that differs, as `name baseline → candidate`.
    pub fn differences(&self, candidate: &Configuration) -> Vec<String> {
        let flat = |c: &Configuration| -> Vec<(String, String)> {
            let mut v = vec![
                ("backend".into(), c.backend.clone()),
                ("coordinators".into(), c.coordinators.to_string()),
                ("workers".into(), c.workers.to_string()),
                ("heartbeat_ms".into(), c.raft.heartbeat_ms.to_string()),
                ("election_min_ms".into(), c.raft.election_min_ms.to_string()),
                ("election_max_ms".into(), c.raft.election_max_ms.to_string()),
                ("poll_interval_ms".into(), c.poll_interval_ms.to_string()),
                ("probe_timeout_ms".into(), c.probe_timeout_ms.to_string()),
            ];
            let d = |f: fn(&DetectorTimings) -> u64| {
                c.detector.map_or("-".into(), |x| f(&x).to_string())
            };
            v.push(("grace_ms".into(), d(|x| x.grace_ms)));
            v.push(("ping_interval_ms".into(), d(|x| x.ping_interval_ms)));
            v.push(("ping_dead_ms".into(), d(|x| x.ping_dead_ms)));
            v.push(("rest_timeout_ms".into(), d(|x| x.rest_timeout_ms)));
            v
        };
        flat(self)
            .into_iter()
            .zip(flat(candidate))
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, b)| format!("{} {} → {}", a.0, a.1, b.1))
            .collect()
    }
}

/// Most samples kept per figure when runs are pooled (GATING.md §1.3: the last ≤ 3 runs, cap 30).
pub const POOL_CAP: usize = 30;

/// The file's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The run(s) the samples come from (comma-separated when pooled), and the first's command.
    pub run_id: String,
    pub command: String,
    pub started_at: String,
    pub config: Configuration,
    /// Figure key → every trial's value in µs, in trial order.
    pub figures: BTreeMap<String, Vec<u64>>,
}

impl Baseline {
    /// The samples of a run that passed every trial; refuses a failed or interrupted run.
    pub fn from_run(run: &RunData) -> anyhow::Result<Baseline> {
        let failed = run
            .trials
            .iter()
            .filter(|t| t.status == Status::Fail)
            .count();
        if failed > 0 || run.interrupted {
            anyhow::bail!(
                "run {} has {failed} failed trial(s){}: a baseline is taken from a passing run only",
                run.run_id,
                if run.interrupted {
                    " and was interrupted"
                } else {
                    ""
                }
            );
        }
        let figures = run
            .samples_by_figure()
            .into_iter()
            .map(|(key, samples)| (key, samples.iter().map(|s| s.value_us).collect()))
            .collect();
        Ok(Baseline {
            run_id: run.run_id.clone(),
            command: run.command.clone(),
            started_at: run.started_at.clone(),
            config: Configuration::of(run),
            figures,
        })
    }

    /// Pool passing runs of one configuration, oldest first: each figure keeps its last
    /// [`POOL_CAP`] samples.
    pub fn pool(runs: &[RunData]) -> anyhow::Result<Baseline> {
        let mut it = runs.iter();
        let first = it.next().context("no run to take a baseline from")?;
        let mut pooled = Baseline::from_run(first)?;
        for run in it {
            let next = Baseline::from_run(run)?;
            let diff = pooled.config.differences(&next.config);
            if !diff.is_empty() {
                anyhow::bail!(
                    "run {} has another configuration than {}: {}",
                    next.run_id,
                    first.run_id,
                    diff.join(", ")
                );
            }
            pooled.run_id = format!("{}, {}", pooled.run_id, next.run_id);
            for (key, values) in next.figures {
                pooled.figures.entry(key).or_default().extend(values);
            }
        }
        for values in pooled.figures.values_mut() {
            let excess = values.len().saturating_sub(POOL_CAP);
            values.drain(..excess);
        }
        Ok(pooled)
    }

    pub fn load(path: &Path) -> anyhow::Result<Baseline> {
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::tests::run;

    #[test]
    fn pooled_runs_keep_the_last_thirty_of_one_configuration() {
        let a: Vec<f64> = (0..20).map(|i| 1000.0 + i as f64).collect();
        let b: Vec<f64> = (0..20).map(|i| 2000.0 + i as f64).collect();
        let fig = |v: &[f64]| run(600, &[("coordinator-failover", "election_ms", v)]);
        let pooled = Baseline::pool(&[fig(&a), fig(&b)]).unwrap();
        let values = &pooled.figures["coordinator-failover.election_ms"];
        assert_eq!(values.len(), 30);
        assert_eq!((values[0], values[29]), (1_010_000, 2_019_000)); // a's last 10, all of b
        assert_eq!(pooled.run_id, "r1, r1");
        let other = run(1200, &[("coordinator-failover", "election_ms", &b)]);
        let err = Baseline::pool(&[fig(&a), other]).unwrap_err().to_string();
        assert!(err.contains("election_max_ms 600 → 1200"), "{err}");
    }
}
