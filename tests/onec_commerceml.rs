//! The CommerceML exchange endpoint against a test that plays 1C over real HTTP: the
//! official sample files (2.0x and the 3.1 module's) uploaded in parts, imported until
//! `success`, one exchange per item delivered to a fake target; re-uploads are duplicates;
//! refused logins, broken files and unsafe names; orders for 1C through `mode=query`;
//! `zip=yes` uploads (the samples zipped, and hostile archives); `mode=deactivate` after a
//! full catalog.

#[path = "onec_commerceml/client.rs"]
mod client;
#[path = "onec_commerceml/sink.rs"]
mod sink;
#[path = "support/app.rs"]
mod support;

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::{Value, json};

use client::{OneC, samples, xmllint_valid};
use sink::Sink;
use support::{ADMIN, App};

const USER: &str = "site";
/// Also a canary: it must never show in the journal.
const PASSWORD: &str = "canary-1c-password-7731";

fn sample(rel: &str) -> Vec<u8> {
    std::fs::read(samples().join(rel)).unwrap_or_else(|e| panic!("sample {rel}: {e}"))
}

/// How many `<tag>` items a sample holds, counted in its text.
fn count(bytes: &[u8], tag: &str) -> usize {
    String::from_utf8_lossy(bytes)
        .matches(&format!("<{tag}>"))
        .count()
}

/// The systems and flows under test: every item to the sink; a tight upload limit; orders.
fn flows(sink: &Sink) -> String {
    format!(
        r#"
[systems.sink]
kind = "http"
base_url = "{base}"
auth = {{ bearer = "{token}" }}
rate_limit = "1000/s"
ops = {{ put = {{ method = "POST", path = "/items" }} }}

[[flows]]
name = "catalog"
trigger = {{ commerceml = {{ user = "{USER}", password = "{PASSWORD}", type = "catalog", file_limit = 16384, import_batch = 25 }} }}
steps = [ {{ call = "sink.put", args = '.trigger | {{id, kind, deleted, file, key: .exchange_key}}' }} ]

[[flows]]
name = "tight"
trigger = {{ commerceml = {{ user = "{USER}", password = "{PASSWORD}", type = "catalog", file_limit = 1024, upload_limit = 4096 }} }}
steps = [ {{ call = "sink.put", args = '.trigger | {{id, kind}}' }} ]

[[flows]]
name = "zipped"
trigger = {{ commerceml = {{ user = "{USER}", password = "{PASSWORD}", type = "catalog", file_limit = 16384, upload_limit = 4194304, import_batch = 25, zip = true }} }}
steps = [ {{ call = "sink.put", args = '.trigger | {{id, kind, deleted, file, key: .exchange_key}}' }} ]

[[flows]]
name = "orders"
trigger = {{ commerceml = {{ user = "{USER}", password = "{PASSWORD}", type = "sale" }} }}
steps = [ {{ call = "sink.put", args = '.trigger | {{id, kind, deleted, number_1c}}' }} ]

[[flows]]
name = "deal-to-1c"
trigger = {{ manual = {{}} }}
steps = [ {{ to_1c = "orders", args = '.trigger' }} ]
"#,
        base = sink.base,
        token = sink::TOKEN,
    )
}

async fn start(sink: &Sink) -> App {
    App::start(&flows(sink)).await
}

impl App {
    fn onec(&self, flow: &str, kind: &'static str) -> OneC {
        OneC::new(&self.base, flow, kind)
    }
}

fn by_status(all: &[Value], status: &str) -> usize {
    all.iter().filter(|e| e["status"] == status).count()
}

