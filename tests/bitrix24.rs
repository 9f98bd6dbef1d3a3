//! The Bitrix24 connector against a fake portal that behaves like the documented API
//! (`docs/connectors/bitrix24.md`, reference §1.10): `/rest/<user>/<secret>/<method>.json`
//! and `/rest/<method>.json?auth=`, `{"result", "time"}` envelopes, `next` pagination,
//! Bitrix24 error bodies, a leaky bucket answering `503 QUERY_LIMIT_EXCEEDED`, access tokens
//! that expire (`401 expired_token`) and an OAuth server that refreshes them.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "bitrix24/fake.rs"]
mod fake;
#[path = "moysklad/fake.rs"]
#[allow(dead_code)]
mod ms_fake;

use fake::{CLIENT_SECRET, Fake, WEBHOOK_TOKEN};

#[path = "support/app.rs"]
mod support;
use support::{ADMIN, App, WAIT};

#[path = "bitrix24/flows.rs"]
mod flows;
#[path = "bitrix24/oauth.rs"]
mod oauth;
#[path = "bitrix24/telephony.rs"]
mod telephony;

const APP_TOKEN: &str = "app-token-b24-0001";

// ---------------------------------------------------------------- obmen under test

impl App {
    /// An outgoing Bitrix24 event, form-encoded as the portal posts it.
    async fn event(
        &self,
        flow: &str,
        deal: u64,
        ts: u64,
        token: &str,
    ) -> (reqwest::StatusCode, Value) {
        self.send(
            self.client
                .post(self.url(&format!("/hooks/{flow}")))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(fake::event_body("ONCRMDEALUPDATE", deal, ts, token)),
        )
        .await
    }
}

fn id_of(answer: &Value) -> u64 {
    answer["exchange_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no exchange_id in {answer}"))
}

const FLOW: &str = r#"
[[flows]]
name = "deal-contact"
trigger = { webhook = { system = "b24" } }
retry = { max_attempts = 10, initial = "100ms", max = "3s" }
steps = [
  { name = "deal", call = "b24.crm.deal.get", args = '{id: .trigger.data.FIELDS.ID}', as = "deal" },
  { name = "contact", upsert = "b24.crm.contact", match = ["PHONE"], args = '{NAME: .deal.TITLE, PHONE: [{VALUE: .deal.UF_CRM_PHONE, VALUE_TYPE: "WORK"}]}' },
]
"#;

fn webhook_system(fake: &Fake, extra: &str) -> String {
    format!(
        r#"
[systems.b24]
kind = "bitrix24"
webhook_url = "{url}"
application_token = "{APP_TOKEN}"
{extra}
"#,
        url = fake.webhook_url()
    )
}

fn oauth_system(fake: &Fake) -> String {
    format!(
        r#"
[systems.b24]
kind = "bitrix24"
oauth = {{ domain = "{url}", server = "{url}", client_id = "local.b24app.1", client_secret = "{CLIENT_SECRET}", access_token = "access-0001", refresh_token = "refresh-0001" }}
application_token = "{APP_TOKEN}"
rate_limit = "50/s"
"#,
        url = fake.url
    )
}

