//! The generic `http` connector: any REST API described in the config — base URL, auth
//! (bearer, basic, header, query), named operations and entities for upsert, and optional
//! Standard Webhooks signing of every request (for delivery to a customer's own endpoint).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::PathSeg;
use crate::mask::{Secret, url_encode};
use crate::model::ErrorClass;

use super::inbound::{Encoding, InboundRequest, Refusal, Verifier};
use super::signing::Signer;
use super::{BuildCtx, CallError, Connector, OutboundRequest, Settings, at};

#[derive(Debug, Deserialize)]
struct HttpFile {
    base_url: String,
    auth: Option<AuthFile>,
    timeout: Option<String>,
    rate_limit: Option<String>,
    concurrency: Option<usize>,
    /// A header name, or `false` for targets that reject unknown headers.
    idempotency_header: Option<toml::Value>,
    request_id_header: Option<toml::Value>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    inbound: Option<InboundFile>,
    sign: Option<SignFile>,
    #[serde(default)]
    ops: BTreeMap<String, OpFile>,
    #[serde(default)]
    entities: BTreeMap<String, EntityFile>,
}

#[derive(Debug, Deserialize)]
struct AuthFile {
    bearer: Option<String>,
    basic: Option<BasicFile>,
    header: Option<NameValue>,
    query: Option<NameValue>,
}

#[derive(Debug, Deserialize)]
struct BasicFile {
    user: String,
    password: String,
}

#[derive(Debug, Deserialize)]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
struct InboundFile {
    token_header: Option<String>,
    /// The query parameter of the webhook URL that carries the token (for senders that
    /// cannot set headers).
    token_query: Option<String>,
    token: Option<String>,
    hmac_header: Option<String>,
    secret: Option<String>,
    encoding: Option<String>,
    #[serde(default)]
    prefix: String,
}

/// `sign = { secret = "secret:NAME" }`: the secret is `whsec_<base64 key>`.
#[derive(Debug, Deserialize)]
struct SignFile {
    secret: String,
}

#[derive(Debug, Deserialize)]
struct OpFile {
    method: String,
    path: String,
}

#[derive(Debug, Deserialize)]
struct EntityFile {
    path: String,
    update_method: Option<String>,
    /// Field of a find answer that holds the list (default: the answer itself, or `items`/`data`).
    results: Option<String>,
}

#[derive(Debug)]
enum Auth {
    None,
    Bearer(Secret),
    Basic(Secret),
    Header(String, Secret),
    Query(String, Secret),
}

#[derive(Debug)]
struct Op {
    method: reqwest::Method,
    path: String,
}

#[derive(Debug)]
struct Entity {
    path: String,
    update_method: reqwest::Method,
    results: Option<String>,
}

#[derive(Debug)]
pub struct HttpConnector {
    base_url: String,
    auth: Auth,
    headers: Vec<(String, String)>,
    settings: Settings,
    inbound: Option<Verifier>,
    signer: Option<Signer>,
    ops: BTreeMap<String, Op>,
    entities: BTreeMap<String, Entity>,
}

impl HttpConnector {
    pub fn build(
        table: toml::Table,
        base: &[PathSeg],
        ctx: &mut BuildCtx<'_>,
    ) -> Option<HttpConnector> {
        let file: HttpFile = ctx.parse(table, base)?;
        let base_url = file.base_url.trim_end_matches('/').to_owned();
        if reqwest::Url::parse(&base_url).is_err() {
            ctx.problem(
                at(base, &["base_url"]),
                format!("`{base_url}` is not a URL"),
            );
        }
        let settings = settings(&file, base, ctx);
        let auth = file
            .auth
            .as_ref()
            .map_or(Auth::None, |a| auth(a, base, ctx));
        let inbound = file.inbound.as_ref().and_then(|i| inbound(i, base, ctx));
        let signer = file.sign.as_ref().and_then(|s| signer(s, base, ctx));
        let ops = file
            .ops
            .iter()
            .filter_map(|(name, op)| {
                let method = method(&op.method, at(base, &["ops", name, "method"]), ctx)?;
                Some((
                    name.clone(),
                    Op {
                        method,
                        path: op.path.clone(),
                    },
                ))
            })
            .collect();
        let entities = file
            .entities
            .iter()
            .filter_map(|(name, e)| {
                let update = e.update_method.as_deref().unwrap_or("PATCH");
                let update_method =
                    method(update, at(base, &["entities", name, "update_method"]), ctx)?;
                Some((
                    name.clone(),
                    Entity {
                        path: e.path.clone(),
                        update_method,
                        results: e.results.clone(),
                    },
                ))
            })
            .collect();
        Some(HttpConnector {
            base_url,
            auth,
            headers: file.headers.into_iter().collect(),
            settings,
            inbound,
            signer,
            ops,
            entities,
        })
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        args: &Value,
    ) -> Result<OutboundRequest, CallError> {
        let mut rest = args.as_object().cloned().unwrap_or_default();
        let path = fill_path(path, &mut rest)?;
        let mut url = format!("{}{}", self.base_url, path);
        let mutating = !matches!(method, reqwest::Method::GET | reqwest::Method::HEAD);
        let body = if mutating {
            Some(if args.is_object() {
                Value::Object(rest)
            } else {
                args.clone()
            })
        } else {
            append_query(&mut url, &rest);
            None
        };
        Ok(OutboundRequest {
            method,
            url,
            headers: self.headers.clone(),
            body,
            mutating,
        })
    }

