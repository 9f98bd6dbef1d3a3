//! The write transaction of one group commit, as the operations see it.
//!
//! A batch runs hundreds of operations in one redb transaction. Opening a table costs a
//! lookup in redb's table tree and closing it stages its new root, so the hot tables stay
//! open for the whole batch instead of being opened by every operation. Status counters
//! (the same few keys bumped by every exchange) and the id sequence are summed in memory
//! and written once, just before the commit.

use std::cell::{Cell, RefCell, RefMut};

use redb::{
    Key, ReadableTable, Table, TableDefinition, TableError, TableHandle, Value, WriteTransaction,
};

use super::StoreError;
use super::cipher::{LookupKey, MasterKey};
use super::tables::*;

/// (flow, status code) of `COUNTS`.
type CountKey = (String, u8);
/// (flow, creation hour, status code) of `HOURLY`.
type HourKey = (String, u64, u8);

/// A write transaction of the group commit, with the keys that seal work copies and hash
/// lookups.
pub struct Tx<'a> {
    pub txn: &'a WriteTransaction,
    pub key: &'a MasterKey,
    pub lookup: &'a LookupKey,
    open: OpenTables<'a>,
    counts: RefCell<Vec<(CountKey, i64)>>,
    hourly: RefCell<Vec<(HourKey, i64)>>,
    /// `(last id handed out, whether it changed)`, read from `META` on first use.
    last_id: Cell<Option<(u64, bool)>>,
}

impl std::ops::Deref for Tx<'_> {
    type Target = WriteTransaction;

    fn deref(&self) -> &WriteTransaction {
        self.txn
    }
}

macro_rules! cached_tables {
    ($($field:ident: $def:ident => $k:ty, $v:ty;)*) => {
        #[derive(Default)]
        struct OpenTables<'a> {
            $($field: RefCell<Option<Table<'a, $k, $v>>>,)*
        }

        impl OpenTables<'_> {
            /// Closes the cached handle of table `name`, so that it can be opened directly.
            /// A handle in use stays, and the direct open then fails with redb's clear
            /// "already open" error rather than a panic.
            fn evict(&self, name: &str) {
                $(
                    if name == $def.name() {
                        if let Ok(mut slot) = self.$field.try_borrow_mut() {
                            *slot = None;
                        }
                    }
                )*
            }
        }

        impl<'a> Tx<'a> {
            $(
                #[doc = concat!("The `", stringify!($def), "` table, open for the whole batch.")]
                pub fn $field(&self) -> Result<RefMut<'_, Table<'a, $k, $v>>, StoreError> {
                    self.cached(&self.open.$field, $def)
                }
            )*
        }
    };
}

