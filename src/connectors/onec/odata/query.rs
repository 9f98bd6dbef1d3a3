//! The text of 1C OData URLs: literals (`'…'` with `'` doubled, `guid'…'`,
//! `datetime'…'`), `$filter` built from `{field: value}` objects, entity keys, and the
//! percent-encoding of Cyrillic names — plus the readable form the journal shows.

use serde_json::{Map, Value};

/// Comparison operators a filter key may carry (`"Date ge"`); a bare key means `eq`.
const OPERATORS: &[&str] = &["eq", "ne", "gt", "ge", "lt", "le"];

/// Whether `s` is a GUID in 1C's form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `s` is `YYYY-MM-DDTHH:MM:SS`, the only shape 1C's `datetime'…'` takes.
fn is_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// A date or date-time as 1C's literal: `2026-01-15` and `2026-01-15T10:00:00` both
/// work, so does a literal already written as `datetime'…'`.
pub fn datetime(v: &Value) -> Result<String, String> {
    let text = v
        .as_str()
        .ok_or("a date must be a string like 2026-01-15T10:00:00")?;
    let inner = text
        .strip_prefix("datetime'")
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or(text);
    let full = if inner.len() == 10 {
        format!("{inner}T00:00:00")
    } else {
        inner.to_owned()
    };
    if is_datetime(&full) {
        Ok(format!("datetime'{full}'"))
    } else {
        Err(format!(
            "`{text}` is not a date like 2026-01-15 or 2026-01-15T10:00:00"
        ))
    }
}

/// A quoted string literal: `'` doubled, as OData requires.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The literal for `value` compared with `field`. Strings are quoted, except a value
/// already written as `guid'…'` or `datetime'…'` (checked, so nothing else slips in);
/// a `…_Key` field (a reference) takes a GUID and becomes `guid'…'`.
pub fn literal(field: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => {
            if let Some(inner) = s.strip_prefix("guid'").and_then(|t| t.strip_suffix('\'')) {
                return if is_guid(inner) {
                    Ok(s.clone())
                } else {
                    Err(format!("`{s}` is not a GUID literal"))
                };
            }
            if s.starts_with("datetime'") {
                return datetime(value);
            }
            if field.ends_with("_Key") {
                return if is_guid(s) {
                    Ok(format!("guid'{s}'"))
                } else {
                    Err(format!("`{field}` is a reference: `{s}` is not a GUID"))
                };
            }
            Ok(quote(s))
        }
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok("null".into()),
        _ => Err(format!(
            "`{field}`: a filter value is a string, number, boolean or null"
        )),
    }
}

/// A 1C name: letters of any alphabet, digits and `_`, not starting with a digit.
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// A property path as `$filter` and `$orderby` take it: names joined by `/`.
fn is_path(s: &str) -> bool {
    s.split('/').all(is_name)
}

/// `{field: value, "field op": value, field: [a, b]}` as a `$filter` expression: terms
/// joined by `and`, a list meaning any of its values.
pub fn filter(fields: &Map<String, Value>) -> Result<String, String> {
    let mut terms = Vec::new();
    for (key, value) in fields {
        let (field, op) = match key.trim().rsplit_once(' ') {
            Some((f, op)) if OPERATORS.contains(&op) => (f.trim(), op),
            Some(_) => {
                return Err(format!(
                    "`{key}`: write a filter key as `Field` or `Field op` (op: {})",
                    OPERATORS.join(", ")
                ));
            }
            None => (key.trim(), "eq"),
        };
        if !is_path(field) {
            return Err(format!("`{field}` is not a property name"));
        }
        let term = match value {
            Value::Array(items) if !items.is_empty() => {
                let any: Result<Vec<String>, String> = items
                    .iter()
                    .map(|v| Ok(format!("{field} {op} {}", literal(field, v)?)))
                    .collect();
                format!("({})", any?.join(" or "))
            }
            Value::Array(_) => return Err(format!("`{field}`: an empty list matches nothing")),
            v => format!("{field} {op} {}", literal(field, v)?),
        };
        terms.push(term);
    }
    if terms.is_empty() {
        return Err("an empty filter".into());
    }
    Ok(terms.join(" and "))
}

/// A filter argument: a ready expression (a string, sent as written) or an object.
pub fn filter_arg(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::Object(fields) => filter(fields),
        _ => Err("`filter` is an expression string or an object of fields".into()),
    }
}

/// An entity key: a GUID (`(guid'…')`) or an object of key fields
/// (`(Period=datetime'…',Валюта_Key=guid'…')`, a register record or a tabular row).
pub fn key(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if is_guid(s) => Ok(format!("(guid'{s}')")),
        Value::String(s) => Err(format!("the key `{s}` is not a GUID")),
        Value::Object(fields) if !fields.is_empty() => {
            let parts: Result<Vec<String>, String> = fields
                .iter()
                .map(|(k, v)| {
                    if !is_name(k) {
                        return Err(format!("`{k}` is not a key field name"));
                    }
                    let lit = if k == "Period" {
                        datetime(v)?
                    } else {
                        literal(k, v)?
                    };
                    Ok(format!("{k}={lit}"))
                })
                .collect();
            Ok(format!("({})", parts?.join(",")))
        }
        _ => Err("`key` is a GUID or an object of key fields".into()),
    }
}

/// Percent-encodes `raw` for a URL path: 1C's own syntax (`(`, `)`, `'`, `=`, `,`, `/`)
/// stays as it is; spaces, Cyrillic letters and the rest become UTF-8 escapes.
pub fn encode_path(raw: &str) -> String {
    encode(raw, b"()'=,/:*@!$;_-.~")
}

/// Percent-encodes a query value: `&`, `=`, `+`, `#`, `%` and `'` are escaped (the URL
/// standard escapes `'` in queries anyway; doing it here keeps the journal's URL exact).
pub fn encode_query(raw: &str) -> String {
    encode(raw, b"(),/:*@!$;_-.~")
}

fn encode(raw: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len() * 3);
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A URL as a person reads it: escapes of letters (Cyrillic names, `ИНН eq '…'`),
/// spaces and quotes decoded; the escapes that carry the URL's structure (`%`, `&`, `=`,
/// `?`, `#`, `+`) and control characters stay. Anything that would not decode to UTF-8
/// is left as it was.
pub fn readable(url: &str) -> String {
    let bytes = url.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .filter(|b| *b >= 0x20 && *b != 0x7f && !b"%&=?#+".contains(b));
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| url.to_owned())
}
