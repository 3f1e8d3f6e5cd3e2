//! Per-trial state: what steps bound, marked and measured, the detail line, and the part of the
//! trial the configuration itself demands (its floor).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::backend::{now_us, NodeName, WallUs};
use crate::check::{Allowance, EventCheck};
use crate::figure::{Evaluated, Timings};
use crate::history::Rows;
use crate::phase::{placeholders, Phase};
use crate::record::{Sample, Status, StepRecord, TrialRecord, Window};
use crate::step::{HoldArgs, MeasureArgs};
use crate::traffic::Verdict;

/// A node remembered by `bind`, with the term in which it was seen leading (0 if not a leader)
/// and, for a worker, the pipelines it hosted when it was resolved (`Err`: the topology could
/// not be read then, which only a step that needs the list turns into a failure).
#[derive(Debug, Clone)]
pub(super) struct Binding {
    pub node: NodeName,
    pub term: u64,
    pub hosted: Result<Vec<Hosted>, String>,
}

/// A pipeline placed on a worker, at its placement epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hosted {
    pub group: String,
    pub pipeline: String,
    pub epoch: u64,
}

impl Binding {
    pub fn node(node: NodeName) -> Self {
        Binding {
            node,
            term: 0,
            hosted: Ok(Vec::new()),
        }
    }
}

/// How a mark's instant was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    /// By the harness itself as it acted (a signal delivered, a process spawned): exact.
    Action,
    /// A timestamp a coordinator wrote in its event log (ms resolution).
    EventLog,
    /// The first poll that saw the condition (resolution: the gap since the previous poll).
    Poll,
}

/// A named instant and how it was observed.
#[derive(Debug, Clone)]
pub(super) struct Mark {
    pub at_us: WallUs,
    pub how: String,
    pub method: Method,
    /// How far the true instant may lie before `at_us`.
    pub resolution_us: u64,
}

impl Mark {
    pub fn action(at_us: WallUs, how: String) -> Self {
        Mark {
            at_us,
            how,
            method: Method::Action,
            resolution_us: 0,
        }
    }

    pub fn event(at_ms: u64, how: String) -> Self {
        Mark {
            at_us: at_ms * 1000,
            how,
            method: Method::EventLog,
            resolution_us: 1000,
        }
    }

    pub fn poll(at_us: WallUs, resolution_us: u64, how: String) -> Self {
        Mark {
            at_us,
            how,
            method: Method::Poll,
            resolution_us,
        }
    }
}

/// Per-trial state: bindings, marks, samples, values for the detail line, and the seq window of
/// the events published in this trial.
#[derive(Debug, Default)]
pub(super) struct Trial {
    pub started_us: WallUs,
    pub bindings: HashMap<String, Binding>,
    pub marks: HashMap<String, Mark>,
    pub samples: Vec<Sample>,
    pub values: HashMap<String, String>,
    pub window: Option<Range<u64>>,
    /// Wall-clock moment of the latest fault in this trial: server events decided before it
    /// are old news to the waits that follow it.
    pub last_fault_us: WallUs,
    /// Intervals the configuration itself accounts for: holds, and each measured interval up to
    /// the upper end of its configured floor (a randomized election timeout is the protocol's
    /// time, whatever it drew; anything past the floor's upper end is not).
    pub floor: Vec<(WallUs, WallUs)>,
    /// Named fault → recovery windows, for the timeline.
    pub windows: Vec<Window>,
    /// The history's rows when the trial started, and the allowances of its last
    /// `assert_counts`: what its event verdict is judged on.
    pub events_from: Rows,
    pub allow: Option<Allowance>,
    /// Time spent draining before its `assert_counts` verdicts (monotonic µs).
    pub drain_us: u64,
}

impl Trial {
    pub fn new(started_us: WallUs) -> Self {
        Trial {
            started_us,
            last_fault_us: started_us,
            ..Trial::default()
        }
    }

    pub fn extend_window(&mut self, r: Range<u64>) {
        self.window = Some(match self.window.take() {
            Some(w) => w.start.min(r.start)..w.end.max(r.end),
            None => r,
        });
    }

    pub fn mark(&mut self, name: &Option<String>, mark: Mark) {
        if let Some(name) = name {
            self.marks.insert(name.clone(), mark);
        }
    }

    pub fn mark_at(&self, name: &str) -> anyhow::Result<&Mark> {
        self.marks
            .get(name)
            .with_context(|| format!("mark '{name}' was not recorded"))
    }

