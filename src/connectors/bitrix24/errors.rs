//! Bitrix24 error bodies `{"error": "CODE", "error_description": "…"}` read into classes:
//! the leaky-bucket and resource limits wait and retry, credentials refresh or stop, bad
//! parameters fail the step.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::connectors::transport::{classify_http, retry_after};
use crate::connectors::{Answer, CallError};
use crate::model::ErrorClass;

/// The wait after `503 QUERY_LIMIT_EXCEEDED`: the bucket drains 2 requests a second, so
/// after a second there is room again.
pub const QUERY_LIMIT_WAIT: Duration = Duration::from_secs(1);
/// The wait after `429 OPERATION_TIME_LIMIT` when the answer names none: the oldest of the
/// ten one-minute buckets drops within a minute.
pub const OPERATION_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// `OVERLOAD_LIMIT` is a manual block by Bitrix24 support.
pub const OVERLOAD_WAIT: Duration = Duration::from_secs(600);

/// Whether the refusal says the access token is missing or expired (refreshing helps).
pub fn is_expired(code: &str) -> bool {
    matches!(code, "expired_token" | "NO_AUTH_FOUND" | "invalid_token")
}

/// The error code and description of a Bitrix24 error body, if it is one.
pub fn error_of(body: &[u8]) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let code = code_of(&v)?;
    let description = v
        .get("error_description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Some((code, description))
}

