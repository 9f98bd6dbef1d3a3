//! The `onec` connector (1C's standard OData interface) against a fake 1C that follows the
//! developer guide (tests/onec_odata/fake.rs), run through the real app: upsert by ИНН with
//! `If-Match`, a lost create answer, a 412 race, every error class from 1C's own bodies,
//! the password canary, and a scheduled poll paging with `$top`/`$skip`.

#[path = "onec_odata/fake.rs"]
mod fake;
#[path = "onec_odata/portal.rs"]
mod portal;
#[path = "support/app.rs"]
mod support;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use fake::{Fake1C, Fault, USER};
use portal::FakePortal;
use support::{ADMIN, App};

const PASSWORD: &str = "1c-password-0001";
const COUNTERPARTIES: &str = "Catalog_Контрагенты";
const SALES: &str = "Document_РеализацияТоваровУслуг";
const FAST_RETRY: &str = r#"retry = { max_attempts = 4, initial = "20ms", max = "200ms" }"#;

fn system(name: &str, fake: &Fake1C, password: &str, extra: &str) -> String {
    format!(
        r#"
[systems.{name}]
kind = "onec"
base_url = "{base}"
user = "{USER}"
password = "{password}"
rate_limit = "200/s"
{extra}
"#,
        base = fake.base
    )
}

fn upsert_flows(fake: &Fake1C, password: &str) -> String {
    format!(
        r#"{}
[[flows]]
name = "cp"
trigger = {{ manual = {{}} }}
# A company's every version is its own exchange; its id (when given) links it in the ID map.
key = '(.id // "") + ":" + .name + ":" + .inn'
{FAST_RETRY}
steps = [ {{ upsert = "c1.{COUNTERPARTIES}", match = ["ИНН"], as = "cp", args = '{{Description: .trigger.name, "ИНН": .trigger.inn, "ЮрФизЛицо": "ЮрЛицо"}}' }} ]

[[flows]]
name = "cp-by-name"
trigger = {{ manual = {{}} }}
{FAST_RETRY}
steps = [ {{ upsert = "c1.{COUNTERPARTIES}", match = ["Description"], id = ".Ref_Key", args = '{{Description: .trigger.name, "Комментарий": .trigger.note}}' }} ]
"#,
        system("c1", fake, password, "data_load_mode = true")
    )
}

fn error_classes(d: &Value) -> Vec<String> {
    d["attempt_log"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a["error"]["class"].as_str().map(str::to_owned))
        .collect()
}

