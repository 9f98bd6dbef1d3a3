//! The `moysklad` connector against a fake MoySklad that follows the connector reference's
//! checklist (tests/moysklad/fake.rs), run through the real app: webhooks, upsert by
//! externalCode, syncId-safe create retries, 429 waits, incremental polling with a cursor.

#[path = "moysklad/fake.rs"]
mod fake;
#[path = "support/app.rs"]
mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use fake::{FakeMs, Fault, LOGIN, PASSWORD, TOKEN};
use support::{ADMIN, App, WAIT};

const HOOK: &str = "ms-hook-token-0001";

fn sklad(fake: &FakeMs, auth: &str) -> String {
    format!(
        r#"
[systems.sklad]
kind = "moysklad"
base_url = "{base}"
{auth}
rate_limit = "100/s"
webhook_disable_prefix = "https://obmen.example.com"
inbound = {{ token_query = "token", token = "{HOOK}" }}
"#,
        base = fake.base
    )
}

fn bearer() -> String {
    format!(r#"token = "{TOKEN}""#)
}

const FAST_RETRY: &str = r#"retry = { max_attempts = 6, initial = "20ms", max = "200ms" }"#;

#[tokio::test]
async fn a_webhook_delivered_three_times_is_one_exchange_and_fetches_the_order() {
    let fake = FakeMs::start().await;
    let order = fake.seed("customerorder", json!({"name": "00042", "sum": 150000}));
    let app = App::start(&format!(
        r#"{}
[[flows]]
name = "ms-order"
trigger = {{ webhook = {{ system = "sklad" }} }}
steps = [ {{ call = "sklad.fetch", args = '{{href: .trigger.events[0].meta.href}}', as = "order" }} ]
"#,
        sklad(&fake, &bearer())
    ))
    .await;
    let payload = json!({
        "auditContext": {"meta": {"type": "audit", "href": format!("{}/audit/1", fake.base)}, "uid": "admin@acme", "moment": "2026-01-15 12:30:05"},
        "events": [{"meta": {"type": "customerorder", "href": fake.href("customerorder", &order)}, "action": "UPDATE", "accountId": "9171a53c-0000-0000-0000-000000000000", "updatedFields": ["state"]}]
    });
    let url = format!(
        "{}/hooks/ms-order?requestId=5f0e0000-1111-2222-3333-444444444444&token={HOOK}",
        app.base
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let (s, v) = app
            .send(
                app.client
                    .post(&url)
                    .header(
                        "User-Agent",
                        "MoySklad webhook touch agent 2.0 (/https://www.moysklad.ru)",
                    )
                    .json(&payload),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "MoySklad waits 1500 ms at most"
        );
        ids.push(v["exchange_id"].as_u64().expect("id"));
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "one exchange: {ids:?}");
    let d = app.wait_for(ids[0], "succeeded").await;
    assert_eq!(d["external_id"], json!(order), "{d:#}");
    let gets: Vec<_> = fake
        .ledger()
        .into_iter()
        .filter(|r| r.path.ends_with(&format!("/entity/customerorder/{order}")))
        .collect();
    assert_eq!(gets.len(), 1, "the order is fetched once");
    assert_eq!(gets[0].status, 200);
    // No token, wrong token: refused before anything is recorded as work.
    let (s, _) = app
        .send(
            app.client
                .post(format!("{}/hooks/ms-order?requestId=x", app.base))
                .json(&payload),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = app
        .send(
            app.client
                .post(format!(
                    "{}/hooks/ms-order?requestId=x&token=nope",
                    app.base
                ))
                .json(&payload),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

fn upsert_flows(fake: &FakeMs, auth: &str) -> String {
    format!(
        r#"{}
[[flows]]
name = "cp"
trigger = {{ manual = {{}} }}
{FAST_RETRY}
steps = [ {{ upsert = "sklad.counterparty", match = ["externalCode"], as = "cp", args = '{{name: .trigger.name, externalCode: .trigger.code, companyType: "legal", inn: .trigger.inn}}' }} ]

[[flows]]
name = "cp-create"
trigger = {{ manual = {{}} }}
{FAST_RETRY}
steps = [ {{ call = "sklad.counterparty.create", args = '{{name: .trigger.name, externalCode: .trigger.code}}', as = "cp" }} ]
"#,
        sklad(fake, auth)
    )
}

#[tokio::test]
async fn upsert_by_external_code_puts_what_exists_and_posts_what_is_new_with_a_sync_id() {
    let fake = FakeMs::start().await;
    let existing = fake.seed(
        "counterparty",
        json!({"name": "Old name", "externalCode": "CRM-1"}),
    );
    let basic = format!("login = \"{LOGIN}\"\npassword = \"{PASSWORD}\"");
    let app = App::start(&upsert_flows(&fake, &basic)).await;

    let id = app
        .run(
            "cp",
            &json!({"name": "ООО Радуга", "code": "CRM-1", "inn": "7736207543"}),
        )
        .await;
    let d = app.wait_for(id, "succeeded").await;
    assert_eq!(d["steps"][0]["output"]["action"], json!("updated"), "{d:#}");
    assert_eq!(d["steps"][0]["output"]["id"], json!(existing));
    let id2 = app
        .run(
            "cp",
            &json!({"name": "ИП Новый", "code": "CRM-2", "inn": "500100732259"}),
        )
        .await;
    let d = app.wait_for(id2, "succeeded").await;
    assert_eq!(d["steps"][0]["output"]["action"], json!("created"), "{d:#}");
    assert!(
        d["steps"][0]["output"]["id"].is_string(),
        "the id of the created row"
    );

    let ledger = fake.ledger();
    let finds: Vec<_> = ledger.iter().filter(|r| r.method == "GET").collect();
    assert_eq!(finds[0].query_value("filter"), Some("externalCode=CRM-1"));
    assert_eq!(finds[1].query_value("filter"), Some("externalCode=CRM-2"));
    assert!(finds.iter().all(|r| {
        r.header("authorization")
            .is_some_and(|a| a.starts_with("Basic "))
    }));
    let put: Vec<_> = ledger.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(put.len(), 1);
    assert!(
        put[0]
            .path
            .ends_with(&format!("/entity/counterparty/{existing}"))
    );
    assert!(
        put[0].body.get("syncId").is_none(),
        "syncId is immutable: never on update"
    );
    let post: Vec<_> = ledger.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(post.len(), 1);
    let sync = post[0].body["syncId"].as_str().expect("syncId on create");
    assert_eq!(sync.len(), 36);
    for r in &ledger {
        assert_eq!(
            r.header("accept-encoding"),
            Some("gzip"),
            "{} {}",
            r.method,
            r.path
        );
        assert!(
            r.header("accept")
                .is_some_and(|a| a.starts_with("application/json"))
        );
        if r.method != "GET" {
            assert_eq!(
                r.header("x-lognex-webhook-disablebyprefix"),
                Some("https://obmen.example.com")
            );
            assert!(
                r.header("content-type")
                    .is_some_and(|c| c.starts_with("application/json"))
            );
        }
    }
    let inner = fake.lock();
    assert!(
        inner.contract_errors.is_empty(),
        "{:?}",
        inner.contract_errors
    );
    let rows = &inner.rows["counterparty"];
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["name"], json!("ООО Радуга"));
    assert_eq!(rows[1]["externalCode"], json!("CRM-2"));
}

#[tokio::test]
async fn a_create_retried_after_a_lost_answer_does_not_duplicate() {
    let fake = FakeMs::start().await;
    fake.fail("POST", "/entity/counterparty", vec![Fault::FailAfterWork]);
    let app = App::start(&upsert_flows(&fake, &bearer())).await;
    let id = app
        .run(
            "cp-create",
            &json!({"name": "ООО Ромашка", "code": "CRM-9"}),
        )
        .await;
    let d = app.wait_for(id, "succeeded").await;
    let posts: Vec<_> = fake
        .ledger()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2, "sent again after the 500");
    assert_eq!(posts[0].status, 500);
    assert_eq!(
        posts[0].body["syncId"], posts[1].body["syncId"],
        "the same syncId"
    );
    let inner = fake.lock();
    assert_eq!(
        inner.rows["counterparty"].len(),
        1,
        "one counterparty: {d:#}"
    );
    assert!(
        inner.contract_errors.is_empty(),
        "{:?}",
        inner.contract_errors
    );
}

#[tokio::test]
async fn a_429_storm_is_retried_after_the_asked_wait_within_five_parallel_requests() {
    let fake = FakeMs::start().await;
    fake.fail(
        "GET",
        "/entity/counterparty",
        vec![Fault::RateLimited(300), Fault::RateLimited(300)],
    );
    let app = App::start(&format!(
        r#"{}
[[flows]]
name = "cp-list"
trigger = {{ manual = {{}} }}
# `max` caps even the wait MoySklad asks for: keep it above X-Lognex-Retry-After.
retry = {{ max_attempts = 6, initial = "20ms", max = "5s" }}
steps = [ {{ call = "sklad.counterparty.list", args = '{{filter: {{name: .trigger.n}}, limit: 10}}' }} ]
"#,
        sklad(&fake, &bearer())
    ))
    .await;
    let first = app.run("cp-list", &json!({"n": "x0"})).await;
    let d = app.wait_for(first, "succeeded").await;
    let classes: Vec<_> = d["attempt_log"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a["error"]["class"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(classes, ["rate_limited", "rate_limited"], "{d:#}");
    let ledger = fake.ledger();
    assert_eq!(ledger.len(), 3);
    for pair in ledger.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(280), "waited only {gap:?}");
    }
    // 30 exchanges at once: never more than 5 requests in flight, so no 1073.
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(app.run("cp-list", &json!({"n": format!("y{i}")})).await);
    }
    for id in ids {
        app.wait_for(id, "succeeded").await;
    }
    let max = fake.max_in_flight.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=5).contains(&max), "{max} parallel requests");
    assert!(
        fake.ledger()
            .iter()
            .all(|r| r.status != 429 || r.query_value("filter") == Some("name=x0"))
    );
}

