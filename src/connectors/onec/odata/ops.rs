//! The requests of the operations a flow can call: `<Resource>.list`, `.get`, `.create`,
//! `.update`, `.delete`, `.post`, `.unpost`, `.count` and the register virtual tables
//! (`.balance`, `.slice_last`, …), with their arguments checked. Every URL asks for JSON
//! (`$format=json`): without it 1C answers atom XML.

use reqwest::Method;
use serde_json::{Map, Value};

use crate::connectors::{CallError, OutboundRequest};
use crate::model::ErrorClass;

use super::query::{self, encode_path, encode_query};
use super::resource::{self, Kind};

/// Where requests go and what every request of this system carries.
#[derive(Debug)]
pub struct Target {
    /// `https://host/<infobase>/odata/standard.odata`, without the trailing `/`.
    pub base_url: String,
    /// `allowedOnly=true` on reads unless a call says otherwise.
    pub allowed_only: bool,
    /// `1C_OData-DataLoadMode: true` on writes.
    pub data_load_mode: bool,
}

/// The arguments each action takes; anything else is a mistake worth reporting.
fn allowed_args(action: &str) -> &'static [&'static str] {
    const LIST: &[&str] = &[
        "filter",
        "select",
        "expand",
        "orderby",
        "top",
        "skip",
        "inlinecount",
        "allowed_only",
    ];
    const VIRTUAL: &[&str] = &[
        "filter",
        "select",
        "expand",
        "orderby",
        "top",
        "skip",
        "allowed_only",
        "period",
        "start_period",
        "end_period",
        "condition",
        "params",
    ];
    match action {
        "list" => LIST,
        "count" => &["filter", "allowed_only"],
        "get" => &["key", "select"],
        "create" => &["record"],
        "update" => &["key", "record", "if_match"],
        "delete" => &["key", "if_match"],
        "post" => &["key", "operational"],
        "unpost" => &["key"],
        _ => VIRTUAL,
    }
}

pub fn input(message: impl Into<String>) -> CallError {
    CallError::new(ErrorClass::Input, message)
}

impl Target {
    /// `<base>/<path>?$format=json&<query>`, each part encoded.
    pub fn request(&self, method: Method, path: &str, query: &[(&str, String)]) -> OutboundRequest {
        let mut url = format!("{}/{}?$format=json", self.base_url, encode_path(path));
        for (k, v) in query {
            url.push('&');
            url.push_str(k);
            url.push('=');
            url.push_str(&encode_query(v));
        }
        let mutating = method != Method::GET;
        OutboundRequest {
            method,
            url,
            headers: Vec::new(),
            body: None,
            mutating,
        }
    }

    /// A create, update or delete: with the data-load-mode header when configured.
    fn write(&self, method: Method, path: &str, body: Option<Value>) -> OutboundRequest {
        let mut req = self.request(method, path, &[]);
        if self.data_load_mode {
            req.headers
                .push(("1C_OData-DataLoadMode".into(), "true".into()));
        }
        req.body = body;
        req
    }

    pub fn create(&self, resource: &str, record: &Value) -> Result<OutboundRequest, CallError> {
        let record = object(record, "the record")?;
        Ok(self.write(Method::POST, resource, Some(record)))
    }

    /// A partial update (`PATCH`); with `If-Match` when the record's `DataVersion` is known.
    pub fn update(
        &self,
        resource: &str,
        key: &str,
        record: &Value,
        if_match: Option<&str>,
    ) -> Result<OutboundRequest, CallError> {
        let record = object(record, "the record")?;
        let mut req = self.write(Method::PATCH, &format!("{resource}{key}"), Some(record));
        if let Some(version) = if_match {
            req.headers.push(("If-Match".into(), version.to_owned()));
        }
        Ok(req)
    }

