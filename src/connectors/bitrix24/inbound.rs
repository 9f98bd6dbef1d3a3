//! Outgoing events of Bitrix24 arrive as `application/x-www-form-urlencoded` with PHP-style
//! nested keys (`data[FIELDS][ID]=1287&auth[application_token]=…`); they are verified by the
//! application token and turned into nested JSON without the credentials.

use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::connectors::inbound::Refusal;
use crate::mask::Secret;

/// Keys of `auth[...]` that are credentials and never reach the trigger payload.
const CREDENTIAL_KEYS: &[&str] = &["application_token", "access_token", "refresh_token"];

const TOKEN_FIELD: &str = "auth[application_token]";

/// The decoded pairs of a form body; a body that is not a form has none.
pub fn pairs(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

/// Checks `auth[application_token]` against the configured token in constant time.
pub fn verify(body: &[u8], expected: Option<&Secret>) -> Result<(), Refusal> {
    let expected = expected.ok_or(Refusal::NotConfigured)?;
    let pairs = pairs(body);
    let got = pairs
        .iter()
        .find(|(k, _)| k == TOKEN_FIELD)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| Refusal::Missing(format!("`{TOKEN_FIELD}` field")))?;
    if bool::from(got.as_bytes().ct_eq(expected.expose().as_bytes())) {
        Ok(())
    } else {
        Err(Refusal::Mismatch(format!("`{TOKEN_FIELD}` field")))
    }
}

/// `a[b][c]=v` pairs into `{"a": {"b": {"c": "v"}}}`; values stay strings, as sent.
/// Credentials under `auth` are dropped.
pub fn parse(body: &[u8]) -> Result<Value, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|e| format!("the body is not a form: {e}"))?;
    if pairs.is_empty() {
        return Err("the body holds no form fields".into());
    }
    let mut root = Map::new();
    for (key, value) in pairs {
        let path = key_path(&key);
        if path.len() == 2 && path[0] == "auth" && CREDENTIAL_KEYS.contains(&path[1].as_str()) {
            continue;
        }
        insert(&mut root, &path, value);
    }
    Ok(Value::Object(root))
}

/// `data[FIELDS][ID]` → `["data", "FIELDS", "ID"]`; `a[]` appends (an empty segment).
fn key_path(key: &str) -> Vec<String> {
    let Some(open) = key.find('[') else {
        return vec![key.to_owned()];
    };
    let mut path = vec![key[..open].to_owned()];
    let mut rest = &key[open..];
    while let Some(stripped) = rest.strip_prefix('[') {
        let Some(close) = stripped.find(']') else {
            break;
        };
        path.push(stripped[..close].to_owned());
        rest = &stripped[close + 1..];
    }
    path
}

fn insert(map: &mut Map<String, Value>, path: &[String], value: String) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let key = if first.is_empty() {
        map.len().to_string()
    } else {
        first.clone()
    };
    if rest.is_empty() {
        map.insert(key, Value::String(value));
        return;
    }
    let slot = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Value::Object(inner) = slot {
        insert(inner, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "event=ONCRMDEALUPDATE&event_handler_id=41&data%5BFIELDS%5D%5BID%5D=1287\
        &ts=1767000000&auth%5Bdomain%5D=acme.bitrix24.kz&auth%5Bmember_id%5D=0f3c\
        &auth%5Bapplication_token%5D=k8q-app-token";

    #[test]
    fn a_form_event_becomes_nested_json_without_the_token() {
        let v = parse(BODY.as_bytes()).expect("parsed");
        assert_eq!(v["event"], "ONCRMDEALUPDATE");
        assert_eq!(v["data"]["FIELDS"]["ID"], "1287");
        assert_eq!(v["auth"]["domain"], "acme.bitrix24.kz");
        assert!(v["auth"].get("application_token").is_none(), "{v}");
        assert!(!v.to_string().contains("k8q-app-token"));
    }

    #[test]
    fn the_application_token_is_checked() {
        let good = Secret::new("k8q-app-token");
        assert_eq!(verify(BODY.as_bytes(), Some(&good)), Ok(()));
        let bad = Secret::new("other-token");
        assert!(matches!(
            verify(BODY.as_bytes(), Some(&bad)),
            Err(Refusal::Mismatch(_))
        ));
        assert!(matches!(
            verify(b"event=X", Some(&good)),
            Err(Refusal::Missing(_))
        ));
        assert_eq!(verify(BODY.as_bytes(), None), Err(Refusal::NotConfigured));
    }

    #[test]
    fn brackets_and_lists() {
        let v = parse(b"a[]=x&a[]=y&b[c][d]=1&plain=2").expect("parsed");
        assert_eq!(v["a"]["0"], "x");
        assert_eq!(v["a"]["1"], "y");
        assert_eq!(v["b"]["c"]["d"], "1");
        assert_eq!(v["plain"], "2");
    }
}
