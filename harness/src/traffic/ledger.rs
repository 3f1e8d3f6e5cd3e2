//! The per-event ledger: which numbered events were published, acknowledged and delivered, and
//! from that exactly which were lost, duplicated or unexpected. Also the workload's definition
//! (payload, topics, pipeline names), the one place both ends of the traffic agree on.
//!
//! Pure logic, no I/O. The ledger appends every publish and arrival to the run's
//! [`History`] (what the checkers in [`crate::check`] read) and keeps an index by seq for the
//! waits. Every event is keyed by its run-wide `seq`, so the order in which the publisher's
//! acknowledgements and the collector's arrivals are recorded does not matter: the counts are
//! computed by the checker when [`Ledger::counts`] is called.
//!
//! Vocabulary (Jepsen's): an event the broker acknowledged is *acked*; one whose publish was never
//! acknowledged has an *unknown* outcome (it may or may not have reached the broker) and is never
//! counted lost, only reported apart.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::backend::WallUs;
use crate::check;
use crate::history::{Arrival, Field, History, PacedRun, Publish, Rows, Undecodable};

// ---------------------------------------------------------------------------------------------
// The workload.

/// `event_type` of every workload event.
pub const EVENT_TYPE: &str = "SensorReading";
/// Sensors the events cycle through (`sensor_0` … `sensor_9`), as in the seed suite.
pub const SENSOR_COUNT: u64 = 10;
/// Input topics, one per pipeline (`e2e/input/1` … `e2e/input/3`), as in the seed suite.
pub const PIPELINE_COUNT: u64 = 3;
/// The run's pipeline count (`--pipelines`): the workload's shape, set once per run before any
/// traffic (and by `harness report` from the run's settings) and read by the pure functions
/// below, so the publisher, the ledger and the checkers agree on which pipeline an event is for.
static PIPELINES: AtomicU64 = AtomicU64::new(PIPELINE_COUNT);

/// Set the workload's pipeline count (at least 1).
pub fn set_pipeline_count(n: u64) {
    PIPELINES.store(n.max(1), Ordering::Relaxed);
}

/// `event_type` an output must carry when it is not the input's (`None`: the input's, as the
/// reference pipelines keep every input field). A profile's `[workload] output_event_type`:
/// Varpulis names outputs after the stream that filtered them (`HighTemp`).
static OUTPUT_EVENT_TYPE: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// Set the `event_type` outputs must carry (`None`: the input's).
pub fn set_output_event_type(t: Option<String>) {
    *OUTPUT_EVENT_TYPE.write().unwrap_or_else(|p| p.into_inner()) = t;
}

/// The workload's pipeline count.
pub fn pipeline_count() -> u64 {
    PIPELINES.load(Ordering::Relaxed)
}
/// Prefix of the input topics; the pipeline index follows.
pub const INPUT_TOPIC_PREFIX: &str = "e2e/input/";
/// Filter a stand-in pipeline subscribes to: every input topic.
pub const INPUT_TOPIC_FILTER: &str = "e2e/input/+";
/// Where every pipeline forwards the events that match its filter.
pub const OUTPUT_TOPIC: &str = "e2e/output";
/// The pipelines' filter: `temperature > 50.0`.
pub const FILTER_THRESHOLD: f64 = 50.0;
/// Temperature of even events: above the threshold, so they are forwarded.
pub const MATCHING_TEMPERATURE: f64 = 75.0;
/// Temperature of odd events: below the threshold, so they are dropped by the pipelines.
pub const FILTERED_TEMPERATURE: f64 = 25.0;

/// One workload event, exactly as published and, by a pipeline, forwarded unchanged.
/// Field order is the wire order: `event_type, sensor_id, temperature, seq, sent_at_us`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    pub event_type: String,
    pub sensor_id: String,
    pub temperature: f64,
    pub seq: u64,
    /// Wall-clock µs since the Unix epoch at which the publisher sent it.
    pub sent_at_us: u64,
}

