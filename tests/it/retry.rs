//! A permanent refusal fails at once and waits for a person; a manual retry after the fix
//! succeeds with the history kept; a bulk retry requeues exactly what its filter matches.

use axum::http::Method;
use serde_json::json;

use crate::support::fake::Fake;
use crate::support::{
    ADMIN, CRM_TOKEN, HOOK_TOKEN, TestApp, crm_system, error_classes, id_of, shop_system,
};

const FLOWS: &str = r#"
[[flows]]
name = "to-crm"
trigger = { webhook = { system = "shop" } }
retry = { max_attempts = 5, initial = "100ms", max = "1s" }
steps = [ { name = "create", call = "crm.create_lead", args = '{phone: .trigger.phone}' } ]

[[flows]]
name = "bulk"
trigger = { webhook = { system = "shop" } }
retry = { max_attempts = 5, initial = "100ms", max = "1s" }
steps = [ { name = "create", call = "crm.create_lead", args = '{phone: .trigger.phone}' } ]
"#;

async fn start() -> (Fake, TestApp) {
    let fake = Fake::start(CRM_TOKEN).await;
    let app = TestApp::start(
        &[
            crm_system(fake.url(), CRM_TOKEN, "5s"),
            shop_system(HOOK_TOKEN),
            FLOWS.into(),
        ]
        .concat(),
    )
    .await;
    (fake, app)
}

async fn send(app: &TestApp, flow: &str, id: &str) -> u64 {
    let (code, answer) = app
        .hook(
            flow,
            &json!({"id": id, "phone": format!("+7701{id}")}),
            None,
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    id_of(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_error_fails_at_once_and_manual_retry_keeps_history() {
    let (fake, app) = start().await;
    fake.break_with_422(Method::POST, "/leads");
    let id = send(&app, "to-crm", "r-1").await;
    let failed = app.wait_for(id, "failed").await;
    assert_eq!(
        failed["attempts"], 1,
        "a permanent error burns no further attempts"
    );
    assert_eq!(error_classes(&failed), ["permanent"]);
    assert_eq!(failed["next_attempt_at"], serde_json::Value::Null);
    assert_eq!(failed["last_error"]["class"], "permanent");
    assert_eq!(failed["last_error"]["step"], "create");
    let message = failed["last_error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("422") && message.contains("phone is invalid"),
        "the target's own text: {message}"
    );
    assert_eq!(fake.count("POST", "/leads"), 1);

    fake.fix();
    let requeued = app.post(&format!("/api/exchanges/{id}/retry"), None).await;
    assert_eq!(requeued["id"], id);
    assert_eq!(requeued["status"], "queued");
    let done = app.wait_for(id, "succeeded").await;
    assert_eq!(done["attempts"], 2);
    let log = done["attempt_log"].as_array().expect("attempt log");
    assert_eq!(log.len(), 2, "the failed attempt stays in the history");
    assert_eq!(log[0]["error"]["class"], "permanent");
    assert_eq!(log[0]["calls"][0]["status"], 422);
    assert_eq!(log[1]["ok"], true);
    let manual = done["events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["type"] == "manual")
        .expect("manual event");
    assert_eq!(
        (manual["action"].as_str(), manual["by"].as_str()),
        (Some("retry"), Some("integrator"))
    );
    assert_eq!(fake.leads().len(), 1);

    // A succeeded exchange is re-run only on purpose.
    let (code, body) = app
        .post_as(&format!("/api/exchanges/{id}/retry"), Some(ADMIN), None)
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_retry_requeues_what_the_filter_matches() {
    let (fake, app) = start().await;
    fake.break_with_422(Method::POST, "/leads");
    let mut bulk = Vec::new();
    for n in 1..=3 {
        bulk.push(send(&app, "bulk", &format!("b-{n}")).await);
    }
    let other = send(&app, "to-crm", "r-2").await;
    for &id in bulk.iter().chain([&other]) {
        app.wait_for(id, "failed").await;
    }
    assert_eq!(fake.leads().len(), 0);

    fake.fix();
    let counts = app
        .post("/api/exchanges/retry?flow=bulk&status=failed", None)
        .await;
    assert_eq!(counts, json!({"matched": 3, "requeued": 3}));
    for &id in &bulk {
        let done = app.wait_for(id, "succeeded").await;
        assert_eq!(done["attempts"], 2);
    }
    assert_eq!(
        app.exchange(other).await["status"],
        "failed",
        "another flow's failure is not touched"
    );
    assert_eq!(fake.leads().len(), 3);
    let failed = app.list("status=failed").await;
    assert_eq!(
        failed.iter().map(|e| e["id"].as_u64()).collect::<Vec<_>>(),
        [Some(other)]
    );

    // Nothing left to match: the counts say so.
    let again = app
        .post("/api/exchanges/retry?flow=bulk&status=failed", None)
        .await;
    assert_eq!(again, json!({"matched": 0, "requeued": 0}));
}
