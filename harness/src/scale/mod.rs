//! `harness scale`: how cost grows. Each point of each curve is a whole harness run of its own
//! (this binary again, as a child process) on a fresh cluster of the point's shape, with
//! `--repeat` trials; its `run.json` is read back and its figures set against the size. The
//! result (`scale.json`) renders to `scaling.md`, `scaling.csv` and one plot per curve
//! ([`render`]), a pure function of it.
//!
//! Curves ([`Curve`]):
//! - `pipelines`: phase 3 (worker failover) with the killed worker hosting N pipelines: two
//!   workers and 2N pipelines, so deploy puts N on each (least loaded first), and the survivor
//!   takes the victim's N;
//! - `workers`: phase 3 at W workers with W pipelines (one each: the killed worker hosts one);
//! - `election`: `election-after-log` (phases/election-after-log.toml) after 0, 10 k and 100 k
//!   committed entries;
//! - `suite`: `--phases all` at W workers.

pub mod render;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::record::{RunData, Status};

/// `harness scale` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Curves to run, comma-separated: pipelines, workers, election, suite (default: all four).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pipelines,workers,election,suite"
    )]
    pub curves: Vec<Curve>,
    /// Trials per point (each point is a fresh cluster; setup runs once per point).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    /// Pipelines hosted by the killed worker, one point each (`pipelines` curve).
    #[arg(long, value_delimiter = ',', default_value = "3,30,300")]
    pub hosted: Vec<u32>,
    /// Workers, one point each (`workers` and `suite` curves).
    #[arg(long, value_delimiter = ',', default_value = "4,8,16")]
    pub workers: Vec<u32>,
    /// Entries committed before the leader is killed, one point each (`election` curve; 0 is
    /// the empty log the target is set against).
    #[arg(long, value_delimiter = ',', default_value = "0,10000,100000")]
    pub entries: Vec<u64>,
    /// Reports directory: the scale run writes <out>/runs/scale-<time>/ (each point's own run
    /// under its points/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Passed to every point's run.
    #[arg(long, default_value = "process")]
    pub backend: String,
    #[arg(long)]
    pub cluster_bin: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    #[arg(long, default_value_t = 300)]
    pub election_min_ms: u64,
    #[arg(long, default_value_t = 600)]
    pub election_max_ms: u64,
    #[arg(long, default_value_t = 1000)]
    pub grace_ms: u64,
    #[arg(long, default_value_t = 100)]
    pub ping_interval_ms: u64,
    #[arg(long, default_value_t = 300)]
    pub ping_dead_ms: u64,
    /// Leave out the throughput ramp (`harness bench`, run once after the curves, process
    /// backend only; its section of scaling.md then says it was not run).
    #[arg(long)]
    pub no_throughput: bool,
}

/// One scaling curve.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Curve {
    /// failover_ms and detection_ms against the pipelines the killed worker hosts.
    Pipelines,
    /// detection_ms and failover_ms against the number of workers.
    Workers,
    /// election_ms against committed entries.
    Election,
    /// The whole suite's time against the number of workers.
    Suite,
}

impl Curve {
    pub fn name(self) -> &'static str {
        match self {
            Curve::Pipelines => "pipelines",
            Curve::Workers => "workers",
            Curve::Election => "election",
            Curve::Suite => "suite",
        }
    }
}

/// What one point runs: the phases and the cluster's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointSpec {
    pub curve: Curve,
    /// The size on the curve's x axis.
    pub size: u64,
    pub phases: String,
    pub workers: u32,
    pub pipelines: u32,
    pub fill_entries: Option<u64>,
    pub repeat: u32,
}

