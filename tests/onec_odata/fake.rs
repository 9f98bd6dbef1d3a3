//! A fake 1C:Enterprise standard OData interface on loopback, after the 1C developer guide
//! §17.4 and the connector reference (2.6, 2.7): `/<infobase>/odata/standard.odata/<Resource>`,
//! HTTP Basic (401 + `WWW-Authenticate` without it), the service document, atom XML unless
//! `$format=json` (or `Accept: application/json`), `$filter` with eq/ne/gt/ge/lt/le, and/or
//! and parentheses on strings (`''` escapes), `guid'…'` (required for `_Key` fields),
//! `datetime'…'` and numbers, `$select`, `$orderby`, `$top`/`$skip`, `$inlinecount=allpages`
//! (which ignores `$top`/`$skip`), `/$count`, `POST` → 201 + `Location`, `PATCH` with
//! `If-Match` → 412 on a stale `DataVersion`, a new `DataVersion` on every write, `DELETE`,
//! `Post`/`Unpost`, and JSON or XML error bodies with 1C's internal codes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

#[path = "../support/received.rs"]
mod received;
pub use received::Received;

pub const PREFIX: &str = "/trade/odata/standard.odata";
pub const USER: &str = "obmen";

/// Something the fake does instead of (or after) the normal answer.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An error body in JSON: status, internal code, message.
    Json(u16, i64, &'static str),
    /// The same error as 1C's XML `<m:error>` document.
    Xml(u16, i64, &'static str),
    /// Do the work, then answer 500 with code -1 (the answer is lost).
    FailAfterWork,
    /// Answer normally, then someone saves the rows just read in 1C (new DataVersions).
    TouchAfterRead,
    /// A 400 whose message repeats the request's `Authorization` header.
    EchoAuth,
}

#[derive(Default)]
pub struct Inner {
    pub ledger: Vec<Received>,
    /// Published resources and their rows.
    pub sets: BTreeMap<String, Vec<Value>>,
    faults: Vec<(String, String, VecDeque<Fault>)>,
    next: u64,
}

impl Inner {
    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn guid(&mut self) -> String {
        format!(
            "{:08x}-0000-11f0-a7a0-{:012x}",
            self.next(),
            0x0050_5601_0000_u64
        )
    }

    fn version(&mut self) -> String {
        let n = self.next();
        base64::engine::general_purpose::STANDARD.encode(n.to_be_bytes())
    }
}

pub struct Fake1C {
    /// `http://127.0.0.1:<port>/trade/odata/standard.odata`.
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Clone)]
struct St {
    base: String,
    basic: String,
    inner: Arc<Mutex<Inner>>,
}

impl Fake1C {
    pub async fn start(password: &str) -> Fake1C {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}{PREFIX}");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"))
        );
        let st = St {
            base: base.clone(),
            basic,
            inner: inner.clone(),
        };
        let app = Router::new().fallback(handle).with_state(st);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake1C { base, inner }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake lock")
    }

    pub fn ledger(&self) -> Vec<Received> {
        self.lock().ledger.clone()
    }

    /// Publishes a resource (as `УстановитьСоставСтандартногоИнтерфейсаOData` would).
    pub fn publish(&self, resource: &str) {
        self.lock().sets.entry(resource.to_owned()).or_default();
    }

    /// Adds a row as 1C would hold it; answers its `Ref_Key`.
    pub fn seed(&self, resource: &str, fields: Value) -> String {
        let mut inner = self.lock();
        let key = inner.guid();
        let version = inner.version();
        let mut row = json!({"Ref_Key": key, "DataVersion": version, "DeletionMark": false});
        merge(&mut row, fields);
        inner.sets.entry(resource.to_owned()).or_default().push(row);
        key
    }

    pub fn rows(&self, resource: &str) -> Vec<Value> {
        self.lock().sets.get(resource).cloned().unwrap_or_default()
    }

    /// Faults for the next requests with `method` to `resource` (the name before any key).
    pub fn fail(&self, method: &str, resource: &str, faults: Vec<Fault>) {
        self.lock()
            .faults
            .push((method.to_owned(), resource.to_owned(), faults.into()));
    }
}

