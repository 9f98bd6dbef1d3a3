//! The flows' target: a REST endpoint on loopback that takes `POST /items` with a bearer
//! token (401 without it), answers `201 {"id": n}` and keeps every body it accepted.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const TOKEN: &str = "sink-token-0001";

#[derive(Clone, Default)]
pub struct Sink {
    pub base: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Sink {
    pub async fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut sink = Sink {
            base: format!("http://{}", listener.local_addr().expect("addr")),
            ..Sink::default()
        };
        let app = Router::new()
            .route("/items", post(item))
            .with_state(sink.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        sink.base = sink.base.clone();
        sink
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().expect("sink lock").clone()
    }
}

async fn item(
    State(sink): State<Sink>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "unauthorized"})),
        );
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "not JSON"})),
        );
    };
    let mut bodies = sink.bodies.lock().expect("sink lock");
    bodies.push(value);
    (StatusCode::CREATED, axum::Json(json!({"id": bodies.len()})))
}
