//! Runs the steps of one exchange from the first step not yet done. Each finished step is
//! checkpointed (with its ID-map link, in the same commit) before the next one starts, so
//! a retry never repeats a step that completed.

use serde_json::{Map, Value, json};

use crate::connectors::CallError;
use crate::connectors::transport::CallCtx;
use crate::mask::Masker;
use crate::model::{ErrorClass, now_ms};
use crate::store::ops::{self, Checkpoint, Link};
use crate::store::query;
use crate::store::records::{CallRecord, ExchangeRecord, WorkState};

use super::Engine;
use super::flow::{Flow, Lookup, Missing, Step, StepKind};
use super::intake::ids;
use super::jq::{Jq, JqFailure};

/// Why a run stopped short.
#[derive(Clone, Debug)]
pub struct RunError {
    pub class: ErrorClass,
    pub message: String,
    pub step: Option<String>,
    pub retry_after: Option<std::time::Duration>,
}

impl RunError {
    fn input(message: impl Into<String>) -> RunError {
        RunError {
            class: ErrorClass::Input,
            message: message.into(),
            step: None,
            retry_after: None,
        }
    }
}

impl From<CallError> for RunError {
    fn from(e: CallError) -> RunError {
        RunError {
            class: e.class,
            message: e.message,
            step: None,
            retry_after: e.retry_after,
        }
    }
}

impl From<JqFailure> for RunError {
    fn from(e: JqFailure) -> RunError {
        RunError::input(e.to_string())
    }
}

#[derive(Debug)]
pub enum RunEnd {
    Done,
    /// A filter said no.
    Skipped,
    Failed(RunError),
}

/// One run of an exchange's steps.
pub struct Run<'a> {
    pub engine: &'a Engine,
    pub flow: &'a Flow,
    pub record: &'a ExchangeRecord,
    /// Send mutating calls (false in shadow mode and dry runs).
    pub live: bool,
    /// Write checkpoints to the store (false for the dry-run endpoint).
    pub persist: bool,
    pub calls: Vec<CallRecord>,
    /// Outputs by step index, as the run saw them.
    pub outputs: Vec<Option<Value>>,
    /// The last step's checkpoint, left for the commit that records the outcome: one write
    /// fewer per exchange, and the final step and status land together.
    pub last_checkpoint: Option<Checkpoint>,
    /// This exchange's masker: the engine's secrets plus the personal data of its trigger
    /// (set by [`Run::execute`]); everything the run writes goes through it.
    pub masker: Masker,
    /// The exchange's external id and key as jq programs and the ID map see them.
    external_id: Option<String>,
    key: Option<String>,
}

