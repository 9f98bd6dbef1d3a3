//! Sends a connector's requests: per-system rate limit and concurrency, timeouts, the
//! `X-Request-Id` and idempotency headers, the connector's signature headers, error
//! classification and `Retry-After`. A JSON body is serialized once: the bytes signed, sent
//! and journaled are the same. Every call comes back with its masked [`CallRecord`], sent
//! or only "would send".

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::mask::Masker;
use crate::model::ErrorClass;
use crate::store::records::CallRecord;

use super::{Answer, BoxFuture, CallError, Connector, OutboundRequest};

/// How much of a request or response body the journal keeps.
pub const BODY_EXCERPT: usize = 4096;

/// The longest a connector's pacing may hold back a system, whatever the connector asks: a
/// guard for the shared mechanism (an unbounded wait would stall every call, and a huge one
/// overflow `Instant`); a connector clamps its own waits tighter (MoySklad: 60 s).
pub const MAX_HOLD: Duration = Duration::from_secs(600);

/// One configured system, ready to call.
pub struct System {
    pub name: String,
    pub connector: Arc<dyn Connector>,
    limiter: Option<DefaultDirectRateLimiter>,
    slots: Semaphore,
    client: reqwest::Client,
    /// No request leaves before this moment: the target said its budget is nearly spent.
    held_until: Mutex<Option<Instant>>,
}

/// Who is calling: what the transport adds to the request and how it masks the record.
pub struct CallCtx<'a> {
    pub step: &'a str,
    pub request_id: &'a str,
    pub idempotency_key: String,
    pub masker: &'a Masker,
    /// Record only ("would send"): shadow mode and dry runs.
    pub send_mutating: bool,
}

/// One request as sent: its outcome, its record, and where a redirect pointed.
struct Sent {
    outcome: Result<Value, CallError>,
    record: CallRecord,
    moved_to: Option<String>,
}

impl System {
    pub fn new(name: String, connector: Arc<dyn Connector>, client: reqwest::Client) -> System {
        let settings = connector.settings().clone();
        let limiter = settings.rate.map(|(n, per)| {
            let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(per / n.get())
                .unwrap_or_else(|| Quota::per_second(n))
                .allow_burst(n);
            RateLimiter::direct(quota)
        });
        // The shared client follows redirects (and turns a POST into a GET on a 302); a
        // system that handles them itself gets a client of its own that does not.
        let client = if connector.follows_redirects() {
            client
        } else {
            no_redirect_client().unwrap_or(client)
        };
        System {
            name,
            connector,
            limiter,
            slots: Semaphore::new(settings.concurrency.max(1)),
            client,
            held_until: Mutex::new(None),
        }
    }

