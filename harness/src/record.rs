//! What a run produced, as plain serde data (`run.json`): every trial of every phase, its steps,
//! marks and timing samples. Reports are a pure function of this.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::backend::{RaftTimings, WallUs};
use crate::check::{EventCheck, Tally};
use crate::history::History;
use crate::traffic::collector::Drained;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunData {
    pub run_id: String,
    pub backend: String,
    pub seed: u64,
    /// RFC 3339 wall-clock start.
    pub started_at: String,
    /// The command that reproduces this run.
    pub command: String,
    pub config: RunSettings,
    pub trials: Vec<TrialRecord>,
    /// True when the run was cut short (Ctrl-C or a harness error).
    pub interrupted: bool,
    /// Every publish, arrival, paced run and fault of the run: what the checkers read.
    #[serde(default)]
    pub history: History,
    /// How the final drain went (absent when the run had no traffic).
    #[serde(default)]
    pub final_drain: Option<Drained>,
    /// The run-wide checker's tally ([`crate::check::apply`]), after the final drain.
    #[serde(default)]
    pub tally: Option<Tally>,
}

/// Settings that shape the results; printed in every report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSettings {
    pub coordinators: u32,
    pub workers: u32,
    pub raft: RaftTimings,
    pub poll_interval_ms: u64,
    pub probe_timeout_ms: u64,
    /// Failure-detection timings given to the coordinators (absent in runs without workers).
    #[serde(default)]
    pub detector: Option<crate::backend::DetectorTimings>,
    pub cpu_cores: usize,
    pub harness_version: String,
    /// Quiet period a drain waits for: no arrival on the output topic for this long.
    #[serde(default)]
    pub drain_quiet_ms: u64,
    /// Which MQTT broker carried the events (absent in runs recorded before it was noted).
    #[serde(default)]
    pub broker: Option<String>,
    /// How the cluster was secured (absent in runs recorded before it was noted).
    #[serde(default)]
    pub security: Option<String>,
    /// Filter pipelines of the workload (`--pipelines`).
    #[serde(default = "seed_pipelines")]
    pub pipelines: u32,
    /// The cluster profile (name: description), absent in runs recorded before profiles.
    #[serde(default)]
    pub profile: Option<String>,
    /// Figure sources that fall back for lack of a capability (e.g. no event log → polling).
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

fn seed_pipelines() -> u32 {
    crate::topology::SEED_PIPELINES
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
        })
    }
}

/// One run of one phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrialRecord {
    pub id: String,
    /// The phase file's slug (`worker-failover`): figures are keyed by it.
    #[serde(default)]
    pub slug: String,
    pub name: String,
    pub description: String,
    /// 1-based trial number, of `trials`.
    pub trial: u32,
    pub trials: u32,
    pub status: Status,
    pub started_us: WallUs,
    pub duration_us: u64,
    /// Part of the duration spent on the protocol's own clock: the union of measured
    /// fault → recovery intervals and hold windows.
    #[serde(default)]
    pub floor_us: u64,
    /// The rendered detail line (`old leader: node 1, new leader: node 2, election: 5.2s`).
    pub details: String,
    /// Why the trial failed: the step, its `file:line`, and the cause.
    pub error: Option<String>,
    pub steps: Vec<StepRecord>,
    pub samples: Vec<Sample>,
    /// Fault windows of this trial: each measured interval (name, from, to), wall-clock µs.
    #[serde(default)]
    pub windows: Vec<Window>,
    /// The counts of the events published in this trial that its verdict was judged on.
    #[serde(default)]
    pub events: Option<crate::traffic::Counts>,
    /// What that verdict was taken on (seqs, cut of the history, allowances), so the checkers
    /// can re-judge it; present whenever the trial ran with traffic.
    #[serde(default)]
    pub check: Option<EventCheck>,
    /// `bind` names → node (`old_leader` → `coordinator-1`).
    pub bindings: BTreeMap<String, String>,
    /// Every live node's `/metrics` before and after the trial: the changes and the checks
    /// against what the harness observed (absent in runs from before the cross-check).
    #[serde(default)]
    pub metrics: Option<crate::metrics::MetricsCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub index: usize,
    pub action: String,
    pub summary: String,
    pub location: String,
    /// Offset from the trial's start.
    pub offset_us: u64,
    pub duration_us: u64,
    pub ok: bool,
    /// What the step observed or why it failed.
    pub note: String,
}

/// A named interval of a trial (a fault until its recovery, or a hold), wall-clock µs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    pub name: String,
    pub from_us: WallUs,
    pub to_us: WallUs,
}

/// One timing sample of a named figure (`election_ms`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub name: String,
    pub value_us: u64,
    /// How the endpoints were observed, e.g. "kill signal → earliest leader_changed event".
    pub how: String,
    /// `event log` when both ends are actions or event-log timestamps, `poll` when an end is
    /// the first poll that saw it (a cluster without an event log, or a fallback).
    #[serde(default)]
    pub method: String,
    /// How far the measured ends may lie from the true instants, summed (µs).
    #[serde(default)]
    pub resolution_us: u64,
    /// The floor the run's configuration sets for this figure, if the phase declares one.
    #[serde(default)]
    pub floor: Option<Floor>,
}

