//! MoySklad's error answers: `{"errors":[{"error","code",…}]}` (or an array of those for
//! bulk requests) and the `X-Lognex-*` rate-limit headers.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::model::ErrorClass;

use super::super::transport::retry_after;
use super::super::{Answer, CallError};

/// The wait when MoySklad says "too many" without saying how long (1073: parallel requests).
const DEFAULT_WAIT: Duration = Duration::from_secs(1);

/// The longest wait a MoySklad answer can impose. Its limits are counted over seconds (45
/// requests per 3 s), so a longer `X-Lognex-Reset`/`Retry-After` is a broken or hostile
/// header; unbounded, it would hold back every request to the system until restart.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Codes from the error table (`md/_errors.md`) that decide the class whatever the status.
pub fn class_of_code(code: i64) -> Option<ErrorClass> {
    Some(match code {
        // 1049 rate limit, 1073 too many parallel requests
        1049 | 1073 => ErrorClass::RateLimited,
        // 1048 too many failed logins, 1056 auth error, 1061 no API access,
        // 1016/1017/1018/1045 no rights
        1048 | 1056 | 1061 | 1016 | 1017 | 1018 | 1045 => ErrorClass::Auth,
        // 1065 modified concurrently, 1074 maintenance, 1088 bulk request took too long
        1065 | 1074 | 1088 => ErrorClass::Transient,
        _ => return None,
    })
}

/// `(code, text)` of each error in the body.
pub fn errors_of(body: &[u8]) -> Vec<(Option<i64>, String)> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => errors_in(&v),
        Err(_) => Vec::new(),
    }
}

/// `(code, text)` of each error in an error object, or in an array of them (bulk).
pub fn errors_in(v: &Value) -> Vec<(Option<i64>, String)> {
    let lists: Vec<&Value> = match v {
        Value::Array(items) => items.iter().filter_map(|i| i.get("errors")).collect(),
        other => other.get("errors").into_iter().collect(),
    };
    lists
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
        .map(|e| {
            let code = e.get("code").and_then(Value::as_i64);
            let mut text = e
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(p) = e.get("parameter").and_then(Value::as_str) {
                text.push_str(&format!(" (parameter `{p}`)"));
            }
            (code, text)
        })
        .collect()
}

/// A wait header in ms (callers clamp the wait they settle on to [`MAX_WAIT`]).
fn header_ms(headers: &reqwest::header::HeaderMap, name: &str) -> Option<Duration> {
    header_u64(headers, name).map(Duration::from_millis)
}

fn header_u64(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// How long to hold back the next request when an answer says the budget is nearly spent.
/// MoySklad reports `X-RateLimit-Limit` requests per `X-Lognex-Retry-TimeInterval` ms,
/// replenished evenly, and `X-RateLimit-Remaining` after this request; up to `reserve`
/// requests may already be on their way (the parallel ones). At `reserve` or fewer left, the
/// next request waits until one more than that has come back (`X-Lognex-Reset` ms when the
/// limit is already in force, or `X-Lognex-Retry-After` on a 429). Never longer than
/// [`MAX_WAIT`], whatever the headers say.
pub fn pace(answer: &Answer, reserve: u64) -> Option<Duration> {
    let h = &answer.headers;
    let remaining = header_u64(h, "x-ratelimit-remaining")?;
    if remaining > reserve {
        return None;
    }
    let blocked = header_ms(h, "x-lognex-reset")
        .filter(|d| !d.is_zero())
        .max(header_ms(h, "x-lognex-retry-after").filter(|d| !d.is_zero()));
    let refill = match (
        header_u64(h, "x-ratelimit-limit").filter(|l| *l > 0),
        header_u64(h, "x-lognex-retry-timeinterval"),
    ) {
        // Saturating: the factors come from headers and must not overflow.
        (Some(limit), Some(interval)) => Some(Duration::from_millis(
            interval.saturating_mul(reserve.saturating_add(1).saturating_sub(remaining)) / limit,
        )),
        _ => None,
    };
    let wait = match (blocked, refill) {
        (Some(b), Some(r)) => b.max(r),
        (b, r) => b.or(r).unwrap_or(DEFAULT_WAIT),
    };
    Some(wait.min(MAX_WAIT))
}

/// 2xx is success. Otherwise: a rate-limit code or 429 → rate_limited, waiting
/// `X-Lognex-Retry-After` ms (else `X-Lognex-Reset`, `Retry-After`, 1 s); 401/403 and the
/// auth codes → auth; 5xx, 408 and the "try again" codes → transient; other 4xx (400 bad
/// JSON, 404, 409, 412 validation, 413 too large, 415) → permanent.
pub fn classify(answer: &Answer) -> Option<CallError> {
    let status = answer.status;
    if (200..300).contains(&status) {
        return None;
    }
    let errors = errors_of(&answer.body);
    let by_code = errors
        .iter()
        .filter_map(|(c, _)| c.and_then(class_of_code))
        .next();
    let class = match (status, by_code) {
        (429, _) => ErrorClass::RateLimited,
        (500..=599 | 408, _) => ErrorClass::Transient,
        (_, Some(class)) => class,
        (401 | 403, None) => ErrorClass::Auth,
        _ => ErrorClass::Permanent,
    };
    let detail = if errors.is_empty() {
        let text = String::from_utf8_lossy(&answer.body);
        let excerpt: String = text.chars().take(300).collect();
        match (status, excerpt.trim()) {
            (415, "") => "unsupported media type (MoySklad requires Accept-Encoding: gzip)".into(),
            (_, "") => "no body".into(),
            (_, t) => t.to_owned(),
        }
    } else {
        errors
            .iter()
            .map(|(c, t)| match c {
                Some(c) => format!("{c}: {t}"),
                None => t.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut err = CallError::new(class, format!("MoySklad HTTP {status}: {detail}"));
    err.status = Some(status);
    let h = &answer.headers;
    err.retry_after = header_ms(h, "x-lognex-retry-after")
        .or_else(|| header_ms(h, "x-lognex-reset").filter(|d| !d.is_zero()))
        .or_else(|| retry_after(h, SystemTime::now()))
        .map(|d| d.min(MAX_WAIT));
    if class == ErrorClass::RateLimited && err.retry_after.is_none() {
        err.retry_after = Some(DEFAULT_WAIT);
    }
    Some(err)
}
