//! The coordinator's HTTP routes: health, Raft metrics and RPCs, event log, cluster API.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use serde::Deserialize;

use super::detector::AliveReport;
use super::error::{ApiJson, ApiQuery};
use super::{groups, role_of, workers, AppError, Coordinator, PATH_ALIVE, PATH_FORWARD};
use crate::api::model::WorkerStatus;
use crate::api::model::{
    Connector, ConnectorList, CoordinatorList, CoordinatorStatus, EventsPage, Health, RaftMetrics,
    WorkerCounts,
};
use crate::auth::ApiKey;
use crate::raft::network::{PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};
use crate::raft::{Command, CommandResult, Proposal, TypeConfig};

/// Largest API request body. Pipeline groups are a few KiB; anything near this is a mistake.
const API_BODY_LIMIT: usize = 1 << 20;
/// Largest Raft RPC body: a batch of entries or a snapshot chunk (openraft's default chunk is 3 MiB).
const RAFT_BODY_LIMIT: usize = 64 << 20;

type Shared = Arc<Coordinator>;

pub fn router(coordinator: Shared) -> Router {
    let raft_rpc = Router::new()
        .route(PATH_APPEND, post(raft_append))
        .route(PATH_VOTE, post(raft_vote))
        .route(PATH_SNAPSHOT, post(raft_snapshot))
        .route(PATH_FORWARD, post(raft_forward))
        .route(PATH_ALIVE, post(raft_alive))
        .route(super::bootstrap::PATH_PEERS, get(raft_peers))
        .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state(
            coordinator.clone(),
            require_key,
        ));
    let mutating = Router::new()
        .route("/api/v1/cluster/connectors", post(put_connector))
        .route("/api/v1/cluster/pipeline-groups", post(groups::deploy))
        .route(
            "/api/v1/cluster/pipeline-groups/{id}",
            delete(groups::remove),
        )
        .route(
            "/api/v1/cluster/pipelines/{group}/{pipeline}/migrate",
            post(groups::migrate),
        )
        .route("/api/v1/cluster/workers/{id}", delete(workers::remove))
        .route("/api/v1/cluster/workers/{id}/drain", post(workers::drain))
        .route_layer(middleware::from_fn_with_state(
            coordinator.clone(),
            require_key,
        ));
    let reads = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/raft/metrics", get(raft_metrics))
        .route("/cluster", get(crate::ui::page))
        .route("/api/v1/cluster/coordinators", get(coordinators))
        .route("/api/v1/cluster/events", get(events))
        .route("/api/v1/cluster/connectors", get(list_connectors))
        .route("/api/v1/cluster/pipeline-groups", get(groups::list))
        .route("/api/v1/cluster/pipeline-groups/{id}", get(groups::get_one))
        .route("/api/v1/cluster/topology", get(groups::topology))
        .route("/api/v1/cluster/migrations", get(groups::migrations))
        .route("/api/v1/cluster/workers", get(workers::list))
        .route("/api/v1/cluster/workers/{id}", get(workers::get_one))
        // Registration, REST heartbeats and the WebSocket check the key themselves (it may
        // come in the body or the Identify frame).
        .route("/api/v1/cluster/workers/register", post(workers::register))
        .route(
            "/api/v1/cluster/workers/{id}/heartbeat",
            post(workers::rest_heartbeat),
        )
        .route("/api/v1/cluster/ws", get(workers::ws));
    Router::new()
        .merge(reads)
        .merge(mutating.layer(DefaultBodyLimit::max(API_BODY_LIMIT)))
        .merge(raft_rpc)
        .fallback(not_found)
        .with_state(coordinator)
}

async fn require_key(State(c): State<Shared>, request: Request, next: Next) -> Response {
    if c.api_key.allows(ApiKey::presented(request.headers())) {
        next.run(request).await
    } else {
        AppError::unauthorized().into_response()
    }
}

async fn not_found() -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn health(State(c): State<Shared>) -> Json<Health> {
    let m = c.raft.metrics().borrow().clone();
    let (connectors, workers, pipeline_groups, active_migrations) = c.state.read(|a| {
        let s = &a.state;
        let count = |status| s.workers.values().filter(|w| w.status == status).count() as u64;
        let workers = WorkerCounts {
            total: s.workers.len() as u64,
            healthy: count(WorkerStatus::Ready),
            unhealthy: count(WorkerStatus::Unhealthy),
            draining: count(WorkerStatus::Draining),
        };
        let active = s
            .migrations
            .iter()
            .filter(|m| m.finished_ms.is_none())
            .count() as u64;
        (
            s.connectors.len() as u64,
            workers,
            s.groups.len() as u64,
            active,
        )
    });
    let status = if m.current_leader.is_none() {
        "critical"
    } else if workers.total == 0 {
        "no_workers"
    } else if workers.unhealthy > 0 {
        "degraded"
    } else {
        "healthy"
    };
    Json(Health {
        status: status.into(),
        role: "coordinator".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        node_id: c.node_id,
        raft_state: role_of(m.state),
        current_term: m.current_term,
        current_leader: m.current_leader,
        workers,
        ws_connections: c.links.count() as u64,
        pipeline_groups,
        active_migrations,
        connectors,
    })
}

async fn metrics(State(c): State<Shared>) -> Response {
    let m = c.raft.metrics().borrow().clone();
    c.state.read(|a| {
        c.metrics.render(
            role_of(m.state),
            m.current_term,
            c.commit_index.get(),
            &a.state,
            c.links.count(),
        )
    })
}

