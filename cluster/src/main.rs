//! `cluster`: run one node of the reference cluster (`cluster coordinator | worker | broker ...`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cluster::broker;
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
    /// The embedded MQTT broker (rumqttd) carrying pipeline events.
    Broker(BrokerArgs),
    /// A worker running the pipelines placed on it.
    Worker(WorkerArgs),
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
    /// Key of the Raft RPCs and the coordinators' internal routes (the same on every coordinator).
    #[arg(long, env = "VARPULIS_PEER_KEY", hide_env_values = true)]
    peer_key: Option<String>,
    /// Key of the mutating cluster API; also admitted on every protected read.
    #[arg(long, env = "VARPULIS_OPERATOR_KEY", hide_env_values = true)]
    operator_key: Option<String>,
    /// Optional key admitted on the protected reads only (GETs other than /health, /ready,
    /// /metrics and /cluster).
    #[arg(long, env = "VARPULIS_READ_KEY", hide_env_values = true)]
    read_key: Option<String>,
    /// Secret the workers' tokens are derived from (`cluster::auth::worker_token`).
    #[arg(long, env = "VARPULIS_WORKER_SECRET", hide_env_values = true)]
    worker_secret: Option<String>,
    /// Run without any key: every route open to anyone who reaches the port. Without it, a
    /// coordinator missing --peer-key, --operator-key or --worker-secret refuses to start.
    #[arg(long)]
    insecure: bool,
    /// Removed: refused with the names of the flags that replace it.
    #[arg(long, hide = true)]
    api_key: Option<String>,
    /// Snapshot (and purge the log) every this many entries.
    #[arg(long, default_value_t = 1000)]
    snapshot_logs: u64,
    /// After a worker's link closes, how long it has to reconnect before it is unhealthy.
    #[arg(long, default_value_t = 5000)]
    grace_ms: u64,
    /// WebSocket ping interval towards workers.
    #[arg(long, default_value_t = 1000)]
    ping_interval_ms: u64,
    /// A link with no frame from its worker for this long is dead.
    #[arg(long, default_value_t = 3000)]
    ping_dead_ms: u64,
    /// A worker without a WebSocket and no REST heartbeat for this long is unhealthy.
    #[arg(long, default_value_t = 10000)]
    rest_heartbeat_timeout_ms: u64,
    /// Heartbeat interval workers are told to use (default: a third of --ping-dead-ms).
    #[arg(long)]
    heartbeat_interval_ms: Option<u64>,
    /// A worker's lease (default: ping-dead + heartbeat interval); must be less than the grace.
    #[arg(long)]
    lease_ms: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct WorkerArgs {
    /// This worker's id (1-64 of [A-Za-z0-9_.-]).
    #[arg(long)]
    worker_id: String,
    /// Address to listen on for the worker API, e.g. 127.0.0.1:9000.
    #[arg(long)]
    listen: String,
    /// Coordinator base URLs, home first: `http://h:p,http://h:p,...`.
    #[arg(long)]
    coordinators: String,
    /// This worker's token, `worker_token(worker secret, worker id)`: presented to the
    /// coordinators (`x-api-key`, with `x-worker-id`) on registration, heartbeats and the link,
    /// and the broker's password (user name = the worker id) unless `--mqtt-url` carries
    /// credentials.
    #[arg(long, env = "VARPULIS_WORKER_TOKEN")]
    worker_token: Option<String>,
    /// Removed: refused with the name of the flag that replaces it.
    #[arg(long, hide = true)]
    api_key: Option<String>,
    /// The MQTT broker pipelines read from and write to: `mqtt://host:port`, or
    /// `mqtt://user:password@host:port` for a broker with its own accounts (an external one).
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    mqtt_url: String,
    /// Address reported at registration (default: http://<listen>).
    #[arg(long)]
    advertise: Option<String>,
    #[arg(long, default_value_t = 100)]
    max_pipelines: u32,
}

