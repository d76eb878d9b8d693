//! The single writer thread: group commit onto the log, and everything that must not race.
//!
//! Every mutation is a [`Cmd`] sent over a channel. The writer takes the first waiting command,
//! drains whatever else is already queued (up to `max_batch`), plans them all into ONE buffer of
//! log records ([`Plan`]), writes that buffer with ONE `pwrite` at the end of the active segment
//! and calls `fdatasync` ONCE, then applies the index changes and answers each caller. N
//! concurrent appends therefore cost one write and one fsync, and the order of the channel is
//! the order of the seqs.
//!
//! Lazy durability: a batch of only forwarder state changes (`mark_delivered` / `mark_retry` /
//! `mark_dead`) is applied to the index at once and its records are written without a sync
//! (so they survive `kill -9`, not a power loss); the next batch's `fdatasync` makes them
//! durable, or an idle flush at most [`FLUSH_AFTER`] later, or close. A power loss may roll
//! such a change back to pending, which costs a redelivery (delivery is at least once), never
//! an acknowledged append. If that write fails, the records wait in memory and go first in
//! the next write.
//!
//! Failure: a failed write or sync answers the batch with [`StorageError::Io`], cuts the
//! partial write off the segment and abandons it (after a failed `fdatasync` the kernel may
//! have dropped the dirty pages, so the file's state is unknown); the next batch first rolls a
//! new segment, with backoff, so the process recovers by itself once the disk does. Waiting
//! lazy records are kept and written to the new segment.
//!
//! Maintenance, between batches: segments at the head of the log whose events are all gone are
//! deleted; a head segment that is mostly garbage has its few live records copied forward in
//! small steps first. Segments are only ever dropped from the head, so a remove or state record
//! never disappears while the append it refers to is still on disk.
//!
//! Summaries: the writer keeps the active segment's summary (`summary.rs`) up to date from the
//! bytes it writes, and when it moves to a new segment (full, or abandoned after a failure) it
//! syncs the old one and writes that summary, so the next start need not read it. A dropped
//! segment's summary goes with it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::error::StorageError;
use super::format::{self, StateRec};
use super::index::{Index, Loc, SegNo, Segment};
use super::model::{NewDelivery, Seq, State};
use super::ops::{Change, Chunk, Effect, Plan};
use super::segment;
use super::summary::{self, Builder};

/// Longest time a lazy state change may stay un-fsync'd.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_secs(1);
const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Copy-forward step: at most this many bytes of live records per step.
const COPY_STEP: u64 = 256 << 10;
/// Maintenance runs at least this often under load (and whenever the queue is empty).
const MAINTAIN_EVERY: Duration = Duration::from_millis(50);

pub(crate) type Responder<T> = oneshot::Sender<Result<T, StorageError>>;

pub(crate) enum Cmd {
    Append(NewDelivery, Responder<Seq>),
    Change(Seq, Change, Responder<bool>),
    Purge {
        route: Option<String>,
        state: State,
        after: Option<Seq>,
        limit: usize,
        reply: Responder<Chunk<Seq>>,
    },
    ReplayDead {
        route: String,
        after: Option<Seq>,
        limit: usize,
        reply: Responder<Chunk<Seq>>,
    },
    Compact {
        cutoff_ms: u64,
        after: Option<(u64, Seq)>,
        limit: usize,
        reply: Responder<Chunk<(u64, Seq)>>,
    },
    Probe(Responder<()>),
    Close(Responder<()>),
}

/// State the writer shares with the read side of [`super::Spool`].
#[derive(Default)]
pub(crate) struct StoreState {
    pub index: RwLock<Index>,
    pub closed: AtomicBool,
    pub commits: AtomicU64,
    pub reopens: AtomicU64,
    /// Damaged or torn records found at start-up.
    pub damaged: AtomicU64,
    /// Test hook: while set, every write and sync fails with ENOSPC, as on a full disk.
    pub fail_writes: AtomicBool,
}

