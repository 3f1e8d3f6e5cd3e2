//! Command line: `harness --phases ...` runs phases; `harness report DIR` rebuilds a report;
//! `harness compare RUN_A RUN_B …` overlays the runs' ECDFs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::backend::docker::DockerBackend;
use crate::backend::process::{locate_cluster_bin, ProcessBackend};
use crate::backend::{Backend, ClusterSpec, DetectorTimings, RaftTimings};
use crate::check;
use crate::exit;
use crate::phase::{self, Capabilities};
use crate::probe::PROBE_TIMEOUT;
use crate::record::{RunData, RunSettings};
use crate::report;
use crate::runner::{Runner, RunnerOptions, DRAIN_QUIET, POLL_INTERVAL};
use crate::traffic::DrainSettings;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Chaos and benchmark harness for the reference Raft cluster"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Rebuild results.md, CSVs and summary.json of a run directory from its run.json.
    Report { dir: PathBuf },
    /// Gate a run directory: budgets from reports/baseline.toml and a rank test against the
    /// stored baseline samples; exit 3 with one line per failing figure.
    Gate(Box<crate::gate::cli::GateArgs>),
    /// Throughput ceilings: ramp the offered rate through the broker alone and through the
    /// pipelines until delivery falls behind or p99 latency passes a bound; writes
    /// throughput.md, CSVs and a plot into the run dir (process backend).
    Bench(Box<crate::bench::cli::BenchArgs>),
    /// How cost grows: failover against hosted pipelines and against workers, election against
    /// the log's length, suite time against workers; each point a fresh cluster. Writes
    /// scaling.md, scaling.csv and a plot per curve into reports/runs/scale-<time>/.
    Scale(Box<crate::scale::ScaleArgs>),
    /// Overlay the ECDFs of every figure two or more runs share; writes compare.md and the plots.
    Compare {
        /// Run directories (each with its run.json), e.g. reports/runs/<run-id>.
        #[arg(required = true, num_args = 2..)]
        runs: Vec<PathBuf>,
        /// Output directory (default: reports/compare/<first>_vs_<second>…).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The runs were taken interleaved on one machine (e.g. the two sides of
        /// `harness gate --baseline-bin/--candidate-bin`): judge with T, L = 1.2, 1.05 instead of
        /// the stored-baseline thresholds of reports/baseline.toml.
        #[arg(long)]
        interleaved: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Phases to run: all | 3 | 3,5 | a file's name without its number (coordinator-failover).
    #[arg(long, default_value = "all")]
    pub phases: String,
    /// Run each selected phase N times (prerequisites such as setup run once).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub repeat: u32,
    /// Where nodes run. auto: Docker when an engine answers, else processes.
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,
    /// Seed for every random choice; printed so a run can be replayed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Reports directory (the run writes <out>/runs/<run-id>/ and refreshes <out>/latest/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Directory of phase files.
    #[arg(long)]
    pub phases_dir: Option<PathBuf>,
    /// The `cluster` binary (default: built by cargo, or next to the harness).
    #[arg(long, env = "HARNESS_CLUSTER_BIN")]
    pub cluster_bin: Option<PathBuf>,
    /// The `cluster` binary for the Docker image (default: the one --cluster-bin names, else
    /// built by cargo); its shared objects go into the image with it.
    #[arg(long, env = "HARNESS_IMAGE_BIN")]
    pub image_bin: Option<PathBuf>,
    #[arg(long, default_value_t = RaftTimings::SEED.heartbeat_ms)]
    pub heartbeat_ms: u64,
    #[arg(long, default_value_t = RaftTimings::SEED.election_min_ms)]
    pub election_min_ms: u64,
    #[arg(long, default_value_t = RaftTimings::SEED.election_max_ms)]
    pub election_max_ms: u64,
    /// Grace period after a worker's link closes before it is declared unhealthy.
    #[arg(long, default_value_t = DetectorTimings::SEED.grace_ms)]
    pub grace_ms: u64,
    /// Quiet period of the drain every event verdict waits for (and the final drain): no
    /// arrival on the output topic for this long, at most 5 s.
    #[arg(long, default_value_t = DRAIN_QUIET.as_millis() as u64)]
    pub drain_quiet_ms: u64,
    /// Run every `nemesis` step this long instead of its phase's `duration_ms` (a longer soak).
    #[arg(long)]
    pub nemesis_ms: Option<u64>,
    /// Commit this many entries in every `fill_log` step instead of its phase's `entries`.
    #[arg(long)]
    pub fill_entries: Option<u64>,
    /// WebSocket ping interval of the coordinators towards workers.
    #[arg(long, default_value_t = DetectorTimings::SEED.ping_interval_ms)]
    pub ping_interval_ms: u64,
    /// A worker link with no frame for this long is dead (also the workers' read deadline).
    /// The coordinators refuse timings that contradict the worker lease (ARCHITECTURE.md).
    #[arg(long, default_value_t = DetectorTimings::SEED.ping_dead_ms)]
    pub ping_dead_ms: u64,
    /// text: progress on stderr (live on a terminal, a line per step otherwise), the results
    /// block on stdout. json: one JSON object per line on stdout, progress events then the summary.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The CI gate file (e.g. reports/baseline.toml): applied to the run when it ends.
    #[arg(long, value_name = "FILE")]
    pub gate: Option<PathBuf>,
    /// Run the cluster without keys (its coordinators get `--insecure`: every route open). By
    /// default each run makes fresh random keys: a peer key, an operator key (the harness's own
    /// calls) and a worker secret (each worker gets its own token).
    #[arg(long)]
    pub insecure: bool,
    #[command(flatten)]
    pub cluster: crate::topology::ClusterArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Docker when an engine answers, else processes.
    Auto,
    Process,
    Docker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Some(Command::Gate(args)) = &cli.command {
        return ExitCode::from(crate::gate::cli::main(args, &project_root()));
    }
    if let Some(Command::Bench(args)) = &cli.command {
        return crate::bench::cli::main(args, &project_root());
    }
    if let Some(Command::Scale(args)) = &cli.command {
        return crate::scale::main(args, &project_root());
    }
    if let Some(Command::Report { dir }) = cli.command {
        return match report::regenerate(&dir) {
            Ok(data) => {
                print!("{}", report::results_block(&data));
                println!("reports rebuilt in {}", dir.display());
                ExitCode::from(exit::PASS)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(exit::HARNESS_ERROR)
            }
        };
    }
    if let Some(Command::Compare {
        runs,
        out,
        interleaved,
    }) = cli.command
    {
        return compare(&runs, out, interleaved);
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
    ExitCode::from(runtime.block_on(run(cli.run)))
}

/// `harness compare`: overlaid ECDFs of the runs' shared figures.
fn compare(runs: &[PathBuf], out: Option<PathBuf>, interleaved: bool) -> ExitCode {
    use crate::report::plots::compare;
    let inputs = match compare::load(runs) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::INVALID_INPUT);
        }
    };
    let out = out.unwrap_or_else(|| {
        let labels: Vec<&str> = inputs.iter().map(|i| i.label.as_str()).collect();
        project_root()
            .join("reports/compare")
            .join(labels.join("_vs_"))
    });
    // The gate's relative test, with the thresholds of the committed gate file (or its defaults).
    let thresholds =
        crate::gate::config::Gate::load(&crate::gate::cli::default_gate_file(&project_root()))
            .map(|g| g.file.relative)
            .unwrap_or_default();
    let thresholds = if interleaved {
        crate::gate::interleave::thresholds(&thresholds)
    } else {
        thresholds
    };
    let labelled: Vec<(String, &crate::record::RunData)> =
        inputs.iter().map(|i| (i.label.clone(), &i.data)).collect();
    let statistics = crate::gate::compare::table(&labelled, &thresholds);
    match compare::write(&out, &inputs, Some(&statistics)) {
        Ok(path) => {
            println!("comparison: {}", path.display());
            ExitCode::from(exit::PASS)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::HARNESS_ERROR)
        }
    }
}