fn merge(row: &mut Value, fields: Value) {
    if let (Value::Object(r), Value::Object(f)) = (row, fields) {
        r.extend(f);
    }
}

/// Percent-decoding as 1C's web server does it (UTF-8; `+` stays `+`).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How this request wants its answer.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    Json,
    Atom,
}

struct Req {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
    format: Format,
}

impl Req {
    fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn handle(
    State(st): State<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_path = uri.path().to_owned();
    let path = decode(&raw_path);
    let query: Vec<(String, String)> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    let json_format = query
        .iter()
        .any(|(k, v)| k == "$format" && (v == "json" || v.starts_with("application/json")))
        || headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
    let req = Req {
        method: method.clone(),
        path: path.strip_prefix(PREFIX).unwrap_or(&path).to_owned(),
        query: query.clone(),
        headers: headers.clone(),
        body: body.clone(),
        format: if json_format {
            Format::Json
        } else {
            Format::Atom
        },
    };
    let (status, response) = answer(&st, &req, path.starts_with(PREFIX));
    let mut inner = st.inner.lock().expect("fake lock");
    let mut received = Received::new(&method, &uri, headers, query, body);
    received.path = req.path;
    received.status = status.as_u16();
    inner.ledger.push(received);
    response
}

fn answer(st: &St, req: &Req, under_prefix: bool) -> (StatusCode, Response) {
    let authorized = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == st.basic);
    if !authorized {
        let r = (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"1C:Enterprise\"")],
            "",
        )
            .into_response();
        return (StatusCode::UNAUTHORIZED, r);
    }
    if !under_prefix {
        let r = (
            StatusCode::NOT_FOUND,
            [("content-type", "text/html")],
            "<html><body>404 Not Found</body></html>",
        )
            .into_response();
        return (StatusCode::NOT_FOUND, r);
    }
    let mut inner = st.inner.lock().expect("fake lock");
    let resource = req
        .path
        .trim_start_matches('/')
        .split(['(', '/'])
        .next()
        .unwrap_or_default()
        .to_owned();
    let fault = inner
        .faults
        .iter_mut()
        .find(|(m, r, f)| *m == req.method.as_str() && *r == resource && !f.is_empty())
        .and_then(|(_, _, f)| f.pop_front());
    match fault {
        Some(Fault::Json(s, code, msg)) => {
            return error(Format::Json, s, code, msg);
        }
        Some(Fault::Xml(s, code, msg)) => return error(Format::Atom, s, code, msg),
        Some(Fault::EchoAuth) => {
            let auth = req
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            return error(req.format, 400, 2, &format!("Неверный запрос от {auth}"));
        }
        _ => {}
    }
    let (status, body) = route(&st.base, &mut inner, req, &resource);
    match fault {
        Some(Fault::FailAfterWork) => {
            return error(
                req.format,
                500,
                -1,
                "Ошибка при выполнении операции над данными",
            );
        }
        Some(Fault::TouchAfterRead) => {
            if let Some(rows) = body.get("value").and_then(Value::as_array) {
                let keys: Vec<String> = rows
                    .iter()
                    .filter_map(|r| r["Ref_Key"].as_str().map(str::to_owned))
                    .collect();
                for key in keys {
                    let version = inner.version();
                    if let Some(row) = find_mut(&mut inner, &resource, &key) {
                        row["DataVersion"] = json!(version);
                    }
                }
            }
        }
        _ => {}
    }
    drop(inner);
    respond(req, status, &body, &st.base, &resource)
}