impl<'a> Run<'a> {
    pub fn new(
        engine: &'a Engine,
        flow: &'a Flow,
        record: &'a ExchangeRecord,
        live: bool,
        persist: bool,
    ) -> Run<'a> {
        Run {
            engine,
            flow,
            record,
            live,
            persist,
            calls: Vec::new(),
            outputs: Vec::new(),
            last_checkpoint: None,
            masker: engine.masker.clone(),
            external_id: record.external_id.clone(),
            key: record.key.clone(),
        }
    }

    pub async fn execute(&mut self, work: &WorkState) -> RunEnd {
        let trigger: Value = serde_json::from_str(&work.trigger).unwrap_or(Value::Null);
        // Rebuilt on every run from the work copy, which keeps the personal data raw.
        self.masker = self.flow.masker_for(&self.engine.masker, &trigger);
        if !self.flow.mask.is_empty() {
            // The record holds them masked; the targets and the ID map need the real ones.
            let (external_id, key) = ids(self.flow, &trigger, &mut Vec::new());
            self.external_id = external_id.or(self.external_id.take());
            self.key = key.or(self.key.take());
        }
        // Checked again on every run: a manual retry after a schema change sees the new one.
        let errors = self
            .flow
            .schema
            .as_ref()
            .map(|s| s.errors(&trigger))
            .unwrap_or_default();
        if !errors.is_empty() {
            let list: Vec<String> = errors.into_iter().map(|e| format!("schema: {e}")).collect();
            return RunEnd::Failed(RunError::input(list.join("; ")));
        }
        let mut ctx = self.base_context(trigger);
        self.outputs = vec![None; self.flow.steps.len()];
        for (i, step) in self.flow.steps.iter().enumerate() {
            let done = self
                .record
                .steps
                .get(i)
                .is_some_and(|s| s.done_at.is_some());
            let saved = work.outputs.get(i).cloned().flatten();
            // A step `when` passed did nothing: its `when` is asked again (a manual retry
            // after a config fix sees the new one); still false, it stays passed.
            if done && saved.as_deref() == Some(PASSED) {
                match self.runs(step, &ctx) {
                    Ok(true) => {}
                    Ok(false) => {
                        remember(&mut ctx, step, &Value::Null);
                        continue;
                    }
                    Err(mut e) => {
                        e.step = Some(step.name.clone());
                        return RunEnd::Failed(e);
                    }
                }
            } else if let (true, Some(saved)) = (done, saved) {
                let value: Value = serde_json::from_str(&saved).unwrap_or(Value::Null);
                remember(&mut ctx, step, &value);
                self.outputs[i] = Some(value);
                continue;
            }
            match self.step(i, step, &ctx).await {
                Ok(Some(Some(value))) => {
                    remember(&mut ctx, step, &value);
                    self.outputs[i] = Some(value);
                }
                // Passed by `when`: later steps see `null`; the run reports it as not run.
                Ok(Some(None)) => remember(&mut ctx, step, &Value::Null),
                Ok(None) => return RunEnd::Skipped,
                Err(mut e) => {
                    e.step = Some(step.name.clone());
                    return RunEnd::Failed(e);
                }
            }
        }
        RunEnd::Done
    }

    fn base_context(&self, trigger: Value) -> Value {
        let r = self.record;
        let mut ctx = Map::new();
        ctx.insert("trigger".into(), trigger);
        let exchange = json!({"id": r.id, "request_id": r.request_id, "external_id": self.external_id, "key": self.key});
        ctx.insert("exchange".into(), exchange);
        Value::Object(ctx)
    }

    /// Whether the step's `when` (if any) lets it run.
    fn runs(&self, step: &Step, ctx: &Value) -> Result<bool, RunError> {
        Ok(match &step.when {
            Some(jq) => truthy(self.eval(jq, ctx)?),
            None => true,
        })
    }

    /// Runs one step; `Ok(None)` means a filter stopped the exchange, `Ok(Some(None))` that
    /// `when` passed the step.
    async fn step(
        &mut self,
        index: usize,
        step: &Step,
        ctx: &Value,
    ) -> Result<Option<Option<Value>>, RunError> {
        let runs = self.runs(step, ctx)?;
        let (output, link) = match &step.kind {
            // `when` said no: done, with nothing to show.
            _ if !runs => (Value::Null, None),
            StepKind::Filter(jq) => {
                if !truthy(self.eval(jq, ctx)?) {
                    return Ok(None);
                }
                (Value::Bool(true), None)
            }
            StepKind::Map(jq) => (self.eval(jq, ctx)?.unwrap_or(Value::Null), None),
            StepKind::Call { system, op, args } => {
                let args = match args {
                    Some(jq) => self.eval(jq, ctx)?.unwrap_or(Value::Null),
                    None => Value::Null,
                };
                let sys = self.engine.system(system)?;
                let req = sys.connector.op_request(op, &args)?;
                (self.send(step, &sys, req, "").await?, None)
            }
            StepKind::Find {
                lookup,
                args,
                missing,
            } => match self
                .find(step, lookup, args.as_ref(), *missing, ctx)
                .await?
            {
                Some(found) => (found, None),
                None => return Ok(None),
            },
            StepKind::Upsert { lookup, args } => self.upsert(step, lookup, args, ctx).await?,
            StepKind::ToOnec { flow, args } => (self.to_onec(flow, args, ctx).await?, None),
        };
        if let Some(schema) = step.schema.as_ref().filter(|_| runs) {
            let errors = schema.errors(&output);
            if !errors.is_empty() {
                return Err(RunError::input(format!(
                    "the step output breaks its schema: {}",
                    errors.join("; ")
                )));
            }
        }
        if self.persist {
            let checkpoint = Checkpoint {
                index,
                // The work copy tells a passed step from one whose output was `null`.
                output: if runs {
                    output.to_string()
                } else {
                    PASSED.to_owned()
                },
                masked: self.masker.json(&output),
                link,
            };
            if index + 1 == self.flow.steps.len() {
                self.last_checkpoint = Some(checkpoint);
            } else {
                self.checkpoint(checkpoint).await?;
            }
        }
        Ok(Some(runs.then_some(output)))
    }

    fn eval(&self, jq: &Jq, ctx: &Value) -> Result<Option<Value>, RunError> {
        Ok(jq.first(ctx.clone(), &self.flow.status_maps)?)
    }

    /// The target id of a search hit; none (or `null`) is an error, not the id "null".
    fn found_id(&self, id: &Jq, record: &Value, entity: &str) -> Result<String, RunError> {
        key_text(self.eval(id, record)?).ok_or_else(|| {
            RunError::input(format!(
                "the `{entity}` found has no id at `{}`; set the step's `id`",
                id.source()
            ))
        })
    }

    /// Sends one request. The idempotency key is `<exchange id>:<step>`, plus `key_suffix`
    /// where one step makes two different mutating calls (an upsert's update), so that a
    /// target never sees one key reused with other parameters.
    async fn send(
        &mut self,
        step: &Step,
        sys: &crate::connectors::System,
        req: crate::connectors::OutboundRequest,
        key_suffix: &str,
    ) -> Result<Value, RunError> {
        let call = CallCtx {
            step: &step.name,
            request_id: &self.record.request_id,
            idempotency_key: format!("{}:{}{key_suffix}", self.record.id, step.name),
            masker: &self.masker,
            send_mutating: self.live,
        };
        let (result, records) = sys.call(req, &call).await;
        for record in records {
            if record.sent {
                self.engine
                    .metrics
                    .observe_call(&sys.name, record.duration_ms);
            }
            self.calls.push(record);
        }
        Ok(result?)
    }

    /// The ID map by `link`, else a search by the match fields: `{found, id, record, via}`;
    /// nothing found is handled as the step's `missing` says (`Ok(None)`: skip).
    async fn find(
        &mut self,
        step: &Step,
        lookup: &Lookup,
        args: Option<&Jq>,
        missing: Missing,
        ctx: &Value,
    ) -> Result<Option<Value>, RunError> {
        let key = match &lookup.link {
            Some(jq) => key_text(self.eval(jq, ctx)?),
            None => None,
        };
        let record = match args {
            Some(jq) => self.eval(jq, ctx)?.unwrap_or(Value::Null),
            None => Value::Null,
        };
        let searched = match self.locate(step, lookup, key.as_deref(), &record).await? {
            Located::IdMap(id) => {
                return Ok(Some(
                    json!({"found": true, "id": id, "record": null, "via": "id_map"}),
                ));
            }
            Located::Search(id, first) => {
                return Ok(Some(
                    json!({"found": true, "id": id, "record": first, "via": "search"}),
                ));
            }
            Located::Missing(searched) => searched,
        };
        let (entity, system) = (&lookup.entity, &lookup.system);
        let what = match (&key, searched.is_empty()) {
            (Some(k), true) => format!("no `{entity}` linked to `{k}` in `{system}`"),
            (None, true) => format!("no `{entity}` in `{system}`: `link` gave no ID-map key"),
            (Some(k), false) => {
                format!("no `{entity}` linked to `{k}` or with {searched} in `{system}`")
            }
            (None, false) => format!("no `{entity}` with {searched} in `{system}`"),
        };
        match missing {
            Missing::Continue => Ok(Some(
                json!({"found": false, "id": null, "record": null, "via": null}),
            )),
            Missing::Skip => Ok(None),
            Missing::Retry => Err(RunError {
                class: ErrorClass::Transient,
                message: format!("{what} yet (the step retries: `missing = \"retry\"`)"),
                step: None,
                retry_after: None,
            }),
            Missing::Reject => Err(RunError::input(what)),
        }
    }

    /// The ID map by `key`, else a search by the match fields of `record` (when the step
    /// has any): what a find or an upsert looks for before it decides.
    async fn locate(
        &mut self,
        step: &Step,
        t: &Lookup,
        key: Option<&str>,
        record: &Value,
    ) -> Result<Located, RunError> {
        if let Some(key) = key
            && let Some(id) = self.engine.idmap(&t.system, &t.entity, key)?
        {
            return Ok(Located::IdMap(id));
        }
        if t.match_fields.is_empty() {
            return Ok(Located::Missing(String::new()));
        }
        let criteria = criteria(record, &t.match_fields)?;
        let sys = self.engine.system(&t.system)?;
        let req = sys.connector.find_request(&t.entity, &criteria)?;
        let answer = self.send(step, &sys, req, "").await?;
        let found = sys.connector.found_records(&t.entity, answer)?;
        if let Some(first) = found.into_iter().next() {
            let id = self.found_id(&t.id, &first, &t.entity)?;
            return Ok(Located::Search(id, first));
        }
        Ok(Located::Missing(
            criteria
                .iter()
                .map(|(k, v)| format!("{k}={}", text_of(v)))
                .collect::<Vec<_>>()
                .join(", "),
        ))
    }

    /// ID map, else search by the match fields, then update or create; the link is
    /// recorded with the step's checkpoint.
    async fn upsert(
        &mut self,
        step: &Step,
        lookup: &Lookup,
        args: &Jq,
        ctx: &Value,
    ) -> Result<(Value, Option<Link>), RunError> {
        let Lookup {
            system, entity, id, ..
        } = lookup;
        let record = self.eval(args, ctx)?.unwrap_or(Value::Null);
        let link_key = match &lookup.link {
            // `null` or `""` is no key: it would tie every such record to one target.
            Some(jq) => key_text(self.eval(jq, ctx)?),
            None => self.external_id.clone(),
        };
        let existing = match self
            .locate(step, lookup, link_key.as_deref(), &record)
            .await?
        {
            Located::IdMap(id) | Located::Search(id, _) => Some(id),
            Located::Missing(_) => None,
        };
        let sys = self.engine.system(system)?;
        let (action, target_id, response) = match existing {
            Some(target) => {
                let req = sys.connector.update_request(entity, &target, &record)?;
                (
                    "updated",
                    Some(target),
                    self.send(step, &sys, req, ":update").await?,
                )
            }
            None => {
                let req = sys.connector.create_request(entity, &record)?;
                let response = self.send(step, &sys, req, "").await?;
                let created = if self.live {
                    key_text(self.eval(id, &response)?)
                } else {
                    None
                };
                if self.live && created.is_none() {
                    return Err(RunError::input(format!(
                        "the create answer has no id at `{}`; set the step's `id`",
                        id.source()
                    )));
                }
                ("created", created, response)
            }
        };
        let action = if self.live {
            action.to_owned()
        } else {
            format!("would_{}", action.trim_end_matches('d'))
        };
        let link = match (&link_key, &target_id, self.live) {
            (Some(key), Some(target), true) => Some(Link {
                system: system.clone(),
                entity: entity.clone(),
                external_key: key.clone(),
                target_id: target.clone(),
                masked_key: self.masker.text(key),
                masked_target: self.masker.text(target),
            }),
            _ => None,
        };
        Ok((
            json!({"action": action, "id": target_id, "response": response}),
            link,
        ))
    }

    /// Puts the order in the sale flow's outbox, where 1C's next `mode=query` finds it.
    /// Keyed by the order's `id`: a re-run replaces it, so it is never queued twice.
    async fn to_onec(&self, flow: &str, args: &Jq, ctx: &Value) -> Result<Value, RunError> {
        let order = self.eval(args, ctx)?.unwrap_or(Value::Null);
        crate::connectors::onec::commerceml::write::check_order(&order).map_err(RunError::input)?;
        let id = text_of(&order["id"]);
        if !self.live {
            return Ok(json!({"action": "would_queue", "flow": flow, "order_id": id}));
        }
        let (exchange, text, f, oid) = (
            self.record.id,
            order.to_string(),
            flow.to_owned(),
            id.clone(),
        );
        let seq = self
            .engine
            .store
            .write(move |txn| {
                crate::store::onec::put_outbox(txn, &f, &oid, exchange, &text, now_ms())
            })
            .await
            .map_err(|e| RunError {
                class: ErrorClass::Transient,
                message: format!("cannot queue the order for 1C: {e}"),
                step: None,
                retry_after: None,
            })?;
        Ok(json!({"action": "queued", "flow": flow, "order_id": id, "seq": seq}))
    }

    async fn checkpoint(&self, c: Checkpoint) -> Result<(), RunError> {
        let id = self.record.id;
        self.engine
            .store
            .write(move |txn| {
                ops::checkpoint(txn, id, c.index, c.output, c.masked, c.link, now_ms())
            })
            .await
            .map_err(|e| RunError {
                class: ErrorClass::Transient,
                message: format!("cannot record the step: {e}"),
                step: None,
                retry_after: None,
            })
    }
}