#[tokio::test]
async fn a_scheduled_poll_follows_next_href_then_the_updated_cursor() {
    let fake = FakeMs::start().await;
    for i in 0..5 {
        fake.seed(
            "product",
            json!({"name": format!("p{i}"), "updated": format!("2026-01-15 10:00:0{i}.000")}),
        );
    }
    let flows = format!(
        r#"{}
[[flows]]
name = "poll-products"
trigger = {{ schedule = {{ cron = "0 3 1 1 *" }} }}
{FAST_RETRY}
steps = [
  {{ call = "sklad.product.list", as = "page", args = '''if (.trigger.cursor // "" | startswith("http")) then {{href: .trigger.cursor}} else {{filter: {{"updated>=": (.trigger.cursor // "2000-01-01 00:00:00")}}, order: "updated,asc", limit: 2}} end''' }},
  {{ name = "cursor", as = "cursor", map = '.page.meta.nextHref // ([.page.rows[].updated] | max) // .trigger.cursor' }},
]
"#,
        sklad(&fake, &bearer())
    );
    let app = App::start(&flows).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let id = app.run("poll-products", &json!({})).await;
        let d = app.wait_for(id, "succeeded").await;
        let names: Vec<String> = d["steps"][0]["output"]["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect();
        seen.push(names);
    }
    let ledger = fake.ledger();
    assert_eq!(
        ledger[0].query_value("filter"),
        Some("updated>=2000-01-01 00:00:00")
    );
    assert_eq!(ledger[0].query_value("order"), Some("updated,asc"));
    assert_eq!(
        ledger[1].query_value("offset"),
        Some("2"),
        "the second run follows nextHref"
    );
    assert_eq!(ledger[2].query_value("offset"), Some("4"));
    assert_eq!(
        ledger[3].query_value("filter"),
        Some("updated>=2026-01-15 10:00:04.000"),
        "then the updated cursor"
    );
    assert_eq!(seen[0], ["p0", "p1"]);
    assert_eq!(seen[1], ["p2", "p3"]);
    assert_eq!(seen[2], ["p4"]);
    assert_eq!(
        seen[3],
        ["p4"],
        "updated>= includes the last row again; an upsert makes it a no-op"
    );
}

