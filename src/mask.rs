//! Masking as a type: the journal and the API take only [`Masked`] values, which only a
//! [`Masker`] makes, and secrets live in [`Secret`], whose Debug/Display print `***`.

use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub const MASK: &str = "***";

/// A resolved secret value. It never prints; `expose` is the one way to the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASK)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASK)
    }
}

/// Text that went through the masker. Deserializing is allowed because what is stored was
/// masked before it was written; constructing one from raw text is not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Masked(String);

impl Masked {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Text that holds no caller data at all (fixed labels), safe by construction.
    pub fn fixed(text: &'static str) -> Masked {
        Masked(text.to_owned())
    }

    /// Text obmen composed from fixed words and its own ids only — never from input.
    pub fn internal(text: String) -> Masked {
        Masked(text)
    }
}

impl std::fmt::Display for Masked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Headers whose values are credentials or signatures whatever their content.
const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-hub-signature",
    "x-hub-signature-256",
    "x-telegram-bot-api-secret-token",
    "x-huntflow-signature",
    "webhook-signature",
];

/// Knows every secret value in play and hides it, in all its encodings, from any text.
#[derive(Clone, Default)]
pub struct Masker {
    /// Every form a secret may take in text, longest first so that a secret containing
    /// another is replaced whole.
    forms: Arc<Vec<String>>,
    extra_headers: Arc<Vec<String>>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} forms)", self.forms.len())
    }
}

/// Secrets shorter than this are not searched for in text: masking every "1" would make
/// the journal unreadable, and such a value is no secret. Config refuses them anyway.
pub const MIN_SECRET_LEN: usize = 6;

impl Masker {
    pub fn new<'a>(
        secrets: impl IntoIterator<Item = &'a Secret>,
        extra_headers: &[String],
    ) -> Masker {
        let mut forms: Vec<String> = Vec::new();
        for secret in secrets {
            let raw = secret.expose();
            if raw.len() < MIN_SECRET_LEN {
                continue;
            }
            forms.extend(secret_forms(raw));
        }
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        let extra_headers = extra_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        Masker {
            forms: Arc::new(forms),
            extra_headers: Arc::new(extra_headers),
        }
    }

    /// Masks every known secret form in free text.
    pub fn text(&self, text: &str) -> Masked {
        Masked(self.scrub(text))
    }

    /// Masks a text and cuts it to at most `max` bytes (on a char boundary), marking the cut.
    pub fn excerpt(&self, text: &str, max: usize) -> Masked {
        let scrubbed = self.scrub(text);
        if scrubbed.len() <= max {
            return Masked(scrubbed);
        }
        let mut end = max;
        while !scrubbed.is_char_boundary(end) {
            end -= 1;
        }
        Masked(format!("{}… [{} bytes]", &scrubbed[..end], scrubbed.len()))
    }

    /// Masks a JSON value (serialized compactly).
    pub fn json(&self, value: &serde_json::Value) -> Masked {
        self.text(&value.to_string())
    }

    /// Masks one header value: sensitive header names are hidden entirely.
    pub fn header(&self, name: &str, value: &str) -> Masked {
        let lower = name.to_ascii_lowercase();
        if SENSITIVE_HEADERS.contains(&lower.as_str()) || self.extra_headers.contains(&lower) {
            return Masked::fixed(MASK);
        }
        self.text(value)
    }

    /// Removes secret values from a payload that must stay usable (the work copy of a
    /// trigger): strings that are, or contain, a secret get it replaced.
    pub fn strip_secrets(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) if self.forms.iter().any(|f| s.contains(f.as_str())) => {
                *s = self.scrub(s);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.strip_secrets(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.strip_secrets(v)),
            _ => {}
        }
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for form in self.forms.iter() {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), MASK);
            }
        }
        out
    }
}

/// The encodings in which a secret travels: raw, URL-encoded, base64 (alone and as the
/// second half of a Basic credential is handled by masking the whole header), JSON-escaped.
fn secret_forms(raw: &str) -> Vec<String> {
    let mut forms = vec![raw.to_owned()];
    let url = url_encode(raw);
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let json = serde_json::to_string(raw).unwrap_or_default();
    let json_inner = json.trim_matches('"').to_owned();
    for form in [
        url,
        b64.trim_end_matches('=').to_owned(),
        b64url,
        json_inner,
    ] {
        if form != raw && form.len() >= MIN_SECRET_LEN {
            forms.push(form);
        }
    }
    forms
}

pub fn url_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> Masker {
        Masker::new(
            &[Secret::new("s3cr3t/tok+en")],
            &["X-Custom-Sig".to_owned()],
        )
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter22");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
    }

    #[test]
    fn masks_raw_url_encoded_base64_and_json_forms() {
        let m = masker();
        let b64 = base64::engine::general_purpose::STANDARD.encode("s3cr3t/tok+en");
        let text = format!("a s3cr3t/tok+en b s3cr3t%2Ftok%2Ben c {b64} d");
        let out = m.text(&text).into_string();
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(!out.contains(b64.trim_end_matches('=')), "{out}");
        let json = serde_json::json!({"k": "s3cr3t/tok+en"});
        assert!(!m.json(&json).as_str().contains("s3cr3t"));
    }

    #[test]
    fn sensitive_headers_are_hidden_whole() {
        let m = masker();
        assert_eq!(m.header("Authorization", "Bearer abc").as_str(), MASK);
        assert_eq!(m.header("x-custom-sig", "abc").as_str(), MASK);
        assert_eq!(
            m.header("Accept", "application/json").as_str(),
            "application/json"
        );
    }

    #[test]
    fn excerpt_cuts_on_char_boundary() {
        let m = Masker::default();
        let out = m.excerpt("ёёёё", 3).into_string();
        assert!(out.starts_with('ё') && out.contains("[8 bytes]"), "{out}");
    }

    #[test]
    fn strip_secrets_keeps_other_data() {
        let m = masker();
        let mut v = serde_json::json!({"phone": "+77010000000", "auth": {"t": "s3cr3t/tok+en"}});
        m.strip_secrets(&mut v);
        assert_eq!(v["phone"], "+77010000000");
        assert_eq!(v["auth"]["t"], MASK);
    }
}
