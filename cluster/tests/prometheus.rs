//! A real Prometheus (Debian's `prometheus`, started here on a free loopback port, configured from
//! `grafana/prometheus.yml` with this cluster's addresses) scrapes 3 coordinators and 4 workers:
//! `raft_role` has one series per coordinator and exactly one 2, on the agreed leader; after the
//! leader is killed, role and term follow; every expression of the Grafana dashboard (with
//! `$job`/`$instance` set to "All") evaluates without error and returns data. Also the
//! dashboard's shape (uid, ids, grid, variables) without a cluster.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::prom::debian_binary;
use common::{free_ports, Cluster, WAIT};
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

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn dashboard() -> Value {
    let path = repo_file("grafana/dashboards/varpulis-cluster.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every (panel title, expression) of the dashboard.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("").to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().expect("expr").to_string()))
        })
        .collect()
}

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
            eprintln!("==== prometheus log ====\n{log}");
        }
    }
}

impl Prometheus {
    /// Start on a free port with `grafana/prometheus.yml`, each placeholder target replaced.
    fn start(targets: &[(String, String)]) -> Prometheus {
        let binary = debian_binary("prometheus", "prometheus");
        let mut config = std::fs::read_to_string(repo_file("grafana/prometheus.yml"))
            .expect("grafana/prometheus.yml");
        for (placeholder, address) in targets {
            assert!(
                config.contains(placeholder.as_str()),
                "grafana/prometheus.yml has no target {placeholder}"
            );
            config = config.replace(placeholder.as_str(), address);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, &config).expect("write config");
        let port = free_ports(1)[0];
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    /// An instant query: Ok(result vector), Err(Prometheus's error).
    async fn query(&self, http: &reqwest::Client, expr: &str) -> Result<Vec<Value>, String> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.url)).expect("url");
        url.query_pairs_mut().append_pair("query", expr);
        let body: Value = http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("transport: {e}"))?
            .json()
            .await
            .map_err(|e| format!("body: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Poll `expr` until `check` accepts its result (bounded by [`WAIT`]).
    async fn until<T>(
        &self,
        http: &reqwest::Client,
        expr: &str,
        what: &str,
        check: impl Fn(&[Value]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.query(http, expr).await {
                Ok(result) => {
                    if let Some(t) = check(&result) {
                        return t;
                    }
                    last = serde_json::to_string(&result).unwrap_or_default();
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{what}: not within {WAIT:?} (last answer to {expr}: {last})");
    }
}

fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn instance(sample: &Value) -> &str {
    sample["metric"]["instance"].as_str().unwrap_or("")
}

#[test]
fn t00_dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "varpulis-cluster");
    assert_eq!(d["title"], "Varpulis Cluster Operations");
    assert_eq!(d["schemaVersion"], 39);
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource", "job", "instance"]);
    let panels = d["panels"].as_array().expect("panels");
    let mut ids: Vec<u64> = panels
        .iter()
        .map(|p| p["id"].as_u64().expect("panel id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for p in panels {
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().expect("x"), g["w"].as_u64().expect("w"));
        assert!(
            (1..=24).contains(&w) && x + w <= 24,
            "{}: gridPos {g}",
            p["title"]
        );
        if p["type"] != "row" {
            assert!(
                p["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{}: description",
                p["title"]
            );
            assert!(
                p["fieldConfig"]["defaults"]["unit"].is_string(),
                "{}: unit",
                p["title"]
            );
        }
    }
    for (title, expr) in expressions(&d) {
        assert!(
            expr.contains(r#"job=~"$job",instance=~"$instance""#),
            "{title}: {expr} filters by $job and $instance"
        );
        if expr.contains("rate(") || expr.contains("increase(") {
            assert!(
                expr.contains("[$__rate_interval]"),
                "{title}: {expr} uses $__rate_interval"
            );
        }
    }
    // Panels for the seed's list.
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for t in [
        "Raft role",
        "Raft term",
        "Raft commit index",
        "Workers by status",
        "Workers by status (now)",
        "Pipeline groups",
        "Deployments",
        "Deploy duration (p50, p99)",
        "Migration duration (p50, p99)",
        "Migration rate (success vs failure)",
        "Health sweep duration (p50, p99)",
    ] {
        assert!(titles.contains(&t), "the seed's panel {t:?}");
    }
    let pie = panels
        .iter()
        .find(|p| p["title"] == "Workers by status (now)")
        .expect("pie");
    assert_eq!(pie["type"], "piechart");
}

#[tokio::test]
async fn t10_prometheus_scrapes_the_cluster_and_every_panel_has_data() {
    let mut c = Cluster::new(FAST_DETECTION);
    c.start_broker();
    for id in 1..=3 {
        c.start(id);
    }
    let (first_leader, _) = c.await_leader(&[1, 2, 3], "at start").await;
    for (w, home) in [
        ("worker-1", 1),
        ("worker-2", 1),
        ("worker-3", 2),
        ("worker-4", 3),
    ] {
        let others: Vec<u64> = (1..=3).filter(|&id| id != home).collect();
        c.start_worker(w, &[home, others[0], others[1]]);
    }
    c.wait_for(
        first_leader,
        "/api/v1/cluster/workers",
        "4 workers ready",
        |v| {
            let ws = v["workers"].as_array()?;
            (ws.len() == 4 && ws.iter().all(|w| w["status"] == "ready")).then_some(())
        },
    )
    .await;
    let group = json!({"name": "g", "pipelines": [{"name": "p1", "source": SOURCE}]});
    let (status, body) = c
        .post(first_leader, "/api/v1/cluster/pipeline-groups", &group)
        .await;
    assert_eq!(status, 201, "{body}");

    let address = |url: String| url.trim_start_matches("http://").to_string();
    let mut targets: Vec<(String, String)> = (1..=3)
        .map(|id| (format!("coordinator-{id}:9100"), address(c.url(id))))
        .collect();
    targets.extend((1..=4).map(|n| {
        (
            format!("worker-{n}:9000"),
            address(c.worker_url(&format!("worker-{n}"))),
        )
    }));
    let prometheus = Prometheus::start(&targets);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let started = Instant::now();
    prometheus
        .until(&http, "sum(up)", "all 7 targets up", |r| {
            (r.len() == 1 && value(&r[0]) == 7.0).then_some(())
        })
        .await;
    println!(
        "Prometheus: all 7 targets up {:?} after start",
        started.elapsed()
    );

    tracing::info!("raft_role: 3 series, exactly one 2, on the agreed leader");
    // Compared with the leader agreed just before (a leader change under a loaded CI box's fast
    // timings is possible, and Prometheus's samples are up to a scrape old: look again then).
    let mut attempts = 0;
    let (leader, term, roles) = loop {
        let agreed = c.await_leader(&[1, 2, 3], "before the query").await;
        let roles = prometheus
            .until(
                &http,
                "varpulis_cluster_raft_role",
                "3 raft_role series, one of them 2",
                |r| {
                    (r.len() == 3 && r.iter().filter(|s| value(s) == 2.0).count() == 1)
                        .then(|| r.to_vec())
                },
            )
            .await;
        attempts += 1;
        let on_agreed = roles
            .iter()
            .any(|s| value(s) == 2.0 && instance(s) == address(c.url(agreed.0)));
        if on_agreed || attempts == 5 {
            break (agreed.0, agreed.1, roles);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let leader_address = address(c.url(leader));
    let leaders: Vec<&str> = roles
        .iter()
        .filter(|s| value(s) == 2.0)
        .map(instance)
        .collect();
    assert_eq!(
        leaders,
        [leader_address.as_str()],
        "role 2 only on coordinator-{leader}: {roles:?}"
    );
    println!("query varpulis_cluster_raft_role → {}", summary(&roles));

    tracing::info!("kill the leader: role and term follow");
    c.kill(leader);
    let rest: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let (new_leader, new_term) = c.await_leader(&rest, "after killing the leader").await;
    assert!(new_term > term);
    let new_address = address(c.url(new_leader));
    let roles = prometheus
        .until(
            &http,
            "varpulis_cluster_raft_role",
            "the new leader's role 2, the dead one gone",
            |r| {
                let twos: Vec<&str> = r.iter().filter(|s| value(s) == 2.0).map(instance).collect();
                (r.len() == 2 && twos == [new_address.as_str()]).then(|| r.to_vec())
            },
        )
        .await;
    println!(
        "after kill: varpulis_cluster_raft_role → {}",
        summary(&roles)
    );
    let expr = format!("varpulis_cluster_raft_term{{instance=\"{new_address}\"}}");
    prometheus
        .until(&http, &expr, "the new term", |r| {
            (r.len() == 1 && value(&r[0]) == new_term as f64).then_some(())
        })
        .await;
    let up = prometheus
        .query(&http, &format!("up{{instance=\"{leader_address}\"}}"))
        .await
        .expect("up");
    assert_eq!(up.len(), 1);
    assert_eq!(value(&up[0]), 0.0, "the killed leader is down");

    tracing::info!("kill p1's worker: a migration for the migration panels");
    let host = c
        .wait_for(new_leader, "/api/v1/cluster/topology", "p1 running", |v| {
            let p = &v["groups"][0]["pipelines"][0];
            (p["status"] == "running").then(|| p["worker_id"].as_str().map(String::from))?
        })
        .await;
    c.kill_worker(&host);
    let expr = "sum(varpulis_cluster_migrations_total{result=\"success\"})";
    prometheus
        .until(
            &http,
            expr,
            "the migration counted by both live coordinators",
            |r| (r.len() == 1 && value(&r[0]) == 2.0).then_some(()),
        )
        .await;

    tracing::info!("every dashboard expression evaluates and returns data");
    let d = dashboard();
    for (title, expr) in expressions(&d) {
        // Grafana's "All" for both variables (allValue ".+") and $__rate_interval at a 1 s
        // scrape: max(interval + scrape, 4 × scrape) = 4 s.
        let q = expr
            .replace("$job", ".+")
            .replace("$instance", ".+")
            .replace("$__rate_interval", "4s");
        if let Err(e) = prometheus.query(&http, &q).await {
            panic!("panel {title:?}: {q} failed: {e}");
        }
        // A rate needs two scrapes of a series that may have just appeared: poll, bounded.
        let n = prometheus
            .until(&http, &q, &format!("panel {title:?} has data"), |r| {
                (!r.is_empty()).then_some(r.len())
            })
            .await;
        println!("panel {title:?}: {q} → {n} series");
    }
}

fn summary(samples: &[Value]) -> String {
    samples
        .iter()
        .map(|s| format!("{}={}", instance(s), value(s)))
        .collect::<Vec<_>>()
        .join(", ")
}