/// Workspace root: the current directory when it has `phases/`, else the source tree's.
fn project_root() -> PathBuf {
    if Path::new("phases").is_dir() {
        PathBuf::from(".")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }
}

/// Run phases and write the reports; returns the exit code.
pub async fn run(args: RunArgs) -> u8 {
    let seed = args.seed.unwrap_or_else(rand::random);
    let root = project_root();
    let phases_dir = args
        .phases_dir
        .clone()
        .unwrap_or_else(|| root.join("phases"));
    let out = args.out.clone().unwrap_or_else(|| root.join("reports"));
    let raft = RaftTimings {
        heartbeat_ms: args.heartbeat_ms,
        election_min_ms: args.election_min_ms,
        election_max_ms: args.election_max_ms,
    };
    if !(0 < raft.heartbeat_ms
        && raft.heartbeat_ms < raft.election_min_ms
        && raft.election_min_ms < raft.election_max_ms)
    {
        eprintln!("error: Raft timings must satisfy 0 < --heartbeat-ms < --election-min-ms < --election-max-ms");
        return exit::INVALID_INPUT;
    }
    let backend_kind = match args.backend {
        BackendKind::Auto => {
            if crate::backend::docker::available().await {
                BackendKind::Docker
            } else {
                eprintln!("harness: no Docker engine answers; using local processes");
                BackendKind::Process
            }
        }
        other => other,
    };
    let backend_name = if backend_kind == BackendKind::Docker {
        "docker"
    } else {
        "process"
    };
    let spec = ClusterSpec {
        coordinators: args.cluster.coordinators,
        workers: args.cluster.workers,
        pipelines: args.cluster.pipelines,
        raft,
        detector: DetectorTimings {
            grace_ms: args.grace_ms,
            ping_interval_ms: args.ping_interval_ms,
            ping_dead_ms: args.ping_dead_ms,
            ..DetectorTimings::SEED
        },
        api_key: None,
        peer_key: None,
        worker_secret: None,
        insecure: false,
        mqtt_logins: None,
        mqtt_url: args.cluster.mqtt_url.clone(),
    }
    .with_keys(args.insecure);
    let caps = Capabilities {
        backend: backend_name,
        coordinators: spec.coordinators,
        workers: spec.workers,
        broker: true,
        // The backend's own list, checked before it exists: nothing starts for a refused phase.
        faults: if backend_kind == BackendKind::Docker {
            crate::backend::docker::faults_here()
        } else {
            crate::backend::process::faults_here()
        },
    };
    // Everything about the input is checked before any node starts: every phase file whole
    // (any fault allowed), then the backend's faults for the phases this run executes.
    let every_fault = Capabilities {
        faults: crate::step::Fault::ALL.to_vec(),
        ..caps.clone()
    };
    let phases = match phase::load_dir(&phases_dir, &every_fault) {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} phase file error(s); nothing was started", errors.len());
            return exit::INVALID_INPUT;
        }
    };
    let gate = match args.gate.as_deref().map(crate::gate::config::Gate::load) {
        Some(Err(e)) => {
            eprintln!("error: {e:#}");
            return exit::INVALID_INPUT;
        }
        Some(Ok(g)) => Some(g),
        None => None,
    };
    let plan = match phase::plan(&phases, &args.phases, args.repeat) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --phases {}: {e}", args.phases);
            return exit::INVALID_INPUT;
        }
    };
    let profile = match args.cluster.load_profile() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --profile: {e:#}");
            return exit::INVALID_INPUT;
        }
    };
    for key in profile.ignored_keys() {
        eprintln!(
            "warning: profile {}: unknown key `{key}` ignored",
            profile.name
        );
    }
    let mut refused = phase::unsupported_faults(&phases, &plan, &caps);
    refused.extend(args.cluster.refused(&phases, &plan));
    refused.extend(profile.refused(&phases, &plan));
    if profile.roles.broker.is_none() && spec.mqtt_url.is_none() {
        refused.push(format!(
            "profile {} starts no broker: give one with --mqtt-url",
            profile.name
        ));
    }
    if backend_kind == BackendKind::Docker && !profile.is_reference() {
        refused.push(format!(
            "profile {}: only the process backend starts nodes from a profile's templates; use --backend process",
            profile.name
        ));
    }
    if !refused.is_empty() {
        for e in &refused {
            eprintln!("error: {e}");
        }
        if let Some(why) = crate::backend::partition_refusal(backend_kind == BackendKind::Docker) {
            eprintln!("note: {why}");
        }
        eprintln!("{} phase file error(s); nothing was started", refused.len());
        return exit::INVALID_INPUT;
    }
    crate::traffic::ledger::set_pipeline_count(u64::from(spec.pipelines));
    crate::traffic::ledger::set_output_event_type(profile.workload.output_event_type.clone());
    let progress =
        crate::progress::install(crate::progress::Mode::detect(args.format == Format::Json));
    let executed = execute(
        &args,
        backend_kind,
        seed,
        &out,
        spec.clone(),
        &phases,
        &plan,
    )
    .await;
    drop(progress);
    match executed {
        Ok((data, dir)) => {
            let code = finish(&args, &data, &dir, &out);
            let Some(gate) = gate else { return code };
            if code == exit::INTERRUPTED {
                return code;
            }
            // The gate's one extra batch, if it needs one: the same plan with the next seed.
            let again = || {
                let seed = seed.wrapping_add(1);
                execute(&args, backend_kind, seed, &out, spec, &phases, &plan)
            };
            crate::gate::drive::drive(data, dir, &gate, &root, &out, again).await
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::HARNESS_ERROR
        }
    }
}

