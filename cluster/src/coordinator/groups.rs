//! Pipeline-group routes: deploy (idempotent by name), list, remove, topology, migrations,
//! manual moves.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::error::ApiJson;
use super::{AppError, Coordinator};
use crate::api::model::{
    GroupDef, GroupInfo, GroupList, MigrateRequest, MigrationList, PlacementInfo, Topology,
    TopologyGroup, TopologyPipeline,
};
use crate::pipeline::vpl;
use crate::raft::state::{pipeline_id, ClusterState, GroupRecord};
use crate::raft::Command;

type Shared = Arc<Coordinator>;

fn not_found(name: &str) -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "group_not_found",
        format!("pipeline group '{name}' does not exist"),
    )
}

fn info(state: &ClusterState, g: &GroupRecord) -> GroupInfo {
    GroupInfo {
        id: g.name.clone(),
        name: g.name.clone(),
        placements: g
            .pipelines
            .iter()
            .map(|p| PlacementInfo {
                pipeline_name: p.def.name.clone(),
                worker_address: p
                    .worker
                    .as_ref()
                    .and_then(|w| state.workers.get(w))
                    .map(|w| w.address.clone()),
                worker_id: p.worker.clone(),
                pipeline_id: pipeline_id(&g.name, &p.def.name),
                epoch: p.epoch,
                status: p.status().into(),
            })
            .collect(),
    }
}

/// Check a group before it is committed: names, and every source parses (400 with position).
pub(super) fn validate(def: &GroupDef) -> Result<(), AppError> {
    if !crate::api::model::is_valid_id(&def.name) {
        return Err(AppError::bad_request(
            "invalid_group",
            "name must be 1-64 of [A-Za-z0-9_.-]",
        ));
    }
    if def.pipelines.is_empty() {
        return Err(AppError::bad_request(
            "invalid_group",
            "a group needs at least one pipeline",
        ));
    }
    let mut names = HashSet::new();
    for p in &def.pipelines {
        if !crate::api::model::is_valid_id(&p.name) || !names.insert(p.name.as_str()) {
            return Err(AppError::bad_request(
                "invalid_group",
                format!("pipeline name '{}' is invalid or repeated", p.name),
            ));
        }
        if p.replicas != 1 {
            return Err(AppError::bad_request(
                "unsupported",
                format!(
                    "pipeline '{}': replicas = {} (only 1 is supported)",
                    p.name, p.replicas
                ),
            ));
        }
        if let Err(e) = vpl::parse(&p.source) {
            return Err(AppError::bad_request(
                "invalid_pipeline",
                format!("pipeline '{}': {e}", p.name),
            ));
        }
    }
    Ok(())
}

pub async fn deploy(
    State(c): State<Shared>,
    ApiJson(def): ApiJson<GroupDef>,
) -> Result<(StatusCode, Json<GroupInfo>), AppError> {
    validate(&def)?;
    if let Some(existing) = c.state.read(|a| {
        a.state.groups.get(&def.name).map(|g| {
            g.pipelines
                .iter()
                .map(|p| p.def.clone())
                .collect::<Vec<_>>()
        })
    }) {
        if existing != def.pipelines {
            return Err(AppError::new(
                StatusCode::CONFLICT,
                "group_exists",
                format!(
                    "a different group named '{}' is deployed; delete it first",
                    def.name
                ),
            ));
        }
    }
    let name = def.name.clone();
    let result = c
        .write(Command::DeployGroup {
            group: def,
            at_ms: crate::events::now_ms(),
        })
        .await?;
    let body = c
        .state
        .read(|a| a.state.groups.get(&name).map(|g| info(&a.state, g)))
        .ok_or_else(|| not_found(&name))?;
    Ok((
        if result.changed {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(body),
    ))
}

pub async fn list(State(c): State<Shared>) -> Json<GroupList> {
    let groups: Vec<GroupInfo> = c
        .state
        .read(|a| a.state.groups.values().map(|g| info(&a.state, g)).collect());
    Json(GroupList {
        total: groups.len() as u64,
        groups,
    })
}

pub async fn get_one(
    State(c): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<GroupInfo>, AppError> {
    c.state
        .read(|a| a.state.groups.get(&name).map(|g| info(&a.state, g)))
        .map(Json)
        .ok_or_else(|| not_found(&name))
}

pub async fn remove(
    State(c): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    let r = c.write(Command::RemoveGroup { name: name.clone() }).await?;
    if r.changed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&name))
    }
}

pub async fn topology(State(c): State<Shared>) -> Json<Topology> {
    Json(c.state.read(|a| {
        Topology {
            groups: a
                .state
                .groups
                .values()
                .map(|g| TopologyGroup {
                    group_id: g.name.clone(),
                    group_name: g.name.clone(),
                    pipelines: g
                        .pipelines
                        .iter()
                        .map(|p| TopologyPipeline {
                            name: p.def.name.clone(),
                            worker_address: p
                                .worker
                                .as_ref()
                                .and_then(|w| a.state.workers.get(w))
                                .map(|w| w.address.clone()),
                            worker_id: p.worker.clone(),
                            epoch: p.epoch,
                            status: p.status().into(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }))
}

pub async fn migrations(State(c): State<Shared>) -> Json<MigrationList> {
    let migrations = c.state.read(|a| a.state.migrations.clone());
    Json(MigrationList {
        total: migrations.len() as u64,
        migrations,
    })
}

pub async fn migrate(
    State(c): State<Shared>,
    Path((group, pipeline)): Path<(String, String)>,
    ApiJson(req): ApiJson<MigrateRequest>,
) -> Result<Json<GroupInfo>, AppError> {
    let epoch = c
        .state
        .read(|a| {
            a.state
                .groups
                .get(&group)
                .and_then(|g| g.pipelines.iter().find(|p| p.def.name == pipeline))
                .map(|p| p.epoch)
        })
        .ok_or_else(|| {
            AppError::new(
                StatusCode::NOT_FOUND,
                "pipeline_not_found",
                format!("no pipeline '{group}/{pipeline}'"),
            )
        })?;
    let r = c
        .write(Command::MovePipeline {
            group: group.clone(),
            pipeline,
            to_worker: req.target_worker_id.clone(),
            expected_epoch: epoch,
            reason: "operator".into(),
            at_ms: crate::events::now_ms(),
        })
        .await?;
    if !r.changed {
        return Err(AppError::new(StatusCode::CONFLICT, "not_moved", format!("not moved: '{}' is not a ready worker, already the owner, or the placement changed meanwhile", req.target_worker_id)));
    }
    get_one(State(c), Path(group)).await
}
