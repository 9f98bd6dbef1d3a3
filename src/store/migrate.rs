//! Schema versions. Version 1 is the first layout; each later version adds one
//! `migrate_to_vN` step applied in the same transaction as its version bump.

use redb::{Database, ReadableTable, WriteTransaction};

use super::StoreError;
use super::tables::*;

pub const SCHEMA_VERSION: u32 = 1;

type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` brings a file from version `i` to `i + 1`.
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] = [migrate_to_v1];

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
}
