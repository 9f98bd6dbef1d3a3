//! Schema versions. Version 1 is the first layout; each later version adds one
//! `migrate_to_vN` step applied in the same transaction as its version bump.

use redb::{Database, ReadableTable, WriteTransaction};

use super::StoreError;
use super::records::{ErrorGroup, decode};
use super::tables::*;

pub const SCHEMA_VERSION: u32 = 2;

type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` brings a file from version `i` to `i + 1`.
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] = [migrate_to_v1, migrate_to_v2];

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
    txn.open_table(BY_STATUS)?;
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
}
