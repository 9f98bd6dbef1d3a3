//! `obmen demo`: a self-contained world to look at. Two fake targets on loopback — a CRM
//! that refuses contacts without an e-mail, and a warehouse that is flaky (500s, timeouts,
//! 429 with Retry-After) — demo flows, and traffic that leaves succeeded, retried,
//! duplicate, rejected and failed exchanges behind.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use rand::Rng;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::cli::{OK, RUNTIME_ERROR};

#[derive(Default)]
struct Crm {
    token: String,
    next: AtomicU64,
    contacts: Mutex<Vec<Value>>,
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {token}"))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "invalid_token"})),
    )
        .into_response()
}

async fn find_contacts(
    State(crm): State<Arc<Crm>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if !authorized(&headers, &crm.token) {
        return unauthorized();
    }
    let contacts = crm.contacts.lock().map(|c| c.clone()).unwrap_or_default();
    let items: Vec<Value> = contacts
        .into_iter()
        .filter(|c| {
            q.iter()
                .all(|(k, v)| c.get(k).and_then(Value::as_str) == Some(v.as_str()))
        })
        .collect();
    Json(json!({"items": items})).into_response()
}

async fn create_contact(
    State(crm): State<Arc<Crm>>,
    headers: HeaderMap,
    Json(mut body): Json<Value>,
) -> Response {
    if !authorized(&headers, &crm.token) {
        return unauthorized();
    }
    let email_ok = body
        .get("email")
        .and_then(Value::as_str)
        .is_some_and(|e| e.contains('@'));
    if !email_ok {
        let err = json!({"error": "validation_failed", "fields": {"email": "is required and must be an address"}});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(err)).into_response();
    }
    let id = format!("c-{}", crm.next.fetch_add(1, Ordering::Relaxed) + 1);
    body["id"] = json!(id);
    if let Ok(mut c) = crm.contacts.lock() {
        c.push(body.clone());
    }
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn update_contact(
    State(crm): State<Arc<Crm>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, &crm.token) {
        return unauthorized();
    }
    let Ok(mut contacts) = crm.contacts.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Some(c) = contacts.iter_mut().find(|c| c["id"] == json!(id)) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "not_found"}))).into_response();
    };
    if let (Some(c), Some(b)) = (c.as_object_mut(), body.as_object()) {
        c.extend(b.clone());
    }
    Json(c.clone()).into_response()
}

async fn create_deal(
    State(crm): State<Arc<Crm>>,
    headers: HeaderMap,
    Json(mut body): Json<Value>,
) -> Response {
    if !authorized(&headers, &crm.token) {
        return unauthorized();
    }
    body["id"] = json!(format!(
        "d-{}",
        crm.next.fetch_add(1, Ordering::Relaxed) + 1
    ));
    (StatusCode::CREATED, Json(body)).into_response()
}

/// The flaky warehouse: about half the requests fail in one of the usual ways.
async fn reserve(
    State(token): State<Arc<String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, &token) {
        return unauthorized();
    }
    let roll: u8 = rand::rng().random_range(0..100);
    match roll {
        0..25 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "upstream database is restarting",
        )
            .into_response(),
        25..35 => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        35..50 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "2")],
            Json(json!({"error": "slow down"})),
        )
            .into_response(),
        _ => (
            StatusCode::CREATED,
            Json(json!({"reservation": format!("r-{}", body["order"]), "status": "reserved"})),
        )
            .into_response(),
    }
}

async fn serve_on_loopback(router: Router) -> std::io::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(port)
}

fn token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn config(crm_port: u16, wh_port: u16, port: u16, t: &Tokens) -> String {
    format!(
        r#"# Written by `obmen demo`; the fake targets' ports change at every start.
[server]
listen = "127.0.0.1:{port}"
data_dir = "data"
cli_token = "{admin}"

[auth]
tokens = [ {{ name = "demo-admin", role = "admin", token = "{admin}" }},
           {{ name = "demo-client", role = "viewer", token = "{viewer}" }} ]

[systems.shop]
kind = "http"
base_url = "http://127.0.0.1:{port}"
inbound = {{ token_header = "X-Shop-Token", token = "{shop}" }}

[systems.crm]
kind = "http"
base_url = "http://127.0.0.1:{crm_port}"
auth = {{ bearer = "{crm}" }}
rate_limit = "20/s"
[systems.crm.entities.contact]
path = "/contacts"
results = "items"
[systems.crm.ops.create_deal]
method = "POST"
path = "/deals"

[systems.warehouse]
kind = "http"
base_url = "http://127.0.0.1:{wh_port}"
auth = {{ bearer = "{wh}" }}
timeout = "1s"
[systems.warehouse.ops.reserve]
method = "POST"
path = "/reservations"

[[flows]]
name = "order-to-crm"
trigger = {{ webhook = {{ system = "shop" }} }}
external_id = ".order.id | tostring"
retry = {{ max_attempts = 5, initial = "1s", max = "5s" }}
schema = {{ type = "object", required = ["order"] }}
status_maps.order_status = {{ "paid" = "WON", "new" = "NEW", "cancelled" = "LOST" }}
steps = [
  {{ upsert = "crm.contact", match = ["email"], as = "contact", args = '{{email: .trigger.order.email, name: .trigger.order.customer}}' }},
  {{ call = "crm.create_deal", as = "deal", args = '{{contact: .contact.id, amount: .trigger.order.total, stage: (.trigger.order.status | status("order_status"))}}' }},
]

[[flows]]
name = "order-to-warehouse"
trigger = {{ webhook = {{ system = "shop" }} }}
external_id = ".order.id | tostring"
retry = {{ max_attempts = 8, initial = "1s", max = "4s" }}
steps = [
  {{ filter = '.trigger.order.status != "cancelled"' }},
  {{ call = "warehouse.reserve", as = "reservation", args = '{{order: .trigger.order.id, items: .trigger.order.items}}' }},
]
"#,
        admin = t.admin,
        viewer = t.viewer,
        shop = t.shop,
        crm = t.crm,
        wh = t.warehouse,
    )
}