/// A figure's floor: the expression as the phase wrote it, evaluated for this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Floor {
    pub expr: String,
    pub lo_us: u64,
    pub hi_us: u64,
}

/// Distribution summary of one figure, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub n: u64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Largest recordable sample: one hour. Anything longer is a hung run, not a measurement.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;
/// Three significant figures: 0.1 % relative error, far below the 1 ms timestamp resolution.
const HISTOGRAM_SIGFIG: u8 = 3;

/// Percentiles of samples given in microseconds, via an HDR histogram.
pub fn percentiles(values_us: &[u64]) -> Option<Percentiles> {
    if values_us.is_empty() {
        return None;
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGFIG)
        .expect("static histogram bounds are valid");
    for &v in values_us {
        h.saturating_record(v.max(1));
    }
    let min = *values_us.iter().min().unwrap_or(&0);
    let max = *values_us.iter().max().unwrap_or(&0);
    // A bucket's representative value can lie just past the exact extremes; clamp to them.
    let at = |q: f64| h.value_at_quantile(q).clamp(min, max) as f64 / 1000.0;
    Some(Percentiles {
        n: h.len(),
        min: min as f64 / 1000.0,
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: max as f64 / 1000.0,
    })
}

impl RunSettings {
    /// Settings of a run against no cluster (tests of the checkers and reports).
    pub fn none(raft: RaftTimings, drain_quiet_ms: u64) -> Self {
        RunSettings {
            coordinators: 0,
            workers: 0,
            raft,
            poll_interval_ms: 0,
            probe_timeout_ms: 0,
            detector: None,
            cpu_cores: 0,
            harness_version: env!("CARGO_PKG_VERSION").into(),
            drain_quiet_ms,
            broker: None,
            security: None,
            pipelines: crate::topology::SEED_PIPELINES,
            profile: None,
            fallbacks: vec![],
        }
    }
}

impl TrialRecord {
    /// A trial of phase `id` with its status and nothing else recorded.
    pub fn new(id: &str, name: &str, trial: u32, trials: u32, status: Status) -> Self {
        TrialRecord {
            id: id.into(),
            slug: String::new(),
            name: name.into(),
            description: String::new(),
            trial,
            trials,
            status,
            started_us: 0,
            duration_us: 0,
            floor_us: 0,
            details: String::new(),
            error: None,
            steps: vec![],
            samples: vec![],
            windows: vec![],
            events: None,
            check: None,
            bindings: BTreeMap::new(),
            metrics: None,
        }
    }
}

impl RunData {
    /// A run named `run_id` with no trials, history or tally yet.
    pub fn new(run_id: &str, backend: &str, config: RunSettings) -> Self {
        RunData {
            run_id: run_id.into(),
            backend: backend.into(),
            seed: 0,
            started_at: String::new(),
            command: String::new(),
            config,
            trials: vec![],
            interrupted: false,
            history: History::default(),
            final_drain: None,
            tally: None,
        }
    }

    /// Samples by figure key (`phase-slug.name`, see [`crate::figure::key`]) and method, in
    /// the order figures first appear: different experiments, or the same one observed by a
    /// coarser method, never share a distribution.
    pub fn samples_by_figure(&self) -> Vec<(String, Vec<&Sample>)> {
        let mut out: Vec<(String, Vec<&Sample>)> = Vec::new();
        for t in &self.trials {
            for s in &t.samples {
                let mut key = crate::figure::key(&t.slug, &s.name);
                if s.method == "poll" {
                    key.push_str(" (poll)");
                }
                match out.iter_mut().find(|(n, _)| *n == key) {
                    Some((_, v)) => v.push(s),
                    None => out.push((key, vec![s])),
                }
            }
        }
        out
    }

    /// Whether the run passes: every trial, and nothing the run-wide checker charged to no trial.
    pub fn all_passed(&self) -> bool {
        self.trials.iter().all(|t| t.status == Status::Pass)
            && self.tally.as_ref().is_none_or(|t| t.findings.is_empty())
    }

    /// The paced runs a trial's seqs contain.
    pub fn paced_runs(&self, t: &TrialRecord) -> Vec<&crate::history::PacedRun> {
        let Some(seqs) = t.check.as_ref().and_then(|c| c.seqs.as_ref()) else {
            return Vec::new();
        };
        self.history
            .paced
            .iter()
            .filter(|p| seqs.start <= p.from_seq && p.to_seq <= seqs.end)
            .collect()
    }

    pub fn passed(&self) -> usize {
        self.trials
            .iter()
            .filter(|t| t.status == Status::Pass)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_values() {
        let values: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let p = percentiles(&values).unwrap();
        assert_eq!(p.n, 100);
        assert_eq!(p.min, 1.0);
        assert_eq!(p.max, 100.0);
        // HDR buckets at 3 significant figures: exact to 0.1 %.
        assert!((p.p50 - 50.0).abs() <= 0.05, "{p:?}");
        assert!((p.p90 - 90.0).abs() <= 0.09, "{p:?}");
        assert!((p.p99 - 99.0).abs() <= 0.1, "{p:?}");
        assert_eq!(percentiles(&[]), None);
    }
}