    fn entity(&self, name: &str) -> Result<&Entity, CallError> {
        self.entities.get(name).ok_or_else(|| {
            CallError::new(
                ErrorClass::Config,
                format!("no entity `{name}` in this system"),
            )
        })
    }
}

fn settings(file: &HttpFile, base: &[PathSeg], ctx: &mut BuildCtx<'_>) -> Settings {
    let timeout = ctx.duration(
        at(base, &["timeout"]),
        file.timeout.as_deref(),
        Duration::from_secs(30),
    );
    let rate = ctx.rate(at(base, &["rate_limit"]), file.rate_limit.as_deref(), None);
    let header_opt =
        |v: &Option<toml::Value>, default: &str, key: &str, ctx: &mut BuildCtx<'_>| match v {
            None => Some(default.to_owned()),
            Some(toml::Value::Boolean(false)) => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                ctx.problem(at(base, &[key]), "must be a header name or false");
                None
            }
        };
    Settings {
        timeout,
        rate,
        concurrency: file.concurrency.unwrap_or(8),
        idempotency_header: header_opt(
            &file.idempotency_header,
            "Idempotency-Key",
            "idempotency_header",
            ctx,
        ),
        request_id_header: header_opt(
            &file.request_id_header,
            "X-Request-Id",
            "request_id_header",
            ctx,
        ),
    }
}

fn auth(file: &AuthFile, base: &[PathSeg], ctx: &mut BuildCtx<'_>) -> Auth {
    let kinds = [
        file.bearer.is_some(),
        file.basic.is_some(),
        file.header.is_some(),
        file.query.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        ctx.problem(
            at(base, &["auth"]),
            "set exactly one of bearer, basic, header, query",
        );
        return Auth::None;
    }
    let resolved = |ctx: &mut BuildCtx<'_>, keys: &[&str], v: &str| ctx.secret(at(base, keys), v);
    if let Some(token) = &file.bearer {
        return resolved(ctx, &["auth", "bearer"], token).map_or(Auth::None, Auth::Bearer);
    }
    if let Some(b) = &file.basic {
        let Some(pw) = resolved(ctx, &["auth", "basic", "password"], &b.password) else {
            return Auth::None;
        };
        let cred =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", b.user, pw.expose()));
        ctx.secrets.push(Secret::new(cred.clone()));
        return Auth::Basic(Secret::new(cred));
    }
    if let Some(h) = &file.header {
        return resolved(ctx, &["auth", "header", "value"], &h.value)
            .map_or(Auth::None, |s| Auth::Header(h.name.clone(), s));
    }
    match &file.query {
        Some(q) => resolved(ctx, &["auth", "query", "value"], &q.value)
            .map_or(Auth::None, |s| Auth::Query(q.name.clone(), s)),
        None => Auth::None,
    }
}

fn inbound(file: &InboundFile, base: &[PathSeg], ctx: &mut BuildCtx<'_>) -> Option<Verifier> {
    if let (Some(param), Some(token), None, None, None) = (
        &file.token_query,
        &file.token,
        &file.token_header,
        &file.hmac_header,
        &file.secret,
    ) {
        let token = ctx.secret(at(base, &["inbound", "token"]), token)?;
        return Some(Verifier::QueryToken {
            param: param.clone(),
            token,
        });
    }
    match (
        &file.token_header,
        &file.token,
        &file.hmac_header,
        &file.secret,
    ) {
        (Some(header), Some(token), None, None) => {
            let token = ctx.secret(at(base, &["inbound", "token"]), token)?;
            Some(Verifier::Token {
                header: header.to_ascii_lowercase(),
                token,
            })
        }
        (None, None, Some(header), Some(secret)) => {
            let secret = ctx.secret(at(base, &["inbound", "secret"]), secret)?;
            let encoding = match file.encoding.as_deref().unwrap_or("hex") {
                "hex" => Encoding::Hex,
                "base64" => Encoding::Base64,
                other => {
                    ctx.problem(
                        at(base, &["inbound", "encoding"]),
                        format!("`{other}`: use hex or base64"),
                    );
                    return None;
                }
            };
            Some(Verifier::Hmac {
                header: header.to_ascii_lowercase(),
                secret,
                encoding,
                prefix: file.prefix.clone(),
            })
        }
        _ => {
            ctx.problem(
                at(base, &["inbound"]),
                "set token_header + token, token_query + token, or hmac_header + secret (+ encoding, prefix)",
            );
            None
        }
    }
}

