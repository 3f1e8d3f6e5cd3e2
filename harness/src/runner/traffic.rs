//! The workload: deploying the seed's pipelines, publishing (bursts and paced), waiting for
//! delivery, and the exact counts a phase asserts.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use cluster::api::model::{Connector, GroupDef, GroupInfo, PipelineDef};

use super::trial::Trial;
use super::Runner;
use crate::backend::broker::{COLLECTOR_USER, PUBLISHER_USER};
use crate::backend::Backend;
use crate::backend::{NodeName, WallUs};
use crate::history::{History, Rows};
use crate::poll::{poll_until, Poll};
use crate::step::{
    AssertCountsArgs, DeployArgs, DeployOutcome, PublishArgs, Target, TimeoutArgs, TrafficStartArgs,
};
use crate::traffic::collector::Drained;
use crate::traffic::publisher::lock;
use crate::traffic::{
    judge_trial, Collector, Counts, DrainSettings, Ledger, Publisher, TrafficHandle, Verdict,
};

/// Bound of asking again a write refused with 421 not_leader (the probe's write timeout).
const WRITE_BUDGET: Duration = crate::probe::WRITE_TIMEOUT;
/// Bound of waiting for a group's pipelines to run after a deploy.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound of `await_delivery`: generous for a few thousand events on loopback, and it
/// returns as soon as the last expected event arrived.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The harness's MQTT side: publisher, collector and the ledger they share.
pub(super) struct TrafficRig {
    pub ledger: Arc<Mutex<Ledger>>,
    pub publisher: Publisher,
    pub collector: Collector,
    pub paced: Option<TrafficHandle>,
}

impl TrafficRig {
    pub async fn stop(self) {
        if let Some(handle) = self.paced {
            let _ = handle.stop().await;
        }
        self.publisher.stop().await;
        self.collector.stop().await;
    }

    fn counts(&self, window: std::ops::Range<u64>) -> Counts {
        self.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts(window)
    }
}

impl<B: Backend> Runner<B> {
    fn rig(&self) -> anyhow::Result<&TrafficRig> {
        self.traffic
            .as_ref()
            .context("no traffic: the cluster has no broker and workers, or it was not started")
    }

    fn rig_mut(&mut self) -> anyhow::Result<&mut TrafficRig> {
        self.traffic
            .as_mut()
            .context("no traffic: the cluster has no broker and workers, or it was not started")
    }

    /// Connect the collector (first: rumqttd only keeps outputs for filters with a subscriber)
    /// and the publisher to the broker.
    pub(super) async fn start_traffic(&mut self) -> anyhow::Result<TrafficRig> {
        let (host, port) = self.backend.mqtt();
        let ledger = Arc::new(Mutex::new(Ledger::new()));
        let next_seq = Arc::new(AtomicU64::new(1));
        crate::progress::watch_traffic(ledger.clone(), next_seq.clone());
        let seed = self.options.seed;
        // Client ids start with the account's name (`broker::COLLECTOR_USER`, `PUBLISHER_USER`):
        // the embedded broker allows no other.
        let logins = self.backend.spec().mqtt_logins.clone();
        let collector = Collector::start(
            &host,
            port,
            &format!("{COLLECTOR_USER}-{seed:x}"),
            logins.as_ref().map(|l| l.collector.pair()),
            "e2e/output",
            ledger.clone(),
        )
        .await?;
        let publisher = Publisher::connect(
            &host,
            port,
            &format!("{PUBLISHER_USER}-{seed:x}"),
            logins.as_ref().map(|l| l.publisher.pair()),
            ledger.clone(),
            next_seq,
        )
        .await?;
        Ok(TrafficRig {
            ledger,
            publisher,
            collector,
            paced: None,
        })
    }

