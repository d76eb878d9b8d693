//! The single writer thread and its group commit.
//!
//! Every mutation is a [`Cmd`] sent over a channel. The writer takes the first waiting command,
//! drains whatever else is already queued (up to `max_batch`), applies them all in ONE write
//! transaction and commits ONCE, then answers each caller. N concurrent appends therefore cost
//! about one fsync, and the order of the channel is the order of the seqs.
//!
//! Durability: a batch is committed with `Durability::Immediate` (fsync before anyone is
//! answered) when it holds anything but forwarder state changes. A batch of only
//! `mark_delivered` / `mark_retry` / `mark_dead` is committed with `Durability::None`: a crash
//! may roll those back to pending, which costs a redelivery (allowed, delivery is at least once)
//! and never an acknowledged append. Such commits are made durable by the next Immediate commit,
//! by an idle flush at most [`FLUSH_AFTER`] later, or by close.
//!
//! Failure: after a failed commit redb refuses further writes until the database is closed and
//! reopened (the next open repairs it). The writer then closes the handle, answers with
//! [`StorageError::Io`], and reopens with backoff, on the next command or on a timer, so the
//! process recovers by itself once the disk does.
//!
//! Quick repair: every commit also records redb's allocator state (two-phase commit, one more
//! fsync, amortised by group commit). Without it, the open after a crash, and the in-process
//! reopen above, walk and checksum the whole file while every append waits; with it they are
//! near-instant whatever the spool's size.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability};
use tokio::sync::oneshot;

use super::error::StorageError;
use super::model::{NewDelivery, Seq, State};
use super::ops::{self, Change, Chunk, OpError};
use super::schema::{Tables, KEY_PROBE};

/// Longest time a non-durable state change may stay un-fsync'd.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_secs(1);
/// See "Quick repair" in the module notes.
const QUICK_REPAIR: bool = true;
const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a reopen or close waits for in-flight reads to release the old handle.
const READERS_GRACE: Duration = Duration::from_secs(5);

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StorageError>>;
pub(crate) type Opener = Box<dyn Fn() -> Result<Database, StorageError> + Send>;

pub(crate) enum Cmd {
    Append(NewDelivery, Reply<Seq>),
    Change(Seq, Change, Reply<bool>),
    Purge {
        route: Option<String>,
        state: State,
        after: Option<Seq>,
        limit: usize,
        reply: Reply<Chunk<Seq>>,
    },
    ReplayDead {
        route: String,
        after: Option<Seq>,
        limit: usize,
        reply: Reply<Chunk<Seq>>,
    },
    Compact {
        cutoff_ms: u64,
        after: Option<(u64, Seq)>,
        limit: usize,
        reply: Reply<Chunk<(u64, Seq)>>,
    },
    Probe(Reply<()>),
    Close(Reply<()>),
}

/// State the writer shares with the read side of [`super::Spool`].
#[derive(Default)]
pub(crate) struct Shared {
    /// The live handle; `None` while closed or being reopened.
    pub db: RwLock<Option<Arc<Database>>>,
    pub closed: AtomicBool,
    pub commits: AtomicU64,
    pub reopens: AtomicU64,
}

impl Shared {
    pub(crate) fn db(&self) -> Result<Arc<Database>, StorageError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let slot = self.db.read().unwrap_or_else(PoisonError::into_inner);
        slot.clone()
            .ok_or_else(|| StorageError::Io("spool is recovering from a storage error".into()))
    }

    fn set_db(&self, db: Option<Arc<Database>>) -> Option<Arc<Database>> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *slot, db)
    }
}

/// Opens the file and prepares the tables; returns the handle and the next seq to hand out.
pub(crate) fn open_db(opener: &Opener) -> Result<(Database, Seq), StorageError> {
    let db = opener()?;
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(QUICK_REPAIR);
    let next_seq = Tables::open(&txn)?.init()?;
    txn.commit()?;
    Ok((db, next_seq))
}

/// Sends the operation's own result once the batch is committed, or the commit's error.
type Finish = Box<dyn FnOnce(Result<(), &StorageError>) + Send>;

fn finish<T: Send + 'static>(reply: Reply<T>, result: Result<T, StorageError>) -> Finish {
    Box::new(move |commit| {
        // A caller that stopped waiting (cancelled request) is not an error.
        let _ = reply.send(commit.map_err(Clone::clone).and(result));
    })
}

/// Defers an operation's answer; a fatal error is also returned to abort the batch.
fn settle<T: Send + 'static>(reply: Reply<T>, r: Result<T, OpError>) -> (Finish, Option<StorageError>) {
    match r {
        Ok(v) => (finish(reply, Ok(v)), None),
        Err(OpError::Rejected(e)) => (finish(reply, Err(e)), None),
        Err(OpError::Fatal(e)) => (finish(reply, Err(e.clone())), Some(e)),
    }
}

