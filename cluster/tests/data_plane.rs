//! Workers, failure detection and migration with real processes: a worker linked to a
//! follower is detected and its pipeline moved; a migrated placement survives a leader change
//! and the old owner's return; group deploys are validated and idempotent.

mod common;

use common::Cluster;
use serde_json::{json, Value};

/// Short grace so the tests stay fast; timings are the harness's job, not these tests'.
/// The lease inequalities hold: lease (ping-dead + heartbeat = 400 ms) < grace.
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

fn seed_source(n: u32) -> String {
    format!(
        "event SensorReading {{ sensor_id: str, temperature: float, seq: int }}\n\
         stream Input = SensorReading.from(mqtt_1, topic: \"e2e/input/{n}\")\n\
         stream HighTemp = Input.where(temperature > 50.0)\n\
         stream Output = HighTemp.to(mqtt_1, topic: \"e2e/output\")\n"
    )
}

fn placement(v: &Value, group: &str, pipeline: &str) -> Option<(String, u64, String)> {
    v["groups"]
        .as_array()?
        .iter()
        .find(|g| g["group_name"] == group)?["pipelines"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == pipeline)
        .map(|p| {
            (
                p["worker_id"].as_str().unwrap_or("").to_string(),
                p["epoch"].as_u64().unwrap_or(0),
                p["status"].as_str().unwrap_or("").to_string(),
            )
        })
}

async fn start(c: &mut Cluster) -> (u64, u64) {
    c.start_broker();
    for id in 1..=3 {
        c.start(id);
    }
    let (leader, _) = c.await_leader(&[1, 2, 3], "at start").await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    (leader, follower)
}

/// A worker whose link is held by a follower is still detected (the follower runs the grace
/// timer) and its pipeline is moved by the leader; the move is never reverted afterwards, not by
/// a leader change, and not by the old owner coming back.
#[tokio::test]
async fn t10_worker_on_a_follower_fails_over_and_the_move_sticks() {
    let mut c = Cluster::new(FAST_DETECTION);
    let (leader, follower) = start(&mut c).await;
    let others: Vec<u64> = (1..=3).filter(|&id| id != follower).collect();
    c.start_worker("w-follower", &[follower, others[0], others[1]]);
    c.start_worker("w-spare", &[leader]);
    c.wait_for(
        leader,
        "/api/v1/cluster/workers",
        "both workers linked",
        |v| {
            let ws = v["workers"].as_array()?;
            (ws.len() == 2
                && ws
                    .iter()
                    .all(|w| w["status"] == "ready" && !w["link_coordinator"].is_null()))
            .then_some(())
        },
    )
    .await;
    let link = c.get(leader, "/api/v1/cluster/workers/w-follower").await;
    assert_eq!(
        link["link_coordinator"], follower,
        "the victim's link is on a follower"
    );

    let group = json!({"name": "g", "pipelines": [{"name": "p1", "source": seed_source(1), "worker_affinity": "w-follower"}]});
    let (status, body) = c
        .post(leader, "/api/v1/cluster/pipeline-groups", &group)
        .await;
    assert_eq!(status, 201, "{body}");
    c.wait_for(
        leader,
        "/api/v1/cluster/topology",
        "p1 running on w-follower",
        |v| (placement(v, "g", "p1")? == ("w-follower".into(), 1, "running".into())).then_some(()),
    )
    .await;

    c.kill_worker("w-follower");
    let migration = c
        .wait_for(
            leader,
            "/api/v1/cluster/migrations",
            "p1 migrated off w-follower",
            |v| {
                v["migrations"]
                    .as_array()?
                    .iter()
                    .find(|m| m["status"] == "completed")
                    .cloned()
            },
        )
        .await;
    assert_eq!(migration["from_worker"], "w-follower");
    assert_eq!(migration["to_worker"], "w-spare");
    assert_eq!(migration["epoch"], 2);
    let victim = c.get(follower, "/api/v1/cluster/workers/w-follower").await;
    assert_eq!(victim["status"], "unhealthy");
    // The verdict came from the follower holding the link (grace timer), not from a sweep.
    let events = c.get(follower, "/api/v1/cluster/events").await;
    let reason = events["events"]
        .as_array()
        .and_then(|es| {
            es.iter()
                .find(|e| e["kind"] == "worker_status_changed" && e["status"] == "unhealthy")
        })
        .map(|e| e["reason"].as_str().unwrap_or("").to_string())
        .expect("an unhealthy event");
    assert!(reason.contains("grace"), "{reason}");

    // Leader change: the placement stays where it was committed.
    c.kill(leader);
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let (new_leader, _) = c.await_leader(&survivors, "after killing the leader").await;
    // The old owner comes back: ready again, but it gets nothing back.
    c.start_worker("w-follower", &[follower]);
    c.wait_for(
        new_leader,
        "/api/v1/cluster/workers/w-follower",
        "old owner ready again",
        |v| (v["status"] == "ready").then_some(()),
    )
    .await;
    c.start(leader);
    c.await_leader(&[1, 2, 3], "after the old leader rejoined")
        .await;
    for id in 1..=3 {
        let v = c
            .wait_for(id, "/api/v1/cluster/topology", "topology replicated", |v| {
                placement(v, "g", "p1")
            })
            .await;
        assert_eq!(
            v,
            ("w-spare".into(), 2, "running".into()),
            "coordinator-{id}"
        );
        let m = c.get(id, "/api/v1/cluster/migrations").await;
        assert_eq!(m["total"], 1, "coordinator-{id}: no second move");
    }
}

