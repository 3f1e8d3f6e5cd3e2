//! Who may call what, against a real coordinator trio: every route of the router's own table
//! (`cluster::coordinator::ROUTES`) tried with no credential, a wrong one and each role's, with
//! the exact status for each; a worker's token speaks only for its worker (REST and the
//! WebSocket's Identify); the WebSocket refuses an upgrade without a token; connector secrets are
//! redacted; an over-limit body is a 413; a coordinator without keys refuses to start unless
//! `--insecure`, and says so in `/health`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster::api::model::ApiError;
use cluster::auth::Role;
use cluster::coordinator::ROUTES;
use common::{worker_token, Cluster, OPERATOR_KEY, PEER_KEY, READ_KEY, WAIT};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};

/// The credentials every route is tried with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cred {
    None,
    Wrong,
    Read,
    Operator,
    Peer,
    /// worker-1's token, naming worker-1.
    Worker,
}

const CREDS: [Cred; 6] = [
    Cred::None,
    Cred::Wrong,
    Cred::Read,
    Cred::Operator,
    Cred::Peer,
    Cred::Worker,
];

/// Every route: method, path, who may call it, the path the test requests, and the status the
/// admitted caller gets (bodies are `{}`, so a POST that passes the check stops at its body's
/// validation with a 400 and changes nothing; ids name nothing that exists: 404).
const TABLE: &[(&str, &str, Role, &str, u16)] = &[
    ("GET", "/health", Role::Public, "/health", 200),
    ("GET", "/ready", Role::Public, "/ready", 200),
    ("GET", "/metrics", Role::Public, "/metrics", 200),
    ("GET", "/cluster", Role::Public, "/cluster", 200),
    ("GET", "/raft/metrics", Role::Read, "/raft/metrics", 200),
    (
        "GET",
        "/api/v1/cluster/coordinators",
        Role::Read,
        "/api/v1/cluster/coordinators",
        200,
    ),
    (
        "GET",
        "/api/v1/cluster/events",
        Role::Read,
        "/api/v1/cluster/events",
        200,
    ),
    (
        "GET",
        "/api/v1/cluster/connectors",
        Role::Read,
        "/api/v1/cluster/connectors",
        200,
    ),
    (
        "GET",
        "/api/v1/cluster/pipeline-groups",
        Role::Read,
        "/api/v1/cluster/pipeline-groups",
        200,
    ),
    (
        "GET",
        "/api/v1/cluster/pipeline-groups/{id}",
        Role::Read,
        "/api/v1/cluster/pipeline-groups/nope",
        404,
    ),
    (
        "GET",
        "/api/v1/cluster/topology",
        Role::Read,
        "/api/v1/cluster/topology",
        200,
    ),
    (
        "GET",
        "/api/v1/cluster/migrations",
        Role::Read,
        "/api/v1/cluster/migrations",
        200,
    ),
    (
        "GET",
        "/api/v1/cluster/workers",
        Role::Read,
        "/api/v1/cluster/workers",
        200,
    ),
    (
        "GET",
        "/api/v1/cluster/workers/{id}",
        Role::Read,
        "/api/v1/cluster/workers/nope",
        404,
    ),
    (
        "POST",
        "/api/v1/cluster/connectors",
        Role::Operator,
        "/api/v1/cluster/connectors",
        400,
    ),
    (
        "POST",
        "/api/v1/cluster/pipeline-groups",
        Role::Operator,
        "/api/v1/cluster/pipeline-groups",
        400,
    ),
    (
        "DELETE",
        "/api/v1/cluster/pipeline-groups/{id}",
        Role::Operator,
        "/api/v1/cluster/pipeline-groups/nope",
        404,
    ),
    (
        "POST",
        "/api/v1/cluster/pipelines/{group}/{pipeline}/migrate",
        Role::Operator,
        "/api/v1/cluster/pipelines/nope/nope/migrate",
        400,
    ),
    (
        "DELETE",
        "/api/v1/cluster/workers/{id}",
        Role::Operator,
        "/api/v1/cluster/workers/nope",
        404,
    ),
    (
        "POST",
        "/api/v1/cluster/workers/{id}/drain",
        Role::Operator,
        "/api/v1/cluster/workers/nope/drain",
        404,
    ),
    (
        "POST",
        "/api/v1/cluster/workers/register",
        Role::Worker,
        "/api/v1/cluster/workers/register",
        400,
    ),
    (
        "POST",
        "/api/v1/cluster/workers/{id}/heartbeat",
        Role::Worker,
        "/api/v1/cluster/workers/worker-1/heartbeat",
        404,
    ),
    // A plain GET, not an upgrade: admitted, then refused by the WebSocket extractor.
    (
        "GET",
        "/api/v1/cluster/ws",
        Role::Worker,
        "/api/v1/cluster/ws",
        400,
    ),
    ("POST", "/raft/append", Role::Peer, "/raft/append", 400),
    ("POST", "/raft/vote", Role::Peer, "/raft/vote", 400),
    ("POST", "/raft/snapshot", Role::Peer, "/raft/snapshot", 400),
    ("POST", "/raft/write", Role::Peer, "/raft/write", 400),
    ("POST", "/raft/alive", Role::Peer, "/raft/alive", 400),
    ("GET", "/raft/peers", Role::Peer, "/raft/peers", 200),
];

