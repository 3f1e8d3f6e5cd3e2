//! The embedded broker and the pipeline runtime against each other: a real rumqttd on a free
//! loopback port, rumqttc clients as publisher and collector.
//!
//! Counting is exact throughout: outputs are never deduplicated before they are counted. To
//! know that nothing more is on its way, a test publishes a marker straight onto the output
//! topic once the pipeline's counters say its outputs are all in the broker: rumqttd keeps one
//! log per filter and a subscriber reads it in order, so everything the pipeline published
//! arrives at the collector before the marker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster::broker::{self, BrokerConfig, BrokerHandle};
use cluster::pipeline::runtime::{self, PipelineCounters, PipelineSpec, RunningPipeline};
use cluster::pipeline::vpl;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::time::Instant;

const PROGRAM: &str = r#"
event SensorReading { sensor_id: str, temperature: float, seq: int }
stream Input = SensorReading.from(mqtt_1, topic: "e2e/input/1")
stream HighTemp = Input.where(temperature > 50.0)
stream Output = HighTemp.to(mqtt_1, topic: "e2e/output")
"#;
const INPUT: &str = "e2e/input/1";
const OUTPUT: &str = "e2e/output";

/// Bound of every wait: a few hundred loopback messages take milliseconds; seconds mean stuck.
const WAIT: Duration = Duration::from_secs(10);
/// How often a bounded wait re-checks its condition.
const POLL: Duration = Duration::from_millis(5);
/// Request channel of the test clients: small, `publish().await` waits for room.
const CLIENT_CHANNEL: usize = 64;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

const LOOPBACK_ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

async fn start_broker() -> BrokerHandle {
    init_tracing();
    let config = BrokerConfig {
        // Port 0: the broker binds it once and says which (a port picked and let go here
        // could be taken by another test's outgoing connection before the broker binds it).
        listen: LOOPBACK_ANY_PORT,
        ..BrokerConfig::default()
    };
    tokio::task::spawn_blocking(move || broker::start(config))
        .await
        .expect("broker start task")
        .expect("start the broker")
}

fn spec(broker: &BrokerHandle, client_id: &str) -> PipelineSpec {
    PipelineSpec {
        pipeline_id: format!("test/{client_id}"),
        client_id: client_id.to_owned(),
        program: Arc::new(vpl::parse(PROGRAM).expect("seed program parses")),
        mqtt_host: broker.addr.ip().to_string(),
        mqtt_port: broker.addr.port(),
        login: None,
        instruments: Default::default(),
    }
}

/// Even sequence numbers are hot (they pass the filter), odd ones are not.
fn event(seq: u64) -> Vec<u8> {
    let temperature = if seq % 2 == 0 { 75.0 } else { 25.0 };
    format!(
        r#"{{"event_type":"SensorReading","sensor_id":"sensor_1","temperature":{temperature:.1},"seq":{seq},"sent_at_us":123}}"#
    )
    .into_bytes()
}

fn parse(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).expect("output is JSON")
}

