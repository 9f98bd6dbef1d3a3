//! Bad input gets a clear 4xx and journals nothing; the API checks tokens and roles; an
//! invalid config reports every problem at once with its file and line.

use std::path::Path;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{ADMIN, HOOK_TOKEN, TestApp, VIEWER, shop_system};

const HMAC_SECRET: &str = "hmac-secret-it-0001";

fn config() -> String {
    let signed = format!(
        r#"
[systems.signed]
kind = "http"
base_url = "http://127.0.0.1:9"
inbound = {{ hmac_header = "X-Signature", secret = "{HMAC_SECRET}", encoding = "hex", prefix = "sha256=" }}

[[flows]]
name = "intake"
trigger = {{ webhook = {{ system = "shop" }} }}
max_body = 100
steps = [ {{ map = '.trigger' }} ]

[[flows]]
name = "signed-intake"
trigger = {{ webhook = {{ system = "signed" }} }}
steps = [ {{ map = '.trigger' }} ]
"#
    );
    shop_system(HOOK_TOKEN) + &signed
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn code_of(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_are_refused_and_none_is_accepted() {
    let app = TestApp::start(&config()).await;
    let json_ct = ("Content-Type", "application/json");
    let token = ("X-Hook-Token", HOOK_TOKEN);

    let (code, body) = app
        .post_raw("/hooks/intake", "{\"id\": 1,", &[json_ct, token])
        .await;
    assert_eq!(
        (code.as_u16(), code_of(&body)),
        (400, "bad_request"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("JSON")
    );

    let (code, body) = app
        .post_raw(
            "/hooks/intake",
            "{\"id\": 1}",
            &[json_ct, ("X-Hook-Token", "not-the-token")],
        )
        .await;
    assert_eq!(
        (code.as_u16(), code_of(&body)),
        (403, "bad_signature"),
        "{body}"
    );
    let (code, body) = app
        .post_raw("/hooks/intake", "{\"id\": 1}", &[json_ct])
        .await;
    assert_eq!(
        (code.as_u16(), code_of(&body)),
        (401, "unverified"),
        "{body}"
    );

    let big = serde_json::to_vec(&json!({"id": 1, "pad": "x".repeat(200)})).expect("json");
    let (code, body) = app.post_raw("/hooks/intake", big, &[json_ct, token]).await;
    assert_eq!(
        (code.as_u16(), code_of(&body)),
        (413, "too_large"),
        "{body}"
    );

    let (code, body) = app
        .post_raw("/hooks/no-such-flow", "{\"id\": 1}", &[json_ct, token])
        .await;
    assert_eq!(
        (code.as_u16(), code_of(&body)),
        (404, "not_found"),
        "{body}"
    );

    let payload = br#"{"id": "h-1"}"#;
    let (code, body) = app
        .post_raw(
            "/hooks/signed-intake",
            &payload[..],
            &[json_ct, ("X-Signature", &sign(b"{\"id\": \"h-2\"}"))],
        )
        .await;
    assert_eq!(
        (code.as_u16(), code_of(&body)),
        (403, "bad_signature"),
        "{body}"
    );
    let (code, body) = app
        .post_raw("/hooks/signed-intake", &payload[..], &[json_ct])
        .await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = app
        .post_raw(
            "/hooks/signed-intake",
            &payload[..],
            &[json_ct, ("X-Signature", &sign(payload))],
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "queued");

    // Only the verified webhook was accepted. Each failed verification is journaled as a
    // rejected exchange (class auth, with its reason) that can never run; malformed JSON,
    // oversized bodies and unknown flows leave nothing.
    let all = app.list("").await;
    let accepted: Vec<_> = all.iter().filter(|e| e["status"] != "rejected").collect();
    assert_eq!(accepted.len(), 1, "{all:?}");
    assert_eq!(
        (
            accepted[0]["flow"].as_str(),
            accepted[0]["external_id"].as_str()
        ),
        (Some("signed-intake"), Some("h-1"))
    );
    let refused: Vec<_> = all.iter().filter(|e| e["status"] == "rejected").collect();
    assert_eq!(
        refused.len(),
        4,
        "wrong + missing token, bad + missing signature: {all:?}"
    );
    for r in &refused {
        assert_eq!(r["last_error"]["class"], "auth", "{r}");
        assert_eq!(r["attempts"], 0, "never run: {r}");
        let id = r["id"].as_u64().expect("id");
        let (code, answer) = app
            .post_as(&format!("/api/exchanges/{id}/retry"), Some(ADMIN), None)
            .await;
        assert_eq!(
            code, 409,
            "a refused webhook keeps no input to retry: {answer}"
        );
    }
    let reasons: Vec<&str> = refused
        .iter()
        .filter_map(|r| r["last_error"]["message"].as_str())
        .collect();
    assert!(
        reasons.iter().any(|m| m.contains("does not match")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|m| m.contains("carries no")),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_checks_tokens_and_roles() {
    let app = TestApp::start(&config()).await;
    let (code, body) = app.get_as("/api/exchanges", None).await;
    assert_eq!((code.as_u16(), code_of(&body)), (401, "unauthorized"));
    let (code, _) = app
        .get_as("/api/exchanges", Some("admin-token-it-0002"))
        .await;
    assert_eq!(code, 401, "an unknown token");
    let (code, _) = app.get_as("/api/exchanges", Some(VIEWER)).await;
    assert_eq!(code, 200, "a viewer reads");
    let (code, _) = app.get_as("/metrics", None).await;
    assert_eq!(code, 401);

    let (code, body) = app
        .post_as("/api/exchanges/1/retry", Some(VIEWER), None)
        .await;
    assert_eq!(
        (code.as_u16(), code_of(&body)),
        (403, "forbidden"),
        "a viewer does not retry"
    );
    let (code, _) = app
        .post_as("/api/exchanges/retry?status=failed", Some(VIEWER), None)
        .await;
    assert_eq!(code, 403);
    let (code, _) = app
        .post_as(
            "/api/flows/intake/dry-run",
            Some(VIEWER),
            Some(&json!({"id": 1})),
        )
        .await;
    assert_eq!(code, 403);
    let (code, _) = app.post_as("/api/exchanges/1/retry", None, None).await;
    assert_eq!(code, 401);

    let (code, body) = app
        .post_as("/api/exchanges/1/retry", Some(ADMIN), None)
        .await;
    assert_eq!((code.as_u16(), code_of(&body)), (404, "not_found"));
    let (code, body) = app
        .get_as("/api/exchanges?status=nonsense", Some(ADMIN))
        .await;
    assert_eq!((code.as_u16(), code_of(&body)), (400, "bad_request"));
    let (code, _) = app
        .post_as(
            "/api/flows/no-such-flow/dry-run",
            Some(ADMIN),
            Some(&json!({})),
        )
        .await;
    assert_eq!(code, 404);
    assert!(
        app.list("").await.is_empty(),
        "a dry run of nothing journals nothing"
    );
}

/// Line numbers below are of this text; keep them in step when editing it.
const BAD_CONFIG: &str = r#"[server]
data_dir = "data"
colour = "blue"

[systems.crm]
kind = "http"
base_url = "http://127.0.0.1:9"
ops = { create = { method = "POST", path = "/x" } }

[[flows]]
name = "bad-jq"
trigger = { manual = {} }
steps = [ { map = '.a | ' } ]

[[flows]]
name = "bad-cron"
trigger = { schedule = { cron = "every monday" } }
steps = [ { call = "crm.delete_everything" } ]
"#;

#[test]
fn an_invalid_config_names_every_problem_with_its_line() {
    let path = Path::new("/etc/obmen/obmen.toml");
    let Err(errors) = obmen::config::load_str(path, BAD_CONFIG) else {
        panic!("the config must not load")
    };
    let text = errors.to_string();
    let line = |n: usize, key: &str, says: &str| {
        let prefix = format!("/etc/obmen/obmen.toml:{n}:");
        let found = errors
            .lines
            .iter()
            .any(|l| l.starts_with(&prefix) && l.contains(key) && l.contains(says));
        assert!(
            found,
            "no line {n} error for `{key}` saying `{says}` in:\n{text}"
        );
    };
    line(3, "server.colour", "unknown key");
    line(13, "flows[0].steps[0].map", "jq");
    line(17, "flows[1].trigger.schedule.cron", "every monday");
    line(18, "flows[1].steps[0].call", "delete_everything");
    assert_eq!(errors.lines.len(), 4, "exactly these problems:\n{text}");
}
