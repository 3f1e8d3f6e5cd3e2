//! Runs one pipeline against the MQTT broker: consume its input topics, evaluate, publish.
//!
//! Each pipeline owns one persistent MQTT session for its inputs (client id =
//! [`PipelineSpec::client_id`], clean_session = false, QoS 1, manual acks). Events published
//! while the pipeline has no live owner wait in that session in the broker and reach its next
//! owner, whichever process that is.
//!
//! Outputs go out on a second connection (client id `<client_id>:out`, clean session). This is
//! required by rumqttd 0.20: once it has 100 unacked messages in flight to a connection it
//! parks that connection, and a parked connection gets no PUBACK (and no PINGRESP) until it
//! acks something. With outputs on the input connection, a burst of 100 inputs would wait for
//! output PUBACKs that wait for input acks: a deadlock, seen in testing.
//!
//! Delivery is at least once. An input is acked only after the broker acknowledged (PUBACK)
//! every output it produced, and acks go out strictly in receive order (rumqttd treats an
//! out-of-order ack as a protocol error, drops the connection and counts the message as acked:
//! a silent loss). So an input is only gone from the broker once its outputs are in the broker.
//! The price: an input whose outputs reached the broker but whose ack did not (crash, lost
//! connection) is delivered again and its outputs are published twice.
//!
//! A connection error on either connection ends the *generation*: both connections are dropped
//! (no DISCONNECT) with all their state, and after a backoff a fresh pair connects. Unacked
//! inputs come back from the session and are processed again, so nothing rumqttc still held for
//! the old connections is re-sent (that would publish outputs twice more). rumqttc never
//! re-subscribes by itself: every CONNACK of the input connection is followed by a SUBSCRIBE.
//!
//! Every output goes to the pipeline's broker: the sink's connector name is not resolved yet.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet,
    Publish, QoS, Request, SubAck, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::vpl;
use crate::broker;

mod generation;
use generation::{Generation, Input, InputJob, OutputJob, Verdict};

/// How long [`start`] waits for the first SUBACK: several connect attempts with backoff, far
/// more than a healthy loopback broker needs (milliseconds).
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// First pause after a connection error: long enough not to hammer a restarting broker.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest pause between reconnects (doubling from the minimum): a broker that is back is found
/// within a second, which bounds the extra delay events suffer after an outage.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// rumqttc's TCP + CONNECT/CONNACK deadline, in seconds (its unit): a loopback broker answers
/// in milliseconds; a hung one should not delay the next attempt much.
const CONNECT_TIMEOUT_SECS: u64 = 3;

/// MQTT keep-alive: the broker drops a frozen owner after 1.5 × this, freeing the session for
/// the next owner; pings every few seconds cost nothing.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Capacity of each rumqttc request channel (publishes, acks, subscribes to its event loop).
/// Only this task sends, and it keeps the overflow in its own queues, so this just batches.
const REQUEST_CHANNEL_CAPACITY: usize = 256;

/// Outputs in flight towards the broker (published, PUBACK pending): rumqttc's default, enough
/// to keep a loopback link busy; more would only delay the acks of the inputs behind them.
const OUTPUT_INFLIGHT: u16 = 100;

/// Largest packet accepted from or sent to the broker: everything the broker accepts, or an
/// oversized event would kill the connection on every redelivery, forever.
const MAX_PACKET_SIZE: usize = broker::DEFAULT_MAX_PAYLOAD_SIZE;

/// Outputs waiting for room in rumqttc beyond which QoS 0 inputs are dropped (they carry no
/// delivery promise). QoS 1 inputs are bounded by the broker's window instead (100 unacked in
/// rumqttd), so at most that many inputs' outputs wait.
const MAX_QUEUED_OUTPUTS_FOR_QOS0: usize = 10_000;

