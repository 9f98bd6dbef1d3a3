//! The JSON API of SPEC §5: exchanges (list, show, retry, bulk retry) and flows (list,
//! dry-run, manual run).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::config::values::parse_duration;
use crate::engine::Engine;
use crate::engine::dryrun::DryRunReport;
use crate::engine::flow::Trigger;
use crate::engine::intake::Event;
use crate::model::{Millis, Status, now_ms};
use crate::store::ops::{self, RetryRefused};
use crate::store::query::{self, Filter};

use super::AppState;
use super::auth::{Admin, Viewer};
use super::error::ApiError;
use super::hooks::HookAnswer;
use super::views::{self, ExchangeDetail, ExchangeSummary};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub flow: Option<String>,
    /// One of the exchange statuses.
    pub status: Option<String>,
    /// RFC 3339 time, Unix milliseconds, or an age like `24h`.
    pub since: Option<String>,
    pub until: Option<String>,
    /// Idempotency key.
    pub key: Option<String>,
    /// external_id or request_id.
    pub q: Option<String>,
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExchangePage {
    pub items: Vec<ExchangeSummary>,
    pub next_cursor: Option<u64>,
}

pub fn parse_time(text: &str) -> Result<Millis, ApiError> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return u64::try_from(t.timestamp_millis())
            .map_err(|_| ApiError::bad_request("time before 1970"));
    }
    let age = parse_duration(text).map_err(|_| {
        ApiError::bad_request(format!(
            "`{text}` is not an RFC 3339 time, Unix ms or an age like 24h"
        ))
    })?;
    Ok(now_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)))
}

fn status_of(text: Option<&str>) -> Result<Option<Status>, ApiError> {
    text.map(|s| {
        Status::parse(s).ok_or_else(|| ApiError::bad_request(format!("unknown status `{s}`")))
    })
    .transpose()
}

fn filter_of(store: &crate::store::Store, q: ListQuery) -> Result<Filter, ApiError> {
    Ok(Filter {
        status: status_of(q.status.as_deref())?,
        since: q.since.as_deref().map(parse_time).transpose()?,
        until: q.until.as_deref().map(parse_time).transpose()?,
        flow: q.flow,
        key_hash: q.key.map(|k| store.lookup_hash(&k)),
        q: q.q.map(|text| {
            let hash = store.lookup_hash(&text);
            (text, hash)
        }),
        limit: q.limit.unwrap_or(50),
        cursor: q.cursor,
    })
}

/// List exchanges, newest first.
#[utoipa::path(get, path = "/api/exchanges", tag = "exchanges", params(ListQuery),
    responses((status = 200, body = ExchangePage), (status = 400), (status = 401)),
    security(("bearer" = [])))]