impl Cmd {
    /// Forwarder state changes may be committed lazily; everything else is fsync'd.
    fn needs_fsync(&self) -> bool {
        !matches!(
            self,
            Cmd::Change(_, Change::Delivered | Change::Retry { .. } | Change::Dead { .. }, _)
        )
    }

    fn apply(self, t: &mut Tables, next_seq: &mut Seq, now: u64) -> (Finish, Option<StorageError>) {
        match self {
            Cmd::Append(d, reply) => settle(reply, ops::append(t, next_seq, d, now)),
            Cmd::Change(seq, change, reply) => settle(reply, ops::change(t, seq, change, now)),
            Cmd::Purge {
                route,
                state,
                after,
                limit,
                reply,
            } => settle(reply, ops::purge(t, route.as_deref(), state, after, limit)),
            Cmd::ReplayDead {
                route,
                after,
                limit,
                reply,
            } => settle(reply, ops::replay_dead(t, &route, after, limit, now)),
            Cmd::Compact {
                cutoff_ms,
                after,
                limit,
                reply,
            } => settle(reply, ops::compact(t, cutoff_ms, after, limit)),
            Cmd::Probe(reply) => {
                let r = t.config.insert(KEY_PROBE, now).map(|_| ()).map_err(OpError::from);
                settle(reply, r)
            }
            // Never batched: the run loop takes Close out before applying.
            Cmd::Close(reply) => (finish(reply, Ok(())), None),
        }
    }

    fn fail(self, err: &StorageError) {
        fn send<T>(reply: Reply<T>, err: &StorageError) {
            let _ = reply.send(Err(err.clone()));
        }
        match self {
            Cmd::Append(_, r) => send(r, err),
            Cmd::Change(_, _, r) => send(r, err),
            Cmd::Purge { reply, .. } | Cmd::ReplayDead { reply, .. } => send(reply, err),
            Cmd::Compact { reply, .. } => send(reply, err),
            Cmd::Probe(r) | Cmd::Close(r) => send(r, err),
        }
    }
}

pub(crate) struct Writer {
    pub rx: Receiver<Cmd>,
    pub shared: Arc<Shared>,
    pub opener: Opener,
    pub db: Option<Arc<Database>>,
    pub next_seq: Seq,
    pub max_batch: usize,
    /// When the oldest commit not yet fsync'd was made.
    unsynced_since: Option<Instant>,
    /// While `db` is `None`: earliest next reopen attempt, its backoff, and the error to answer.
    retry_at: Option<Instant>,
    backoff: Duration,
    last_error: StorageError,
}

