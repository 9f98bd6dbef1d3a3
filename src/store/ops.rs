//! Write operations. Each runs inside a writer transaction and reads before it writes, so a
//! logical refusal (not found, wrong status) leaves nothing half-written in the batch.

use redb::ReadableTable;

use crate::mask::Masked;
use crate::model::{ErrorClass, Millis, Status, id_floor_for};

use super::records::*;
use super::tables::{LOOKUP_EXTERNAL, LOOKUP_KEY, LOOKUP_OWNER};

use super::{StoreError, Tx};

const HOUR_MS: u64 = 3_600_000;

/// What intake hands to the store for a new exchange.
#[derive(Debug)]
pub struct NewExchange {
    pub flow: String,
    pub request_id: String,
    pub external_id: Option<String>,
    pub key: Option<String>,
    /// The raw key and external id (they may hold personal data): stored only as lookup
    /// hashes, in the dedup table and the key and external-id indexes.
    pub raw_key: Option<String>,
    pub raw_external_id: Option<String>,
    /// Namespace of the key in the dedup table: the flow, or `flow#shadow` so that a flow
    /// proven in shadow mode does not see its first live events as duplicates.
    pub dedup_scope: String,
    pub dedup_window_ms: u64,
    pub dry_run: bool,
    pub source: String,
    pub payload: Masked,
    pub work: WorkState,
    pub steps: Vec<String>,
    /// `Some` when intake already rejected the input (schema, key expression).
    pub rejected: Option<ErrorSummary>,
    pub now: Millis,
}

#[derive(Clone, Debug)]
pub struct Created {
    pub id: u64,
    pub status: Status,
    pub original_id: Option<u64>,
}

pub fn create_exchange(txn: &Tx<'_>, new: NewExchange) -> Result<Created, StoreError> {
    let id = txn.next_id(id_floor_for(new.now))?;
    let original = match (&new.raw_key, &new.rejected) {
        (Some(key), None) => {
            let hashed = txn.lookup.hash(key);
            claim_key(
                txn,
                &new.dedup_scope,
                &hashed,
                id,
                new.now,
                new.dedup_window_ms,
            )?
        }
        _ => None,
    };
    let status = match (&new.rejected, original) {
        (Some(_), _) => Status::Rejected,
        (None, Some(_)) => Status::Duplicate,
        (None, None) => Status::Queued,
    };
    let mut rec = new_record(id, &new, original);
    index_new(txn, &rec, &new)?;
    append(
        txn,
        &mut rec,
        new.now,
        EventKind::Received {
            source: new.source,
            payload: new.payload,
        },
    )?;
    let reason = match (&new.rejected, original) {
        (Some(err), _) => Some(err.message.clone()),
        (None, Some(orig)) => Some(Masked::internal(format!("duplicate of exchange {orig}"))),
        _ => None,
    };
    change_status(txn, &mut rec, status, reason, new.now)?;
    // A rejected exchange keeps its work copy too (a retry after a config fix runs it);
    // a refused webhook has none: its sender was not verified.
    if status != Status::Duplicate && !new.work.trigger.is_empty() {
        put_work(txn, id, &new.work)?;
    }
    if status == Status::Queued {
        schedule(txn, &mut rec, new.now)?;
    }
    put(txn, &rec)?;
    Ok(Created {
        id,
        status,
        original_id: original,
    })
}

fn new_record(id: u64, new: &NewExchange, original: Option<u64>) -> ExchangeRecord {
    ExchangeRecord {
        id,
        flow: new.flow.clone(),
        status: Status::Received,
        request_id: new.request_id.clone(),
        external_id: new.external_id.clone(),
        key: new.key.clone(),
        created_at: new.now,
        updated_at: new.now,
        attempts: 0,
        next_attempt_at: None,
        original_id: original,
        dry_run: new.dry_run,
        steps: new
            .steps
            .iter()
            .map(|name| StepState {
                name: name.clone(),
                done_at: None,
            })
            .collect(),
        last_error: new.rejected.clone(),
        journal_next: 0,
    }
}

