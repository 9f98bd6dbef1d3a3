//! Flows against the fake portal: `batch` failures, failure notes on the CRM record, status
//! lists, smart-process items, incremental polling, a portal that moved.

use serde_json::json;

use super::fake::Fake;
use super::{App, webhook_system};

const MANUAL_BATCH: &str = r#"
[[flows]]
name = "batch"
trigger = { manual = {} }
retry = { max_attempts = 3, initial = "100ms", max = "5s" }
steps = [ { name = "write", call = "b24.batch", args = '{halt: .trigger.halt, cmd: .trigger.cmd}' } ]
"#;

fn seed(fake: &Fake) {
    fake.with(|p| {
        p.deals.insert(
            5,
            json!({"ID": "5", "TITLE": "Deal 5", "STAGE_ID": "NEW", "CONTACT_ID": "7"}),
        );
        p.contacts.insert(7, json!({"ID": "7", "NAME": "old"}));
    });
}

fn keys_sent(fake: &Fake) -> Vec<String> {
    fake.with(|p| p.batch_cmds.iter().map(|(k, _, _)| k.clone()).collect())
}

/// A command refused by a limit makes the step `rate_limited` (the wait Bitrix24 asks for),
/// `halt` stops the commands after it, and the retry sends the batch again; a command that
/// cannot succeed fails the step at once, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_command_fails_its_step_classified_and_named() {
    let fake = Fake::start().await;
    seed(&fake);
    fake.with(|p| {
        p.limited_in_batch.insert("crm.contact.update".into(), 1);
    });
    let app = App::start(&[webhook_system(&fake, ""), MANUAL_BATCH.into()].concat()).await;
    let cmd = json!({
        "deal": "crm.deal.get?id=5",
        "contact": "crm.contact.update?id=$result[deal][CONTACT_ID]&fields[NAME]=From%20batch",
        "time": "server.time"
    });
    let id = app.run_with("batch", &json!({"halt": 1, "cmd": cmd})).await;
    let done = app.wait_for(id, "succeeded").await;
    let log = done["attempt_log"].as_array().cloned().unwrap_or_default();
    assert_eq!(log.len(), 2, "{done:#}");
    let first = &log[0]["error"];
    assert_eq!(first["class"], "rate_limited", "{done:#}");
    assert_eq!(first["step"], "write");
    assert_eq!(
        first["message"],
        "batch command `contact` (crm.contact.update) failed: QUERY_LIMIT_EXCEEDED: Too many requests (halt: 1 later command was not run)"
    );
    let refused = super::at(&first["at"]);
    let again = super::at(&log[1]["started_at"]);
    assert!(
        again - refused >= chrono::Duration::milliseconds(950),
        "retried after {}",
        again - refused
    );
    // The output is the whole batch answer, evened out.
    let out = &done["steps"][0]["output"];
    assert_eq!(out["result"]["contact"], true, "{out:#}");
    assert_eq!(out["result"]["deal"]["ID"], "5");
    assert_eq!(out["result_error"], json!({}));
    assert!(out["result_time"]["time"].is_object(), "{out:#}");
    // `halt` kept `time` from running the first time; the retry sent all three.
    assert_eq!(
        keys_sent(&fake),
        ["deal", "contact", "deal", "contact", "time"]
    );
    fake.with(|p| assert_eq!(p.contacts[&7]["NAME"], "From batch"));

    // Without halt every command runs; one that cannot succeed fails the step at once.
    let cmd = json!({"a": "crm.deal.get?id=5", "b": "crm.deal.get?id=404", "c": "server.time"});
    let id = app.run_with("batch", &json!({"halt": 0, "cmd": cmd})).await;
    let failed = app.wait_for(id, "failed").await;
    assert_eq!(failed["attempts"], 1, "not retried: {failed:#}");
    let error = &failed["last_error"];
    assert_eq!(error["class"], "permanent");
    assert_eq!(
        error["message"],
        "batch command `b` (crm.deal.get) failed: (no code): Not found"
    );
    assert_eq!(keys_sent(&fake)[5..], ["a", "b", "c"]);

    // A nested batch is a config error of the command.
    let id = app
        .run_with(
            "batch",
            &json!({"halt": 0, "cmd": {"inner": "batch?halt=0"}}),
        )
        .await;
    let failed = app.wait_for(id, "failed").await;
    assert_eq!(failed["last_error"]["class"], "config", "{failed:#}");
    assert!(
        failed["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ERROR_BATCH_METHOD_NOT_ALLOWED")),
        "{failed:#}"
    );
}
