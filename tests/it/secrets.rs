//! A canary secret used in the config never reaches the data file or any API answer, even
//! when the target echoes it back in an error body and a sender puts it in a payload.

use axum::http::Method;
use serde_json::json;

use crate::support::fake::{Fake, Fault};
use crate::support::{ADMIN, TestApp, VIEWER, all_bytes, crm_system, error_classes, id_of};

const CANARY_TOKEN: &str = "CANARY-tok-9f8e7d6c5b4a";
const CANARY_HOOK: &str = "CANARY-hook-1a2b3c4d5e";
/// What any part of either canary looks like.
const TELL: &str = "CANARY-";

const FLOW: &str = r#"
[[flows]]
name = "canary"
trigger = { webhook = { system = "shop" } }
retry = { max_attempts = 2, initial = "100ms", max = "1s" }
steps = [ { name = "create", call = "crm.create_lead", args = '{phone: .trigger.phone, note: .trigger.note}' } ]
"#;

fn config(fake: &Fake) -> String {
    let shop = format!(
        "\n[systems.shop]\nkind = \"http\"\nbase_url = \"http://127.0.0.1:9\"\ninbound = {{ token_header = \"X-Hook-Token\", token = \"{CANARY_HOOK}\" }}\n"
    );
    [
        crm_system(fake.url(), CANARY_TOKEN, "5s"),
        shop,
        FLOW.into(),
    ]
    .concat()
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(TELL), "{what} leaks a secret:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_appears_in_no_answer_and_not_in_the_data_file() {
    let fake = Fake::start(CANARY_TOKEN).await;
    fake.script(
        Method::POST,
        "/leads",
        vec![Fault::EchoAuth, Fault::EchoAuth],
    );
    let app = TestApp::start(&config(&fake)).await;

    let payload = json!({"id": "c-1", "phone": "+77010000008", "note": format!("the sender echoed {CANARY_HOOK}")});
    let body = payload.to_string();
    let headers = [
        ("Content-Type", "application/json"),
        ("X-Hook-Token", CANARY_HOOK),
    ];
    let (code, answer) = app.post_raw("/hooks/canary", body.clone(), &headers).await;
    assert_eq!(code, 200, "{answer}");
    let id = id_of(&answer);
    let mut seen = vec![("webhook answer", answer.to_string())];
    let (code, refused) = app
        .post_raw(
            "/hooks/canary",
            body,
            &[("X-Hook-Token", &CANARY_HOOK[..12])],
        )
        .await;
    assert_eq!(code, 403);
    seen.push(("refusal", refused.to_string()));

    let detail = app.wait_for(id, "failed").await;
    assert_eq!(error_classes(&detail), ["transient", "transient"]);
    // The target really echoed the token, and obmen really sent it: the masking is what hid it.
    let posts = fake.requests("POST", "/leads");
    assert_eq!(posts.len(), 2);
    assert_eq!(
        posts[0].header("authorization"),
        Some(format!("Bearer {CANARY_TOKEN}").as_str())
    );
    assert_eq!(
        posts[0].body["note"], "the sender echoed ***",
        "the work copy has the secret stripped"
    );
    let response = detail["attempt_log"][0]["calls"][0]["response"]
        .as_str()
        .unwrap_or_default();
    assert!(
        response.contains("internal error for Bearer ***"),
        "{response}"
    );
    assert!(
        detail["last_error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Bearer ***")
    );

    let report = app.post("/api/flows/canary/dry-run", Some(&payload)).await;
    seen.push(("dry run", report.to_string()));
    seen.push(("detail", detail.to_string()));
    seen.push((
        "dry-run detail",
        app.exchange(id_of(&report)).await.to_string(),
    ));
    seen.push(("list", app.get("/api/exchanges").await.to_string()));
    seen.push((
        "viewer list",
        app.get_as("/api/exchanges?status=failed", Some(VIEWER))
            .await
            .1
            .to_string(),
    ));
    seen.push(("flows", app.get("/api/flows").await.to_string()));
    seen.push(("metrics", app.text("/metrics", ADMIN).await));
    seen.push(("openapi", app.text("/api/openapi.json", ADMIN).await));
    for (what, text) in &seen {
        assert_clean(what, text);
    }
    assert!(
        seen.iter().any(|(_, t)| t.contains("***")),
        "the masks are there"
    );

    // Every byte the store wrote, after a clean shutdown.
    let data = app.data_dir();
    let dir = app.stop().await;
    let files = all_bytes(&data);
    assert!(
        files.iter().any(|(p, _)| p.ends_with("obmen.redb")),
        "no data file in {}",
        data.display()
    );
    for (path, bytes) in &files {
        let found = bytes.windows(TELL.len()).any(|w| w == TELL.as_bytes());
        assert!(!found, "{} holds a secret", path.display());
        // The store did record the exchange: the check above looked at real data.
        if path.ends_with("obmen.redb") {
            assert!(
                bytes.windows(8).any(|w| w == b"+7701000"),
                "the journal is in the file"
            );
        }
    }
    drop(dir);
}
