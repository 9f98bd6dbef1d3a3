//! Connectors: one folder per kind of system behind the [`Connector`] trait. A connector
//! builds requests and reads answers; the shared [`transport`] sends them (rate limit,
//! concurrency, timeouts, correlation and idempotency headers) and records each call, so
//! shadow mode and journaling work the same for every system.

pub mod bitrix24;
pub mod http;
pub mod inbound;
pub mod moysklad;
pub mod onec;
pub mod signing;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::{PathSeg, Problem};
use crate::mask::Secret;
use crate::model::ErrorClass;

pub use transport::System;

/// A request a connector wants sent. `mutating` decides whether shadow mode may send it.
#[derive(Clone, Debug)]
pub struct OutboundRequest {
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub mutating: bool,
}

/// An answer as received, before the connector reads it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// A failed call, classified where it happened.
#[derive(Clone, Debug)]
pub struct CallError {
    pub class: ErrorClass,
    pub message: String,
    pub retry_after: Option<Duration>,
    pub status: Option<u16>,
}

impl CallError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> CallError {
        CallError {
            class,
            message: message.into(),
            retry_after: None,
            status: None,
        }
    }
}

/// What every connector offers the engine. Names of ops and entities are checked at
/// config load, so a flow cannot name something its system does not have.
pub trait Connector: Send + Sync {
    fn kind(&self) -> &'static str;
    fn settings(&self) -> &Settings;
    fn has_op(&self, op: &str) -> bool;
    fn has_entity(&self, entity: &str) -> bool;
    /// The request for a named operation with the step's arguments.
    fn op_request(&self, op: &str, args: &Value) -> Result<OutboundRequest, CallError>;
    /// Search-before-create: find records whose `criteria` fields equal the given values.
    fn find_request(
        &self,
        entity: &str,
        criteria: &Map<String, Value>,
    ) -> Result<OutboundRequest, CallError>;
    fn create_request(&self, entity: &str, record: &Value) -> Result<OutboundRequest, CallError>;
    fn update_request(
        &self,
        entity: &str,
        id: &str,
        record: &Value,
    ) -> Result<OutboundRequest, CallError>;
    /// The records a find answer holds.
    fn found_records(&self, entity: &str, answer: Value) -> Result<Vec<Value>, CallError>;
    /// Adds credentials just before sending.
    fn authorize(&self, req: &mut OutboundRequest);
    /// Headers that sign one request, computed over the exact body bytes sent (empty when
    /// there is no body) at the moment of sending; `id` is stable across retries. The
    /// default signs nothing.
    fn sign(&self, _id: &str, _timestamp: u64, _body: &[u8]) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Adjusts a mutating request with its idempotency key (`<exchange id>:<step>`, stable
    /// across retries) before it is serialized and sent: for targets that dedup on a body
    /// field (MoySklad's `syncId`) rather than a header. The default changes nothing.
    fn prepare_mutating(&self, _req: &mut OutboundRequest, _idempotency_key: &str) {}
    /// Decides whether an answer is a success; the default reads HTTP statuses.
    fn classify(&self, answer: &Answer) -> Option<CallError> {
        transport::classify_http(answer)
    }
    /// Verifies an inbound webhook on the raw body, before anything parses it.
    fn verify_inbound(&self, req: &inbound::InboundRequest<'_>) -> Result<(), inbound::Refusal>;
    /// Refreshes expired credentials (OAuth refresh tokens) after the target refused them;
    /// `Ok(true)` means "send again". Called once per refused call; implementations make
    /// concurrent refreshes of one token a single one.
    fn refresh_auth<'a>(
        &'a self,
        _client: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<bool, CallError>> {
        Box::pin(async { Ok(false) })
    }
    /// Parses a verified webhook body into the trigger payload (JSON by default; a system
    /// that posts forms turns them into JSON here).
    fn parse_inbound(&self, req: &inbound::InboundRequest<'_>) -> Result<Value, String> {
        serde_json::from_slice(req.body).map_err(|e| format!("the body is not valid JSON: {e}"))
    }
    /// The triggers one verified delivery carries, each an exchange of its own (a MoySklad
    /// webhook may hold several events). The default: the delivery is one trigger.
    fn split_inbound(&self, payload: Value) -> Vec<Value> {
        vec![payload]
    }
    /// jq for the external id and idempotency key of this system's webhooks, used when a
    /// flow sets none.
    fn inbound_defaults(&self) -> InboundDefaults {
        InboundDefaults::default()
    }
    /// Turns a successful answer (already parsed) into the step's output; `url` is the URL
    /// the request went to. The default keeps the body whole; a system with an envelope
    /// (Bitrix24's `{"result": …}`) unwraps it here.
    fn read_answer(&self, _url: &str, body: Value) -> Result<Value, CallError> {
        Ok(body)
    }
    /// Hides credentials in a request URL that the config's masker cannot know (tokens
    /// obtained at run time, such as a refreshed OAuth access token) before it is recorded.
    fn redact_url(&self, url: &str) -> String {
        url.to_owned()
    }
    /// Headers whose values this system treats as credentials (masked whole everywhere).
    fn sensitive_headers(&self) -> Vec<String> {
        Vec::new()
    }
    /// Carries out one step's call through `send`, which sends one request (rate limit,
    /// credentials refresh, record) and may be called several times: the pages of a list, the
    /// parts of a bulk write. The default sends the request once.
    fn perform<'a>(
        &'a self,
        req: OutboundRequest,
        send: &'a Sender<'a>,
    ) -> BoxFuture<'a, Result<Value, CallError>> {
        send(req)
    }
    /// Whether the HTTP client may follow redirects itself. A system whose redirects must
    /// not turn a POST into a GET says no and handles them in [`Connector::relocate`].
    fn follows_redirects(&self) -> bool {
        true
    }
    /// The target answered a redirect to `location`: rewrite `req` (as built, before
    /// credentials) to send it there once more, or say why not.
    fn relocate(&self, _req: &mut OutboundRequest, location: &str) -> Result<(), CallError> {
        Err(CallError::new(
            ErrorClass::Permanent,
            format!("the target redirected the call to {location}"),
        ))
    }
    /// How long to hold back the next request to this system after `answer`, when the
    /// answer says the rate budget is nearly spent (before the target refuses with a 429).
    fn pace(&self, _answer: &Answer) -> Option<Duration> {
        None
    }
    /// Gives the connector the data file, for state it must keep across restarts (a rotated
    /// OAuth refresh token). Called once at start, before any call.
    fn attach_store(&self, _store: &crate::store::Store) {}
    /// Runs before each request; a connector loads what it keeps in the store here, once.
    fn ready(&self) -> BoxFuture<'_, Result<(), CallError>> {
        Box::pin(async { Ok(()) })
    }
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends one request of a call and reads its answer (see [`Connector::perform`]).
pub type Sender<'a> =
    dyn Fn(OutboundRequest) -> BoxFuture<'a, Result<Value, CallError>> + Sync + 'a;

