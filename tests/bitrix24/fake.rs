//! A fake Bitrix24 portal after the checklist of the connector reference (§1.10):
//! `/rest/<user>/<secret>/<method>.json` and `/rest/<method>.json?auth=`, JSON or form bodies,
//! `{"result", "time"}` envelopes, pages of 50 with `total`/`next` and the `start=-1` mode,
//! Bitrix24 error bodies (an empty `error` for CRM "Not found"), a leaky bucket answering
//! `503 QUERY_LIMIT_EXCEEDED`, access tokens that expire (`401 expired_token`) and an OAuth
//! server that rotates both tokens, `batch` (halt, `$result[key][0][FIELD]` references, the
//! `[]`-for-empty quirk), a portal that moved: its old address answers `302` to the new one,
//! the goods (tests/bitrix24/catalog.rs: `crm.product.*`, `catalog.product.update`, deal
//! product rows), whose `crm.product.add` can be made to lose its answer (the product is made;
//! the answer comes too late, or the proxy in front answers `504`); the form body of an
//! outgoing event as the portal posts it; and telephony
//! (`telephony.externalCall.register|finish|attachRecord`, application context only; see the
//! section at the end). One fake for every test binary that talks to Bitrix24.

// Shared by the test binaries that talk to Bitrix24; each uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

#[path = "catalog.rs"]
mod catalog;

pub const WEBHOOK_TOKEN: &str = "wh7k2q9x4b24tok";
pub const CLIENT_ID: &str = "local.b24app.1";
pub const CLIENT_SECRET: &str = "client-secret-b24-1";

/// One command of a `batch` call: key, method, query pairs.
pub type BatchCmd = (String, String, Vec<(String, String)>);

/// A failed call: HTTP status, Bitrix24 code, description.
type Refusal = (StatusCode, &'static str, String);

/// Fields of a smart-process item a `crm.item.list` filter may name (besides `ufCrm…`).
const ITEM_FIELDS: &[&str] = &[
    "id",
    "title",
    "xmlId",
    "stageId",
    "categoryId",
    "opportunity",
    "assignedById",
    "createdTime",
    "updatedTime",
];

/// Classic list methods answer pages of this many.
pub const PAGE: usize = 50;

/// How late a lost answer comes (set the system's `timeout` well under it).
pub const LOST_ANSWER_DELAY: Duration = Duration::from_millis(1500);

#[derive(Default)]
pub struct Portal {
    pub deals: BTreeMap<u64, Value>,
    pub contacts: BTreeMap<u64, Value>,
    /// Smart-process items by entityTypeId, then id (`crm.item.*`, camelCase fields).
    pub items: BTreeMap<u64, BTreeMap<u64, Value>>,
    /// `crm.status.list` rows (`ENTITY_ID`, `STATUS_ID`, `NAME`, `SEMANTICS`, …).
    pub statuses: Vec<Value>,
    /// `crm.timeline.comment.add` fields as received.
    pub comments: Vec<Value>,
    pub next_id: u64,
    /// (method, how it was authorized) of each accepted call (a `batch` is one call).
    pub calls: Vec<(String, String)>,
    /// Every method run, with its arguments: each accepted call but `batch`, and each command
    /// of a `batch` under its own method.
    pub runs: Vec<(String, Value)>,
    /// The `Host` of each accepted call.
    pub hosts: Vec<String>,
    /// The arguments of each accepted call of a list method.
    pub list_args: Vec<(String, Value)>,
    /// Leaky bucket: level, last drain, capacity, drain per second.
    pub level: f64,
    pub drained_at: Option<Instant>,
    pub capacity: f64,
    pub per_second: f64,
    /// Deal ids of `crm.deal.get` calls, with when and whether the bucket refused them.
    pub gets: Vec<(String, Instant, bool)>,
    pub refused_by_bucket: usize,
    /// OAuth: the access token accepted now, the refresh token that buys the next one.
    pub access: String,
    pub refresh: String,
    /// After this many accepted OAuth calls the access token expires.
    pub expire_after: Option<usize>,
    pub oauth_calls: usize,
    pub expired_answers: usize,
    pub refreshes: usize,
    /// Refresh tokens already used: presenting one again is `invalid_grant`.
    pub spent: Vec<String>,
    /// The `Host` of each token request.
    pub token_hosts: Vec<String>,
    /// The address the refresh answer names as `client_endpoint` and `server_endpoint`.
    pub endpoint: String,
    /// Commands of `batch` calls: (key, method, query pairs).
    pub batch_cmds: Vec<BatchCmd>,
    /// The CRM catalog (`crm.product.*`; `catalog.product.update` changes the same goods).
    pub products: BTreeMap<u64, Value>,
    /// `quantity` of products (the trade catalog's view, `catalog.product.update`), by id.
    pub quantity: BTreeMap<u64, Value>,
    /// `crm.deal.productrows.get` rows by deal id.
    pub product_rows: BTreeMap<u64, Vec<Value>>,
    /// This many more `crm.product.add` calls make the product but answer only after
    /// `LOST_ANSWER_DELAY`, past the client's timeout: the answer is lost.
    pub lose_product_adds: usize,
    /// This many more `crm.product.add` calls make the product, then the proxy in front of
    /// the portal gives up waiting: `504 Gateway Time-out`, an HTML page.
    pub proxy_loses_product_adds: usize,
    /// Methods that answer `QUERY_LIMIT_EXCEEDED` this many more times inside a batch.
    pub limited_in_batch: BTreeMap<String, usize>,
    /// The portal moved: a request to the old address (`Fake::url`) answers 302 to this one.
    pub moved_to: Option<String>,
    pub redirects: usize,
    /// `telephony.externalCall.*` (see the telephony section at the end of this file).
    pub telephony: Telephony,
}

#[derive(Clone)]
pub struct Fake {
    /// The portal's address (`http://127.0.0.1:<port>`).
    pub url: String,
    /// A second address of the same portal (another port), for moves and endpoints.
    pub other_url: String,
    pub portal: Arc<Mutex<Portal>>,
}

pub fn envelope_body(result: &Value) -> Value {
    let t = json!({"start": 1.0, "finish": 1.01, "duration": 0.01, "processing": 0.0,
        "date_start": "2026-11-27T10:00:00+03:00", "date_finish": "2026-11-27T10:00:00+03:00",
        "operating_reset_at": 1_800_000_000, "operating": 0});
    json!({"result": result, "time": t})
}

fn envelope(result: &Value) -> Response {
    Json(envelope_body(result)).into_response()
}

pub fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (status, Json(error_body(code, description))).into_response()
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
        ("auth[member_id]", "0f3c".to_owned()),
        ("auth[application_token]", application_token.to_owned()),
    ];
    serde_urlencoded::to_string(pairs).expect("form")
}

