//! Personal data named by a flow's `mask` paths reaches the target raw but every API answer
//! only as partial masks: in the received payload, the external id and key, step outputs,
//! the requests sent, the target's answer that echoes it back, error messages and dry runs.

use std::path::Path;

use axum::http::Method;
use serde_json::{Value, json};

use crate::support::fake::{Fake, Fault};
use crate::support::{
    CRM_TOKEN, HOOK_TOKEN, TestApp, VIEWER, all_bytes, crm_system, error_classes, id_of, pretty,
    shop_system,
};

const PHONE: &str = "+7 701 555 00 67";
const PHONE_PLUS: &str = "+77015550067";
const PHONE_DIGITS: &str = "77015550067";
const IIN: &str = "900101350012";
/// What may not appear anywhere: the raw values and any reformatting of the phone (the
/// `+digits` form contains the digits-only one).
const RAW: &[&str] = &[PHONE, PHONE_DIGITS, IIN, "555 00"];

const PHONE_MASK: &str = "+7 701 *** ** 67";
const PHONE_PLUS_MASK: &str = "+7701*****67";
const DIGITS_MASK: &str = "7701*****67";
const IIN_MASK: &str = "9001******12";

const FLOW: &str = r#"
[[flows]]
name = "personal"
trigger = { webhook = { system = "shop" } }
external_id = '.client.phone | split(" ") | join("") | ltrimstr("+")'
key = '"client:" + .client.iin'
mask = [".client.phone", ".client.iin"]
schema = { type = "object", properties = { client = { type = "object", properties = { iin = { type = "string", pattern = "^[0-9]{12}$" } } } } }
steps = [
  { name = "contact", map = '{phone: .trigger.client.phone, iin: .trigger.client.iin, ext: .exchange.external_id}', as = "contact" },
  { name = "create", call = "crm.create_lead", args = '{phone: .contact.phone, phone_plus: (.contact.phone | split(" ") | join("")), iin: .contact.iin, ext: .contact.ext, name: .trigger.client.name}' },
]
"#;

fn payload() -> Value {
    json!({
        "id": "p-1",
        "client": {"name": "Aigul", "phone": PHONE, "iin": IIN},
        "comment": format!("call back on {PHONE_PLUS}"),
    })
}

