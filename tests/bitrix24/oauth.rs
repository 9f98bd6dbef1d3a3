//! The OAuth pair across a restart of the real `obmen serve`, and portals that moved.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fake::{CLIENT_ID, CLIENT_SECRET, Fake};
use super::{ADMIN, App, webhook_system};

const BIN: &str = env!("CARGO_BIN_EXE_obmen");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Served {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Served {
    async fn start(config: &std::path::Path, port: u16) -> Served {
        let child = Command::new(BIN)
            .args(["serve", "-c", config.to_str().expect("utf8")])
            .env("OBMEN_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn obmen");
        let served = Served {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = served
                .http
                .get(format!("{}/healthz", served.base))
                .send()
                .await;
            if up.is_ok() {
                return served;
            }
            assert!(Instant::now() < deadline, "obmen did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs the manual flow `read` and waits for it to settle; returns its detail as text.
    async fn read(&self, deal: u64) -> String {
        let started = self
            .http
            .post(format!("{}/api/flows/read/run", self.base))
            .bearer_auth(ADMIN)
            .json(&json!({"id": deal}))
            .send()
            .await
            .expect("run");
        let started: Value = started.json().await.expect("json");
        let id = started["exchange_id"].as_u64().expect("exchange id");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let detail = self
                .http
                .get(format!("{}/api/exchanges/{id}", self.base))
                .bearer_auth(ADMIN)
                .send()
                .await
                .expect("detail");
            let text = detail.text().await.expect("body");
            let v: Value = serde_json::from_str(&text).expect("json");
            match v["status"].as_str() {
                Some("succeeded") => return text,
                Some("queued" | "running") => {}
                other => panic!("exchange {id} is {other:?}: {text}"),
            }
            assert!(Instant::now() < deadline, "{text}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM, then the logs.
    fn stop(self) -> String {
        let pid = self.child.id().to_string();
        let term = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(term.success());
        let out = self.child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(0), "serve exits 0 after SIGTERM");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

fn host_of(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Bitrix24 spends the refresh token at every refresh. The rotated pair is kept sealed in the
/// data file: after a restart obmen calls with it (at the `client_endpoint` the refresh
/// named) and refreshes with the kept refresh token at the `server_endpoint`, never with the
/// spent one from the config; no token shows in the data file, the logs or the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rotated_refresh_token_survives_a_restart_sealed() {
    let fake = Fake::start().await;
    fake.with(|p| {
        // The refresh answer sends the calls and the next refresh to the portal's other address.
        p.endpoint = fake.other_url.clone();
        p.expire_after = Some(0);
        p.capacity = 10_000.0;
        for id in 1..=3 {
            p.deals.insert(
                id,
                json!({"ID": id.to_string(), "TITLE": format!("Deal {id}")}),
            );
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("obmen.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
data_dir = "data"
shutdown_grace = "2s"
[auth]
tokens = [ {{ name = "a", role = "admin", token = "{ADMIN}" }} ]
[systems.b24]
kind = "bitrix24"
oauth = {{ domain = "{url}", server = "{url}", client_id = "{CLIENT_ID}", client_secret = "{CLIENT_SECRET}", access_token = "access-0001", refresh_token = "refresh-0001" }}
rate_limit = "50/s"
[[flows]]
name = "read"
trigger = {{ manual = {{}} }}
steps = [ {{ name = "deal", call = "b24.crm.deal.get", args = '{{id: .trigger.id}}' }} ]
"#,
            url = fake.url
        ),
    )
    .expect("config");

    // Run 1: the configured access token has expired; one refresh, then the portal's
    // client_endpoint.
    let first = Served::start(&config, port).await;
    let mut api = vec![first.read(1).await];
    let mut logs = first.stop();
    fake.with(|p| {
        assert_eq!(p.refreshes, 1);
        assert_eq!(p.token_hosts, [host_of(&fake.url)]);
        assert_eq!(
            p.hosts,
            [host_of(&fake.other_url)],
            "client_endpoint is used"
        );
        assert_eq!(p.spent, ["refresh-0001"]);
    });
    let data = std::fs::read(dir.path().join("data/obmen.redb")).expect("data file");
    for token in ["access-0002", "refresh-0002"] {
        let clear = data.windows(token.len()).any(|w| w == token.as_bytes());
        assert!(!clear, "{token} is in the data file in clear text");
    }

    // Run 2, a new process on the same data file: the kept pair works at once.
    let second = Served::start(&config, port).await;
    api.push(second.read(2).await);
    fake.with(|p| {
        assert_eq!(p.refreshes, 1, "no refresh: the kept access token is valid");
        assert_eq!(p.expired_answers, 1);
        assert_eq!(p.hosts.last(), Some(&host_of(&fake.other_url)));
        // Then it expires: the refresh uses the kept refresh token at the server_endpoint.
        p.expire_after = Some(p.oauth_calls);
    });
    api.push(second.read(3).await);
    logs.push_str(&second.stop());
    fake.with(|p| {
        assert_eq!(
            p.refreshes, 2,
            "refreshed with the kept token, not the spent one"
        );
        assert_eq!(p.spent, ["refresh-0001", "refresh-0002"]);
        assert_eq!(p.token_hosts.last(), Some(&host_of(&fake.other_url)));
    });
    let data = std::fs::read(dir.path().join("data/obmen.redb")).expect("data file");
    for token in [
        "access-0001",
        "refresh-0001",
        "access-0002",
        "refresh-0002",
        "access-0003",
        "refresh-0003",
        CLIENT_SECRET,
    ] {
        let clear = data.windows(token.len()).any(|w| w == token.as_bytes());
        assert!(!clear, "{token} is in the data file in clear text");
        assert!(!logs.contains(token), "{token} in the logs:\n{logs}");
        for text in &api {
            assert!(!text.contains(token), "{token} in the API:\n{text}");
        }
    }
    assert!(api[0].contains("auth=***"), "{}", api[0]);
    assert!(logs.contains("new REST address"), "{logs}");
}

/// A moved portal answers 302 with its new address: the POST is sent there again with its
/// body (the client would have followed it as a GET), later calls go straight there, and
/// the journal shows both. A redirect elsewhere is a `config` error naming the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_portal_gets_the_call_again_at_its_new_address() {
    let fake = Fake::start().await;
    fake.with(|p| {
        p.deals.insert(5, json!({"ID": "5", "TITLE": "Deal 5"}));
        p.moved_to = Some(fake.other_url.clone());
    });
    let flow = r#"
[[flows]]
name = "rename"
trigger = { manual = {} }
retry = { max_attempts = 1 }
steps = [
  { name = "rename", call = "b24.crm.deal.update", args = '{id: .trigger.id, fields: {TITLE: .trigger.title}}' },
  { name = "read", call = "b24.crm.deal.get", args = '{id: .trigger.id}' },
]
"#;
    let app =
        App::start(&[webhook_system(&fake, "rate_limit = \"50/s\""), flow.into()].concat()).await;
    let id = app.run("rename", &json!({"id": 5, "title": "Moved"})).await;
    let done = app.wait_for(id, "succeeded").await;
    assert_eq!(done["steps"][1]["output"]["TITLE"], "Moved", "{done:#}");
    fake.with(|p| {
        assert_eq!(p.redirects, 1, "one 302, then the new address");
        assert_eq!(
            p.hosts,
            [host_of(&fake.other_url), host_of(&fake.other_url)]
        );
        let methods: Vec<&str> = p.calls.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(methods, ["crm.deal.update", "crm.deal.get"]);
    });
    let calls = done["attempt_log"][0]["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let seen: Vec<(Value, Value, Value)> = calls
        .iter()
        .map(|c| (c["method"].clone(), c["status"].clone(), c["url"].clone()))
        .collect();
    assert_eq!(seen.len(), 3, "{done:#}");
    assert_eq!(seen[0].1, 302);
    assert_eq!(seen[1].0, "POST");
    assert_eq!(seen[1].1, 200);
    assert!(
        seen[1]
            .2
            .as_str()
            .is_some_and(|u| u.starts_with(&fake.other_url)),
        "{seen:?}"
    );
    let text = done.to_string();
    assert!(!text.contains(super::WEBHOOK_TOKEN), "{text}");

    // A redirect to another path is not a move: config error, with where it pointed.
    fake.with(|p| p.moved_to = Some(format!("{}/elsewhere", fake.url)));
    let app =
        App::start(&[webhook_system(&fake, "rate_limit = \"50/s\""), flow.into()].concat()).await;
    let id = app.run("rename", &json!({"id": 5, "title": "Again"})).await;
    let failed = app.wait_for(id, "failed").await;
    assert_eq!(failed["last_error"]["class"], "config", "{failed:#}");
    assert_eq!(
        failed["last_error"]["message"],
        format!(
            "the portal redirected the call to another path at {}; check the portal address in the config",
            fake.url
        )
    );
}