/// A system's own answer to "which record is this event about, and when is it a repeat".
#[derive(Clone, Debug, Default)]
pub struct InboundDefaults {
    pub external_id: Option<&'static str>,
    pub key: Option<&'static str>,
}

/// What the transport needs from any system's config.
#[derive(Clone, Debug)]
pub struct Settings {
    pub timeout: Duration,
    /// Requests per period: (n, period).
    pub rate: Option<(u32, Duration)>,
    pub concurrency: usize,
    /// Header carrying `<exchange id>:<step>`; `None` for targets that refuse unknown headers.
    pub idempotency_header: Option<String>,
    pub request_id_header: Option<String>,
}

/// Collects config problems and resolved secrets while connectors read their tables.
pub struct BuildCtx<'a> {
    pub problems: &'a mut Vec<Problem>,
    pub secrets: &'a mut Vec<Secret>,
    pub source: &'a crate::config::values::SecretSource,
}

/// `base` extended by `keys`: the config path of a key inside a system's table.
pub fn at(base: &[PathSeg], keys: &[&str]) -> Vec<PathSeg> {
    let mut p = base.to_vec();
    p.extend(keys.iter().map(|k| PathSeg::Key((*k).to_owned())));
    p
}

impl BuildCtx<'_> {
    /// Reads a connector's part of a system table, reporting every unknown key.
    pub fn parse<T: serde::de::DeserializeOwned>(
        &mut self,
        table: toml::Table,
        base: &[PathSeg],
    ) -> Option<T> {
        match crate::config::file::parse_table(table, base) {
            Ok((parsed, unknown)) => {
                for path in unknown {
                    self.problem(path, "unknown key");
                }
                Some(parsed)
            }
            Err(message) => {
                self.problem(base.to_vec(), message);
                None
            }
        }
    }

    /// A duration like "30s" at `path`, or `default` (a bad value is reported).
    pub fn duration(
        &mut self,
        path: Vec<PathSeg>,
        text: Option<&str>,
        default: Duration,
    ) -> Duration {
        match text.map(crate::config::values::parse_duration) {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.problem(path, e);
                default
            }
            None => default,
        }
    }

    /// A rate like "10/s" at `path`, or `default` (a bad value is reported).
    pub fn rate(
        &mut self,
        path: Vec<PathSeg>,
        text: Option<&str>,
        default: Option<(u32, Duration)>,
    ) -> Option<(u32, Duration)> {
        match text.map(crate::config::values::parse_rate) {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                self.problem(path, e);
                default
            }
            None => default,
        }
    }

    pub fn problem(&mut self, path: Vec<PathSeg>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    /// Resolves a secret reference, recording a problem (never the value) on failure.
    pub fn secret(&mut self, path: Vec<PathSeg>, value: &str) -> Option<Secret> {
        match self.source.resolve(value) {
            Ok(secret) => {
                self.secrets.push(secret.clone());
                Some(secret)
            }
            Err(message) => {
                self.problem(path, message);
                None
            }
        }
    }
}

/// Builds the connector for one configured system.
pub fn build(
    name: &str,
    kind: &str,
    table: toml::Table,
    ctx: &mut BuildCtx<'_>,
) -> Option<Arc<dyn Connector>> {
    let path = vec![PathSeg::Key("systems".into()), PathSeg::Key(name.into())];
    match kind {
        "http" => {
            http::HttpConnector::build(table, &path, ctx).map(|c| Arc::new(c) as Arc<dyn Connector>)
        }
        "bitrix24" => bitrix24::Bitrix24Connector::build(table, &path, ctx)
            .map(|c| Arc::new(c) as Arc<dyn Connector>),
        "moysklad" => moysklad::MoySkladConnector::build(table, &path, ctx)
            .map(|c| Arc::new(c) as Arc<dyn Connector>),
        "onec" => {
            onec::OnecConnector::build(table, &path, ctx).map(|c| Arc::new(c) as Arc<dyn Connector>)
        }
        "trustme" | "pkb" | "adata" | "hh" | "huntflow" | "telegram" | "whatsapp" | "asterisk" => {
            let mut at = path;
            at.push(PathSeg::Key("kind".into()));
            ctx.problem(
                at,
                format!("the `{kind}` connector is not in this build yet; use kind = \"http\""),
            );
            None
        }
        other => {
            let mut at = path;
            at.push(PathSeg::Key("kind".into()));
            ctx.problem(at, format!("unknown system kind `{other}`"));
            None
        }
    }
}
