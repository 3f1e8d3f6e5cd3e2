//! Worker routes: registration, REST heartbeats, the WebSocket link, listing and draining.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};

use super::error::ApiJson;
use super::{AppError, Coordinator};
use crate::api::model::{
    HeartbeatBody, RegisterWorker, WorkerInfo, WorkerList, WorkerStatus, WsMessage,
};
use crate::auth::Caller;
use crate::metrics::DetectionLayer;
use crate::raft::Command;

type Shared = Arc<Coordinator>;

/// How long a new WebSocket may take to send `Identify`.
const IDENTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Largest frame or message a worker sends a coordinator: `Identify` and `Heartbeat` (its
/// per-pipeline counters: about 150 bytes for each of at most a few hundred pipelines). 256 KiB
/// is ten times a worker of 100 pipelines' heartbeat; axum's default (64 MiB) invited abuse.
const WS_MESSAGE_LIMIT: usize = 256 << 10;

/// A worker speaks only for its own id: the id its token is bound to must be the one it names.
fn speaks_for(caller: &Caller, worker_id: &str) -> Result<(), AppError> {
    match caller {
        Caller::Worker(own) if own != worker_id => Err(AppError::forbidden(format!(
            "the token of worker '{own}' cannot speak for worker '{worker_id}'"
        ))),
        _ => Ok(()),
    }
}

pub async fn register(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<RegisterWorker>,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    speaks_for(&caller, &body.worker_id)?;
    if !crate::api::model::is_valid_id(&body.worker_id) {
        return Err(AppError::bad_request(
            "invalid_worker_id",
            "worker_id must be 1-64 of [A-Za-z0-9_.-]",
        ));
    }
    let result = c
        .write(Command::RegisterWorker {
            worker_id: body.worker_id.clone(),
            address: body.address.clone(),
            capacity: body.capacity,
            at_ms: crate::events::now_ms(),
        })
        .await?;
    c.links.saw(&body.worker_id);
    let status = if result.changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(serde_json::json!({"worker_id": body.worker_id, "status": "ready"})),
    ))
}

pub async fn rest_heartbeat(
    State(c): State<Shared>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<Json<serde_json::Value>, AppError> {
    speaks_for(&caller, &id)?;
    if !c.state.read(|a| a.state.workers.contains_key(&id)) {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "worker_not_found",
            format!("worker '{id}' is not registered"),
        ));
    }
    c.heartbeat(&id, body);
    let assignments = c.state.read(|a| a.state.assignments(&id));
    Ok(Json(
        serde_json::json!({"type": "HeartbeatAck", "assignments": assignments, "lease_ms": c.lease_grant()}),
    ))
}

pub async fn list(State(c): State<Shared>) -> Json<WorkerList> {
    let workers = worker_infos(&c);
    Json(WorkerList {
        total: workers.len() as u64,
        workers,
    })
}

pub async fn get_one(
    State(c): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<WorkerInfo>, AppError> {
    worker_infos(&c)
        .into_iter()
        .find(|w| w.id == id)
        .map(Json)
        .ok_or_else(|| {
            AppError::new(
                StatusCode::NOT_FOUND,
                "worker_not_found",
                format!("worker '{id}' is not registered"),
            )
        })
}

pub async fn remove(
    State(c): State<Shared>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let r = c
        .write(Command::RemoveWorker {
            worker_id: id.clone(),
        })
        .await?;
    if r.changed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::new(
            StatusCode::NOT_FOUND,
            "worker_not_found",
            format!("worker '{id}' is not registered"),
        ))
    }
}

pub async fn drain(
    State(c): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<WorkerInfo>, AppError> {
    if !c.state.read(|a| a.state.workers.contains_key(&id)) {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "worker_not_found",
            format!("worker '{id}' is not registered"),
        ));
    }
    c.write(Command::SetWorkerStatus {
        worker_id: id.clone(),
        status: WorkerStatus::Draining,
        at_ms: crate::events::now_ms(),
    })
    .await?;
    get_one(State(c), Path(id)).await
}

pub fn worker_infos(c: &Coordinator) -> Vec<WorkerInfo> {
    let heartbeats = c
        .links
        .heartbeats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    c.state.read(|a| {
        a.state
            .workers
            .values()
            .map(|w| {
                let assigned = a.state.assignments(&w.id);
                let running = a
                    .state
                    .groups
                    .values()
                    .flat_map(|g| &g.pipelines)
                    .filter(|p| p.worker.as_deref() == Some(w.id.as_str()) && p.running)
                    .count();
                WorkerInfo {
                    id: w.id.clone(),
                    address: w.address.clone(),
                    status: w.status,
                    pipelines_running: running as u64,
                    max_pipelines: w.capacity.max_pipelines,
                    assigned_pipelines: assigned.into_iter().map(|a| a.pipeline_id).collect(),
                    events_processed: heartbeats.get(&w.id).map_or(0, |h| h.events_processed),
                    link_coordinator: w.link,
                }
            })
            .collect()
    })
}

