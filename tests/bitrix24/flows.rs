//! Flows against the fake portal: `batch` failures, failure notes on the CRM record, status
//! lists, smart-process items, incremental polling, a portal that moved.

use serde_json::{Value, json};

use super::fake::Fake;
use super::{App, webhook_system};

/// The fake's bucket is 50 deep: tests that make a few calls need not wait for the default 2/s.
const FAST: &str = "rate_limit = \"50/s\"";

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
    let app = App::start(&[webhook_system(&fake, FAST), MANUAL_BATCH.into()].concat()).await;
    let cmd = json!({
        "deal": "crm.deal.get?id=5",
        "contact": "crm.contact.update?id=$result[deal][CONTACT_ID]&fields[NAME]=From%20batch",
        "time": "server.time"
    });
    let id = app.run("batch", &json!({"halt": 1, "cmd": cmd})).await;
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
    let id = app.run("batch", &json!({"halt": 0, "cmd": cmd})).await;
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
        .run(
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

/// An order from a shop becomes a MoySklad counterparty; when MoySklad refuses it, the
/// reason (masked: the customer's phone is personal data) is written onto the Bitrix24 deal
/// as a timeline comment by the flow's `on_failure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reason_of_a_failed_exchange_is_written_onto_the_deal() {
    let fake = Fake::start().await;
    seed(&fake);
    let ms = super::ms_fake::FakeMs::start().await;
    let flows = format!(
        r#"
[systems.sklad]
kind = "moysklad"
base_url = "{base}"
token = "{token}"

[[flows]]
name = "shop-order"
trigger = {{ manual = {{}} }}
external_id = ".deal"
mask = [".phone"]
retry = {{ max_attempts = 1 }}
on_failure = {{ notify = "b24", op = "crm.timeline.comment.add", args = '{{fields: {{ENTITY_TYPE: "deal", ENTITY_ID: .trigger.external_id, COMMENT: ("obmen: exchange " + (.trigger.exchange_id | tostring) + " failed at step " + .trigger.error.step + ": " + .trigger.error.message)}}}}' }}
steps = [
  {{ name = "counterparty", upsert = "sklad.counterparty", match = ["externalCode"], args = '{{name: .trigger.name, externalCode: ("shop-" + .trigger.deal), phone: (.trigger.phone | tonumber)}}' }},
]
"#,
        base = ms.base,
        token = super::ms_fake::TOKEN
    );
    let app = App::start(&[webhook_system(&fake, FAST), flows].concat()).await;
    let phone = "77010000005";
    let id = app
        .run(
            "shop-order",
            &json!({"deal": "5", "name": "Aigul", "phone": phone}),
        )
        .await;
    let failed = app.wait_for(id, "failed").await;
    let reason = failed["last_error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.starts_with("MoySklad HTTP 400: 2016:"), "{failed:#}");
    assert!(!reason.contains(phone), "the phone is masked: {reason}");
    // The fake refused the body by the official schema (a phone is text there).
    let broken = ms.take_contract_errors();
    assert!(broken.iter().any(|e| e.contains("/phone")), "{broken:?}");
    let comment = wait_for(|| fake.with(|p| p.comments.first().cloned())).await;
    assert_eq!(comment["ENTITY_TYPE"], "deal");
    assert_eq!(comment["ENTITY_ID"], "5");
    assert_eq!(
        comment["COMMENT"],
        format!("obmen: exchange {id} failed at step counterparty: {reason}")
    );
    // The notice is an exchange of the alert flow, journaled like any other. The digest that
    // the flow's first failure also sends ("errors.started") names no record: that alert is
    // rejected, saying why (an alert flow cannot skip digests yet).
    let mut statuses = Vec::new();
    for _ in 0..200 {
        let alerts = app.list("flow=shop-order:alerts").await;
        statuses = alerts
            .iter()
            .map(|a| {
                (
                    a["status"].as_str().unwrap_or_default().to_owned(),
                    a["external_id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        statuses.sort();
        if statuses.len() == 2
            && statuses
                .iter()
                .all(|(s, _)| s != "queued" && s != "running")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        statuses,
        [
            ("rejected".to_owned(), format!("errors.started:{id}")),
            ("succeeded".to_owned(), format!("failed:{id}:1")),
        ]
    );
    let rejected = app.list("flow=shop-order:alerts&status=rejected").await;
    let detail = app.exchange(rejected[0]["id"].as_u64().expect("id")).await;
    assert_eq!(
        detail["last_error"]["message"], "`crm.timeline.comment.add` needs `fields.ENTITY_ID`",
        "{detail:#}"
    );
    fake.with(|p| assert_eq!(p.comments.len(), 1));
}

/// Polls `probe` until it gives something.
pub async fn wait_for<T>(probe: impl Fn() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + super::WAIT;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

const DEAL_TO_SPA: &str = r#"
[[flows]]
name = "deal-to-spa"
trigger = { webhook = { system = "b24" } }
status_maps.deal_to_spa = { "NEW" = "DT1038_7:NEW", "WON" = "DT1038_7:SUCCESS", "LOSE" = "DT1038_7:FAIL" }
steps = [
  { name = "deal", call = "b24.crm.deal.get", args = '{id: .trigger.data.FIELDS.ID}', as = "deal" },
  { name = "stages", call = "b24.crm.status.list", args = '{filter: {ENTITY_ID: "DEAL_STAGE"}, order: {SORT: "ASC"}}', as = "stages" },
  { name = "item", upsert = "b24.crm.item.1038", match = ["xmlId"], args = '''
      .deal as $d | {title: $d.TITLE, xmlId: ("deal-" + $d.ID), stageId: ($d.STAGE_ID | status("deal_to_spa")),
       ufCrm7StageName: ([.stages[] | select(.STATUS_ID == $d.STAGE_ID) | .NAME] | first)}''' },
]
"#;

/// A deal's stage read against `crm.status.list` and mapped by a status map onto the stages
/// of a smart process, whose item is upserted (`crm.item.list` by `xmlId`, then
/// `crm.item.add` or `crm.item.update`, answers under `item`/`items`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deal_stages_map_onto_a_smart_process_item() {
    let fake = Fake::start().await;
    fake.with(|p| {
        for (id, stage) in [(5, "NEW"), (6, "WON"), (8, "C2:WON")] {
            p.deals.insert(
                id,
                json!({"ID": id.to_string(), "TITLE": format!("Deal {id}"), "STAGE_ID": stage}),
            );
        }
        for (sort, status, name) in [(10, "NEW", "New"), (60, "WON", "Deal won"), (70, "LOSE", "Deal lost")] {
            p.statuses.push(json!({"ID": sort.to_string(), "ENTITY_ID": "DEAL_STAGE", "STATUS_ID": status,
                "NAME": name, "SORT": sort.to_string(), "SYSTEM": "Y", "CATEGORY_ID": null}));
        }
        p.statuses.push(json!({"ID": "90", "ENTITY_ID": "SOURCE", "STATUS_ID": "WEB", "NAME": "Website"}));
        // Deal 6 has its item already (made by hand): found by xmlId, not created again.
        let mut items = std::collections::BTreeMap::new();
        items.insert(
            40,
            json!({"id": 40, "entityTypeId": 1038, "title": "by hand", "xmlId": "deal-6", "stageId": "DT1038_7:NEW"}),
        );
        p.items.insert(1038, items);
    });
    let app = App::start(&[webhook_system(&fake, FAST), DEAL_TO_SPA.into()].concat()).await;

    let (_, answer) = app.event("deal-to-spa", 5, 1, super::APP_TOKEN).await;
    let created = app.wait_for(super::id_of(&answer), "succeeded").await;
    let out = &created["steps"][2]["output"];
    assert_eq!(out["action"], "created", "{created:#}");
    assert_eq!(out["id"], "41");
    assert_eq!(out["response"]["item"]["stageId"], "DT1038_7:NEW");
    let stages = created["steps"][1]["output"].as_array().map(Vec::len);
    assert_eq!(stages, Some(3), "only the DEAL_STAGE directory");

    let (_, answer) = app.event("deal-to-spa", 6, 2, super::APP_TOKEN).await;
    let updated = app.wait_for(super::id_of(&answer), "succeeded").await;
    assert_eq!(
        updated["steps"][2]["output"]["action"], "updated",
        "{updated:#}"
    );
    assert_eq!(updated["steps"][2]["output"]["id"], "40");

    // A stage the status map does not know: rejected, no item guessed.
    let (_, answer) = app.event("deal-to-spa", 8, 3, super::APP_TOKEN).await;
    let rejected = app.wait_for(super::id_of(&answer), "rejected").await;
    assert!(
        rejected["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("deal_to_spa") && m.contains("C2:WON")),
        "{rejected:#}"
    );
    fake.with(|p| {
        let items = &p.items[&1038];
        assert_eq!(items.len(), 2);
        assert_eq!(items[&41]["xmlId"], "deal-5");
        assert_eq!(items[&41]["ufCrm7StageName"], "New");
        assert_eq!(items[&40]["stageId"], "DT1038_7:SUCCESS");
        assert_eq!(items[&40]["ufCrm7StageName"], "Deal won");
        assert_eq!(items[&40]["title"], "Deal 6");
        let methods: Vec<&str> = p
            .calls
            .iter()
            .map(|(m, _)| m.as_str())
            .filter(|m| m.starts_with("crm.item."))
            .collect();
        assert_eq!(
            methods,
            [
                "crm.item.list",
                "crm.item.add",
                "crm.item.list",
                "crm.item.update"
            ]
        );
    });
}

const POLL: &str = r#"
[[flows]]
name = "deals-since"
trigger = { schedule = { cron = "0 3 1 1 *" } }
steps = [
  { name = "page", call = "b24.crm.deal.list", as = "page", args = '''
      {start: -1, order: {ID: "ASC"}, filter: {">ID": (.trigger.cursor // "0" | tonumber)},
       select: ["ID", "TITLE"], max_pages: 2}''' },
  { name = "cursor", as = "cursor", map = '([.page[].ID | tonumber] | max) // (.trigger.cursor // "0" | tonumber)' },
]

[[flows]]
name = "all-contacts"
trigger = { manual = {} }
steps = [ { name = "list", call = "b24.crm.contact.list", args = '{select: ["ID"], all_pages: true}' } ]
"#;

/// A scheduled flow reads deals after its stored cursor in the fast mode (`start: -1`,
/// `order: {ID: ASC}`, `filter: {">ID": last}`), two pages of 50 per run at most; the cursor
/// is the last id seen. `all_pages` follows `start` through a whole list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_poll_pages_by_id_and_keeps_its_cursor() {
    let fake = Fake::start().await;
    let deal =
        |id: u64| json!({"ID": id.to_string(), "TITLE": format!("Deal {id}"), "STAGE_ID": "NEW"});
    fake.with(|p| {
        for id in 1..=130 {
            p.deals.insert(id, deal(id));
        }
        for id in 1000..1120 {
            p.contacts
                .insert(id, json!({"ID": id.to_string(), "NAME": "c"}));
        }
    });
    let app = App::start(&[webhook_system(&fake, FAST), POLL.into()].concat()).await;
    let mut seen = Vec::new();
    for round in 0..4 {
        if round == 2 {
            fake.with(|p| {
                for id in 131..=135 {
                    p.deals.insert(id, deal(id));
                }
            });
        }
        let id = app.run("deals-since", &json!({})).await;
        let done = app.wait_for(id, "succeeded").await;
        let ids: Vec<u64> = done["steps"][0]["output"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|d| d["ID"].as_str().and_then(|i| i.parse().ok()))
            .collect();
        seen.push((
            ids.len(),
            ids.first().copied(),
            ids.last().copied(),
            done["steps"][1]["output"].clone(),
        ));
    }
    assert_eq!(
        seen,
        [
            (100, Some(1), Some(100), json!(100)),
            (30, Some(101), Some(130), json!(130)),
            (5, Some(131), Some(135), json!(135)),
            (0, None, None, json!(135)),
        ]
    );
    let sent: Vec<Value> = fake.with(|p| {
        p.list_args
            .iter()
            .filter(|(m, _)| m == "crm.deal.list")
            .map(|(_, a)| a.clone())
            .collect()
    });
    let after: Vec<Value> = sent.iter().map(|a| a["filter"][">ID"].clone()).collect();
    assert_eq!(
        after,
        [json!(0), json!("50"), json!(100), json!(130), json!(135)]
    );
    assert!(
        sent.iter()
            .all(|a| a["start"] == -1 && a["order"]["ID"] == "ASC"),
        "{sent:?}"
    );
    assert!(
        sent.iter().all(|a| a.get("max_pages").is_none()),
        "paging args stay with obmen"
    );

    // `all_pages` with `start`: 0, 50, 100.
    let id = app.run("all-contacts", &json!({})).await;
    let done = app.wait_for(id, "succeeded").await;
    assert_eq!(
        done["steps"][0]["output"].as_array().map(Vec::len),
        Some(120)
    );
    let starts: Vec<Value> = fake.with(|p| {
        p.list_args
            .iter()
            .filter(|(m, _)| m == "crm.contact.list")
            .map(|(_, a)| a["start"].clone())
            .collect()
    });
    assert_eq!(starts, [Value::Null, json!(50), json!(100)]);
    // Each page is a call of its own in the journal.
    let calls = done["attempt_log"][0]["calls"].as_array().map(Vec::len);
    assert_eq!(calls, Some(3), "{done:#}");
}