/// Resolves the signing secret (registered for masking) and checks its `whsec_` form; the
/// key's base64 forms are registered too, so that the bare key is masked wherever it shows.
fn signer(file: &SignFile, base: &[PathSeg], ctx: &mut BuildCtx<'_>) -> Option<Signer> {
    let path = at(base, &["sign", "secret"]);
    let secret = ctx.secret(path.clone(), &file.secret)?;
    match Signer::from_secret(secret.expose()) {
        Ok(parsed) => {
            ctx.secrets
                .extend(parsed.key_forms.into_iter().map(Secret::new));
            Some(parsed.signer)
        }
        Err(message) => {
            ctx.problem(path, message);
            None
        }
    }
}

fn method(text: &str, path: Vec<PathSeg>, ctx: &mut BuildCtx<'_>) -> Option<reqwest::Method> {
    match text.to_ascii_uppercase().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE") => {
            reqwest::Method::from_bytes(m.as_bytes()).ok()
        }
        _ => {
            ctx.problem(
                path,
                format!("`{text}` is not one of GET, POST, PUT, PATCH, DELETE"),
            );
            None
        }
    }
}

/// Replaces `{name}` in a path with the URL-encoded argument `name`, which is then not sent
/// again in the body or query.
fn fill_path(template: &str, args: &mut Map<String, Value>) -> Result<String, CallError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map(|c| open + c).ok_or_else(|| {
            CallError::new(
                ErrorClass::Config,
                format!("unclosed `{{` in path `{template}`"),
            )
        })?;
        out.push_str(&rest[..open]);
        let name = &rest[open + 1..close];
        let value = args.remove(name).ok_or_else(|| {
            CallError::new(
                ErrorClass::Input,
                format!("the path needs `{name}` but the arguments have none"),
            )
        })?;
        out.push_str(&url_encode(&scalar_text(&value)));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn append_query(url: &mut String, args: &Map<String, Value>) {
    for (i, (k, v)) in args.iter().enumerate() {
        url.push(if i == 0 && !url.contains('?') {
            '?'
        } else {
            '&'
        });
        url.push_str(&url_encode(k));
        url.push('=');
        url.push_str(&url_encode(&scalar_text(v)));
    }
}

impl Connector for HttpConnector {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn has_op(&self, op: &str) -> bool {
        self.ops.contains_key(op)
    }

    fn has_entity(&self, entity: &str) -> bool {
        self.entities.contains_key(entity)
    }

    fn op_request(&self, op: &str, args: &Value) -> Result<OutboundRequest, CallError> {
        let op = self.ops.get(op).ok_or_else(|| {
            CallError::new(
                ErrorClass::Config,
                format!("no operation `{op}` in this system"),
            )
        })?;
        self.request(op.method.clone(), &op.path, args)
    }

    fn find_request(
        &self,
        entity: &str,
        criteria: &Map<String, Value>,
    ) -> Result<OutboundRequest, CallError> {
        let e = self.entity(entity)?;
        self.request(
            reqwest::Method::GET,
            &e.path,
            &Value::Object(criteria.clone()),
        )
    }

    fn create_request(&self, entity: &str, record: &Value) -> Result<OutboundRequest, CallError> {
        let e = self.entity(entity)?;
        self.request(reqwest::Method::POST, &e.path, record)
    }

    fn update_request(
        &self,
        entity: &str,
        id: &str,
        record: &Value,
    ) -> Result<OutboundRequest, CallError> {
        let e = self.entity(entity)?;
        let path = format!("{}/{}", e.path.trim_end_matches('/'), url_encode(id));
        self.request(e.update_method.clone(), &path, record)
    }

    fn found_records(&self, entity: &str, answer: Value) -> Result<Vec<Value>, CallError> {
        let e = self.entity(entity)?;
        let list = match (&e.results, answer) {
            (Some(field), Value::Object(mut o)) => o.remove(field),
            (None, Value::Array(a)) => Some(Value::Array(a)),
            (None, Value::Object(mut o)) => o.remove("items").or_else(|| o.remove("data")),
            _ => None,
        };
        match list {
            Some(Value::Array(items)) => Ok(items),
            Some(Value::Null) => Ok(Vec::new()),
            _ => Err(CallError::new(
                ErrorClass::Permanent,
                "the search answer holds no list of records",
            )),
        }
    }