#[tokio::test]
async fn without_gzip_moysklad_answers_415_and_the_connector_sends_it() {
    let fake = FakeMs::start().await;
    let plain = raw_client(false);
    let r = plain
        .get(format!("{}/entity/counterparty", fake.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("fake answers");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = plain
        .get(format!("{}/entity/counterparty?limit=1001", fake.base))
        .bearer_auth(TOKEN)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("fake answers");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.expect("json");
    assert!(body["errors"][0]["code"].is_number());
    // The contract check is not vacuous: a body that breaks the official schema is refused.
    let r = plain
        .post(format!("{}/entity/counterparty", fake.base))
        .bearer_auth(TOKEN)
        .header("Accept-Encoding", "gzip")
        .json(&json!({"name": 5}))
        .send()
        .await
        .expect("fake answers");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let errors = fake.take_contract_errors();
    assert!(errors.iter().any(|e| e.contains("/name")), "{errors:?}");
    // The fake enforces the 5-parallel-requests limit (so the connector's test above means
    // something): 8 at once → some 429 with code 1073.
    let gz = raw_client(true);
    let calls = (0..8).map(|_| {
        gz.get(format!("{}/entity/counterparty", fake.base))
            .bearer_auth(TOKEN)
            .send()
    });
    let answers = futures_join(calls).await;
    let refused = answers.iter().filter(|s| **s == 429).count();
    assert!(refused >= 1, "{answers:?}");
}

/// The contract check is not vacuous: each kind of break of the official OpenAPI is named —
/// undeclared and out-of-range query parameters, a path id that is not a uuid, an
/// operation the spec does not have, a bulk item of the wrong type, a header outside its
/// enum, an answer or a webhook body of the wrong shape.
#[tokio::test]
async fn requests_breaking_the_official_openapi_are_named() {
    let fake = FakeMs::start().await;
    let http = raw_client(true);
    let get = |path: &str| {
        http.get(format!("{}{path}", fake.base))
            .bearer_auth(TOKEN)
            .send()
    };
    for (path, says) in [
        (
            "/entity/counterparty?limt=5",
            "query parameter `limt` is not in the spec",
        ),
        ("/entity/counterparty?limit=0", "parameter `limit`=0"),
        ("/entity/product?offset=-1", "parameter `offset`=-1"),
        ("/entity/product?limit=ten", "parameter `limit`=ten"),
        ("/entity/counterparty/42", "path parameter `id`=42"),
        ("/entity/counterparty/metadata/nothing", "no such operation"),
        ("/report/stock/all/current", "no such operation"),
    ] {
        let r = get(path).await.expect("fake answers");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let errors = fake.take_contract_errors();
        assert!(
            errors.iter().any(|e| e.contains(says)),
            "{path}: {errors:?}"
        );
    }
    // Within the contract: the same paths with declared parameters are answered.
    for path in [
        "/entity/counterparty?limit=1000&offset=0&filter=name%3Dx&expand=owner&order=name",
        "/entity/assortment?stockMode=all&limit=5",
        "/entity/counterparty/metadata",
    ] {
        let r = get(path).await.expect("fake answers");
        assert_ne!(r.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    assert_eq!(fake.take_contract_errors(), Vec::<String>::new());
    // A bulk array is checked as the spec's `/batch` operation, item by item.
    let r = http
        .post(format!("{}/entity/product", fake.base))
        .bearer_auth(TOKEN)
        .json(&json!([{"name": "ok"}, {"name": ["not", "text"]}]))
        .send()
        .await
        .expect("fake answers");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let errors = fake.take_contract_errors();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("/entity/product/batch") && e.contains("/1/name")),
        "{errors:?}"
    );
    let r = http
        .get(format!("{}/entity/product", fake.base))
        .bearer_auth(TOKEN)
        .header("Accept", "text/html")
        .send()
        .await
        .expect("fake answers");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let errors = fake.take_contract_errors();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("header parameter `accept`")),
        "{errors:?}"
    );
    // The fake's own answers and the test webhooks are held to the spec as well.
    let contract = fake::contract();
    let (op, _) = contract
        .operation("GET", "/entity/counterparty")
        .expect("an operation");
    assert!(
        !contract
            .check_answer(op, &json!({"rows": "none"}))
            .is_empty()
    );
    let event = json!({"events": [{"action": "CREATE", "accountId": "not-a-uuid",
        "meta": {"type": "counterparty", "href": format!("{}/entity/counterparty/1", fake.base)}}]});
    assert!(
        !contract
            .check_payload("WebhookNotificationPayload", &event)
            .is_empty()
    );
}

