//! `cluster`: run one node of the reference cluster (`cluster coordinator ...`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cluster::coordinator::{self, CoordinatorConfig};

#[derive(Debug, Parser)]
#[command(version, about = "A node of the reference cluster")]
struct Cli {
    #[command(subcommand)]
    command: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// A Raft coordinator serving the cluster API.
    Coordinator(CoordinatorArgs),
}

#[derive(Debug, clap::Args)]
struct CoordinatorArgs {
    /// This node's Raft id; must appear in --peers.
    #[arg(long)]
    node_id: u64,
    /// Address to listen on, e.g. 127.0.0.1:9100.
    #[arg(long)]
    listen: String,
    /// Every coordinator, this one included: `1=http://h:p,2=...` or `http://h:p,...` (ids 1..n).
    #[arg(long)]
    peers: String,
    /// Directory for the durable Raft log, vote and snapshots.
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 500)]
    heartbeat_ms: u64,
    #[arg(long, default_value_t = 1500)]
    election_min_ms: u64,
    #[arg(long, default_value_t = 3000)]
    election_max_ms: u64,
    /// Shared secret for mutating routes and Raft RPCs.
    #[arg(long, env = "CLUSTER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Snapshot (and purge the log) every this many entries.
    #[arg(long, default_value_t = 1000)]
    snapshot_logs: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Role::Coordinator(args) => run_coordinator(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // 2: the configuration was refused before anything started.
            if e.downcast_ref::<coordinator::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

async fn run_coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let config = CoordinatorConfig {
        node_id: args.node_id,
        peers: coordinator::parse_peers(&args.peers)?,
        data_dir: args.data_dir,
        heartbeat_ms: args.heartbeat_ms,
        election_min_ms: args.election_min_ms,
        election_max_ms: args.election_max_ms,
        api_key: args.api_key,
        snapshot_logs: args.snapshot_logs,
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("bind {}: {e}", args.listen))?;
    coordinator::run(config, listener, shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C: the graceful stop.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
