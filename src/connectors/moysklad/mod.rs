//! MoySklad JSON API 1.2 (`kind = "moysklad"`): Bearer or Basic auth, the mandatory gzip
//! `Accept-Encoding`, entity CRUD with `filter`/`order`/`limit`/`offset` and `nextHref`,
//! search-before-create by `filter=externalCode=…`, a `syncId` derived from the exchange's
//! idempotency key on every create (a retried create returns the first one), `errors[]`
//! classification with `X-Lognex-Retry-After`, and webhooks (`events[]`, `requestId` in
//! the query) verified by a shared token in the webhook URL. See `docs/connectors/moysklad.md`.

mod bulk;
mod errors;

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::PathSeg;
use crate::mask::{Secret, url_encode};
use crate::model::ErrorClass;

use super::inbound::{InboundRequest, Refusal, Verifier};
use super::transport;
use super::{
    Answer, BoxFuture, BuildCtx, CallError, Connector, InboundDefaults, OutboundRequest, Sender,
    Settings, at,
};

pub const DEFAULT_BASE_URL: &str = "https://api.moysklad.ru/api/remap/1.2";

/// The entities a flow can name (`upsert = "sklad.counterparty"`, `call = "sklad.counterparty.list"`).
pub const ENTITIES: &[&str] = &[
    "counterparty",
    "customerorder",
    "product",
    "service",
    "bundle",
    "variant",
    "organization",
    "store",
    "employee",
    "contract",
    "demand",
    "invoiceout",
    "paymentin",
    "cashin",
    "supply",
    "purchaseorder",
    "salesreturn",
    "move",
    "enter",
    "loss",
    "productfolder",
    "currency",
    "uom",
    "webhook",
];

/// Entity operations (`<entity>.<action>`).
const ACTIONS: &[&str] = &["list", "get", "create", "update", "delete", "metadata"];

/// Default outbound rate: 45 units per 3 s per user; user credentials (login/password or a
/// user's token) cost 3 units from 2026-09-01 and 4 from 2026-12-01, so 11 requests per 3 s
/// is safe for them. Solution tokens cost 1 unit: set `rate_limit = "15/s"`.
const DEFAULT_RATE: (u32, Duration) = (11, Duration::from_secs(3));
/// At most 5 parallel requests per user or solution (error 1073 above that).
const DEFAULT_CONCURRENCY: usize = 5;

#[derive(Debug, Deserialize)]
struct File {
    base_url: Option<String>,
    token: Option<String>,
    login: Option<String>,
    password: Option<String>,
    timeout: Option<String>,
    rate_limit: Option<String>,
    concurrency: Option<usize>,
    /// `X-Lognex-WebHook-DisableByPrefix` values sent on every write, so that obmen's own
    /// changes do not trigger obmen's webhooks (scheme + host [+ path] of obmen's URL).
    webhook_disable_prefix: Option<toml::Value>,
    inbound: Option<InboundFile>,
}

#[derive(Debug, Deserialize)]
struct InboundFile {
    token_query: Option<String>,
    token: String,
}

#[derive(Debug)]
pub struct MoySkladConnector {
    base_url: String,
    /// The full `Authorization` header value.
    authorization: Option<Secret>,
    settings: Settings,
    disable_prefixes: Vec<String>,
    inbound: Option<Verifier>,
}