/// A client for calling the fake directly, with the `Accept` the spec allows (reqwest's
/// default `*/*` is outside its enum); `gzip: false` leaves out `Accept-Encoding`.
fn raw_client(gzip: bool) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::ACCEPT,
        reqwest::header::HeaderValue::from_static("application/json;charset=utf-8"),
    );
    let b = reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers);
    if gzip { b } else { b.no_gzip() }.build().expect("client")
}

async fn futures_join<F>(calls: impl Iterator<Item = F>) -> Vec<u16>
where
    F: Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static,
{
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task").expect("answer").status().as_u16());
    }
    out
}

/// `obmen check` on the shipped example, with its secrets in the environment.
#[test]
fn the_example_config_passes_obmen_check() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/moysklad-orders-to-http.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_obmen"))
        .args(["check", "-c", path.to_str().expect("utf8")])
        .env("OBMEN_SECRET_ADMIN_TOKEN", "admin-token-123456")
        .env("OBMEN_SECRET_MOYSKLAD_TOKEN", "moysklad-token-123456")
        .env("OBMEN_SECRET_MOYSKLAD_HOOK", "moysklad-hook-123456")
        .env("OBMEN_SECRET_WMS_TOKEN", "wms-token-123456")
        .env("OBMEN_SECRET_WMS_HOOK", "wms-hook-123456")
        .output()
        .expect("run obmen check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn manual(fake: &FakeMs, name: &str, step: &str, extra: &str) -> String {
    format!(
        r#"{}
[[flows]]
name = "{name}"
trigger = {{ manual = {{}} }}
{FAST_RETRY}
steps = [ {step} ]
"#,
        sklad(fake, &format!("{}\n{extra}", bearer()))
    )
}

