//! The MoySklad contract every request to the fake is checked against: the official OpenAPI
//! (bundled into tests/fixtures/moysklad/contract.json by tests/moysklad/contract.py). A
//! request must name an operation of the spec (method + path template); its path, query and
//! header parameters must be declared there and valid against their schemas (`limit` 1..1000,
//! `offset` ≥ 0, uuid ids, the `Accept`/`Content-Type` enums), required ones present; its body
//! must match the request body schema. The fake's own answers are checked against the 200
//! schema, so the fake cannot drift from the spec either.
//!
//! One modelling difference, stated by the spec itself: MoySklad's bulk write is `POST
//! /entity/<type>` with an array body; OpenAPI 3.0 cannot give one operation two body shapes,
//! so the spec lists it as `POST /entity/<type>/batch`. An array sent to `/entity/<type>` is
//! checked against that operation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::HeaderMap;
use serde_json::{Map, Value, json};

pub struct Contract {
    defs: Value,
    ops: Vec<Op>,
    payloads: Map<String, Value>,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

pub struct Op {
    pub id: String,
    pub method: String,
    pub path: String,
    params: Vec<Param>,
    body: Option<(bool, Value)>,
    answer: Option<Value>,
}

struct Param {
    name: String,
    place: String,
    required: bool,
    schema: Value,
}

/// The contract, loaded once per test binary.
pub fn contract() -> &'static Contract {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    CONTRACT.get_or_init(|| {
        let path = format!(
            "{}/tests/fixtures/moysklad/contract.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("contract.json");
        Contract::parse(&serde_json::from_str(&text).expect("contract json"))
    })
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

