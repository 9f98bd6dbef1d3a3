//! A fake MoySklad JSON API 1.2 on loopback, after the checklist of the connector reference
//! (3.10): `/api/remap/1.2/entity/<type>` paths, Bearer and Basic auth, 415 without
//! `Accept-Encoding: gzip`, the list envelope with `meta.size/limit/offset/nextHref`, limit
//! above 1000 refused, the `filter` grammar (`=`, `>=`, `;`, `\;`), `errors[]` bodies with
//! codes, a request budget reported in `X-RateLimit-*`/`X-Lognex-*` headers and enforced with
//! 429 + `X-Lognex-Retry-After` (code 1049), 1073 above 5 parallel requests, `syncId` replay,
//! bulk arrays (an entity or an error per item; 413 above 1000 items). Every request is
//! checked against the official OpenAPI (tests/moysklad/contract.rs) — operation, parameters,
//! headers, body — and so is every answer of the fake; a test whose fake saw a violation
//! fails when the fake is dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[path = "contract.rs"]
mod contract;
#[path = "../support/received.rs"]
mod received;
pub use contract::contract;
pub use received::Received;

pub const PREFIX: &str = "/api/remap/1.2";
pub const TOKEN: &str = "ms-token-test-0001";
pub const LOGIN: &str = "admin@acme";
pub const PASSWORD: &str = "ms-password-0001";

#[derive(Clone, Debug)]
pub enum Fault {
    /// 429 with `X-Lognex-Retry-After: <ms>`, code 1049.
    RateLimited(u64),
    /// Do the work, then answer 500 (the answer is lost; the client must retry safely).
    FailAfterWork,
}

pub struct Inner {
    pub ledger: Vec<Received>,
    pub rows: std::collections::BTreeMap<String, Vec<Value>>,
    faults: Vec<(String, String, VecDeque<Fault>)>,
    /// Violations of the official OpenAPI by requests (and by the fake's answers).
    pub contract_errors: Vec<String>,
    next_id: u64,
    pub budget: Budget,
    /// Requests refused because the budget was spent (429, code 1049).
    pub refused_by_budget: usize,
    /// Items a bulk array may hold before MoySklad answers 413 (1000; lower to play a body
    /// that is too large in bytes).
    pub max_items: usize,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            ledger: Vec::new(),
            rows: std::collections::BTreeMap::new(),
            faults: Vec::new(),
            contract_errors: Vec::new(),
            next_id: 0,
            budget: Budget::new(45, 3000),
            refused_by_budget: 0,
            max_items: 1000,
        }
    }
}

/// The request budget: `limit` requests per `interval_ms`, replenished evenly (45 per 3 s
/// by default), reported in `X-RateLimit-Limit`, `X-RateLimit-Remaining`,
/// `X-Lognex-Retry-TimeInterval`; spent, the answer is 429 with `X-Lognex-Retry-After`.
pub struct Budget {
    pub limit: u32,
    pub interval_ms: u64,
    tokens: f64,
    at: Option<Instant>,
}

impl Budget {
    pub fn new(limit: u32, interval_ms: u64) -> Budget {
        Budget {
            limit,
            interval_ms,
            tokens: f64::from(limit),
            at: None,
        }
    }

    fn per_ms(&self) -> f64 {
        f64::from(self.limit) / self.interval_ms as f64
    }

    /// Takes one request's worth: the requests left, or the ms until one is.
    fn take(&mut self, now: Instant) -> Result<u64, u64> {
        let refill = self.at.map_or(0.0, |at| {
            now.duration_since(at).as_secs_f64() * 1000.0 * self.per_ms()
        });
        self.tokens = (self.tokens + refill).min(f64::from(self.limit));
        self.at = Some(now);
        if self.tokens < 1.0 {
            return Err(((1.0 - self.tokens) / self.per_ms()).ceil() as u64);
        }
        self.tokens -= 1.0;
        Ok(self.tokens.floor() as u64)
    }
}