/// The points of the curves asked for, in order.
pub fn points(a: &ScaleArgs) -> Vec<PointSpec> {
    let mut curves = a.curves.clone();
    curves.sort();
    curves.dedup();
    let mut out = Vec::new();
    for curve in curves {
        let p =
            |size: u64, phases: &str, workers: u32, pipelines: u32, fill: Option<u64>| PointSpec {
                curve,
                size,
                phases: phases.into(),
                workers,
                pipelines,
                fill_entries: fill,
                repeat: a.repeat,
            };
        match curve {
            Curve::Pipelines => out.extend(
                a.hosted
                    .iter()
                    .map(|&n| p(n.into(), "worker-failover", 2, 2 * n, None)),
            ),
            Curve::Workers => out.extend(
                a.workers
                    .iter()
                    .map(|&w| p(w.into(), "worker-failover", w, w, None)),
            ),
            Curve::Election => out.extend(a.entries.iter().map(|&n| {
                p(
                    n,
                    "election-after-log",
                    crate::topology::SEED_WORKERS,
                    crate::topology::SEED_PIPELINES,
                    Some(n),
                )
            })),
            Curve::Suite => out.extend(a.workers.iter().map(|&w| PointSpec {
                repeat: 1,
                ..p(w.into(), "all", w, crate::topology::SEED_PIPELINES, None)
            })),
        }
    }
    out
}

/// What one point measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub spec: PointSpec,
    /// Samples (ms) by figure name (`failover_ms`, `election_ms`, `suite_s` in s, …), in trial
    /// order, from the trials of the point's own phase.
    pub figures: BTreeMap<String, Vec<f64>>,
    /// Trials of the point's phases that passed, of all its trials (setup included).
    pub passed: u32,
    pub trials: u32,
    /// The first failed trial's error, if any.
    pub error: Option<String>,
    /// Wall time of the whole point (cluster start to shutdown), s.
    pub wall_s: f64,
    /// The point's run directory, relative to the scale run's.
    pub run_dir: String,
}

/// Everything `scaling.md` is drawn from (`scale.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleData {
    pub started_at: String,
    pub command: String,
    pub timings: Timings,
    pub cpu_cores: usize,
    pub points: Vec<Point>,
    /// `harness bench`'s report (its `to_markdown()`, headings one level down, links into its
    /// run dir), or why there is none.
    #[serde(default)]
    pub throughput: Option<String>,
}

/// The timing flags every point ran with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub grace_ms: u64,
    pub ping_interval_ms: u64,
    pub ping_dead_ms: u64,
}

impl Timings {
    fn flags(&self) -> Vec<String> {
        [
            ("--heartbeat-ms", self.heartbeat_ms),
            ("--election-min-ms", self.election_min_ms),
            ("--election-max-ms", self.election_max_ms),
            ("--grace-ms", self.grace_ms),
            ("--ping-interval-ms", self.ping_interval_ms),
            ("--ping-dead-ms", self.ping_dead_ms),
        ]
        .iter()
        .flat_map(|(f, v)| [f.to_string(), v.to_string()])
        .collect()
    }
}

/// The figures of one point's run: every sample of the point's own phase (setup's are not the
/// curve's), plus `suite_s` (the sum of all trials' durations) for a suite point.
pub fn figures_of(spec: &PointSpec, data: &RunData) -> BTreeMap<String, Vec<f64>> {
    let mut figures: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    if spec.curve == Curve::Suite {
        let total_us: u64 = data.trials.iter().map(|t| t.duration_us).sum();
        figures.insert("suite_s".into(), vec![total_us as f64 / 1e6]);
        return figures;
    }
    for t in data.trials.iter().filter(|t| t.slug == spec.phases) {
        for s in &t.samples {
            figures
                .entry(s.name.clone())
                .or_default()
                .push(s.value_us as f64 / 1000.0);
        }
    }
    figures
}

/// `harness scale`: run every point, then write the reports. Exit code: 0 when every trial
/// passed, 1 when some failed (the figures measured are still reported), 4 on a harness error.
pub fn main(args: &ScaleArgs, root: &Path) -> ExitCode {
    match run(args, root) {
        Ok((dir, data)) => {
            println!("scaling report: {}", dir.join(render::MARKDOWN).display());
            let all_passed = data.points.iter().all(|p| p.passed == p.trials);
            ExitCode::from(if all_passed {
                crate::exit::PASS
            } else {
                crate::exit::PHASE_FAILED
            })
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(crate::exit::HARNESS_ERROR)
        }
    }
}

