//! Read side: MVCC read transactions that never wait for the writer. Listings walk an index
//! newest first; time ranges are id ranges (ids start with their creation time).

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};

use crate::model::{ErrorClass, Millis, Status, id_floor_for};

use super::StoreError;
use super::records::*;
use super::tables::*;

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub flow: Option<String>,
    pub status: Option<Status>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    /// Lookup hash of an idempotency key (`Store::lookup_hash`).
    pub key_hash: Option<String>,
    /// A request_id, or (hashed) an external_id: `(text, lookup hash of text)`.
    pub q: Option<(String, String)>,
    pub limit: usize,
    /// Continue below this id (the last id of the previous page).
    pub cursor: Option<u64>,
}

#[derive(Debug)]
pub struct Page {
    pub items: Vec<ExchangeRecord>,
    pub next_cursor: Option<u64>,
}

type Ids = Box<dyn Iterator<Item = Result<u64, StoreError>>>;

pub fn list(txn: &ReadTransaction, f: &Filter) -> Result<Page, StoreError> {
    let lo = id_floor_for(f.since.unwrap_or(0));
    let hi = f
        .until
        .map_or(u64::MAX, id_floor_for)
        .min(f.cursor.unwrap_or(u64::MAX));
    let limit = f.limit.clamp(1, 1000);
    let exchanges = txn.open_table(EXCHANGES)?;
    let mut items = Vec::with_capacity(limit);
    for id in candidate_ids(txn, f, lo, hi)? {
        let Some(raw) = exchanges.get(id?)? else {
            continue;
        };
        let rec: ExchangeRecord = decode(raw.value())?;
        if matches(&rec, f) {
            if items.len() == limit {
                let next_cursor = items.last().map(|r: &ExchangeRecord| r.id);
                return Ok(Page { items, next_cursor });
            }
            items.push(rec);
        }
    }
    Ok(Page {
        items,
        next_cursor: None,
    })
}

/// Key and q are matched by their index alone (the record holds them masked).
fn matches(rec: &ExchangeRecord, f: &Filter) -> bool {
    f.flow.as_ref().is_none_or(|flow| &rec.flow == flow) && f.status.is_none_or(|s| rec.status == s)
}

/// Picks the narrowest index for the filter and yields ids newest first in `[lo, hi)`.
fn candidate_ids(txn: &ReadTransaction, f: &Filter, lo: u64, hi: u64) -> Result<Ids, StoreError> {
    if lo >= hi {
        return Ok(Box::new(std::iter::empty()));
    }
    if let Some(key) = &f.key_hash {
        return by_lookup(txn, key, LOOKUP_KEY, lo, hi);
    }
    if let Some((q, q_hash)) = &f.q {
        let mut ids: Vec<u64> =
            by_lookup(txn, q_hash, LOOKUP_EXTERNAL, lo, hi)?.collect::<Result<_, _>>()?;
        ids.extend(by_text(txn, BY_REQUEST, q, lo, hi)?.collect::<Result<Vec<_>, _>>()?);
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        return Ok(Box::new(ids.into_iter().map(Ok)));
    }
    match (&f.flow, f.status) {
        (Some(flow), Some(st)) => {
            let table = txn.open_table(BY_FLOW_STATUS)?;
            let range =
                table.range((flow.as_str(), st.code(), lo)..(flow.as_str(), st.code(), hi))?;
            Ok(Box::new(range.rev().map(|e| Ok(e?.0.value().2))))
        }
        (Some(flow), None) => by_text(txn, BY_FLOW, flow, lo, hi),
        (None, Some(st)) => {
            // Across flows: each flow's status range, merged newest first.
            let table = txn.open_table(BY_FLOW_STATUS)?;
            let mut sources = Vec::new();
            for flow in flows_in(&txn.open_table(COUNTS)?)? {
                let range =
                    table.range((flow.as_str(), st.code(), lo)..(flow.as_str(), st.code(), hi))?;
                let ids: Ids = Box::new(range.rev().map(|e| Ok(e?.0.value().2)));
                sources.push(ids.peekable());
            }
            Ok(merge_newest_first(sources))
        }
        (None, None) => {
            let table = txn.open_table(EXCHANGES)?;
            let range = table.range(lo..hi)?;
            Ok(Box::new(range.rev().map(|e| Ok(e?.0.value()))))
        }
    }
}

/// Merges id streams that are each newest first into one newest-first stream.
fn merge_newest_first(mut sources: Vec<std::iter::Peekable<Ids>>) -> Ids {
    Box::new(std::iter::from_fn(move || {
        let mut best: Option<(usize, u64)> = None;
        for (i, source) in sources.iter_mut().enumerate() {
            match source.peek() {
                Some(Err(_)) => return source.next(),
                Some(Ok(id)) if best.is_none_or(|(_, b)| *id > b) => best = Some((i, *id)),
                _ => {}
            }
        }
        sources.get_mut(best?.0)?.next()
    }))
}

