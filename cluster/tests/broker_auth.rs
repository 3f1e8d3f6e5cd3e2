//! The embedded broker's credentials, against the real broker (rumqttd behind its gate, on a free
//! loopback port) with real rumqttc clients: who is refused (CONNACK 5, not authorized), who is
//! let in, and that a refused clean-session CONNECT leaves a pipeline's session untouched.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use cluster::auth::worker_token;
use cluster::broker::{self, BrokerAuth, BrokerConfig, BrokerHandle};
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions,
    Packet, QoS,
};
use tokio::time::timeout;

const SECRET: &str = "test-worker-secret";
const PUBLISHER: (&str, &str) = ("harness-pub", "pub-password");
const COLLECTOR: (&str, &str) = ("harness-col", "col-password");
/// A pipeline's session id, as workers name it (`varpulis~group~pipeline`).
const SESSION: &str = "varpulis~g1~sensor_filter_1";
const TOPIC: &str = "e2e/input/1";

/// Bound of every wait: a loopback broker answers in milliseconds; seconds mean stuck.
const WAIT: Duration = Duration::from_secs(10);

const LOOPBACK_ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// For the `cluster broker` command, which needs its port up front: bind port 0, note it, let go.
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

async fn start_broker() -> BrokerHandle {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let auth = BrokerAuth::new(
        Some(SECRET.into()),
        [PUBLISHER, COLLECTOR].map(|(n, p)| (n.to_string(), p.to_string())),
    )
    .expect("credentials");
    let config = BrokerConfig {
        // Port 0: the broker binds it once and says which (a port picked and let go here
        // could be taken by another test's outgoing connection before the broker binds it).
        listen: LOOPBACK_ANY_PORT,
        auth: Some(auth),
        ..BrokerConfig::default()
    };
    tokio::task::spawn_blocking(move || broker::start(config))
        .await
        .expect("broker start task")
        .expect("start the broker")
}

fn options(
    broker: &BrokerHandle,
    client_id: &str,
    clean: bool,
    login: Option<(&str, &str)>,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, broker.addr.ip().to_string(), broker.addr.port());
    o.set_keep_alive(Duration::from_secs(5))
        .set_clean_session(clean);
    if let Some((user, password)) = login {
        o.set_credentials(user, password);
    }
    o
}

/// Connects and returns the broker's answer: the CONNACK, or the refusal's return code.
async fn connect(
    options: MqttOptions,
) -> (AsyncClient, EventLoop, Result<ConnAck, ConnectReturnCode>) {
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let answer = timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack),
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => return Err(code),
                Err(e) => panic!("expected a CONNACK, got the error {e:?}"),
            }
        }
    })
    .await
    .expect("no CONNACK within the bound");
    (client, eventloop, answer)
}

async fn answer(options: MqttOptions) -> Result<ConnAck, ConnectReturnCode> {
    connect(options).await.2
}