/// One answer: an error body, or data in the requested format.
fn respond(
    req: &Req,
    status: StatusCode,
    body: &Value,
    base: &str,
    resource: &str,
) -> (StatusCode, Response) {
    if let Some(err) = body.get("__error") {
        let code = err["code"].as_i64().unwrap_or(0);
        let msg = err["message"].as_str().unwrap_or_default();
        return error(req.format, status.as_u16(), code, msg);
    }
    if status == StatusCode::PRECONDITION_FAILED || body.is_null() {
        return (status, status.into_response());
    }
    if let Value::String(text) = body {
        return (
            status,
            (status, [("content-type", "text/plain")], text.clone()).into_response(),
        );
    }
    let mut builder = axum::http::Response::builder().status(status);
    if status == StatusCode::CREATED
        && let Some(key) = body["Ref_Key"].as_str()
    {
        builder = builder.header("location", format!("{base}/{resource}(guid'{key}')"));
    }
    let (ct, text) = match req.format {
        Format::Json => ("application/json;charset=utf-8", body.to_string()),
        Format::Atom => ("application/atom+xml;charset=utf-8", atom(body)),
    };
    let r = builder
        .header("content-type", ct)
        .body(axum::body::Body::from(text))
        .expect("response");
    (status, r)
}

fn atom(body: &Value) -> String {
    let entry = |row: &Value| {
        let props: String = row
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| !k.starts_with("odata."))
                    .map(|(k, v)| {
                        format!(
                            "<d:{k}>{}</d:{k}>",
                            v.as_str().map_or(v.to_string(), str::to_owned)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "<entry><content type=\"application/xml\"><m:properties>{props}</m:properties></content></entry>"
        )
    };
    let entries: String = match body.get("value").and_then(Value::as_array) {
        Some(rows) => rows.iter().map(entry).collect(),
        None => entry(body),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><feed xmlns=\"http://www.w3.org/2005/Atom\" xmlns:d=\"http://schemas.microsoft.com/ado/2007/08/dataservices\" xmlns:m=\"http://schemas.microsoft.com/ado/2007/08/dataservices/metadata\">{entries}</feed>"
    )
}

fn error(format: Format, status: u16, code: i64, message: &str) -> (StatusCode, Response) {
    let status = StatusCode::from_u16(status).expect("status");
    let (ct, text) = match format {
        Format::Json => (
            "application/json;charset=utf-8",
            json!({"odata.error": {"code": code.to_string(), "message": {"lang": "ru", "value": message}}})
                .to_string(),
        ),
        Format::Atom => (
            "application/xml;charset=utf-8",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<m:error xmlns:m=\"http://schemas.microsoft.com/ado/2007/08/dataservices/metadata\">\n <m:code>{code}</m:code>\n <m:message xml:lang=\"ru\">{}</m:message>\n</m:error>",
                message
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('"', "&quot;")
            ),
        ),
    };
    (
        status,
        (status, [("content-type", ct)], text).into_response(),
    )
}

fn fail(code: i64, message: &str) -> Value {
    json!({"__error": {"code": code, "message": message}})
}

fn find_mut<'a>(inner: &'a mut Inner, resource: &str, key: &str) -> Option<&'a mut Value> {
    inner
        .sets
        .get_mut(resource)?
        .iter_mut()
        .find(|r| r["Ref_Key"] == key)
}