fn reproduce_command(args: &RunArgs, backend: BackendKind, seed: u64) -> String {
    let backend = if backend == BackendKind::Docker {
        "docker"
    } else {
        "process"
    };
    let mut cmd = format!(
        "cargo run -p harness -- --phases {} --repeat {} --backend {backend} --seed {seed}",
        args.phases, args.repeat
    );
    if args.drain_quiet_ms != DRAIN_QUIET.as_millis() as u64 {
        cmd += &format!(" --drain-quiet-ms {}", args.drain_quiet_ms);
    }
    if let Some(ms) = args.nemesis_ms {
        cmd += &format!(" --nemesis-ms {ms}");
    }
    if args.insecure {
        cmd += " --insecure";
    }
    if let Some(n) = args.fill_entries {
        cmd += &format!(" --fill-entries {n}");
    }
    if let Some(gate) = &args.gate {
        cmd += &format!(" --gate {}", gate.display());
    }
    cmd += &args.cluster.reproduce();
    if let (Some(_), Some(bin)) = (&args.cluster.profile, &args.cluster_bin) {
        cmd += &format!(" --cluster-bin {}", bin.display());
    }
    if args.grace_ms != DetectorTimings::SEED.grace_ms {
        cmd += &format!(" --grace-ms {}", args.grace_ms);
    }
    if args.ping_interval_ms != DetectorTimings::SEED.ping_interval_ms {
        cmd += &format!(" --ping-interval-ms {}", args.ping_interval_ms);
    }
    if args.ping_dead_ms != DetectorTimings::SEED.ping_dead_ms {
        cmd += &format!(" --ping-dead-ms {}", args.ping_dead_ms);
    }
    let raft = (
        args.heartbeat_ms,
        args.election_min_ms,
        args.election_max_ms,
    );
    let seed_raft = (
        RaftTimings::SEED.heartbeat_ms,
        RaftTimings::SEED.election_min_ms,
        RaftTimings::SEED.election_max_ms,
    );
    if raft != seed_raft {
        cmd += &format!(
            " --heartbeat-ms {} --election-min-ms {} --election-max-ms {}",
            raft.0, raft.1, raft.2
        );
    }
    cmd
}