/// Records a finished dry run: received, its one attempt (requests recorded, not sent),
/// and its final status. No dedup key is claimed and nothing is queued.
pub fn create_dry_run(
    txn: &Tx<'_>,
    new: NewExchange,
    attempt: AttemptRecord,
    status: Status,
) -> Result<Created, StoreError> {
    let id = txn.next_id(id_floor_for(new.now))?;
    let mut rec = new_record(id, &new, None);
    rec.attempts = 1;
    rec.last_error = attempt.error.clone();
    index_new(txn, &rec, &new)?;
    let now = new.now;
    append(
        txn,
        &mut rec,
        now,
        EventKind::Received {
            source: new.source,
            payload: new.payload,
        },
    )?;
    append(txn, &mut rec, now, EventKind::Attempt(attempt))?;
    change_status(txn, &mut rec, status, None, now)?;
    put(txn, &rec)?;
    Ok(Created {
        id,
        status,
        original_id: None,
    })
}

/// Returns the original exchange when `key` was seen inside the window; otherwise records
/// this exchange as the key's owner.
fn claim_key(
    txn: &Tx<'_>,
    flow: &str,
    key: &str,
    id: u64,
    now: Millis,
    window_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let mut lookups = txn.lookups()?;
    let owner = {
        let mut owners = lookups.range((key, LOOKUP_OWNER, 0)..=(key, LOOKUP_OWNER, u64::MAX))?;
        owners.find_map(|e| match e {
            Ok((k, v)) => {
                let (scope, first_seen) = v.value();
                (scope == flow).then(|| Ok((k.value().2, first_seen)))
            }
            Err(e) => Some(Err(e)),
        })
    };
    if let Some(owner) = owner {
        let (original, first_seen) = owner?;
        if now.saturating_sub(first_seen) < window_ms {
            return Ok(Some(original));
        }
        lookups.remove((key, LOOKUP_OWNER, original))?;
    }
    lookups.insert((key, LOOKUP_OWNER, id), (flow, now))?;
    Ok(None)
}

fn index_new(txn: &Tx<'_>, rec: &ExchangeRecord, new: &NewExchange) -> Result<(), StoreError> {
    txn.by_flow()?.insert((rec.flow.as_str(), rec.id), ())?;
    txn.by_request()?
        .insert((rec.request_id.as_str(), rec.id), ())?;
    let mut lookups = txn.lookups()?;
    if let Some(ext) = &new.raw_external_id {
        let hash = txn.lookup.hash(ext);
        lookups.insert((hash.as_str(), LOOKUP_EXTERNAL, rec.id), ("", 0))?;
    }
    if let Some(key) = &new.raw_key {
        let hash = txn.lookup.hash(key);
        lookups.insert((hash.as_str(), LOOKUP_KEY, rec.id), ("", 0))?;
    }
    Ok(())
}

pub fn get(txn: &Tx<'_>, id: u64) -> Result<Option<ExchangeRecord>, StoreError> {
    let table = txn.exchanges()?;
    let found = table.get(id)?;
    found.map(|v| decode(v.value())).transpose()
}

pub fn put(txn: &Tx<'_>, rec: &ExchangeRecord) -> Result<(), StoreError> {
    txn.exchanges()?.insert(rec.id, encode(rec)?.as_slice())?;
    Ok(())
}

pub fn get_work(txn: &Tx<'_>, id: u64) -> Result<WorkState, StoreError> {
    let table = txn.work()?;
    let Some(sealed) = table.get(id)? else {
        return Ok(WorkState::default());
    };
    let plain = txn
        .key
        .open(&super::work_context(id), sealed.value())
        .ok_or(StoreError::Unseal)?;
    decode(&plain)
}

/// The work copy holds personal data the targets need: it rests sealed with the master key.
pub fn put_work(txn: &Tx<'_>, id: u64, work: &WorkState) -> Result<(), StoreError> {
    let sealed = txn.key.seal(&super::work_context(id), &encode(work)?);
    txn.work()?.insert(id, sealed.as_slice())?;
    Ok(())
}

/// Appends one journal event; the journal is never rewritten.
pub fn append(
    txn: &Tx<'_>,
    rec: &mut ExchangeRecord,
    at: Millis,
    kind: EventKind,
) -> Result<(), StoreError> {
    let event = JournalEvent { at, kind };
    txn.journal()?
        .insert((rec.id, rec.journal_next), encode(&event)?.as_slice())?;
    rec.journal_next += 1;
    Ok(())
}

