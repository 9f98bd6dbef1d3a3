//! The command line on the real binary: `check` lists every problem with file and line,
//! `init` writes a config, `serve` keeps secrets out of its logs and data file and stops
//! cleanly on SIGTERM, `backup` copies the data file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

const BIN: &str = env!("CARGO_BIN_EXE_obmen");

fn obmen(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("OBMEN_LOG");
    cmd
}

#[test]
fn check_lists_every_problem_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("obmen.toml");
    std::fs::write(
        &config,
        r#"[server]
listen = "127.0.0.1:0"
colour = "blue"

[systems.crm]
kind = "http"
base_url = "http://127.0.0.1:9"
[systems.crm.ops.create]
method = "POST"
path = "/x"

[[flows]]
name = "f"
trigger = { schedule = { cron = "0 61 * * *", tz = "Asia/Almaty" } }
steps = [
  { map = '.a |' },
  { call = "crm.nope" },
  { upsert = "crm.lead", args = '{}' },
]
"#,
    )
    .expect("write");
    let out = obmen(&["check", "-c", config.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "check must exit 1 on errors");
    let err = String::from_utf8_lossy(&out.stderr);
    let name = config.display().to_string();
    for (line, key) in [
        (3, "server.colour: unknown key"),
        (14, "flows[0].trigger.schedule.cron"),
        (16, "flows[0].steps[0].map: jq"),
        (
            17,
            "flows[0].steps[1].call: system `crm` (http) has no operation `nope`",
        ),
        (
            18,
            "flows[0].steps[2].upsert: system `crm` (http) has no entity `lead`",
        ),
    ] {
        let prefix = format!("{name}:{line}:");
        assert!(
            err.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(key)),
            "missing `{prefix} … {key}` in:\n{err}"
        );
    }
    assert!(err.contains("5 problem(s) found"), "{err}");
}

#[test]
fn check_accepts_the_shipped_example_and_names_missing_secrets() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/obmen.toml");
    let example = example.to_str().expect("utf8");
    let out = obmen(&["check", "-c", example])
        .env("OBMEN_SECRET_ADMIN_TOKEN", "admin-token-123456")
        .env("OBMEN_SECRET_CRM_TOKEN", "crm-token-123456")
        .env("OBMEN_SECRET_SHOP_HOOK", "shop-hook-123456")
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = obmen(&["check", "-c", example])
        .env_remove("OBMEN_SECRET_CRM_TOKEN")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OBMEN_SECRET_CRM_TOKEN"), "{err}");
}

#[test]
fn init_writes_a_config_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8");
    assert_eq!(
        obmen(&["init", "--dir", d])
            .output()
            .expect("run")
            .status
            .code(),
        Some(0)
    );
    let written = std::fs::read_to_string(dir.path().join("obmen.toml")).expect("written");
    assert!(written.contains("[[flows]]"));
    assert_eq!(
        obmen(&["init", "--dir", d])
            .output()
            .expect("run")
            .status
            .code(),
        Some(1),
        "must not overwrite"
    );
}

const CANARY: &str = "CANARY-cli-7d1e55aa90";
const HOOK_TOKEN: &str = "hook-token-canary-5b2f";