impl MoySkladConnector {
    pub fn build(
        table: toml::Table,
        base: &[PathSeg],
        ctx: &mut BuildCtx<'_>,
    ) -> Option<MoySkladConnector> {
        let file: File = ctx.parse(table, base)?;
        let base_url = file
            .base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL)
            .trim_end_matches('/')
            .to_owned();
        if reqwest::Url::parse(&base_url).is_err() {
            ctx.problem(
                at(base, &["base_url"]),
                format!("`{base_url}` is not a URL"),
            );
        }
        let authorization = match (&file.token, &file.login, &file.password) {
            (Some(token), None, None) => ctx
                .secret(at(base, &["token"]), token)
                .map(|t| Secret::new(format!("Bearer {}", t.expose()))),
            (None, Some(login), Some(password)) => {
                let pw = ctx.secret(at(base, &["password"]), password)?;
                let cred = base64::engine::general_purpose::STANDARD
                    .encode(format!("{login}:{}", pw.expose()));
                ctx.secrets.push(Secret::new(cred.clone()));
                Some(Secret::new(format!("Basic {cred}")))
            }
            _ => {
                ctx.problem(
                    base.to_vec(),
                    "set either `token` (Bearer) or `login` + `password` (Basic)",
                );
                None
            }
        };
        let timeout = ctx.duration(
            at(base, &["timeout"]),
            file.timeout.as_deref(),
            Duration::from_secs(30),
        );
        let rate = ctx
            .rate(
                at(base, &["rate_limit"]),
                file.rate_limit.as_deref(),
                Some(DEFAULT_RATE),
            )
            .unwrap_or(DEFAULT_RATE);
        let concurrency = file.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if concurrency == 0 || concurrency > DEFAULT_CONCURRENCY {
            ctx.problem(
                at(base, &["concurrency"]),
                "MoySklad allows 1 to 5 parallel requests per user",
            );
        }
        let disable_prefixes = match &file.webhook_disable_prefix {
            None => Vec::new(),
            Some(toml::Value::String(s)) => vec![s.clone()],
            Some(toml::Value::Array(a)) if a.iter().all(toml::Value::is_str) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(_) => {
                ctx.problem(
                    at(base, &["webhook_disable_prefix"]),
                    "must be a URL prefix or a list of them",
                );
                Vec::new()
            }
        };
        let inbound = match &file.inbound {
            None => None,
            Some(i) => {
                let param = i.token_query.clone().unwrap_or_else(|| "token".into());
                if param == "requestId" {
                    ctx.problem(
                        at(base, &["inbound", "token_query"]),
                        "`requestId` is MoySklad's own parameter; pick another name",
                    );
                }
                ctx.secret(at(base, &["inbound", "token"]), &i.token)
                    .map(|token| Verifier::QueryToken { param, token })
            }
        };
        Some(MoySkladConnector {
            base_url,
            authorization,
            settings: Settings {
                timeout,
                rate: Some(rate),
                concurrency: concurrency.clamp(1, DEFAULT_CONCURRENCY),
                // MoySklad dedups creates by `syncId` in the body, not by a header.
                idempotency_header: None,
                request_id_header: None,
            },
            disable_prefixes,
            inbound,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> OutboundRequest {
        let mutating = !matches!(method, reqwest::Method::GET | reqwest::Method::HEAD);
        let mut headers = vec![(
            "Accept".to_owned(),
            "application/json;charset=utf-8".to_owned(),
        )];
        // reqwest adds `Accept-Encoding: gzip` itself and decompresses; stated here too,
        // because MoySklad answers 415 without it.
        headers.push(("Accept-Encoding".to_owned(), "gzip".to_owned()));
        if mutating {
            for p in &self.disable_prefixes {
                headers.push(("X-Lognex-WebHook-DisableByPrefix".to_owned(), p.clone()));
            }
        }
        OutboundRequest {
            method,
            url: format!("{}{path}", self.base_url),
            headers,
            body: None,
            mutating,
        }
    }

    /// `GET /entity/<e>` with the list parameters, or the exact `href` (a `nextHref`).
    fn list(&self, entity_path: &str, args: &Value) -> Result<OutboundRequest, CallError> {
        let mut obj = args.as_object().cloned().unwrap_or_default();
        // `all_pages` / `max_pages` stay with obmen: `perform` follows `nextHref`.
        let pages = transport::take_pages(&mut obj)?;
        let mut req = self.list_page(entity_path, &obj)?;
        transport::mark_pages(&mut req, pages);
        Ok(req)
    }

    fn list_page(
        &self,
        entity_path: &str,
        obj: &Map<String, Value>,
    ) -> Result<OutboundRequest, CallError> {
        if let Some(href) = obj.get("href").and_then(Value::as_str) {
            return self.fetch(href);
        }
        let mut req = self.request(reqwest::Method::GET, entity_path);
        // `null` is no limit (the query below leaves nulls out), as it was before the check.
        if let Some(limit) = obj.get("limit").filter(|v| !v.is_null())
            && !limit
                .as_u64()
                .or_else(|| limit.as_str().and_then(|t| t.parse().ok()))
                .is_some_and(|n| (1..=1000).contains(&n))
        {
            return Err(CallError::new(
                ErrorClass::Input,
                format!("`limit` is {limit}: MoySklad takes 1 to 1000 rows per page"),
            ));
        }
        let mut query = Vec::new();
        for (k, v) in obj {
            let text = match (k.as_str(), v) {
                ("filter", Value::Object(fields)) => filter_text(fields),
                (_, Value::Null) => continue,
                (_, Value::String(s)) => s.clone(),
                (_, other) => other.to_string(),
            };
            query.push(format!("{}={}", url_encode(k), url_encode(&text)));
        }
        if !query.is_empty() {
            req.url.push('?');
            req.url.push_str(&query.join("&"));
        }
        Ok(req)
    }

    /// A GET of a `meta.href` or `nextHref`. Only this system's API gets the credentials: an
    /// href of the public API is rewritten onto `base_url`, any other host is refused.
    fn fetch(&self, href: &str) -> Result<OutboundRequest, CallError> {
        let rest = href
            .strip_prefix(&self.base_url)
            .or_else(|| href.strip_prefix(DEFAULT_BASE_URL))
            .filter(|r| r.is_empty() || r.starts_with('/') || r.starts_with('?'))
            .ok_or_else(|| {
                CallError::new(
                    ErrorClass::Input,
                    format!("`{href}` is not an address of this MoySklad API"),
                )
            })?;
        Ok(self.request(reqwest::Method::GET, rest))
    }

    fn entity_op(
        &self,
        entity: &str,
        action: &str,
        args: &Value,
    ) -> Result<OutboundRequest, CallError> {
        let base = format!("/entity/{entity}");
        let id = || {
            args.get("id")
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    CallError::new(ErrorClass::Input, format!("`{entity}.{action}` needs `id`"))
                })
        };
        let without_id = || {
            let mut o = args.as_object().cloned().unwrap_or_default();
            o.remove("id");
            Value::Object(o)
        };
        match action {
            "list" => self.list(&base, args),
            "metadata" => Ok(self.request(reqwest::Method::GET, &format!("{base}/metadata"))),
            "get" => {
                let mut req = self.request(
                    reqwest::Method::GET,
                    &format!("{base}/{}", url_encode(&id()?)),
                );
                if let Some(expand) = args.get("expand").and_then(Value::as_str) {
                    req.url.push_str(&format!("?expand={}", url_encode(expand)));
                }
                Ok(req)
            }
            "create" => self.create_request(entity, args),
            "update" => self.update_request(entity, &id()?, &without_id()),
            "delete" => Ok(self.request(
                reqwest::Method::DELETE,
                &format!("{base}/{}", url_encode(&id()?)),
            )),
            _ => Err(no_op(&format!("{entity}.{action}"))),
        }
    }
}