impl Writer {
    pub(crate) fn new(
        rx: Receiver<Cmd>,
        shared: Arc<Shared>,
        opener: Opener,
        db: Arc<Database>,
        next_seq: Seq,
        max_batch: usize,
    ) -> Self {
        Writer {
            rx,
            shared,
            opener,
            db: Some(db),
            next_seq,
            max_batch: max_batch.max(1),
            unsynced_since: None,
            retry_at: None,
            backoff: REOPEN_BACKOFF_MIN,
            last_error: StorageError::Closed,
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            let first = match self.timeout() {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(wait) => self.rx.recv_timeout(wait),
            };
            let first = match first {
                Ok(cmd) => cmd,
                Err(RecvTimeoutError::Timeout) => {
                    self.tick();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break, // every Spool handle dropped
            };
            let mut batch = vec![first];
            while batch.len() < self.max_batch && !matches!(batch.last(), Some(Cmd::Close(_))) {
                match self.rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            let close = match batch.last() {
                Some(Cmd::Close(_)) => batch.pop(),
                _ => None,
            };
            if !batch.is_empty() {
                self.run_batch(batch);
            }
            if let Some(Cmd::Close(reply)) = close {
                self.shutdown();
                let _ = reply.send(Ok(()));
                return;
            }
        }
        self.shutdown();
    }

    /// How long to wait for a command before doing timer work (flush or reopen).
    fn timeout(&self) -> Option<Duration> {
        if self.db.is_none() {
            let at = self.retry_at.unwrap_or_else(Instant::now);
            return Some(at.saturating_duration_since(Instant::now()));
        }
        self.unsynced_since
            .map(|since| FLUSH_AFTER.saturating_sub(since.elapsed()))
    }

    fn tick(&mut self) {
        if self.db.is_none() {
            let _ = self.ensure_open();
        } else if self.unsynced_since.is_some() {
            self.flush();
        }
    }

    fn run_batch(&mut self, batch: Vec<Cmd>) {
        match self.ensure_open() {
            Ok(db) => {
                if let Err(e) = self.commit_batch(db, batch) {
                    self.broken(e);
                }
            }
            Err(e) => batch.into_iter().for_each(|cmd| cmd.fail(&e)),
        }
    }

    /// Applies and commits one batch and answers every command in it. Takes the handle by
    /// value so it is released before a failure makes the caller close it.
    fn commit_batch(&mut self, db: Arc<Database>, batch: Vec<Cmd>) -> Result<(), StorageError> {
        let overdue = self.unsynced_since.is_some_and(|t| t.elapsed() >= FLUSH_AFTER);
        let durable = overdue || batch.iter().any(Cmd::needs_fsync);
        let level = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        let mut txn = match db.begin_write().map_err(StorageError::from).and_then(|mut txn| {
            txn.set_durability(level)?;
            Ok(txn)
        }) {
            Ok(txn) => txn,
            Err(e) => {
                batch.into_iter().for_each(|cmd| cmd.fail(&e));
                return Err(e);
            }
        };

        let mut next_seq = self.next_seq;
        let mut answers = Vec::with_capacity(batch.len());
        let mut fatal = None;
        match Tables::open(&txn) {
            Err(e) => {
                batch.into_iter().for_each(|cmd| cmd.fail(&e));
                fatal = Some(e);
            }
            Ok(mut tables) => {
                let now = ops::now_ms();
                let mut cmds = batch.into_iter();
                for cmd in cmds.by_ref() {
                    let (answer, err) = cmd.apply(&mut tables, &mut next_seq, now);
                    answers.push(answer);
                    if err.is_some() {
                        fatal = err;
                        break;
                    }
                }
                if let Some(e) = &fatal {
                    cmds.for_each(|cmd| cmd.fail(e));
                }
            }
        }

        let result = match fatal {
            // The transaction may be half-written: never commit it.
            Some(e) => {
                let _ = txn.abort();
                Err(e)
            }
            None => {
                txn.set_quick_repair(QUICK_REPAIR);
                txn.commit().map_err(StorageError::from)
            }
        };
        match &result {
            Ok(()) => {
                self.next_seq = next_seq;
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                if durable {
                    self.unsynced_since = None;
                } else {
                    self.unsynced_since.get_or_insert_with(Instant::now);
                }
            }
            Err(e) => tracing::error!(error = %e, ops = answers.len(), "spool: write batch failed"),
        }
        for answer in answers {
            answer(result.as_ref().map(|_| ()));
        }
        result
    }

    /// An empty Immediate commit: makes every earlier non-durable commit durable.
    fn flush(&mut self) {
        let Some(db) = self.db.clone() else { return };
        let result = db.begin_write().map_err(StorageError::from).and_then(|mut txn| {
            txn.set_quick_repair(QUICK_REPAIR);
            Ok(txn.commit()?)
        });
        drop(db);
        match result {
            Ok(()) => {
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.unsynced_since = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "spool: flush failed");
                self.broken(e);
            }
        }
    }

    /// The live handle, reopening it first if a failure closed it (rate-limited by backoff).
    fn ensure_open(&mut self) -> Result<Arc<Database>, StorageError> {
        if let Some(db) = &self.db {
            return Ok(db.clone());
        }
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(self.last_error.clone());
        }
        match open_db(&self.opener) {
            Ok((db, stored_next)) => {
                // A failed commit may still have reached the disk: never hand out its seqs again.
                self.next_seq = self.next_seq.max(stored_next);
                let db = Arc::new(db);
                self.shared.set_db(Some(db.clone()));
                self.shared.reopens.fetch_add(1, Ordering::Relaxed);
                self.db = Some(db.clone());
                self.retry_at = None;
                self.backoff = REOPEN_BACKOFF_MIN;
                // Non-durable commits not made durable before the failure are gone.
                self.unsynced_since = None;
                tracing::warn!("spool: storage reopened after an error");
                Ok(db)
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?self.backoff, "spool: reopen failed");
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(REOPEN_BACKOFF_MAX);
                self.last_error = e.clone();
                Err(e)
            }
        }
    }

    /// After a failed write redb latches the error until the handle is closed; drop it now so
    /// the next command (or the retry timer) reopens and repairs the file.
    fn broken(&mut self, err: StorageError) {
        self.shared.set_db(None);
        if let Some(db) = self.db.take() {
            close_db(db);
        }
        self.last_error = err;
        self.retry_at = None;
    }

    fn shutdown(&mut self) {
        if self.unsynced_since.is_some() {
            self.flush();
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.set_db(None);
        if let Some(db) = self.db.take() {
            close_db(db);
        }
    }
}

/// Closes a handle once in-flight reads have let go of it. If they do not within the grace
/// period, the last reader's drop closes it instead (and a reopen meanwhile fails and retries).
fn close_db(mut db: Arc<Database>) {
    let deadline = Instant::now() + READERS_GRACE;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => {
                if let Err(e) = db.close() {
                    tracing::warn!(error = %e, "spool: close reported an error; the next open repairs the file");
                }
                return;
            }
            Err(shared) if Instant::now() < deadline => {
                db = shared;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => {
                tracing::warn!("spool: reads still hold the old handle; it closes when they finish");
                return;
            }
        }
    }
}
