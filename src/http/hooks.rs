//! Inbound webhooks: verify the raw body the way the source system signs, parse it, and
//! answer 2xx only after the exchange is durably committed.

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;

use crate::connectors::inbound::{InboundRequest, Refusal};
use crate::engine::flow::Trigger;
use crate::engine::intake::{Accepted, Event};
use crate::model::Status;

use super::AppState;
use super::error::ApiError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HookAnswer {
    pub exchange_id: u64,
    pub status: Status,
    pub request_id: String,
    /// For a duplicate: `exchange_id` is the original; this is the duplicate's own record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_id: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Receive a webhook for a flow.
#[utoipa::path(post, path = "/hooks/{flow}", tag = "hooks",
    params(("flow" = String, Path, description = "flow name")),
    request_body(content = Object, description = "the source system's payload"),
    responses(
        (status = 200, description = "journaled (queued, or a duplicate of an earlier exchange)", body = HookAnswer),
        (status = 400, description = "malformed JSON"), (status = 401, description = "missing verification"),
        (status = 403, description = "verification failed"), (status = 404, description = "unknown flow"),
        (status = 413, description = "body too large"), (status = 422, description = "rejected input", body = HookAnswer),
        (status = 503, description = "the journal cannot commit; retry later")))]
pub async fn receive(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(flow_name): Path<String>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<HookAnswer>), ApiError> {
    let engine = &state.engine;
    let flow = engine
        .flow(&flow_name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no flow `{flow_name}`")))?;
    let Trigger::Webhook { system } = &flow.trigger else {
        return Err(ApiError::not_found(format!(
            "flow `{flow_name}` is not triggered by webhooks"
        )));
    };
    let bytes = axum::body::to_bytes(body, flow.max_body)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is larger than {} bytes", flow.max_body),
            )
        })?;
    let connector = &engine
        .systems
        .get(system)
        .ok_or_else(|| ApiError::not_found("no such system"))?
        .connector;
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(wait) = state.auth_throttle.blocked_for(peer.ip()) {
        return Err(throttled(wait));
    }
    let query: Vec<(String, String)> = raw_query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let inbound = InboundRequest {
        headers: &headers,
        query: &query,
        body: &bytes,
    };
    if let Err(r) = connector.verify_inbound(&inbound) {
        // Journaled (masked) so that a sender with a wrong secret shows on the status page;
        // the throttle keeps a flood of forgeries from filling the journal.
        state.auth_throttle.failed(peer.ip());
        let reason = r.to_string();
        if let Err(e) = engine
            .record_refusal(&flow, &reason, &bytes, request_id.as_deref())
            .await
        {
            tracing::warn!(flow = %flow.name, error = %e, "cannot journal a refused webhook");
        }
        return Err(refusal(&r));
    }
    let payload = connector
        .parse_inbound(&inbound)
        .map_err(ApiError::bad_request)?;
    // One exchange per trigger the delivery carries, all in one durable commit; the answer
    // names the first one kept.
    let events: Vec<Event> = connector
        .split_inbound(payload)
        .into_iter()
        .map(|payload| Event {
            source: "webhook",
            payload,
            request_id: request_id.clone(),
        })
        .collect();
    // No guard: the batch is always written.
    let accepted = engine
        .accept_batch(&flow, &events, |_| Ok(true), |_, _| Ok(()))
        .await?
        .unwrap_or_default();
    let shown = accepted
        .iter()
        .position(|a| a.status != Status::Rejected)
        .unwrap_or(0);
    let answer = accepted
        .into_iter()
        .nth(shown)
        .ok_or_else(|| ApiError::bad_request("the delivery holds no event"))?;
    Ok(HookAnswer::reply(answer))
}

impl HookAnswer {
    /// The answer to an accepted trigger: 200 (queued or duplicate, with the original's id)
    /// or 422 when the input was rejected.
    pub fn reply(a: Accepted) -> (StatusCode, Json<HookAnswer>) {
        let code = if a.status == Status::Rejected {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        };
        let answer = HookAnswer {
            exchange_id: a.original_id.unwrap_or(a.id),
            status: a.status,
            request_id: a.request_id,
            duplicate_id: a.original_id.map(|_| a.id),
            errors: a.errors,
        };
        (code, Json(answer))
    }
}

fn throttled(wait: std::time::Duration) -> ApiError {
    let mut err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        "too many unverified webhooks from this address; wait",
    );
    err.retry_after = Some(u32::try_from(wait.as_secs() + 1).unwrap_or(u32::MAX));
    err
}

fn refusal(r: &Refusal) -> ApiError {
    match r {
        Refusal::Missing(_) => ApiError::new(StatusCode::UNAUTHORIZED, "unverified", r.to_string()),
        Refusal::Mismatch(_) => {
            ApiError::new(StatusCode::FORBIDDEN, "bad_signature", r.to_string())
        }
        Refusal::NotConfigured => {
            ApiError::new(StatusCode::FORBIDDEN, "not_configured", r.to_string())
        }
    }
}

/// Subscription handshakes. The generic `http` kind has none.
pub async fn handshake(State(state): State<AppState>, Path(flow_name): Path<String>) -> ApiError {
    match state.engine.flow(&flow_name) {
        None => ApiError::not_found(format!("no flow `{flow_name}`")),
        Some(_) => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "no_handshake",
            "this flow's system has no subscription handshake; POST the events",
        ),
    }
}