/// The worker link. The route's credential check ran before this handler, so a request without
/// a worker token never upgrades; `Identify` must then name the token's own worker.
pub async fn ws(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .max_message_size(WS_MESSAGE_LIMIT)
        .max_frame_size(WS_MESSAGE_LIMIT)
        .on_upgrade(move |socket| link(c, caller, socket))
}

async fn send(socket: &mut WebSocket, message: &WsMessage) -> bool {
    match serde_json::to_string(message) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

/// One worker's WebSocket link, from Identify to close.
async fn link(c: Shared, caller: Caller, mut socket: WebSocket) {
    let worker_id = match tokio::time::timeout(IDENTIFY_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<WsMessage>(&text) {
            Ok(WsMessage::Identify { worker_id, .. }) => {
                if let Err(e) = speaks_for(&caller, &worker_id) {
                    let message = format!("forbidden: {}", e.body.error);
                    send(&mut socket, &WsMessage::Error { message }).await;
                    return;
                }
                if !c.knows_worker_soon(&worker_id).await {
                    send(
                        &mut socket,
                        &WsMessage::Error {
                            message: format!("unknown worker '{worker_id}': register first"),
                        },
                    )
                    .await;
                    return;
                }
                worker_id
            }
            _ => {
                send(
                    &mut socket,
                    &WsMessage::Error {
                        message: "expected Identify".into(),
                    },
                )
                .await;
                return;
            }
        },
        _ => return,
    };
    let conn = c.links.open(&worker_id);
    c.metrics.link_changed(true);
    tracing::info!(%worker_id, conn, "worker link opened");
    // Commit the link (in the background: during an election that can take seconds, and the
    // worker must not give up on the handshake) so other coordinators' grace timers stand down.
    let commit = Arc::new(LinkCommit::default());
    c.commit_link(&worker_id, &commit);
    let ack = WsMessage::IdentifyAck {
        heartbeat_interval_secs: c.detector.heartbeat_interval.as_secs().max(1),
        coordinator_id: c.node_id,
        heartbeat_interval_ms: Some(c.detector.heartbeat_interval.as_millis() as u64),
        lease_ms: Some(c.detector.lease.as_millis() as u64),
        link_deadline_ms: Some(c.detector.ping_dead.as_millis() as u64),
    };
    let mut last_sent = c.state.read(|a| a.state.assignments(&worker_id));
    // Why the link ended, and the detection layer that saw it (the ping deadline: a hung or
    // cut-off worker; anything else: the connection itself closed or failed).
    let (reason, layer) = if send(&mut socket, &ack).await
        && send(
            &mut socket,
            &WsMessage::Assignments {
                assignments: last_sent.clone(),
            },
        )
        .await
    {
        let mut changes = c.state.changes();
        let mut ping = tokio::time::interval(c.detector.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_rx = Instant::now();
        loop {
            tokio::select! {
                frame = socket.recv() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        last_rx = Instant::now();
                        match serde_json::from_str::<WsMessage>(&text) {
                            Ok(WsMessage::Heartbeat(body)) => {
                                c.heartbeat(&worker_id, body);
                                // The live link keeps the committed link pointing here: a late
                                // commit from a link this worker abandoned must not stand.
                                let committed = c.state.read(|a| a.state.workers.get(&worker_id).and_then(|w| w.link));
                                if committed != Some(c.node_id) {
                                    c.commit_link(&worker_id, &commit);
                                }
                                let lease_ms = c.lease_grant();
                                // Assignments before a lease: a worker renewing after a lapse
                                // resumes what it was last told, so it must hear of any move
                                // this node applied before the lease lets it start anything.
                                let now = c.state.read(|a| a.state.assignments(&worker_id));
                                if lease_ms.is_some() && now != last_sent {
                                    last_sent = now;
                                    if !send(&mut socket, &WsMessage::Assignments { assignments: last_sent.clone() }).await {
                                        break ("send failed".to_string(), DetectionLayer::WsClose);
                                    }
                                }
                                let ack = WsMessage::HeartbeatAck { lease_ms };
                                if !send(&mut socket, &ack).await {
                                    break ("send failed".to_string(), DetectionLayer::WsClose);
                                }
                            }
                            Ok(other) => tracing::debug!(%worker_id, ?other, "ignored frame"),
                            Err(e) => tracing::warn!(%worker_id, "bad frame: {e}"),
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => break ("WebSocket closed".to_string(), DetectionLayer::WsClose),
                    Some(Ok(_)) => {
                        last_rx = Instant::now();
                        c.links.saw(&worker_id);
                    }
                    Some(Err(e)) => break (format!("WebSocket error: {e}"), DetectionLayer::WsClose),
                },
                _ = ping.tick() => {
                    if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                        break ("ping send failed".to_string(), DetectionLayer::WsClose);
                    }
                }
                // The deadline fires exactly `ping_dead` after the last frame, not at the next
                // ping tick: a hung worker is declared dead within the deadline itself.
                _ = tokio::time::sleep_until((last_rx + c.detector.ping_dead).into()) => {
                    break (
                        format!("no frame for {} ms (ping deadline)", c.detector.ping_dead.as_millis()),
                        DetectionLayer::PingDeadline,
                    );
                }
                r = changes.changed() => {
                    if r.is_err() { break ("shutting down".to_string(), DetectionLayer::WsClose); }
                    let now = c.state.read(|a| a.state.assignments(&worker_id));
                    if now != last_sent {
                        last_sent = now;
                        if !send(&mut socket, &WsMessage::Assignments { assignments: last_sent.clone() }).await {
                            break ("send failed".to_string(), DetectionLayer::WsClose);
                        }
                    }
                }
            }
        }
    } else {
        ("send failed".to_string(), DetectionLayer::WsClose)
    };
    commit.closed.store(true, Ordering::SeqCst);
    c.metrics.link_changed(false);
    if c.links.close(&worker_id, conn) {
        let link_gen = *commit.gen.lock().unwrap_or_else(|p| p.into_inner());
        tracing::warn!(%worker_id, %reason, ?link_gen, "worker link lost");
        match link_gen {
            Some(g) => c.link_lost(worker_id, Some(g), reason, layer),
            // Never committed: not ours to judge; the leader's liveness sweep decides.
            None => {
                tracing::warn!(%worker_id, "link lost before it was committed; leaving the verdict to the liveness sweep")
            }
        }
    }
}

/// The commit state of one WebSocket link.
#[derive(Debug, Default)]
struct LinkCommit {
    /// Link generation of this link's latest committed `WorkerLinked`.
    gen: std::sync::Mutex<Option<u64>>,
    in_flight: AtomicBool,
    closed: AtomicBool,
}

/// How long an Identify from an unknown worker waits for this node to apply its registration
/// (committed through the leader, possibly not applied here yet).
const REGISTRATION_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// Pause between attempts to commit a link while no leader accepts writes.
const LINK_COMMIT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

impl Coordinator {
    /// The lease a heartbeat's acknowledgement renews: only while this node is in touch with a
    /// quorum, so a worker cut off with its coordinator stops before the others move its work.
    /// A lease only from a node in touch with a quorum *and* caught up: it has applied every
    /// entry it knows committed. A follower resumed after a freeze is in touch as soon as it
    /// accepts the leader's next AppendEntries, before it applies what it missed; its placements
    /// (and so the assignments it hands out) are stale until then. Found by the chaos soak: a
    /// worker restarted onto such a follower got its old placement and a lease, and ran its old
    /// epoch beside the new owner (a batch of 50 queued events delivered three times).
    pub fn lease_grant(&self) -> Option<u64> {
        let applied = self.raft.metrics().borrow().last_applied.map(|l| l.index);
        let caught_up = match self.commit_index.get() {
            Some(committed) => applied.is_some_and(|a| a >= committed),
            None => true,
        };
        (self.quorum.in_touch() && caught_up).then_some(self.detector.lease.as_millis() as u64)
    }

    /// True when `worker_id` is registered here, waiting (bounded) for this node to apply a
    /// registration the leader may have committed a moment ago.
    async fn knows_worker_soon(&self, worker_id: &str) -> bool {
        let mut changes = self.state.changes();
        let deadline = tokio::time::Instant::now() + REGISTRATION_CATCH_UP;
        loop {
            if self.state.read(|a| a.state.workers.contains_key(worker_id)) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// Commit `WorkerLinked` for a link held here, retrying until it lands or the link closes;
    /// at most one attempt in flight per link.
    fn commit_link(self: &Arc<Self>, worker_id: &str, commit: &Arc<LinkCommit>) {
        if commit.in_flight.swap(true, Ordering::SeqCst) {
            return;
        }
        let (c, commit, worker_id) = (self.clone(), commit.clone(), worker_id.to_string());
        tokio::spawn(async move {
            while !commit.closed.load(Ordering::SeqCst) {
                let command = Command::WorkerLinked {
                    worker_id: worker_id.clone(),
                    coordinator: c.node_id,
                    at_ms: crate::events::now_ms(),
                };
                match c.write(command).await {
                    Ok(result) => {
                        *commit.gen.lock().unwrap_or_else(|p| p.into_inner()) = result.link_gen;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(%worker_id, "link not committed yet: {}", e.body.error);
                        tokio::time::sleep(LINK_COMMIT_RETRY).await;
                    }
                }
            }
            commit.in_flight.store(false, Ordering::SeqCst);
        });
    }
}
