//! The protocol's plumbing: answers in the encoding 1C reads, sessions (cookie after
//! `checkauth`), per-session work directories under the data dir, safe file names, and the
//! saved state of each file's import.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Millis;

use super::xml::Cursor;

/// The cookie `checkauth` hands out; 1C sends it back on every later request.
pub const COOKIE: &str = "obmen_1c";
/// A session and its files live this long after `checkauth` (a large upload and import
/// fits easily; an abandoned one is swept at the next `checkauth`).
pub const SESSION_TTL_MS: Millis = 24 * 3_600_000;
/// `file_limit` told to 1C: the largest body of one `mode=file` request.
pub const DEFAULT_FILE_LIMIT: u64 = 8 << 20;

/// `type=` of the exchange: which flows may take part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeType {
    Catalog,
    Sale,
}

impl ExchangeType {
    pub fn parse(s: &str) -> Option<ExchangeType> {
        match s {
            "catalog" => Some(ExchangeType::Catalog),
            "sale" => Some(ExchangeType::Sale),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Catalog => "catalog",
            ExchangeType::Sale => "sale",
        }
    }
}

/// A protocol answer: first line the status word, then the message lines. 1C reads it as
/// text in the charset the Content-Type names; windows-1251 like 1C-Bitrix.
pub fn answer(status: &str, lines: &[&str]) -> Vec<u8> {
    let mut text = String::from(status);
    text.push('\n');
    for l in lines {
        // A line break inside a message would read as a protocol line.
        text.push_str(&l.replace(['\r', '\n'], " "));
        text.push('\n');
    }
    encoding_rs::WINDOWS_1251.encode(&text).0.into_owned()
}

/// One authorised client run: `checkauth` makes it, the cookie finds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    /// Random, names the work directory (the cookie itself is stored only as a hash).
    pub id: String,
    pub flow: String,
    pub created_at: Millis,
    /// Orders the last `mode=query` gave 1C: (order Ид, outbox seq).
    pub exported: Vec<(String, u64)>,
}

impl Session {
    pub fn expired(&self, now: Millis) -> bool {
        now.saturating_sub(self.created_at) > SESSION_TTL_MS
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Session> {
        postcard::from_bytes(bytes).ok()
    }
}

/// A random token as hex.
pub fn token() -> String {
    let bytes: [u8; 24] = rand::random();
    hex::encode(bytes)
}

/// How far the import of one file has come, saved with every batch it accepted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportState {
    pub cursor: Cursor,
    pub new: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Why the file was refused; repeated to 1C on every later `mode=import` of it.
    pub error: Option<String>,
}

impl ImportState {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<ImportState> {
        postcard::from_bytes(bytes).ok()
    }
}

/// `<data dir>/1c/<flow>/`: every session's directory of this flow.
pub fn flow_dir(data_dir: &Path, flow: &str) -> PathBuf {
    data_dir.join("1c").join(flow)
}

pub fn work_dir(data_dir: &Path, flow: &str, session: &str) -> PathBuf {
    flow_dir(data_dir, flow).join(session)
}

/// A `filename=` from 1C as a path relative to the work dir: `import.xml`,
/// `import_files/ab/abcd.jpg`. Refused: empty, absolute, `..`, `.`, drive letters,
/// backslashes, control characters, more than 8 levels or 255 bytes.
pub fn safe_name(name: &str) -> Result<PathBuf, String> {
    let refuse = |why: &str| {
        Err(format!(
            "the file name `{}` is refused: {why}",
            name.escape_debug()
        ))
    };
    if name.is_empty() || name.len() > 255 {
        return refuse("empty or longer than 255 bytes");
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == ':')
    {
        return refuse("control characters, backslashes and colons are not allowed");
    }
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::ParentDir => {
                return refuse("`.` and `..` are not allowed");
            }
            Component::RootDir | Component::Prefix(_) => return refuse("it must be relative"),
        }
    }
    if out.components().count() > 8 || name.ends_with('/') {
        return refuse("too deep, or a directory");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_inside_the_work_dir() {
        assert_eq!(safe_name("import.xml"), Ok(PathBuf::from("import.xml")));
        assert_eq!(
            safe_name("import_files/ab/abc.jpg"),
            Ok(PathBuf::from("import_files/ab/abc.jpg"))
        );
        for bad in [
            "",
            "../x.xml",
            "a/../../x",
            "/etc/passwd",
            "C:\\x",
            "a\\..\\b",
            "./a",
            "a\n",
            "dir/",
        ] {
            assert!(safe_name(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn answers_are_windows_1251_lines() {
        let body = answer("failure", &["Неверный\nпароль"]);
        let (text, _, bad) = encoding_rs::WINDOWS_1251.decode(&body);
        assert!(!bad);
        assert_eq!(text, "failure\nНеверный пароль\n");
    }
}