/// `max_pages` follows `meta.nextHref` within one run (the output: all rows, the last
/// page's meta); `all_pages` reads to the end; across runs the stored cursor still works.
#[tokio::test]
async fn a_list_reads_several_pages_in_one_run() {
    let fake = FakeMs::start().await;
    for i in 0..7 {
        fake.seed(
            "product",
            json!({"name": format!("p{i}"), "updated": format!("2026-01-15 10:00:0{i}.000")}),
        );
    }
    let mut flows = manual(
        &fake,
        "three-pages",
        r#"{ call = "sklad.product.list", args = '{order: "updated,asc", limit: 2, max_pages: 3}' }"#,
        "",
    );
    flows.push_str(
        r#"
[[flows]]
name = "everything"
trigger = { manual = {} }
steps = [ { call = "sklad.product.list", args = '{limit: 3, all_pages: true}' } ]

[[flows]]
name = "poll"
trigger = { schedule = { cron = "0 3 1 1 *" } }
steps = [
  { call = "sklad.product.list", as = "page", args = '''if (.trigger.cursor // "" | startswith("http")) then {href: .trigger.cursor, max_pages: 2} else {filter: {"updated>=": (.trigger.cursor // "2000-01-01 00:00:00")}, order: "updated,asc", limit: 2, max_pages: 2} end''' },
  { name = "cursor", as = "cursor", map = '.page.meta.nextHref // ([.page.rows[].updated] | max) // .trigger.cursor' },
]
"#,
    );
    let app = App::start(&flows).await;
    let names = |d: &Value| -> Vec<String> {
        d["steps"][0]["output"]["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect()
    };
    let d = app
        .wait_for(app.run("three-pages", &json!({})).await, "succeeded")
        .await;
    assert_eq!(names(&d), ["p0", "p1", "p2", "p3", "p4", "p5"]);
    let meta = &d["steps"][0]["output"]["meta"];
    assert_eq!(meta["offset"], 4, "the last page's meta");
    assert!(
        meta["nextHref"]
            .as_str()
            .is_some_and(|h| h.contains("offset=6")),
        "{meta}"
    );
    assert_eq!(
        d["attempt_log"][0]["calls"].as_array().map(Vec::len),
        Some(3)
    );
    let offsets: Vec<Option<String>> = fake
        .ledger()
        .iter()
        .map(|r| r.query_value("offset").map(str::to_owned))
        .collect();
    assert_eq!(offsets, [None, Some("2".into()), Some("4".into())]);
    assert!(
        fake.ledger()
            .iter()
            .all(|r| r.query_value("max_pages").is_none())
    );

    let d = app
        .wait_for(app.run("everything", &json!({})).await, "succeeded")
        .await;
    assert_eq!(names(&d).len(), 7);
    assert!(d["steps"][0]["output"]["meta"].get("nextHref").is_none());

    // Two pages a run; the cursor is the nextHref left, then the last `updated`.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let id = app.run("poll", &json!({})).await;
        let d = app.wait_for(id, "succeeded").await;
        runs.push((names(&d), d["steps"][1]["output"].clone()));
    }
    assert_eq!(runs[0].0, ["p0", "p1", "p2", "p3"]);
    assert!(
        runs[0].1.as_str().is_some_and(|c| c.contains("offset=4")),
        "{:?}",
        runs[0]
    );
    assert_eq!(runs[1].0, ["p4", "p5", "p6"]);
    assert_eq!(runs[1].1, "2026-01-15 10:00:06.000");
}

