//! The ramp: which offered rate to try next, and whether a step at that rate was sustained.
//! Pure logic, no I/O.
//!
//! Rates double from the start rate until a step is not sustained (or the maximum is reached
//! and sustained: the ceiling is then at least the maximum); then the interval between the
//! highest sustained rate and the lowest failed one is bisected a fixed number of times. The
//! ceiling is the highest sustained rate, good to within the last interval.

use serde::{Deserialize, Serialize};

/// Share of the target rate the publisher must achieve, and of the offered events that must be
/// delivered within the step (plus the latency bound), for a step to be sustained.
pub const SUSTAINED_SHARE: f64 = 0.95;

/// The verdict on one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Sustained,
    /// The publisher could not hand out the target rate (QoS 1 with a window of 100 unacked
    /// publishes: the broker did not ack fast enough, or the harness could not send faster; the
    /// CPU table says which).
    OfferShort,
    /// Fewer than [`SUSTAINED_SHARE`] of the offered events were delivered by the step's end
    /// plus the latency bound: the backlog grew.
    Behind,
    /// p99 end-to-end latency over the bound.
    LatencyBound,
}

impl Verdict {
    pub fn sustained(self) -> bool {
        self == Verdict::Sustained
    }

    pub fn describe(self) -> &'static str {
        match self {
            Verdict::Sustained => "sustained",
            Verdict::OfferShort => "offer short",
            Verdict::Behind => "behind",
            Verdict::LatencyBound => "p99 over bound",
        }
    }
}

/// What a step measured, as the verdict needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepFigures {
    pub target_per_s: u32,
    /// Events handed to the MQTT client per second of the step.
    pub offered_per_s: f64,
    /// Events that had to come out (acked; for pipelines: also passing the filter).
    pub expected: u64,
    /// Of those, delivered by the step's end plus the latency bound.
    pub delivered_in_time: u64,
    /// p99 end-to-end latency of the step's delivered events, ms (`None`: none delivered).
    pub p99_ms: Option<f64>,
}

/// The verdict on a step, first failing criterion first: the offer, the delivery, the latency.
pub fn judge(f: &StepFigures, latency_bound_ms: f64) -> Verdict {
    if f.offered_per_s < f64::from(f.target_per_s) * SUSTAINED_SHARE {
        Verdict::OfferShort
    } else if (f.delivered_in_time as f64) < f.expected as f64 * SUSTAINED_SHARE || f.expected == 0
    {
        Verdict::Behind
    } else if f.p99_ms.is_none_or(|p| p > latency_bound_ms) {
        Verdict::LatencyBound
    } else {
        Verdict::Sustained
    }
}

/// The ramp's state: the highest sustained rate and the lowest failed one so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ramp {
    start: u32,
    max: u32,
    bisections: u32,
    sustained: Option<u32>,
    failed: Option<u32>,
    bisected: u32,
}

impl Ramp {
    /// Start at `start` events/s (at least 1), never above `max`, and bisect `bisections` times
    /// once a step failed.
    pub fn new(start: u32, max: u32, bisections: u32) -> Self {
        let max = max.max(1);
        Ramp {
            start: start.clamp(1, max),
            max,
            bisections,
            sustained: None,
            failed: None,
            bisected: 0,
        }
    }

    /// The next rate to try, or `None` when the ramp is over.
    pub fn next(&self) -> Option<u32> {
        match (self.sustained, self.failed) {
            (None, None) => Some(self.start),
            (Some(s), None) if s >= self.max => None,
            (Some(s), None) => Some(s.saturating_mul(2).min(self.max)),
            (lo, Some(hi)) => {
                if self.bisected >= self.bisections {
                    return None;
                }
                let lo = lo.unwrap_or(0);
                let mid = lo + (hi - lo) / 2;
                (mid > lo && mid < hi).then_some(mid)
            }
        }
    }

