//! [`Spool`]: the handle the rest of pushgate holds. Mutations go to the writer thread; reads
//! run on the caller's thread against a snapshot.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use redb::{Builder, ReadTransaction, ReadableDatabase};
use tokio::sync::oneshot;

use super::error::StorageError;
use super::model::{ListQuery, Meta, NewDelivery, Page, SeenId, Seq, SpoolOptions, State, Stats};
use super::ops::{Change, Chunk};
use super::query;
use super::writer::{open_db, Cmd, Opener, Reply, Shared, Writer};

/// File name inside the storage directory.
pub const FILE_NAME: &str = "spool.redb";
/// Rows a purge / replay / compaction step touches per write transaction, so that a large
/// sweep interleaves with appends instead of delaying their acknowledgement.
const SWEEP_CHUNK: usize = 1000;
/// redb's page cache (reads and the write buffer). redb's default is 1 GiB, and every page
/// written stays cached, so the process grew by the spool's size up to 1 GiB; appends only
/// touch the tail of the tables, and the forwarder mostly gets bodies from memory, so a small
/// cache costs no throughput (bench/compare.sh) and keeps RSS flat.
const CACHE_BYTES: usize = 32 << 20;

/// Embedded durable queue. Cheap to clone; all clones share one writer thread.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Option<mpsc::Sender<Cmd>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    opts: SpoolOptions,
}

