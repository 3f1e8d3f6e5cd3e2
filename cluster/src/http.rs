//! The HTTP server every node runs (coordinator API, worker `/health` and `/metrics`): axum's
//! router on hyper's HTTP/1.1 connection, with the timeouts `axum::serve` does not set.
//!
//! `axum::serve` installs no timer, so a client that opens a connection and trickles its request
//! head (or sends nothing) holds a task and a file descriptor for as long as it likes. Here each
//! connection reads a request head within [`HEADER_READ_TIMEOUT`], counted from when the server
//! waits for it: on a kept-alive connection that includes the idle time before the next request,
//! so it is also the idle timeout. A connection upgraded to a WebSocket (the worker link) leaves
//! HTTP and this timer behind; the link has its own read deadlines. Body reads and handling are
//! bounded by the router's layers (body limits, the request deadline).
//!
//! Our own clients drop an idle pooled connection after [`CLIENT_POOL_IDLE`], before any server
//! of ours would close it, so they never send a request down a connection the server is closing.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A request head must arrive within this; a kept-alive connection idle this long is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long our HTTP clients keep an idle pooled connection: well under
/// [`HEADER_READ_TIMEOUT`].
pub const CLIENT_POOL_IDLE: Duration = Duration::from_secs(5);

/// How long a shutdown waits for requests under way before it drops their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown` resolves, then lets requests under way finish
/// (at most [`SHUTDOWN_GRACE`]). `header_read_timeout`: [`HEADER_READ_TIMEOUT`] except in tests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    // Shutdown: `true` sent to every connection; each holds a receiver until it ends, so the
    // sender sees all of them gone. (hyper-util's GracefulShutdown does not take an HTTP/1
    // connection with upgrades.)
    let (signal, connections) = watch::channel(false);
    let service = TowerToHyperService::new(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: not the listener's end. Pause so a
                    // full table is not spun on, then accept again (as axum::serve does).
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small requests and answers, often back to back: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        let connection = http
            .serve_connection(TokioIo::new(stream), service.clone())
            .with_upgrades();
        let mut shutting_down = connections.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = shutting_down.changed() => {
                    // Finish the request under way, answer with `connection: close`.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
        });
    }
    drop(listener);
    drop(connections);
    let _ = signal.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, signal.closed())
        .await
        .is_err()
    {
        tracing::warn!("requests still under way after {SHUTDOWN_GRACE:?}; dropping them");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    const SHORT: Duration = Duration::from_millis(300);
    /// Bound of a wait for the server to act: far more than a loopback round trip.
    const WAIT: Duration = Duration::from_secs(10);

    async fn server() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route("/", get(|| async { "ok" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            listener,
            router,
            async {
                let _ = stopped.await;
            },
            SHORT,
        ));
        (addr, stop)
    }

    /// Reads until the server closes; returns what it sent and when it closed.
    async fn until_closed(stream: &mut TcpStream) -> (String, Instant) {
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut got))
            .await
            .expect("the server closed the connection within the bound")
            .expect("read");
        (String::from_utf8_lossy(&got).into_owned(), Instant::now())
    }

    #[tokio::test]
    async fn a_trickled_request_head_is_cut_off() {
        let (addr, _stop) = server().await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let start = Instant::now();
        // A head without its end, never finished.
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let (got, closed) = until_closed(&mut stream).await;
        assert!(
            closed - start >= SHORT,
            "closed after {:?}, before the timeout",
            closed - start
        );
        assert!(
            !got.contains("200 OK"),
            "no answer to half a request: {got}"
        );
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed() {
        let (addr, _stop) = server().await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let start = Instant::now();
        let (got, closed) = until_closed(&mut stream).await;
        assert!(got.starts_with("HTTP/1.1 200 OK"), "answered: {got}");
        assert!(got.ends_with("ok"), "the body: {got}");
        assert!(closed - start >= SHORT, "kept alive for the timeout");
    }

    #[tokio::test]
    async fn an_upgraded_websocket_outlives_the_timeout() {
        use axum::extract::ws::{Message, WebSocketUpgrade};
        use futures::{SinkExt, StreamExt};

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route(
            "/ws",
            get(|ws: WebSocketUpgrade| async {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(Message::Text(t))) = socket.recv().await {
                        if socket.send(Message::Text(t)).await.is_err() {
                            return;
                        }
                    }
                })
            }),
        );
        tokio::spawn(serve(listener, router, std::future::pending(), SHORT));
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .expect("upgrade");
        // Idle for three timeouts, then an echo: the connection is still there.
        tokio::time::sleep(SHORT * 3).await;
        ws.send(tokio_tungstenite::tungstenite::Message::text("still here"))
            .await
            .expect("send after idling");
        let echo = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an echo within the bound")
            .expect("a frame")
            .expect("not an error");
        assert_eq!(echo.into_text().expect("text").as_str(), "still here");
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let (addr, stop) = server().await;
        let _ = stop.send(());
        // The listener is dropped once the accept loop sees the signal.
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still accepting after shutdown");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