pub struct FakeMs {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
    pub max_in_flight: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct St {
    base: String,
    inner: Arc<Mutex<Inner>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl FakeMs {
    pub async fn start() -> FakeMs {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}{PREFIX}");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let st = St {
            base: base.clone(),
            inner: inner.clone(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: max_in_flight.clone(),
        };
        let app = Router::new().fallback(handle).with_state(st);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeMs {
            base,
            inner,
            max_in_flight,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake lock")
    }

    /// Takes the contract violations seen so far (a test that sends a bad request on
    /// purpose takes them, so the drop check passes).
    pub fn take_contract_errors(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().contract_errors)
    }

    pub fn ledger(&self) -> Vec<Received> {
        self.lock().ledger.clone()
    }

    pub fn fail(&self, method: &str, path: &str, faults: Vec<Fault>) {
        self.lock()
            .faults
            .push((method.to_owned(), path.to_owned(), faults.into()));
    }

    pub fn href(&self, entity: &str, id: &str) -> String {
        format!("{}/entity/{entity}/{id}", self.base)
    }

    /// Adds a row; `fields` may carry `updated`.
    pub fn seed(&self, entity: &str, fields: Value) -> String {
        let base = self.base.clone();
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = format!("00000000-0000-4000-8000-{:012}", inner.next_id);
        let mut row = fields;
        row["id"] = json!(id);
        row["meta"] = json!({"href": format!("{base}/entity/{entity}/{id}"), "type": entity, "mediaType": "application/json"});
        if row.get("externalCode").is_none() {
            row["externalCode"] = json!(format!("auto{id}"));
        }
        if row.get("updated").is_none() {
            row["updated"] = json!("2026-01-15 10:00:00.000");
        }
        inner.rows.entry(entity.to_owned()).or_default().push(row);
        id
    }
}

impl Drop for FakeMs {
    /// Every request a test made the fake see must keep the official contract.
    fn drop(&mut self) {
        let errors = std::mem::take(&mut self.lock().contract_errors);
        if !errors.is_empty() && !std::thread::panicking() {
            panic!(
                "{} violation(s) of the MoySklad OpenAPI:\n{}",
                errors.len(),
                errors.join("\n")
            );
        }
    }
}

/// MoySklad's webhook sender: `POST <url>?requestId=<id>` (or `&requestId=`) with its
/// User-Agent and the JSON body; it waits 1500 ms for a 200 or 204, else sends 3 more times
/// at once with the same `requestId`, then drops the notification. Each attempt's status
/// (`None`: no answer within the deadline).
pub async fn deliver(url: &str, request_id: &str, body: &Value) -> Vec<Option<u16>> {
    let schema = if body.get("reportUrl").is_some() {
        "WebhookStockNotificationPayload"
    } else {
        "WebhookNotificationPayload"
    };
    let wrong = contract().check_payload(schema, body);
    assert!(
        wrong.is_empty(),
        "a test webhook breaks {schema}: {wrong:?}"
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(1500))
        .build()
        .expect("client");
    let sep = if url.contains('?') { '&' } else { '?' };
    let target = format!("{url}{sep}requestId={request_id}");
    let mut attempts = Vec::new();
    for _ in 0..4 {
        let status = http
            .post(&target)
            .header(
                "User-Agent",
                "MoySklad webhook touch agent 2.0 (/https://www.moysklad.ru)",
            )
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16());
        attempts.push(status);
        if matches!(status, Some(200 | 204)) {
            break;
        }
    }
    attempts
}

fn errors(status: u16, code: u32, text: &str) -> Response {
    error_response(status, &error_body(code, text))
}

/// `{"errors": [{error, code, moreInfo}]}`; code 0: a body without a code.
fn error_body(code: u32, text: &str) -> Value {
    if code == 0 {
        return json!({"errors": [{"error": text}]});
    }
    json!({"errors": [{"error": text, "code": code, "moreInfo": "https://dev.moysklad.ru/doc/api/remap/1.2/#error_".to_owned() + &code.to_string()}]})
}

fn error_response(status: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(status).expect("status"),
        [("content-type", "application/json;charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// The JSON of a 200 answer, kept for the contract check of answers.
#[derive(Clone)]
struct Answered(Value);

/// Answers are gzip-encoded, as MoySklad's are: the client must decompress them.
fn json_answer(v: &Value) -> Response {
    let mut r = (
        StatusCode::OK,
        [
            ("content-type", "application/json;charset=utf-8"),
            ("content-encoding", "gzip"),
        ],
        gzip_stored(v.to_string().as_bytes()),
    )
        .into_response();
    r.extensions_mut().insert(Answered(v.clone()));
    r
}

/// A valid gzip stream made of uncompressed ("stored") deflate blocks.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(65_535).collect()
    };
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(i == last));
        let len = u16::try_from(chunk.len()).expect("chunk");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let mut crc = 0xffff_ffff_u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).expect("size").to_le_bytes());
    out
}