/// The work of one request: a status and a body (`__error` for 1C's error documents).
fn route(base: &str, inner: &mut Inner, req: &Req, resource: &str) -> (StatusCode, Value) {
    let rest = req.path.trim_start_matches('/');
    if rest.is_empty() {
        let value: Vec<Value> = inner
            .sets
            .keys()
            .map(|n| json!({"name": n, "url": n}))
            .collect();
        return (
            StatusCode::OK,
            json!({"odata.metadata": format!("{base}/$metadata"), "value": value}),
        );
    }
    if !inner.sets.contains_key(resource) {
        return (
            StatusCode::NOT_FOUND,
            fail(8, &format!("Тип сущности \"{resource}\" не найден")),
        );
    }
    if let Some(bad) = req.query.iter().map(|(k, _)| k.as_str()).find(|k| {
        k.starts_with('$')
            && !matches!(
                *k,
                "$format"
                    | "$filter"
                    | "$select"
                    | "$orderby"
                    | "$top"
                    | "$skip"
                    | "$inlinecount"
                    | "$expand"
            )
    }) {
        return (
            StatusCode::BAD_REQUEST,
            fail(14, &format!("Неизвестная опция запроса {bad}")),
        );
    }
    let after = &rest[resource.len()..];
    let (key, tail) = match after.strip_prefix('(') {
        Some(k) => match k.split_once(')') {
            Some((key, tail)) => (Some(key.to_owned()), tail.to_owned()),
            None => return (StatusCode::BAD_REQUEST, fail(6, "Неверный URL")),
        },
        None => (None, after.to_owned()),
    };
    let key = match key.as_deref().map(parse_key) {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => return (StatusCode::BAD_REQUEST, fail(7, &e)),
        None => None,
    };
    match (&req.method, key, tail.as_str()) {
        (&Method::GET, None, "") => list(base, inner, req, resource),
        (&Method::GET, None, "/$count") => match rows_of(inner, req, resource) {
            Ok(rows) => (StatusCode::OK, Value::String(rows.len().to_string())),
            Err(e) => e,
        },
        (&Method::GET, Some(k), "") => match find_mut(inner, resource, &k) {
            Some(row) => {
                let mut row = row.clone();
                row["odata.metadata"] = json!(format!("{base}/$metadata#{resource}/@Element"));
                (StatusCode::OK, row)
            }
            None => not_found(resource),
        },
        (&Method::POST, None, "") => create(inner, req, resource),
        (&Method::PATCH, Some(k), "") => update(inner, req, resource, &k),
        (&Method::DELETE, Some(k), "") => {
            let stale = match find_mut(inner, resource, &k) {
                None => return not_found(resource),
                Some(row) => stale(req, row),
            };
            if stale {
                return (StatusCode::PRECONDITION_FAILED, Value::Null);
            }
            if let Some(rows) = inner.sets.get_mut(resource) {
                rows.retain(|r| r["Ref_Key"] != k.as_str());
            }
            (StatusCode::NO_CONTENT, Value::Null)
        }
        (&Method::POST, Some(k), "/Post" | "/Unpost") if resource.starts_with("Document_") => {
            let posted = tail == "/Post";
            if posted && req.q("PostingModeOperational").is_none() {
                return (
                    StatusCode::BAD_REQUEST,
                    fail(12, "Не указан параметр PostingModeOperational"),
                );
            }
            let version = inner.version();
            match find_mut(inner, resource, &k) {
                Some(row) => {
                    row["Posted"] = json!(posted);
                    row["DataVersion"] = json!(version);
                    (StatusCode::OK, Value::Null)
                }
                None => not_found(resource),
            }
        }
        _ => (
            StatusCode::BAD_REQUEST,
            fail(19, "Использованный HTTP-метод запрещен в данном контексте"),
        ),
    }
}

fn not_found(resource: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        fail(
            9,
            &format!("Экземпляр сущности \"{resource}\" не найден по переданному ключу."),
        ),
    )
}

fn stale(req: &Req, row: &Value) -> bool {
    req.headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| Some(m) != row["DataVersion"].as_str())
}

/// `guid'…'` alone (a reference object's key).
fn parse_key(k: &str) -> Result<String, String> {
    k.strip_prefix("guid'")
        .and_then(|g| g.strip_suffix('\''))
        .filter(|g| is_guid(g))
        .map(str::to_owned)
        .ok_or_else(|| format!("Не хватает элемента ключа сущности: {k}"))
}

pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The rows `$filter` selects (allowedOnly changes nothing here: no access restrictions).
fn rows_of(inner: &Inner, req: &Req, resource: &str) -> Result<Vec<Value>, (StatusCode, Value)> {
    let rows = inner.sets.get(resource).cloned().unwrap_or_default();
    let Some(text) = req.q("$filter") else {
        return Ok(rows);
    };
    let expr = filter::parse(text).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            fail(14, &format!("Ошибка разбора опций запроса: {e}")),
        )
    })?;
    let mut out = Vec::new();
    for row in rows {
        match filter::eval(&expr, &row) {
            Ok(true) => out.push(row),
            Ok(false) => {}
            Err(e) => return Err((StatusCode::BAD_REQUEST, fail(14, &e))),
        }
    }
    Ok(out)
}

fn list(base: &str, inner: &Inner, req: &Req, resource: &str) -> (StatusCode, Value) {
    let mut rows = match rows_of(inner, req, resource) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Some(order) = req.q("$orderby") {
        let mut parts = order.split_whitespace();
        let field = parts.next().unwrap_or_default().to_owned();
        let desc = parts.next() == Some("desc");
        rows.sort_by(|a, b| {
            let o = filter::compare(&a[&field], &b[&field]);
            if desc { o.reverse() } else { o }
        });
    }
    let total = rows.len();
    let counted = req.q("$inlinecount") == Some("allpages");
    if !counted {
        let num = |n: &str| req.q(n).and_then(|v| v.parse::<usize>().ok());
        let skip = num("$skip").unwrap_or(0);
        let top = num("$top").unwrap_or(usize::MAX);
        rows = rows.into_iter().skip(skip).take(top).collect();
    }
    if let Some(select) = req.q("$select") {
        let fields: Vec<&str> = select.split(',').map(str::trim).collect();
        if !fields.contains(&"*") {
            rows = rows
                .into_iter()
                .map(|r| {
                    let kept: Map<String, Value> = r
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .filter(|(k, _)| fields.contains(&k.as_str()))
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect()
                        })
                        .unwrap_or_default();
                    Value::Object(kept)
                })
                .collect();
        }
    }
    let mut body = json!({"odata.metadata": format!("{base}/$metadata#{resource}")});
    if counted {
        body["odata.count"] = json!(total.to_string());
    }
    body["value"] = Value::Array(rows);
    (StatusCode::OK, body)
}

/// Checks a written record: a JSON object, references as GUIDs, required fields present.
fn check_record(body: &Bytes, required: bool) -> Result<Map<String, Value>, (StatusCode, Value)> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err((StatusCode::BAD_REQUEST, fail(2, "Неверный формат запроса")));
    };
    for (k, v) in &fields {
        if k.ends_with("_Key") && !v.as_str().is_some_and(is_guid) {
            return Err((
                StatusCode::BAD_REQUEST,
                fail(4, &format!("Неверное значение свойства \"{k}\"")),
            ));
        }
    }
    let empty = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
    if required && empty(fields.get("Description")) {
        return Err((
            StatusCode::BAD_REQUEST,
            fail(
                5,
                "Отсутствует обязательное значение свойства \"Description\"",
            ),
        ));
    }
    Ok(fields)
}

fn create(inner: &mut Inner, req: &Req, resource: &str) -> (StatusCode, Value) {
    let fields = match check_record(&req.body, resource.starts_with("Catalog_")) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let key = match fields.get("Ref_Key").and_then(Value::as_str) {
        Some(k) if find_mut(inner, resource, k).is_some() => {
            return (
                StatusCode::BAD_REQUEST,
                fail(15, "Сущность с таким ключом уже существует"),
            );
        }
        Some(k) => k.to_owned(),
        None => inner.guid(),
    };
    let version = inner.version();
    let mut row = json!({"Ref_Key": key, "DataVersion": version, "DeletionMark": false});
    if resource.starts_with("Document_") {
        row["Posted"] = json!(false);
    }
    merge(&mut row, Value::Object(fields));
    row["Ref_Key"] = json!(key);
    row["DataVersion"] = json!(version);
    inner
        .sets
        .entry(resource.to_owned())
        .or_default()
        .push(row.clone());
    (StatusCode::CREATED, row)
}