pub async fn list(
    _viewer: Viewer,
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ExchangePage>, ApiError> {
    let filter = filter_of(&s.engine.store, q)?;
    let page = query::list(&s.engine.store.read()?, &filter)?;
    Ok(Json(ExchangePage {
        items: page.items.iter().map(ExchangeSummary::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One exchange with its steps, attempts and journal.
#[utoipa::path(get, path = "/api/exchanges/{id}", tag = "exchanges",
    params(("id" = u64, Path)), responses((status = 200, body = ExchangeDetail), (status = 404)),
    security(("bearer" = [])))]
pub async fn show(
    _viewer: Viewer,
    State(s): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<ExchangeDetail>, ApiError> {
    let txn = s.engine.store.read()?;
    let rec = query::exchange(&txn, id)?
        .ok_or_else(|| ApiError::not_found(format!("no exchange {id}")))?;
    let journal = query::journal(&txn, id)?;
    let links = query::links(&txn, id)?;
    Ok(Json(views::detail(&rec, &journal, &links)))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetryQuery {
    /// Re-run a finished (succeeded, skipped, dry_run) exchange from its first step.
    pub force: Option<bool>,
}

/// Manual retry: back to `queued`, history kept, resumes at the first step not done.
#[utoipa::path(post, path = "/api/exchanges/{id}/retry", tag = "exchanges",
    params(("id" = u64, Path), RetryQuery),
    responses((status = 200, body = ExchangeSummary), (status = 404), (status = 409, description = "pending, duplicate, or finished without force"), (status = 403)),
    security(("bearer" = [])))]
pub async fn retry(
    admin: Admin,
    State(s): State<AppState>,
    Path(id): Path<u64>,
    Query(q): Query<RetryQuery>,
) -> Result<Json<ExchangeSummary>, ApiError> {
    let force = q.force.unwrap_or(false);
    let by = admin.0.name;
    let result = s
        .engine
        .store
        .write(move |txn| ops::manual_retry(txn, id, force, &by, now_ms()))
        .await?;
    match result {
        Ok(rec) => {
            s.engine.wake.notify_one();
            Ok(Json(ExchangeSummary::from(&rec)))
        }
        Err(refused) => Err(refused_error(id, &refused)),
    }
}

fn refused_error(id: u64, r: &RetryRefused) -> ApiError {
    let conflict = |m: String| ApiError::new(StatusCode::CONFLICT, "conflict", m);
    match r {
        RetryRefused::NotFound => ApiError::not_found(format!("no exchange {id}")),
        RetryRefused::Pending(s) => conflict(format!("exchange {id} is {s}: it will run anyway")),
        RetryRefused::NeedsForce(s) => conflict(format!(
            "exchange {id} is {s}; add ?force=true to run it again"
        )),
        RetryRefused::Duplicate(o) => conflict(format!(
            "exchange {id} is a duplicate; retry the original, {o}"
        )),
        RetryRefused::NoInput => conflict(format!(
            "exchange {id} kept no input to run (a refused webhook or a dry run)"
        )),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BulkRetry {
    pub flow: Option<String>,
    /// Default: failed. One of failed, rejected.
    pub status: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkAnswer {
    pub matched: usize,
    pub requeued: usize,
}

/// Bulk retry of failed (or rejected) exchanges by filter; answers the counts.
#[utoipa::path(post, path = "/api/exchanges/retry", tag = "exchanges", params(BulkRetry),
    responses((status = 200, body = BulkAnswer), (status = 400), (status = 403)),
    security(("bearer" = [])))]
pub async fn bulk_retry(
    admin: Admin,
    State(s): State<AppState>,
    Query(q): Query<BulkRetry>,
) -> Result<Json<BulkAnswer>, ApiError> {
    let status = status_of(q.status.as_deref())?.unwrap_or(Status::Failed);
    if !matches!(status, Status::Failed | Status::Rejected) {
        return Err(ApiError::bad_request(
            "bulk retry takes status failed or rejected",
        ));
    }
    let since = q.since.as_deref().map(parse_time).transpose()?.unwrap_or(0);
    let until = q
        .until
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or(u64::MAX / crate::model::IDS_PER_MS);
    let (flow, by) = (q.flow, admin.0.name);
    let (matched, requeued) = s
        .engine
        .store
        .write(move |txn| {
            let ids = ops::select_for_retry(txn, flow.as_deref(), &[status], since, until)?;
            let mut requeued = 0;
            for &id in &ids {
                if ops::manual_retry(txn, id, false, &by, now_ms())?.is_ok() {
                    requeued += 1;
                }
            }
            Ok((ids.len(), requeued))
        })
        .await?;
    s.engine.wake.notify_one();
    Ok(Json(BulkAnswer { matched, requeued }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlowView {
    pub name: String,
    pub trigger: String,
    pub mode: String,
    /// Exchanges created in the last 24 h, by their status now.
    #[schema(value_type = Object)]
    pub last_24h: serde_json::Map<String, serde_json::Value>,
    /// All exchanges, by status.
    #[schema(value_type = Object)]
    pub total: serde_json::Map<String, serde_json::Value>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub next_run: Option<String>,
}

fn by_status(counts: [u64; 10]) -> serde_json::Map<String, serde_json::Value> {
    Status::ALL
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| (s.as_str().to_owned(), n.into()))
        .collect()
}

/// Flows with counts by status, last success and error, next scheduled run.
#[utoipa::path(get, path = "/api/flows", tag = "flows",
    responses((status = 200, body = Vec<FlowView>)), security(("bearer" = [])))]
pub async fn flows(
    _viewer: Viewer,
    State(s): State<AppState>,
) -> Result<Json<Vec<FlowView>>, ApiError> {
    let txn = s.engine.store.read()?;
    let since = now_ms().saturating_sub(24 * 3_600_000);
    let mut out = Vec::new();
    for flow in s.engine.flows.values() {
        let [ok, err] = query::flow_last(&txn, &flow.name)?;
        out.push(FlowView {
            name: flow.name.clone(),
            trigger: flow.trigger.kind().to_owned(),
            mode: format!("{:?}", flow.mode).to_ascii_lowercase(),
            last_24h: by_status(query::counts_since(&txn, &flow.name, since)?),
            total: by_status(query::counts(&txn, &flow.name)?),
            last_success: ok.map(|(t, _)| views::time(t)),
            last_error: err.map(|(t, _)| views::time(t)),
            next_run: Engine::next_tick(flow).map(|t| t.to_rfc3339()),
        });
    }
    Ok(Json(out))
}

/// Run a flow on a payload without sending anything mutating.
#[utoipa::path(post, path = "/api/flows/{flow}/dry-run", tag = "flows",
    params(("flow" = String, Path)), request_body(content = Object),
    responses((status = 200, body = DryRunReport), (status = 400), (status = 404)), security(("bearer" = [])))]
pub async fn dry_run(
    _admin: Admin,
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<DryRunReport>, ApiError> {
    let flow = s
        .engine
        .flow(&name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no flow `{name}`")))?;
    let payload = json_body(&body)?;
    Ok(Json(s.engine.dry_run(&flow, payload).await?))
}

/// Manual trigger: a schedule or manual flow runs now, with the body as its payload.
#[utoipa::path(post, path = "/api/flows/{flow}/run", tag = "flows",
    params(("flow" = String, Path)), request_body(content = Object),
    responses((status = 200, body = HookAnswer), (status = 404), (status = 422)), security(("bearer" = [])))]
pub async fn run(
    _admin: Admin,
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<HookAnswer>), ApiError> {
    let flow = s
        .engine
        .flow(&name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no flow `{name}`")))?;
    let mut payload = if body.is_empty() {
        serde_json::json!({})
    } else {
        json_body(&body)?
    };
    if let (Trigger::Schedule { .. }, Some(obj)) = (&flow.trigger, payload.as_object_mut()) {
        let cursor = query::cursor(&s.engine.store.read()?, &flow.name)?;
        obj.entry("cursor").or_insert(cursor.into());
    }
    let a = s
        .engine
        .accept(
            &flow,
            Event {
                source: "manual",
                payload,
                request_id: None,
            },
        )
        .await?;
    Ok(HookAnswer::reply(a))
}

fn json_body(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

/// A consistent copy of the data file, taken between two commits and streamed back.
#[utoipa::path(post, path = "/api/backup", tag = "ops",
    responses((status = 200, content_type = "application/octet-stream"), (status = 403)), security(("bearer" = [])))]
pub async fn backup(
    _admin: Admin,
    State(s): State<AppState>,
) -> Result<axum::response::Response, ApiError> {
    let store = &s.engine.store;
    let dir = store
        .path()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let tmp = dir.join(format!("backup-{}.redb", now_ms()));
    store.backup(&tmp).await?;
    let file = tokio::fs::File::open(&tmp)
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot read the copy: {e}")))?;
    // The open handle keeps the bytes readable; the name goes at once.
    let _ = tokio::fs::remove_file(&tmp).await;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok(axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .unwrap_or_default())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlowSummary {
    pub name: String,
    /// Exchanges created in the last 24 h, by their status now.
    #[schema(value_type = Object)]
    pub last_24h: serde_json::Map<String, serde_json::Value>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
}

/// Flow health and counts only: no payloads, no ids, no error texts. Public when
/// `status_page.public = true`, else for any token.
#[utoipa::path(get, path = "/api/summary", tag = "flows",
    responses((status = 200, body = Vec<FlowSummary>), (status = 401)), security((), ("bearer" = [])))]
pub async fn summary(
    State(s): State<AppState>,
    request: axum::http::request::Parts,
) -> Result<Json<Vec<FlowSummary>>, ApiError> {
    if !s.public_summary {
        super::auth::caller(&request, &s)?;
    }
    let txn = s.engine.store.read()?;
    let since = now_ms().saturating_sub(24 * 3_600_000);
    let mut out = Vec::new();
    for flow in s.engine.flows.values() {
        let [ok, err] = query::flow_last(&txn, &flow.name)?;
        out.push(FlowSummary {
            name: flow.name.clone(),
            last_24h: by_status(query::counts_since(&txn, &flow.name, since)?),
            last_success: ok.map(|(t, _)| views::time(t)),
            last_error: err.map(|(t, _)| views::time(t)),
        });
    }
    Ok(Json(out))
}