fn seed_deal(fake: &Fake, id: u64, phone: &str) {
    fake.with(|p| {
        p.deals.insert(
            id,
            json!({"ID": id.to_string(), "TITLE": format!("Deal {id}"), "STAGE_ID": "WON",
                   "UF_CRM_PHONE": phone}),
        );
    });
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_fetches_the_deal_and_upserts_the_contact_by_phone() {
    let fake = Fake::start().await;
    seed_deal(&fake, 11, "+7 (701) 000-00-05");
    seed_deal(&fake, 12, "8 702 111 22 33");
    // A contact with deal 11's phone exists, written differently.
    fake.with(|p| {
        p.contacts.insert(
            7,
            json!({"ID": "7", "NAME": "old", "PHONE": [{"VALUE": "77010000005", "VALUE_TYPE": "WORK"}]}),
        );
    });
    let app = App::start(&[webhook_system(&fake, ""), FLOW.into()].concat()).await;

    let (code, answer) = app
        .event("deal-contact", 11, 1_767_000_000, APP_TOKEN)
        .await;
    assert_eq!(code, 200, "{answer}");
    let found = app.wait_for(id_of(&answer), "succeeded").await;
    assert_eq!(
        found["steps"][1]["output"]["action"], "updated",
        "{found:#}"
    );
    assert_eq!(found["steps"][1]["output"]["id"], "7");
    fake.with(|p| assert_eq!(p.contacts[&7]["NAME"], "Deal 11"));

    let (code, answer) = app
        .event("deal-contact", 12, 1_767_000_001, APP_TOKEN)
        .await;
    assert_eq!(code, 200, "{answer}");
    let created = app.wait_for(id_of(&answer), "succeeded").await;
    assert_eq!(
        created["steps"][1]["output"]["action"], "created",
        "{created:#}"
    );
    let new_id = created["steps"][1]["output"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    fake.with(|p| {
        let c = &p.contacts[&new_id.parse::<u64>().expect("number")];
        assert_eq!(c["PHONE"][0]["VALUE"], "8 702 111 22 33");
        let methods: Vec<&str> = p.calls.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(
            methods,
            [
                "crm.deal.get",
                "crm.duplicate.findbycomm",
                "crm.contact.update",
                "crm.deal.get",
                "crm.duplicate.findbycomm",
                "crm.contact.add"
            ]
        );
        assert!(p.calls.iter().all(|(_, how)| how == "webhook"));
    });

    // The trigger holds the event as nested JSON, without the application token; the
    // journal never shows the webhook secret.
    let payload = &created["events"][0]["payload"];
    assert_eq!(payload["data"]["FIELDS"]["ID"], "12", "{created:#}");
    assert_eq!(payload["auth"]["member_id"], "0f3c", "{created:#}");
    assert!(
        payload["auth"].get("application_token").is_none(),
        "{created:#}"
    );
    let text = created.to_string();
    assert!(!text.contains(APP_TOKEN), "{text}");
    assert!(!text.contains(WEBHOOK_TOKEN), "{text}");
    assert!(text.contains("crm.deal.get.json"), "{text}");

    // The same event again is a duplicate (key: event, record id, ts).
    let (code, again) = app
        .event("deal-contact", 12, 1_767_000_001, APP_TOKEN)
        .await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(id_of(&again), id_of(&answer), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_application_token_is_refused() {
    let fake = Fake::start().await;
    let app = App::start(&[webhook_system(&fake, ""), FLOW.into()].concat()).await;
    let (code, answer) = app.event("deal-contact", 11, 1, "forged-token-0000").await;
    assert!(code == 401 || code == 403, "{code} {answer}");
    let response = app
        .client
        .post(format!("{}/hooks/deal-contact", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("event=ONCRMDEALUPDATE&data%5BFIELDS%5D%5BID%5D=11")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 401);
    fake.with(|p| assert!(p.calls.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_expiring_mid_run_is_refreshed_once() {
    let fake = Fake::start().await;
    for id in 1..=20 {
        seed_deal(&fake, id, &format!("+7701000{id:04}"));
    }
    fake.with(|p| {
        p.expire_after = Some(12);
        p.capacity = 10_000.0;
    });
    let app = App::start(&[oauth_system(&fake), FLOW.into()].concat()).await;
    let mut ids = Vec::new();
    for deal in 1..=20 {
        let (code, answer) = app
            .event("deal-contact", deal, 1_767_000_000, APP_TOKEN)
            .await;
        assert_eq!(code, 200, "{answer}");
        ids.push(id_of(&answer));
    }
    for id in ids {
        let done = app.wait_for(id, "succeeded").await;
        assert!(
            done["attempt_log"].as_array().map_or(0, Vec::len) <= 1,
            "no exchange needed a second attempt: {done:#}"
        );
        // Neither the configured nor the refreshed tokens reach the journal.
        let text = done.to_string();
        for token in ["access-0001", "access-0002", "refresh-0001", CLIENT_SECRET] {
            assert!(!text.contains(token), "{token} in {text}");
        }
        assert!(text.contains("auth=***"), "{text}");
    }
    fake.with(|p| {
        assert_eq!(p.refreshes, 1, "one refresh for all the refused calls");
        assert!(p.expired_answers >= 1);
        assert_eq!(p.contacts.len(), 20);
        assert!(p.calls.iter().all(|(_, how)| how == "oauth"));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_300_exchanges_against_the_leaky_bucket_all_succeeds_and_refusals_wait() {
    const DEALS: u64 = 300;
    let fake = Fake::start().await;
    // The portal's bucket (50 deep, draining 2/s), scaled down 20x in time: draining 40/s,
    // and 30 deep so that obmen's "36/s" (a token bucket allowing a burst of 36) overflows it
    // by a handful while the events come in faster than that; from then on obmen's outbound
    // rate stays under the drain, which leaves the bucket room for the jitter of a busy
    // machine (at exactly the drain rate a full bucket has none).
    fake.with(|p| {
        p.capacity = 30.0;
        p.per_second = 40.0;
    });
    for id in 1..=DEALS {
        seed_deal(&fake, id, "+77010000001");
    }
    let flow = r#"
[[flows]]
name = "deals"
trigger = { webhook = { system = "b24" } }
retry = { max_attempts = 10, initial = "100ms", max = "5s" }
steps = [ { name = "deal", call = "b24.crm.deal.get", args = '{id: .trigger.data.FIELDS.ID}' } ]
"#;
    let app = App::start(
        &[
            webhook_system(&fake, "rate_limit = \"36/s\"\nconcurrency = 4"),
            flow.into(),
        ]
        .concat(),
    )
    .await;
    // The first 40 events at once (obmen's burst then overflows the bucket whatever the
    // machine's pace), the rest over ~3 s, still faster than obmen may call the portal.
    let started = Instant::now();
    let mut ids = Vec::new();
    for deal in 1..=DEALS {
        let (code, answer) = app.event("deals", deal, 1_767_000_000, APP_TOKEN).await;
        assert_eq!(code, 200, "{answer}");
        ids.push(id_of(&answer));
        if deal > 40 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut details = Vec::new();
    for id in ids {
        let done = app.wait_for(id, "succeeded").await;
        assert_eq!(
            done["steps"][0]["output"]["TITLE"]
                .as_str()
                .map(|t| t.starts_with("Deal ")),
            Some(true)
        );
        details.push(done);
    }
    let took = started.elapsed();
    retries_keep_their_place_in_the_queue(&details);
    fake.with(|p| {
        assert!(
            p.refused_by_bucket >= 1,
            "the first burst overflowed the bucket"
        );
        // 6 by design (a burst of 36 into 30).
        assert!(
            p.refused_by_bucket <= 10,
            "only a handful of QUERY_LIMIT_EXCEEDED: {}",
            p.refused_by_bucket
        );
        // Every refused get was sent again, not before the 1 s Bitrix24 asks for.
        for (i, (deal, at, refused)) in p.gets.iter().enumerate() {
            if !refused {
                continue;
            }
            let (_, next, _) = p.gets[i + 1..]
                .iter()
                .find(|(d, _, _)| d == deal)
                .unwrap_or_else(|| panic!("deal {deal} was not sent again"));
            let waited = next.duration_since(*at);
            assert!(
                waited >= Duration::from_millis(950),
                "deal {deal} was retried after {waited:?}"
            );
        }
        // Each deal was read exactly once successfully: no exchange lost, none doubled.
        let mut read: Vec<&str> = p
            .gets
            .iter()
            .filter(|(_, _, r)| !r)
            .map(|(d, _, _)| d.as_str())
            .collect();
        read.sort_unstable();
        read.dedup();
        assert_eq!(read.len() as u64, DEALS);
        assert_eq!(p.gets.iter().filter(|(_, _, r)| !r).count() as u64, DEALS);
        eprintln!(
            "300 exchanges in {took:?}, {} refused by the bucket",
            p.refused_by_bucket
        );
    });
}

fn at(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not a time: {value}: {e}"))
}

/// A refused exchange is due again after the 1 s Bitrix24 asks for (not a growing backoff):
/// it is retried before every exchange that arrived after that moment, however long the
/// queue ahead of it (in a storm, the exchanges received in that second go first).
fn retries_keep_their_place_in_the_queue(details: &[Value]) {
    let slack = chrono::Duration::milliseconds(100);
    let first_start = |d: &Value| at(&d["attempt_log"][0]["started_at"]);
    let mut compared = 0;
    for retried in details.iter().filter(|d| d["attempts"] != 1) {
        let log = &retried["attempt_log"];
        assert_eq!(log[0]["error"]["class"], "rate_limited", "{retried:#}");
        let refused = at(&log[0]["error"]["at"]);
        let again = at(&log[1]["started_at"]);
        assert!(
            again - refused >= chrono::Duration::milliseconds(950),
            "retried {} after the refusal",
            again - refused
        );
        let due = refused + chrono::Duration::seconds(1);
        for later in details
            .iter()
            .filter(|d| at(&d["created_at"]) > due + slack)
        {
            compared += 1;
            assert!(
                first_start(later) + slack >= again,
                "exchange {} (received {}) ran at {} before the retry of {} due at {due}, run at {again}",
                later["id"],
                later["created_at"],
                first_start(later),
                retried["id"]
            );
        }
    }
    assert!(compared > 0, "no exchange arrived after a retry was due");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_by_origin_id_searches_the_list_and_start_reads_a_later_page() {
    let fake = Fake::start().await;
    for i in 0..120 {
        fake.with(|p| {
            p.contacts.insert(
                1000 + i,
                json!({"ID": (1000 + i).to_string(), "NAME": format!("c{i}"), "ORIGIN_ID": format!("ext-{i}")}),
            );
        });
    }
    seed_deal(&fake, 5, "+77010000009");
    let flow = r#"
[[flows]]
name = "by-origin"
trigger = { webhook = { system = "b24" } }
steps = [
  { name = "deal", call = "b24.crm.deal.get", args = '{id: .trigger.data.FIELDS.ID}', as = "deal" },
  { name = "contact", upsert = "b24.crm.contact", match = ["ORIGIN_ID"], args = '{ORIGIN_ID: "ext-77", NAME: .deal.TITLE}' },
  { name = "page3", call = "b24.crm.contact.list", args = '{start: 100, select: ["ID"]}' },
]
"#;
    let app = App::start(&[oauth_system(&fake), flow.into()].concat()).await;
    let (code, answer) = app.event("by-origin", 5, 1, APP_TOKEN).await;
    assert_eq!(code, 200, "{answer}");
    let done = app.wait_for(id_of(&answer), "succeeded").await;
    assert_eq!(done["steps"][1]["output"]["action"], "updated", "{done:#}");
    assert_eq!(done["steps"][1]["output"]["id"], "1077");
    // The third page of 120 holds the last 20 (the output is the `result` list).
    assert_eq!(
        done["steps"][2]["output"].as_array().map(Vec::len),
        Some(20)
    );
    fake.with(|p| {
        assert_eq!(p.contacts[&1077]["NAME"], "Deal 5");
        let methods: Vec<&str> = p.calls.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(
            methods,
            [
                "crm.deal.get",
                "crm.contact.list",
                "crm.contact.update",
                "crm.contact.list"
            ]
        );
    });
}

/// `upsert = "b24.crm.product"` with `match = ["XML_ID"]`: a product Bitrix24 has is found
/// by `crm.product.list` (its filter, among more than a page of goods) and updated; a new one
/// is added once, and later found through the ID map without a search; an add whose answer
/// is lost (the product made, the answer past the timeout) is retried, found by its
/// `XML_ID` and updated — no second product.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_products_are_upserted_by_xml_id_and_a_lost_add_makes_no_second_one() {
    let fake = Fake::start().await;
    let known = fake.with(|p| {
        for i in 0..60 {
            p.seed_product(&json!({"NAME": format!("Other {i}"), "XML_ID": format!("other-{i}")}));
        }
        // Past the first page of 50: only the filter finds it.
        p.seed_product(&json!({"NAME": "Chairs (old)", "XML_ID": "1c-chairs", "PRICE": "1200.00"}))
    });
    let flow = r#"
[[flows]]
name = "goods"
trigger = { manual = {} }
external_id = ".xml_id"
key = '.xml_id + ":" + .name'   # a changed product is new work
retry = { max_attempts = 4, initial = "100ms", max = "1s" }
steps = [
  { name = "product", upsert = "b24.crm.product", match = ["XML_ID"],
    args = '{NAME: .trigger.name, XML_ID: .trigger.xml_id, ACTIVE: "Y"}' },
]
"#;
    // The timeout is well under the fake's late answer, so that answer is lost.
    let system = webhook_system(&fake, "rate_limit = \"50/s\"\ntimeout = \"500ms\"");
    let app = App::start(&[system, flow.into()].concat()).await;
    let methods_from = |from: usize| {
        fake.with(|p| {
            p.calls[from..]
                .iter()
                .map(|(m, _)| m.clone())
                .collect::<Vec<_>>()
        })
    };

    // Found by XML_ID: updated, fields the flow does not send stay.
    let run = app
        .run("goods", &json!({"xml_id": "1c-chairs", "name": "Chairs"}))
        .await;
    let done = app.wait_for(run, "succeeded").await;
    let output = &done["steps"][0]["output"];
    assert_eq!(output["action"], "updated", "{done:#}");
    assert_eq!(output["id"], known.to_string());
    assert_eq!(methods_from(0), ["crm.product.list", "crm.product.update"]);
    fake.with(|p| {
        let search = &p.list_args.last().expect("a search").1;
        assert_eq!(
            search,
            &json!({"filter": {"XML_ID": "1c-chairs"}, "select": ["ID"]})
        );
        assert_eq!(p.products[&known]["NAME"], "Chairs");
        assert_eq!(p.products[&known]["PRICE"], "1200.00");
        assert_eq!(p.products.len(), 61);
    });

    // Not found: added once; the id is the add's result, linked in the ID map.
    let before = fake.with(|p| p.calls.len());
    let run = app
        .run("goods", &json!({"xml_id": "1c-table", "name": "Table"}))
        .await;
    let done = app.wait_for(run, "succeeded").await;
    let output = &done["steps"][0]["output"];
    assert_eq!(output["action"], "created", "{done:#}");
    let table = fake.with(|p| {
        let found = p.by_xml_id("1c-table");
        assert_eq!(found.len(), 1, "{found:?}");
        found[0]["ID"].as_str().expect("id").to_owned()
    });
    assert_eq!(output["id"], table.as_str());
    assert_eq!(
        done["links"],
        json!([{"system": "b24", "entity": "crm.product", "external_key": "1c-table", "target_id": table}])
    );
    assert_eq!(
        methods_from(before),
        ["crm.product.list", "crm.product.add"]
    );

    // The same product again: the ID map names it, no search.
    let before = fake.with(|p| p.calls.len());
    let run = app
        .run(
            "goods",
            &json!({"xml_id": "1c-table", "name": "Table, oak"}),
        )
        .await;
    let done = app.wait_for(run, "succeeded").await;
    assert_eq!(done["steps"][0]["output"]["action"], "updated", "{done:#}");
    assert_eq!(done["steps"][0]["output"]["id"], table.as_str());
    assert_eq!(methods_from(before), ["crm.product.update"]);
    fake.with(|p| {
        assert_eq!(p.by_xml_id("1c-table").len(), 1);
        assert_eq!(p.by_xml_id("1c-table")[0]["NAME"], "Table, oak");
    });

    // The answer to the add is lost: the retry searches, finds the product and updates it.
    fake.with(|p| p.lose_product_adds = 1);
    let before = fake.with(|p| p.calls.len());
    let run = app
        .run("goods", &json!({"xml_id": "1c-lamp", "name": "Lamp"}))
        .await;
    let done = app.wait_for(run, "succeeded").await;
    assert_eq!(
        methods_from(before),
        [
            "crm.product.list",
            "crm.product.add",
            "crm.product.list",
            "crm.product.update"
        ]
    );
    let lamp = fake.with(|p| {
        let found = p.by_xml_id("1c-lamp");
        assert_eq!(found.len(), 1, "no second product: {found:?}");
        found[0]["ID"].as_str().expect("id").to_owned()
    });
    assert_eq!(done["attempts"], 2, "{done:#}");
    assert_eq!(
        done["attempt_log"][0]["error"]["class"], "transient",
        "{done:#}"
    );
    let output = &done["steps"][0]["output"];
    assert_eq!(output["action"], "updated", "{done:#}");
    assert_eq!(output["id"], lamp.as_str());
    assert_eq!(done["links"][0]["target_id"], lamp.as_str(), "{done:#}");
    fake.with(|p| assert_eq!(p.products.len(), 63));

    // A product deleted by hand after it was linked: the ID map still names it, its update
    // answers "Not found" and the exchange fails; nothing is added behind the person's back.
    fake.with(|p| p.products.retain(|_, r| r["XML_ID"] != "1c-table"));
    let run = app
        .run(
            "goods",
            &json!({"xml_id": "1c-table", "name": "Table, pine"}),
        )
        .await;
    let failed = app.wait_for(run, "failed").await;
    assert_eq!(failed["last_error"]["class"], "permanent", "{failed:#}");
    let message = failed["last_error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Not found"), "{message}");
    fake.with(|p| {
        assert!(p.by_xml_id("1c-table").is_empty());
        assert_eq!(p.products.len(), 62);
    });
}

#[test]
fn the_example_config_is_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string("examples/bitrix24-deal-to-crm.toml").expect("example");
    // The secrets as literals (obmen accepts them; a real deployment uses `secret:NAME`).
    let text = text
        .replace(
            "secret:b24_webhook_url",
            "https://acme.bitrix24.kz/rest/1/wh7k2q9x4example/",
        )
        .replace("secret:b24_app_token", "app-token-example-1")
        .replace("secret:crm_token", "crm-token-example-1")
        .replace("secret:admin_token", "admin-token-example-1");
    let text = text.replace("/var/lib/obmen", &dir.path().display().to_string());
    let path = dir.path().join("obmen.toml");
    if let Err(e) = obmen::config::load_str(&path, &text) {
        panic!("the example is invalid:\n{e}");
    }
}

/// `examples/bitrix24-won-deal-to-moysklad-order.toml` as shipped (secrets, data_dir and the
/// MoySklad address filled in, `live` instead of `shadow`) against both fakes: the MoySklad
/// fake checks every body against the official schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_won_deal_example_upserts_the_counterparty_and_the_order_and_writes_the_number_back() {
    let b24 = Fake::start().await;
    let ms = ms_fake::FakeMs::start().await;
    b24.with(|p| {
        p.contacts.insert(
            501,
            json!({"ID": "501", "NAME": "Aigul", "LAST_NAME": "Serikova",
                "PHONE": [{"VALUE": "+7 701 000 00 05", "VALUE_TYPE": "WORK"}],
                "EMAIL": [{"VALUE": "aigul@example.kz", "VALUE_TYPE": "WORK"}]}),
        );
        for (id, stage) in [(77, "WON"), (78, "C2:WON"), (79, "NEW")] {
            p.deals.insert(
                id,
                json!({"ID": id.to_string(), "TITLE": format!("Deal {id}"), "STAGE_ID": stage,
                    "CONTACT_ID": "501", "OPPORTUNITY": "150000.00", "CURRENCY_ID": "KZT"}),
            );
        }
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string("examples/bitrix24-won-deal-to-moysklad-order.toml")
        .expect("example");
    let text = text
        .replace(
            "\"/var/lib/obmen\"",
            &format!("\"{}\"", dir.path().join("data").display()),
        )
        .replace("secret:admin_token", ADMIN)
        .replace("secret:b24_webhook_url", &b24.webhook_url())
        .replace("secret:b24_app_token", APP_TOKEN)
        .replace(
            "token = \"secret:moysklad_token\"",
            &format!("token = \"{}\"\nbase_url = \"{}\"", ms_fake::TOKEN, ms.base),
        )
        .replace("mode = \"shadow\"", "mode = \"live\"");
    assert!(!text.contains("secret:"), "every secret is filled in");
    let app = App::serve_in(dir, text).await;
    let flow = "b24-won-deal-to-moysklad";

    let (code, answer) = app.event(flow, 77, 1_767_000_001, APP_TOKEN).await;
    assert_eq!(code, 200, "{answer}");
    let done = app.wait_for(id_of(&answer), "succeeded").await;
    let number = b24.with(|p| p.deals[&77]["UF_CRM_MS_ORDER_NO"].clone());
    {
        let inner = ms.lock();
        assert_eq!(inner.contract_errors, Vec::<String>::new());
        let parties = &inner.rows["counterparty"];
        assert_eq!(parties.len(), 1);
        assert_eq!(parties[0]["externalCode"], "b24-contact-501");
        assert_eq!(parties[0]["name"], "Aigul Serikova");
        assert_eq!(parties[0]["phone"], "+7 701 000 00 05");
        let orders = &inner.rows["customerorder"];
        assert_eq!(orders.len(), 1);
        let order = &orders[0];
        assert_eq!(order["externalCode"], "b24-77");
        assert_eq!(
            order["agent"]["meta"]["href"]
                .as_str()
                .map(|h| h.ends_with(parties[0]["id"].as_str().unwrap_or("?"))),
            Some(true)
        );
        assert_eq!(
            order["state"]["meta"]["href"]
                .as_str()
                .map(|h| h.ends_with("/states/9a1b7c2e-0a4f-11ee-0a80-0d5a00000001")),
            Some(true)
        );
        assert!(order["syncId"].is_string(), "a create carries a syncId");
        assert_eq!(number, order["name"], "{done:#}");
    }

    // The write-back fires the event again: the order is found and updated, no new one, and
    // the number already in the deal stops the run before another write-back.
    let (_, answer) = app.event(flow, 77, 1_767_000_002, APP_TOKEN).await;
    app.wait_for(id_of(&answer), "skipped").await;
    // A won stage of a pipeline the status map does not know: rejected, no order.
    let (_, answer) = app.event(flow, 78, 1_767_000_003, APP_TOKEN).await;
    let rejected = app.wait_for(id_of(&answer), "rejected").await;
    assert!(
        rejected["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("deal_to_order")),
        "{rejected:#}"
    );
    // Not won: filtered out after the deal is read.
    let (_, answer) = app.event(flow, 79, 1_767_000_004, APP_TOKEN).await;
    app.wait_for(id_of(&answer), "skipped").await;

    let inner = ms.lock();
    assert_eq!(inner.contract_errors, Vec::<String>::new());
    assert_eq!(inner.rows["customerorder"].len(), 1);
    assert_eq!(inner.rows["counterparty"].len(), 1);
    b24.with(|p| {
        let updates = p
            .calls
            .iter()
            .filter(|(m, _)| m == "crm.deal.update")
            .count();
        assert_eq!(updates, 1, "one write-back");
        assert!(p.deals[&78].get("UF_CRM_MS_ORDER_NO").is_none());
    });
}

/// A sale price as MoySklad gives it: kopecks with the price type it belongs to.
fn sale_price(ms: &ms_fake::FakeMs, kopecks: u32) -> Value {
    let id = "672559f1-cbf3-11e1-9eb9-889ffa6f49fd";
    json!({"value": kopecks, "priceType": {
        "meta": {"href": format!("{}/context/companysettings/pricetype/{id}", ms.base),
                 "type": "pricetype", "mediaType": "application/json"},
        "id": id, "name": "Цена продажи", "externalCode": "cbcf493b-55bc-11d9-848a-00112f43529a"}})
}

/// `examples/moysklad-stock-to-bitrix24.toml` as shipped against both fakes: pages of 24
/// changed products follow nextHref, then the `updated>=` cursor; linked products become
/// batch commands (quantity and price), unlinked ones are skipped, and a batch command that
/// fails keeps the cursor where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_example_pages_through_changed_products_into_bitrix24_batches() {
    let b24 = Fake::start().await;
    let ms = ms_fake::FakeMs::start().await;
    // Bitrix24 has the products 1 to 27 (their ids are in the MoySklad externalCodes).
    b24.with(|p| {
        for n in 1..=27u64 {
            p.products.insert(
                n,
                json!({"ID": n.to_string(), "NAME": format!("Product {n}"), "ACTIVE": "Y"}),
            );
        }
    });
    for n in 1..=27u32 {
        ms.seed(
            "product",
            json!({"name": format!("Product {n}"), "externalCode": format!("b24-product-{n}"),
                "quantity": n * 2, "salePrices": [sale_price(&ms, 12_550 * n)],
                "updated": format!("2026-02-01 10:00:{n:02}.000")}),
        );
    }
    ms.seed(
        "product",
        json!({"name": "Not in Bitrix24", "externalCode": "ms-only-1", "quantity": 5,
            "updated": "2026-02-01 10:00:28.000"}),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let text =
        std::fs::read_to_string("examples/moysklad-stock-to-bitrix24.toml").expect("example");
    let text = text
        .replace(
            "\"/var/lib/obmen\"",
            &format!("\"{}\"", dir.path().join("data").display()),
        )
        .replace("secret:admin_token", ADMIN)
        .replace("secret:b24_webhook_url", &b24.webhook_url())
        .replace(
            "token = \"secret:moysklad_token\"",
            &format!("token = \"{}\"\nbase_url = \"{}\"", ms_fake::TOKEN, ms.base),
        )
        .replace("mode = \"shadow\"", "mode = \"live\"");
    assert!(!text.contains("secret:"), "every secret is filled in");
    let app = App::serve_in(dir, text).await;
    let flow = "moysklad-stock-to-b24";

    // Run 1: the first page of 25; the cursor becomes its nextHref.
    let first = app
        .wait_for(app.run(flow, &json!({})).await, "succeeded")
        .await;
    let commands = |from: usize| b24.with(|p| p.batch_cmds[from..].to_vec());
    let page1 = commands(0);
    assert_eq!(page1.len(), 1 + 2 * 24, "{first:#}");
    let stock_7 = page1
        .iter()
        .find(|(k, _, _)| k == "stock_7")
        .expect("stock_7");
    assert_eq!(stock_7.1, "catalog.product.update");
    assert!(stock_7.2.contains(&("id".into(), "7".into())));
    assert!(
        stock_7
            .2
            .contains(&("fields[quantity]".into(), "14".into()))
    );
    let price_7 = page1
        .iter()
        .find(|(k, _, _)| k == "price_7")
        .expect("price_7");
    assert_eq!(price_7.1, "crm.product.update");
    assert!(
        price_7
            .2
            .contains(&("fields[PRICE]".into(), "878.5".into())),
        "{price_7:?}"
    );
    b24.with(|p| assert_eq!(p.products[&7]["PRICE"], "878.5"));
    // Run 2: the rest (25 to 27 and the unlinked product, which is skipped); the cursor
    // becomes the last `updated`.
    app.wait_for(app.run(flow, &json!({})).await, "succeeded")
        .await;
    let page2 = commands(page1.len());
    let keys: Vec<&str> = page2.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 7, "{keys:?}");
    for key in [
        "now", "stock_25", "price_25", "stock_26", "price_26", "stock_27", "price_27",
    ] {
        assert!(keys.contains(&key), "{keys:?}");
    }
    // Run 3: `updated>=` the last time seen brings that row again and a new product that
    // Bitrix24 does not know: the batch answers 200 with a result_error, the step fails with
    // that command's error and the cursor stays.
    ms.seed(
        "product",
        json!({"name": "Product 40", "externalCode": "b24-product-40", "quantity": 1,
            "salePrices": [sale_price(&ms, 100)], "updated": "2026-02-01 10:05:00.000"}),
    );
    // (Bitrix24 has no product 40.)
    let failed = app.run(flow, &json!({})).await;
    let failed = app.wait_for(failed, "failed").await;
    let error = &failed["last_error"];
    assert_eq!(error["class"], "permanent", "{failed:#}");
    assert_eq!(error["step"], "write", "{failed:#}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "batch command `stock_40` (catalog.product.update) failed: 0: Product with the specified ID does not exist"
        ) && message.contains("1 more failed: batch command `price_40` (crm.product.update)"),
        "{message}"
    );
    // Run 4, the product now exists: the same query again, and the cursor moves on.
    b24.with(|p| {
        p.products
            .insert(40, json!({"ID": "40", "NAME": "Product 40", "ACTIVE": "Y"}))
    });
    app.wait_for(app.run(flow, &json!({})).await, "succeeded")
        .await;
    let lists: Vec<Vec<(String, String)>> = ms
        .ledger()
        .into_iter()
        .filter(|r| r.path.ends_with("/entity/assortment"))
        .map(|r| r.query)
        .collect();
    assert_eq!(lists.len(), 4);
    let filter = |q: &Vec<(String, String)>| {
        q.iter()
            .find(|(k, _)| k == "filter")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(filter(&lists[0]), "updated>=2026-01-01 00:00:00");
    assert!(
        lists[1].contains(&("offset".into(), "24".into())),
        "{:?}",
        lists[1]
    );
    assert_eq!(filter(&lists[2]), "updated>=2026-02-01 10:00:28.000");
    assert_eq!(
        filter(&lists[3]),
        filter(&lists[2]),
        "the failed run kept the cursor"
    );
}

/// A batch whose `crm.deal.add` went through while another command was refused by the limit:
/// sending the batch again would create the deal twice, so the step fails for a person to
/// decide (naming the created id) and nothing is sent again. Without a create in it, the same
/// refusal is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_created_a_record_is_not_sent_again() {
    let fake = Fake::start().await;
    fake.with(|p| {
        p.contacts.insert(7, json!({"ID": "7", "NAME": "old"}));
        p.limited_in_batch.insert("crm.contact.update".into(), 2);
    });
    let app = App::start(&format!(
        r#"{}
[[flows]]
name = "batch"
trigger = {{ manual = {{}} }}
retry = {{ max_attempts = 3, initial = "50ms", max = "2s" }}
steps = [ {{ name = "write", call = "b24.batch", args = '{{halt: 0, cmd: .trigger.cmd}}' }} ]
"#,
        webhook_system(&fake, "rate_limit = \"50/s\"")
    ))
    .await;
    let cmd = json!({
        "deal": "crm.deal.add?fields[TITLE]=Batch%20deal",
        "contact": "crm.contact.update?id=7&fields[NAME]=From%20batch"
    });
    let id = app.run("batch", &json!({"cmd": cmd})).await;
    let failed = app.wait_for(id, "failed").await;
    let error = &failed["last_error"];
    assert_eq!(error["class"], "permanent", "{failed:#}");
    let message = error["message"].as_str().unwrap_or_default();
    let deal = fake.with(|p| {
        assert_eq!(p.deals.len(), 1, "one deal created, not two");
        *p.deals.keys().next().expect("the deal")
    });
    assert!(
        message.starts_with(
            "batch command `contact` (crm.contact.update) failed: QUERY_LIMIT_EXCEEDED"
        ) && message.contains(&format!("already created `deal` (crm.deal.add) id {deal}")),
        "{message}"
    );
    let sent = fake.with(|p| p.batch_cmds.len());
    assert_eq!(sent, 2, "the batch was sent once");
    assert_eq!(
        failed["attempt_log"].as_array().map(Vec::len),
        Some(1),
        "{failed:#}"
    );

    // No create in the batch: the refusal is retried and the update goes through.
    let cmd = json!({
        "deal": format!("crm.deal.get?id={deal}"),
        "contact": "crm.contact.update?id=7&fields[NAME]=From%20batch"
    });
    let id = app.run("batch", &json!({"cmd": cmd})).await;
    let done = app.wait_for(id, "succeeded").await;
    assert_eq!(
        done["attempt_log"].as_array().map(Vec::len),
        Some(2),
        "{done:#}"
    );
    fake.with(|p| {
        assert_eq!(p.contacts[&7]["NAME"], "From batch");
        assert_eq!(p.deals.len(), 1);
    });
}
