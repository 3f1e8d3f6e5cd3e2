//! The run-wide checker: once over the whole history, after the final drain. Every trial's
//! verdict is re-read from the history (it must agree with the counts the trial recorded), and
//! whatever named its seqs after its verdict is charged to it.

use serde::{Deserialize, Serialize};

use super::{judge, trial_verdict, window, EventCheck};
use crate::history::{Arrival, Field, History};
use crate::record::{RunData, Status, TrialRecord};
use crate::traffic::ledger::Tallies;

/// An arrival recorded after the verdict of the trial that published its seq (or of no trial).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateArrival {
    pub seq: u64,
    pub copy: u32,
    pub at_us: u64,
    /// Fields missing or changed (empty: a good copy).
    pub wrong: String,
    /// When it came: `during phase 5 [1/1]`, `between trials`, `after the last verdict`.
    pub during: String,
}

/// One trial's events as the run-wide checker sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialTally {
    /// Index of the trial in [`RunData::trials`].
    pub index: usize,
    pub phase: String,
    pub trial: u32,
    /// At its verdict, re-read from the history, and after the final drain.
    pub judged: Tallies,
    pub at_end: Tallies,
    /// Arrivals of its seqs after its verdict; the first [`super::LATE_LISTED`] are listed.
    pub late_total: u64,
    pub late: Vec<LateArrival>,
    /// Why it fails now although its verdict may have passed.
    pub findings: Vec<String>,
}

/// The run-wide tally.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub trials: Vec<TrialTally>,
    /// Every published seq of the run, after the final drain.
    pub total: Tallies,
    /// Arrivals naming a seq no trial published, listed up to [`super::LATE_LISTED`].
    pub outside_total: u64,
    pub outside: Vec<LateArrival>,
    /// Undecodable arrivals recorded outside every trial (between trials, in the final drain).
    pub undecodable_outside: u64,
    /// Findings charged to no trial.
    pub findings: Vec<String>,
}

impl Tally {
    /// Whether anything, charged to a trial or not, fails the run.
    pub fn failed(&self) -> bool {
        !self.findings.is_empty() || self.trials.iter().any(|t| !t.findings.is_empty())
    }
}

/// The trials that recorded an event check, with their index.
fn checked(trials: &[TrialRecord]) -> Vec<(usize, &TrialRecord, &EventCheck)> {
    trials
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.check.as_ref().map(|c| (i, t, c)))
        .collect()
}

/// When arrival row `row` was recorded, in terms of the trials' verdict cuts.
fn during(trials: &[(usize, &TrialRecord, &EventCheck)], row: usize) -> String {
    if let Some((_, t, _)) = trials
        .iter()
        .find(|(_, _, c)| c.from.arrivals <= row && row < c.cut.arrivals)
    {
        return format!("during phase {} [{}/{}]", t.id, t.trial, t.trials);
    }
    let last_cut = trials.iter().map(|(_, _, c)| c.cut.arrivals).max();
    if last_cut.is_none_or(|cut| row >= cut) {
        "after the last verdict (final drain)".into()
    } else {
        "between trials".into()
    }
}

fn late_arrival(
    trials: &[(usize, &TrialRecord, &EventCheck)],
    row: usize,
    a: &Arrival,
    wrong: u8,
) -> LateArrival {
    LateArrival {
        seq: a.seq,
        copy: a.copy,
        at_us: a.at_us,
        wrong: Field::names(wrong),
        during: during(trials, row),
    }
}

fn describe(late: &[LateArrival], total: u64) -> String {
    let shown: Vec<String> = late
        .iter()
        .map(|l| {
            let what = if l.wrong.is_empty() {
                String::new()
            } else {
                format!(", {} changed", l.wrong)
            };
            format!("seq {} copy {}{what} {}", l.seq, l.copy, l.during)
        })
        .collect();
    let more = if total > late.len() as u64 {
        "; …"
    } else {
        ""
    };
    format!("{}{more}", shown.join("; "))
}

/// One trial's tally: its verdict re-read, and what came after it.
fn trial_tally(
    history: &History,
    trials: &[(usize, &TrialRecord, &EventCheck)],
    (index, t, c): (usize, &TrialRecord, &EventCheck),
) -> TrialTally {
    let (judged, _) = trial_verdict(history, c.seqs.clone(), c.from, c.cut, &c.allow);
    let mut findings = Vec::new();
    if t.events.as_ref().is_some_and(|e| *e != judged) {
        findings.push(
            "the counts it recorded are not what the history says at its verdict (a harness bug)"
                .to_owned(),
        );
    }
    let (mut late, mut late_total, mut at_end) = (Vec::new(), 0, judged.tallies);
    if let Some(seqs) = &c.seqs {
        let publishes = super::publications(&history.publishes, seqs);
        for (row, a) in history.arrivals.iter().enumerate().skip(c.cut.arrivals) {
            if seqs.contains(&a.seq) {
                late_total += 1;
                if late.len() < super::LATE_LISTED {
                    let wrong = super::wrong_fields(a, publishes.get(&a.seq));
                    late.push(late_arrival(trials, row, a, wrong));
                }
            }
        }
        let end = window(history, seqs.clone(), history.rows());
        at_end = end.counts.tallies;
        at_end.undecodable = judged.undecodable;
        if late_total > 0 {
            findings.push(format!(
                "{late_total} arrival(s) of its events after its verdict: {}",
                describe(&late, late_total)
            ));
        }
        if at_end != judged.tallies {
            let len = seqs.end - seqs.start;
            findings.extend(
                judge(&end, len, &c.allow)
                    .into_iter()
                    .map(|f| format!("after the final drain: {f}")),
            );
        }
    }
    TrialTally {
        index,
        phase: t.id.clone(),
        trial: t.trial,
        judged: judged.tallies,
        at_end,
        late_total,
        late,
        findings,
    }
}

