//! No double ownership, with real processes and real signals: a frozen link holder is left
//! within the read deadline and nothing moves; a worker cut off with its coordinator stops its
//! pipelines (its lease lapses) and resumes them once renewed; a frozen leader, resumed, judges
//! no one; a write to a leader without its quorum fails within the write budget.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::{json, Value};

/// Lease = ping-dead + heartbeat = 400 ms < grace 1000 ms; the leader's liveness sweep limit is
/// grace + ping-dead + 2 alive reports = 3.3 s.
const FAST_DETECTION: &[&str] = &[
    "--grace-ms",
    "1000",
    "--ping-interval-ms",
    "100",
    "--ping-dead-ms",
    "300",
    "--heartbeat-interval-ms",
    "100",
];
/// The liveness sweep's limit with these timings, plus one sweep and one alive report.
const SWEEP_WINDOW: Duration = Duration::from_millis(3300 + 1500);
/// A grace period and then some: what a resumed node would decide, it decides within it.
const GRACE_WINDOW: Duration = Duration::from_millis(2000);

fn source(n: u32) -> String {
    format!(
        "event SensorReading {{ sensor_id: str, temperature: float, seq: int }}\n\
         stream Input = SensorReading.from(mqtt_1, topic: \"e2e/input/{n}\")\n\
         stream Output = Input.where(temperature > 50.0).to(mqtt_1, topic: \"e2e/output\")\n"
    )
}

/// (worker, epoch, status) of `pipeline` in group `g`.
fn placement(v: &Value, pipeline: &str) -> Option<(String, u64, String)> {
    let p = v["groups"]
        .as_array()?
        .iter()
        .find(|g| g["group_name"] == "g")?["pipelines"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == pipeline)?
        .clone();
    Some((
        p["worker_id"].as_str()?.to_string(),
        p["epoch"].as_u64()?,
        p["status"].as_str()?.to_string(),
    ))
}

/// Start everything; `homes[i]` is the link order of worker `w{i+1}` given (leader, f1, f2).
/// Deploys p{i+1} on w{i+1} and waits until each runs at epoch 1. Returns (leader, f1, f2).
/// A worker's link order, given (leader, f1, f2).
type Homes = fn(u64, u64, u64) -> Vec<u64>;

