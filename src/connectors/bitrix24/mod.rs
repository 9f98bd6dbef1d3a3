//! Bitrix24 REST: calls by inbound-webhook URL or as an OAuth application (with refresh on
//! `401 expired_token`), any documented method family as a flow operation, upsert of
//! leads/deals/contacts/companies (duplicate search by phone or e-mail), smart-process
//! items and catalog products (`crm.product`, e.g. by `XML_ID`), errors read
//! from Bitrix24's own bodies, and outgoing events (form posts) verified by the
//! application token. Facts: `docs/connectors/bitrix24.md`.

mod auth;
mod batch;
mod errors;
mod inbound;
mod ops;
mod paging;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::PathSeg;
use crate::mask::{MIN_SECRET_LEN, Secret, url_encode};
use crate::model::ErrorClass;

use super::inbound::{InboundRequest, Refusal};
use super::transport;
use super::{
    Answer, BoxFuture, BuildCtx, CallError, Connector, InboundDefaults, OutboundRequest, Sender,
    Settings, at,
};
use auth::{Auth, OAuth};

#[derive(Debug, Deserialize)]
struct File {
    /// `https://<portal>/rest/<user>/<secret>/`, normally `secret:NAME`.
    webhook_url: Option<String>,
    oauth: Option<OAuthFile>,
    /// The token Bitrix24 puts in `auth[application_token]` of every event it posts.
    application_token: Option<String>,
    timeout: Option<String>,
    rate_limit: Option<String>,
    concurrency: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct OAuthFile {
    /// `acme.bitrix24.ru`, or a full `https://…` address.
    domain: String,
    client_id: String,
    client_secret: String,
    access_token: Option<String>,
    refresh_token: String,
    /// The OAuth server; by default `https://oauth.bitrix24.tech` for `.ru/.by/.kz`
    /// portals and `https://oauth.bitrix.info` for the rest.
    server: Option<String>,
}

#[derive(Debug)]
pub struct Bitrix24Connector {
    auth: Auth,
    application_token: Option<Secret>,
    settings: Settings,
}

impl Bitrix24Connector {
    pub fn build(
        table: toml::Table,
        base: &[PathSeg],
        ctx: &mut BuildCtx<'_>,
    ) -> Option<Bitrix24Connector> {
        let file: File = ctx.parse(table, base)?;
        let settings = settings(&file, base, ctx);
        let application_token = file
            .application_token
            .as_deref()
            .and_then(|t| ctx.secret(at(base, &["application_token"]), t));
        let auth = match (&file.webhook_url, &file.oauth) {
            (Some(url), None) => webhook(url, base, ctx)?,
            (None, Some(o)) => oauth(o, base, ctx)?,
            _ => {
                ctx.problem(
                    base.to_vec(),
                    "set exactly one of `webhook_url` (an inbound webhook) or `oauth` (an application)",
                );
                return None;
            }
        };
        Some(Bitrix24Connector {
            auth,
            application_token,
            settings,
        })
    }

    fn base(&self) -> String {
        self.auth.base()
    }

    /// `POST <base><method>.json` with the arguments as the JSON body.
    fn method_request(&self, method: &str, args: Value) -> OutboundRequest {
        let body = match args {
            Value::Null => json!({}),
            other => other,
        };
        OutboundRequest {
            method: reqwest::Method::POST,
            url: format!("{}{method}.json", self.base()),
            headers: Vec::new(),
            body: Some(body),
            mutating: ops::is_mutating(method),
        }
    }

    /// Reads up to `pages` pages of a list call, joined into one list.
    async fn pages(
        &self,
        req: OutboundRequest,
        pages: u32,
        send: &Sender<'_>,
    ) -> Result<Value, CallError> {
        let mut args = req.body.clone().unwrap_or_else(|| json!({}));
        let mut page = send(req.clone()).await?;
        let mut joined = page.clone();
        for _ in 1..pages {
            let Some(next) = paging::next_args(&args, &page)? else {
                break;
            };
            let mut again = req.clone();
            again.body = Some(next.clone());
            args = next;
            page = send(again).await?;
            paging::append(&mut joined, page.clone());
        }
        Ok(joined)
    }

