//! Webhook verification by a token in the URL's query, and credentials in custom headers
//! hidden whole in the journal.

use serde_json::json;

use crate::support::fake::Fake;
use crate::support::{TestApp, id_of};

const QUERY_TOKEN: &str = "query-token-it-0042";
const API_KEY: &str = "api-key-it-77aa";

#[tokio::test]
async fn a_query_token_verifies_and_custom_auth_headers_are_masked() {
    let fake = Fake::start("unused-bearer-0000").await;
    let config = format!(
        r#"
[systems.form]
kind = "http"
base_url = "http://127.0.0.1:9"
inbound = {{ token_query = "token", token = "{QUERY_TOKEN}" }}

[systems.keyed]
kind = "http"
base_url = "{url}"
auth = {{ header = {{ name = "X-Api-Key", value = "{API_KEY}" }} }}
[systems.keyed.ops]
probe = {{ method = "GET", path = "/leads" }}

[[flows]]
name = "q"
trigger = {{ webhook = {{ system = "form" }} }}
retry = {{ max_attempts = 1 }}
steps = [ {{ call = "keyed.probe", args = '{{phone: .trigger.id}}' }} ]
"#,
        url = fake.url()
    );
    let app = TestApp::start(&config).await;
    let ct = [("content-type", "application/json")];
    let body = r#"{"id":"f-1"}"#;
    let good = format!("/hooks/q?a=1&token={QUERY_TOKEN}");
    let (code, answer) = app.post_raw(&good, body, &ct).await;
    assert_eq!(code, 200, "{answer}");
    let id = id_of(&answer);
    assert_eq!(
        app.post_raw("/hooks/q?token=wrong-token-000", body, &ct)
            .await
            .0,
        403
    );
    assert_eq!(app.post_raw("/hooks/q", body, &ct).await.0, 401);

    // The fake refuses the key (it expects a bearer): the call is made and journaled.
    let detail = app.wait_for(id, "failed").await;
    let call = &detail["attempt_log"][0]["calls"][0];
    assert_eq!(call["headers"]["X-Api-Key"], json!("***"), "{call}");
    assert!(!detail.to_string().contains(API_KEY));
    assert!(!detail.to_string().contains(QUERY_TOKEN));
    let seen = fake.requests("GET", "/leads");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("x-api-key"),
        Some(API_KEY),
        "the real key was sent"
    );
}
