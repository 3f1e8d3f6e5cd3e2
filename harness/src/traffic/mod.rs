//! The harness's traffic layer: numbered workload events in, pipeline outputs out, and a
//! per-event ledger that says exactly which events were lost, duplicated or unexpected.
//!
//! - [`ledger`] — the workload's definition (payload, topics, pipeline names) and the
//!   [`Ledger`], which records the run's [`crate::history::History`] and indexes it by `seq`.
//! - [`publisher`] — a [`Publisher`] of bursts and paced runs (QoS 1); every event ends up in
//!   the ledger as acked or, never acknowledged by the broker, unknown.
//! - [`collector`] — a [`Collector`] of the pipelines' outputs, recording each arrival, and the
//!   drain (a quiet period) a verdict waits for.
//! - [`verdict`] — a trial's verdict on its events: drain, then [`crate::check`] on the history.
//!
//! The workload: event `seq` (a run-wide counter from 1, so phases' windows never overlap) is
//! `{"event_type":"SensorReading","sensor_id":"sensor_<seq%10>","temperature":T,"seq":seq,
//! "sent_at_us":…}` on `e2e/input/{(seq % 3) + 1}`, with T = 75.0 for even seqs (passing the
//! pipelines' filter `temperature > 50.0`) and 25.0 for odd ones. Pipeline `sensor_filter_N`
//! reads `e2e/input/N` and forwards matching events unchanged to `e2e/output`.

pub mod collector;
pub mod ledger;
pub mod publisher;
pub mod verdict;

pub use collector::Collector;
pub use ledger::{pipeline_name, pipeline_of, Counts, Ledger, PipelineCounts, SensorReading};
pub use publisher::{Publisher, TrafficHandle};
pub use verdict::{judge_trial, DrainSettings, Verdict};