impl SensorReading {
    /// The event numbered `seq`, sent at `sent_at_us`.
    pub fn new(seq: u64, sent_at_us: u64) -> Self {
        SensorReading {
            event_type: EVENT_TYPE.to_owned(),
            sensor_id: format!("sensor_{}", seq % SENSOR_COUNT),
            temperature: temperature_of(seq),
            seq,
            sent_at_us,
        }
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a SensorReading always serializes")
    }
}

/// Temperature of event `seq`: [`MATCHING_TEMPERATURE`] when even, [`FILTERED_TEMPERATURE`] when odd.
pub fn temperature_of(seq: u64) -> f64 {
    if seq % 2 == 0 {
        MATCHING_TEMPERATURE
    } else {
        FILTERED_TEMPERATURE
    }
}

/// Whether the pipelines' filter passes event `seq` (it does for even seqs).
pub fn is_matching(seq: u64) -> bool {
    temperature_of(seq) > FILTER_THRESHOLD
}

/// Index (1-based) of the input topic, and so of the pipeline, of event `seq`: `seq % P + 1`
/// as in the seed (P = 3). For an even P that would give some pipelines only matching events
/// and others none, so pairs of seqs go round instead: `(seq / 2) % P + 1`.
pub fn pipeline_index(seq: u64) -> u64 {
    let p = pipeline_count();
    if p % 2 == 1 {
        seq % p + 1
    } else {
        (seq / 2) % p + 1
    }
}

/// The input topic event `seq` is published to: `e2e/input/{(seq % 3) + 1}` in the seed.
pub fn input_topic(seq: u64) -> String {
    format!("{INPUT_TOPIC_PREFIX}{}", pipeline_index(seq))
}

/// Name of the pipeline reading input topic `index`: `sensor_filter_{index}`.
pub fn pipeline_name(index: u64) -> String {
    format!("sensor_filter_{index}")
}

/// Name of the pipeline that handles event `seq`.
pub fn pipeline_of(seq: u64) -> String {
    pipeline_name(pipeline_index(seq))
}

// ---------------------------------------------------------------------------------------------
// The ledger.

/// Tallies of one window of seqs. Loss and duplication are never netted against each other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tallies {
    /// Seqs recorded as published (acked or not).
    pub published: u64,
    /// Acked, matching seqs: the ones that must come out of the pipelines.
    pub expected: u64,
    /// Expected seqs delivered (well-formed) at least once.
    pub delivered: u64,
    /// Expected seqs with no well-formed delivery.
    pub lost: u64,
    /// Copies beyond the first of published matching seqs, well-formed or not (a seq arriving 3
    /// times counts 2).
    pub duplicated: u64,
    /// Arrivals of seqs never published or not matching the filter, every copy.
    pub unexpected: u64,
    /// Publishes never acknowledged by the broker: outcome unknown, neither expected nor lost.
    pub unknown: u64,
    /// Arrivals naming a seq of the window whose payload was not the event sent (a field missing
    /// or changed), each one, even when a good copy arrived too; they count as no delivery.
    pub malformed: u64,
    /// Arrivals whose payload named no seq, charged to the trial during which they arrived.
    #[serde(default)]
    pub undecodable: u64,
}

/// A window's [`Tallies`] (read through `Deref`: `counts.lost`), with the latencies and the
/// split by pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    #[serde(flatten)]
    pub tallies: Tallies,
    /// First well-formed delivery minus send time, per delivered expected seq, in seq order.
    pub latency_us: Vec<u64>,
    /// Wall-clock µs of each first well-formed delivery, in seq order (for the timeline).
    #[serde(default)]
    pub delivered_at_us: Vec<u64>,
    /// Send times (wall-clock µs) of the lost seqs, in seq order (for the timeline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_sent_at_us: Vec<u64>,
    /// Send time of the seq of every extra copy (a seq arriving 3 times appears twice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicated_sent_at_us: Vec<u64>,
    /// The duplicated seqs a worker's SIGKILL explains (at least once; see
    /// [`crate::check::CRASH_WINDOW_US`]): counted in `duplicated`, not held against a phase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at_crash: Vec<u64>,
    /// Send times of the matching seqs whose publish was never acked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_sent_at_us: Vec<u64>,
    /// The same tallies split by the pipeline that handles each seq.
    pub per_pipeline: BTreeMap<String, PipelineCounts>,
}

