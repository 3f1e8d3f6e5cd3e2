//! The embedded MQTT broker (rumqttd, MQTT 3.1.1 only) that carries pipeline events.
//!
//! rumqttd keeps everything in memory: one commit log per subscription filter, capped at
//! `max_segment_size × max_segment_count` bytes, beyond which it silently drops the oldest
//! segment. It stores a publish only for filters that already have a subscriber (a persistent
//! session counts, connected or not), so a pipeline must subscribe before events for it are
//! published. Sessions (clean_session = false) survive their connection and hand their unacked
//! messages to the next connection with the same client id; they do not survive the broker.
//!
//! Clients reach rumqttd through [`gate`], which checks every CONNECT against [`access`] (when
//! credentials are configured) and answers a refusal with CONNACK 5; rumqttd itself listens on
//! loopback only, with the same check.

pub mod access;
mod gate;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub use access::{BrokerAuth, PIPELINE_SESSION_PREFIX};

/// Largest MQTT packet body (remaining length) the broker accepts; pipelines accept as much.
pub const DEFAULT_MAX_PAYLOAD_SIZE: usize = 1024 * 1024;

/// rumqttd panics (in its router thread) on segments below 1 KiB.
const MIN_SEGMENT_SIZE: usize = 1024;

/// How long [`start`] waits for the listener to answer an MQTT CONNECT: thread start-up and a
/// bind take milliseconds, so seconds mean the broker is not coming.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between readiness probes: short against `READY_TIMEOUT`, long enough not to spin.
const READY_POLL: Duration = Duration::from_millis(20);

/// Bound of one probe's connect, write and read, so a wedged listener cannot stall `start`.
const PROBE_IO_TIMEOUT: Duration = Duration::from_millis(500);

/// Time a new TCP connection gets to send its CONNECT before rumqttd drops it: generous for a
/// loaded machine, short enough that idle sockets cannot hold connection slots for long.
const CONNECT_TIMEOUT_MS: u16 = 10_000;

/// Pause rumqttd takes after accepting each connection, in its one accept loop. Its default of
/// 1 ms (a sleep, so 1 ms or more) serialised a worker taking over 300 pipelines (600 connects)
/// behind at least 0.6 s of sleeps: failover of 300 pipelines 3769 → 2625 ms without it
/// (`harness scale --curves pipelines --hosted 300`). The connection slots bound a storm.
const NEXT_CONNECTION_DELAY_MS: u64 = 0;

/// QoS 0 messages rumqttd hands a connection per read of a log (its default); QoS 1 reads are
/// capped by its fixed window of 100 unacked messages per connection instead.
const MAX_OUTGOING_PACKET_COUNT: u64 = 200;

/// Client id of the readiness probe (a clean session, so it leaves nothing behind), and its
/// user name when credentials are required (its password is drawn at random at each start).
const PROBE_CLIENT_ID: &str = "cluster-broker-ready-probe";

/// `cluster broker` was given no credentials and not `--insecure`: it refuses to start.
#[derive(Debug, thiserror::Error)]
#[error(
    "broker: no credentials: give --worker-secret (workers) and/or --mqtt-client NAME:PASSWORD \
     (other clients), or --insecure to let anyone connect under any client id"
)]
pub struct NoCredentials;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// MQTT 3.1.1 TCP listener; the port must be concrete (not 0), clients need to know it.
    pub listen: SocketAddr,
    /// Most concurrent client connections (rumqttd also preallocates this many slots).
    pub max_connections: usize,
    /// Bytes per in-memory log segment (one log per subscription filter).
    pub max_segment_size: usize,
    /// Segments kept per filter; the oldest is dropped, unread messages included, beyond it.
    pub max_segment_count: usize,
    /// Packets rumqttd reads from one connection in one batch before routing them (rumqttd's
    /// `max_inflight_count`; the QoS 1 window towards a subscriber is fixed at 100 by rumqttd).
    pub max_inflight: usize,
    /// Largest packet body accepted from a client; a bigger one drops the connection.
    pub max_payload_size: usize,
    /// Who may connect ([`access`]); `None` lets anyone in (the `--insecure` broker).
    pub auth: Option<BrokerAuth>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            // The MQTT port, loopback only: exposing the broker is a deliberate choice.
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            // Two per pipeline plus publishers and collectors: the harness's largest workload
            // (1000 pipelines) with room to spare. A slot is a few hundred bytes until used.
            max_connections: 4096,
            // rumqttd's default 100 MiB: a segment is read whole, bigger ones hurt tail latency.
            max_segment_size: 100 * 1024 * 1024,
            // rumqttd's default 10: 1 GiB of backlog per filter before the oldest is dropped.
            max_segment_count: 10,
            // rumqttd's example value: batches of 100 keep the router busy without starving peers.
            max_inflight: 100,
            // Events are small JSON records; 1 MiB fits any sane event and bounds one packet.
            max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            auth: None,
        }
    }
}