    /// Finds records whose `criteria` fields equal the given values: two at most, so that
    /// a duplicate in 1C is visible in the journal.
    pub fn find(
        &self,
        resource: &str,
        criteria: &Map<String, Value>,
    ) -> Result<OutboundRequest, CallError> {
        let filter = query::filter(criteria).map_err(input)?;
        let mut params = vec![("$filter", filter), ("$top", "2".into())];
        if self.allowed_only {
            params.push(("allowedOnly", "true".into()));
        }
        Ok(self.request(Method::GET, resource, &params))
    }

    /// The request of `<resource>.<action>` with the step's arguments.
    pub fn op(
        &self,
        resource: &str,
        kind: Kind,
        action: &str,
        args: &Value,
    ) -> Result<OutboundRequest, CallError> {
        let args = match args {
            Value::Null => Map::new(),
            Value::Object(o) => o.clone(),
            _ => {
                return Err(input(format!(
                    "`{resource}.{action}` takes an object of arguments"
                )));
            }
        };
        let allowed = allowed_args(action);
        if let Some(bad) = args.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(input(format!(
                "`{resource}.{action}` has no argument `{bad}` (it takes {})",
                allowed.join(", ")
            )));
        }
        let key = || -> Result<String, CallError> {
            let k = args
                .get("key")
                .ok_or_else(|| input(format!("`{resource}.{action}` needs `key`")))?;
            query::key(k).map_err(input)
        };
        let record = || {
            args.get("record")
                .ok_or_else(|| input(format!("`{resource}.{action}` needs `record`")))
        };
        let if_match = args.get("if_match").and_then(Value::as_str);
        match action {
            "list" => self.list(resource, &args),
            "count" => {
                let params = self.read_params(&args, &["filter", "allowed_only"])?;
                Ok(self.request(Method::GET, &format!("{resource}/$count"), &params))
            }
            "get" => {
                let params = self.read_params(&args, &["select"])?;
                Ok(self.request(Method::GET, &format!("{resource}{}", key()?), &params))
            }
            "create" => self.create(resource, record()?),
            "update" => self.update(resource, &key()?, record()?, if_match),
            "delete" => {
                let mut req = self.write(Method::DELETE, &format!("{resource}{}", key()?), None);
                if let Some(version) = if_match {
                    req.headers.push(("If-Match".into(), version.to_owned()));
                }
                Ok(req)
            }
            "post" => {
                let operational = match args.get("operational") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(input("`operational` is true or false")),
                };
                let params = [("PostingModeOperational", operational.to_string())];
                Ok(self.request(Method::POST, &format!("{resource}{}/Post", key()?), &params))
            }
            "unpost" => {
                Ok(self.request(Method::POST, &format!("{resource}{}/Unpost", key()?), &[]))
            }
            _ => self.virtual_table(resource, kind, action, &args),
        }
    }

    fn list(
        &self,
        resource: &str,
        args: &Map<String, Value>,
    ) -> Result<OutboundRequest, CallError> {
        let paged = args.contains_key("top") || args.contains_key("skip");
        if paged && args.get("inlinecount") == Some(&Value::Bool(true)) {
            return Err(input(
                "1C ignores `top`/`skip` when `inlinecount` is set (it returns every row): \
                 page without `inlinecount`, or ask `<resource>.count` for the total",
            ));
        }
        let names = [
            "filter",
            "select",
            "expand",
            "orderby",
            "top",
            "skip",
            "inlinecount",
            "allowed_only",
        ];
        let params = self.read_params(args, &names)?;
        Ok(self.request(Method::GET, resource, &params))
    }

    /// `AccumulationRegister_X/Balance(Period=datetime'…',Condition='…')` and the like.
    fn virtual_table(
        &self,
        resource: &str,
        kind: Kind,
        action: &str,
        args: &Map<String, Value>,
    ) -> Result<OutboundRequest, CallError> {
        let function = resource::function(action)
            .filter(|_| resource::actions(kind).contains(&action))
            .ok_or_else(|| input(format!("no operation `{resource}.{action}` in 1C OData")))?;
        let mut parts = Vec::new();
        for (arg, name) in [
            ("period", "Period"),
            ("start_period", "StartPeriod"),
            ("end_period", "EndPeriod"),
        ] {
            if let Some(v) = args.get(arg) {
                parts.push(format!("{name}={}", query::datetime(v).map_err(input)?));
            }
        }
        if let Some(c) = args.get("condition") {
            // As 1C's guide writes it: the expression between quotes, its own literals as is.
            parts.push(format!(
                "Condition='{}'",
                query::filter_arg(c).map_err(input)?
            ));
        }
        match args.get("params") {
            None => {}
            Some(Value::Object(extra)) => {
                for (k, v) in extra {
                    if !query::is_name(k) {
                        return Err(input(format!("`{k}` is not a parameter name")));
                    }
                    parts.push(format!("{k}={}", query::literal(k, v).map_err(input)?));
                }
            }
            Some(_) => return Err(input("`params` is an object of function parameters")),
        }
        let names = [
            "filter",
            "select",
            "expand",
            "orderby",
            "top",
            "skip",
            "allowed_only",
        ];
        let params = self.read_params(args, &names)?;
        let path = format!("{resource}/{function}({})", parts.join(","));
        Ok(self.request(Method::GET, &path, &params))
    }

    /// The query options among `names` that `args` sets, in OData's spelling.
    fn read_params(
        &self,
        args: &Map<String, Value>,
        names: &[&str],
    ) -> Result<Vec<(&'static str, String)>, CallError> {
        let mut out = Vec::new();
        for name in names {
            let Some(v) = args.get(*name).filter(|v| !v.is_null()) else {
                continue;
            };
            let (param, text) = match *name {
                "filter" => ("$filter", query::filter_arg(v).map_err(input)?),
                "select" => ("$select", list_text(name, v)?),
                "expand" => ("$expand", list_text(name, v)?),
                "orderby" => ("$orderby", list_text(name, v)?),
                "top" => ("$top", count(name, v)?),
                "skip" => ("$skip", count(name, v)?),
                "inlinecount" => match v {
                    Value::Bool(true) => ("$inlinecount", "allpages".into()),
                    Value::Bool(false) => continue,
                    _ => return Err(input("`inlinecount` is true or false")),
                },
                _ => continue,
            };
            out.push((param, text));
        }
        let allowed = match args.get("allowed_only") {
            None | Some(Value::Null) => self.allowed_only,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(input("`allowed_only` is true or false")),
        };
        if allowed && names.contains(&"allowed_only") {
            out.push(("allowedOnly", "true".into()));
        }
        Ok(out)
    }
}