    pub(super) async fn deploy_step(
        &mut self,
        a: &DeployArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let via = a.via.clone().unwrap_or(Target::Leader);
        let node = self.resolve(&via, trial).await?.node;
        let base = self.backend.endpoint(node);
        let timeout = a.timeout_ms.map_or(DEPLOY_TIMEOUT, Duration::from_millis);
        let pipelines = a.pipelines.clone().unwrap_or_else(|| {
            crate::topology::group_pipelines(&a.group, self.backend.spec().pipelines)
        });
        if pipelines.is_empty() {
            bail!(
                "group {} has no pipelines at --pipelines {}",
                a.group,
                self.backend.spec().pipelines
            );
        }
        let (created, info) = self.deploy(&base, &a.group, &pipelines, timeout).await?;
        let outcome = if created {
            DeployOutcome::Created
        } else {
            DeployOutcome::Existing
        };
        if a.expect.is_some_and(|want| want != outcome) {
            bail!(
                "group {} was {} by {node}, the phase expects it {}",
                a.group,
                describe_outcome(outcome),
                describe_outcome(a.expect.unwrap_or(outcome))
            );
        }
        let placed: Vec<String> = info
            .placements
            .iter()
            .map(|p| {
                format!(
                    "{} on {} (epoch {})",
                    p.pipeline_name,
                    p.worker_id.as_deref().unwrap_or("none"),
                    p.epoch
                )
            })
            .collect();
        let status = describe_outcome(outcome);
        trial
            .values
            .insert(format!("deploy_{}", a.group), status.into());
        let retried = self
            .deploy_note
            .take()
            .map_or(String::new(), |n| format!(" ({n})"));
        Ok(format!(
            "group {} {status} via {node}{retried}; running: {}",
            a.group,
            placed.join(", ")
        ))
    }

