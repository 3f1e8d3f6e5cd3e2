//! The per-event ledger: which numbered events were published, acknowledged and delivered, and
//! from that exactly which were lost, duplicated or unexpected. Also the workload's definition
//! (payload, topics, pipeline names), the one place both ends of the traffic agree on.
//!
//! Pure logic, no I/O. Every event is keyed by its run-wide `seq`, so the order in which the
//! publisher's acknowledgements and the collector's arrivals are recorded does not matter: the
//! verdict is computed when [`Ledger::counts`] is called.
//!
//! Vocabulary (Jepsen's): an event the broker acknowledged is *acked*; one whose publish was never
//! acknowledged has an *unknown* outcome (it may or may not have reached the broker) and is never
//! counted lost, only reported apart.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// The workload.

/// `event_type` of every workload event.
pub const EVENT_TYPE: &str = "SensorReading";
/// Sensors the events cycle through (`sensor_0` … `sensor_9`), as in the seed suite.
pub const SENSOR_COUNT: u64 = 10;
/// Input topics, one per pipeline (`e2e/input/1` … `e2e/input/3`), as in the seed suite.
pub const PIPELINE_COUNT: u64 = 3;
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

    /// Whether every field is what the publisher sent for this `seq` (a pipeline must forward
    /// events unchanged). `sent_at_us` is not checked: only the publisher knows it.
    pub fn is_faithful(&self) -> bool {
        self.event_type == EVENT_TYPE
            && self.sensor_id == format!("sensor_{}", self.seq % SENSOR_COUNT)
            && self.temperature == temperature_of(self.seq)
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

/// Index (1-based) of the input topic, and so of the pipeline, of event `seq`.
pub fn pipeline_index(seq: u64) -> u64 {
    seq % PIPELINE_COUNT + 1
}

/// The input topic event `seq` is published to: `e2e/input/{(seq % 3) + 1}`.
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Seqs recorded as published (acked or not).
    pub published: u64,
    /// Acked, matching seqs: the ones that must come out of the pipelines.
    pub expected: u64,
    /// Expected seqs delivered (well-formed) at least once.
    pub delivered: u64,
    /// Expected seqs with no well-formed delivery yet.
    pub lost: u64,
    /// Extra well-formed copies of published matching seqs (a seq arriving 3 times counts 2).
    pub duplicated: u64,
    /// Well-formed arrivals of seqs never published or not matching the filter, every copy.
    pub unexpected: u64,
    /// Matching seqs whose publish was never acked: outcome unknown, neither expected nor lost.
    pub unknown: u64,
    /// Arrivals whose payload named a seq of the window but was not the event sent (a field
    /// missing or changed); they count as no delivery.
    pub malformed: u64,
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
    /// Send times of the matching seqs whose publish was never acked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_sent_at_us: Vec<u64>,
    /// The same tallies split by the pipeline that handles each seq.
    pub per_pipeline: BTreeMap<String, PipelineCounts>,
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

#[derive(Debug, Clone, Copy)]
struct Publication {
    sent_at_us: u64,
    acked: bool,
}

#[derive(Debug, Default)]
struct Entry {
    publication: Option<Publication>,
    /// Well-formed arrivals.
    copies: u64,
    first_delivered_at_us: Option<u64>,
    malformed: u64,
}

/// What happened to every event of a run, keyed by seq.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: BTreeMap<u64, Entry>,
    undecodable: u64,
}

impl Ledger {
    pub fn new() -> Self {
        Ledger::default()
    }

    /// Event `seq` was published at `sent_at_us`; `acked`: the broker PubAck'ed it.
    /// Recording a seq again upgrades it: a late ack makes an unacked event acked (with the send
    /// time given then); an ack is never withdrawn.
    pub fn published(&mut self, seq: u64, sent_at_us: u64, acked: bool) {
        let entry = self.entries.entry(seq).or_default();
        match &mut entry.publication {
            None => entry.publication = Some(Publication { sent_at_us, acked }),
            Some(existing) if acked && !existing.acked => {
                *existing = Publication { sent_at_us, acked };
            }
            Some(_) => {}
        }
    }

    /// One arrival of event `seq` at `received_at_us`. `payload_ok`: the payload was the event
    /// as sent; when not, the arrival is counted malformed and not as a delivery.
    pub fn delivered(&mut self, seq: u64, received_at_us: u64, payload_ok: bool) {
        let entry = self.entries.entry(seq).or_default();
        if !payload_ok {
            entry.malformed += 1;
            return;
        }
        entry.copies += 1;
        if entry.first_delivered_at_us.is_none() {
            entry.first_delivered_at_us = Some(received_at_us);
        }
    }

    /// One arrival whose payload did not even name a seq (not JSON, or no `seq`): it cannot be
    /// placed in a window, so it is only counted run-wide ([`Ledger::undecodable`]).
    pub fn undecodable_arrival(&mut self) {
        self.undecodable += 1;
    }

