//! The one redb file: tables, records, the group-commit writer and the operations on them.

pub mod cipher;
pub mod groups;
mod migrate;
pub mod onec;
pub mod ops;
pub mod query;
pub mod records;
pub mod secrets;
pub mod tables;
mod tx;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase};

pub use cipher::MasterKey;
pub use tx::Tx;
pub use writer::WriterHandle;

/// What a sealed work copy is bound to: its own row.
pub fn work_context(id: u64) -> Vec<u8> {
    format!("work:{id}").into_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the data file {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error(
        "the data file was written by a newer obmen (schema {found}, this build knows {known}); upgrade obmen or restore a backup"
    )]
    NewerSchema { found: u32, known: u32 },
    #[error("storage: {0}")]
    Storage(#[from] redb::StorageError),
    #[error("table: {0}")]
    Table(#[from] redb::TableError),
    #[error("transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    #[error("commit: {0}")]
    Commit(#[from] redb::CommitError),
    #[error("encoding a record: {0}")]
    Encode(postcard::Error),
    #[error("a stored record does not decode: {0}")]
    Decode(postcard::Error),
    #[error("the store is shutting down")]
    Closed,
    #[error(
        "the master key does not match this data file (key fingerprint {key}, the file was sealed with {file}); use the key file it was created with"
    )]
    WrongKey { key: String, file: String },
    #[error("a sealed value in the data file does not open with this master key")]
    Unseal,
    #[error("the write was not committed: {0}")]
    NotCommitted(String),
    #[error("backup: {0}")]
    Backup(#[source] std::io::Error),
}

impl StoreError {
    /// Another process (a running `obmen serve`) holds the data file.
    pub fn is_in_use(&self) -> bool {
        matches!(
            self,
            StoreError::Open {
                source: redb::DatabaseError::DatabaseAlreadyOpen,
                ..
            }
        )
    }

    /// True when the write could not be made durable (disk full, I/O error, closing): the
    /// caller should ask its sender to come back later (503 + Retry-After).
    pub fn is_unavailable(&self) -> bool {
        !matches!(
            self,
            StoreError::WrongKey { .. }
                | StoreError::Unseal
                | StoreError::Encode(_)
                | StoreError::Decode(_)
                | StoreError::NewerSchema { .. }
        )
    }
}

/// Handle to the data file: concurrent reads, writes through the one writer thread.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    lookup: Arc<cipher::LookupKey>,
    writer: WriterHandle,
    path: Arc<PathBuf>,
}

pub const DATA_FILE: &str = "obmen.redb";

/// redb's page cache. Its own default (1 GiB) would let RSS grow with the journal on a
/// small VPS; the hot pages (queue, indexes, recent exchanges) fit in far less.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

impl Store {
    /// Opens (or creates) `<data_dir>/obmen.redb` with the default page cache.
    pub fn open(data_dir: &Path, key: MasterKey) -> Result<Store, StoreError> {
        Store::open_with_cache(data_dir, key, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the data file, migrates it, checks that `key` is the file's key
    /// and starts the writer thread.
    pub fn open_with_cache(
        data_dir: &Path,
        key: MasterKey,
        cache_bytes: usize,
    ) -> Result<Store, StoreError> {
        let path = data_dir.join(DATA_FILE);
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        set_owner_only(&path);
        migrate::run(&db)?;
        let txn = db.begin_write()?;
        secrets::check_key(&txn, &key)?;
        let lookup = secrets::lookup_key(&txn, &key)?;
        txn.commit()?;
        let db = Arc::new(db);
        let writer = writer::spawn(db.clone(), key, lookup.clone());
        Ok(Store {
            db,
            lookup: Arc::new(lookup),
            writer,
            path: Arc::new(path),
        })
    }

    /// (commits, writes) since start: their ratio is the group-commit batch size.
    pub fn write_stats(&self) -> (u64, u64) {
        let s = &self.writer.stats;
        (
            s.commits.load(std::sync::atomic::Ordering::Relaxed),
            s.ops.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The lookup hash under which a key, external id or ID-map key is indexed.
    pub fn lookup_hash(&self, text: &str) -> String {
        self.lookup.hash(text)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// Runs `op` inside the next group-commit transaction and returns its result once the
    /// transaction is durably committed.
    pub async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.submit(op).await
    }

    /// Stops the writer after what is already queued; later writes fail with `Closed`.
    pub fn close(&self) {
        self.writer.close();
    }

    /// A consistent copy of the data file while serving: the writer thread copies the file
    /// between two transactions, when everything on disk is committed.
    pub async fn backup(&self, dest: &Path) -> Result<u64, StoreError> {
        let src = self.path.as_ref().clone();
        let dest = dest.to_path_buf();
        let copied = self
            .writer
            .exclusive(move || copy_file(&src, &dest))
            .await?;
        copied.map_err(StoreError::Backup)
    }
}

/// Copies the data file while no process has it open (checked by opening it first). The
/// copy stays sealed: secrets and work copies open only with the master key.
pub fn copy_closed(file: &Path, dest: &Path) -> Result<u64, StoreError> {
    let db = Database::open(file).map_err(|source| StoreError::Open {
        path: file.to_path_buf(),
        source,
    })?;
    drop(db);
    copy_file(file, dest).map_err(StoreError::Backup)
}

fn copy_file(src: &Path, dest: &Path) -> std::io::Result<u64> {
    let tmp = dest.with_extension("partial");
    let bytes = std::fs::copy(src, &tmp)?;
    set_owner_only(&tmp);
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dest)?;
    Ok(bytes)
}

#[cfg(unix)]
pub(crate) fn set_owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // Best effort: the data dir is already 0700; a failure here changes nothing else.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
pub(crate) fn set_owner_only(_path: &Path) {}
