use super::errors::classify;
use super::*;
use crate::config::values::SecretSource;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;

fn build(text: &str) -> (Option<MoySkladConnector>, Vec<crate::config::Problem>) {
    let table: toml::Table = toml::from_str(text).expect("toml");
    let (mut problems, mut secrets) = (Vec::new(), Vec::new());
    let source = SecretSource::env_only();
    let mut ctx = BuildCtx {
        problems: &mut problems,
        secrets: &mut secrets,
        source: &source,
    };
    let c = MoySkladConnector::build(table, &[], &mut ctx);
    (c, problems)
}

fn answer(status: u16, headers: &[(&'static str, &str)], body: &str) -> Answer {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, HeaderValue::from_str(v).expect("header"));
    }
    Answer {
        status,
        headers: h,
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn filter_escapes_semicolons_and_keeps_operators() {
    let f = json!({"externalCode": "a;b", "updated>=": "2026-01-15 10:00:00"});
    assert_eq!(
        filter_text(f.as_object().expect("object")),
        "externalCode=a\\;b;updated>=2026-01-15 10:00:00"
    );
}

#[test]
fn sync_id_is_a_stable_uuid() {
    let a = sync_id("42:create");
    assert_eq!(a, sync_id("42:create"));
    assert_ne!(a, sync_id("43:create"));
    assert_eq!(a.len(), 36);
    assert_eq!(&a[14..15], "8");
}

#[test]
fn errors_are_classified_from_codes_and_headers() {
    let e = classify(&answer(
        429,
        &[
            ("x-lognex-retry-after", "1500"),
            ("x-ratelimit-remaining", "0"),
        ],
        r#"{"errors":[{"error":"limit","code":1049}]}"#,
    ))
    .expect("error");
    assert_eq!(e.class, ErrorClass::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_millis(1500)));
    assert!(e.message.contains("1049"), "{}", e.message);
    let class = |s, body: &str| classify(&answer(s, &[], body)).map(|e| e.class);
    assert_eq!(class(401, ""), Some(ErrorClass::Auth));
    assert_eq!(
        class(403, r#"{"errors":[{"error":"x","code":1016}]}"#),
        Some(ErrorClass::Auth)
    );
    assert_eq!(
        class(
            412,
            r#"{"errors":[{"error":"x","code":3000,"parameter":"name"}]}"#
        ),
        Some(ErrorClass::Permanent)
    );
    assert_eq!(
        class(409, r#"[{"errors":[{"error":"x","code":1065}]}]"#),
        Some(ErrorClass::Transient)
    );
    assert_eq!(class(503, ""), Some(ErrorClass::Transient));
    assert_eq!(class(415, ""), Some(ErrorClass::Permanent));
    assert_eq!(class(200, ""), None);
}

#[test]
fn config_needs_one_auth_and_builds_requests() {
    let (_, problems) = build("");
    assert_eq!(problems.len(), 1, "{problems:?}");
    let (c, problems) = build(
        "base_url = \"http://127.0.0.1:9/api/remap/1.2\"\ntoken = \"t0k-long-enough\"\nwebhook_disable_prefix = \"https://obmen.example\"",
    );
    assert!(problems.is_empty(), "{problems:?}");
    let c = c.expect("built");
    assert!(c.has_op("counterparty.list") && c.has_op("fetch") && !c.has_op("nope.list"));
    let mut req = c
        .create_request("counterparty", &json!({"name": "A"}))
        .expect("request");
    c.prepare_mutating(&mut req, "7:s");
    assert_eq!(
        req.body.as_ref().and_then(|b| b.get("syncId")),
        Some(&json!(sync_id("7:s")))
    );
    assert!(
        req.headers
            .iter()
            .any(|(k, v)| k == "X-Lognex-WebHook-DisableByPrefix" && v == "https://obmen.example")
    );
    let mut upd = c
        .update_request("counterparty", "abc", &json!({"name": "A", "syncId": "x"}))
        .expect("request");
    c.prepare_mutating(&mut upd, "7:s:update");
    assert_eq!(
        upd.url,
        "http://127.0.0.1:9/api/remap/1.2/entity/counterparty/abc"
    );
    assert!(upd.body.as_ref().and_then(|b| b.get("syncId")).is_none());
    let find = c
        .find_request(
            "counterparty",
            json!({"externalCode": "X-1"}).as_object().expect("o"),
        )
        .expect("find");
    assert!(
        find.url
            .ends_with("/entity/counterparty?filter=externalCode%3DX-1&limit=2"),
        "{}",
        find.url
    );
    assert!(
        c.op_request("fetch", &json!({"href": "https://evil.example/x"}))
            .is_err()
    );
    let f = c
        .op_request(
            "fetch",
            &json!({"href": "https://api.moysklad.ru/api/remap/1.2/entity/customerorder/1"}),
        )
        .expect("fetch");
    assert_eq!(
        f.url,
        "http://127.0.0.1:9/api/remap/1.2/entity/customerorder/1"
    );
    for wrong in [json!(1001), json!(0), json!(-1), json!("ten")] {
        assert!(
            c.op_request("product.list", &json!({ "limit": wrong }))
                .is_err()
        );
    }
    assert!(c.op_request("product.list", &json!({"limit": "5"})).is_ok());
    assert!(
        c.op_request("product.list", &json!({"limit": null}))
            .is_ok()
    );
}

#[test]
fn webhooks_take_the_request_id_from_the_url() {
    let (c, _) = build("token = \"t0k-long-enough\"\ninbound = { token = \"hook-token-long\" }");
    let c = c.expect("built");
    let headers = HeaderMap::new();
    let query = vec![
        ("requestId".to_owned(), "r-1".to_owned()),
        ("token".to_owned(), "hook-token-long".to_owned()),
    ];
    let body = br#"{"events":[{"meta":{"type":"product","href":"https://x/entity/product/p1"},"action":"CREATE"}]}"#;
    let req = InboundRequest {
        headers: &headers,
        query: &query,
        body,
    };
    assert!(c.verify_inbound(&req).is_ok());
    let v = c.parse_inbound(&req).expect("parsed");
    assert_eq!(v["requestId"], json!("r-1"));
    let stock = br#"{"accountId":"a","stockType":"stock","reportType":"all","reportUrl":"https://x/report/stock/all/current?changedSince=2026-01-15 10:00:00"}"#;
    let req = InboundRequest {
        headers: &headers,
        query: &query,
        body: stock,
    };
    assert!(c.parse_inbound(&req).is_ok(), "stock webhooks are accepted");
    let req = InboundRequest {
        headers: &headers,
        query: &query,
        body: b"{}",
    };
    assert!(c.parse_inbound(&req).is_err());
    let wrong = vec![("token".to_owned(), "nope".to_owned())];
    let req = InboundRequest {
        headers: &headers,
        query: &wrong,
        body,
    };
    assert!(c.verify_inbound(&req).is_err());
}

#[test]
fn a_nearly_spent_budget_holds_the_next_requests() {
    let with = |remaining: &str, reset: &str| {
        answer(
            200,
            &[
                ("x-ratelimit-limit", "45"),
                ("x-ratelimit-remaining", remaining),
                ("x-lognex-retry-timeinterval", "3000"),
                ("x-lognex-reset", reset),
            ],
            "{}",
        )
    };
    let pace = |a: &Answer| errors::pace(a, 5);
    assert_eq!(pace(&with("44", "0")), None);
    assert_eq!(pace(&with("6", "0")), None);
    // 5 left: one request's worth of refill (3000 ms / 45) before the next.
    assert_eq!(pace(&with("5", "0")), Some(Duration::from_millis(66)));
    assert_eq!(pace(&with("0", "0")), Some(Duration::from_millis(400)));
    // The limit already in force: wait for its reset.
    assert_eq!(pace(&with("0", "2500")), Some(Duration::from_millis(2500)));
    let refused = answer(
        429,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-lognex-retry-after", "1200"),
        ],
        "{}",
    );
    assert_eq!(pace(&refused), Some(Duration::from_millis(1200)));
    assert_eq!(pace(&answer(200, &[], "{}")), None, "no headers, no guess");
}

#[test]
fn absurd_rate_limit_headers_neither_stall_nor_overflow() {
    let pace = |headers: &[(&'static str, &str)]| errors::pace(&answer(200, headers, "{}"), 5);
    // A reset thousands of years away holds back for at most MAX_WAIT.
    let far = pace(&[
        ("x-ratelimit-remaining", "0"),
        ("x-lognex-reset", "99999999999999"),
    ]);
    assert_eq!(far, Some(errors::MAX_WAIT));
    let far = pace(&[
        ("x-ratelimit-remaining", "0"),
        ("x-lognex-retry-after", "18446744073709551615"),
    ]);
    assert_eq!(far, Some(errors::MAX_WAIT));
    // interval * (reserve + 1 - remaining) would overflow u64: saturates, then is clamped.
    let huge = pace(&[
        ("x-ratelimit-limit", "1"),
        ("x-ratelimit-remaining", "0"),
        ("x-lognex-retry-timeinterval", "18446744073709551615"),
    ]);
    assert_eq!(huge, Some(errors::MAX_WAIT));
    // A reserve at the top of u64 does not overflow either.
    let all = answer(
        200,
        &[
            ("x-ratelimit-limit", "45"),
            ("x-ratelimit-remaining", "0"),
            ("x-lognex-retry-timeinterval", "3000"),
        ],
        "{}",
    );
    assert_eq!(errors::pace(&all, u64::MAX), Some(errors::MAX_WAIT));
    // The retry wait of a refused request is clamped the same way.
    let refused = answer(
        429,
        &[
            ("x-lognex-retry-after", "99999999999999"),
            ("retry-after", "99999999999999"),
        ],
        "{}",
    );
    let err = classify(&refused).expect("a 429 is an error");
    assert_eq!(err.retry_after, Some(errors::MAX_WAIT));
    let refused = answer(429, &[("retry-after", "99999999999999")], "{}");
    let err = classify(&refused).expect("a 429 is an error");
    assert_eq!(err.retry_after, Some(errors::MAX_WAIT));
}

#[test]
fn paging_args_stay_out_of_the_query() {
    let (c, _) = build(r#"token = "ms-token-123456""#);
    let c = c.expect("built");
    let mut req = c
        .op_request("product.list", &json!({"limit": 100, "max_pages": 3}))
        .expect("request");
    assert!(!req.url.contains("max_pages"), "{}", req.url);
    assert_eq!(transport::unmark_pages(&mut req), 3);
    assert!(req.headers.iter().all(|(k, _)| !k.starts_with("x-obmen")));
    let bad = c.op_request("product.list", &json!({"max_pages": 0}));
    assert_eq!(bad.map_err(|e| e.class).err(), Some(ErrorClass::Input));
    let both = c.op_request("product.list", &json!({"max_pages": 2, "all_pages": true}));
    assert!(both.is_err());
    let mut all = c
        .op_request("assortment.list", &json!({"all_pages": true}))
        .expect("request");
    assert_eq!(transport::unmark_pages(&mut all), 100);
}