impl Fake {
    pub async fn start() -> Fake {
        let portal = Arc::new(Mutex::new(Portal {
            next_id: 100,
            capacity: 50.0,
            per_second: 2.0,
            access: "access-0001".into(),
            refresh: "refresh-0001".into(),
            ..Portal::default()
        }));
        let app = Router::new()
            .route("/rest/{*rest}", post(rest))
            .route("/oauth/token/", get(token))
            .with_state(portal.clone());
        let mut urls = Vec::new();
        for _ in 0..2 {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            urls.push(format!("http://{}", listener.local_addr().expect("addr")));
            let app = app.clone();
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let (url, other_url) = (urls[0].clone(), urls[1].clone());
        portal.lock().expect("portal").endpoint = url.clone();
        Fake {
            url,
            other_url,
            portal,
        }
    }

    /// The inbound-webhook URL (user 1), ending with `/`.
    pub fn webhook_url(&self) -> String {
        format!("{}/rest/1/{WEBHOOK_TOKEN}/", self.url)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Portal) -> T) -> T {
        f(&mut self.portal.lock().expect("portal"))
    }
}

impl Portal {
    /// Methods run so far (`runs`), in order.
    pub fn methods(&self) -> Vec<String> {
        self.runs.iter().map(|(m, _)| m.clone()).collect()
    }

    /// The arguments of every run of `method`, in order.
    pub fn args_of(&self, method: &str) -> Vec<Value> {
        let runs = self.runs.iter().filter(|(m, _)| m == method);
        runs.map(|(_, a)| a.clone()).collect()
    }
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `/rest/<user>/<secret>/<method>[.json]` or `/rest/<method>[.json]?auth=<token>`; the
/// arguments as JSON or as a form (`fields[TITLE]=…`).
async fn rest(
    State(portal): State<Arc<Mutex<Portal>>>,
    Path(rest): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (answer, lose) = call(&portal, &rest, &query, &headers, &body);
    if lose {
        // Done on the portal, but the answer arrives after the caller gave up.
        tokio::time::sleep(LOST_ANSWER_DELAY).await;
    }
    answer
}

/// One call, answered with whether its answer is to be lost.
fn call(
    portal: &Mutex<Portal>,
    rest: &str,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, bool) {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let args: Value = if body.is_empty() {
        json!({})
    } else if form {
        nested(&serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default())
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => {
                return (
                    error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_REQUEST",
                        "The request body is not JSON",
                    ),
                    false,
                );
            }
        }
    };
    let mut p = portal.lock().expect("portal");
    let host = host(headers);
    if let Some(to) = p.moved_to.clone()
        && !to.ends_with(&host)
    {
        // A moved portal: the old address points at the new one, path and query kept.
        p.redirects += 1;
        let mut location = format!("{to}/rest/{rest}");
        if !query.is_empty() {
            location.push('?');
            location.push_str(&serde_urlencoded::to_string(query).expect("query"));
        }
        return (
            (StatusCode::FOUND, [("location", location)]).into_response(),
            false,
        );
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let (method, how) = match parts.as_slice() {
        [user, secret, method] => {
            if *user != "1" || *secret != WEBHOOK_TOKEN {
                return (
                    error(
                        StatusCode::UNAUTHORIZED,
                        "NO_AUTH_FOUND",
                        "Wrong authorization data",
                    ),
                    false,
                );
            }
            (method.to_string(), "webhook")
        }
        [method] => {
            let token = query
                .get("auth")
                .cloned()
                .or_else(|| args.get("auth").and_then(Value::as_str).map(str::to_owned));
            let Some(token) = token else {
                return (
                    error(
                        StatusCode::UNAUTHORIZED,
                        "NO_AUTH_FOUND",
                        "Wrong authorization data",
                    ),
                    false,
                );
            };
            if p.expire_after.is_some_and(|n| p.oauth_calls >= n) && token == p.access {
                // The token in use expires now; the next refresh issues a new one.
                p.access = format!("{}-expired", p.access);
            }
            if token != p.access {
                p.expired_answers += 1;
                return (
                    error(
                        StatusCode::UNAUTHORIZED,
                        "expired_token",
                        "The access token provided has expired.",
                    ),
                    false,
                );
            }
            p.oauth_calls += 1;
            (method.to_string(), "oauth")
        }
        _ => {
            return (
                error(
                    StatusCode::NOT_FOUND,
                    "ERROR_METHOD_NOT_FOUND",
                    "Method not found!",
                ),
                false,
            );
        }
    };
    let method = method.strip_suffix(".json").unwrap_or(&method).to_owned();
    // The leaky bucket: every request adds one, the level drains `per_second`.
    let now = Instant::now();
    let drained = p.drained_at.map_or(0.0, |at| {
        now.duration_since(at).as_secs_f64() * p.per_second
    });
    p.level = (p.level - drained).max(0.0);
    p.drained_at = Some(now);
    let over = p.level + 1.0 > p.capacity;
    if method == "crm.deal.get" {
        let id = args["id"].to_string().trim_matches('"').to_owned();
        p.gets.push((id, now, over));
    }
    if over {
        p.refused_by_bucket += 1;
        return (
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "QUERY_LIMIT_EXCEEDED",
                "Too many requests",
            ),
            false,
        );
    }
    p.level += 1.0;
    p.calls.push((method.clone(), how.into()));
    p.hosts.push(host);
    if method == "batch" {
        return (batch(&mut p, &args), false);
    }
    p.runs.push((method.clone(), args.clone()));
    if let Some(answer) = telephony(&mut p, &method, &args, how) {
        return answer;
    }
    let answer = match dispatch(&mut p, &method, &args) {
        Ok(body) => Json(body).into_response(),
        Err((status, code, description)) => error(status, code, &description),
    };
    let made = method == "crm.product.add" && answer.status().is_success();
    if made && p.proxy_loses_product_adds > 0 {
        // Made on the portal; the proxy in front gave up waiting for the answer.
        p.proxy_loses_product_adds -= 1;
        let page = "<html><head><title>504 Gateway Time-out</title></head></html>";
        let gone = (
            StatusCode::GATEWAY_TIMEOUT,
            [("content-type", "text/html")],
            page,
        );
        return (gone.into_response(), false);
    }
    let lose = made && p.lose_product_adds > 0;
    if lose {
        p.lose_product_adds -= 1;
    }
    (answer, lose)
}