    fn entity(&self, entity: &str) -> Result<(), CallError> {
        if ops::is_entity(entity) {
            Ok(())
        } else {
            Err(CallError::new(
                ErrorClass::Config,
                format!("no entity `{entity}` in Bitrix24"),
            ))
        }
    }
}

fn settings(file: &File, base: &[PathSeg], ctx: &mut BuildCtx<'_>) -> Settings {
    // One request must finish within 60 s in the cloud.
    let timeout = ctx.duration(
        at(base, &["timeout"]),
        file.timeout.as_deref(),
        Duration::from_secs(60),
    );
    // The cloud bucket drains 2 requests a second on all plans but Enterprise (5).
    let rate = ctx.rate(
        at(base, &["rate_limit"]),
        file.rate_limit.as_deref(),
        Some((2, Duration::from_secs(1))),
    );
    Settings {
        timeout,
        rate,
        // "Avoid parallel series from one IP."
        concurrency: file.concurrency.unwrap_or(2),
        idempotency_header: None,
        request_id_header: None,
    }
}

fn webhook(url: &str, base: &[PathSeg], ctx: &mut BuildCtx<'_>) -> Option<Auth> {
    let path = at(base, &["webhook_url"]);
    let secret = ctx.secret(path.clone(), url)?;
    let mut full = secret.expose().trim().to_owned();
    if !full.ends_with('/') {
        full.push('/');
    }
    let Some(token) = auth::webhook_token(&full) else {
        ctx.problem(
            path,
            "not an inbound-webhook URL like https://<portal>/rest/<user id>/<secret>/",
        );
        return None;
    };
    if reqwest::Url::parse(&full).is_err() {
        ctx.problem(path, "the webhook URL is not a URL");
        return None;
    }
    // The token alone is masked too, wherever it shows (an error text, a log line).
    if token.len() >= MIN_SECRET_LEN {
        ctx.secrets.push(Secret::new(token));
    }
    ctx.secrets.push(Secret::new(full.clone()));
    Some(Auth::Webhook {
        base: std::sync::RwLock::new(full),
    })
}

fn oauth(file: &OAuthFile, base: &[PathSeg], ctx: &mut BuildCtx<'_>) -> Option<Auth> {
    let domain = file.domain.trim().trim_end_matches('/');
    let portal = if domain.contains("://") {
        domain.to_owned()
    } else {
        format!("https://{domain}")
    };
    if reqwest::Url::parse(&portal).is_err() {
        ctx.problem(at(base, &["oauth", "domain"]), "not a portal address");
    }
    let server = file.server.as_deref().map_or_else(
        || auth::default_server(domain).to_owned(),
        |s| s.trim_end_matches('/').to_owned(),
    );
    let client_secret = ctx.secret(at(base, &["oauth", "client_secret"]), &file.client_secret);
    let refresh = ctx.secret(at(base, &["oauth", "refresh_token"]), &file.refresh_token);
    let access = match &file.access_token {
        Some(t) => Some(ctx.secret(at(base, &["oauth", "access_token"]), t)?),
        None => None,
    };
    // The system's name keys the rotated tokens kept in the data file.
    let system = match base.last() {
        Some(PathSeg::Key(name)) => name.as_str(),
        _ => "bitrix24",
    };
    Some(Auth::OAuth(Box::new(OAuth::new(
        system,
        format!("{portal}/rest/"),
        server,
        file.client_id.clone(),
        client_secret?,
        access,
        refresh?,
    ))))
}

/// The method a request URL calls: `.../rest/1/x/crm.deal.add.json?auth=…` → `crm.deal.add`.
fn method_of(url: &str) -> &str {
    let path = url.split('?').next().unwrap_or_default();
    let last = path.rsplit('/').next().unwrap_or_default();
    last.strip_suffix(".json").unwrap_or(last)
}

/// A batch answer's `result`, with the quirk that empty collections come as `[]` and full
/// ones as objects evened out: `result`, `result_error`, `result_total`, `result_next` and
/// `result_time` are always objects keyed by command.
fn batch_result(result: Value) -> Value {
    let Value::Object(mut parts) = result else {
        return result;
    };
    for key in [
        "result",
        "result_error",
        "result_total",
        "result_next",
        "result_time",
    ] {
        let part = parts.remove(key).unwrap_or(Value::Null);
        let object = match part {
            Value::Object(o) => Value::Object(o),
            Value::Array(items) => Value::Object(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (i.to_string(), v))
                    .collect(),
            ),
            _ => Value::Object(Map::new()),
        };
        parts.insert(key.into(), object);
    }
    Value::Object(parts)
}