impl Contract {
    fn parse(doc: &Value) -> Contract {
        let ops = doc["operations"]
            .as_array()
            .expect("operations")
            .iter()
            .map(|o| Op {
                id: text(o, "id"),
                method: text(o, "method"),
                path: text(o, "path"),
                params: o["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| Param {
                        name: text(p, "name"),
                        place: text(p, "in"),
                        required: p["required"].as_bool().unwrap_or(false),
                        schema: p["schema"].clone(),
                    })
                    .collect(),
                body: o["body"].as_object().map(|b| {
                    (
                        b.get("required").and_then(Value::as_bool).unwrap_or(false),
                        b.get("schema").cloned().unwrap_or(Value::Null),
                    )
                }),
                answer: Some(o["answer"].clone()).filter(|a| !a.is_null()),
            })
            .collect();
        Contract {
            defs: doc["$defs"].clone(),
            ops,
            payloads: doc["payloads"].as_object().cloned().unwrap_or_default(),
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// The operation for `method` and `path` (below `/api/remap/1.2`) with its path
    /// parameters; a literal segment wins over a template (`/metadata` before `/{id}`).
    pub fn operation(&self, method: &str, path: &str) -> Option<(&Op, Vec<(String, String)>)> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        type Found<'a> = (&'a Op, Vec<(String, String)>, usize);
        let mut best: Option<Found<'_>> = None;
        for op in self.ops.iter().filter(|o| o.method == method) {
            let tpl: Vec<&str> = op.path.trim_matches('/').split('/').collect();
            if tpl.len() != segs.len() {
                continue;
            }
            let mut vars = Vec::new();
            let mut literal = 0;
            let fits = tpl.iter().zip(&segs).all(|(t, s)| {
                if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    vars.push((name.to_owned(), (*s).to_owned()));
                    !s.is_empty()
                } else {
                    literal += 1;
                    t == s
                }
            });
            if fits && best.as_ref().is_none_or(|(_, _, l)| literal > *l) {
                best = Some((op, vars, literal));
            }
        }
        best.map(|(op, vars, _)| (op, vars))
    }

    fn validator(&self, key: &str, schema: &Value) -> Arc<jsonschema::Validator> {
        let mut cache = self.validators.lock().expect("validators");
        cache
            .entry(key.to_owned())
            .or_insert_with(|| {
                let mut root = json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "$defs": self.defs,
                });
                if let (Value::Object(r), Value::Object(s)) = (&mut root, schema) {
                    r.extend(s.clone());
                }
                Arc::new(
                    jsonschema::options()
                        .should_validate_formats(true)
                        .build(&root)
                        .unwrap_or_else(|e| panic!("schema of {key}: {e}")),
                )
            })
            .clone()
    }

    fn errors(&self, key: &str, schema: &Value, value: &Value) -> Vec<String> {
        self.validator(key, schema)
            .iter_errors(value)
            .map(|e| format!("{e} at `{}`", e.instance_path()))
            .collect()
    }

    /// Every way the request breaks the contract (empty: it keeps it), and the operation it
    /// names.
    pub fn check_request(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        headers: &HeaderMap,
        body: Option<&Value>,
    ) -> (Option<&Op>, Vec<String>) {
        let bulk = method == "POST" && body.is_some_and(Value::is_array);
        let lookup = if bulk {
            format!("{}/batch", path.trim_end_matches('/'))
        } else {
            path.to_owned()
        };
        let Some((op, vars)) = self.operation(method, &lookup) else {
            return (
                None,
                vec![format!(
                    "{method} {lookup}: no such operation in the OpenAPI"
                )],
            );
        };
        let mut errs = Vec::new();
        let here = format!("{method} {} ({})", op.path, op.id);
        for (name, _) in query {
            if !op
                .params
                .iter()
                .any(|p| p.place == "query" && &p.name == name)
            {
                errs.push(format!(
                    "{here}: query parameter `{name}` is not in the spec"
                ));
            }
        }
        for p in &op.params {
            let given: Option<String> = match p.place.as_str() {
                "path" => vars
                    .iter()
                    .find(|(n, _)| n == &p.name)
                    .map(|(_, v)| v.clone()),
                "query" => {
                    let mut given = query.iter().filter(|(n, _)| n == &p.name);
                    let first = given.next().map(|(_, v)| v.clone());
                    // Every parameter of the spec is one value: a repeated key is a request
                    // MoySklad reads one way and the fake perhaps another.
                    if given.next().is_some() {
                        errs.push(format!("{here}: query parameter `{}` is repeated", p.name));
                    }
                    first
                }
                "header" => headers
                    .get(p.name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                _ => None,
            };
            let Some(given) = given else {
                if p.required {
                    errs.push(format!(
                        "{here}: {} parameter `{}` is missing",
                        p.place, p.name
                    ));
                }
                continue;
            };
            let value = typed(&given, &p.schema);
            let key = format!("{}:{}:{}", op.id, p.place, p.name);
            for e in self.errors(&key, &p.schema, &value) {
                errs.push(format!(
                    "{here}: {} parameter `{}`={given}: {e}",
                    p.place, p.name
                ));
            }
        }
        match (&op.body, body) {
            (Some((_, schema)), Some(b)) => {
                for e in self.errors(&format!("{}:body", op.id), schema, b) {
                    errs.push(format!("{here}: body: {e}"));
                }
            }
            (Some((true, _)), None) => errs.push(format!("{here}: the body is required")),
            (None, Some(_)) => errs.push(format!("{here}: this operation takes no body")),
            _ => {}
        }
        (Some(op), errs)
    }

    /// How the fake's own 200 answer breaks the operation's answer schema.
    pub fn check_answer(&self, op: &Op, answer: &Value) -> Vec<String> {
        let Some(schema) = &op.answer else {
            return Vec::new();
        };
        self.errors(&format!("{}:answer", op.id), schema, answer)
            .into_iter()
            .map(|e| format!("answer of {} {}: {e}", op.method, op.path))
            .collect()
    }

    /// How a webhook body breaks `WebhookNotificationPayload` (or the stock one).
    pub fn check_payload(&self, name: &str, body: &Value) -> Vec<String> {
        let schema = self.payloads.get(name).expect("a payload schema");
        self.errors(&format!("payload:{name}"), schema, body)
    }
}

/// A parameter's text as the JSON value its schema describes (`limit=2` is the integer 2);
/// text that is not of the schema's type stays text, so the check names it.
fn typed(text: &str, schema: &Value) -> Value {
    match schema["type"].as_str() {
        Some("integer") => text
            .parse::<i64>()
            .map_or_else(|_| json!(text), Value::from),
        Some("number") => text
            .parse::<f64>()
            .map_or_else(|_| json!(text), Value::from),
        Some("boolean") => match text {
            "true" => json!(true),
            "false" => json!(false),
            _ => json!(text),
        },
        _ => json!(text),
    }
}

#[test]
fn a_repeated_query_parameter_is_a_violation() {
    let query = [
        ("limit".to_owned(), "2".to_owned()),
        ("limit".to_owned(), "5000".to_owned()),
    ];
    let (op, errs) =
        contract().check_request("GET", "/entity/product", &query, &HeaderMap::new(), None);
    assert!(op.is_some(), "{errs:?}");
    assert!(
        errs.iter().any(|e| e.contains("`limit` is repeated")),
        "{errs:?}"
    );
}
