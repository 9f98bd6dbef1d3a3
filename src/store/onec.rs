//! The 1C CommerceML exchange's own rows: sessions (cookie -> session), how far each
//! uploaded file (or archive) has been imported, the outbox of orders waiting for 1C's
//! `mode=query`, and the product Ids of full catalogs for `mode=deactivate`. Sessions and import states are opaque postcard bytes made by
//! `connectors::onec::commerceml::session`; outbox orders rest sealed (they hold customers'
//! personal data) like work copies.

use std::ops::ControlFlow;

use redb::{AccessGuard, ReadTransaction, ReadableTable, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

use crate::model::Millis;

use super::records::{EventKind, decode, encode};
use super::tables::{ONEC_IMPORTS, ONEC_OUTBOX, ONEC_SESSIONS};
use super::{StoreError, Tx, ops};

/// Product Ids of full catalogs. key = (scope, item `Ид`), scope = [`flow_scope`] (the
/// flow's last full catalog) or [`session_scope`] (a session's full catalog files so far).
/// Only the Ids: a 100k catalog is a few MB, read in ranges, never whole.
const ONEC_CATALOG_IDS: TableDefinition<'_, (&str, &str), ()> =
    TableDefinition::new("onec_catalog_ids");
/// key = session id, value = postcard `commerceml::snapshot::FullCatalogs`.
const ONEC_FULL_CATALOGS: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("onec_full_catalogs");

/// The Ids of `flow`'s last full catalog `catalog`.
pub fn flow_scope(flow: &str, catalog: &str) -> String {
    format!("f\u{1f}{flow}\u{1f}{catalog}")
}

/// The Ids a session's full catalog files named so far.
pub fn session_scope(session: &str, catalog: &str) -> String {
    format!("s\u{1f}{session}\u{1f}{catalog}")
}

/// A table that was never written reads as empty.
fn missing_is_empty<T>(r: Result<T, TableError>) -> Result<Option<T>, StoreError> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn read_bytes<K: redb::Key + 'static>(
    read: &ReadTransaction,
    table: TableDefinition<'_, K, &'static [u8]>,
    key: K::SelfType<'_>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(t) = missing_is_empty(read.open_table(table))? else {
        return Ok(None);
    };
    Ok(t.get(key)?.map(|v| v.value().to_vec()))
}