/// `…?a=1&auth=TOKEN&b=2` → `…?a=1&auth=***&b=2`.
fn redact_auth(url: &str) -> String {
    let Some((path, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("auth", _)) => format!("auth={}", crate::mask::MASK),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

impl Connector for Bitrix24Connector {
    fn kind(&self) -> &'static str {
        "bitrix24"
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn has_op(&self, op: &str) -> bool {
        ops::is_method(op)
    }

    fn has_entity(&self, entity: &str) -> bool {
        ops::is_entity(entity)
    }

    fn op_request(&self, op: &str, args: &Value) -> Result<OutboundRequest, CallError> {
        if !ops::is_method(op) {
            return Err(CallError::new(
                ErrorClass::Config,
                format!("`{op}` is not a Bitrix24 method"),
            ));
        }
        ops::check_args(op, args)?;
        let mut args = args.clone();
        let pages = match &mut args {
            Value::Object(o) => transport::take_pages(o)?,
            _ => 1,
        };
        if pages > 1 {
            paging::check(op, &args)?;
        }
        let mut req = self.method_request(op, args);
        transport::mark_pages(&mut req, pages);
        Ok(req)
    }

    fn find_request(
        &self,
        entity: &str,
        criteria: &Map<String, Value>,
    ) -> Result<OutboundRequest, CallError> {
        self.entity(entity)?;
        let (method, args) = ops::find(entity, criteria);
        Ok(self.method_request(&method, args))
    }

    fn create_request(&self, entity: &str, record: &Value) -> Result<OutboundRequest, CallError> {
        self.entity(entity)?;
        let (method, args) = ops::create(entity, record);
        Ok(self.method_request(&method, args))
    }

    fn update_request(
        &self,
        entity: &str,
        id: &str,
        record: &Value,
    ) -> Result<OutboundRequest, CallError> {
        self.entity(entity)?;
        let (method, args) = ops::update(entity, id, record);
        Ok(self.method_request(&method, args))
    }

    fn found_records(&self, entity: &str, answer: Value) -> Result<Vec<Value>, CallError> {
        ops::records(entity, answer).ok_or_else(|| {
            CallError::new(
                ErrorClass::Permanent,
                "the Bitrix24 search answer holds no list of records",
            )
        })
    }

    /// Also puts the request on the portal's address of the moment: a request built before
    /// a refresh named a new `client_endpoint`, or before the portal moved, goes there.
    fn authorize(&self, req: &mut OutboundRequest) {
        if let Some((_, method)) = req.url.rsplit_once('/') {
            req.url = format!("{}{method}", self.base());
        }
        if let Auth::OAuth(o) = &self.auth
            && let Some(token) = o.access_token()
        {
            let sep = if req.url.contains('?') { '&' } else { '?' };
            req.url = format!("{}{sep}auth={}", req.url, url_encode(token.expose()));
        }
    }

    fn classify(&self, answer: &Answer) -> Option<CallError> {
        let err = errors::classify(answer)?;
        if let Auth::OAuth(o) = &self.auth
            && err.class == ErrorClass::Auth
            && errors::error_of(&answer.body).is_some_and(|(code, _)| errors::is_expired(&code))
        {
            o.expired_seen.store(true, Ordering::SeqCst);
        }
        Some(err)
    }

    fn refresh_auth<'a>(
        &'a self,
        client: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<bool, CallError>> {
        Box::pin(async move {
            match &self.auth {
                Auth::OAuth(o) => o.refresh(client).await,
                Auth::Webhook { .. } => Ok(false),
            }
        })
    }

    /// `{"result": …, "time": …}` → the result; a scalar result of an `*.add` method (the
    /// new record's id) → `{"id": …}`, which the upsert's default `id = ".id"` reads.
    fn read_answer(&self, url: &str, body: Value) -> Result<Value, CallError> {
        let Value::Object(mut envelope) = body else {
            return Ok(body);
        };
        let Some(result) = envelope.remove("result") else {
            return Ok(Value::Object(envelope));
        };
        let method = method_of(url).to_ascii_lowercase();
        if method == "batch" {
            return Ok(batch_result(result));
        }
        let added = ops::is_create(&method);
        Ok(match result {
            id @ (Value::Number(_) | Value::String(_)) if added => json!({ "id": id }),
            // `crm.item.add|update` answer `{"item": {…}}`: its id is lifted beside it.
            Value::Object(mut o)
                if matches!(method.as_str(), "crm.item.add" | "crm.item.update") =>
            {
                if let Some(id) = o.get("item").and_then(|i| i.get("id")).cloned() {
                    o.insert("id".into(), id);
                }
                Value::Object(o)
            }
            other => other,
        })
    }

    /// Redirects are handled here: the HTTP client would follow a `302` of a moved portal as
    /// a GET and lose the call's body.
    fn follows_redirects(&self) -> bool {
        false
    }

    /// A portal that moved answers `302` with its new address: the call is sent there again
    /// (as a POST, with its body) and later calls go there too. Only the scheme, host and
    /// port may change — the same method path — and never from `https` to `http`.
    fn relocate(&self, req: &mut OutboundRequest, location: &str) -> Result<(), CallError> {
        let moved = |why: String| Err(CallError::new(ErrorClass::Config, why));
        let (Ok(from), Ok(to)) = (
            reqwest::Url::parse(&req.url),
            reqwest::Url::parse(&req.url).and_then(|u| u.join(location)),
        ) else {
            return moved(
                "the portal answered a redirect to an address that does not parse".into(),
            );
        };
        let new_origin = to.origin().ascii_serialization();
        if to.path() != from.path() {
            return moved(format!(
                "the portal redirected the call to another path at {new_origin}; check the portal address in the config"
            ));
        }
        if from.scheme() == "https" && to.scheme() != "https" {
            return moved(format!(
                "the portal redirected the call from https to {new_origin}; refused"
            ));
        }
        let Some((_, rest)) = auth::split_origin(&req.url) else {
            return moved("the call's address has no origin".into());
        };
        req.url = format!("{new_origin}{rest}");
        if let Some(old) = self.auth.move_to(&new_origin)
            && old != new_origin
        {
            tracing::warn!(from = %old, to = %new_origin, "the Bitrix24 portal moved: calls go to the new address; update the address in the config");
            if let Auth::OAuth(o) = &self.auth {
                // Kept with the tokens before the next call (this one does not wait).
                o.moved.store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    fn attach_store(&self, store: &crate::store::Store) {
        if let Auth::OAuth(o) = &self.auth {
            o.attach(store);
        }
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), CallError>> {
        Box::pin(async move {
            match &self.auth {
                Auth::OAuth(o) => {
                    o.load().await?;
                    if o.moved.swap(false, Ordering::SeqCst) {
                        o.keep().await;
                    }
                    Ok(())
                }
                Auth::Webhook { .. } => Ok(()),
            }
        })
    }

    /// A `batch` whose commands failed fails the step with the decisive command's error.
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
            if method_of(&req.url).eq_ignore_ascii_case("batch") {
                let args = req.body.clone().unwrap_or(Value::Null);
                let answer = send(req).await?;
                return match batch::failure(&args, &answer) {
                    Some(err) => Err(err),
                    None => Ok(answer),
                };
            }
            send(req).await
        })
    }

    /// The `auth=` access token changes at every refresh, so the config's masker cannot
    /// know it: its value is hidden by name.
    fn redact_url(&self, url: &str) -> String {
        redact_auth(url)
    }

    fn verify_inbound(&self, req: &InboundRequest<'_>) -> Result<(), Refusal> {
        inbound::verify(req.body, self.application_token.as_ref())
    }

    fn parse_inbound(&self, req: &InboundRequest<'_>) -> Result<Value, String> {
        inbound::parse(req.body)
    }

    fn inbound_defaults(&self) -> InboundDefaults {
        InboundDefaults {
            external_id: Some(".data.FIELDS.ID"),
            // Events carry no id of their own; the event, the record and the second it
            // happened tell repeats apart.
            key: Some(
                r#".event + ":" + (.data.FIELDS.ID // "" | tostring) + ":" + (.ts // "" | tostring)"#,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::SecretSource;

    fn build(text: &str) -> (Option<Bitrix24Connector>, Vec<String>, Vec<Secret>) {
        let table: toml::Table = toml::from_str(text).expect("toml");
        let (mut problems, mut secrets) = (Vec::new(), Vec::new());
        let source = SecretSource::env_only();
        let mut ctx = BuildCtx {
            problems: &mut problems,
            secrets: &mut secrets,
            source: &source,
        };
        let c = Bitrix24Connector::build(table, &[], &mut ctx);
        let problems = problems.into_iter().map(|p| p.message).collect();
        (c, problems, secrets)
    }

    #[test]
    fn webhook_url_calls_and_masks_the_token() {
        let (c, problems, secrets) =
            build(r#"webhook_url = "https://acme.bitrix24.kz/rest/1/tok3n-abc123""#);
        assert!(problems.is_empty(), "{problems:?}");
        let c = c.expect("built");
        assert!(secrets.iter().any(|s| s.expose() == "tok3n-abc123"));
        let req = c
            .op_request("crm.deal.get", &json!({"id": 5}))
            .expect("request");
        assert_eq!(
            req.url,
            "https://acme.bitrix24.kz/rest/1/tok3n-abc123/crm.deal.get.json"
        );
        assert!(!req.mutating);
        assert!(c.has_op("crm.timeline.comment.add") && !c.has_op("nope"));
        assert!(c.has_entity("crm.contact") && !c.has_entity("crm.item"));
        assert!(c.has_entity("crm.item.1038"));
        let cmd: Map<String, Value> = (0..51)
            .map(|i| (format!("c{i}"), json!("crm.deal.get?id=1")))
            .collect();
        let too_long = c.op_request("batch", &json!({"halt": 1, "cmd": cmd}));
        assert_eq!(too_long.map_err(|e| e.class).err(), Some(ErrorClass::Input));
        assert!(
            c.op_request(
                "batch",
                &json!({"halt": 0, "cmd": {"a": "crm.deal.get?id=1"}})
            )
            .is_ok()
        );
        let created = c
            .read_answer(
                &req.url.replace("get", "add"),
                json!({"result": 7, "time": {}}),
            )
            .expect("read");
        assert_eq!(created, json!({"id": 7}));
        let got = c
            .read_answer(&req.url, json!({"result": {"ID": "5"}, "time": {}}))
            .expect("read");
        assert_eq!(got, json!({"ID": "5"}));
    }

    /// `upsert = "b24.crm.product"`: the search, create and update requests, and the
    /// answers read the way the upsert needs them.
    #[test]
    fn catalog_products_are_upserted_with_the_crm_product_methods() {
        let (c, _, _) = build(r#"webhook_url = "https://acme.bitrix24.kz/rest/1/tok3n-abc123""#);
        let c = c.expect("built");
        let base = "https://acme.bitrix24.kz/rest/1/tok3n-abc123/";
        assert!(c.has_entity("crm.product") && !c.has_entity("crm.products"));
        // No duplicate search for products, whatever the match field is called.
        let by_email = c
            .find_request(
                "crm.product",
                json!({"EMAIL": "a@b.kz"}).as_object().expect("object"),
            )
            .expect("find");
        assert_eq!(by_email.url, format!("{base}crm.product.list.json"));
        let criteria = json!({"XML_ID": "1c-guid-1"});
        let find = c
            .find_request("crm.product", criteria.as_object().expect("object"))
            .expect("find");
        assert_eq!(find.url, format!("{base}crm.product.list.json"));
        assert_eq!(
            find.body,
            Some(json!({"filter": {"XML_ID": "1c-guid-1"}, "select": ["ID"]}))
        );
        assert!(!find.mutating, "a search is sent in shadow mode too");
        // A page of `crm.product.list`: the records, each with the `id` the upsert reads.
        let page = json!({"result": [{"ID": "105"}], "total": 1, "time": {}});
        let found = c.read_answer(&find.url, page).expect("read");
        let found = c.found_records("crm.product", found).expect("records");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["id"], "105");
        let none = c
            .read_answer(&find.url, json!({"result": [], "total": 0, "time": {}}))
            .expect("read");
        assert!(
            c.found_records("crm.product", none)
                .expect("records")
                .is_empty()
        );
        // An answer of another shape is an error, not "nothing found".
        assert!(
            c.found_records("crm.product", json!({"items": []}))
                .is_err()
        );

        let record = json!({"NAME": "Стол", "XML_ID": "1c-guid-1", "ACTIVE": "Y"});
        let add = c.create_request("crm.product", &record).expect("create");
        assert_eq!(add.url, format!("{base}crm.product.add.json"));
        assert_eq!(add.body, Some(json!({"fields": record})));
        assert!(add.mutating);
        // `crm.product.add` answers the new id as the result.
        let created = c
            .read_answer(&add.url, json!({"result": 106, "time": {}}))
            .expect("read");
        assert_eq!(created, json!({"id": 106}));
        let update = c
            .update_request("crm.product", "105", &record)
            .expect("update");
        assert_eq!(update.url, format!("{base}crm.product.update.json"));
        assert_eq!(update.body, Some(json!({"id": "105", "fields": record})));
        assert!(update.mutating);
        let updated = c
            .read_answer(&update.url, json!({"result": true, "time": {}}))
            .expect("read");
        assert_eq!(updated, json!(true));
        let err = c
            .create_request("crm.products", &record)
            .expect_err("unknown entity");
        assert_eq!(err.class, ErrorClass::Config);
    }

    #[test]
    fn batch_answers_are_evened_out() {
        let (c, _, _) = build(r#"webhook_url = "https://acme.bitrix24.kz/rest/1/tok3n-abc123""#);
        let c = c.expect("built");
        let url = "https://acme.bitrix24.kz/rest/1/tok3n-abc123/batch.json";
        let answer = json!({"result": {"result": {"a": {"ID": "1"}}, "result_error": [],
            "result_total": [], "result_next": [], "result_time": {"a": {}}}, "time": {}});
        let out = c.read_answer(url, answer).expect("read");
        assert_eq!(out["result"]["a"]["ID"], "1");
        assert_eq!(out["result_error"], json!({}));
        let failed = json!({"result": {"result": [], "result_error": {"b": {"error": "", "error_description": "Not found"}}}});
        let out = c.read_answer(url, failed).expect("read");
        assert_eq!(out["result"], json!({}));
        assert_eq!(out["result_error"]["b"]["error_description"], "Not found");
    }

    #[test]
    fn a_moved_portal_keeps_the_path_and_https() {
        let (c, _, _) = build(r#"webhook_url = "https://old.bitrix24.kz/rest/1/tok3n-abc123""#);
        let c = c.expect("built");
        assert!(!c.follows_redirects());
        let req = c
            .op_request("crm.deal.update", &json!({"id": 1}))
            .expect("request");
        let mut moved = req.clone();
        c.relocate(
            &mut moved,
            "https://new.bitrix24.kz/rest/1/tok3n-abc123/crm.deal.update.json",
        )
        .expect("followed");
        assert_eq!(
            moved.url,
            "https://new.bitrix24.kz/rest/1/tok3n-abc123/crm.deal.update.json"
        );
        assert_eq!(moved.body, req.body, "the body goes along");
        // Later calls, and a request built before the move, go to the new address.
        let mut later = c
            .op_request("crm.deal.get", &json!({"id": 1}))
            .expect("request");
        assert!(later.url.starts_with("https://new.bitrix24.kz/rest/1/"));
        let mut early = req;
        c.authorize(&mut early);
        assert!(
            early.url.starts_with("https://new.bitrix24.kz/"),
            "{}",
            early.url
        );
        let err = c
            .relocate(
                &mut later,
                "http://evil.example/rest/1/tok3n-abc123/crm.deal.get.json",
            )
            .expect_err("no downgrade");
        assert_eq!(err.class, ErrorClass::Config);
        assert!(!err.message.contains("tok3n"), "{}", err.message);
        let err = c
            .relocate(&mut later, "/auth/?backurl=/rest/")
            .expect_err("another path");
        assert!(
            err.message
                .contains("another path at https://new.bitrix24.kz"),
            "{}",
            err.message
        );
    }

    #[test]
    fn config_mistakes_are_reported() {
        let (_, problems, _) = build(r#"webhook_url = "https://acme.bitrix24.kz/rest/""#);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let (_, problems, _) = build("timeout = \"5s\"");
        assert!(problems[0].contains("exactly one"), "{problems:?}");
    }

    #[test]
    fn oauth_puts_the_token_in_auth() {
        let (c, problems, _) = build(
            r#"oauth = { domain = "acme.bitrix24.ru", client_id = "local.1", client_secret = "cs-123456", access_token = "at-123456", refresh_token = "rt-123456" }"#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let c = c.expect("built");
        let mut req = c
            .op_request("crm.deal.list", &Value::Null)
            .expect("request");
        c.authorize(&mut req);
        assert_eq!(
            req.url,
            "https://acme.bitrix24.ru/rest/crm.deal.list.json?auth=at-123456"
        );
        let Auth::OAuth(o) = &c.auth else {
            panic!("not oauth")
        };
        assert_eq!(o.server(), "https://oauth.bitrix24.tech");
        assert_eq!(
            c.redact_url(&req.url),
            "https://acme.bitrix24.ru/rest/crm.deal.list.json?auth=***"
        );
    }
}