/// checkauth, init, every file in parts, import each until `success`.
async fn catalog_run(app: &App, files: &[(&str, &[u8])]) -> usize {
    let mut onec = app.onec("catalog", "catalog");
    let a = onec.checkauth(USER, Some(PASSWORD)).await;
    assert_eq!(a.status, "success", "{a:?}");
    assert!(a.content_type.contains("windows-1251"), "{a:?}");
    assert!(a.lines.iter().any(|l| l.starts_with("sessid=")));
    let limit = onec.init(None).await.0;
    assert_eq!(limit, 16384);
    let mut progress = 0;
    for (name, bytes) in files {
        let parts = onec.upload(name, bytes, limit).await;
        assert_eq!(parts, bytes.len().div_ceil(limit));
    }
    for (name, _) in files {
        let (a, p) = onec.import(name).await;
        assert_eq!(a.status, "success", "import {name}: {a:?}");
        progress += p;
    }
    progress
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_catalog_exchange_makes_one_exchange_per_item_and_a_rerun_only_duplicates() {
    let sink = Sink::start().await;
    let app = start(&sink).await;
    let names = [
        "official-samples-2.0x/import.xml",
        "official-samples-2.0x/offers.xml",
        "bitrix-module-3.1/import.xml",
        "bitrix-module-3.1/offers.xml",
        "bitrix-module-3.1/prices.xml",
        "bitrix-module-3.1/rests.xml",
    ];
    let data: Vec<Vec<u8>> = names.iter().map(|n| sample(n)).collect();
    // 1C names its files without folders; the two schema versions go in two runs.
    let as_sent = |range: std::ops::Range<usize>| -> Vec<(&str, &[u8])> {
        range
            .map(|i| {
                (
                    names[i].rsplit('/').next().unwrap_or(names[i]),
                    data[i].as_slice(),
                )
            })
            .collect()
    };
    let expected: usize = data
        .iter()
        .map(|d| count(d, "Товар") + count(d, "Предложение"))
        .sum();
    assert_eq!(expected, 4 + 2 + 21 + 86 * 3);

    let mut progress = catalog_run(&app, &as_sent(0..2)).await;
    progress += catalog_run(&app, &as_sent(2..6)).await;
    assert!(
        progress >= 8,
        "import answered progress while work remained ({progress})"
    );
    let all = app.settle("catalog", 0).await;
    assert_eq!(all.len(), expected, "one exchange per item");
    assert_eq!(by_status(&all, "succeeded"), expected);
    let delivered = sink.bodies();
    assert_eq!(
        delivered.len(),
        expected,
        "each item reached the target once"
    );

    // Keys: the item's Ид, the file's role and the version (or a content hash).
    let table = delivered
        .iter()
        .find(|b| b["file"] == "import.xml" && b["id"] == "afc7eb78-8172-11e7-948c-00155d020201")
        .expect("the first 3.1 product");
    assert_eq!(table["kind"], "product");
    assert_eq!(
        table["key"],
        "import:afc7eb78-8172-11e7-948c-00155d020201:AAABVwAAAAA=49842"
    );
    let ext: Vec<&str> = all
        .iter()
        .filter_map(|e| e["external_id"].as_str())
        .collect();
    assert!(
        ext.contains(&"05e26d70-01e4-11dc-a411-00055d80a2d1#05e26d76-01e4-11dc-a411-00055d80a2d1")
    );
    // ПометкаУдаления=true in the 3.1 offers is `deleted`, not dropped.
    let deleted = delivered.iter().filter(|b| b["deleted"] == true).count();
    let marked = String::from_utf8_lossy(&data[3])
        .matches("<ПометкаУдаления>true</ПометкаУдаления>")
        .count();
    assert_eq!(deleted, marked);
    assert_eq!(deleted, 6);
    let same_offer: Vec<&Value> = delivered
        .iter()
        .filter(|b| {
            b["id"] == "235ccc6d-ab81-11e4-944a-00155d020201#a5abd77f-93f6-11e5-9468-00155d020201"
        })
        .collect();
    assert_eq!(
        same_offer.len(),
        3,
        "offers, prices and rests of one offer are three exchanges"
    );

    // The same upload again: new exchanges, every one a duplicate; nothing new is sent.
    catalog_run(&app, &as_sent(0..2)).await;
    catalog_run(&app, &as_sent(2..6)).await;
    let all = app.settle("catalog", 0).await;
    assert_eq!(all.len(), expected * 2);
    assert_eq!(by_status(&all, "duplicate"), expected);
    assert_eq!(
        sink.bodies().len(),
        expected,
        "the target received nothing new"
    );

    // Work files are gone once imported.
    let left = walk(&app.dir.path().join("data/1c/catalog"));
    assert!(left.is_empty(), "work files left: {left:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() { walk(&p) } else { vec![p] }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_checked_refusals_journaled_and_the_cookie_required() {
    let sink = Sink::start().await;
    let app = start(&sink).await;
    let mut onec = app.onec("catalog", "catalog");
    let a = onec.checkauth(USER, None).await;
    assert_eq!(a.status, "failure", "{a:?}");
    let a = onec.checkauth(USER, Some("wrong-password-0001")).await;
    assert_eq!(a.status, "failure");
    assert_eq!(a.lines[0], "wrong user or password");
    let a = onec.get("mode=init").await;
    assert_eq!(a.status, "failure", "no cookie: {a:?}");
    onec.cookie = Some("forged-cookie".into());
    let a = onec.get("mode=init").await;
    assert_eq!(a.status, "failure", "unknown cookie: {a:?}");
    let a = onec
        .file_part("import.xml", sample("official-samples-2.0x/import.xml"))
        .await;
    assert_eq!(a.status, "failure");

    let all = app.exchanges("catalog").await;
    assert_eq!(
        all.len(),
        2,
        "the two refused logins, nothing else: {all:#?}"
    );
    assert_eq!(by_status(&all, "rejected"), 2);
    for e in &all {
        let d = app.get(&format!("/api/exchanges/{}", e["id"])).await;
        let text = d.to_string();
        assert!(text.contains("1c exchange (refused)"), "{text}");
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
        assert!(
            !text.contains("wrong-password-0001"),
            "a tried password was kept: {text}"
        );
    }
    // The right login works, and the other flow's type is refused.
    let mut ok = app.onec("catalog", "catalog");
    assert_eq!(ok.checkauth(USER, Some(PASSWORD)).await.status, "success");
    let mut wrong_type = app.onec("catalog", "sale");
    assert_eq!(
        wrong_type.checkauth(USER, Some(PASSWORD)).await.status,
        "failure"
    );
    assert!(sink.bodies().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_files_fail_loudly_and_unsafe_names_and_big_parts_are_refused() {
    let sink = Sink::start().await;
    let app = start(&sink).await;
    let mut onec = app.onec("catalog", "catalog");
    assert_eq!(onec.checkauth(USER, Some(PASSWORD)).await.status, "success");
    let limit = onec.init(None).await.0;

    // A file cut short after its second product: those two are accepted, then failure.
    let full = sample("official-samples-2.0x/import.xml");
    let text = String::from_utf8_lossy(&full);
    let third = text
        .match_indices("<Товар>")
        .nth(2)
        .expect("a third product")
        .0;
    onec.upload("import.xml", &full[..third + 40], limit).await;
    let (a, _) = onec.import("import.xml").await;
    assert_eq!(a.status, "failure", "{a:?}");
    assert!(a.message().contains("truncated"), "{a:?}");
    // Asked again, the same failure: nothing half-accepted silently.
    let (again, _) = onec.import("import.xml").await;
    assert_eq!(again.status, "failure");

    onec.upload(
        "offers.xml",
        b"<html><body>not CommerceML</body></html>",
        limit,
    )
    .await;
    let (a, _) = onec.import("offers.xml").await;
    assert_eq!(a.status, "failure");
    assert!(a.message().contains("not a CommerceML"), "{a:?}");

    let all = app.settle("catalog", 0).await;
    let sources: Vec<String> = futures_details(&app, &all).await;
    assert_eq!(
        by_status(&all, "succeeded"),
        2,
        "the two items before the cut"
    );
    assert_eq!(
        by_status(&all, "rejected"),
        2,
        "one journaled error per broken file"
    );
    assert_eq!(
        sources
            .iter()
            .filter(|s| *s == "1c exchange (unreadable file)")
            .count(),
        2
    );

    // Unsafe names never reach the disk; a part over file_limit is refused whole.
    for bad in [
        "../../evil.xml",
        "/etc/obmen.xml",
        "import_files/../../x.jpg",
        "a\\b.xml",
    ] {
        let a = onec.file_part(bad, b"<x/>".to_vec()).await;
        assert_eq!(a.status, "failure", "{bad}: {a:?}");
        assert!(a.message().contains("refused"), "{a:?}");
    }
    assert!(!app.dir.path().join("evil.xml").exists());
    assert!(!app.dir.path().join("data/evil.xml").exists());
    let a = onec
        .file_part("import_files/ab/pic.jpg", vec![7u8; 100])
        .await;
    assert_eq!(a.status, "success", "a nested relative name is fine: {a:?}");
    let a = onec.file_part("big.xml", vec![b' '; limit + 1]).await;
    assert_eq!(a.status, "failure");
    assert!(a.message().contains("file_limit"), "{a:?}");
    let a = onec.import("big.xml").await.0;
    assert_eq!(a.status, "failure", "the refused part left no file: {a:?}");
}

/// The journal source of each exchange.
async fn futures_details(app: &App, all: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for e in all {
        let d = app.get(&format!("/api/exchanges/{}", e["id"])).await;
        let source = d["events"][0]["source"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        out.push(source);
    }
    out
}

fn order() -> Value {
    json!({
        "id": "B24-1287",
        "number": "1287",
        "date": "2026-01-15",
        "time": "10:30:00",
        "currency": "KZT",
        "sum": "15000.00",
        "comment": "Сделка Bitrix24 №1287 «Чайники»",
        "counterparties": [{"id": "b24-contact-77", "name": "Иванов Иван", "first_name": "Иван",
            "last_name": "Иванов", "contacts": [{"type": "Почта", "value": "ivan@example.kz"}]}],
        "lines": [{"id": "afc7eb78-8172-11e7-948c-00155d020201", "name": "Чайник электрический",
            "unit_price": "7500.00", "quantity": "2", "sum": "15000.00"}],
        "status": "Принят",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_wait_for_1c_until_it_confirms_and_its_own_orders_flow_in() {
    let sink = Sink::start().await;
    let app = start(&sink).await;
    let r = app
        .client
        .post(format!("{}/api/flows/deal-to-1c/run", app.base))
        .bearer_auth(ADMIN)
        .json(&order())
        .send()
        .await
        .expect("run");
    assert_eq!(r.status(), StatusCode::OK);
    let deal_exchange = r.json::<Value>().await.expect("json")["exchange_id"].clone();
    let settled = app.settle("deal-to-1c", 0).await;
    assert_eq!(settled[0]["status"], "succeeded", "{settled:#?}");

    let mut onec = app.onec("orders", "sale");
    assert_eq!(onec.checkauth(USER, Some(PASSWORD)).await.status, "success");
    onec.init(None).await;
    let first = onec.get("mode=query").await;
    assert_eq!(first.http, StatusCode::OK);
    assert_eq!(first.content_type, "application/xml; charset=windows-1251");
    let (doc, _, bad) = encoding_rs::WINDOWS_1251.decode(&first.raw);
    assert!(!bad);
    assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"windows-1251\"?>"));
    assert!(doc.contains("<Ид>B24-1287</Ид>"), "{doc}");
    assert!(doc.contains("Сделка Bitrix24 №1287 «Чайники»"), "{doc}");
    xmllint_valid(app.dir.path(), &first.raw);

    // No success yet: the same order again (at-least-once to 1C).
    let again = onec.get("mode=query").await;
    let again_text = encoding_rs::WINDOWS_1251.decode(&again.raw).0.into_owned();
    assert!(again_text.contains("<Ид>B24-1287</Ид>"), "{again_text}");
    let ok = onec.get("mode=success").await;
    assert_eq!(ok.status, "success", "{ok:?}");
    assert_eq!(ok.lines[0], "1 orders confirmed");
    let after = onec.get("mode=query").await;
    let after_text = encoding_rs::WINDOWS_1251.decode(&after.raw).0.into_owned();
    assert!(!after_text.contains("<Документ>"), "{after_text}");
    xmllint_valid(app.dir.path(), &after.raw);
    let detail = app.get(&format!("/api/exchanges/{deal_exchange}")).await;
    let delivered = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| {
            e["type"] == "delivered"
                && e["to"] == "1C"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("order B24-1287"))
        });
    assert!(delivered, "{detail:#}");

    // 1C uploads its orders (2.0x and the 3.1 module's documents): one exchange each.
    let limit = onec.init(None).await.0;
    let official = sample("official-samples-2.0x/orders.xml");
    let module = sample("bitrix-module-3.1/documents-1.xml");
    onec.upload("orders.xml", &official, limit).await;
    onec.upload("documents-1.xml", &module, limit).await;
    assert_eq!(onec.import("orders.xml").await.0.status, "success");
    assert_eq!(onec.import("documents-1.xml").await.0.status, "success");
    let all = app.settle("orders", 0).await;
    let expected = count(&official, "Документ") + count(&module, "Документ");
    assert_eq!(all.len(), expected);
    assert_eq!(by_status(&all, "succeeded"), expected);
    let bodies = sink.bodies();
    let mm92 = bodies.iter().find(|b| b["id"] == "92").expect("order 92");
    assert_eq!(mm92["number_1c"], "MM92");
    assert_eq!(mm92["kind"], "order");
    assert!(bodies.iter().all(|b| b["deleted"] == false));
}

fn catalog_doc(items: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<КоммерческаяИнформация ВерсияСхемы=\"2.07\"><Каталог><Ид>c</Ид><Товары>{items}</Товары></Каталог></КоммерческаяИнформация>\n"
    )
    .into_bytes()
}

/// Hostile files: a deep item is a journaled file error (the process used to abort on a
/// stack overflow), a re-uploaded name is read again, and the session's uploads are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_items_reuploads_and_the_session_upload_limit() {
    let sink = Sink::start().await;
    let app = start(&sink).await;
    let mut onec = app.onec("catalog", "catalog");
    assert_eq!(onec.checkauth(USER, Some(PASSWORD)).await.status, "success");
    let limit = onec.init(None).await.0;

    let deep = 20_000;
    let item = format!(
        "<Товар><Ид>deep</Ид>{}{}</Товар>",
        "<a>".repeat(deep),
        "</a>".repeat(deep)
    );
    onec.upload("deep.xml", &catalog_doc(&item), limit).await;
    let (a, _) = onec.import("deep.xml").await;
    assert_eq!(a.status, "failure", "{a:?}");
    assert!(a.message().contains("nests deeper"), "{a:?}");
    let all = app.settle("catalog", 0).await;
    assert_eq!(by_status(&all, "rejected"), 1, "journaled: {all:#?}");

    // The same name again in the same session: its new content is read, not the saved
    // outcome of the first upload.
    let one = catalog_doc("<Товар><Ид>p1</Ид><Наименование>Один</Наименование></Товар>");
    onec.upload("import.xml", &one, limit).await;
    let (a, _) = onec.import("import.xml").await;
    assert_eq!(a.status, "success", "{a:?}");
    let two = catalog_doc(
        "<Товар><Ид>p2</Ид><Наименование>Два</Наименование></Товар><Товар><Ид>p3</Ид><Наименование>Три</Наименование></Товар>",
    );
    onec.upload("import.xml", &two, limit).await;
    let (a, _) = onec.import("import.xml").await;
    assert_eq!(a.status, "success", "{a:?}");
    assert!(a.message().contains("2 items"), "{a:?}");
    // A broken file fixed and sent again under its name is read again too.
    onec.upload("deep.xml", &one, limit).await;
    let (a, _) = onec.import("deep.xml").await;
    assert_eq!(a.status, "success", "{a:?}");
    app.settle("catalog", 0).await;
    let ids: Vec<String> = sink
        .bodies()
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_owned))
        .collect();
    for id in ["p1", "p2", "p3"] {
        assert!(ids.iter().any(|i| i == id), "{id} in {ids:?}");
    }

    // upload_limit bounds what one session holds, whatever the part size.
    let mut tight = app.onec("tight", "catalog");
    assert_eq!(
        tight.checkauth(USER, Some(PASSWORD)).await.status,
        "success"
    );
    let limit = tight.init(None).await.0;
    assert_eq!(limit, 1024);
    for i in 0..4 {
        let a = tight.file_part("big.xml", vec![b' '; limit]).await;
        assert_eq!(a.status, "success", "part {i}: {a:?}");
    }
    let a = tight.file_part("other.xml", vec![b' '; 1]).await;
    assert_eq!(a.status, "failure", "{a:?}");
    assert!(a.message().contains("upload_limit=4096"), "{a:?}");
    // init starts the session over, and with it the count.
    tight.init(None).await;
    assert_eq!(
        tight.file_part("big.xml", vec![b' '; limit]).await.status,
        "success"
    );
}

