//! One path of the bench against the running cluster: a publisher and a collector of its own,
//! sharing a ledger; a step is a paced run at one target rate, measured from the ledger's
//! history and `/proc`.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::procfs::{usage, Sampler, Usage};
use super::ramp::{judge, StepFigures, Verdict};
use crate::backend::broker::{HarnessLogins, COLLECTOR_USER, PUBLISHER_USER};
use crate::backend::{now_us, WallUs};
use crate::history::{History, Rows};
use crate::poll::{poll_until, Poll};
use crate::traffic::ledger::{is_matching, pipeline_count, OUTPUT_TOPIC};
use crate::traffic::publisher::lock;
use crate::traffic::{Collector, Ledger, Publisher};

/// Prefix of the raw broker path's topics (`bench/raw/1` … `bench/raw/P`, one per pipeline
/// input topic, each with a collector of its own, as each input topic has its pipeline): no
/// pipeline reads them.
pub const RAW_TOPIC_PREFIX: &str = "bench/raw/";

/// After a step whose events did not all arrive within the tail: the collector must see no
/// arrival for this long before the next step starts (a backlog still draining would count
/// against it).
const BACKLOG_QUIET: Duration = Duration::from_millis(500);
/// Longest wait for that quiet: a broker still delivering after this is reported by the next
/// step's figures.
const BACKLOG_BOUND: Duration = Duration::from_secs(30);

/// Which way the events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// Publisher → broker → collectors on the [`RAW_TOPIC_PREFIX`] topics; every event comes
    /// back.
    Broker,
    /// Publisher → broker → pipelines → broker → collector on the output topic; the events
    /// passing the filter (even seqs) come back.
    Pipelines,
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Route::Broker => "broker",
            Route::Pipelines => "pipelines",
        }
    }

    /// Whether event `seq` must come back on this path.
    fn expects(self, seq: u64) -> bool {
        match self {
            Route::Broker => true,
            Route::Pipelines => is_matching(seq),
        }
    }
}

/// Why a step ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A step of the ramp.
    Ramp,
    /// At 50 % of the ceiling (latency at a comfortable load).
    Half,
    /// At 90 % of the ceiling.
    NinetyPct,
}

/// Everything one step measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub route: Route,
    pub purpose: Purpose,
    pub target_per_s: u32,
    /// Paced run's duration, monotonic clock.
    pub elapsed_ms: f64,
    /// Events handed to the MQTT client.
    pub sent: u64,
    /// Of those, PubAck'ed by the broker.
    pub acked: u64,
    /// `sent / elapsed`.
    pub offered_per_s: f64,
    /// Acked events that must come back (all on the broker path; the even ones through the
    /// pipelines).
    pub expected: u64,
    /// Of those, first arrival by the step's end plus the latency bound.
    pub delivered_in_time: u64,
    /// Of those, delivered at all (by the end of the tail wait).
    pub delivered: u64,
    /// Extra copies of the step's events.
    pub duplicated: u64,
    /// `delivered_in_time / elapsed`: events out per second.
    pub delivered_per_s: f64,
    /// End-to-end latency (publisher's send stamp → collector's arrival), every delivered event.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub verdict: Verdict,
    /// CPU share and RSS per process between the step's start and end, then the machine's.
    pub usage: Vec<Usage>,
    pub started_us: WallUs,
    pub ended_us: WallUs,
}

impl StepRecord {
    /// `delivered_in_time / expected`.
    pub fn delivered_share(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.delivered_in_time as f64 / self.expected as f64
        }
    }

    /// One process's figures.
    pub fn usage_of(&self, name: &str) -> Option<&Usage> {
        self.usage.iter().find(|u| u.name == name)
    }
}

/// How a step is run and judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepSettings {
    pub step_ms: u64,
    pub latency_bound_ms: f64,
    /// Longest wait, after a step, for its events still on their way.
    pub tail_ms: u64,
}

/// A path's publisher and collector, and the ledger they share.
pub struct PathRig {
    pub route: Route,
    ledger: Arc<Mutex<Ledger>>,
    publisher: Publisher,
    /// Broker path: one per raw topic; pipeline path: one on the output topic.
    collectors: Vec<Collector>,
}