async fn start(c: &mut Cluster, homes: &[Homes]) -> (u64, u64, u64) {
    c.start_broker();
    for id in 1..=3 {
        c.start(id);
    }
    let (leader, _) = c.await_leader(&[1, 2, 3], "at start").await;
    let f: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let (f1, f2) = (f[0], f[1]);
    for (i, home) in homes.iter().enumerate() {
        c.start_worker(&format!("w{}", i + 1), &home(leader, f1, f2));
    }
    let n = homes.len();
    c.wait_for(leader, "/api/v1/cluster/workers", "workers linked", |v| {
        let ws = v["workers"].as_array()?;
        (ws.len() == n
            && ws
                .iter()
                .all(|w| w["status"] == "ready" && !w["link_coordinator"].is_null()))
        .then_some(())
    })
    .await;
    let pipelines: Vec<Value> = (1..=n)
        .map(|i| json!({"name": format!("p{i}"), "source": source(i as u32), "worker_affinity": format!("w{i}")}))
        .collect();
    let (status, body) = c
        .post(
            leader,
            "/api/v1/cluster/pipeline-groups",
            &json!({"name": "g", "pipelines": pipelines}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for i in 1..=n {
        let want = (format!("w{i}"), 1, "running".to_string());
        c.wait_for(
            leader,
            "/api/v1/cluster/topology",
            "pipelines running",
            |v| (placement(v, &format!("p{i}"))? == want).then_some(()),
        )
        .await;
    }
    (leader, f1, f2)
}

/// Over a protocol window, poll `id` and fail at the first sign of a worker declared
/// unhealthy or a pipeline moved.
async fn nothing_moves(c: &Cluster, ids: &[u64], window: Duration, pipelines: usize, why: &str) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        for &id in ids {
            let Ok(r) = c
                .client()
                .get(format!("{}/api/v1/cluster/workers", c.url(id)))
                .send()
                .await
            else {
                continue;
            };
            let Ok(v) = r.json::<Value>().await else {
                continue;
            };
            for w in v["workers"].as_array().into_iter().flatten() {
                assert_eq!(w["status"], "ready", "{why}: coordinator-{id} sees {w}");
            }
            let topology = c.get(id, "/api/v1/cluster/topology").await;
            for i in 1..=pipelines {
                let (worker, epoch, _) = placement(&topology, &format!("p{i}")).expect("p placed");
                assert_eq!(
                    (worker.as_str(), epoch),
                    (format!("w{i}").as_str(), 1),
                    "{why}: p{i} moved (coordinator-{id})"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pipelines a worker says it runs now.
async fn running_on(c: &Cluster, worker: &str) -> Option<Vec<String>> {
    let h = c.worker_health(worker).await.ok()?;
    Some(
        h["pipelines"]
            .as_array()?
            .iter()
            .filter_map(|p| p["pipeline_id"].as_str().map(String::from))
            .collect(),
    )
}

async fn await_running(c: &Cluster, worker: &str, want: &[&str], what: &str) {
    let deadline = Instant::now() + common::WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        last = running_on(c, worker).await;
        if last.as_deref().is_some_and(|r| r == want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.dump_logs();
    panic!(
        "{what}: {worker} runs {last:?}, not {want:?}, within {:?}",
        common::WAIT
    );
}

#[tokio::test]
async fn t10_a_frozen_link_holder_is_left_and_nothing_moves() {
    let mut c = Cluster::new(FAST_DETECTION);
    let (leader, f1, _) = start(&mut c, &[|l, f1, f2| vec![f1, f2, l], |l, _, _| vec![l]]).await;
    c.pause(f1);
    c.wait_for(
        leader,
        "/api/v1/cluster/workers/w1",
        "w1's link moved off the frozen holder",
        |v| (v["link_coordinator"].as_u64()? != f1).then_some(()),
    )
    .await;
    nothing_moves(&c, &[leader], SWEEP_WINDOW, 2, "holder frozen").await;
    c.resume(f1);
    nothing_moves(&c, &[1, 2, 3], GRACE_WINDOW, 2, "holder resumed").await;
    await_running(&c, "w1", &["g/p1"], "w1 kept its pipeline").await;
    let m = c.get(leader, "/api/v1/cluster/migrations").await;
    assert_eq!(m["total"], 0, "{m}");
}

#[tokio::test]
async fn t20_a_worker_cut_off_with_its_coordinator_is_fenced_then_resumes() {
    let mut c = Cluster::new(FAST_DETECTION);
    let (leader, f1, f2) = start(&mut c, &[|l, f1, f2| vec![f1, f2, l]]).await;
    await_running(&c, "w1", &["g/p1"], "before the cut").await;
    // Its holder f1 stays up but alone: out of touch with any quorum, it grants no lease.
    c.pause(leader);
    c.pause(f2);
    await_running(&c, "w1", &[], "fenced: no lease, no pipeline").await;
    c.resume(leader);
    c.resume(f2);
    await_running(
        &c,
        "w1",
        &["g/p1"],
        "lease renewed: the pipeline runs again",
    )
    .await;
    let v = c
        .wait_for(f1, "/api/v1/cluster/topology", "p1 placed", |v| {
            placement(v, "p1")
        })
        .await;
    assert_eq!((v.0.as_str(), v.1), ("w1", 1), "p1 never moved");
}

#[tokio::test]
async fn t30_a_resumed_stale_leader_declares_no_one_and_moves_nothing() {
    let mut c = Cluster::new(FAST_DETECTION);
    let (leader, f1, f2) = start(
        &mut c,
        &[|_, f1, f2| vec![f1, f2], |_, f1, f2| vec![f2, f1]],
    )
    .await;
    c.pause(leader);
    let (new_leader, term) = c.await_leader(&[f1, f2], "with the leader frozen").await;
    // The frozen leader's view of liveness must be older than its sweep's limit.
    tokio::time::sleep(SWEEP_WINDOW).await;
    c.resume(leader);
    let deadline = Instant::now() + common::WAIT;
    loop {
        let m = c.metrics(leader).await;
        if m.as_ref()
            .is_ok_and(|m| m.current_leader == Some(new_leader) && m.current_term >= term)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old leader never followed {new_leader}: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nothing_moves(&c, &[1, 2, 3], GRACE_WINDOW, 2, "stale leader resumed").await;
    let m = c.get(new_leader, "/api/v1/cluster/migrations").await;
    assert_eq!(m["total"], 0, "{m}");
}

/// The leader is left alone (both followers frozen) for longer than its sweep's limit: out of
/// touch with any quorum, it must judge no one, or its verdicts commit the moment the followers
/// return (same term, so Raft alone does not stop them).
#[tokio::test]
async fn t35_a_leader_left_alone_proposes_no_verdict() {
    let mut c = Cluster::new(FAST_DETECTION);
    let (leader, f1, f2) = start(
        &mut c,
        &[|l, f1, f2| vec![f1, f2, l], |l, f1, f2| vec![f2, f1, l]],
    )
    .await;
    c.pause(f1);
    c.pause(f2);
    // The leader's view of the workers must age past its sweep's limit.
    tokio::time::sleep(SWEEP_WINDOW).await;
    c.resume(f1);
    c.resume(f2);
    c.await_leader(&[1, 2, 3], "followers back").await;
    nothing_moves(&c, &[1, 2, 3], GRACE_WINDOW, 2, "followers resumed").await;
    let m = c.get(leader, "/api/v1/cluster/migrations").await;
    assert_eq!(m["total"], 0, "{m}");
    await_running(&c, "w1", &["g/p1"], "w1 runs p1 again").await;
}

#[tokio::test]
async fn t40_a_write_to_a_leader_without_its_quorum_fails_within_the_budget() {
    let mut c = Cluster::new(FAST_DETECTION);
    c.start_broker();
    for id in 1..=3 {
        c.start(id);
    }
    let (leader, _) = c.await_leader(&[1, 2, 3], "at start").await;
    for id in (1..=3).filter(|&id| id != leader) {
        c.pause(id);
    }
    let connector =
        json!({"name": "m", "connector_type": "mqtt", "params": {"host": "h", "port": 1}});
    let response = c
        .client()
        .post(format!("{}/api/v1/cluster/connectors", c.url(leader)))
        .header("x-api-key", common::API_KEY)
        .json(&connector)
        .send()
        .await
        .expect("the leader answers within the client's 2 s timeout (write budget 600 ms)");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("write_timeout")),
        "{body}"
    );
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("quorum")),
        "{body}"
    );
}

/// A leader whose peers are gone still names itself leader, but is not ready: a worker homed on
/// it must not move its link back to a coordinator that cannot renew its lease (found by the
/// harness's isolate-leader phase: the worker went home, lapsed, and was declared unhealthy).
#[tokio::test]
async fn t45_a_leader_without_its_quorum_is_not_ready() {
    let mut c = Cluster::new(FAST_DETECTION);
    c.start_broker();
    for id in 1..=3 {
        c.start(id);
    }
    let (leader, _) = c.await_leader(&[1, 2, 3], "at start").await;
    let ready = c
        .client()
        .get(format!("{}/ready", c.url(leader)))
        .send()
        .await
        .expect("ready answers");
    assert_eq!(ready.status().as_u16(), 200);
    for id in (1..=3).filter(|&id| id != leader) {
        c.pause(id);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let response = c
            .client()
            .get(format!("{}/ready", c.url(leader)))
            .send()
            .await
            .expect("ready answers");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON");
        if status == 503 {
            assert_eq!(body["code"], "out_of_touch", "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the leader alone still answers /ready {status} {body} 5 s after its peers froze"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A worker's link moves while the cluster elects a new leader, and the election takes longer
/// than the grace: the old holder's verdict (decided before the election) must not beat the new
/// holder's `WorkerLinked` and mark a live worker unhealthy.
#[tokio::test]
async fn t50_a_link_moving_during_an_election_is_not_a_failure() {
    // Elections take leader lease 2 s + 1-2 s > grace 1.5 s. Lease inequality: contact window
    // 3 s + lease 400 ms < grace + ping-dead + 2 alive reports = 3.8 s.
    let mut c = Cluster::new(&[
        "--grace-ms",
        "1500",
        "--ping-interval-ms",
        "100",
        "--ping-dead-ms",
        "300",
        "--heartbeat-interval-ms",
        "100",
    ]);
    c.raft = (100, 1000, 2000);
    let (leader, f1, f2) = start(
        &mut c,
        &[|l, f1, f2| vec![f1, f2, l], |l, f1, f2| vec![f2, f1, l]],
    )
    .await;
    let links = |v: &Value| v["ws_connections"].as_u64();
    let before = c.wait_for(f1, "/health", "f1 holds w1's link", links).await;
    // The election starts; w1 freezes long enough for f1's ping deadline to close its link.
    c.pause(leader);
    c.pause_worker("w1", true);
    c.wait_for(f1, "/health", "f1 closed w1's link (ping deadline)", |v| {
        (links(v)? < before).then_some(())
    })
    .await;
    c.pause_worker("w1", false);
    let (new_leader, _) = c
        .await_leader(&[f1, f2], "with the old leader frozen")
        .await;
    c.wait_for(
        new_leader,
        "/api/v1/cluster/workers/w1",
        "w1 linked to a survivor",
        |v| {
            let on = v["link_coordinator"].as_u64()?;
            (on == f1 || on == f2).then_some(())
        },
    )
    .await;
    nothing_moves(
        &c,
        &[f1, f2],
        GRACE_WINDOW,
        2,
        "link moved during the election",
    )
    .await;
    c.resume(leader);
    await_running(&c, "w1", &["g/p1"], "w1 runs p1 once its lease is renewed").await;
}