async fn execute(
    args: &RunArgs,
    backend_kind: BackendKind,
    seed: u64,
    out: &Path,
    spec: ClusterSpec,
    phases: &[phase::Phase],
    plan: &[phase::Planned],
) -> anyhow::Result<(RunData, PathBuf)> {
    let now = jiff::Zoned::now();
    let run_id = format!("{}-{:04x}", now.strftime("%Y%m%d-%H%M%S"), seed & 0xffff);
    let (run_id, dir) = crate::backend::ownership::claim_run_dir(out, &run_id)?;
    let command = reproduce_command(args, backend_kind, seed);
    eprintln!("harness: run {run_id} on {backend_kind:?}, seed {seed}; reproduce with: {command}");
    let started = Started {
        run_id,
        command,
        now,
    };
    match backend_kind {
        BackendKind::Docker => {
            // The normal host build (the process backend's): the image carries its shared
            // objects (backend/image.rs). `--image-bin` may name any binary, e.g. a static one.
            let bin = match args.image_bin.clone() {
                Some(bin) => locate_cluster_bin(Some(bin))?,
                None => locate_cluster_bin(args.cluster_bin.clone())?,
            };
            let started_at = std::time::Instant::now();
            let backend = DockerBackend::new(&bin, &dir, spec, &started.run_id).await?;
            eprintln!(
                "harness: image, network and containers ready in {:.1} s",
                started_at.elapsed().as_secs_f64()
            );
            run_with(backend, args, seed, &dir, started, phases, plan).await
        }
        BackendKind::Process | BackendKind::Auto => {
            let bin = locate_cluster_bin(args.cluster_bin.clone())?;
            let profile = args.cluster.load_profile()?;
            let mut backend = ProcessBackend::new(bin, &dir, spec)?.with_profile(profile);
            if phase::plan_uses(phases, plan, crate::step::Fault::Partition) {
                backend = backend.with_network_namespaces(&started.run_id)?;
            }
            run_with(backend, args, seed, &dir, started, phases, plan).await
        }
    }
}