/// How long [`RunningPipeline::stop`] lets in-flight inputs finish (outputs acked, inputs
/// acked) before it disconnects anyway; their redelivery to the next owner then duplicates them.
const STOP_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// After DISCONNECT, how long to wait for the broker to close the connection. Closing first
/// would make rumqttd process the disconnection twice, and the second time it may hit the next
/// connection, which reuses the slot (the next owner's, if it connects right away).
const DISCONNECT_LINGER: Duration = Duration::from_secs(1);

/// Bound of [`RunningPipeline::stop`] as a whole: drain, DISCONNECT and linger, then abort.
const STOP_TIMEOUT: Duration = Duration::from_secs(8);

/// Characters refused in a client id: rumqttd drops a CONNECT with `+$#/` silently (no
/// CONNACK at all), and `:` is reserved for [`OUTPUT_CLIENT_ID_SUFFIX`].
const FORBIDDEN_CLIENT_ID_CHARS: &str = "+$#/:";

/// Appended to the client id for the output connection. Client ids cannot contain `:`, so it
/// never equals another pipeline's session id (a clean-session CONNECT with that id would
/// wipe the session).
const OUTPUT_CLIENT_ID_SUFFIX: &str = ":out";

/// Whether an output's PUBLISH fits in [`MAX_PACKET_SIZE`]: fixed header (1 + up to 4 length
/// bytes), topic (2 + its length), packet id (2), payload. One that does not would fail the
/// output connection, and its input would come back and fail it again, forever: such an input is
/// rejected (and acked) instead.
fn fits_in_a_packet(output: &vpl::Output) -> bool {
    1 + 4 + 2 + output.topic.len() + 2 + output.payload.len() <= MAX_PACKET_SIZE
}

/// What to run and where.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub pipeline_id: String,
    /// MQTT client id, which names the persistent session: the same for every owner. Not
    /// empty, none of `+$#/:`; the output connection uses `<client_id>:out`.
    pub client_id: String,
    pub program: Arc<vpl::Program>,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// User name and password of both connections (none: a broker that checks nothing).
    pub login: Option<MqttLogin>,
    /// Counters this pipeline feeds besides its own totals (the worker's `/metrics`).
    pub instruments: crate::metrics::PipelineInstruments,
}

/// A broker account: for the embedded broker, the worker's id and token.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for MqttLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        write!(f, "MqttLogin({}, ***)", self.username)
    }
}

/// Totals since [`start`]. An input counts once it is acked (done): `processed` if the program
/// accepted it (whatever it emitted), `rejected` if the payload was refused. `emitted` counts
/// outputs the broker acknowledged. A redelivered input counts again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PipelineCounters {
    pub processed: u64,
    pub emitted: u64,
    pub rejected: u64,
}

/// A pipeline running on a task of the current Tokio runtime. Dropping it aborts it.
pub struct RunningPipeline {
    pipeline_id: String,
    shared: Arc<Shared>,
    stop_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningPipeline")
            .field("pipeline_id", &self.pipeline_id)
            .field("counters", &self.counters())
            .field("running", &self.is_running())
            .finish()
    }
}

/// State the task and the handle share.
#[derive(Default)]
struct Shared {
    processed: AtomicU64,
    emitted: AtomicU64,
    rejected: AtomicU64,
    /// Input acks rumqttc wrote to the connection (QoS 1 inputs only).
    acks_written: AtomicU64,
    running: AtomicBool,
    /// Set by `abort`: the task stops at once, as if the process had died.
    killed: AtomicBool,
    /// From this instant on, inputs are held (neither processed nor acked): the owner's lease
    /// ends. Checked on every input, so a process resumed after its lease lapsed processes
    /// nothing more, whatever its tasks run first.
    fence_at: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    instruments: crate::metrics::PipelineInstruments,
}

impl Shared {
    fn set_error(&self, message: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(message);
        }
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn fenced(&self) -> bool {
        let at = *self.fence_at.lock().unwrap_or_else(|p| p.into_inner());
        at.is_some_and(|at| Instant::now() >= at)
    }
}

/// Marks the pipeline as not running when its task ends, however it ends (abort included).
struct RunningGuard(Arc<Shared>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::SeqCst);
    }
}