/// `"a, b"` or `["a", "b"]` as OData's comma list.
fn list_text(name: &str, v: &Value) -> Result<String, CallError> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::Array(items) if !items.is_empty() => {
            let names: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            names
                .map(|n| n.join(","))
                .ok_or_else(|| input(format!("`{name}` is a list of names")))
        }
        _ => Err(input(format!("`{name}` is a name or a list of names"))),
    }
}

fn count(name: &str, v: &Value) -> Result<String, CallError> {
    v.as_u64()
        .map(|n| n.to_string())
        .ok_or_else(|| input(format!("`{name}` is a whole number ≥ 0")))
}

fn object(v: &Value, what: &str) -> Result<Value, CallError> {
    match v {
        Value::Object(o) if !o.is_empty() => Ok(v.clone()),
        _ => Err(input(format!(
            "{what} is a non-empty JSON object of 1C properties"
        ))),
    }
}

/// Where the next page starts when the answer to a `$top` request was full: the list
/// answer gains `next_skip` (null on the last page), which a flow's cursor step reads.
pub fn next_skip(url: &str, body: &Value) -> Option<Value> {
    let rows = body.get("value")?.as_array()?.len() as u64;
    let q = url.split_once('?')?.1;
    let num = |name: &str| {
        q.split('&')
            .find_map(|p| p.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let top = num("$top=")?;
    let skip = num("$skip=").unwrap_or(0);
    Some(if rows >= top && top > 0 {
        Value::from(skip + rows)
    } else {
        Value::Null
    })
}
