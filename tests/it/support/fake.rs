//! A CRM-like REST target on loopback: it checks the bearer token, keeps a ledger of every
//! request it receives, stores leads and notes, and can be scripted to fail the way real
//! targets do (5xx, 429 + Retry-After, answers slower than the client's timeout, 422 until
//! someone fixes the data).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[path = "../../support/received.rs"]
mod received;
pub use received::Received;

/// A scripted misbehaviour, used once.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and a small JSON error.
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    RateLimited(u64),
    /// Answer only after this long (longer than the client's timeout).
    Sleep(Duration),
    /// 500 whose body repeats the Authorization header it got (a careless target).
    EchoAuth,
    /// This status with a validation error that repeats the request body it got (targets
    /// quote the offending values back).
    EchoBody(u16),
}

struct Rule {
    method: Method,
    path: String,
    faults: VecDeque<Fault>,
}

#[derive(Default)]
struct Data {
    leads: BTreeMap<String, Value>,
    notes: Vec<Value>,
}

struct Inner {
    token: String,
    ledger: Mutex<Vec<Received>>,
    rules: Mutex<Vec<Rule>>,
    /// While set, requests matching `broken_on` answer 422.
    broken: AtomicBool,
    broken_on: Mutex<Option<(Method, String)>>,
    data: Mutex<Data>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The fake target; stops when dropped.
pub struct Fake {
    inner: Arc<Inner>,
    url: String,
    stop: CancellationToken,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Fake {
    /// Starts on 127.0.0.1:0; requests must carry `Authorization: Bearer <token>`.
    pub async fn start(token: &str) -> Fake {
        let inner = Arc::new(Inner {
            token: token.to_owned(),
            ledger: Mutex::default(),
            rules: Mutex::default(),
            broken: AtomicBool::new(false),
            broken_on: Mutex::default(),
            data: Mutex::default(),
            next_id: AtomicU64::new(1),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake target");
        let url = format!("http://{}", listener.local_addr().expect("fake address"));
        let stop = CancellationToken::new();
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(until.cancelled_owned())
                .await;
        });
        Fake { inner, url, stop }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next requests to `method path` meet these faults, one each, in order.
    pub fn script(&self, method: Method, path: &str, faults: Vec<Fault>) {
        lock(&self.inner.rules).push(Rule {
            method,
            path: path.to_owned(),
            faults: faults.into(),
        });
    }

    /// Until [`Fake::fix`], `method path` answers 422 with a validation error.
    pub fn break_with_422(&self, method: Method, path: &str) {
        *lock(&self.inner.broken_on) = Some((method, path.to_owned()));
        self.inner.broken.store(true, Ordering::SeqCst);
    }

    pub fn fix(&self) {
        self.inner.broken.store(false, Ordering::SeqCst);
    }

    /// A lead that exists at the target before obmen sees it.
    pub fn seed_lead(&self, id: &str, lead: Value) {
        let mut lead = lead;
        lead["id"] = json!(id);
        lock(&self.inner.data).leads.insert(id.to_owned(), lead);
    }

    pub fn lead(&self, id: &str) -> Option<Value> {
        lock(&self.inner.data).leads.get(id).cloned()
    }

    pub fn leads(&self) -> Vec<Value> {
        lock(&self.inner.data).leads.values().cloned().collect()
    }

    pub fn notes(&self) -> Vec<Value> {
        lock(&self.inner.data).notes.clone()
    }

    /// Every request received so far, in order of arrival.
    pub fn ledger(&self) -> Vec<Received> {
        lock(&self.inner.ledger).clone()
    }

    /// Requests with this method and exact path.
    pub fn requests(&self, method: &str, path: &str) -> Vec<Received> {
        self.ledger()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests(method, path).len()
    }

    /// Requests that would change data at the target (anything but GET/HEAD).
    pub fn mutating(&self) -> Vec<Received> {
        self.ledger()
            .into_iter()
            .filter(Received::is_mutating)
            .collect()
    }
}

async fn handle(
    State(f): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = reqwest::Url::parse(&format!("http://fake{uri}"))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let received = Received::new(&method, &uri, headers, query, body);
    // Recorded on arrival: a client that times out drops this handler before it answers.
    let index = {
        let mut ledger = lock(&f.ledger);
        ledger.push(received.clone());
        ledger.len() - 1
    };
    let (status, response) = answer(&f, &method, &received).await;
    if let Some(r) = lock(&f.ledger).get_mut(index) {
        r.status = status.as_u16();
    }
    response
}

/// Decides the answer: auth first, then scripted faults, then the 422 switch, then the API.
async fn answer(f: &Inner, method: &Method, req: &Received) -> (StatusCode, Response) {
    let auth = req.header("authorization").unwrap_or_default().to_owned();
    if auth != format!("Bearer {}", f.token) {
        return reply(StatusCode::UNAUTHORIZED, json!({"error": "bad token"}));
    }
    if let Some(fault) = next_fault(f, method, &req.path) {
        return fault_answer(fault, &auth, &req.body).await;
    }
    let broken = f.broken.load(Ordering::SeqCst)
        && lock(&f.broken_on)
            .as_ref()
            .is_some_and(|(m, p)| m == method && *p == req.path);
    if broken {
        return reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": {"field": "phone", "message": "phone is invalid"}}),
        );
    }
    api(f, method, req)
}

fn next_fault(f: &Inner, method: &Method, path: &str) -> Option<Fault> {
    let mut rules = lock(&f.rules);
    let rule = rules
        .iter_mut()
        .find(|r| r.method == method && r.path == path && !r.faults.is_empty())?;
    rule.faults.pop_front()
}

async fn fault_answer(fault: Fault, auth: &str, body: &Value) -> (StatusCode, Response) {
    match fault {
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            reply(status, json!({"error": "scripted failure"}))
        }
        Fault::RateLimited(secs) => {
            let body = Json(json!({"error": "slow down"}));
            let response = (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                body,
            )
                .into_response();
            (StatusCode::TOO_MANY_REQUESTS, response)
        }
        Fault::Sleep(d) => {
            tokio::time::sleep(d).await;
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "too late"}),
            )
        }
        Fault::EchoAuth => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": format!("internal error for {auth}")}),
        ),
        Fault::EchoBody(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            reply(
                status,
                json!({"error": {"message": format!("invalid data: {body}"), "got": body}}),
            )
        }
    }
}

