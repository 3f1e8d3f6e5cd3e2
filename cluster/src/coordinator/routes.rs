//! The coordinator's HTTP routes: health, Raft metrics and RPCs, event log, cluster API.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use serde::Deserialize;

use super::bootstrap::PATH_PEERS;
use super::detector::AliveReport;
use super::error::{ApiJson, ApiQuery};
use super::{groups, role_of, workers, AppError, Coordinator, PATH_ALIVE, PATH_FORWARD};
use crate::api::model::WorkerStatus;
use crate::api::model::{
    Connector, ConnectorList, CoordinatorList, CoordinatorStatus, EventsPage, Health, RaftMetrics,
    WorkerCounts,
};
use crate::auth::{Denied, Role};
use crate::raft::network::{PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};
use crate::raft::{Command, CommandResult, Proposal, TypeConfig};

/// Largest API request body: a pipeline group with its VPL is a few KiB; 1 MiB leaves room for
/// a group of many pipelines and refuses anything that can only be a mistake or an attack.
const API_BODY_LIMIT: usize = 1 << 20;
/// Largest Raft RPC body: a batch of entries or a snapshot chunk (openraft's default chunk is 3 MiB).
const RAFT_BODY_LIMIT: usize = 64 << 20;
/// Longest a request may take, body read included (a slow sender is cut off): above the longest
/// legitimate wait (a write waits at most twice the election timeout for a leader; a snapshot
/// install of a few MiB), far below a stuck connection's lifetime.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

type Shared = Arc<Coordinator>;

/// One route of the coordinator: method, path and the role allowed to call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub role: Role,
}

const fn route(method: &'static str, path: &'static str, role: Role) -> Route {
    Route { method, path, role }
}

/// Every route the coordinator serves. The router is built from this table alone (a handler
/// not listed here is never reached), and `tests/security.rs` tries each one with every
/// credential, so a new route cannot go unchecked.
pub const ROUTES: &[Route] = &[
    route("GET", "/health", Role::Public),
    route("GET", "/ready", Role::Public),
    route("GET", "/metrics", Role::Public),
    route("GET", "/cluster", Role::Public),
    route("GET", "/raft/metrics", Role::Read),
    route("GET", "/api/v1/cluster/coordinators", Role::Read),
    route("GET", "/api/v1/cluster/events", Role::Read),
    route("GET", "/api/v1/cluster/connectors", Role::Read),
    route("GET", "/api/v1/cluster/pipeline-groups", Role::Read),
    route("GET", "/api/v1/cluster/pipeline-groups/{id}", Role::Read),
    route("GET", "/api/v1/cluster/topology", Role::Read),
    route("GET", "/api/v1/cluster/migrations", Role::Read),
    route("GET", "/api/v1/cluster/workers", Role::Read),
    route("GET", "/api/v1/cluster/workers/{id}", Role::Read),
    route("POST", "/api/v1/cluster/connectors", Role::Operator),
    route("POST", "/api/v1/cluster/pipeline-groups", Role::Operator),
    route(
        "DELETE",
        "/api/v1/cluster/pipeline-groups/{id}",
        Role::Operator,
    ),
    route(
        "POST",
        "/api/v1/cluster/pipelines/{group}/{pipeline}/migrate",
        Role::Operator,
    ),
    route("DELETE", "/api/v1/cluster/workers/{id}", Role::Operator),
    route("POST", "/api/v1/cluster/workers/{id}/drain", Role::Operator),
    route("POST", "/api/v1/cluster/workers/register", Role::Worker),
    route(
        "POST",
        "/api/v1/cluster/workers/{id}/heartbeat",
        Role::Worker,
    ),
    route("GET", "/api/v1/cluster/ws", Role::Worker),
    route("POST", PATH_APPEND, Role::Peer),
    route("POST", PATH_VOTE, Role::Peer),
    route("POST", PATH_SNAPSHOT, Role::Peer),
    route("POST", PATH_FORWARD, Role::Peer),
    route("POST", PATH_ALIVE, Role::Peer),
    route("GET", PATH_PEERS, Role::Peer),
];

