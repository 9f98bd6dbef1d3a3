//! The `find` step: a record looked up in the ID map (by `link`) or by a search (by
//! `match`), and what a flow does when there is none (`missing`): continue, skip, reject,
//! or retry until another exchange has created it.

use serde_json::json;

use crate::support::fake::Fake;
use crate::support::{CRM_TOKEN, HOOK_TOKEN, TestApp, crm_system, id_of, shop_system};

/// `lead` creates leads (linked to the shop's customer id); `note` finds the customer's
/// lead (ID map first, then by phone) before writing a note onto it.
fn flows(missing: &str) -> String {
    format!(
        r#"
[[flows]]
name = "lead"
trigger = {{ webhook = {{ system = "shop" }} }}
external_id = ".customer"
steps = [ {{ name = "lead", upsert = "crm.lead", match = ["phone"], args = '{{phone: .trigger.phone, title: .trigger.customer}}' }} ]

[[flows]]
name = "note"
trigger = {{ webhook = {{ system = "shop" }} }}
key = '.id'
retry = {{ max_attempts = 20, initial = "50ms", max = "100ms" }}
steps = [
  {{ name = "lead", find = "crm.lead", link = '.trigger.customer', match = ["phone"], args = '{{phone: .trigger.phone}}', missing = "{missing}", as = "lead" }},
  {{ name = "note", call = "crm.add_note", args = '{{lead_id: .lead.id, found: .lead.found, text: .trigger.text}}' }},
]
"#
    )
}

async fn start(fake: &Fake, missing: &str) -> TestApp {
    with_crm(fake, &flows(missing)).await
}

/// obmen with the fake CRM (`crm`), the shop's webhooks (`shop`) and `flows`.
async fn with_crm(fake: &Fake, flows: &str) -> TestApp {
    TestApp::start(
        &[
            crm_system(fake.url(), CRM_TOKEN, "5s"),
            shop_system(HOOK_TOKEN),
            flows.to_owned(),
        ]
        .concat(),
    )
    .await
}

/// A shop webhook to `flow`, answered 200: the answer.
async fn send(app: &TestApp, flow: &str, payload: &serde_json::Value) -> serde_json::Value {
    let (code, answer) = app.hook(flow, payload, None).await;
    assert_eq!(code, 200, "{answer}");
    answer
}

