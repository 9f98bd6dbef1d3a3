//! The same webhook twice: one creation at the target; the repeat is its own exchange in
//! status `duplicate`, pointing at the original, and the webhook answers with the original.

use serde_json::json;

use crate::support::fake::Fake;
use crate::support::{CRM_TOKEN, HOOK_TOKEN, TestApp, crm_system, id_of, shop_system};

const FLOW: &str = r#"
[[flows]]
name = "dedup"
trigger = { webhook = { system = "shop" } }
steps = [ { name = "create", call = "crm.create_lead", args = '{phone: .trigger.phone}' } ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_webhook_twice_creates_once_and_records_a_duplicate() {
    let fake = Fake::start(CRM_TOKEN).await;
    let app = TestApp::start(
        &[
            crm_system(fake.url(), CRM_TOKEN, "5s"),
            shop_system(HOOK_TOKEN),
            FLOW.into(),
        ]
        .concat(),
    )
    .await;
    let payload = json!({"id": "d-1", "phone": "+77010000004"});

    let (code, first) = app.hook("dedup", &payload, None).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["status"], "queued");
    let original = id_of(&first);
    let (code, second) = app.hook("dedup", &payload, None).await;
    assert_eq!(code, 200, "a duplicate is accepted, not refused: {second}");
    assert_eq!(second["status"], "duplicate");
    assert_eq!(id_of(&second), original, "the answer names the original");
    let dup = second["duplicate_id"]
        .as_u64()
        .expect("the duplicate's own id");
    assert_ne!(dup, original);

    app.wait_for(original, "succeeded").await;
    // A third copy after the original finished is a duplicate too.
    let (_, third) = app.hook("dedup", &payload, None).await;
    assert_eq!(
        (third["status"].as_str(), id_of(&third)),
        (Some("duplicate"), original)
    );

    assert_eq!(fake.count("POST", "/leads"), 1, "{:?}", fake.ledger());
    assert_eq!(fake.leads().len(), 1);

    let dups = app.list("flow=dedup&status=duplicate").await;
    assert_eq!(dups.len(), 2);
    assert!(
        dups.iter().all(|d| d["original_id"] == original),
        "{dups:?}"
    );
    assert!(dups.iter().any(|d| d["id"] == dup));
    let detail = app.exchange(dup).await;
    assert_eq!(detail["status"], "duplicate");
    assert_eq!(detail["key"], "d-1");
    assert_eq!(detail["attempts"], 0, "nothing is sent for a duplicate");
    assert_eq!(detail["attempt_log"], json!([]));
    let last = detail["events"]
        .as_array()
        .and_then(|e| e.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["to"], "duplicate");
    assert_eq!(last["reason"], format!("duplicate of exchange {original}"));
    // Retrying a duplicate is refused: the original is what runs.
    let (code, body) = app
        .post_as(
            &format!("/api/exchanges/{dup}/retry"),
            Some(crate::support::ADMIN),
            None,
        )
        .await;
    assert_eq!(code, 409, "{body}");
}
