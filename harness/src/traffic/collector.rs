//! The collector of pipeline outputs: one persistent MQTT subscription whose every arrival is
//! recorded in the shared [`Ledger`] (so in the run's history), a bounded wait for a window's
//! expected events, and the drain a verdict waits for.
//!
//! ## The drain: a quiet period, not a fence
//!
//! A verdict on a window waits until no arrival at all was recorded for `quiet` (monotonic
//! clock), bounded by [`DRAIN_BOUND`]. A fence (a marker event per pipeline, awaited on the
//! output) would prove only that the pipeline's *current* session forwarded everything before
//! the marker; the late copies that matter come from elsewhere: a stale owner (a resumed
//! SIGSTOPped worker, a partitioned one) publishing what it still buffered on its own output
//! connection, or the broker redelivering a session's unacked messages. No fence orders those.
//! Nothing short of the end of the run bounds them, so the quiet period only makes the common
//! case (copies right behind their originals) land in the trial's own verdict, and the run-wide
//! checker charges anything later to the trial whose seq it names. A quiet period also needs
//! nothing from the cluster (a foreign implementation needs no fence event).

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode,
};
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

use serde::{Deserialize, Serialize};

use super::ledger::{Counts, Ledger};
use super::publisher::{
    await_connack, lock, AbortOnDrop, CONNECT_TIMEOUT, DISCONNECT_TIMEOUT, KEEP_ALIVE,
    RECONNECT_BACKOFF,
};
use crate::backend::now_us;

/// Bound on the first SubAck after the ConnAck: a loopback broker answers in milliseconds.
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Missing seqs named in a failed wait's error: enough to spot a pattern, short enough to read.
pub const MISSING_LISTED: usize = 10;
/// Longest a drain waits for its quiet period: outputs still flowing after this are traffic,
/// not a tail, and the verdict says the drain never got quiet.
pub const DRAIN_BOUND: Duration = Duration::from_secs(5);
/// Capacity of rumqttc's request channel: the event-loop task itself queues the re-subscribe
/// after a ConnAck (without waiting), so the channel must hold it; a few spare slots.
const REQUEST_CHANNEL_CAPACITY: usize = 10;

/// Records every event published on one topic into the ledger.
pub struct Collector {
    client: AsyncClient,
    ledger: Arc<Mutex<Ledger>>,
    /// Counts arrivals and keeps the last one's instant, to wake waiters and time drains.
    arrivals: watch::Receiver<Arrivals>,
    task: AbortOnDrop,
}

/// Arrivals so far and the monotonic instant of the latest (the collector's start before any).
#[derive(Debug, Clone, Copy)]
struct Arrivals {
    count: u64,
    last: Instant,
}

/// How a drain went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drained {
    /// The quiet period asked for.
    pub quiet_ms: u64,
    /// Whether it was reached (else the bound ran out, or the collector stopped).
    pub quiet: bool,
    /// How long the drain took (monotonic clock).
    pub waited_us: u64,
    /// Arrivals recorded while it waited.
    pub arrivals: u64,
}

impl std::fmt::Display for Drained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.waited_us as f64 / 1000.0;
        if self.quiet {
            write!(
                f,
                "drained: no arrival for {} ms (took {ms:.0} ms, {} arrivals meanwhile)",
                self.quiet_ms, self.arrivals
            )
        } else {
            write!(
                f,
                "drain not quiet: arrivals kept coming for {ms:.0} ms ({} meanwhile, quiet period {} ms)",
                self.arrivals, self.quiet_ms
            )
        }
    }
}

/// The collector's event loop and what it feeds.
struct Collecting {
    event_loop: EventLoop,
    client: AsyncClient,
    topic: String,
    ledger: Arc<Mutex<Ledger>>,
    arrivals: watch::Sender<Arrivals>,
}

/// What one poll of the collector's event loop amounted to.
enum Step {
    Other,
    Subscribed,
    SubscribeRefused,
    Disconnected,
    Failed(rumqttc::ConnectionError),
}

impl Collector {
    /// Connects (with `login`'s user name and password, if any) with a persistent session
    /// (clean_session = false, so the broker keeps the
    /// subscription and queues QoS-1 outputs while the collector is away), subscribes to `topic`
    /// at QoS 1 and returns once the SubAck arrived (bounded: [`CONNECT_TIMEOUT`], then
    /// [`SUBSCRIBE_TIMEOUT`]). It subscribes again after every reconnection: rumqttc does not.
    pub async fn start(
        host: &str,
        port: u16,
        client_id: &str,
        login: Option<(&str, &str)>,
        topic: &str,
        ledger: Arc<Mutex<Ledger>>,
    ) -> anyhow::Result<Collector> {
        let mut options = MqttOptions::new(client_id, host, port);
        options.set_keep_alive(KEEP_ALIVE).set_clean_session(false);
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        let (client, mut event_loop) = AsyncClient::new(options, REQUEST_CHANNEL_CAPACITY);
        let mut network = rumqttc::NetworkOptions::new();
        // Latency is measured at arrival: no Nagle delay on the acks.
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
        event_loop.set_network_options(network);
        await_connack(&mut event_loop, host, port).await?;
        client.try_subscribe(topic, QoS::AtLeastOnce)?;

        let (arrivals_tx, arrivals) = watch::channel(Arrivals {
            count: 0,
            last: Instant::now(),
        });
        let mut collecting = Collecting {
            event_loop,
            client: client.clone(),
            topic: topic.to_owned(),
            ledger: Arc::clone(&ledger),
            arrivals: arrivals_tx,
        };
        let deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
        loop {
            match timeout_at(deadline, collecting.step()).await {
                Ok(Step::Subscribed) => break,
                Ok(Step::Other) => {}
                Ok(Step::SubscribeRefused) => bail!("the broker refused a subscription to {topic}"),
                Ok(Step::Disconnected) => bail!("disconnected while subscribing to {topic}"),
                Ok(Step::Failed(error)) => {
                    bail!("MQTT connection failed while subscribing to {topic}: {error}")
                }
                Err(_) => bail!(
                    "no SubAck for {topic} within {} ms",
                    SUBSCRIBE_TIMEOUT.as_millis()
                ),
            }
        }
        let task = tokio::spawn(collecting.run());
        Ok(Collector {
            client,
            ledger,
            arrivals,
            task: AbortOnDrop(task),
        })
    }

