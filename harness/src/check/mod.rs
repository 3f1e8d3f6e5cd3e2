//! Checkers: pure functions over a [`History`] (no I/O, no clock). The runner calls
//! [`trial_verdict`] at a trial's `assert_counts` and at its end (after a drain), and
//! [`apply`] once over the whole run after the final drain; `harness report DIR` calls [`apply`]
//! again on `run.json`, so the reports always show what the checkers say of the history.
//!
//! A verdict is taken on a cut of the history ([`Rows`]: how many rows each table held), so it
//! can be reproduced exactly later. Everything recorded after a trial's cut that names one of
//! its seqs is *late*: charged to that trial, whenever it arrived (during a later phase or the
//! final drain), and it fails the trial and so the run.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::{Deserialize, Serialize};

pub mod invariants;
mod run;

pub use crate::traffic::ledger::Tallies;
pub use run::{apply, tally, LateArrival, Tally, TrialTally};

use crate::history::{Arrival, Field, History, Publish, Rows};
use crate::traffic::ledger::{is_matching, pipeline_of, Counts};

/// What a phase allows (`assert_counts`): exact numbers, every one 0 by default.
pub use crate::step::AssertCountsArgs as Allowance;

/// Seqs named in one finding: enough to spot a pattern, short enough to read.
pub const SEQS_LISTED: usize = 10;
/// Late arrivals kept per trial in the run-wide tally (all are counted).
pub const LATE_LISTED: usize = 20;

/// How far from a worker's SIGKILL the first copy of a seq may have reached the collector for a
/// second copy to be the kill's doing. A pipeline acks an input only once the broker took its
/// outputs (at least once, `cluster::pipeline::runtime`): killed between the two, the worker
/// leaves an input whose output is out to be redelivered to the next owner, which publishes it
/// again. No protocol over MQTT QoS 1 closes that window (the next owner cannot know what the
/// dead one published); it lasts a round trip to the broker, under a millisecond on loopback, and
/// this bound leaves room for a loaded machine. A copy further from any kill, a third copy, or a
/// second copy before the kill is a duplicate no crash explains, and fails the phase.
pub const CRASH_WINDOW_US: u64 = 100_000;

/// One arrival whose payload was not the event sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    pub seq: u64,
    pub copy: u32,
    /// [`Field`] bits of what was missing or changed.
    pub wrong: u8,
}

/// A window's counts and the seqs behind each of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowCheck {
    pub counts: Counts,
    pub lost: Vec<u64>,
    /// Seqs with more than one copy.
    pub duplicated: Vec<u64>,
    /// Of those, the ones a worker's SIGKILL explains ([`CRASH_WINDOW_US`]).
    pub at_crash: Vec<u64>,
    pub unexpected: Vec<u64>,
    pub unknown: Vec<u64>,
    pub malformed: Vec<Malformed>,
    /// Seqs of the window with no publish row at all.
    pub unrecorded: Vec<u64>,
}

/// What a trial's event verdict was judged on, kept in its [`TrialRecord`] so the checkers can
/// re-judge it from the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventCheck {
    /// The trial's seqs, if it published any.
    pub seqs: Option<Range<u64>>,
    /// The history's rows when the trial started and when its verdict was taken.
    pub from: Rows,
    pub cut: Rows,
    pub allow: Allowance,
    /// Time the trial's verdicts spent draining (its `assert_counts` and its end), monotonic µs.
    #[serde(default)]
    pub drain_us: u64,
}

/// The window's counts as of `cut`, with the seqs behind them.
pub fn window(history: &History, seqs: Range<u64>, cut: Rows) -> WindowCheck {
    let publishes = publications(
        &history.publishes[..cut.publishes.min(history.publishes.len())],
        &seqs,
    );
    let mut arrivals: BTreeMap<u64, Vec<&Arrival>> = BTreeMap::new();
    for a in &history.arrivals[..cut.arrivals.min(history.arrivals.len())] {
        if seqs.contains(&a.seq) {
            arrivals.entry(a.seq).or_default().push(a);
        }
    }
    let mut check = WindowCheck {
        unrecorded: seqs
            .clone()
            .filter(|s| !publishes.contains_key(s))
            .take(SEQS_LISTED)
            .collect(),
        ..WindowCheck::default()
    };
    let kills = worker_kills(history);
    let seen: BTreeSet<u64> = publishes.keys().chain(arrivals.keys()).copied().collect();
    for seq in seen {
        let publish = publishes.get(&seq);
        check.seq(
            seq,
            publish,
            arrivals.get(&seq).map_or(&[], Vec::as_slice),
            &kills,
        );
    }
    check.at_crash = check.counts.at_crash.clone();
    check
}