fn run(args: &ScaleArgs, root: &Path) -> anyhow::Result<(PathBuf, ScaleData)> {
    let specs = points(args);
    if specs.is_empty() {
        bail!("no point to run: --curves names none");
    }
    let out = args.out.clone().unwrap_or_else(|| root.join("reports"));
    let now = jiff::Zoned::now();
    let dir = out
        .join("runs")
        .join(format!("scale-{}", now.strftime("%Y%m%d-%H%M%S")));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let timings = Timings {
        heartbeat_ms: args.heartbeat_ms,
        election_min_ms: args.election_min_ms,
        election_max_ms: args.election_max_ms,
        grace_ms: args.grace_ms,
        ping_interval_ms: args.ping_interval_ms,
        ping_dead_ms: args.ping_dead_ms,
    };
    let mut data = ScaleData {
        started_at: now.timestamp().to_string(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        timings,
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        points: Vec::new(),
        throughput: None,
    };
    let exe = std::env::current_exe().context("locate the harness binary")?;
    for (i, spec) in specs.iter().enumerate() {
        eprintln!(
            "harness scale: point {}/{}: {} = {} ({} workers, {} pipelines, phases {}{}, {} trial(s))",
            i + 1,
            specs.len(),
            spec.curve.name(),
            spec.size,
            spec.workers,
            spec.pipelines,
            spec.phases,
            spec.fill_entries
                .map_or(String::new(), |n| format!(", {n} entries")),
            spec.repeat
        );
        let point = run_point(&exe, args, &timings, spec, &dir, root)?;
        eprintln!(
            "harness scale: {} passed of {}, {:.0} s: {}",
            point.passed,
            point.trials,
            point.wall_s,
            render::point_summary(&point)
        );
        data.points.push(point);
        // Written after each point, so an interrupted scale run keeps what it measured.
        render::write_all(&dir, &data)?;
    }
    data.throughput = Some(if args.no_throughput {
        "Not run (`--no-throughput`).".to_string()
    } else if args.backend != "process" {
        format!(
            "Not run: `harness bench` measures on the process backend, this scale run is on `{}`.",
            args.backend
        )
    } else {
        eprintln!("harness scale: throughput ramp (harness bench)");
        run_bench(&exe, args, &timings, &dir, root)?
    });
    render::write_all(&dir, &data)?;
    Ok((dir, data))
}

/// `harness bench` as a child (same binary, same Raft timings) into `points/throughput/`, its
/// report read back for scaling.md.
fn run_bench(
    exe: &Path,
    args: &ScaleArgs,
    timings: &Timings,
    dir: &Path,
    root: &Path,
) -> anyhow::Result<String> {
    let out = dir.join("points/throughput");
    let mut cmd = std::process::Command::new(exe);
    cmd.current_dir(root)
        .arg("bench")
        .args(["--heartbeat-ms", &timings.heartbeat_ms.to_string()])
        .args(["--election-min-ms", &timings.election_min_ms.to_string()])
        .args(["--election-max-ms", &timings.election_max_ms.to_string()])
        .arg("--out")
        .arg(&out);
    if let Some(bin) = &args.cluster_bin {
        cmd.arg("--cluster-bin").arg(bin);
    }
    cmd.stdout(std::process::Stdio::from(std::io::stderr()));
    let status = cmd
        .status()
        .with_context(|| format!("run {} bench", exe.display()))?;
    let runs = out.join("runs");
    let run_dir = std::fs::read_dir(&runs)
        .with_context(|| format!("harness bench exited with {status} and left no run"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("throughput.json").is_file())
        .with_context(|| format!("harness bench exited with {status}: no throughput.json"))?;
    let throughput = crate::bench::Throughput::load(&run_dir)?;
    let rel = run_dir
        .strip_prefix(dir)
        .unwrap_or(&run_dir)
        .display()
        .to_string();
    Ok(render::nest_throughput(&throughput.to_markdown(), &rel))
}

/// A failover moves every pipeline of the killed worker onto the others, and the restarted
/// worker gets none back: a second trial on the same cluster would kill a worker hosting more
/// than the point's size (all 2N pipelines on the pipelines curve). So the failover curves run
/// each trial on a fresh cluster; the election curve's trials share one (the log only grows).
fn fresh_cluster_per_trial(curve: Curve) -> bool {
    matches!(curve, Curve::Pipelines | Curve::Workers)
}

/// The child runs of a point, as (trials, directory relative to the scale run's): one run with
/// all its trials, or one run per trial (see [`fresh_cluster_per_trial`]), each into its own
/// directory under the point's.
pub fn child_runs(spec: &PointSpec) -> Vec<(u32, String)> {
    let rel = format!("points/{}-{}", spec.curve.name(), spec.size);
    if !fresh_cluster_per_trial(spec.curve) {
        return vec![(spec.repeat, rel)];
    }
    (1..=spec.repeat)
        .map(|trial| (1, format!("{rel}/trial-{trial}")))
        .collect()
}

/// Runs a point's child runs ([`child_runs`]) and puts their figures together.
fn run_point(
    exe: &Path,
    args: &ScaleArgs,
    timings: &Timings,
    spec: &PointSpec,
    dir: &Path,
    root: &Path,
) -> anyhow::Result<Point> {
    let child = Child {
        exe,
        args,
        timings,
        dir,
        root,
    };
    let runs = child_runs(spec);
    if let [(repeat, rel)] = runs.as_slice() {
        return child.run(spec, *repeat, rel);
    }
    let started = Instant::now();
    let mut point: Option<Point> = None;
    for (repeat, rel) in &runs {
        let one = child.run(spec, *repeat, rel)?;
        point = Some(match point {
            None => one,
            Some(mut p) => {
                for (name, samples) in one.figures {
                    p.figures.entry(name).or_default().extend(samples);
                }
                p.passed += one.passed;
                p.trials += one.trials;
                p.error = p.error.or(one.error);
                p
            }
        });
    }
    let mut point = point.context("a point runs at least one trial")?;
    point.wall_s = started.elapsed().as_secs_f64();
    point.run_dir = format!("points/{}-{}", spec.curve.name(), spec.size);
    Ok(point)
}

/// What every child run of a scale run shares.
struct Child<'a> {
    exe: &'a Path,
    args: &'a ScaleArgs,
    timings: &'a Timings,
    /// The scale run's directory.
    dir: &'a Path,
    root: &'a Path,
}

impl Child<'_> {
    /// One child harness run of `spec`'s phases with `repeat` trials, into `dir/rel`.
    fn run(&self, spec: &PointSpec, repeat: u32, rel: &str) -> anyhow::Result<Point> {
        let Child {
            exe,
            args,
            timings,
            dir,
            root,
        } = *self;
        let point_out = dir.join(rel);
        let mut cmd = std::process::Command::new(exe);
        cmd.current_dir(root)
            .args(["--phases", &spec.phases])
            .args(["--repeat", &repeat.to_string()])
            .args(["--workers", &spec.workers.to_string()])
            .args(["--pipelines", &spec.pipelines.to_string()])
            .args(["--backend", &args.backend])
            .arg("--out")
            .arg(&point_out)
            .args(timings.flags());
        if let Some(n) = spec.fill_entries {
            cmd.args(["--fill-entries", &n.to_string()]);
        }
        if let Some(bin) = &args.cluster_bin {
            cmd.arg("--cluster-bin").arg(bin);
        }
        // The child's results block goes to our stderr: stdout stays the scale run's own.
        cmd.stdout(std::process::Stdio::from(std::io::stderr()));
        let started = Instant::now();
        let status = cmd
            .status()
            .with_context(|| format!("run {}", exe.display()))?;
        let wall_s = started.elapsed().as_secs_f64();
        let run_dir = only_run_dir(&point_out.join("runs")).with_context(|| {
            format!("point {rel}: the harness exited with {status} and left no run")
        })?;
        let path = run_dir.join(crate::report::RUN_DATA);
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let run: RunData =
            serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))?;
        let rel_run = run_dir
            .strip_prefix(dir)
            .unwrap_or(&run_dir)
            .display()
            .to_string();
        Ok(Point {
            spec: spec.clone(),
            figures: figures_of(spec, &run),
            passed: run
                .trials
                .iter()
                .filter(|t| t.status == Status::Pass)
                .count() as u32,
            trials: run.trials.len() as u32,
            error: run.trials.iter().find_map(|t| t.error.clone()),
            wall_s,
            run_dir: rel_run,
        })
    }
}

/// The one run directory under `runs` (a point's own `--out`).
fn only_run_dir(runs: &Path) -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs)
        .with_context(|| format!("read {}", runs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(crate::report::RUN_DATA).is_file())
        .collect();
    dirs.sort();
    dirs.pop()
        .with_context(|| format!("no run.json under {}", runs.display()))
}

#[cfg(test)]
mod tests;
