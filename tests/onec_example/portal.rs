//! A fake Bitrix24 portal for the 1C example, after the connector reference (§1.2, §1.5,
//! §1.10 of /work/shared/connectors/bitrix24-1c-moysklad.md): inbound-webhook URLs
//! `/rest/<user>/<secret>/<method>[.json]` (an unknown secret or a call without one is
//! `401 NO_AUTH_FOUND`), JSON or form bodies, `{"result", "time"}` envelopes, pages of 50
//! with `total`/`next`, CRM errors with an empty `error` code ("Not found"), unknown methods
//! `ERROR_METHOD_NOT_FOUND`, a leaky bucket (50, drains 2/s) answering
//! `503 QUERY_LIMIT_EXCEEDED`, and `batch` (query-string commands, `halt`, `[]` for empty
//! collections). Methods: `crm.product.list|get|add|update`, `catalog.product.update`
//! (camelCase `fields`, `{"result": {"element": …}}`, numeric error codes: `100` without
//! `id`/`fields`, `0` for a product that does not exist), `crm.deal.get`,
//! `crm.contact.get`, `crm.deal.productrows.get`, `crm.timeline.comment.add`. It also writes
//! the form body of an outgoing event the way Bitrix24 posts it, and can lose the answer to
//! a `crm.product.add` that made the product (its front proxy answers `504 Gateway Time-out`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

pub const SECRET: &str = "b24hook1cexample77";

/// Classic list methods answer pages of this many.
pub const PAGE: usize = 50;

/// `crm.product` fields (crm.product.fields); a filter or select naming another is refused.
const PRODUCT_FIELDS: &[&str] = &[
    "ID",
    "CATALOG_ID",
    "PRICE",
    "CURRENCY_ID",
    "NAME",
    "CODE",
    "DESCRIPTION",
    "DESCRIPTION_TYPE",
    "ACTIVE",
    "SECTION_ID",
    "SORT",
    "VAT_ID",
    "VAT_INCLUDED",
    "MEASURE",
    "XML_ID",
    "DATE_CREATE",
    "TIMESTAMP_X",
    "MODIFIED_BY",
    "CREATED_BY",
];

/// `catalog.product.update` fields this example may send (catalog_product, camelCase).
const CATALOG_FIELDS: &[&str] = &[
    "name",
    "active",
    "code",
    "xmlId",
    "quantity",
    "quantityReserved",
    "quantityTrace",
    "canBuyZero",
    "purchasingPrice",
    "purchasingCurrency",
    "vatId",
    "vatIncluded",
    "measure",
    "weight",
];

/// A refused call: HTTP status, Bitrix24 code, description.
type Refusal = (StatusCode, &'static str, String);

#[derive(Default)]
pub struct Portal {
    /// `crm.product` records as the portal returns them (string values, `ID` included).
    pub products: BTreeMap<u64, Value>,
    pub deals: BTreeMap<u64, Value>,
    pub contacts: BTreeMap<u64, Value>,
    /// `crm.deal.productrows.get` rows by deal id.
    pub rows: BTreeMap<u64, Vec<Value>>,
    /// `crm.timeline.comment.add` fields as received.
    pub comments: Vec<Value>,
    /// Every method run (a batch's commands each under their own method), with arguments.
    pub calls: Vec<(String, Value)>,
    pub next_id: u64,
    /// Leaky bucket: level, last drain; the portal's plan drains 2 a second, holds 50.
    level: f64,
    drained_at: Option<Instant>,
    pub refused_by_bucket: usize,
    /// `quantity` of products (the catalog's view, `catalog.product.update`), by id.
    pub quantity: BTreeMap<u64, Value>,
    /// This many more `crm.product.add` calls make the product, then lose the answer.
    pub lose_adds: usize,
}

impl Portal {
    /// Methods called so far, in order.
    pub fn methods(&self) -> Vec<String> {
        self.calls.iter().map(|(m, _)| m.clone()).collect()
    }

    /// The products whose `XML_ID` is `xml_id`.
    pub fn by_xml_id(&self, xml_id: &str) -> Vec<&Value> {
        self.products
            .values()
            .filter(|p| p["XML_ID"] == xml_id)
            .collect()
    }

    /// Adds a product as if made in the portal by hand; returns its id.
    pub fn seed_product(&mut self, fields: &Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let mut record = json!({"ID": id.to_string(), "CATALOG_ID": "25", "ACTIVE": "Y",
            "CURRENCY_ID": "RUB", "PRICE": null, "XML_ID": null, "DESCRIPTION": null});
        merge(&mut record, Some(fields));
        self.products.insert(id, record);
        id
    }
}

#[derive(Clone)]
pub struct FakePortal {
    /// The inbound-webhook URL, ending with `/`.
    pub webhook_url: String,
    state: Arc<Mutex<Portal>>,
}

impl FakePortal {
    pub async fn start() -> FakePortal {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(Portal {
            next_id: 100,
            ..Portal::default()
        }));
        let app = Router::new()
            .route("/rest/{*rest}", post(rest))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakePortal {
            webhook_url: format!("http://{addr}/rest/1/{SECRET}/"),
            state,
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Portal) -> T) -> T {
        f(&mut self.state.lock().expect("portal lock"))
    }
}

