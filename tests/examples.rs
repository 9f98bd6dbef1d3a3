//! Every `examples/*.toml` passes `obmen check` (the real binary), with each `secret:NAME` it
//! references set to a dummy value: an example that rots fails CI.

use std::path::Path;
use std::process::Command;

use serde_json::json;

#[path = "support/app.rs"]
mod support;

const BIN: &str = env!("CARGO_BIN_EXE_obmen");

/// The names of the `secret:NAME` references in a config text.
fn secret_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("secret:")
        .map(|(at, m)| {
            text[at + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A dummy value of the right shape: URLs for `*_url`, a long enough token otherwise.
fn dummy(name: &str) -> String {
    if name.ends_with("url") {
        "https://acme.bitrix24.kz/rest/1/dummysecret0001/".into()
    } else {
        format!("dummy-{name}-0001")
    }
}

#[test]
fn every_example_config_passes_obmen_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut examples: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    examples.sort();
    assert!(
        examples.len() >= 4,
        "expected the shipped examples, found {examples:?}"
    );
    for example in &examples {
        let text = std::fs::read_to_string(example).expect("read example");
        let mut cmd = Command::new(BIN);
        cmd.arg("check").arg("-c").arg(example);
        // Only the secrets the example names: a reference without its variable would fail.
        for (k, _) in std::env::vars() {
            if k.starts_with("OBMEN_SECRET_") {
                cmd.env_remove(k);
            }
        }
        for name in secret_names(&text) {
            cmd.env(
                format!("OBMEN_SECRET_{}", name.to_uppercase()),
                dummy(&name),
            );
        }
        let out = cmd.output().expect("run obmen check");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{} fails `obmen check`:\n{}{}",
            example.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn secret_references_are_read_from_the_text() {
    let names = secret_names(
        r#"token = "secret:moysklad_token"
webhook_url = "secret:b24_webhook_url" # and again secret:moysklad_token"#,
    );
    assert_eq!(names, ["b24_webhook_url", "moysklad_token"]);
}

/// The template `obmen init` writes does what its comments say: a shop order in status
/// "test" is skipped by the filter, any other goes on to the lead upsert (a dry run: the
/// CRM address is the template's placeholder, so the search fails, after the filter).
#[tokio::test]
async fn the_init_template_skips_test_orders_and_upserts_the_rest() {
    let app = support::App::start_with(|data| {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/obmen.toml"),
        )
        .expect("the template");
        let mut text = text.replace(
            "data_dir = \"data\"",
            &format!("data_dir = {:?}", data.display().to_string()),
        );
        for name in secret_names(&text) {
            let value = if name == "admin_token" {
                support::ADMIN.to_owned()
            } else {
                dummy(&name)
            };
            text = text.replace(&format!("secret:{name}"), &value);
        }
        text.replace("https://crm.example.com/api", "http://127.0.0.1:9")
    })
    .await;
    let dry_run = |status: &'static str| {
        let app = &app;
        async move {
            let (code, report) = app
                .send(
                    app.client
                        .post(app.url("/api/flows/order-to-lead/dry-run"))
                        .bearer_auth(support::ADMIN)
                        .json(
                            &json!({"order": {"id": 7, "status": status, "phone": "+77010000007"}}),
                        ),
                )
                .await;
            assert_eq!(code, 200, "{report}");
            report
        }
    };
    let test = dry_run("test").await;
    assert_eq!(test["status"], "skipped", "{test:#}");
    let paid = dry_run("paid").await;
    assert_ne!(paid["status"], "skipped", "{paid:#}");
    assert_eq!(paid["steps"][0]["ran"], true, "{paid:#}");
    assert_eq!(
        paid["steps"][0]["output"], true,
        "the filter passes it: {paid:#}"
    );
    // The upsert ran: its search by phone was sent to the CRM (a closed port here), so the
    // dry run fails on the connection, not before it.
    assert_eq!(paid["status"], "failed", "{paid:#}");
    assert_eq!(paid["steps"][1]["name"], "2-upsert", "{paid:#}");
    assert_eq!(paid["steps"][1]["kind"], "upsert", "{paid:#}");
    let errors = paid["errors"].as_array().expect("errors");
    assert!(
        errors.len() == 1
            && errors[0]
                .as_str()
                .is_some_and(|e| e.contains("cannot connect")),
        "{paid:#}"
    );
    let requests = paid["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 1, "{paid:#}");
    let search = &requests[0];
    assert_eq!(search["step"], "2-upsert", "{paid:#}");
    assert_eq!(search["method"], "GET", "{paid:#}");
    assert_eq!(
        search["url"], "http://127.0.0.1:9/leads?phone=%2B77010000007",
        "{paid:#}"
    );
    assert_eq!(search["sent"], true, "{paid:#}");
    assert_eq!(
        search["status"],
        serde_json::Value::Null,
        "no answer: {paid:#}"
    );
    assert_eq!(search["headers"]["Authorization"], "***", "{paid:#}");
}