impl PathRig {
    /// Collector first (rumqttd keeps messages only for filters with a subscriber), then the
    /// publisher. `next_seq` is shared by both paths, so their seqs never meet.
    pub async fn connect(
        route: Route,
        host: &str,
        port: u16,
        tag: &str,
        logins: Option<&HarnessLogins>,
        next_seq: Arc<AtomicU64>,
    ) -> anyhow::Result<PathRig> {
        let ledger = Arc::new(Mutex::new(Ledger::new()));
        let name = route.name();
        let (topics, prefix) = match route {
            Route::Broker => (
                (1..=pipeline_count())
                    .map(|i| format!("{RAW_TOPIC_PREFIX}{i}"))
                    .collect(),
                Some(RAW_TOPIC_PREFIX.to_string()),
            ),
            Route::Pipelines => (vec![OUTPUT_TOPIC.to_string()], None),
        };
        let mut collectors = Vec::new();
        for (i, topic) in topics.iter().enumerate() {
            collectors.push(
                Collector::start(
                    host,
                    port,
                    // Client ids start with the account's name: the embedded broker allows no other.
                    &format!("{COLLECTOR_USER}-bench-{name}-{}-{tag}", i + 1),
                    logins.map(|l| l.collector.pair()),
                    topic,
                    ledger.clone(),
                )
                .await?,
            );
        }
        let publisher = Publisher::connect_to(
            host,
            port,
            &format!("{PUBLISHER_USER}-bench-{name}-{tag}"),
            logins.map(|l| l.publisher.pair()),
            ledger.clone(),
            next_seq,
            prefix,
        )
        .await?;
        Ok(PathRig {
            route,
            ledger,
            publisher,
            collectors,
        })
    }

    /// One step: publish at `target_per_s` for the step's duration, then wait (bounded) for the
    /// step's events still on their way, and measure.
    pub async fn step(
        &self,
        purpose: Purpose,
        target_per_s: u32,
        settings: &StepSettings,
        sampler: &Sampler,
    ) -> anyhow::Result<StepRecord> {
        let from = lock(&self.ledger).rows();
        let before = sampler.snapshot()?;
        let started_us = now_us();
        let handle = self
            .publisher
            .start_paced_with(target_per_s, tokio::time::MissedTickBehavior::Burst);
        // The step's length is the measurement itself, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(settings.step_ms)).await;
        let ended_us = now_us();
        let after = sampler.snapshot()?;
        let run = handle.stop().await?;
        let window = run.from_seq..run.to_seq;
        let bound_us = (settings.latency_bound_ms * 1000.0) as u64;
        // The events still on their way: every expected one, or the tail's bound.
        let tail = poll_until(
            format!(
                "{} step at {target_per_s}/s: its events delivered",
                self.route.name()
            ),
            Duration::from_millis(settings.tail_ms),
            async || {
                let t = self.tally(window.clone(), from, ended_us + bound_us);
                Ok(if t.delivered >= t.expected {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!("{} of {} delivered", t.delivered, t.expected))
                })
            },
        )
        .await;
        if let Err(e) = tail {
            // A backlog the tail did not clear would slow the next step down: wait until the
            // collector is quiet (bounded), whatever comes is this step's.
            for collector in &self.collectors {
                let drained = collector.drain(BACKLOG_QUIET, BACKLOG_BOUND).await;
                tracing::info!("{e:#}; then {drained}");
            }
        }
        let t = self.tally(window, from, ended_us + bound_us);
        let elapsed_s = (run.elapsed_us as f64 / 1e6).max(1e-6);
        let mut latencies = t.latencies_us;
        latencies.sort_unstable();
        let pct = |q: f64| percentile_ms(&latencies, q);
        let figures = StepFigures {
            target_per_s,
            offered_per_s: run.sent as f64 / elapsed_s,
            expected: t.expected,
            delivered_in_time: t.delivered_in_time,
            p99_ms: pct(0.99),
        };
        Ok(StepRecord {
            route: self.route,
            purpose,
            target_per_s,
            elapsed_ms: run.elapsed_us as f64 / 1000.0,
            sent: run.sent,
            acked: t.acked,
            offered_per_s: figures.offered_per_s,
            expected: t.expected,
            delivered_in_time: t.delivered_in_time,
            delivered: t.delivered,
            duplicated: t.duplicated,
            delivered_per_s: t.delivered_in_time as f64 / elapsed_s,
            p50_ms: pct(0.50),
            p99_ms: figures.p99_ms,
            max_ms: latencies.last().map(|&v| v as f64 / 1000.0),
            verdict: judge(&figures, settings.latency_bound_ms),
            usage: usage(&before, &after),
            started_us,
            ended_us,
        })
    }

    fn tally(&self, window: Range<u64>, from: Rows, in_time_us: WallUs) -> Tally {
        tally(
            lock(&self.ledger).history(),
            self.route,
            window,
            from,
            in_time_us,
        )
    }

    pub async fn stop(self) {
        self.publisher.stop().await;
        for collector in self.collectors {
            collector.stop().await;
        }
    }
}