impl StoreState {
    pub(crate) fn read(&self) -> Result<RwLockReadGuard<'_, Index>, StorageError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        Ok(self.index.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sends the operation's own result once the batch is written, or the write's error.
type Finish = Box<dyn FnOnce(Result<(), &StorageError>) + Send>;

fn finish<T: Send + 'static>(reply: Responder<T>, result: Result<T, StorageError>) -> Finish {
    Box::new(move |written| {
        // A caller that stopped waiting (cancelled request) is not an error.
        let _ = reply.send(written.map_err(Clone::clone).and(result));
    })
}

impl Cmd {
    /// Forwarder state changes may be written lazily; everything else is fsync'd.
    fn is_lazy(&self) -> bool {
        matches!(
            self,
            Cmd::Change(
                _,
                Change::Delivered { .. } | Change::Retry { .. } | Change::Dead { .. },
                _
            )
        )
    }

    fn plan(self, p: &mut Plan) -> Finish {
        match self {
            Cmd::Append(d, reply) => finish(reply, p.append(d)),
            Cmd::Change(seq, change, reply) => finish(reply, Ok(p.change(seq, change))),
            Cmd::Purge {
                route,
                state,
                after,
                limit,
                reply,
            } => finish(reply, Ok(p.purge(route.as_deref(), state, after, limit))),
            Cmd::ReplayDead {
                route,
                after,
                limit,
                reply,
            } => finish(reply, Ok(p.replay_dead(&route, after, limit))),
            Cmd::Compact {
                cutoff_ms,
                after,
                limit,
                reply,
            } => finish(reply, Ok(p.compact(cutoff_ms, after, limit))),
            Cmd::Probe(reply) => {
                p.probe();
                finish(reply, Ok(()))
            }
            // Never batched: the run loop takes Close out before planning.
            Cmd::Close(reply) => finish(reply, Ok(())),
        }
    }
}

/// The segment appends go to.
struct Active {
    no: SegNo,
    file: Arc<File>,
    pos: u64,
    cap: u64,
}

pub(crate) struct Writer {
    rx: Receiver<Cmd>,
    shared: Arc<StoreState>,
    dir: PathBuf,
    next_seq: Seq,
    max_batch: usize,
    /// `None` after a write failure until a new segment is rolled (`broken`).
    active: Option<Active>,
    broken: bool,
    /// Lazy state records not yet written (only after a failed write).
    lazy: Vec<u8>,
    /// When the oldest lazy change not yet fsync'd was made.
    unsynced_since: Option<Instant>,
    /// While `active` is `None`: earliest next roll attempt, its backoff, the error to answer.
    retry_at: Option<Instant>,
    backoff: Duration,
    last_error: StorageError,
    last_maintenance: Instant,
    /// The active segment's summary so far, written when it is sealed; `None`: none will be.
    summary: Option<Builder>,
    /// Size of new segments.
    segment_bytes: u64,
}

impl Writer {
    pub(crate) fn new(
        rx: Receiver<Cmd>,
        shared: Arc<StoreState>,
        dir: PathBuf,
        next_seq: Seq,
        // The active segment, its first free byte and its summary so far.
        active: Option<(SegNo, u64, Option<Builder>)>,
        max_batch: usize,
        segment_bytes: u64,
    ) -> Self {
        let (active, summary) = match active {
            Some((no, pos, summary)) => {
                let file = shared.write().file(no);
                let active = file.map(|file| {
                    let cap = file.metadata().map(|m| m.len()).unwrap_or(0);
                    Active { no, file, pos, cap }
                });
                (active, summary)
            }
            None => (None, None),
        };
        Writer {
            rx,
            shared,
            dir,
            next_seq,
            max_batch: max_batch.max(1),
            active,
            broken: false,
            lazy: Vec::new(),
            unsynced_since: None,
            retry_at: None,
            backoff: REOPEN_BACKOFF_MIN,
            last_error: StorageError::Closed,
            last_maintenance: Instant::now(),
            summary,
            segment_bytes,
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
            if self.last_maintenance.elapsed() >= MAINTAIN_EVERY {
                self.maintain();
            }
        }
        self.shutdown();
    }