struct Guard(Arc<AtomicUsize>);
impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Splits a filter on unescaped `;` into (field, op, value).
pub fn parse_filter(text: &str) -> Vec<(String, String, String)> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&';') => {
                cur.push(';');
                chars.next();
            }
            ';' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
        .into_iter()
        .filter_map(|p| {
            for op in [">=", "<=", "!=", "~=", "=~", "=", ">", "<", "~"] {
                if let Some(i) = p.find(op) {
                    return Some((
                        p[..i].to_owned(),
                        op.to_owned(),
                        p[i + op.len()..].to_owned(),
                    ));
                }
            }
            None
        })
        .collect()
}

fn matches(row: &Value, conds: &[(String, String, String)]) -> bool {
    conds.iter().all(|(f, op, v)| {
        let got = match row.get(f) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        match op.as_str() {
            "=" => &got == v,
            "!=" => &got != v,
            ">=" => got.as_str() >= v.as_str(),
            ">" => got.as_str() > v.as_str(),
            "<=" => got.as_str() <= v.as_str(),
            "<" => got.as_str() < v.as_str(),
            _ => got.contains(v.as_str()),
        }
    })
}

async fn handle(
    State(st): State<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = Guard(st.in_flight.clone());
    st.max_in_flight.fetch_max(now, Ordering::SeqCst);
    // Slow enough that parallel requests overlap.
    tokio::time::sleep(Duration::from_millis(15)).await;
    let query: Vec<(String, String)> = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let mut received = Received::new(&method, &uri, headers.clone(), query.clone(), body.clone());
    let parsed = received.body.clone();
    let path = uri.path().to_owned();
    let below = path.strip_prefix(PREFIX).unwrap_or(&path);
    let (op, mut violations) = contract().check_request(
        method.as_str(),
        below,
        &query,
        &headers,
        (!body.is_empty()).then_some(&parsed),
    );
    let mut response = if violations.is_empty() {
        answer(&st, &method, &path, &query, &headers, &parsed, now)
    } else {
        // What MoySklad says of a request it cannot read; the test fails on the violation.
        errors(400, 2016, &violations.join("; "))
    };
    if let (Some(op), Some(Answered(v))) = (op, response.extensions_mut().remove::<Answered>()) {
        violations.extend(contract().check_answer(op, &v));
    }
    let mut inner = st.inner.lock().expect("lock");
    inner.contract_errors.extend(violations);
    received.status = response.status().as_u16();
    inner.ledger.push(received);
    response
}

fn answer(
    st: &St,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &Value,
    in_flight: usize,
) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    if !h("accept-encoding").split(',').any(|e| e.trim() == "gzip") {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{LOGIN}:{PASSWORD}"));
    let auth = h("authorization");
    if auth != format!("Bearer {TOKEN}") && auth != format!("Basic {basic}") {
        return errors(401, 1056, "Ошибка аутентификации");
    }
    if in_flight > 5 {
        return errors(
            429,
            1073,
            "Превышено ограничение на количество параллельных запросов",
        );
    }
    let (remaining, limit, interval) = {
        let mut inner = st.inner.lock().expect("lock");
        let taken = inner.budget.take(Instant::now());
        let (limit, interval) = (inner.budget.limit, inner.budget.interval_ms);
        match taken {
            Ok(left) => (left, limit, interval),
            Err(wait) => {
                inner.refused_by_budget += 1;
                let mut r = errors(
                    429,
                    1049,
                    "Превышено ограничение на количество запросов в единицу времени",
                );
                let hs = r.headers_mut();
                for (k, v) in [
                    ("x-ratelimit-limit", limit.to_string()),
                    ("x-ratelimit-remaining", "0".into()),
                    ("x-lognex-retry-timeinterval", interval.to_string()),
                    ("x-lognex-retry-after", wait.to_string()),
                    ("x-lognex-reset", wait.to_string()),
                ] {
                    hs.insert(k, v.parse().expect("header"));
                }
                return r;
            }
        }
    };
    let mut response = work(st, method, path, query, body);
    let hs = response.headers_mut();
    for (k, v) in [
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-lognex-retry-timeinterval", interval.to_string()),
        ("x-lognex-reset", "0".into()),
        ("x-lognex-retry-after", "0".into()),
    ] {
        // A fault's own limit headers stay.
        if !hs.contains_key(k) {
            hs.insert(k, v.parse().expect("header"));
        }
    }
    response
}

