//! The traffic layer end to end against the embedded broker: publisher → stand-in pipeline
//! (a small forwarder playing the three `sensor_filter_N` pipelines) → collector → ledger,
//! with exact counts, including a deliberately dropped, duplicated and leaked event.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::traffic::ledger::{
    is_matching, FILTER_THRESHOLD, INPUT_TOPIC_FILTER, OUTPUT_TOPIC, PIPELINE_COUNT,
};
use harness::traffic::{pipeline_name, Collector, Counts, Ledger, Publisher, SensorReading};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// Bound on every delivery wait: loopback delivery takes milliseconds.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait that is expected to run out (a dropped event never arrives): short, to keep the test fast.
const SHORT_DELIVERY_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on the forwarder's connect + subscribe.
const FORWARDER_READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Rate and length of the paced run the brief asks for.
const PACED_RATE_PER_S: u32 = 200;
const PACED_RUN: Duration = Duration::from_secs(1);
/// Fewest events the paced run must send: 200/s for 1 s is ~201 (the first tick fires at
/// once); half of that still proves pacing on a loaded 2-core machine.
const PACED_MIN_EVENTS: u64 = 100;
/// Most events the paced run may send: one per 5 ms tick over ~1 s, the first one at once.
const PACED_MAX_EVENTS: u64 = 202;
/// Keep-alive of the forwarder's connection (rumqttc's minimum is 1 s; the test lasts ~1 s).
const FORWARDER_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// The forwarder's rumqttc request channel: its own forwarding task feeds it, never its poller.
const FORWARDER_REQUEST_CAPACITY: usize = 100;
/// Pause between the forwarder's reconnection attempts (none are expected).
const FORWARDER_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Poll interval while waiting for a duplicate copy already on its way.
const LEDGER_POLL: Duration = Duration::from_millis(10);
/// Bound on stopping the publisher and the collector (each bounds its DISCONNECT to 500 ms).
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// What the stand-in pipeline does wrong, by seq.
#[derive(Debug, Default)]
struct Faults {
    drop: HashSet<u64>,
    duplicate: HashSet<u64>,
    /// Forwarded although it does not match the filter.
    leak: HashSet<u64>,
}