/// Identity of a run, fixed before its backend starts.
struct Started {
    run_id: String,
    command: String,
    now: jiff::Zoned,
}

async fn run_with<B: Backend>(
    backend: B,
    args: &RunArgs,
    seed: u64,
    dir: &Path,
    started: Started,
    phases: &[phase::Phase],
    plan: &[phase::Planned],
) -> anyhow::Result<(RunData, PathBuf)> {
    let raft = backend.spec().raft;
    let profile = args.cluster.load_profile()?;
    let mut data = RunData {
        run_id: started.run_id,
        backend: backend.name().into(),
        seed,
        started_at: started.now.timestamp().to_string(),
        command: started.command,
        config: RunSettings {
            coordinators: backend.spec().coordinators,
            workers: backend.spec().workers,
            raft,
            poll_interval_ms: POLL_INTERVAL.as_millis() as u64,
            probe_timeout_ms: PROBE_TIMEOUT.as_millis() as u64,
            detector: Some(backend.spec().detector),
            cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            harness_version: env!("CARGO_PKG_VERSION").into(),
            drain_quiet_ms: args.drain_quiet_ms,
            pipelines: backend.spec().pipelines,
            profile: Some(format!("{}: {}", profile.name, profile.description)),
            fallbacks: profile.fallbacks(),
            broker: Some(crate::backend::broker::describe(
                backend.spec().mqtt_url.as_ref(),
            )),
            security: Some(if backend.spec().insecure {
                "insecure: no keys (--insecure), every route open".into()
            } else {
                "keys per role: random peer key, operator key and worker secret, one token per worker".into()
            }),
        },
        trials: vec![],
        interrupted: false,
        history: Default::default(),
        final_drain: None,
        tally: None,
    };
    let mut options = RunnerOptions::for_raft(seed, raft.election_max_ms);
    options.dialect = profile.dialect.clone();
    options.placement_epochs = profile.capabilities.placement_epochs;
    options.pipeline_status = profile.capabilities.pipeline_status;
    options.worker_links = profile.capabilities.worker_links;
    options.health_leader = profile.capabilities.health_leader;
    options.event_log = profile.capabilities.event_log;
    if !profile.is_reference() {
        let path = |n| profile.ready_path(n).unwrap_or("/health").to_string();
        options.ready_paths = Some((
            path(crate::backend::NodeName::Coordinator(1)),
            path(crate::backend::NodeName::Worker(1)),
        ));
    }
    options.drain = DrainSettings::quiet(std::time::Duration::from_millis(args.drain_quiet_ms));
    options.nemesis_ms = args.nemesis_ms;
    options.fill_entries = args.fill_entries;
    options.replay = data.command.clone();
    let mut runner = Runner::new(backend, options)?;
    // Trials land here as they finish, so a Ctrl-C still reports what completed.
    let finished = std::cell::RefCell::new(Vec::new());
    let interrupted = {
        let run = runner.run_plan(phases, plan, |t| {
            crate::progress::trial_finished(t);
            finished.borrow_mut().push(t.clone());
        });
        tokio::select! {
            _ = run => false,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("harness: interrupted; stopping nodes and writing the partial report");
                true
            }
        }
    };
    let trials = finished.into_inner();
    // The final drain, then the run-wide checker over the whole history.
    let (history, final_drain) = runner.final_drain().await;
    if let Err(e) = runner.shutdown().await {
        tracing::warn!("shutdown: {e:#}");
    }
    data.trials = trials;
    data.interrupted = interrupted;
    data.history = history;
    data.final_drain = final_drain;
    check::apply(&mut data);
    report::save_run(dir, &data)?;
    Ok((data, dir.to_path_buf()))
}

