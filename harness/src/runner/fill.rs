//! `fill_log`: grow the coordinators' Raft log to at least `entries` (the leader's last log
//! index) by committing connector writes through the leader, many in flight at once; a log
//! already that long gets none (the later trials of a run). The writes
//! replace one of a few connectors each time, so the log grows and the state (and so each
//! snapshot) stays small: what a long-lived cluster's log looks like, not a big state.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use anyhow::Context;
use cluster::api::model::Connector;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::trial::Trial;
use super::Runner;
use crate::backend::Backend;
use crate::record::Sample;
use crate::step::FillLogArgs;

/// Distinct connector names the writes cycle through.
const FILL_NAMES: u64 = 16;

/// The connector of write `i`: one of [`FILL_NAMES`], its `seq` the write's number (so every
/// write changes the state, as a real update would).
pub fn fill_connector(i: u64) -> Connector {
    Connector {
        name: format!("fill-{}", i % FILL_NAMES),
        connector_type: "mqtt".into(),
        params: BTreeMap::from([
            ("host".into(), "127.0.0.1".into()),
            ("port".into(), 1883.into()),
            ("seq".into(), i.into()),
        ]),
    }
}

impl<B: Backend> Runner<B> {
    pub(super) async fn fill_log(
        &mut self,
        a: &FillLogArgs,
        trial: &mut Trial,
    ) -> anyhow::Result<String> {
        let target = self.options.fill_entries.unwrap_or(a.entries);
        let (leader, _, _) = self
            .await_leader(
                &HashSet::new(),
                0,
                trial.last_fault_us,
                self.options.leader_timeout,
            )
            .await?;
        let base = self.backend.endpoint(leader);
        let before = self.probe.raft_metrics(&base).await?;
        let from = before.last_log_index.unwrap_or(0);
        // Up to the target: later trials of the same run find the log long enough already.
        let writes = target.saturating_sub(from);
        let clock = Instant::now();
        let probe = &self.probe;
        stream::iter(0..writes)
            .map(|i| {
                let base = base.clone();
                async move {
                    probe
                        .post_connector(&base, &fill_connector(i))
                        .await
                        .with_context(|| format!("write {} of {writes}", i + 1))
                }
            })
            .buffer_unordered(a.concurrency.max(1) as usize)
            .try_collect::<Vec<()>>()
            .await?;
        let elapsed = clock.elapsed();
        let after = self.probe.raft_metrics(&base).await?;
        let index = after.last_log_index.unwrap_or(0);
        let rate = writes as f64 / elapsed.as_secs_f64().max(1e-9);
        if writes > 0 {
            trial.samples.push(Sample {
                name: "fill_ms".into(),
                value_us: elapsed.as_micros() as u64,
                how: format!(
                    "first of {writes} connector writes sent → last answered (committed), {} in flight, to the leader ({leader})",
                    a.concurrency
                ),
                method: "harness clock".into(),
                resolution_us: 0,
                floor: None,
            });
        }
        trial.values.insert(
            "fill".into(),
            format!(
                "{writes} entries in {:.1} s ({rate:.0}/s)",
                elapsed.as_secs_f64()
            ),
        );
        trial.values.insert("log_index".into(), index.to_string());
        Ok(format!(
            "{writes} writes (log index {from} → at least {target}) committed in {:.1} s ({rate:.0}/s); the leader's log is at index {index}",
            elapsed.as_secs_f64()
        ))
    }
}
