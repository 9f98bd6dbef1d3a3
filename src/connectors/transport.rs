//! Sends a connector's requests: per-system rate limit and concurrency, timeouts, the
//! `X-Request-Id` and idempotency headers, the connector's signature headers, error
//! classification and `Retry-After`. A JSON body is serialized once: the bytes signed, sent
//! and journaled are the same. Every call comes back with its masked [`CallRecord`], sent
//! or only "would send".

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::mask::Masker;
use crate::model::ErrorClass;
use crate::store::records::CallRecord;

use super::{Answer, CallError, Connector, OutboundRequest};

/// How much of a request or response body the journal keeps.
pub const BODY_EXCERPT: usize = 4096;

/// One configured system, ready to call.
pub struct System {
    pub name: String,
    pub connector: Arc<dyn Connector>,
    limiter: Option<DefaultDirectRateLimiter>,
    slots: Semaphore,
    client: reqwest::Client,
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
        System {
            name,
            connector,
            limiter,
            slots: Semaphore::new(settings.concurrency.max(1)),
            client,
        }
    }

    /// Sends `req` (or records it as "would send") and reads the answer.
    /// Sends `req` (or records it as "would send"). When the target refuses the credentials
    /// and the connector can refresh them (OAuth), it refreshes once and sends once more;
    /// both calls are recorded.
    pub async fn call(
        &self,
        req: OutboundRequest,
        ctx: &CallCtx<'_>,
    ) -> (Result<Value, CallError>, Vec<CallRecord>) {
        let (first, record) = self.call_once(req.clone(), ctx).await;
        let mut records = vec![record];
        let refused = matches!(&first, Err(e) if e.class == ErrorClass::Auth);
        if !refused {
            return (first, records);
        }
        match self.connector.refresh_auth(&self.client).await {
            Ok(true) => {
                let (again, record) = self.call_once(req, ctx).await;
                records.push(record);
                (again, records)
            }
            Ok(false) => (first, records),
            Err(e) => (Err(e), records),
        }
    }

    async fn call_once(
        &self,
        mut req: OutboundRequest,
        ctx: &CallCtx<'_>,
    ) -> (Result<Value, CallError>, CallRecord) {
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
                return (Err(err), record);
            }
        };
        if req.mutating && !ctx.send_mutating {
            self.sign(&mut req, body.as_deref(), ctx);
            return (
                Ok(Value::Null),
                record_of(self.connector.as_ref(), &req, body.as_deref(), ctx),
            );
        }
        let _slot = self.slots.acquire().await;
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        // Signed after the waits: the timestamp is the moment of sending.
        self.sign(&mut req, body.as_deref(), ctx);
        let mut record = record_of(self.connector.as_ref(), &req, body.as_deref(), ctx);
        record.sent = true;
        let started = Instant::now();
        let url = req.url.clone();
        let result = self.send(req, body).await;
        record.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = match result {
            Ok(answer) => {
                record.status = Some(answer.status);
                record.response = Some(
                    ctx.masker
                        .excerpt(&String::from_utf8_lossy(&answer.body), BODY_EXCERPT),
                );
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
        (outcome, record)
    }

    fn add_headers(&self, req: &mut OutboundRequest, ctx: &CallCtx<'_>) {
        let settings = self.connector.settings();
        if let Some(h) = &settings.request_id_header {
            req.headers.push((h.clone(), ctx.request_id.to_owned()));
        }
        if let (Some(h), true) = (&settings.idempotency_header, req.mutating) {
            req.headers.push((h.clone(), ctx.idempotency_key.clone()));
        }
        if req.mutating {
            self.connector.prepare_mutating(req, &ctx.idempotency_key);
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
