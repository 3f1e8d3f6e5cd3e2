//! Reports: a pure function of [`RunData`] (`run.json`), so `harness report DIR` rebuilds them.
//! Writes `results.md`, `phases.csv`, `steps.csv`, `timings.csv`, `summary.json` and `plots/`.

mod events;
mod json;
mod markdown;
mod metrics;
pub mod plots;

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::record::Floor;
use crate::record::{percentiles, Percentiles, RunData};

pub use markdown::{results_block, results_markdown};

/// Name of the raw data file in a run directory.
pub const RUN_DATA: &str = "run.json";

/// Write every report file for `data` into `dir`.
pub fn write_all(dir: &Path, data: &RunData) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    write(dir, "results.md", results_markdown(data).as_bytes())?;
    write(
        dir,
        "summary.json",
        &serde_json::to_vec_pretty(&summary(data))?,
    )?;
    write_phases_csv(&dir.join("phases.csv"), data)?;
    write_steps_csv(&dir.join("steps.csv"), data)?;
    write_timings_csv(&dir.join("timings.csv"), data)?;
    write_events_csv(&dir.join("events.csv"), data)?;
    write_timeline_csv(&dir.join("timeline.csv"), data)?;
    // A plot that cannot be drawn is a harness bug, but it must not cost the run its verdict
    // (the exit code CI reads) nor the reports written above.
    if let Err(e) = plots::write_all(dir, data) {
        eprintln!("warning: plots not written: {e:#}");
    }
    Ok(())
}

/// Width of a timeline bucket.
pub const TIMELINE_BUCKET_US: u64 = 100_000;

/// `events.csv`: per trial and pipeline, the ledger's counts.
fn write_events_csv(path: &Path, data: &RunData) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record([
        "phase",
        "trial",
        "pipeline",
        "expected",
        "delivered",
        "lost",
        "duplicated",
        "unexpected",
    ])?;
    for t in &data.trials {
        let Some(c) = &t.events else { continue };
        for (pipeline, p) in &c.per_pipeline {
            w.write_record([
                t.id.as_str(),
                &t.trial.to_string(),
                pipeline,
                &p.expected.to_string(),
                &p.delivered.to_string(),
                &p.lost.to_string(),
                &p.duplicated.to_string(),
                &p.unexpected.to_string(),
            ])?;
        }
    }
    w.flush()?;
    Ok(())
}

/// `timeline.csv`: deliveries per 100 ms of each trial, with the fault windows active in each
/// bucket (`failover`, `election`, ...), so a plot can shade them.
fn write_timeline_csv(path: &Path, data: &RunData) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["phase", "trial", "t_ms", "deliveries", "fault_windows"])?;
    for t in &data.trials {
        let Some(c) = &t.events else { continue };
        let buckets = t.duration_us.div_ceil(TIMELINE_BUCKET_US).max(1);
        let mut counts = vec![0u64; buckets as usize];
        for &at in &c.delivered_at_us {
            let i = at.saturating_sub(t.started_us) / TIMELINE_BUCKET_US;
            if let Some(n) = counts.get_mut(i as usize) {
                *n += 1;
            }
        }
        for (i, n) in counts.iter().enumerate() {
            let from = t.started_us + i as u64 * TIMELINE_BUCKET_US;
            let to = from + TIMELINE_BUCKET_US;
            let active: Vec<&str> = t
                .windows
                .iter()
                .filter(|win| win.from_us < to && win.to_us > from)
                .map(|win| win.name.as_str())
                .collect();
            w.write_record([
                t.id.as_str(),
                &t.trial.to_string(),
                &(i as u64 * TIMELINE_BUCKET_US / 1000).to_string(),
                &n.to_string(),
                &active.join(";"),
            ])?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Save the raw data, then the reports.
pub fn save_run(dir: &Path, data: &RunData) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    write(dir, RUN_DATA, &json::to_vec(data)?)?;
    write_all(dir, data)
}

/// Rebuild the reports of a run directory from its `run.json`, re-running the run-wide
/// checker over its history first (so the reports say what the checkers say of it).
pub fn regenerate(dir: &Path) -> anyhow::Result<RunData> {
    let path = dir.join(RUN_DATA);
    let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let mut data: RunData =
        serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))?;
    crate::traffic::ledger::set_pipeline_count(u64::from(data.config.pipelines));
    crate::check::apply(&mut data);
    write_all(dir, &data)?;
    Ok(data)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))
}

