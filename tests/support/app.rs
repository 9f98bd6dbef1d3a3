//! obmen under test for the connector test binaries (included with `#[path]`): a config
//! written into a temp dir, `obmen::app::serve` on 127.0.0.1:0 in its own task with its own
//! cancellation token, and the admin API calls the tests make.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN: &str = "admin-token-test-0001";
/// Long enough for a slow CI box, short enough that a hang fails the test.
pub const WAIT: Duration = Duration::from_secs(30);

/// `[server]` (data dir, a short shutdown grace) and `[auth]` (the admin token), then `body`.
pub fn config(data: &Path, body: &str) -> String {
    format!(
        r#"[server]
data_dir = "{data}"
shutdown_grace = "2s"

[auth]
tokens = [ {{ name = "integrator", role = "admin", token = "{ADMIN}" }} ]
{body}"#,
        data = data.display()
    )
}

/// Whether the exchange is still waiting or running (it will change without a new request).
fn busy(exchange: &Value) -> bool {
    matches!(
        exchange["status"].as_str(),
        Some("received" | "queued" | "running" | "retrying")
    )
}

pub struct App {
    pub dir: TempDir,
    pub base: String,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl App {
    /// Starts obmen on `[server]`, `[auth]` and `body` (systems and flows).
    pub async fn start(body: &str) -> App {
        App::start_with(|data| config(data, body)).await
    }

    /// Starts obmen on the complete config `text(data dir)` makes.
    pub async fn start_with(text: impl FnOnce(&Path) -> String) -> App {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = text(&dir.path().join("data"));
        App::serve_in(dir, text).await
    }

    /// Serves the complete config `text` (written into `dir`, whose `data` it names).
    pub async fn serve_in(dir: TempDir, text: String) -> App {
        let path = dir.path().join("obmen.toml");
        std::fs::write(&path, &text).expect("write the config");
        let loaded = obmen::config::load_str(&path, &text)
            .unwrap_or_else(|e| panic!("the test config is invalid:\n{e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(obmen::app::serve(loaded, listener, shutdown.clone()));
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        App {
            dir,
            base,
            client,
            shutdown,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The status and the body (JSON, or the text as a JSON string).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = req.send().await.expect("obmen answers");
        let status = r.status();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// An admin `GET` that must answer 200.
    pub async fn get(&self, path: &str) -> Value {
        let (s, v) = self
            .send(self.client.get(self.url(path)).bearer_auth(ADMIN))
            .await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    pub async fn exchange(&self, id: u64) -> Value {
        self.get(&format!("/api/exchanges/{id}")).await
    }

    /// The exchanges of one page of `/api/exchanges?<query>`.
    pub async fn list(&self, query: &str) -> Vec<Value> {
        let page = self.get(&format!("/api/exchanges?{query}")).await;
        page["items"].as_array().cloned().unwrap_or_default()
    }

    /// The exchanges of `flow` (up to 1000), oldest first.
    pub async fn exchanges(&self, flow: &str) -> Vec<Value> {
        let mut all = self.list(&format!("flow={flow}&limit=1000")).await;
        all.sort_by_key(|e| e["id"].as_u64());
        all
    }

    /// Waits until `flow` has at least `n` exchanges and none is waiting or running; they,
    /// oldest first.
    pub async fn settle(&self, flow: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let all = self.exchanges(flow).await;
            if !all.iter().any(busy) && all.len() >= n {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "{flow} does not settle: {all:#?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the exchange is settled (not waiting or running); its detail.
    pub async fn settled(&self, id: u64) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let detail = self.exchange(id).await;
            if !busy(&detail) {
                return detail;
            }
            assert!(Instant::now() < deadline, "exchange {id}:\n{detail:#}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts a manual run; the new exchange's id.
    pub async fn run(&self, flow: &str, body: &Value) -> u64 {
        let (s, v) = self
            .send(
                self.client
                    .post(self.url(&format!("/api/flows/{flow}/run")))
                    .bearer_auth(ADMIN)
                    .json(body),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "run {flow}: {v}");
        v["exchange_id"].as_u64().expect("exchange id")
    }

    /// Polls until the exchange has `status`; fails as soon as it settles on another one.
    pub async fn wait_for(&self, id: u64, status: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let d = self.exchange(id).await;
            let now = d["status"].as_str().unwrap_or_default().to_owned();
            if now == status {
                return d;
            }
            let settled = matches!(
                now.as_str(),
                "succeeded" | "failed" | "rejected" | "duplicate" | "skipped" | "dry_run"
            );
            assert!(
                !settled && Instant::now() < deadline,
                "exchange {id} is {now}, expected {status}:\n{d:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A graceful stop, as on SIGTERM; waits until `serve` returned. Hands back the temp dir
    /// (so the closed data file can be read) and the data dir's path.
    pub async fn stop(mut self) -> (TempDir, PathBuf) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(WAIT, task)
                .await
                .expect("serve stops within the wait");
            result.expect("serve task").expect("serve returns Ok");
        }
        let data = self.data_dir();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        (dir, data)
    }
}