async fn note(app: &TestApp, id: &str, customer: &str, phone: &str) -> u64 {
    let answer = send(
        app,
        "note",
        &json!({"id": id, "customer": customer, "phone": phone, "text": "paid"}),
    )
    .await;
    id_of(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_find_searches_by_match_and_later_steps_use_what_it_found() {
    let fake = Fake::start(CRM_TOKEN).await;
    fake.seed_lead("L-7", json!({"phone": "+77010000007", "title": "Aigul"}));
    let app = start(&fake, "continue").await;
    let id = note(&app, "n-1", "c-7", "+77010000007").await;
    let done = app.wait_for(id, "succeeded").await;
    let found = &done["steps"][0]["output"];
    assert_eq!(found["found"], true, "{done:#}");
    assert_eq!(found["id"], "L-7");
    assert_eq!(found["via"], "search");
    assert_eq!(found["record"]["title"], "Aigul");
    assert_eq!(fake.notes()[0]["lead_id"], "L-7");
    assert_eq!(fake.count("GET", "/leads"), 1);

    // Nothing to find: `continue` runs on with `found: false`.
    let id = note(&app, "n-2", "c-8", "+77010000008").await;
    let done = app.wait_for(id, "succeeded").await;
    assert_eq!(done["steps"][0]["output"]["found"], false);
    assert_eq!(fake.notes()[1]["found"], false);
    assert_eq!(fake.leads().len(), 1, "a find never creates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_record_is_found_in_the_id_map_without_a_search() {
    let fake = Fake::start(CRM_TOKEN).await;
    let app = start(&fake, "reject").await;
    let answer = send(
        &app,
        "lead",
        &json!({"customer": "c-9", "phone": "+77010000009"}),
    )
    .await;
    let created = app.wait_for(id_of(&answer), "succeeded").await;
    let lead_id = created["steps"][0]["output"]["id"].clone();
    let searches = fake.count("GET", "/leads");

    // Another phone on purpose: the link, not the search, finds the lead.
    let id = note(&app, "n-3", "c-9", "+77019999999").await;
    let done = app.wait_for(id, "succeeded").await;
    assert_eq!(done["steps"][0]["output"]["via"], "id_map", "{done:#}");
    assert_eq!(done["steps"][0]["output"]["id"], lead_id);
    assert_eq!(fake.count("GET", "/leads"), searches, "no search");
    assert_eq!(fake.notes()[0]["lead_id"], lead_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_skip_and_reject_end_the_exchange_without_a_call() {
    let fake = Fake::start(CRM_TOKEN).await;
    let app = start(&fake, "skip").await;
    let id = note(&app, "n-4", "c-4", "+77010000004").await;
    app.wait_for(id, "skipped").await;
    drop(app);

    let app = start(&fake, "reject").await;
    let id = note(&app, "n-5", "c-5", "+77010000005").await;
    let rejected = app.wait_for(id, "rejected").await;
    let message = rejected["last_error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("no `lead` linked to `c-5` or with phone=") && message.contains("`crm`"),
        "{rejected:#}"
    );
    assert_eq!(rejected["last_error"]["step"], "lead");
    assert_eq!(rejected["attempts"], 1);
    assert!(fake.notes().is_empty());
}

/// An exchange about a record another exchange has not created yet waits for it: each
/// attempt searches again (a search that found nothing is not saved), and once the record
/// exists the exchange goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_retry_waits_for_the_record_under_the_retry_policy() {
    let fake = Fake::start(CRM_TOKEN).await;
    let app = start(&fake, "retry").await;
    let id = note(&app, "n-6", "c-6", "+77010000006").await;
    let deadline = std::time::Instant::now() + crate::support::WAIT;
    while fake.count("GET", "/leads") < 3 {
        assert!(std::time::Instant::now() < deadline, "not searched again");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The third attempt may still be running: its outcome is `retrying` again.
    let waiting = app.wait_for(id, "retrying").await;
    assert_eq!(waiting["last_error"]["class"], "transient");
    assert!(
        waiting["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("yet")),
        "{waiting:#}"
    );
    assert!(fake.notes().is_empty());

    // The lead arrives (its own exchange creates it): the next attempt finds it.
    let answer = send(
        &app,
        "lead",
        &json!({"customer": "c-6", "phone": "+77010000006"}),
    )
    .await;
    app.wait_for(id_of(&answer), "succeeded").await;
    let done = app.wait_for(id, "succeeded").await;
    assert_eq!(done["steps"][0]["output"]["found"], true);
    assert_eq!(fake.notes().len(), 1);
    assert!(
        done["attempts"].as_u64().is_some_and(|n| n >= 3),
        "{done:#}"
    );
}

#[test]
fn find_steps_are_checked_when_the_config_loads() {
    let base = [
        crm_system("http://127.0.0.1:9", CRM_TOKEN, "5s"),
        shop_system(HOOK_TOKEN),
    ]
    .concat();
    let cases = [
        (
            r#"{ find = "crm.lead", args = '{phone: .trigger.phone}' }"#,
            "a find needs `link`",
        ),
        (
            r#"{ find = "crm.lead", match = ["phone"] }"#,
            "a find with `match` needs args",
        ),
        (
            r#"{ find = "crm.lead", link = '.trigger.id', missing = "later" }"#,
            "`later`: one of continue, skip, retry, reject",
        ),
        (
            r#"{ call = "crm.add_note", missing = "retry" }"#,
            "only a find step has `missing`",
        ),
        (
            r#"{ find = "crm.deal", link = '.trigger.id' }"#,
            "has no entity `deal`",
        ),
    ];
    for (step, says) in cases {
        let text = format!(
            "{base}\n[[flows]]\nname = \"f\"\ntrigger = {{ webhook = {{ system = \"shop\" }} }}\nsteps = [ {step} ]\n"
        );
        let err = obmen::config::load_str(std::path::Path::new("obmen.toml"), &text)
            .err()
            .unwrap_or_else(|| panic!("{step} was accepted"));
        assert!(err.to_string().contains(says), "{step}: {err}");
    }
}

/// `when` guards one step: an item of another kind passes it (output `null`, no call), the
/// rest of the flow runs for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_when_runs_only_for_the_items_it_names() {
    let fake = Fake::start(CRM_TOKEN).await;
    fake.seed_lead("L-1", json!({"phone": "+77010000001", "title": "A"}));
    let flow = r#"
[[flows]]
name = "mixed"
trigger = { webhook = { system = "shop" } }
key = '.id'
steps = [
  { name = "lead", when = '.trigger.kind == "order"', find = "crm.lead", match = ["phone"], args = '{phone: .trigger.phone}', missing = "reject", as = "lead" },
  { name = "note", call = "crm.add_note", args = '{kind: .trigger.kind, lead_id: .lead.id}' },
]
"#;
    let app = with_crm(&fake, flow).await;
    let mut ids = Vec::new();
    for (id, kind, phone) in [
        ("m-1", "order", "+77010000001"),
        ("m-2", "refund", "+77010000002"),
    ] {
        let answer = send(
            &app,
            "mixed",
            &json!({"id": id, "kind": kind, "phone": phone}),
        )
        .await;
        ids.push(id_of(&answer));
    }
    let order = app.wait_for(ids[0], "succeeded").await;
    let refund = app.wait_for(ids[1], "succeeded").await;
    assert_eq!(order["steps"][0]["output"]["id"], "L-1");
    assert_eq!(refund["steps"][0]["done"], true, "{refund:#}");
    assert_eq!(refund["steps"][0]["output"], json!(null));
    assert_eq!(fake.count("GET", "/leads"), 1, "one search: the order's");
    let mut notes: Vec<(String, serde_json::Value)> = fake
        .notes()
        .iter()
        .map(|n| {
            (
                n["kind"].as_str().unwrap_or_default().to_owned(),
                n["lead_id"].clone(),
            )
        })
        .collect();
    notes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        notes,
        [
            ("order".to_owned(), json!("L-1")),
            ("refund".to_owned(), json!(null))
        ]
    );
}

/// A `link` that gives `null` (or `""`) is no ID-map key: two such records are two
/// records, not one record linked under the key "null".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_link_that_gives_null_links_nothing() {
    let fake = Fake::start(CRM_TOKEN).await;
    let flow = r#"
[[flows]]
name = "lead"
trigger = { webhook = { system = "shop" } }
key = '.id'
steps = [ { name = "lead", upsert = "crm.lead", link = '.trigger.customer', args = '{phone: .trigger.phone}' } ]
"#;
    let app = with_crm(&fake, flow).await;
    for (id, customer, phone) in [
        ("u-1", json!(null), "+77010000101"),
        ("u-2", json!(null), "+77010000102"),
        ("u-3", json!(""), "+77010000103"),
    ] {
        let answer = send(
            &app,
            "lead",
            &json!({"id": id, "customer": customer, "phone": phone}),
        )
        .await;
        let done = app.wait_for(id_of(&answer), "succeeded").await;
        assert_eq!(done["steps"][0]["output"]["action"], "created", "{done:#}");
    }
    assert_eq!(fake.leads().len(), 3, "{:?}", fake.leads());
}

/// An `id` that finds nothing in a found or created record is an error, never the id "null".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_gives_null_is_an_error_not_the_id_null() {
    let fake = Fake::start(CRM_TOKEN).await;
    fake.seed_lead("L-5", json!({"phone": "+77010000005", "title": "B"}));
    let flow = r#"
[[flows]]
name = "found"
trigger = { webhook = { system = "shop" } }
key = '.id'
steps = [ { name = "lead", find = "crm.lead", match = ["phone"], args = '{phone: .trigger.phone}', id = '.crm_id' } ]

[[flows]]
name = "made"
trigger = { webhook = { system = "shop" } }
key = '.id'
steps = [ { name = "lead", upsert = "crm.lead", link = '.trigger.customer', args = '{phone: .trigger.phone}', id = '.crm_id' } ]
"#;
    let app = with_crm(&fake, flow).await;
    let payload = json!({"id": "i-1", "customer": "c-1", "phone": "+77010000005"});
    let answer = send(&app, "found", &payload).await;
    let found = app.wait_for(id_of(&answer), "rejected").await;
    assert!(
        found["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no id at `.crm_id`")),
        "{found:#}"
    );
    let payload = json!({"id": "i-2", "customer": "c-2", "phone": "+77010000006"});
    let answer = send(&app, "made", &payload).await;
    let made = app.wait_for(id_of(&answer), "rejected").await;
    assert!(
        made["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no id at `.crm_id`")),
        "{made:#}"
    );
}