/// `summary.json`: the machine-readable contract CI builds on.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub run_id: String,
    pub backend: String,
    pub seed: u64,
    pub passed: usize,
    pub total: usize,
    /// Every phase passed and the run-wide checker found nothing charged to no phase.
    pub run_passed: bool,
    pub phases: Vec<SummaryPhase>,
    pub timings: std::collections::BTreeMap<String, Percentiles>,
    /// Arrivals, run-wide, whose payload named no seq.
    pub undecodable: u64,
    /// The run-wide checker's findings charged to no phase.
    pub run_findings: Vec<String>,
    /// How the final drain went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_drain: Option<crate::traffic::collector::Drained>,
}

#[derive(Debug, Serialize)]
pub struct SummaryPhase {
    pub id: String,
    pub name: String,
    pub trial: u32,
    pub status: String,
    pub duration_s: f64,
    pub details: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The trial's per-event counts, when it published events: those its verdict was judged on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<crate::check::Tallies>,
    /// What the run-wide checker charged to this trial after its verdict (late arrivals).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub late_findings: Vec<String>,
    /// Paced runs of this trial: requested and achieved rate.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paced: Vec<SummaryPaced>,
}

#[derive(Debug, Serialize)]
pub struct SummaryPaced {
    pub requested_per_s: u32,
    /// Events handed to the MQTT client per second of the run (monotonic clock).
    pub achieved_per_s: f64,
    pub sent: u64,
    pub elapsed_s: f64,
}

pub fn summary(data: &RunData) -> Summary {
    let late = |index: usize| -> Vec<String> {
        data.tally
            .iter()
            .flat_map(|tally| &tally.trials)
            .filter(|t| t.index == index)
            .flat_map(|t| t.findings.clone())
            .collect()
    };
    Summary {
        run_id: data.run_id.clone(),
        backend: data.backend.clone(),
        seed: data.seed,
        passed: data.passed(),
        total: data.trials.len(),
        run_passed: data.all_passed(),
        undecodable: data.history.undecodable.len() as u64,
        run_findings: data
            .tally
            .as_ref()
            .map_or_else(Vec::new, |t| t.findings.clone()),
        final_drain: data.final_drain,
        phases: data
            .trials
            .iter()
            .enumerate()
            .map(|(index, t)| SummaryPhase {
                id: t.id.clone(),
                name: t.name.clone(),
                trial: t.trial,
                status: t.status.to_string(),
                duration_s: round3(t.duration_us as f64 / 1e6),
                details: t.details.clone(),
                error: t.error.clone(),
                events: t.events.as_ref().map(|c| c.tallies),
                late_findings: late(index),
                paced: data
                    .paced_runs(t)
                    .into_iter()
                    .map(|p| SummaryPaced {
                        requested_per_s: p.requested_per_s,
                        achieved_per_s: round3(p.achieved_per_s()),
                        sent: p.sent,
                        elapsed_s: round3(p.elapsed_us as f64 / 1e6),
                    })
                    .collect(),
            })
            .collect(),
        timings: timing_table(data).into_iter().collect(),
    }
}

/// One figure of a run: its key (`phase-slug.name`), how it was measured, its distribution and
/// the floor the configuration sets for it.
#[derive(Debug, Clone)]
pub struct FigureRow {
    pub key: String,
    /// `event log`, `poll`, or for latency `per event`.
    pub method: String,
    /// The coarsest resolution of any sample (ms).
    pub resolution_ms: f64,
    pub floor: Option<Floor>,
    pub p: Percentiles,
    /// The distinct descriptions of how the samples' ends were observed.
    pub hows: Vec<String>,
}

