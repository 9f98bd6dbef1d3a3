//! The one writer: a dedicated thread owns redb write transactions. Callers send closures;
//! the thread drains what is pending (up to `MAX_BATCH`), runs them in one transaction,
//! commits durably once and only then answers every caller. Throughput then scales with
//! the batch, not with fsync latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::cipher::{LookupKey, MasterKey};
use super::{StoreError, Tx};

const MAX_BATCH: usize = 1024;
const QUEUE: usize = 8192;

type Finish = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
type Op = Box<dyn FnOnce(&Tx<'_>) -> Finish + Send>;

enum Job {
    Op(Op),
    /// Runs with no transaction open (file-level work such as a backup copy).
    Exclusive(Box<dyn FnOnce() + Send>),
}

#[derive(Clone)]
pub struct WriterHandle {
    tx: Arc<std::sync::Mutex<Option<mpsc::Sender<Job>>>>,
    pub stats: Arc<WriterStats>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// How well group commit works: `ops / commits` is the mean batch size.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub ops: AtomicU64,
}

pub fn spawn(db: Arc<Database>, key: MasterKey, lookup: LookupKey) -> WriterHandle {
    let (tx, rx) = mpsc::channel(QUEUE);
    let stats = Arc::new(WriterStats::default());
    let thread_stats = stats.clone();
    let thread = std::thread::Builder::new()
        .name("obmen-writer".into())
        .spawn(move || run(&db, &key, &lookup, rx, &thread_stats))
        .expect("the OS refused to start the writer thread");
    WriterHandle {
        tx: Arc::new(std::sync::Mutex::new(Some(tx))),
        stats,
        thread: Arc::new(std::sync::Mutex::new(Some(thread))),
    }
}

impl WriterHandle {
    fn sender(&self) -> Option<mpsc::Sender<Job>> {
        self.tx.lock().ok().and_then(|g| g.clone())
    }

    /// Stops taking writes, lets the thread commit what it has, and waits for it to let go
    /// of the database, so that the file is closed cleanly (an unclean close makes the
    /// next open repair the whole file).
    pub fn close(&self) {
        if let Ok(mut guard) = self.tx.lock() {
            guard.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    pub async fn submit<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Op = Box::new(move |txn| {
            let result = op(txn);
            Box::new(move |commit: Result<(), &StoreError>| {
                let out = match (commit, result) {
                    (Ok(()), r) => r,
                    (Err(e), _) => Err(clone_commit_error(e)),
                };
                let _ = reply.send(out);
            })
        });
        let sender = self.sender().ok_or(StoreError::Closed)?;
        sender
            .send(Job::Op(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on the writer thread between transactions, so no write is in flight.
    pub async fn exclusive<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let sender = self.sender().ok_or(StoreError::Closed)?;
        let job = Job::Exclusive(Box::new(move || {
            let _ = reply.send(f());
        }));
        sender.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)
    }
}

/// A failed commit fails every op of the batch; each caller gets its own copy of the cause.
fn clone_commit_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Closed => StoreError::Closed,
        other => StoreError::NotCommitted(other.to_string()),
    }
}

fn run(
    db: &Database,
    key: &MasterKey,
    lookup: &LookupKey,
    mut rx: mpsc::Receiver<Job>,
    stats: &WriterStats,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut ops = Vec::new();
        let mut pending = Some(first);
        while let Some(job) = pending.take() {
            match job {
                Job::Op(op) => ops.push(op),
                Job::Exclusive(f) => {
                    commit_batch(db, (key, lookup), std::mem::take(&mut ops), stats);
                    f();
                }
            }
            if ops.len() < MAX_BATCH {
                pending = rx.try_recv().ok();
            }
        }
        commit_batch(db, (key, lookup), ops, stats);
    }
}

fn commit_batch(db: &Database, keys: (&MasterKey, &LookupKey), ops: Vec<Op>, stats: &WriterStats) {
    if ops.is_empty() {
        return;
    }
    let txn = match begin(db) {
        Ok(txn) => txn,
        Err(e) => {
            tracing::error!(error = %e, "cannot begin a write transaction");
            for op in ops {
                fail_unrun(op, &e);
            }
            return;
        }
    };
    let tx = Tx::new(&txn, keys.0, keys.1);
    let finishers: Vec<Finish> = ops.into_iter().map(|op| op(&tx)).collect();
    let committed = match tx.finish() {
        Ok(()) => txn.commit().map_err(StoreError::from),
        Err(e) => {
            let _ = txn.abort();
            Err(e)
        }
    };
    stats.commits.fetch_add(1, Ordering::Relaxed);
    stats
        .ops
        .fetch_add(finishers.len() as u64, Ordering::Relaxed);
    if let Err(e) = &committed {
        tracing::error!(error = %e, batch = finishers.len(), "group commit failed");
    }
    for finish in finishers {
        finish(committed.as_ref().map(|_| ()));
    }
}

fn begin(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::NotCommitted(e.to_string()))?;
    Ok(txn)
}

/// Answers an op that never ran because no transaction could be opened. The op's closure
/// needs a transaction to produce its finisher, so the reply is dropped, which the caller
/// sees as `Closed` — the "try again later" answer.
fn fail_unrun(op: Op, _cause: &StoreError) {
    drop(op);
}
