use super::errors::{classify, error_of};
use super::query::{filter, key, literal, readable};
use super::*;
use crate::config::values::SecretSource;
use reqwest::header::HeaderMap;
use serde_json::json;

const BASE: &str = "http://127.0.0.1:9/trade/odata/standard.odata";

fn build(text: &str) -> (Option<OnecConnector>, Vec<String>, Vec<Secret>) {
    let table: toml::Table = toml::from_str(text).expect("toml");
    let (mut problems, mut secrets) = (Vec::new(), Vec::new());
    let source = SecretSource::env_only();
    let mut ctx = BuildCtx {
        problems: &mut problems,
        secrets: &mut secrets,
        source: &source,
    };
    let c = OnecConnector::build(table, &[], &mut ctx);
    let problems = problems.into_iter().map(|p| p.message).collect();
    (c, problems, secrets)
}

fn connector(extra: &str) -> OnecConnector {
    let (c, problems, _) = build(&format!(
        "base_url = \"{BASE}\"\nuser = \"obmen\"\npassword = \"pa55-word-1c\"\n{extra}"
    ));
    assert!(problems.is_empty(), "{problems:?}");
    c.expect("built")
}

fn answer(status: u16, body: &str) -> Answer {
    Answer {
        status,
        headers: HeaderMap::new(),
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn config_mistakes_are_reported_by_key() {
    let (_, problems, _) = build("user = \"u\"\npassword = \"pa55-word-1c\"");
    assert!(problems[0].contains("base_url"), "{problems:?}");
    let (_, problems, _) = build(
        "base_url = \"http://h/trade\"\nuser = \"u\"\npassword = \"pa55-word-1c\"\nconcurrency = 0\nsessions = 2\nbase_url_x = 1\n",
    );
    assert!(
        problems.iter().any(|p| p.contains("standard.odata")),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| p == "at least 1"), "{problems:?}");
    assert!(
        problems.iter().filter(|p| *p == "unknown key").count() == 2,
        "{problems:?}"
    );
    let (_, _, secrets) = build(&format!(
        "base_url = \"{BASE}\"\nuser = \"obmen\"\npassword = \"pa55-word-1c\""
    ));
    let basic = base64::engine::general_purpose::STANDARD.encode("obmen:pa55-word-1c");
    assert!(secrets.iter().any(|s| s.expose() == "pa55-word-1c"));
    assert!(secrets.iter().any(|s| s.expose() == basic));
}

#[test]
fn ops_are_checked_by_resource_prefix_and_kind() {
    let c = connector("");
    for op in [
        "Catalog_Контрагенты.list",
        "Document_ЗаказКлиента.post",
        "AccumulationRegister_ТоварыНаСкладах.balance",
        "InformationRegister_КурсыВалют.slice_last",
        "DocumentJournal_Взаимодействия.count",
        "resources",
    ] {
        assert!(c.has_op(op), "{op}");
    }
    for op in [
        "Catalog_Контрагенты.post",
        "Справочник_Контрагенты.list",
        "Catalog_.list",
        "Catalog_Контр агенты.list",
        "AccumulationRegister_Товары.create",
        "DocumentJournal_Взаимодействия.update",
        "Catalog_Контрагенты",
    ] {
        assert!(!c.has_op(op), "{op}");
    }
    assert!(c.has_entity("Catalog_Контрагенты") && c.has_entity("Document_Заказ"));
    assert!(!c.has_entity("InformationRegister_КурсыВалют"));
}

#[test]
fn literals_quote_strings_and_check_guids_and_dates() {
    assert_eq!(
        literal("Description", &json!("Д'Артаньян")).as_deref(),
        Ok("'Д''Артаньян'")
    );
    assert_eq!(
        literal(
            "Контрагент_Key",
            &json!("1fa1a135-d89b-11e6-8343-40167e2531c3")
        )
        .as_deref(),
        Ok("guid'1fa1a135-d89b-11e6-8343-40167e2531c3'")
    );
    assert!(literal("Контрагент_Key", &json!("x' or 1 eq 1")).is_err());
    assert!(literal("Date", &json!("datetime'2026-01-15T10:00:00' or true")).is_err());
    assert_eq!(literal("Сумма", &json!(10.5)).as_deref(), Ok("10.5"));
    let f = json!({"ИНН": "7701234567", "Date ge": "datetime'2026-01-15T00:00:00'", "Статус": ["Новый", "В работе"]});
    assert_eq!(
        filter(f.as_object().expect("object")).as_deref(),
        Ok(
            "ИНН eq '7701234567' and Date ge datetime'2026-01-15T00:00:00' and (Статус eq 'Новый' or Статус eq 'В работе')"
        )
    );
    let bad = json!({"ИНН) or (1 eq 1": "x"});
    assert!(filter(bad.as_object().expect("object")).is_err());
    assert_eq!(
        key(&json!({"Period": "2008-02-05", "Валюта_Key": "9d5c4222-8c4c-11db-a9b0-00055d49b45e"}))
            .as_deref(),
        Ok(
            "(Period=datetime'2008-02-05T00:00:00',Валюта_Key=guid'9d5c4222-8c4c-11db-a9b0-00055d49b45e')"
        )
    );
    assert!(key(&json!("not-a-guid")).is_err());
}

#[test]
fn urls_are_encoded_for_the_wire_and_readable_in_the_journal() {
    let c = connector("allowed_only = true");
    let req = c
        .op_request(
            "Catalog_Контрагенты.list",
            &json!({"filter": {"ИНН": "7701234567"}, "select": ["Ref_Key", "ИНН"], "top": 50, "skip": 100, "orderby": "Code"}),
        )
        .expect("request");
    assert!(
        req.url.starts_with(&format!("{BASE}/Catalog_%D0%9A")),
        "{}",
        req.url
    );
    assert!(req.url.is_ascii());
    assert!(!req.mutating);
    assert_eq!(
        readable(&req.url),
        format!(
            "{BASE}/Catalog_Контрагенты?$format=json&$filter=ИНН eq '7701234567'&$select=Ref_Key,ИНН&$orderby=Code&$top=50&$skip=100&allowedOnly=true"
        )
    );
    assert_eq!(c.redact_url(&req.url), readable(&req.url));
    // A value holding `&` or `=` stays escaped: the readable URL keeps its structure.
    let tricky = c
        .op_request(
            "Catalog_Контрагенты.list",
            &json!({"filter": {"Description": "A&B=C"}}),
        )
        .expect("request");
    assert!(
        readable(&tricky.url).contains("Description eq 'A%26B%3DC'"),
        "{}",
        readable(&tricky.url)
    );
    let got = c
        .op_request(
            "Document_ЗаказКлиента.post",
            &json!({"key": "1fa1a135-d89b-11e6-8343-40167e2531c3"}),
        )
        .expect("request");
    assert_eq!(
        readable(&got.url),
        format!(
            "{BASE}/Document_ЗаказКлиента(guid'1fa1a135-d89b-11e6-8343-40167e2531c3')/Post?$format=json&PostingModeOperational=false"
        )
    );
    assert!(got.mutating);
    let balance = c
        .op_request(
            "AccumulationRegister_ТоварыНаСкладах.balance",
            &json!({"period": "2026-01-15", "condition": {"Склад_Key": "9d5c4222-8c4c-11db-a9b0-00055d49b45e"}}),
        )
        .expect("request");
    assert_eq!(
        readable(&balance.url),
        format!(
            "{BASE}/AccumulationRegister_ТоварыНаСкладах/Balance(Period=datetime'2026-01-15T00:00:00',Condition='Склад_Key eq guid'9d5c4222-8c4c-11db-a9b0-00055d49b45e'')?$format=json&allowedOnly=true"
        )
    );
    let published = c.op_request("resources", &Value::Null).expect("request");
    assert_eq!(
        published.url,
        format!("{BASE}?$format=json"),
        "the service document"
    );
    let count = c
        .op_request("Catalog_Контрагенты.count", &json!({"allowed_only": false}))
        .expect("request");
    assert_eq!(
        readable(&count.url),
        format!("{BASE}/Catalog_Контрагенты/$count?$format=json")
    );
}

#[test]
fn bad_arguments_are_input_errors() {
    let c = connector("");
    let class = |op: &str, args: Value| c.op_request(op, &args).map(|_| ()).map_err(|e| e.class);
    assert_eq!(
        class(
            "Catalog_Контрагенты.list",
            json!({"top": 10, "inlinecount": true})
        ),
        Err(ErrorClass::Input)
    );
    assert_eq!(
        class("Catalog_Контрагенты.list", json!({"limit": 10})),
        Err(ErrorClass::Input)
    );
    assert_eq!(
        class("Catalog_Контрагенты.get", json!({})),
        Err(ErrorClass::Input)
    );
    assert_eq!(
        class("Catalog_Контрагенты.create", json!({"record": []})),
        Err(ErrorClass::Input)
    );
    assert_eq!(
        class("Catalog_Контрагенты.list", json!({"inlinecount": true})),
        Ok(())
    );
    assert_eq!(
        c.update_request("Catalog_Контрагенты", "42", &json!({"Description": "x"}))
            .map(|_| ())
            .map_err(|e| e.class),
        Err(ErrorClass::Input)
    );
}

#[test]
fn an_upsert_update_carries_the_found_data_version_once() {
    let c = connector("data_load_mode = true");
    let key = "1fa1a135-d89b-11e6-8343-40167e2531c3";
    let answer = json!({"odata.metadata": "x", "value": [{"Ref_Key": key, "DataVersion": "AAAAAQAAAAA=", "ИНН": "7701234567"}]});
    let found = c
        .found_records("Catalog_Контрагенты", answer)
        .expect("records");
    assert_eq!(
        found[0]["id"],
        json!(key),
        "the default `.id` finds Ref_Key"
    );
    let upd = c
        .update_request(
            "Catalog_Контрагенты",
            key,
            &json!({"Description": "ТОО «Ромашка»"}),
        )
        .expect("update");
    assert_eq!(upd.method, reqwest::Method::PATCH);
    let header = |r: &OutboundRequest, n: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header(&upd, "If-Match").as_deref(), Some("AAAAAQAAAAA="));
    assert_eq!(
        header(&upd, "1C_OData-DataLoadMode").as_deref(),
        Some("true")
    );
    let again = c
        .update_request("Catalog_Контрагенты", key, &json!({"Description": "x"}))
        .expect("update");
    assert_eq!(header(&again, "If-Match"), None, "a version is used once");
    let created = c
        .read_answer(
            &upd.url,
            json!({"Ref_Key": key, "DataVersion": "AAAAAgAAAAA="}),
        )
        .expect("read");
    assert_eq!(created["id"], json!(key));
    let page = c
        .read_answer(
            &format!("{BASE}/Catalog_X?$format=json&$top=2&$skip=4"),
            json!({"value": [{}, {}]}),
        )
        .expect("read");
    assert_eq!(page["next_skip"], json!(6));
    let last = c
        .read_answer(
            &format!("{BASE}/Catalog_X?$format=json&$top=2&$skip=6"),
            json!({"value": [{}]}),
        )
        .expect("read");
    assert_eq!(last["next_skip"], Value::Null);
}