/// A running broker. rumqttd has no shutdown: it lives as long as the process.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    pub addr: std::net::SocketAddr,
    /// rumqttd's own loopback listener behind the gate (it checks credentials too).
    pub upstream: std::net::SocketAddr,
}

/// Start rumqttd (v4 server only, no console/prometheus/metrics/bridge) on its own threads,
/// on a loopback port, behind the [`gate`] on `config.listen`; return once `config.listen`
/// answers an MQTT CONNECT (at most [`READY_TIMEOUT`]), or a clear error. Port 0 in
/// `config.listen` (in-process callers, tests): the port the system gives, in the handle.
pub fn start(config: BrokerConfig) -> anyhow::Result<BrokerHandle> {
    validate(&config)?;
    // A fixed port is checked now, with its cause, and bound for good once rumqttd answers, so
    // that a client able to open a TCP connection (the harness's readiness check) finds a broker
    // behind it. Port 0 is bound once, now: nobody can be waiting on a port not yet known, and
    // a port picked and let go could be taken by any outgoing connection meanwhile.
    let early = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("broker: bind {}", config.listen))?;
    let addr = early.local_addr().context("broker: listener address")?;
    let early = (config.listen.port() == 0).then_some(early);
    // rumqttd binds by itself (and only logs a failure, from its thread): a port free a moment
    // ago, above the ephemeral range so that no outgoing connection is given it meanwhile; a
    // failure shows as the readiness probe's.
    let upstream = loopback_port_for_rumqttd()?;

    let probe_login = config.auth.as_ref().map(|_| {
        let secret: [u8; 16] = rand::random();
        let password: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        (PROBE_CLIENT_ID.to_owned(), password)
    });
    let login = probe_login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    let auth = match (config.auth.clone(), login) {
        (Some(auth), Some((name, password))) => Some(Arc::new(auth.with_client(name, password)?)),
        _ => None,
    };

    let mut broker = rumqttd::Broker::new(rumqttd_config(&config, upstream, auth.clone()));
    let runner = thread::Builder::new()
        .name("mqtt-broker".to_owned())
        .spawn(move || {
            // Blocks for the broker's lifetime (it joins its server threads).
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "MQTT broker stopped");
            }
        })
        .context("broker: spawn thread")?;
    await_ready(upstream, login, || runner.is_finished())?;

    let listener = match early {
        Some(listener) => listener,
        None => {
            std::net::TcpListener::bind(addr).with_context(|| format!("broker: bind {addr}"))?
        }
    };
    gate::Gate {
        listener,
        upstream,
        auth,
        max_packet: config.max_payload_size,
        connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS.into()),
    }
    .spawn()
    .context("broker: start the gate")?;
    await_ready(addr, login, || runner.is_finished())?;
    tracing::info!(%addr, %upstream, auth = config.auth.is_some(), "MQTT broker listening");
    Ok(BrokerHandle { addr, upstream })
}

/// Probes `addr` until it answers an MQTT CONNECT, at most [`READY_TIMEOUT`].
fn await_ready(
    addr: SocketAddr,
    login: Option<(&str, &str)>,
    stopped: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if stopped() {
            bail!("broker: rumqttd stopped during start-up (see its log lines above)");
        }
        match probe(addr, login) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "broker: {addr} did not answer an MQTT CONNECT within {READY_TIMEOUT:?}: {e:#}"
                )
            }
            Err(_) => thread::sleep(READY_POLL),
        }
    }
}

/// The kernel's ephemeral range (`ip_local_port_range`: the local ports outgoing connections
/// get), Linux's default when unreadable.
pub fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// A loopback port for rumqttd behind the gate, bindable now, above the ephemeral range: a port
/// from the ephemeral range, let go, can be given to any outgoing connection before rumqttd binds
/// it (seen as `Address already in use` in parallel tests). Above it, not below: the harness
/// reserves its nodes' ports below it (`harness/src/backend/ports.rs`), and a node restarted later
/// must find its port free.
fn loopback_port_for_rumqttd() -> anyhow::Result<SocketAddr> {
    let (_, hi) = ephemeral_range();
    if hi >= u16::MAX - 1 {
        // No room above it: take what the system gives.
        return std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .context("broker: find a loopback port for rumqttd");
    }
    for _ in 0..64 {
        let port = rand::random_range(hi + 1..=u16::MAX);
        if let Ok(addr) = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
            .and_then(|l| l.local_addr())
        {
            return Ok(addr);
        }
    }
    bail!("broker: no free loopback port above {hi} for rumqttd after 64 tries")
}

