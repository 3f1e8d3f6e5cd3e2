//! The replicated state machine's data: what every coordinator agrees on (connectors, workers,
//! groups, placements, migrations) and how each command changes it, deterministically.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Command, CommandResult, NodeId};
use crate::api::model::{
    Assignment, Capacity, ClusterEventKind, Connector, Migration, PipelineDef, WorkerStatus,
};

/// Migrations kept in the state (the newest). Enough for any run's report; bounded so the
/// snapshot does not grow forever.
pub const MAX_MIGRATIONS: usize = 1000;

/// Application state replicated by Raft. Serialized whole into snapshots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub connectors: BTreeMap<String, Connector>,
    pub workers: BTreeMap<String, WorkerRecord>,
    pub groups: BTreeMap<String, GroupRecord>,
    pub migrations: Vec<Migration>,
    pub next_migration_id: u64,
    /// Highest placement epoch ever used per pipeline id. Kept when a group is removed, so a
    /// group deployed again under the same name never reuses an epoch: (pipeline, epoch)
    /// names one placement for good (workers, detectors and the driver key on it).
    #[serde(default)]
    pub epochs: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: String,
    pub address: String,
    pub capacity: Capacity,
    pub status: WorkerStatus,
    /// Coordinator holding the worker's WebSocket link, as last committed.
    pub link: Option<NodeId>,
    /// Bumped on every committed link; a detector's verdict on an older generation is stale.
    pub link_gen: u64,
    pub status_changed_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub pipelines: Vec<PipelineRecord>,
    pub routes: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRecord {
    pub def: PipelineDef,
    pub worker: Option<String>,
    pub epoch: u64,
    pub running: bool,
}

impl PipelineRecord {
    pub fn status(&self) -> &'static str {
        match (&self.worker, self.running) {
            (None, _) => "pending",
            (Some(_), false) => "deploying",
            (Some(_), true) => "running",
        }
    }
}

pub fn pipeline_id(group: &str, pipeline: &str) -> String {
    format!("{group}/{pipeline}")
}