impl FigureRow {
    /// The median against the floor: `within floor`, or how far above its upper end.
    pub fn vs_floor(&self) -> String {
        match &self.floor {
            None => "–".into(),
            Some(f) => {
                let hi = f.hi_us as f64 / 1000.0;
                if self.p.p50 <= hi {
                    "within".into()
                } else {
                    format!("+{:.1} ms", self.p.p50 - hi)
                }
            }
        }
    }
}

/// Every figure: the named samples, keyed by phase and method, plus end-to-end latency over
/// every delivered event of the run (publish → first arrival at the collector), split into
/// steady state and events sent inside a fault window of their trial.
pub fn figures(data: &RunData) -> Vec<FigureRow> {
    let mut out: Vec<FigureRow> = data
        .samples_by_figure()
        .into_iter()
        .filter_map(|(key, samples)| {
            let values: Vec<u64> = samples.iter().map(|s| s.value_us).collect();
            let mut hows: Vec<String> = samples.iter().map(|x| x.how.clone()).collect();
            hows.sort();
            hows.dedup();
            percentiles(&values).map(|p| FigureRow {
                key,
                method: samples[0].method.clone(),
                resolution_ms: samples.iter().map(|s| s.resolution_us).max().unwrap_or(0) as f64
                    / 1000.0,
                floor: samples[0].floor.clone(),
                p,
                hows,
            })
        })
        .collect();
    let (steady, fault) = latency_split(data);
    for (key, values, how) in [
        (
            "run.e2e_latency_steady_ms",
            steady,
            "events sent outside every fault window: publish → first arrival",
        ),
        (
            "run.e2e_latency_fault_ms",
            fault,
            "events sent inside a fault window (held in a session until a new owner took it): publish → first arrival",
        ),
    ] {
        if let Some(p) = percentiles(&values) {
            out.push(FigureRow {
                key: key.into(),
                method: "per event".into(),
                resolution_ms: 0.001,
                floor: None,
                p,
                hows: vec![how.into()],
            });
        }
    }
    out
}

/// Latencies of every delivered event, (steady, sent inside a fault window of its trial).
pub(crate) fn latency_split(data: &RunData) -> (Vec<u64>, Vec<u64>) {
    let mut steady = Vec::new();
    let mut fault = Vec::new();
    for t in &data.trials {
        let Some(c) = &t.events else { continue };
        for (&latency, &at) in c.latency_us.iter().zip(&c.delivered_at_us) {
            let sent = at.saturating_sub(latency);
            if t.windows
                .iter()
                .any(|w| (w.from_us..=w.to_us).contains(&sent))
            {
                fault.push(latency);
            } else {
                steady.push(latency);
            }
        }
    }
    (steady, fault)
}

/// Every figure's key and percentiles (see [`figures`]).
pub fn timing_table(data: &RunData) -> Vec<(String, Percentiles)> {
    figures(data).into_iter().map(|f| (f.key, f.p)).collect()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn write_phases_csv(path: &Path, data: &RunData) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record([
        "run_id",
        "phase",
        "name",
        "trial",
        "status",
        "duration_s",
        "expected",
        "delivered",
        "lost",
        "duplicated",
        "unexpected",
        "unknown",
        "malformed",
        "undecodable",
        "details",
        "error",
    ])?;
    for t in &data.trials {
        let c = t.events.clone().unwrap_or_default();
        let n = |x: u64| {
            if t.events.is_some() {
                x.to_string()
            } else {
                String::new()
            }
        };
        w.write_record([
            data.run_id.as_str(),
            &t.id,
            &t.name,
            &t.trial.to_string(),
            &t.status.to_string(),
            &format!("{:.3}", t.duration_us as f64 / 1e6),
            &n(c.expected),
            &n(c.delivered),
            &n(c.lost),
            &n(c.duplicated),
            &n(c.unexpected),
            &n(c.unknown),
            &n(c.malformed),
            &n(c.undecodable),
            &t.details,
            t.error.as_deref().unwrap_or(""),
        ])?;
    }
    w.flush()?;
    Ok(())
}