struct Tokens {
    admin: String,
    viewer: String,
    shop: String,
    crm: String,
    warehouse: String,
}

pub async fn run(dir: &Path, port: u16, logs: crate::logging::LogMasker) -> u8 {
    match world(dir, port, logs).await {
        Ok(()) => OK,
        Err(e) => {
            eprintln!("demo failed: {e}");
            RUNTIME_ERROR
        }
    }
}

async fn world(dir: &Path, port: u16, logs: crate::logging::LogMasker) -> anyhow::Result<()> {
    let t = Tokens {
        admin: token(),
        viewer: token(),
        shop: token(),
        crm: token(),
        warehouse: token(),
    };
    let crm = Arc::new(Crm {
        token: t.crm.clone(),
        ..Crm::default()
    });
    let crm_router = Router::new()
        .route("/contacts", get(find_contacts).post(create_contact))
        .route("/contacts/{id}", patch(update_contact))
        .route("/deals", post(create_deal))
        .with_state(crm);
    let wh_router = Router::new()
        .route("/reservations", post(reserve))
        .with_state(Arc::new(t.warehouse.clone()));
    let crm_port = serve_on_loopback(crm_router).await?;
    let wh_port = serve_on_loopback(wh_router).await?;
    // A fresh world each time: the story below is easier to read without the last run's.
    let _ = std::fs::remove_dir_all(dir.join("data"));
    crate::app::prepare_data_dir(dir)?;
    let config_path = dir.join("obmen.toml");
    std::fs::write(&config_path, config(crm_port, wh_port, port, &t))?;
    let loaded = crate::config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    logs.set(loaded.masker.clone());
    let listener = tokio::net::TcpListener::bind(loaded.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{port} ({e}); try --port"))?;
    let stop = CancellationToken::new();
    tokio::spawn(crate::app::on_signal(stop.clone()));
    let server = tokio::spawn(crate::app::serve(loaded, listener, stop.clone()));
    let base = format!("http://127.0.0.1:{port}");
    traffic(&base, &t.shop).await?;
    print_welcome(&base, &t, &config_path);
    server.await??;
    Ok(())
}

/// Orders: most are fine, two repeat (duplicates), one has an unknown status (rejected),
/// two have no e-mail (the CRM refuses them: failed), one is cancelled (skipped).
async fn traffic(base: &str, shop_token: &str) -> anyhow::Result<()> {
    let client = crate::app::http_client();
    let mut orders: Vec<Value> = (1..=12)
        .map(|n| json!({"order": {"id": 1000 + n, "customer": format!("Customer {n}"), "email": format!("buyer{n}@example.kz"),
                                   "phone": format!("+7 701 555 00 {n:02}"), "total": 15000 + n * 250, "status": "paid",
                                   "items": [{"sku": format!("SKU-{n}"), "qty": 1 + n % 3}]}}))
        .collect();
    orders[3]["order"]["status"] = json!("refunded");
    orders[5]["order"]["email"] = Value::Null;
    orders[8]["order"]["email"] = json!("not-an-address");
    orders[10]["order"]["status"] = json!("cancelled");
    orders.push(orders[0].clone());
    orders.push(orders[1].clone());
    for order in &orders {
        for flow in ["order-to-crm", "order-to-warehouse"] {
            let sent = client
                .post(format!("{base}/hooks/{flow}"))
                .header("X-Shop-Token", shop_token)
                .json(order)
                .send()
                .await;
            if let Err(e) = sent {
                anyhow::bail!("the demo could not reach its own server: {e}");
            }
        }
    }
    Ok(())
}

fn print_welcome(base: &str, t: &Tokens, config: &Path) {
    println!(
        r#"
obmen demo is running at {base}   (config: {config})
  admin token:  {admin}
  viewer token: {viewer}

Status page: open {base}/ in a browser and log in with a token (admin to press Retry).

Traffic was sent to two flows; the warehouse is flaky, so watch exchanges retry and succeed.
Try:
  curl -s -H 'Authorization: Bearer {admin}' '{base}/api/exchanges?status=failed'
  curl -s -H 'Authorization: Bearer {admin}' '{base}/api/exchanges/ID'
  curl -s -X POST -H 'Authorization: Bearer {admin}' '{base}/api/exchanges/ID/retry'

Also: {base}/api/flows, {base}/metrics, {base}/api/openapi.json. Ctrl-C stops the demo."#,
        config = config.display(),
        admin = t.admin,
        viewer = t.viewer,
    );
}