fn validate(config: &BrokerConfig) -> anyhow::Result<()> {
    if config.max_segment_size < MIN_SEGMENT_SIZE {
        bail!(
            "broker: max_segment_size {} is below rumqttd's minimum of {MIN_SEGMENT_SIZE} bytes",
            config.max_segment_size
        );
    }
    for (name, value) in [
        ("max_connections", config.max_connections),
        ("max_segment_count", config.max_segment_count),
        ("max_inflight", config.max_inflight),
        ("max_payload_size", config.max_payload_size),
    ] {
        if value == 0 {
            bail!("broker: {name} must be at least 1");
        }
    }
    Ok(())
}

fn rumqttd_config(
    config: &BrokerConfig,
    listen: SocketAddr,
    auth: Option<Arc<BrokerAuth>>,
) -> rumqttd::Config {
    let mut connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: CONNECT_TIMEOUT_MS,
        max_payload_size: config.max_payload_size,
        max_inflight_count: config.max_inflight,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    if let Some(auth) = auth {
        // The gate already checked; this keeps rumqttd's loopback port no way around it.
        connections.set_auth_handler(move |client_id: String, user: String, pass: String| {
            let ok = auth.check(&client_id, Some((&user, &pass))).is_ok();
            async move { ok }
        });
    }
    let server = rumqttd::ServerSettings {
        name: "v4".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: NEXT_CONNECTION_DELAY_MS,
        connections,
    };
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: config.max_connections,
            max_outgoing_packet_count: MAX_OUTGOING_PACKET_COUNT,
            max_segment_size: config.max_segment_size,
            max_segment_count: config.max_segment_count,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    }
}

/// One MQTT 3.1.1 handshake: CONNECT (clean session), expect CONNACK accepted, then close.
/// A bare TCP connect would do, but rumqttd logs an error for every connection that closes
/// before its CONNECT; and this also proves the router answers, not just the listener. No
/// DISCONNECT: rumqttd would then process the disconnection twice (once for the packet, once
/// for the closed socket), logging an error and possibly cutting off the next client, which
/// reuses the connection slot; a plain close is processed once.
fn probe(addr: SocketAddr, login: Option<(&str, &str)>) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_IO_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_IO_TIMEOUT))?;
    stream.set_nodelay(true)?;

    let string = |body: &mut Vec<u8>, s: &str| -> anyhow::Result<()> {
        body.extend_from_slice(&u16::try_from(s.len())?.to_be_bytes());
        body.extend_from_slice(s.as_bytes());
        Ok(())
    };
    let mut body: Vec<u8> = Vec::with_capacity(128);
    body.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T']); // protocol name
    body.push(4); // protocol level 3.1.1
                  // Connect flags: clean session, and user name and password when there are credentials.
    body.push(if login.is_some() {
        0b1100_0010
    } else {
        0b0000_0010
    });
    body.extend_from_slice(&10u16.to_be_bytes()); // keep alive, seconds (rumqttd refuses 0)
    string(&mut body, PROBE_CLIENT_ID)?;
    if let Some((user, password)) = login {
        string(&mut body, user)?;
        string(&mut body, password)?;
    }
    let remaining = u8::try_from(body.len()).context("probe CONNECT too long")?;
    anyhow::ensure!(remaining < 128, "probe CONNECT needs a one-byte length");
    let mut packet = vec![0x10, remaining];
    packet.extend_from_slice(&body);
    stream.write_all(&packet)?;

    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    match connack {
        [0x20, 2, _, 0] => {}
        other => bail!("unexpected answer to CONNECT: {other:02x?}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_are_not_paced_and_slots_cover_the_largest_workload() {
        let config = rumqttd_config(
            &BrokerConfig::default(),
            "127.0.0.1:1883".parse().unwrap(),
            None,
        );
        let v4 = config.v4.as_ref().expect("the v4 listener");
        assert_eq!(v4["1"].next_connection_delay_ms, 0);
        // The harness's largest workload: 1000 pipelines, two connections each.
        assert!(config.router.max_connections >= 2 * 1000 + 16);
    }
}