/// The handler of one listed route.
fn handler(route: &Route) -> MethodRouter<Shared> {
    match (route.method, route.path) {
        ("GET", "/health") => get(health),
        ("GET", "/ready") => get(ready),
        ("GET", "/metrics") => get(metrics),
        ("GET", "/cluster") => get(crate::ui::page),
        ("GET", "/raft/metrics") => get(raft_metrics),
        ("GET", "/api/v1/cluster/coordinators") => get(coordinators),
        ("GET", "/api/v1/cluster/events") => get(events),
        ("GET", "/api/v1/cluster/connectors") => get(list_connectors),
        ("GET", "/api/v1/cluster/pipeline-groups") => get(groups::list),
        ("GET", "/api/v1/cluster/pipeline-groups/{id}") => get(groups::get_one),
        ("GET", "/api/v1/cluster/topology") => get(groups::topology),
        ("GET", "/api/v1/cluster/migrations") => get(groups::migrations),
        ("GET", "/api/v1/cluster/workers") => get(workers::list),
        ("GET", "/api/v1/cluster/workers/{id}") => get(workers::get_one),
        ("POST", "/api/v1/cluster/connectors") => post(put_connector),
        ("POST", "/api/v1/cluster/pipeline-groups") => post(groups::deploy),
        ("DELETE", "/api/v1/cluster/pipeline-groups/{id}") => delete(groups::remove),
        ("POST", "/api/v1/cluster/pipelines/{group}/{pipeline}/migrate") => post(groups::migrate),
        ("DELETE", "/api/v1/cluster/workers/{id}") => delete(workers::remove),
        ("POST", "/api/v1/cluster/workers/{id}/drain") => post(workers::drain),
        ("POST", "/api/v1/cluster/workers/register") => post(workers::register),
        ("POST", "/api/v1/cluster/workers/{id}/heartbeat") => post(workers::rest_heartbeat),
        ("GET", "/api/v1/cluster/ws") => get(workers::ws),
        ("POST", PATH_APPEND) => post(raft_append),
        ("POST", PATH_VOTE) => post(raft_vote),
        ("POST", PATH_SNAPSHOT) => post(raft_snapshot),
        ("POST", PATH_FORWARD) => post(raft_forward),
        ("POST", PATH_ALIVE) => post(raft_alive),
        ("GET", PATH_PEERS) => get(raft_peers),
        (method, path) => unreachable!("ROUTES lists {method} {path} without a handler"),
    }
}

pub fn router(coordinator: Shared) -> Router {
    let mut router = Router::new();
    for r in ROUTES {
        let limit = if r.role == Role::Peer {
            RAFT_BODY_LIMIT
        } else {
            API_BODY_LIMIT
        };
        let method_router = handler(r).layer(DefaultBodyLimit::max(limit)).route_layer(
            middleware::from_fn_with_state((coordinator.clone(), r.role), authorize),
        );
        router = router.route(r.path, method_router);
    }
    router
        .fallback(not_found)
        .layer(middleware::from_fn(deadline))
        .with_state(coordinator)
}

/// Admit the request if its credential fits the route's role; the caller goes into the
/// request's extensions (the worker routes check the id it speaks for).
async fn authorize(
    State((c, role)): State<(Shared, Role)>,
    mut request: Request,
    next: Next,
) -> Response {
    match c.keys.check(role, request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(Denied::Unauthorized) => AppError::unauthorized().into_response(),
        Err(Denied::Forbidden) => AppError::forbidden(format!(
            "this route needs the {} role's credential",
            role.name()
        ))
        .into_response(),
    }
}

/// Bound every request, its body's reading included.
async fn deadline(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => AppError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request did not complete within {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
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
        security: Some(c.keys.mode().into()),
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
                let mut request = c
                    .http
                    .get(format!("{}/raft/metrics", url.trim_end_matches('/')))
                    .timeout(PEER_STATUS_TIMEOUT);
                if let Some(key) = c.keys.operator_key() {
                    request = request.header(crate::auth::API_KEY_HEADER, key);
                }
                request
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
    Ok((status, Json(connector.redacted())))
}

async fn list_connectors(State(c): State<Shared>) -> Json<ConnectorList> {
    let connectors: Vec<Connector> = c.state.read(|a| {
        a.state
            .connectors
            .values()
            .map(Connector::redacted)
            .collect()
    });
    Json(ConnectorList {
        total: connectors.len() as u64,
        connectors,
    })
}
