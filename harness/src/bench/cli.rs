//! `harness bench`: stand the cluster up on the process backend (the setup phase, as a run
//! does), ramp the broker path and then the pipeline path, measure each at 50 % and 90 % of its
//! ceiling, and write `throughput.md`, `throughput.csv`, `throughput-cpu.csv`,
//! `throughput.json` and `plots/throughput.{png,svg}` into `<out>/runs/<run-id>/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::drive::{PathRig, Purpose, Route, StepRecord, StepSettings};
use super::procfs::{Sampler, HARNESS, MACHINE};
use super::ramp::Ramp;
use super::{BenchConfig, Ceiling, Throughput};
use crate::backend::process::{locate_cluster_bin, ProcessBackend};
use crate::backend::{Backend, ClusterSpec, DetectorTimings, NodeName, RaftTimings};
use crate::exit;
use crate::phase::{self, Capabilities};
use crate::probe::Probe;
use crate::record::Status;
use crate::runner::{Runner, RunnerOptions};

/// First seq of the bench's events: far above the setup's warm-up, so no late copy of those
/// is ever taken for a bench event.
const FIRST_SEQ: u64 = 1_000_000_000;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Length of each step (ms): the paced run whose offered and delivered rates are measured.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(200..=60_000))]
    pub step_ms: u64,
    /// First rate of each ramp (events/s); rates double from it until a step fails.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub start_rate: u32,
    /// Highest rate tried (events/s): a path sustaining it has a ceiling of at least this.
    #[arg(long, default_value_t = 256_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rate: u32,
    /// Bisections between the highest sustained and the lowest failed rate.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub bisections: u32,
    /// A step whose p99 end-to-end latency exceeds this (ms) is not sustained.
    #[arg(long, default_value_t = 100)]
    pub latency_bound_ms: u64,
    /// Longest wait after a step for its events still on their way (ms), so the next step starts
    /// without a backlog.
    #[arg(long, default_value_t = 10_000)]
    pub tail_ms: u64,
    /// Seed for the run's id and its API key.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Reports directory (the bench writes <out>/runs/<run-id>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Directory of phase files (the setup phase stands the cluster up).
    #[arg(long)]
    pub phases_dir: Option<PathBuf>,
    /// The `cluster` binary (default: built by cargo, or next to the harness).
    #[arg(long, env = "HARNESS_CLUSTER_BIN")]
    pub cluster_bin: Option<PathBuf>,
    /// Raft heartbeat of the coordinators (ms), as for a run.
    #[arg(long, default_value_t = RaftTimings::SEED.heartbeat_ms)]
    pub heartbeat_ms: u64,
    /// Raft election timeout, lower end (ms).
    #[arg(long, default_value_t = RaftTimings::SEED.election_min_ms)]
    pub election_min_ms: u64,
    /// Raft election timeout, upper end (ms).
    #[arg(long, default_value_t = RaftTimings::SEED.election_max_ms)]
    pub election_max_ms: u64,
    #[command(flatten)]
    pub cluster: crate::topology::ClusterArgs,
}

/// What in the flags `harness bench` refuses before anything starts.
pub fn refused(args: &BenchArgs) -> Option<String> {
    if args.cluster.profile.is_some() {
        return Some("harness bench drives the reference cluster only (no --profile)".into());
    }
    if !(0 < args.heartbeat_ms
        && args.heartbeat_ms < args.election_min_ms
        && args.election_min_ms < args.election_max_ms)
    {
        return Some(
            "Raft timings must satisfy 0 < --heartbeat-ms < --election-min-ms < --election-max-ms"
                .into(),
        );
    }
    None
}

/// `harness bench`: runs it on a runtime of its own; the exit code (2 for refused flags).
pub fn main(args: &BenchArgs, root: &Path) -> ExitCode {
    if let Some(why) = refused(args) {
        eprintln!("error: {why}; nothing was started");
        return ExitCode::from(exit::INVALID_INPUT);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start runtime: {e}");
            return ExitCode::from(exit::HARNESS_ERROR);
        }
    };
    match runtime.block_on(run(args, root)) {
        Ok((t, dir)) => {
            println!(
                "broker ceiling {} events/s, pipelines {} input events/s, ratio {}",
                t.broker
                    .sustained_per_s
                    .map_or("none".into(), |r| r.to_string()),
                t.pipelines
                    .sustained_per_s
                    .map_or("none".into(), |r| r.to_string()),
                t.ratio().map_or("n/a".into(), |r| format!("{r:.2}")),
            );
            println!("report: {}", dir.join("throughput.md").display());
            ExitCode::from(exit::PASS)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::HARNESS_ERROR)
        }
    }
}

