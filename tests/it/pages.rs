//! The status page over HTTP, for every page and role: anonymous visitors are sent to the
//! login page (or see the payload-free public summary), viewers read but get no Retry,
//! admins act through POST forms that must carry the session's CSRF token.

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::json;

use crate::support::fake::Fake;
use crate::support::{
    ADMIN, CRM_TOKEN, HOOK_TOKEN, TestApp, VIEWER, crm_system, id_of, shop_system,
};

const FLOW: &str = r#"
[[flows]]
name = "orders"
trigger = { webhook = { system = "shop" } }
retry = { max_attempts = 1 }
steps = [ { name = "lead", call = "crm.create_lead", args = '{phone: .trigger.phone, secret_note: .trigger.note}' } ]
"#;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// A failed exchange (the target refuses the lead) in a running app.
async fn seeded(extra: &str) -> (TestApp, Fake, u64) {
    let fake = Fake::start(CRM_TOKEN).await;
    fake.break_with_422(reqwest::Method::POST, "/leads");
    let config = [
        crm_system(fake.url(), CRM_TOKEN, "5s"),
        shop_system(HOOK_TOKEN),
        FLOW.into(),
        extra.into(),
    ]
    .concat();
    let app = TestApp::start(&config).await;
    let (code, answer) = app
        .hook(
            "orders",
            &json!({"id": "o-1", "phone": "+77010000001", "note": "payload-text-xyz"}),
            None,
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let id = id_of(&answer);
    app.wait_for(id, "failed").await;
    (app, fake, id)
}

async fn page(
    app: &TestApp,
    path: &str,
    auth: Option<&str>,
    cookie: Option<&str>,
) -> (StatusCode, String, reqwest::header::HeaderMap) {
    let mut req = client().get(app.url(path)).header("accept-language", "en");
    if let Some(t) = auth {
        req = req.bearer_auth(t);
    }
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.expect("request");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, resp.text().await.expect("body"), headers)
}

#[tokio::test]
async fn every_page_answers_each_role() {
    let (app, _fake, id) = seeded("").await;
    let detail = format!("/exchanges/{id}");
    for path in ["/", "/errors", "/exchanges", detail.as_str()] {
        let (code, _, headers) = page(&app, path, None, None).await;
        assert_eq!(code, StatusCode::SEE_OTHER, "{path} without a login");
        assert_eq!(headers["location"], "/login");
    }
    let (code, overview, _) = page(&app, "/", Some(VIEWER), None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        overview.contains("orders") && overview.contains("failing"),
        "{overview}"
    );
    assert!(overview.contains("<svg"), "the hourly sparkline");
    let (_, errors, _) = page(&app, "/errors", Some(VIEWER), None).await;
    assert!(
        errors.contains("HTTP 422:") && errors.contains("lead"),
        "grouped, ids stripped: {errors}"
    );
    assert!(!errors.contains("Retry all"), "viewers get no actions");
    let (_, list, _) = page(
        &app,
        "/exchanges?status=failed&flow=orders",
        Some(VIEWER),
        None,
    )
    .await;
    assert!(list.contains(&id.to_string()), "{list}");
    let (_, shown, _) = page(&app, &detail, Some(VIEWER), None).await;
    assert!(
        shown.contains("payload-text-xyz") && shown.contains("HTTP 422"),
        "the timeline shows the payload and the target's error"
    );
    assert!(!shown.contains("class=\"retry\""), "no Retry for viewers");
    let (_, shown, _) = page(&app, &detail, Some(ADMIN), None).await;
    assert!(shown.contains("class=\"retry\""), "admins get Retry");
    let (_, errors, _) = page(&app, "/errors", Some(ADMIN), None).await;
    assert!(errors.contains("Retry all"));
    let (code, _, _) = page(&app, "/exchanges/1", Some(VIEWER), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, russian, _) = {
        let resp = client()
            .get(app.url("/"))
            .bearer_auth(VIEWER)
            .send()
            .await
            .expect("request");
        (resp.status(), resp.text().await.expect("body"), ())
    };
    assert_eq!(code, StatusCode::OK);
    assert!(
        russian.contains("Обзор") && russian.contains("lang=\"ru\""),
        "Russian by default"
    );
    let (code, css, headers) = page(&app, "/static/obmen.css", None, None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        css.contains(":root")
            && headers["cache-control"]
                .to_str()
                .unwrap_or("")
                .contains("max-age")
    );
}