#[derive(Debug, clap::Args)]
struct BrokerArgs {
    /// MQTT listen address, e.g. 127.0.0.1:1883.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Bytes per in-memory log segment (one log per subscription filter).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1024..))]
    max_segment_size: Option<u64>,
    /// Segments kept per filter; beyond them the oldest messages are dropped.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_segment_count: Option<u64>,
    /// The cluster's worker secret: a worker connects with user name = its id and password =
    /// its token derived from this secret, and may use only pipeline sessions (`varpulis~…`).
    #[arg(long, env = "VARPULIS_WORKER_SECRET", hide_env_values = true)]
    worker_secret: Option<String>,
    /// A client that is not a worker (repeatable; in the environment, comma-separated): it
    /// connects with user name NAME and this password, only under client ids starting with NAME.
    #[arg(
        long = "mqtt-client",
        value_name = "NAME:PASSWORD",
        env = "VARPULIS_MQTT_CLIENTS",
        hide_env_values = true,
        value_delimiter = ',',
        value_parser = broker::access::parse_client
    )]
    mqtt_clients: Vec<(String, String)>,
    /// Let anyone connect, under any client id (no credentials checked).
    #[arg(long, conflicts_with_all = ["worker_secret", "mqtt_clients"])]
    insecure: bool,
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
            Role::Broker(args) => run_broker(args).await,
            Role::Worker(args) => run_worker(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // 2: the configuration was refused before anything started.
            if e.downcast_ref::<coordinator::ConfigError>().is_some()
                || e.downcast_ref::<broker::NoCredentials>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

async fn run_coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    if args.api_key.is_some() {
        return Err(coordinator::ConfigError::ApiKeyReplaced.into());
    }
    let heartbeat_interval_ms = args.heartbeat_interval_ms.unwrap_or(args.ping_dead_ms / 3);
    let config = CoordinatorConfig {
        node_id: args.node_id,
        peers: coordinator::parse_peers(&args.peers)?,
        data_dir: args.data_dir,
        heartbeat_ms: args.heartbeat_ms,
        election_min_ms: args.election_min_ms,
        election_max_ms: args.election_max_ms,
        keys: cluster::auth::KeyConfig {
            peer_key: args.peer_key,
            operator_key: args.operator_key,
            read_key: args.read_key,
            worker_secret: args.worker_secret,
            insecure: args.insecure,
        },
        snapshot_logs: args.snapshot_logs,
        detector: coordinator::DetectorConfig {
            grace: Duration::from_millis(args.grace_ms),
            ping_interval: Duration::from_millis(args.ping_interval_ms),
            ping_dead: Duration::from_millis(args.ping_dead_ms),
            rest_timeout: Duration::from_millis(args.rest_heartbeat_timeout_ms),
            heartbeat_interval: Duration::from_millis(heartbeat_interval_ms),
            lease: args.lease_ms.map(Duration::from_millis).unwrap_or_else(|| {
                coordinator::DetectorConfig::default_lease(
                    Duration::from_millis(args.ping_dead_ms),
                    Duration::from_millis(heartbeat_interval_ms),
                )
            }),
        },
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("bind {}: {e}", args.listen))?;
    coordinator::run(config, listener, shutdown_signal()).await
}

async fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    if args.api_key.is_some() {
        anyhow::bail!("--api-key was replaced by --worker-token (worker_token(worker secret, worker id)); see README.md, 'Security'");
    }
    let bad_url = || anyhow::anyhow!("--mqtt-url must look like mqtt://[user:password@]host:port");
    let authority = args.mqtt_url.strip_prefix("mqtt://").ok_or_else(bad_url)?;
    let (login, authority) = match authority.rsplit_once('@') {
        Some((login, rest)) => {
            let (user, password) = login
                .split_once(':')
                .filter(|(u, _)| !u.is_empty())
                .ok_or_else(bad_url)?;
            (Some((user.to_string(), password.to_string())), rest)
        }
        None => (None, authority),
    };
    let (host, port) = authority
        .trim_end_matches('/')
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
        .ok_or_else(bad_url)?;
    // The URL's account (an external broker's) wins; otherwise the worker's own credential.
    let mqtt_login = login.or_else(|| {
        args.worker_token
            .clone()
            .map(|token| (args.worker_id.clone(), token))
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("bind {}: {e}", args.listen))?;
    let config = cluster::worker::WorkerConfig {
        advertise: args
            .advertise
            .unwrap_or_else(|| format!("http://{}", args.listen)),
        worker_id: args.worker_id,
        coordinators: args
            .coordinators
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        worker_token: args.worker_token,
        mqtt_host: host,
        mqtt_port: port,
        mqtt_login: mqtt_login.map(
            |(username, password)| cluster::pipeline::runtime::MqttLogin { username, password },
        ),
        max_pipelines: args.max_pipelines,
    };
    cluster::worker::run(config, listener, shutdown_signal()).await
}

async fn run_broker(args: BrokerArgs) -> anyhow::Result<()> {
    if args.listen.port() == 0 {
        anyhow::bail!("broker: --listen port must not be 0 (clients need to know it)");
    }
    let defaults = broker::BrokerConfig::default();
    let config = broker::BrokerConfig {
        listen: args.listen,
        max_segment_size: match args.max_segment_size {
            Some(bytes) => usize::try_from(bytes)?,
            None => defaults.max_segment_size,
        },
        max_segment_count: match args.max_segment_count {
            Some(n) => usize::try_from(n)?,
            None => defaults.max_segment_count,
        },
        auth: match (args.insecure, args.worker_secret, args.mqtt_clients) {
            (true, _, _) => {
                tracing::warn!("broker: --insecure: anyone may connect, under any client id");
                None
            }
            (false, None, clients) if clients.is_empty() => {
                return Err(broker::NoCredentials.into())
            }
            (false, secret, clients) => Some(broker::BrokerAuth::new(secret, clients)?),
        },
        ..defaults
    };
    broker::start(config)?;
    shutdown_signal().await;
    Ok(())
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