/// When workers were SIGKILLed (the `kill` faults of worker nodes), wall-clock µs.
fn worker_kills(history: &History) -> Vec<u64> {
    history
        .faults
        .iter()
        .filter(|f| f.action == "kill" && f.node.starts_with("worker"))
        .map(|f| f.at_us)
        .collect()
}

/// Two well-formed copies, the first within [`CRASH_WINDOW_US`] of a worker's kill, the second
/// after that kill.
fn explained_by_a_kill(
    arrivals: &[&Arrival],
    wrong: impl Fn(&Arrival) -> u8,
    kills: &[u64],
) -> bool {
    let [first, second] = arrivals else {
        return false;
    };
    if wrong(first) != 0 || wrong(second) != 0 {
        return false;
    }
    kills
        .iter()
        .any(|&k| first.at_us.abs_diff(k) <= CRASH_WINDOW_US && second.at_us > k)
}

/// Per seq, its publish as of the cut: the first acked row, else the first row.
pub(crate) fn publications(rows: &[Publish], seqs: &Range<u64>) -> BTreeMap<u64, Publish> {
    let mut out: BTreeMap<u64, Publish> = BTreeMap::new();
    for p in rows.iter().filter(|p| seqs.contains(&p.seq)) {
        let slot = out.entry(p.seq).or_insert(*p);
        if slot.acked_at_us.is_none() && p.acked_at_us.is_some() {
            *slot = *p;
        }
    }
    out
}

/// Which fields of `arrival` are not what was sent: the workload's fields, and the send time
/// against the publish row.
pub fn wrong_fields(arrival: &Arrival, publish: Option<&Publish>) -> u8 {
    let sent_at_differs = publish.is_some_and(|p| arrival.sent_at_us != Some(p.sent_at_us));
    arrival.wrong
        | if sent_at_differs {
            Field::SentAt as u8
        } else {
            0
        }
}

impl WindowCheck {
    fn seq(&mut self, seq: u64, publish: Option<&Publish>, arrivals: &[&Arrival], kills: &[u64]) {
        let Counts {
            tallies: c,
            latency_us,
            delivered_at_us,
            lost_sent_at_us,
            duplicated_sent_at_us,
            at_crash,
            unknown_sent_at_us,
            per_pipeline,
        } = &mut self.counts;
        let pipeline = per_pipeline.entry(pipeline_of(seq)).or_default();
        let mut first_good = None;
        for a in arrivals {
            match wrong_fields(a, publish) {
                0 => _ = first_good.get_or_insert(a.at_us),
                wrong => {
                    c.malformed += 1;
                    self.malformed.push(Malformed {
                        seq,
                        copy: a.copy,
                        wrong,
                    });
                }
            }
        }
        let copies = arrivals.len() as u64;
        c.published += u64::from(publish.is_some());
        if let Some(p) = publish.filter(|p| p.acked_at_us.is_none()) {
            c.unknown += 1;
            self.unknown.push(seq);
            unknown_sent_at_us.push(p.sent_at_us);
        }
        let Some(publish) = publish.filter(|_| is_matching(seq)) else {
            c.unexpected += copies;
            pipeline.unexpected += copies;
            if copies > 0 {
                self.unexpected.push(seq);
            }
            return;
        };
        let extra = copies.saturating_sub(1);
        c.duplicated += extra;
        pipeline.duplicated += extra;
        if extra > 0 {
            self.duplicated.push(seq);
            duplicated_sent_at_us.extend((0..extra).map(|_| publish.sent_at_us));
            if explained_by_a_kill(arrivals, |a| wrong_fields(a, Some(publish)), kills) {
                at_crash.push(seq);
            }
        }
        if publish.acked_at_us.is_none() {
            return;
        }
        c.expected += 1;
        pipeline.expected += 1;
        match first_good {
            Some(at_us) => {
                c.delivered += 1;
                pipeline.delivered += 1;
                latency_us.push(at_us.saturating_sub(publish.sent_at_us));
                delivered_at_us.push(at_us);
            }
            None => {
                c.lost += 1;
                pipeline.lost += 1;
                self.lost.push(seq);
                lost_sent_at_us.push(publish.sent_at_us);
            }
        }
    }
}

