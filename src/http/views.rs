//! JSON views of stored records for the API: times as RFC 3339, journal events tagged by
//! `type`. Everything here was masked before it was stored.

use serde::Serialize;
use serde_json::{Value, json};

use crate::model::{ErrorClass, Millis, Status};
use crate::store::records::{
    AttemptRecord, CallRecord, ErrorSummary, EventKind, ExchangeRecord, JournalEvent,
};

pub fn time(ms: Millis) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let nanos = u32::try_from((ms % 1000) * 1_000_000).unwrap_or(0);
    chrono::DateTime::from_timestamp(secs, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorView {
    pub class: ErrorClass,
    pub step: Option<String>,
    pub message: String,
    pub at: String,
}

impl From<&ErrorSummary> for ErrorView {
    fn from(e: &ErrorSummary) -> ErrorView {
        ErrorView {
            class: e.class,
            step: e.step.clone(),
            message: e.message.as_str().to_owned(),
            at: time(e.at),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExchangeSummary {
    pub id: u64,
    pub flow: String,
    pub status: Status,
    pub request_id: String,
    pub external_id: Option<String>,
    pub key: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    /// For `duplicate`: the exchange this one repeats.
    pub original_id: Option<u64>,
    pub dry_run: bool,
    pub last_error: Option<ErrorView>,
}

impl From<&ExchangeRecord> for ExchangeSummary {
    fn from(r: &ExchangeRecord) -> ExchangeSummary {
        ExchangeSummary {
            id: r.id,
            flow: r.flow.clone(),
            status: r.status,
            request_id: r.request_id.clone(),
            external_id: r.external_id.clone(),
            key: r.key.clone(),
            created_at: time(r.created_at),
            updated_at: time(r.updated_at),
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at.map(time),
            original_id: r.original_id,
            dry_run: r.dry_run,
            last_error: r.last_error.as_ref().map(ErrorView::from),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExchangeDetail {
    #[serde(flatten)]
    pub summary: ExchangeSummary,
    /// Steps with their checkpoints: done or not, and the (masked) output.
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<Value>,
    /// Every attempt: duration, error class, the masked requests and responses.
    #[schema(value_type = Vec<Object>)]
    pub attempt_log: Vec<Value>,
    /// The whole journal, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
    /// ID-map links this exchange recorded.
    #[schema(value_type = Vec<Object>)]
    pub links: Vec<Value>,
}

pub fn detail(
    rec: &ExchangeRecord,
    journal: &[JournalEvent],
    links: &[[String; 4]],
) -> ExchangeDetail {
    let steps = rec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let output = journal.iter().rev().find_map(|e| match &e.kind {
                EventKind::StepDone { index, output, .. } if *index as usize == i => Some(output.as_str()),
                _ => None,
            });
            json!({"index": i, "name": s.name, "done": s.done_at.is_some(), "done_at": s.done_at.map(time),
                   "output": output.map(|o| serde_json::from_str::<Value>(o).unwrap_or_else(|_| Value::String(o.to_owned())))})
        })
        .collect();
    let attempt_log = journal
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Attempt(a) => Some(attempt(a)),
            _ => None,
        })
        .collect();
    ExchangeDetail {
        summary: ExchangeSummary::from(rec),
        steps,
        attempt_log,
        events: journal.iter().map(event).collect(),
        links: links
            .iter()
            .map(
                |[s, e, k, t]| json!({"system": s, "entity": e, "external_key": k, "target_id": t}),
            )
            .collect(),
    }
}

fn attempt(a: &AttemptRecord) -> Value {
    json!({
        "number": a.number,
        "started_at": time(a.started_at),
        "duration_ms": a.duration_ms,
        "ok": a.error.is_none(),
        "error": a.error.as_ref().map(ErrorView::from),
        "calls": a.calls.iter().map(call).collect::<Vec<_>>(),
    })
}

pub fn call(c: &CallRecord) -> Value {
    let headers: serde_json::Map<String, Value> = c
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.as_str().to_owned())))
        .collect();
    json!({
        "step": c.step, "method": c.method, "url": c.url.as_str(), "headers": headers,
        "body": c.body.as_ref().map(|b| b.as_str()), "sent": c.sent, "status": c.status,
        "response": c.response.as_ref().map(|r| r.as_str()), "duration_ms": c.duration_ms,
        "error": c.error.as_ref().map(|e| e.as_str()),
    })
}

fn event(e: &JournalEvent) -> Value {
    let at = time(e.at);
    match &e.kind {
        EventKind::Received { source, payload } => {
            let payload = serde_json::from_str::<Value>(payload.as_str()).unwrap_or(Value::Null);
            json!({"type": "received", "at": at, "source": source, "payload": payload})
        }
        EventKind::StatusChanged { from, to, reason } => {
            json!({"type": "status", "at": at, "from": from, "to": to, "reason": reason.as_ref().map(|r| r.as_str())})
        }
        EventKind::Attempt(a) => json!({"type": "attempt", "at": at, "attempt": attempt(a)}),
        EventKind::StepDone { index, name, .. } => {
            json!({"type": "step_done", "at": at, "index": index, "name": name})
        }
        EventKind::Linked {
            system,
            entity,
            external_key,
            target_id,
        } => json!({
            "type": "linked", "at": at, "system": system, "entity": entity,
            "external_key": external_key.as_str(), "target_id": target_id.as_str()}),
        EventKind::Manual { action, by } => {
            json!({"type": "manual", "at": at, "action": action, "by": by})
        }
        EventKind::Delivered { to, detail } => {
            json!({"type": "delivered", "at": at, "to": to, "detail": detail})
        }
    }
}
