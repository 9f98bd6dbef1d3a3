//! Masking as a type: the journal and the API take only [`Masked`] values, which only a
//! [`Masker`] makes, and secrets live in [`Secret`], whose Debug/Display print `***`.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Knows every secret value in play and hides it, in all its encodings, from any text; an
/// exchange's own masker (see [`Masker::with_personal`]) also knows the personal data of
/// its trigger and replaces it with partial masks.
#[derive(Clone, Default)]
pub struct Masker {
    /// Every form a secret or personal value may take in text, longest first so that a
    /// value containing another is replaced whole.
    forms: Arc<Vec<Form>>,
    extra_headers: Arc<Vec<String>>,
}

/// One piece of text to find and what to put in its place.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Form {
    pattern: String,
    replacement: String,
    /// Secrets are also stripped from work copies; personal data stays there (targets
    /// need it) and is masked only where text is written.
    secret: bool,
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
        let mut forms: Vec<Form> = Vec::new();
        let mut seen = HashSet::new();
        for secret in secrets {
            let raw = secret.expose();
            if raw.len() < MIN_SECRET_LEN {
                continue;
            }
            for pattern in secret_forms(raw) {
                if seen.insert(pattern.clone()) {
                    forms.push(Form {
                        pattern,
                        replacement: MASK.to_owned(),
                        secret: true,
                    });
                }
            }
        }
        forms.sort_by_key(|f| std::cmp::Reverse(f.pattern.len()));
        let extra_headers = extra_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        Masker {
            forms: Arc::new(forms),
            extra_headers: Arc::new(extra_headers),
        }
    }

    /// This masker plus personal data: each value (and, for phone-like values, its
    /// digits-only and `+digits` forms, and its URL- and JSON-encoded forms) is replaced by
    /// its [`partial_mask`] wherever it appears. Secrets keep `***` and win over a
    /// personal value with the same text. Values shorter than [`MIN_PERSONAL_LEN`] are not
    /// searched for in free text (they would mangle every id and number in the journal);
    /// [`MaskPath::mask_in`] still masks them in the payload.
    pub fn with_personal<S: AsRef<str>>(&self, values: impl IntoIterator<Item = S>) -> Masker {
        let mut forms: Vec<Form> = self.forms.as_ref().clone();
        let mut seen: HashSet<String> = forms.iter().map(|f| f.pattern.clone()).collect();
        let before = forms.len();
        for value in values {
            for (pattern, replacement) in personal_forms(value.as_ref()) {
                if seen.insert(pattern.clone()) {
                    forms.push(Form {
                        pattern,
                        replacement,
                        secret: false,
                    });
                }
            }
        }
        if forms.len() == before {
            return self.clone();
        }
        forms.sort_by_key(|f| std::cmp::Reverse(f.pattern.len()));
        Masker {
            forms: Arc::new(forms),
            extra_headers: self.extra_headers.clone(),
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

    /// Masks a JSON value (serialized compactly). Strings, numbers and keys are masked one
    /// by one, so the result stays JSON: a masked number becomes a string.
    pub fn json(&self, value: &Value) -> Masked {
        let text = value.to_string();
        // The usual case, nothing to hide, costs one search per form over the text.
        if !self.forms.iter().any(|f| text.contains(f.pattern.as_str())) {
            return Masked(text);
        }
        Masked(self.json_value(value).to_string())
    }

    fn json_value(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.scrub(s)),
            Value::Number(n) => {
                let text = n.to_string();
                let masked = self.scrub(&text);
                if masked == text {
                    value.clone()
                } else {
                    Value::String(masked)
                }
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.json_value(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.scrub(k), self.json_value(v)))
                    .collect(),
            ),
            Value::Bool(_) | Value::Null => value.clone(),
        }
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
    /// trigger): strings that are, or contain, a secret get it replaced. Personal data is
    /// left as it is: the targets need it.
    pub fn strip_secrets(&self, value: &mut Value) {
        match value {
            Value::String(s)
                if self
                    .forms
                    .iter()
                    .any(|f| f.secret && s.contains(f.pattern.as_str())) =>
            {
                *s = self.scrub_with(s, true);
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.strip_secrets(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.strip_secrets(v)),
            _ => {}
        }
    }

    fn scrub(&self, text: &str) -> String {
        self.scrub_with(text, false)
    }

    fn scrub_with(&self, text: &str, secrets_only: bool) -> String {
        let mut out = text.to_owned();
        for form in self.forms.iter() {
            if secrets_only && !form.secret {
                continue;
            }
            if out.contains(form.pattern.as_str()) {
                out = out.replace(form.pattern.as_str(), &form.replacement);
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
    for form in [
        url,
        b64.trim_end_matches('=').to_owned(),
        b64url,
        json_inner(raw),
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

/// A string as it appears inside a JSON string literal (without the quotes).
fn json_inner(raw: &str) -> String {
    let json = serde_json::to_string(raw).unwrap_or_default();
    json.get(1..json.len().saturating_sub(1))
        .unwrap_or_default()
        .to_owned()
}

// ---- Personal data -------------------------------------------------------------------

/// Personal values shorter than this (in chars) are masked where the flow's mask paths
/// point, but not searched for in free text.
pub const MIN_PERSONAL_LEN: usize = 4;

/// A mask that keeps enough of a personal value to recognise the record:
/// an e-mail keeps the first character of the local part and the domain
/// (`john.doe@mail.kz` → `j***@mail.kz`); a value with at least 8 digits keeps the first 4
/// and last 2 digits and every non-digit (`+7 701 555 00 67` → `+7 701 *** ** 67`,
/// `900101350012` → `9001******12`); anything else keeps its first character
/// (`Aigul` → `A***`), or nothing when it is shorter than 4 characters.
pub fn partial_mask(value: &str) -> String {
    if let Some(masked) = mask_email(value) {
        return masked;
    }
    let digits = value.chars().filter(char::is_ascii_digit).count();
    if digits >= 8 {
        return mask_digits(value, digits);
    }
    let mut chars = value.chars();
    match chars.next() {
        Some(first) if value.chars().count() >= 4 => format!("{first}{MASK}"),
        _ => MASK.to_owned(),
    }
}

fn mask_email(value: &str) -> Option<String> {
    let (local, domain) = value.split_once('@')?;
    let plausible = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !value.chars().any(char::is_whitespace);
    let first = local.chars().next()?;
    plausible.then(|| format!("{first}{MASK}@{domain}"))
}

/// Keeps the first 4 and the last 2 of `digits` digits; other digits become `*`.
fn mask_digits(value: &str, digits: usize) -> String {
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen <= 4 || seen > digits - 2 {
                c
            } else {
                '*'
            }
        })
        .collect()
}

/// A phone number as people write it: at least 8 digits and only `+ - ( ) .` and spaces
/// between them.
fn is_phone_like(value: &str) -> bool {
    value.chars().filter(char::is_ascii_digit).count() >= 8
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '(' | ')' | '.' | ' '))
}

/// The forms a personal value takes in text, each with its replacement.
fn personal_forms(value: &str) -> Vec<(String, String)> {
    let value = value.trim();
    if value.chars().count() < MIN_PERSONAL_LEN {
        return Vec::new();
    }
    let mut bases = vec![value.to_owned()];
    if is_phone_like(value) {
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        bases.push(format!("+{digits}"));
        bases.push(digits);
    }
    if value.contains('@') {
        bases.push(value.to_lowercase());
    }
    let mut out = Vec::new();
    for base in bases {
        let mask = partial_mask(&base);
        // As it travels in a URL (a search by phone) or inside a JSON string.
        let url = url_encode(&base);
        out.push((url.replace("%20", "+"), mask.clone()));
        out.push((url, mask.clone()));
        out.push((json_inner(&base), mask.clone()));
        out.push((base, mask));
    }
    out.retain(|(pattern, _)| pattern.chars().count() >= MIN_PERSONAL_LEN);
    out
}

/// One step of a [`MaskPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathStep {
    /// `.name` or `."quoted name"`.
    Key(String),
    /// `[]`: every element of an array (or every value of an object).
    Each,
}

