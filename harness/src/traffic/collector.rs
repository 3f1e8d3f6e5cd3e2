//! The collector of pipeline outputs: one persistent MQTT subscription whose every arrival is
//! recorded in the shared [`Ledger`], and a bounded wait for a window's expected events.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode,
};
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

use super::ledger::{Counts, Ledger, SensorReading};
use super::publisher::{
    await_connack, lock, AbortOnDrop, CONNECT_TIMEOUT, DISCONNECT_TIMEOUT, KEEP_ALIVE,
    RECONNECT_BACKOFF,
};
use crate::backend::now_us;

/// Bound on the first SubAck after the ConnAck: a loopback broker answers in milliseconds.
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Missing seqs named in a failed wait's error: enough to spot a pattern, short enough to read.
pub const MISSING_LISTED: usize = 10;
/// Capacity of rumqttc's request channel: the event-loop task itself queues the re-subscribe
/// after a ConnAck (without waiting), so the channel must hold it; a few spare slots.
const REQUEST_CHANNEL_CAPACITY: usize = 10;

/// Records every event published on one topic into the ledger.
pub struct Collector {
    client: AsyncClient,
    ledger: Arc<Mutex<Ledger>>,
    /// Counts arrivals, to wake waiters.
    arrivals: watch::Receiver<u64>,
    task: AbortOnDrop,
}

/// The collector's event loop and what it feeds.
struct Collecting {
    event_loop: EventLoop,
    client: AsyncClient,
    topic: String,
    ledger: Arc<Mutex<Ledger>>,
    arrivals: watch::Sender<u64>,
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
    /// Connects with a persistent session (clean_session = false, so the broker keeps the
    /// subscription and queues QoS-1 outputs while the collector is away), subscribes to `topic`
    /// at QoS 1 and returns once the SubAck arrived (bounded: [`CONNECT_TIMEOUT`], then
    /// [`SUBSCRIBE_TIMEOUT`]). It subscribes again after every reconnection: rumqttc does not.
    pub async fn start(
        host: &str,
        port: u16,
        client_id: &str,
        topic: &str,
        ledger: Arc<Mutex<Ledger>>,
    ) -> anyhow::Result<Collector> {
        let mut options = MqttOptions::new(client_id, host, port);
        options.set_keep_alive(KEEP_ALIVE).set_clean_session(false);
        let (client, mut event_loop) = AsyncClient::new(options, REQUEST_CHANNEL_CAPACITY);
        let mut network = rumqttc::NetworkOptions::new();
        // Latency is measured at arrival: no Nagle delay on the acks.
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
        event_loop.set_network_options(network);
        await_connack(&mut event_loop, host, port).await?;
        client.try_subscribe(topic, QoS::AtLeastOnce)?;

        let (arrivals_tx, arrivals) = watch::channel(0);
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
        let received_at_us = now_us();
        {
            let mut ledger = lock(&self.ledger);
            match decode(payload) {
                Some((seq, ok)) => ledger.delivered(seq, received_at_us, ok),
                None => ledger.undecodable_arrival(),
            }
        }
        self.arrivals.send_modify(|n| *n += 1);
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

/// The seq an output names, and whether it is the event as sent; `None` if it names no seq.
pub fn decode(payload: &[u8]) -> Option<(u64, bool)> {
    if let Ok(reading) = serde_json::from_slice::<SensorReading>(payload) {
        return Some((reading.seq, reading.is_faithful()));
    }
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some((value.get("seq")?.as_u64()?, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_outputs() {
        let good = SensorReading::new(8, 123).to_json();
        assert_eq!(decode(&good), Some((8, true)));
        // Extra fields added by a pipeline are fine; changed ones are not.
        let extra = br#"{"event_type":"SensorReading","sensor_id":"sensor_8","temperature":75,"seq":8,"sent_at_us":1,"via":"p1"}"#;
        assert_eq!(decode(extra), Some((8, true)));
        let changed = br#"{"event_type":"SensorReading","sensor_id":"sensor_3","temperature":75.0,"seq":8,"sent_at_us":1}"#;
        assert_eq!(decode(changed), Some((8, false)));
        assert_eq!(decode(br#"{"seq":8}"#), Some((8, false)));
        assert_eq!(decode(b"not json"), None);
        assert_eq!(decode(br#"{"temperature":75.0}"#), None);
    }
}
