//! A worker: registers with the coordinators, holds a WebSocket link to one of them (its home
//! first, the others when it dies), sends heartbeats, and runs exactly the pipelines the
//! committed placement names it for, at the committed epoch.

mod lease;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::Message;

use crate::api::model::{
    Assignment, Capacity, HeartbeatBody, PipelineMetric, RegisterWorker, WsMessage,
};
use crate::auth::{API_KEY_HEADER, WORKER_ID_HEADER};
use crate::pipeline::runtime::{self, PipelineSpec, RunningPipeline};
use crate::pipeline::vpl;

/// Bound of one HTTP call or WebSocket handshake to a coordinator: a live coordinator on a LAN
/// answers in milliseconds; a dead one must not hold the worker up.
const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between full rounds over every coordinator when none answers.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// REST heartbeat interval while no WebSocket link is up (the seed's fallback: 3 s).
const REST_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// Re-registrations in a row before moving on to the next coordinator anyway.
const MAX_REREGISTRATIONS: u32 = 3;
/// How often a worker linked away from home asks whether home answers again.
const REHOME_INTERVAL: Duration = Duration::from_secs(1);
/// Answers in a row home must give before the link moves back: a coordinator that just
/// restarted knows a leader before it can grant a lease (its log and the worker's registration
/// still catching up), and a link moved there too soon would run out the worker's lease.
const REHOME_STABLE_PROBES: u32 = 3;
/// Bound of that question: a frozen home is simply "not back".
const REHOME_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// A session's end that sends the link home rather than to the next coordinator.
const GO_HOME: &str = "home coordinator answers again: moving the link home";
/// Re-check interval of the reconciler: failed starts (e.g. the broker is unreachable) and
/// pipelines that stopped themselves when their lease ended are started again.
const START_RETRY: Duration = Duration::from_millis(500);
/// Pipelines started at once by one reconcile pass: a worker taking over hundreds of pipelines
/// waits for a connect-and-subscribe round per batch, not per pipeline, and the broker still
/// sees a bounded burst of connects.
const START_CONCURRENCY: usize = 16;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub worker_id: String,
    /// Coordinator base URLs, home first.
    pub coordinators: Vec<String>,
    /// This worker's token (`--worker-token`); none against an insecure cluster.
    pub worker_token: Option<String>,
    /// The address reported at registration.
    pub advertise: String,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// The broker account every pipeline connects with (none: an `--insecure` broker).
    pub mqtt_login: Option<crate::pipeline::runtime::MqttLogin>,
    pub max_pipelines: u32,
}

struct Running {
    epoch: u64,
    /// The source it runs: a placement of another source (a group deployed again) restarts it.
    source: String,
    pipeline: RunningPipeline,
}

/// What a coordinator's IdentifyAck tells this worker.
struct LinkTerms {
    heartbeat: Duration,
    /// None: the coordinator grants no lease (an older cluster); the link then ends after
    /// `deadline` without any frame, and pipelines are not fenced.
    lease: Option<Duration>,
    deadline: Duration,
}

struct Worker {
    config: WorkerConfig,
    http: reqwest::Client,
    /// Running pipelines. Locked only for map operations, never across an await, so a slow
    /// start or stop never holds up heartbeats (or the link's pongs).
    pipelines: std::sync::Mutex<HashMap<String, Running>>,
    /// Pipelines the fence took out of `pipelines` and is still stopping. The reconciler starts
    /// none of them until its stop is over: a lease renewed meanwhile would otherwise start a
    /// second copy on the same session while the first still holds inputs (duplicates). Locked
    /// only while `pipelines` is locked, after it.
    fencing: std::sync::Mutex<HashSet<String>>,
    /// The latest assignments from the coordinators; the reconciler converges to them.
    desired: watch::Sender<Option<Vec<Assignment>>>,
    /// Pipelines changed: send a heartbeat now (it reports them running).
    changed: Notify,
    linked_to: std::sync::Mutex<Option<String>>,
    lease: lease::Lease,
    /// Linked away from home, and the home coordinator answered `/ready` at the last look.
    home_ready: std::sync::atomic::AtomicBool,
    metrics: crate::metrics::WorkerMetrics,
}

