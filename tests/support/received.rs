//! One request as a fake server received it: the ledger entry of every fake (included with
//! `#[path]`), so tests can assert on what the client sent and what the fake answered.
// Each fake uses its own part of this module.
#![allow(dead_code)]

use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use serde_json::Value;

#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    /// The path as sent (percent-encoded).
    pub raw_path: String,
    /// The path as the fake reads it (by default the raw path; a fake may decode it or take
    /// its prefix off).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    /// The body as JSON (`null` when it is not JSON).
    pub body: Value,
    /// The body bytes exactly as they arrived (what a signature covers).
    pub raw_body: Bytes,
    /// What the fake answered (0 until it has).
    pub status: u16,
}

impl Received {
    /// A request on arrival; `query` as the fake decodes it.
    pub fn new(
        method: &Method,
        uri: &Uri,
        headers: HeaderMap,
        query: Vec<(String, String)>,
        raw_body: Bytes,
    ) -> Received {
        Received {
            at: Instant::now(),
            method: method.to_string(),
            raw_path: uri.path().to_owned(),
            path: uri.path().to_owned(),
            query,
            headers,
            body: serde_json::from_slice(&raw_body).unwrap_or(Value::Null),
            raw_body,
            status: 0,
        }
    }

    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn is_mutating(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD")
    }
}