fn reproduce(args: &BenchArgs, seed: u64) -> String {
    let mut cmd = format!(
        "cargo run -p harness -- bench --seed {seed} --step-ms {} --start-rate {} --max-rate {} \
         --bisections {} --latency-bound-ms {} --tail-ms {}",
        args.step_ms,
        args.start_rate,
        args.max_rate,
        args.bisections,
        args.latency_bound_ms,
        args.tail_ms
    );
    if (
        args.heartbeat_ms,
        args.election_min_ms,
        args.election_max_ms,
    ) != (
        RaftTimings::SEED.heartbeat_ms,
        RaftTimings::SEED.election_min_ms,
        RaftTimings::SEED.election_max_ms,
    ) {
        cmd += &format!(
            " --heartbeat-ms {} --election-min-ms {} --election-max-ms {}",
            args.heartbeat_ms, args.election_min_ms, args.election_max_ms
        );
    }
    cmd + &args.cluster.reproduce()
}

/// Stand the cluster up, ramp both paths, write the reports; the result and the run dir.
pub async fn run(args: &BenchArgs, root: &Path) -> anyhow::Result<(Throughput, PathBuf)> {
    if let Some(why) = refused(args) {
        bail!("{why}");
    }
    let raft = RaftTimings {
        heartbeat_ms: args.heartbeat_ms,
        election_min_ms: args.election_min_ms,
        election_max_ms: args.election_max_ms,
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let out = args.out.clone().unwrap_or_else(|| root.join("reports"));
    let phases_dir = args
        .phases_dir
        .clone()
        .unwrap_or_else(|| root.join("phases"));
    let spec = ClusterSpec {
        coordinators: args.cluster.coordinators,
        workers: args.cluster.workers,
        pipelines: args.cluster.pipelines,
        raft,
        detector: DetectorTimings::SEED,
        api_key: None,
        peer_key: None,
        worker_secret: None,
        insecure: false,
        mqtt_logins: None,
        mqtt_url: args.cluster.mqtt_url.clone(),
    }
    .with_keys(false);
    let caps = Capabilities {
        backend: "process",
        coordinators: spec.coordinators,
        workers: spec.workers,
        broker: true,
        faults: crate::step::Fault::ALL.to_vec(),
    };
    let phases = phase::load_dir(&phases_dir, &caps).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("phase files: {}", lines.join("; "))
    })?;
    let plan = phase::plan(&phases, "setup", 1).map_err(anyhow::Error::msg)?;
    crate::traffic::ledger::set_pipeline_count(u64::from(spec.pipelines));

    let now = jiff::Zoned::now();
    let id = format!(
        "{}-bench-{:04x}",
        now.strftime("%Y%m%d-%H%M%S"),
        seed & 0xffff
    );
    let (run_id, dir) = crate::backend::ownership::claim_run_dir(&out, &id)?;
    let command = reproduce(args, seed);
    eprintln!("harness bench: run {run_id}; reproduce with: {command}");
    let bin = locate_cluster_bin(args.cluster_bin.clone())?;
    let backend = ProcessBackend::new(bin, &dir, spec.clone())?;
    let mut runner = Runner::new(backend, RunnerOptions::for_raft(seed, raft.election_max_ms))?;
    let result = measure(args, &mut runner, &phases, &plan, &spec, seed).await;
    if let Err(e) = runner.shutdown().await {
        tracing::warn!("shutdown: {e:#}");
    }
    let (config, steps, ceilings, series) = result?;
    let t = Throughput {
        run_id,
        command,
        started_at: now.timestamp().to_string(),
        config,
        steps,
        broker: ceilings.0,
        pipelines: ceilings.1,
        series,
    };
    write(&dir, &t)?;
    Ok((t, dir))
}

/// Write every report file of `t` into `dir`.
pub fn write(dir: &Path, t: &Throughput) -> anyhow::Result<()> {
    std::fs::write(dir.join("throughput.md"), t.to_markdown())?;
    t.write_steps_csv(&dir.join("throughput.csv"))?;
    t.write_cpu_csv(&dir.join("throughput-cpu.csv"))?;
    std::fs::write(
        dir.join("throughput.json"),
        serde_json::to_string_pretty(t)?,
    )?;
    super::plot::write(dir, t).context("plot")?;
    Ok(())
}

