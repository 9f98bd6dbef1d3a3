//! Schema versions. Version 1 is the first layout; each later version adds one
//! `migrate_to_vN` step applied in the same transaction as its version bump.

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use super::StoreError;
use super::records::{ErrorGroup, decode};
use super::tables::*;

pub const SCHEMA_VERSION: u32 = 3;

type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` brings a file from version `i` to `i + 1`.
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] =
    [migrate_to_v1, migrate_to_v2, migrate_to_v3];

pub fn run(db: &Database) -> Result<(), StoreError> {
    loop {
        let txn = db.begin_write()?;
        let found = read_version(&txn)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        MIGRATIONS[found as usize](&txn)?;
        txn.open_table(META)?
            .insert("schema_version", (found + 1).to_le_bytes().as_slice())?;
        txn.commit()?;
    }
}

fn read_version(txn: &WriteTransaction) -> Result<u32, StoreError> {
    let meta = txn.open_table(META)?;
    let Some(bytes) = meta.get("schema_version")? else {
        return Ok(0);
    };
    let raw: [u8; 4] = bytes.value().try_into().unwrap_or([0xff; 4]);
    Ok(u32::from_le_bytes(raw))
}

/// Tables of schemas 1 and 2 that schema 3 folded into `LOOKUPS`.
const DEDUP: TableDefinition<'_, (&str, &str), (u64, u64)> = TableDefinition::new("dedup");
const BY_EXTERNAL: TableDefinition<'_, (&str, u64), ()> = TableDefinition::new("by_external");
const BY_KEY: TableDefinition<'_, (&str, u64), ()> = TableDefinition::new("by_key");
/// Leases of schemas 1 and 2: the `running` status is the lease since schema 3.
const LEASES: TableDefinition<'_, u64, u64> = TableDefinition::new("leases");
/// Status index across flows of schemas 1 and 2: since schema 3 the flows' status ranges
/// are merged instead.
const BY_STATUS: TableDefinition<'_, (u8, u64), ()> = TableDefinition::new("by_status");

/// Creates every table so that readers never meet a missing one.
fn migrate_to_v1(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(EXCHANGES)?;
    txn.open_table(WORK)?;
    txn.open_table(JOURNAL)?;
    txn.open_table(DUE)?;
    txn.open_table(LEASES)?;
    txn.open_table(DEDUP)?;
    txn.open_table(IDMAP)?;
    txn.open_table(LINKS)?;
    txn.open_table(BY_FLOW)?;
    txn.open_table(BY_FLOW_STATUS)?;
    txn.open_table(BY_EXTERNAL)?;
    txn.open_table(BY_REQUEST)?;
    txn.open_table(BY_KEY)?;
    txn.open_table(COUNTS)?;
    txn.open_table(HOURLY)?;
    txn.open_table(ATTEMPT_ERRORS)?;
    txn.open_table(FLOW_LAST)?;
    txn.open_table(CURSORS)?;
    txn.open_table(SECRETS)?;
    txn.open_table(ERROR_GROUPS)?;
    txn.open_table(GROUP_MEMBERS)?;
    Ok(())
}

/// Folds dedup owners and the key and external-id indexes into `LOOKUPS`, and drops the
/// leases (a `running` exchange is leased by the one process that owns the file) and the
/// status index across flows.
fn migrate_to_v3(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut lookups = txn.open_table(LOOKUPS)?;
    {
        let dedup = txn.open_table(DEDUP)?;
        for e in dedup.iter()? {
            let (k, v) = e?;
            let (scope, hash) = k.value();
            let (original, first_seen) = v.value();
            lookups.insert((hash, LOOKUP_OWNER, original), (scope, first_seen))?;
        }
    }
    for (def, tag) in [(BY_KEY, LOOKUP_KEY), (BY_EXTERNAL, LOOKUP_EXTERNAL)] {
        let table = txn.open_table(def)?;
        for e in table.iter()? {
            let (k, _) = e?;
            let (hash, id) = k.value();
            lookups.insert((hash, tag, id), ("", 0))?;
        }
    }
    drop(lookups);
    txn.delete_table(DEDUP)?;
    txn.delete_table(BY_KEY)?;
    txn.delete_table(BY_EXTERNAL)?;
    txn.delete_table(LEASES)?;
    txn.delete_table(BY_STATUS)?;
    Ok(())
}

/// Indexes the open error groups, so that a success closes them without reading every
/// group the flow ever had.
fn migrate_to_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    let groups = txn.open_table(ERROR_GROUPS)?;
    let mut open = txn.open_table(OPEN_GROUPS)?;
    for entry in groups.iter()? {
        let (key, value) = entry?;
        let group: ErrorGroup = decode(value.value())?;
        if group.open {
            let (flow, id) = key.value();
            open.insert((flow, id), ())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_newer_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("x.redb")).expect("create");
        run(&db).expect("fresh file migrates");
        let txn = db.begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .insert("schema_version", 99u32.to_le_bytes().as_slice())
            .expect("insert");
        txn.commit().expect("commit");
        let err = run(&db).expect_err("newer schema must be refused");
        assert!(err.to_string().contains("newer obmen"), "{err}");
    }

    /// A schema-1 file's open error groups are indexed by the step to schema 2.
    #[test]
    fn v2_indexes_the_open_error_groups() {
        use crate::mask::Masked;
        use crate::model::ErrorClass;
        use crate::store::records::encode;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("x.redb")).expect("create");
        run(&db).expect("fresh file migrates");
        let group = |open: bool| ErrorGroup {
            flow: "f".into(),
            step: None,
            class: ErrorClass::Permanent,
            normalized: "boom".into(),
            sample_message: Masked::fixed("boom"),
            sample_id: 1,
            count: 1,
            first_seen: 1,
            last_seen: 1,
            open,
            announced: false,
        };
        let txn = db.begin_write().expect("write");
        {
            let mut groups = txn.open_table(ERROR_GROUPS).expect("groups");
            for (id, open) in [("g-open", true), ("g-closed", false)] {
                let bytes = encode(&group(open)).expect("encode");
                groups.insert(("f", id), bytes.as_slice()).expect("insert");
            }
            txn.open_table(META)
                .expect("meta")
                .insert("schema_version", 1u32.to_le_bytes().as_slice())
                .expect("version");
        }
        txn.commit().expect("commit");
        run(&db).expect("1 -> 2");
        let read = redb::ReadableDatabase::begin_read(&db).expect("read");
        let open = read.open_table(OPEN_GROUPS).expect("open groups");
        let ids: Vec<String> = open
            .iter()
            .expect("iter")
            .map(|e| e.expect("row").0.value().1.to_owned())
            .collect();
        assert_eq!(ids, vec!["g-open".to_owned()]);
    }

    /// Schema 3 folds a schema-2 file's dedup owners and key/external-id indexes into
    /// `LOOKUPS` and drops the old tables.
    #[test]
    fn v3_folds_dedup_and_the_hash_indexes_into_lookups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("x.redb")).expect("create");
        run(&db).expect("fresh file migrates");
        let txn = db.begin_write().expect("write");
        {
            txn.open_table(DEDUP)
                .expect("dedup")
                .insert(("orders", "h1"), (7, 1_000))
                .expect("owner");
            txn.open_table(BY_KEY)
                .expect("by key")
                .insert(("h1", 7), ())
                .expect("key");
            let mut ext = txn.open_table(BY_EXTERNAL).expect("by external");
            ext.insert(("h1", 7), ()).expect("external");
            ext.insert(("h2", 9), ()).expect("external");
            txn.open_table(META)
                .expect("meta")
                .insert("schema_version", 2u32.to_le_bytes().as_slice())
                .expect("version");
        }
        txn.commit().expect("commit");
        run(&db).expect("2 -> 3");
        let read = redb::ReadableDatabase::begin_read(&db).expect("read");
        let lookups = read.open_table(LOOKUPS).expect("lookups");
        type Row = ((String, u8, u64), (String, u64));
        let rows: Vec<Row> = lookups
            .iter()
            .expect("iter")
            .map(|e| {
                let (k, v) = e.expect("row");
                let (h, t, id) = k.value();
                let (scope, at) = v.value();
                ((h.to_owned(), t, id), (scope.to_owned(), at))
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (("h1".into(), LOOKUP_OWNER, 7), ("orders".into(), 1_000)),
                (("h1".into(), LOOKUP_KEY, 7), (String::new(), 0)),
                (("h1".into(), LOOKUP_EXTERNAL, 7), (String::new(), 0)),
                (("h2".into(), LOOKUP_EXTERNAL, 9), (String::new(), 0)),
            ]
        );
        let names: Vec<String> = read
            .list_tables()
            .expect("tables")
            .map(|t| redb::TableHandle::name(&t).to_owned())
            .collect();
        for gone in ["dedup", "by_key", "by_external", "leases", "by_status"] {
            assert!(
                !names.iter().any(|n| n == gone),
                "{gone} dropped: {names:?}"
            );
        }
    }
}