    /// How long to wait for a command before doing timer work (flush, roll, maintenance).
    fn timeout(&self) -> Option<Duration> {
        if self.broken {
            let at = self.retry_at.unwrap_or_else(Instant::now);
            return Some(at.saturating_duration_since(Instant::now()));
        }
        let flush = self
            .unsynced_since
            .map(|since| FLUSH_AFTER.saturating_sub(since.elapsed()));
        let maintain = self.maintenance_due().then_some(MAINTAIN_EVERY);
        match (flush, maintain) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn tick(&mut self) {
        if self.broken {
            let _ = self.ensure_active(0);
            return;
        }
        if self.unsynced_since.is_some_and(|t| t.elapsed() >= FLUSH_AFTER) {
            self.flush();
        }
        self.maintain();
    }

    fn run_batch(&mut self, batch: Vec<Cmd>) {
        let lazy_only = batch.iter().all(Cmd::is_lazy);
        let shared = self.shared.clone();
        let (buf, effects, answers, next_seq) = {
            let index = shared.read_unchecked();
            let mut plan = Plan::new(&index, self.next_seq, super::ops::now_ms());
            let answers: Vec<Finish> = batch.into_iter().map(|cmd| cmd.plan(&mut plan)).collect();
            (plan.buf, plan.effects, answers, plan.next_seq)
        };
        if lazy_only {
            self.lazy.extend_from_slice(&buf);
            self.apply(effects, None);
            self.unsynced_since.get_or_insert_with(Instant::now);
            // Written now (it survives `kill -9`), synced later; a failure keeps them waiting.
            let _ = self.write(&[], false);
            answers.into_iter().for_each(|a| a(Ok(())));
            return;
        }
        match self.write(&buf, true) {
            Ok(base) => {
                self.next_seq = next_seq;
                self.apply(effects, Some(base));
                answers.into_iter().for_each(|a| a(Ok(())));
            }
            Err(e) => {
                tracing::error!(error = %e, ops = answers.len(), "spool: write batch failed");
                answers.into_iter().for_each(|a| a(Err(&e)));
            }
        }
    }

    /// Applies planned index changes; `base` is where the batch buffer landed (seg, offset).
    fn apply(&self, effects: Vec<Effect>, base: Option<(SegNo, u64)>) {
        let mut index = self.shared.write();
        for effect in effects {
            match effect {
                Effect::Put(seq, mut entry, route) => {
                    let Some((seg, at)) = base else { continue };
                    entry.route = index.route_id(&route);
                    entry.loc.seg = seg;
                    entry.loc.at += at;
                    index.put(seq, entry, false);
                }
                Effect::Update(rec) => {
                    index.set_state(&rec);
                }
                Effect::Remove(seq) => {
                    index.remove(seq);
                }
            }
        }
    }

    /// Writes the waiting lazy records and then `buf` with one write, at the end of the active
    /// segment (rolling a new one if needed), and syncs if `sync`. Returns where `buf` starts.
    fn write(&mut self, buf: &[u8], sync: bool) -> Result<(SegNo, u64), StorageError> {
        let len = (self.lazy.len() + buf.len()) as u64;
        self.ensure_active(len)?;
        let Some(active) = self.active.as_mut() else {
            return Err(self.last_error.clone());
        };
        let start = active.pos;
        let result = (|| {
            fault(&self.shared)?;
            if self.lazy.is_empty() {
                active.file.write_all_at(buf, start)?;
            } else {
                // One write: the lazy records first, so they precede this batch in the log.
                let mut all = std::mem::take(&mut self.lazy);
                all.extend_from_slice(buf);
                let r = active.file.write_all_at(&all, start);
                all.truncate(all.len() - buf.len());
                self.lazy = all;
                r?;
            }
            if sync {
                fault(&self.shared)?;
                active.file.sync_data()?;
            }
            Ok::<_, std::io::Error>(())
        })();
        match result {
            Ok(()) => {
                let lazy_len = self.lazy.len() as u64;
                if let Some(summary) = self.summary.as_mut() {
                    summary.records(&self.lazy, start);
                    summary.records(buf, start + lazy_len);
                }
                self.lazy.clear();
                active.pos += len;
                let no = active.no;
                if let Some(s) = self.shared.write().segments.get_mut(&no) {
                    s.written = active.pos;
                }
                if sync {
                    self.shared.commits.fetch_add(1, Ordering::Relaxed);
                    self.unsynced_since = None;
                } else if len > 0 {
                    self.unsynced_since.get_or_insert_with(Instant::now);
                }
                Ok((no, start + lazy_len))
            }
            Err(e) => {
                let e = StorageError::from(e);
                // The segment's state after a failed write or sync is unknown: cut the partial
                // write off (best effort) and never write to it again.
                let _ = segment::cut(&active.file, start);
                let (no, file) = (active.no, active.file.clone());
                self.seal(no, &file, start);
                self.active = None;
                self.broken = true;
                self.last_error = e.clone();
                self.retry_at = None;
                Err(e)
            }
        }
    }

    /// Makes sure there is an active segment with room for `len` more bytes, rolling a new one
    /// when the current one is full or was abandoned (rate-limited by backoff after failures).
    fn ensure_active(&mut self, len: u64) -> Result<(), StorageError> {
        if let Some(a) = &self.active {
            if a.pos + len <= a.cap {
                return Ok(());
            }
        }
        let recovering = self.broken;
        if recovering && self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(self.last_error.clone());
        }
        let no = self
            .shared
            .read_unchecked()
            .segments
            .keys()
            .next_back()
            .map_or(1, |n| n + 1);
        if let Some(a) = self.active.take() {
            self.seal(a.no, &a.file, a.pos);
        }
        let need = len + 64;
        let created = fault(&self.shared)
            .map_err(StorageError::from)
            .and_then(|()| segment::create(&self.dir, no, self.next_seq, need.max(self.segment_bytes)));
        match created {
            Ok(file) => {
                let file = Arc::new(file);
                let cap = file.metadata().map(|m| m.len()).unwrap_or(0);
                let pos = segment::header_len();
                self.shared
                    .write()
                    .segments
                    .insert(no, Segment::empty(file.clone(), pos));
                self.summary = Some(segment::new_summary(self.next_seq));
                self.active = Some(Active { no, file, pos, cap });
                self.broken = false;
                if recovering {
                    self.shared.reopens.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(segment = no, "spool: writing again after a storage error");
                }
                self.retry_at = None;
                self.backoff = REOPEN_BACKOFF_MIN;
                Ok(())
            }
            Err(e) => {
                if recovering {
                    tracing::error!(error = %e, retry_in = ?self.backoff, "spool: cannot write yet");
                    self.retry_at = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(REOPEN_BACKOFF_MAX);
                } else {
                    // No room for a new segment: answer, and retry as after a failed write.
                    self.active = None;
                    self.broken = true;
                    self.retry_at = Some(Instant::now() + self.backoff);
                }
                self.last_error = e.clone();
                Err(e)
            }
        }
    }