/// A dry run shows a step `when` passed as not run (it sent and computed nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_shows_a_step_when_passed_as_not_run() {
    let fake = Fake::start(CRM_TOKEN).await;
    let flow = r#"
[[flows]]
name = "mixed"
trigger = { webhook = { system = "shop" } }
key = '.id'
steps = [
  { name = "lead", when = '.trigger.kind == "order"', find = "crm.lead", match = ["phone"], args = '{phone: .trigger.phone}', as = "lead" },
  { name = "note", map = '{lead: .lead}' },
]
"#;
    let app = with_crm(&fake, flow).await;
    let report = app
        .post(
            "/api/flows/mixed/dry-run",
            Some(&json!({"id": "d-1", "kind": "refund", "phone": "+77010000001"})),
        )
        .await;
    assert_eq!(report["status"], "dry_run", "{report:#}");
    assert_eq!(report["steps"][0]["ran"], false, "{report:#}");
    assert_eq!(report["steps"][1]["ran"], true, "{report:#}");
    assert_eq!(report["steps"][1]["output"], json!({"lead": null}));
    assert_eq!(fake.count("GET", "/leads"), 0);
}

/// A step `when` passed is decided again on a manual retry: after a config fix that makes
/// its `when` true (deployed with a restart), the retry runs it, and the steps after it see
/// its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_when_passed_runs_on_a_retry_after_its_when_is_fixed() {
    let fake = Fake::start(CRM_TOKEN).await;
    fake.seed_lead("L-3", json!({"phone": "+77010000003", "title": "C"}));
    fake.break_with_422(axum::http::Method::POST, "/notes");
    let flow = |when: &str| {
        format!(
            r#"
[[flows]]
name = "vip"
trigger = {{ webhook = {{ system = "shop" }} }}
key = '.id'
retry = {{ max_attempts = 1 }}
steps = [
  {{ name = "lead", when = '{when}', find = "crm.lead", match = ["phone"], args = '{{phone: .trigger.phone}}', as = "lead" }},
  {{ name = "note", call = "crm.add_note", args = '{{lead_id: .lead.id}}' }},
]
"#
        )
    };
    let systems = [
        crm_system(fake.url(), CRM_TOKEN, "5s"),
        shop_system(HOOK_TOKEN),
    ]
    .concat();
    // The shipped `when` has a typo: it never holds.
    let app = TestApp::start(&format!("{systems}{}", flow(".trigger.vpi == true"))).await;
    let answer = send(
        &app,
        "vip",
        &json!({"id": "v-1", "vip": true, "phone": "+77010000003"}),
    )
    .await;
    let id = id_of(&answer);
    let failed = app.wait_for(id, "failed").await;
    assert_eq!(failed["steps"][0]["done"], true, "{failed:#}");
    assert_eq!(fake.count("GET", "/leads"), 0);

    let app = app
        .restart(&format!("{systems}{}", flow(".trigger.vip == true")))
        .await;
    fake.fix();
    app.post(&format!("/api/exchanges/{id}/retry"), None).await;
    let done = app.wait_for(id, "succeeded").await;
    assert_eq!(done["steps"][0]["output"]["id"], "L-3", "{done:#}");
    assert_eq!(fake.count("GET", "/leads"), 1);
    let notes = fake.notes();
    assert_eq!(notes.last().expect("a note")["lead_id"], "L-3");
}
