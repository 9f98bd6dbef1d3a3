//! The shipped example `examples/1c-catalog-and-orders-with-bitrix24.toml`, run as written
//! (only addresses, secrets, the data dir, the retry pace and shadow → live substituted)
//! against a test that plays 1C over real HTTP (tests/onec_example/client.rs) and a fake
//! Bitrix24 portal that answers like the documented REST API (tests/bitrix24/fake.rs):
//! 1C's goods become Bitrix24 products (upserted by XML_ID: created once — also when the
//! answer to the add is lost —, updated, deactivated when 1C marks them deleted, nothing
//! sent again for a re-upload), 1C's offers set their price and stock (an offer before its
//! product waits for it, retried by the `find` step's `missing = "retry"`), and a won
//! Bitrix24 deal becomes an order that 1C fetches with `mode=query` until it says
//! `mode=success`.

#[path = "onec_commerceml/client.rs"]
mod client;
#[path = "bitrix24/fake.rs"]
mod fake;
#[path = "support/app.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use client::{OneC, samples, xmllint_valid};
use fake::Fake;
use support::{ADMIN, App, WAIT};

/// Also a canary: it must never show in the journal.
const PASSWORD: &str = "canary-1c-exchange-pass-5521";
const APP_TOKEN: &str = "b24-app-token-canary-7710";
const EXAMPLE: &str = "examples/1c-catalog-and-orders-with-bitrix24.toml";

fn sample(rel: &str) -> String {
    std::fs::read_to_string(samples().join(rel)).unwrap_or_else(|e| panic!("sample {rel}: {e}"))
}

/// The example with the test's addresses and secrets; nothing else changed but the retry
/// pace and the deal flow's shadow mode.
async fn start(portal: &Fake) -> App {
    start_mode(portal, true).await
}

/// `live = false` keeps the deal flow in the shadow mode the example ships with.
async fn start_mode(portal: &Fake, live: bool) -> App {
    App::start_with(|data| {
        let mut text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLE))
            .expect("the example");
        for (from, to) in [
            (
                "\"/var/lib/obmen\"",
                format!("{:?}", data.display().to_string()),
            ),
            ("\"secret:admin_token\"", format!("\"{ADMIN}\"")),
            (
                "\"secret:b24_webhook_url\"",
                format!("\"{}\"", portal.webhook_url()),
            ),
            ("\"secret:b24_app_token\"", format!("\"{APP_TOKEN}\"")),
            (
                "\"secret:onec_exchange_password\"",
                format!("\"{PASSWORD}\""),
            ),
            (
                "mode = \"shadow\"",
                if live {
                    "mode = \"live\""
                } else {
                    "mode = \"shadow\""
                }
                .into(),
            ),
            // The shipped policy waits up to hours for an offer's product; the test's goods
            // arrive within seconds (at the portal's 2 calls a second), so attempts come
            // fast but not so fast that waiting offers' searches crowd out the goods.
            (
                r#"retry = { max_attempts = 30, initial = "30s", max = "10m" }"#,
                r#"retry = { max_attempts = 60, initial = "250ms", max = "1s" }"#.into(),
            ),
        ] {
            assert!(text.contains(from), "the example no longer has {from}");
            text = text.replace(from, &to);
        }
        text
    })
    .await
}

impl App {
    /// One exchange by the id an answer or a list gave.
    async fn detail(&self, id: &Value) -> Value {
        self.exchange(id.as_u64().expect("an exchange id")).await
    }