/// Deploys: a construct outside the VPL subset is a 400 naming it and its position; the same
/// group twice is the same group (200, no second copy); a different group under a taken name is
/// a 409.
#[tokio::test]
async fn t20_group_deploys_are_validated_and_idempotent() {
    let mut c = Cluster::new(FAST_DETECTION);
    let (leader, follower) = start(&mut c).await;
    c.start_worker("w1", &[leader]);
    c.wait_for(leader, "/api/v1/cluster/workers", "worker ready", |v| {
        (v["total"] == 1).then_some(())
    })
    .await;

    let bad = json!({"name": "bad", "pipelines": [{"name": "p", "source": "event E { x: int }\nstream S = E.from(mqtt_1, topic: \"t\")\nstream W = S.window(5)\nstream O = W.to(mqtt_1, topic: \"o\")\n"}]});
    let (status, body) = c
        .post(follower, "/api/v1/cluster/pipeline-groups", &bad)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_pipeline");
    let error = body["error"].as_str().unwrap_or("");
    assert!(
        error.contains("line 3, column 13") && error.contains(".window"),
        "{error}"
    );

    let group =
        json!({"name": "c1", "pipelines": [{"name": "sensor_filter_1", "source": seed_source(1)}]});
    let (first, body1) = c
        .post(follower, "/api/v1/cluster/pipeline-groups", &group)
        .await;
    assert_eq!(first, 201, "{body1}");
    let (second, body2) = c
        .post(leader, "/api/v1/cluster/pipeline-groups", &group)
        .await;
    assert_eq!(second, 200, "{body2}");
    assert_eq!(
        body1["placements"][0]["pipeline_id"],
        body2["placements"][0]["pipeline_id"]
    );
    let groups = c.get(leader, "/api/v1/cluster/pipeline-groups").await;
    assert_eq!(groups["total"], 1);
    assert_eq!(
        groups["groups"][0]["placements"].as_array().map(Vec::len),
        Some(1),
        "no second copy"
    );

    let other =
        json!({"name": "c1", "pipelines": [{"name": "sensor_filter_2", "source": seed_source(2)}]});
    let (status, body) = c
        .post(leader, "/api/v1/cluster/pipeline-groups", &other)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("group_exists")),
        "{body}"
    );

    let replicas =
        json!({"name": "r", "pipelines": [{"name": "p", "source": seed_source(1), "replicas": 2}]});
    let (status, body) = c
        .post(leader, "/api/v1/cluster/pipeline-groups", &replicas)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("unsupported")),
        "{body}"
    );
}

/// A group removed and deployed again under the same name, with another filter: the new
/// placement gets a new epoch (it is marked running, so it would be moved on failure), the
/// worker runs the new source, and events follow the new filter only.
#[tokio::test]
async fn t30_a_group_deployed_again_runs_the_new_source_at_a_new_epoch() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut c = Cluster::new(FAST_DETECTION);
    let (leader, _) = start(&mut c).await;
    c.start_worker("w1", &[leader]);
    c.wait_for(leader, "/api/v1/cluster/workers/w1", "w1 ready", |v| {
        (v["status"] == "ready" && !v["link_coordinator"].is_null()).then_some(())
    })
    .await;
    let hot = seed_source(1);
    let cold = hot.replace("temperature > 50.0", "temperature < 50.0");
    let deploy =
        |source: &str| json!({"name": "g", "pipelines": [{"name": "p1", "source": source}]});
    let (status, body) = c
        .post(leader, "/api/v1/cluster/pipeline-groups", &deploy(&hot))
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, first, _) = c
        .wait_for(leader, "/api/v1/cluster/topology", "p1 running", |v| {
            placement(v, "g", "p1").filter(|p| p.2 == "running")
        })
        .await;
    let removed = c
        .client()
        .delete(format!(
            "{}/api/v1/cluster/pipeline-groups/g",
            c.url(leader)
        ))
        .header("x-api-key", common::API_KEY)
        .send()
        .await
        .expect("DELETE group");
    assert!(removed.status().is_success(), "{}", removed.status());
    let (status, body) = c
        .post(leader, "/api/v1/cluster/pipeline-groups", &deploy(&cold))
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, second, _) = c
        .wait_for(
            leader,
            "/api/v1/cluster/topology",
            "p1 running again",
            |v| placement(v, "g", "p1").filter(|p| p.2 == "running" && p.1 != first),
        )
        .await;
    assert!(second > first, "epoch {second} after {first}: reused");

    // The new filter is in effect: of a hot and a cold event, only the cold one comes out.
    let mut options = MqttOptions::new("test-client-t30", "127.0.0.1", c.broker_port());
    options
        .set_keep_alive(std::time::Duration::from_secs(5))
        .set_credentials(common::MQTT_CLIENT.0, common::MQTT_CLIENT.1);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client
        .subscribe("e2e/output", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    for (seq, temperature) in [(1, 75.0), (2, 25.0)] {
        let payload = json!({"event_type": "SensorReading", "sensor_id": "s", "temperature": temperature, "seq": seq});
        client
            .publish("e2e/input/1", QoS::AtLeastOnce, false, payload.to_string())
            .await
            .expect("publish");
    }
    let first_output = tokio::time::timeout(common::WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    return serde_json::from_slice::<Value>(&p.payload).expect("JSON output")
                }
                Ok(_) => {}
                Err(e) => panic!("MQTT client: {e}"),
            }
        }
    })
    .await
    .expect("an output within the wait bound");
    assert_eq!(
        first_output["seq"], 2,
        "the old filter still runs: {first_output}"
    );
}