fn last_error(d: &Value) -> String {
    d["attempt_log"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|a| a["error"]["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn upsert_finds_the_counterparty_by_inn_and_patches_it_with_if_match() {
    let fake = Fake1C::start(PASSWORD).await;
    let existing = fake.seed(
        COUNTERPARTIES,
        json!({"Description": "Старое имя", "ИНН": "7701234567", "ЮрФизЛицо": "ЮрЛицо"}),
    );
    fake.seed(
        COUNTERPARTIES,
        json!({"Description": "Другой", "ИНН": "7702000000"}),
    );
    let seeded_version = fake.rows(COUNTERPARTIES)[0]["DataVersion"].clone();
    let app = App::start(&upsert_flows(&fake, PASSWORD)).await;

    let id = app
        .run(
            "cp",
            &json!({"id": "b24-company-7", "name": "ООО «Ромашка»", "inn": "7701234567"}),
        )
        .await;
    let d = app.wait_for(id, "succeeded").await;
    assert_eq!(d["steps"][0]["output"]["action"], "updated", "{d:#}");
    assert_eq!(d["steps"][0]["output"]["id"], json!(existing));
    assert_eq!(d["links"][0]["target_id"], json!(existing), "{d:#}");
    let id2 = app
        .run("cp", &json!({"name": "ИП Новиков", "inn": "500100732259"}))
        .await;
    let d2 = app.wait_for(id2, "succeeded").await;
    assert_eq!(d2["steps"][0]["output"]["action"], "created", "{d2:#}");
    let created = d2["steps"][0]["output"]["id"]
        .as_str()
        .expect("new Ref_Key");
    assert!(fake::is_guid(created), "{created}");

    let ledger = fake.ledger();
    let finds: Vec<_> = ledger.iter().filter(|r| r.method == "GET").collect();
    assert_eq!(finds[0].path, format!("/{COUNTERPARTIES}"));
    assert!(
        finds[0].raw_path.contains("Catalog_%D0%9A%D0%BE"),
        "{}",
        finds[0].raw_path
    );
    assert_eq!(finds[0].query_value("$filter"), Some("ИНН eq '7701234567'"));
    assert_eq!(finds[0].query_value("$top"), Some("2"));
    let patch: Vec<_> = ledger.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(patch.len(), 1, "the existing one is patched, not posted");
    assert_eq!(
        patch[0].path,
        format!("/{COUNTERPARTIES}(guid'{existing}')")
    );
    assert_eq!(patch[0].header("if-match"), seeded_version.as_str());
    assert_eq!(patch[0].header("1c_odata-dataloadmode"), Some("true"));
    assert_eq!(patch[0].body["Description"], "ООО «Ромашка»");
    let post: Vec<_> = ledger.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(post.len(), 1);
    assert_eq!(post[0].status, 201);
    for r in &ledger {
        assert_eq!(
            r.query_value("$format"),
            Some("json"),
            "{} {}",
            r.method,
            r.path
        );
        assert!(
            r.header("authorization")
                .is_some_and(|a| a.starts_with("Basic "))
        );
        assert!(r.header("x-request-id").is_some());
    }
    let rows = fake.rows(COUNTERPARTIES);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["Description"], "ООО «Ромашка»");
    assert_ne!(
        rows[0]["DataVersion"], seeded_version,
        "a write changes DataVersion"
    );

    // The journal shows the URL as a person reads it; the fake got it percent-encoded.
    let call = &d["attempt_log"][0]["calls"][0];
    assert_eq!(
        call["url"],
        format!(
            "{}/{COUNTERPARTIES}?$format=json&$filter=ИНН eq '7701234567'&$top=2",
            fake.base
        )
    );
    assert_eq!(call["headers"]["Authorization"], "***");

    // The ID map now links the company: the next update needs no search, and sends no
    // If-Match (no version was read for it).
    let again = app
        .run(
            "cp",
            &json!({"id": "b24-company-7", "name": "ООО «Ромашка-2»", "inn": "7701234567"}),
        )
        .await;
    app.wait_for(again, "succeeded").await;
    let tail: Vec<_> = fake.ledger().into_iter().skip(ledger.len()).collect();
    assert_eq!(tail.len(), 1, "{tail:?}");
    assert_eq!(tail[0].method, "PATCH");
    assert_eq!(tail[0].header("if-match"), None);

    // A quote in a match value is doubled: the fake's parser finds the record.
    let dart = fake.seed(COUNTERPARTIES, json!({"Description": "Д'Артаньян и К°"}));
    let id3 = app
        .run(
            "cp-by-name",
            &json!({"name": "Д'Артаньян и К°", "note": "VIP"}),
        )
        .await;
    let d3 = app.wait_for(id3, "succeeded").await;
    assert_eq!(d3["steps"][0]["output"]["id"], json!(dart), "{d3:#}");
    let find = fake
        .ledger()
        .into_iter()
        .rev()
        .find(|r| r.method == "GET")
        .expect("find");
    assert_eq!(
        find.query_value("$filter"),
        Some("Description eq 'Д''Артаньян и К°'")
    );
    assert_eq!(fake.rows(COUNTERPARTIES).len(), 4);
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_found_by_inn_on_retry_without_a_duplicate() {
    let fake = Fake1C::start(PASSWORD).await;
    fake.publish(COUNTERPARTIES);
    fake.fail("POST", COUNTERPARTIES, vec![Fault::FailAfterWork]);
    let app = App::start(&upsert_flows(&fake, PASSWORD)).await;
    let id = app
        .run("cp", &json!({"name": "ТОО «Береке»", "inn": "7707083893"}))
        .await;
    let d = app.wait_for(id, "succeeded").await;
    assert_eq!(error_classes(&d), ["transient"], "{d:#}");
    assert!(last_error(&d).is_empty());
    let first_error = d["attempt_log"][0]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        first_error.contains("code -1: Ошибка при выполнении операции"),
        "{first_error}"
    );
    let ledger = fake.ledger();
    let methods: Vec<(&str, u16)> = ledger
        .iter()
        .map(|r| (r.method.as_str(), r.status))
        .collect();
    assert_eq!(
        methods,
        [("GET", 200), ("POST", 500), ("GET", 200), ("PATCH", 200)],
        "posted once; the retry found it by ИНН"
    );
    assert_eq!(d["steps"][0]["output"]["action"], "updated");
    let rows = fake.rows(COUNTERPARTIES);
    assert_eq!(rows.len(), 1, "one counterparty: {rows:?}");
    assert_eq!(d["steps"][0]["output"]["id"], rows[0]["Ref_Key"]);
}

#[tokio::test]
async fn a_record_saved_between_find_and_patch_gets_412_and_the_next_attempt_reads_it_again() {
    let fake = Fake1C::start(PASSWORD).await;
    let key = fake.seed(
        COUNTERPARTIES,
        json!({"Description": "Старое", "ИНН": "7736050003"}),
    );
    let seeded = fake.rows(COUNTERPARTIES)[0]["DataVersion"].clone();
    // Somebody saves the counterparty in 1C right after obmen's first read.
    fake.fail("GET", COUNTERPARTIES, vec![Fault::TouchAfterRead]);
    let app = App::start(&upsert_flows(&fake, PASSWORD)).await;
    let id = app
        .run("cp", &json!({"name": "Новое", "inn": "7736050003"}))
        .await;
    let d = app.wait_for(id, "succeeded").await;
    assert_eq!(error_classes(&d), ["transient"], "{d:#}");
    let first = d["attempt_log"][0]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        first.contains("412") && first.contains("DataVersion"),
        "{first}"
    );
    let patches: Vec<_> = fake
        .ledger()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[0].status, 412);
    assert_eq!(patches[0].header("if-match"), seeded.as_str());
    assert_eq!(patches[1].status, 200);
    assert_ne!(
        patches[1].header("if-match"),
        seeded.as_str(),
        "the second attempt sends the version it read again"
    );
    let row = &fake.rows(COUNTERPARTIES)[0];
    assert_eq!(
        (row["Ref_Key"].as_str(), row["Description"].as_str()),
        (Some(key.as_str()), Some("Новое"))
    );
}

