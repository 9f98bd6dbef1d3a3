//! 1C:Enterprise's standard OData interface (`kind = "onec"`): HTTP Basic with an
//! infobase user, catalogs, documents, registers and their virtual tables as operations
//! (`<Resource>.list`, `.get`, `.create`, `.update`, `.post`, `.balance`, …), always
//! `$format=json`, upsert by `$filter` on the match fields with `If-Match` on the found
//! record's `DataVersion`, and errors classified from 1C's own JSON or XML bodies.
//! The interface has no outbound events: flows poll it on a schedule.
//! See `docs/connectors/1c-odata.md`.

mod errors;
mod ops;
mod query;
mod resource;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::PathSeg;
use crate::mask::Secret;
use crate::model::ErrorClass;

use crate::connectors::inbound::{InboundRequest, Refusal};
use crate::connectors::{Answer, BuildCtx, CallError, Connector, OutboundRequest, Settings, at};
use ops::{Target, input};

pub use query::{is_guid, readable};

/// 1C servers are often small (a file infobase, a few licenses shared with the
/// accountants), and without session reuse each OData call opens a 1C session of its
/// own: two requests at a time and five a second leave room for the people working in it.
const DEFAULT_CONCURRENCY: usize = 2;
const DEFAULT_RATE: (u32, Duration) = (5, Duration::from_secs(1));
/// Large lists and postings take a while on such servers.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Why a webhook for a 1C OData system is refused ("the request carries no …").
const NO_EVENTS: &str = "1C event: 1C's standard OData interface sends no webhooks; poll it \
     with a schedule trigger, or let 1C call the CommerceML endpoint /1c/exchange/<flow>";
/// DataVersions remembered between an upsert's find and its update (see `versions`).
const VERSIONS_KEPT: usize = 4096;

#[derive(Debug, Deserialize)]
struct File {
    /// `https://host/<infobase>/odata/standard.odata`.
    base_url: String,
    user: String,
    password: String,
    timeout: Option<String>,
    rate_limit: Option<String>,
    concurrency: Option<usize>,
    /// Writes in data-exchange load mode (`ОбменДанными.Загрузка`): no handlers, no checks.
    #[serde(default)]
    data_load_mode: bool,
    /// Reads skip rows the user may not see instead of failing with code 20.
    #[serde(default)]
    allowed_only: bool,
}

#[derive(Debug)]
pub struct OnecConnector {
    target: Target,
    /// `Basic base64(user:password)`.
    authorization: Secret,
    settings: Settings,
    /// `(resource, Ref_Key) → DataVersion` of the record an upsert's find just returned,
    /// taken by the update that follows so that it carries `If-Match`. Taken, not kept:
    /// an update after an ID-map hit sends no stale version.
    versions: Mutex<HashMap<(String, String), String>>,
}

impl OnecConnector {
    pub fn build(
        table: toml::Table,
        base: &[PathSeg],
        ctx: &mut BuildCtx<'_>,
    ) -> Option<OnecConnector> {
        let file: File = ctx.parse(table, base)?;
        let base_url = file.base_url.trim().trim_end_matches('/').to_owned();
        match reqwest::Url::parse(&base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                if !base_url.ends_with("/odata/standard.odata") {
                    ctx.problem(
                        at(base, &["base_url"]),
                        "the standard interface lives at https://<host>/<infobase>/odata/standard.odata",
                    );
                }
            }
            _ => ctx.problem(
                at(base, &["base_url"]),
                format!("`{base_url}` is not a URL"),
            ),
        }
        if file.user.is_empty() || file.user.contains(':') {
            ctx.problem(at(base, &["user"]), "the 1C user name (not empty, no `:`)");
        }
        let password = ctx.secret(at(base, &["password"]), &file.password)?;
        let credential = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            file.user,
            password.expose()
        ));
        ctx.secrets.push(Secret::new(credential.clone()));
        let settings = settings(&file, base, ctx);
        Some(OnecConnector {
            target: Target {
                base_url,
                allowed_only: file.allowed_only,
                data_load_mode: file.data_load_mode,
            },
            authorization: Secret::new(format!("Basic {credential}")),
            settings,
            versions: Mutex::new(HashMap::new()),
        })
    }

    fn entity(&self, entity: &str) -> Result<(), CallError> {
        if resource::is_upsertable(entity) {
            Ok(())
        } else {
            Err(CallError::new(
                ErrorClass::Config,
                format!("`{entity}` is not a 1C object with Ref_Key (Catalog_…, Document_…)"),
            ))
        }
    }

    fn remember(&self, entity: &str, record: &Value) {
        let (Some(key), Some(version)) = (
            record.get("Ref_Key").and_then(Value::as_str),
            record.get("DataVersion").and_then(Value::as_str),
        ) else {
            return;
        };
        if let Ok(mut versions) = self.versions.lock() {
            if versions.len() >= VERSIONS_KEPT {
                versions.clear();
            }
            versions.insert((entity.to_owned(), key.to_owned()), version.to_owned());
        }
    }

    fn take_version(&self, entity: &str, key: &str) -> Option<String> {
        self.versions
            .lock()
            .ok()?
            .remove(&(entity.to_owned(), key.to_owned()))
    }
}