fn update(inner: &mut Inner, req: &Req, resource: &str, key: &str) -> (StatusCode, Value) {
    let fields = match check_record(&req.body, false) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let version = inner.version();
    let Some(row) = find_mut(inner, resource, key) else {
        return not_found(resource);
    };
    if stale(req, row) {
        return (StatusCode::PRECONDITION_FAILED, Value::Null);
    }
    merge(row, Value::Object(fields));
    row["Ref_Key"] = json!(key);
    row["DataVersion"] = json!(version);
    (StatusCode::OK, row.clone())
}

/// `$filter` as far as the tests use it: comparisons of a property with a literal, `and`,
/// `or`, `not` and parentheses.
mod filter {
    use serde_json::Value;
    use std::cmp::Ordering;

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Name(String),
        Str(String),
        Guid(String),
        Date(String),
        Num(f64),
        Bool(bool),
        Null,
        Open,
        Close,
    }

    #[derive(Debug)]
    pub enum Expr {
        Cmp(String, String, Lit),
        And(Box<Expr>, Box<Expr>),
        Or(Box<Expr>, Box<Expr>),
        Not(Box<Expr>),
    }

    #[derive(Debug)]
    pub enum Lit {
        Str(String),
        Guid(String),
        Date(String),
        Num(f64),
        Bool(bool),
        Null,
    }

    fn quoted(chars: &[char], i: &mut usize) -> Result<String, String> {
        // at the opening quote
        *i += 1;
        let mut s = String::new();
        loop {
            match chars.get(*i) {
                None => return Err("незакрытая строка".into()),
                Some('\'') if chars.get(*i + 1) == Some(&'\'') => {
                    s.push('\'');
                    *i += 2;
                }
                Some('\'') => {
                    *i += 1;
                    return Ok(s);
                }
                Some(c) => {
                    s.push(*c);
                    *i += 1;
                }
            }
        }
    }

    fn lex(text: &str) -> Result<Vec<Tok>, String> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == '(' {
                out.push(Tok::Open);
                i += 1;
            } else if c == ')' {
                out.push(Tok::Close);
                i += 1;
            } else if c == '\'' {
                out.push(Tok::Str(quoted(&chars, &mut i)?));
            } else if c.is_ascii_digit() || c == '-' {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let n: String = chars[start..i].iter().collect();
                out.push(Tok::Num(n.parse().map_err(|_| format!("число {n}"))?));
            } else if c.is_alphabetic() || c == '_' {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '/')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if chars.get(i) == Some(&'\'') && (word == "guid" || word == "datetime") {
                    let inner = quoted(&chars, &mut i)?;
                    out.push(if word == "guid" {
                        if !super::is_guid(&inner) {
                            return Err(format!("guid'{inner}'"));
                        }
                        Tok::Guid(inner)
                    } else {
                        Tok::Date(inner)
                    });
                } else {
                    out.push(match word.as_str() {
                        "true" => Tok::Bool(true),
                        "false" => Tok::Bool(false),
                        "null" => Tok::Null,
                        _ => Tok::Name(word),
                    });
                }
            } else {
                return Err(format!("символ {c}"));
            }
        }
        Ok(out)
    }

    struct P {
        toks: Vec<Tok>,
        at: usize,
    }

    impl P {
        fn peek_word(&self, w: &str) -> bool {
            matches!(self.toks.get(self.at), Some(Tok::Name(n)) if n == w)
        }
        fn or(&mut self) -> Result<Expr, String> {
            let mut left = self.and()?;
            while self.peek_word("or") {
                self.at += 1;
                left = Expr::Or(Box::new(left), Box::new(self.and()?));
            }
            Ok(left)
        }
        fn and(&mut self) -> Result<Expr, String> {
            let mut left = self.unary()?;
            while self.peek_word("and") {
                self.at += 1;
                left = Expr::And(Box::new(left), Box::new(self.unary()?));
            }
            Ok(left)
        }
        fn unary(&mut self) -> Result<Expr, String> {
            if self.peek_word("not") {
                self.at += 1;
                return Ok(Expr::Not(Box::new(self.unary()?)));
            }
            if self.toks.get(self.at) == Some(&Tok::Open) {
                self.at += 1;
                let e = self.or()?;
                if self.toks.get(self.at) != Some(&Tok::Close) {
                    return Err("нет )".into());
                }
                self.at += 1;
                return Ok(e);
            }
            let Some(Tok::Name(field)) = self.toks.get(self.at).cloned() else {
                return Err("ожидалось имя свойства".into());
            };
            let Some(Tok::Name(op)) = self.toks.get(self.at + 1).cloned() else {
                return Err(format!("после {field} ожидалась операция"));
            };
            if !["eq", "ne", "gt", "ge", "lt", "le"].contains(&op.as_str()) {
                return Err(format!("операция {op}"));
            }
            let lit = match self.toks.get(self.at + 2).cloned() {
                Some(Tok::Str(s)) => Lit::Str(s),
                Some(Tok::Guid(g)) => Lit::Guid(g),
                Some(Tok::Date(d)) => Lit::Date(d),
                Some(Tok::Num(n)) => Lit::Num(n),
                Some(Tok::Bool(b)) => Lit::Bool(b),
                Some(Tok::Null) => Lit::Null,
                other => return Err(format!("значение {other:?}")),
            };
            self.at += 3;
            Ok(Expr::Cmp(field, op, lit))
        }
    }

    pub fn parse(text: &str) -> Result<Expr, String> {
        let mut p = P {
            toks: lex(text)?,
            at: 0,
        };
        let e = p.or()?;
        if p.at != p.toks.len() {
            return Err("лишние символы в конце".into());
        }
        Ok(e)
    }

    pub fn compare(a: &Value, b: &Value) -> Ordering {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x
                .as_f64()
                .partial_cmp(&y.as_f64())
                .unwrap_or(Ordering::Equal),
            (Value::String(x), Value::String(y)) => x.cmp(y),
            _ => a.to_string().cmp(&b.to_string()),
        }
    }

    pub fn eval(e: &Expr, row: &Value) -> Result<bool, String> {
        Ok(match e {
            Expr::And(a, b) => eval(a, row)? && eval(b, row)?,
            Expr::Or(a, b) => eval(a, row)? || eval(b, row)?,
            Expr::Not(a) => !eval(a, row)?,
            Expr::Cmp(field, op, lit) => {
                let v = field.split('/').fold(row.clone(), |v, f| v[f].clone());
                if field.ends_with("_Key") && !matches!(lit, Lit::Guid(_) | Lit::Null) {
                    return Err(format!(
                        "Несовместимые типы: {field} сравнивается не со ссылкой"
                    ));
                }
                let lit = match lit {
                    Lit::Str(s) | Lit::Guid(s) | Lit::Date(s) => Value::String(s.clone()),
                    Lit::Num(n) => serde_json::json!(n),
                    Lit::Bool(b) => Value::Bool(*b),
                    Lit::Null => Value::Null,
                };
                let o = compare(&v, &lit);
                match op.as_str() {
                    "eq" => v == lit || (v.is_number() && o == Ordering::Equal),
                    "ne" => v != lit,
                    "gt" => o == Ordering::Greater,
                    "ge" => o != Ordering::Less,
                    "lt" => o == Ordering::Less,
                    _ => o != Ordering::Greater,
                }
            }
        })
    }
}