impl std::ops::Deref for Counts {
    type Target = Tallies;

    fn deref(&self) -> &Tallies {
        &self.tallies
    }
}

impl std::ops::DerefMut for Counts {
    fn deref_mut(&mut self) -> &mut Tallies {
        &mut self.tallies
    }
}

/// [`Counts`] of one pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineCounts {
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub unexpected: u64,
}

/// What the waits need to know of one seq, kept up to date as rows are recorded.
#[derive(Debug, Default)]
struct Entry {
    published: bool,
    acked: bool,
    /// Arrivals naming this seq so far (numbers the next copy).
    arrivals: u32,
    /// Arrivals whose workload fields were right (the send time is checked by the checker).
    good_arrivals: u32,
}

/// What happened to every event of a run: the [`History`] (the record the checkers read) and an
/// index by seq for the waits ([`Ledger::progress`], [`Ledger::missing`]).
#[derive(Debug, Default)]
pub struct Ledger {
    entries: BTreeMap<u64, Entry>,
    history: History,
}

impl Ledger {
    pub fn new() -> Self {
        Ledger::default()
    }

    /// Event `seq` was published at `sent_at_us`; `acked_at_us`: when the broker PubAck'ed it.
    /// Recording a seq again only upgrades it: a late ack makes an unacked event acked (a second
    /// row); an ack is never withdrawn, and a repeat adds nothing.
    pub fn published(&mut self, seq: u64, sent_at_us: WallUs, acked_at_us: Option<WallUs>) {
        let entry = self.entries.entry(seq).or_default();
        let acked = acked_at_us.is_some();
        if entry.acked || (entry.published && !acked) {
            return;
        }
        entry.published = true;
        entry.acked = acked;
        self.history.publishes.push(Publish {
            seq,
            sent_at_us,
            acked_at_us,
        });
    }

    /// One arrival on `topic`, recorded at `at_us`: a row naming its seq, copy number and which
    /// workload fields were wrong, or, if it names no seq, an undecodable row.
    pub fn arrived(&mut self, topic: &str, at_us: WallUs, payload: &[u8]) {
        let topic = self.history.topic_index(topic);
        let Some(Decoded {
            seq,
            wrong,
            sent_at_us,
        }) = decode(payload)
        else {
            self.history.undecodable.push(Undecodable { at_us, topic });
            return;
        };
        let entry = self.entries.entry(seq).or_default();
        entry.arrivals += 1;
        entry.good_arrivals += u32::from(wrong == 0);
        self.history.arrivals.push(Arrival {
            seq,
            copy: entry.arrivals,
            at_us,
            topic,
            wrong,
            sent_at_us,
        });
    }

    /// A paced run ended.
    pub fn paced_run(&mut self, run: PacedRun) {
        self.history.paced.push(run);
    }

    /// A fault the runner delivered at `at_us` to `node`; `how` says how the moment was taken.
    pub fn record_fault(&mut self, at_us: WallUs, action: &str, node: &str, how: &str) {
        self.history.record_fault(at_us, action, node, how);
    }

    /// Arrivals, run-wide, whose payload named no seq.
    pub fn undecodable(&self) -> u64 {
        self.history.undecodable.len() as u64
    }

    /// The record so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// How many rows the history holds now: the cut a verdict taken now is judged on.
    pub fn rows(&self) -> Rows {
        self.history.rows()
    }

    /// The tallies of the seqs in `window`, as of now.
    pub fn counts(&self, window: Range<u64>) -> Counts {
        check::window(&self.history, window, self.history.rows()).counts
    }

    /// The first well-formed arrival time of each seq of `window` handled by `pipeline`, in
    /// arrival order (for `measure_gap`: how long a pipeline delivered nothing).
    pub fn first_arrivals(&self, window: Range<u64>, pipeline: &str) -> Vec<u64> {
        let mut seen = std::collections::HashSet::new();
        self.history
            .arrivals
            .iter()
            .filter(|a| window.contains(&a.seq) && a.wrong == 0 && pipeline_of(a.seq) == pipeline)
            .filter(|a| seen.insert(a.seq))
            .map(|a| a.at_us)
            .collect()
    }