impl Drop for Inner {
    /// Last handle gone without `close()`: disconnecting the channel makes the writer flush and
    /// close the file; wait for it so the file can be reopened right away.
    fn drop(&mut self) {
        drop(self.tx.take());
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Spool {
    /// Opens (creating if needed) `dir/spool.redb`. After an unclean shutdown redb repairs the
    /// file here, which reads the whole file.
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<Spool, StorageError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let opener: Opener = Box::new(move || {
            let mut builder = Builder::new();
            builder.set_cache_size(CACHE_BYTES);
            builder.set_repair_callback(|session| {
                tracing::warn!(
                    progress = session.progress(),
                    "spool: repairing after an unclean shutdown"
                );
            });
            Ok(builder.create(&path)?)
        });
        Self::open_with(opener, opts)
    }

    /// `open` with a custom way to (re)open the database; tests use it to inject I/O faults.
    pub(crate) fn open_with(opener: Opener, opts: SpoolOptions) -> Result<Spool, StorageError> {
        let (db, next_seq) = open_db(&opener)?;
        let db = Arc::new(db);
        let shared = Arc::new(Shared::default());
        *shared.db.write().unwrap_or_else(PoisonError::into_inner) = Some(db.clone());
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(rx, shared.clone(), opener, db, next_seq, opts.max_batch);
        let thread = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run())?;
        Ok(Spool {
            inner: Arc::new(Inner {
                tx: Some(tx),
                shared,
                thread: Mutex::new(Some(thread)),
                opts,
            }),
        })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, StorageError> {
        let (reply, answer) = oneshot::channel();
        let tx = self.inner.tx.as_ref().ok_or(StorageError::Closed)?;
        tx.send(make(reply)).map_err(|_| StorageError::Closed)?;
        // The writer drops the reply only when it has stopped.
        answer.await.unwrap_or(Err(StorageError::Closed))
    }

    /// Durable on `Ok`: fsync'd before it returns. Concurrent appends share one commit.
    pub async fn append(&self, d: NewDelivery) -> Result<Seq, StorageError> {
        self.call(|r| Cmd::Append(d, r)).await
    }

    /// Not fsync'd on its own (see the writer's durability notes); a crash may turn it back
    /// into pending. An unknown seq is ignored.
    pub async fn mark_delivered(&self, seq: Seq) -> Result<(), StorageError> {
        self.change(seq, Change::Delivered).await
    }

    pub async fn mark_retry(
        &self,
        seq: Seq,
        attempts: u32,
        next_attempt_at_ms: u64,
        error: &str,
    ) -> Result<(), StorageError> {
        let error = error.to_owned();
        self.change(
            seq,
            Change::Retry {
                attempts,
                next_attempt_at_ms,
                error,
            },
        )
        .await
    }

    pub async fn mark_dead(&self, seq: Seq, attempts: u32, error: &str) -> Result<(), StorageError> {
        let error = error.to_owned();
        self.change(seq, Change::Dead { attempts, error }).await
    }

    async fn change(&self, seq: Seq, change: Change) -> Result<(), StorageError> {
        if !self.call(|r| Cmd::Change(seq, change, r)).await? {
            tracing::warn!(seq, "spool: state change for an unknown seq ignored");
        }
        Ok(())
    }

    /// Any state → pending, attempts 0, due now. `false`: no such seq. Fsync'd.
    pub async fn replay(&self, seq: Seq) -> Result<bool, StorageError> {
        self.call(|r| Cmd::Change(seq, Change::Replay, r)).await
    }

    /// Every dead letter of `route` → pending; returns how many.
    pub async fn replay_dead(&self, route: &str) -> Result<u64, StorageError> {
        self.sweep(None, |after, limit, reply| Cmd::ReplayDead {
            route: route.to_owned(),
            after,
            limit,
            reply,
        })
        .await
    }

    /// Removes events in `state` for `route` (`None`: all routes); returns how many.
    /// `State::Pending` is refused (returns 0): only delivery or dead-lettering takes an
    /// acknowledged event out of the queue.
    pub async fn purge(&self, route: Option<&str>, state: State) -> Result<u64, StorageError> {
        let route = route.map(str::to_owned);
        self.sweep(None, |after, limit, reply| Cmd::Purge {
            route: route.clone(),
            state,
            after,
            limit,
            reply,
        })
        .await
    }

    /// Deletes delivered events whose `updated_at_ms` is older than the retention; returns how many.
    pub async fn compact(&self, now_ms: u64) -> Result<u64, StorageError> {
        let retention = u64::try_from(self.inner.opts.retention.as_millis()).unwrap_or(u64::MAX);
        let cutoff_ms = now_ms.saturating_sub(retention);
        self.sweep(None, |after, limit, reply| Cmd::Compact {
            cutoff_ms,
            after,
            limit,
            reply,
        })
        .await
    }

    /// Runs a chunked sweep to the end, one write transaction per chunk.
    async fn sweep<C>(
        &self,
        mut after: Option<C>,
        make: impl Fn(Option<C>, usize, Reply<Chunk<C>>) -> Cmd,
    ) -> Result<u64, StorageError> {
        let mut total = 0;
        loop {
            let chunk = self.call(|r| make(after.take(), SWEEP_CHUNK, r)).await?;
            total += chunk.done;
            match chunk.resume {
                Some(cursor) => after = Some(cursor),
                None => return Ok(total),
            }
        }
    }

    /// Readiness probe: one tiny fsync'd write transaction through the writer.
    pub async fn probe(&self) -> Result<(), StorageError> {
        self.call(Cmd::Probe).await
    }

    /// Applies everything queued before it, fsyncs, closes the file and stops the writer.
    /// Later calls return [`StorageError::Closed`]. Idempotent.
    pub async fn close(&self) {
        let _ = self.call(Cmd::Close).await;
    }

    /// Pending deliveries of `route` in seq order, after `after` (exclusive), at most `limit`.
    pub fn pending(&self, route: &str, after: Option<Seq>, limit: usize) -> Result<Vec<Meta>, StorageError> {
        self.read(|txn| query::pending(txn, route, after, limit))
    }

    pub fn meta(&self, seq: Seq) -> Result<Option<Meta>, StorageError> {
        self.read(|txn| query::meta(txn, seq))
    }

    pub fn body(&self, seq: Seq) -> Result<Option<bytes::Bytes>, StorageError> {
        self.read(|txn| query::body(txn, seq))
    }

    /// Admin / pull listing, oldest first (seq order); see [`ListQuery`].
    pub fn list(&self, q: &ListQuery) -> Result<Page, StorageError> {
        self.read(|txn| query::list(txn, q))
    }

    /// Route, id, fingerprint and arrival of every stored event received at or after `since_ms`
    /// (all states; purged and compacted events are gone), oldest first.
    pub fn ids_since(&self, since_ms: u64) -> Result<Vec<SeenId>, StorageError> {
        self.read(|txn| query::ids_since(txn, since_ms))
    }

    /// Counts per route and state plus the oldest pending per route, in O(routes).
    pub fn stats(&self) -> Result<Stats, StorageError> {
        self.read(query::stats)
    }

    /// Number of successful write transactions (for group-commit tests and metrics).
    #[doc(hidden)]
    pub fn commits(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Relaxed)
    }

    /// Times the writer reopened the file after a storage error. A forwarder may rescan
    /// `pending()` when this changes: un-fsync'd state changes were rolled back.
    pub fn reopens(&self) -> u64 {
        self.inner.shared.reopens.load(Ordering::Relaxed)
    }

    fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T, StorageError>) -> Result<T, StorageError> {
        // Holding `db` for the whole read lets a reopen wait for it instead of cutting it off.
        let db = self.inner.shared.db()?;
        let txn = db.begin_read()?;
        f(&txn)
    }
}