/// The flows in the status counters: every flow that has had an exchange.
pub fn flows_in(
    counts: &impl ReadableTable<(&'static str, u8), u64>,
) -> Result<Vec<String>, StoreError> {
    let mut flows: Vec<String> = Vec::new();
    for e in counts.iter()? {
        let (k, _) = e?;
        let flow = k.value().0;
        if flows.last().is_none_or(|last| last != flow) {
            flows.push(flow.to_owned());
        }
    }
    Ok(flows)
}

fn by_lookup(
    txn: &ReadTransaction,
    hash: &str,
    tag: u8,
    lo: u64,
    hi: u64,
) -> Result<Ids, StoreError> {
    let table = txn.open_table(LOOKUPS)?;
    let range = table.range((hash, tag, lo)..(hash, tag, hi))?;
    Ok(Box::new(range.rev().map(|e| Ok(e?.0.value().2))))
}

/// The exchange that owns idempotency key `hash` (a lookup hash) in `scope`, however old.
pub fn dedup_owner(
    txn: &ReadTransaction,
    scope: &str,
    hash: &str,
) -> Result<Option<u64>, StoreError> {
    let table = txn.open_table(LOOKUPS)?;
    for e in table.range((hash, LOOKUP_OWNER, 0)..=(hash, LOOKUP_OWNER, u64::MAX))? {
        let (k, v) = e?;
        if v.value().0 == scope {
            return Ok(Some(k.value().2));
        }
    }
    Ok(None)
}

fn by_text(
    txn: &ReadTransaction,
    def: redb::TableDefinition<'static, (&'static str, u64), ()>,
    text: &str,
    lo: u64,
    hi: u64,
) -> Result<Ids, StoreError> {
    let table = txn.open_table(def)?;
    let range = table.range((text, lo)..(text, hi))?;
    Ok(Box::new(range.rev().map(|e| Ok(e?.0.value().1))))
}

pub fn exchange(txn: &ReadTransaction, id: u64) -> Result<Option<ExchangeRecord>, StoreError> {
    let table = txn.open_table(EXCHANGES)?;
    let found = table.get(id)?;
    found.map(|v| decode(v.value())).transpose()
}

pub fn work(txn: &ReadTransaction, id: u64) -> Result<Option<WorkState>, StoreError> {
    let table = txn.open_table(WORK)?;
    let found = table.get(id)?;
    found.map(|v| decode(v.value())).transpose()
}

pub fn journal(txn: &ReadTransaction, id: u64) -> Result<Vec<JournalEvent>, StoreError> {
    let table = txn.open_table(JOURNAL)?;
    let mut out = Vec::new();
    for e in table.range((id, 0)..=(id, u32::MAX))? {
        out.push(decode(e?.1.value())?);
    }
    Ok(out)
}

/// Links recorded by one exchange: (system, entity, external key, target id), masked.
pub fn links(txn: &ReadTransaction, id: u64) -> Result<Vec<[String; 4]>, StoreError> {
    let table = txn.open_table(LINKS)?;
    let mut out = Vec::new();
    for e in table.range((id, 0)..=(id, u32::MAX))? {
        let entry = e?;
        let (s, en, k, t) = entry.1.value();
        out.push([s.to_owned(), en.to_owned(), k.to_owned(), t.to_owned()]);
    }
    Ok(out)
}

pub fn idmap(
    txn: &ReadTransaction,
    system: &str,
    entity: &str,
    key: &str,
) -> Result<Option<String>, StoreError> {
    let table = txn.open_table(IDMAP)?;
    Ok(table
        .get((system, entity, key))?
        .map(|v| v.value().to_owned()))
}

pub fn cursor(txn: &ReadTransaction, flow: &str) -> Result<Option<String>, StoreError> {
    let table = txn.open_table(CURSORS)?;
    Ok(table.get(flow)?.map(|v| v.value().to_owned()))
}

/// When the queue's next exchange is due, if any.
pub fn next_due(txn: &ReadTransaction) -> Result<Option<Millis>, StoreError> {
    let table = txn.open_table(DUE)?;
    Ok(table.first()?.map(|(k, _)| k.value().0))
}

#[derive(Clone, Debug, Default)]
pub struct QueueStats {
    pub waiting: u64,
    pub running: u64,
    pub oldest_due: Option<Millis>,
}

pub fn queue_stats(txn: &ReadTransaction) -> Result<QueueStats, StoreError> {
    let due = txn.open_table(DUE)?;
    let running = Status::Running.code();
    let mut running_now = 0;
    for e in txn.open_table(COUNTS)?.iter()? {
        let (k, v) = e?;
        if k.value().1 == running {
            running_now += v.value();
        }
    }
    Ok(QueueStats {
        waiting: due.len()?,
        running: running_now,
        oldest_due: due.first()?.map(|(k, _)| k.value().0),
    })
}