/// Waits until `done()` holds, at most [`WAIT`]; the panic says what was awaited and the state.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool, state: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        if Instant::now() >= deadline {
            panic!(
                "timed out after {WAIT:?} waiting for {what}; last seen: {}",
                state()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A plain rumqttc client (clean session) polled on its own task.
struct TestClient {
    client: AsyncClient,
    /// Payloads received on subscribed topics, in arrival order.
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    pubacks: Arc<Mutex<u64>>,
    subacks: Arc<Mutex<u64>>,
    errors: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestClient {
    fn connect(broker: &BrokerHandle, client_id: &str) -> TestClient {
        let mut options =
            MqttOptions::new(client_id, broker.addr.ip().to_string(), broker.addr.port());
        options.set_keep_alive(Duration::from_secs(5));
        // Whatever the broker takes, a test client can send and receive.
        let max = broker::DEFAULT_MAX_PAYLOAD_SIZE + 1024;
        options.set_max_packet_size(max, max);
        let (client, mut eventloop) = AsyncClient::new(options, CLIENT_CHANNEL);
        let received = Arc::new(Mutex::new(Vec::new()));
        let pubacks = Arc::new(Mutex::new(0));
        let subacks = Arc::new(Mutex::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (r, p, s, e) = (
            received.clone(),
            pubacks.clone(),
            subacks.clone(),
            errors.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        r.lock().unwrap().push(publish.payload.to_vec())
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => *p.lock().unwrap() += 1,
                    Ok(Event::Incoming(Packet::SubAck(_))) => *s.lock().unwrap() += 1,
                    Ok(_) => {}
                    Err(error) => {
                        // A test client never loses its connection in these tests: record it
                        // for the failure message and stop, instead of silently resubscribing.
                        e.lock().unwrap().push(error.to_string());
                        return;
                    }
                }
            }
        });
        TestClient {
            client,
            received,
            pubacks,
            subacks,
            errors,
            task,
        }
    }

    fn state(&self) -> String {
        format!(
            "received {}, pubacks {}, subacks {}, errors {:?}",
            self.received.lock().unwrap().len(),
            self.pubacks.lock().unwrap(),
            self.subacks.lock().unwrap(),
            self.errors.lock().unwrap()
        )
    }

    /// Subscribes at QoS 1 and waits for the SUBACK: from then on the broker stores for it.
    async fn subscribe(&self, topic: &str) {
        let before = *self.subacks.lock().unwrap();
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .expect("queue subscribe");
        wait_until(
            &format!("SUBACK for {topic}"),
            || *self.subacks.lock().unwrap() > before,
            || self.state(),
        )
        .await;
    }

    /// Publishes at QoS 1 and waits until the broker acknowledged (stored) every one.
    async fn publish_all(&self, topic: &str, payloads: impl IntoIterator<Item = Vec<u8>>) {
        let mut count = 0;
        let before = *self.pubacks.lock().unwrap();
        for payload in payloads {
            self.client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .expect("queue publish");
            count += 1;
        }
        wait_until(
            &format!("PUBACKs for {count} publishes on {topic}"),
            || *self.pubacks.lock().unwrap() >= before + count,
            || self.state(),
        )
        .await;
    }

    fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }
}

/// The collector of `e2e/output` and a publisher, both connected and subscribed.
async fn clients(broker: &BrokerHandle) -> (TestClient, TestClient) {
    let collector = TestClient::connect(broker, "test-collector");
    collector.subscribe(OUTPUT).await;
    let publisher = TestClient::connect(broker, "test-publisher");
    (collector, publisher)
}

/// Once `pipeline` has acked what it finished (nothing of it is still under way), publishes a
/// marker on the output topic and returns every output the collector got before it.
async fn outputs_so_far(
    collector: &TestClient,
    publisher: &TestClient,
    pipeline: Option<&RunningPipeline>,
) -> Vec<Value> {
    if let Some(p) = pipeline {
        wait_until(
            "the pipeline to ack every input it finished",
            || {
                let c = p.counters();
                p.acked() == c.processed + c.rejected
            },
            || format!("{:?}, acked {}", p.counters(), p.acked()),
        )
        .await;
    }
    let marker = json!({ "marker": collector.received().len() });
    publisher
        .publish_all(OUTPUT, [marker.to_string().into_bytes()])
        .await;
    wait_until(
        "the marker at the collector",
        || collector.received().iter().any(|p| parse(p) == marker),
        || collector.state(),
    )
    .await;
    let received = collector.received();
    received
        .iter()
        .map(|p| parse(p))
        .take_while(|v| *v != marker)
        .filter(|v| v.get("marker").is_none())
        .collect()
}

/// How many times each `seq` arrived.
fn seq_counts(outputs: &[Value]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for o in outputs {
        let seq = o["seq"].as_u64().expect("output has an integer seq");
        *counts.entry(seq).or_default() += 1;
    }
    counts
}

fn evens(range: std::ops::Range<u64>) -> Vec<u64> {
    range.filter(|s| s % 2 == 0).collect()
}

