//! Durations written in terms of the run's configuration (`grace + 300ms`,
//! `lease + election_min - heartbeat .. lease + election_max + tick`): the floor a figure cannot
//! beat, and (for the gate) the budget it must meet, so a run with fast timings is judged by its
//! own timings.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::backend::{DetectorTimings, RaftTimings};

/// The configuration an expression is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub raft: RaftTimings,
    pub detector: Option<DetectorTimings>,
}

/// Names an expression may use, each in ms of the run's configuration.
pub const NAMES: &[(&str, &str)] = &[
    ("heartbeat", "Raft heartbeat interval"),
    ("election_min", "minimum election timeout"),
    ("election_max", "maximum election timeout"),
    (
        "lease",
        "openraft 0.9's leader lease (= election_max): a follower ignores a missing leader that long",
    ),
    (
        "tick",
        "openraft 0.9's timer granularity (1.5 × heartbeat), by which an election timeout can fire late",
    ),
    ("grace", "grace period after a worker's link closes"),
    ("ping_interval", "WebSocket ping interval"),
    (
        "ping_deadline",
        "silence after which a link is declared dead",
    ),
    ("rest_timeout", "REST heartbeat timeout"),
];

fn lookup(name: &str, t: &Timings) -> Result<f64, String> {
    let detector = || {
        t.detector.ok_or_else(|| {
            format!("'{name}' needs failure-detection timings, and this run has no workers")
        })
    };
    Ok(match name {
        "heartbeat" => t.raft.heartbeat_ms as f64,
        "election_min" => t.raft.election_min_ms as f64,
        "election_max" | "lease" => t.raft.election_max_ms as f64,
        "tick" => 1.5 * t.raft.heartbeat_ms as f64,
        "grace" => detector()?.grace_ms as f64,
        "ping_interval" => detector()?.ping_interval_ms as f64,
        "ping_deadline" => detector()?.ping_dead_ms as f64,
        "rest_timeout" => detector()?.rest_timeout_ms as f64,
        other => return Err(format!("unknown name '{other}'")),
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Term {
    /// A literal duration in ms.
    Millis(f64),
    /// `k * name` (k = 1 when not written).
    Name(f64, String),
}

/// `term (+|- term)*`.
#[derive(Debug, Clone, PartialEq)]
struct Expr(Vec<(f64, Term)>);

impl Expr {
    fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        let mut sign = 1.0;
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err("empty expression".into());
        }
        loop {
            let end = rest.find(['+', '-']).unwrap_or(rest.len());
            terms.push((sign, Term::parse(rest[..end].trim())?));
            if end == rest.len() {
                break;
            }
            sign = if rest.as_bytes()[end] == b'+' {
                1.0
            } else {
                -1.0
            };
            rest = &rest[end + 1..];
        }
        Ok(Expr(terms))
    }

    fn eval_ms(&self, t: &Timings) -> Result<f64, String> {
        let mut total = 0.0;
        for (sign, term) in &self.0 {
            total += sign
                * match term {
                    Term::Millis(ms) => *ms,
                    Term::Name(k, name) => k * lookup(name, t)?,
                };
        }
        Ok(total.max(0.0))
    }
}

impl Term {
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a term is missing".into());
        }
        if let Some((k, name)) = text.split_once('*') {
            let k: f64 = k
                .trim()
                .parse()
                .map_err(|_| format!("'{}' is not a number", k.trim()))?;
            return Term::named(k, name.trim());
        }
        if text.starts_with(|c: char| c.is_ascii_digit()) {
            let split = text
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| format!("'{text}' needs a unit (ms or s)"))?;
            let value: f64 = text[..split]
                .parse()
                .map_err(|_| format!("'{text}' is not a number"))?;
            return match text[split..].trim() {
                "ms" => Ok(Term::Millis(value)),
                "s" => Ok(Term::Millis(value * 1000.0)),
                unit => Err(format!("unknown unit '{unit}' in '{text}' (ms or s)")),
            };
        }
        Term::named(1.0, text)
    }

    fn named(k: f64, name: &str) -> Result<Self, String> {
        if NAMES.iter().any(|(n, _)| *n == name) {
            Ok(Term::Name(k, name.to_string()))
        } else {
            let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
            Err(format!(
                "unknown name '{name}' (known: {})",
                known.join(", ")
            ))
        }
    }
}

/// A duration or a range of durations (`lo .. hi`), as written; see the module doc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Span {
    text: String,
    lo: Expr,
    hi: Option<Expr>,
}

/// A [`Span`] evaluated against a run's configuration, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluated {
    pub lo_us: u64,
    pub hi_us: u64,
}

impl Span {
    pub fn eval(&self, t: &Timings) -> Result<Evaluated, String> {
        let lo = self.lo.eval_ms(t)?;
        let hi = match &self.hi {
            Some(hi) => hi.eval_ms(t)?,
            None => lo,
        };
        if hi < lo {
            return Err(format!("'{}': the upper end is below the lower", self.text));
        }
        Ok(Evaluated {
            lo_us: (lo * 1000.0).round() as u64,
            hi_us: (hi * 1000.0).round() as u64,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for Span {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let (lo, hi) = match text.split_once("..") {
            Some((lo, hi)) => (Expr::parse(lo)?, Some(Expr::parse(hi)?)),
            None => (Expr::parse(&text)?, None),
        };
        Ok(Span { text, lo, hi })
    }
}

impl From<Span> for String {
    fn from(s: Span) -> String {
        s.text
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The key of a figure: the phase it was measured in and its name
/// (`worker-failover.failover_ms` is not `hung-worker.failover_ms`).
pub fn key(phase_slug: &str, name: &str) -> String {
    format!("{phase_slug}.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Timings {
        Timings {
            raft: RaftTimings::SEED,
            detector: Some(DetectorTimings::SEED),
        }
    }

    fn span(s: &str) -> Span {
        Span::try_from(s.to_string()).unwrap()
    }

    #[test]
    fn the_seed_election_floor_is_4_0_to_6_75_s() {
        let e = span("lease + election_min - heartbeat .. lease + election_max + tick")
            .eval(&seed())
            .unwrap();
        assert_eq!((e.lo_us, e.hi_us), (4_000_000, 6_750_000));
    }

    #[test]
    fn literals_coefficients_and_detector_names() {
        assert_eq!(
            span("grace + 300ms").eval(&seed()).unwrap().lo_us,
            5_300_000
        );
        assert_eq!(
            span("ping_deadline + grace + 0.5s")
                .eval(&seed())
                .unwrap()
                .hi_us,
            8_500_000
        );
        assert_eq!(
            span("2 * election_max").eval(&seed()).unwrap().lo_us,
            6_000_000
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (text, want) in [
            ("grace + 300", "needs a unit"),
            ("grace + 3 h", "unknown unit"),
            ("gracee", "unknown name 'gracee'"),
            ("grace +", "a term is missing"),
            ("", "empty expression"),
        ] {
            let err = Span::try_from(text.to_string()).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
        let no_workers = Timings {
            raft: RaftTimings::SEED,
            detector: None,
        };
        assert!(span("grace")
            .eval(&no_workers)
            .unwrap_err()
            .contains("no workers"));
    }
}