/// The run-wide tally of `trials` over `history`.
pub fn tally(history: &History, trials: &[TrialRecord]) -> Tally {
    let checked = checked(trials);
    let mut out = Tally {
        trials: checked
            .iter()
            .map(|&entry| trial_tally(history, &checked, entry))
            .collect(),
        ..Tally::default()
    };
    let owned = |seq: u64| {
        checked
            .iter()
            .any(|(_, _, c)| c.seqs.as_ref().is_some_and(|s| s.contains(&seq)))
    };
    for (row, a) in history.arrivals.iter().enumerate() {
        if !owned(a.seq) {
            out.outside_total += 1;
            if out.outside.len() < super::LATE_LISTED {
                out.outside.push(late_arrival(&checked, row, a, a.wrong));
            }
        }
    }
    if out.outside_total > 0 {
        out.findings.push(format!(
            "{} arrival(s) of seqs no trial judged: {}",
            out.outside_total,
            describe(&out.outside, out.outside_total)
        ));
    }
    let within = |row: usize| {
        checked
            .iter()
            .any(|(_, _, c)| c.from.undecodable <= row && row < c.cut.undecodable)
    };
    out.undecodable_outside = (0..history.undecodable.len())
        .filter(|&row| !within(row))
        .count() as u64;
    if out.undecodable_outside > 0 {
        out.findings.push(format!(
            "{} undecodable arrival(s) outside every trial's verdict",
            out.undecodable_outside
        ));
    }
    out.total = run_total(history);
    out
}

/// Every published seq of the run, as of now.
fn run_total(history: &History) -> Tallies {
    let min = history.publishes.iter().map(|p| p.seq).min();
    let max = history.publishes.iter().map(|p| p.seq).max();
    let mut total = match (min, max) {
        (Some(min), Some(max)) => window(history, min..max + 1, history.rows()).counts.tallies,
        _ => Tallies::default(),
    };
    total.undecodable = history.undecodable.len() as u64;
    total
}