/// Run a worker on `listener` until `shutdown` resolves; then stop its pipelines cleanly (their
/// persistent sessions stay in the broker for the next owner).
pub async fn run(
    config: WorkerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let worker = Arc::new(Worker::new(config)?);
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(worker.clone());
    let link = tokio::spawn(worker.clone().link_loop());
    let reconciler = tokio::spawn(worker.clone().reconcile_loop());
    let fence = tokio::spawn(worker.clone().fence_loop());
    let home_watch = tokio::spawn(worker.clone().home_watch());
    tracing::info!(worker_id = %worker.config.worker_id, addr = %listener.local_addr()?, "worker listening");
    crate::http::serve(listener, app, shutdown, crate::http::HEADER_READ_TIMEOUT).await?;
    link.abort();
    reconciler.abort();
    fence.abort();
    home_watch.abort();
    let running: Vec<(String, Running)> = worker.lock().drain().collect();
    for (id, r) in running {
        worker.metrics.stopped(&id, "shutdown");
        r.pipeline.stop().await;
    }
    Ok(())
}

async fn health(State(w): State<Arc<Worker>>) -> Json<serde_json::Value> {
    let metrics: Vec<PipelineMetric> = w.lock().iter().map(|(id, r)| metric(id, r)).collect();
    let linked = w
        .linked_to
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(serde_json::json!({
        "status": "healthy",
        "role": "worker",
        "worker_id": w.config.worker_id,
        "security": if w.config.worker_token.is_some() { "keys" } else { "insecure" },
        "linked_to": linked,
        "lease_ms_left": w.lease.remaining().as_millis() as u64,
        "pipelines": metrics,
    }))
}

async fn metrics(State(w): State<Arc<Worker>>) -> axum::response::Response {
    let running = w.lock().len();
    let linked = w
        .linked_to
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some();
    w.metrics.render(running, w.lease.remaining(), linked)
}

fn metric(id: &str, r: &Running) -> PipelineMetric {
    let c = r.pipeline.counters();
    PipelineMetric {
        pipeline_id: id.to_string(),
        epoch: r.epoch,
        processed: c.processed,
        emitted: c.emitted,
        rejected: c.rejected,
    }
}

fn ws_url(base: &str) -> String {
    let rest = base
        .strip_prefix("http://")
        .map(|r| format!("ws://{r}"))
        .unwrap_or_else(|| base.to_string());
    format!("{}/api/v1/cluster/ws", rest.trim_end_matches('/'))
}

