//! The run's history, in Jepsen's split: the generator and the clients (publisher, collector)
//! and the nemesis (the runner's faults) append to it; the checkers in [`crate::check`] are pure
//! functions that read it. Saved in `run.json`, so `harness report DIR` re-runs the checkers.
//!
//! Rows are appended, never edited: a late PubAck adds a second publish row for its seq. So a
//! verdict taken when the tables had [`Rows`] rows is reproduced exactly by re-reading that
//! prefix, whatever arrived later, and with no clock involved.
//!
//! On disk every per-event row is one JSON array (`[seq, sent_at_us, acked_at_us]`), so a run of
//! some thousand events stays a few hundred kB; faults, paced runs and cluster events are
//! objects, one line each.

use cluster::api::model::ClusterEvent;
use serde::{Deserialize, Serialize};

use crate::backend::WallUs;

/// Every publish, arrival, paced run and fault of a run, in the order they were recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Topics the arrivals came in on; an [`Arrival`] names its topic by index.
    pub topics: Vec<String>,
    pub publishes: Vec<Publish>,
    pub arrivals: Vec<Arrival>,
    /// Arrivals whose payload named no seq (not JSON, or no integer `seq`).
    pub undecodable: Vec<Undecodable>,
    pub paced: Vec<PacedRun>,
    pub faults: Vec<Fault>,
    /// Every coordinator's event log as the harness read it, at the end of the run (each event
    /// names its node).
    #[serde(default)]
    pub cluster_events: Vec<ClusterEvent>,
}

/// How many rows each table held at some moment: a verdict's cut of the history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rows {
    pub publishes: usize,
    pub arrivals: usize,
    pub undecodable: usize,
}

/// The outcome of one publish, recorded when its burst or paced run settled (a late PubAck adds
/// another row with the ack). Disk form `[seq, sent_at_us, acked_at_us]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "(u64, WallUs, Option<WallUs>)",
    into = "(u64, WallUs, Option<WallUs>)"
)]
pub struct Publish {
    pub seq: u64,
    /// When it was handed to the MQTT client (invoked); also the payload's `sent_at_us`.
    pub sent_at_us: WallUs,
    /// When its PubAck was seen; `None`: never acknowledged, the outcome is unknown.
    pub acked_at_us: Option<WallUs>,
}

/// One arrival of a payload that named a seq. Disk form
/// `[seq, copy, at_us, topic, wrong, sent_at_us]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "(u64, u32, WallUs, u16, u8, Option<WallUs>)",
    into = "(u64, u32, WallUs, u16, u8, Option<WallUs>)"
)]
pub struct Arrival {
    pub seq: u64,
    /// 1 for the first arrival naming this seq, 2 for the next, … (good or not).
    pub copy: u32,
    /// Wall-clock µs at which the collector recorded it.
    pub at_us: WallUs,
    /// Index into [`History::topics`].
    pub topic: u16,
    /// [`Field`] bits of the fields missing or not what the workload defines for this seq.
    pub wrong: u8,
    /// The payload's `sent_at_us` (`None`: missing or not an integer); checked against the
    /// publish row by the checker, since only the publisher knows it.
    pub sent_at_us: Option<WallUs>,
}

/// An arrival whose payload named no seq. Disk form `[at_us, topic]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(WallUs, u16)", into = "(WallUs, u16)")]
pub struct Undecodable {
    pub at_us: WallUs,
    pub topic: u16,
}

/// A paced run: what was asked and what was achieved, timed on a monotonic clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PacedRun {
    /// The run's seqs, `from_seq..to_seq`.
    pub from_seq: u64,
    pub to_seq: u64,
    pub requested_per_s: u32,
    /// Events handed to the MQTT client (published, acked or not).
    pub sent: u64,
    /// From the run's first tick to its stop (`Instant`, monotonic).
    pub elapsed_us: u64,
}

impl PacedRun {
    /// The run's seqs.
    pub fn seqs(&self) -> std::ops::Range<u64> {
        self.from_seq..self.to_seq
    }

    /// `200.0/s achieved of 200/s requested (201 events in 1.005 s, monotonic clock)`.
    pub fn describe(&self) -> String {
        format!(
            "{:.1}/s achieved of {}/s requested ({} events in {:.3} s, monotonic clock)",
            self.achieved_per_s(),
            self.requested_per_s,
            self.sent,
            self.elapsed_us as f64 / 1e6
        )
    }