    /// Writes and syncs the waiting lazy records (and any written but unsynced ones).
    fn flush(&mut self) {
        match self.write(&[], true) {
            Ok(_) => self.unsynced_since = None,
            Err(e) => tracing::error!(error = %e, "spool: flush failed"),
        }
    }

    fn maintenance_due(&self) -> bool {
        let index = self.shared.read_unchecked();
        let active = self.active.as_ref().map(|a| a.no);
        index
            .segments
            .iter()
            .next()
            .is_some_and(|(&no, s)| Some(no) != active && (s.live == 0 || s.live_bytes * 4 < s.written))
    }

    /// Drops dead head segments; copies one step of live records out of a mostly-dead head.
    fn maintain(&mut self) {
        self.last_maintenance = Instant::now();
        let Some(active) = self.active.as_ref().map(|a| a.no) else {
            return;
        };
        loop {
            let head = {
                let index = self.shared.read_unchecked();
                index
                    .segments
                    .iter()
                    .next()
                    .map(|(&no, s)| (no, s.live, s.live_bytes, s.written))
            };
            let Some((no, live, live_bytes, written)) = head else {
                return;
            };
            if no == active {
                return;
            }
            if live == 0 {
                // Everything it held is removed or copied forward, by synced writes: drop it.
                self.shared.write().segments.remove(&no);
                if let Err(e) = std::fs::remove_file(segment::path(&self.dir, no)) {
                    tracing::warn!(segment = no, error = %e, "spool: cannot remove an emptied segment");
                }
                let _ = std::fs::remove_file(summary::path(&self.dir, no));
                continue;
            }
            if live_bytes * 4 < written {
                self.copy_forward(no);
            }
            return;
        }
    }