/// The status `cred` must get on a route of `role` whose admitted caller gets `admitted`.
fn expected(role: Role, cred: Cred, admitted: u16) -> u16 {
    let admits = match role {
        Role::Public => true,
        Role::Read => matches!(cred, Cred::Read | Cred::Operator),
        Role::Operator => cred == Cred::Operator,
        Role::Peer => cred == Cred::Peer,
        Role::Worker => cred == Cred::Worker,
    };
    match cred {
        _ if admits => admitted,
        Cred::None | Cred::Wrong => 401,
        _ => 403,
    }
}

fn with(request: reqwest::RequestBuilder, cred: Cred) -> reqwest::RequestBuilder {
    match cred {
        Cred::None => request,
        Cred::Wrong => request.header("x-api-key", "not-a-key-of-this-cluster"),
        Cred::Read => request.header("x-api-key", READ_KEY),
        Cred::Operator => request.header("x-api-key", OPERATOR_KEY),
        Cred::Peer => request.header("x-api-key", PEER_KEY),
        Cred::Worker => request
            .header("x-api-key", worker_token("worker-1"))
            .header("x-worker-id", "worker-1"),
    }
}

/// A client that presents nothing unless told (the cluster's own presents the operator key).
fn anonymous() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

async fn started() -> (Cluster, u64) {
    let mut c = Cluster::new(&[]);
    for id in 1..=3 {
        c.start(id);
    }
    let (leader, _) = c.await_leader(&[1, 2, 3], "at start").await;
    // /ready needs this node in touch with a quorum: wait for it (bounded), so the table's
    // 200 for /ready is about the credential, not the start-up.
    c.wait_for(leader, "/ready", "the leader ready", |v| {
        (v["ready"] == true).then_some(())
    })
    .await;
    (c, leader)
}