    /// The step at `rate` was (or was not) sustained.
    pub fn record(&mut self, rate: u32, sustained: bool) {
        if self.failed.is_some() {
            self.bisected += 1;
        }
        if sustained {
            self.sustained = Some(self.sustained.map_or(rate, |s| s.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
        }
    }

    /// The highest sustained rate (`None`: not even the lowest tried).
    pub fn ceiling(&self) -> Option<u32> {
        self.sustained
    }

    /// The lowest rate that failed (`None`: the maximum was sustained; the ceiling is at least
    /// the maximum).
    pub fn failed(&self) -> Option<u32> {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(offered: f64, expected: u64, delivered: u64, p99: Option<f64>) -> StepFigures {
        StepFigures {
            target_per_s: 1000,
            offered_per_s: offered,
            expected,
            delivered_in_time: delivered,
            p99_ms: p99,
        }
    }

    #[test]
    fn step_verdicts() {
        let bound = 100.0;
        assert_eq!(
            judge(&figures(1000.0, 500, 500, Some(4.0)), bound),
            Verdict::Sustained
        );
        // Exactly 95 % is enough; just under is not.
        assert_eq!(
            judge(&figures(950.0, 1000, 950, Some(100.0)), bound),
            Verdict::Sustained
        );
        assert_eq!(
            judge(&figures(949.9, 1000, 1000, Some(1.0)), bound),
            Verdict::OfferShort
        );
        assert_eq!(
            judge(&figures(1000.0, 1000, 949, Some(1.0)), bound),
            Verdict::Behind
        );
        assert_eq!(judge(&figures(1000.0, 0, 0, None), bound), Verdict::Behind);
        assert_eq!(
            judge(&figures(1000.0, 1000, 1000, Some(100.1)), bound),
            Verdict::LatencyBound
        );
        // The offer is judged first, then delivery, then latency.
        assert_eq!(
            judge(&figures(10.0, 1000, 0, Some(900.0)), bound),
            Verdict::OfferShort
        );
        assert_eq!(
            judge(&figures(1000.0, 1000, 0, Some(900.0)), bound),
            Verdict::Behind
        );
    }

    /// Runs the ramp against a curve sustained up to `ceiling`; returns the rates tried.
    fn run(mut ramp: Ramp, ceiling: u32) -> (Vec<u32>, Ramp) {
        let mut tried = Vec::new();
        while let Some(rate) = ramp.next() {
            tried.push(rate);
            ramp.record(rate, rate <= ceiling);
            assert!(tried.len() < 100, "the ramp does not end: {tried:?}");
        }
        (tried, ramp)
    }

    #[test]
    fn doubling_then_bisection_converges_on_a_synthetic_curve() {
        let (tried, ramp) = run(Ramp::new(1000, 1_000_000, 4), 23_456);
        assert_eq!(
            tried,
            [1000, 2000, 4000, 8000, 16000, 32000, 24000, 20000, 22000, 23000]
        );
        assert_eq!(ramp.ceiling(), Some(23000));
        assert_eq!(ramp.failed(), Some(24000));
        // Enough bisections pin it to the rate exactly.
        let (_, ramp) = run(Ramp::new(1000, 1_000_000, 30), 23_456);
        assert_eq!(
            (ramp.ceiling(), ramp.failed()),
            (Some(23_456), Some(23_457))
        );
    }

    #[test]
    fn maximum_sustained_ends_the_ramp() {
        let (tried, ramp) = run(Ramp::new(1000, 5000, 3), 1_000_000);
        assert_eq!(tried, [1000, 2000, 4000, 5000]);
        assert_eq!((ramp.ceiling(), ramp.failed()), (Some(5000), None));
    }

    #[test]
    fn first_step_failing_bisects_below_it() {
        let (tried, ramp) = run(Ramp::new(1000, 100_000, 3), 300);
        assert_eq!(tried, [1000, 500, 250, 375]);
        assert_eq!((ramp.ceiling(), ramp.failed()), (Some(250), Some(375)));
        let (tried, ramp) = run(Ramp::new(4, 100, 10), 0);
        assert_eq!(tried, [4, 2, 1]);
        assert_eq!((ramp.ceiling(), ramp.failed()), (None, Some(1)));
    }
}
