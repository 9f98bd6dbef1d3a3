//! Delivery to a target: created exactly once, correlation and idempotency headers sent,
//! the journal complete; and retries through 500, a timeout and 429 with Retry-After.

use std::time::Duration;

use axum::http::Method;
use serde_json::{Value, json};

use crate::support::fake::{Fake, Fault};
use crate::support::{
    CRM_TOKEN, HOOK_TOKEN, TestApp, crm_system, error_classes, id_of, shop_system,
};

const UPSERT_FLOW: &str = r#"
[[flows]]
name = "order-to-lead"
trigger = { webhook = { system = "shop" } }
steps = [
  { name = "lead", upsert = "crm.lead", match = ["phone"], args = '{phone: .trigger.phone, title: ("Order " + .trigger.id)}' },
]
"#;

fn types(events: &Value) -> Vec<&str> {
    events
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str())
        .collect()
}

fn status_changes(events: &Value) -> Vec<&str> {
    let all = events.as_array().into_iter().flatten();
    all.filter(|e| e["type"] == "status")
        .filter_map(|e| e["to"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_creates_the_record_once_with_request_id_and_a_complete_journal() {
    let fake = Fake::start(CRM_TOKEN).await;
    let app = TestApp::start(
        &[
            crm_system(fake.url(), CRM_TOKEN, "5s"),
            shop_system(HOOK_TOKEN),
            UPSERT_FLOW.into(),
        ]
        .concat(),
    )
    .await;

    let payload = json!({"id": "o-1", "phone": "+77010000001"});
    let (code, answer) = app
        .hook("order-to-lead", &payload, Some("it-req-0001"))
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], "queued");
    assert_eq!(answer["request_id"], "it-req-0001");
    let id = id_of(&answer);
    let detail = app.wait_for(id, "succeeded").await;

    // Exactly one creation, after a search by the match field.
    let creates = fake.requests("POST", "/leads");
    assert_eq!(creates.len(), 1, "{:?}", fake.ledger());
    let searches = fake.requests("GET", "/leads");
    assert_eq!(searches.len(), 1);
    assert_eq!(searches[0].query_value("phone"), Some("+77010000001"));
    assert_eq!(fake.leads().len(), 1);
    let post = &creates[0];
    assert_eq!(
        post.body,
        json!({"phone": "+77010000001", "title": "Order o-1"})
    );
    // Correlation and idempotency headers on the way out.
    assert_eq!(post.header("x-request-id"), Some("it-req-0001"));
    assert_eq!(searches[0].header("x-request-id"), Some("it-req-0001"));
    assert_eq!(
        post.header("idempotency-key"),
        Some(format!("{id}:lead").as_str())
    );
    assert_eq!(
        searches[0].header("idempotency-key"),
        None,
        "a search changes nothing and needs no key"
    );
    let lead_id = fake.leads()[0]["id"].as_str().expect("lead id").to_owned();

    // The journal: the head, the received payload, every status, the attempt with its calls,
    // the step checkpoint and the ID-map link.
    assert_eq!(detail["request_id"], "it-req-0001");
    assert_eq!(detail["external_id"], "o-1");
    assert_eq!(detail["attempts"], 1);
    let events = &detail["events"];
    assert_eq!(events[0]["type"], "received");
    assert_eq!(events[0]["source"], "webhook");
    assert_eq!(events[0]["payload"], payload);
    assert_eq!(status_changes(events), ["queued", "running", "succeeded"]);
    let kinds = types(events);
    for kind in ["attempt", "step_done", "linked"] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
    assert_eq!(detail["steps"][0]["name"], "lead");
    assert_eq!(detail["steps"][0]["done"], true);
    assert_eq!(detail["steps"][0]["output"]["action"], "created");
    assert_eq!(detail["steps"][0]["output"]["id"], lead_id.as_str());
    assert_eq!(detail["links"][0]["target_id"], lead_id.as_str());
    assert_eq!(detail["links"][0]["external_key"], "o-1");

    let attempt = &detail["attempt_log"][0];
    assert_eq!(attempt["ok"], true);
    let calls = attempt["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        (calls[0]["method"].as_str(), calls[0]["status"].as_u64()),
        (Some("GET"), Some(200))
    );
    let create = &calls[1];
    assert_eq!(
        (create["method"].as_str(), create["status"].as_u64()),
        (Some("POST"), Some(201))
    );
    assert_eq!(create["sent"], true);
    assert_eq!(create["url"], format!("{}/leads", fake.url()));
    assert_eq!(create["headers"]["Authorization"], "***");
    assert_eq!(create["headers"]["X-Request-Id"], "it-req-0001");
    assert_eq!(create["headers"]["Idempotency-Key"], format!("{id}:lead"));
    assert!(
        create["response"]
            .as_str()
            .unwrap_or_default()
            .contains(&lead_id)
    );
}

const FLAKY_FLOW: &str = r#"
[[flows]]
name = "flaky"
trigger = { webhook = { system = "shop" } }
retry = { max_attempts = 6, initial = "100ms", max = "10s" }
steps = [ { name = "create", call = "crm.create_lead", args = '{phone: .trigger.phone}' } ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_target_is_retried_by_class_and_retry_after_is_honoured() {
    let fake = Fake::start(CRM_TOKEN).await;
    fake.script(
        Method::POST,
        "/leads",
        vec![
            Fault::Status(500),
            Fault::Sleep(Duration::from_secs(3)),
            Fault::RateLimited(2),
        ],
    );
    let app = TestApp::start(
        &[
            crm_system(fake.url(), CRM_TOKEN, "1s"),
            shop_system(HOOK_TOKEN),
            FLAKY_FLOW.into(),
        ]
        .concat(),
    )
    .await;

    let (code, answer) = app
        .hook(
            "flaky",
            &json!({"id": "f-1", "phone": "+77010000002"}),
            None,
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let id = id_of(&answer);
    let detail = app.wait_for(id, "succeeded").await;

    assert_eq!(
        error_classes(&detail),
        ["transient", "transient", "rate_limited"]
    );
    let log = detail["attempt_log"].as_array().expect("attempt log");
    assert_eq!(log.len(), 4);
    assert_eq!(log[3]["ok"], true);
    assert_eq!(detail["attempts"], 4);
    assert_eq!(log[0]["calls"][0]["status"], 500);
    assert!(
        log[1]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("in time"),
        "{}",
        log[1]
    );
    assert_eq!(log[2]["calls"][0]["status"], 429);
    let retrying = status_changes(&detail["events"])
        .iter()
        .filter(|s| **s == "retrying")
        .count();
    assert_eq!(retrying, 3);

    // Every attempt reached the target, the record was created once, and the attempt after
    // the 429 came no earlier than its Retry-After.
    let posts = fake.requests("POST", "/leads");
    assert_eq!(posts.len(), 4, "{posts:?}");
    assert_eq!(posts[3].status, 201);
    assert_eq!(fake.leads().len(), 1);
    let waited = posts[3].at.duration_since(posts[2].at);
    assert!(
        waited >= Duration::from_secs(2),
        "retried {waited:?} after a 429 with Retry-After: 2"
    );
    let keys: Vec<_> = posts
        .iter()
        .map(|p| p.header("idempotency-key").map(str::to_owned))
        .collect();
    assert!(
        keys.iter()
            .all(|k| k.as_deref() == Some(format!("{id}:create").as_str())),
        "{keys:?}"
    );
}