/// The form body Bitrix24 posts for an event of an outbound webhook
/// (`application/x-www-form-urlencoded`, PHP-style keys).
pub fn event_body(event: &str, id: u64, ts: u64, application_token: &str) -> String {
    let pairs = [
        ("event", event.to_owned()),
        ("event_handler_id", "41".to_owned()),
        ("data[FIELDS][ID]", id.to_string()),
        ("ts", ts.to_string()),
        ("auth[domain]", "acme.bitrix24.kz".to_owned()),
        (
            "auth[client_endpoint]",
            "https://acme.bitrix24.kz/rest/".to_owned(),
        ),
        (
            "auth[server_endpoint]",
            "https://oauth.bitrix24.tech/rest/".to_owned(),
        ),
        ("auth[member_id]", "0f3c5e1a".to_owned()),
        ("auth[application_token]", application_token.to_owned()),
    ];
    serde_urlencoded::to_string(pairs).expect("form")
}

fn envelope_body(result: &Value) -> Value {
    let t = json!({"start": 1.0, "finish": 1.01, "duration": 0.01, "processing": 0.0,
        "date_start": "2026-01-15T10:00:00+05:00", "date_finish": "2026-01-15T10:00:00+05:00",
        "operating_reset_at": 1_800_000_000, "operating": 0});
    json!({"result": result, "time": t})
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (status, axum::Json(error_body(code, description))).into_response()
}

/// The catalog.* methods answer numeric codes (`"error": 0`, `200040300010`); the CRM and
/// system ones strings (possibly empty).
fn error_body(code: &str, description: &str) -> Value {
    let code = match code.parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(code),
    };
    json!({"error": code, "error_description": description})
}

async fn rest(
    State(state): State<Arc<Mutex<Portal>>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let parts: Vec<&str> = rest.split('/').collect();
    let method = match parts.as_slice() {
        [user, secret, method] if *user == "1" && *secret == SECRET => *method,
        _ => {
            return error(
                StatusCode::UNAUTHORIZED,
                "NO_AUTH_FOUND",
                "Wrong authorization data",
            );
        }
    };
    let method = method.strip_suffix(".json").unwrap_or(method).to_owned();
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let args: Value = if body.is_empty() {
        json!({})
    } else if form {
        nested(&serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body).unwrap_or_default())
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "The request body is not JSON",
                );
            }
        }
    };
    let mut p = state.lock().expect("portal lock");
    // The leaky bucket: every request adds one; the level drains 2 a second.
    let now = Instant::now();
    let drained = p
        .drained_at
        .map_or(0.0, |at| now.duration_since(at).as_secs_f64() * 2.0);
    p.level = (p.level - drained).max(0.0);
    p.drained_at = Some(now);
    if p.level + 1.0 > 50.0 {
        p.refused_by_bucket += 1;
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "QUERY_LIMIT_EXCEEDED",
            "Too many requests",
        );
    }
    p.level += 1.0;
    if method == "batch" {
        return batch(&mut p, &args);
    }
    p.calls.push((method.clone(), args.clone()));
    match dispatch(&mut p, &method, &args) {
        Ok(_) if method == "crm.product.add" && p.lose_adds > 0 => {
            // Made on the portal; the proxy in front gave up waiting for the answer.
            p.lose_adds -= 1;
            (
                StatusCode::GATEWAY_TIMEOUT,
                [("content-type", "text/html")],
                "<html><head><title>504 Gateway Time-out</title></head></html>",
            )
                .into_response()
        }
        Ok(body) => axum::Json(body).into_response(),
        Err((status, code, description)) => error(status, code, &description),
    }
}