/// Moves an exchange to `to`: indexes, counters, the hourly buckets and the journal.
pub fn change_status(
    txn: &Tx<'_>,
    rec: &mut ExchangeRecord,
    to: Status,
    reason: Option<Masked>,
    now: Millis,
) -> Result<(), StoreError> {
    let from = rec.status;
    // `received` is never indexed or counted: it lasts only inside the intake commit.
    let first = from == Status::Received;
    let flow = rec.flow.as_str();
    let hour = rec.created_at / HOUR_MS;
    let mut by_flow_status = txn.by_flow_status()?;
    if !first {
        by_flow_status.remove((flow, from.code(), rec.id))?;
        txn.count(flow, hour, from.code(), -1);
    }
    by_flow_status.insert((flow, to.code(), rec.id), ())?;
    txn.count(flow, hour, to.code(), 1);
    match to {
        Status::Succeeded | Status::DryRun => {
            txn.flow_last()?.insert((flow, 0), (now, rec.id))?;
        }
        Status::Failed | Status::Rejected => {
            txn.flow_last()?.insert((flow, 1), (now, rec.id))?;
            if let Some(err) = &rec.last_error {
                super::groups::record(txn, rec, err)?;
            }
        }
        _ => {}
    }
    rec.status = to;
    rec.updated_at = now;
    let from = (!first).then_some(from);
    append(txn, rec, now, EventKind::StatusChanged { from, to, reason })
}

/// Puts an exchange in the queue at `at`.
pub fn schedule(txn: &Tx<'_>, rec: &mut ExchangeRecord, at: Millis) -> Result<(), StoreError> {
    if let Some(old) = rec.next_attempt_at.take() {
        txn.due()?.remove((old, rec.id))?;
    }
    txn.due()?.insert((at, rec.id), ())?;
    rec.next_attempt_at = Some(at);
    Ok(())
}

/// A claimed exchange: its head (now `running`) and what the worker needs to run it.
#[derive(Debug)]
pub struct Claimed {
    pub record: ExchangeRecord,
    pub work: WorkState,
}