    /// Bitrix24 posting an outgoing event to the deal flow's hook.
    async fn deal_event(&self, deal: u64, ts: u64, token: &str) -> (StatusCode, Value) {
        self.send(
            self.client
                .post(self.url("/hooks/b24-won-deal-to-1c"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(fake::event_body("ONCRMDEALUPDATE", deal, ts, token)),
        )
        .await
    }
}

fn statuses(all: &[Value]) -> Vec<String> {
    all.iter()
        .map(|e| e["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn count(all: &[Value], status: &str) -> usize {
    all.iter().filter(|e| e["status"] == status).count()
}

/// One catalog run as 1C makes it: checkauth, init, every file in parts, import each until
/// `success`, then `complete`.
async fn catalog_run(app: &App, files: &[(&str, &str)]) -> Vec<String> {
    let mut onec = OneC::new(&app.base, "1c-catalog", "catalog");
    let a = onec.checkauth("site", Some(PASSWORD)).await;
    assert_eq!(a.status, "success", "{a:?}");
    let (limit, _) = onec.init(None).await;
    // Small parts, as if file_limit were 1C's: several parts per file.
    let part = limit.min(4096);
    for (name, text) in files {
        onec.upload(name, text.as_bytes(), part).await;
    }
    let mut summaries = Vec::new();
    for (name, _) in files {
        let a = onec.import(name).await.0;
        assert_eq!(a.status, "success", "import {name}: {a:?}");
        summaries.push(a.message());
    }
    assert_eq!(onec.get("mode=complete").await.status, "success");
    summaries
}

/// The product element of `id` in a catalog file, cut out whole.
fn product_block<'a>(import: &'a str, id: &str) -> &'a str {
    let at = import
        .find(&format!("<Ид>{id}</Ид>"))
        .expect("the product is in the file");
    let start = import[..at].rfind("<Товар>").expect("its start");
    let end = at + import[at..].find("</Товар>").expect("its end") + "</Товар>".len();
    &import[start..end]
}

const TABLE_WHITE: &str =
    "05e26d70-01e4-11dc-a411-00055d80a2d1#05e26d76-01e4-11dc-a411-00055d80a2d1";
const TABLE_OTHER: &str =
    "05e26d70-01e4-11dc-a411-00055d80a2d1#218a1598-044b-11dc-a414-00055d80a2d1";
const CHAIRS_WHITE: &str =
    "05e26d77-01e4-11dc-a411-00055d80a2d1#05e26d79-01e4-11dc-a411-00055d80a2d1";
const CHAIRS_OTHER: &str =
    "05e26d77-01e4-11dc-a411-00055d80a2d1#218a1599-044b-11dc-a414-00055d80a2d1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_becomes_bitrix24_products_created_once_updated_and_deactivated_by_xml_id() {
    let portal = Fake::start().await;
    // One of the goods was already linked by hand: it is found by XML_ID, not made twice.
    let known = portal.with(|p| {
        p.seed_product(
            &json!({"NAME": "Стулья (старое имя)", "XML_ID": CHAIRS_WHITE, "PRICE": "1200.00"}),
        )
    });
    let app = start(&portal).await;
    let import = sample("official-samples-2.0x/import.xml");
    let offers = sample("official-samples-2.0x/offers.xml");

    let summaries = catalog_run(&app, &[("import.xml", &import), ("offers.xml", &offers)]).await;
    assert!(summaries[0].contains("4 items (4 new"), "{summaries:?}");
    let all = app.settle("1c-catalog", 6).await;
    assert_eq!(all.len(), 6, "4 products and 2 offers: {all:#?}");
    assert_eq!(count(&all, "succeeded"), 6, "{:?}", statuses(&all));
    // The offers (offers.xml): the retail price (Розничная, 7 руб) is the base price, the
    // quantity 0, on the product whose XML_ID is the offer's Ид.
    for id in [TABLE_WHITE, TABLE_OTHER] {
        let product = portal.with(|p| p.by_xml_id(id)[0].clone());
        assert_eq!(product["PRICE"], "7", "{product:#}");
        assert_eq!(product["CURRENCY_ID"], "RUB", "{product:#}");
        let pid: u64 = product["ID"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("id");
        assert_eq!(
            portal.with(|p| p.quantity.get(&pid).cloned()),
            Some(json!(0.0))
        );
    }

    let products = portal.with(|p| p.products.clone());
    assert_eq!(products.len(), 4, "{products:#?}");
    for id in [TABLE_WHITE, TABLE_OTHER, CHAIRS_WHITE, CHAIRS_OTHER] {
        let found = portal.with(|p| p.by_xml_id(id).into_iter().cloned().collect::<Vec<_>>());
        assert_eq!(
            found.len(),
            1,
            "one product with XML_ID {id}: {products:#?}"
        );
        assert_eq!(found[0]["ACTIVE"], "Y");
    }
    let white_table = portal.with(|p| p.by_xml_id(TABLE_WHITE)[0].clone());
    assert_eq!(
        white_table["NAME"], "Стол обеденный (Белый)",
        "the characteristic names the variant"
    );
    let chairs = &products[&known];
    assert_eq!(chairs["XML_ID"], CHAIRS_WHITE);
    assert_eq!(
        chairs["NAME"], "Стулья (Белый)",
        "the known product was updated"
    );
    assert_eq!(
        chairs["PRICE"], "1200.00",
        "fields the flow does not send stay"
    );
    let methods = portal.with(|p| p.methods());
    let called = |name: &str| methods.iter().filter(|m| *m == name).count();
    // 3 adds and the known product's update; the 2 offers' price and stock updates; no
    // read-backs. (Searches vary: an offer that ran before its product searched again.)
    assert_eq!(
        (
            called("crm.product.add"),
            called("crm.product.update"),
            called("catalog.product.update"),
            called("crm.product.get")
        ),
        (3, 3, 2, 0),
        "{methods:?}"
    );
    assert_eq!(
        methods.len(),
        8 + called("crm.product.list"),
        "nothing but searches besides: {methods:?}"
    );
    let stock = portal.with(|p| p.args_of("catalog.product.update"));
    assert!(
        stock
            .iter()
            .all(|a| a["fields"]["quantity"].as_f64() == Some(0.0)),
        "{stock:?}"
    );
    let finds = portal.with(|p| p.args_of("crm.product.list"));
    assert!(
        finds
            .iter()
            .all(|a| a["select"] == json!(["ID"]) && a["filter"]["XML_ID"] != Value::Null),
        "{finds:?}"
    );
    // Each kind takes only its own steps: the others are done with output null, and every
    // call an exchange made came from one of its own steps.
    let mut offers_seen = 0;
    for e in &all {
        let detail = app.detail(&e["id"]).await;
        let offer = e["key"].as_str().is_some_and(|k| k.starts_with("offers"));
        offers_seen += usize::from(offer);
        let (own, other): (&[&str], &[&str]) = if offer {
            (
                &["product", "own", "offer", "price", "stock"],
                &["deleted", "deactivate", "write"],
            )
        } else {
            (
                &["write"],
                &[
                    "deleted",
                    "deactivate",
                    "product",
                    "own",
                    "offer",
                    "price",
                    "stock",
                ],
            )
        };
        for step in detail["steps"].as_array().expect("steps") {
            let name = step["name"].as_str().unwrap_or_default();
            assert_eq!(step["done"], true, "{detail:#}");
            if other.contains(&name) {
                assert_eq!(step["output"], Value::Null, "{name}: {detail:#}");
            }
        }
        let calls: Vec<&str> = detail["attempt_log"]
            .as_array()
            .expect("attempts")
            .iter()
            .flat_map(|a| a["calls"].as_array().cloned().unwrap_or_default())
            .map(|c| {
                if own.contains(&c["step"].as_str().unwrap_or_default()) {
                    "own"
                } else {
                    "other"
                }
            })
            .collect();
        assert!(
            !calls.is_empty() && calls.iter().all(|c| *c == "own"),
            "{detail:#}"
        );
    }
    assert_eq!(offers_seen, 2);

    // The exchange of a product: keyed by its Ид, its steps in the journal, no secret.
    let white = all
        .iter()
        .find(|e| e["external_id"] == TABLE_WHITE)
        .expect("the white table's exchange");
    let detail = app.detail(&white["id"]).await;
    let text = detail.to_string();
    assert!(
        !text.contains(PASSWORD) && !text.contains(fake::WEBHOOK_TOKEN),
        "{text}"
    );
    assert!(text.contains("crm.product.add"), "{detail:#}");

    // 1C sends the same files again: all duplicates, Bitrix24 hears nothing.
    let calls_before = portal.with(|p| p.runs.len());
    catalog_run(&app, &[("import.xml", &import), ("offers.xml", &offers)]).await;
    let all = app.settle("1c-catalog", 12).await;
    assert_eq!(count(&all, "duplicate"), 6, "{:?}", statuses(&all));
    assert_eq!(portal.with(|p| p.runs.len()), calls_before);

    // Then a change: the white table renamed, the other table marked for deletion, and a
    // new product that is already deleted in 1C.
    let renamed = product_block(&import, TABLE_WHITE).replace(
        "<Наименование>Стол обеденный</Наименование>",
        "<Наименование>Стол обеденный раздвижной</Наименование>",
    );
    let gone = product_block(&import, TABLE_OTHER).replace(
        &format!("<Ид>{TABLE_OTHER}</Ид>"),
        &format!("<Ид>{TABLE_OTHER}</Ид>\n<ПометкаУдаления>true</ПометкаУдаления>"),
    );
    let never = product_block(&import, CHAIRS_OTHER).replace(
        &format!("<Ид>{CHAIRS_OTHER}</Ид>"),
        "<Ид>0b1f0000-0000-11ee-8c90-0242ac120002</Ид>\n<ПометкаУдаления>true</ПометкаУдаления>",
    );
    let changed = import
        .replace(product_block(&import, TABLE_WHITE), &renamed)
        .replace(
            product_block(&import, TABLE_OTHER),
            &format!("{gone}\n{never}"),
        );
    let calls_before = portal.with(|p| p.runs.len());
    let summaries = catalog_run(&app, &[("import.xml", &changed)]).await;
    assert!(
        summaries[0].contains("5 items (3 new, 2 duplicates"),
        "{summaries:?}"
    );
    let all = app.settle("1c-catalog", 17).await;
    let last: Vec<&Value> = all[12..].iter().collect();
    let status_of = |id: &str| {
        last.iter()
            .find(|e| e["external_id"] == id)
            .map(|e| e["status"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(status_of(TABLE_WHITE).as_deref(), Some("succeeded"));
    assert_eq!(status_of(TABLE_OTHER).as_deref(), Some("succeeded"));
    assert_eq!(
        status_of("0b1f0000-0000-11ee-8c90-0242ac120002").as_deref(),
        Some("skipped"),
        "a deleted item Bitrix24 never had is not created"
    );
    let products = portal.with(|p| p.products.clone());
    assert_eq!(products.len(), 4, "nothing new: {products:#?}");
    // The two known products are updated straight from the ID map (the renamed one, the
    // deleted one deactivated); the deleted one Bitrix24 never had costs one search.
    let mut since = portal.with(|p| p.methods()[calls_before..].to_vec());
    since.sort();
    assert_eq!(
        since,
        [
            "crm.product.list",
            "crm.product.update",
            "crm.product.update"
        ]
    );
    let white_table_now = portal.with(|p| p.by_xml_id(TABLE_WHITE)[0].clone());
    assert_eq!(white_table_now["ID"], white_table["ID"], "the same product");
    assert_eq!(white_table_now["NAME"], "Стол обеденный раздвижной (Белый)");
    let other = portal.with(|p| p.by_xml_id(TABLE_OTHER)[0].clone());
    assert_eq!(other["ACTIVE"], "N", "deactivated, not deleted");
    assert_eq!(
        portal.with(|p| p.refused_by_bucket),
        0,
        "the 2/s pace holds"
    );
}

/// offers.xml before the goods (1C sends only changes, or the product's exchange is still
/// running): the offers wait — `retrying`, a `transient` error naming the product not there
/// yet, searching again at each attempt — and once the goods are in Bitrix24 they set the
/// prices and stock by themselves, with no manual retry. Later offers go straight to the
/// linked product (2 calls, no search). An offer 1C marks deleted sets the quantity to 0 and
/// leaves the price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_before_their_products_wait_and_are_delivered_once_the_goods_are_in() {
    let portal = Fake::start().await;
    let app = start(&portal).await;
    let import = sample("official-samples-2.0x/import.xml");
    let offers = sample("official-samples-2.0x/offers.xml");
    catalog_run(&app, &[("offers.xml", &offers)]).await;
    // Both wait, and each has searched more than once.
    let deadline = Instant::now() + WAIT;
    let waiting = loop {
        let all = app.exchanges("1c-catalog").await;
        if all.len() == 2
            && all
                .iter()
                .all(|e| e["status"] == "retrying" && e["attempts"].as_u64() >= Some(2))
        {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "the offers do not wait: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    for e in &waiting {
        let error = &e["last_error"];
        assert_eq!(error["class"], "transient", "{e:#}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("no `crm.product` linked to")
                && message.contains("05e26d70-01e4-11dc-a411-00055d80a2d1")
                && message.contains("yet"),
            "the product it waits for is named: {e:#}"
        );
    }
    let searches = portal.with(|p| p.methods());
    assert!(
        searches.len() >= 4 && searches.iter().all(|m| m == "crm.product.list"),
        "only searches while waiting: {searches:?}"
    );
    assert!(portal.with(|p| p.products.is_empty() && p.quantity.is_empty()));

    catalog_run(&app, &[("import.xml", &import)]).await;
    let all = app.settle("1c-catalog", 6).await;
    assert_eq!(count(&all, "succeeded"), 6, "{:?}", statuses(&all));
    for e in &waiting {
        let done = app.detail(&e["id"]).await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        assert!(done["attempts"].as_u64() >= Some(3), "{done:#}");
        let events = done["events"].as_array().expect("events");
        assert!(
            !events.iter().any(|ev| ev["type"] == "manual"),
            "delivered with no manual retry: {done:#}"
        );
    }
    assert_eq!(
        portal.with(|p| p.products.len()),
        4,
        "an offer makes no product"
    );
    for id in [TABLE_WHITE, TABLE_OTHER] {
        let product = portal.with(|p| p.by_xml_id(id)[0].clone());
        assert_eq!(
            (product["PRICE"].clone(), product["CURRENCY_ID"].clone()),
            (json!("7"), json!("RUB")),
            "{product:#}"
        );
        let pid: u64 = product["ID"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("id");
        assert_eq!(
            portal.with(|p| p.quantity.get(&pid).cloned()),
            Some(json!(0.0))
        );
    }
    let table = portal.with(|p| p.by_xml_id(TABLE_WHITE)[0].clone());
    let pid: u64 = table["ID"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");

    // A changed offer: 12.50 руб and 5 in stock; its product is linked, so just the price
    // and the stock: no search.
    let changed = offers
        .replacen(
            "<ЦенаЗаЕдиницу>7</ЦенаЗаЕдиницу>",
            "<ЦенаЗаЕдиницу>12.50</ЦенаЗаЕдиницу>",
            1,
        )
        .replacen(
            "<Количество>0</Количество>",
            "<Количество>5</Количество>",
            1,
        );
    let calls_before = portal.with(|p| p.runs.len());
    catalog_run(&app, &[("offers.xml", &changed)]).await;
    let all = app.settle("1c-catalog", 8).await;
    assert_eq!(
        count(&all[6..], "duplicate"),
        1,
        "the other offer is unchanged: {all:#?}"
    );
    assert_eq!(
        portal.with(|p| p.methods()[calls_before..].to_vec()),
        ["crm.product.update", "catalog.product.update"]
    );
    let table = portal.with(|p| p.products[&pid].clone());
    assert_eq!(table["PRICE"], "12.50");
    assert_eq!(
        portal.with(|p| p.quantity.get(&pid).cloned()),
        Some(json!(5.0))
    );
    let gone = changed.replacen(
        &format!("<Ид>{TABLE_WHITE}</Ид>"),
        &format!("<Ид>{TABLE_WHITE}</Ид>\n<ПометкаУдаления>true</ПометкаУдаления>"),
        1,
    );
    let calls_before = portal.with(|p| p.runs.len());
    catalog_run(&app, &[("offers.xml", &gone)]).await;
    let all = app.settle("1c-catalog", 10).await;
    assert_eq!(
        count(&all[8..], "duplicate"),
        1,
        "the other offer is unchanged: {all:#?}"
    );
    assert_eq!(
        portal.with(|p| p.methods()[calls_before..].to_vec()),
        ["catalog.product.update"],
        "a deleted offer sends no price"
    );
    let table = portal.with(|p| p.products[&pid].clone());
    assert_eq!(table["PRICE"], "12.50", "a deleted offer leaves the price");
    assert_eq!(table["ACTIVE"], "Y", "and the product active");
    assert_eq!(
        portal.with(|p| p.quantity.get(&pid).cloned()),
        Some(json!(0.0)),
        "not sold"
    );
}

/// An offer "product#characteristic" goes to the product with that exact XML_ID when
/// Bitrix24 has one, else to the product "product" (goods made in Bitrix24 by hand, or by
/// an exchange that links products without their characteristics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_goes_to_its_own_variant_first_else_to_the_product_part() {
    let portal = Fake::start().await;
    // The product part first: the search for both XML_IDs lists it first, so the variant is
    // found only by looking up the exact Ид.
    let (product, variant) = portal.with(|p| {
        (
            p.seed_product(
                &json!({"NAME": "Стол обеденный", "XML_ID": "05e26d70-01e4-11dc-a411-00055d80a2d1"}),
            ),
            p.seed_product(&json!({"NAME": "Стол обеденный (Белый)", "XML_ID": TABLE_WHITE})),
        )
    });
    let app = start(&portal).await;
    let offers = sample("official-samples-2.0x/offers.xml");
    catalog_run(&app, &[("offers.xml", &offers)]).await;
    let all = app.settle("1c-catalog", 2).await;
    assert_eq!(statuses(&all), ["succeeded", "succeeded"], "{all:#?}");
    let mut own_found = Vec::new();
    for e in &all {
        let detail = app.detail(&e["id"]).await;
        let step = |name: &str| {
            detail["steps"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == name))
                .map(|s| s["output"].clone())
                .unwrap_or_default()
        };
        assert_eq!(step("product")["via"], "search", "{detail:#}");
        own_found.push((
            e["external_id"].as_str().unwrap_or_default().to_owned(),
            step("own")["found"].clone(),
            step("offer")["id"].clone(),
        ));
    }
    own_found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        own_found,
        [
            (
                TABLE_WHITE.to_owned(),
                json!(true),
                json!(variant.to_string())
            ),
            (
                TABLE_OTHER.to_owned(),
                json!(false),
                json!(product.to_string())
            ),
        ]
    );
    let (product, variant) =
        portal.with(|p| (p.products[&product].clone(), p.products[&variant].clone()));
    assert_eq!(
        variant["PRICE"], "7",
        "the white table's own offer: {variant:#}"
    );
    assert_eq!(
        product["PRICE"], "7",
        "the other colour, on the product: {product:#}"
    );
    let updates = portal.with(|p| p.args_of("crm.product.update"));
    let mut updated: Vec<Value> = updates.iter().map(|a| a["id"].clone()).collect();
    updated.sort_by_key(Value::to_string);
    assert_eq!(
        updated,
        [product["ID"].clone(), variant["ID"].clone()],
        "one price each"
    );
    assert_eq!(portal.with(|p| p.products.len()), 2, "nothing made");
}

/// Bitrix24 makes the product but its answer is lost (the proxy in front answers 504): the
/// retry's upsert searches by XML_ID again, finds that product and updates it — one product,
/// not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_an_add_is_retried_into_an_update_not_a_second_product() {
    let portal = Fake::start().await;
    portal.with(|p| p.proxy_loses_product_adds = 1);
    let app = start(&portal).await;
    let import = sample("official-samples-2.0x/import.xml");
    // The catalog with one product.
    let (head, rest) = import.split_once("<Товары>").expect("goods");
    let (_, tail) = rest.split_once("</Товары>").expect("goods end");
    let one = format!(
        "{head}<Товары>{}</Товары>{tail}",
        product_block(&import, TABLE_WHITE)
    );
    let summaries = catalog_run(&app, &[("import.xml", &one)]).await;
    assert!(summaries[0].contains("1 items (1 new"), "{summaries:?}");
    let all = app.settle("1c-catalog", 1).await;
    assert_eq!(statuses(&all), ["succeeded"], "{all:#?}");
    let detail = app.detail(&all[0]["id"]).await;
    assert_eq!(detail["attempts"], 2, "{detail:#}");
    assert_eq!(
        detail["attempt_log"][0]["error"]["class"], "transient",
        "{detail:#}"
    );
    let made = portal.with(|p| {
        p.by_xml_id(TABLE_WHITE)
            .into_iter()
            .cloned()
            .collect::<Vec<_>>()
    });
    assert_eq!(made.len(), 1, "one product: {made:#?}");
    assert_eq!(made[0]["NAME"], "Стол обеденный (Белый)");
    let write = detail["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "write"))
        .map(|s| s["output"].clone())
        .unwrap_or_default();
    assert_eq!(write["action"], "updated", "{detail:#}");
    assert_eq!(write["id"], made[0]["ID"]);
    assert_eq!(
        portal.with(|p| p.methods()),
        [
            "crm.product.list",
            "crm.product.add",
            "crm.product.list",
            "crm.product.update"
        ],
        "search, the add whose answer was lost; on retry a search that finds it, the update"
    );
}

/// A deal row as `crm.deal.productrows.get` answers it (numbers are numbers here). Product 0
/// is a row typed in by hand: not from the catalog, no unit code.
fn row(deal: u64, n: u64, product: u64, name: &str, price: f64, quantity: u64) -> Value {
    let from_catalog = product != 0;
    let (code, unit, kind) = if from_catalog {
        (json!(796), "шт", 1)
    } else {
        (Value::Null, "шт", 7)
    };
    json!({"ID": (deal * 100 + n).to_string(), "OWNER_ID": deal.to_string(), "OWNER_TYPE": "D",
        "PRODUCT_ID": product, "PRODUCT_NAME": name, "ORIGINAL_PRODUCT_NAME": name,
        "PRODUCT_DESCRIPTION": null, "PRICE": price, "PRICE_EXCLUSIVE": price, "PRICE_NETTO": price,
        "PRICE_BRUTTO": price, "PRICE_ACCOUNT": format!("{price:.2}"), "QUANTITY": quantity,
        "DISCOUNT_TYPE_ID": 2, "DISCOUNT_RATE": 0, "DISCOUNT_SUM": 0, "TAX_RATE": null,
        "TAX_INCLUDED": "Y", "CUSTOMIZED": "Y", "MEASURE_CODE": code, "MEASURE_NAME": unit,
        "SORT": n * 10, "XML_ID": format!("sale_basket_{n}"), "TYPE": kind, "STORE_ID": 0})
}

fn deal(id: u64, stage: &str, contact: Option<u64>, sum: &str, title: &str) -> Value {
    json!({"ID": id.to_string(), "TITLE": title, "TYPE_ID": "SALE", "CATEGORY_ID": "0",
        "STAGE_ID": stage, "STAGE_SEMANTIC_ID": if stage.ends_with("WON") { "S" } else { "P" },
        "CURRENCY_ID": "KZT", "OPPORTUNITY": sum, "IS_MANUAL_OPPORTUNITY": "N",
        "CONTACT_ID": contact.map(|c| c.to_string()), "COMPANY_ID": "0",
        "BEGINDATE": "2026-01-10T03:00:00+05:00", "CLOSEDATE": "2026-01-15T03:00:00+05:00",
        "DATE_CREATE": "2026-01-10T09:12:00+05:00", "DATE_MODIFY": "2026-01-15T10:30:00+05:00",
        "CLOSED": if stage.ends_with("WON") { "Y" } else { "N" }, "ASSIGNED_BY_ID": "1"})
}

/// The orders of a CommerceML document, read back by obmen's own streaming reader into the
/// payload shape docs/connectors/1c.md describes.
fn orders_in(dir: &Path, doc: &[u8]) -> Vec<Value> {
    use obmen::connectors::onec::commerceml::{map, xml};
    let file = dir.join("query-read.xml");
    std::fs::write(&file, doc).expect("write");
    let limits = xml::Limits {
        max_items: 10_000,
        deadline: Instant::now() + Duration::from_secs(10),
    };
    let batch = xml::read_batch(&file, xml::Cursor::default(), limits);
    assert_eq!(batch.error, None, "the query document reads back");
    assert!(batch.cursor.done);
    let src = map::Source {
        file: "query.xml",
        header: &batch.cursor.header,
    };
    batch
        .items
        .iter()
        .map(|(kind, node)| map::payload(*kind, node, &src))
        .collect()
}

fn number(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a decimal, not {v}"))
}

/// Deals of every kind: 1287 won with a contact and three rows (two goods from 1C, a
/// delivery typed in by hand), 1400 won in pipeline 2 with more goods than a page of
/// `crm.product.list` (50) holds, 1300 still open, 1301 won without a contact. Returns the
/// ids of 1400's goods.
fn seed_deals(p: &mut fake::Portal) -> Vec<u64> {
    let table = p.seed_product(&json!({"NAME": "Стол обеденный (Белый)", "XML_ID": TABLE_WHITE}));
    let chairs = p.seed_product(&json!({"NAME": "Стулья (Белый)", "XML_ID": CHAIRS_WHITE}));
    let title = "Сделка №1287 «Столы & стулья»";
    p.deals
        .insert(1287, deal(1287, "WON", Some(77), "150500.00", title));
    p.product_rows.insert(
        1287,
        vec![
            row(1287, 1, table, "Стол обеденный (Белый)", 45000.5, 2),
            row(1287, 2, chairs, "Стулья (Белый)", 14999.75, 4),
            row(1287, 3, 0, "Доставка", 500.0, 1),
        ],
    );
    let email =
        json!([{"ID": "5", "VALUE_TYPE": "WORK", "VALUE": "ivan@example.kz", "TYPE_ID": "EMAIL"}]);
    let phone =
        json!([{"ID": "6", "VALUE_TYPE": "WORK", "VALUE": "+7 701 000 00 05", "TYPE_ID": "PHONE"}]);
    p.contacts.insert(
        77,
        json!({"ID": "77", "NAME": "Иван", "LAST_NAME": "Иванов", "SECOND_NAME": null,
            "EMAIL": email, "PHONE": phone}),
    );
    let many: Vec<u64> = (0..60)
        .map(|i| {
            let xml_id = format!("1c-good-{i:02}");
            p.seed_product(&json!({"NAME": format!("Товар {i}"), "XML_ID": xml_id}))
        })
        .collect();
    p.deals
        .insert(1400, deal(1400, "C2:WON", Some(77), "60.00", "Опт"));
    let rows = (0..)
        .zip(&many)
        .map(|(i, id)| row(1400, i, *id, &format!("Товар {i}"), 1.0, 1));
    p.product_rows.insert(1400, rows.collect());
    p.deals.insert(
        1300,
        deal(1300, "C2:PREPARATION", Some(77), "10.00", "Ещё думает"),
    );
    p.deals
        .insert(1301, deal(1301, "WON", None, "10.00", "Без покупателя"));
    p.product_rows
        .insert(1301, vec![row(1301, 1, table, "Стол", 10.0, 1)]);
    many
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_won_deal_reaches_1c_by_query_until_success_and_1c_answers_on_the_deal() {
    let portal = Fake::start().await;
    let many = portal.with(seed_deals);
    let app = start(&portal).await;

    // Bitrix24 posts its events as forms; the application token is checked.
    let (s, v) = app
        .deal_event(1287, 1_767_000_001, "not-the-app-token-0001")
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let mut ids = Vec::new();
    for (deal, ts) in [
        (1287, 1_767_000_002),
        (1300, 1_767_000_003),
        (1301, 1_767_000_004),
        (1400, 1_767_000_005),
    ] {
        let (s, v) = app.deal_event(deal, ts, APP_TOKEN).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        ids.push(v["exchange_id"].clone());
    }
    let all = app.settle("b24-won-deal-to-1c", 5).await;
    let status = |id: &Value| {
        all.iter()
            .find(|e| &e["id"] == id)
            .map(|e| e["status"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(
        [
            status(&ids[0]),
            status(&ids[1]),
            status(&ids[2]),
            status(&ids[3])
        ],
        ["succeeded", "skipped", "rejected", "succeeded"].map(str::to_owned),
        "{all:#?}"
    );
    assert_eq!(
        count(&all, "rejected"),
        2,
        "the wrong token and the deal without a buyer"
    );
    let no_buyer = app.detail(&ids[2]).await;
    assert!(
        no_buyer.to_string().contains("deal 1301 has no contact"),
        "{no_buyer:#}"
    );
    let won = app.detail(&ids[0]).await;
    let queued = won["steps"]
        .as_array()
        .and_then(|s| s.last())
        .map(|s| s["output"].clone())
        .unwrap_or_default();
    assert_eq!(queued["action"], "queued", "{won:#}");
    assert_eq!(queued["order_id"], "B24-1287");
    // Deal 1400's goods take two pages (the two deals run side by side).
    let lists = portal.with(|p| p.args_of("crm.product.list"));
    let mut starts: Vec<Option<u64>> = lists.iter().map(|a| a["start"].as_u64()).collect();
    starts.sort_unstable();
    assert_eq!(starts, [None, None, Some(50)]);

    // 1C's order exchange: checkauth, init (a module that sends its version), query.
    let mut onec = OneC::new(&app.base, "1c-orders", "sale");
    assert_eq!(
        onec.checkauth("site", Some(PASSWORD)).await.status,
        "success"
    );
    let (_, init) = onec.init(Some("3.1")).await;
    assert!(init.lines.iter().any(|l| l == "version=2.09"), "{init:?}");
    let first = onec.get("mode=query").await;
    assert_eq!(first.http, StatusCode::OK);
    assert_eq!(first.content_type, "application/xml; charset=windows-1251");
    xmllint_valid(app.dir.path(), &first.raw);
    let orders = orders_in(app.dir.path(), &first.raw);
    assert_eq!(orders.len(), 2, "{orders:#?}");
    let o = orders
        .iter()
        .find(|o| o["id"] == "B24-1287")
        .expect("deal 1287");
    assert_eq!(o["number"], "1287");
    assert_eq!(o["date"], "2026-01-15");
    assert_eq!(o["time"], "10:30:00");
    assert_eq!(o["currency"], "KZT");
    assert_eq!(o["sum"], "150500.00");
    assert_eq!(o["operation"], "Заказ товара");
    assert_eq!(o["comment"], "Сделка №1287 «Столы & стулья»");
    let buyer = &o["counterparties"][0];
    assert_eq!(buyer["id"], "b24-contact-77");
    assert_eq!(buyer["name"], "Иван Иванов");
    assert_eq!(buyer["role"], "Покупатель");
    assert_eq!(buyer["contacts"][0]["value"], "ivan@example.kz");
    let lines = o["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 3, "{o:#}");
    assert_eq!(
        lines[0]["id"], TABLE_WHITE,
        "1C's own Ид, from the product's XML_ID"
    );
    assert_eq!(lines[1]["id"], CHAIRS_WHITE);
    assert_eq!(
        lines[2]["id"],
        Value::Null,
        "a row not from the catalog has no Ид"
    );
    assert_eq!(lines[2]["name"], "Доставка");
    assert_eq!(number(&lines[0]["unit_price"]), 45000.5);
    assert_eq!(number(&lines[0]["quantity"]), 2.0);
    assert_eq!(number(&lines[0]["sum"]), 90001.0);
    assert_eq!(number(&lines[1]["sum"]), 59999.0);
    let total: f64 = lines.iter().map(|l| number(&l["sum"])).sum();
    assert_eq!(total, number(&o["sum"]), "the lines add up to the deal");
    let status = o["requisites"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "Статус заказа"))
        .map(|r| r["value"].clone());
    assert_eq!(status, Some(json!("Принят")));
    let wholesale = orders
        .iter()
        .find(|o| o["id"] == "B24-1400")
        .expect("deal 1400");
    let ids_1c: Vec<&str> = wholesale["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l["id"].as_str())
        .collect();
    assert_eq!(
        ids_1c.len(),
        many.len(),
        "every good of both pages has its Ид"
    );
    assert_eq!(ids_1c[55], "1c-good-55");

    // No mode=success yet: the same orders again (at least once to 1C).
    let again = onec.get("mode=query").await;
    let again = orders_in(app.dir.path(), &again.raw);
    let mut ids_again: Vec<&str> = again.iter().filter_map(|o| o["id"].as_str()).collect();
    ids_again.sort_unstable();
    assert_eq!(ids_again, ["B24-1287", "B24-1400"]);
    let ok = onec.get("mode=success").await;
    assert_eq!(ok.status, "success", "{ok:?}");
    assert_eq!(ok.lines[0], "2 orders confirmed");
    let after = onec.get("mode=query").await;
    xmllint_valid(app.dir.path(), &after.raw);
    assert!(
        orders_in(app.dir.path(), &after.raw).is_empty(),
        "gone after success"
    );
    let won = app.detail(&ids[0]).await;
    let delivered: Vec<&Value> = won["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "delivered")
        .collect();
    assert_eq!(delivered.len(), 1, "{won:#}");
    assert_eq!(delivered[0]["to"], "1C");
    let detail = delivered[0]["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("order B24-1287"), "{detail}");
    assert!(detail.contains("mode=success"), "{detail}");

    // 1C then uploads its orders file (the official sample, its order 92 being ours): the
    // deal hears 1C's number and status; 1C's other orders are not Bitrix24's and are skipped.
    let reply = sample("official-samples-2.0x/orders.xml").replace(
        "<Ид>92</Ид>\n<Номер>92</Номер>",
        "<Ид>B24-1287</Ид>\n<Номер>1287</Номер>",
    );
    assert!(reply.contains("B24-1287"), "the sample still has order 92");
    let (limit, _) = onec.init(Some("3.1")).await;
    onec.upload("orders.xml", reply.as_bytes(), limit).await;
    let imported = onec.import("orders.xml").await.0;
    assert_eq!(imported.status, "success", "{imported:?}");
    let replies = app.settle("1c-orders", 3).await;
    assert_eq!(
        statuses(&replies),
        ["skipped", "succeeded", "skipped"],
        "{replies:#?}"
    );
    let comments = portal.with(|p| p.comments.clone());
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert_eq!(comments[0]["ENTITY_TYPE"], "deal");
    assert_eq!(comments[0]["ENTITY_ID"], "1287");
    assert_eq!(comments[0]["COMMENT"], "1C: order MM92, status Открыт");

    // Nothing secret in the journal of either side.
    for e in all.iter().chain(&replies) {
        let text = app.detail(&e["id"]).await.to_string();
        for secret in [PASSWORD, APP_TOKEN, fake::WEBHOOK_TOKEN] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    assert_eq!(portal.with(|p| p.refused_by_bucket), 0);
}

/// Older 1C modules (no `version=` at `init`) never call `mode=import` for their orders: like
/// 1C-Bitrix, the site reads the file when it arrives. A file in several parts is read when
/// its last part closes the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_1c_without_a_version_has_its_orders_read_at_upload() {
    let portal = Fake::start().await;
    portal.with(|p| {
        p.deals.insert(
            1287,
            deal(1287, "WON", Some(77), "15000.00", "Сделка №1287"),
        );
    });
    let app = start(&portal).await;
    let mut onec = OneC::new(&app.base, "1c-orders", "sale");
    assert_eq!(
        onec.checkauth("site", Some(PASSWORD)).await.status,
        "success"
    );
    let (_, init) = onec.init(None).await;
    assert!(
        !init.lines.iter().any(|l| l.starts_with("version=")),
        "{init:?}"
    );
    let query = onec.get("mode=query").await;
    assert!(orders_in(app.dir.path(), &query.raw).is_empty());
    assert_eq!(onec.get("mode=success").await.status, "success");

    let reply = sample("official-samples-2.0x/orders.xml").replace(
        "<Ид>92</Ид>\n<Номер>92</Номер>",
        "<Ид>B24-1287</Ид>\n<Номер>1287</Номер>",
    );
    let (head, tail) = reply.as_bytes().split_at(reply.len() / 2);
    let first = onec.file_part("orders.xml", head.to_vec()).await;
    assert_eq!(first.status, "success", "{first:?}");
    assert!(
        app.exchanges("1c-orders").await.is_empty(),
        "half a document is not read"
    );
    let last = onec.file_part("orders.xml", tail.to_vec()).await;
    assert_eq!(last.status, "success", "{last:?}");
    assert!(
        last.message().contains("3 items (3 new"),
        "the answer says what was read: {last:?}"
    );
    let replies = app.settle("1c-orders", 3).await;
    assert_eq!(
        statuses(&replies),
        ["skipped", "succeeded", "skipped"],
        "{replies:#?}"
    );
    let comments = portal.with(|p| p.comments.clone());
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert_eq!(comments[0]["COMMENT"], "1C: order MM92, status Открыт");
    // A module that calls mode=import anyway gets the same answer; nothing is read twice.
    let again = onec.import("orders.xml").await.0;
    assert_eq!(again.status, "success", "{again:?}");
    assert_eq!(app.exchanges("1c-orders").await.len(), 3);
    // The same name again in this session is a new file.
    let file = onec
        .file_part("orders.xml", reply.as_bytes().to_vec())
        .await;
    assert!(file.message().contains("3 duplicates"), "{file:?}");
}

/// As shipped, the deal flow runs in shadow mode: it reads Bitrix24 and journals the order
/// it would queue, and 1C is given nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_shipped_the_deal_flow_only_shows_what_it_would_send_to_1c() {
    let portal = Fake::start().await;
    portal.with(seed_deals);
    let app = start_mode(&portal, false).await;
    let (s, v) = app.deal_event(1287, 1_767_000_010, APP_TOKEN).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let all = app.settle("b24-won-deal-to-1c", 1).await;
    assert_eq!(statuses(&all), ["dry_run"], "{all:#?}");
    let d = app.detail(&v["exchange_id"]).await;
    let last = d["steps"]
        .as_array()
        .and_then(|s| s.last())
        .map(|s| s["output"].clone())
        .unwrap_or_default();
    assert_eq!(last["action"], "would_queue", "{d:#}");
    assert_eq!(last["order_id"], "B24-1287");
    let mut onec = OneC::new(&app.base, "1c-orders", "sale");
    assert_eq!(
        onec.checkauth("site", Some(PASSWORD)).await.status,
        "success"
    );
    onec.init(Some("3.1")).await;
    let query = onec.get("mode=query").await;
    assert!(orders_in(app.dir.path(), &query.raw).is_empty());
}

/// The fake portal is no "200 to everything": it answers like the documented REST API.
#[tokio::test]
async fn the_fake_portal_answers_like_bitrix24() {
    let portal = Fake::start().await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let call = |method: &str, body: Value| {
        http.post(format!("{}{method}.json", portal.webhook_url()))
            .json(&body)
            .send()
    };
    let read = |r: reqwest::Response| async move {
        let status = r.status();
        (status, r.json::<Value>().await.expect("json"))
    };
    let wrong = portal
        .webhook_url()
        .replace(fake::WEBHOOK_TOKEN, "not-the-secret-01");
    let (s, v) = read(
        http.post(format!("{wrong}crm.deal.get"))
            .json(&json!({"id": 1}))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("NO_AUTH_FOUND"))
    );
    let (s, v) = read(
        call("crm.deal.get", json!({"id": 5}))
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v,
        json!({"error": "", "error_description": "Not found"}),
        "CRM's empty code"
    );
    let (s, v) = read(call("crm.nothing.here", json!({})).await.expect("answer")).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("ERROR_METHOD_NOT_FOUND"))
    );
    let (s, _) = read(
        call("crm.product.add", json!({"fields": {"XML_ID": "x"}}))
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "NAME is required");
    // A form body works too; `*.add` answers the new id.
    let r = http
        .post(format!("{}crm.product.add", portal.webhook_url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("fields%5BNAME%5D=%D0%A1%D1%82%D0%BE%D0%BB&fields%5BXML_ID%5D=a%23b")
        .send()
        .await
        .expect("answer");
    let (s, v) = read(r).await;
    assert_eq!(s, StatusCode::OK);
    let id = v["result"].as_u64().expect("the new id");
    assert!(v["time"]["duration"].is_number());
    assert_eq!(
        portal.with(|p| p.products[&id]["NAME"].clone()),
        json!("Стол")
    );
    portal.with(|p| {
        for i in 0..59 {
            p.seed_product(&json!({"NAME": format!("P{i}")}));
        }
    });
    let (_, page) = read(
        call("crm.product.list", json!({"select": ["ID"]}))
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(page["result"].as_array().map(Vec::len), Some(50));
    assert_eq!(
        (page["total"].clone(), page["next"].clone()),
        (json!(60), json!(50))
    );
    let (_, last) = read(
        call("crm.product.list", json!({"select": ["ID"], "start": 50}))
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(last["result"].as_array().map(Vec::len), Some(10));
    assert!(last.get("next").is_none());
    let (s, _) = read(
        call("crm.product.list", json!({"filter": {"NO_SUCH": 1}}))
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "an unknown filter field");
    // A batch answers 200 whatever its commands did; empty collections are [].
    let (s, v) = read(
        call(
            "batch",
            json!({"halt": 0, "cmd": {"a": "crm.product.get?id=999999", "b": "crm.product.get?id=101"}}),
        )
        .await
        .expect("answer"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["result"]["result_error"]["a"]["error_description"],
        "Not found"
    );
    assert_eq!(v["result"]["result"]["b"]["ID"], "101");
    assert_eq!(v["result"]["result_next"], json!([]));
    // The bucket: a burst past 50 is refused until it drains.
    let mut refused = 0;
    for _ in 0..60 {
        let r = call("crm.product.get", json!({"id": id}))
            .await
            .expect("answer");
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            let v: Value = r.json().await.expect("json");
            assert_eq!(v["error"], "QUERY_LIMIT_EXCEEDED");
            refused += 1;
        }
    }
    assert!(refused >= 5, "{refused}");
}