impl ClusterState {
    /// Apply one committed command. Deterministic: every node applies the same sequence and
    /// reaches the same state; the events say what changed, for the node's event log.
    pub fn apply(
        &mut self,
        index: u64,
        command: &Command,
    ) -> (CommandResult, Vec<ClusterEventKind>) {
        let mut events = Vec::new();
        let changed = match command {
            Command::PutConnector { connector } => {
                let previous = self
                    .connectors
                    .insert(connector.name.clone(), connector.clone());
                previous.as_ref() != Some(connector)
            }
            Command::RegisterWorker {
                worker_id,
                address,
                capacity,
                at_ms,
            } => {
                let entry = self
                    .workers
                    .entry(worker_id.clone())
                    .or_insert_with(|| WorkerRecord {
                        id: worker_id.clone(),
                        address: address.clone(),
                        capacity: *capacity,
                        status: WorkerStatus::Unhealthy,
                        link: None,
                        link_gen: 0,
                        status_changed_ms: *at_ms,
                    });
                entry.address = address.clone();
                entry.capacity = *capacity;
                set_status(
                    entry,
                    WorkerStatus::Ready,
                    "registered",
                    *at_ms,
                    &mut events,
                )
            }
            Command::WorkerLinked {
                worker_id,
                coordinator,
                at_ms,
            } => match self.workers.get_mut(worker_id) {
                Some(w) => {
                    w.link = Some(*coordinator);
                    w.link_gen += 1;
                    events.push(ClusterEventKind::WorkerLinked {
                        worker_id: worker_id.clone(),
                        coordinator: *coordinator,
                        at_ms: *at_ms,
                    });
                    if w.status == WorkerStatus::Unhealthy {
                        set_status(w, WorkerStatus::Ready, "link restored", *at_ms, &mut events);
                    }
                    true
                }
                None => false,
            },
            Command::MarkWorkerUnhealthy {
                worker_id,
                link_gen,
                reason,
                at_ms,
            } => match self.workers.get_mut(worker_id) {
                Some(w) if link_gen.is_none_or(|g| g == w.link_gen) => {
                    w.link = None;
                    set_status(w, WorkerStatus::Unhealthy, reason, *at_ms, &mut events)
                }
                _ => false,
            },
            Command::SetWorkerStatus {
                worker_id,
                status,
                at_ms,
            } => match self.workers.get_mut(worker_id) {
                Some(w) => set_status(w, *status, "operator", *at_ms, &mut events),
                None => false,
            },
            Command::RemoveWorker { worker_id } => self.workers.remove(worker_id).is_some(),
            Command::DeployGroup { group, at_ms: _ } => {
                if self.groups.contains_key(&group.name) {
                    false
                } else {
                    let mut record = GroupRecord {
                        name: group.name.clone(),
                        pipelines: Vec::new(),
                        routes: group.routes.clone(),
                    };
                    for def in &group.pipelines {
                        let pending: Vec<&str> = record
                            .pipelines
                            .iter()
                            .filter_map(|p| p.worker.as_deref())
                            .collect();
                        let worker =
                            self.choose_worker(def.worker_affinity.as_deref(), None, &pending);
                        let pid = pipeline_id(&group.name, &def.name);
                        let last = self.epochs.get(&pid).copied().unwrap_or(0);
                        let epoch = if worker.is_some() { last + 1 } else { last };
                        self.epochs.insert(pid, epoch);
                        record.pipelines.push(PipelineRecord {
                            def: def.clone(),
                            epoch,
                            worker,
                            running: false,
                        });
                    }
                    self.groups.insert(group.name.clone(), record);
                    true
                }
            }
            Command::RemoveGroup { name } => self.groups.remove(name).is_some(),
            Command::MovePipeline {
                group,
                pipeline,
                to_worker,
                expected_epoch,
                reason,
                at_ms,
            } => self.move_pipeline(
                group,
                pipeline,
                to_worker,
                *expected_epoch,
                reason,
                *at_ms,
                &mut events,
            ),
            Command::MovePipelines { moves, at_ms } => {
                let mut any = false;
                for m in moves {
                    any |= self.move_pipeline(
                        &m.group,
                        &m.pipeline,
                        &m.to_worker,
                        m.expected_epoch,
                        &m.reason,
                        *at_ms,
                        &mut events,
                    );
                }
                any
            }
            Command::PipelineRunning {
                group,
                pipeline,
                worker_id,
                epoch,
                at_ms,
            } => {
                let Some(p) = self.pipeline_mut(group, pipeline) else {
                    return (
                        CommandResult {
                            index,
                            changed: false,
                            link_gen: None,
                            stale: false,
                        },
                        events,
                    );
                };
                if p.worker.as_deref() != Some(worker_id) || p.epoch != *epoch || p.running {
                    false
                } else {
                    p.running = true;
                    events.push(ClusterEventKind::PipelineRunning {
                        group: group.clone(),
                        pipeline: pipeline.clone(),
                        worker_id: worker_id.clone(),
                        epoch: *epoch,
                        at_ms: *at_ms,
                    });
                    if let Some(m) = self.migrations.iter_mut().rev().find(|m| {
                        m.group == *group
                            && m.pipeline == *pipeline
                            && m.epoch == *epoch
                            && m.finished_ms.is_none()
                    }) {
                        m.finished_ms = Some(*at_ms);
                        m.status = "completed".into();
                        events.push(ClusterEventKind::MigrationFinished {
                            migration_id: m.id,
                            group: group.clone(),
                            pipeline: pipeline.clone(),
                            worker_id: worker_id.clone(),
                            epoch: *epoch,
                            at_ms: *at_ms,
                        });
                    }
                    true
                }
            }
        };
        let link_gen = match command {
            Command::WorkerLinked { worker_id, .. } if changed => {
                self.workers.get(worker_id).map(|w| w.link_gen)
            }
            _ => None,
        };
        (
            CommandResult {
                index,
                changed,
                link_gen,
                stale: false,
            },
            events,
        )
    }