    /// Carries out one step's call: the connector may send several requests (pages, parts
    /// of a bulk write); each is recorded, sent or only "would send".
    pub async fn call(
        &self,
        mut req: OutboundRequest,
        ctx: &CallCtx<'_>,
    ) -> (Result<Value, CallError>, Vec<CallRecord>) {
        // Before any split into parts, so that each item keeps the key of its place in the
        // whole call.
        if req.mutating {
            self.connector
                .prepare_mutating(&mut req, &ctx.idempotency_key);
        }
        let records = Mutex::new(Vec::new());
        let send = |r: OutboundRequest| -> BoxFuture<'_, Result<Value, CallError>> {
            Box::pin(async {
                let (outcome, mut recs) = self.send_one(r, ctx).await;
                if let Ok(mut all) = records.lock() {
                    all.append(&mut recs);
                }
                outcome
            })
        };
        let outcome = self.connector.perform(req, &send).await;
        let records = records.into_inner().unwrap_or_default();
        (outcome, records)
    }

    /// Sends one request. A redirect the connector handles is followed once to where it
    /// points; when the target refuses the credentials and the connector can refresh them
    /// (OAuth), it refreshes once and sends once more. Every request is recorded.
    async fn send_one(
        &self,
        mut req: OutboundRequest,
        ctx: &CallCtx<'_>,
    ) -> (Result<Value, CallError>, Vec<CallRecord>) {
        if let Err(e) = self.connector.ready().await {
            let mut record = record_of(self.connector.as_ref(), &req, None, ctx);
            record.error = Some(ctx.masker.text(&e.message));
            return (Err(e), vec![record]);
        }
        let first = self.call_once(req.clone(), ctx).await;
        let mut records = vec![first.record];
        let mut outcome = first.outcome;
        if let Some(location) = first.moved_to {
            match self.connector.relocate(&mut req, &location) {
                Ok(()) => {
                    let again = self.call_once(req.clone(), ctx).await;
                    records.push(again.record);
                    outcome = match again.moved_to {
                        Some(_) => Err(CallError::new(
                            ErrorClass::Config,
                            "the target redirected the call again after a move",
                        )),
                        None => again.outcome,
                    };
                }
                Err(e) => outcome = Err(e),
            }
        }
        let refused = matches!(&outcome, Err(e) if e.class == ErrorClass::Auth);
        if !refused {
            return (outcome, records);
        }
        match self.connector.refresh_auth(&self.client).await {
            Ok(true) => {
                let again = self.call_once(req, ctx).await;
                records.push(again.record);
                (again.outcome, records)
            }
            Ok(false) => (outcome, records),
            Err(e) => (Err(e), records),
        }
    }

    async fn call_once(&self, mut req: OutboundRequest, ctx: &CallCtx<'_>) -> Sent {
        self.add_headers(&mut req, ctx);
        self.connector.authorize(&mut req);
        let body = match req.body.as_ref().map(serde_json::to_vec).transpose() {
            Ok(body) => body,
            Err(e) => {
                let err = CallError::new(
                    ErrorClass::Config,
                    format!("the request body cannot be serialized: {e}"),
                );
                let mut record = record_of(self.connector.as_ref(), &req, None, ctx);
                record.error = Some(ctx.masker.text(&err.message));
                return Sent {
                    outcome: Err(err),
                    record,
                    moved_to: None,
                };
            }
        };
        if req.mutating && !ctx.send_mutating {
            self.sign(&mut req, body.as_deref(), ctx);
            return Sent {
                outcome: Ok(Value::Null),
                record: record_of(self.connector.as_ref(), &req, body.as_deref(), ctx),
                moved_to: None,
            };
        }
        let _slot = self.slots.acquire().await;
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        self.hold_back().await;
        // Signed after the waits: the timestamp is the moment of sending.
        self.sign(&mut req, body.as_deref(), ctx);
        let mut record = record_of(self.connector.as_ref(), &req, body.as_deref(), ctx);
        record.sent = true;
        let started = Instant::now();
        let url = req.url.clone();
        let result = self.send(req, body).await;
        record.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut moved_to = None;
        let outcome = match result {
            Ok(answer) => {
                record.status = Some(answer.status);
                record.response = Some(
                    ctx.masker
                        .excerpt(&String::from_utf8_lossy(&answer.body), BODY_EXCERPT),
                );
                if let Some(wait) = self.connector.pace(&answer) {
                    self.hold(wait);
                }
                moved_to = self.redirect_of(&answer);
                match self.connector.classify(&answer) {
                    Some(err) => Err(err),
                    None => {
                        read_body(&answer).and_then(|body| self.connector.read_answer(&url, body))
                    }
                }
            }
            Err(err) => Err(err),
        };
        if let Err(err) = &outcome {
            record.error = Some(ctx.masker.text(&err.message));
        }
        Sent {
            outcome,
            record,
            moved_to,
        }
    }

    /// The `Location` of a redirect the client did not follow.
    fn redirect_of(&self, answer: &Answer) -> Option<String> {
        if self.connector.follows_redirects() || !(300..400).contains(&answer.status) {
            return None;
        }
        answer
            .headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Holds back every request of this system for `wait` from now (the longest hold wins),
    /// never longer than [`MAX_HOLD`]: a wait comes from the system's headers, and one
    /// absurd value must not stall every later call until restart.
    fn hold(&self, wait: Duration) {
        let until = Instant::now() + wait.min(MAX_HOLD);
        if let Ok(mut held) = self.held_until.lock()
            && held.is_none_or(|h| h < until)
        {
            *held = Some(until);
        }
    }

    async fn hold_back(&self) {
        loop {
            let until = self.held_until.lock().ok().and_then(|h| *h);
            match until {
                Some(at) if at > Instant::now() => tokio::time::sleep_until(at.into()).await,
                _ => return,
            }
        }
    }

    fn add_headers(&self, req: &mut OutboundRequest, ctx: &CallCtx<'_>) {
        let settings = self.connector.settings();
        if let Some(h) = &settings.request_id_header {
            req.headers.push((h.clone(), ctx.request_id.to_owned()));
        }
        if let (Some(h), true) = (&settings.idempotency_header, req.mutating) {
            req.headers.push((h.clone(), ctx.idempotency_key.clone()));
        }
    }

    /// Adds the connector's signature headers (none for most systems), keyed by the
    /// idempotency key, which stays the same when the same step is delivered again.
    fn sign(&self, req: &mut OutboundRequest, body: Option<&[u8]>, ctx: &CallCtx<'_>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let headers = self
            .connector
            .sign(&ctx.idempotency_key, now, body.unwrap_or_default());
        req.headers.extend(headers);
    }

    /// Sends `req` with `body`, the bytes its JSON body was serialized to.
    async fn send(&self, req: OutboundRequest, body: Option<Vec<u8>>) -> Result<Answer, CallError> {
        let mut builder = self
            .client
            .request(req.method, &req.url)
            .timeout(self.connector.settings().timeout);
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = body {
            let typed = req
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
            if !typed {
                builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            builder = builder.body(body);
        }
        let response = builder.send().await.map_err(|e| network_error(&e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| network_error(&e))?
            .to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

fn record_of(
    connector: &dyn Connector,
    req: &OutboundRequest,
    body: Option<&[u8]>,
    ctx: &CallCtx<'_>,
) -> CallRecord {
    let m = ctx.masker;
    CallRecord {
        step: ctx.step.to_owned(),
        method: req.method.to_string(),
        url: m.text(&connector.redact_url(&req.url)),
        headers: req
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), m.header(k, v)))
            .collect(),
        body: body.map(|b| m.excerpt(&String::from_utf8_lossy(b), BODY_EXCERPT)),
        sent: false,
        status: None,
        response: None,
        duration_ms: 0,
        error: None,
    }
}

/// Pages one list call may read when a flow sets `all_pages = true` (or at most with
/// `max_pages`): a step's output is kept whole in the journal, so it stays bounded; a flow
/// that needs more continues from its stored cursor on the next run.
pub const MAX_PAGES: u32 = 100;

/// Marks a request whose call should read several pages: set by a connector's `op_request`,
/// taken off again by its `perform`, never sent.
const PAGES_MARK: &str = "x-obmen-pages";

/// Takes a flow's paging arguments (`all_pages = true`, `max_pages = n`) out of `args`:
/// how many pages the call may read (1 when neither is given).
pub fn take_pages(args: &mut serde_json::Map<String, Value>) -> Result<u32, CallError> {
    let all = args.remove("all_pages");
    let max = args.remove("max_pages");
    let bad = |m: &str| Err(CallError::new(ErrorClass::Input, m.to_owned()));
    match (all, max) {
        (None | Some(Value::Bool(false) | Value::Null), None | Some(Value::Null)) => Ok(1),
        (None | Some(Value::Bool(false) | Value::Null), Some(n)) => {
            match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n @ 1..=MAX_PAGES) => Ok(n),
                _ => bad(&format!("`max_pages` is a number from 1 to {MAX_PAGES}")),
            }
        }
        (Some(Value::Bool(true)), None | Some(Value::Null)) => Ok(MAX_PAGES),
        (Some(Value::Bool(true)), Some(_)) => bad("set `all_pages` or `max_pages`, not both"),
        (Some(_), _) => bad("`all_pages` is true or false"),
    }
}