cached_tables! {
    meta: META => &'static str, &'static [u8];
    exchanges: EXCHANGES => u64, &'static [u8];
    work: WORK => u64, &'static [u8];
    journal: JOURNAL => (u64, u32), &'static [u8];
    due: DUE => (u64, u64), ();
    lookups: LOOKUPS => (&'static str, u8, u64), (&'static str, u64);
    idmap: IDMAP => (&'static str, &'static str, &'static str), &'static str;
    links: LINKS => (u64, u32), (&'static str, &'static str, &'static str, &'static str);
    by_flow: BY_FLOW => (&'static str, u64), ();
    by_flow_status: BY_FLOW_STATUS => (&'static str, u8, u64), ();
    by_request: BY_REQUEST => (&'static str, u64), ();
    attempt_errors: ATTEMPT_ERRORS => (&'static str, u8), u64;
    flow_last: FLOW_LAST => (&'static str, u8), (u64, u64);
    cursors: CURSORS => &'static str, &'static str;
    error_groups: ERROR_GROUPS => (&'static str, &'static str), &'static [u8];
    open_groups: OPEN_GROUPS => (&'static str, &'static str), ();
    group_members: GROUP_MEMBERS => (&'static str, u64), ();
}

impl<'a> Tx<'a> {
    pub fn new(txn: &'a WriteTransaction, key: &'a MasterKey, lookup: &'a LookupKey) -> Tx<'a> {
        Tx {
            txn,
            key,
            lookup,
            open: OpenTables::default(),
            counts: RefCell::default(),
            hourly: RefCell::default(),
            last_id: Cell::new(None),
        }
    }

    fn cached<'s, K: Key + 'static, V: Value + 'static>(
        &'s self,
        slot: &'s RefCell<Option<Table<'a, K, V>>>,
        def: TableDefinition<'_, K, V>,
    ) -> Result<RefMut<'s, Table<'a, K, V>>, StoreError> {
        let mut guard = slot
            .try_borrow_mut()
            .map_err(|_| StoreError::NotCommitted(format!("table {} used twice", def.name())))?;
        if guard.is_none() {
            *guard = Some(self.txn.open_table(def)?);
        }
        RefMut::filter_map(guard, Option::as_mut)
            .map_err(|_| StoreError::NotCommitted(format!("table {} did not open", def.name())))
    }

    /// Opens a table directly (for tables that are not cached); a cached handle of the
    /// same table is closed first, since redb allows one open handle per table.
    pub fn open_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<'_, K, V>,
    ) -> Result<Table<'a, K, V>, TableError> {
        self.open.evict(def.name());
        self.txn.open_table(def)
    }

    /// Adds `delta` to the number of exchanges of `flow` in status `code` now, and to
    /// those created in `hour` that are in that status.
    pub fn count(&self, flow: &str, hour: u64, code: u8, delta: i64) {
        let mut counts = self.counts.borrow_mut();
        match counts
            .iter_mut()
            .find(|((f, c), _)| *c == code && f == flow)
        {
            Some((_, d)) => *d += delta,
            None => counts.push(((flow.to_owned(), code), delta)),
        }
        let mut hourly = self.hourly.borrow_mut();
        match hourly
            .iter_mut()
            .find(|((f, h, c), _)| *c == code && *h == hour && f == flow)
        {
            Some((_, d)) => *d += delta,
            None => hourly.push(((flow.to_owned(), hour, code), delta)),
        }
    }

    /// Every flow that has exchanges: the counters' flows, with this batch's new ones.
    pub fn known_flows(&self) -> Result<Vec<String>, StoreError> {
        let mut flows = super::query::flows_in(&self.open_table(COUNTS)?)?;
        flows.extend(self.counts.borrow().iter().map(|((f, _), _)| f.clone()));
        flows.sort_unstable();
        flows.dedup();
        Ok(flows)
    }

    /// The next exchange id: ids grow with time (`created_ms * IDS_PER_MS + n`) and never
    /// repeat, even if the clock steps back.
    pub fn next_id(&self, floor: u64) -> Result<u64, StoreError> {
        let last = match self.last_id.get() {
            Some((last, _)) => last,
            None => match self.meta()?.get("last_id")? {
                Some(v) => u64::from_le_bytes(v.value().try_into().unwrap_or([0; 8])),
                None => 0,
            },
        };
        let id = (last + 1).max(floor);
        self.last_id.set(Some((id, true)));
        Ok(id)
    }

    /// Writes what was summed in memory and closes every table, so that the transaction
    /// can commit.
    pub fn finish(self) -> Result<(), StoreError> {
        if let Some((id, true)) = self.last_id.get() {
            self.meta()?
                .insert("last_id", id.to_le_bytes().as_slice())?;
        }
        let counts = self.counts.take();
        if !counts.is_empty() {
            let mut table = self.open_table(COUNTS)?;
            for ((flow, code), delta) in counts.iter().filter(|(_, d)| *d != 0) {
                let now = table.get((flow.as_str(), *code))?.map_or(0, |v| v.value());
                table.insert((flow.as_str(), *code), now.saturating_add_signed(*delta))?;
            }
        }
        let hourly = self.hourly.take();
        if !hourly.is_empty() {
            let mut table = self.open_table(HOURLY)?;
            for ((flow, hour, code), delta) in hourly.iter().filter(|(_, d)| *d != 0) {
                let key = (flow.as_str(), *hour, *code);
                let now = table.get(key)?.map_or(0, |v| v.value());
                table.insert(key, now.saturating_add_signed(*delta))?;
            }
        }
        Ok(())
    }
}