/// The end marker's output can reach the collector before the PUBACKs of `b`'s last outputs
/// reach `b`, and `b` counts an input only once it acks it. A malformed last input (rejected, no
/// output) is acked only after every input before it (acks go in order): once `b` counts it,
/// its counters hold everything it did. Expects `b` to have rejected nothing before.
async fn settle(publisher: &TestClient, b: &RunningPipeline) {
    publisher
        .publish_all(INPUT, [b"not an event".to_vec()])
        .await;
    wait_until(
        "B to reject the malformed last input",
        || b.counters().rejected == 1,
        || format!("B {:?}", b.counters()),
    )
    .await;
}

async fn wait_counters(pipeline: &RunningPipeline, expected: PipelineCounters) {
    wait_until(
        &format!("counters {expected:?}"),
        || pipeline.counters() == expected,
        || format!("{:?}", pipeline.counters()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_hot_events_pass_each_once_and_unchanged() {
    let broker = start_broker().await;
    let (collector, publisher) = clients(&broker).await;
    let pipeline = runtime::start(spec(&broker, "t10"))
        .await
        .expect("start pipeline");

    publisher.publish_all(INPUT, (0..200).map(event)).await;
    let expected = PipelineCounters {
        processed: 200,
        emitted: 100,
        rejected: 0,
    };
    wait_counters(&pipeline, expected).await;
    let outputs = outputs_so_far(&collector, &publisher, Some(&pipeline)).await;

    assert_eq!(outputs.len(), 100, "exactly one output per hot input");
    let seqs: Vec<u64> = outputs.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, evens(0..200), "every hot seq once, in input order");
    for o in &outputs {
        let seq = o["seq"].as_u64().unwrap();
        assert_eq!(
            *o,
            parse(&event(seq)),
            "output equals its input, extra fields kept"
        );
    }
    assert_eq!(pipeline.counters(), expected);
    assert_eq!(pipeline.acked(), 200);
    assert!(pipeline.is_running());
    pipeline.stop().await;
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    /// `abort()`: the connection drops with no DISCONNECT, like a crashed process.
    Crash,
    /// `stop()`: drain, then DISCONNECT.
    Clean,
}

/// A runs and finishes 100 events; A ends; 300 events are published with no owner; B takes
/// over the same session. Every hot event comes out exactly once: B sees no redelivery, since
/// A had acked all it finished (rumqttd resumes the session after the last ack).
async fn owner_change(ending: Ending, client_id: &str) {
    let broker = start_broker().await;
    let (collector, publisher) = clients(&broker).await;

    let a = runtime::start(spec(&broker, client_id))
        .await
        .expect("start pipeline A");
    publisher.publish_all(INPUT, (0..100).map(event)).await;
    let a_done = PipelineCounters {
        processed: 100,
        emitted: 50,
        rejected: 0,
    };
    wait_counters(&a, a_done).await;
    wait_until(
        "A's acks on the wire",
        || a.acked() == 100,
        || format!("acked {}", a.acked()),
    )
    .await;
    match ending {
        Ending::Crash => a.abort(),
        Ending::Clean => a.stop().await,
    }

    // No owner: the broker acknowledges (stores) them for the session.
    publisher.publish_all(INPUT, (100..400).map(event)).await;
    let early = outputs_so_far(&collector, &publisher, None).await;
    assert_eq!(
        early.len(),
        50,
        "nothing is processed while the pipeline has no owner"
    );

    let b = runtime::start(spec(&broker, client_id))
        .await
        .expect("start pipeline B on the same session");
    // An end marker as the last input: once its output is out, B has done everything before
    // (how many redelivered inputs that includes is what the assertions below check).
    let end = 400;
    publisher.publish_all(INPUT, [event(end)]).await;
    wait_until(
        "the end marker's output",
        || {
            collector
                .received()
                .iter()
                .any(|p| parse(p)["seq"].as_u64() == Some(end))
        },
        || format!("collector {}, B {:?}", collector.state(), b.counters()),
    )
    .await;
    // (A fresh-clone CI run saw B at 278 of 301 without this.)
    settle(&publisher, &b).await;
    let outputs = outputs_so_far(&collector, &publisher, Some(&b)).await;

    let counts = seq_counts(&outputs);
    // A clean stop waits until the broker has taken in every ack: nothing is redelivered. After
    // a crash, acks A wrote just before it died can be discarded unread with the reset
    // connection: the broker then redelivers that tail of A's inputs (k of them) to B, whose
    // outputs are published a second time. Exactly those, no more.
    let redelivered = b.counters().processed.saturating_sub(301);
    if matches!(ending, Ending::Clean) {
        assert_eq!(redelivered, 0, "a clean stop leaves nothing to redeliver");
    }
    let duplicated: Vec<u64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(
        duplicated,
        evens(100 - redelivered..100),
        "duplicates are exactly the matching inputs B got again ({redelivered} redelivered)"
    );
    assert!(counts.values().all(|n| *n <= 2), "at most one redelivery");
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        evens(0..401),
        "every hot seq arrives, the end marker included"
    );
    assert_eq!(
        outputs.len(),
        201 + duplicated.len(),
        "exact number of output messages"
    );
    assert_eq!(
        b.counters(),
        PipelineCounters {
            processed: 301 + redelivered,
            emitted: 151 + duplicated.len() as u64,
            rejected: 1,
        },
        "B processed the 300 new inputs, the end marker and the {redelivered} redelivered ones, and rejected the malformed one"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_owner_change_after_crash_loses_nothing() {
    owner_change(Ending::Crash, "t20-crash").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_owner_change_after_clean_stop_loses_nothing() {
    owner_change(Ending::Clean, "t20-clean").await;
}

/// A crashes in the middle of a stream. Nothing is lost; an input A had published outputs for
/// but not yet acked is redelivered to B and its outputs are published again: at-least-once.
/// Duplicates are counted, never hidden, and only possible above A's last ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t21_crash_mid_stream_duplicates_only_unacked_inputs() {
    const TOTAL: u64 = 400;
    let broker = start_broker().await;
    let (collector, publisher) = clients(&broker).await;
    let a = runtime::start(spec(&broker, "t21"))
        .await
        .expect("start pipeline A");

    // Publish without waiting for the broker, so A is busy when it dies.
    for seq in 0..TOTAL {
        publisher
            .client
            .publish(INPUT, QoS::AtLeastOnce, false, event(seq))
            .await
            .expect("queue publish");
    }
    wait_until(
        "A to ack some inputs",
        || a.acked() >= 40,
        || format!("acked {}", a.acked()),
    )
    .await;
    let acked_before_crash = a.acked();
    let a_counters = a.counters();
    a.abort();
    wait_until(
        "PUBACKs for every input",
        || *publisher.pubacks.lock().unwrap() >= TOTAL,
        || publisher.state(),
    )
    .await;

    // An end marker as the last input: once its output is out, B has done everything before.
    let end = TOTAL;
    publisher.publish_all(INPUT, [event(end)]).await;
    let b = runtime::start(spec(&broker, "t21"))
        .await
        .expect("start pipeline B");
    wait_until(
        "the end marker's output",
        || {
            collector
                .received()
                .iter()
                .any(|p| parse(p)["seq"].as_u64() == Some(end))
        },
        || format!("collector {}, B {:?}", collector.state(), b.counters()),
    )
    .await;
    // (Without this, the check below put the resume point one past where B resumed: 3
    // failures in 60 runs.)
    settle(&publisher, &b).await;
    let outputs = outputs_so_far(&collector, &publisher, Some(&b)).await;

    let counts = seq_counts(&outputs);
    let mut expected = evens(0..TOTAL);
    expected.push(end);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        expected,
        "no loss"
    );
    let duplicated: Vec<(u64, usize)> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, n)| (*s, *n))
        .collect();
    assert!(
        duplicated.iter().all(|(_, n)| *n == 2),
        "at most one redelivery per input: {duplicated:?}"
    );
    assert_eq!(
        outputs.len(),
        expected.len() + duplicated.len(),
        "exact number of output messages"
    );
    // B resumes the session at the first input whose ack the broker had not taken in. That is
    // not always A's ack count: acks A wrote just before the abort can die unread in the
    // broker's socket buffer (a reset discards it). Inputs and outputs travel in order, so the
    // duplicates are exactly the matching inputs from where B resumed up to the last output of
    // A that reached the broker: one contiguous run.
    let b_counters = b.counters();
    // Inputs `resumed_at..=end`, and the malformed one.
    let b_inputs = b_counters.processed + b_counters.rejected - 1;
    let resumed_at = TOTAL + 1 - b_inputs;
    let duplicated_seqs: Vec<u64> = duplicated.iter().map(|(s, _)| *s).collect();
    if let Some(&last) = duplicated_seqs.last() {
        let first_matching = resumed_at + resumed_at % 2;
        assert_eq!(
            duplicated_seqs,
            (first_matching..=last).step_by(2).collect::<Vec<u64>>(),
            "duplicates must be the matching inputs from where B resumed (input {resumed_at}; A had written {acked_before_crash} acks)"
        );
    }
    println!(
        "t21: when aborted, A had {a_counters:?} and {acked_before_crash} acks written; \
         B resumed the session at input {} and processed {b_inputs} inputs; \
         duplicated outputs: {}",
        resumed_at,
        duplicated.len()
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_malformed_payloads_are_rejected_and_acked() {
    let broker = start_broker().await;
    let (collector, publisher) = clients(&broker).await;
    let pipeline = runtime::start(spec(&broker, "t30"))
        .await
        .expect("start pipeline");

    let bad: [&[u8]; 4] = [
        b"not json",
        b"[1,2]",
        br#"{"event_type":"SensorReading","sensor_id":"sensor_1","temperature":75.0,"sent_at_us":123}"#,
        br#"{"event_type":"SensorReading","sensor_id":"sensor_1","temperature":75.0,"seq":"7","sent_at_us":123}"#,
    ];
    // Two good events, then one bad, cycling through the kinds: 40 good, 20 bad.
    let mut payloads = Vec::new();
    for seq in 0..40u64 {
        payloads.push(event(seq));
        if seq % 2 == 1 {
            payloads.push(bad[(seq as usize / 2) % bad.len()].to_vec());
        }
    }
    publisher.publish_all(INPUT, payloads).await;
    let expected = PipelineCounters {
        processed: 40,
        emitted: 20,
        rejected: 20,
    };
    wait_counters(&pipeline, expected).await;
    let outputs = outputs_so_far(&collector, &publisher, Some(&pipeline)).await;
    let seqs: Vec<u64> = outputs.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, evens(0..40), "every good hot event once");

    // Still running, and still working.
    assert!(pipeline.is_running());
    publisher.publish_all(INPUT, (40..50).map(event)).await;
    let expected = PipelineCounters {
        processed: 50,
        emitted: 25,
        rejected: 20,
    };
    wait_counters(&pipeline, expected).await;
    let outputs = outputs_so_far(&collector, &publisher, Some(&pipeline)).await;
    let seqs: Vec<u64> = outputs.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, evens(0..50));
    assert_eq!(
        pipeline.acked(),
        70,
        "every input acked, the bad ones included"
    );
    assert!(pipeline.is_running());
    pipeline.stop().await;
}

