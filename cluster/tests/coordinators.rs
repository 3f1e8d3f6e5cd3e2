//! Coordinators as real processes: bootstrap from any pair, durability across SIGKILL of all
//! three, follower write forwarding, API errors.

mod common;

use cluster::api::model::{ApiError, ConnectorList, RaftRole};
use common::{Cluster, API_KEY};
use serde_json::json;

fn connector(i: usize) -> serde_json::Value {
    json!({"name": format!("mqtt_{i}"), "connector_type": "mqtt", "params": {"host": "127.0.0.1", "port": 1883 + i}})
}

async fn put_connector(c: &Cluster, via: u64, i: usize) -> reqwest::StatusCode {
    c.client()
        .post(format!("{}/api/v1/cluster/connectors", c.url(via)))
        .header("x-api-key", API_KEY)
        .json(&connector(i))
        .send()
        .await
        .expect("POST connector")
        .status()
}

async fn connectors(c: &Cluster, id: u64) -> ConnectorList {
    c.client()
        .get(format!("{}/api/v1/cluster/connectors", c.url(id)))
        .send()
        .await
        .expect("GET connectors")
        .json()
        .await
        .expect("connector list")
}

/// The cluster forms from whichever two nodes start first, without node 1.
#[tokio::test]
async fn t10_any_two_nodes_bootstrap_without_node_1() {
    let mut c = Cluster::new(&[]);
    c.start(2);
    c.start(3);
    let (leader, _) = c
        .await_leader(&[2, 3], "with only nodes 2 and 3 started")
        .await;
    assert!(leader == 2 || leader == 3);
    // The late node joins the formed cluster and never re-initializes it.
    c.start(1);
    let (leader_after, _) = c.await_leader(&[1, 2, 3], "after node 1 joined late").await;
    assert_eq!(
        c.metrics(1).await.expect("metrics").membership,
        vec![1, 2, 3]
    );
    assert!(leader_after == 2 || leader_after == 3 || leader_after == 1);
}

/// Writes through a follower are forwarded to the leader; all three SIGKILLed and restarted
/// come back with a leader and every committed entry, also across snapshots and log purges.
#[tokio::test]
async fn t20_committed_entries_survive_sigkill_of_all_three() {
    // Snapshot every 5 entries so restart goes through snapshot + log replay.
    let mut c = Cluster::new(&["--snapshot-logs", "5"]);
    for id in 1..=3 {
        c.start(id);
    }
    let (leader, term_before) = c.await_leader(&[1, 2, 3], "at start").await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    const WRITES: usize = 12;
    for i in 0..WRITES {
        let via = if i % 2 == 0 { follower } else { leader };
        let status = put_connector(&c, via, i).await;
        assert_eq!(
            status,
            reqwest::StatusCode::CREATED,
            "write {i} via coordinator-{via}"
        );
    }
    // Idempotent repeat: same connector again is 200, not a second entry.
    assert_eq!(
        put_connector(&c, follower, 0).await,
        reqwest::StatusCode::OK
    );
    let commit_before = c.metrics(leader).await.expect("metrics").commit_index;

    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.start(id);
    }
    let (_, term_after) = c
        .await_leader(&[1, 2, 3], "after SIGKILL of all three")
        .await;
    assert!(term_after >= term_before, "terms never go back");
    for id in 1..=3 {
        // A node reports state once it applied the log; wait for the last write to be applied.
        let deadline = std::time::Instant::now() + common::WAIT;
        loop {
            let list = connectors(&c, id).await;
            if list.total as usize == WRITES {
                let names: Vec<&str> = list.connectors.iter().map(|c| c.name.as_str()).collect();
                for i in 0..WRITES {
                    assert!(
                        names.contains(&format!("mqtt_{i}").as_str()),
                        "coordinator-{id} lost mqtt_{i}"
                    );
                }
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "coordinator-{id} has {} of {WRITES} connectors after restart",
                list.total
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let m = c.metrics(id).await.expect("metrics");
        assert!(
            m.commit_index >= commit_before,
            "coordinator-{id} commit index went back"
        );
    }
    assert!(
        c.data_dir(1).join("raft.redb").is_file(),
        "state lives in the data dir"
    );
}

/// Bad requests get `{error, code}` and a 4xx; mutating routes need the key.
#[tokio::test]
async fn t30_bad_requests_get_error_and_code() {
    let mut c = Cluster::new(&[]);
    for id in 1..=3 {
        c.start(id);
    }
    let (leader, _) = c.await_leader(&[1, 2, 3], "at start").await;
    let url = format!("{}/api/v1/cluster/connectors", c.url(leader));
    // No credential at all (the cluster's own client presents the operator key).
    let anonymous = reqwest::Client::new();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.client()
                .post(&url)
                .header("x-api-key", API_KEY)
                .header("content-type", "application/json")
                .body("{\"name\":"),
            400,
            "invalid_json",
        ),
        (
            c.client()
                .post(&url)
                .header("x-api-key", API_KEY)
                .json(&json!({"name": "x", "connector_type": "kafka"})),
            400,
            "unsupported_connector_type",
        ),
        (
            c.client()
                .post(&url)
                .header("x-api-key", API_KEY)
                .json(&json!({"name": "x", "connector_type": "mqtt", "bogus": 1})),
            400,
            "invalid_json",
        ),
        (
            anonymous.post(&url).json(&connector(1)),
            401,
            "unauthorized",
        ),
        (
            c.client()
                .post(&url)
                .header("x-api-key", "wrong")
                .json(&connector(1)),
            401,
            "unauthorized",
        ),
        (
            anonymous
                .post(format!("{}/raft/vote", c.url(leader)))
                .json(&json!({})),
            401,
            "unauthorized",
        ),
        (
            c.client().get(format!("{}/nope", c.url(leader))),
            404,
            "not_found",
        ),
        (
            c.client()
                .get(format!("{}/api/v1/cluster/events?since=x", c.url(leader))),
            400,
            "invalid_query",
        ),
    ];
    for (i, (request, status, code)) in cases.into_iter().enumerate() {
        let response = request.send().await.expect("send");
        assert_eq!(response.status().as_u16(), status, "case {i}");
        let body: ApiError = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("case {i}: not an ApiError: {e}"));
        assert_eq!(body.code, code, "case {i}: {}", body.error);
        assert!(!body.error.is_empty());
    }
    // Nothing was written by the refused requests.
    assert_eq!(connectors(&c, leader).await.total, 0);
}

