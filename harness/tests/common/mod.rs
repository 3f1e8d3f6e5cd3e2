//! What the traffic tests share: the embedded broker on a free port, and a stand-in pipeline
//! (a small forwarder playing the three `sensor_filter_N` pipelines) between the harness's
//! publisher and collector, with faults injected by seq.

#![allow(dead_code)]

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::traffic::ledger::{FILTER_THRESHOLD, INPUT_TOPIC_FILTER, OUTPUT_TOPIC};
use harness::traffic::{Collector, Ledger, Publisher, SensorReading};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};

/// Bound on the forwarder's connect + subscribe.
const FORWARDER_READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Keep-alive of the forwarder's connection (rumqttc's minimum is 1 s; the tests last seconds).
const FORWARDER_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// The forwarder's rumqttc request channel: its own forwarding task feeds it, never its poller.
const FORWARDER_REQUEST_CAPACITY: usize = 100;
/// Pause between the forwarder's reconnection attempts (none are expected).
const FORWARDER_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Bound on stopping the publisher and the collector (each bounds its DISCONNECT to 500 ms).
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the injecting client's connect, publish and PubAck.
const INJECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the stand-in pipeline does wrong, by seq.
#[derive(Debug, Default)]
pub struct Faults {
    pub drop: HashSet<u64>,
    pub duplicate: HashSet<u64>,
    /// Forwarded although it does not match the filter.
    pub leak: HashSet<u64>,
}

pub struct Rig {
    pub port: u16,
    pub ledger: Arc<Mutex<Ledger>>,
    pub next_seq: Arc<AtomicU64>,
    pub faults: Arc<Mutex<Faults>>,
    pub collector: Collector,
    pub publisher: Publisher,
    _forwarder: Vec<JoinHandle<()>>,
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

pub async fn rig(name: &str) -> Rig {
    let port = free_port();
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    cluster::broker::start(cluster::broker::BrokerConfig {
        listen,
        ..Default::default()
    })
    .expect("start the broker");

    let ledger = Arc::new(Mutex::new(Ledger::new()));
    let next_seq = Arc::new(AtomicU64::new(1));
    let faults = Arc::new(Mutex::new(Faults::default()));
    // Subscribers first: the broker keeps a publish only for filters that have one.
    let collector = Collector::start(
        "127.0.0.1",
        port,
        &format!("{name}-collector"),
        None,
        OUTPUT_TOPIC,
        Arc::clone(&ledger),
    )
    .await
    .expect("start the collector");
    let forwarder = forwarder(port, &format!("{name}-pipeline"), Arc::clone(&faults)).await;
    let publisher = Publisher::connect(
        "127.0.0.1",
        port,
        &format!("{name}-publisher"),
        None,
        Arc::clone(&ledger),
        Arc::clone(&next_seq),
    )
    .await
    .expect("connect the publisher");
    Rig {
        port,
        ledger,
        next_seq,
        faults,
        collector,
        publisher,
        _forwarder: forwarder,
    }
}

/// The pipelines' part: every event on `e2e/input/+` with `temperature > 50.0` is forwarded
/// unchanged to `e2e/output` (QoS 1), except for the injected faults. Returns once subscribed.
async fn forwarder(port: u16, client_id: &str, faults: Arc<Mutex<Faults>>) -> Vec<JoinHandle<()>> {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(FORWARDER_KEEP_ALIVE);
    let (client, mut event_loop) = AsyncClient::new(options, FORWARDER_REQUEST_CAPACITY);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    event_loop.set_network_options(network);
    client
        .subscribe(INPUT_TOPIC_FILTER, QoS::AtLeastOnce)
        .await
        .expect("queue the forwarder's subscribe");
    let deadline = Instant::now() + FORWARDER_READY_TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, event_loop.poll())
            .await
            .expect("forwarder subscribed in time")
            .expect("forwarder connection");
        if let Event::Incoming(Packet::SubAck(_)) = event {
            break;
        }
    }

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let polling = tokio::spawn(async move {
        loop {
            let Ok(event) = event_loop.poll().await else {
                tokio::time::sleep(FORWARDER_RECONNECT_BACKOFF).await;
                continue;
            };
            let Event::Incoming(Packet::Publish(publish)) = event else {
                continue;
            };
            let Ok(reading) = serde_json::from_slice::<SensorReading>(&publish.payload) else {
                continue;
            };
            let copies = {
                let faults = faults.lock().unwrap();
                if faults.drop.contains(&reading.seq) {
                    0
                } else if faults.duplicate.contains(&reading.seq) {
                    2
                } else if reading.temperature > FILTER_THRESHOLD
                    || faults.leak.contains(&reading.seq)
                {
                    1
                } else {
                    0
                }
            };
            for _ in 0..copies {
                let _ = out_tx.send(publish.payload.to_vec());
            }
        }
    });
    let forwarding = tokio::spawn(async move {
        while let Some(payload) = out_rx.recv().await {
            if client
                .publish(OUTPUT_TOPIC, QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    vec![polling, forwarding]
}

impl Rig {
    /// Stops the publisher and the collector, each within [`STOP_TIMEOUT`].
    pub async fn stop(self) {
        timeout(STOP_TIMEOUT, self.publisher.stop())
            .await
            .expect("publisher stops in time");
        timeout(STOP_TIMEOUT, self.collector.stop())
            .await
            .expect("collector stops in time");
    }
}

/// Publishes `payload` once on the output topic (QoS 1) from a client of its own, as a stale
/// owner would, and returns once the broker acked it.
pub async fn inject(port: u16, payload: Vec<u8>) {
    let deadline = Instant::now() + INJECT_TIMEOUT;
    let options = MqttOptions::new("late-copy-injector", "127.0.0.1", port);
    let (client, mut event_loop) = AsyncClient::new(options, 10);
    client
        .publish(OUTPUT_TOPIC, QoS::AtLeastOnce, false, payload)
        .await
        .expect("queue the extra copy");
    loop {
        let event = timeout_at(deadline, event_loop.poll())
            .await
            .expect("the broker acks the extra copy in time")
            .expect("injector connection");
        if let Event::Incoming(Packet::PubAck(_)) = event {
            return;
        }
    }
}
