//! The few Bitrix24 REST methods the 1C example calls, on loopback: an inbound-webhook URL
//! (`/rest/<user>/<secret>/<method>.json`), JSON bodies, `{"result": …, "time": …}` answers,
//! `crm.company.get`, `crm.requisite.list` (filtered by ENTITY_TYPE_ID/ENTITY_ID) and
//! `crm.company.update`; an unknown secret gets Bitrix24's 401 `NO_AUTH_FOUND`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const SECRET: &str = "b24secret0001";

#[derive(Default)]
pub struct Portal {
    pub companies: BTreeMap<String, Value>,
    /// (ENTITY_ID, requisite)
    pub requisites: Vec<(String, Value)>,
    /// Every method called, in order.
    pub calls: Vec<(String, Value)>,
}

pub struct FakePortal {
    /// The inbound-webhook URL, ending with `/`.
    pub webhook_url: String,
    state: Arc<Mutex<Portal>>,
}

impl FakePortal {
    pub async fn start() -> FakePortal {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(Portal::default()));
        let app = Router::new()
            .route("/rest/{user}/{secret}/{method}", post(rest))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakePortal {
            webhook_url: format!("http://{addr}/rest/1/{SECRET}/"),
            state,
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Portal) -> T) -> T {
        f(&mut self.state.lock().expect("portal lock"))
    }
}

fn envelope(result: &Value) -> Response {
    ok(json!({"result": result, "time": {"start": 1.0, "finish": 1.01, "duration": 0.01}}))
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

async fn rest(
    State(state): State<Arc<Mutex<Portal>>>,
    Path((_user, secret, method)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    if secret != SECRET {
        return error(
            StatusCode::UNAUTHORIZED,
            "NO_AUTH_FOUND",
            "Wrong authorization data",
        );
    }
    let args: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let method = method.trim_end_matches(".json").to_owned();
    let mut p = state.lock().expect("portal lock");
    p.calls.push((method.clone(), args.clone()));
    let id = match &args["id"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    match method.as_str() {
        "crm.company.get" => match p.companies.get(&id) {
            Some(c) => envelope(c),
            None => error(StatusCode::BAD_REQUEST, "", "Not found"),
        },
        "crm.requisite.list" => {
            let owner = args["filter"]["ENTITY_ID"]
                .to_string()
                .trim_matches('"')
                .to_owned();
            let of_company = args["filter"]["ENTITY_TYPE_ID"]
                .to_string()
                .trim_matches('"')
                == "4";
            let rows: Vec<Value> = p
                .requisites
                .iter()
                .filter(|(o, _)| of_company && *o == owner)
                .map(|(_, r)| r.clone())
                .collect();
            let total = rows.len();
            ok(json!({"result": rows, "total": total, "time": {"start": 1.0}}))
        }
        "crm.company.update" => match p.companies.get_mut(&id) {
            Some(c) => {
                if let (Value::Object(c), Value::Object(f)) = (c, &args["fields"]) {
                    for (k, v) in f {
                        c.insert(k.clone(), v.clone());
                    }
                }
                envelope(&json!(true))
            }
            None => error(StatusCode::BAD_REQUEST, "", "Not found"),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            "ERROR_METHOD_NOT_FOUND",
            "Method not found!",
        ),
    }
}