#[test]
fn errors_are_read_from_json_and_xml_bodies() {
    let json_body = r#"{"odata.error":{"code":"9","message":{"lang":"ru","value":"Экземпляр сущности не найден"}}}"#;
    assert_eq!(
        error_of(json_body.as_bytes()),
        Some((Some(9), "Экземпляр сущности не найден".into()))
    );
    let xml = "<?xml version=\"1.0\"?><m:error xmlns:m=\"http://schemas.microsoft.com/ado/2007/08/dataservices/metadata\"><m:code>5</m:code><m:message xml:lang=\"ru\">Не заполнено &quot;Наименование&quot;</m:message></m:error>";
    assert_eq!(
        error_of(xml.as_bytes()),
        Some((Some(5), "Не заполнено \"Наименование\"".into()))
    );
    let class = |status, body: &str| classify(&answer(status, body)).map(|e| e.class);
    assert_eq!(class(404, json_body), Some(ErrorClass::Permanent));
    assert_eq!(class(400, xml), Some(ErrorClass::Permanent));
    let code = |c: i64, status| {
        class(
            status,
            &format!(r#"{{"odata.error":{{"code":"{c}","message":{{"lang":"ru","value":"x"}}}}}}"#),
        )
    };
    assert_eq!(code(20, 401), Some(ErrorClass::Auth));
    assert_eq!(code(8, 404), Some(ErrorClass::Config));
    assert_eq!(code(14, 400), Some(ErrorClass::Config));
    assert_eq!(code(15, 400), Some(ErrorClass::Permanent));
    assert_eq!(code(-1, 500), Some(ErrorClass::Transient));
    assert_eq!(class(401, ""), Some(ErrorClass::Auth));
    assert_eq!(class(412, ""), Some(ErrorClass::Transient));
    assert_eq!(
        class(404, "<html>Not Found</html>"),
        Some(ErrorClass::Config)
    );
    assert_eq!(class(502, "Bad Gateway"), Some(ErrorClass::Transient));
    assert_eq!(class(501, ""), Some(ErrorClass::Config));
    assert_eq!(class(201, "{}"), None);
    let e = classify(&answer(400, xml)).expect("error");
    assert!(
        e.message.contains("code 5: Не заполнено \"Наименование\""),
        "{}",
        e.message
    );
    assert_eq!(e.status, Some(400));
}

#[test]
fn webhooks_are_refused_with_the_reason() {
    let c = connector("");
    let headers = HeaderMap::new();
    let req = InboundRequest {
        headers: &headers,
        query: &[],
        body: b"{}",
    };
    let refusal = c.verify_inbound(&req).expect_err("refused");
    assert!(refusal.to_string().contains("schedule"), "{refusal}");
}