/// A zip archive of `files` (deflated), as 1C's module makes one.
fn zipped(files: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in files {
        w.start_file(*name, opts).expect("entry");
        w.write_all(bytes).expect("write");
    }
    w.finish().expect("finish").into_inner()
}

/// checkauth, init (`zip=yes`), the archive in parts, then import each name until success;
/// returns how many `progress` answers came (the unpacking among them).
async fn zipped_run(app: &App, archive: &[u8], names: &[&str]) -> usize {
    let mut onec = app.onec("zipped", "catalog");
    assert_eq!(onec.checkauth(USER, Some(PASSWORD)).await.status, "success");
    let limit = onec.init_as(None, "zip=yes").await.0;
    onec.upload("catalog.zip", archive, limit).await;
    let mut progress = 0;
    for name in names {
        let (a, p) = onec.import(name).await;
        assert_eq!(a.status, "success", "import {name}: {a:?}");
        progress += p;
    }
    progress
}

fn sorted(mut v: Vec<Value>) -> Vec<String> {
    let mut out: Vec<String> = v.drain(..).map(|b| b.to_string()).collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipped_samples_make_the_same_exchanges_as_plain_files() {
    let sink = Sink::start().await;
    let app = start(&sink).await;
    let old = ["import.xml", "offers.xml"].map(|n| sample(&format!("official-samples-2.0x/{n}")));
    let new = ["import.xml", "offers.xml", "prices.xml", "rests.xml"]
        .map(|n| sample(&format!("bitrix-module-3.1/{n}")));
    let old_files = [("import.xml", &old[0][..]), ("offers.xml", &old[1][..])];
    let new_files = [
        ("import.xml", &new[0][..]),
        ("offers.xml", &new[1][..]),
        ("prices.xml", &new[2][..]),
        ("rests.xml", &new[3][..]),
    ];
    // The same files, plain on the `catalog` flow (same steps) …
    catalog_run(&app, &old_files).await;
    catalog_run(&app, &new_files).await;
    let plain = app.settle("catalog", 0).await;
    let plain_bodies = sink.bodies();
    assert_eq!(plain.len(), 4 + 2 + 21 + 86 * 3);

    // … and zipped with a picture, as 1C sends them with zip=yes.
    let picture = vec![0xFFu8; 3000];
    let mut with_picture: Vec<(&str, &[u8])> = old_files.to_vec();
    with_picture.push(("import_files/05/05e26d70.jpg", &picture));
    let progress = zipped_run(&app, &zipped(&with_picture), &["import.xml", "offers.xml"]).await;
    assert!(progress >= 1, "the unpacking answered progress first");
    zipped_run(
        &app,
        &zipped(&new_files),
        &["import.xml", "offers.xml", "prices.xml", "rests.xml"],
    )
    .await;
    let zip_all = app.settle("zipped", 0).await;
    assert_eq!(zip_all.len(), plain.len(), "one exchange per item");
    assert_eq!(by_status(&zip_all, "succeeded"), plain.len());
    let zip_bodies: Vec<Value> = sink.bodies()[plain_bodies.len()..].to_vec();
    assert_eq!(
        sorted(zip_bodies),
        sorted(plain_bodies.clone()),
        "the same items, keys and fields as the plain upload"
    );

    // The same archives again: every exchange a duplicate, the target hears nothing.
    zipped_run(&app, &zipped(&with_picture), &["import.xml", "offers.xml"]).await;
    zipped_run(
        &app,
        &zipped(&new_files),
        &["import.xml", "offers.xml", "prices.xml", "rests.xml"],
    )
    .await;
    let again = app.settle("zipped", 0).await;
    assert_eq!(again.len(), plain.len() * 2);
    assert_eq!(by_status(&again, "duplicate"), plain.len());
    assert_eq!(sink.bodies().len(), plain_bodies.len() * 2);
    // Archives are removed once unpacked, the XML once imported; the picture was never
    // written.
    let left = walk(&app.dir.path().join("data/1c/zipped"));
    assert!(left.is_empty(), "work files left: {left:?}");
}

/// The central directory's flags of every entry get the "encrypted" bit, as a
/// password-protected archive has them.
fn mark_encrypted(mut bytes: Vec<u8>) -> Vec<u8> {
    let mut i = 0;
    while i + 10 < bytes.len() {
        if bytes[i..i + 4] == *b"PK\x01\x02" {
            bytes[i + 8] |= 1;
        }
        if bytes[i..i + 4] == *b"PK\x03\x04" {
            bytes[i + 6] |= 1;
        }
        i += 1;
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archives_are_refused_and_nothing_of_them_is_imported() {
    let sink = Sink::start().await;
    let app = start(&sink).await;
    let import = sample("official-samples-2.0x/import.xml");
    let bomb = zipped(&[
        ("import.xml", &import[..]),
        ("offers.xml", &vec![b' '; 8 << 20][..]),
    ]);
    let slip = zipped(&[("import.xml", &import[..]), ("../../evil.xml", b"<x/>")]);
    let absolute = zipped(&[("import.xml", &import[..]), ("/tmp/evil.xml", b"<x/>")]);
    let mut corrupt = zipped(&[("import.xml", &import[..])]);
    let middle = corrupt.len() / 2;
    for b in &mut corrupt[middle..middle + 16] {
        *b ^= 0x5A;
    }
    let truncated = zipped(&[("import.xml", &import[..])])[..200].to_vec();
    let encrypted = mark_encrypted(zipped(&[("import.xml", &import[..])]));
    // An archive inside, named like XML: it must not be unpacked in its turn.
    let inner = zipped(&[("offers.xml", &vec![b' '; 1 << 20][..])]);
    let nested = zipped(&[("import.xml", &import[..]), ("inner.xml", &inner[..])]);
    let cases: [(&str, Vec<u8>, &str); 7] = [
        ("bomb", bomb, "zip bomb"),
        ("zip-slip", slip, "`.` and `..` are not allowed"),
        ("absolute", absolute, "it must be relative"),
        ("corrupt", corrupt, "import.xml is corrupt"),
        ("truncated", truncated, "not a readable zip"),
        ("encrypted", encrypted, "encrypted"),
        ("nested", nested, "inner.xml is itself a zip archive"),
    ];
    for (what, archive, why) in &cases {
        let mut onec = app.onec("zipped", "catalog");
        assert_eq!(onec.checkauth(USER, Some(PASSWORD)).await.status, "success");
        let limit = onec.init_as(None, "zip=yes").await.0;
        onec.upload("catalog.zip", archive, limit).await;
        let (a, _) = onec.import("import.xml").await;
        assert_eq!(a.status, "failure", "{what}: {a:?}");
        assert!(a.message().contains(why), "{what}: {a:?}");
        // Asked again, or for another file of the session: the same refusal.
        let (again, _) = onec.import("import.xml").await;
        assert_eq!(again.status, "failure", "{what}: {again:?}");
        let (other, _) = onec.import("offers.xml").await;
        assert_eq!(other.status, "failure", "{what}: {other:?}");
        let left = walk(&app.dir.path().join("data/1c/zipped"));
        assert!(
            left.iter().all(|p| p.ends_with("catalog.zip")),
            "{what}: nothing unpacked stays: {left:?}"
        );
    }
    let all = app.settle("zipped", 0).await;
    assert_eq!(
        by_status(&all, "rejected"),
        cases.len(),
        "one journaled refusal per archive, no item: {all:#?}"
    );
    assert_eq!(all.len(), cases.len());
    assert!(sink.bodies().is_empty());
    assert!(!app.dir.path().join("evil.xml").exists());
    assert!(!app.dir.path().join("data/evil.xml").exists());
    assert!(!app.dir.path().join("data/1c/evil.xml").exists());
    assert!(!Path::new("/tmp/evil.xml").exists());
}

/// `timestamp=` of a checkauth answer.
fn timestamp(a: &client::Answer) -> String {
    a.lines
        .iter()
        .find_map(|l| l.strip_prefix("timestamp="))
        .expect("timestamp line")
        .to_owned()
}

/// One catalog run of `import.xml` with deactivate; the deactivate answer.
async fn full_run(app: &App, import: &[u8]) -> client::Answer {
    let mut onec = app.onec("catalog", "catalog");
    let a = onec.checkauth(USER, Some(PASSWORD)).await;
    let t = timestamp(&a);
    let limit = onec.init(None).await.0;
    onec.upload("import.xml", import, limit).await;
    let (a, _) = onec.import("import.xml").await;
    assert_eq!(a.status, "success", "{a:?}");
    let d = onec.get(&format!("mode=deactivate&timestamp={t}")).await;
    assert_eq!(d.status, "success", "{d:?}");
    // 1C may call it again: nothing new.
    let again = onec.get(&format!("mode=deactivate&timestamp={t}")).await;
    assert_eq!(again.status, "success", "{again:?}");
    assert_eq!(onec.get("mode=complete").await.status, "success");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivate_names_the_products_a_full_catalog_lost_once() {
    let sink = Sink::start().await;
    let app = start(&sink).await;
    let full = sample("official-samples-2.0x/import.xml");
    let text = String::from_utf8(full.clone()).expect("utf-8");
    assert!(text.contains("СодержитТолькоИзменения=\"false\""));
    let first = text.find("<Товар>").expect("a product");
    let end = text[first..].find("</Товар>").expect("its end") + first + "</Товар>".len();
    let removed_id = text[first..end]
        .split("<Ид>")
        .nth(1)
        .and_then(|t| t.split("</Ид>").next())
        .expect("its Ид")
        .to_owned();
    let fewer = format!("{}{}", &text[..first], &text[end..]);

    // The first full catalog is only remembered.
    let d = full_run(&app, &full).await;
    assert!(d.message().starts_with("0 products"), "{d:?}");
    let all = app.settle("catalog", 0).await;
    assert_eq!(all.len(), 4);

    // The next one lacks a product: exactly one `deleted` exchange for it.
    let d = full_run(&app, fewer.as_bytes()).await;
    assert!(d.message().starts_with("1 products"), "{d:?}");
    let all = app.settle("catalog", 0).await;
    assert_eq!(all.len(), 4 + 3 + 1, "{all:#?}");
    assert_eq!(by_status(&all, "duplicate"), 3);
    let gone: Vec<Value> = sink
        .bodies()
        .into_iter()
        .filter(|b| b["deleted"] == true)
        .collect();
    assert_eq!(gone.len(), 1, "{gone:#?}");
    assert_eq!(gone[0]["id"], removed_id.as_str());
    assert_eq!(
        gone[0]["key"],
        format!("deactivate:{removed_id}:2008-01-09T18:13:34")
    );
    // The newest exchange of that product is the deactivation, with its reason.
    let newest = all
        .iter()
        .filter(|e| e["external_id"] == removed_id.as_str())
        .filter_map(|e| e["id"].as_u64())
        .max()
        .expect("exchanges of the removed product");
    let detail = app.get(&format!("/api/exchanges/{newest}")).await;
    assert!(
        detail
            .to_string()
            .contains("absent from the full catalog of 2008-01-09T18:13:34"),
        "{detail:#}"
    );

    // The same catalog again, in a new session: nothing new is deactivated.
    let d = full_run(&app, fewer.as_bytes()).await;
    assert!(d.message().starts_with("0 products"), "{d:?}");
    // A change-only upload that names one product deactivates nothing.
    let changes = fewer.replace(
        "СодержитТолькоИзменения=\"false\"",
        "СодержитТолькоИзменения=\"true\"",
    );
    let second = changes.find("<Товар>").expect("a product");
    let cut = changes[second..].find("</Товар>").expect("end") + second + "</Товар>".len();
    let one = format!(
        "{}{}",
        &changes[..cut],
        &changes[changes.rfind("</Товары>").expect("list end")..]
    );
    let d = full_run(&app, one.as_bytes()).await;
    assert!(d.message().contains("only changes"), "{d:?}");
    let all = app.settle("catalog", 0).await;
    assert_eq!(all.len(), 8 + 3 + 1, "only duplicates since: {all:#?}");
    assert_eq!(
        sink.bodies()
            .iter()
            .filter(|b| b["deleted"] == true)
            .count(),
        1
    );

    // Without a timestamp (or 0): failure.
    let mut onec = app.onec("catalog", "catalog");
    assert_eq!(onec.checkauth(USER, Some(PASSWORD)).await.status, "success");
    onec.init(None).await;
    for q in [
        "mode=deactivate",
        "mode=deactivate&timestamp=",
        "mode=deactivate&timestamp=0",
    ] {
        let a = onec.get(q).await;
        assert_eq!(a.status, "failure", "{q}: {a:?}");
        assert!(a.message().contains("timestamp"), "{a:?}");
    }
    // A full catalog cut short is not a catalog: nothing is deactivated.
    let t = timestamp(&onec.checkauth(USER, Some(PASSWORD)).await);
    let limit = onec.init(None).await.0;
    onec.upload("import.xml", &full[..full.len() / 2], limit)
        .await;
    assert_eq!(onec.import("import.xml").await.0.status, "failure");
    let a = onec.get(&format!("mode=deactivate&timestamp={t}")).await;
    assert_eq!(a.status, "failure", "{a:?}");
    assert!(a.message().contains("not imported completely"), "{a:?}");
    // Nor is one with a file 1C uploaded and never asked to import.
    let t = timestamp(&onec.checkauth(USER, Some(PASSWORD)).await);
    let limit = onec.init(None).await.0;
    onec.upload("import.xml", &full, limit).await;
    onec.upload(
        "offers.xml",
        &sample("official-samples-2.0x/offers.xml"),
        limit,
    )
    .await;
    assert_eq!(onec.import("import.xml").await.0.status, "success");
    let a = onec.get(&format!("mode=deactivate&timestamp={t}")).await;
    assert_eq!(a.status, "failure", "{a:?}");
    assert!(
        a.message()
            .contains("offers.xml was uploaded but not imported"),
        "{a:?}"
    );
    app.settle("catalog", 0).await;
    assert_eq!(
        sink.bodies()
            .iter()
            .filter(|b| b["deleted"] == true)
            .count(),
        1
    );
}

/// A product 1C marks deleted (in a full catalog or a change-only one) has its `deleted`
/// exchange from the item itself: a later full catalog without it deactivates nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_marked_deleted_is_not_deactivated_again() {
    let sink = Sink::start().await;
    let app = start(&sink).await;
    let text = String::from_utf8(sample("official-samples-2.0x/import.xml")).expect("utf-8");
    let first = text.find("<Товар>").expect("a product");
    let end = text[first..].find("</Товар>").expect("its end") + first + "</Товар>".len();
    let id_end = text[first..].find("</Ид>").expect("its Ид") + first + "</Ид>".len();
    let marked = format!(
        "{}<ПометкаУдаления>true</ПометкаУдаления>{}",
        &text[..id_end],
        &text[id_end..]
    );
    let without = format!("{}{}", &text[..first], &text[end..]);
    let deleted = |sink: &Sink| {
        sink.bodies()
            .into_iter()
            .filter(|b| b["deleted"] == true)
            .count()
    };
    full_run(&app, text.as_bytes()).await;
    // Marked deleted in a full catalog: its own deleted exchange, no deactivation.
    let d = full_run(&app, marked.as_bytes()).await;
    assert!(d.message().starts_with("0 products"), "{d:?}");
    app.settle("catalog", 0).await;
    assert_eq!(deleted(&sink), 1);
    // Gone from the next full catalog: already deleted, nothing more.
    let d = full_run(&app, without.as_bytes()).await;
    assert!(d.message().starts_with("0 products"), "{d:?}");
    app.settle("catalog", 0).await;
    assert_eq!(deleted(&sink), 1, "{:#?}", sink.bodies());
}