/// The budget MoySklad reports (`X-RateLimit-Remaining` of `X-RateLimit-Limit` per
/// `X-Lognex-Retry-TimeInterval`) slows obmen down before it runs out: a burst against a
/// budget of 10 per 500 ms gets no 429, though obmen's own limit would allow far more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_budget_sees_no_429_under_a_burst() {
    let fake = FakeMs::start().await;
    fake.lock().budget = fake::Budget::new(10, 500);
    let flows = manual(
        &fake,
        "look",
        r#"{ call = "sklad.counterparty.list", args = '{filter: {name: .trigger.n}, limit: 1}' }"#,
        "",
    )
    .replace("rate_limit = \"100/s\"", "rate_limit = \"1000/s\"");
    let app = App::start(&flows).await;
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(app.run("look", &json!({"n": format!("n{i}")})).await);
    }
    for id in ids {
        let d = app.wait_for(id, "succeeded").await;
        assert_eq!(d["attempts"], 1, "{d:#}");
    }
    let took = started.elapsed();
    {
        let inner = fake.lock();
        assert_eq!(
            inner.refused_by_budget, 0,
            "no request found the budget spent"
        );
        assert!(inner.ledger.iter().all(|r| r.status == 200));
    }
    // 40 requests, 10 at once and 20 a second after: at least 1.5 s, paced.
    assert!(took >= Duration::from_millis(1400), "took {took:?}");

    // The fake does refuse what comes faster than its budget.
    let strict = FakeMs::start().await;
    strict.lock().budget = fake::Budget::new(3, 5000);
    let http = raw_client(true);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = http
            .get(format!("{}/entity/counterparty", strict.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("answer");
        statuses.push((
            r.status().as_u16(),
            r.headers()
                .get("x-ratelimit-remaining")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ));
    }
    assert_eq!(
        statuses,
        [
            (200, Some("2".into())),
            (200, Some("1".into())),
            (200, Some("0".into())),
            (429, Some("0".into())),
            (429, Some("0".into())),
        ]
    );
}