/// Why `check` (of a window `len` seqs long) breaks `allow`; empty when it does not.
pub fn judge(check: &WindowCheck, len: u64, allow: &Allowance) -> Vec<String> {
    let c = &check.counts;
    let mut wrong = Vec::new();
    if c.published < len {
        wrong.push(format!(
            "{} of {len} seqs were never recorded as published: {}",
            len - c.published,
            listed(&check.unrecorded)
        ));
    }
    if let Some(e) = allow.expected.filter(|&e| e != c.expected) {
        wrong.push(format!(
            "expected {e} events, the ledger expects {}",
            c.expected
        ));
    }
    // A duplicate a worker's SIGKILL explains is counted, and reported, but not held against
    // the allowance: at least once is what the pipelines promise through a crash.
    let unexplained: Vec<u64> = check
        .duplicated
        .iter()
        .filter(|s| !check.at_crash.contains(s))
        .copied()
        .collect();
    for (name, want, got, seqs) in [
        ("lost", allow.lost, c.lost, &check.lost),
        (
            "duplicated",
            allow.duplicated,
            c.duplicated - check.at_crash.len() as u64,
            &unexplained,
        ),
        (
            "unexpected",
            allow.unexpected,
            c.unexpected,
            &check.unexpected,
        ),
        ("unknown", allow.unknown, c.unknown, &check.unknown),
    ] {
        if want != got {
            wrong.push(format!(
                "{name} = {got}, want {want} (seqs {})",
                listed(seqs)
            ));
        }
    }
    if allow.malformed != c.malformed {
        let which: Vec<String> = check
            .malformed
            .iter()
            .take(SEQS_LISTED)
            .map(|m| format!("seq {} copy {}: {}", m.seq, m.copy, Field::names(m.wrong)))
            .collect();
        wrong.push(format!(
            "malformed = {}, want {} ({})",
            c.malformed,
            allow.malformed,
            which.join("; ")
        ));
    }
    if c.undecodable > 0 {
        wrong.push(format!("undecodable = {}, want 0", c.undecodable));
    }
    wrong
}

/// A trial's verdict on its events as of `cut`: its counts (with the undecodable arrivals
/// recorded between `from` and `cut`) and why they break `allow`.
pub fn trial_verdict(
    history: &History,
    seqs: Option<Range<u64>>,
    from: Rows,
    cut: Rows,
    allow: &Allowance,
) -> (Counts, Vec<String>) {
    let mut check = match &seqs {
        Some(s) => window(history, s.clone(), cut),
        None => WindowCheck::default(),
    };
    check.counts.undecodable = cut.undecodable.saturating_sub(from.undecodable) as u64;
    let len = seqs.map_or(0, |s| s.end - s.start);
    let findings = judge(&check, len, allow);
    (check.counts, findings)
}