    #[allow(clippy::too_many_arguments)] // one field per command field; a struct would only rename them
    fn move_pipeline(
        &mut self,
        group: &str,
        pipeline: &str,
        to_worker: &str,
        expected_epoch: u64,
        reason: &str,
        at_ms: u64,
        events: &mut Vec<ClusterEventKind>,
    ) -> bool {
        let target_ready = self
            .workers
            .get(to_worker)
            .is_some_and(|w| w.status == WorkerStatus::Ready)
            && self.has_room(to_worker, &[]);
        let migration_id = self.next_migration_id + 1;
        let pid = pipeline_id(group, pipeline);
        let last = self.epochs.get(&pid).copied().unwrap_or(0);
        let Some(p) = self.pipeline_mut(group, pipeline) else {
            return false;
        };
        if p.epoch != expected_epoch || !target_ready || p.worker.as_deref() == Some(to_worker) {
            return false;
        }
        let from = p.worker.replace(to_worker.to_string());
        p.epoch = p.epoch.max(last) + 1;
        let new_epoch = p.epoch;
        self.epochs.insert(pid, new_epoch);
        let Some(p) = self.pipeline_mut(group, pipeline) else {
            return false;
        };
        p.running = false;
        let epoch = p.epoch;
        self.next_migration_id = migration_id;
        self.migrations.push(Migration {
            id: migration_id,
            group: group.into(),
            pipeline: pipeline.into(),
            from_worker: from.clone(),
            to_worker: to_worker.into(),
            epoch,
            reason: reason.into(),
            started_ms: at_ms,
            finished_ms: None,
            status: "in_progress".into(),
        });
        if self.migrations.len() > MAX_MIGRATIONS {
            self.migrations.remove(0);
        }
        events.push(ClusterEventKind::MigrationStarted {
            migration_id,
            group: group.into(),
            pipeline: pipeline.into(),
            from_worker: from,
            to_worker: to_worker.into(),
            epoch,
            at_ms,
        });
        true
    }

    fn pipeline_mut(&mut self, group: &str, pipeline: &str) -> Option<&mut PipelineRecord> {
        self.groups
            .get_mut(group)?
            .pipelines
            .iter_mut()
            .find(|p| p.def.name == pipeline)
    }

    /// Pipelines placed on each worker (across all groups), plus `pending`: placements decided
    /// but not in the state yet (one entry per pipeline).
    pub fn load(&self, pending: &[&str]) -> BTreeMap<&str, usize> {
        let mut load: BTreeMap<&str, usize> =
            self.workers.keys().map(|k| (k.as_str(), 0)).collect();
        let placed = self
            .groups
            .values()
            .flat_map(|g| &g.pipelines)
            .filter_map(|p| p.worker.as_deref());
        for w in placed.chain(pending.iter().copied()) {
            if let Some(n) = load.get_mut(w) {
                *n += 1;
            }
        }
        load
    }

    /// Room for one more pipeline on `worker_id` (its `max_pipelines`), counting `pending`.
    pub fn has_room(&self, worker_id: &str, pending: &[&str]) -> bool {
        let Some(w) = self.workers.get(worker_id) else {
            return false;
        };
        let n = self.load(pending).get(worker_id).copied().unwrap_or(0);
        (w.capacity.max_pipelines as usize) > n
    }

    /// The least-loaded ready worker with room (ties: lowest id), or the affinity worker when
    /// it is ready and has room. `pending`: placements decided in the same pass, not applied yet.
    pub fn choose_worker(
        &self,
        affinity: Option<&str>,
        exclude: Option<&str>,
        pending: &[&str],
    ) -> Option<String> {
        let ready = |id: &str| {
            Some(id) != exclude
                && self
                    .workers
                    .get(id)
                    .is_some_and(|w| w.status == WorkerStatus::Ready)
        };
        if let Some(a) = affinity {
            if ready(a) && self.has_room(a, pending) {
                return Some(a.to_string());
            }
        }
        let load = self.load(pending);
        load.into_iter()
            .filter(|(id, n)| ready(id) && self.workers[*id].capacity.max_pipelines as usize > *n)
            .min_by_key(|(id, n)| (*n, *id))
            .map(|(id, _)| id.to_string())
    }

    /// Pipelines whose placement needs a move: on a worker that is not ready, or not placed.
    pub fn misplaced(&self) -> Vec<(String, String, Option<String>, u64)> {
        let mut out = Vec::new();
        for g in self.groups.values() {
            for p in &g.pipelines {
                let ok = p
                    .worker
                    .as_ref()
                    .and_then(|w| self.workers.get(w))
                    .is_some_and(|w| w.status == WorkerStatus::Ready);
                if !ok {
                    out.push((
                        g.name.clone(),
                        p.def.name.clone(),
                        p.worker.clone(),
                        p.epoch,
                    ));
                }
            }
        }
        out
    }