/// Form pairs with PHP-style keys (`fields[PHONE][0][VALUE]`, `select[]`) as nested JSON;
/// values stay strings, as Bitrix24 receives them; `a[]=x&a[]=y` is a list.
pub fn nested(pairs: &[(String, String)]) -> Value {
    let mut root = Map::new();
    for (key, value) in pairs {
        let mut path = Vec::new();
        let (head, mut rest) = key
            .split_once('[')
            .map_or((key.as_str(), ""), |(h, r)| (h, r));
        path.push(head.to_owned());
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

fn id_arg(args: &Value) -> Option<u64> {
    number(&args["id"])
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
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

fn merge(record: &mut Value, fields: Option<&Value>) {
    if let (Value::Object(r), Some(Value::Object(f))) = (record, fields) {
        for (k, v) in f {
            r.insert(k.clone(), v.clone());
        }
    }
}

/// The whole answer body of one method (`result`, and `total`/`next` for lists).
fn dispatch(p: &mut Portal, method: &str, args: &Value) -> Result<Value, Refusal> {
    let ok = |v: Value| Ok(envelope_body(&v));
    if let Some(answer) = catalog::call(p, method, args) {
        return answer;
    }
    match method {
        "server.time" => ok(json!("2026-11-27T10:00:00+03:00")),
        "crm.deal.get" | "crm.contact.get" => {
            let id = id_arg(args).ok_or_else(invalid_id)?;
            let table = if method == "crm.deal.get" {
                &p.deals
            } else {
                &p.contacts
            };
            table.get(&id).cloned().map_or_else(|| Err(not_found()), ok)
        }
        "crm.deal.update" | "crm.contact.update" => {
            let id = id_arg(args).ok_or_else(invalid_id)?;
            let table = if method == "crm.deal.update" {
                &mut p.deals
            } else {
                &mut p.contacts
            };
            let record = table.get_mut(&id).ok_or_else(not_found)?;
            merge(record, args.get("fields"));
            ok(json!(true))
        }
        "crm.contact.add" | "crm.deal.add" => {
            let Some(fields) = args.get("fields").filter(|f| f.is_object()) else {
                return Err((StatusCode::BAD_REQUEST, "", "fields required".into()));
            };
            p.next_id += 1;
            let id = p.next_id;
            let mut record = fields.clone();
            record["ID"] = json!(id.to_string());
            if method == "crm.contact.add" {
                p.contacts.insert(id, record);
            } else {
                p.deals.insert(id, record);
            }
            ok(json!(id))
        }
        "crm.duplicate.findbycomm" => {
            if args["type"] != "PHONE" && args["type"] != "EMAIL" {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "",
                    "Communication type is not defined.".into(),
                ));
            }
            let wanted: Vec<String> = args["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).map(digits).collect())
                .unwrap_or_default();
            let hits: Vec<u64> = p
                .contacts
                .iter()
                .filter(|(_, c)| {
                    c["PHONE"].as_array().into_iter().flatten().any(|ph| {
                        wanted.contains(&digits(ph["VALUE"].as_str().unwrap_or_default()))
                    })
                })
                .map(|(id, _)| *id)
                .collect();
            if hits.is_empty() {
                // Empty collections are serialized as `[]`.
                ok(json!([]))
            } else {
                ok(json!({"CONTACT": hits}))
            }
        }
        "crm.contact.list" | "crm.deal.list" => {
            p.list_args.push((method.to_owned(), args.clone()));
            let rows: Vec<Value> = if method == "crm.contact.list" {
                p.contacts.values().cloned().collect()
            } else {
                p.deals.values().cloned().collect()
            };
            list(rows, args, false)
        }
        "crm.status.list" => {
            let filter = args["filter"].as_object().cloned().unwrap_or_default();
            let rows: Vec<Value> = p
                .statuses
                .iter()
                .filter(|s| filter.iter().all(|(k, v)| &s[k] == v))
                .cloned()
                .collect();
            ok(Value::Array(rows))
        }
        "crm.timeline.comment.add" => {
            // Lower-case `fields` since crm 23.100.0.
            let fields = args.get("fields").cloned().unwrap_or(Value::Null);
            let entity_id = number(&fields["ENTITY_ID"]);
            let known = match (fields["ENTITY_TYPE"].as_str(), entity_id) {
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
        m if m.starts_with("crm.item.") => item(p, &m["crm.item.".len()..], args),
        _ => Err((
            StatusCode::NOT_FOUND,
            "ERROR_METHOD_NOT_FOUND",
            "Method not found!".into(),
        )),
    }
}

/// `crm.item.*`: camelCase fields, answers under `item` / `items`.
fn item(p: &mut Portal, action: &str, args: &Value) -> Result<Value, Refusal> {
    let Some(type_id) = number(&args["entityTypeId"]) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "NOT_FOUND",
            "Smart process not found".into(),
        ));
    };
    let Some(items) = p.items.get_mut(&type_id) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "NOT_FOUND",
            "Smart process not found".into(),
        ));
    };
    match action {
        "get" => match id_arg(args).and_then(|id| items.get(&id)) {
            Some(i) => Ok(envelope_body(&json!({"item": i}))),
            None => Err((
                StatusCode::BAD_REQUEST,
                "NOT_FOUND",
                "Element not found".into(),
            )),
        },
        "add" => {
            let fields = args.get("fields").cloned().unwrap_or(json!({}));
            let id = items.keys().max().map_or(1, |m| m + 1);
            let mut record = fields;
            record["id"] = json!(id);
            record["entityTypeId"] = json!(type_id);
            items.insert(id, record.clone());
            Ok(envelope_body(&json!({"item": record})))
        }
        "update" => {
            let record = id_arg(args).and_then(|id| items.get_mut(&id)).ok_or((
                StatusCode::BAD_REQUEST,
                "NOT_FOUND",
                "Element not found".into(),
            ))?;
            merge(record, args.get("fields"));
            let out = record.clone();
            Ok(envelope_body(&json!({"item": out})))
        }
        "list" => {
            let rows: Vec<Value> = items.values().cloned().collect();
            let mut body = list(rows, args, true)?;
            let rows = body["result"].take();
            body["result"] = json!({"items": rows});
            Ok(body)
        }
        _ => Err((
            StatusCode::NOT_FOUND,
            "ERROR_METHOD_NOT_FOUND",
            "Method not found!".into(),
        )),
    }
}