/// The answer of an authenticated request within the limits.
fn work(
    st: &St,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    body: &Value,
) -> Response {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return errors(404, 1005, "Неизвестный адрес");
    };
    let mut inner = st.inner.lock().expect("lock");
    let mut fault = None;
    if let Some((_, _, q)) = inner
        .faults
        .iter_mut()
        .find(|(m, p, q)| m == method.as_str() && p == rest && !q.is_empty())
    {
        fault = q.pop_front();
    }
    if let Some(Fault::RateLimited(ms)) = fault {
        let mut r = errors(
            429,
            1049,
            "Превышено ограничение на количество запросов в единицу времени",
        );
        let hs = r.headers_mut();
        hs.insert("x-lognex-retry-after", ms.to_string().parse().expect("v"));
        hs.insert("x-ratelimit-remaining", "0".parse().expect("v"));
        return r;
    }
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let response = match (method.as_str(), segs.as_slice()) {
        ("GET", ["entity", entity]) => list(st, &inner, entity, rest, query),
        ("GET", ["entity", entity, id]) => match inner
            .rows
            .get(*entity)
            .and_then(|rows| rows.iter().find(|r| r["id"] == json!(id)))
        {
            Some(row) => json_answer(row),
            None => errors(404, 1021, "Объект не найден"),
        },
        ("POST", ["entity", entity]) if body.is_array() => bulk(st, &mut inner, entity, body),
        ("POST", ["entity", entity]) => create(st, &mut inner, entity, body),
        ("PUT", ["entity", entity, id]) => match update(&mut inner, entity, id, body) {
            Ok(row) => json_answer(&row),
            Err((status, e)) => error_response(status, &e),
        },
        _ => errors(405, 1005, "Метод не поддерживается"),
    };
    if matches!(fault, Some(Fault::FailAfterWork)) {
        return errors(500, 1000, "Внутренняя ошибка");
    }
    response
}

/// The status and error body of a body MoySklad refuses beyond its schema (checked before):
/// a counterparty without `name` (412, 3000).
fn validate(entity: &str, body: &Value, create: bool) -> Option<(u16, Value)> {
    if create
        && entity == "counterparty"
        && body
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Some((412, error_body(3000, "Поле 'name' не может быть пустым")));
    }
    None
}

/// A bulk write: an array of at most `max_items` (1000), answered 200 with an entity or an
/// `{"errors": […]}` object per item, in order; items with `meta` update.
fn bulk(st: &St, inner: &mut Inner, entity: &str, body: &Value) -> Response {
    let items = body.as_array().cloned().unwrap_or_default();
    if items.len() > inner.max_items {
        // Constructed text: the docs give the status (413) and the limit, not the body.
        return errors(
            413,
            0,
            "Превышено максимальное количество элементов в массиве (1000)",
        );
    }
    if items.is_empty() {
        return errors(400, 1027, "Запрос не содержит объектов");
    }
    let mut out = Vec::new();
    for item in &items {
        let one = if let Some(href) = item.pointer("/meta/href").and_then(Value::as_str) {
            let id = href.rsplit('/').next().unwrap_or_default().to_owned();
            let mut fields = item.clone();
            if let Value::Object(f) = &mut fields {
                f.remove("meta");
            }
            update(inner, entity, &id, &fields)
        } else {
            create_one(st, inner, entity, item)
        };
        out.push(one);
    }
    let rows: Vec<Value> = out
        .into_iter()
        .map(|r| match r {
            Ok(v) | Err((_, v)) => v,
        })
        .collect();
    json_answer(&Value::Array(rows))
}