/// A connection error ends the pipeline's connections; it backs off, reconnects, re-subscribes
/// and resumes its session. The cut is made by another client taking the pipeline's output
/// client id (rumqttd drops the older connection at once); the pipeline then takes it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_reconnects_after_losing_a_connection() {
    let broker = start_broker().await;
    let (collector, publisher) = clients(&broker).await;
    let pipeline = runtime::start(spec(&broker, "t40"))
        .await
        .expect("start pipeline");
    publisher.publish_all(INPUT, (0..50).map(event)).await;
    let first = PipelineCounters {
        processed: 50,
        emitted: 25,
        rejected: 0,
    };
    wait_counters(&pipeline, first).await;
    assert_eq!(pipeline.last_error(), None);

    let intruder = TestClient::connect(&broker, "t40:out");
    wait_until(
        "the pipeline to notice the cut",
        || pipeline.last_error().is_some(),
        || intruder.state(),
    )
    .await;
    publisher.publish_all(INPUT, (50..100).map(event)).await;
    let second = PipelineCounters {
        processed: 100,
        emitted: 50,
        rejected: 0,
    };
    wait_counters(&pipeline, second).await;
    let outputs = outputs_so_far(&collector, &publisher, Some(&pipeline)).await;
    let seqs: Vec<u64> = outputs.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        evens(0..100),
        "every hot seq once across the reconnect"
    );
    assert!(pipeline.is_running());
    println!("t40: cut noticed as: {:?}", pipeline.last_error());
    pipeline.stop().await;
}