/// A classic list: `filter` with the prefixes `>`, `>=`, `<`, `<=`, `=`, `!` (numbers compare
/// as numbers, a list value is "one of"), `order`, `select`, pages of 50 from `start` with
/// `total` and `next`; `start=-1`
/// gives the first 50 without counting (no `total`, no `next`). An unknown filter field of
/// `crm.item.list` is `INVALID_ARG_VALUE`.
fn list(rows: Vec<Value>, args: &Value, strict: bool) -> Result<Value, Refusal> {
    let filter = args["filter"].as_object().cloned().unwrap_or_default();
    let mut conds = Vec::new();
    for (key, want) in &filter {
        let (op, field) = ["!=", ">=", "<=", ">", "<", "=", "!"]
            .iter()
            .find_map(|op| key.strip_prefix(op).map(|f| (*op, f)))
            .unwrap_or(("=", key.as_str()));
        if strict && !ITEM_FIELDS.contains(&field) && !field.starts_with("ufCrm") {
            return Err((
                StatusCode::BAD_REQUEST,
                "INVALID_ARG_VALUE",
                format!("Invalid filter: field '{field}' is not allowed in filter"),
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
    let select: Vec<String> = args["select"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
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
    let start = match &args["start"] {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    };
    if start < 0 {
        let page: Vec<Value> = hits.into_iter().take(PAGE).map(pick).collect();
        return Ok(envelope_body(&Value::Array(page)));
    }
    let start = usize::try_from(start).unwrap_or(0);
    let total = hits.len();
    let page: Vec<Value> = hits.into_iter().skip(start).take(PAGE).map(pick).collect();
    let mut body = envelope_body(&Value::Array(page));
    body["total"] = json!(total);
    if start + PAGE < total {
        body["next"] = json!(start + PAGE);
    }
    Ok(body)
}

/// `batch`: each command runs like a call of its own (query-string arguments,
/// `$result[key][0][FIELD]` replaced by an earlier result); `halt` stops at the first failure.
/// HTTP 200 whatever the commands did; empty collections are `[]`.
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
        p.batch_cmds
            .push((key.clone(), method.to_owned(), pairs.clone()));
        let sub_args = nested(&pairs);
        p.runs.push((method.to_owned(), sub_args.clone()));
        let limited = p.limited_in_batch.get_mut(method).filter(|n| **n > 0);
        let answer = if method == "batch" {
            Err((
                StatusCode::METHOD_NOT_ALLOWED,
                "ERROR_BATCH_METHOD_NOT_ALLOWED",
                "Method is not allowed for batch usage".into(),
            ))
        } else if let Some(n) = limited {
            *n -= 1;
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "QUERY_LIMIT_EXCEEDED",
                "Too many requests".into(),
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
    envelope(&json!({
        "result": obj_or_list(result), "result_error": obj_or_list(errors),
        "result_total": obj_or_list(totals), "result_next": obj_or_list(nexts),
        "result_time": obj_or_list(times)
    }))
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

/// `GET /oauth/token/?grant_type=refresh_token&client_id&client_secret&refresh_token`: a new
/// pair each time; the refresh token used is spent.
async fn token(
    State(portal): State<Arc<Mutex<Portal>>>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut p = portal.lock().expect("portal");
    p.token_hosts.push(host(&headers));
    let ok = q.get("grant_type").map(String::as_str) == Some("refresh_token")
        && q.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && q.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
        && q.get("refresh_token") == Some(&p.refresh);
    if !ok {
        return error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid grant");
    }
    let spent = p.refresh.clone();
    p.spent.push(spent);
    p.refreshes += 1;
    p.access = format!("access-{:04}", p.refreshes + 1);
    p.refresh = format!("refresh-{:04}", p.refreshes + 1);
    p.expire_after = None;
    let endpoint = p.endpoint.clone();
    Json(json!({
        "access_token": p.access, "refresh_token": p.refresh, "expires_in": 3600,
        "expires": 1_800_000_000, "client_endpoint": format!("{endpoint}/rest/"),
        "server_endpoint": format!("{endpoint}/rest/"), "domain": "oauth.bitrix24.tech",
        "member_id": "0f3c", "scope": "crm", "status": "L", "user_id": 1
    }))
    .into_response()
}

// ---------------------------------------------------------------- telephony
//
// `telephony.externalCall.register|finish|attachRecord` after the official pages
// (b24restdocs `api-reference/telephony/telephony-external-call-*.md`, reference §1.7) and the
// bodies in `specs/bitrix24/doc-examples/telephony.externalcall.*.json`. Method names are
// case-insensitive, as on a portal. Kept apart from the CRM methods above on purpose.

/// Registrations found again by the documented re-registration rule.
pub const REREGISTER_WINDOW: Duration = Duration::from_secs(30 * 60);

/// An employee who can take calls (`user.get`: `ID`, `UF_PHONE_INNER`, `ACTIVE`).
#[derive(Clone, Debug)]
pub struct TelUser {
    pub id: u64,
    pub inner: String,
    pub active: bool,
}

/// A record attached to a finished call.
#[derive(Clone, Debug, PartialEq)]
pub struct Attached {
    pub file_id: u64,
    pub filename: String,
    /// `FILE_CONTENT`, decoded.
    pub content: Option<Vec<u8>>,
    pub url: Option<String>,
}

/// One registered call.
#[derive(Clone, Debug)]
pub struct ExternalCall {
    pub call_id: String,
    /// PHONE_NUMBER, TYPE, user id, LINE_NUMBER, EXTERNAL_CALL_ID: the re-registration key.
    pub key: (String, u64, u64, String, String),
    /// When it was registered, on the fake's clock (`Telephony::now`).
    pub at: Instant,
    /// The `register` arguments as received.
    pub args: Value,
    /// The `register` result, answered again on a re-registration.
    pub result: Value,
    pub crm: Option<(String, u64)>,
    /// The statistics row `finish` made (its result); `None` while the call is active.
    pub finished: Option<Value>,
    pub record: Option<Attached>,
}

/// The portal's telephony: employees, calls, the leads and call activities they made.
#[derive(Debug)]
pub struct Telephony {
    pub users: Vec<TelUser>,
    pub calls: Vec<ExternalCall>,
    /// Leads made by `CRM_CREATE=1` (classic `crm.lead` fields, string values).
    pub leads: BTreeMap<u64, Value>,
    /// CRM call activities made by `finish`.
    pub activities: BTreeMap<u64, Value>,
    /// (lower-case method, arguments, HTTP status answered) of every telephony call.
    pub log: Vec<(String, Value, u16)>,
    /// Failures answered before anything is done: (lower-case method, status, code); each
    /// is used once, in order.
    pub faults: Vec<(String, StatusCode, &'static str)>,
    /// Calls done on the portal whose answers come after `LOST_ANSWER_DELAY` (lost to a
    /// caller with a shorter timeout): lower-case methods, each used once.
    pub lose_answers: Vec<String>,
    /// Added to the real clock: a test moves it past the re-registration window.
    pub skew: Duration,
    next_stat: u64,
    next_file: u64,
}

impl Default for Telephony {
    fn default() -> Telephony {
        Telephony {
            // Two employees with extensions 101 and 102; 103 was dismissed.
            users: vec![
                TelUser {
                    id: 1,
                    inner: "101".into(),
                    active: true,
                },
                TelUser {
                    id: 2,
                    inner: "102".into(),
                    active: true,
                },
                TelUser {
                    id: 3,
                    inner: "103".into(),
                    active: false,
                },
            ],
            calls: Vec::new(),
            leads: BTreeMap::new(),
            activities: BTreeMap::new(),
            log: Vec::new(),
            faults: Vec::new(),
            lose_answers: Vec::new(),
            skew: Duration::ZERO,
            next_stat: 0,
            next_file: 9000,
        }
    }
}

impl Telephony {
    fn now(&self) -> Instant {
        Instant::now() + self.skew
    }

    /// The lower-case methods called, in order.
    pub fn methods(&self) -> Vec<String> {
        self.log.iter().map(|(m, _, _)| m.clone()).collect()
    }

    /// The arguments of every accepted (2xx) call of `method` (lower-case).
    pub fn accepted(&self, method: &str) -> Vec<Value> {
        self.log
            .iter()
            .filter(|(m, _, s)| m == method && (200..300).contains(s))
            .map(|(_, a, _)| a.clone())
            .collect()
    }

    pub fn call(&self, call_id: &str) -> Option<&ExternalCall> {
        self.calls.iter().find(|c| c.call_id == call_id)
    }

    /// Where the call `call_id` is among the calls, if it is active (`finished = false`) or
    /// finished (`true`).
    fn index_of(&self, call_id: &str, finished: bool) -> Option<usize> {
        self.calls
            .iter()
            .position(|c| c.call_id == call_id && c.finished.is_some() == finished)
    }
}

/// Answers a `telephony.externalcall.*` call, with whether the answer is to be lost; `None`
/// for every other method.
fn telephony(p: &mut Portal, method: &str, args: &Value, how: &str) -> Option<(Response, bool)> {
    let lower = method.to_ascii_lowercase();
    let action = lower.strip_prefix("telephony.externalcall.")?.to_owned();
    let mut args = args.clone();
    if let Value::Object(o) = &mut args {
        o.remove("auth");
    }
    let fault = p.telephony.faults.iter().position(|(m, _, _)| *m == lower);
    let answer = if let Some(at) = fault {
        let (_, status, code) = p.telephony.faults.remove(at);
        Err((status, code, "Injected by the test".to_owned()))
    } else {
        match action.as_str() {
            "register" => tel_register(p, &args, how),
            "finish" => tel_finish(p, &args, how),
            "attachrecord" => tel_attach_record(p, &args),
            _ => Err((
                StatusCode::NOT_FOUND,
                "ERROR_METHOD_NOT_FOUND",
                "Method not found!".into(),
            )),
        }
    };
    let response = match answer {
        Ok(result) => envelope(&result),
        Err((status, code, description)) => error(status, code, &description),
    };
    let lost = p.telephony.lose_answers.iter().position(|m| *m == lower);
    let lose = response.status().is_success() && lost.is_some();
    if let (true, Some(at)) = (lose, lost) {
        p.telephony.lose_answers.remove(at);
    }
    p.telephony
        .log
        .push((lower, args, response.status().as_u16()));
    Some((response, lose))
}

fn core(description: &str) -> Refusal {
    (StatusCode::BAD_REQUEST, "ERROR_CORE", description.into())
}

/// `register` and `finish` "work only in the context of an application": an inbound webhook
/// is refused. (The `attachRecord` page has no such note and shows a webhook example.)
fn app_only(how: &str) -> Result<(), Refusal> {
    if how == "oauth" {
        return Ok(());
    }
    Err((
        StatusCode::FORBIDDEN,
        "WRONG_AUTH_TYPE",
        "Current authorization type is denied for this method".into(),
    ))
}

/// A string or number argument as text; `None` when absent or empty.
fn arg_text(args: &Value, name: &str) -> Option<String> {
    match &args[name] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The employee named by `USER_ID` or `USER_PHONE_INNER`, active.
fn tel_user(p: &Portal, args: &Value) -> Result<u64, Refusal> {
    let by_id = arg_text(args, "USER_ID");
    let by_inner = arg_text(args, "USER_PHONE_INNER");
    if by_id.is_none() && by_inner.is_none() {
        return Err(core("USER_ID or USER_PHONE_INNER should be set"));
    }
    p.telephony
        .users
        .iter()
        .find(|u| match &by_id {
            Some(id) => id.parse() == Ok(u.id),
            None => by_inner.as_deref() == Some(u.inner.as_str()),
        })
        .filter(|u| u.active)
        .map(|u| u.id)
        .ok_or_else(|| core("User is not found or is not active"))
}

/// Digits, with `+`, spaces, dashes, dots and brackets as decoration; 3 to 20 digits. (The
/// docs name the error, not the rule: this is the plausible one.)
fn phone_ok(raw: &str) -> bool {
    let decoration = |c: char| matches!(c, ' ' | '-' | '.' | '(' | ')');
    let body = raw.trim().strip_prefix('+').unwrap_or(raw.trim());
    let n = digits(body).len();
    body.chars().all(|c| c.is_ascii_digit() || decoration(c)) && (3..=20).contains(&n)
}

/// ISO-8601 with a zone: `2026-03-07T10:20:30+03:00` (also `+0300` and `Z`).
fn iso_date_ok(raw: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(raw).is_ok()
        || chrono::DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%z").is_ok()
}

/// The CRM record a number belongs to: a contact, else a lead (the portal's phone search,
/// digits compared as `crm.duplicate.findbycomm` does above).
fn crm_by_phone(p: &Portal, phone: &str) -> Option<(String, u64)> {
    let wanted = digits(phone);
    let has = |record: &Value| {
        record["PHONE"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|ph| digits(ph["VALUE"].as_str().unwrap_or_default()) == wanted)
    };
    let contact = p.contacts.iter().find(|(_, c)| has(c));
    if let Some((id, _)) = contact {
        return Some(("CONTACT".into(), *id));
    }
    let lead = p.telephony.leads.iter().find(|(_, l)| has(l));
    lead.map(|(id, _)| ("LEAD".into(), *id))
}

fn tel_register(p: &mut Portal, args: &Value, how: &str) -> Result<Value, Refusal> {
    app_only(how)?;
    let user = tel_user(p, args)?;
    let kind = arg_text(args, "TYPE")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| (1..=5).contains(t))
        .ok_or_else(|| core("Unknown TYPE"))?;
    if let Some(date) = arg_text(args, "CALL_START_DATE")
        && !iso_date_ok(&date)
    {
        return Err(core("CALL_START_DATE should be in the ISO-8601 format"));
    }
    let phone = arg_text(args, "PHONE_NUMBER")
        .filter(|ph| phone_ok(ph))
        .ok_or_else(|| core("Unsupported phone number format"))?;
    let key = (
        phone.clone(),
        kind,
        user,
        arg_text(args, "LINE_NUMBER").unwrap_or_default(),
        arg_text(args, "EXTERNAL_CALL_ID").unwrap_or_default(),
    );
    let now = p.telephony.now();
    // "Called again within 30 minutes … may return an existing CALL_ID": the CRM fields and
    // the start time are not part of the key.
    let again = p
        .telephony
        .calls
        .iter()
        .find(|c| c.key == key && now.duration_since(c.at) < REREGISTER_WINDOW);
    if let Some(call) = again {
        return Ok(call.result.clone());
    }
    let given = match (
        arg_text(args, "CRM_ENTITY_TYPE"),
        arg_text(args, "CRM_ENTITY_ID").and_then(|id| id.parse::<u64>().ok()),
    ) {
        (Some(t), Some(id)) => Some((t.to_ascii_uppercase(), id)),
        _ => None,
    };
    let mut crm = given.or_else(|| crm_by_phone(p, &phone));
    let mut created_lead = Value::Null;
    let mut created = Vec::new();
    let create = arg_text(args, "CRM_CREATE").is_some_and(|c| c == "1");
    if crm.is_none() && create {
        p.next_id += 1;
        let id = p.next_id;
        let title = if kind == 1 {
            format!("Outgoing call to {phone}")
        } else {
            format!("Incoming call from {phone}")
        };
        p.telephony.leads.insert(
            id,
            json!({"ID": id.to_string(), "TITLE": title, "STATUS_ID": "NEW",
                "SOURCE_ID": arg_text(args, "CRM_SOURCE").unwrap_or_else(|| "CALL".into()),
                "ASSIGNED_BY_ID": user.to_string(),
                "PHONE": [{"ID": id.to_string(), "VALUE_TYPE": "WORK", "VALUE": phone, "TYPE_ID": "PHONE"}]}),
        );
        crm = Some(("LEAD".into(), id));
        created_lead = json!(id);
        created.push(json!({"ENTITY_TYPE": "LEAD", "ENTITY_ID": id}));
    }
    let n = p.telephony.calls.len() as u128 + 1;
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let call_id = format!(
        "externalCall.{:032x}.{stamp}",
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    );
    let result = json!({
        "CALL_ID": call_id,
        "CRM_CREATED_LEAD": created_lead,
        "CRM_CREATED_ENTITIES": created,
        "CRM_ENTITY_TYPE": crm.as_ref().map(|(t, _)| t.clone()),
        "CRM_ENTITY_ID": crm.as_ref().map(|(_, id)| *id),
    });
    p.telephony.calls.push(ExternalCall {
        call_id,
        key,
        at: now,
        args: args.clone(),
        result: result.clone(),
        crm,
        finished: None,
        record: None,
    });
    Ok(result)
}

fn tel_finish(p: &mut Portal, args: &Value, how: &str) -> Result<Value, Refusal> {
    app_only(how)?;
    let Some(call_id) = args["CALL_ID"].as_str().map(str::to_owned) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "CALL_ID must be a string".into(),
        ));
    };
    let user = tel_user(p, args)?;
    // The docs do not say what a second `finish` of a call does. `finish` moves the call from
    // the active calls into the statistics, and its one documented lookup error is "Call is
    // not found (call should be registered prior to finishing)": so a finished call is not
    // found again. Inference, not a documented fact.
    let Some(index) = p.telephony.index_of(&call_id, false) else {
        return Err(core(
            "Call is not found (call should be registered prior to finishing)",
        ));
    };
    let duration: u64 = arg_text(args, "DURATION")
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    let status = arg_text(args, "STATUS_CODE")
        .unwrap_or_else(|| if duration > 0 { "200" } else { "304" }.into());
    let call = p.telephony.calls[index].clone();
    let kind = call.key.1;
    let activity = match &call.crm {
        Some((owner, owner_id)) => {
            p.next_id += 1;
            let id = p.next_id;
            p.telephony.activities.insert(
                id,
                json!({"ID": id.to_string(), "TYPE_ID": "2", "PROVIDER_ID": "VOXIMPLANT_CALL",
                    "OWNER_TYPE": owner, "OWNER_ID": owner_id.to_string(),
                    "DIRECTION": if kind == 1 { "2" } else { "1" },
                    "RESPONSIBLE_ID": user.to_string(), "ORIGIN_ID": format!("VI_{call_id}"),
                    "SETTINGS": {"DURATION": duration, "STATUS_CODE": status},
                    "COMPLETED": "Y"}),
            );
            json!(id)
        }
        None => Value::Null,
    };
    p.telephony.next_stat += 1;
    let row = json!({
        "CALL_ID": call_id,
        "EXTERNAL_CALL_ID": arg_text(&call.args, "EXTERNAL_CALL_ID"),
        "PORTAL_USER_ID": user,
        "PHONE_NUMBER": digits(&call.key.0),
        "PORTAL_NUMBER": call.key.3,
        "INCOMING": kind.to_string(),
        "CALL_DURATION": duration,
        // The documented example shows the date object serialized as `{}`.
        "CALL_START_DATE": {},
        "CALL_STATUS": u8::from(status == "200"),
        "CALL_VOTE": arg_text(args, "VOTE").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
        "COST": args["COST"].as_f64().or_else(|| arg_text(args, "COST").and_then(|c| c.parse().ok())).unwrap_or(0.0),
        "COST_CURRENCY": arg_text(args, "COST_CURRENCY").unwrap_or_default(),
        "CALL_FAILED_CODE": status,
        "CALL_FAILED_REASON": arg_text(args, "FAILED_REASON").unwrap_or_default(),
        "REST_APP_ID": "3",
        "REST_APP_NAME": "obmen",
        "CRM_ACTIVITY_ID": activity,
        "COMMENT": null,
        "CRM_ENTITY_TYPE": call.crm.as_ref().map(|(t, _)| t.clone()),
        "CRM_ENTITY_ID": call.crm.as_ref().map(|(_, id)| *id),
        "ID": p.telephony.next_stat,
    });
    p.telephony.calls[index].finished = Some(row.clone());
    // The deprecated `RECORD_URL` of `finish` still attaches a record.
    if let Some(url) = arg_text(args, "RECORD_URL") {
        p.telephony.next_file += 1;
        p.telephony.calls[index].record = Some(Attached {
            file_id: p.telephony.next_file,
            filename: file_name_of(&url),
            content: None,
            url: Some(url),
        });
    }
    Ok(row)
}

fn file_name_of(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Loopback, private and link-local hosts: the portal refuses to fetch records from them.
fn non_public(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
        }
        Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Err(_) => host.is_empty() || host.eq_ignore_ascii_case("localhost"),
    }
}

fn tel_attach_record(p: &mut Portal, args: &Value) -> Result<Value, Refusal> {
    use base64::Engine as _;
    let url = arg_text(args, "RECORD_URL");
    let named = !args["FILENAME"].is_null();
    if url.is_none() && !named {
        // The page's table gives this an empty code; the saved example body has ERROR_CORE.
        return Err(core(
            "Required parameters are not set. Request should contain either URL or FILENAME parameter",
        ));
    }
    let empty = |d: &str| (StatusCode::BAD_REQUEST, "", d.to_owned());
    let call_id = arg_text(args, "CALL_ID").unwrap_or_default();
    let Some(index) = p.telephony.index_of(&call_id, true) else {
        return Err(empty(
            "Call is not found in the statistic table. It looks like it is not finished yet.",
        ));
    };
    let filename = match (arg_text(args, "FILENAME"), &url) {
        (Some(name), _) => name,
        (None, Some(url)) if !named => file_name_of(url),
        _ => return Err(core("File name is empty")),
    };
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase());
    if !matches!(ext.as_deref(), Some("wav" | "mp3")) {
        return Err(core("Wrong file extension. Only wav and mp3 are allowed"));
    }
    let content = match (&args["FILE_CONTENT"], &url) {
        (Value::Null, Some(url)) => {
            if non_public(url) {
                return Err(empty(
                    "Record URL resolves to a non-public address and was blocked.",
                ));
            }
            None
        }
        (Value::Null, None) => {
            // FILENAME alone: the content comes in a second request to `uploadUrl`.
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("callId={call_id}"));
            let upload = format!(
                "{}/rest/upload.json?auth={}&token=telephony%7C{}",
                p.endpoint,
                p.access,
                token.replace('=', "%3D")
            );
            return Ok(json!({"uploadUrl": upload, "fieldName": "file"}));
        }
        (Value::String(s), _) if s.is_empty() => return Err(core("File content is empty.")),
        (Value::String(s), _) => match base64::engine::general_purpose::STANDARD.decode(s) {
            Ok(bytes) if !bytes.is_empty() => Some(bytes),
            Ok(_) => return Err(core("File content is empty.")),
            Err(_) => {
                return Err(core(
                    "File content is not properly encoded. Base64 encoding is expected.",
                ));
            }
        },
        _ => {
            return Err(core(
                "File content is not properly encoded. Base64 encoding is expected.",
            ));
        }
    };
    p.telephony.next_file += 1;
    let file_id = p.telephony.next_file;
    // "If the method is called again for the same call, the new record will replace the
    // previously attached one."
    p.telephony.calls[index].record = Some(Attached {
        file_id,
        filename,
        content,
        url: if args["FILE_CONTENT"].is_null() {
            url
        } else {
            None
        },
    });
    Ok(json!({ "FILE_ID": file_id }))
}