    /// Events actually published per second of the run.
    pub fn achieved_per_s(&self) -> f64 {
        if self.elapsed_us == 0 {
            return 0.0;
        }
        self.sent as f64 * 1e6 / self.elapsed_us as f64
    }
}

/// One injected fault, as the runner delivered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub at_us: WallUs,
    /// `kill`, `stop`, `pause`, `resume`, `partition`, `heal`, `restart`, …
    pub action: String,
    pub node: String,
    /// How the moment was taken (e.g. "kill(2) returned").
    pub how: String,
}

/// The workload fields an output must carry unchanged, as bits of [`Arrival::wrong`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Field {
    EventType = 1,
    SensorId = 2,
    Temperature = 4,
    SentAt = 8,
}

impl Field {
    pub const ALL: [Field; 4] = [
        Field::EventType,
        Field::SensorId,
        Field::Temperature,
        Field::SentAt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::EventType => "event_type",
            Field::SensorId => "sensor_id",
            Field::Temperature => "temperature",
            Field::SentAt => "sent_at_us",
        }
    }

    /// Names of the fields set in `bits`, comma-separated.
    pub fn names(bits: u8) -> String {
        let names: Vec<&str> = Field::ALL
            .iter()
            .filter(|f| bits & **f as u8 != 0)
            .map(|f| f.name())
            .collect();
        names.join(", ")
    }
}

impl History {
    /// The current length of each table.
    pub fn rows(&self) -> Rows {
        Rows {
            publishes: self.publishes.len(),
            arrivals: self.arrivals.len(),
            undecodable: self.undecodable.len(),
        }
    }

    /// Index of `topic` in [`History::topics`], added if new.
    pub fn topic_index(&mut self, topic: &str) -> u16 {
        match self.topics.iter().position(|t| t == topic) {
            Some(i) => i as u16,
            None => {
                self.topics.push(topic.to_owned());
                (self.topics.len() - 1) as u16
            }
        }
    }

    /// Name of topic `index`.
    pub fn topic(&self, index: u16) -> &str {
        self.topics
            .get(usize::from(index))
            .map_or("?", String::as_str)
    }

    /// A fault the runner delivered at `at_us` (wall clock) to `node`.
    pub fn record_fault(&mut self, at_us: WallUs, action: &str, node: &str, how: &str) {
        self.faults.push(Fault {
            at_us,
            action: action.to_owned(),
            node: node.to_owned(),
            how: how.to_owned(),
        });
    }
}

macro_rules! tuple_form {
    ($row:ident ($($field:ident: $ty:ty),+)) => {
        impl From<($($ty,)+)> for $row {
            fn from(($($field,)+): ($($ty,)+)) -> Self {
                $row { $($field),+ }
            }
        }
        impl From<$row> for ($($ty,)+) {
            fn from(row: $row) -> Self {
                ($(row.$field,)+)
            }
        }
    };
}

tuple_form!(Publish(seq: u64, sent_at_us: WallUs, acked_at_us: Option<WallUs>));
tuple_form!(Arrival(seq: u64, copy: u32, at_us: WallUs, topic: u16, wrong: u8, sent_at_us: Option<WallUs>));
tuple_form!(Undecodable(at_us: WallUs, topic: u16));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_arrays_on_disk() {
        let mut h = History::default();
        let topic = h.topic_index("e2e/output");
        h.publishes.push(Publish {
            seq: 2,
            sent_at_us: 10,
            acked_at_us: None,
        });
        h.arrivals.push(Arrival {
            seq: 2,
            copy: 1,
            at_us: 20,
            topic,
            wrong: Field::SensorId as u8,
            sent_at_us: Some(10),
        });
        h.undecodable.push(Undecodable { at_us: 30, topic });
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains(r#""publishes":[[2,10,null]]"#), "{json}");
        assert!(json.contains(r#""arrivals":[[2,1,20,0,2,10]]"#), "{json}");
        assert!(json.contains(r#""undecodable":[[30,0]]"#), "{json}");
        assert_eq!(serde_json::from_str::<History>(&json).unwrap(), h);
        assert_eq!(h.topic_index("e2e/output"), 0);
        assert_eq!(Field::names(0b1010), "sensor_id, sent_at_us");
    }

    #[test]
    fn achieved_rate() {
        let run = PacedRun {
            from_seq: 1,
            to_seq: 202,
            requested_per_s: 200,
            sent: 201,
            elapsed_us: 1_005_000,
        };
        assert!((run.achieved_per_s() - 200.0).abs() < 0.01);
    }
}
