//! Steps that check what a node cut off from part of the cluster does: a write sent to it is
//! answered in time, no placement moved, a worker fenced itself.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cluster::api::model::{ClusterEventKind, Connector};

use super::trial::{Mark, Trial};
use super::Runner;
use crate::backend::Backend;
use crate::poll::{poll_until, Poll};
use crate::record::Sample;
use crate::step::{AwaitFencedArgs, SinceArgs, WriteAnsweredArgs};

/// Slack above the write budget for the HTTP round trip and a loaded machine's scheduling.
const WRITE_SLACK: Duration = Duration::from_millis(500);

impl<B: Backend> Runner<B> {
    /// `assert_write_answered {via, name}`: the connector write every deploy makes (idempotent),
    /// sent to `via`; any answer within the write budget passes.
    pub(super) async fn assert_write_answered(
        &mut self,
        a: &WriteAnsweredArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let node = self.resolve(&a.via, trial).await?.node;
        let base = self.backend.endpoint(node);
        let budget = Duration::from_millis(2 * self.backend.spec().raft.election_max_ms);
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
        let started = Instant::now();
        let (status, body) = self
            .probe
            .connector_answer(&base, &connector)
            .await
            .with_context(|| format!("a write sent to {node} got no answer"))?;
        let took = started.elapsed();
        if took > budget + WRITE_SLACK {
            bail!(
                "{node} answered a write after {} ms, over the write budget of {} ms (2 × election max) + {} ms: {status}",
                took.as_millis(),
                budget.as_millis(),
                WRITE_SLACK.as_millis()
            );
        }
        trial.samples.push(Sample {
            name: a.name.clone(),
            value_us: took.as_micros() as u64,
            how: format!("write sent to {node} → its answer ({status})"),
            method: "request".into(),
            resolution_us: 0,
            floor: None,
        });
        let body: String = body.chars().take(120).collect();
        Ok(format!(
            "{node} answered a write in {:.1} ms (budget {} ms): {status} {body}",
            took.as_secs_f64() * 1e3,
            budget.as_millis()
        ))
    }

    /// `assert_no_moves {since}`: no coordinator's log holds a move decided since the mark.
    pub(super) async fn assert_no_moves(
        &mut self,
        a: &SinceArgs,
        trial: &Trial,
    ) -> anyhow::Result<String> {
        let since = trial.mark_at(&a.since)?.at_us;
        let moved = self
            .earliest_event(since, |k| {
                matches!(k, ClusterEventKind::MigrationStarted { .. })
            })
            .await
            .with_context(|| format!("cannot tell whether a pipeline moved since '{}'", a.since))?;
        if let Some(mark) = moved {
            bail!("a pipeline moved after '{}' ({})", a.since, mark.how);
        }
        Ok(format!(
            "no pipeline moved since {} (every live coordinator's event log read)",
            a.since
        ))
    }

    /// `await_fenced {target, mark}`: the worker's own `/health` lists no running pipeline.
    pub(super) async fn await_fenced(
        &mut self,
        a: &AwaitFencedArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let node = self.resolve(&a.target, trial).await?.node;
        let base = self.backend.endpoint(node);
        let timeout = a
            .timeout_ms
            .map_or(self.options.leader_timeout, Duration::from_millis);
        let probe = self.probe.clone();
        let seen = poll_until(
            format!("{node} running no pipeline (its /health)"),
            timeout,
            async || {
                let health = match probe.worker_health(&base).await {
                    Ok(h) => h,
                    Err(e) => return Ok(Poll::Pending(format!("{e:#}"))),
                };
                let running = health
                    .get("pipelines")
                    .and_then(|p| p.as_array())
                    .map_or(0, Vec::len);
                Ok(if running == 0 {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!("{running} pipelines running"))
                })
            },
        )
        .await?;
        trial.mark(
            &a.mark,
            Mark::poll(
                seen.at_us,
                seen.resolution_us,
                format!("first poll of {node}'s /health listing no pipeline"),
            ),
        );
        Ok(format!(
            "{node} runs no pipeline (seen within {:.0} ms)",
            seen.resolution_us as f64 / 1e3
        ))
    }
}