/// Takes up to `limit` exchanges due at or before `now`, marks them `running` and counts
/// the attempt, all in the caller's transaction. One process owns the file (redb allows no
/// other), so `running` alone is the lease: it ends with the attempt, or with the process.
pub fn claim_due(txn: &Tx<'_>, now: Millis, limit: usize) -> Result<Vec<Claimed>, StoreError> {
    let due: Vec<(u64, u64)> = {
        let table = txn.due()?;
        let range = table.range(..=(now, u64::MAX))?;
        range
            .take(limit)
            .map(|e| e.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?
    };
    let mut claimed = Vec::with_capacity(due.len());
    for (at, id) in due {
        txn.due()?.remove((at, id))?;
        let Some(mut record) = get(txn, id)? else {
            continue;
        };
        record.next_attempt_at = None;
        record.attempts += 1;
        change_status(txn, &mut record, Status::Running, None, now)?;
        put(txn, &record)?;
        claimed.push(Claimed {
            work: get_work(txn, id)?,
            record,
        });
    }
    Ok(claimed)
}

/// Crash recovery at start-up: every `running` exchange belongs to a process that is gone,
/// so it goes back to the queue, due now.
pub fn recover_leases(txn: &Tx<'_>, now: Millis) -> Result<usize, StoreError> {
    let running = Status::Running.code();
    let mut ids: Vec<u64> = Vec::new();
    for flow in txn.known_flows()? {
        let table = txn.by_flow_status()?;
        for e in table.range((flow.as_str(), running, 0)..=(flow.as_str(), running, u64::MAX))? {
            ids.push(e?.0.value().2);
        }
    }
    for &id in &ids {
        let Some(mut rec) = get(txn, id)? else {
            continue;
        };
        if rec.status != Status::Running {
            continue;
        }
        let reason = Masked::fixed("the process stopped during the attempt; resuming");
        change_status(txn, &mut rec, Status::Queued, Some(reason), now)?;
        schedule(txn, &mut rec, now)?;
        put(txn, &rec)?;
    }
    Ok(ids.len())
}

/// A link written by an `upsert` step, committed with its checkpoint.
#[derive(Clone, Debug)]
pub struct Link {
    pub system: String,
    pub entity: String,
    pub external_key: String,
    pub target_id: String,
    pub masked_key: Masked,
    pub masked_target: Masked,
}

/// Records a finished step: its output for later steps, the journal event, and the ID map
/// link when the step made one — all in one commit.
pub fn checkpoint(
    txn: &Tx<'_>,
    id: u64,
    index: usize,
    output: String,
    masked: Masked,
    link: Option<Link>,
    now: Millis,
) -> Result<(), StoreError> {
    let Some(mut rec) = get(txn, id)? else {
        return Ok(());
    };
    keep_output(txn, id, index, output)?;
    mark_done(txn, &mut rec, index, masked, link, now)?;
    put(txn, &rec)
}

/// A finished step: written by [`checkpoint`], or (the last step of a run) by
/// [`finish_run`] in the commit that records the attempt.
#[derive(Debug)]
pub struct Checkpoint {
    pub index: usize,
    pub output: String,
    pub masked: Masked,
    pub link: Option<Link>,
}

/// Keeps a step's output in the sealed work copy, where a later run resumes from it.
fn keep_output(txn: &Tx<'_>, id: u64, index: usize, output: String) -> Result<(), StoreError> {
    let mut work = get_work(txn, id)?;
    if work.outputs.len() <= index {
        work.outputs.resize(index + 1, None);
    }
    work.outputs[index] = Some(output);
    put_work(txn, id, &work)
}

fn mark_done(
    txn: &Tx<'_>,
    rec: &mut ExchangeRecord,
    index: usize,
    masked: Masked,
    link: Option<Link>,
    now: Millis,
) -> Result<(), StoreError> {
    let name = rec
        .steps
        .get(index)
        .map(|s| s.name.clone())
        .unwrap_or_default();
    if let Some(step) = rec.steps.get_mut(index) {
        step.done_at = Some(now);
    }
    let index32 = u32::try_from(index).unwrap_or(u32::MAX);
    append(
        txn,
        rec,
        now,
        EventKind::StepDone {
            index: index32,
            name,
            output: masked,
        },
    )?;
    if let Some(link) = link {
        write_link(txn, rec, link, now)?;
    }
    Ok(())
}

fn write_link(
    txn: &Tx<'_>,
    rec: &mut ExchangeRecord,
    link: Link,
    now: Millis,
) -> Result<(), StoreError> {
    let hashed = txn.lookup.hash(&link.external_key);
    let key = (link.system.as_str(), link.entity.as_str(), hashed.as_str());
    txn.idmap()?.insert(key, link.target_id.as_str())?;
    let n = rec.journal_next;
    let row = (
        link.system.as_str(),
        link.entity.as_str(),
        link.masked_key.as_str(),
        link.masked_target.as_str(),
    );
    txn.links()?.insert((rec.id, n), row)?;
    let kind = EventKind::Linked {
        system: link.system,
        entity: link.entity,
        external_key: link.masked_key,
        target_id: link.masked_target,
    };
    append(txn, rec, now, kind)
}

/// How an attempt ended, decided by the engine.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Done(Status),
    RetryAt(Millis),
    Stop(Status),
}

/// Records an attempt and moves the exchange to its next status.
pub fn finish_attempt(
    txn: &Tx<'_>,
    id: u64,
    attempt: AttemptRecord,
    outcome: Outcome,
    now: Millis,
) -> Result<Option<ExchangeRecord>, StoreError> {
    finish_run(txn, id, None, attempt, outcome, now)
}