fn assert_clean(what: &str, text: &str) {
    for raw in RAW {
        assert!(
            !text.contains(raw),
            "{what} shows the personal value `{raw}`:\n{text}"
        );
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {}", pretty(v)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_reaches_the_target_and_only_partial_masks_reach_the_api() {
    let fake = Fake::start(CRM_TOKEN).await;
    // The target refuses the lead and quotes the whole body back in its error.
    fake.script(Method::POST, "/leads", vec![Fault::EchoBody(422)]);
    let config = [
        crm_system(fake.url(), CRM_TOKEN, "5s"),
        shop_system(HOOK_TOKEN),
        FLOW.into(),
    ]
    .concat();
    let app = TestApp::start(&config).await;

    let (code, answer) = app.hook("personal", &payload(), None).await;
    assert_eq!(code, 200, "{answer}");
    let id = id_of(&answer);
    let mut seen = vec![("webhook answer", answer.to_string())];

    let detail = app.wait_for(id, "failed").await;
    assert_eq!(error_classes(&detail), ["permanent"]);

    // The target got the real values, the external id among them: only the journal masks.
    let posts = fake.requests("POST", "/leads");
    assert_eq!(posts.len(), 1);
    let sent = &posts[0].body;
    assert_eq!(sent["phone"], PHONE);
    assert_eq!(sent["phone_plus"], PHONE_PLUS);
    assert_eq!(sent["iin"], IIN);
    assert_eq!(sent["ext"], PHONE_DIGITS, "jq sees the raw external id");
    assert_eq!(sent["name"], "Aigul");

    // The detail shows partial masks wherever the values were.
    assert_eq!(str_at(&detail, "/external_id"), DIGITS_MASK);
    assert_eq!(str_at(&detail, "/key"), format!("client:{IIN_MASK}"));
    let received = &detail["events"][0];
    assert_eq!(received["type"], "received", "{}", pretty(&detail));
    assert_eq!(str_at(received, "/payload/client/phone"), PHONE_MASK);
    assert_eq!(str_at(received, "/payload/client/iin"), IIN_MASK);
    assert_eq!(
        str_at(received, "/payload/client/name"),
        "Aigul",
        "not a mask path"
    );
    assert_eq!(
        str_at(received, "/payload/comment"),
        format!("call back on {PHONE_PLUS_MASK}"),
        "found in free text too"
    );
    let contact = &detail["steps"][0]["output"];
    assert_eq!(str_at(contact, "/phone"), PHONE_MASK);
    assert_eq!(str_at(contact, "/iin"), IIN_MASK);
    assert_eq!(str_at(contact, "/ext"), DIGITS_MASK);
    let call = &detail["attempt_log"][0]["calls"][0];
    let body: Value = serde_json::from_str(str_at(call, "/body")).expect("the body is JSON");
    assert_eq!(body["phone"], PHONE_MASK);
    assert_eq!(body["phone_plus"], PHONE_PLUS_MASK);
    assert_eq!(body["iin"], IIN_MASK);
    let response = str_at(call, "/response");
    assert!(
        response.contains(IIN_MASK) && response.contains(PHONE_MASK),
        "{response}"
    );
    let message = str_at(&detail, "/last_error/message");
    assert!(message.starts_with("HTTP 422"), "{message}");
    assert!(
        message.contains(IIN_MASK) && message.contains(DIGITS_MASK),
        "{message}"
    );

    // Input errors quote the value: masked too.
    let mut bad = payload();
    bad["id"] = json!("p-2");
    bad["client"]["iin"] = json!("9001013500123");
    let (code, rejected) = app.hook("personal", &bad, None).await;
    assert_eq!(code, 422, "{rejected}");
    let errors = rejected["errors"].to_string();
    assert!(errors.contains("9001*******23"), "{errors}");
    assert!(!errors.contains("9001013500123"), "{errors}");
    seen.push(("rejection", rejected.to_string()));
    seen.push((
        "rejected detail",
        app.exchange(id_of(&rejected)).await.to_string(),
    ));

    // A dry run of the same payload: nothing sent, the report and its exchange masked.
    let report = app
        .post("/api/flows/personal/dry-run", Some(&payload()))
        .await;
    assert_eq!(report["status"], "dry_run", "{}", pretty(&report));
    assert_eq!(report["duplicate_of"], id, "dedup on the masked key");
    assert_eq!(str_at(&report, "/external_id"), DIGITS_MASK);
    assert_eq!(str_at(&report, "/steps/0/output/phone"), PHONE_MASK);
    let would: Value =
        serde_json::from_str(str_at(&report, "/requests/0/body")).expect("the body is JSON");
    assert_eq!(would["iin"], IIN_MASK);
    assert_eq!(fake.count("POST", "/leads"), 1, "the dry run sent nothing");
    seen.push(("dry run", report.to_string()));
    seen.push((
        "dry-run detail",
        app.exchange(id_of(&report)).await.to_string(),
    ));
    seen.push(("detail", detail.to_string()));
    seen.push(("list", app.get("/api/exchanges").await.to_string()));
    seen.push((
        "viewer list",
        app.get_as("/api/exchanges?flow=personal", Some(VIEWER))
            .await
            .1
            .to_string(),
    ));
    seen.push((
        "viewer detail",
        app.get_as(&format!("/api/exchanges/{id}"), Some(VIEWER))
            .await
            .1
            .to_string(),
    ));
    seen.push(("flows", app.get("/api/flows").await.to_string()));
    for (what, text) in &seen {
        assert_clean(what, text);
    }

    // At rest: the work copy (which keeps the raw values for the target) is sealed, and the
    // key, external id and ID map hold only lookup hashes.
    let data = app.data_dir();
    let _dir = app.stop().await;
    let files = all_bytes(&data);
    assert!(
        files
            .iter()
            .any(|(p, b)| p.ends_with("obmen.redb") && b.len() > 4096),
        "no data file"
    );
    for (path, bytes) in &files {
        for raw in [PHONE, PHONE_PLUS, PHONE_DIGITS, IIN] {
            let found = bytes.windows(raw.len()).any(|w| w == raw.as_bytes());
            assert!(!found, "{} holds the raw {raw}", path.display());
        }
    }
}

#[test]
fn bad_mask_paths_are_config_problems_with_their_line() {
    let config = format!(
        "{}\n[[flows]]\nname = \"m\"\ntrigger = {{ manual = {{}} }}\nmask = [\".ok\", \"phone\", \".a[0]\", '.\"quoted key\".x', \".a..b\"]\nsteps = [ {{ map = '.trigger' }} ]\n",
        shop_system(HOOK_TOKEN)
    );
    let path = Path::new("/etc/obmen/obmen.toml");
    let Err(errors) = obmen::config::load_str(path, &config) else {
        panic!("the config must not load")
    };
    let text = errors.to_string();
    let line = 1 + config
        .lines()
        .position(|l| l.starts_with("mask ="))
        .expect("the mask line");
    let at = format!("/etc/obmen/obmen.toml:{line}:");
    for bad in [1, 2, 4] {
        let key = format!("flows[0].mask[{bad}]");
        assert!(
            errors
                .lines
                .iter()
                .any(|l| l.starts_with(&at) && l.contains(&key)),
            "no line {line} problem for {key} in:\n{text}"
        );
    }
    assert_eq!(errors.lines.len(), 3, "exactly these problems:\n{text}");
}