    /// Run-wide, for progress: matching seqs delivered (well-formed) at least once, whether or
    /// not their publish is settled in the ledger yet.
    pub fn delivered_matching(&self) -> u64 {
        self.entries
            .iter()
            .filter(|(&seq, e)| is_matching(seq) && e.good_arrivals > 0)
            .count() as u64
    }

    /// How many expected seqs of `window` were delivered, of how many: `(delivered, expected)`.
    /// Cheaper than [`Ledger::counts`], for waits that ask often.
    pub fn progress(&self, window: Range<u64>) -> (u64, u64) {
        let mut delivered = 0;
        let mut expected = 0;
        for (&seq, entry) in self.entries.range(window) {
            if Self::is_expected(seq, entry) {
                expected += 1;
                delivered += u64::from(entry.good_arrivals > 0);
            }
        }
        (delivered, expected)
    }

    /// The first `limit` expected seqs of `window` not delivered yet, ascending.
    pub fn missing(&self, window: Range<u64>, limit: usize) -> Vec<u64> {
        self.entries
            .range(window)
            .filter(|(&seq, entry)| Self::is_expected(seq, entry) && entry.good_arrivals == 0)
            .map(|(&seq, _)| seq)
            .take(limit)
            .collect()
    }

    fn is_expected(seq: u64, entry: &Entry) -> bool {
        is_matching(seq) && entry.acked
    }
}

/// What an output payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub seq: u64,
    /// [`Field`] bits of the workload fields missing or not what the workload defines for `seq`.
    pub wrong: u8,
    /// Its `sent_at_us`, if an integer.
    pub sent_at_us: Option<WallUs>,
}

