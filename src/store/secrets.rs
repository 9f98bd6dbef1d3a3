//! The encrypted secret store: names and sealed values in the data file. `serve` reads it
//! once at start (before the config is checked); `obmen secret …` changes it while the
//! server is stopped, since redb lets one process hold the file.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use crate::mask::Secret;
use crate::model::{Millis, now_ms};

use super::cipher::{LookupKey, MasterKey};
use super::records::{SecretRecord, decode, encode};
use super::tables::{META, SECRETS, WORK};
use super::{DATA_FILE, StoreError, Tx, migrate};

const FINGERPRINT: &str = "key_fingerprint";

fn context(name: &str) -> Vec<u8> {
    format!("secret:{name}").into_bytes()
}

/// Records the key's fingerprint in a new file, or refuses a key that is not the file's.
pub fn check_key(txn: &WriteTransaction, key: &MasterKey) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    let mine = key.fingerprint();
    let stored = meta
        .get(FINGERPRINT)?
        .map(|v| String::from_utf8_lossy(v.value()).into_owned());
    match stored {
        Some(file) if file != mine => Err(StoreError::WrongKey { key: mine, file }),
        Some(_) => Ok(()),
        None => {
            meta.insert(FINGERPRINT, mine.as_bytes())?;
            Ok(())
        }
    }
}

const LOOKUP_KEY: &str = "lookup_key";

/// The file's lookup key, created (and sealed under `key`) on first use.
pub fn lookup_key(txn: &WriteTransaction, key: &MasterKey) -> Result<LookupKey, StoreError> {
    let mut meta = txn.open_table(META)?;
    let stored = meta.get(LOOKUP_KEY)?.map(|v| v.value().to_vec());
    if let Some(sealed) = stored {
        let raw = key
            .open(LOOKUP_KEY.as_bytes(), &sealed)
            .ok_or(StoreError::Unseal)?;
        return LookupKey::from_bytes(&raw).ok_or(StoreError::Unseal);
    }
    let fresh = LookupKey::generate();
    meta.insert(
        LOOKUP_KEY,
        key.seal(LOOKUP_KEY.as_bytes(), fresh.bytes()).as_slice(),
    )?;
    Ok(fresh)
}

fn reseal_lookup_key(
    txn: &WriteTransaction,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<usize, StoreError> {
    let mut meta = txn.open_table(META)?;
    let stored = meta.get(LOOKUP_KEY)?.map(|v| v.value().to_vec());
    let Some(sealed) = stored else { return Ok(0) };
    let raw = old
        .open(LOOKUP_KEY.as_bytes(), &sealed)
        .ok_or(StoreError::Unseal)?;
    meta.insert(LOOKUP_KEY, new.seal(LOOKUP_KEY.as_bytes(), &raw).as_slice())?;
    Ok(1)
}

/// Seals `value` under `name` in the secret table within a group-commit write: state a
/// connector must keep across restarts (a rotated OAuth refresh token). Such names hold a
/// `:` (`oauth:bitrix24:<system>`), which `obmen secret set` refuses, so they never clash
/// with an operator's secrets; `obmen secret list` shows them, key rotation re-seals them.
pub fn put(tx: &Tx<'_>, name: &str, value: &str) -> Result<(), StoreError> {
    let record = SecretRecord {
        sealed: tx.key.seal(&context(name), value.as_bytes()),
        set_at: now_ms(),
    };
    tx.open_table(SECRETS)?
        .insert(name, encode(&record)?.as_slice())?;
    Ok(())
}

/// The value [`put`] sealed under `name`, opened, with when it was written.
pub fn get(tx: &Tx<'_>, name: &str) -> Result<Option<(Secret, Millis)>, StoreError> {
    let table = tx.open_table(SECRETS)?;
    let Some(stored) = table.get(name)? else {
        return Ok(None);
    };
    let record: SecretRecord = decode(stored.value())?;
    let plain = tx
        .key
        .open(&context(name), &record.sealed)
        .ok_or(StoreError::Unseal)?;
    Ok(Some((
        Secret::new(String::from_utf8_lossy(&plain).into_owned()),
        record.set_at,
    )))
}

/// Whether the file already belongs to some key.
pub fn has_key(txn: &WriteTransaction) -> Result<bool, StoreError> {
    Ok(txn.open_table(META)?.get(FINGERPRINT)?.is_some())
}

/// The data file opened by a command while no server runs: no writer thread, each call
/// one durable transaction.
pub struct SecretStore {
    db: Database,
    key: MasterKey,
}

impl SecretStore {
    pub fn open(data_dir: &Path, key: MasterKey) -> Result<SecretStore, StoreError> {
        let path = data_dir.join(DATA_FILE);
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        super::set_owner_only(&path);
        migrate::run(&db)?;
        let txn = db.begin_write()?;
        check_key(&txn, &key)?;
        txn.commit()?;
        Ok(SecretStore { db, key })
    }

    pub fn set(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let record = SecretRecord {
            sealed: self.key.seal(&context(name), value.as_bytes()),
            set_at: now_ms(),
        };
        let txn = self.db.begin_write()?;
        txn.open_table(SECRETS)?
            .insert(name, encode(&record)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Returns whether the secret existed.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let existed = txn.open_table(SECRETS)?.remove(name)?.is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Names and when they were set; never values.
    pub fn list(&self) -> Result<Vec<(String, Millis)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SECRETS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let record: SecretRecord = decode(v.value())?;
            out.push((k.value().to_owned(), record.set_at));
        }
        Ok(out)
    }

    /// Every secret, opened.
    pub fn read_all(&self) -> Result<BTreeMap<String, Secret>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SECRETS)?;
        let mut out = BTreeMap::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let name = k.value().to_owned();
            let record: SecretRecord = decode(v.value())?;
            let plain = self
                .key
                .open(&context(&name), &record.sealed)
                .ok_or(StoreError::Unseal)?;
            out.insert(
                name,
                Secret::new(String::from_utf8_lossy(&plain).into_owned()),
            );
        }
        Ok(out)
    }

    /// Re-seals every secret and work copy under `new` and records its fingerprint, in one
    /// transaction: the file is wholly under the old key or wholly under the new one.
    pub fn rotate(&mut self, new: MasterKey) -> Result<usize, StoreError> {
        let txn = self.db.begin_write()?;
        let mut count = 0;
        count += reseal_secrets(&txn, &self.key, &new)?;
        count += reseal_work(&txn, &self.key, &new)?;
        count += reseal_lookup_key(&txn, &self.key, &new)?;
        txn.open_table(META)?
            .insert(FINGERPRINT, new.fingerprint().as_bytes())?;
        txn.commit()?;
        self.key = new;
        Ok(count)
    }
}

