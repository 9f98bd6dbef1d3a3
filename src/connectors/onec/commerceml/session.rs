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
/// `upload_limit`: what one session may hold uploaded at once, all its files together.
pub const DEFAULT_UPLOAD_LIMIT: u64 = 1 << 30;

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
    /// The `version=` 1C sent at its last `init` (`None`: an older module). An older module
    /// never calls `mode=import` for its orders: the file is read when it is uploaded.
    pub client_version: Option<String>,
}

/// A session as written before `client_version` existed (postcard has no optional trailing
/// fields): read as one, so that an upgrade in the middle of a run keeps it.
#[derive(Deserialize)]
struct SessionV1 {
    id: String,
    flow: String,
    created_at: Millis,
    exported: Vec<(String, u64)>,
}

impl Session {
    pub fn expired(&self, now: Millis) -> bool {
        now.saturating_sub(self.created_at) > SESSION_TTL_MS
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Session> {
        postcard::from_bytes(bytes).ok().or_else(|| {
            let old: SessionV1 = postcard::from_bytes(bytes).ok()?;
            Some(Session {
                id: old.id,
                flow: old.flow,
                created_at: old.created_at,
                exported: old.exported,
                client_version: None,
            })
        })
    }

    /// Whether an uploaded file is read at once (`mode=file` of an older module's order
    /// exchange), not at `mode=import`.
    pub fn reads_at_upload(&self, exchange: ExchangeType) -> bool {
        exchange == ExchangeType::Sale && self.client_version.is_none()
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
    fn a_session_written_before_client_version_still_reads() {
        #[derive(Serialize)]
        struct Old {
            id: String,
            flow: String,
            created_at: Millis,
            exported: Vec<(String, u64)>,
        }
        let old = Old {
            id: "abc".into(),
            flow: "1c-orders".into(),
            created_at: 7,
            exported: vec![("B24-1".into(), 3)],
        };
        let bytes = postcard::to_stdvec(&old).expect("encode");
        let s = Session::decode(&bytes).expect("read as the old layout");
        assert_eq!((s.id.as_str(), s.created_at), ("abc", 7));
        assert_eq!(s.exported, vec![("B24-1".to_owned(), 3)]);
        assert!(s.reads_at_upload(ExchangeType::Sale));
        let new = Session {
            client_version: Some("3.1".into()),
            ..s
        };
        let back = Session::decode(&new.encode()).expect("new layout");
        assert_eq!(back.client_version.as_deref(), Some("3.1"));
        assert!(!back.reads_at_upload(ExchangeType::Sale));
        assert!(
            !Session {
                client_version: None,
                ..back
            }
            .reads_at_upload(ExchangeType::Catalog)
        );
    }

    #[test]
    fn answers_are_windows_1251_lines() {
        let body = answer("failure", &["Неверный\nпароль"]);
        let (text, _, bad) = encoding_rs::WINDOWS_1251.decode(&body);
        assert!(!bad);
        assert_eq!(text, "failure\nНеверный пароль\n");
    }
}
