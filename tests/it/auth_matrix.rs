//! Every documented endpoint × {no token, wrong token, viewer, admin}. The endpoints come
//! from the server's own OpenAPI document, so a new mutating route that is documented but
//! not admin-only fails here. Wrong tokens come from distinct loopback addresses so that
//! the failed-login throttle does not mix into the matrix; the throttle has its own test.

use std::net::{IpAddr, Ipv4Addr};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{ADMIN, TestApp, VIEWER, id_of};

const PUBLIC: &[&str] = &["/healthz", "/readyz", "/api/openapi.json"];

fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 1, last)))
        .build()
        .expect("client")
}

async fn status(
    client: &reqwest::Client,
    method: &Method,
    url: &str,
    token: Option<&str>,
) -> StatusCode {
    let mut req = client.request(method.clone(), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if *method == Method::POST {
        req = req.json(&json!({"id": "matrix"}));
    }
    req.send().await.expect("request").status()
}

const FLOW: &str = r#"
[[flows]]
name = "m"
trigger = { manual = {} }
steps = [ { map = '{seen: .trigger.id}' } ]
"#;

#[tokio::test]
async fn every_endpoint_answers_each_role_as_documented() {
    let app = TestApp::start(FLOW).await;
    let id = id_of(
        &app.post("/api/flows/m/run", Some(&json!({"id": "seed"})))
            .await,
    );
    let doc: serde_json::Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .expect("doc")
        .json()
        .await
        .expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(
        paths.len() >= 12,
        "the document lists the API: {}",
        paths.len()
    );
    let mut checked = 0;
    for (n, (path, ops)) in paths.iter().enumerate() {
        if path.starts_with("/hooks/") {
            continue; // verified by the source system's signature, not by tokens
        }
        let url = app.url(&path.replace("{id}", &id.to_string()).replace("{flow}", "m"));
        for method in ops.as_object().expect("ops").keys() {
            let method =
                Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
            let anon = status(&app.client, &method, &url, None).await;
            if PUBLIC.contains(&path.as_str()) {
                assert_eq!(anon, StatusCode::OK, "{method} {path} is public");
                continue;
            }
            let wrong = status(
                &client_from(u8::try_from(n + 1).expect("few paths")),
                &method,
                &url,
                Some("not-a-token-000"),
            )
            .await;
            let viewer = status(&app.client, &method, &url, Some(VIEWER)).await;
            let admin = status(&app.client, &method, &url, Some(ADMIN)).await;
            assert_eq!(
                anon,
                StatusCode::UNAUTHORIZED,
                "{method} {path} without a token"
            );
            assert_eq!(
                wrong,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with a wrong token"
            );
            let mutating = method != Method::GET;
            if mutating {
                assert_eq!(
                    viewer,
                    StatusCode::FORBIDDEN,
                    "{method} {path} must be admin-only"
                );
            } else {
                assert!(
                    viewer.is_success(),
                    "{method} {path} is readable by viewers: {viewer}"
                );
            }
            assert!(
                admin != StatusCode::UNAUTHORIZED && admin != StatusCode::FORBIDDEN,
                "{method} {path} as admin: {admin}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 9, "checked {checked} endpoint methods");
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address() {
    let app = TestApp::start(FLOW).await;
    let attacker = client_from(200);
    let url = app.url("/api/exchanges");
    for _ in 0..10 {
        assert_eq!(
            status(&attacker, &Method::GET, &url, Some("guess-000000")).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        status(&attacker, &Method::GET, &url, Some("guess-000001")).await,
        StatusCode::UNAUTHORIZED
    );
    let blocked = attacker
        .get(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request");
    assert_eq!(
        blocked.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even a good token waits"
    );
    assert!(blocked.headers().get("retry-after").is_some());
    let neighbour = client_from(201);
    assert_eq!(
        status(&neighbour, &Method::GET, &url, Some(ADMIN)).await,
        StatusCode::OK,
        "other addresses are not blocked"
    );
    assert_eq!(
        status(&app.client, &Method::GET, &url, None).await,
        StatusCode::UNAUTHORIZED,
        "a missing token is no guess"
    );
}

#[tokio::test]
async fn the_public_summary_needs_no_token_and_shows_no_payload() {
    let app = TestApp::start(&format!("{FLOW}\n[status_page]\npublic = true\n")).await;
    app.post(
        "/api/flows/m/run",
        Some(&json!({"id": "private-payload-77"})),
    )
    .await;
    let (code, body) = app.get_as("/api/summary", None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body[0]["name"], "m");
    let text = body.to_string();
    assert!(!text.contains("private-payload-77"), "{text}");
    assert!(
        !text.contains("request_id") && !text.contains("\"id\""),
        "no ids: {text}"
    );
    let (code, _) = app.get_as("/api/exchanges", None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "only the summary is public");
}