/// A target that always fails and echoes the credentials it got, like a careless API.
async fn echoing_target(hits: Arc<Mutex<u32>>) -> u16 {
    let app = Router::new().route(
        "/leads",
        post(move |headers: HeaderMap| {
            let hits = hits.clone();
            async move {
                *hits.lock().expect("lock") += 1;
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{{\"error\":\"bad gateway\",\"you_sent\":\"{auth}\"}}"),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_secrets_out_of_logs_and_data_and_stops_on_sigterm() {
    let hits = Arc::new(Mutex::new(0));
    let target = echoing_target(hits.clone()).await;
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("obmen.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
data_dir = "data"
shutdown_grace = "5s"
cli_token = "secret:cli_admin"
[auth]
tokens = [ {{ name = "a", role = "admin", token = "secret:cli_admin" }} ]
[systems.shop]
kind = "http"
base_url = "http://127.0.0.1:9"
inbound = {{ token_header = "X-Token", token = "secret:cli_hook" }}
[systems.crm]
kind = "http"
base_url = "http://127.0.0.1:{target}"
auth = {{ bearer = "secret:cli_canary" }}
[systems.crm.ops.lead]
method = "POST"
path = "/leads"
[[flows]]
name = "f"
trigger = {{ webhook = {{ system = "shop" }} }}
retry = {{ max_attempts = 3, initial = "50ms", max = "200ms" }}
steps = [ {{ call = "crm.lead", args = '{{id: .trigger.id, token_copy: .trigger.auth}}' }} ]
"#
        ),
    )
    .expect("write");
    let child = Command::new(BIN)
        .args(["serve", "-c", config.to_str().expect("utf8")])
        .env("OBMEN_LOG", "debug")
        .env("OBMEN_SECRET_CLI_ADMIN", "admin-token-cli-1234")
        .env("OBMEN_SECRET_CLI_HOOK", HOOK_TOKEN)
        .env("OBMEN_SECRET_CLI_CANARY", CANARY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    // The payload carries the secret too, as a sender echoing its auth would.
    let body = serde_json::json!({"id": "order-1", "auth": CANARY});
    loop {
        let sent = http
            .post(format!("{base}/hooks/f"))
            .header("X-Token", HOOK_TOKEN)
            .json(&body)
            .send()
            .await;
        if matches!(&sent, Ok(r) if r.status().is_success()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not come up: {sent:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Three attempts exhaust the retry policy: wait for the exchange to fail.
    let listing = loop {
        let api = http
            .get(format!("{base}/api/exchanges?flow=f&status=failed"))
            .bearer_auth("admin-token-cli-1234")
            .send()
            .await
            .expect("list");
        let text = api.text().await.expect("body");
        if text.contains("\"failed\"") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the exchange did not fail: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(*hits.lock().expect("lock"), 3, "one call per attempt");
    let detail_id = listing
        .split("\"id\":")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .expect("an id")
        .to_owned();
    let detail = http
        .get(format!("{base}/api/exchanges/{detail_id}"))
        .bearer_auth("admin-token-cli-1234")
        .send()
        .await
        .expect("show");
    let detail = detail.text().await.expect("body");
    assert!(
        detail.contains("you_sent"),
        "the target's own error text is journaled: {detail}"
    );
    assert!(
        detail.contains(r#"you_sent\":\"Bearer ***"#),
        "the echoed token is journaled masked: {detail}"
    );

    // The CLI talks to the running server with the config's cli_token.
    let cfg = config.to_str().expect("utf8");
    let cli = |args: &[&str]| {
        let out = obmen(args)
            .env("OBMEN_SECRET_CLI_ADMIN", "admin-token-cli-1234")
            .env("OBMEN_SECRET_CLI_HOOK", HOOK_TOKEN)
            .env("OBMEN_SECRET_CLI_CANARY", CANARY)
            .output()
            .expect("cli");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, failed) = cli(&["exchanges", "list", "--status", "failed", "-c", cfg]);
    assert_eq!(code, Some(0));
    assert!(failed.contains(&detail_id), "{failed}");
    let (code, shown) = cli(&["exchanges", "show", &detail_id, "-c", cfg]);
    assert!(code == Some(0) && shown.contains("attempt_log"), "{shown}");
    let (code, retried) = cli(&["exchanges", "retry", &detail_id, "-c", cfg]);
    assert!(
        code == Some(0) && retried.contains("\"queued\""),
        "{retried}"
    );
    let payload = dir.path().join("payload.json");
    std::fs::write(&payload, r#"{"id": "order-2"}"#).expect("payload");
    let (code, dry) = cli(&["dry-run", "f", payload.to_str().expect("utf8"), "-c", cfg]);
    assert!(code == Some(0) && dry.contains("\"sent\": false"), "{dry}");

    let pid = child.id().to_string();
    let term = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(term.success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(0),
        "serve must exit 0 after SIGTERM"
    );
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(logs.contains("shutting down"), "{logs}");

    let backup = dir.path().join("copy.redb");
    let b = obmen(&[
        "backup",
        backup.to_str().expect("utf8"),
        "-c",
        config.to_str().expect("utf8"),
    ])
    .env("OBMEN_SECRET_CLI_ADMIN", "admin-token-cli-1234")
    .env("OBMEN_SECRET_CLI_HOOK", HOOK_TOKEN)
    .env("OBMEN_SECRET_CLI_CANARY", CANARY)
    .output()
    .expect("backup");
    assert_eq!(
        b.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&b.stderr)
    );

    for (what, text) in [
        ("logs", logs.as_bytes().to_vec()),
        ("listing", listing.into_bytes()),
        ("detail", detail.into_bytes()),
    ] {
        assert!(
            !contains(&text, CANARY.as_bytes()),
            "the canary leaked into the {what}"
        );
        assert!(
            !contains(&text, HOOK_TOKEN.as_bytes()),
            "the hook token leaked into the {what}"
        );
    }
    for file in [dir.path().join("data/obmen.redb"), backup] {
        let bytes = std::fs::read(&file).expect("read data file");
        assert!(bytes.len() > 4096, "{} looks empty", file.display());
        assert!(
            !contains(&bytes, CANARY.as_bytes()),
            "the canary is in {}",
            file.display()
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn run_with_stdin(args: &[&str], input: &str) -> (Option<i32>, String, String) {
    use std::io::Write as _;
    let mut child = obmen(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn secrets_are_stored_sealed_resolved_by_check_and_survive_key_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("obmen.toml");
    std::fs::write(
        &config,
        "[server]\ndata_dir = \"data\"\n[auth]\ntokens = [ { name = \"a\", role = \"admin\", token = \"secret:admin_tok\" } ]\n",
    )
    .expect("write");
    let cfg = config.to_str().expect("utf8");
    let value = "sealed-value-CANARY-42";
    let (code, _, err) = run_with_stdin(
        &["secret", "set", "admin_tok", "-c", cfg],
        &format!("{value}\n"),
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, listed, _) = run_with_stdin(&["secret", "list", "-c", cfg], "");
    assert_eq!(code, Some(0));
    assert!(listed.starts_with("admin_tok\tset "), "{listed}");
    assert!(!listed.contains(value), "list never prints values");
    let check = obmen(&["check", "-c", cfg]).output().expect("check");
    assert_eq!(
        check.status.code(),
        Some(0),
        "check resolves the secret from the store: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let data_file = dir.path().join("data/obmen.redb");
    let bytes = std::fs::read(&data_file).expect("data file");
    assert!(
        !contains(&bytes, value.as_bytes()),
        "the secret rests sealed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("master.key")), 0o600);
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        assert_eq!(mode(&data_file), 0o600);
    }

    let before = std::fs::read(dir.path().join("master.key")).expect("key");
    let (code, out, err) = run_with_stdin(&["secret", "rotate-key", "-c", cfg], "");
    assert_eq!(code, Some(0), "{out}{err}");
    let after = std::fs::read(dir.path().join("master.key")).expect("key");
    assert_ne!(before, after, "a new key");
    let kept = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("master.key.old-")
        });
    assert!(kept, "the old key is kept for older backups");
    let check = obmen(&["check", "-c", cfg]).output().expect("check");
    assert_eq!(
        check.status.code(),
        Some(0),
        "secrets open under the new key"
    );

    let (code, _, _) = run_with_stdin(&["secret", "rm", "nope", "-c", cfg], "");
    assert_eq!(code, Some(1));
    let (code, _, err) = run_with_stdin(&["secret", "set", "short", "-c", cfg], "abc\n");
    assert_eq!(code, Some(1), "too short: {err}");

    std::fs::write(dir.path().join("master.key"), [7u8; 32]).expect("wrong key");
    let (code, _, err) = run_with_stdin(&["secret", "list", "-c", cfg], "");
    assert_eq!(code, Some(1));
    assert!(err.contains("master key does not match"), "{err}");
}