/// A flow, its trigger, a fault to inject, the expected status, error classes and journal text.
type Case = (
    &'static str,
    Value,
    Option<Fault>,
    &'static str,
    &'static [&'static str],
    &'static str,
);

fn error_flows(fake: &Fake1C) -> String {
    let call = |name: &str, op: &str, args: &str| {
        format!(
            "\n[[flows]]\nname = \"{name}\"\ntrigger = {{ manual = {{}} }}\n{FAST_RETRY}\nsteps = [ {{ call = \"{op}\", args = '{args}' }} ]\n"
        )
    };
    [
        system("c1", fake, PASSWORD, ""),
        system("c1bad", fake, "wrong-password-1", ""),
        call("get", &format!("c1.{COUNTERPARTIES}.get"), "{key: .trigger.key}"),
        call("create", &format!("c1.{COUNTERPARTIES}.create"), "{record: .trigger.record}"),
        call("list", &format!("c1.{COUNTERPARTIES}.list"), r#"{filter: {"ИНН": .trigger.inn}}"#),
        call("goods", "c1.Catalog_Номенклатура.list", "{top: 1}"),
        call("bad-login", &format!("c1bad.{COUNTERPARTIES}.list"), "{top: 1}"),
        call("paged-count", &format!("c1.{COUNTERPARTIES}.list"), "{top: 5, inlinecount: true}"),
        "\n[[flows]]\nname = \"c1-hook\"\ntrigger = { webhook = { system = \"c1\" } }\nsteps = [ { map = \".trigger\" } ]\n".into(),
    ]
    .concat()
}

#[tokio::test]
async fn each_error_from_1c_ends_in_its_status_with_1c_text_in_the_journal() {
    let fake = Fake1C::start(PASSWORD).await;
    fake.seed(
        COUNTERPARTIES,
        json!({"Description": "Есть", "ИНН": "7701234567"}),
    );
    let app = App::start(&error_flows(&fake)).await;
    let cases: Vec<Case> = vec![
        // JSON, code 9: no such record → permanent.
        (
            "get",
            json!({"key": "00000000-0000-0000-0000-00000000abcd"}),
            None,
            "failed",
            &["permanent"],
            "code 9: Экземпляр сущности",
        ),
        // XML, code 4: the data is refused → permanent.
        (
            "create",
            json!({"record": {"Description": "X", "ИНН": "1"}}),
            Some(Fault::Xml(400, 4, "Неверное значение свойства \"ИНН\"")),
            "failed",
            &["permanent"],
            "code 4: Неверное значение свойства \"ИНН\"",
        ),
        // JSON, code 5 from the fake's own check: Description is required.
        (
            "create",
            json!({"record": {"ИНН": "7707083893"}}),
            None,
            "failed",
            &["permanent"],
            "code 5: Отсутствует обязательное значение",
        ),
        // code 20 with 401: the user lacks rights → auth.
        (
            "list",
            json!({"inn": "7701234567"}),
            Some(Fault::Json(401, 20, "Нарушение прав доступа!")),
            "failed",
            &["auth"],
            "code 20: Нарушение прав доступа!",
        ),
        // code -1 with 500: a lock conflict → retried, then done.
        (
            "list",
            json!({"inn": "7701234567"}),
            Some(Fault::Json(
                500,
                -1,
                "Конфликт блокировок при выполнении транзакции",
            )),
            "succeeded",
            &["transient"],
            "code -1: Конфликт блокировок",
        ),
        // code 8: the catalog is not published → config, with the way to publish it.
        (
            "goods",
            json!({}),
            None,
            "failed",
            &["config"],
            "УстановитьСоставСтандартногоИнтерфейсаOData",
        ),
        // A wrong password: 401 with no body → auth.
        (
            "bad-login",
            json!({}),
            None,
            "failed",
            &["auth"],
            "user name or password",
        ),
        // top + inlinecount: 1C would ignore top → refused before sending.
        (
            "paged-count",
            json!({}),
            None,
            "rejected",
            &[],
            "inlinecount",
        ),
    ];
    for (flow, payload, fault, status, classes, text) in cases {
        let method = if flow == "create" { "POST" } else { "GET" };
        if let Some(f) = fault {
            fake.fail(method, COUNTERPARTIES, vec![f]);
        }
        let id = app.run(flow, &payload).await;
        let d = app.wait_for(id, status).await;
        let got = error_classes(&d);
        let logged: Vec<String> = d["attempt_log"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a["error"]["message"].as_str().map(str::to_owned))
            .collect();
        if status == "rejected" {
            let events = d["events"].to_string();
            assert!(events.contains(text), "{flow}: {d:#}");
            continue;
        }
        assert_eq!(got, classes, "{flow}: {d:#}");
        assert!(
            logged.iter().any(|m| m.contains(text)),
            "{flow}: {logged:?}"
        );
    }
    let refused: Vec<_> = fake.ledger().iter().map(|r| r.status).collect();
    assert!(refused.contains(&401) && refused.contains(&404) && refused.contains(&400));
    assert!(
        fake.ledger()
            .iter()
            .all(|r| r.query_value("$top") != Some("5")),
        "the top + inlinecount list was never sent"
    );

    // 1C's OData interface sends no webhooks: a POST to a webhook flow on it is refused.
    let (s, v) = app
        .send(
            app.client
                .post(format!("{}/hooks/c1-hook", app.base))
                .json(&json!({"id": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v.to_string().contains("schedule"), "{v}");
}

#[tokio::test]
async fn the_password_never_reaches_the_data_dir_or_any_answer() {
    const CANARY: &str = "CANARY-1c-pass-7f3e";
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{CANARY}"));
    let fake = Fake1C::start(CANARY).await;
    fake.publish(COUNTERPARTIES);
    // 1C repeats the Authorization header in its error text; obmen must mask it.
    fake.fail("POST", COUNTERPARTIES, vec![Fault::EchoAuth]);
    let app = App::start(&upsert_flows(&fake, CANARY)).await;
    let id = app
        .run(
            "cp",
            &json!({"name": "ООО «Канарейка»", "inn": "7710140679"}),
        )
        .await;
    let d = app.wait_for(id, "failed").await;
    assert!(last_error(&d).contains("Неверный запрос от"), "{d:#}");
    let mut seen = vec![d.to_string()];
    seen.push(app.get("/api/exchanges").await.to_string());
    seen.push(app.get("/api/flows").await.to_string());
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    seen.push(metrics);
    for text in &seen {
        assert!(
            !text.contains("CANARY-") && !text.contains(&basic),
            "a secret leaks:\n{text}"
        );
    }
    assert!(seen[0].contains("***"), "the masks are there");
    let (dir, data) = app.stop().await;
    let files = all_bytes(&data);
    assert!(
        files.iter().any(|(p, _)| p.ends_with("obmen.redb")),
        "no data file"
    );
    for (path, bytes) in &files {
        for tell in ["CANARY-".as_bytes(), basic.as_bytes()] {
            let found = bytes.windows(tell.len()).any(|w| w == tell);
            assert!(!found, "{} holds a secret", path.display());
        }
        if path.ends_with("obmen.redb") {
            assert!(
                bytes.windows(10).any(|w| w == b"7710140679"),
                "the journal is in the file: the check looked at real data"
            );
        }
    }
    drop(dir);
}

fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).expect("read file")));
        }
    }
    out
}