/// Configuration the broker or the runtime cannot honour fails at once, with the reason.
#[tokio::test]
async fn t50_bad_configuration_is_refused_up_front() {
    init_tracing();
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let taken = held.local_addr().expect("local addr");
    let in_use = broker::start(BrokerConfig {
        listen: taken,
        ..BrokerConfig::default()
    })
    .expect_err("the port is taken");
    assert!(format!("{in_use:#}").contains("bind"), "{in_use:#}");
    let tiny = broker::start(BrokerConfig {
        // Port 0: the broker binds it once and says which (a port picked and let go here
        // could be taken by another test's outgoing connection before the broker binds it).
        listen: LOOPBACK_ANY_PORT,
        max_segment_size: 100,
        ..BrokerConfig::default()
    })
    .expect_err("segments below 1 KiB");
    assert!(format!("{tiny:#}").contains("max_segment_size"), "{tiny:#}");

    // Checked before any connection attempt, so no broker is needed.
    let nowhere = BrokerHandle {
        addr: taken,
        upstream: taken,
    };
    let slash = runtime::start(spec(&nowhere, "group/pipeline"))
        .await
        .expect_err("rumqttd ignores a CONNECT whose client id has a '/'");
    assert!(format!("{slash:#}").contains("client id"), "{slash:#}");
}

