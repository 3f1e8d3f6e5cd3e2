//! `harness bench`: the throughput ceiling of the broker alone and through the pipelines, on one
//! running cluster, with the CPU and memory of every node and of the harness during the ramp.
//!
//! - [`ramp`] — which rate to try next (doubling, then bisection) and a step's verdict (pure);
//! - [`drive`] — a path's publisher and collector and one measured step;
//! - [`procfs`] — CPU ticks and RSS from `/proc` (per node on the process backend, and the
//!   harness's own);
//! - [`report`] — [`Throughput::to_markdown`] and the CSVs; [`plot`] — delivered against offered
//!   rate, latency below;
//! - [`cli`] — the command: stand the cluster up (the setup phase), ramp both paths, measure at
//!   50 % and 90 % of each ceiling, write the run dir.

pub mod cli;
pub mod drive;
pub mod plot;
pub mod procfs;
pub mod ramp;
pub mod report;

use serde::{Deserialize, Serialize};

use drive::{Purpose, Route, StepRecord, StepSettings};
use procfs::Snapshot;

/// What `harness bench` measured: a plain record, rendered by [`Throughput::to_markdown`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub run_id: String,
    /// The command that runs the same bench again.
    pub command: String,
    pub started_at: String,
    pub config: BenchConfig,
    /// Every step in the order run.
    pub steps: Vec<StepRecord>,
    pub broker: Ceiling,
    pub pipelines: Ceiling,
    /// The per-second `/proc` series (and the step boundaries' snapshots).
    pub series: Vec<Snapshot>,
}

/// How the bench was run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchConfig {
    pub backend: String,
    pub coordinators: u32,
    pub workers: u32,
    pub pipelines: u32,
    /// pipeline → worker, as the topology showed it after the setup.
    pub placement: Vec<(String, String)>,
    pub settings: StepSettings,
    pub start_per_s: u32,
    pub max_per_s: u32,
    pub bisections: u32,
    /// CPU cores of the machine (`cpuN` lines of /proc/stat).
    pub cores: u64,
    /// /proc/loadavg's 1-minute average at the start and at the end (other work on the machine).
    pub loadavg_start: Option<f64>,
    pub loadavg_end: Option<f64>,
}

impl BenchConfig {
    /// Workers hosting at least one pipeline.
    pub fn hosting_workers(&self) -> usize {
        let mut w: Vec<&String> = self.placement.iter().map(|(_, w)| w).collect();
        w.sort();
        w.dedup();
        w.len()
    }
}

/// A path's ceiling: the highest sustained rate of its ramp.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ceiling {
    pub route: Route,
    /// Highest target rate sustained (input events/s); `None`: not even the first step.
    pub sustained_per_s: Option<u32>,
    /// Lowest target rate that failed; `None`: the maximum was sustained (a lower bound).
    pub failed_per_s: Option<u32>,
}

impl Throughput {
    /// The record a bench wrote into `dir` (`throughput.json`), e.g. for a report that includes
    /// its markdown.
    pub fn load(dir: &std::path::Path) -> anyhow::Result<Throughput> {
        let path = dir.join("throughput.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Pipeline ceiling over the broker's (input events/s over events/s).
    pub fn ratio(&self) -> Option<f64> {
        let p = f64::from(self.pipelines.sustained_per_s?);
        let b = f64::from(self.broker.sustained_per_s?);
        (b > 0.0).then_some(p / b)
    }

    /// The steps of one path run for `purpose`.
    pub fn steps_of(&self, route: Route, purpose: Purpose) -> impl Iterator<Item = &StepRecord> {
        self.steps
            .iter()
            .filter(move |s| s.route == route && s.purpose == purpose)
    }
}