/// Form pairs with PHP-style keys (`fields[NAME]`, `select[]`) as nested JSON; values stay
/// strings, as Bitrix24 receives them; `a[]=x&a[]=y` is a list.
pub fn nested(pairs: &[(String, String)]) -> Value {
    let mut root = Map::new();
    for (key, value) in pairs {
        let (head, mut rest) = key
            .split_once('[')
            .map_or((key.as_str(), ""), |(h, r)| (h, r));
        let mut path = vec![head.to_owned()];
        while let Some((segment, after)) = rest.split_once(']') {
            path.push(segment.to_owned());
            rest = after.strip_prefix('[').unwrap_or(after);
        }
        insert(&mut root, &path, value.clone());
    }
    Value::Object(root)
}

fn insert(map: &mut Map<String, Value>, path: &[String], value: String) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.len() == 1 && rest[0].is_empty() {
        let slot = map.entry(first.clone()).or_insert_with(|| json!([]));
        if let Value::Array(items) = slot {
            items.push(Value::String(value));
        }
        return;
    }
    if rest.is_empty() {
        map.insert(first.clone(), Value::String(value));
        return;
    }
    let slot = map
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(inner) = slot {
        insert(inner, rest, value);
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn not_found() -> Refusal {
    (StatusCode::BAD_REQUEST, "", "Not found".into())
}

fn invalid_id() -> Refusal {
    (
        StatusCode::BAD_REQUEST,
        "",
        "ID is not defined or invalid.".into(),
    )
}

/// Field values as the portal keeps them: strings (numbers written as text).
fn merge(record: &mut Value, fields: Option<&Value>) {
    if let (Value::Object(r), Some(Value::Object(f))) = (record, fields) {
        for (k, v) in f {
            let v = match v {
                Value::Number(n) => Value::String(n.to_string()),
                other => other.clone(),
            };
            r.insert(k.clone(), v);
        }
    }
}

/// The whole answer body of one method (`result`, and `total`/`next` for lists).
fn dispatch(p: &mut Portal, method: &str, args: &Value) -> Result<Value, Refusal> {
    let ok = |v: Value| Ok(envelope_body(&v));
    let id = number(&args["id"]);
    match method {
        "crm.product.list" => list(p.products.values().cloned().collect(), args),
        "crm.product.get" => match id.and_then(|id| p.products.get(&id)) {
            Some(product) => ok(product.clone()),
            None => Err(not_found()),
        },
        "crm.product.add" => {
            let Some(fields) = args.get("fields").filter(|f| f.is_object()) else {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "",
                    "Fields are not specified.".into(),
                ));
            };
            check_fields(fields)?;
            if fields["NAME"].as_str().is_none_or(|n| n.trim().is_empty()) {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "",
                    "The field NAME is required.".into(),
                ));
            }
            Ok(envelope_body(&json!(p.seed_product(fields))))
        }
        "crm.product.update" => {
            let id = id.ok_or_else(invalid_id)?;
            let fields = args.get("fields").cloned().unwrap_or(json!({}));
            check_fields(&fields)?;
            let product = p.products.get_mut(&id).ok_or_else(not_found)?;
            merge(product, Some(&fields));
            ok(json!(true))
        }
        "catalog.product.update" => {
            let Some(id) = id else {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "100",
                    "Parameter id is missing".into(),
                ));
            };
            let fields = match args.get("fields") {
                Some(Value::Object(f)) if !f.is_empty() => f.clone(),
                _ => {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        "100",
                        "Parameter fields is missing or empty".into(),
                    ));
                }
            };
            if let Some(k) = fields
                .keys()
                .find(|k| !CATALOG_FIELDS.contains(&k.as_str()))
            {
                return Err((StatusCode::BAD_REQUEST, "0", format!("Unknown field: {k}")));
            }
            let Some(product) = p.products.get(&id).cloned() else {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "0",
                    "Product with the specified ID does not exist".into(),
                ));
            };
            if let Some(q) = fields.get("quantity") {
                let q = match q {
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    other => other.as_f64(),
                };
                let Some(q) = q else {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        "0",
                        "quantity is not a number".into(),
                    ));
                };
                p.quantity.insert(id, json!(q));
            }
            ok(
                json!({"element": {"id": id, "iblockId": 25, "name": product["NAME"],
                "xmlId": product["XML_ID"], "active": product["ACTIVE"],
                "quantity": p.quantity.get(&id).cloned().unwrap_or(Value::Null)}}),
            )
        }
        "crm.deal.get" => match id.and_then(|id| p.deals.get(&id)) {
            Some(deal) => ok(deal.clone()),
            None if id.is_none() => Err(invalid_id()),
            None => Err(not_found()),
        },
        "crm.contact.get" => match id.and_then(|id| p.contacts.get(&id)) {
            Some(contact) => ok(contact.clone()),
            None if id.is_none() => Err(invalid_id()),
            None => Err(not_found()),
        },
        "crm.deal.productrows.get" => {
            let Some(id) = id else {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "",
                    "The parameter id is invalid or not defined.".into(),
                ));
            };
            if !p.deals.contains_key(&id) {
                return Err(not_found());
            }
            ok(Value::Array(p.rows.get(&id).cloned().unwrap_or_default()))
        }
        "crm.timeline.comment.add" => {
            // Lower-case `fields` since crm 23.100.0.
            let fields = args.get("fields").cloned().unwrap_or(Value::Null);
            let known = match (fields["ENTITY_TYPE"].as_str(), number(&fields["ENTITY_ID"])) {
                (Some("deal"), Some(id)) => p.deals.contains_key(&id),
                (Some("contact"), Some(id)) => p.contacts.contains_key(&id),
                _ => false,
            };
            if !known {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "",
                    "Entity not found or ENTITY_TYPE is wrong".into(),
                ));
            }
            if fields["COMMENT"].as_str().is_none_or(str::is_empty) {
                return Err((StatusCode::BAD_REQUEST, "", "Empty comment".into()));
            }
            p.next_id += 1;
            p.comments.push(fields);
            ok(json!(p.next_id))
        }
        _ => Err((
            StatusCode::NOT_FOUND,
            "ERROR_METHOD_NOT_FOUND",
            "Method not found!".into(),
        )),
    }
}