/// A bulk create (`counterparty.create` with an array) goes in parts of 1000; a part MoySklad
/// finds too large (413) is halved and sent again; an item MoySklad refuses fails the step,
/// named by its place, and a retry creates nothing twice (each item has its own syncId).
#[tokio::test]
async fn a_bulk_create_goes_in_parts_and_names_the_items_that_failed() {
    let fake = FakeMs::start().await;
    let flows = manual(
        &fake,
        "bulk",
        r#"{ name = "write", call = "sklad.counterparty.create", args = '.trigger.items' }"#,
        "",
    );
    let app = App::start(&flows).await;
    let items = |n: usize, from: usize| -> Value {
        Value::Array(
            (from..from + n)
                .map(|i| json!({"name": format!("Контрагент {i}"), "externalCode": format!("C-{i}")}))
                .collect(),
        )
    };
    let posts = |fake: &FakeMs| -> Vec<(u16, usize)> {
        fake.ledger()
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| (r.status, r.body.as_array().map_or(0, Vec::len)))
            .collect()
    };

    let id = app.run("bulk", &json!({"items": items(2500, 0)})).await;
    let d = app.wait_for(id, "succeeded").await;
    assert_eq!(d["steps"][0]["output"].as_array().map(Vec::len), Some(2500));
    assert_eq!(posts(&fake), [(200, 1000), (200, 1000), (200, 500)]);
    {
        let inner = fake.lock();
        let rows = &inner.rows["counterparty"];
        assert_eq!(rows.len(), 2500);
        let mut sync: Vec<&str> = rows.iter().filter_map(|r| r["syncId"].as_str()).collect();
        sync.sort_unstable();
        sync.dedup();
        assert_eq!(sync.len(), 2500, "one syncId per item");
        assert_eq!(rows[1700]["externalCode"], "C-1700");
        assert!(
            inner.contract_errors.is_empty(),
            "{:?}",
            inner.contract_errors
        );
    }

    // A MoySklad that takes fewer items at once (a body too large in bytes): halves.
    fake.lock().max_items = 300;
    let id = app.run("bulk", &json!({"items": items(700, 5000)})).await;
    app.wait_for(id, "succeeded").await;
    assert_eq!(
        posts(&fake)[3..],
        [
            (413, 700),
            (413, 350),
            (200, 175),
            (200, 175),
            (413, 350),
            (200, 175),
            (200, 175)
        ]
    );
    assert_eq!(fake.lock().rows["counterparty"].len(), 3200);

    // An item without a name: the answer is 200 with an error in its place.
    let mut three = items(3, 9000);
    three[1]["name"] = json!("");
    let id = app.run("bulk", &json!({"items": three})).await;
    let failed = app.wait_for(id, "failed").await;
    assert_eq!(failed["last_error"]["class"], "permanent", "{failed:#}");
    assert_eq!(
        failed["last_error"]["message"],
        "MoySklad refused 1 of 3 items: item 1 (C-9001): 3000: Поле 'name' не может быть пустым"
    );
    assert_eq!(fake.lock().rows["counterparty"].len(), 3202);
    // Sent again as it was: the two written items come back by their syncId, not twice.
    let (s, _) = app
        .send(
            app.client
                .post(format!("{}/api/exchanges/{id}/retry", app.base))
                .bearer_auth(ADMIN),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let deadline = Instant::now() + WAIT;
    while posts(&fake).len() < 12 {
        assert!(Instant::now() < deadline, "not sent again");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    app.wait_for(id, "failed").await;
    assert_eq!(fake.lock().rows["counterparty"].len(), 3202);
}

/// The `ms-orders` flow: a MoySklad webhook whose first event's order is fetched.
async fn orders_app(fake: &FakeMs) -> App {
    App::start(&format!(
        r#"{}
[[flows]]
name = "ms-orders"
trigger = {{ webhook = {{ system = "sklad" }} }}
steps = [ {{ call = "sklad.fetch", args = '{{href: .trigger.events[0].meta.href}}', as = "order" }} ]
"#,
        sklad(fake, &bearer())
    ))
    .await
}

/// A webhook body with an UPDATE event for each of these customer orders.
fn order_events(fake: &FakeMs, ids: &[String], audit: u32) -> Value {
    let events: Vec<Value> = ids
        .iter()
        .map(|id| json!({"meta": {"type": "customerorder", "href": fake.href("customerorder", id)}, "action": "UPDATE", "accountId": "9171a53c-0000-0000-0000-000000000000"}))
        .collect();
    json!({"auditContext": {"meta": {"type": "audit", "href": format!("{}/audit/{audit}", fake.base)}, "uid": "admin@acme", "moment": "2026-01-15 12:31:00"}, "events": events})
}

/// Waits until `n` exchanges of `ms-orders` succeeded; they, and a field of each, sorted.
async fn orders_succeeded(app: &App, n: usize, field: &str) -> (Vec<Value>, Vec<String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let done = app.list("flow=ms-orders&status=succeeded").await;
        if done.len() >= n {
            let mut values: Vec<String> = done
                .iter()
                .filter_map(|d| d[field].as_str().map(str::to_owned))
                .collect();
            values.sort();
            return (done, values);
        }
        assert!(
            Instant::now() < deadline,
            "{:#?}",
            app.list("flow=ms-orders").await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// One delivery with three events: three exchanges, each with its own external id (the
/// entity) and key (`<requestId>:<index>`); the sender's repeat of the delivery (same
/// requestId) is three duplicates. The sender gives up after 1 + 3 refused attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_with_several_events_is_one_exchange_per_event() {
    let fake = FakeMs::start().await;
    let orders: Vec<String> = (1..=3)
        .map(|i| fake.seed("customerorder", json!({"name": format!("0004{i}")})))
        .collect();
    let app = orders_app(&fake).await;
    let body = order_events(&fake, &orders, 2);
    let url = format!("{}/hooks/ms-orders?token={HOOK}", app.base);
    let request_id = "7a1e0000-1111-2222-3333-444444444444";
    assert_eq!(fake::deliver(&url, request_id, &body).await, [Some(200)]);
    let (done, ids) = orders_succeeded(&app, 3, "external_id").await;
    assert_eq!(
        ids,
        sorted(orders.clone()),
        "one exchange per event, keyed by its entity"
    );
    let keys = sorted(
        done.iter()
            .filter_map(|d| d["key"].as_str().map(str::to_owned))
            .collect(),
    );
    assert_eq!(
        keys,
        (0..3)
            .map(|i| format!("{request_id}:{i}"))
            .collect::<Vec<_>>()
    );
    // MoySklad repeats the delivery (it did not see our answer): no new work.
    assert_eq!(fake::deliver(&url, request_id, &body).await, [Some(200)]);
    assert_eq!(app.list("flow=ms-orders&status=duplicate").await.len(), 3);
    assert_eq!(app.list("flow=ms-orders&status=succeeded").await.len(), 3);
    let fetched = fake
        .ledger()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/entity/customerorder/"))
        .count();
    assert_eq!(fetched, 3, "each order fetched once");

    // A refused delivery: the sender tries 4 times with the same requestId, then gives up.
    let forged = format!("{}/hooks/ms-orders?token=wrong-token", app.base);
    assert_eq!(
        fake::deliver(&forged, request_id, &body).await,
        [Some(403), Some(403), Some(403), Some(403)]
    );
}

/// Deliveries of several events without a `requestId` (a proxy stripped it, or an old
/// sender): they carry no key to match repeats by, so each event is an exchange of its own
/// and a later, different delivery is never taken for a duplicate of the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_without_a_request_id_are_not_duplicates_of_each_other() {
    let fake = FakeMs::start().await;
    let orders: Vec<String> = (1..=4)
        .map(|i| fake.seed("customerorder", json!({"name": format!("0005{i}")})))
        .collect();
    let app = orders_app(&fake).await;
    let url = format!("{}/hooks/ms-orders?token={HOOK}", app.base);
    for part in orders.chunks(2) {
        let (status, _) = app
            .send(
                app.client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(order_events(&fake, part, 3).to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (done, ids) = orders_succeeded(&app, 4, "external_id").await;
    assert_eq!(app.list("flow=ms-orders&status=duplicate").await.len(), 0);
    assert_eq!(
        ids,
        sorted(orders.clone()),
        "every event of both deliveries ran"
    );
    for d in &done {
        let key = d["key"].as_str().unwrap_or_default();
        assert!(
            !key.starts_with(':'),
            "no key made of a missing requestId: {key}"
        );
    }
}