type Measured = (
    BenchConfig,
    Vec<StepRecord>,
    (Ceiling, Ceiling),
    Vec<super::procfs::Snapshot>,
);

async fn measure(
    args: &BenchArgs,
    runner: &mut Runner<ProcessBackend>,
    phases: &[phase::Phase],
    plan: &[phase::Planned],
    spec: &ClusterSpec,
    seed: u64,
) -> anyhow::Result<Measured> {
    let loadavg_start = loadavg();
    let trials = runner.run_plan(phases, plan, |_| {}).await;
    if let Some(t) = trials.iter().find(|t| t.status != Status::Pass) {
        bail!(
            "the setup phase failed: {}",
            t.error.as_deref().unwrap_or("no reason")
        );
    }
    runner.stop_traffic().await;
    let backend = runner.backend();
    let probe = Probe::new(spec.api_key.clone())?;
    let topology = probe
        .topology(&backend.endpoint(NodeName::Coordinator(1)))
        .await
        .context("topology after the setup")?;
    let placement: Vec<(String, String)> = topology
        .groups
        .iter()
        .flat_map(|g| &g.pipelines)
        .map(|p| {
            (
                p.name.clone(),
                p.worker_id.clone().unwrap_or_else(|| "none".into()),
            )
        })
        .collect();
    let pids: Vec<(String, u32)> = backend
        .nodes()
        .into_iter()
        .filter_map(|n| backend.os_pid(n).map(|pid| (n.to_string(), pid)))
        .collect();
    let sampler = Sampler::start(pids);
    let (host, port) = backend.mqtt();
    let next_seq = Arc::new(AtomicU64::new(FIRST_SEQ));
    let tag = format!("{seed:x}");
    let settings = StepSettings {
        step_ms: args.step_ms,
        latency_bound_ms: args.latency_bound_ms as f64,
        tail_ms: args.tail_ms,
    };
    let mut steps = Vec::new();
    let mut ceilings = Vec::new();
    for route in [Route::Broker, Route::Pipelines] {
        let rig = PathRig::connect(
            route,
            &host,
            port,
            &tag,
            backend.spec().mqtt_logins.as_ref(),
            next_seq.clone(),
        )
        .await?;
        let mut ramp = Ramp::new(args.start_rate, args.max_rate, args.bisections);
        while let Some(rate) = ramp.next() {
            let step = rig.step(Purpose::Ramp, rate, &settings, &sampler).await?;
            progress(&step);
            ramp.record(rate, step.verdict.sustained());
            steps.push(step);
        }
        if let Some(ceiling) = ramp.ceiling() {
            for (purpose, share) in [(Purpose::Half, 0.5), (Purpose::NinetyPct, 0.9)] {
                let rate = ((f64::from(ceiling) * share).round() as u32).max(1);
                let step = rig.step(purpose, rate, &settings, &sampler).await?;
                progress(&step);
                steps.push(step);
            }
        }
        rig.stop().await;
        ceilings.push(Ceiling {
            route,
            sustained_per_s: ramp.ceiling(),
            failed_per_s: ramp.failed(),
        });
    }
    let config = BenchConfig {
        backend: "process".into(),
        coordinators: spec.coordinators,
        workers: spec.workers,
        pipelines: spec.pipelines,
        placement,
        settings,
        start_per_s: args.start_rate,
        max_per_s: args.max_rate,
        bisections: args.bisections,
        cores: super::procfs::read_machine().map_or(0, |m| m.cores),
        loadavg_start,
        loadavg_end: loadavg(),
    };
    Ok((config, steps, (ceilings[0], ceilings[1]), sampler.series()))
}

fn progress(st: &StepRecord) {
    let cpu = |name: &str| st.usage_of(name).map_or(0.0, |u| u.cpu_pct);
    eprintln!(
        "  {} {:>7}/s: offered {:>8.0}/s, delivered {:>5.1} % in time, p50 {} p99 {} ms: {} \
         (harness {:.0} % CPU, broker {:.0} %, machine {:.0} %)",
        st.route.name(),
        st.target_per_s,
        st.offered_per_s,
        100.0 * st.delivered_share(),
        st.p50_ms.map_or("–".into(), |v| format!("{v:.1}")),
        st.p99_ms.map_or("–".into(), |v| format!("{v:.1}")),
        st.verdict.describe(),
        cpu(HARNESS),
        cpu("broker"),
        cpu(MACHINE),
    );
}

/// The 1-minute load average of /proc/loadavg.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