struct Rig {
    port: u16,
    ledger: Arc<Mutex<Ledger>>,
    next_seq: Arc<AtomicU64>,
    faults: Arc<Mutex<Faults>>,
    collector: Collector,
    publisher: Publisher,
    _forwarder: Vec<JoinHandle<()>>,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

async fn rig(name: &str) -> Rig {
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

fn assert_clean(counts: &Counts, published: u64, expected: u64) {
    assert_eq!(counts.published, published, "{counts:?}");
    assert_eq!(counts.expected, expected, "{counts:?}");
    assert_eq!(counts.delivered, expected, "{counts:?}");
    assert_eq!(counts.lost, 0, "{counts:?}");
    assert_eq!(counts.duplicated, 0, "{counts:?}");
    assert_eq!(counts.unexpected, 0, "{counts:?}");
    assert_eq!(counts.unknown, 0, "{counts:?}");
    assert_eq!(counts.malformed, 0, "{counts:?}");
    assert_eq!(counts.latency_us.len() as u64, expected, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_then_paced_run_are_delivered_exactly() {
    let rig = rig("clean").await;

    let burst = rig.publisher.publish_burst(300).await.expect("burst");
    assert_eq!(burst, 1..301);
    let counts = rig
        .collector
        .await_delivery(burst.clone(), DELIVERY_TIMEOUT)
        .await
        .expect("every expected event of the burst delivered");
    assert_clean(&counts, 300, 150);
    assert_eq!(counts.per_pipeline.len() as u64, PIPELINE_COUNT);
    for index in 1..=PIPELINE_COUNT {
        let pipeline = &counts.per_pipeline[&pipeline_name(index)];
        assert_eq!(
            (pipeline.expected, pipeline.delivered, pipeline.lost),
            (50, 50, 0),
            "{}: {pipeline:?}",
            pipeline_name(index)
        );
        assert_eq!((pipeline.duplicated, pipeline.unexpected), (0, 0));
    }

    let paced = rig.publisher.start_paced(PACED_RATE_PER_S);
    tokio::time::sleep(PACED_RUN).await;
    let window = paced.stop().await.expect("paced run");
    assert_eq!(
        window.start, burst.end,
        "windows follow each other, never overlap"
    );
    let sent = window.end - window.start;
    assert!(
        (PACED_MIN_EVENTS..=PACED_MAX_EVENTS).contains(&sent),
        "paced run sent {sent} events"
    );
    let expected = window.clone().filter(|&seq| is_matching(seq)).count() as u64;
    let counts = rig
        .collector
        .await_delivery(window.clone(), DELIVERY_TIMEOUT)
        .await
        .expect("every expected event of the paced run delivered");
    assert_clean(&counts, sent, expected);

    // The burst's window is untouched by the paced run.
    assert_clean(&rig.ledger.lock().unwrap().counts(burst), 300, 150);
    let mut latency_us = counts.latency_us.clone();
    latency_us.sort_unstable();
    eprintln!(
        "paced latency µs: min {} p50 {} max {}",
        latency_us[0],
        latency_us[latency_us.len() / 2],
        latency_us[latency_us.len() - 1]
    );
    eprintln!(
        "burst 1..301: 150/150 delivered; paced {window:?}: {sent} sent, {expected}/{expected} \
         delivered; port {}",
        rig.port
    );
    timeout(STOP_TIMEOUT, rig.publisher.stop())
        .await
        .expect("publisher stops in time");
    timeout(STOP_TIMEOUT, rig.collector.stop())
        .await
        .expect("collector stops in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_loss_duplicate_and_leak_are_counted_exactly() {
    let rig = rig("faulty").await;

    // A first clean burst, so the faulty window does not start at 1.
    let first = rig.publisher.publish_burst(30).await.expect("first burst");
    rig.collector
        .await_delivery(first.clone(), DELIVERY_TIMEOUT)
        .await
        .expect("first burst delivered");

    let start = rig.next_seq.load(std::sync::atomic::Ordering::SeqCst);
    let first_even = start + start % 2;
    let (dropped, duplicated, leaked) = (first_even, first_even + 2, first_even + 3);
    {
        let mut faults = rig.faults.lock().unwrap();
        faults.drop.insert(dropped);
        faults.duplicate.insert(duplicated);
        faults.leak.insert(leaked);
    }
    let window = rig.publisher.publish_burst(20).await.expect("faulty burst");
    assert_eq!(window, start..start + 20);

    let error = rig
        .collector
        .await_delivery(window.clone(), SHORT_DELIVERY_TIMEOUT)
        .await
        .expect_err("the dropped event never arrives");
    let message = error.to_string();
    assert!(
        message.contains("9 of 10 expected events") && message.contains(&format!("[{dropped}]")),
        "{message}"
    );

    // The extra copy and the leak were forwarded right behind their originals; allow them a
    // bounded moment in any case.
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let counts = loop {
        let counts = rig.ledger.lock().unwrap().counts(window.clone());
        if (counts.duplicated, counts.unexpected) == (1, 1) || Instant::now() >= deadline {
            break counts;
        }
        tokio::time::sleep(LEDGER_POLL).await;
    };
    assert_eq!(counts.published, 20, "{counts:?}");
    assert_eq!(counts.expected, 10, "{counts:?}");
    assert_eq!(counts.delivered, 9, "{counts:?}");
    assert_eq!(counts.lost, 1, "{counts:?}");
    assert_eq!(counts.duplicated, 1, "{counts:?}");
    assert_eq!(counts.unexpected, 1, "{counts:?}");
    assert_eq!(counts.unknown, 0, "{counts:?}");
    assert_eq!(counts.latency_us.len(), 9, "{counts:?}");
    let dropped_in = &counts.per_pipeline[&harness::traffic::pipeline_of(dropped)];
    assert_eq!(dropped_in.lost, 1, "{dropped_in:?}");

    // The faults stay in their window.
    assert_clean(&rig.ledger.lock().unwrap().counts(first), 30, 15);
    eprintln!("faulty window {window:?}: {message}; counts {counts:?}");

    timeout(STOP_TIMEOUT, rig.publisher.stop())
        .await
        .expect("publisher stops in time");
    timeout(STOP_TIMEOUT, rig.collector.stop())
        .await
        .expect("collector stops in time");
}