    /// `measure`: the interval between two marks, a sample of the figure, with its method,
    /// resolution and the floor its configuration sets.
    pub fn measure(&mut self, a: &MeasureArgs, timings: &Timings) -> anyhow::Result<String> {
        let from = self.mark_at(&a.from)?.clone();
        let to = self.mark_at(&a.to)?.clone();
        if to.at_us < from.at_us {
            bail!(
                "'{}' ({}) precedes '{}' ({}) by {} µs",
                a.to,
                to.how,
                a.from,
                from.how,
                from.at_us - to.at_us
            );
        }
        let value_us = to.at_us - from.at_us;
        let floor: Option<Evaluated> = match &a.floor {
            Some(span) => Some(span.eval(timings).map_err(anyhow::Error::msg)?),
            None => None,
        };
        if let Some(f) = floor {
            self.floor
                .push((from.at_us, from.at_us + f.lo_us.min(value_us)));
        }
        self.windows.push(Window {
            name: a.name.trim_end_matches("_ms").to_string(),
            from_us: from.at_us,
            to_us: to.at_us,
        });
        let method = if [from.method, to.method].contains(&Method::Poll) {
            "poll"
        } else {
            "event log"
        };
        self.samples.push(Sample {
            name: a.name.clone(),
            value_us,
            how: format!("{} → {}", from.how, to.how),
            method: method.into(),
            resolution_us: from.resolution_us + to.resolution_us,
            floor: a
                .floor
                .as_ref()
                .zip(floor)
                .map(|(span, f)| crate::record::Floor {
                    expr: span.text().to_string(),
                    lo_us: f.lo_us,
                    hi_us: f.hi_us,
                }),
        });
        Ok(format!(
            "{} = {:.1} ms ({method}{})",
            a.name,
            value_us as f64 / 1000.0,
            floor.map_or(String::new(), |f| format!(
                "; floor {:.1}–{:.1} ms",
                f.lo_us as f64 / 1000.0,
                f.hi_us as f64 / 1000.0
            ))
        ))
    }

    /// `hold`: let a protocol window pass.
    pub async fn hold(&mut self, a: &HoldArgs) -> anyhow::Result<String> {
        let start = match &a.since {
            Some(m) => self.mark_at(m)?.at_us,
            None => now_us(),
        };
        let until = start + a.ms * 1000;
        let now = now_us();
        if until > now {
            tokio::time::sleep(Duration::from_micros(until - now)).await;
        }
        self.floor.push((start, until));
        Ok(format!(
            "held until {:.1} s after {}",
            a.ms as f64 / 1000.0,
            a.since.as_deref().unwrap_or("the step began")
        ))
    }

    /// The trial's record, once its steps are done.
    #[allow(clippy::too_many_arguments)]
    pub fn into_record(
        self,
        phase: &Phase,
        trial_no: u32,
        trials: u32,
        ended_us: WallUs,
        error: Option<String>,
        steps: Vec<StepRecord>,
        verdict: Option<Verdict>,
    ) -> TrialRecord {
        // The counts the verdict was judged on (none if nothing was published), and what it was
        // judged on, for the run-wide checker.
        let events = verdict
            .as_ref()
            .filter(|_| self.window.is_some())
            .map(|v| v.counts.clone());
        let check = verdict.map(|v| EventCheck {
            drain_us: v.check.drain_us + self.drain_us,
            ..v.check
        });
        let details = render_details(&phase.detail, &self);
        TrialRecord {
            id: phase.id.clone(),
            slug: phase.slug.clone(),
            name: phase.name.clone(),
            description: phase.description.clone(),
            trial: trial_no,
            trials,
            status: if error.is_none() {
                Status::Pass
            } else {
                Status::Fail
            },
            started_us: self.started_us,
            duration_us: ended_us.saturating_sub(self.started_us),
            floor_us: union_length(&self.floor, self.started_us, ended_us),
            windows: self.windows,
            details,
            error,
            steps,
            samples: self.samples,
            events,
            check,
            bindings: self
                .bindings
                .iter()
                .map(|(k, b)| (k.clone(), b.node.to_string()))
                .collect(),
            metrics: None,
        }
    }
}