/// The `error` of an error body as text: CRM methods answer a code (`"ACCESS_DENIED"`, or
/// `""` for "Not found"), the `catalog.*` methods a number (`0`, `100`, `200040300010`).
pub fn code_of(v: &Value) -> Option<String> {
    match v.get("error")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The class of an answer: `None` for a success.
pub fn classify(answer: &Answer) -> Option<CallError> {
    let status = answer.status;
    let ok = (200..300).contains(&status);
    let Some((code, description)) = error_of(&answer.body) else {
        return if ok { None } else { classify_http(answer) };
    };
    let (class, wait) = class_of(Some(status), &code, reset_wait(&answer.body));
    let shown = if code.is_empty() { "(no code)" } else { &code };
    let mut err = CallError::new(
        class,
        format!("Bitrix24 answered {status} {shown}: {description}"),
    );
    err.status = Some(status);
    err.retry_after = retry_after(&answer.headers, SystemTime::now()).or(wait);
    Some(err)
}

/// The class of a Bitrix24 error code and the wait it asks for; `status` is the HTTP status
/// when there is one (a command inside a `batch` has none), `reset` the wait until
/// `time.operating_reset_at` when the answer gave it.
pub fn class_of(
    status: Option<u16>,
    code: &str,
    reset: Option<Duration>,
) -> (ErrorClass, Option<Duration>) {
    match code {
        "QUERY_LIMIT_EXCEEDED" => (ErrorClass::RateLimited, Some(QUERY_LIMIT_WAIT)),
        "OPERATION_TIME_LIMIT" => (
            ErrorClass::RateLimited,
            Some(reset.unwrap_or(OPERATION_LIMIT_WAIT)),
        ),
        "OVERLOAD_LIMIT" => (ErrorClass::RateLimited, Some(OVERLOAD_WAIT)),
        "expired_token"
        | "NO_AUTH_FOUND"
        | "invalid_token"
        | "INVALID_CREDENTIALS"
        | "insufficient_scope"
        | "ACCESS_DENIED"
        | "user_access_error"
        | "method_confirm_waiting"
        | "PAYMENT_REQUIRED"
        | "invalid_grant"
        | "invalid_client" => (ErrorClass::Auth, None),
        "ERROR_METHOD_NOT_FOUND"
        | "WRONG_AUTH_TYPE"
        | "ERROR_BATCH_LENGTH_EXCEEDED"
        | "ERROR_BATCH_METHOD_NOT_ALLOWED"
        | "INVALID_REQUEST" => (ErrorClass::Config, None),
        "PORTAL_DELETED" => (ErrorClass::Permanent, None),
        "INTERNAL_SERVER_ERROR" | "ERROR_UNEXPECTED_ANSWER" => (ErrorClass::Transient, None),
        _ => match status {
            Some(s) if s >= 500 || s == 408 => (ErrorClass::Transient, None),
            Some(429) => (ErrorClass::RateLimited, None),
            Some(401) => (ErrorClass::Auth, None),
            // A 2xx with an error body, a 400 with bad parameters, "Not found" with an empty
            // code; inside a batch, any other code.
            _ => (ErrorClass::Permanent, None),
        },
    }
}

/// `time.operating_reset_at` (unix seconds), when an answer carries it.
fn reset_wait(body: &[u8]) -> Option<Duration> {
    let v: Value = serde_json::from_slice(body).ok()?;
    wait_until(v.pointer("/time/operating_reset_at")?.as_f64()?)
}

/// The wait until a unix time in seconds (at most 10 minutes); `None` when it has passed.
pub fn wait_until(at: f64) -> Option<Duration> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    (at > now).then(|| Duration::from_secs_f64((at - now).min(600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: reqwest::header::HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn class(status: u16, body: &str) -> Option<ErrorClass> {
        classify(&answer(status, body)).map(|e| e.class)
    }

    #[test]
    fn bitrix_codes_map_to_classes() {
        assert_eq!(class(200, r#"{"result":1,"time":{}}"#), None);
        let limit = classify(&answer(
            503,
            r#"{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}"#,
        ))
        .expect("error");
        assert_eq!(limit.class, ErrorClass::RateLimited);
        assert_eq!(limit.retry_after, Some(QUERY_LIMIT_WAIT));
        let op = classify(&answer(429, r#"{"error":"OPERATION_TIME_LIMIT"}"#)).expect("error");
        assert_eq!(op.class, ErrorClass::RateLimited);
        assert_eq!(op.retry_after, Some(OPERATION_LIMIT_WAIT));
        assert_eq!(
            class(401, r#"{"error":"expired_token"}"#),
            Some(ErrorClass::Auth)
        );
        assert_eq!(
            class(401, r#"{"error":"NO_AUTH_FOUND"}"#),
            Some(ErrorClass::Auth)
        );
        assert_eq!(
            class(403, r#"{"error":"INVALID_CREDENTIALS"}"#),
            Some(ErrorClass::Auth)
        );
        assert_eq!(
            class(500, r#"{"error":"INTERNAL_SERVER_ERROR"}"#),
            Some(ErrorClass::Transient)
        );
        assert_eq!(
            class(500, r#"{"error":"ERROR_CORE","error_description":"x"}"#),
            Some(ErrorClass::Transient)
        );
        assert_eq!(
            class(
                400,
                r#"{"error":"ERROR_CORE","error_description":"Unknown TYPE"}"#
            ),
            Some(ErrorClass::Permanent)
        );
        assert_eq!(
            class(400, r#"{"error":"","error_description":"Not found"}"#),
            Some(ErrorClass::Permanent)
        );
        assert_eq!(
            class(200, r#"{"error":"ERROR_METHOD_NOT_FOUND"}"#),
            Some(ErrorClass::Config)
        );
        assert_eq!(
            class(502, "<html>bad gateway</html>"),
            Some(ErrorClass::Transient)
        );
    }

    /// The catalog methods' numeric codes are read, not lost as "(no code)".
    #[test]
    fn numeric_codes_of_catalog_methods_are_named() {
        let e = classify(&answer(
            400,
            r#"{"error":200040300010,"error_description":"Insufficient rights to read catalog"}"#,
        ))
        .expect("error");
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(
            e.message.contains("400 200040300010: Insufficient"),
            "{}",
            e.message
        );
        let e = classify(&answer(
            400,
            r#"{"error":0,"error_description":"Product with the specified ID does not exist"}"#,
        ))
        .expect("error");
        assert!(e.message.contains("400 0: Product"), "{}", e.message);
        assert_eq!(class(500, r#"{"error":100}"#), Some(ErrorClass::Transient));
    }
}
