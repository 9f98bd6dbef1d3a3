//! Workers: one dispatcher claims due exchanges in batches (bounded by free worker slots)
//! and runs each in a tracked task. It sleeps until the next due time or a wake-up, never
//! polling, and stops claiming on shutdown.

use std::sync::Arc;
use std::time::Duration;

use crate::mask::Masker;
use crate::model::{ErrorClass, Status, now_ms};
use crate::store::ops::{self, Checkpoint, Claimed, Outcome};
use crate::store::query;
use crate::store::records::{AttemptRecord, CallRecord, ErrorSummary, ExchangeRecord};

use super::Engine;
use super::flow::Mode;
use super::run::{Run, RunEnd, RunError};

const CLAIM_BATCH: usize = 64;
/// Longest sleep without looking at the queue: bounds the effect of a clock jump.
const MAX_IDLE: Duration = Duration::from_secs(30);

impl Engine {
    /// Returns every exchange a dead process left `running` to the queue. Called at start-up.
    pub async fn recover(&self) -> Result<usize, crate::store::StoreError> {
        self.store
            .write(|txn| ops::recover_leases(txn, now_ms()))
            .await
    }

    /// The dispatcher loop; returns when `cancel` fires.
    pub async fn dispatch(self: Arc<Self>) {
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let claimed = match self.claim().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim due exchanges");
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let full = claimed.len() == CLAIM_BATCH;
            for (claim, permit) in claimed {
                let engine = self.clone();
                self.tracker.spawn(async move {
                    engine.run_claimed(claim).await;
                    drop(permit);
                });
            }
            if !full {
                let wait = self.until_next_due();
                self.pause(wait).await;
            }
        }
    }

    async fn pause(&self, wait: Duration) {
        tokio::select! {
            () = self.cancel.cancelled() => {}
            () = self.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }

    fn until_next_due(&self) -> Duration {
        let next = self
            .store
            .read()
            .and_then(|r| query::next_due(&r))
            .ok()
            .flatten();
        match next {
            Some(at) => Duration::from_millis(at.saturating_sub(now_ms())).min(MAX_IDLE),
            None => MAX_IDLE,
        }
    }

    /// Takes free worker slots (waiting for at least one) and claims that many due exchanges.
    async fn claim(
        &self,
    ) -> Result<Vec<(Claimed, tokio::sync::OwnedSemaphorePermit)>, crate::store::StoreError> {
        let first = tokio::select! {
            p = self.slots.clone().acquire_owned() => p.map_err(|_| crate::store::StoreError::Closed)?,
            () = self.cancel.cancelled() => return Ok(Vec::new()),
        };
        let mut permits = vec![first];
        while permits.len() < CLAIM_BATCH {
            match self.slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let limit = permits.len();
        let claimed = self
            .store
            .write(move |txn| ops::claim_due(txn, now_ms(), limit))
            .await?;
        Ok(claimed.into_iter().zip(permits).collect())
    }

    /// Runs one claimed exchange and records the attempt and its outcome.
    pub async fn run_claimed(&self, claim: Claimed) {
        let Claimed { record, work } = claim;
        let started = now_ms();
        let Some(flow) = self.flow(&record.flow).cloned() else {
            let err = RunError {
                class: ErrorClass::Config,
                message: format!("the flow `{}` is no longer in the config", record.flow),
                step: None,
                retry_after: None,
            };
            let done = Finished {
                calls: Vec::new(),
                end: RunEnd::Failed(err),
                cursor: None,
                checkpoint: None,
                masker: self.masker.clone(),
                trigger: work.trigger,
            };
            self.finish(&record, started, done).await;
            return;
        };
        let live = flow.mode == Mode::Live && !record.dry_run;
        let mut run = Run::new(self, &flow, &record, live, true);
        let end = run.execute(&work).await;
        let cursor = if matches!(end, RunEnd::Done) {
            cursor_of(&flow, &run.outputs)
        } else {
            None
        };
        let done = Finished {
            calls: std::mem::take(&mut run.calls),
            end,
            cursor,
            checkpoint: run.last_checkpoint.take(),
            masker: std::mem::take(&mut run.masker),
            trigger: work.trigger,
        };
        self.finish(&record, started, done).await;
    }

    async fn finish(&self, record: &ExchangeRecord, started: u64, done: Finished) {
        let Finished {
            calls,
            end,
            cursor,
            checkpoint,
            masker,
            trigger,
        } = done;
        let now = now_ms();
        let flow = self.flow(&record.flow).cloned();
        let (outcome, error) = match &end {
            RunEnd::Done
                if record.dry_run || flow.as_ref().is_some_and(|f| f.mode == Mode::Shadow) =>
            {
                (Outcome::Done(Status::DryRun), None)
            }
            RunEnd::Done => (Outcome::Done(Status::Succeeded), None),
            RunEnd::Skipped => (Outcome::Done(Status::Skipped), None),
            RunEnd::Failed(e) => (
                self.decide(flow.as_deref(), record.attempts, e, now),
                Some(e),
            ),
        };
        let error = error.map(|e| ErrorSummary {
            class: e.class,
            step: e.step.clone(),
            message: masker.text(&e.message),
            at: now,
        });
        let attempt = AttemptRecord {
            number: record.attempts,
            started_at: started,
            duration_ms: now.saturating_sub(started),
            error,
            calls,
        };
        let (id, flow_name) = (record.id, record.flow.clone());
        let retry_at = match &outcome {
            Outcome::RetryAt(at) => Some(*at),
            _ => None,
        };
        let result = self
            .store
            .write(move |txn| {
                if let Some(c) = &cursor {
                    ops::set_cursor(txn, &flow_name, c)?;
                }
                let rec = ops::finish_run(txn, id, checkpoint, attempt, outcome, now)?;
                let digest = match &rec {
                    Some(r) => crate::store::groups::digest(txn, r)?,
                    None => None,
                };
                Ok((rec, digest))
            })
            .await;
        match result {
            Ok(_) if retry_at.is_some() => self.wake.notify_one(),
            Ok((Some(rec), digest)) => {
                if rec.status == Status::Failed {
                    // The notice carries the trigger masked as the exchange's journal keeps it.
                    let trigger = serde_json::from_str(&trigger)
                        .ok()
                        .zip(flow.as_ref())
                        .map(|(t, f)| f.masked_payload(&masker, &t))
                        .and_then(|m| serde_json::from_str(m.as_str()).ok())
                        .unwrap_or(serde_json::Value::Null);
                    self.alert(&rec, trigger).await;
                }
                if let Some(d) = digest {
                    self.announce(&rec, d).await;
                }
            }
            Ok(_) => {}
            // The lease stays; the next start returns the exchange to the queue.
            Err(e) => tracing::error!(exchange = id, error = %e, "cannot record the attempt"),
        }
    }

    /// The alert flow that gets this exchange's notice of type `notice`, if any.
    fn alert_flow(&self, rec: &ExchangeRecord, notice: &str) -> Option<Arc<super::flow::Flow>> {
        let flow = self.flow(&rec.flow)?;
        if rec.dry_run || !flow.notices.iter().any(|n| n == notice) {
            return None;
        }
        self.flow(flow.on_failure.as_deref()?).cloned()
    }

    /// The flow's failure digest: an error group started, or stopped after a success.
    async fn announce(&self, rec: &ExchangeRecord, digest: crate::store::groups::Digest) {
        use crate::store::groups::Digest;
        let kind = match &digest {
            Digest::Started(_) => "errors.started",
            Digest::Stopped(_) => "errors.stopped",
        };
        let Some(alert_flow) = self.alert_flow(rec, kind) else {
            return;
        };
        let group = |g: &crate::store::records::ErrorGroup| {
            serde_json::json!({"step": g.step, "class": g.class, "problem": g.normalized, "count": g.count,
                               "first_seen": crate::http::views::time(g.first_seen), "example_exchange": g.sample_id})
        };
        let groups = match &digest {
            Digest::Started(g) => vec![group(g)],
            Digest::Stopped(gs) => gs.iter().map(group).collect(),
        };
        let payload = serde_json::json!({
            "id": format!("{kind}:{}", rec.id), "type": kind, "flow": rec.flow,
            "exchange_id": rec.id, "groups": groups, "at": crate::http::views::time(rec.updated_at),
        });
        let event = super::intake::Event {
            source: "alert",
            payload,
            request_id: None,
        };
        if let Err(e) = self.accept(&alert_flow, event).await {
            tracing::error!(flow = %rec.flow, error = %e, "cannot record the failure digest");
        }
    }

    /// A failed exchange of a flow with `on_failure` becomes an exchange of its alert flow.
    /// Its id names the exchange and attempt, so a notice is sent once per failure.
    async fn alert(&self, rec: &ExchangeRecord, trigger: serde_json::Value) {
        let Some(alert_flow) = self.alert_flow(rec, "exchange.failed") else {
            return;
        };
        let error = rec.last_error.as_ref().map(|e| {
            serde_json::json!({"class": e.class, "step": e.step, "message": e.message.as_str()})
        });
        let payload = serde_json::json!({
            "id": format!("failed:{}:{}", rec.id, rec.attempts),
            "type": "exchange.failed",
            "flow": rec.flow,
            "exchange_id": rec.id,
            "request_id": rec.request_id,
            "external_id": rec.external_id,
            "attempts": rec.attempts,
            "trigger": trigger,
            "error": error,
            "at": crate::http::views::time(rec.updated_at),
        });
        let event = super::intake::Event {
            source: "alert",
            payload,
            request_id: Some(rec.request_id.clone()),
        };
        if let Err(e) = self.accept(&alert_flow, event).await {
            tracing::error!(exchange = rec.id, error = %e, "cannot record the failure notice");
        }
    }

    /// Retry or stop: input errors reject, permanent/auth/config fail at once, retryable
    /// ones wait per the flow's policy until attempts run out.
    fn decide(
        &self,
        flow: Option<&super::flow::Flow>,
        attempts: u32,
        e: &RunError,
        now: u64,
    ) -> Outcome {
        if e.class == ErrorClass::Input {
            return Outcome::Stop(Status::Rejected);
        }
        let Some(flow) = flow else {
            return Outcome::Stop(Status::Failed);
        };
        if !e.class.is_retryable() || !flow.retry.allows_another(attempts) {
            return Outcome::Stop(Status::Failed);
        }
        let wait = flow.retry.delay(attempts, e.retry_after, &mut rand::rng());
        Outcome::RetryAt(now + u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
    }
}

/// What a run leaves to record in the commit that ends the attempt.
struct Finished {
    calls: Vec<CallRecord>,
    end: RunEnd,
    cursor: Option<String>,
    checkpoint: Option<Checkpoint>,
    /// The exchange's masker, with the personal data of its trigger.
    masker: Masker,
    /// The trigger payload (raw), for a failure notice.
    trigger: String,
}

/// A step named `cursor` sets the flow's stored cursor for the next scheduled run.
fn cursor_of(flow: &super::flow::Flow, outputs: &[Option<serde_json::Value>]) -> Option<String> {
    flow.steps
        .iter()
        .zip(outputs)
        .find(|(s, _)| s.output_as.as_deref() == Some("cursor"))
        .and_then(|(_, o)| o.as_ref())
        .map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
}
