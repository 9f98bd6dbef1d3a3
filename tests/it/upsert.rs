//! Upsert finds what already exists at the target (by `match`) and updates it; a retry
//! resumes at the first step not done; a later exchange for the same record goes straight
//! to the ID map.

use axum::http::Method;
use serde_json::json;

use crate::support::fake::Fake;
use crate::support::{CRM_TOKEN, HOOK_TOKEN, TestApp, crm_system, id_of, shop_system};

const FLOW: &str = r#"
[[flows]]
name = "lead-notes"
trigger = { webhook = { system = "shop" } }
key = '.id + ":" + (.rev | tostring)'
retry = { max_attempts = 5, initial = "100ms", max = "1s" }
steps = [
  { name = "lead", upsert = "crm.lead", match = ["phone"], as = "lead", args = '{phone: .trigger.phone, title: .trigger.title}' },
  { name = "note", call = "crm.add_note", args = '{lead_id: .lead.id, text: ("rev " + (.trigger.rev | tostring))}' },
]
"#;

const PHONE: &str = "+77010000005";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_updates_what_exists_and_retry_resumes_at_the_failed_step() {
    let fake = Fake::start(CRM_TOKEN).await;
    fake.seed_lead("L-100", json!({"phone": PHONE, "title": "old"}));
    fake.break_with_422(Method::POST, "/notes");
    let app = TestApp::start(
        &[
            crm_system(fake.url(), CRM_TOKEN, "5s"),
            shop_system(HOOK_TOKEN),
            FLOW.into(),
        ]
        .concat(),
    )
    .await;

    let (code, answer) = app
        .hook(
            "lead-notes",
            &json!({"id": "u-1", "rev": 1, "phone": PHONE, "title": "new"}),
            None,
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let id = id_of(&answer);
    let failed = app.wait_for(id, "failed").await;

    // Step 1 found the lead by phone and updated it; step 2 was refused.
    assert_eq!(fake.count("GET", "/leads"), 1);
    assert_eq!(fake.count("PATCH", "/leads/L-100"), 1);
    assert_eq!(
        fake.count("POST", "/leads"),
        0,
        "an existing record is never created again"
    );
    assert_eq!(fake.count("POST", "/notes"), 1);
    assert_eq!(fake.lead("L-100").expect("lead")["title"], "new");
    assert_eq!(failed["steps"][0]["done"], true);
    assert_eq!(failed["steps"][0]["output"]["action"], "updated");
    assert_eq!(failed["steps"][1]["done"], false);
    assert_eq!(failed["last_error"]["step"], "note");
    assert_eq!(failed["last_error"]["class"], "permanent");

    // After the fix, the retry runs step 2 only.
    fake.fix();
    app.post(&format!("/api/exchanges/{id}/retry"), None).await;
    let done = app.wait_for(id, "succeeded").await;
    assert_eq!(fake.count("GET", "/leads"), 1, "step 1 is not repeated");
    assert_eq!(
        fake.count("PATCH", "/leads/L-100"),
        1,
        "step 1 is not repeated"
    );
    assert_eq!(fake.count("POST", "/notes"), 2);
    let calls = done["attempt_log"][1]["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !calls.is_empty() && calls.iter().all(|c| c["step"] == "note"),
        "{calls:?}"
    );
    let notes = fake.notes();
    assert_eq!(
        notes.last().map(|n| n["lead_id"].clone()),
        Some(json!("L-100")),
        "step 2 used step 1's saved output"
    );
    assert_eq!(done["links"][0]["target_id"], "L-100");
    assert_eq!(done["steps"][1]["done"], true);

    // The next change of the same record: the ID map answers, no search.
    let (code, answer) = app
        .hook(
            "lead-notes",
            &json!({"id": "u-1", "rev": 2, "phone": PHONE, "title": "newer"}),
            None,
        )
        .await;
    assert_eq!(
        (code.as_u16(), answer["status"].as_str()),
        (200, Some("queued")),
        "{answer}"
    );
    let second = app.wait_for(id_of(&answer), "succeeded").await;
    assert_eq!(
        fake.count("GET", "/leads"),
        1,
        "the ID map link replaces the search"
    );
    assert_eq!(fake.count("PATCH", "/leads/L-100"), 2);
    assert_eq!(fake.count("POST", "/leads"), 0);
    assert_eq!(fake.lead("L-100").expect("lead")["title"], "newer");
    assert_eq!(second["steps"][0]["output"]["action"], "updated");
    let methods: Vec<_> = second["attempt_log"][0]["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["method"].clone())
        .collect();
    assert_eq!(methods, [json!("PATCH"), json!("POST")]);
}