fn write_steps_csv(path: &Path, data: &RunData) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record([
        "phase",
        "trial",
        "step",
        "action",
        "summary",
        "location",
        "offset_ms",
        "duration_ms",
        "ok",
        "note",
    ])?;
    for t in &data.trials {
        for s in &t.steps {
            w.write_record([
                t.id.as_str(),
                &t.trial.to_string(),
                &s.index.to_string(),
                &s.action,
                &s.summary,
                &s.location,
                &format!("{:.3}", s.offset_us as f64 / 1000.0),
                &format!("{:.3}", s.duration_us as f64 / 1000.0),
                &s.ok.to_string(),
                &s.note,
            ])?;
        }
    }
    w.flush()?;
    Ok(())
}

fn write_timings_csv(path: &Path, data: &RunData) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record([
        "phase",
        "trial",
        "figure",
        "name",
        "value_ms",
        "method",
        "resolution_ms",
        "floor_lo_ms",
        "floor_hi_ms",
        "floor",
        "how",
    ])?;
    let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
    for t in &data.trials {
        for s in &t.samples {
            w.write_record([
                t.id.as_str(),
                &t.trial.to_string(),
                &crate::figure::key(&t.slug, &s.name),
                &s.name,
                &ms(s.value_us),
                &s.method,
                &ms(s.resolution_us),
                &s.floor.as_ref().map_or(String::new(), |f| ms(f.lo_us)),
                &s.floor.as_ref().map_or(String::new(), |f| ms(f.hi_us)),
                s.floor.as_ref().map_or("", |f| f.expr.as_str()),
                &s.how,
            ])?;
        }
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RaftTimings;
    use crate::check::tests::{clean, deliver};
    use crate::check::{trial_verdict, Allowance, EventCheck};
    use crate::history::Rows;
    use crate::record::{RunSettings, Status, TrialRecord};
    use crate::traffic::Ledger;

    #[test]
    fn report_re_runs_the_checkers_from_run_json() {
        let mut ledger = Ledger::new();
        clean(&mut ledger, 1..11);
        let cut = ledger.rows();
        let allow = Allowance::default();
        let (counts, findings) =
            trial_verdict(ledger.history(), Some(1..11), Rows::default(), cut, &allow);
        assert!(findings.is_empty());
        let trial = TrialRecord {
            events: Some(counts),
            check: Some(EventCheck {
                seqs: Some(1..11),
                from: Rows::default(),
                cut,
                allow,
                drain_us: 0,
            }),
            ..TrialRecord::new("1", "Baseline", 1, 1, Status::Pass)
        };
        // A copy of seq 4 after the verdict, saved by a run that never tallied it.
        deliver(&mut ledger, 4);
        let data = RunData {
            trials: vec![trial],
            history: ledger.history().clone(),
            ..RunData::new("r", "process", RunSettings::none(RaftTimings::SEED, 250))
        };
        let dir = tempfile::tempdir().unwrap();
        save_run(dir.path(), &data).unwrap();

        let rebuilt = regenerate(dir.path()).unwrap();
        assert_eq!(rebuilt.trials[0].status, Status::Fail);
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["run_passed"], false);
        assert_eq!(summary["phases"][0]["status"], "FAIL");
        assert_eq!(
            summary["phases"][0]["late_findings"][0],
            "1 arrival(s) of its events after its verdict: seq 4 copy 2 after the last verdict \
             (final drain)"
        );
        assert_eq!(summary["phases"][0]["events"]["duplicated"], 0);
        let md = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
        assert!(
            md.contains("Phase 1: Baseline ........................... FAIL"),
            "{md}"
        );
        assert!(
            md.contains("  late: 1 arrival(s) of its events after its verdict: seq 4"),
            "{md}"
        );
    }
}