fn check_fields(fields: &Value) -> Result<(), Refusal> {
    let unknown: Vec<&String> = fields
        .as_object()
        .map(|f| {
            f.keys()
                .filter(|k| !PRODUCT_FIELDS.contains(&k.as_str()) && !k.starts_with("PROPERTY_"))
                .collect()
        })
        .unwrap_or_default();
    match unknown.first() {
        None => Ok(()),
        Some(k) => Err((StatusCode::BAD_REQUEST, "", format!("Unknown field: {k}"))),
    }
}

/// A classic list: `filter` with the prefixes `>`, `>=`, `<`, `<=`, `=`, `!` (a list value
/// is "one of"), `order`, `select`, pages of 50 from `start` with `total` and `next`.
fn list(rows: Vec<Value>, args: &Value) -> Result<Value, Refusal> {
    let filter = args["filter"].as_object().cloned().unwrap_or_default();
    let mut conds = Vec::new();
    for (key, want) in &filter {
        let (op, field) = [">=", "<=", "!=", ">", "<", "=", "!"]
            .iter()
            .find_map(|op| key.strip_prefix(op).map(|f| (*op, f)))
            .unwrap_or(("=", key.as_str()));
        if !PRODUCT_FIELDS.contains(&field) {
            return Err((
                StatusCode::BAD_REQUEST,
                "",
                format!("Unknown filter field: {field}"),
            ));
        }
        conds.push((op, field.to_owned(), want.clone()));
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let compare = |got: &Value, want: &Value| match (number(got), number(want)) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => text(got).cmp(&text(want)),
    };
    let mut hits: Vec<Value> = rows
        .into_iter()
        .filter(|r| {
            conds.iter().all(|(op, field, want)| {
                let got = r.get(field).cloned().unwrap_or(Value::Null);
                let one_of = |w: &Value| match w {
                    Value::Array(options) => options.iter().any(|o| compare(&got, o).is_eq()),
                    single => compare(&got, single).is_eq(),
                };
                match *op {
                    ">" => compare(&got, want).is_gt(),
                    ">=" => compare(&got, want).is_ge(),
                    "<" => compare(&got, want).is_lt(),
                    "<=" => compare(&got, want).is_le(),
                    "!" | "!=" => !one_of(want),
                    _ => one_of(want),
                }
            })
        })
        .collect();
    if let Some((field, dir)) = args["order"].as_object().and_then(|o| o.iter().next()) {
        hits.sort_by(|a, b| compare(&a[field.as_str()], &b[field.as_str()]));
        if dir.as_str().is_some_and(|d| d.eq_ignore_ascii_case("DESC")) {
            hits.reverse();
        }
    }
    let select: Vec<String> = match &args["select"] {
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    if let Some(bad) = select
        .iter()
        .find(|s| *s != "*" && !PRODUCT_FIELDS.contains(&s.as_str()))
    {
        return Err((
            StatusCode::BAD_REQUEST,
            "",
            format!("Unknown select field: {bad}"),
        ));
    }
    let pick = |r: Value| {
        if select.is_empty() || select.iter().any(|s| s == "*") {
            return r;
        }
        let mut picked = Map::new();
        for field in &select {
            picked.insert(field.clone(), r[field.as_str()].clone());
        }
        Value::Object(picked)
    };
    let start = number(&args["start"]).unwrap_or(0);
    let start = usize::try_from(start).unwrap_or(usize::MAX);
    let total = hits.len();
    let page: Vec<Value> = hits.into_iter().skip(start).take(PAGE).map(pick).collect();
    let mut body = envelope_body(&Value::Array(page));
    body["total"] = json!(total);
    if start + PAGE < total {
        body["next"] = json!(start + PAGE);
    }
    Ok(body)
}

/// `$result[key][0][ID]` in a command: the value at that path of an earlier command's
/// result. A path that leads nowhere (an empty list) is left as written, so the command
/// sees no valid value and fails.
fn references(line: &str, results: &Map<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("$result[") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + "$result".len()..];
        let mut path = Vec::new();
        let mut end = 0;
        while tail[end..].starts_with('[') {
            let Some(close) = tail[end..].find(']') else {
                break;
            };
            path.push(&tail[end + 1..end + close]);
            end += close + 1;
        }
        let mut value = path.first().and_then(|k| results.get(*k));
        for seg in path.iter().skip(1) {
            value = value.and_then(|v| match v {
                Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
                Value::Object(m) => m.get(*seg),
                _ => None,
            });
        }
        match value {
            Some(Value::String(s)) => out.push_str(s),
            Some(v @ Value::Number(_)) => out.push_str(&v.to_string()),
            _ => out.push_str(&rest[at..at + "$result".len() + end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `batch`: each command runs like a call of its own (query-string arguments); `halt` stops
/// at the first failure. HTTP 200 whatever the commands did; empty collections are `[]`.
fn batch(p: &mut Portal, args: &Value) -> Response {
    let Some(cmd) = args["cmd"].as_object() else {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "cmd required");
    };
    if cmd.len() > 50 {
        return error(
            StatusCode::BAD_REQUEST,
            "ERROR_BATCH_LENGTH_EXCEEDED",
            "Max batch length exceeded",
        );
    }
    let halt = matches!(&args["halt"], Value::Number(n) if n.as_i64() != Some(0))
        || args["halt"] == json!(true)
        || args["halt"] == json!("1");
    let (mut result, mut errors) = (Map::new(), Map::new());
    let (mut totals, mut nexts, mut times) = (Map::new(), Map::new(), Map::new());
    for (key, line) in cmd {
        let line = references(line.as_str().unwrap_or_default(), &result);
        let (method, query) = line.split_once('?').unwrap_or((&line, ""));
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let sub_args = nested(&pairs);
        p.calls.push((method.to_owned(), sub_args.clone()));
        let answer = if method == "batch" {
            Err((
                StatusCode::METHOD_NOT_ALLOWED,
                "ERROR_BATCH_METHOD_NOT_ALLOWED",
                "Method is not allowed for batch usage".into(),
            ))
        } else {
            dispatch(p, method, &sub_args)
        };
        match answer {
            Ok(mut body) => {
                result.insert(key.clone(), body["result"].take());
                if let Some(t) = body.get("total") {
                    totals.insert(key.clone(), t.clone());
                }
                if let Some(n) = body.get("next") {
                    nexts.insert(key.clone(), n.clone());
                }
                times.insert(key.clone(), body["time"].take());
            }
            Err((_, code, description)) => {
                errors.insert(key.clone(), error_body(code, &description));
                if halt {
                    break;
                }
            }
        }
    }
    let obj_or_list = |m: Map<String, Value>| {
        if m.is_empty() {
            json!([])
        } else {
            Value::Object(m)
        }
    };
    axum::Json(envelope_body(&json!({
        "result": obj_or_list(result), "result_error": obj_or_list(errors),
        "result_total": obj_or_list(totals), "result_next": obj_or_list(nexts),
        "result_time": obj_or_list(times)
    })))
    .into_response()
}