fn reseal_secrets(
    txn: &WriteTransaction,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<usize, StoreError> {
    let mut table = txn.open_table(SECRETS)?;
    let mut rows = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        rows.push((k.value().to_owned(), decode::<SecretRecord>(v.value())?));
    }
    for (name, mut record) in rows.iter().cloned() {
        let plain = old
            .open(&context(&name), &record.sealed)
            .ok_or(StoreError::Unseal)?;
        record.sealed = new.seal(&context(&name), &plain);
        table.insert(name.as_str(), encode(&record)?.as_slice())?;
    }
    Ok(rows.len())
}

fn reseal_work(
    txn: &WriteTransaction,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<usize, StoreError> {
    let mut table = txn.open_table(WORK)?;
    let mut rows = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        rows.push((k.value(), v.value().to_vec()));
    }
    for (id, sealed) in &rows {
        let ctx = super::work_context(*id);
        let plain = old.open(&ctx, sealed).ok_or(StoreError::Unseal)?;
        table.insert(*id, new.seal(&ctx, &plain).as_slice())?;
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connector_state_is_sealed_in_the_secret_table_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = MasterKey::generate();
        let value = "rotated-refresh-token-3f9a";
        {
            let store = crate::store::Store::open(dir.path(), key.clone()).expect("open");
            store
                .write(move |tx| put(tx, "oauth:bitrix24:b24", value))
                .await
                .expect("put");
            let got = store
                .write(|tx| get(tx, "oauth:bitrix24:b24"))
                .await
                .expect("get");
            assert_eq!(
                got.map(|(s, _)| s.expose().to_owned()).as_deref(),
                Some(value)
            );
            assert!(
                store
                    .write(|tx| get(tx, "nothing"))
                    .await
                    .expect("get")
                    .is_none()
            );
            store.close();
        }
        let bytes = std::fs::read(dir.path().join(DATA_FILE)).expect("data file");
        let clear = bytes.windows(value.len()).any(|w| w == value.as_bytes());
        assert!(!clear, "the value is sealed, never in the file in clear");
        let secrets = SecretStore::open(dir.path(), key).expect("reopen");
        let all = secrets.read_all().expect("read");
        assert_eq!(
            all.get("oauth:bitrix24:b24").map(Secret::expose),
            Some(value)
        );
    }

    #[test]
    fn values_round_trip_list_shows_names_and_rotation_keeps_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = MasterKey::generate();
        let mut store = SecretStore::open(dir.path(), key).expect("open");
        store.set("crm_token", "t0ken-ÄÖ-value").expect("set");
        store.set("other", "second-value").expect("set");
        let all = store.read_all().expect("read");
        assert_eq!(
            all.get("crm_token").map(Secret::expose),
            Some("t0ken-ÄÖ-value")
        );
        let names: Vec<String> = store
            .list()
            .expect("list")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["crm_token", "other"]);
        let new = MasterKey::generate();
        assert!(store.rotate(new.clone()).expect("rotate") >= 2);
        assert_eq!(
            store
                .read_all()
                .expect("read")
                .get("other")
                .map(Secret::expose),
            Some("second-value")
        );
        assert!(store.remove("other").expect("rm"));
        assert!(!store.remove("other").expect("rm again"));
        drop(store);
        let reopened = SecretStore::open(dir.path(), new).expect("the new key opens it");
        assert_eq!(reopened.list().expect("list").len(), 1);
        drop(reopened);
        let wrong = SecretStore::open(dir.path(), MasterKey::generate())
            .err()
            .expect("refused");
        assert!(matches!(wrong, StoreError::WrongKey { .. }), "{wrong}");
    }
}
