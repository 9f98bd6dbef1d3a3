//! 1C's error answers, read from its own bodies: JSON
//! `{"odata.error":{"code":"9","message":{"lang":"ru","value":"…"}}}` or XML
//! `<m:error><m:code>9</m:code><m:message>…</m:message></m:error>`, classified by 1C's
//! internal code first (§17.4.10 of the 1C developer guide), then by HTTP status.

use std::time::SystemTime;

use serde_json::Value;

use crate::connectors::transport::retry_after;
use crate::connectors::{Answer, CallError};
use crate::model::ErrorClass;

/// The internal code and text of a 1C error body, if it has one.
pub fn error_of(body: &[u8]) -> Option<(Option<i64>, String)> {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.starts_with('{') {
        let v: Value = serde_json::from_str(trimmed).ok()?;
        let e = v.get("odata.error").or_else(|| v.get("error"))?;
        let code = match e.get("code")? {
            Value::String(s) => s.trim().parse().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        };
        let message = match e.get("message") {
            Some(Value::Object(m)) => m.get("value").and_then(Value::as_str).unwrap_or_default(),
            Some(Value::String(s)) => s,
            _ => "",
        };
        return Some((code, message.to_owned()));
    }
    if trimmed.starts_with('<') && trimmed.contains("error") {
        let code = element(trimmed, "code").and_then(|c| c.trim().parse().ok());
        let message = element(trimmed, "message").unwrap_or_default();
        return (code.is_some() || !message.is_empty()).then_some((code, message));
    }
    None
}

/// The text of the first element whose local name is `name` (`<m:code>` or `<code>`),
/// with XML's character references decoded. 1C's error document is flat, so this is
/// enough; anything else falls back to the raw body.
fn element(xml: &str, name: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let end = rest.find('>')?;
        let tag = &rest[..end];
        let local = tag
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .rsplit(':')
            .next()
            .unwrap_or_default();
        if local == name && !tag.starts_with('/') && !tag.ends_with('/') {
            let body = &rest[end + 1..];
            let close = body.find("</")?;
            return Some(unescape(&body[..close]));
        }
        rest = &rest[end + 1..];
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(semi) = rest.find(';').filter(|n| *n <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let ch = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// What 1C's internal code means for obmen, and a hint for the person reading it.
fn class_of_code(code: i64) -> Option<(ErrorClass, &'static str)> {
    Some(match code {
        // "internal error, see the technological log": a lock conflict, a restarting
        // server; 1C also puts a configuration's own refusals here, which then end
        // `failed` when the attempts run out.
        -1 => (ErrorClass::Transient, "an error inside 1C"),
        20 => (
            ErrorClass::Auth,
            "the 1C user lacks the rights for this (grant them in 1C; for reads, allowed_only = true skips rows hidden by access restrictions)",
        ),
        8 => (
            ErrorClass::Config,
            "the object is not published: enable it in 1C with УстановитьСоставСтандартногоИнтерфейсаOData",
        ),
        0 | 3 | 6 | 7 | 10 | 11 | 12 | 14 | 18 | 19 | 21 => (
            ErrorClass::Config,
            "the request does not fit this 1C configuration: check the flow's names and arguments",
        ),
        13 => (
            ErrorClass::Config,
            "tabular rows are written inside their object, not on their own",
        ),
        17 => (ErrorClass::Config, "this object refuses data_load_mode"),
        9 => (ErrorClass::Permanent, "no such record in 1C"),
        15 => (
            ErrorClass::Permanent,
            "a record with this key already exists",
        ),
        1 | 2 | 4 | 5 | 16 => (ErrorClass::Permanent, "1C refused the data"),
        _ => return None,
    })
}

/// 2xx is success. A 412 is a concurrent change (transient: an upsert reads the record
/// again on its next attempt); 429 waits; then 1C's internal code decides; without one,
/// the status: 401/403 auth, 404 a wrong `base_url` (config), 501 an unsupported
/// property type (config), 408/5xx transient, other 4xx permanent.
pub fn classify(answer: &Answer) -> Option<CallError> {
    let status = answer.status;
    if (200..300).contains(&status) {
        return None;
    }
    let found = error_of(&answer.body);
    let code = found.as_ref().and_then(|(c, _)| *c);
    let by_code = code.and_then(class_of_code);
    let (class, hint) = match (status, by_code) {
        (412, _) => (
            ErrorClass::Transient,
            "the record changed in 1C after obmen read it (its DataVersion no longer matches If-Match); the next attempt reads it again",
        ),
        (429, _) => (
            ErrorClass::RateLimited,
            "1C or its web server asks to slow down",
        ),
        (_, Some(found)) => found,
        (401, None) => (
            ErrorClass::Auth,
            "1C refused the user name or password (HTTP Basic)",
        ),
        (403, None) => (ErrorClass::Auth, "the web server refused access"),
        (404, None) => (
            ErrorClass::Config,
            "no OData answer at this address: check base_url (…/<infobase>/odata/standard.odata) and the publication",
        ),
        (501, None) => (
            ErrorClass::Config,
            "1C cannot show a property of this type over OData: $select the fields you need",
        ),
        (408 | 500..=599, None) => (ErrorClass::Transient, "1C or its web server failed"),
        _ => (ErrorClass::Permanent, "1C refused the request"),
    };
    let vendor = match &found {
        Some((Some(c), m)) => format!("code {c}: {}", m.trim()),
        Some((None, m)) => m.trim().to_owned(),
        None => {
            let text = String::from_utf8_lossy(&answer.body);
            let excerpt: String = text.trim().chars().take(300).collect();
            if excerpt.is_empty() {
                "no body".into()
            } else {
                excerpt
            }
        }
    };
    let mut err = CallError::new(class, format!("1C HTTP {status}, {vendor} — {hint}"));
    err.status = Some(status);
    err.retry_after = retry_after(&answer.headers, SystemTime::now());
    Some(err)
}