/// An input the broker accepts whose output would not fit in a packet (its topic is longer):
/// rejected and acked, not published; before, the output connection failed on it, the input
/// came back, and the pipeline looped on it forever with everything behind it stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_an_output_too_large_for_the_broker_rejects_its_input() {
    let broker = start_broker().await;
    let (collector, publisher) = clients(&broker).await;
    let program = r#"
event SensorReading { sensor_id: str, temperature: float, seq: int }
stream Input = SensorReading.from(mqtt_1, topic: "i")
stream Output = Input.where(temperature > 50.0).to(mqtt_1, topic: "e2e/output")
"#;
    let mut spec = spec(&broker, "t60");
    spec.program = Arc::new(vpl::parse(program).expect("program parses"));
    let pipeline = runtime::start(spec).await.expect("start pipeline");

    // PUBLISH on "i": 1 + 3 (length) + 2 + 1 (topic) + 2 (packet id) + payload = the broker's max.
    let size = broker::DEFAULT_MAX_PAYLOAD_SIZE - 9;
    let head = r#"{"event_type":"SensorReading","sensor_id":""#;
    let tail = r#"","temperature":75.0,"seq":0,"sent_at_us":1}"#;
    let pad = "x".repeat(size - head.len() - tail.len());
    let big = format!("{head}{pad}{tail}").into_bytes();
    assert_eq!(big.len(), size);
    publisher.publish_all("i", [big, event(2)]).await;
    let expected = PipelineCounters {
        processed: 1,
        emitted: 1,
        rejected: 1,
    };
    wait_counters(&pipeline, expected).await;
    let outputs = outputs_so_far(&collector, &publisher, Some(&pipeline)).await;
    assert_eq!(seq_counts(&outputs), BTreeMap::from([(2, 1)]));
    assert!(pipeline.is_running());
    pipeline.stop().await;
}