    fn authorize(&self, req: &mut OutboundRequest) {
        match &self.auth {
            Auth::None => {}
            Auth::Bearer(t) => req
                .headers
                .push(("Authorization".into(), format!("Bearer {}", t.expose()))),
            Auth::Basic(c) => req
                .headers
                .push(("Authorization".into(), format!("Basic {}", c.expose()))),
            Auth::Header(name, v) => req.headers.push((name.clone(), v.expose().to_owned())),
            Auth::Query(name, v) => {
                let sep = if req.url.contains('?') { '&' } else { '?' };
                req.url = format!(
                    "{}{sep}{}={}",
                    req.url,
                    url_encode(name),
                    url_encode(v.expose())
                );
            }
        }
    }

    fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> Vec<(String, String)> {
        self.signer
            .as_ref()
            .map(|s| s.headers(id, timestamp, body))
            .unwrap_or_default()
    }

    fn verify_inbound(&self, req: &InboundRequest<'_>) -> Result<(), Refusal> {
        self.inbound
            .as_ref()
            .ok_or(Refusal::NotConfigured)?
            .verify(req)
    }

    fn sensitive_headers(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Auth::Header(name, _) = &self.auth {
            names.push(name.clone());
        }
        if let Some(Verifier::Token { header, .. } | Verifier::Hmac { header, .. }) = &self.inbound
        {
            names.push(header.clone());
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::SecretSource;

    #[test]
    fn path_params_are_taken_from_args() {
        let mut args = serde_json::json!({"id": "a b/c", "name": "x"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let path = fill_path("/leads/{id}", &mut args).expect("filled");
        assert_eq!(path, "/leads/a%20b%2Fc");
        assert!(!args.contains_key("id") && args.contains_key("name"));
        assert!(fill_path("/x/{missing}", &mut args).is_err());
    }

    fn build(
        sign: &str,
    ) -> (
        Option<HttpConnector>,
        Vec<crate::config::Problem>,
        Vec<Secret>,
    ) {
        let text = format!("base_url = \"http://127.0.0.1:9\"\nsign = {sign}\n");
        let table: toml::Table = toml::from_str(&text).expect("toml");
        let (mut problems, mut secrets) = (Vec::new(), Vec::new());
        let source = SecretSource::env_only();
        let mut ctx = BuildCtx {
            problems: &mut problems,
            secrets: &mut secrets,
            source: &source,
        };
        let base = [PathSeg::Key("systems".into()), PathSeg::Key("hook".into())];
        let c = HttpConnector::build(table, &base, &mut ctx);
        (c, problems, secrets)
    }

    #[test]
    fn sign_signs_every_request_and_registers_the_key_for_masking() {
        let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        let (c, problems, secrets) = build(&format!("{{ secret = \"whsec_{key}\" }}"));
        assert!(problems.is_empty(), "{problems:?}");
        let c = c.expect("built");
        let exposed: Vec<&str> = secrets.iter().map(Secret::expose).collect();
        assert!(exposed.contains(&format!("whsec_{key}").as_str()));
        assert!(
            exposed.contains(&key.as_str()),
            "the bare key is masked too"
        );
        let headers = c.sign("7:deliver", 1_700_000_000, b"{}");
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["webhook-id", "webhook-timestamp", "webhook-signature"]
        );
        assert_eq!(headers[0].1, "7:deliver");
        assert!(headers[2].1.starts_with("v1,"));
    }

    #[test]
    fn sign_refuses_a_secret_not_in_whsec_form() {
        let (_, problems, _) = build("{ secret = \"plain-shared-secret\" }");
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert!(p.message.contains("whsec_<base64 key>"), "{}", p.message);
        assert!(!p.message.contains("plain-shared-secret"), "{}", p.message);
        assert_eq!(
            p.path.last(),
            Some(&PathSeg::Key("secret".into())),
            "{:?}",
            p.path
        );
        let (_, problems, _) = build("{ secret = \"whsec_%%%notbase64\" }");
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn without_sign_nothing_is_added() {
        let table: toml::Table = toml::from_str("base_url = \"http://127.0.0.1:9\"").expect("toml");
        let (mut problems, mut secrets) = (Vec::new(), Vec::new());
        let source = SecretSource::env_only();
        let mut ctx = BuildCtx {
            problems: &mut problems,
            secrets: &mut secrets,
            source: &source,
        };
        let c = HttpConnector::build(table, &[], &mut ctx).expect("built");
        assert!(c.sign("1:a", 1, b"{}").is_empty());
    }
}
