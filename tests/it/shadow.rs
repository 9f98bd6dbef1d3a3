//! Dry runs and shadow mode compute everything and send nothing mutating; an unmapped status
//! and a schema violation end `rejected` with the reason named.

use serde_json::{Value, json};

use crate::support::fake::Fake;
use crate::support::{CRM_TOKEN, HOOK_TOKEN, TestApp, crm_system, id_of, shop_system};

const FLOWS: &str = r#"
[[flows]]
name = "live"
trigger = { webhook = { system = "shop" } }
status_maps.order_status = { paid = "QUALIFIED", new = "NEW" }
steps = [
  { name = "lead", upsert = "crm.lead", match = ["phone"], args = '{phone: .trigger.phone, status: (.trigger.status | status("order_status"))}' },
]

[[flows]]
name = "shadow"
mode = "shadow"
trigger = { webhook = { system = "shop" } }
status_maps.order_status = { paid = "QUALIFIED", new = "NEW" }
steps = [
  { name = "lead", upsert = "crm.lead", match = ["phone"], args = '{phone: .trigger.phone, status: (.trigger.status | status("order_status"))}' },
]

[[flows]]
name = "strict"
trigger = { webhook = { system = "shop" } }
schema = { type = "object", required = ["id"] }
steps = [ { name = "create", call = "crm.create_lead", args = '{phone: .trigger.phone}' } ]
"#;

const KNOWN: &str = "+77010000007";

async fn start() -> (Fake, TestApp) {
    let fake = Fake::start(CRM_TOKEN).await;
    fake.seed_lead("L-7", json!({"phone": KNOWN, "status": "OLD"}));
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

fn calls(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn by_method(calls: &[Value], method: &str) -> Value {
    calls
        .iter()
        .find(|c| c["method"] == method)
        .cloned()
        .unwrap_or_else(|| panic!("no {method} in {calls:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_and_shadow_mode_send_nothing_mutating() {
    let (fake, app) = start().await;

    // A new record: the dry run shows the search it made and the create it would send.
    let report = app
        .post(
            "/api/flows/live/dry-run",
            Some(&json!({"id": "s-1", "phone": "+77010000099", "status": "paid"})),
        )
        .await;
    assert_eq!(report["status"], "dry_run", "{report}");
    assert_eq!(report["valid"], true);
    assert_eq!(report["steps"][0]["output"]["action"], "would_create");
    let requests = calls(&report["requests"]);
    assert_eq!(
        by_method(&requests, "GET")["sent"],
        true,
        "searching is allowed"
    );
    let create = by_method(&requests, "POST");
    assert_eq!(create["sent"], false);
    assert_eq!(create["url"], format!("{}/leads", fake.url()));
    let body: Value =
        serde_json::from_str(create["body"].as_str().unwrap_or_default()).expect("body JSON");
    assert_eq!(
        body,
        json!({"phone": "+77010000099", "status": "QUALIFIED"}),
        "the mapped output"
    );
    let recorded = app.exchange(id_of(&report)).await;
    assert_eq!(
        (recorded["status"].as_str(), recorded["dry_run"].as_bool()),
        (Some("dry_run"), Some(true))
    );
    assert_eq!(
        by_method(&calls(&recorded["attempt_log"][0]["calls"]), "POST")["sent"],
        false
    );

    // An existing record: the decision is an update, still not sent.
    let report = app
        .post(
            "/api/flows/live/dry-run",
            Some(&json!({"id": "s-2", "phone": KNOWN, "status": "new"})),
        )
        .await;
    assert_eq!(
        report["steps"][0]["output"]["action"], "would_update",
        "{report}"
    );
    let update = by_method(&calls(&report["requests"]), "PATCH");
    assert_eq!(
        (update["sent"].as_bool(), update["url"].as_str()),
        (
            Some(false),
            Some(format!("{}/leads/L-7", fake.url()).as_str())
        )
    );

    // Shadow mode on real traffic: the flow runs completely and ends dry_run.
    let (code, answer) = app
        .hook(
            "shadow",
            &json!({"id": "s-3", "phone": KNOWN, "status": "paid"}),
            None,
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let detail = app.wait_for(id_of(&answer), "dry_run").await;
    let shadow_calls = calls(&detail["attempt_log"][0]["calls"]);
    let update = by_method(&shadow_calls, "PATCH");
    assert_eq!(update["sent"], false);
    assert!(
        update["body"]
            .as_str()
            .unwrap_or_default()
            .contains("QUALIFIED"),
        "{update}"
    );
    assert_eq!(detail["steps"][0]["output"]["action"], "would_update");
    assert_eq!(detail["links"], json!([]), "a shadow run links nothing");

    assert!(
        fake.mutating().is_empty(),
        "the target got {:?}",
        fake.mutating()
    );
    assert_eq!(fake.count("GET", "/leads"), 3);
    assert_eq!(fake.lead("L-7").expect("lead")["status"], "OLD");
    assert_eq!(fake.leads().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmapped_status_and_schema_violation_are_rejected() {
    let (fake, app) = start().await;

    let (code, answer) = app
        .hook(
            "live",
            &json!({"id": "m-1", "phone": "+77010000011", "status": "weird"}),
            None,
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let detail = app.wait_for(id_of(&answer), "rejected").await;
    let error = &detail["last_error"];
    assert_eq!(error["class"], "input");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("order_status") && message.contains("weird"),
        "names the map and the value: {message}"
    );
    assert_eq!(detail["attempts"], 1);

    let (code, answer) = app
        .hook("strict", &json!({"phone": "+77010000012"}), None)
        .await;
    assert_eq!(code, 422, "{answer}");
    assert_eq!(answer["status"], "rejected");
    let errors: Vec<&str> = answer["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("schema") && e.contains("\"id\"")),
        "{errors:?}"
    );
    let detail = app.exchange(id_of(&answer)).await;
    assert_eq!(detail["status"], "rejected");
    assert_eq!(detail["attempts"], 0);
    assert!(
        detail["last_error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"id\""),
        "{detail}"
    );

    assert!(
        fake.ledger().is_empty(),
        "nothing reached the target: {:?}",
        fake.ledger()
    );
}