    /// Waits until every expected event of `window` (acked, matching) was delivered, and returns
    /// the window's counts as soon as it was. Call it once the window's publisher has settled
    /// (after `publish_burst` or `TrafficHandle::stop` returned), so "expected" is final. After
    /// `timeout`, an error says how many of how many arrived and names up to
    /// [`MISSING_LISTED`] missing seqs.
    pub async fn await_delivery(
        &self,
        window: Range<u64>,
        timeout: Duration,
    ) -> anyhow::Result<Counts> {
        let deadline = Instant::now() + timeout;
        let mut arrivals = self.arrivals.clone();
        // Deliveries are never withdrawn, so the scan resumes at the first missing seq.
        let mut cursor = window.start;
        loop {
            arrivals.borrow_and_update();
            {
                let ledger = lock(&self.ledger);
                match ledger.missing(cursor..window.end, 1).first() {
                    Some(&seq) => cursor = seq,
                    // Confirm over the whole window (a late ack may have made an earlier seq
                    // expected).
                    None if ledger.missing(window.clone(), 1).is_empty() => {
                        return Ok(ledger.counts(window));
                    }
                    None => cursor = window.start,
                }
            }
            match timeout_at(deadline, arrivals.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    // The collector's task ended: nothing more will arrive.
                    break;
                }
                Err(_) => break,
            }
        }
        let ledger = lock(&self.ledger);
        let (delivered, expected) = ledger.progress(window.clone());
        let missing = ledger.missing(window.clone(), MISSING_LISTED);
        bail!(
            "{delivered} of {expected} expected events of seqs {}..{} arrived within {} ms; \
             missing (first {}): {missing:?}",
            window.start,
            window.end,
            timeout.as_millis(),
            missing.len()
        )
    }

    /// Waits until no arrival was recorded for `quiet`, at most `bound` (both on the monotonic
    /// clock); returns at once when the last arrival is already `quiet` old.
    pub async fn drain(&self, quiet: Duration, bound: Duration) -> Drained {
        let started = Instant::now();
        let deadline = started + bound;
        let mut arrivals = self.arrivals.clone();
        let first = arrivals.borrow().count;
        let quiet_reached = loop {
            let last = *arrivals.borrow_and_update();
            let quiet_at = last.last + quiet;
            if Instant::now() >= quiet_at {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            match timeout_at(quiet_at.min(deadline), arrivals.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                // The collector's task ended: nothing more will arrive, but nothing says it
                // was quiet either.
                Ok(Err(_)) => break false,
            }
        };
        let count = arrivals.borrow().count;
        Drained {
            quiet_ms: quiet.as_millis() as u64,
            quiet: quiet_reached,
            waited_us: started.elapsed().as_micros() as u64,
            arrivals: count - first,
        }
    }

    /// The ledger this collector records into.
    pub fn ledger(&self) -> &Arc<Mutex<Ledger>> {
        &self.ledger
    }

    /// Disconnects (bounded by [`DISCONNECT_TIMEOUT`]) and ends the collector's task.
    pub async fn stop(self) {
        let Collector {
            client, mut task, ..
        } = self;
        if client.try_disconnect().is_ok() {
            let _ = timeout_at(Instant::now() + DISCONNECT_TIMEOUT, &mut task.0).await;
        }
    }
}

impl Collecting {
    async fn step(&mut self) -> Step {
        match self.event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                // rumqttc does not restore subscriptions after a reconnection.
                if let Err(error) = self.client.try_subscribe(&self.topic, QoS::AtLeastOnce) {
                    tracing::warn!(%error, topic = %self.topic, "collector could not re-subscribe");
                }
                tracing::info!(topic = %self.topic, "collector reconnected");
                Step::Other
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|code| matches!(code, SubscribeReasonCode::Failure))
                {
                    Step::SubscribeRefused
                } else {
                    Step::Subscribed
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                self.record(&publish.payload);
                Step::Other
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => Step::Disconnected,
            Ok(_) => Step::Other,
            Err(error) => Step::Failed(error),
        }
    }

    fn record(&self, payload: &[u8]) {
        {
            // The time is taken under the lock, so rows are in time order.
            let mut ledger = lock(&self.ledger);
            ledger.arrived(&self.topic, now_us(), payload);
        }
        self.arrivals.send_modify(|a| {
            a.count += 1;
            a.last = Instant::now();
        });
    }

    async fn run(mut self) {
        let mut connected = true;
        loop {
            match self.step().await {
                Step::Disconnected => return,
                Step::Failed(error) => {
                    if connected {
                        tracing::warn!(%error, topic = %self.topic, "collector lost its MQTT connection");
                    } else {
                        tracing::debug!(%error, "collector reconnect failed");
                    }
                    connected = false;
                    tokio::time::sleep(RECONNECT_BACKOFF).await;
                }
                Step::SubscribeRefused => {
                    tracing::error!(topic = %self.topic, "the broker refused the collector's re-subscription");
                }
                Step::Subscribed => connected = true,
                Step::Other => {}
            }
        }
    }
}