fn reply(status: StatusCode, body: Value) -> (StatusCode, Response) {
    (status, (status, Json(body)).into_response())
}

/// The CRM itself: leads (create, search by any field, update) and notes.
fn api(f: &Inner, method: &Method, req: &Received) -> (StatusCode, Response) {
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["leads"]) => create(f, req, "L", |d, id, v| {
            d.leads.insert(id, v);
        }),
        ("GET", ["leads"]) => search(f, req),
        ("PATCH", ["leads", id]) => update(f, id, &req.body),
        ("POST", ["notes"]) => create(f, req, "N", |d, _, v| d.notes.push(v)),
        _ => reply(StatusCode::NOT_FOUND, json!({"error": "no such endpoint"})),
    }
}

fn create(
    f: &Inner,
    req: &Received,
    prefix: &str,
    store: impl FnOnce(&mut Data, String, Value),
) -> (StatusCode, Response) {
    let id = format!("{prefix}{}", f.next_id.fetch_add(1, Ordering::SeqCst));
    let mut record = req.body.clone();
    if let Value::Object(map) = &mut record {
        map.insert("id".into(), json!(id));
    }
    store(&mut lock(&f.data), id.clone(), record);
    reply(StatusCode::CREATED, json!({"id": id}))
}

fn search(f: &Inner, req: &Received) -> (StatusCode, Response) {
    let data = lock(&f.data);
    let items: Vec<Value> = data
        .leads
        .values()
        .filter(|lead| {
            req.query
                .iter()
                .all(|(k, v)| lead.get(k).and_then(Value::as_str) == Some(v.as_str()))
        })
        .cloned()
        .collect();
    reply(StatusCode::OK, json!({"items": items}))
}

fn update(f: &Inner, id: &str, body: &Value) -> (StatusCode, Response) {
    let mut data = lock(&f.data);
    let Some(lead) = data.leads.get_mut(id) else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no lead {id}")}),
        );
    };
    if let (Value::Object(lead), Value::Object(changes)) = (lead, body) {
        for (k, v) in changes {
            lead.insert(k.clone(), v.clone());
        }
    }
    reply(StatusCode::OK, json!({"id": id}))
}