/// A step's events as the history has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub acked: u64,
    pub expected: u64,
    pub delivered: u64,
    pub delivered_in_time: u64,
    pub duplicated: u64,
    /// Per delivered event, first arrival minus its send time, in arrival order.
    pub latencies_us: Vec<u64>,
}

/// Counts the events of `window` in `history`: acked publishes the route expects back, their
/// first well-formed arrivals, those by `in_time_us`, and extra copies; rows before `from` (the
/// history's length when the step began) are earlier steps' and are not read.
pub fn tally(
    history: &History,
    route: Route,
    window: Range<u64>,
    from: Rows,
    in_time_us: WallUs,
) -> Tally {
    let mut t = Tally::default();
    // seq → (send time, delivered yet)
    let mut expected: HashMap<u64, (WallUs, bool)> = HashMap::new();
    let mut acked = std::collections::HashSet::new();
    for p in history.publishes.iter().skip(from.publishes) {
        if !window.contains(&p.seq) || p.acked_at_us.is_none() {
            continue;
        }
        acked.insert(p.seq);
        if route.expects(p.seq) {
            expected.entry(p.seq).or_insert((p.sent_at_us, false));
        }
    }
    t.acked = acked.len() as u64;
    t.expected = expected.len() as u64;
    for a in history.arrivals.iter().skip(from.arrivals) {
        let Some((sent_at_us, delivered)) = expected.get_mut(&a.seq) else {
            continue;
        };
        if a.wrong != 0 {
            continue;
        }
        if *delivered {
            t.duplicated += 1;
            continue;
        }
        *delivered = true;
        t.delivered += 1;
        t.delivered_in_time += u64::from(a.at_us <= in_time_us);
        t.latencies_us.push(a.at_us.saturating_sub(*sent_at_us));
    }
    t
}

/// Nearest-rank percentile `q` (0..=1) of sorted µs values, in ms.
pub fn percentile_ms(sorted_us: &[u64], q: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    Some(sorted_us[rank - 1] as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::SensorReading;

    #[test]
    fn tally_of_a_window() {
        let mut ledger = Ledger::new();
        // An earlier step's seqs 1..=4, then this step's 10..=15: 15 never acked.
        for seq in 1..=4 {
            ledger.published(seq, seq, Some(seq + 1));
        }
        let from = ledger.rows();
        for seq in 10..=14 {
            ledger.published(seq, seq * 1000, Some(seq * 1000 + 5));
        }
        ledger.published(15, 15_000, None);
        let arrive = |ledger: &mut Ledger, seq: u64, at: u64| {
            ledger.arrived(
                "bench/raw/1",
                at,
                &SensorReading::new(seq, seq * 1000).to_json(),
            )
        };
        // 10 on time, 11 twice, 12 late, 13 never, 14 on time, 15 (unknown) arrives anyway.
        arrive(&mut ledger, 10, 10_500);
        arrive(&mut ledger, 11, 11_700);
        arrive(&mut ledger, 11, 11_900);
        arrive(&mut ledger, 12, 99_000);
        arrive(&mut ledger, 14, 14_100);
        arrive(&mut ledger, 15, 15_100);
        let t = tally(ledger.history(), Route::Broker, 10..16, from, 20_000);
        assert_eq!(
            t,
            Tally {
                acked: 5,
                expected: 5,
                delivered: 4,
                delivered_in_time: 3,
                duplicated: 1,
                latencies_us: vec![500, 700, 87_000, 100],
            }
        );
        // Through the pipelines only the even seqs come back.
        let t = tally(ledger.history(), Route::Pipelines, 10..16, from, 20_000);
        assert_eq!((t.expected, t.delivered, t.delivered_in_time), (3, 3, 2));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), Some(50.0));
        assert_eq!(percentile_ms(&v, 0.99), Some(99.0));
        assert_eq!(percentile_ms(&v, 1.0), Some(100.0));
        assert_eq!(percentile_ms(&[7000], 0.99), Some(7.0));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }
}