/// Runs the run-wide checker over `data` and records it: a trial with a finding fails, whatever
/// its verdict said; its recorded counts stay those its verdict was judged on. Idempotent.
pub fn apply(data: &mut RunData) {
    let tally = tally(&data.history, &data.trials);
    for t in tally.trials.iter().filter(|t| !t.findings.is_empty()) {
        if let Some(trial) = data.trials.get_mut(t.index) {
            trial.status = Status::Fail;
        }
    }
    data.tally = Some(tally);
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::*;
    use crate::backend::RaftTimings;
    use crate::check::tests::{clean, deliver, sent_at};
    use crate::check::Allowance;
    use crate::history::Rows;
    use crate::record::RunSettings;
    use crate::traffic::ledger::{SensorReading, OUTPUT_TOPIC};
    use crate::traffic::Ledger;

    /// A passed trial of phase `id` judged on `seqs` now, as the runner records it.
    fn judged(ledger: &Ledger, id: &str, seqs: Option<Range<u64>>, from: Rows) -> TrialRecord {
        let allow = Allowance::default();
        let cut = ledger.rows();
        let (counts, findings) = trial_verdict(ledger.history(), seqs.clone(), from, cut, &allow);
        assert!(findings.is_empty(), "{findings:?}");
        TrialRecord {
            events: seqs.as_ref().map(|_| counts),
            check: Some(EventCheck {
                seqs,
                from,
                cut,
                allow,
                drain_us: 0,
            }),
            ..TrialRecord::new(id, id, 1, 1, Status::Pass)
        }
    }

    /// Phase "1" publishes 1..21, phase "2" nothing, phase "5" 21..41; all pass when judged.
    fn three_trials(ledger: &mut Ledger) -> Vec<TrialRecord> {
        clean(ledger, 1..21);
        let first = judged(ledger, "1", Some(1..21), Rows::default());
        let from = ledger.rows();
        let second = judged(ledger, "2", None, from);
        let from = ledger.rows();
        clean(ledger, 21..41);
        let third = judged(ledger, "5", Some(21..41), from);
        vec![first, second, third]
    }

    fn run_data(ledger: &Ledger, trials: Vec<TrialRecord>) -> RunData {
        RunData {
            trials,
            history: ledger.history().clone(),
            ..RunData::new("r", "process", RunSettings::none(RaftTimings::SEED, 250))
        }
    }

    #[test]
    fn a_clean_run_has_no_findings() {
        let mut ledger = Ledger::new();
        let trials = three_trials(&mut ledger);
        let tally = tally(ledger.history(), &trials);
        assert!(!tally.failed(), "{tally:?}");
        assert_eq!(tally.trials.len(), 3);
        assert_eq!((tally.total.expected, tally.total.delivered), (20, 20));
    }

    #[test]
    fn a_late_copy_fails_the_phase_that_published_it() {
        let mut ledger = Ledger::new();
        clean(&mut ledger, 1..21);
        let first = judged(&ledger, "1", Some(1..21), Rows::default());
        let from = ledger.rows();
        clean(&mut ledger, 21..31);
        // During phase 5: an extra copy of phase 1's seq 4.
        deliver(&mut ledger, 4);
        clean(&mut ledger, 31..41);
        let second = judged(&ledger, "5", Some(21..41), from);
        let mut data = run_data(&ledger, vec![first, second]);
        let recorded = data.trials[0].events.clone();

        apply(&mut data);
        let tally = data.tally.clone().unwrap();
        assert_eq!(data.trials[0].status, Status::Fail);
        assert_eq!(data.trials[1].status, Status::Pass);
        assert_eq!(data.trials[0].events, recorded, "the judged counts stay");
        let t = &tally.trials[0];
        assert_eq!(
            (t.judged.duplicated, t.at_end.duplicated, t.late_total),
            (0, 1, 1)
        );
        assert_eq!(
            t.findings,
            [
                "1 arrival(s) of its events after its verdict: seq 4 copy 2 during phase 5 [1/1]",
                "after the final drain: duplicated = 1, want 0 (seqs [4])",
            ]
        );
        assert!(tally.trials[1].findings.is_empty());
        assert!(!data.all_passed());
        // Idempotent: `harness report` re-runs it on the saved data.
        let again = serde_json::from_str::<RunData>(&serde_json::to_string(&data).unwrap());
        let mut again = again.unwrap();
        apply(&mut again);
        assert_eq!(again.tally, data.tally);
    }

    #[test]
    fn a_late_changed_copy_in_the_final_drain_is_named() {
        let mut ledger = Ledger::new();
        let trials = three_trials(&mut ledger);
        let mut changed = SensorReading::new(24, sent_at(24));
        changed.sensor_id = "sensor_0".into();
        ledger.arrived(OUTPUT_TOPIC, 7, &changed.to_json());
        let tally = tally(ledger.history(), &trials);
        let t = &tally.trials[2];
        assert_eq!(
            t.findings,
            [
                "1 arrival(s) of its events after its verdict: seq 24 copy 2, sensor_id changed \
                 after the last verdict (final drain)",
                "after the final drain: duplicated = 1, want 0 (seqs [24])",
                "after the final drain: malformed = 1, want 0 (seq 24 copy 2: sensor_id)",
            ]
        );
        assert!(tally.trials[0].findings.is_empty() && tally.trials[1].findings.is_empty());
    }

    #[test]
    fn undecodable_and_unowned_arrivals_are_charged_by_when_they_came() {
        let mut ledger = Ledger::new();
        let mut trials = three_trials(&mut ledger);
        // Phase 2 (no traffic) saw garbage: re-judge it with the garbage in its cut.
        let from = trials[1].check.as_ref().unwrap().from;
        ledger.arrived(OUTPUT_TOPIC, 1, b"garbage");
        let (counts, findings) = trial_verdict(
            ledger.history(),
            None,
            from,
            ledger.rows(),
            &Allowance::default(),
        );
        assert_eq!((counts.undecodable, findings.len()), (1, 1));
        // After the last verdict: more garbage, and a seq no trial published.
        ledger.arrived(OUTPUT_TOPIC, 2, b"garbage");
        deliver(&mut ledger, 90);
        trials.truncate(1);
        let tally = tally(ledger.history(), &trials);
        assert_eq!(tally.undecodable_outside, 2);
        assert_eq!(
            tally.outside_total, 11,
            "phase 5's 10 outputs and seq 90 are no trial's now"
        );
        assert!(tally.failed());
        assert_eq!(tally.total.undecodable, 2);
    }

    #[test]
    fn recorded_counts_must_be_what_the_history_says() {
        let mut ledger = Ledger::new();
        let mut trials = three_trials(&mut ledger);
        trials[0].events.as_mut().unwrap().delivered -= 1;
        let tally = tally(ledger.history(), &trials);
        assert_eq!(tally.trials[0].findings.len(), 1);
        assert!(tally.trials[0].findings[0].contains("harness bug"));
    }
}
