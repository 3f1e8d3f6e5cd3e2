//! The broker's front door: reads each connection's CONNECT, refuses it with a CONNACK
//! (return code 5, not authorized) when [`BrokerAuth`] says no, and otherwise hands the
//! connection, CONNECT included, to rumqttd on its loopback-only listener, byte for byte.
//!
//! Why a gate: rumqttd 0.20 checks credentials (and we give it the same check, so its own
//! listener is no way around this one) but answers a refused CONNECT by closing the socket with
//! no CONNACK at all; a client then cannot tell a refusal from a network fault and retries
//! forever. Through the gate a refused client gets its CONNACK and gives up with a clear error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::{Packet, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::access::BrokerAuth;

/// CONNACK, session not present, return code 5: not authorized.
const CONNACK_NOT_AUTHORIZED: [u8; 4] = [0x20, 2, 0, 5];

/// Worker threads of the gate's runtime: it only copies bytes; two keep one slow socket from
/// delaying the others.
const GATE_THREADS: usize = 2;

/// Bytes read from a socket at a time while waiting for the CONNECT.
const READ_CHUNK: usize = 1024;

pub(super) struct Gate {
    pub listener: std::net::TcpListener,
    /// rumqttd's own listener (loopback).
    pub upstream: SocketAddr,
    pub auth: Option<Arc<BrokerAuth>>,
    /// Largest CONNECT accepted (the broker's largest packet).
    pub max_packet: usize,
    /// Time a connection gets to send its CONNECT.
    pub connect_timeout: Duration,
}

impl Gate {
    /// Serves on its own threads for the life of the process.
    pub fn spawn(self) -> anyhow::Result<()> {
        self.listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(GATE_THREADS)
            .thread_name("mqtt-gate")
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("mqtt-gate-accept".to_owned())
            .spawn(move || runtime.block_on(self.serve()))?;
        Ok(())
    }

    async fn serve(self) {
        let listener = match TcpListener::from_std(self.listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "MQTT gate: cannot listen");
                return;
            }
        };
        let conn = Arc::new(Conn {
            upstream: self.upstream,
            auth: self.auth,
            max_packet: self.max_packet,
            connect_timeout: self.connect_timeout,
        });
        loop {
            match listener.accept().await {
                Ok((socket, peer)) => {
                    let conn = conn.clone();
                    tokio::spawn(async move { conn.serve(socket, peer).await });
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "MQTT gate: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// What every connection needs.
struct Conn {
    upstream: SocketAddr,
    auth: Option<Arc<BrokerAuth>>,
    max_packet: usize,
    connect_timeout: Duration,
}

impl Conn {
    async fn serve(&self, mut client: TcpStream, peer: SocketAddr) {
        let _ = client.set_nodelay(true);
        let read = tokio::time::timeout(self.connect_timeout, self.read_connect(&mut client));
        let (bytes, client_id, login) = match read.await {
            Ok(Ok(connect)) => connect,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "MQTT gate: no valid CONNECT; closed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "MQTT gate: no CONNECT within {:?}; closed", self.connect_timeout);
                return;
            }
        };
        if let Some(auth) = &self.auth {
            let presented = login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
            if let Err(refusal) = auth.check(&client_id, presented) {
                tracing::warn!(%peer, client_id, %refusal, "MQTT CONNECT refused (CONNACK 5)");
                let _ = client.write_all(&CONNACK_NOT_AUTHORIZED).await;
                let _ = client.shutdown().await;
                return;
            }
        }
        let mut upstream = match TcpStream::connect(self.upstream).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "MQTT gate: rumqttd does not answer; closed");
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        if upstream.write_all(&bytes).await.is_err() {
            return;
        }
        splice(client, upstream).await;
    }

    /// Reads until one whole packet is in, which must be a CONNECT; returns everything read
    /// (the CONNECT and whatever followed it), its client id and its credentials.
    async fn read_connect(
        &self,
        client: &mut TcpStream,
    ) -> anyhow::Result<(BytesMut, String, Option<(String, String)>)> {
        let mut buffer = BytesMut::with_capacity(READ_CHUNK);
        loop {
            let mut parse = buffer.clone();
            match V4.read_mut(&mut parse, self.max_packet) {
                Ok(Packet::Connect(connect, _, _, _, login)) => {
                    let login = login.map(|l| (l.username, l.password));
                    return Ok((buffer, connect.client_id, login));
                }
                Ok(_) => anyhow::bail!("the first packet is not a CONNECT"),
                Err(rumqttd::protocol::Error::InsufficientBytes(_)) => {}
                Err(e) => anyhow::bail!("malformed CONNECT: {e:?}"),
            }
            buffer.reserve(READ_CHUNK);
            if client.read_buf(&mut buffer).await? == 0 {
                anyhow::bail!("closed before a whole CONNECT");
            }
        }
    }
}

/// Copies both ways until either side closes or fails, then closes both (MQTT has no use for
/// a half-open connection: rumqttd closing a silent client must reach that client).
async fn splice(client: TcpStream, upstream: TcpStream) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut upstream_rx, mut upstream_tx) = upstream.into_split();
    tokio::select! {
        _ = tokio::io::copy(&mut client_rx, &mut upstream_tx) => {}
        _ = tokio::io::copy(&mut upstream_rx, &mut client_tx) => {}
    }
}