/// Marks `req` to read up to `pages` pages (nothing when one).
pub fn mark_pages(req: &mut OutboundRequest, pages: u32) {
    if pages > 1 {
        req.headers.push((PAGES_MARK.to_owned(), pages.to_string()));
    }
}

/// Takes the mark off `req`: the pages its call may read.
pub fn unmark_pages(req: &mut OutboundRequest) -> u32 {
    let mut pages = 1;
    req.headers.retain(|(k, v)| {
        if k == PAGES_MARK {
            pages = v.parse().unwrap_or(1);
            false
        } else {
            true
        }
    });
    pages
}

/// The shared client's settings (see `app::http_client`), without following redirects.
fn no_redirect_client() -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("obmen/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .ok()
}

/// Network failures are transient; the message never carries the URL (it may hold a token).
fn network_error(err: &reqwest::Error) -> CallError {
    let what = if err.is_timeout() {
        "the target did not answer in time"
    } else if err.is_connect() {
        "cannot connect to the target"
    } else if err.is_body() || err.is_decode() {
        "the connection broke while reading the answer"
    } else {
        "the request failed"
    };
    let detail = std::error::Error::source(err)
        .map(|s| s.to_string())
        .unwrap_or_default();
    CallError::new(ErrorClass::Transient, format!("{what} ({detail})"))
}

