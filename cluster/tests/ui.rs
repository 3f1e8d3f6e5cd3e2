//! The `/cluster` page in a real browser (Debian's chromium, headless, over the DevTools
//! protocol): served by a follower, it shows 3 coordinators with exactly one Leader, the one the
//! cluster agrees on, and 4 ready workers; after the leader is killed the same page (no reload)
//! shows the new leader within a few seconds. Screenshots are kept under
//! `target/observability/` (paths printed).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::Cluster;
use serde_json::{json, Value};

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

const SOURCE: &str = "event SensorReading { sensor_id: str, temperature: float, seq: int }\n\
stream Input = SensorReading.from(mqtt_1, topic: \"e2e/input/1\")\n\
stream HighTemp = Input.where(temperature > 50.0)\n\
stream Output = HighTemp.to(mqtt_1, topic: \"e2e/output\")\n";

/// "A few seconds": the page refreshes every second and the election takes well under one with
/// the tests' Raft timings; this bounds both on a loaded 2-core CI box.
const SHOWS_NEW_LEADER_WITHIN: Duration = Duration::from_secs(5);

/// What the page shows, read from its DOM.
/// (Before the page has loaded: `null`.)
const READ_PAGE: &str = r##"!document.getElementById("leader") ? "null" : JSON.stringify({
  refreshed: document.body.dataset.refreshed || null,
  leader: document.getElementById("leader").dataset.leader,
  coordinators: [...document.querySelectorAll("#raft tr[data-coordinator]")]
    .map((r) => ({ id: Number(r.dataset.coordinator), role: r.dataset.role })),
  workers: [...document.querySelectorAll("#worker-chips [data-worker-status]")]
    .map((w) => ({ id: w.dataset.worker, status: w.dataset.workerStatus })),
  worker_rows: document.querySelectorAll("#worker-rows tr").length,
  pipeline_rows: document.querySelectorAll("#pipeline-rows tr[data-pipeline]").length,
  ready: document.getElementById("n-ready").textContent,
  migrations: document.getElementById("n-migrations").textContent,
  migration_rows: [...document.querySelectorAll("#migrations tr[data-migration]")]
    .map((r) => r.dataset.migration),
})"##;

#[derive(Debug)]
struct Shown {
    leaders: Vec<u64>,
    coordinators: usize,
    ready_workers: usize,
    raw: Value,
}

async fn read(browser: &mut Browser) -> Shown {
    let text = browser.eval(READ_PAGE).await;
    let raw: Value = serde_json::from_str(text.as_str().expect("page state")).expect("page JSON");
    let coordinators = raw["coordinators"].as_array().cloned().unwrap_or_default();
    Shown {
        leaders: coordinators
            .iter()
            .filter(|c| c["role"] == "Leader")
            .filter_map(|c| c["id"].as_u64())
            .collect(),
        coordinators: coordinators.len(),
        ready_workers: raw["workers"]
            .as_array()
            .map_or(0, |ws| ws.iter().filter(|w| w["status"] == "ready").count()),
        raw,
    }
}