/// Fill a detail template: `{binding}` → the bound node's number, `{name_ms}` → seconds.
fn render_details(template: &str, trial: &Trial) -> String {
    let mut out = template.to_string();
    for name in placeholders(template) {
        let value = if let Some(b) = trial.bindings.get(name) {
            match b.node {
                NodeName::Coordinator(n) => n.to_string(),
                worker => worker.to_string(),
            }
        } else if let Some(s) = trial.samples.iter().find(|s| s.name == name) {
            format!("{:.1}s", s.value_us as f64 / 1e6)
        } else if let Some(v) = trial.values.get(name) {
            v.clone()
        } else if let Some(v) = crate::topology::detail_value(name, &trial.values) {
            v
        } else {
            "?".into()
        };
        out = out.replace(&format!("{{{name}}}"), &value);
    }
    out
}

pub(super) fn skipped(phase: &Phase, trial: u32, trials: u32, blocked: &[&String]) -> TrialRecord {
    let names: Vec<&str> = blocked.iter().map(|s| s.as_str()).collect();
    TrialRecord {
        id: phase.id.clone(),
        slug: phase.slug.clone(),
        name: phase.name.clone(),
        description: phase.description.clone(),
        trial,
        trials,
        status: Status::Fail,
        started_us: now_us(),
        duration_us: 0,
        floor_us: 0,
        windows: vec![],
        details: format!("not run: prerequisite {} failed", names.join(", ")),
        error: Some(format!("not run: prerequisite {} failed", names.join(", "))),
        steps: vec![],
        samples: vec![],
        bindings: BTreeMap::new(),
        metrics: None,
        events: None,
        check: None,
    }
}

/// Total length of the union of `intervals`, clipped to [start, end].
fn union_length(intervals: &[(WallUs, WallUs)], start: WallUs, end: WallUs) -> u64 {
    let mut v: Vec<(WallUs, WallUs)> = intervals
        .iter()
        .map(|&(a, b)| (a.max(start), b.min(end)))
        .filter(|(a, b)| a < b)
        .collect();
    v.sort();
    let mut total = 0;
    let mut current: Option<(WallUs, WallUs)> = None;
    for (a, b) in v {
        current = match current {
            Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                total += cb - ca;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    total + current.map_or(0, |(a, b)| b - a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DetectorTimings, RaftTimings};
    use crate::figure::Span;

    #[test]
    fn floor_is_the_union_of_configured_intervals() {
        // Two overlapping windows count once; a hold apart adds; parts outside the trial do not.
        let intervals = [(10, 50), (30, 60), (80, 90), (0, 12), (95, 200)];
        assert_eq!(
            union_length(&intervals, 5, 100),
            (60 - 5) + (90 - 80) + (100 - 95)
        );
        assert_eq!(union_length(&[], 0, 100), 0);
    }

    #[test]
    fn a_measure_carries_method_resolution_and_the_configured_floor() {
        let mut t = Trial::new(0);
        t.marks.insert(
            "killed".into(),
            Mark::action(1_000_000, "SIGKILL delivered".into()),
        );
        t.marks.insert(
            "moved".into(),
            Mark::poll(7_000_000, 20_000, "first poll".into()),
        );
        let timings = Timings {
            raft: RaftTimings::SEED,
            detector: Some(DetectorTimings::SEED),
        };
        let a = MeasureArgs {
            name: "failover_ms".into(),
            from: "killed".into(),
            to: "moved".into(),
            floor: Some(Span::try_from("grace".to_string()).unwrap()),
        };
        t.measure(&a, &timings).unwrap();
        let s = &t.samples[0];
        assert_eq!(s.value_us, 6_000_000);
        assert_eq!(s.method, "poll");
        assert_eq!(s.resolution_us, 20_000);
        let f = s.floor.as_ref().unwrap();
        assert_eq!((f.lo_us, f.hi_us), (5_000_000, 5_000_000));
        // The floor counts from the interval's start, up to its upper end: 5 s of the 6.
        assert_eq!(t.floor, vec![(1_000_000, 6_000_000)]);
    }

    #[test]
    fn details_render_nodes_and_seconds() {
        let mut t = Trial::default();
        t.bindings.insert(
            "old".into(),
            Binding {
                node: NodeName::Coordinator(1),
                term: 2,
                hosted: Ok(vec![]),
            },
        );
        t.samples.push(Sample {
            name: "election_ms".into(),
            value_us: 5_234_000,
            how: String::new(),
            method: "event log".into(),
            resolution_us: 1000,
            floor: None,
        });
        assert_eq!(
            render_details("old leader: node {old}, election: {election_ms}", &t),
            "old leader: node 1, election: 5.2s"
        );
    }
}