fn settings(file: &File, base: &[PathSeg], ctx: &mut BuildCtx<'_>) -> Settings {
    let timeout = ctx.duration(
        at(base, &["timeout"]),
        file.timeout.as_deref(),
        DEFAULT_TIMEOUT,
    );
    let rate = ctx.rate(
        at(base, &["rate_limit"]),
        file.rate_limit.as_deref(),
        Some(DEFAULT_RATE),
    );
    let concurrency = file.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    if concurrency == 0 {
        ctx.problem(at(base, &["concurrency"]), "at least 1");
    }
    Settings {
        timeout,
        rate,
        concurrency: concurrency.max(1),
        // 1C has no idempotency header; creates are made safe by the upsert's search.
        idempotency_header: None,
        // Ignored by 1C, kept in the web server's log: it ties a request to its exchange.
        request_id_header: Some("X-Request-Id".into()),
    }
}

/// A single record gains `id` (a copy of `Ref_Key`), which the upsert's default
/// `id = ".id"` reads.
fn with_id(mut record: Value) -> Value {
    if let Value::Object(o) = &mut record
        && !o.contains_key("id")
        && let Some(key) = o.get("Ref_Key").cloned()
    {
        o.insert("id".into(), key);
    }
    record
}

impl Connector for OnecConnector {
    fn kind(&self) -> &'static str {
        "onec"
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn has_op(&self, op: &str) -> bool {
        op == "resources" || resource::parse_op(op).is_some()
    }

    fn has_entity(&self, entity: &str) -> bool {
        resource::is_upsertable(entity)
    }

    fn op_request(&self, op: &str, args: &Value) -> Result<OutboundRequest, CallError> {
        if op == "resources" {
            // The service document: the objects published to this user.
            let mut req = self.target.request(reqwest::Method::GET, "", &[]);
            req.url = req.url.replacen("standard.odata/?", "standard.odata?", 1);
            return Ok(req);
        }
        let (resource, kind, action) = resource::parse_op(op).ok_or_else(|| {
            CallError::new(
                ErrorClass::Config,
                format!("no operation `{op}` in 1C OData"),
            )
        })?;
        self.target.op(resource, kind, action, args)
    }

    /// `GET <entity>?$filter=ИНН eq '…' and …&$top=2`.
    fn find_request(
        &self,
        entity: &str,
        criteria: &Map<String, Value>,
    ) -> Result<OutboundRequest, CallError> {
        self.entity(entity)?;
        self.target.find(entity, criteria)
    }

    fn create_request(&self, entity: &str, record: &Value) -> Result<OutboundRequest, CallError> {
        self.entity(entity)?;
        self.target.create(entity, record)
    }

    /// `PATCH <entity>(guid'<id>')`, with `If-Match` when the find just read the record.
    fn update_request(
        &self,
        entity: &str,
        id: &str,
        record: &Value,
    ) -> Result<OutboundRequest, CallError> {
        self.entity(entity)?;
        if !is_guid(id) {
            return Err(input(format!("the 1C id `{id}` is not a GUID (Ref_Key)")));
        }
        let version = self.take_version(entity, id);
        let key = format!("(guid'{id}')");
        self.target.update(entity, &key, record, version.as_deref())
    }

    fn found_records(&self, entity: &str, answer: Value) -> Result<Vec<Value>, CallError> {
        let Some(Value::Array(rows)) = answer.get("value").cloned() else {
            return Err(CallError::new(
                ErrorClass::Permanent,
                "the 1C answer has no `value` list (was it JSON?)",
            ));
        };
        if let Some(first) = rows.first() {
            self.remember(entity, first);
        }
        Ok(rows.into_iter().map(with_id).collect())
    }

    fn authorize(&self, req: &mut OutboundRequest) {
        req.headers.push((
            "Authorization".into(),
            self.authorization.expose().to_owned(),
        ));
    }

    fn classify(&self, answer: &Answer) -> Option<CallError> {
        errors::classify(answer)
    }

    /// Lists gain `next_skip` when they were paged with `top`; single records gain `id`.
    fn read_answer(&self, url: &str, body: Value) -> Result<Value, CallError> {
        let Value::Object(_) = &body else {
            return Ok(body);
        };
        if body.get("value").is_some_and(Value::is_array) {
            let next = ops::next_skip(url, &body);
            let mut body = body;
            if let (Some(next), Value::Object(o)) = (next, &mut body) {
                o.insert("next_skip".into(), next);
            }
            return Ok(body);
        }
        Ok(with_id(body))
    }

    /// Cyrillic resource names and filters shown as letters, not `%D0%9A…`.
    fn redact_url(&self, url: &str) -> String {
        readable(url)
    }

    /// The standard OData interface sends nothing by itself: poll it on a schedule, or
    /// let 1C call the CommerceML exchange endpoint.
    fn verify_inbound(&self, _req: &InboundRequest<'_>) -> Result<(), Refusal> {
        Err(Refusal::Missing(NO_EVENTS.into()))
    }
}

#[cfg(test)]
mod tests;