/// Poll the page until `check` accepts what it shows, within `bound`.
async fn until(
    browser: &mut Browser,
    bound: Duration,
    what: &str,
    check: impl Fn(&Shown) -> bool,
) -> Shown {
    let deadline = Instant::now() + bound;
    loop {
        let shown = read(browser).await;
        if check(&shown) {
            return shown;
        }
        if Instant::now() >= deadline {
            panic!(
                "the page did not show {what} within {bound:?}; it shows {}",
                shown.raw
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/observability")
        .join(name)
}

#[tokio::test]
async fn t10_cluster_page_shows_the_leader_and_follows_a_leader_kill() {
    let mut c = Cluster::new(FAST_DETECTION);
    c.start_broker();
    for id in 1..=3 {
        c.start(id);
    }
    let (leader, _) = c.await_leader(&[1, 2, 3], "at start").await;
    for (w, home) in [
        ("worker-1", 1),
        ("worker-2", 1),
        ("worker-3", 2),
        ("worker-4", 3),
    ] {
        let others: Vec<u64> = (1..=3).filter(|&id| id != home).collect();
        c.start_worker(w, &[home, others[0], others[1]]);
    }
    c.wait_for(leader, "/api/v1/cluster/workers", "4 workers ready", |v| {
        let ws = v["workers"].as_array()?;
        (ws.len() == 4 && ws.iter().all(|w| w["status"] == "ready")).then_some(())
    })
    .await;
    let group = json!({"name": "sensors", "pipelines": [
        {"name": "filter_1", "source": SOURCE},
        {"name": "filter_2", "source": SOURCE.replace("input/1", "input/2")},
    ]});
    let (status, body) = c
        .post(leader, "/api/v1/cluster/pipeline-groups", &group)
        .await;
    assert_eq!(status, 201, "{body}");

    // Served by a follower (followers serve the page too), which survives the leader's kill.
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    // The read key in the fragment: the page keeps it in sessionStorage and sends it on each read.
    let url = format!("{}/cluster#key={}", c.url(follower), common::READ_KEY);
    let opened = Instant::now();
    let mut browser = Browser::open(&url).await;
    until(
        &mut browser,
        Duration::from_secs(20),
        "3 coordinators, one Leader, 4 ready workers",
        |s| {
            s.coordinators == 3
                && s.leaders.len() == 1
                && s.ready_workers == 4
                && s.raw["pipeline_rows"] == 2
        },
    )
    .await;
    println!(
        "chromium showed the cluster {:?} after it was started on {url}",
        opened.elapsed()
    );
    // The page's Leader is the one the cluster agrees on now (a leader change under a loaded
    // CI box's fast timings is possible: the page then follows within a refresh or two).
    let (leader, _) = c.await_leader(&[1, 2, 3], "with the page open").await;
    assert_ne!(
        leader, follower,
        "leadership moved to the page's own coordinator; the kill below would take the page down"
    );
    let shown = until(
        &mut browser,
        SHOWS_NEW_LEADER_WITHIN,
        "the agreed leader",
        |s| s.leaders == [leader] && s.coordinators == 3 && s.ready_workers == 4,
    )
    .await;
    assert_eq!(shown.raw["leader"], leader.to_string());
    assert_eq!(shown.raw["ready"], "4");
    assert_eq!(shown.raw["worker_rows"], 4, "Workers tab");
    let before = artifact("cluster-health.png");
    browser.screenshot(&before).await;
    println!("screenshot: {}", before.display());

    tracing::info!("kill the leader: the open page shows the new one");
    c.kill(leader);
    let killed = Instant::now();
    let rest: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let shown = until(&mut browser, SHOWS_NEW_LEADER_WITHIN, "a new leader", |s| {
        s.leaders.len() == 1 && s.leaders[0] != leader && s.coordinators == 3
    })
    .await;
    println!(
        "the page showed the new leader {:?} after the kill",
        killed.elapsed()
    );
    let (new_leader, _) = c.await_leader(&rest, "after killing the leader").await;
    assert_eq!(
        shown.leaders,
        [new_leader],
        "the page's new Leader is the agreed one"
    );
    let roles: Vec<(u64, String)> = shown.raw["coordinators"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["id"].as_u64().unwrap_or(0),
                r["role"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        roles.contains(&(leader, "Unreachable".to_string())),
        "the killed leader shows as unreachable: {roles:?}"
    );
    let after = artifact("cluster-health-after-leader-kill.png");
    browser.screenshot(&after).await;
    println!("screenshot: {}", after.display());

    tracing::info!("kill filter_1's worker: the page counts and lists the migration");
    let host = c
        .wait_for(
            new_leader,
            "/api/v1/cluster/topology",
            "filter_1 placed",
            |v| {
                v["groups"][0]["pipelines"]
                    .as_array()?
                    .iter()
                    .find(|p| p["name"] == "filter_1")?["worker_id"]
                    .as_str()
                    .map(String::from)
            },
        )
        .await;
    c.kill_worker(&host);
    let shown = until(
        &mut browser,
        Duration::from_secs(20),
        "the migration",
        |s| {
            s.raw["migrations"] == "1"
                && s.raw["migration_rows"] == json!(["completed"])
                && s.ready_workers == 3
        },
    )
    .await;
    println!("the page shows: {}", shown.raw);
    let migrated = artifact("cluster-health-after-worker-kill.png");
    browser.screenshot(&migrated).await;
    println!("screenshot: {}", migrated.display());
}
