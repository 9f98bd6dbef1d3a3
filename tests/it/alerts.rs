//! `on_failure`: a failed exchange becomes a notice delivered through the notify system's
//! operation, itself an exchange (journaled, retried, visible), sent once per failure.

use std::time::Instant;

use serde_json::json;

use crate::support::fake::Fake;
use crate::support::{CRM_TOKEN, HOOK_TOKEN, TestApp, WAIT, crm_system, id_of, shop_system};

const FLOW: &str = r#"
[[flows]]
name = "orders"
trigger = { webhook = { system = "shop" } }
retry = { max_attempts = 1 }
on_failure = { notify = "crm", op = "add_note", args = '{kind: .trigger.type, text: ("obmen: " + .trigger.flow + " failed: " + (.trigger.error.message // "")), exchange: .trigger.exchange_id, groups: .trigger.groups}' }
steps = [ { name = "lead", call = "crm.create_lead", args = '{phone: .trigger.phone}' } ]
"#;

#[tokio::test]
async fn failures_and_their_digest_are_delivered_through_the_alert_flow() {
    let fake = Fake::start(CRM_TOKEN).await;
    fake.break_with_422(reqwest::Method::POST, "/leads");
    let config = [
        crm_system(fake.url(), CRM_TOKEN, "5s"),
        shop_system(HOOK_TOKEN),
        FLOW.into(),
    ]
    .concat();
    let app = TestApp::start(&config).await;
    let (_, answer) = app
        .hook(
            "orders",
            &json!({"id": "o-9", "phone": "+77010000009"}),
            None,
        )
        .await;
    let id = id_of(&answer);
    app.wait_for(id, "failed").await;

    let notes = wait_for_notes(&fake, 2).await;
    let kinds: Vec<&str> = notes.iter().filter_map(|n| n["kind"].as_str()).collect();
    assert_eq!(kinds.len(), 2, "{notes:?}");
    assert!(
        kinds.contains(&"exchange.failed") && kinds.contains(&"errors.started"),
        "{kinds:?}"
    );
    let failed = notes
        .iter()
        .find(|n| n["kind"] == "exchange.failed")
        .expect("the failure notice");
    assert_eq!(failed["exchange"], json!(id));
    let text = failed["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("obmen: orders failed: HTTP 422"), "{text}");
    let started = notes
        .iter()
        .find(|n| n["kind"] == "errors.started")
        .expect("the digest");
    assert_eq!(
        started["groups"][0]["problem"]
            .as_str()
            .map(|p| p.starts_with("HTTP 422")),
        Some(true),
        "{started}"
    );

    // Fixed and retried: the flow succeeds, and the digest says the problem stopped.
    fake.fix();
    app.post(&format!("/api/exchanges/{id}/retry"), None).await;
    app.wait_for(id, "succeeded").await;
    let notes = wait_for_notes(&fake, 3).await;
    assert_eq!(notes[2]["kind"], "errors.stopped", "{notes:?}");

    let alerts = app.list("flow=orders:alerts").await;
    assert_eq!(
        alerts.len(),
        3,
        "each notice is an exchange of its own: {alerts:?}"
    );
    let ids: Vec<&str> = alerts
        .iter()
        .filter_map(|a| a["external_id"].as_str())
        .collect();
    assert!(ids.contains(&format!("failed:{id}:1").as_str()), "{ids:?}");
}

async fn wait_for_notes(fake: &Fake, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let notes = fake.notes();
        if notes.len() >= n {
            return notes;
        }
        assert!(
            Instant::now() < deadline,
            "only {} notices arrived: {notes:?}",
            notes.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// `notices = ["exchange.failed"]`: a write-back of the failure onto the source record gets
/// only the failure notice (no digests, which name no record), and the notice carries the
/// trigger masked like the exchange's own journal, so a step can address the record.
#[tokio::test]
async fn a_flow_can_take_only_the_failure_notice_with_its_masked_trigger() {
    let fake = Fake::start(CRM_TOKEN).await;
    fake.break_with_422(reqwest::Method::POST, "/leads");
    let flow = r#"
[[flows]]
name = "orders"
trigger = { webhook = { system = "shop" } }
retry = { max_attempts = 1 }
mask = [".phone"]
on_failure = { notify = "crm", op = "add_note", notices = ["exchange.failed"], args = '{kind: .trigger.type, order: .trigger.trigger.id, phone: .trigger.trigger.phone}' }
steps = [ { name = "lead", call = "crm.create_lead", args = '{phone: .trigger.phone}' } ]
"#;
    let config = [
        crm_system(fake.url(), CRM_TOKEN, "5s"),
        shop_system(HOOK_TOKEN),
        flow.into(),
    ]
    .concat();
    let app = TestApp::start(&config).await;
    let (_, answer) = app
        .hook(
            "orders",
            &json!({"id": "o-10", "phone": "+77010000010"}),
            None,
        )
        .await;
    let id = id_of(&answer);
    app.wait_for(id, "failed").await;
    let notes = wait_for_notes(&fake, 1).await;
    assert_eq!(notes[0]["kind"], "exchange.failed");
    assert_eq!(notes[0]["order"], "o-10", "the record is addressable");
    let phone = notes[0]["phone"].as_str().unwrap_or_default();
    assert!(
        !phone.contains("77010000010") && phone.contains('*'),
        "personal data stays masked: {phone}"
    );
    // A digest would have been the second notice; give it the time it would take.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(fake.notes().len(), 1, "{:?}", fake.notes());
    assert_eq!(app.list("flow=orders:alerts").await.len(), 1);
}

#[tokio::test]
async fn an_unknown_notice_is_a_config_error() {
    let flow = r#"
[[flows]]
name = "orders"
trigger = { webhook = { system = "shop" } }
on_failure = { notify = "crm", op = "add_note", notices = ["exchange.failed", "errors.begun"] }
steps = [ { name = "lead", call = "crm.create_lead", args = '{phone: .trigger.phone}' } ]
"#;
    let config = [
        crm_system("http://127.0.0.1:9", CRM_TOKEN, "5s"),
        shop_system(HOOK_TOKEN),
        flow.into(),
    ]
    .concat();
    let Err(err) = obmen::config::load_str(std::path::Path::new("obmen.toml"), &config) else {
        panic!("an unknown notice must be refused");
    };
    let text = err.to_string();
    assert!(
        text.contains("notices") && text.contains("errors.begun"),
        "{text}"
    );
}