/// What [`Run::locate`] found: by the ID map, by a search (with the record), or nothing
/// (with the search criteria as text, empty when there was no search).
enum Located {
    IdMap(String),
    Search(String, Value),
    Missing(String),
}

/// The work copy's output of a step `when` passed (no step output serializes to it).
const PASSED: &str = "";

/// jq's truth: anything but `null` and `false` (and no output at all).
fn truthy(v: Option<Value>) -> bool {
    v.is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false)))
}

fn remember(ctx: &mut Value, step: &Step, output: &Value) {
    if let (Some(name), Value::Object(map)) = (&step.output_as, ctx) {
        map.insert(name.clone(), output.clone());
    }
}

fn criteria(record: &Value, fields: &[String]) -> Result<Map<String, Value>, RunError> {
    let mut out = Map::new();
    for f in fields {
        match record.get(f) {
            Some(v) if !v.is_null() => {
                out.insert(f.clone(), v.clone());
            }
            _ => {
                return Err(RunError::input(format!(
                    "the match field `{f}` is missing from the record"
                )));
            }
        }
    }
    Ok(out)
}

/// An ID-map key or target id as text; `null` and `""` name nothing.
fn key_text(v: Option<Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        other => Some(text_of(&other)),
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Engine {
    fn system(&self, name: &str) -> Result<std::sync::Arc<crate::connectors::System>, RunError> {
        self.systems.get(name).cloned().ok_or_else(|| RunError {
            class: ErrorClass::Config,
            message: format!("no system named `{name}`"),
            step: None,
            retry_after: None,
        })
    }

    fn idmap(&self, system: &str, entity: &str, key: &str) -> Result<Option<String>, RunError> {
        let read = || -> Result<Option<String>, crate::store::StoreError> {
            query::idmap(
                &self.store.read()?,
                system,
                entity,
                &self.store.lookup_hash(key),
            )
        };
        read().map_err(|e| RunError {
            class: ErrorClass::Transient,
            message: format!("cannot read the ID map: {e}"),
            step: None,
            retry_after: None,
        })
    }
}
