//! The fence against the reconciler, with a real broker and the real pipeline runtime: the
//! worker's MQTT connections go through a loopback proxy that can hold them (swallow what the
//! worker sends), so a fenced pipeline's stop lasts until its lease ends, as it does when the
//! broker is slow to answer. A lease renewed in that window must not start a second copy of the
//! pipeline on the same session while the first still holds its connections: the broker would
//! hand the session to the second copy and close the first one's connections itself (rumqttd's
//! "Duplicate client_id"), with the first copy's unacked inputs redelivered (duplicates).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::{Worker, WorkerConfig};
use crate::api::model::Assignment;
use crate::broker::{self, BrokerConfig, BrokerHandle};

/// Bound of every wait: loopback connects and a 2 s lease take far less; more means stuck.
const WAIT: Duration = Duration::from_secs(10);
/// A lease of 2 s: its stop budget (an eighth) is 250 ms, the window a fenced stop may take.
const LEASE: Duration = Duration::from_secs(2);

const SOURCE: &str = r#"
event SensorReading { sensor_id: str, temperature: float, seq: int }
stream Input = SensorReading.from(mqtt_1, topic: "fence/input")
stream Output = Input.where(temperature > 50.0).to(mqtt_1, topic: "fence/output")
"#;

async fn wait_until(what: &str, mut done: impl FnMut() -> bool, state: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; last seen: {}",
            state()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[derive(Default)]
struct ProxyState {
    open: usize,
    /// One flag per connection accepted so far: set, what the client sends is swallowed.
    holds: Vec<Arc<AtomicBool>>,
    /// Held connections the broker closed (the client had not): only a takeover of the session
    /// by another connection does that (a held client's keep-alive, 5 s, lasts far longer).
    held_closed_by_broker: usize,
}

/// A TCP proxy in front of the broker.
struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let hold = Arc::new(AtomicBool::new(false));
                {
                    let mut s = shared.lock().unwrap();
                    s.open += 1;
                    s.holds.push(hold.clone());
                }
                let shared = shared.clone();
                tokio::spawn(async move {
                    let broker_closed = relay(client, server, hold.clone()).await;
                    let mut s = shared.lock().unwrap();
                    s.open -= 1;
                    if broker_closed && hold.load(Ordering::SeqCst) {
                        s.held_closed_by_broker += 1;
                    }
                });
            }
        });
        Proxy { addr, state, task }
    }

    /// From now on, the connections open now reach the broker no more (the broker's side still
    /// reaches the client): a DISCONNECT is never seen, the broker never closes them.
    fn hold_open_connections(&self) {
        for hold in &self.state.lock().unwrap().holds {
            hold.store(true, Ordering::SeqCst);
        }
    }

    fn open(&self) -> usize {
        self.state.lock().unwrap().open
    }

    fn held_closed_by_broker(&self) -> usize {
        self.state.lock().unwrap().held_closed_by_broker
    }
}

/// Relays until either side closes. True: the broker closed it.
async fn relay(client: TcpStream, server: TcpStream, hold: Arc<AtomicBool>) -> bool {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) if !hold.load(Ordering::SeqCst) => {
                    if server_tx.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {} // held: swallowed
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    if client_tx.write_all(&buf[..n]).await.is_err() {
                        return false;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = up => false,
        broker_closed = down => broker_closed,
    }
}

async fn start_broker() -> BrokerHandle {
    let config = BrokerConfig {
        // Port 0: the broker binds it and says which.
        listen: (std::net::Ipv4Addr::LOCALHOST, 0).into(),
        ..BrokerConfig::default()
    };
    tokio::task::spawn_blocking(move || broker::start(config))
        .await
        .expect("broker start task")
        .expect("start the broker")
}

fn running(worker: &Worker, id: &str) -> bool {
    worker
        .lock()
        .get(id)
        .is_some_and(|r| r.pipeline.is_running())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_renewed_while_the_fence_stops_starts_no_second_copy() {
    let broker = start_broker().await;
    let proxy = Proxy::start(broker.addr).await;
    let worker = Arc::new(
        Worker::new(WorkerConfig {
            worker_id: "w-fence".into(),
            // Never called: this test drives the lease and the assignments itself.
            coordinators: vec!["http://127.0.0.1:9".into()],
            worker_token: None,
            advertise: "127.0.0.1:0".into(),
            mqtt_host: proxy.addr.ip().to_string(),
            mqtt_port: proxy.addr.port(),
            mqtt_login: None,
            max_pipelines: 4,
        })
        .expect("worker"),
    );
    let id = "g/p";
    worker.renew(Instant::now(), LEASE);
    let fence = tokio::spawn(worker.clone().fence_loop());
    let reconciler = tokio::spawn(worker.clone().reconcile_loop());
    worker.desired.send_replace(Some(vec![Assignment {
        group: "g".into(),
        pipeline: "p".into(),
        pipeline_id: id.into(),
        source: SOURCE.into(),
        epoch: 1,
    }]));
    wait_until(
        "the pipeline to run (two connections)",
        || running(&worker, id) && proxy.open() == 2,
        || format!("open {}", proxy.open()),
    )
    .await;

    // The broker stops hearing from this copy, and the lease is not renewed: the fence takes
    // the pipeline out and stops it, which lasts until the lease ends (DISCONNECT swallowed).
    proxy.hold_open_connections();
    wait_until(
        "the fence to take the pipeline out",
        || !worker.lock().contains_key(id),
        || format!("open {}", proxy.open()),
    )
    .await;
    assert_eq!(
        proxy.open(),
        2,
        "the fenced copy still holds its connections"
    );
    // Renewed at once (a heartbeat answered late): the reconciler converges again.
    worker.renew(Instant::now(), LEASE);
    wait_until(
        "the pipeline to run again",
        || running(&worker, id),
        || format!("open {}", proxy.open()),
    )
    .await;
    assert_eq!(
        proxy.held_closed_by_broker(),
        0,
        "the broker closed the fenced copy's connections: a second copy took its session while \
         the first still held it (two owners)"
    );
    wait_until(
        "the fenced copy's connections to be closed (the new copy's two left)",
        || proxy.open() == 2,
        || format!("open {}", proxy.open()),
    )
    .await;
    fence.abort();
    reconciler.abort();
    let running: Vec<_> = worker.lock().drain().collect();
    for (_, r) in running {
        r.pipeline.abort();
    }
}