fn finish(args: &RunArgs, data: &RunData, dir: &Path, out: &Path) -> u8 {
    let latest = out.join("latest");
    if let Err(e) = mirror(dir, &latest) {
        eprintln!("warning: could not refresh {}: {e:#}", latest.display());
    }
    match args.format {
        Format::Text => {
            print!("{}", report::results_block(data));
            println!("report: {}", dir.join("results.md").display());
        }
        // The last of the JSON lines: the summary (summary.json's object, on one line).
        Format::Json => match serde_json::to_string(&report::summary(data)) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: {e}"),
        },
    }
    if data.interrupted {
        exit::INTERRUPTED
    } else if data.all_passed() {
        exit::PASS
    } else {
        exit::PHASE_FAILED
    }
}

/// Copy the run directory's report files (not node data) to `latest`.
/// Runs finishing at once (sharing `--out`) each copy aside first and then swap it in, so
/// `latest` is always one run's whole copy (the last to swap).
pub(crate) fn mirror(dir: &Path, latest: &Path) -> anyhow::Result<()> {
    let name = latest.file_name().context("latest has no name")?;
    let staged = latest.with_file_name(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if staged.exists() {
        std::fs::remove_dir_all(&staged)?;
    }
    copy_tree(dir, &staged, &|p: &Path| !p.ends_with("data"))?;
    let mut last = None;
    for _ in 0..5 {
        match std::fs::remove_dir_all(latest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Another run is swapping too; the rename below says whether it matters.
            Err(e) => tracing::debug!("remove {}: {e}", latest.display()),
        }
        match std::fs::rename(&staged, latest) {
            Ok(()) => return Ok(()),
            // Another run swapped its copy in between: take its place.
            Err(e) => last = Some(e),
        }
    }
    let _ = std::fs::remove_dir_all(&staged);
    Err(last.map_or_else(|| anyhow::anyhow!("rename failed"), anyhow::Error::from))
}

fn copy_tree(from: &Path, to: &Path, keep: &dyn Fn(&Path) -> bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        if !keep(&path) {
            continue;
        }
        let target = to.join(path.file_name().context("file name")?);
        if path.is_dir() {
            copy_tree(&path, &target, keep)?;
        } else {
            std::fs::copy(&path, &target)?;
        }
    }
    Ok(())
}