/// `[14, 16, 18]`, with `…` when the list was cut at [`SEQS_LISTED`].
fn listed(seqs: &[u64]) -> String {
    let shown: Vec<String> = seqs.iter().take(SEQS_LISTED).map(u64::to_string).collect();
    let more = if seqs.len() > SEQS_LISTED {
        ", …"
    } else {
        ""
    };
    format!("[{}{more}]", shown.join(", "))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::traffic::ledger::{SensorReading, OUTPUT_TOPIC};
    use crate::traffic::Ledger;

    pub(crate) fn sent_at(seq: u64) -> u64 {
        1_000_000 + seq * 1_000
    }

    /// Publishes `seqs` (acked) and delivers every matching one once, as sent.
    pub(crate) fn clean(ledger: &mut Ledger, seqs: Range<u64>) {
        for seq in seqs {
            ledger.published(seq, sent_at(seq), Some(sent_at(seq) + 10));
            if is_matching(seq) {
                deliver(ledger, seq);
            }
        }
    }

    pub(crate) fn deliver(ledger: &mut Ledger, seq: u64) {
        let payload = SensorReading::new(seq, sent_at(seq)).to_json();
        ledger.arrived(OUTPUT_TOPIC, sent_at(seq) + 500, &payload);
    }

    /// The verdict on `seqs` over the whole history so far.
    fn verdict_now(ledger: &Ledger, seqs: Range<u64>, allow: &Allowance) -> (Counts, Vec<String>) {
        trial_verdict(
            ledger.history(),
            Some(seqs),
            Rows::default(),
            ledger.rows(),
            allow,
        )
    }

    #[test]
    fn a_clean_window_passes_with_the_defaults() {
        let mut ledger = Ledger::new();
        clean(&mut ledger, 1..21);
        let (counts, findings) = verdict_now(&ledger, 1..21, &Allowance::default());
        assert_eq!((counts.expected, counts.delivered), (10, 10));
        assert_eq!(findings, Vec::<String>::new());
    }

    #[test]
    fn a_publish_never_acked_fails_unless_allowed() {
        // No `expected` given (phases 3, 7, hung-worker): the total cannot shrink silently.
        let mut ledger = Ledger::new();
        clean(&mut ledger, 1..4);
        ledger.published(4, sent_at(4), None);
        clean(&mut ledger, 5..9);
        let verdict = |allow: &Allowance| verdict_now(&ledger, 1..9, allow);
        let (counts, findings) = verdict(&Allowance::default());
        assert_eq!((counts.expected, counts.unknown, counts.lost), (3, 1, 0));
        assert_eq!(findings, ["unknown = 1, want 0 (seqs [4])"]);
        let allow = Allowance {
            unknown: 1,
            ..Allowance::default()
        };
        assert!(verdict(&allow).1.is_empty());
    }

    #[test]
    fn seqs_never_recorded_fail() {
        let mut ledger = Ledger::new();
        clean(&mut ledger, 1..9);
        let (_, findings) = verdict_now(&ledger, 1..11, &Allowance::default());
        assert_eq!(
            findings,
            ["2 of 10 seqs were never recorded as published: [9, 10]"]
        );
    }

    #[test]
    fn malformed_copies_are_named_with_their_fields() {
        let mut ledger = Ledger::new();
        clean(&mut ledger, 1..11);
        let mut changed = SensorReading::new(4, sent_at(4));
        changed.temperature = 99.0;
        ledger.arrived(OUTPUT_TOPIC, 1, &changed.to_json());
        ledger.arrived(OUTPUT_TOPIC, 2, &SensorReading::new(6, 7).to_json());
        ledger.arrived(OUTPUT_TOPIC, 3, b"{}");
        let (counts, findings) = verdict_now(&ledger, 1..11, &Allowance::default());
        assert_eq!(
            (
                counts.delivered,
                counts.duplicated,
                counts.malformed,
                counts.undecodable
            ),
            (5, 2, 2, 1)
        );
        assert_eq!(
            findings,
            [
                "duplicated = 2, want 0 (seqs [4, 6])",
                "malformed = 2, want 0 (seq 4 copy 2: temperature; seq 6 copy 2: sent_at_us)",
                "undecodable = 1, want 0",
            ]
        );
    }

    /// Seqs 1..11 delivered once (at sent + 0.5 ms), then a second copy of `seq` at `again_at`,
    /// with a `kill` of `node` at `kill_at`; the verdict with the default allowance.
    fn twice_around_a_kill(
        seq: u64,
        again_at: u64,
        node: &str,
        kill_at: u64,
    ) -> (Counts, Vec<String>) {
        let mut ledger = Ledger::new();
        clean(&mut ledger, 1..11);
        ledger.record_fault(kill_at, "kill", node, "SIGKILL delivered");
        let payload = SensorReading::new(seq, sent_at(seq)).to_json();
        ledger.arrived(OUTPUT_TOPIC, again_at, &payload);
        verdict_now(&ledger, 1..11, &Allowance::default())
    }

    #[test]
    fn a_second_copy_a_workers_sigkill_explains_is_counted_and_not_held_against_the_phase() {
        // Seq 4's first copy arrived at 1_004_500 µs; worker-1 was killed 1 ms later and the next
        // owner published it again 3 s on: the at-least-once redelivery of a crash.
        let first = sent_at(4) + 500;
        let (counts, findings) =
            twice_around_a_kill(4, first + 3_000_000, "worker-1", first + 1_000);
        assert_eq!((counts.duplicated, counts.at_crash.clone()), (1, vec![4]));
        assert_eq!(findings, Vec::<String>::new());
        // Its first copy may also come just after the kill (the output was already in the broker).
        let (counts, findings) =
            twice_around_a_kill(4, first + 3_000_000, "worker-1", first - 1_000);
        assert_eq!((counts.duplicated, counts.at_crash), (1, vec![4]));
        assert_eq!(findings, Vec::<String>::new());
    }

    #[test]
    fn a_duplicate_no_workers_sigkill_explains_fails() {
        let first = sent_at(4) + 500;
        let fails = |(counts, findings): (Counts, Vec<String>)| {
            assert_eq!((counts.duplicated, counts.at_crash), (1, vec![]));
            assert_eq!(findings, ["duplicated = 1, want 0 (seqs [4])"]);
        };
        // The first copy arrived 1 s before the kill: its ack had all the time in the world.
        fails(twice_around_a_kill(
            4,
            first + 3_000_000,
            "worker-1",
            first + 1_000_000,
        ));
        // A coordinator's kill does not redeliver a pipeline's inputs.
        fails(twice_around_a_kill(
            4,
            first + 3_000_000,
            "coordinator-1",
            first + 1_000,
        ));
        // Both copies before the kill: two owners at once, not a crash.
        fails(twice_around_a_kill(
            4,
            first + 500,
            "worker-1",
            first + 1_000,
        ));
        // A pause is not a crash: a resumed owner must not publish again.
        let mut ledger = Ledger::new();
        clean(&mut ledger, 1..11);
        ledger.record_fault(first + 1_000, "pause", "worker-1", "SIGSTOP delivered");
        ledger.arrived(
            OUTPUT_TOPIC,
            first + 3_000_000,
            &SensorReading::new(4, sent_at(4)).to_json(),
        );
        fails(verdict_now(&ledger, 1..11, &Allowance::default()));
    }

    #[test]
    fn a_third_copy_is_never_a_crash_redelivery() {
        let first = sent_at(4) + 500;
        let mut ledger = Ledger::new();
        clean(&mut ledger, 1..11);
        ledger.record_fault(first + 1_000, "kill", "worker-1", "SIGKILL delivered");
        let payload = SensorReading::new(4, sent_at(4)).to_json();
        ledger.arrived(OUTPUT_TOPIC, first + 2_000_000, &payload);
        ledger.arrived(OUTPUT_TOPIC, first + 3_000_000, &payload);
        let (counts, findings) = verdict_now(&ledger, 1..11, &Allowance::default());
        assert_eq!((counts.duplicated, counts.at_crash), (2, vec![]));
        assert_eq!(findings, ["duplicated = 2, want 0 (seqs [4])"]);
    }

    #[test]
    fn a_verdict_is_reproduced_from_its_cut() {
        let mut ledger = Ledger::new();
        clean(&mut ledger, 1..11);
        let cut = ledger.rows();
        let allow = Allowance::default();
        let at_verdict = trial_verdict(ledger.history(), Some(1..11), Rows::default(), cut, &allow);
        // Later: an extra copy and a garbage payload.
        deliver(&mut ledger, 2);
        ledger.arrived(OUTPUT_TOPIC, 9, b"x");
        let again = trial_verdict(ledger.history(), Some(1..11), Rows::default(), cut, &allow);
        assert_eq!(again, at_verdict);
        assert!(again.1.is_empty());
        let now = verdict_now(&ledger, 1..11, &allow);
        assert_eq!((now.0.duplicated, now.0.undecodable), (1, 1));
    }
}