#[tokio::test]
async fn a_scheduled_poll_pages_through_posted_documents_with_top_and_skip() {
    let fake = Fake1C::start(PASSWORD).await;
    for i in 0..5 {
        fake.seed(
            SALES,
            json!({"Number": format!("УТ-00000{i}"), "Date": format!("2026-01-1{i}T10:00:00"), "Posted": true}),
        );
    }
    fake.seed(
        SALES,
        json!({"Number": "УТ-draft", "Date": "2026-01-12T11:00:00", "Posted": false}),
    );
    let flows = format!(
        r#"{}
[[flows]]
name = "poll-sales"
trigger = {{ schedule = {{ cron = "0 3 1 1 *" }} }}
{FAST_RETRY}
steps = [
  {{ call = "c1.{SALES}.list", as = "page", args = '''{{filter: {{Posted: true, "Date ge": "datetime'2026-01-01T00:00:00'"}}, orderby: "Date", select: ["Ref_Key", "Number", "Date"], top: 2, skip: (.trigger.cursor // "0" | tonumber)}}''' }},
  {{ name = "cursor", as = "cursor", map = '.page.next_skip // 0' }},
]

[[flows]]
name = "count-sales"
trigger = {{ manual = {{}} }}
steps = [ {{ call = "c1.{SALES}.list", args = '{{filter: "Posted eq true", inlinecount: true, select: "Number"}}' }} ]
"#,
        system("c1", &fake, PASSWORD, "")
    );
    let app = App::start(&flows).await;
    let mut pages = Vec::new();
    for _ in 0..4 {
        let id = app.run("poll-sales", &json!({})).await;
        let d = app.wait_for(id, "succeeded").await;
        let page = &d["steps"][0]["output"];
        let numbers: Vec<String> = page["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["Number"].as_str().map(str::to_owned))
            .collect();
        pages.push((numbers, page["next_skip"].clone()));
    }
    assert_eq!(
        pages[0],
        (
            vec!["УТ-000000".to_owned(), "УТ-000001".to_owned()],
            json!(2)
        )
    );
    assert_eq!(
        pages[1],
        (
            vec!["УТ-000002".to_owned(), "УТ-000003".to_owned()],
            json!(4)
        )
    );
    assert_eq!(
        pages[2],
        (vec!["УТ-000004".to_owned()], Value::Null),
        "the last page"
    );
    assert_eq!(pages[3].0[0], "УТ-000000", "then from the start again");
    let skips: Vec<Option<String>> = fake
        .ledger()
        .iter()
        .map(|r| r.query_value("$skip").map(str::to_owned))
        .collect();
    assert_eq!(
        skips,
        [Some("0"), Some("2"), Some("4"), Some("0")].map(|s| s.map(str::to_owned))
    );
    let first = &fake.ledger()[0];
    assert_eq!(
        first.query_value("$filter"),
        Some("Posted eq true and Date ge datetime'2026-01-01T00:00:00'")
    );
    assert_eq!(first.query_value("$orderby"), Some("Date"));
    assert_eq!(first.query_value("$top"), Some("2"));

    let id = app.run("count-sales", &json!({})).await;
    let d = app.wait_for(id, "succeeded").await;
    let out = &d["steps"][0]["output"];
    assert_eq!(out["odata.count"], "5", "{out:#}");
    assert_eq!(out["value"].as_array().map(Vec::len), Some(5));
}

/// The fake is no "200 to everything": it behaves like the documented interface.
#[tokio::test]
async fn the_fake_answers_like_1c() {
    let fake = Fake1C::start(PASSWORD).await;
    let key = fake.seed(COUNTERPARTIES, json!({"Description": "А", "ИНН": "7701234567", "Parent_Key": "00000000-0000-0000-0000-000000000000"}));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = |path: &str| format!("{}/{path}", fake.base);
    let r = http.get(url(COUNTERPARTIES)).send().await.expect("answer");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("www-authenticate").is_some());
    let get = |path: String| http.get(path).basic_auth(USER, Some(PASSWORD)).send();
    let r = get(url(COUNTERPARTIES)).await.expect("answer");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .contains("atom"),
        "atom without $format"
    );
    assert!(r.text().await.unwrap_or_default().starts_with("<?xml"));
    let r = get(url(&format!(
        "{COUNTERPARTIES}?$format=json&$filter=Parent_Key eq '00000000'"
    )))
    .await
    .expect("answer");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body["odata.error"]["code"], "14",
        "a reference compares with guid'…' only"
    );
    let r = get(url(&format!(
        "{COUNTERPARTIES}?$format=json&$top=0&$inlinecount=allpages"
    )))
    .await
    .expect("answer");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["odata.count"], "1");
    assert_eq!(
        body["value"].as_array().map(Vec::len),
        Some(1),
        "$inlinecount ignores $top"
    );
    let r = get(url("Catalog_Склады?$format=json"))
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["odata.error"]["code"], "8");
    let r = http
        .patch(url(&format!("{COUNTERPARTIES}(guid'{key}')?$format=json")))
        .basic_auth(USER, Some(PASSWORD))
        .header("If-Match", "stale")
        .json(&json!({"Description": "Б"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = get(fake.base.clone() + "?$format=json")
        .await
        .expect("answer");
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body["value"][0]["name"], COUNTERPARTIES,
        "the service document"
    );
}

/// The shipped example, live, against the fake portal and the fake 1C: a new company is
/// created in 1C, a known one (by ИНН) updated, one without an ИНН skipped, and the write-back
/// that Bitrix24 reports as another update ends without a loop.
#[tokio::test]
async fn the_example_upserts_bitrix24_companies_into_1c_and_writes_the_reference_back() {
    const APP_TOKEN: &str = "b24-app-token-0001";
    let fake = Fake1C::start(PASSWORD).await;
    let known = fake.seed(
        COUNTERPARTIES,
        json!({"Description": "Лютик (старое)", "ИНН": "7702000001"}),
    );
    let portal = FakePortal::start().await;
    portal.with(|p| {
        p.companies.insert("12".into(), json!({"ID": "12", "TITLE": "Ромашка", "UF_CRM_1C_REF": ""}));
        p.requisites.push(("12".into(), json!({"RQ_INN": "7701234567", "RQ_KPP": "770101001", "RQ_COMPANY_FULL_NAME": "ООО «Ромашка»"})));
        p.companies.insert("13".into(), json!({"ID": "13", "TITLE": "Лютик", "UF_CRM_1C_REF": null}));
        p.requisites.push(("13".into(), json!({"RQ_INN": "7702000001"})));
        p.companies.insert("14".into(), json!({"ID": "14", "TITLE": "Без реквизитов"}));
    });
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/1c-odata-bitrix24-companies-to-counterparties.toml");
    let example = std::fs::read_to_string(&path).expect("the example");
    let app = App::start_with(|data| {
        let mut text = example.clone();
        for (from, to) in [
            (
                "\"/var/lib/obmen\"",
                format!("{:?}", data.display().to_string()),
            ),
            ("\"secret:admin_token\"", format!("\"{ADMIN}\"")),
            (
                "\"secret:b24_webhook_url\"",
                format!("\"{}\"", portal.webhook_url),
            ),
            ("\"secret:b24_app_token\"", format!("\"{APP_TOKEN}\"")),
            ("\"secret:onec_password\"", format!("\"{PASSWORD}\"")),
            (
                "https://1c.example.kz/buh/odata/standard.odata",
                fake.base.clone(),
            ),
            ("mode = \"shadow\"", "mode = \"live\"".into()),
            (
                r#"retry = { max_attempts = 8, initial = "30s", max = "2h" }"#,
                FAST_RETRY.into(),
            ),
        ] {
            assert!(text.contains(from), "the example no longer has {from}");
            text = text.replace(from, &to);
        }
        text
    })
    .await;
    let event = |id: &str, ts: u64| {
        let body = format!(
            "event=ONCRMCOMPANYUPDATE&data%5BFIELDS%5D%5BID%5D={id}&ts={ts}&auth%5Bdomain%5D=acme.bitrix24.kz&auth%5Bapplication_token%5D={APP_TOKEN}"
        );
        app.send(
            app.client
                .post(format!("{}/hooks/b24-company-to-1c", app.base))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body),
        )
    };
    let mut ids = Vec::new();
    for (company, ts) in [
        ("12", 1_767_000_001),
        ("13", 1_767_000_002),
        ("14", 1_767_000_003),
    ] {
        let (s, v) = event(company, ts).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        ids.push(v["exchange_id"].as_u64().expect("id"));
    }
    let created = app.wait_for(ids[0], "succeeded").await;
    let updated = app.wait_for(ids[1], "succeeded").await;
    app.wait_for(ids[2], "skipped").await;
    let new_ref = created["steps"][3]["output"]["id"]
        .as_str()
        .expect("Ref_Key")
        .to_owned();
    assert_eq!(
        created["steps"][3]["output"]["action"], "created",
        "{created:#}"
    );
    assert_eq!(
        updated["steps"][3]["output"]["action"], "updated",
        "{updated:#}"
    );
    assert_eq!(updated["steps"][3]["output"]["id"], json!(known));

    let rows = fake.rows(COUNTERPARTIES);
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let new = rows
        .iter()
        .find(|r| r["Ref_Key"] == new_ref.as_str())
        .expect("created");
    assert_eq!(new["ИНН"], "7701234567");
    assert_eq!(new["КПП"], "770101001");
    assert_eq!(new["НаименованиеПолное"], "ООО «Ромашка»");
    assert_eq!(new["ЮридическоеФизическоеЛицо"], "ЮридическоеЛицо");
    assert_eq!(new["Комментарий"], "Bitrix24 company 12");
    let old = rows
        .iter()
        .find(|r| r["Ref_Key"] == known.as_str())
        .expect("known");
    assert_eq!(old["Description"], "Лютик");
    portal.with(|p| {
        assert_eq!(p.companies["12"]["UF_CRM_1C_REF"], json!(new_ref));
        assert_eq!(p.companies["13"]["UF_CRM_1C_REF"], json!(known));
    });

    // Bitrix24 reports the write-back as another update: the counterparty is updated through
    // the ID map (no search) and the flow stops before writing the same reference again.
    let before = fake.ledger().len();
    let updates = portal.with(|p| {
        p.calls
            .iter()
            .filter(|(m, _)| m == "crm.company.update")
            .count()
    });
    let (_, v) = event("12", 1_767_000_004).await;
    let again = v["exchange_id"].as_u64().expect("id");
    app.wait_for(again, "skipped").await;
    let tail: Vec<_> = fake.ledger().into_iter().skip(before).collect();
    assert_eq!(
        tail.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(),
        ["PATCH"]
    );
    assert_eq!(tail[0].path, format!("/{COUNTERPARTIES}(guid'{new_ref}')"));
    assert_eq!(
        portal.with(|p| p
            .calls
            .iter()
            .filter(|(m, _)| m == "crm.company.update")
            .count()),
        updates,
        "no second write-back"
    );
}