/// A path into a trigger payload naming personal data: `.client.phone`,
/// `.items[].phone`, `."full name"`. A path that ends at an object or array covers every
/// string and number under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskPath {
    source: String,
    steps: Vec<PathStep>,
}

impl MaskPath {
    pub fn parse(src: &str) -> Result<MaskPath, String> {
        let fail = |why: String| {
            Err(format!(
                "`{src}`: {why}; write a path like `.client.phone`, `.items[].phone` or `.\"full name\"`"
            ))
        };
        if !src.starts_with('.') {
            return fail("a path starts with `.`".into());
        }
        let mut steps = Vec::new();
        let mut i = 0;
        while let Some(c) = src[i..].chars().next() {
            match c {
                '[' if src[i..].starts_with("[]") => {
                    steps.push(PathStep::Each);
                    i += 2;
                }
                '[' => return fail("only `[]` (every element) goes in brackets".into()),
                '.' => {
                    i += 1;
                    match src[i..].chars().next() {
                        None | Some('.') => {
                            return fail(format!("a name is missing after the `.` at {}", i - 1));
                        }
                        Some('[') => {}
                        Some('"') => {
                            let Some((name, used)) = quoted(&src[i..]) else {
                                return fail("an unterminated or invalid quoted name".into());
                            };
                            steps.push(PathStep::Key(name));
                            i += used;
                        }
                        Some(_) => {
                            let len: usize = src[i..]
                                .chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_')
                                .map(char::len_utf8)
                                .sum();
                            if len == 0 {
                                let bad = src[i..].chars().next().unwrap_or(' ');
                                return fail(format!("`{bad}` cannot start a name; quote it"));
                            }
                            steps.push(PathStep::Key(src[i..i + len].to_owned()));
                            i += len;
                        }
                    }
                }
                other => return fail(format!("unexpected `{other}` at {i}")),
            }
        }
        Ok(MaskPath {
            source: src.to_owned(),
            steps,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn steps(&self) -> &[PathStep] {
        &self.steps
    }

    /// Every string and number at this path, as text.
    pub fn values(&self, root: &Value, out: &mut Vec<String>) {
        fn walk(v: &Value, steps: &[PathStep], out: &mut Vec<String>) {
            match steps.split_first() {
                None => scalars(v, out),
                Some((PathStep::Key(k), rest)) => {
                    if let Some(next) = v.as_object().and_then(|m| m.get(k)) {
                        walk(next, rest, out);
                    }
                }
                Some((PathStep::Each, rest)) => match v {
                    Value::Array(items) => items.iter().for_each(|x| walk(x, rest, out)),
                    Value::Object(map) => map.values().for_each(|x| walk(x, rest, out)),
                    _ => {}
                },
            }
        }
        fn scalars(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Number(n) => out.push(n.to_string()),
                Value::Array(items) => items.iter().for_each(|x| scalars(x, out)),
                Value::Object(map) => map.values().for_each(|x| scalars(x, out)),
                Value::Bool(_) | Value::Null => {}
            }
        }
        walk(root, &self.steps, out);
    }

    /// Replaces every string and number at this path with its [`partial_mask`] (numbers
    /// become strings), whatever its length: the journal's copy of a payload.
    pub fn mask_in(&self, root: &mut Value) {
        fn walk(v: &mut Value, steps: &[PathStep]) {
            match steps.split_first() {
                None => scalars(v),
                Some((PathStep::Key(k), rest)) => {
                    if let Some(next) = v.as_object_mut().and_then(|m| m.get_mut(k)) {
                        walk(next, rest);
                    }
                }
                Some((PathStep::Each, rest)) => match v {
                    Value::Array(items) => items.iter_mut().for_each(|x| walk(x, rest)),
                    Value::Object(map) => map.values_mut().for_each(|x| walk(x, rest)),
                    _ => {}
                },
            }
        }
        fn scalars(v: &mut Value) {
            match v {
                Value::String(s) => *s = partial_mask(s.trim()),
                Value::Number(n) => *v = Value::String(partial_mask(&n.to_string())),
                Value::Array(items) => items.iter_mut().for_each(scalars),
                Value::Object(map) => map.values_mut().for_each(scalars),
                Value::Bool(_) | Value::Null => {}
            }
        }
        walk(root, &self.steps);
    }
}

/// A JSON string literal at the start of `text`: its value and its length in bytes.
fn quoted(text: &str) -> Option<(String, usize)> {
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => {
                let name: String = serde_json::from_str(&text[..=i]).ok()?;
                return Some((name, i + 1));
            }
            _ => {}
        }
    }
    None
}