impl Worker {
    fn new(config: WorkerConfig) -> anyhow::Result<Worker> {
        if config.coordinators.is_empty() {
            bail!("--coordinators is empty");
        }
        Ok(Worker {
            http: reqwest::Client::builder()
                .timeout(COORDINATOR_TIMEOUT)
                .pool_idle_timeout(crate::http::CLIENT_POOL_IDLE)
                .build()?,
            config,
            pipelines: std::sync::Mutex::new(HashMap::new()),
            fencing: std::sync::Mutex::new(HashSet::new()),
            desired: watch::channel(None).0,
            changed: Notify::new(),
            linked_to: std::sync::Mutex::new(None),
            lease: lease::Lease::default(),
            home_ready: std::sync::atomic::AtomicBool::new(false),
            metrics: crate::metrics::WorkerMetrics::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_fencing(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.fencing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Running here, or still being stopped by the fence: not to be started (again) now.
    fn is_held(&self, pipeline_id: &str) -> bool {
        let pipelines = self.lock();
        pipelines.contains_key(pipeline_id) || self.lock_fencing().contains(pipeline_id)
    }

    /// `request` with this worker's credential: its token in `x-api-key`, its id in `x-worker-id`.
    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.worker_token {
            Some(token) => request
                .header(API_KEY_HEADER, token)
                .header(WORKER_ID_HEADER, &self.config.worker_id),
            None => request,
        }
    }

    async fn heartbeat_body(&self) -> HeartbeatBody {
        let pipeline_metrics: Vec<PipelineMetric> =
            self.lock().iter().map(|(id, r)| metric(id, r)).collect();
        HeartbeatBody {
            events_processed: pipeline_metrics.iter().map(|m| m.processed).sum(),
            pipelines_running: pipeline_metrics.len() as u64,
            pipeline_metrics,
        }
    }

    /// Register through any coordinator (it forwards to the leader), retrying until one accepts.
    async fn register(&self) {
        let body = RegisterWorker {
            worker_id: self.config.worker_id.clone(),
            address: self.config.advertise.clone(),
            api_key: None,
            capacity: Capacity {
                cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                pipelines_running: 0,
                max_pipelines: self.config.max_pipelines,
            },
        };
        loop {
            for base in &self.config.coordinators {
                let url = format!("{base}/api/v1/cluster/workers/register");
                match self.authed(self.http.post(&url)).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {
                        tracing::info!(%base, "registered");
                        return;
                    }
                    Ok(r) => tracing::warn!(%url, status = %r.status(), "registration refused"),
                    Err(e) => tracing::debug!(%url, "registration failed: {e}"),
                }
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Keep a link up: home first, then the next coordinator whenever the current one fails.
    async fn link_loop(self: Arc<Self>) {
        self.register().await;
        let n = self.config.coordinators.len();
        let mut index = 0;
        let mut failures_in_round = 0;
        let mut reregistrations = 0;
        let mut last_rest = tokio::time::Instant::now() - REST_HEARTBEAT_INTERVAL;
        loop {
            let base = self.config.coordinators[index].clone();
            match self.session(&base).await {
                Ok(reason) if reason == GO_HOME => {
                    tracing::info!(%base, "{reason}");
                    failures_in_round = 0;
                    reregistrations = 0;
                    *self.linked_to.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    index = 0;
                    continue;
                }
                Ok(reason) => {
                    tracing::warn!(%base, %reason, "link ended; moving to the next coordinator");
                    failures_in_round = 0;
                    reregistrations = 0;
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    tracing::debug!(%base, "link failed: {text}");
                    if text.contains("register first") && reregistrations < MAX_REREGISTRATIONS {
                        // Registered, but this coordinator does not know it (yet): register
                        // again and retry the same coordinator, so the link stays home.
                        reregistrations += 1;
                        self.register().await;
                        continue;
                    }
                    failures_in_round += 1;
                }
            }
            *self.linked_to.lock().unwrap_or_else(|p| p.into_inner()) = None;
            index = (index + 1) % n;
            if failures_in_round >= n {
                // No coordinator takes a link: fall back to REST heartbeats while retrying.
                if last_rest.elapsed() >= REST_HEARTBEAT_INTERVAL {
                    self.rest_heartbeat().await;
                    last_rest = tokio::time::Instant::now();
                }
                failures_in_round = 0;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    async fn rest_heartbeat(&self) {
        let body = self.heartbeat_body().await;
        let sent_at = tokio::time::Instant::now();
        for base in &self.config.coordinators {
            let url = format!(
                "{base}/api/v1/cluster/workers/{}/heartbeat",
                self.config.worker_id
            );
            let request = self.authed(self.http.post(&url)).json(&body);
            if let Ok(r) = request.send().await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    // The answer's assignments first, then its lease: a renewal after a lapse
                    // resumes what `desired` holds, and what it held was from before the lapse
                    // (a worker cut off from every coordinator misses the move of its
                    // pipelines; resuming its old epoch took the session from the new owner).
                    if let Some(a) = v.get("assignments") {
                        if let Ok(assignments) =
                            serde_json::from_value::<Vec<Assignment>>(a.clone())
                        {
                            self.desired.send_replace(Some(assignments));
                        }
                    }
                    if let Some(ms) = v.get("lease_ms").and_then(|l| l.as_u64()) {
                        self.renew(sent_at, Duration::from_millis(ms));
                    }
                    return;
                }
            }
        }
    }

    /// One WebSocket session. `Ok(reason)`: it was up and ended; `Err`: it never came up.
    async fn session(&self, base: &str) -> anyhow::Result<String> {
        let url = ws_url(base);
        let mut upgrade =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                url.as_str(),
            )?;
        if let Some(token) = &self.config.worker_token {
            // The credential goes with the upgrade request: no token, no link.
            let headers = upgrade.headers_mut();
            headers.insert(API_KEY_HEADER, token.parse()?);
            headers.insert(WORKER_ID_HEADER, self.config.worker_id.parse()?);
        }
        let (mut ws, _) = tokio::time::timeout(
            COORDINATOR_TIMEOUT,
            tokio_tungstenite::connect_async(upgrade),
        )
        .await
        .map_err(|_| anyhow!("connect {url}: timed out"))?
        .with_context(|| format!("connect {url}"))?;
        let identify = WsMessage::Identify {
            worker_id: self.config.worker_id.clone(),
            api_key: None,
        };
        ws.send(Message::Text(serde_json::to_string(&identify)?.into()))
            .await?;
        let terms = loop {
            let frame = tokio::time::timeout(COORDINATOR_TIMEOUT, ws.next())
                .await
                .map_err(|_| anyhow!("{url}: no IdentifyAck"))?;
            match frame {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<WsMessage>(&text)? {
                    WsMessage::IdentifyAck {
                        heartbeat_interval_secs,
                        heartbeat_interval_ms,
                        lease_ms,
                        link_deadline_ms,
                        ..
                    } => {
                        let heartbeat = heartbeat_interval_ms
                            .map(Duration::from_millis)
                            .unwrap_or(Duration::from_secs(heartbeat_interval_secs.max(1)));
                        break LinkTerms {
                            heartbeat,
                            lease: lease_ms.map(Duration::from_millis),
                            deadline: link_deadline_ms
                                .map(Duration::from_millis)
                                .unwrap_or(3 * heartbeat),
                        };
                    }
                    WsMessage::Error { message } => bail!("{url}: {message}"),
                    other => bail!("{url}: expected IdentifyAck, got {other:?}"),
                },
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("{url}: {e}"),
                None => bail!("{url}: closed before IdentifyAck"),
            }
        };
        tracing::info!(%base, "link up");
        *self.linked_to.lock().unwrap_or_else(|p| p.into_inner()) = Some(base.to_string());
        let mut tick = tokio::time::interval(terms.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Send times of the heartbeats not acknowledged yet (acks come back in order).
        let mut sent: VecDeque<tokio::time::Instant> = VecDeque::new();
        // The link's read deadline counts from the last lease renewal through it; until the
        // first one (a cluster still electing its first leader) and for a coordinator that
        // grants none, from the last frame. A frozen or cut-off coordinator is left after it.
        let mut last_good = tokio::time::Instant::now();
        let mut renewed_here = false;
        let away = base != self.config.coordinators[0];
        let mut rehome = tokio::time::interval(REHOME_INTERVAL);
        rehome.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let send_heartbeat = tokio::select! {
                _ = rehome.tick(), if away => {
                    if self.home_ready.swap(false, std::sync::atomic::Ordering::SeqCst) {
                        return Ok(GO_HOME.into());
                    }
                    false
                }
                frame = ws.next() => {
                    match frame {
                        Some(Ok(Message::Text(text))) => match serde_json::from_str::<WsMessage>(&text) {
                            Ok(WsMessage::Assignments { assignments }) => {
                                self.desired.send_replace(Some(assignments));
                            }
                            Ok(WsMessage::HeartbeatAck { lease_ms }) => {
                                let sent_at = sent.pop_front();
                                match (lease_ms, sent_at) {
                                    (Some(ms), Some(at)) => {
                                        self.renew(at, Duration::from_millis(ms));
                                        last_good = tokio::time::Instant::now();
                                        renewed_here = true;
                                    }
                                    _ if !renewed_here || terms.lease.is_none() => {
                                        last_good = tokio::time::Instant::now();
                                    }
                                    _ => tracing::debug!(%base, "heartbeat acknowledged without a lease"),
                                }
                            }
                            Ok(WsMessage::Error { message }) => return Ok(format!("coordinator error: {message}")),
                            Ok(_) => {}
                            Err(e) => tracing::warn!("bad frame from {base}: {e}"),
                        },
                        // tungstenite queues the Pong; flush so it leaves now, not with the next heartbeat.
                        Some(Ok(Message::Ping(_))) => {
                            if !renewed_here || terms.lease.is_none() {
                                last_good = tokio::time::Instant::now();
                            }
                            let _ = ws.flush().await;
                        }
                        Some(Ok(Message::Close(_))) | None => return Ok("closed by coordinator".into()),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Ok(format!("WebSocket error: {e}")),
                    }
                    false
                }
                _ = tokio::time::sleep_until(last_good + terms.deadline) => {
                    return Ok(format!(
                        "no lease renewal for {} ms (read deadline): the coordinator is frozen or out of touch with its quorum",
                        terms.deadline.as_millis()
                    ));
                }
                _ = tick.tick() => true,
                _ = self.changed.notified() => true,
            };
            if send_heartbeat {
                let hb = WsMessage::Heartbeat(self.heartbeat_body().await);
                sent.push_back(tokio::time::Instant::now());
                if let Err(e) = ws
                    .send(Message::Text(serde_json::to_string(&hb)?.into()))
                    .await
                {
                    return Ok(format!("send failed: {e}"));
                }
            }
        }
    }

    /// While linked away from home, ask the home coordinator every [`REHOME_INTERVAL`] whether
    /// it answers `/ready` (knows a leader, in touch with a quorum); after [`REHOME_STABLE_PROBES`] answers in a row the
    /// session moves the link home, so links
    /// return to their homes after a coordinator failure instead of piling up on the survivors.
    /// The probe runs here, apart from the session, so a frozen home never delays a heartbeat.
    async fn home_watch(self: Arc<Self>) {
        let home = self.config.coordinators[0].clone();
        let mut in_a_row = 0;
        loop {
            tokio::time::sleep(REHOME_INTERVAL).await;
            let linked = self
                .linked_to
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let away = linked.is_some_and(|b| b != home);
            let ready = away
                && tokio::time::timeout(
                    REHOME_PROBE_TIMEOUT,
                    self.http.get(format!("{home}/ready")).send(),
                )
                .await
                .is_ok_and(|r| r.is_ok_and(|r| r.status().is_success()));
            in_a_row = if ready { in_a_row + 1 } else { 0 };
            self.home_ready.store(
                in_a_row >= REHOME_STABLE_PROBES,
                std::sync::atomic::Ordering::SeqCst,
            );
        }
    }

    /// A lease renewal: after a lapse, converge again (pipelines stopped by the fence restart).
    fn renew(&self, sent_at: tokio::time::Instant, length: Duration) {
        let revived = self.lease.renew(sent_at, length);
        if let Some((begin, _)) = self.lease.fence_times() {
            for r in self.lock().values() {
                r.pipeline.fence_at(begin);
            }
        }
        if revived {
            tracing::info!("lease renewed after a lapse: resuming assigned pipelines");
            self.desired.send_modify(|_| {});
        }
    }

    /// Stop every pipeline when the lease runs out: a clean stop begun one stop budget before
    /// it ends, the connections dropped at its end. Sessions stay in the broker, untouched.
    async fn fence_loop(self: Arc<Self>) {
        loop {
            let changed = self.lease.changed.notified();
            let Some((begin, end)) = self.lease.fence_times() else {
                changed.await;
                continue;
            };
            if tokio::time::Instant::now() < begin {
                tokio::select! {
                    _ = tokio::time::sleep_until(begin) => {}
                    _ = changed => {}
                }
                continue;
            }
            // Out of the map and into `fencing` under one lock: the reconciler sees each in
            // one or the other, never in neither.
            let fenced: Vec<(String, Running)> = {
                let mut pipelines = self.lock();
                let fenced: Vec<(String, Running)> = pipelines.drain().collect();
                self.lock_fencing()
                    .extend(fenced.iter().map(|(id, _)| id.clone()));
                fenced
            };
            if !fenced.is_empty() {
                tracing::warn!(
                    count = fenced.len(),
                    "lease lapsed: stopping every pipeline (sessions left for their next owner)"
                );
                let ids: Vec<String> = fenced.iter().map(|(id, _)| id.clone()).collect();
                let stops = fenced.into_iter().map(|(id, r)| {
                    self.metrics.stopped(&id, "fence");
                    r.pipeline.stop_by(end)
                });
                futures::future::join_all(stops).await;
                {
                    let _pipelines = self.lock();
                    let mut fencing = self.lock_fencing();
                    for id in &ids {
                        fencing.remove(id);
                    }
                }
                // Stopped: a lease renewed meanwhile may start them again now.
                self.desired.send_modify(|_| {});
                self.changed.notify_one();
            }
            changed.await;
        }
    }

    /// Converge to the latest assignments whenever they change, and every [`START_RETRY`]
    /// (failed starts, pipelines that stopped themselves when their lease ended).
    async fn reconcile_loop(self: Arc<Self>) {
        let mut rx = self.desired.subscribe();
        loop {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(START_RETRY) => {}
            }
            let Some(assignments) = rx.borrow_and_update().clone() else {
                continue;
            };
            self.reconcile(assignments).await;
        }
    }

    /// Converge to `assignments`: first stop what is no longer ours (or at an old epoch, or of
    /// another source), so a pipeline's session is released before anyone else's copy takes it;
    /// then start the rest (a failed start is retried by the loop's next pass).
    async fn reconcile(&self, assignments: Vec<Assignment>) {
        let desired: HashMap<String, Assignment> = assignments
            .into_iter()
            .map(|a| (a.pipeline_id.clone(), a))
            .collect();
        let stale: Vec<(String, Running)> = {
            let mut pipelines = self.lock();
            let ids: Vec<String> = pipelines
                .iter()
                .filter(|(id, r)| {
                    desired
                        .get(*id)
                        .is_none_or(|a| a.epoch != r.epoch || a.source != r.source)
                        || !r.pipeline.is_running()
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| pipelines.remove(&id).map(|r| (id, r)))
                .collect()
        };
        let mut changed = !stale.is_empty();
        for (id, r) in stale {
            tracing::info!(pipeline_id = %id, epoch = r.epoch, "stopping pipeline");
            self.metrics.stopped(&id, "reconcile");
            r.pipeline.stop().await;
        }
        // Up to START_CONCURRENCY starts under way at once; each pipeline's checks run just
        // before its own start.
        let mut starts = futures::stream::iter(desired.into_values())
            .map(|a| async move {
                let result = self.start(&a).await?;
                Some((a, result))
            })
            .buffer_unordered(START_CONCURRENCY);
        while let Some(outcome) = starts.next().await {
            let Some((a, result)) = outcome else {
                continue;
            };
            let id = a.pipeline_id.clone();
            match result {
                Ok(pipeline) => {
                    if !self.lease.valid() {
                        // The lease ran out while it started: the fence may have run already.
                        tracing::warn!(pipeline_id = %id, "lease lapsed during start; stopping it");
                        let end = self
                            .lease
                            .fence_times()
                            .map_or_else(tokio::time::Instant::now, |(_, e)| e);
                        pipeline.stop_by(end).await;
                        continue;
                    }
                    if let Some((begin, _)) = self.lease.fence_times() {
                        pipeline.fence_at(begin);
                    }
                    tracing::info!(pipeline_id = %id, epoch = a.epoch, "pipeline running");
                    self.metrics.started(&id);
                    self.lock().insert(
                        id,
                        Running {
                            epoch: a.epoch,
                            source: a.source,
                            pipeline,
                        },
                    );
                    changed = true;
                }
                Err(e) => {
                    tracing::error!(pipeline_id = %id, "start failed: {e:#}");
                }
            }
        }
        if changed {
            self.changed.notify_one();
        }
    }

    /// Starts `a` unless it runs here already, the fence is still stopping it, there is no valid
    /// lease, or its source does not parse (None: not started, nothing to do).
    async fn start(&self, a: &Assignment) -> Option<anyhow::Result<RunningPipeline>> {
        let id = &a.pipeline_id;
        if self.is_held(id) {
            return None;
        }
        if !self.lease.valid() {
            // Not without a lease; its renewal converges again.
            tracing::debug!(pipeline_id = %id, "not starting: no valid lease");
            return None;
        }
        let program = match vpl::parse(&a.source) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                // The coordinator validated it; a worker of another version may disagree.
                tracing::error!(pipeline_id = %id, "cannot run: {e}");
                return None;
            }
        };
        let spec = PipelineSpec {
            pipeline_id: id.clone(),
            // The session belongs to the pipeline, not the worker: every owner uses this id.
            // `~` cannot appear in group or pipeline names, so ids never collide.
            client_id: format!("varpulis~{}~{}", a.group, a.pipeline),
            program,
            mqtt_host: self.config.mqtt_host.clone(),
            mqtt_port: self.config.mqtt_port,
            login: self.config.mqtt_login.clone(),
            instruments: self.metrics.instruments(id),
        };
        Some(runtime::start(spec).await)
    }
}