/// Reads an output field by field; `None` if it names no seq (not a JSON object with an integer
/// `seq`). Extra fields are allowed (a pipeline may add some); missing or changed ones are not.
pub fn decode(payload: &[u8]) -> Option<Decoded> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let seq = value.get("seq")?.as_u64()?;
    let str_is = |name: &str, want: &str| value.get(name).and_then(|v| v.as_str()) == Some(want);
    let sent_at_us = value.get("sent_at_us").and_then(|v| v.as_u64());
    let output_type = OUTPUT_EVENT_TYPE
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let checks = [
        (
            Field::EventType,
            str_is("event_type", output_type.as_deref().unwrap_or(EVENT_TYPE)),
        ),
        (
            Field::SensorId,
            str_is("sensor_id", &format!("sensor_{}", seq % SENSOR_COUNT)),
        ),
        (
            Field::Temperature,
            value.get("temperature").and_then(|v| v.as_f64()) == Some(temperature_of(seq)),
        ),
        (Field::SentAt, sent_at_us.is_some()),
    ];
    let wrong = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .fold(0, |bits, (field, _)| bits | *field as u8);
    Some(Decoded {
        seq,
        wrong,
        sent_at_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_at(seq: u64) -> u64 {
        seq * 10_000
    }

    /// Publishes `seq` (acked 100 µs after its send).
    fn publish(ledger: &mut Ledger, seq: u64) {
        ledger.published(seq, sent_at(seq), Some(sent_at(seq) + 100));
    }

    /// One arrival of `seq` exactly as sent, at `at_us`.
    fn deliver(ledger: &mut Ledger, seq: u64, at_us: u64) {
        let payload = SensorReading::new(seq, sent_at(seq)).to_json();
        ledger.arrived(OUTPUT_TOPIC, at_us, &payload);
    }

    /// Publishes every seq of `window` and delivers each matching one once, 1 ms after its send.
    fn clean_run(ledger: &mut Ledger, window: Range<u64>) {
        for seq in window {
            publish(ledger, seq);
            if is_matching(seq) {
                deliver(ledger, seq, sent_at(seq) + 1_000);
            }
        }
    }

    #[test]
    fn workload_shape() {
        let reading = SensorReading::new(14, 1_700_000_000_000_000);
        assert_eq!(
            String::from_utf8(reading.to_json()).unwrap(),
            r#"{"event_type":"SensorReading","sensor_id":"sensor_4","temperature":75.0,"seq":14,"sent_at_us":1700000000000000}"#
        );
        assert_eq!(SensorReading::new(7, 0).temperature, 25.0);
        assert!(is_matching(14) && !is_matching(7));
        assert_eq!(input_topic(3), "e2e/input/1");
        assert_eq!(input_topic(4), "e2e/input/2");
        assert_eq!(input_topic(5), "e2e/input/3");
        assert_eq!(pipeline_of(5), "sensor_filter_3");
    }

    #[test]
    fn decoding_outputs_field_by_field() {
        let good = SensorReading::new(8, 123).to_json();
        let ok = |wrong| {
            Some(Decoded {
                seq: 8,
                wrong,
                sent_at_us: Some(1),
            })
        };
        assert_eq!(
            decode(&good),
            Some(Decoded {
                seq: 8,
                wrong: 0,
                sent_at_us: Some(123)
            })
        );
        // Extra fields added by a pipeline are fine, and 75 is 75.0; changed ones are not.
        let extra = br#"{"event_type":"SensorReading","sensor_id":"sensor_8","temperature":75,"seq":8,"sent_at_us":1,"via":"p1"}"#;
        assert_eq!(decode(extra), ok(0));
        let changed = br#"{"event_type":"SensorReading","sensor_id":"sensor_3","temperature":75.0,"seq":8,"sent_at_us":1}"#;
        assert_eq!(decode(changed), ok(Field::SensorId as u8));
        let hotter = br#"{"event_type":"SensorReading","sensor_id":"sensor_8","temperature":76.0,"seq":8,"sent_at_us":1}"#;
        assert_eq!(decode(hotter), ok(Field::Temperature as u8));
        assert_eq!(
            decode(br#"{"seq":8}"#),
            Some(Decoded {
                seq: 8,
                wrong: 0b1111,
                sent_at_us: None
            })
        );
        assert_eq!(decode(b"not json"), None);
        assert_eq!(decode(br#"{"temperature":75.0}"#), None);
        assert_eq!(decode(br#"[8]"#), None);
    }

    #[test]
    fn clean_window() {
        let mut ledger = Ledger::new();
        clean_run(&mut ledger, 1..61);
        let counts = ledger.counts(1..61);
        assert_eq!(counts.published, 60);
        assert_eq!(counts.expected, 30);
        assert_eq!(counts.delivered, 30);
        assert_eq!(
            (
                counts.lost,
                counts.duplicated,
                counts.unexpected,
                counts.unknown
            ),
            (0, 0, 0, 0)
        );
        assert_eq!((counts.malformed, counts.undecodable), (0, 0));
        assert_eq!(counts.latency_us, vec![1_000; 30]);
        assert_eq!(ledger.progress(1..61), (30, 30));
        assert!(ledger.missing(1..61, 10).is_empty());
        assert_eq!(ledger.rows().publishes, 60);
        assert_eq!(ledger.rows().arrivals, 30);
    }

    #[test]
    fn loss_and_duplication_are_not_netted() {
        let mut ledger = Ledger::new();
        for seq in 1..=10 {
            publish(&mut ledger, seq);
        }
        // Expected: 2, 4, 6, 8, 10. 4 arrives twice, 8 never.
        for seq in [2, 4, 4, 6, 10] {
            deliver(&mut ledger, seq, 200_000);
        }
        let counts = ledger.counts(1..11);
        assert_eq!(counts.expected, 5);
        assert_eq!(counts.delivered, 4);
        assert_eq!(counts.lost, 1);
        assert_eq!(counts.duplicated, 1);
        assert_eq!(counts.unexpected, 0);
        assert_eq!(counts.latency_us.len(), 4);
        assert_eq!(ledger.missing(1..11, 10), vec![8]);
        assert_eq!(ledger.progress(1..11), (4, 5));
        assert_eq!(
            ledger
                .history()
                .arrivals
                .iter()
                .map(|a| a.copy)
                .collect::<Vec<_>>(),
            [1, 1, 2, 1, 1]
        );

        // A third copy is a second extra copy.
        deliver(&mut ledger, 4, 300_000);
        assert_eq!(ledger.counts(1..11).duplicated, 2);
    }

    #[test]
    fn send_times_of_lost_duplicated_and_unknown() {
        let mut ledger = Ledger::new();
        // Matching seqs 2, 4, 6, 8 sent at seq × 1000 µs; 8's publish is never acked.
        for seq in [2, 4, 6] {
            ledger.published(seq, seq * 1000, Some(seq * 1000 + 10));
        }
        ledger.published(8, 8000, None);
        // 2 arrives three times, 4 never, 6 once.
        for seq in [2, 2, 2, 6] {
            let payload = SensorReading::new(seq, seq * 1000).to_json();
            ledger.arrived("e2e/output", 50_000, &payload);
        }
        let counts = ledger.counts(1..10);
        assert_eq!(counts.lost_sent_at_us, vec![4000]);
        assert_eq!(counts.duplicated_sent_at_us, vec![2000, 2000]);
        assert_eq!(counts.unknown_sent_at_us, vec![8000]);
        assert_eq!(counts.delivered_at_us, vec![50_000, 50_000]);
        assert_eq!(counts.latency_us, vec![48_000, 44_000]);
        assert_eq!(ledger.delivered_matching(), 2);
    }

    #[test]
    fn unexpected_odd_and_unpublished_seqs() {
        let mut ledger = Ledger::new();
        clean_run(&mut ledger, 1..11);
        // Odd (filtered) seq 3 came out of a pipeline, twice; seq 12 was never published.
        deliver(&mut ledger, 3, 1);
        deliver(&mut ledger, 3, 2);
        deliver(&mut ledger, 12, 3);
        let counts = ledger.counts(1..13);
        assert_eq!(counts.published, 10);
        assert_eq!(counts.expected, 5);
        assert_eq!(counts.delivered, 5);
        assert_eq!(counts.unexpected, 3);
        assert_eq!(counts.duplicated, 0);
        assert_eq!(counts.lost, 0);
    }

    #[test]
    fn unknown_event_is_not_lost() {
        let mut ledger = Ledger::new();
        publish(&mut ledger, 2);
        ledger.published(4, sent_at(4), None);
        ledger.published(5, sent_at(5), None);
        deliver(&mut ledger, 2, sent_at(2) + 200);
        let counts = ledger.counts(1..6);
        assert_eq!(counts.published, 3);
        assert_eq!(counts.expected, 1);
        assert_eq!(counts.delivered, 1);
        assert_eq!(counts.lost, 0);
        // Every publish never acked is unknown, matching or not.
        assert_eq!(counts.unknown, 2);
        assert_eq!(counts.unexpected, 0);
        assert_eq!(counts.latency_us, vec![200]);

        // A late ack upgrades it (a second row): now expected, and lost until it arrives.
        ledger.published(4, sent_at(4), Some(sent_at(4) + 50));
        assert_eq!(ledger.history().publishes.len(), 4);
        let counts = ledger.counts(1..6);
        assert_eq!((counts.expected, counts.lost, counts.unknown), (2, 1, 1));
        deliver(&mut ledger, 4, sent_at(4) + 100);
        let counts = ledger.counts(1..6);
        assert_eq!((counts.delivered, counts.lost), (2, 0));
        assert_eq!(counts.latency_us, vec![200, 100]);
        // An ack is never withdrawn, and a repeat adds no row.
        ledger.published(4, sent_at(4), None);
        ledger.published(4, sent_at(4), Some(1));
        assert_eq!(ledger.counts(1..6), counts);
        assert_eq!(ledger.history().publishes.len(), 4);
    }

    #[test]
    fn delivery_before_ack_is_order_independent() {
        let mut ledger = Ledger::new();
        deliver(&mut ledger, 2, sent_at(2) + 400);
        publish(&mut ledger, 2);
        let counts = ledger.counts(0..10);
        assert_eq!(
            (counts.expected, counts.delivered, counts.unexpected),
            (1, 1, 0)
        );
        assert_eq!(counts.latency_us, vec![400]);
    }

    #[test]
    fn malformed_copies_count_even_beside_a_good_one() {
        let mut ledger = Ledger::new();
        publish(&mut ledger, 2);
        publish(&mut ledger, 4);
        publish(&mut ledger, 6);
        let mut changed = SensorReading::new(2, sent_at(2));
        changed.sensor_id = "sensor_9".into();
        ledger.arrived(OUTPUT_TOPIC, 1, &changed.to_json());
        // 4: a good copy, then an extra copy with a changed field.
        deliver(&mut ledger, 4, 1);
        let mut hotter = SensorReading::new(4, sent_at(4));
        hotter.temperature = 76.0;
        ledger.arrived(OUTPUT_TOPIC, 2, &hotter.to_json());
        // 6: right workload fields, but not the send time the publisher used.
        ledger.arrived(OUTPUT_TOPIC, 3, &SensorReading::new(6, 1).to_json());
        ledger.arrived(OUTPUT_TOPIC, 4, b"garbage");
        let counts = ledger.counts(0..10);
        assert_eq!(counts.malformed, 3);
        assert_eq!(
            (counts.delivered, counts.lost, counts.duplicated),
            (1, 2, 1)
        );
        assert_eq!(ledger.undecodable(), 1);
        // The waits take 6 for delivered (its send time only the checker can judge).
        assert_eq!(ledger.missing(0..10, 10), vec![2]);
    }

    #[test]
    fn windows_isolate() {
        let mut ledger = Ledger::new();
        clean_run(&mut ledger, 1..301);
        // The second window loses 402 and duplicates 500.
        for seq in 301..601 {
            publish(&mut ledger, seq);
            if is_matching(seq) && seq != 402 {
                deliver(&mut ledger, seq, 1);
            }
        }
        deliver(&mut ledger, 500, 2);

        let first = ledger.counts(1..301);
        assert_eq!((first.expected, first.delivered), (150, 150));
        assert_eq!((first.lost, first.duplicated, first.unexpected), (0, 0, 0));

        let second = ledger.counts(301..601);
        assert_eq!(
            (second.published, second.expected, second.delivered),
            (300, 150, 149)
        );
        assert_eq!(
            (second.lost, second.duplicated, second.unexpected),
            (1, 1, 0)
        );

        assert_eq!(ledger.counts(1000..2000), Counts::default());
    }

    #[test]
    fn per_pipeline_split() {
        let mut ledger = Ledger::new();
        // 300 consecutive seqs: each pipeline gets 100 of them, 50 matching.
        for seq in 1..301 {
            publish(&mut ledger, seq);
            // seq 6 (pipeline 1) is lost; seq 8 (pipeline 3) is duplicated; odd seq 7
            // (pipeline 2) comes out anyway.
            if is_matching(seq) && seq != 6 {
                deliver(&mut ledger, seq, 1);
            }
        }
        deliver(&mut ledger, 8, 2);
        deliver(&mut ledger, 7, 2);

        let counts = ledger.counts(1..301);
        assert_eq!(
            (counts.expected, counts.delivered, counts.lost),
            (150, 149, 1)
        );
        assert_eq!((counts.duplicated, counts.unexpected), (1, 1));
        let names: Vec<&str> = counts.per_pipeline.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["sensor_filter_1", "sensor_filter_2", "sensor_filter_3"]
        );
        let pipeline = |expected, delivered, lost, duplicated, unexpected| PipelineCounts {
            expected,
            delivered,
            lost,
            duplicated,
            unexpected,
        };
        assert_eq!(
            counts.per_pipeline["sensor_filter_1"],
            pipeline(50, 49, 1, 0, 0)
        );
        assert_eq!(
            counts.per_pipeline["sensor_filter_2"],
            pipeline(50, 50, 0, 0, 1)
        );
        assert_eq!(
            counts.per_pipeline["sensor_filter_3"],
            pipeline(50, 50, 0, 1, 0)
        );
    }
}