    /// Arrivals, run-wide, whose payload named no seq.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// The tallies of the seqs in `window`, as of now.
    pub fn counts(&self, window: Range<u64>) -> Counts {
        let mut counts = Counts::default();
        for (&seq, entry) in self.entries.range(window) {
            let pipeline = counts.per_pipeline.entry(pipeline_of(seq)).or_default();
            counts.malformed += entry.malformed;
            let extra_copies = entry.copies.saturating_sub(1);
            match entry.publication {
                Some(publication) if is_matching(seq) => {
                    counts.published += 1;
                    counts.duplicated += extra_copies;
                    pipeline.duplicated += extra_copies;
                    counts
                        .duplicated_sent_at_us
                        .extend((0..extra_copies).map(|_| publication.sent_at_us));
                    if !publication.acked {
                        counts.unknown += 1;
                        counts.unknown_sent_at_us.push(publication.sent_at_us);
                        continue;
                    }
                    counts.expected += 1;
                    pipeline.expected += 1;
                    match entry.first_delivered_at_us {
                        Some(at_us) => {
                            counts.delivered += 1;
                            pipeline.delivered += 1;
                            counts
                                .latency_us
                                .push(at_us.saturating_sub(publication.sent_at_us));
                            counts.delivered_at_us.push(at_us);
                        }
                        None => {
                            counts.lost += 1;
                            pipeline.lost += 1;
                            counts.lost_sent_at_us.push(publication.sent_at_us);
                        }
                    }
                }
                publication => {
                    counts.published += u64::from(publication.is_some());
                    counts.unexpected += entry.copies;
                    pipeline.unexpected += entry.copies;
                }
            }
        }
        counts
    }