fn token(worker: &str) -> String {
    worker_token(SECRET, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_right_credentials_open_the_right_sessions() {
    let b = start_broker().await;
    let t1 = token("worker-1");
    let t2 = token("worker-2");
    let refused = Err(ConnectReturnCode::NotAuthorized);

    assert_eq!(
        answer(options(&b, SESSION, false, None)).await,
        refused,
        "no credentials"
    );
    assert_eq!(
        answer(options(&b, SESSION, false, Some(("worker-1", "wrong")))).await,
        refused,
        "wrong password"
    );
    assert_eq!(
        answer(options(&b, SESSION, false, Some(("worker-1", &t2)))).await,
        refused,
        "worker-2's token under the name worker-1"
    );
    assert_eq!(
        answer(options(&b, SESSION, false, Some(PUBLISHER))).await,
        refused,
        "a non-worker client on a pipeline session"
    );
    assert_eq!(
        answer(options(&b, "harness-col-1", false, Some(("worker-1", &t1)))).await,
        refused,
        "a worker on the collector's session"
    );
    assert_eq!(
        answer(options(&b, "harness-col-1", false, Some(PUBLISHER))).await,
        refused,
        "the publisher on the collector's session"
    );
    assert_eq!(
        answer(options(
            &b,
            "harness-pub-1",
            true,
            Some((PUBLISHER.0, COLLECTOR.1))
        ))
        .await,
        refused,
        "the collector's password under the publisher's name"
    );

    let worker = answer(options(&b, SESSION, false, Some(("worker-1", &t1)))).await;
    assert_eq!(
        worker.map(|a| a.code),
        Ok(ConnectReturnCode::Success),
        "a worker on a pipeline session"
    );
    let output = answer(options(
        &b,
        &format!("{SESSION}:out"),
        true,
        Some(("worker-2", &t2)),
    ))
    .await;
    assert_eq!(
        output.map(|a| a.code),
        Ok(ConnectReturnCode::Success),
        "its output connection"
    );
    let publisher = answer(options(&b, "harness-pub-1", true, Some(PUBLISHER))).await;
    assert_eq!(
        publisher.map(|a| a.code),
        Ok(ConnectReturnCode::Success),
        "the publisher"
    );
}

/// The attack of issue 15: a clean-session CONNECT on a pipeline's session id would wipe the
/// events queued for it. Refused, and the worker then gets every queued event, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_clean_session_leaves_the_pipeline_session_whole() {
    const QUEUED: u64 = 5;
    let b = start_broker().await;
    let t1 = token("worker-1");
    let worker_login = Some(("worker-1", t1.as_str()));

    // The pipeline's session: subscribed, then left (DISCONNECT, and the broker closes).
    let (client, mut eventloop, ack) = connect(options(&b, SESSION, false, worker_login)).await;
    assert!(ack.is_ok(), "{ack:?}");
    client.subscribe(TOPIC, QoS::AtLeastOnce).await.unwrap();
    timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.expect("subscribe") {
                return;
            }
        }
    })
    .await
    .expect("no SUBACK within the bound");
    client.disconnect().await.unwrap();
    timeout(WAIT, async { while eventloop.poll().await.is_ok() {} })
        .await
        .expect("the broker did not close the left session's connection");

    // Events for it while it is away: stored in its session (each PUBACK = stored).
    let (publisher, mut pub_loop, ack) =
        connect(options(&b, "harness-pub-1", true, Some(PUBLISHER))).await;
    assert!(ack.is_ok(), "{ack:?}");
    let pub_task = tokio::spawn(async move {
        let mut pubacks = 0u64;
        loop {
            match pub_loop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => pubacks += 1,
                Ok(_) => {}
                Err(e) => return (pubacks, e.to_string()),
            }
        }
    });
    for seq in 1..=QUEUED {
        publisher
            .publish(TOPIC, QoS::AtLeastOnce, false, seq.to_string())
            .await
            .unwrap();
    }

    // The wipe attempt, by the harness's own client and by an anonymous one: both refused.
    for login in [Some(PUBLISHER), None] {
        assert_eq!(
            answer(options(&b, SESSION, true, login)).await,
            Err(ConnectReturnCode::NotAuthorized),
            "clean-session CONNECT on {SESSION} with {login:?}"
        );
    }

    // The worker comes back: its session is there, with every queued event, then the marker.
    let (_client, mut eventloop, ack) = connect(options(&b, SESSION, false, worker_login)).await;
    let ack = ack.expect("the worker is let back in");
    assert!(ack.session_present, "the session survived: {ack:?}");
    publisher
        .publish(TOPIC, QoS::AtLeastOnce, false, "end")
        .await
        .unwrap();
    let received = timeout(WAIT, async {
        let mut received = Vec::new();
        loop {
            match eventloop.poll().await.expect("the worker's connection") {
                Event::Incoming(Packet::Publish(p)) if p.payload.as_ref() == b"end" => {
                    return received
                }
                Event::Incoming(Packet::Publish(p)) => {
                    received.push(String::from_utf8_lossy(&p.payload).into_owned())
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the marker did not arrive within the bound");
    let expected: Vec<String> = (1..=QUEUED).map(|s| s.to_string()).collect();
    assert_eq!(
        received, expected,
        "every queued event once, in order, before the marker"
    );
    pub_task.abort();
}

/// rumqttd's own loopback port, behind the gate, runs the same check: no way around it (rumqttd
/// closes without a CONNACK, which is why the gate exists), and a worker still gets in there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttd_behind_the_gate_checks_the_same_credentials() {
    let b = start_broker().await;
    let direct = |client_id: &str, login: Option<(&str, &str)>| {
        let mut o = MqttOptions::new(client_id, b.upstream.ip().to_string(), b.upstream.port());
        o.set_keep_alive(Duration::from_secs(5));
        if let Some((user, password)) = login {
            o.set_credentials(user, password);
        }
        o
    };
    for (client_id, login) in [(SESSION, None), (SESSION, Some(PUBLISHER))] {
        let (_c, mut eventloop) = AsyncClient::new(direct(client_id, login), 16);
        let first = timeout(WAIT, eventloop.poll())
            .await
            .expect("rumqttd answers within the bound");
        assert!(
            first.is_err(),
            "{client_id} with {login:?} straight to rumqttd: {first:?}"
        );
    }
    let t1 = token("worker-1");
    let (_c, mut eventloop) = AsyncClient::new(direct(SESSION, Some(("worker-1", &t1))), 16);
    let first = timeout(WAIT, eventloop.poll()).await.expect("bounded");
    assert!(
        matches!(first, Ok(Event::Incoming(Packet::ConnAck(ref a))) if a.code == ConnectReturnCode::Success),
        "{first:?}"
    );
}

/// `cluster broker` without credentials and without `--insecure` refuses to start (exit 2).
#[test]
fn the_broker_refuses_to_start_without_credentials() {
    let out = Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args(["broker", "--listen", &free_addr().to_string()])
        .env_remove("VARPULIS_WORKER_SECRET")
        .env_remove("VARPULIS_MQTT_CLIENTS")
        .output()
        .expect("run cluster broker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no credentials") && stderr.contains("--insecure"),
        "{stderr}"
    );
}
