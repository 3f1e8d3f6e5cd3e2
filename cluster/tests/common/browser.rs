//! Test support: Debian's chromium, headless, driven over the DevTools protocol (a WebSocket of
//! JSON commands): load a page, evaluate script in it, take a screenshot.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long chromium may take to start and open its first page (seconds on a loaded CI box).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of one DevTools command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Browser {
    child: Child,
    socket: Socket,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Start headless chromium on `url` and attach to that page.
    pub async fn open(url: &str) -> Browser {
        let binary = super::prom::debian_binary("chromium", "chromium");
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(binary)
            .args([
                "--headless",
                // The tests run as root in CI, where chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1400,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromium");
        let port = wait_for_port(profile.path()).await;
        let page = wait_for_page(port, url).await;
        let ws = page["webSocketDebuggerUrl"]
            .as_str()
            .expect("page webSocketDebuggerUrl");
        let (socket, _) = tokio_tungstenite::connect_async(ws)
            .await
            .unwrap_or_else(|e| panic!("DevTools WebSocket {ws}: {e}"));
        Browser {
            child,
            socket,
            next_id: 0,
            _profile: profile,
        }
    }

    /// One DevTools command: its result, or a panic with the protocol's error.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(Message::Text(message.into()))
            .await
            .unwrap_or_else(|e| panic!("{method}: send: {e}"));
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer within {COMMAND_TIMEOUT:?}"));
            let Some(Ok(Message::Text(text))) = frame else {
                match frame {
                    Some(Ok(_)) => continue,
                    other => panic!("{method}: DevTools socket ended: {other:?}"),
                }
            };
            let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if v["id"] != id {
                continue; // an event, or another command's answer
            }
            if let Some(e) = v.get("error") {
                panic!("{method}: {e}");
            }
            return v["result"].clone();
        }
    }

    /// Evaluate `expression` in the page; its JSON value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// A PNG of the page as it is shown, written to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// chromium writes its DevTools port to `DevToolsActivePort` in the profile once it listens.
async fn wait_for_port(profile: &Path) -> u16 {
    let deadline = Instant::now() + START_TIMEOUT;
    let file = profile.join("DevToolsActivePort");
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                return port;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "chromium wrote no {} within {START_TIMEOUT:?}",
        file.display()
    );
}

/// The DevTools target of the page showing `url`.
async fn wait_for_page(port: u16, url: &str) -> Value {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/json/list")).await {
            if let Ok(targets) = r.json::<Value>().await {
                let page = targets.as_array().and_then(|ts| {
                    ts.iter()
                        .find(|t| t["type"] == "page" && t["url"].as_str() == Some(url))
                        .cloned()
                });
                if let Some(page) = page {
                    return page;
                }
                last = targets;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no chromium page on {url} within {START_TIMEOUT:?} (targets: {last})");
}