    /// What `worker_id` must run now.
    pub fn assignments(&self, worker_id: &str) -> Vec<Assignment> {
        let mut out = Vec::new();
        for g in self.groups.values() {
            for p in &g.pipelines {
                if p.worker.as_deref() == Some(worker_id) {
                    out.push(Assignment {
                        group: g.name.clone(),
                        pipeline: p.def.name.clone(),
                        pipeline_id: pipeline_id(&g.name, &p.def.name),
                        source: p.def.source.clone(),
                        epoch: p.epoch,
                    });
                }
            }
        }
        out
    }
}

fn set_status(
    w: &mut WorkerRecord,
    status: WorkerStatus,
    reason: &str,
    at_ms: u64,
    events: &mut Vec<ClusterEventKind>,
) -> bool {
    if w.status == status {
        return false;
    }
    w.status = status;
    w.status_changed_ms = at_ms;
    events.push(ClusterEventKind::WorkerStatusChanged {
        worker_id: w.id.clone(),
        status,
        reason: reason.into(),
        at_ms,
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::GroupDef;

    fn connector(name: &str, port: u16) -> Connector {
        Connector {
            name: name.into(),
            connector_type: "mqtt".into(),
            params: [("port".to_string(), serde_json::json!(port))].into(),
        }
    }

    fn apply(state: &mut ClusterState, command: Command) -> bool {
        state.apply(0, &command).0.changed
    }

    fn register(state: &mut ClusterState, id: &str) {
        apply(
            state,
            Command::RegisterWorker {
                worker_id: id.into(),
                address: format!("http://{id}"),
                capacity: Capacity {
                    cpu_cores: 1,
                    pipelines_running: 0,
                    max_pipelines: 10,
                },
                at_ms: 1,
            },
        );
    }

    fn group(name: &str, pipelines: &[&str]) -> Command {
        Command::DeployGroup {
            group: GroupDef {
                name: name.into(),
                pipelines: pipelines
                    .iter()
                    .map(|p| PipelineDef {
                        name: p.to_string(),
                        source: "src".into(),
                        worker_affinity: None,
                        replicas: 1,
                    })
                    .collect(),
                routes: vec![],
            },
            at_ms: 2,
        }
    }

    #[test]
    fn put_connector_is_idempotent_by_name() {
        let mut state = ClusterState::default();
        let put = Command::PutConnector {
            connector: connector("mqtt_1", 1883),
        };
        assert!(apply(&mut state, put.clone()));
        assert!(!apply(&mut state, put));
        assert!(apply(
            &mut state,
            Command::PutConnector {
                connector: connector("mqtt_1", 1884)
            }
        ));
        assert_eq!(state.connectors.len(), 1);
        assert_eq!(state.connectors["mqtt_1"].params["port"], 1884);
    }

    #[test]
    fn groups_are_idempotent_and_placed_least_loaded() {
        let mut state = ClusterState::default();
        for w in ["w1", "w2", "w3", "w4"] {
            register(&mut state, w);
        }
        assert!(apply(&mut state, group("c1", &["p1", "p2"])));
        assert!(apply(&mut state, group("c2", &["p3"])));
        assert!(
            !apply(&mut state, group("c1", &["p1", "p2"])),
            "same name: no second copy"
        );
        let placed: Vec<_> = state
            .groups
            .values()
            .flat_map(|g| &g.pipelines)
            .map(|p| p.worker.clone().unwrap())
            .collect();
        assert_eq!(placed, ["w1", "w2", "w3"]);
        assert_eq!(state.assignments("w2")[0].pipeline_id, "c1/p2");
    }

    #[test]
    fn a_stale_unhealthy_verdict_does_not_apply_after_the_link_moved() {
        let mut state = ClusterState::default();
        register(&mut state, "w1");
        apply(
            &mut state,
            Command::WorkerLinked {
                worker_id: "w1".into(),
                coordinator: 1,
                at_ms: 3,
            },
        );
        let seen_gen = state.workers["w1"].link_gen;
        apply(
            &mut state,
            Command::WorkerLinked {
                worker_id: "w1".into(),
                coordinator: 2,
                at_ms: 4,
            },
        );
        let stale = Command::MarkWorkerUnhealthy {
            worker_id: "w1".into(),
            link_gen: Some(seen_gen),
            reason: "ws closed".into(),
            at_ms: 5,
        };
        assert!(
            !apply(&mut state, stale),
            "the worker moved its link within the grace"
        );
        assert_eq!(state.workers["w1"].status, WorkerStatus::Ready);
        let current = Command::MarkWorkerUnhealthy {
            worker_id: "w1".into(),
            link_gen: Some(seen_gen + 1),
            reason: "ws closed".into(),
            at_ms: 6,
        };
        assert!(apply(&mut state, current));
        assert_eq!(state.workers["w1"].status, WorkerStatus::Unhealthy);
    }

    #[test]
    fn moves_are_fenced_by_epoch_and_finish_when_running() {
        let mut state = ClusterState::default();
        for w in ["w1", "w2"] {
            register(&mut state, w);
        }
        apply(&mut state, group("c1", &["p1"]));
        apply(
            &mut state,
            Command::MarkWorkerUnhealthy {
                worker_id: "w1".into(),
                link_gen: None,
                reason: "x".into(),
                at_ms: 3,
            },
        );
        assert_eq!(
            state.misplaced(),
            vec![("c1".into(), "p1".into(), Some("w1".into()), 1)]
        );
        let mv = |epoch| Command::MovePipeline {
            group: "c1".into(),
            pipeline: "p1".into(),
            to_worker: "w2".into(),
            expected_epoch: epoch,
            reason: "worker unhealthy".into(),
            at_ms: 10,
        };
        assert!(apply(&mut state, mv(1)));
        assert!(
            !apply(&mut state, mv(1)),
            "a second move decided on the old epoch is a no-op"
        );
        let p = &state.groups["c1"].pipelines[0];
        assert_eq!(
            (p.worker.as_deref(), p.epoch, p.running),
            (Some("w2"), 2, false)
        );
        let (_, events) = state.apply(
            0,
            &Command::PipelineRunning {
                group: "c1".into(),
                pipeline: "p1".into(),
                worker_id: "w2".into(),
                epoch: 2,
                at_ms: 15,
            },
        );
        assert!(matches!(
            events.last(),
            Some(ClusterEventKind::MigrationFinished { epoch: 2, .. })
        ));
        assert_eq!(state.migrations[0].finished_ms, Some(15));
        // The old owner's late report of the old epoch changes nothing.
        assert!(!apply(
            &mut state,
            Command::PipelineRunning {
                group: "c1".into(),
                pipeline: "p1".into(),
                worker_id: "w1".into(),
                epoch: 1,
                at_ms: 16
            }
        ));
        assert!(state.misplaced().is_empty());
    }
    #[test]
    fn a_group_deployed_again_never_reuses_an_epoch() {
        let mut state = ClusterState::default();
        for w in ["w1", "w2"] {
            register(&mut state, w);
        }
        apply(&mut state, group("c1", &["p1"]));
        let first = state.groups["c1"].pipelines[0].clone();
        assert_eq!((first.worker.as_deref(), first.epoch), (Some("w1"), 1));
        assert!(apply(
            &mut state,
            Command::MovePipeline {
                group: "c1".into(),
                pipeline: "p1".into(),
                to_worker: "w2".into(),
                expected_epoch: 1,
                reason: "test".into(),
                at_ms: 3,
            }
        ));
        assert!(apply(
            &mut state,
            Command::RemoveGroup { name: "c1".into() }
        ));
        assert!(apply(&mut state, group("c1", &["p1"])));
        let again = &state.groups["c1"].pipelines[0];
        assert!(
            again.epoch > 2,
            "redeployed at epoch {} although epochs 1 and 2 were used: (c1/p1, epoch) no longer names one placement",
            again.epoch
        );
    }

    #[test]
    fn a_move_to_a_worker_without_room_is_a_no_op() {
        let mut state = ClusterState::default();
        register(&mut state, "w1");
        apply(
            &mut state,
            Command::RegisterWorker {
                worker_id: "small".into(),
                address: "http://small".into(),
                capacity: Capacity {
                    cpu_cores: 1,
                    pipelines_running: 0,
                    max_pipelines: 1,
                },
                at_ms: 1,
            },
        );
        apply(&mut state, group("c1", &["p1", "p2"]));
        let on = |state: &ClusterState, p: usize| state.groups["c1"].pipelines[p].worker.clone();
        assert_eq!(
            (on(&state, 0), on(&state, 1)),
            (Some("small".into()), Some("w1".into()))
        );
        let moved = apply(
            &mut state,
            Command::MovePipeline {
                group: "c1".into(),
                pipeline: "p2".into(),
                to_worker: "small".into(),
                expected_epoch: 1,
                reason: "test".into(),
                at_ms: 3,
            },
        );
        assert!(!moved, "small (max_pipelines 1) already runs p1");
    }
}