#[tokio::test]
async fn every_route_answers_each_credential_with_its_exact_status() {
    let listed: BTreeMap<(&str, &str), Role> = ROUTES
        .iter()
        .map(|r| ((r.method, r.path), r.role))
        .collect();
    let tested: BTreeMap<(&str, &str), Role> = TABLE
        .iter()
        .map(|(m, p, role, _, _)| ((*m, *p), *role))
        .collect();
    for (route, role) in &listed {
        assert_eq!(
            tested.get(route),
            Some(role),
            "route {route:?} ({role:?}) is served but not in this test's table, or with another role"
        );
    }
    for route in tested.keys() {
        assert!(listed.contains_key(route), "{route:?} is no longer served");
    }

    let (c, leader) = started().await;
    let http = anonymous();
    let base = c.url(leader);
    let mut seen = Vec::new();
    let mut wrong = Vec::new();
    for (method, pattern, role, path, admitted) in TABLE {
        let mut line = format!("| {method} {pattern} | {} |", role.name());
        for cred in CREDS {
            let url = format!("{base}{path}");
            let request = match *method {
                "GET" => http.get(&url),
                "DELETE" => http.delete(&url),
                _ => http.post(&url).json(&json!({})),
            };
            let response = with(request, cred).send().await.expect("send");
            let status = response.status().as_u16();
            let want = expected(*role, cred, *admitted);
            if status == 401 || status == 403 {
                let body: ApiError = response.json().await.unwrap_or_else(|e| {
                    panic!("{method} {path} as {cred:?}: {status} without {{error, code}}: {e}")
                });
                let code = if status == 401 {
                    "unauthorized"
                } else {
                    "forbidden"
                };
                assert_eq!(body.code, code, "{method} {path} as {cred:?}");
            }
            if status != want {
                wrong.push(format!(
                    "{method} {path} as {cred:?}: {status}, expected {want}"
                ));
            }
            line += &format!(" {status} |");
        }
        seen.push(line);
    }
    // The table as seen (README "Security" shows it).
    eprintln!("| Route | Role | none | wrong | read | operator | peer | worker |");
    eprintln!("|---|---|---|---|---|---|---|---|");
    for line in &seen {
        eprintln!("{line}");
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // A wrong x-api-key does not hide a right Bearer token.
    let both = http
        .get(format!("{base}/api/v1/cluster/workers"))
        .header("x-api-key", "not-a-key-of-this-cluster")
        .bearer_auth(READ_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(both.status().as_u16(), 200);
    let health: Value = http
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health json");
    assert_eq!(health["security"], "keys");
}

/// POST `body` to `path` on `base` as worker `as_id` (its token, its id).
async fn as_worker(base: &str, path: &str, as_id: &str, body: Value) -> (u16, Value) {
    let response = anonymous()
        .post(format!("{base}{path}"))
        .header("x-api-key", worker_token(as_id))
        .header("x-worker-id", as_id)
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn ws_request(
    base: &str,
    credential: Option<(&str, &str)>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/api/v1/cluster/ws", base.replace("http://", "ws://"));
    let mut request = url.into_client_request().expect("ws request");
    if let Some((key, id)) = credential {
        request
            .headers_mut()
            .insert("x-api-key", key.parse().expect("header"));
        request
            .headers_mut()
            .insert("x-worker-id", id.parse().expect("header"));
    }
    request
}

/// The status of a refused upgrade.
async fn refused_upgrade(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> u16 {
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade failed otherwise: {e}"),
        Ok(_) => panic!("upgraded without the worker's token"),
    }
}

#[tokio::test]
async fn a_worker_speaks_only_for_itself_and_the_websocket_checks_before_upgrading() {
    let (c, leader) = started().await;
    let base = c.url(leader);
    let register = |id: &str| json!({"worker_id": id, "address": "http://127.0.0.1:1"});
    let reg = "/api/v1/cluster/workers/register";
    assert_eq!(
        as_worker(&base, reg, "worker-2", register("worker-2"))
            .await
            .0,
        201
    );
    assert_eq!(
        as_worker(&base, reg, "worker-1", register("worker-1"))
            .await
            .0,
        201
    );
    // worker-2's token, naming worker-2, speaking for worker-1: refused.
    let (status, body) = as_worker(&base, reg, "worker-2", register("worker-1")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let hb = "/api/v1/cluster/workers/worker-1/heartbeat";
    let (status, body) = as_worker(&base, hb, "worker-2", json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert_eq!(as_worker(&base, hb, "worker-1", json!({})).await.0, 200);
    // worker-2's token naming worker-1: not worker-1's token, so no credential at all.
    let response = anonymous()
        .post(format!("{base}{hb}"))
        .header("x-api-key", worker_token("worker-2"))
        .header("x-worker-id", "worker-1")
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 401);

    // The WebSocket: no token, or another role's key, and it never upgrades.
    assert_eq!(refused_upgrade(ws_request(&base, None)).await, 401);
    assert_eq!(
        refused_upgrade(ws_request(&base, Some((OPERATOR_KEY, "worker-1")))).await,
        403
    );
    // worker-2's link identifying as worker-1: an Error frame, then the link closes.
    let token = worker_token("worker-2");
    let (mut ws, _) =
        tokio_tungstenite::connect_async(ws_request(&base, Some((&token, "worker-2"))))
            .await
            .expect("worker-2 upgrades with its token");
    use tokio_tungstenite::tungstenite::Message;
    let identify = json!({"type": "Identify", "worker_id": "worker-1"}).to_string();
    ws.send(Message::Text(identify.into()))
        .await
        .expect("send Identify");
    let frame = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("an answer to Identify within the bound")
        .expect("a frame")
        .expect("a frame, not an error");
    let text = frame.into_text().expect("a text frame");
    let answer: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(answer["type"], "Error", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("forbidden"),
        "{answer}"
    );
    // Its own id: the link comes up.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(ws_request(&base, Some((&token, "worker-2"))))
            .await
            .expect("upgrade");
    let identify = json!({"type": "Identify", "worker_id": "worker-2"}).to_string();
    ws.send(Message::Text(identify.into()))
        .await
        .expect("send Identify");
    let frame = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("IdentifyAck within the bound")
        .expect("a frame")
        .expect("a frame, not an error");
    let answer: Value = serde_json::from_str(&frame.into_text().expect("text")).expect("json");
    assert_eq!(answer["type"], "IdentifyAck", "{answer}");
    // A frame over the protocol's limit (256 KiB) ends the link.
    let big = "x".repeat(300 << 10);
    let _ = ws.send(Message::Text(big.into())).await;
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "the link outlived an over-limit frame"
        );
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("no close within {WAIT:?} after an over-limit frame"),
        }
    }
}

#[tokio::test]
async fn connector_secrets_are_redacted_and_an_over_limit_body_is_a_413() {
    let (c, leader) = started().await;
    let connector = json!({
        "name": "m", "connector_type": "mqtt",
        "params": {"host": "h", "port": 1883, "password": "hunter2", "API_KEY": "k1",
                   "tls": {"client_secret": "s", "ca": "ca.pem"}, "accessToken": "t"},
    });
    let (status, created) = c
        .post(leader, "/api/v1/cluster/connectors", &connector)
        .await;
    assert_eq!(status, 201, "{created}");
    let want = json!({"host": "h", "port": 1883, "password": "***", "API_KEY": "***",
                      "tls": {"client_secret": "***", "ca": "ca.pem"}, "accessToken": "***"});
    assert_eq!(created["params"], want);
    for id in 1..=3 {
        let listed = c
            .wait_for(
                id,
                "/api/v1/cluster/connectors",
                "the connector applied",
                |v| (v["total"] == 1).then(|| v["connectors"][0].clone()),
            )
            .await;
        assert_eq!(listed["params"], want, "coordinator-{id}");
    }
    // Just over the API's 1 MiB body limit.
    let big = json!({"name": "x".repeat(1 << 20), "connector_type": "mqtt"});
    let (status, body) = c.post(leader, "/api/v1/cluster/connectors", &big).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    let (status, _) = as_worker(
        &c.url(leader),
        "/api/v1/cluster/workers/register",
        "worker-1",
        json!({"worker_id": "worker-1", "address": "x".repeat(1 << 20)}),
    )
    .await;
    assert_eq!(status, 413);
}

#[test]
fn a_coordinator_without_keys_refuses_to_start_unless_insecure() {
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cluster"))
            .args([
                "coordinator",
                "--node-id",
                "1",
                "--listen",
                "127.0.0.1:0",
                "--peers",
                "http://127.0.0.1:9101",
                "--data-dir",
                "/nonexistent/never-created",
            ])
            .args(extra)
            .env_remove("VARPULIS_PEER_KEY")
            .env_remove("VARPULIS_OPERATOR_KEY")
            .env_remove("VARPULIS_WORKER_SECRET")
            .output()
            .expect("run cluster");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    for flag in [
        "--peer-key",
        "--operator-key",
        "--worker-secret",
        "--insecure",
    ] {
        assert!(stderr.contains(flag), "{flag} not named: {stderr}");
    }
    let (code, stderr) = run(&["--peer-key", "p", "--operator-key", "o"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("missing --worker-secret"), "{stderr}");
    let (code, stderr) = run(&["--api-key", "k"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--api-key was replaced") && stderr.contains("--peer-key"),
        "{stderr}"
    );
    let (code, stderr) = run(&["--insecure", "--peer-key", "p"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--insecure runs without keys"), "{stderr}");
}

#[tokio::test]
async fn an_insecure_coordinator_says_so_and_serves_anyone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = common::free_ports(1)[0];
    let url = format!("http://127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args([
            "coordinator",
            "--node-id",
            "1",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--peers",
            &format!("1={url}"),
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--insecure",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let http = anonymous();
    let deadline = Instant::now() + WAIT;
    let health: Value = loop {
        if let Ok(r) = http.get(format!("{url}/health")).send().await {
            break r.json().await.expect("health json");
        }
        assert!(Instant::now() < deadline, "no /health within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(health["security"], "insecure");
    let vote = http
        .post(format!("{url}/raft/vote"))
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(
        vote.status().as_u16(),
        400,
        "open to anyone: stops at the body"
    );
    let _ = child.kill();
    let _ = child.wait();
}