    /// Run-wide, for progress: matching seqs delivered (well-formed) at least once, whether or
    /// not their publish is settled in the ledger yet.
    pub fn delivered_matching(&self) -> u64 {
        self.entries
            .iter()
            .filter(|(&seq, e)| is_matching(seq) && e.copies > 0)
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
                delivered += u64::from(entry.copies > 0);
            }
        }
        (delivered, expected)
    }

    /// The first `limit` expected seqs of `window` not delivered yet, ascending.
    pub fn missing(&self, window: Range<u64>, limit: usize) -> Vec<u64> {
        self.entries
            .range(window)
            .filter(|(&seq, entry)| Self::is_expected(seq, entry) && entry.copies == 0)
            .map(|(&seq, _)| seq)
            .take(limit)
            .collect()
    }

    fn is_expected(seq: u64, entry: &Entry) -> bool {
        is_matching(seq) && entry.publication.is_some_and(|p| p.acked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Publishes (acked) and delivers every seq of `window` once, 1 ms after its send.
    fn clean_run(ledger: &mut Ledger, window: Range<u64>) {
        for seq in window {
            ledger.published(seq, seq * 10_000, true);
            if is_matching(seq) {
                ledger.delivered(seq, seq * 10_000 + 1_000, true);
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
        assert!(reading.is_faithful());
        assert_eq!(SensorReading::new(7, 0).temperature, 25.0);
        assert!(is_matching(14) && !is_matching(7));
        assert_eq!(input_topic(3), "e2e/input/1");
        assert_eq!(input_topic(4), "e2e/input/2");
        assert_eq!(input_topic(5), "e2e/input/3");
        assert_eq!(pipeline_of(5), "sensor_filter_3");
        let mut changed = reading.clone();
        changed.temperature = 76.0;
        assert!(!changed.is_faithful());
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
        assert_eq!(counts.malformed, 0);
        assert_eq!(counts.latency_us, vec![1_000; 30]);
        assert_eq!(ledger.progress(1..61), (30, 30));
        assert!(ledger.missing(1..61, 10).is_empty());
    }

    #[test]
    fn loss_and_duplication_are_not_netted() {
        let mut ledger = Ledger::new();
        for seq in 1..=10 {
            ledger.published(seq, 0, true);
        }
        // Expected: 2, 4, 6, 8, 10. 4 arrives twice, 8 never.
        for seq in [2, 4, 4, 6, 10] {
            ledger.delivered(seq, 5, true);
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

        // A third copy is a second extra copy.
        ledger.delivered(4, 6, true);
        assert_eq!(ledger.counts(1..11).duplicated, 2);
    }

    #[test]
    fn send_times_of_lost_duplicated_and_unknown() {
        let mut ledger = Ledger::new();
        // Matching seqs 2, 4, 6, 8 sent at seq × 1000 µs; 8's publish is never acked.
        for seq in [2, 4, 6] {
            ledger.published(seq, seq * 1000, true);
        }
        ledger.published(8, 8000, false);
        // 2 arrives three times, 4 never, 6 once.
        for seq in [2, 2, 2, 6] {
            ledger.delivered(seq, 50_000, true);
        }
        let counts = ledger.counts(1..10);
        assert_eq!(counts.lost_sent_at_us, vec![4000]);
        assert_eq!(counts.duplicated_sent_at_us, vec![2000, 2000]);
        assert_eq!(counts.unknown_sent_at_us, vec![8000]);
        assert_eq!(counts.delivered_at_us, vec![50_000, 50_000]);
        assert_eq!(counts.latency_us, vec![48_000, 44_000]);
        assert_eq!(ledger.delivered_matching(), 2);
        // A filtered (odd) seq is not counted; a delivery not yet settled as published is.
        ledger.delivered(9, 60_000, true);
        ledger.delivered(10, 60_000, true);
        assert_eq!(ledger.delivered_matching(), 3);
    }

    #[test]
    fn unexpected_odd_and_unpublished_seqs() {
        let mut ledger = Ledger::new();
        clean_run(&mut ledger, 1..11);
        // Odd (filtered) seq 3 came out of a pipeline, twice; seq 12 was never published.
        ledger.delivered(3, 1, true);
        ledger.delivered(3, 2, true);
        ledger.delivered(12, 3, true);
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
        ledger.published(2, 100, true);
        ledger.published(4, 100, false);
        ledger.published(5, 100, false);
        ledger.delivered(2, 300, true);
        let counts = ledger.counts(1..6);
        assert_eq!(counts.published, 3);
        assert_eq!(counts.expected, 1);
        assert_eq!(counts.delivered, 1);
        assert_eq!(counts.lost, 0);
        assert_eq!(counts.unknown, 1);
        assert_eq!(counts.unexpected, 0);
        assert_eq!(counts.latency_us, vec![200]);

        // A late ack upgrades it: now expected, and lost until it arrives.
        ledger.published(4, 150, true);
        let counts = ledger.counts(1..6);
        assert_eq!((counts.expected, counts.lost, counts.unknown), (2, 1, 0));
        ledger.delivered(4, 250, true);
        let counts = ledger.counts(1..6);
        assert_eq!((counts.delivered, counts.lost), (2, 0));
        assert_eq!(counts.latency_us, vec![200, 100]);
        // An ack is never withdrawn.
        ledger.published(4, 999, false);
        assert_eq!(ledger.counts(1..6), counts);
    }

    #[test]
    fn delivery_before_ack_is_order_independent() {
        let mut ledger = Ledger::new();
        ledger.delivered(2, 500, true);
        ledger.published(2, 100, true);
        let counts = ledger.counts(0..10);
        assert_eq!(
            (counts.expected, counts.delivered, counts.unexpected),
            (1, 1, 0)
        );
        assert_eq!(counts.latency_us, vec![400]);
    }

    #[test]
    fn malformed_arrivals() {
        let mut ledger = Ledger::new();
        ledger.published(2, 0, true);
        ledger.published(4, 0, true);
        ledger.delivered(2, 1, false);
        ledger.delivered(4, 1, false);
        ledger.delivered(4, 2, true);
        ledger.undecodable_arrival();
        let counts = ledger.counts(0..10);
        assert_eq!(counts.malformed, 2);
        assert_eq!(
            (counts.delivered, counts.lost, counts.duplicated),
            (1, 1, 0)
        );
        assert_eq!(ledger.undecodable(), 1);
    }

    #[test]
    fn windows_isolate() {
        let mut ledger = Ledger::new();
        clean_run(&mut ledger, 1..301);
        // The second window loses 102 and duplicates 200.
        for seq in 301..601 {
            ledger.published(seq, 0, true);
            if is_matching(seq) && seq != 402 {
                ledger.delivered(seq, 1, true);
            }
        }
        ledger.delivered(500, 2, true);

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
            ledger.published(seq, 0, true);
            // seq 6 (pipeline 1) is lost; seq 8 (pipeline 3) is duplicated; odd seq 7
            // (pipeline 2) comes out anyway.
            if is_matching(seq) && seq != 6 {
                ledger.delivered(seq, 1, true);
            }
        }
        ledger.delivered(8, 2, true);
        ledger.delivered(7, 2, true);

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
        let p1 = &counts.per_pipeline["sensor_filter_1"];
        let p2 = &counts.per_pipeline["sensor_filter_2"];
        let p3 = &counts.per_pipeline["sensor_filter_3"];
        assert_eq!(
            *p1,
            PipelineCounts {
                expected: 50,
                delivered: 49,
                lost: 1,
                duplicated: 0,
                unexpected: 0
            }
        );
        assert_eq!(
            *p2,
            PipelineCounts {
                expected: 50,
                delivered: 50,
                lost: 0,
                duplicated: 0,
                unexpected: 1
            }
        );
        assert_eq!(
            *p3,
            PipelineCounts {
                expected: 50,
                delivered: 50,
                lost: 0,
                duplicated: 1,
                unexpected: 0
            }
        );
    }
}