fn session_cookie(headers: &reqwest::header::HeaderMap) -> String {
    let set = headers["set-cookie"].to_str().expect("cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    set.split(';').next().expect("pair").to_owned()
}

async fn login(app: &TestApp, token: &str) -> reqwest::Response {
    client()
        .post(app.url("/login"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("login")
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().expect("value").to_owned()
}

async fn post_form(app: &TestApp, path: &str, cookie: &str, fields: &[(&str, &str)]) -> StatusCode {
    client()
        .post(app.url(path))
        .header("cookie", cookie)
        .form(fields)
        .send()
        .await
        .expect("post")
        .status()
}

#[tokio::test]
async fn login_sets_a_strict_cookie_and_actions_need_the_csrf_token() {
    let (app, fake, id) = seeded("").await;
    assert_eq!(
        login(&app, "not-the-token-0").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let resp = login(&app, ADMIN).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cookie = session_cookie(resp.headers());
    let detail = format!("/exchanges/{id}");
    let (code, html, _) = page(&app, &detail, None, Some(&cookie)).await;
    assert_eq!(code, StatusCode::OK);
    let csrf = csrf_of(&html);
    let retry = format!("{detail}/retry");
    assert_eq!(
        post_form(&app, &retry, &cookie, &[]).await,
        StatusCode::FORBIDDEN,
        "no token"
    );
    assert_eq!(
        post_form(&app, &retry, &cookie, &[("csrf", "forged")]).await,
        StatusCode::FORBIDDEN,
        "wrong token"
    );
    assert_eq!(
        app.exchange(id).await["status"],
        "failed",
        "nothing happened"
    );

    let viewer = session_cookie(login(&app, VIEWER).await.headers());
    let (_, vhtml, _) = page(&app, &detail, None, Some(&viewer)).await;
    let vcsrf = csrf_of(&vhtml); // the logout form's
    assert_eq!(
        post_form(&app, &retry, &viewer, &[("csrf", &vcsrf)]).await,
        StatusCode::FORBIDDEN,
        "viewers cannot retry"
    );

    fake.fix();
    assert_eq!(
        post_form(&app, &retry, &cookie, &[("csrf", &csrf)]).await,
        StatusCode::SEE_OTHER
    );
    let done = app.wait_for(id, "succeeded").await;
    let manual = done["events"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| e["type"] == "manual");
    assert!(manual, "the retry is in the journal");

    assert_eq!(
        post_form(&app, "/logout", &cookie, &[("csrf", &csrf)]).await,
        StatusCode::SEE_OTHER
    );
    let (code, _, _) = page(&app, "/", None, Some(&cookie)).await;
    assert_eq!(code, StatusCode::SEE_OTHER, "the session is gone");
}

#[tokio::test]
async fn the_public_summary_shows_health_and_counts_only() {
    let (app, _fake, _id) = seeded("\n[status_page]\npublic = true\n").await;
    let (code, html, _) = page(&app, "/", None, None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        html.contains("Public summary") && html.contains("orders"),
        "{html}"
    );
    assert!(
        !html.contains("payload-text-xyz") && !html.contains("+77010000001"),
        "no payload"
    );
    assert!(
        !html.contains("href=\"/exchanges"),
        "no links into exchanges: {html}"
    );
    let (code, _, _) = page(&app, "/errors", None, None).await;
    assert_eq!(code, StatusCode::SEE_OTHER, "the rest still needs a login");
}