/// Records an attempt with its last step's checkpoint, and moves the exchange to its next
/// status. The step's output is kept for a later run only when there will be one: an
/// exchange that ended needs no resume point (a forced re-run starts from the first step).
pub fn finish_run(
    txn: &Tx<'_>,
    id: u64,
    last: Option<Checkpoint>,
    attempt: AttemptRecord,
    outcome: Outcome,
    now: Millis,
) -> Result<Option<ExchangeRecord>, StoreError> {
    let Some(mut rec) = get(txn, id)? else {
        return Ok(None);
    };
    if let Some(step) = last {
        if !matches!(outcome, Outcome::Done(_)) {
            keep_output(txn, id, step.index, step.output)?;
        }
        mark_done(txn, &mut rec, step.index, step.masked, step.link, now)?;
    }
    if let Some(err) = &attempt.error {
        let flow = rec.flow.as_str();
        let mut errors = txn.attempt_errors()?;
        let n = errors
            .get((flow, err.class.code()))?
            .map(|v| v.value())
            .unwrap_or(0);
        errors.insert((flow, err.class.code()), n + 1)?;
        rec.last_error = Some(err.clone());
    }
    let reason = attempt.error.as_ref().map(|e| e.message.clone());
    append(txn, &mut rec, now, EventKind::Attempt(attempt))?;
    match outcome {
        Outcome::Done(status) | Outcome::Stop(status) => {
            change_status(txn, &mut rec, status, reason, now)?;
        }
        Outcome::RetryAt(at) => {
            change_status(txn, &mut rec, Status::Retrying, reason, now)?;
            schedule(txn, &mut rec, at)?;
        }
    }
    put(txn, &rec)?;
    Ok(Some(rec))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryRefused {
    NotFound,
    /// Waiting or running already; nothing to do.
    Pending(Status),
    /// Succeeded (or ended without effect): needs `force`.
    NeedsForce(Status),
    /// A duplicate is retried through its original.
    Duplicate(u64),
    /// Nothing to run: a refused webhook or a dry run keeps no input.
    NoInput,
}

/// Manual retry: back to `queued`, history kept, resumes at the first unfinished step.
/// `force` re-runs a finished exchange from its first step.
pub fn manual_retry(
    txn: &Tx<'_>,
    id: u64,
    force: bool,
    by: &str,
    now: Millis,
) -> Result<Result<ExchangeRecord, RetryRefused>, StoreError> {
    let Some(mut rec) = get(txn, id)? else {
        return Ok(Err(RetryRefused::NotFound));
    };
    let finished = matches!(
        rec.status,
        Status::Succeeded | Status::Skipped | Status::DryRun
    );
    match rec.status {
        s if s.is_pending() => return Ok(Err(RetryRefused::Pending(s))),
        Status::Duplicate => return Ok(Err(RetryRefused::Duplicate(rec.original_id.unwrap_or(0)))),
        s if finished && !force => return Ok(Err(RetryRefused::NeedsForce(s))),
        _ => {}
    }
    if txn.work()?.get(id)?.is_none() {
        return Ok(Err(RetryRefused::NoInput));
    }
    if finished {
        rec.steps.iter_mut().for_each(|s| s.done_at = None);
        let mut work = get_work(txn, id)?;
        work.outputs.clear();
        put_work(txn, id, &work)?;
    }
    let action = if force { "retry (forced)" } else { "retry" };
    append(
        txn,
        &mut rec,
        now,
        EventKind::Manual {
            action: action.into(),
            by: by.into(),
        },
    )?;
    change_status(txn, &mut rec, Status::Queued, None, now)?;
    schedule(txn, &mut rec, now)?;
    put(txn, &rec)?;
    Ok(Ok(rec))
}

/// Ids of exchanges in `statuses` (of `flow`, if given) created in `[since, until)`.
pub fn select_for_retry(
    txn: &Tx<'_>,
    flow: Option<&str>,
    statuses: &[Status],
    since: Millis,
    until: Millis,
) -> Result<Vec<u64>, StoreError> {
    let (lo, hi) = (id_floor_for(since), id_floor_for(until));
    let flows = match flow {
        Some(f) => vec![f.to_owned()],
        None => txn.known_flows()?,
    };
    let mut ids = Vec::new();
    for flow in &flows {
        let table = txn.by_flow_status()?;
        for status in statuses {
            let code = status.code();
            for e in table.range((flow.as_str(), code, lo)..(flow.as_str(), code, hi))? {
                ids.push(e?.0.value().2);
            }
        }
    }
    Ok(ids)
}

pub fn set_cursor(txn: &Tx<'_>, flow: &str, cursor: &str) -> Result<(), StoreError> {
    txn.cursors()?.insert(flow, cursor)?;
    Ok(())
}

/// The error class an intake-time refusal is recorded with.
pub fn input_error(message: Masked, now: Millis) -> ErrorSummary {
    ErrorSummary {
        class: ErrorClass::Input,
        step: None,
        message,
        at: now,
    }
}
