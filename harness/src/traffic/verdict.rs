//! A trial's verdict on its events: drain first, then the checker on the history as it stands
//! (see [`crate::check::trial_verdict`]). The verdict remembers its cut of the history, so the
//! run-wide checker can re-judge it and charge anything later to it.

use std::ops::Range;
use std::time::Duration;

use super::collector::{Collector, Drained, DRAIN_BOUND};
use super::ledger::Counts;
use super::publisher::lock;
use crate::check::{self, Allowance, EventCheck};
use crate::history::Rows;

/// How long a drain waits for quiet, and its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainSettings {
    pub quiet: Duration,
    pub bound: Duration,
}

impl DrainSettings {
    /// A quiet period of `quiet`, bounded by [`DRAIN_BOUND`] (or `quiet` itself if longer).
    pub fn quiet(quiet: Duration) -> Self {
        DrainSettings {
            quiet,
            bound: DRAIN_BOUND.max(quiet),
        }
    }
}

/// A trial's verdict on its events.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The counts it was judged on.
    pub counts: Counts,
    pub check: EventCheck,
    /// Why it fails; empty when it passes.
    pub findings: Vec<String>,
    pub drained: Drained,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Drains `collector`, then judges the trial's `seqs` (if it published any) and the
/// undecodable arrivals since `from` against `allow`. A drain that never got quiet fails it.
pub async fn judge_trial(
    collector: &Collector,
    seqs: Option<Range<u64>>,
    from: Rows,
    allow: &Allowance,
    drain: DrainSettings,
) -> Verdict {
    let drained = collector.drain(drain.quiet, drain.bound).await;
    let ledger = lock(collector.ledger());
    let cut = ledger.rows();
    let (counts, mut findings) =
        check::trial_verdict(ledger.history(), seqs.clone(), from, cut, allow);
    if !drained.quiet {
        findings.push(drained.to_string());
    }
    Verdict {
        counts,
        check: EventCheck {
            seqs,
            from,
            cut,
            allow: allow.clone(),
            drain_us: drained.waited_us,
        },
        findings,
        drained,
    }
}