    /// Put the MQTT connector and the group; wait until each of its pipelines runs. Returns
    /// whether the cluster created the group (false: it already had it) and its placements.
    async fn deploy(
        &mut self,
        base: &str,
        group: &str,
        pipelines: &[String],
        timeout: Duration,
    ) -> anyhow::Result<(bool, GroupInfo)> {
        let (host, port) = self.backend.mqtt();
        let connector = Connector {
            name: "mqtt_1".into(),
            connector_type: "mqtt".into(),
            params: [
                ("host".to_string(), serde_json::json!(host)),
                ("port".to_string(), serde_json::json!(port)),
            ]
            .into(),
        };
        // A write refused with 421 not_leader is asked again within the write budget (an
        // implementation may refuse writes for a while after its election); the deploy's
        // note says so. Any other refusal ends the step.
        let refusals = std::cell::Cell::new(0u32);
        let write_started = crate::backend::now_us();
        let not_leader = |e: anyhow::Error| {
            if format!("{e:#}").contains("421") {
                refusals.set(refusals.get() + 1);
                Ok(format!("{e:#}"))
            } else {
                Err(e)
            }
        };
        poll_until("the connector accepted", WRITE_BUDGET, async || match self
            .probe
            .put_connector(base, &connector)
            .await
        {
            Ok(()) => Ok(Poll::Ready(())),
            Err(e) => not_leader(e).map(Poll::Pending),
        })
        .await?;
        let def = GroupDef {
            name: group.into(),
            pipelines: pipelines
                .iter()
                .map(|p| {
                    Ok(PipelineDef {
                        name: p.clone(),
                        source: seed_pipeline_source(p)?,
                        worker_affinity: None,
                        replicas: 1,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            routes: vec![],
        };
        let (created, _) = poll_until(
            format!("group {group} accepted"),
            WRITE_BUDGET,
            async || match self.probe.deploy(base, &def).await {
                Ok(answer) => Ok(Poll::Ready(answer)),
                Err(e) => not_leader(e).map(Poll::Pending),
            },
        )
        .await?
        .value;
        if refusals.get() > 0 {
            self.deploy_note = Some(format!(
                "after {} answers 421 not_leader over {} ms",
                refusals.get(),
                (crate::backend::now_us() - write_started) / 1000
            ));
        }
        let info = poll_until(format!("group {group} running"), timeout, async || {
            let live = self.live_coordinators();
            Ok(
                match self
                    .probe
                    .read_any(&live, async |p, base| p.group(base, group).await)
                    .await
                {
                    // Every pipeline of the definition, each running: an empty or partial
                    // placement list is not "all running".
                    Ok(info)
                        if pipelines.iter().all(|name| {
                            info.placements
                                .iter()
                                .any(|p| p.pipeline_name == *name && p.status == "running")
                        }) && info.placements.len() == pipelines.len() =>
                    {
                        Poll::Ready(info)
                    }
                    Ok(info) => Poll::Pending(format!(
                        "{} of {} pipelines placed: {}",
                        info.placements.len(),
                        pipelines.len(),
                        info.placements
                            .iter()
                            .map(|p| format!("{}: {}", p.pipeline_name, p.status))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    Err(e) => Poll::Pending(format!("{e:#}")),
                },
            )
        })
        .await?
        .value;
        Ok((created, info))
    }

    pub(super) async fn publish(
        &mut self,
        a: &PublishArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let rig = self.rig()?;
        let window = rig.publisher.publish_burst(a.count).await?;
        let acked = rig.counts(window.clone());
        trial.extend_window(window.clone());
        Ok(format!(
            "seq {}..{}: {} published, {} expected to match, {} unacknowledged",
            window.start, window.end, acked.published, acked.expected, acked.unknown
        ))
    }

    pub(super) fn traffic_start(&mut self, a: &TrafficStartArgs) -> anyhow::Result<String> {
        let rig = self.rig_mut()?;
        if rig.paced.is_some() {
            bail!("background traffic is already running");
        }
        rig.paced = Some(rig.publisher.start_paced(a.rate_per_s));
        Ok(format!("publishing {} events/s", a.rate_per_s))
    }

    pub(super) async fn traffic_stop(&mut self, trial: &mut Trial) -> anyhow::Result<String> {
        let handle = self
            .rig_mut()?
            .paced
            .take()
            .context("no background traffic is running")?;
        let run = handle.stop().await?;
        trial.extend_window(run.seqs());
        Ok(format!(
            "stopped; seq {}..{}: {}",
            run.from_seq,
            run.to_seq,
            run.describe()
        ))
    }

    pub(super) async fn await_delivery(
        &mut self,
        a: &TimeoutArgs,
        trial: &Trial,
    ) -> anyhow::Result<String> {
        let window = trial
            .window
            .clone()
            .context("nothing was published in this trial")?;
        let timeout = a.timeout_ms.map_or(DELIVERY_TIMEOUT, Duration::from_millis);
        let counts = self
            .rig()?
            .collector
            .await_delivery(window, timeout)
            .await?;
        Ok(format!(
            "{}/{} expected events delivered",
            counts.delivered, counts.expected
        ))
    }

    /// `assert_counts`: the verdict on this trial's events after a drain (its allowances are
    /// also the ones the trial's end is judged by).
    pub(super) async fn assert_counts(
        &mut self,
        a: &AssertCountsArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let window = trial
            .window
            .clone()
            .context("nothing was published in this trial")?;
        let rig = self.rig()?;
        let (from, drain) = (trial.events_from, self.options.drain);
        let v = judge_trial(&rig.collector, Some(window), from, a, drain).await;
        trial.allow = Some(a.clone());
        trial.drain_us += v.drained.waited_us;
        let summary = format!("{}; {}", describe_counts(&v.counts), v.drained);
        if v.passed() {
            Ok(summary)
        } else {
            bail!("{} ({summary})", v.findings.join("; "))
        }
    }

    /// A trial's event verdict at its end, after a drain (none when the trial already failed:
    /// its paced traffic may run until the heal). `None` without traffic.
    pub(super) async fn trial_verdict(&self, trial: &Trial, failed: bool) -> Option<Verdict> {
        let rig = self.traffic.as_ref()?;
        let drain = match failed {
            true => DrainSettings::quiet(Duration::ZERO),
            false => self.options.drain,
        };
        let allow = trial.allow.clone().unwrap_or_default();
        let window = trial.window.clone();
        Some(judge_trial(&rig.collector, window, trial.events_from, &allow, drain).await)
    }

    /// The final drain (see [`Collector::drain`]), then the run's history, for the run-wide
    /// checker, with the coordinators' event logs read to their end. Without traffic: no drain,
    /// and a history of the event logs alone.
    pub async fn final_drain(&mut self) -> (History, Option<Drained>) {
        let (mut history, drained) = match &self.traffic {
            Some(rig) => {
                let drain = self.options.drain;
                let drained = rig.collector.drain(drain.quiet, drain.bound).await;
                (lock(&rig.ledger).history().clone(), Some(drained))
            }
            None => (History::default(), None),
        };
        let live = self.live_coordinators();
        if !self.options.event_log {
            // A profile without an event log: nothing to read.
        } else if let Err(e) = self.events.refresh(&self.probe, &live).await {
            // The record keeps what was read; nothing is judged on it yet.
            tracing::warn!("final read of the event logs: {e:#}");
        }
        history.cluster_events = self.events.events().map(|(_, e)| e.clone()).collect();
        (history, drained)
    }

    /// The history's rows now (none without traffic).
    pub(super) fn history_rows(&self) -> Rows {
        self.traffic
            .as_ref()
            .map_or_else(Rows::default, |rig| lock(&rig.ledger).rows())
    }

    /// Writes a fault into the run's history.
    pub(super) fn record_fault(&self, at_us: WallUs, action: &str, node: NodeName, how: &str) {
        if let Some(rig) = &self.traffic {
            lock(&rig.ledger).record_fault(at_us, action, &node.to_string(), how);
        }
    }
}

fn describe_outcome(o: DeployOutcome) -> &'static str {
    match o {
        DeployOutcome::Created => "created",
        DeployOutcome::Existing => "already deployed (idempotent)",
    }
}

/// The seed's pipeline `sensor_filter_N`: events of `e2e/input/N` above 50.0 to `e2e/output`.
pub fn seed_pipeline_source(name: &str) -> anyhow::Result<String> {
    let n: u32 = name
        .strip_prefix("sensor_filter_")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("'{name}' is not a seed pipeline (sensor_filter_N)"))?;
    Ok(format!(
        "event SensorReading {{ sensor_id: str, temperature: float, seq: int }}\n\
         stream Input = SensorReading.from(mqtt_1, topic: \"e2e/input/{n}\")\n\
         stream HighTemp = Input.where(temperature > 50.0)\n\
         stream Output = HighTemp.to(mqtt_1, topic: \"e2e/output\")\n"
    ))
}

fn describe_counts(c: &Counts) -> String {
    let per: Vec<String> = c
        .per_pipeline
        .iter()
        .map(|(p, x)| format!("{p}: {}/{}", x.delivered, x.expected))
        .collect();
    let duplicated = if c.at_crash.is_empty() {
        c.duplicated.to_string()
    } else {
        format!(
            "{} (seqs {:?} redelivered after a worker's SIGKILL: at least once)",
            c.duplicated, c.at_crash
        )
    };
    format!(
        "{}/{} delivered, {} lost, {duplicated} duplicated, {} unexpected, {} unknown, {} malformed, {} \
         undecodable [{}]",
        c.delivered,
        c.expected,
        c.lost,
        c.unexpected,
        c.unknown,
        c.malformed,
        c.undecodable,
        per.join(", ")
    )
}

impl<B: Backend> Runner<B> {
    /// `measure_gap`: the longest stretch between two marks in which `pipeline` delivered
    /// nothing (first well-formed arrivals of this trial's events), as a sample.
    pub(super) fn measure_gap(
        &mut self,
        a: &crate::step::MeasureGapArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let from = trial.mark_at(&a.from)?.at_us;
        let to = trial.mark_at(&a.to)?.at_us;
        let window = trial.window.clone().unwrap_or(0..0);
        let arrivals = self
            .rig()?
            .ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_arrivals(window, &a.pipeline);
        let (gap_us, at_us) = longest_gap(&arrivals, from, to);
        let how = format!(
            "{} silent from {} ms after {} ({} deliveries in the window)",
            a.pipeline,
            at_us.saturating_sub(from) / 1000,
            a.from,
            arrivals.len()
        );
        trial.samples.push(crate::record::Sample {
            name: a.name.clone(),
            value_us: gap_us,
            how: how.clone(),
            method: "per event".into(),
            // Arrival times are µs timestamps taken as each output came in.
            resolution_us: 1,
            floor: None,
        });
        Ok(format!("{} = {} ms: {how}", a.name, gap_us / 1000))
    }
}

/// The longest stretch without a delivery within `[from_us, to_us]`, given the first-arrival
/// times of one pipeline's events (any order): `(length_us, starts_at_us)`. The edges count:
/// from `from_us` to the first arrival, and from the last arrival to `to_us`.
fn longest_gap(arrivals: &[u64], from_us: u64, to_us: u64) -> (u64, u64) {
    let mut inside: Vec<u64> = arrivals
        .iter()
        .copied()
        .filter(|t| (from_us..=to_us).contains(t))
        .collect();
    inside.sort_unstable();
    let mut best = (0, from_us);
    let mut last = from_us;
    for t in inside.into_iter().chain(std::iter::once(to_us)) {
        if t - last > best.0 {
            best = (t - last, last);
        }
        last = t;
    }
    best
}

#[cfg(test)]
mod gap_tests {
    use super::longest_gap;

    #[test]
    fn the_longest_silence_counts_the_edges() {
        assert_eq!(longest_gap(&[], 10, 50), (40, 10));
        assert_eq!(longest_gap(&[30, 12, 14, 99], 10, 50), (20, 30));
        assert_eq!(longest_gap(&[12, 48], 10, 50), (36, 12));
    }
}
