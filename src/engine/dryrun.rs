//! Dry runs: a flow computed on a payload with nothing mutating sent. The answer shows
//! validation, dedup and ID-map decisions, step outputs and the requests that would be
//! sent (masked); the run is journaled as an exchange in status `dry_run`.

use serde::Serialize;
use serde_json::Value;

use crate::mask::Masker;
use crate::model::{Status, now_ms};
use crate::store::StoreError;
use crate::store::ops::{self, NewExchange};
use crate::store::records::{
    AttemptRecord, CallRecord, ErrorSummary, ExchangeRecord, StepState, WorkState,
};

use super::Engine;
use super::flow::Flow;
use super::intake::decide;
use super::run::{Run, RunEnd};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRunReport {
    pub flow: String,
    /// The exchange recording this dry run.
    pub exchange_id: u64,
    /// `dry_run`, `rejected` or `skipped`.
    pub status: String,
    pub valid: bool,
    pub errors: Vec<String>,
    pub external_id: Option<String>,
    pub key: Option<String>,
    /// The exchange a live trigger with this key would duplicate.
    pub duplicate_of: Option<u64>,
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub requests: Vec<Value>,
}

impl Engine {
    pub async fn dry_run(&self, flow: &Flow, payload: Value) -> Result<DryRunReport, StoreError> {
        let d = decide(flow, &payload, None);
        // Secrets and this payload's personal data, as intake would mask them.
        let masker = flow.masker_for(&self.masker, &payload);
        let duplicate_of = match &d.key {
            Some(k) => self.dedup_lookup(
                &super::intake::dedup_scope(flow),
                &self.store.lookup_hash(k),
            )?,
            None => None,
        };
        let mut errors: Vec<String> = d
            .errors
            .iter()
            .map(|e| masker.text(e).into_string())
            .collect();
        let now = now_ms();
        let record = ExchangeRecord {
            id: 0,
            flow: flow.name.clone(),
            status: Status::Running,
            request_id: d.request_id.clone(),
            external_id: d.external_id.clone(),
            key: d.key.clone(),
            created_at: now,
            updated_at: now,
            attempts: 1,
            next_attempt_at: None,
            original_id: None,
            dry_run: true,
            steps: flow
                .step_names()
                .into_iter()
                .map(|name| StepState {
                    name,
                    done_at: None,
                })
                .collect(),
            last_error: None,
            journal_next: 0,
        };
        let mut work = payload.clone();
        self.masker.strip_secrets(&mut work);
        let work = WorkState {
            trigger: work.to_string(),
            outputs: Vec::new(),
        };
        let mut run = Run::new(self, flow, &record, false, false);
        let end = if errors.is_empty() {
            run.execute(&work).await
        } else {
            RunEnd::Failed(reject(&errors))
        };
        let (status, error) = match end {
            RunEnd::Done => (Status::DryRun, None),
            RunEnd::Skipped => (Status::Skipped, None),
            RunEnd::Failed(e) => {
                let msg = masker.text(&e.message);
                if errors.is_empty() {
                    errors.push(msg.as_str().to_owned());
                }
                (
                    if e.class == crate::model::ErrorClass::Input {
                        Status::Rejected
                    } else {
                        Status::Failed
                    },
                    Some(ErrorSummary {
                        class: e.class,
                        step: e.step,
                        message: msg,
                        at: now_ms(),
                    }),
                )
            }
        };
        let steps = step_report(flow, &masker, &run.outputs);
        let calls = std::mem::take(&mut run.calls);
        let requests = calls.iter().map(call_json).collect();
        let exchange_id = self
            .record_dry_run(
                flow,
                &masker,
                &payload,
                &d,
                (status, attempt_of(calls, error, now)),
            )
            .await?;
        Ok(DryRunReport {
            flow: flow.name.clone(),
            exchange_id,
            status: status.as_str().to_owned(),
            valid: errors.is_empty(),
            errors,
            external_id: d.external_id.map(|e| masker.text(&e).into_string()),
            key: d.key.map(|k| masker.text(&k).into_string()),
            duplicate_of,
            steps,
            requests,
        })
    }

    fn dedup_lookup(&self, flow: &str, key: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.store.read()?;
        crate::store::query::dedup_owner(&txn, flow, key)
    }

    /// Journals the dry run as an exchange that ended in `status` after `attempt`.
    async fn record_dry_run(
        &self,
        flow: &Flow,
        masker: &Masker,
        payload: &Value,
        d: &super::intake::Decided,
        (status, attempt): (Status, AttemptRecord),
    ) -> Result<u64, StoreError> {
        let now = attempt.started_at;
        let new = NewExchange {
            flow: flow.name.clone(),
            request_id: d.request_id.clone(),
            external_id: d.external_id.as_ref().map(|e| masker.text(e).into_string()),
            key: None,
            raw_key: None,
            raw_external_id: d.external_id.clone(),
            dedup_scope: String::new(),
            dedup_window_ms: 0,
            dry_run: true,
            source: "dry-run".into(),
            payload: flow.masked_payload(masker, payload),
            work: WorkState::default(),
            steps: flow.step_names(),
            rejected: None,
            now,
        };
        self.store
            .write(move |txn| {
                let created = ops::create_dry_run(txn, new, attempt, status)?;
                Ok(created.id)
            })
            .await
    }
}

fn attempt_of(calls: Vec<CallRecord>, error: Option<ErrorSummary>, started: u64) -> AttemptRecord {
    AttemptRecord {
        number: 1,
        started_at: started,
        duration_ms: now_ms().saturating_sub(started),
        error,
        calls,
    }
}

fn step_report(flow: &Flow, masker: &Masker, outputs: &[Option<Value>]) -> Vec<Value> {
    flow.steps
        .iter()
        .zip(outputs.iter().chain(std::iter::repeat(&None)))
        .map(|(s, out)| {
            let output = out.as_ref().map(|v| {
                serde_json::from_str::<Value>(masker.json(v).as_str()).unwrap_or(Value::Null)
            });
            serde_json::json!({"name": s.name, "kind": s.kind.label(), "ran": out.is_some(), "output": output})
        })
        .collect()
}

fn reject(errors: &[String]) -> super::run::RunError {
    super::run::RunError {
        class: crate::model::ErrorClass::Input,
        message: errors.join("; "),
        step: None,
        retry_after: None,
    }
}

fn call_json(c: &CallRecord) -> Value {
    serde_json::json!({
        "step": c.step, "method": c.method, "url": c.url.as_str(),
        "headers": c.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.as_str().to_owned()))).collect::<serde_json::Map<_, _>>(),
        "body": c.body.as_ref().map(|b| b.as_str()),
        "sent": c.sent, "status": c.status, "response": c.response.as_ref().map(|r| r.as_str()),
    })
}