/// A peer list that does not contain the node itself is refused at start, exit code 2.
#[test]
fn t40_peer_list_without_self_is_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args([
            "coordinator",
            "--node-id",
            "4",
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "http://127.0.0.1:9101,http://127.0.0.1:9102,http://127.0.0.1:9103",
            "--data-dir",
            "/nonexistent/never-created",
            "--insecure",
        ])
        .output()
        .expect("run cluster");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not contain this node (--node-id 4)"),
        "{stderr}"
    );
}

/// A follower's data dir is wiped while the cluster holds an entry it had helped commit. Started
/// again next to the one node that lacks that entry, it must not vote that node into leadership
/// (which would then overwrite the entry everywhere): the entry survives on every node.
#[tokio::test]
async fn t50_a_wiped_node_never_elects_a_leader_that_lacks_committed_entries() {
    use std::time::{Duration, Instant};
    let mut c = Cluster::new(&[]);
    for id in 1..=3 {
        c.start(id);
    }
    let (a, _) = c.await_leader(&[1, 2, 3], "at start").await;
    let followers: Vec<u64> = (1..=3).filter(|&id| id != a).collect();
    let (b, lacking) = (followers[0], followers[1]);
    // `lacking` (a follower, so it restarts as one) misses the entry; a and b commit it.
    c.kill(lacking);
    assert!(put_connector(&c, a, 7).await.is_success());
    // b loses its disk; a goes down.
    c.kill(b);
    std::fs::remove_dir_all(c.data_dir(b)).expect("wipe b's data dir");
    c.kill(a);
    c.start(lacking);
    c.start(b);
    // Many election timeouts with only these two up: `lacking` would win with b's vote.
    let window = Instant::now() + Duration::from_millis(2000);
    while Instant::now() < window {
        if let Ok(m) = c.metrics(lacking).await {
            assert!(
                m.state != RaftRole::Leader,
                "node {lacking}, which lacks a committed entry, was elected: {m:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.start(a);
    c.await_leader(&[1, 2, 3], "all back").await;
    for id in 1..=3 {
        let deadline = Instant::now() + common::WAIT;
        loop {
            let names: Vec<String> = connectors(&c, id)
                .await
                .connectors
                .into_iter()
                .map(|k| k.name)
                .collect();
            if names.iter().any(|n| n == "mqtt_7") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "coordinator-{id} lost the committed connector: {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Nodes given different `--peers` refuse to run together, with an error naming the problem
/// (whichever of the two probes the other first exits).
#[tokio::test]
async fn t60_a_node_with_other_peers_refuses_to_start() {
    let mut c = Cluster::new(&[]);
    c.start(1);
    let other = c
        .peers()
        .replace(&format!("3={}", c.url(3)), "3=http://127.0.0.1:9");
    c.start_with_peers(2, &other);
    let (id, code) = c.wait_any_exit(&[1, 2], "both ran although their --peers differ");
    assert_eq!(
        code,
        Some(2),
        "coordinator-{id}: exit code 2, configuration refused"
    );
    let log = std::fs::read_to_string(c.log_path(id)).expect("log");
    assert!(log.contains("--peers differs between nodes"), "{log}");
}

/// A follower whose data dir was wiped restarts: it rejoins as a caught-up follower, and the
/// leader keeps serving writes (openraft 0.9 panics the leader's Raft core when a follower's log
/// goes backwards, unless built with `loosen-follower-log-revert`).
#[tokio::test]
async fn t55_a_wiped_follower_rejoins_and_the_leader_keeps_serving() {
    use std::time::{Duration, Instant};
    let mut c = Cluster::new(&[]);
    for id in 1..=3 {
        c.start(id);
    }
    let (leader, _) = c.await_leader(&[1, 2, 3], "at start").await;
    let victim = (1..=3).find(|&id| id != leader).expect("a follower");
    for i in 0..3 {
        assert!(put_connector(&c, leader, i).await.is_success());
    }
    c.kill(victim);
    std::fs::remove_dir_all(c.data_dir(victim)).expect("wipe the follower's data dir");
    c.start(victim);
    let deadline = Instant::now() + common::WAIT;
    loop {
        let (l, v) = (c.metrics(leader).await, c.metrics(victim).await);
        if let (Ok(l), Ok(v)) = (&l, &v) {
            if v.state == RaftRole::Follower && v.last_log_index >= l.last_log_index {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the wiped follower never caught up: leader {l:?}, it {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = put_connector(&c, leader, 9).await;
    assert!(
        status.is_success(),
        "the leader no longer commits writes: {status}"
    );
    let deadline = Instant::now() + common::WAIT;
    while connectors(&c, victim).await.total != 4 {
        let seen = connectors(&c, victim).await;
        assert!(
            Instant::now() < deadline,
            "the rejoined follower lacks entries: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