/// Ready: this node knows a leader and is in touch with a quorum. A leader cut off from its
/// peers still names itself leader (openraft 0.9 never steps down), but grants no lease: a
/// worker whose home it is must not move its link back to it.
async fn ready(State(c): State<Shared>) -> Result<Json<serde_json::Value>, AppError> {
    let leader = c.raft.metrics().borrow().current_leader;
    match leader {
        Some(_) if !c.quorum.in_touch() => Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "out_of_touch",
            "this coordinator is out of touch with a quorum",
        )),
        Some(leader) => Ok(Json(serde_json::json!({"ready": true, "leader": leader}))),
        None => Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "this coordinator knows no Raft leader",
        )),
    }
}

async fn raft_metrics(State(c): State<Shared>) -> Json<RaftMetrics> {
    Json(local_raft_metrics(&c))
}

/// How long the coordinators view waits for a peer's `/raft/metrics`: a live peer answers in
/// milliseconds; a dead or frozen one must not hold up a page refreshed every second.
const PEER_STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(400);

async fn coordinators(State(c): State<Shared>) -> Json<CoordinatorList> {
    let asks = c.peers.iter().map(|(&id, url)| {
        let c = c.clone();
        async move {
            if id == c.node_id {
                return CoordinatorStatus {
                    id,
                    url: url.clone(),
                    raft: Some(local_raft_metrics(&c)),
                    error: None,
                };
            }
            let answer = async {
                c.http
                    .get(format!("{}/raft/metrics", url.trim_end_matches('/')))
                    .timeout(PEER_STATUS_TIMEOUT)
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<RaftMetrics>()
                    .await
            }
            .await;
            let (raft, error) = match answer {
                Ok(m) => (Some(m), None),
                Err(e) if e.is_timeout() => (None, Some("no answer in time".to_string())),
                Err(e) if e.is_connect() => (None, Some("unreachable".to_string())),
                Err(e) => (None, Some(e.to_string())),
            };
            CoordinatorStatus {
                id,
                url: url.clone(),
                raft,
                error,
            }
        }
    });
    Json(CoordinatorList {
        answered_by: c.node_id,
        coordinators: futures::future::join_all(asks).await,
    })
}

fn local_raft_metrics(c: &Coordinator) -> RaftMetrics {
    let m = c.raft.metrics().borrow().clone();
    RaftMetrics {
        id: m.id,
        state: role_of(m.state),
        current_term: m.current_term,
        current_leader: m.current_leader,
        last_applied: m.last_applied.map(|l| l.index),
        last_log_index: m.last_log_index,
        commit_index: c.commit_index.get(),
        membership: m.membership_config.membership().voter_ids().collect(),
    }
}

async fn raft_append(
    State(c): State<Shared>,
    ApiJson(rpc): ApiJson<AppendEntriesRequest<TypeConfig>>,
) -> impl IntoResponse {
    let response = c.raft.append_entries(rpc).await;
    // Any answer but "higher vote" means the sender is the leader this node follows.
    if matches!(&response, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
        c.quorum.heard_from_leader();
    }
    Json(response)
}

async fn raft_vote(State(c): State<Shared>, ApiJson(rpc): ApiJson<VoteRequest<u64>>) -> Response {
    if c.rejoining.load(std::sync::atomic::Ordering::SeqCst) {
        // An empty log must not elect anyone: the candidate may lack committed entries.
        return AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "rejoining",
            "this node started with an empty data dir in an existing cluster: it votes once it holds the leader's log",
        )
        .into_response();
    }
    Json(c.raft.vote(rpc).await).into_response()
}

async fn raft_peers(State(c): State<Shared>) -> Json<super::bootstrap::PeerFacts> {
    Json(c.peer_facts())
}

async fn raft_snapshot(
    State(c): State<Shared>,
    ApiJson(rpc): ApiJson<InstallSnapshotRequest<TypeConfig>>,
) -> impl IntoResponse {
    Json(c.raft.install_snapshot(rpc).await)
}

async fn raft_forward(
    State(c): State<Shared>,
    ApiJson(proposal): ApiJson<Proposal>,
) -> Result<Json<CommandResult>, AppError> {
    c.write_local(proposal).await.map(Json)
}

async fn raft_alive(State(c): State<Shared>, ApiJson(report): ApiJson<AliveReport>) -> StatusCode {
    tracing::trace!(from = report.from, "alive report");
    c.links.mark_alive(&report.workers);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinceQuery {
    #[serde(default)]
    since: u64,
}

async fn events(State(c): State<Shared>, ApiQuery(q): ApiQuery<SinceQuery>) -> Json<EventsPage> {
    Json(c.events.since(q.since))
}

async fn put_connector(
    State(c): State<Shared>,
    ApiJson(connector): ApiJson<Connector>,
) -> Result<(StatusCode, Json<Connector>), AppError> {
    if connector.name.trim().is_empty() {
        return Err(AppError::bad_request("invalid_connector", "name is empty"));
    }
    if connector.connector_type != "mqtt" {
        return Err(AppError::bad_request(
            "unsupported_connector_type",
            format!(
                "connector_type '{}' is not supported (supported: mqtt)",
                connector.connector_type
            ),
        ));
    }
    let result = c
        .write(Command::PutConnector {
            connector: connector.clone(),
        })
        .await?;
    let status = if result.changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(connector)))
}

async fn list_connectors(State(c): State<Shared>) -> Json<ConnectorList> {
    let connectors: Vec<Connector> = c
        .state
        .read(|a| a.state.connectors.values().cloned().collect());
    Json(ConnectorList {
        total: connectors.len() as u64,
        connectors,
    })
}
