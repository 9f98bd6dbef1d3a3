//! Outbound signing per the Standard Webhooks spec, checked by a verifier obmen did not
//! write: Python's `standardwebhooks` package (the spec's reference library, from PyPI).
//! The delivery is signed over the exact bytes sent, keeps its `webhook-id` on redelivery,
//! a tampered body or timestamp is refused, and the journal shows the signature masked.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Method};
use serde_json::{Map, Value, json};

use crate::support::fake::{Fake, Fault, Received};
use crate::support::{CRM_TOKEN, HOOK_TOKEN, TestApp, attempts, crm_system, id_of, shop_system};

/// 32 random bytes in the spec's `whsec_<base64>` form.
const SIGN_SECRET: &str = "whsec_pkgg3KdRmjMN9RNmt2TeAgwVPRFLZhcPQ89KwFiOq/4=";
const SIGN_KEY: &str = "pkgg3KdRmjMN9RNmt2TeAgwVPRFLZhcPQ89KwFiOq/4";

const FLOW: &str = r#"
[[flows]]
name = "notify-customer"
trigger = { webhook = { system = "shop" } }
retry = { max_attempts = 3, initial = "100ms", max = "1s" }
steps = [ { name = "deliver", call = "crm.create_lead", args = '{order: .trigger.id, note: .trigger.note}' } ]
"#;

const INSTALL: &str =
    "run `pip install standardwebhooks` (python3 -m pip install standardwebhooks)";

/// Fails (never skips) when the verifier cannot run.
fn require_verifier() {
    let out = Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 cannot be started ({e}); this test needs python3 with the standardwebhooks package: {INSTALL}")
        });
    assert!(
        out.status.success(),
        "Python's standardwebhooks package is missing: {INSTALL}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `Webhook(secret).verify(body, headers)` in Python on what the receiver recorded.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let map: Map<String, Value> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), json!(v.to_str().ok()?))))
        .collect();
    let headers_file = dir.path().join("headers.json");
    let body_file = dir.path().join("body");
    std::fs::write(&headers_file, Value::Object(map).to_string()).expect("write headers");
    std::fs::write(&body_file, body).expect("write body");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/verify_standard_webhook.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&headers_file)
        .arg(&body_file)
        .env("STANDARD_WEBHOOK_SECRET", secret)
        .output()
        .expect("python3 runs");
    assert_ne!(
        out.status.code(),
        Some(3),
        "Python's standardwebhooks package is missing: {INSTALL}"
    );
    out
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_verified(secret: &str, r: &Received) {
    let out = verify(secret, &r.headers, &r.raw_body);
    assert!(
        out.status.success(),
        "standardwebhooks refused obmen's delivery:\n{}\nheaders: {:?}\nbody: {}",
        describe(&out),
        r.headers,
        String::from_utf8_lossy(&r.raw_body)
    );
}

/// Refused as a signature mismatch (exit 1), not as a crash of the check itself.
fn assert_refused(secret: &str, headers: &HeaderMap, body: &[u8], what: &str) {
    let out = verify(secret, headers, body);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what} must be refused by standardwebhooks:\n{}",
        describe(&out)
    );
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_per_standard_webhooks_and_verified_by_the_reference_library() {
    require_verifier();
    let fake = Fake::start(CRM_TOKEN).await;
    // The first delivery meets a 500: the retry must carry the same webhook-id.
    fake.script(Method::POST, "/leads", vec![Fault::Status(500)]);
    let sign = format!("\n[systems.crm.sign]\nsecret = \"{SIGN_SECRET}\"\n");
    let app = TestApp::start(
        &[
            crm_system(fake.url(), CRM_TOKEN, "5s"),
            sign,
            shop_system(HOOK_TOKEN),
            FLOW.into(),
        ]
        .concat(),
    )
    .await;

    // Non-ASCII, quotes, a slash and HTML: the signature must cover the bytes as sent.
    let payload = json!({"id": "o-77", "note": "Заказ №77 — <b>\"срочно\"</b> a/b"});
    let (code, answer) = app.hook("notify-customer", &payload, None).await;
    assert_eq!(code, 200, "{answer}");
    let id = id_of(&answer);
    let detail = app.wait_for(id, "succeeded").await;

    let posts = fake.requests("POST", "/leads");
    assert_eq!(posts.len(), 2, "a failed delivery and its retry");
    assert_eq!((posts[0].status, posts[1].status), (500, 201));
    let webhook_id = format!("{id}:deliver");
    let started = now_secs();
    for post in &posts {
        assert_eq!(post.header("webhook-id"), Some(webhook_id.as_str()));
        let ts: u64 = post
            .header("webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .expect("a numeric webhook-timestamp");
        assert!(
            ts.abs_diff(started) < 60,
            "webhook-timestamp {ts} is not now ({started})"
        );
        let sig = post.header("webhook-signature").expect("webhook-signature");
        assert!(sig.starts_with("v1,"), "{sig}");
        assert_eq!(post.header("content-type"), Some("application/json"));
        assert_eq!(
            post.body,
            json!({"order": "o-77", "note": payload["note"]}),
            "the body is the mapped JSON"
        );
        // The real check: the reference library accepts every delivery, first and retry.
        assert_verified(SIGN_SECRET, post);
    }

    // Tampering is caught: one changed byte of the body, a replay with a fresh timestamp,
    // and a verifier holding another secret.
    let delivered = &posts[1];
    let tampered = String::from_utf8(delivered.raw_body.to_vec())
        .expect("utf-8 body")
        .replace("o-77", "o-78");
    assert_ne!(tampered.as_bytes(), &delivered.raw_body[..]);
    assert_refused(
        SIGN_SECRET,
        &delivered.headers,
        tampered.as_bytes(),
        "a tampered body",
    );
    let mut replayed = delivered.headers.clone();
    let sent_at: u64 = delivered
        .header("webhook-timestamp")
        .and_then(|t| t.parse().ok())
        .expect("a numeric webhook-timestamp");
    let later = (sent_at + 1).to_string();
    replayed.insert("webhook-timestamp", later.parse().expect("header value"));
    assert_refused(
        SIGN_SECRET,
        &replayed,
        &delivered.raw_body,
        "a replay with a new timestamp",
    );
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert_refused(
        other,
        &delivered.headers,
        &delivered.raw_body,
        "another secret",
    );

    // The journal: the signature masked whole, id and timestamp visible, the body exactly
    // the bytes sent; the secret, the bare key and the signatures appear nowhere.
    let log = attempts(&detail);
    assert_eq!(log.len(), 2, "{log:?}");
    for (attempt, post) in log.iter().zip(&posts) {
        let call = &attempt["calls"][0];
        assert_eq!(call["sent"], true);
        assert_eq!(call["headers"]["webhook-signature"], "***", "{call}");
        assert_eq!(call["headers"]["webhook-id"], webhook_id.as_str());
        assert_eq!(
            call["headers"]["webhook-timestamp"].as_str(),
            post.header("webhook-timestamp")
        );
        assert_eq!(
            call["body"].as_str().map(str::as_bytes),
            Some(&post.raw_body[..]),
            "the journal shows the exact bytes that were signed and sent"
        );
    }
    let text = detail.to_string();
    assert!(!text.contains(SIGN_KEY), "the key leaks into the journal");
    for post in &posts {
        let sig = post.header("webhook-signature").unwrap_or_default();
        let b64 = sig.trim_start_matches("v1,");
        assert!(!text.contains(b64), "the signature leaks into the journal");
    }
}