    /// Re-appends up to [`COPY_STEP`] bytes of segment `no`'s live events at the log's end.
    fn copy_forward(&mut self, no: SegNo) {
        let picks: Vec<(Seq, super::index::Entry, Option<String>, Arc<File>)> = {
            let index = self.shared.read_unchecked();
            let Some(file) = index.file(no) else { return };
            let mut bytes = 0;
            index
                .entries
                .iter()
                .filter(|(_, e)| e.loc.seg == no)
                .take_while(|(_, e)| {
                    bytes += e.loc.record_len();
                    bytes <= COPY_STEP || bytes == e.loc.record_len()
                })
                .map(|(seq, e)| (seq, *e, index.last_error(seq).map(str::to_owned), file.clone()))
                .collect()
        };
        let mut buf = Vec::new();
        let mut moves = Vec::new();
        for (seq, e, last_error, file) in picks {
            let len = e.loc.record_len() as usize;
            let mut rec = vec![0u8; len];
            if let Err(err) = file.read_exact_at(&mut rec, e.loc.at) {
                tracing::error!(seq, error = %err, "spool: cannot read a record to copy forward");
                return;
            }
            // The record as it was, then its current state, so a restart sees both in order.
            let at = buf.len() as u64;
            buf.extend_from_slice(&rec);
            format::state(
                &mut buf,
                &StateRec {
                    seq,
                    state: e.state,
                    attempts: e.attempts,
                    next_attempt_at_ms: e.next_attempt_at_ms,
                    updated_at_ms: e.updated_at_ms,
                    last_error,
                },
            );
            moves.push((seq, e.loc, at));
        }
        if moves.is_empty() {
            return;
        }
        match self.write(&buf, true) {
            Ok((seg, base)) => {
                let mut index = self.shared.write();
                for (seq, old, at) in moves {
                    let Some(entry) = index.entries.get(seq) else {
                        continue;
                    };
                    if entry.loc.seg != old.seg || entry.loc.at != old.at {
                        continue;
                    }
                    let loc = Loc {
                        seg,
                        at: base + at,
                        layout: old.layout,
                    };
                    index.relocate(seq, loc);
                }
            }
            Err(e) => tracing::error!(error = %e, "spool: copy-forward failed"),
        }
    }

    /// Segment `no` takes no more writes (full, or abandoned after a failure at `end`): sync
    /// the lazy records it may hold and write its summary. Best effort: without a summary the
    /// next start reads the segment in full.
    fn seal(&mut self, no: SegNo, file: &File, end: u64) {
        let Some(summary) = self.summary.take() else { return };
        if fault(&self.shared).is_err() || file.sync_data().is_err() {
            return;
        }
        match summary.write(&self.dir, no, end) {
            Ok(()) => {
                if let Some(s) = self.shared.write().segments.get_mut(&no) {
                    s.summarized = true;
                }
            }
            Err(e) => tracing::warn!(segment = no, error = %e, "spool: cannot write a segment summary"),
        }
    }

    fn shutdown(&mut self) {
        if self.unsynced_since.is_some() || !self.lazy.is_empty() {
            self.flush();
        }
        self.shared.closed.store(true, Ordering::Release);
        let mut index = self.shared.write();
        *index = Index::default();
    }
}

impl StoreState {
    /// The index for the writer's own planning and upkeep (the writer is the only mutator, so
    /// a read lock is enough and readers keep going meanwhile).
    fn read_unchecked(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }
}

fn fault(shared: &StoreState) -> std::io::Result<()> {
    if shared.fail_writes.load(Ordering::SeqCst) {
        return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
    }
    Ok(())
}
