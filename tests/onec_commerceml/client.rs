//! 1C's side of the CommerceML exchange, as its standard site-exchange module talks:
//! Basic at `checkauth`, the cookie afterwards, `init` (with `version=` for orders, as newer
//! modules send it), `file_limit`-sized parts, `import` repeated while the answer is
//! `progress`, and for orders `query` / `success`. Answers are read as windows-1251 text
//! lines. Shared by tests/onec_commerceml.rs and tests/onec_example.rs.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;

pub struct OneC {
    pub base: String,
    pub flow: String,
    pub kind: &'static str,
    pub client: reqwest::Client,
    pub cookie: Option<String>,
}

/// A text answer: status code, first line, the other lines.
#[derive(Debug)]
pub struct Answer {
    pub http: StatusCode,
    pub content_type: String,
    pub status: String,
    pub lines: Vec<String>,
    pub raw: Vec<u8>,
}

impl Answer {
    pub fn message(&self) -> String {
        self.lines.join(" | ")
    }
}

impl OneC {
    pub fn new(base: &str, flow: &str, kind: &'static str) -> OneC {
        OneC {
            base: base.to_owned(),
            flow: flow.to_owned(),
            kind,
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
            cookie: None,
        }
    }

    fn url(&self, query: &str) -> String {
        format!(
            "{}/1c/exchange/{}?type={}&{query}",
            self.base, self.flow, self.kind
        )
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", format!("obmen_1c={c}")),
            None => req,
        };
        let r = req.send().await.expect("obmen answers");
        let http = r.status();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let raw = r.bytes().await.expect("body").to_vec();
        let (text, _, _) = encoding_rs::WINDOWS_1251.decode(&raw);
        let mut lines = text.lines().map(str::to_owned);
        let status = lines.next().unwrap_or_default();
        Answer {
            http,
            content_type,
            status,
            lines: lines.collect(),
            raw,
        }
    }

    pub async fn get(&self, query: &str) -> Answer {
        self.send(self.client.get(self.url(query))).await
    }

    /// `checkauth` with Basic; keeps the cookie on success.
    pub async fn checkauth(&mut self, user: &str, password: Option<&str>) -> Answer {
        let req = self.client.get(self.url("mode=checkauth"));
        let req = match password {
            Some(p) => req.basic_auth(user, Some(p)),
            None => req,
        };
        let a = self.send(req).await;
        if a.status == "success" {
            assert_eq!(a.lines[0], "obmen_1c", "line 2 names the cookie: {a:?}");
            self.cookie = Some(a.lines[1].clone());
        }
        a
    }

    /// `init`, with `version=` when given (newer modules send it for orders): `zip=no`, the
    /// part size 1C must keep under, and the whole answer.
    pub async fn init(&self, version: Option<&str>) -> (usize, Answer) {
        self.init_as(version, "zip=no").await
    }

    /// `init` of a flow that must answer `zip` (`zip=yes` or `zip=no`) on line 1.
    pub async fn init_as(&self, version: Option<&str>, zip: &str) -> (usize, Answer) {
        let a = match version {
            Some(v) => self.get(&format!("mode=init&version={v}")).await,
            None => self.get("mode=init").await,
        };
        assert_eq!(a.status, zip, "{a:?}");
        let limit = a.lines[0]
            .strip_prefix("file_limit=")
            .expect("file_limit line")
            .parse()
            .expect("a number");
        (limit, a)
    }

    pub async fn file_part(&self, name: &str, part: Vec<u8>) -> Answer {
        let q = format!("mode=file&filename={}", urlencode(name));
        self.send(self.client.post(self.url(&q)).body(part)).await
    }

    /// Uploads a file in parts of `limit` bytes; every part must be taken.
    pub async fn upload(&self, name: &str, bytes: &[u8], limit: usize) -> usize {
        let mut parts = 0;
        for chunk in bytes.chunks(limit) {
            let a = self.file_part(name, chunk.to_vec()).await;
            assert_eq!(a.status, "success", "part {parts} of {name}: {a:?}");
            parts += 1;
        }
        parts
    }

    /// `import` until it is no longer `progress`; returns the last answer and how many
    /// `progress` answers came first.
    pub async fn import(&self, name: &str) -> (Answer, usize) {
        let q = format!("mode=import&filename={}", urlencode(name));
        for progress in 0..10_000 {
            let a = self.get(&q).await;
            if a.status != "progress" {
                return (a, progress);
            }
        }
        panic!("import of {name} never finished");
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The CommerceML fixtures: the official samples and the schemas.
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/1c/commerceml")
}

/// The document (written into `dir`) against the CommerceML 2.09 schema, with xmllint.
pub fn xmllint_valid(dir: &Path, doc: &[u8]) {
    let file = dir.join("query.xml");
    std::fs::write(&file, doc).expect("write");
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(samples().join("xsd/commerceml-2.09.xsd"))
        .arg(&file)
        .output()
        .expect("xmllint (Debian libxml2-utils; .ci/run installs it)");
    assert!(
        out.status.success(),
        "the query answer breaks commerceml-2.09.xsd:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
