//! The workload: deploying the seed's pipelines, publishing (bursts and paced), waiting for
//! delivery, and the exact counts a phase asserts.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use cluster::api::model::{Connector, GroupDef, GroupInfo, PipelineDef};

use super::trial::Trial;
use super::Runner;
use crate::backend::Backend;
use crate::poll::{poll_until, Poll};
use crate::step::{
    AssertCountsArgs, DeployArgs, DeployOutcome, PublishArgs, Target, TimeoutArgs, TrafficStartArgs,
};
use crate::traffic::{Collector, Counts, Ledger, Publisher, TrafficHandle};

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
        let collector = Collector::start(
            &host,
            port,
            &format!("harness-collector-{seed:x}"),
            "e2e/output",
            ledger.clone(),
        )
        .await?;
        let publisher = Publisher::connect(
            &host,
            port,
            &format!("harness-publisher-{seed:x}"),
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

    /// The ledger's counts of this trial's events, if it published any.
    pub(super) fn trial_counts(&self, trial: &Trial) -> Option<Counts> {
        match (&self.traffic, &trial.window) {
            (Some(rig), Some(w)) => Some(rig.counts(w.clone())),
            _ => None,
        }
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
        let (created, info) = self.deploy(&base, &a.group, &a.pipelines, timeout).await?;
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
        Ok(format!(
            "group {} {status} via {node}; running: {}",
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
        self.probe.put_connector(base, &connector).await?;
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
        let (created, _) = self.probe.deploy(base, &def).await?;
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
        let window = handle.stop().await?;
        trial.extend_window(window.clone());
        Ok(format!(
            "stopped; seq {}..{} ({} events)",
            window.start,
            window.end,
            window.end - window.start
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

    pub(super) fn assert_counts(
        &mut self,
        a: &AssertCountsArgs,
        trial: &Trial,
    ) -> anyhow::Result<String> {
        let window = trial
            .window
            .clone()
            .context("nothing was published in this trial")?;
        let c = self.rig()?.counts(window);
        let mut wrong = Vec::new();
        if let Some(e) = a.expected {
            if c.expected != e {
                wrong.push(format!(
                    "expected {} events, the ledger expects {}",
                    e, c.expected
                ));
            }
        }
        for (name, want, got) in [
            ("lost", a.lost, c.lost),
            ("duplicated", a.duplicated, c.duplicated),
            ("unexpected", a.unexpected, c.unexpected),
        ] {
            if want != got {
                wrong.push(format!("{name} = {got}, want {want}"));
            }
        }
        let summary = describe_counts(&c);
        if wrong.is_empty() {
            Ok(summary)
        } else {
            bail!("{} ({summary})", wrong.join("; "))
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
    format!(
        "{}/{} delivered, {} lost, {} duplicated, {} unexpected, {} unknown [{}]",
        c.delivered,
        c.expected,
        c.lost,
        c.duplicated,
        c.unexpected,
        c.unknown,
        per.join(", ")
    )
}