/// Exchanges of `flow` by status now, indexed by `Status::code`.
pub fn counts(txn: &ReadTransaction, flow: &str) -> Result<[u64; 10], StoreError> {
    let table = txn.open_table(COUNTS)?;
    let mut out = [0; 10];
    for e in table.range((flow, 0)..=(flow, u8::MAX))? {
        let (k, v) = e?;
        if let Some(slot) = out.get_mut(usize::from(k.value().1)) {
            *slot = v.value();
        }
    }
    Ok(out)
}

/// Exchanges of `flow` created since `since`, by their status now (hour granularity).
pub fn counts_since(
    txn: &ReadTransaction,
    flow: &str,
    since: Millis,
) -> Result<[u64; 10], StoreError> {
    let table = txn.open_table(HOURLY)?;
    let mut out = [0; 10];
    for e in table.range((flow, since / 3_600_000, 0)..=(flow, u64::MAX, u8::MAX))? {
        let (k, v) = e?;
        if let Some(slot) = out.get_mut(usize::from(k.value().2)) {
            *slot += v.value();
        }
    }
    Ok(out)
}

/// (last success, last error) of a flow as (time, exchange id).
pub fn flow_last(
    txn: &ReadTransaction,
    flow: &str,
) -> Result<[Option<(Millis, u64)>; 2], StoreError> {
    let table = txn.open_table(FLOW_LAST)?;
    Ok([
        table.get((flow, 0))?.map(|v| v.value()),
        table.get((flow, 1))?.map(|v| v.value()),
    ])
}

/// Failed attempts by (flow, class), ever.
pub fn attempt_errors(txn: &ReadTransaction) -> Result<Vec<(String, ErrorClass, u64)>, StoreError> {
    let table = txn.open_table(ATTEMPT_ERRORS)?;
    let mut out = Vec::new();
    for e in table.iter()? {
        let (k, v) = e?;
        let (flow, code) = k.value();
        if let Some(class) = ErrorClass::from_code(code) {
            out.push((flow.to_owned(), class, v.value()));
        }
    }
    Ok(out)
}

/// Error groups (id, group), of one flow or all, most recently seen first.
pub fn error_groups(
    txn: &ReadTransaction,
    flow: Option<&str>,
) -> Result<Vec<(String, ErrorGroup)>, StoreError> {
    let table = txn.open_table(ERROR_GROUPS)?;
    let mut out = Vec::new();
    let rows = match flow {
        Some(f) => table.range((f, "")..=(f, "\u{10FFFF}"))?,
        None => table.range::<(&str, &str)>(..)?,
    };
    for e in rows {
        let (k, v) = e?;
        out.push((k.value().1.to_owned(), decode::<ErrorGroup>(v.value())?));
    }
    out.sort_by_key(|g| std::cmp::Reverse(g.1.last_seen));
    Ok(out)
}

/// The exchanges counted into a group.
pub fn group_members(txn: &ReadTransaction, group: &str) -> Result<Vec<u64>, StoreError> {
    let table = txn.open_table(GROUP_MEMBERS)?;
    let mut out = Vec::new();
    for e in table.range((group, 0)..=(group, u64::MAX))? {
        out.push(e?.0.value().1);
    }
    Ok(out)
}

/// Exchanges of `flow` waiting (queued or retrying) and the creation time of the oldest.
pub fn flow_waiting(
    txn: &ReadTransaction,
    flow: &str,
) -> Result<(u64, Option<Millis>), StoreError> {
    let table = txn.open_table(BY_FLOW_STATUS)?;
    let mut count = 0;
    let mut oldest: Option<Millis> = None;
    for st in [Status::Queued, Status::Retrying] {
        let mut range = table.range((flow, st.code(), 0)..=(flow, st.code(), u64::MAX))?;
        if let Some(first) = range.next() {
            let at = crate::model::id_time(first?.0.value().2);
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
    }
    let counts = txn.open_table(COUNTS)?;
    for st in [Status::Queued, Status::Retrying, Status::Running] {
        count += counts
            .get((flow, st.code()))?
            .map(|v| v.value())
            .unwrap_or(0);
    }
    Ok((count, oldest))
}

/// Exchanges created per hour over the last `hours` hours, oldest first.
pub fn hourly_totals(
    txn: &ReadTransaction,
    flow: &str,
    now: Millis,
    hours: u64,
) -> Result<Vec<u64>, StoreError> {
    let table = txn.open_table(HOURLY)?;
    let last = now / 3_600_000;
    let first = last.saturating_sub(hours - 1);
    let mut out = vec![0; usize::try_from(hours).unwrap_or(0)];
    for e in table.range((flow, first, 0)..=(flow, last, u8::MAX))? {
        let (k, v) = e?;
        if let Some(slot) = usize::try_from(k.value().1 - first)
            .ok()
            .and_then(|i| out.get_mut(i))
        {
            *slot += v.value();
        }
    }
    Ok(out)
}