fn update(inner: &mut Inner, entity: &str, id: &str, body: &Value) -> Result<Value, (u16, Value)> {
    if let Some(e) = validate(entity, body, false) {
        return Err(e);
    }
    let row = inner
        .rows
        .get_mut(entity)
        .and_then(|rows| rows.iter_mut().find(|r| r["id"] == json!(id)))
        .ok_or_else(|| (404, error_body(1021, "Объект не найден")))?;
    if body.get("syncId").is_some() && body.get("syncId") != row.get("syncId") {
        return Err((412, error_body(1047, "Нельзя изменить syncId")));
    }
    if let (Value::Object(r), Value::Object(b)) = (&mut *row, body) {
        for (k, v) in b {
            r.insert(k.clone(), v.clone());
        }
    }
    Ok(row.clone())
}

fn create(st: &St, inner: &mut Inner, entity: &str, body: &Value) -> Response {
    match create_one(st, inner, entity, body) {
        Ok(row) => json_answer(&row),
        Err((status, e)) => error_response(status, &e),
    }
}

/// Creates a row, or returns the one created before with the same `syncId`.
fn create_one(
    st: &St,
    inner: &mut Inner,
    entity: &str,
    body: &Value,
) -> Result<Value, (u16, Value)> {
    if let Some(e) = validate(entity, body, true) {
        return Err(e);
    }
    if let Some(sync) = body.get("syncId")
        && let Some(row) = inner
            .rows
            .get(entity)
            .and_then(|rows| rows.iter().find(|r| r.get("syncId") == Some(sync)))
    {
        return Ok(row.clone());
    }
    inner.next_id += 1;
    let id = format!("00000000-0000-4000-8000-{:012}", inner.next_id);
    let mut row = body.clone();
    row["id"] = json!(id);
    row["meta"] = json!({"href": format!("{}/entity/{entity}/{id}", st.base), "type": entity, "mediaType": "application/json"});
    row["updated"] = json!("2026-01-15 10:00:00.000");
    if entity == "customerorder" && row.get("name").is_none() {
        // MoySklad numbers documents itself when `name` is not given.
        row["name"] = json!(format!("{:05}", inner.next_id));
    }
    inner
        .rows
        .entry(entity.to_owned())
        .or_default()
        .push(row.clone());
    Ok(row)
}

fn list(st: &St, inner: &Inner, entity: &str, rest: &str, query: &[(String, String)]) -> Response {
    let q = |n: &str| query.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let limit: usize = q("limit").and_then(|v| v.parse().ok()).unwrap_or(1000);
    if limit > 1000 {
        return errors(400, 1002, "Параметр 'limit' должен быть не больше 1000");
    }
    let offset: usize = q("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let conds = q("filter").map(parse_filter).unwrap_or_default();
    // The assortment is a view of the goods: products, services, variants and bundles, each
    // row with its own `meta.type`.
    let sources: &[&str] = if entity == "assortment" {
        &["product", "service", "variant", "bundle"]
    } else {
        &[entity]
    };
    let mut rows: Vec<Value> = sources
        .iter()
        .filter_map(|e| inner.rows.get(*e))
        .flatten()
        .filter(|row| matches(row, &conds))
        .cloned()
        .collect();
    if q("order") == Some("updated,asc") {
        rows.sort_by(|a, b| a["updated"].as_str().cmp(&b["updated"].as_str()));
    }
    let size = rows.len();
    let page: Vec<Value> = rows.into_iter().skip(offset).take(limit).collect();
    let href_with = |off: usize| {
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| k != "offset" && k != "limit")
            .cloned()
            .collect();
        pairs.push(("limit".into(), limit.to_string()));
        pairs.push(("offset".into(), off.to_string()));
        format!(
            "{}{rest}?{}",
            st.base,
            serde_urlencoded::to_string(&pairs).expect("query")
        )
    };
    let mut meta = json!({
        "href": format!("{}{rest}", st.base),
        "type": entity, "mediaType": "application/json",
        "size": size, "limit": limit, "offset": offset,
    });
    if offset + limit < size {
        meta["nextHref"] = json!(href_with(offset + limit));
    }
    if offset > 0 {
        meta["previousHref"] = json!(href_with(offset.saturating_sub(limit)));
    }
    json_answer(
        &json!({"context": {"employee": {"meta": {"type": "employee"}}}, "meta": meta, "rows": page}),
    )
}