/// Connect with client id = spec.client_id, clean_session = false, manual acks, QoS 1;
/// subscribe to every input topic; return once the SubAck arrived (and the output connection
/// is up), at most [`START_TIMEOUT`].
pub async fn start(spec: PipelineSpec) -> anyhow::Result<RunningPipeline> {
    let id = spec.pipeline_id.clone();
    let topics = spec.program.input_topics();
    validate(&spec, &topics).with_context(|| format!("pipeline {id}"))?;

    let mut input = mqtt_options(&spec, &spec.client_id);
    input.set_clean_session(false).set_manual_acks(true);
    let output = mqtt_options(
        &spec,
        &format!("{}{OUTPUT_CLIENT_ID_SUFFIX}", spec.client_id),
    );

    let shared = Arc::new(Shared {
        running: AtomicBool::new(true),
        instruments: spec.instruments.clone(),
        ..Shared::default()
    });
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let worker = Worker {
        program: spec.program.clone(),
        topics,
        input,
        output,
        shared: shared.clone(),
        ready: Some(ready_tx),
        had_session: false,
        stop_requested: false,
    };
    let span = tracing::info_span!("pipeline", id = %id);
    let task = tokio::spawn(worker.run(stop_rx).instrument(span));
    let mut pipeline = RunningPipeline {
        pipeline_id: id.clone(),
        shared,
        stop_tx: Some(stop_tx),
        task: Some(task),
    };

    let outcome = tokio::time::timeout(START_TIMEOUT, ready_rx).await;
    let failure = match outcome {
        Ok(Ok(Ok(()))) => return Ok(pipeline),
        Ok(Ok(Err(refused))) => anyhow!("{refused}"),
        Ok(Err(_)) => anyhow!("its task ended before subscribing"),
        Err(_) => {
            let last = pipeline.shared.last_error();
            let last = last.as_deref().unwrap_or("no error reported");
            anyhow!("not subscribed after {START_TIMEOUT:?} (last error: {last})")
        }
    };
    pipeline.kill();
    Err(failure.context(format!(
        "pipeline {id}: start on {}:{}",
        spec.mqtt_host, spec.mqtt_port
    )))
}

fn validate(spec: &PipelineSpec, topics: &[String]) -> anyhow::Result<()> {
    let client_id = &spec.client_id;
    if client_id.is_empty() {
        bail!("empty MQTT client id (a persistent session needs one)");
    }
    if client_id.contains(|c| FORBIDDEN_CLIENT_ID_CHARS.contains(c)) {
        bail!("MQTT client id '{client_id}' contains one of {FORBIDDEN_CLIENT_ID_CHARS}");
    }
    if topics.is_empty() {
        bail!("program has no input topic");
    }
    // rumqttc refuses such topics in a way indistinguishable from a full queue; refuse here.
    for topic in topics {
        if !rumqttc::valid_topic(topic) {
            bail!("input topic '{topic}' is not a valid MQTT topic (no wildcards)");
        }
    }
    for sink in spec.program.sinks() {
        if !rumqttc::valid_topic(&sink.topic) {
            bail!("output topic '{}' is not a valid MQTT topic", sink.topic);
        }
    }
    Ok(())
}

fn mqtt_options(spec: &PipelineSpec, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, spec.mqtt_host.clone(), spec.mqtt_port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_inflight(OUTPUT_INFLIGHT)
        .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
    if let Some(login) = &spec.login {
        options.set_credentials(login.username.clone(), login.password.clone());
    }
    options
}

impl RunningPipeline {
    pub fn pipeline_id(&self) -> &str {
        &self.pipeline_id
    }

    pub fn counters(&self) -> PipelineCounters {
        PipelineCounters {
            processed: self.shared.processed.load(Ordering::SeqCst),
            emitted: self.shared.emitted.load(Ordering::SeqCst),
            rejected: self.shared.rejected.load(Ordering::SeqCst),
        }
    }