/// The personal values a payload holds at `paths`.
pub fn personal_values(paths: &[MaskPath], payload: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for path in paths {
        path.values(payload, &mut out);
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

    #[test]
    fn partial_masks_keep_enough_to_recognise() {
        assert_eq!(partial_mask("+7 701 555 00 67"), "+7 701 *** ** 67");
        assert_eq!(partial_mask("900101350012"), "9001******12");
        assert_eq!(partial_mask("77015550067"), "7701*****67");
        assert_eq!(partial_mask("+77015550067"), "+7701*****67");
        assert_eq!(partial_mask("8 (701) 555-00-67"), "8 (701) ***-**-67");
        assert_eq!(partial_mask("12345678"), "1234**78");
        assert_eq!(partial_mask("john.doe@mail.kz"), "j***@mail.kz");
        assert_eq!(partial_mask("Айгуль"), "А***");
        assert_eq!(partial_mask("Ивановна Айгуль"), "И***");
        assert_eq!(partial_mask("abcd"), "a***");
        assert_eq!(partial_mask("abc"), "***");
        assert_eq!(partial_mask(""), "***");
        assert_eq!(partial_mask("1234567"), "1***", "7 digits is no phone");
        assert_eq!(
            partial_mask("@mail.kz"),
            "@***",
            "no local part: not an e-mail"
        );
    }

    #[test]
    fn mask_paths_parse_and_refuse() {
        let steps = |src: &str| MaskPath::parse(src).map(|p| p.steps().to_vec());
        let key = |k: &str| PathStep::Key(k.to_owned());
        assert_eq!(steps(".phone"), Ok(vec![key("phone")]));
        assert_eq!(steps(".client.iin"), Ok(vec![key("client"), key("iin")]));
        assert_eq!(
            steps(".items[].phone"),
            Ok(vec![key("items"), PathStep::Each, key("phone")])
        );
        assert_eq!(
            steps(".rows[][].tel"),
            Ok(vec![
                key("rows"),
                PathStep::Each,
                PathStep::Each,
                key("tel")
            ])
        );
        assert_eq!(steps(".[].phone"), Ok(vec![PathStep::Each, key("phone")]));
        assert_eq!(
            steps(r#"."full name".first"#),
            Ok(vec![key("full name"), key("first")])
        );
        assert_eq!(steps(r#"."a\"b""#), Ok(vec![key("a\"b")]));
        assert_eq!(
            steps(".клиент.телефон"),
            Ok(vec![key("клиент"), key("телефон")])
        );
        for bad in [
            "",
            "phone",
            ".",
            "..a",
            ".a.",
            ".a[0]",
            ".a[",
            r#"."open"#,
            ".a b",
            ".a-b",
            ".a?",
        ] {
            let err = MaskPath::parse(bad).expect_err(bad);
            assert!(err.contains(".client.phone"), "{bad}: {err}");
        }
    }

    #[test]
    fn mask_paths_find_and_mask_values() {
        let payload = serde_json::json!({
            "client": {"phone": "+7 701 555 00 67", "iin": 900101350012_u64, "vip": true},
            "items": [{"phone": "+77010000001"}, {"phone": null}, {"other": 1}],
            "full name": {"first": "Aigul", "last": "Nurlanovna"},
        });
        let paths: Vec<MaskPath> = [
            ".client.phone",
            ".client.iin",
            ".items[].phone",
            r#"."full name""#,
            ".missing.x",
        ]
        .iter()
        .map(|p| MaskPath::parse(p).expect("path"))
        .collect();
        assert_eq!(
            personal_values(&paths, &payload),
            [
                "+7 701 555 00 67",
                "900101350012",
                "+77010000001",
                "Aigul",
                "Nurlanovna"
            ]
        );
        let mut copy = payload;
        paths.iter().for_each(|p| p.mask_in(&mut copy));
        assert_eq!(copy["client"]["phone"], "+7 701 *** ** 67");
        assert_eq!(copy["client"]["iin"], "9001******12");
        assert_eq!(copy["client"]["vip"], true);
        assert_eq!(copy["items"][0]["phone"], "+7701*****01");
        assert_eq!(copy["items"][1]["phone"], Value::Null);
        assert_eq!(copy["full name"]["last"], "N***");
    }

    #[test]
    fn with_personal_masks_the_value_everywhere_and_reformatted() {
        let exchange =
            masker().with_personal(["+7 701 555 00 67", "900101350012", "John.Doe@Mail.kz", "Al"]);
        let text = "call +7 701 555 00 67 or 77015550067 or +77015550067; IIN 900101350012; \
                    mail John.Doe@Mail.kz / john.doe@mail.kz; url ?tel=%2B7%20701%20555%2000%2067&m=john.doe%40mail.kz; \
                    Al stays; token s3cr3t/tok+en";
        let out = exchange.text(text).into_string();
        for raw in [
            "555 00", "5550067", "01350", "john.doe", "John.Doe", "%20555", "s3cr3t",
        ] {
            assert!(!out.contains(raw), "{raw} in {out}");
        }
        for shown in [
            "+7 701 *** ** 67",
            "7701*****67",
            "+7701*****67",
            "9001******12",
            "j***@mail.kz",
            "J***@Mail.kz",
            "tel=+7 701 *** ** 67",
            "Al stays",
            "token ***",
        ] {
            assert!(out.contains(shown), "{shown} not in {out}");
        }
        let json = serde_json::json!({"echo": {"phone": "77015550067", "iin": 900101350012_u64, "note": "tel. +7 701 555 00 67"}});
        let out = exchange.json(&json).into_string();
        assert!(
            !out.contains("5550067") && !out.contains("555 00") && !out.contains("01350"),
            "{out}"
        );
        let back: Value = serde_json::from_str(&out).expect("still JSON");
        assert_eq!(back["echo"]["iin"], "9001******12");
        assert_eq!(back["echo"]["phone"], "7701*****67");
        assert_eq!(back["echo"]["note"], "tel. +7 701 *** ** 67");
        // The base masker and the work copy are untouched.
        assert!(masker().text(text).as_str().contains("900101350012"));
        let mut work = serde_json::json!({"phone": "+7 701 555 00 67", "t": "s3cr3t/tok+en"});
        exchange.strip_secrets(&mut work);
        assert_eq!(
            work,
            serde_json::json!({"phone": "+7 701 555 00 67", "t": MASK})
        );
    }

    #[test]
    fn with_personal_keeps_secrets_first_and_longest_first() {
        let base = Masker::new(&[Secret::new("900101350012")], &[]);
        let m = base.with_personal(["900101350012", "9001013500"]);
        assert_eq!(
            m.text("x 900101350012 y").as_str(),
            "x *** y",
            "a secret stays a secret"
        );
        assert_eq!(m.text("9001013500").as_str(), "9001****00");
        let none = base.with_personal(Vec::<String>::new());
        assert_eq!(none.forms.len(), base.forms.len());
    }
}