/// A 2xx body as JSON: empty is null, JSON is parsed, other text is kept as a string; a
/// body that says it is JSON but does not parse is an error (a proxy page, a cut answer).
fn read_body(answer: &Answer) -> Result<Value, CallError> {
    if answer.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    match serde_json::from_slice(&answer.body) {
        Ok(v) => Ok(v),
        Err(e) if is_json(answer) => Err(CallError::new(
            ErrorClass::Transient,
            format!(
                "the target answered {} with invalid JSON: {e}",
                answer.status
            ),
        )),
        Err(_) => Ok(Value::String(
            String::from_utf8_lossy(&answer.body).into_owned(),
        )),
    }
}

fn is_json(answer: &Answer) -> bool {
    answer
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"))
}

/// The usual HTTP reading: 2xx ok; 408/425/5xx transient; 429 rate-limited (with its
/// Retry-After); 401/403 auth; other 4xx permanent (the target refused the data).
pub fn classify_http(answer: &Answer) -> Option<CallError> {
    let status = answer.status;
    let class = match status {
        200..=299 => return None,
        429 => ErrorClass::RateLimited,
        408 | 425 | 500..=599 => ErrorClass::Transient,
        401 | 403 => ErrorClass::Auth,
        _ => ErrorClass::Permanent,
    };
    let text = String::from_utf8_lossy(&answer.body);
    let excerpt: String = text.chars().take(500).collect();
    let mut err = CallError::new(class, format!("HTTP {status}: {}", excerpt.trim()));
    err.status = Some(status);
    err.retry_after = retry_after(&answer.headers, SystemTime::now());
    Some(err)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let raw = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    fn answer(status: u16, retry: Option<&str>) -> Answer {
        let mut headers = HeaderMap::new();
        if let Some(r) = retry {
            headers.insert(RETRY_AFTER, HeaderValue::from_str(r).expect("header"));
        }
        Answer {
            status,
            headers,
            body: b"{\"error\":\"x\"}".to_vec(),
        }
    }

    #[test]
    fn classes_by_status() {
        assert!(classify_http(&answer(201, None)).is_none());
        let class = |s| classify_http(&answer(s, None)).map(|e| e.class);
        assert_eq!(class(500), Some(ErrorClass::Transient));
        assert_eq!(class(503), Some(ErrorClass::Transient));
        assert_eq!(class(429), Some(ErrorClass::RateLimited));
        assert_eq!(class(401), Some(ErrorClass::Auth));
        assert_eq!(class(422), Some(ErrorClass::Permanent));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = answer(429, Some("7"));
        assert_eq!(retry_after(&a.headers, now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let a = answer(429, Some(&date));
        assert_eq!(retry_after(&a.headers, now), Some(Duration::from_secs(90)));
        let a = answer(429, Some("soon"));
        assert_eq!(retry_after(&a.headers, now), None);
    }
}
