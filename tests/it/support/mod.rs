//! The app under test: a config written into a temp dir, `obmen::app::serve` on
//! 127.0.0.1:0 in its own task with its own cancellation token, and a client for it.

#[path = "../../support/app.rs"]
mod app;
pub mod fake;

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

pub use app::{ADMIN, WAIT};
pub const VIEWER: &str = "viewer-token-it-0001";
/// What the `shop` system's webhooks must carry in `X-Hook-Token`.
pub const HOOK_TOKEN: &str = "hook-token-it-0001";
/// What the fake CRM expects as its bearer token (unless a test picks another).
pub const CRM_TOKEN: &str = "crm-token-it-0001";

/// The `crm` system pointing at a fake, with ops and the `lead` entity.
pub fn crm_system(url: &str, token: &str, timeout: &str) -> String {
    format!(
        r#"
[systems.crm]
kind = "http"
base_url = "{url}"
auth = {{ bearer = "{token}" }}
timeout = "{timeout}"

[systems.crm.ops]
create_lead = {{ method = "POST", path = "/leads" }}
add_note = {{ method = "POST", path = "/notes" }}

[systems.crm.entities.lead]
path = "/leads"
results = "items"
"#
    )
}

/// The `shop` system: a webhook source verified by a shared token.
pub fn shop_system(token: &str) -> String {
    format!(
        r#"
[systems.shop]
kind = "http"
base_url = "http://127.0.0.1:9"
inbound = {{ token_header = "X-Hook-Token", token = "{token}" }}
"#
    )
}

/// `[server]` and `[auth]` (the admin and the viewer token), then `body`.
fn config(data: &Path, body: &str) -> String {
    format!(
        r#"[server]
data_dir = "{data}"
shutdown_grace = "2s"

[auth]
tokens = [
  {{ name = "integrator", role = "admin", token = "{ADMIN}" }},
  {{ name = "client", role = "viewer", token = "{VIEWER}" }},
]
{body}"#,
        data = data.display(),
    )
}

/// obmen under test (tests/support/app.rs) with the viewer token besides the admin's, and
/// the calls of the engine tests.
pub struct TestApp {
    app: app::App,
}

impl std::ops::Deref for TestApp {
    type Target = app::App;
    fn deref(&self) -> &app::App {
        &self.app
    }
}

impl TestApp {
    /// Starts obmen with `[server]` and `[auth]` filled in and `body` (systems and flows).
    pub async fn start(body: &str) -> TestApp {
        let app = app::App::start_with(|data| config(data, body)).await;
        TestApp { app }
    }

    /// Stops obmen and starts it again on the same data file with another `body` (a
    /// changed config, as an integrator deploys a fix).
    pub async fn restart(self, body: &str) -> TestApp {
        let (dir, data) = self.app.stop().await;
        let app = app::App::serve_in(dir, config(&data, body)).await;
        TestApp { app }
    }

    /// Graceful shutdown, as on SIGTERM; hands back the temp dir so that the data file can
    /// be read after the store closed it.
    pub async fn stop(self) -> TempDir {
        self.app.stop().await.0
    }

    /// A webhook with the shop's token and a request id.
    pub async fn hook(
        &self,
        flow: &str,
        payload: &Value,
        request_id: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(self.url(&format!("/hooks/{flow}")))
            .header("X-Hook-Token", HOOK_TOKEN)
            .json(payload);
        if let Some(id) = request_id {
            req = req.header("X-Request-Id", id);
        }
        self.send(req).await
    }

    /// A raw request with the given headers, for the bad-input tests.
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.client.post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    pub async fn get_as(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    pub async fn post_as(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.post(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(req).await
    }

    /// POST as admin, expecting 200.
    pub async fn post(&self, path: &str, body: Option<&Value>) -> Value {
        let (status, answer) = self.post_as(path, Some(ADMIN), body).await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {answer}");
        answer
    }

    /// The raw text of a GET (for /metrics and the OpenAPI document).
    pub async fn text(&self, path: &str, token: &str) -> String {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.expect("body")
    }
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// The id in a webhook or retry answer.
pub fn id_of(answer: &Value) -> u64 {
    answer["exchange_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no exchange_id in {answer}"))
}

/// Error classes of the failed attempts, in order.
pub fn error_classes(detail: &Value) -> Vec<String> {
    attempts(detail)
        .iter()
        .filter_map(|a| a["error"]["class"].as_str().map(str::to_owned))
        .collect()
}

pub fn attempts(detail: &Value) -> Vec<Value> {
    detail["attempt_log"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Every file under `dir`, read whole.
pub fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).expect("read file")));
        }
    }
    out
}