/// The keys (first part, second part) a [`walk`] covers by their first part.
#[derive(Clone, Copy)]
enum First<'a> {
    Is(&'a str),
    StartsWith(&'a str),
}

/// Visits the rows of `table` under `first`, from second part `from` on, in key order,
/// until `visit` breaks; returns whether the rows under `first` ran out.
fn walk<V: redb::Value + 'static>(
    table: &impl ReadableTable<(&'static str, &'static str), V>,
    first: First<'_>,
    from: &str,
    mut visit: impl FnMut(&str, &str, AccessGuard<'_, V>) -> Result<ControlFlow<()>, StoreError>,
) -> Result<bool, StoreError> {
    let start = match first {
        First::Is(s) | First::StartsWith(s) => s,
    };
    for row in table.range((start, from)..)? {
        let (k, v) = row?;
        let (a, b) = k.value();
        let under = match first {
            First::Is(s) => a == s,
            First::StartsWith(p) => a.starts_with(p),
        };
        if !under {
            return Ok(true);
        }
        if visit(a, b, v)?.is_break() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The session a cookie (by its lookup hash) opened.
pub fn session(read: &ReadTransaction, cookie_hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
    read_bytes(read, ONEC_SESSIONS, cookie_hash)
}

pub fn put_session(txn: &Tx<'_>, cookie_hash: &str, session: &[u8]) -> Result<(), StoreError> {
    txn.open_table(ONEC_SESSIONS)?
        .insert(cookie_hash, session)?;
    Ok(())
}

/// Removes the sessions `expired` says are over (with their import states and full-catalog
/// Ids); returns the (flow, session id) `expired` named for each (their work dirs).
pub fn sweep_sessions(
    txn: &Tx<'_>,
    expired: impl Fn(&[u8]) -> Option<(String, String)>,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut gone = Vec::new();
    {
        let mut table = txn.open_table(ONEC_SESSIONS)?;
        let mut keys = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            if let Some(named) = expired(v.value()) {
                keys.push(k.value().to_owned());
                gone.push(named);
            }
        }
        for k in keys {
            table.remove(k.as_str())?;
        }
    }
    for (_, id) in &gone {
        clear_imports(txn, id)?;
    }
    Ok(gone)
}

pub fn import_state(
    read: &ReadTransaction,
    session: &str,
    file: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    read_bytes(read, ONEC_IMPORTS, (session, file))
}

/// The import state inside a write: the compare half of compare-and-set.
pub fn import_state_in(
    txn: &Tx<'_>,
    session: &str,
    file: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let table = txn.open_table(ONEC_IMPORTS)?;
    let found = table.get((session, file))?;
    Ok(found.map(|v| v.value().to_vec()))
}

pub fn put_import_state(
    txn: &Tx<'_>,
    session: &str,
    file: &str,
    state: &[u8],
) -> Result<(), StoreError> {
    txn.open_table(ONEC_IMPORTS)?
        .insert((session, file), state)?;
    Ok(())
}

/// Forgets one file's import (an older module's order exchange uploads the same name again
/// after it was read: new content).
pub fn remove_import_state(txn: &Tx<'_>, session: &str, file: &str) -> Result<(), StoreError> {
    txn.open_table(ONEC_IMPORTS)?.remove((session, file))?;
    Ok(())
}

/// Every import state of a session: (file, or `zip:<archive>`, and its bytes).
pub fn imports_of(
    read: &ReadTransaction,
    session: &str,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let Some(table) = missing_is_empty(read.open_table(ONEC_IMPORTS))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    walk(&table, First::Is(session), "", |_, f, v| {
        out.push((f.to_owned(), v.value().to_vec()));
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// Forgets every file of a session (`mode=init` starts over), and its full catalogs.
pub fn clear_imports(txn: &Tx<'_>, session: &str) -> Result<(), StoreError> {
    txn.open_table(ONEC_FULL_CATALOGS)?.remove(session)?;
    remove_scopes(txn, &session_scope(session, ""))?;
    let mut table = txn.open_table(ONEC_IMPORTS)?;
    let mut keys = Vec::new();
    walk(&table, First::Is(session), "", |_, f, _| {
        keys.push(f.to_owned());
        Ok(ControlFlow::Continue(()))
    })?;
    for f in keys {
        table.remove((session, f.as_str()))?;
    }
    Ok(())
}

/// Every Id under the scopes that start with `prefix`.
fn remove_scopes(txn: &Tx<'_>, prefix: &str) -> Result<(), StoreError> {
    let mut table = txn.open_table(ONEC_CATALOG_IDS)?;
    let mut keys = Vec::new();
    walk(&table, First::StartsWith(prefix), "", |scope, id, _| {
        keys.push((scope.to_owned(), id.to_owned()));
        Ok(ControlFlow::Continue(()))
    })?;
    for (scope, id) in keys {
        table.remove((scope.as_str(), id.as_str()))?;
    }
    Ok(())
}

pub fn full_catalogs(read: &ReadTransaction, session: &str) -> Result<Option<Vec<u8>>, StoreError> {
    read_bytes(read, ONEC_FULL_CATALOGS, session)
}

/// The session's full catalogs inside a write (compare-and-set and updates).
pub fn full_catalogs_in(txn: &Tx<'_>, session: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let table = txn.open_table(ONEC_FULL_CATALOGS)?;
    let found = table.get(session)?;
    Ok(found.map(|v| v.value().to_vec()))
}

pub fn put_full_catalogs(txn: &Tx<'_>, session: &str, bytes: &[u8]) -> Result<(), StoreError> {
    txn.open_table(ONEC_FULL_CATALOGS)?.insert(session, bytes)?;
    Ok(())
}

/// Adds Ids to a scope; returns how many were not there yet.
pub fn keep_ids<'a>(
    txn: &Tx<'_>,
    scope: &str,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<u64, StoreError> {
    let mut table = txn.open_table(ONEC_CATALOG_IDS)?;
    let mut new = 0;
    for id in ids {
        if table.insert((scope, id), ())?.is_none() {
            new += 1;
        }
    }
    Ok(new)
}

pub fn remove_ids<'a>(
    txn: &Tx<'_>,
    scope: &str,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(ONEC_CATALOG_IDS)?;
    for id in ids {
        table.remove((scope, id))?;
    }
    Ok(())
}

/// One bounded look at a flow's catalog for `mode=deactivate`.
#[derive(Debug, Default, PartialEq)]
pub struct Absent {
    /// Ids of `kept` after the cursor that `current` lacks (at most `max`).
    pub ids: Vec<String>,
    /// The last Id looked at: where the next look goes on.
    pub cursor: Option<String>,
    /// `kept` has nothing after `cursor`.
    pub end: bool,
}

/// Looks at up to `scan` Ids of scope `kept` after `cursor` and returns those scope
/// `current` does not have (stopping early at `max` of them).
pub fn absent_ids(
    read: &ReadTransaction,
    kept: &str,
    current: &str,
    cursor: Option<&str>,
    scan: usize,
    max: usize,
) -> Result<Absent, StoreError> {
    let mut out = Absent {
        cursor: cursor.map(str::to_owned),
        ..Absent::default()
    };
    let Some(table) = missing_is_empty(read.open_table(ONEC_CATALOG_IDS))? else {
        out.end = true;
        return Ok(out);
    };
    let mut looked = 0;
    let from = cursor.unwrap_or("");
    let end = walk(&table, First::Is(kept), from, |_, id, _| {
        if cursor == Some(id) {
            return Ok(ControlFlow::Continue(()));
        }
        if looked == scan || out.ids.len() == max {
            return Ok(ControlFlow::Break(()));
        }
        looked += 1;
        if table.get((current, id))?.is_none() {
            out.ids.push(id.to_owned());
        }
        out.cursor = Some(id.to_owned());
        Ok(ControlFlow::Continue(()))
    })?;
    out.end = end;
    Ok(out)
}

/// The session's Ids become the flow's catalog (`into` already holds only Ids that `from`
/// has, once every absent one was removed), and leave the session.
pub fn adopt_ids(txn: &Tx<'_>, from: &str, into: &str) -> Result<u64, StoreError> {
    let mut table = txn.open_table(ONEC_CATALOG_IDS)?;
    let mut ids = Vec::new();
    walk(&table, First::Is(from), "", |_, id, _| {
        ids.push(id.to_owned());
        Ok(ControlFlow::Continue(()))
    })?;
    for id in &ids {
        table.insert((into, id.as_str()), ())?;
        table.remove((from, id.as_str()))?;
    }
    Ok(ids.len() as u64)
}

/// Ids in a scope.
#[cfg(test)]
fn count_ids(read: &ReadTransaction, scope: &str) -> Result<u64, StoreError> {
    let Some(table) = missing_is_empty(read.open_table(ONEC_CATALOG_IDS))? else {
        return Ok(0);
    };
    let mut n = 0;
    walk(&table, First::Is(scope), "", |_, _, _| {
        n += 1;
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(n)
}

/// One order waiting for 1C. `seq` tells a replaced order from the one 1C was given.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct OutboxRow {
    exchange_id: u64,
    seq: u64,
    queued_at: Millis,
    sealed: Vec<u8>,
}

/// An order as `mode=query` hands it out.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub order_id: String,
    pub seq: u64,
    pub exchange_id: u64,
    pub order: String,
}

fn outbox_context(flow: &str, order_id: &str) -> Vec<u8> {
    format!("onec-outbox:{flow}:{order_id}").into_bytes()
}

/// Queues (or replaces) an order for the sale flow `flow`. `seq` grows with every write so
/// that a `mode=success` never removes a newer version than the one 1C received.
pub fn put_outbox(
    txn: &Tx<'_>,
    flow: &str,
    order_id: &str,
    exchange_id: u64,
    order_json: &str,
    now: Millis,
) -> Result<u64, StoreError> {
    let mut table = txn.open_table(ONEC_OUTBOX)?;
    let last = match table.get((flow, order_id))? {
        Some(v) => decode::<OutboxRow>(v.value())?.seq,
        None => 0,
    };
    let seq = last.max(now.saturating_sub(1)) + 1;
    let row = OutboxRow {
        exchange_id,
        seq,
        queued_at: now,
        sealed: txn
            .key
            .seal(&outbox_context(flow, order_id), order_json.as_bytes()),
    };
    table.insert((flow, order_id), encode(&row)?.as_slice())?;
    Ok(seq)
}

/// Every order waiting for `flow`, oldest first (opened inside the write that records
/// what this session was given).
pub fn outbox(txn: &Tx<'_>, flow: &str) -> Result<Vec<Outgoing>, StoreError> {
    let table = txn.open_table(ONEC_OUTBOX)?;
    let mut out = Vec::new();
    walk(&table, First::Is(flow), "", |_, order_id, v| {
        let rec: OutboxRow = decode(v.value())?;
        let plain = txn
            .key
            .open(&outbox_context(flow, order_id), &rec.sealed)
            .ok_or(StoreError::Unseal)?;
        out.push(Outgoing {
            order_id: order_id.to_owned(),
            seq: rec.seq,
            exchange_id: rec.exchange_id,
            order: String::from_utf8_lossy(&plain).into_owned(),
        });
        Ok(ControlFlow::Continue(()))
    })?;
    out.sort_by_key(|o| o.seq);
    Ok(out)
}

/// Orders waiting for `flow`, read-only (for the status of a flow, tests).
pub fn outbox_len(read: &ReadTransaction, flow: &str) -> Result<usize, StoreError> {
    let Some(table) = missing_is_empty(read.open_table(ONEC_OUTBOX))? else {
        return Ok(0);
    };
    let mut n = 0;
    walk(&table, First::Is(flow), "", |_, _, _| {
        n += 1;
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(n)
}

/// `mode=success`: the orders 1C received (`given`: order id and seq) leave the outbox,
/// unless replaced since, and each one's exchange gets a journal event saying so.
pub fn delivered(
    txn: &Tx<'_>,
    flow: &str,
    given: &[(String, u64)],
    by: &str,
    now: Millis,
) -> Result<usize, StoreError> {
    let mut done = Vec::new();
    {
        let mut table = txn.open_table(ONEC_OUTBOX)?;
        for (order_id, seq) in given {
            let row = match table.get((flow, order_id.as_str()))? {
                Some(v) => decode::<OutboxRow>(v.value())?,
                None => continue,
            };
            if row.seq == *seq {
                table.remove((flow, order_id.as_str()))?;
                done.push((row.exchange_id, order_id.clone()));
            }
        }
    }
    for (exchange_id, order_id) in &done {
        let Some(mut rec) = ops::get(txn, *exchange_id)? else {
            continue;
        };
        let detail = format!(
            "order {order_id} was fetched by mode=query of flow `{flow}` and confirmed by mode=success ({by})"
        );
        let event = EventKind::Delivered {
            to: "1C".to_owned(),
            detail,
        };
        ops::append(txn, &mut rec, now, event)?;
        ops::put(txn, &rec)?;
    }
    Ok(done.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MasterKey, Store};

    /// An expired session leaves no import state and no kept Ids behind.
    #[tokio::test]
    async fn a_swept_session_takes_its_rows_along() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), MasterKey::generate()).expect("open");
        store
            .write(|txn| {
                put_session(txn, "cookie-hash", b"old")?;
                put_session(txn, "other-hash", b"new")?;
                put_import_state(txn, "sid1", "import.xml", b"state")?;
                put_import_state(txn, "sid2", "import.xml", b"state")?;
                put_full_catalogs(txn, "sid1", b"cats")?;
                keep_ids(txn, &session_scope("sid1", "c"), ["a", "b"])?;
                keep_ids(txn, &session_scope("sid2", "c"), ["a"])?;
                keep_ids(txn, &flow_scope("cat", "c"), ["a"])?;
                Ok(())
            })
            .await
            .expect("write");
        let gone = store
            .write(|txn| {
                sweep_sessions(txn, |v| {
                    (v == b"old").then(|| ("cat".to_owned(), "sid1".to_owned()))
                })
            })
            .await
            .expect("sweep");
        assert_eq!(gone, vec![("cat".to_owned(), "sid1".to_owned())]);
        let read = store.read().expect("read");
        assert_eq!(
            import_state(&read, "sid1", "import.xml").expect("read"),
            None
        );
        assert!(
            import_state(&read, "sid2", "import.xml")
                .expect("read")
                .is_some()
        );
        assert_eq!(full_catalogs(&read, "sid1").expect("read"), None);
        assert_eq!(count_ids(&read, &session_scope("sid1", "c")).expect("n"), 0);
        assert_eq!(count_ids(&read, &session_scope("sid2", "c")).expect("n"), 1);
        assert_eq!(count_ids(&read, &flow_scope("cat", "c")).expect("n"), 1);
    }

    /// A 100k catalog: the session's Ids are kept in batches, the absent ones found in
    /// bounded looks, and the flow's catalog becomes the session's.
    #[tokio::test]
    async fn a_catalog_of_100k_ids_is_compared_in_bounded_looks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), MasterKey::generate()).expect("open");
        let (kept, current) = (flow_scope("cat", "c1"), session_scope("s1", "c1"));
        let id = |i: u32| format!("{i:08}-0000-0000-0000-000000000000");
        for chunk in (0..100_000u32).collect::<Vec<_>>().chunks(5000) {
            let ids: Vec<String> = chunk.iter().map(|i| id(*i)).collect();
            let (k, c) = (kept.clone(), current.clone());
            store
                .write(move |txn| {
                    keep_ids(txn, &k, ids.iter().map(String::as_str))?;
                    // The new catalog lacks every 1000th product.
                    let still = ids.iter().enumerate().filter(|(n, _)| n % 1000 != 7);
                    keep_ids(txn, &c, still.map(|(_, s)| s.as_str()))
                })
                .await
                .expect("keep");
        }
        let mut cursor: Option<String> = None;
        let mut absent = Vec::new();
        let mut looks = 0;
        loop {
            let read = store.read().expect("read");
            let look =
                absent_ids(&read, &kept, &current, cursor.as_deref(), 5000, 30).expect("look");
            drop(read);
            looks += 1;
            let (k, ids) = (kept.clone(), look.ids.clone());
            store
                .write(move |txn| remove_ids(txn, &k, ids.iter().map(String::as_str)))
                .await
                .expect("remove");
            absent.extend(look.ids);
            cursor = look.cursor;
            if look.end {
                break;
            }
        }
        assert_eq!(absent.len(), 100);
        assert!(
            absent
                .iter()
                .all(|a| a.starts_with("000") && a[..8].ends_with('7'))
        );
        assert!(looks >= 20, "each look is bounded: {looks}");
        let (k, c) = (kept.clone(), current.clone());
        let moved = store
            .write(move |txn| adopt_ids(txn, &c, &k))
            .await
            .expect("adopt");
        assert_eq!(moved, 99_900);
        let read = store.read().expect("read");
        assert_eq!(count_ids(&read, &kept).expect("count"), 99_900);
        assert_eq!(count_ids(&read, &current).expect("count"), 0);
        // The next session's catalog is compared with the adopted one.
        drop(read);
        let next = session_scope("s2", "c1");
        let (n, all) = (next.clone(), (0..100_000u32).map(id).collect::<Vec<_>>());
        store
            .write(move |txn| keep_ids(txn, &n, all.iter().map(String::as_str)))
            .await
            .expect("keep");
        let read = store.read().expect("read");
        let look = absent_ids(&read, &kept, &next, None, 200_000, 10).expect("look");
        assert!(look.ids.is_empty() && look.end, "{look:?}");
    }
}