impl MoySkladConnector {
    /// Reads up to `pages` pages, following `meta.nextHref`: the rows of all pages with the
    /// last page's `meta` (which still has a `nextHref` when rows are left).
    async fn pages(
        &self,
        req: OutboundRequest,
        pages: u32,
        send: &Sender<'_>,
    ) -> Result<Value, CallError> {
        let mut page = send(req).await?;
        let mut joined = page.clone();
        for _ in 1..pages {
            let Some(next) = page.pointer("/meta/nextHref").and_then(Value::as_str) else {
                break;
            };
            let next = self.fetch(next)?;
            page = send(next).await?;
            if let (Some(Value::Array(rows)), Some(Value::Array(more))) =
                (joined.get_mut("rows"), page.get("rows"))
            {
                rows.extend(more.iter().cloned());
            }
            if let (Value::Object(j), Some(meta)) = (&mut joined, page.get("meta")) {
                j.insert("meta".into(), meta.clone());
            }
        }
        Ok(joined)
    }

    /// A bulk create/update: parts of 1000, a part refused as too large (413) halved and
    /// sent again; the items' answers in order, or the error of the items that failed.
    async fn bulk(
        &self,
        req: OutboundRequest,
        items: Vec<Value>,
        send: &Sender<'_>,
    ) -> Result<Value, CallError> {
        let mut queue: std::collections::VecDeque<(usize, Vec<Value>)> = bulk::parts(items).into();
        let mut answers = Vec::new();
        while let Some((offset, part)) = queue.pop_front() {
            let mut one = req.clone();
            one.body = Some(Value::Array(part.clone()));
            match send(one).await {
                Ok(answer) => {
                    if let Some(err) = bulk::failures(offset, &part, &answer) {
                        return Err(err);
                    }
                    answers.push(answer);
                }
                Err(e) if e.status == Some(413) && part.len() > 1 => {
                    let mut first = part;
                    let half = first.len() / 2;
                    let second = first.split_off(half);
                    queue.push_front((offset + half, second));
                    queue.push_front((offset, first));
                }
                Err(mut e) if e.status == Some(413) => {
                    e.message = format!("item {offset} alone is too large: {}", e.message);
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        // Shadow mode: nothing was sent, each part answered "would send".
        if answers.iter().all(Value::is_null) {
            return Ok(Value::Null);
        }
        let rows: Vec<Value> = answers
            .into_iter()
            .flat_map(|a| match a {
                Value::Array(rows) => rows,
                other => vec![other],
            })
            .collect();
        Ok(Value::Array(rows))
    }
}

fn no_op(op: &str) -> CallError {
    CallError::new(
        ErrorClass::Config,
        format!("no operation `{op}` in MoySklad"),
    )
}

/// `{field: value, …}` as MoySklad's `filter`: `field=value;…`, with `;` in values escaped.
/// A key may carry its operator (`"updated>="`, `"name~"`); plain keys mean `=`.
pub fn filter_text(fields: &Map<String, Value>) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            }
            .replace(';', "\\;");
            let op_given = k.ends_with(['=', '<', '>', '~']);
            if op_given {
                format!("{k}{value}")
            } else {
                format!("{k}={value}")
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// A UUID (RFC 9562 version 8, SHA-256 based) derived from the call's idempotency key
/// `<exchange id>:<step>`: the same exchange and step always send the same `syncId`.
pub fn sync_id(key: &str) -> String {
    let digest = Sha256::digest(format!("obmen:moysklad:syncId:{key}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether `url` is a create: `POST <base>/entity/<type>` (no id, no sub-resource).
fn is_create(base_url: &str, req: &OutboundRequest) -> bool {
    req.method == reqwest::Method::POST
        && req
            .url
            .strip_prefix(base_url)
            .and_then(|r| r.strip_prefix("/entity/"))
            .is_some_and(|r| !r.is_empty() && !r.contains(['/', '?']))
}

impl Connector for MoySkladConnector {
    fn kind(&self) -> &'static str {
        "moysklad"
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn has_op(&self, op: &str) -> bool {
        match op {
            "fetch" | "stock.current" | "stock.all" | "assortment.list" => true,
            _ => op
                .split_once('.')
                .is_some_and(|(e, a)| ENTITIES.contains(&e) && ACTIONS.contains(&a)),
        }
    }

    fn has_entity(&self, entity: &str) -> bool {
        ENTITIES.contains(&entity)
    }

    fn op_request(&self, op: &str, args: &Value) -> Result<OutboundRequest, CallError> {
        match op {
            "fetch" => {
                let href = args
                    .get("href")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CallError::new(ErrorClass::Input, "`fetch` needs `href`"))?;
                self.fetch(href)
            }
            "stock.current" => self.list("/report/stock/all/current", args),
            "stock.all" => self.list("/report/stock/all", args),
            "assortment.list" => self.list("/entity/assortment", args),
            _ if self.has_op(op) => {
                let (entity, action) = op.split_once('.').ok_or_else(|| no_op(op))?;
                self.entity_op(entity, action, args)
            }
            _ => Err(no_op(op)),
        }
    }

    /// `GET /entity/<e>?filter=externalCode=…;inn=…&limit=2`.
    fn find_request(
        &self,
        entity: &str,
        criteria: &Map<String, Value>,
    ) -> Result<OutboundRequest, CallError> {
        if !self.has_entity(entity) {
            return Err(no_op(entity));
        }
        let mut req = self.request(reqwest::Method::GET, &format!("/entity/{entity}"));
        req.url.push_str(&format!(
            "?filter={}&limit=2",
            url_encode(&filter_text(criteria))
        ));
        Ok(req)
    }

    fn create_request(&self, entity: &str, record: &Value) -> Result<OutboundRequest, CallError> {
        if !self.has_entity(entity) {
            return Err(no_op(entity));
        }
        let mut req = self.request(reqwest::Method::POST, &format!("/entity/{entity}"));
        req.body = Some(record.clone());
        Ok(req)
    }

    fn update_request(
        &self,
        entity: &str,
        id: &str,
        record: &Value,
    ) -> Result<OutboundRequest, CallError> {
        if !self.has_entity(entity) {
            return Err(no_op(entity));
        }
        let mut req = self.request(
            reqwest::Method::PUT,
            &format!("/entity/{entity}/{}", url_encode(id)),
        );
        // `syncId` is immutable (error 1047 when changed): never sent on an update.
        let mut body = record.clone();
        if let Value::Object(o) = &mut body {
            o.remove("syncId");
        }
        req.body = Some(body);
        Ok(req)
    }

    fn found_records(&self, _entity: &str, answer: Value) -> Result<Vec<Value>, CallError> {
        match answer {
            Value::Object(mut o) => match o.remove("rows") {
                Some(Value::Array(rows)) => Ok(rows),
                _ => Err(CallError::new(
                    ErrorClass::Permanent,
                    "the MoySklad list answer has no `rows`",
                )),
            },
            _ => Err(CallError::new(
                ErrorClass::Permanent,
                "the MoySklad list answer is not an object",
            )),
        }
    }

    fn authorize(&self, req: &mut OutboundRequest) {
        if let Some(a) = &self.authorization {
            req.headers
                .push(("Authorization".into(), a.expose().to_owned()));
        }
    }

    fn prepare_mutating(&self, req: &mut OutboundRequest, idempotency_key: &str) {
        if !is_create(&self.base_url, req) {
            return;
        }
        let id = sync_id(idempotency_key);
        match &mut req.body {
            Some(Value::Object(o)) => {
                o.entry("syncId").or_insert(Value::String(id));
            }
            // A bulk create: each new item gets its own syncId, numbered by position.
            Some(Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Value::Object(o) = item
                        && !o.contains_key("meta")
                    {
                        o.entry("syncId")
                            .or_insert(Value::String(sync_id(&format!("{idempotency_key}#{i}"))));
                    }
                }
            }
            _ => {}
        }
    }

    fn classify(&self, answer: &Answer) -> Option<CallError> {
        errors::classify(answer)
    }

    /// Holds the next requests back when the answer's budget is nearly spent, keeping the
    /// parallel ones (`concurrency`) in reserve: no 429 needed to slow down.
    fn pace(&self, answer: &Answer) -> Option<Duration> {
        errors::pace(
            answer,
            u64::try_from(self.settings.concurrency).unwrap_or(5),
        )
    }

    /// Pages of a list (`all_pages`, `max_pages`) and bulk writes in parts.
    fn perform<'a>(
        &'a self,
        mut req: OutboundRequest,
        send: &'a Sender<'a>,
    ) -> BoxFuture<'a, Result<Value, CallError>> {
        Box::pin(async move {
            let pages = transport::unmark_pages(&mut req);
            if pages > 1 {
                return self.pages(req, pages, send).await;
            }
            if is_create(&self.base_url, &req)
                && let Some(Value::Array(items)) = req.body.clone()
            {
                return self.bulk(req, items, send).await;
            }
            send(req).await
        })
    }

    fn verify_inbound(&self, req: &InboundRequest<'_>) -> Result<(), Refusal> {
        self.inbound
            .as_ref()
            .ok_or(Refusal::NotConfigured)?
            .verify(req)
    }

    /// The JSON body, with the delivery's `requestId` (a query parameter of MoySklad's
    /// POST) copied in, since the key of a webhook is read from the payload.
    fn parse_inbound(&self, req: &InboundRequest<'_>) -> Result<Value, String> {
        let mut body: Value = serde_json::from_slice(req.body)
            .map_err(|e| format!("the body is not valid JSON: {e}"))?;
        let Value::Object(o) = &mut body else {
            return Err("a MoySklad webhook body is a JSON object".into());
        };
        // Entity webhooks carry `events[]`; stock webhooks (`webhookstock`) a `reportUrl`.
        if !o.get("events").is_some_and(Value::is_array)
            && !o.get("reportUrl").is_some_and(Value::is_string)
        {
            return Err("a MoySklad webhook body has an `events` array or a `reportUrl`".into());
        }
        if let Some(id) = req.query_value("requestId") {
            o.entry("requestId").or_insert(Value::String(id.to_owned()));
        }
        Ok(body)
    }

    /// A delivery with several events becomes one trigger per event: the same body with
    /// `events` holding that one event, and `eventIndex` (its place) so that each has a key
    /// of its own (`<requestId>:<index>`) and repeats of the delivery stay duplicates.
    fn split_inbound(&self, payload: Value) -> Vec<Value> {
        let events = match payload.get("events") {
            Some(Value::Array(events)) if events.len() > 1 => events.clone(),
            _ => return vec![payload],
        };
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| {
                let mut one = payload.clone();
                one["events"] = Value::Array(vec![event]);
                one["eventIndex"] = Value::from(i);
                one
            })
            .collect()
    }

    /// Without a `requestId` there is no key (`null + ":"` would be `":"` in jq, making
    /// every later delivery a duplicate of the first): each event then runs.
    fn inbound_defaults(&self) -> InboundDefaults {
        InboundDefaults {
            external_id: Some(r#".events[0].meta.href // empty | split("/") | .[-1]"#),
            key: Some(
                r#"if .requestId == null or .eventIndex == null then .requestId else .requestId + ":" + (.eventIndex | tostring) end"#,
            ),
        }
    }
}

#[cfg(test)]
mod tests;