    /// Input acks written to the broker connection so far (QoS 1 inputs). Once it equals
    /// `processed + rejected`, nothing this owner finished can be redelivered.
    pub fn acked(&self) -> u64 {
        self.shared.acks_written.load(Ordering::SeqCst)
    }

    /// The last connection or subscription error, if any (it may since have recovered).
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error()
    }

    /// Hold every input that arrives from `at` on (its owner's lease then ends); moved later on
    /// every renewal.
    pub fn fence_at(&self, at: Instant) {
        *self
            .shared
            .fence_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(at);
    }

    /// False once its event loop ended for good (stopped, aborted, or failed).
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Clean stop: stop taking new inputs, let in-flight ones finish (at most
    /// [`STOP_DRAIN_TIMEOUT`]), then MQTT DISCONNECT. The persistent session stays in the broker
    /// for the next owner, holding every input this owner did not finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop_tx.take() {
            // The task may have ended already; then there is nothing to stop.
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return;
        };
        if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
            tracing::warn!(
                pipeline = %self.pipeline_id,
                "no clean stop within {STOP_TIMEOUT:?}; dropping the connection"
            );
            self.shared.killed.store(true, Ordering::SeqCst);
            task.abort();
            // Returns once the task is gone and its connections with it: the caller may start
            // the next owner on the same session right after.
            let _ = task.await;
        }
    }

    /// Stop by `deadline` at the latest: a clean stop (in-flight inputs finish, DISCONNECT)
    /// while there is time, then the connections are dropped as in [`Self::abort`]. Never
    /// reconnects: a fenced owner must not take the session back from the next one.
    pub async fn stop_by(mut self, deadline: Instant) {
        if let Some(stop) = self.stop_tx.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return;
        };
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            tracing::warn!(pipeline = %self.pipeline_id, "not stopped by its deadline; dropping the connection");
            self.shared.killed.store(true, Ordering::SeqCst);
            task.abort();
            // Returns once the task is gone and its connections with it: the caller may start
            // the next owner on the same session right after.
            let _ = task.await;
        }
    }

    /// Like a crash: drop the connections with no DISCONNECT and no draining. The broker keeps
    /// the session and re-sends every unacked input to the next owner.
    pub fn abort(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        self.shared.killed.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for RunningPipeline {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One rumqttc poll that owns its event loop, so the two connections' polls can wait side by
/// side and neither is ever cancelled mid-way (rumqttc's poll is not cancel-safe throughout).
type NextEvent = Pin<Box<dyn Future<Output = (EventLoop, Result<Event, ConnectionError>)> + Send>>;

fn next_event(mut eventloop: EventLoop) -> NextEvent {
    Box::pin(async move {
        let event = eventloop.poll().await;
        (eventloop, event)
    })
}

/// `nodelay`: TCP_NODELAY. On for the input connection: its acks are small packets, and the time
/// between an output's PUBACK and its input's ack is the window in which a SIGKILL duplicates an
/// event (at least once). Off for the output connection: with it on both, `harness bench`
/// measured the pipelines' p99 at half the ceiling at 15-42 ms and ceilings of 30-40k events/s;
/// on the input only, 5-26 ms and 40-52k (ARCHITECTURE.md, "Latency through rumqttd").
fn connect(options: &MqttOptions, nodelay: bool) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(options.clone(), REQUEST_CHANNEL_CAPACITY);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(CONNECT_TIMEOUT_SECS);
    network.set_tcp_nodelay(nodelay);
    eventloop.set_network_options(network);
    (client, eventloop)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What woke a generation up.
enum Step {
    Input(Result<Event, ConnectionError>),
    Output(Result<Event, ConnectionError>),
    Stop,
    DrainTimeout,
    LingerOver,
}

/// How a generation ended.
enum Ended {
    Stopped,
    Failed {
        error: String,
        /// No retry will help (e.g. the broker refused the client).
        fatal: bool,
        /// It got as far as subscribing: reconnect promptly.
        healthy: bool,
    },
}

struct Worker {
    program: Arc<vpl::Program>,
    topics: Vec<String>,
    input: MqttOptions,
    output: MqttOptions,
    shared: Arc<Shared>,
    /// Answers [`start`] once subscribed with the output connection up.
    ready: Option<oneshot::Sender<Result<(), String>>>,
    /// The broker held a session for this client id at some point.
    had_session: bool,
    stop_requested: bool,
}

impl Worker {
    async fn run(mut self, mut stop_rx: oneshot::Receiver<()>) {
        let _running = RunningGuard(self.shared.clone());
        let mut backoff = RECONNECT_BACKOFF_MIN;
        loop {
            let Ended::Failed {
                error,
                fatal,
                healthy,
            } = self.generation(&mut stop_rx).await
            else {
                return;
            };
            self.shared.set_error(error.clone());
            if fatal {
                if let Some(ready) = self.ready.take() {
                    tracing::error!("{error}");
                    let _ = ready.send(Err(error));
                    return;
                }
            }
            tracing::warn!("{error}; reconnecting");
            self.shared.instruments.mqtt_reconnects.inc();
            if healthy {
                backoff = RECONNECT_BACKOFF_MIN;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = &mut stop_rx => return,
            }
            backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
        }
    }

    /// Runs one pair of connections until it fails or the pipeline stopped.
    async fn generation(&mut self, stop_rx: &mut oneshot::Receiver<()>) -> Ended {
        let (input, input_loop) = connect(&self.input, true);
        let (output, output_loop) = connect(&self.output, false);
        let mut g = Generation::new(input, output);
        let mut input_poll = next_event(input_loop);
        let mut output_poll = next_event(output_loop);
        loop {
            g.flush(&self.topics);
            let (drain, linger) = (g.drain_deadline, g.linger_deadline);
            let step = tokio::select! {
                (eventloop, event) = &mut input_poll => {
                    input_poll = next_event(eventloop);
                    Step::Input(event)
                }
                (eventloop, event) = &mut output_poll => {
                    output_poll = next_event(eventloop);
                    Step::Output(event)
                }
                _ = &mut *stop_rx, if !self.stop_requested => Step::Stop,
                _ = sleep_until(drain), if drain.is_some() => Step::DrainTimeout,
                _ = sleep_until(linger), if linger.is_some() => Step::LingerOver,
            };
            // Aborted: not one more event handled, as if the process were gone.
            if self.shared.killed.load(Ordering::SeqCst) {
                return Ended::Stopped;
            }
            match step {
                Step::Input(Ok(event)) => {
                    if let Some(ended) = self.on_input_event(&mut g, event) {
                        return ended;
                    }
                }
                Step::Input(Err(e)) => return self.failed(&g, "input", &e),
                Step::Output(Ok(event)) => self.on_output_event(&mut g, event),
                Step::Output(Err(e)) => return self.failed(&g, "output", &e),
                Step::Stop => {
                    self.stop_requested = true;
                    g.begin_stop();
                }
                Step::DrainTimeout => {
                    tracing::warn!(
                        "in-flight inputs not done after {STOP_DRAIN_TIMEOUT:?}; disconnecting anyway"
                    );
                    g.queue_disconnect();
                }
                Step::LingerOver => {
                    tracing::info!(
                        "stopped; the broker did not close within {DISCONNECT_LINGER:?}"
                    );
                    return Ended::Stopped;
                }
            }
            g.check_drained();
            if g.subscribed && g.output_connected {
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Ok(()));
                }
            }
        }
    }

    fn failed(&self, g: &Generation, which: &str, error: &ConnectionError) -> Ended {
        if self.stop_requested {
            if g.linger_deadline.is_some() {
                tracing::info!("stopped: DISCONNECT sent, session left in the broker");
            } else {
                tracing::info!(%error, "stopped: {which} connection ended while stopping");
            }
            return Ended::Stopped;
        }
        Ended::Failed {
            error: format!("{which} connection: {error}"),
            fatal: matches!(error, ConnectionError::ConnectionRefused(_)),
            healthy: g.subscribed,
        }
    }

    fn on_input_event(&mut self, g: &mut Generation, event: Event) -> Option<Ended> {
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                if ack.session_present {
                    self.had_session = true;
                } else if self.had_session {
                    tracing::warn!(
                        "the broker lost this pipeline's session (restarted?): \
                         events published while it was away are gone"
                    );
                }
                tracing::debug!(
                    session_present = ack.session_present,
                    "connected; subscribing"
                );
                // Re-subscribing an existing session is a no-op in rumqttd (its position stays).
                g.input_jobs.push_back(InputJob::Subscribe);
            }
            Event::Incoming(Packet::SubAck(ack)) => return self.on_suback(g, ack),
            Event::Incoming(Packet::Publish(publish)) => self.on_input(g, publish),
            Event::Outgoing(Outgoing::PubAck(_)) => {
                g.acks_written += 1;
                self.shared.acks_written.fetch_add(1, Ordering::SeqCst);
            }
            Event::Outgoing(Outgoing::Disconnect) => {
                tracing::debug!("DISCONNECT sent; waiting for the broker to close");
                g.linger_deadline = Some(Instant::now() + DISCONNECT_LINGER);
            }
            _ => {}
        }
        None
    }

    fn on_suback(&mut self, g: &mut Generation, ack: SubAck) -> Option<Ended> {
        let refused = ack
            .return_codes
            .iter()
            .any(|c| matches!(c, SubscribeReasonCode::Failure));
        if refused {
            return Some(Ended::Failed {
                error: format!("broker refused a subscription to {:?}", self.topics),
                fatal: true,
                healthy: false,
            });
        }
        g.subscribed = true;
        self.had_session = true; // from now on the broker holds a session for us
        None
    }

    fn on_output_event(&mut self, g: &mut Generation, event: Event) {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => g.output_connected = true,
            Event::Incoming(Packet::PubAck(ack)) => g.on_output_acked(ack.pkid, &self.shared),
            Event::Outgoing(outgoing) => g.on_output_sent(outgoing),
            _ => {}
        }
    }

    fn on_input(&mut self, g: &mut Generation, publish: Publish) {
        if !g.stopping && self.shared.fenced() {
            // The lease ended: stop as if asked to (the worker restarts it once renewed).
            tracing::warn!("owner's lease ended: holding inputs and stopping");
            self.stop_requested = true;
            g.begin_stop();
        }
        if g.stopping {
            g.inputs.push_back(Input {
                publish,
                pending_outputs: 0,
                verdict: Verdict::Held,
            });
            return;
        }
        if publish.qos == QoS::AtMostOnce && g.output_jobs.len() >= MAX_QUEUED_OUTPUTS_FOR_QOS0 {
            tracing::warn!(topic = %publish.topic, "dropping a QoS 0 input: outputs backed up");
            return;
        }
        let seq = g.first_seq + g.inputs.len() as u64;
        let outcome = self
            .program
            .process(&publish.topic, &publish.payload)
            .map_err(|r| r.to_string())
            .and_then(|outputs| match outputs.iter().find(|o| !fits_in_a_packet(o)) {
                Some(o) => {
                    let why = format!(
                        "an output of {} bytes on '{}' exceeds the broker's maximum packet ({MAX_PACKET_SIZE} bytes)",
                        o.payload.len(),
                        o.topic
                    );
                    tracing::warn!("input rejected: {why}");
                    Err(why)
                }
                None => Ok(outputs),
            });
        let (verdict, pending_outputs) = match outcome {
            Ok(outputs) => {
                let count = outputs.len();
                g.output_jobs
                    .extend(outputs.into_iter().map(|output| OutputJob {
                        topic: output.topic,
                        payload: output.payload,
                        input: seq,
                    }));
                (Verdict::Accepted, count)
            }
            Err(reason) => {
                tracing::debug!(topic = %publish.topic, %reason, "input rejected; acking it");
                (Verdict::Rejected, 0)
            }
        };
        g.inputs.push_back(Input {
            publish,
            pending_outputs,
            verdict,
        });
        g.complete_front(&self.shared);
    }
}
