//! [`Spool`]: the handle the rest of pushgate holds. Mutations go to the writer thread; reads
//! run on the caller's thread against the in-memory index and read records by offset (`pread`),
//! never waiting for the writer's disk I/O.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::error::StorageError;
use super::format;
use super::index::{Entry, Index, SegNo, Segment};
use super::model::{ListQuery, Meta, NewDelivery, Page, SeenId, Seq, SpoolOptions, State, Stats};
use super::ops::{Change, Chunk};
use super::summary::{self, Summary};
use super::writer::{Cmd, Responder, StoreState, Writer};
use super::{migrate, segment};

/// The file a release before the segment log kept everything in; migrated on first start.
pub const FILE_NAME: &str = "spool.redb";
/// Events a purge / replay / compaction step touches per batch, so that a large sweep
/// interleaves with appends instead of delaying their acknowledgement.
const SWEEP_CHUNK: usize = 1000;

/// Embedded durable queue. Cheap to clone; all clones share one writer thread.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Option<mpsc::Sender<Cmd>>,
    shared: Arc<StoreState>,
    thread: Mutex<Option<JoinHandle<()>>>,
    opts: SpoolOptions,
    dir: std::path::PathBuf,
}

impl Drop for Inner {
    /// Last handle gone without `close()`: disconnecting the channel makes the writer flush and
    /// stop; wait for it so the directory can be reopened right away.
    fn drop(&mut self) {
        drop(self.tx.take());
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Spool {
    /// Opens (creating if needed) the log in `dir`: migrates a `spool.redb` left by an older
    /// release, then rebuilds the index: sealed segments from their summaries, the others (the
    /// last one always) by reading and checking every record. Damage found there (a torn last
    /// write, a flipped byte) is reported in one log line and by [`Spool::damaged`]; damage in
    /// a summarised segment is found when its record is read.
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<Spool, StorageError> {
        Spool::open_sized(dir, opts, segment::SEGMENT_BYTES)
    }

    /// [`Spool::open`] with segments of `segment_bytes` (tests: many segments from few events).
    pub(crate) fn open_sized(dir: &Path, opts: SpoolOptions, segment_bytes: u64) -> Result<Spool, StorageError> {
        std::fs::create_dir_all(dir)?;
        // One process at a time: a second opener (a `-u` successor, `pushgate spool`) would
        // index the log while this one still appends to it, and never see the rest.
        let lock = lock_dir(dir)?;
        migrate::run(dir)?;
        let started = std::time::Instant::now();
        let scanned = segment::scan(dir)?;
        let d = &scanned.damage;
        if d.records > 0 {
            tracing::error!(
                damaged = d.records,
                bytes = d.bytes,
                places = ?d.places,
                "spool: damaged or torn records found at start-up; every intact record was kept"
            );
        }
        tracing::info!(
            events = scanned.index.entries.len(),
            segments = scanned.index.segments.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "spool: opened"
        );
        let mut index = scanned.index;
        let mut summary = scanned.summary;
        let active = match scanned.active {
            Some(active) => active,
            // A new store (or its last segment was empty): create the first segment now, so
            // that a directory that cannot be written fails here, before anything listens.
            None => {
                let no = index.segments.keys().next_back().map_or(1, |n| n + 1);
                let file = segment::create(dir, no, scanned.next_seq, segment_bytes)?;
                let pos = segment::header_len();
                index.segments.insert(no, Segment::empty(Arc::new(file), pos));
                summary = Some(segment::new_summary(scanned.next_seq));
                (no, pos)
            }
        };
        let shared = Arc::new(StoreState::default());
        shared.damaged.store(d.records, Ordering::Relaxed);
        *shared.index.write().unwrap_or_else(PoisonError::into_inner) = index;
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(
            rx,
            shared.clone(),
            dir.to_path_buf(),
            scanned.next_seq,
            Some((active.0, active.1, summary)),
            opts.max_batch,
            segment_bytes,
        );
        let thread = std::thread::Builder::new().name("spool-writer".into()).spawn(move || {
            // Held until the writer stops (close, or the last handle dropped).
            let _lock = lock;
            writer.run()
        })?;
        Ok(Spool {
            inner: Arc::new(Inner {
                tx: Some(tx),
                shared,
                thread: Mutex::new(Some(thread)),
                opts,
                dir: dir.to_path_buf(),
            }),
        })
    }

    async fn call<T>(&self, make: impl FnOnce(Responder<T>) -> Cmd) -> Result<T, StorageError> {
        let (reply, answer) = oneshot::channel();
        let tx = self.inner.tx.as_ref().ok_or(StorageError::Closed)?;
        tx.send(make(reply)).map_err(|_| StorageError::Closed)?;
        // The writer drops the reply only when it has stopped.
        answer.await.unwrap_or(Err(StorageError::Closed))
    }

    /// Durable on `Ok`: written and fdatasync'd before it returns. Concurrent appends share one
    /// write and one sync.
    pub async fn append(&self, d: NewDelivery) -> Result<Seq, StorageError> {
        self.call(|r| Cmd::Append(d, r)).await
    }

    /// The app took it at attempt number `attempts`. Not fsync'd on its own (see the writer's
    /// durability notes); a crash may turn it back into pending. An unknown seq is ignored.
    pub async fn mark_delivered(&self, seq: Seq, attempts: u32) -> Result<(), StorageError> {
        self.change(seq, Change::Delivered { attempts }).await
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

    /// Deletes delivered events whose `updated_at_ms` is older than the retention; returns how
    /// many. Their space is freed when every event of their segment is gone (the writer copies
    /// the few survivors of a mostly-empty segment forward, a step at a time).
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

    /// Runs a chunked sweep to the end, one batch per chunk.
    async fn sweep<C>(
        &self,
        mut after: Option<C>,
        make: impl Fn(Option<C>, usize, Responder<Chunk<C>>) -> Cmd,
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

    /// Readiness probe: one tiny record written and fdatasync'd through the writer.
    pub async fn probe(&self) -> Result<(), StorageError> {
        self.call(Cmd::Probe).await
    }

    /// Writes and syncs everything queued before it, and stops the writer.
    /// Later calls return [`StorageError::Closed`]. Idempotent.
    pub async fn close(&self) {
        let _ = self.call(Cmd::Close).await;
        // The writer answers just before it stops; once its thread is gone the directory's
        // lock is free, so a successor (or a test) can open it as soon as this returns.
        let thread = self.inner.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Pending deliveries of `route` in seq order, after `after` (exclusive), at most `limit`.
    pub fn pending(&self, route: &str, after: Option<Seq>, limit: usize) -> Result<Vec<Meta>, StorageError> {
        let Some(from) = after.map_or(Some(0), |s| s.checked_add(1)) else {
            return Ok(Vec::new());
        };
        let picked = {
            let index = self.inner.shared.read()?;
            let Some(set) = index.find_route(route).and_then(|r| index.set(r, State::Pending)) else {
                return Ok(Vec::new());
            };
            located(&index, set.range(from..).take(limit).copied())
        };
        let mut out = Vec::with_capacity(picked.len());
        for p in &picked {
            match read_meta(p) {
                Ok(meta) => out.push(meta),
                Err(StorageError::Corrupt(_)) => self.set_aside(p.0, p.1.attempts),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A pending event whose record fails its check when read (damage in a sealed segment,
    /// which start-up no longer reads): counted as damage and dead-lettered, so the forwarder
    /// moves on and the event stays visible to the admin API instead of blocking its route.
    fn set_aside(&self, seq: Seq, attempts: u32) {
        tracing::error!(seq, "spool: a stored record fails its check when read; dead-lettered");
        self.inner.shared.damaged.fetch_add(1, Ordering::Relaxed);
        let Some(tx) = self.inner.tx.as_ref() else { return };
        let (reply, _) = oneshot::channel();
        let error = "record damaged on disk".to_owned();
        let _ = tx.send(Cmd::Change(seq, Change::Dead { attempts, error }, reply));
    }

    pub fn meta(&self, seq: Seq) -> Result<Option<Meta>, StorageError> {
        let picked = located(&*self.inner.shared.read()?, [seq]);
        picked.first().map(read_meta).transpose()
    }

    pub fn body(&self, seq: Seq) -> Result<Option<bytes::Bytes>, StorageError> {
        let picked = located(&*self.inner.shared.read()?, [seq]);
        let Some((seq, e, _, file)) = picked.first() else {
            return Ok(None);
        };
        let record = read_record(*seq, e, file)?;
        let body = &record[e.loc.layout.body_at as usize..];
        Ok(Some(bytes::Bytes::copy_from_slice(body)))
    }

    /// Admin / pull listing, oldest first (seq order); see [`ListQuery`].
    pub fn list(&self, q: &ListQuery) -> Result<Page, StorageError> {
        let in_range = |received: u64| {
            q.start_ms.is_none_or(|start| received >= start) && q.end_ms.is_none_or(|end| received < end)
        };
        let (total, picked) = {
            let index = self.inner.shared.read()?;
            let route = match &q.route {
                Some(r) => match index.find_route(r) {
                    Some(id) => Some(id),
                    None => return Ok(page(q, 0, Vec::new())),
                },
                None => None,
            };
            let matches = |e: &Entry| {
                route.is_none_or(|r| e.route == r) && q.state.is_none_or(|s| e.state == s) && in_range(e.received_at_ms)
            };
            // One route and state: walk its set; otherwise the seq-ordered entries.
            let seqs: Box<dyn Iterator<Item = Seq>> = match (route, q.state) {
                (Some(r), Some(s)) => Box::new(index.set(r, s).into_iter().flatten().copied()),
                _ => Box::new(index.entries.iter().map(|(seq, _)| seq)),
            };
            let mut total = 0u64;
            let mut page_seqs = Vec::new();
            for seq in seqs {
                let Some(e) = index.entries.get(seq) else { continue };
                if !matches(e) {
                    continue;
                }
                if total >= q.offset && (page_seqs.len() as u64) < q.limit {
                    page_seqs.push(seq);
                }
                total += 1;
            }
            (total, located(&index, page_seqs))
        };
        let items = picked.iter().map(read_meta).collect::<Result<Vec<_>, _>>()?;
        Ok(page(q, total, items))
    }

    /// Every event id stored with `received_at_ms` at or after `since_ms` (all states; purged
    /// and compacted events are gone), oldest first. Ids of events in sealed segments come from
    /// the segment summaries (one sequential read each); the rest from their records' meta.
    pub fn ids_since(&self, since_ms: u64) -> Result<Vec<SeenId>, StorageError> {
        // (segment, offset, seq) of wanted events in summarised segments, in file order.
        let (mut from_summary, mut direct) = {
            let index = self.inner.shared.read()?;
            let mut from_summary = Vec::new();
            let mut direct = Vec::new();
            for (seq, e) in index.entries.iter().filter(|(_, e)| e.received_at_ms >= since_ms) {
                match index.segments.get(&e.loc.seg) {
                    Some(s) if s.summarized => from_summary.push((e.loc.seg, e.loc.at, seq)),
                    _ => direct.push(seq),
                }
            }
            (from_summary, direct)
        };
        from_summary.sort_unstable();
        let mut out = Vec::with_capacity(from_summary.len() + direct.len());
        for chunk in from_summary.chunk_by(|a, b| a.0 == b.0) {
            let seg = chunk[0].0;
            match Summary::load(&self.inner.dir, seg) {
                Some(sum) => ids_from_summary(&sum, chunk, &mut out, &mut direct),
                // Dropped meanwhile (its events with it) or unreadable: read the records.
                None => direct.extend(chunk.iter().map(|w| w.2)),
            }
        }
        let mut picked = located(&*self.inner.shared.read()?, direct);
        // File order makes the reads sequential.
        picked.sort_unstable_by_key(|(_, e, _, _)| (e.loc.seg, e.loc.at));
        for p in &picked {
            let meta = read_meta(p)?;
            for (i, id) in meta.event_ids.iter().enumerate() {
                out.push(SeenId {
                    route: meta.route.clone(),
                    id: id.clone(),
                    fingerprint: meta.fingerprints.get(i).copied().unwrap_or(0),
                    received_at_ms: meta.received_at_ms,
                });
            }
        }
        out.sort_by(|a, b| (a.received_at_ms, &a.route, &a.id).cmp(&(b.received_at_ms, &b.route, &b.id)));
        Ok(out)
    }

    /// Counts per route and state plus the oldest pending per route, in O(routes).
    pub fn stats(&self) -> Result<Stats, StorageError> {
        let index = self.inner.shared.read()?;
        let mut stats = Stats::default();
        for (&(route, state), set) in &index.sets {
            let rs = stats.routes.entry(index.route_name(route).to_owned()).or_default();
            *rs.slot(state) = set.len() as u64;
            if state == State::Pending {
                // Seq order is acceptance order, so the first pending is the oldest one.
                rs.oldest_pending_received_at_ms = set
                    .first()
                    .and_then(|&seq| index.entries.get(seq))
                    .map(|e| e.received_at_ms);
            }
        }
        Ok(stats)
    }

    /// Number of synced writes to the log, i.e. `fdatasync`s (for group-commit tests and metrics).
    #[doc(hidden)]
    pub fn commits(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Relaxed)
    }

    /// Times the writer started a new segment after a storage error. A forwarder may rescan
    /// `pending()` when this changes.
    pub fn reopens(&self) -> u64 {
        self.inner.shared.reopens.load(Ordering::Relaxed)
    }

    /// Damaged or torn records found (and skipped) when the log was opened.
    pub fn damaged(&self) -> u64 {
        self.inner.shared.damaged.load(Ordering::Relaxed)
    }

    /// Test hook: while set, the writer's writes and syncs fail with ENOSPC.
    #[cfg(test)]
    pub(crate) fn fail_writes(&self, on: bool) {
        self.inner.shared.fail_writes.store(on, Ordering::SeqCst);
    }
}

/// The ids of the `wanted` (segment, offset, seq) events, all in `sum`'s segment and in offset
/// order, from its append entries; events it cannot answer for go to `direct`.
fn ids_from_summary(sum: &Summary, wanted: &[(SegNo, u64, Seq)], out: &mut Vec<SeenId>, direct: &mut Vec<Seq>) {
    let mut wanted = wanted.iter().peekable();
    for e in sum.entries() {
        if e.kind != format::KIND_APPEND {
            continue;
        }
        // Skip wanted events before this entry (not in the summary: read them directly).
        while let Some(&&(_, at, seq)) = wanted.peek() {
            if at >= e.at {
                break;
            }
            direct.push(seq);
            wanted.next();
        }
        let Some(&&(_, at, seq)) = wanted.peek() else { break };
        if at != e.at {
            continue;
        }
        wanted.next();
        let head = format::parse_append_prefix(e.stored, e.payload_len);
        match (head, summary::ids(e.stored)) {
            (Some(head), Some(ids)) if head.seq == seq => {
                out.extend(ids.into_iter().map(|id| SeenId {
                    route: head.route.to_owned(),
                    id: id.id.to_owned(),
                    fingerprint: id.fingerprint,
                    received_at_ms: head.received_at_ms,
                }));
            }
            _ => direct.push(seq),
        }
    }
    direct.extend(wanted.map(|w| w.2));
}

fn page(q: &ListQuery, total: u64, items: Vec<Meta>) -> Page {
    Page {
        count: items.len() as u64,
        offset: q.offset,
        limit: q.limit,
        total,
        items,
    }
}

/// An event, its last error and its segment file.
type Located = (Seq, Entry, Option<String>, Arc<File>);

/// Entries and their segment files, copied out so records are read without holding the lock.
fn located(index: &Index, seqs: impl IntoIterator<Item = Seq>) -> Vec<Located> {
    seqs.into_iter()
        .filter_map(|seq| {
            let e = index.entries.get(seq)?;
            let error = index.last_error(seq).map(str::to_owned);
            Some((seq, *e, error, index.file(e.loc.seg)?))
        })
        .collect()
}

/// Reads an event's whole record and checks its CRC: records of summarised segments were not
/// checked at start-up, so damage there is found here, never served.
fn read_record(seq: Seq, e: &Entry, file: &File) -> Result<Vec<u8>, StorageError> {
    let mut record = vec![0u8; e.loc.record_len() as usize];
    file.read_exact_at(&mut record, e.loc.at)
        .map_err(|err| match err.kind() {
            // Cut short: damage. Anything else may pass (EIO): not a reason to dead-letter.
            std::io::ErrorKind::UnexpectedEof => StorageError::corrupt_record(seq, "cut short"),
            _ => StorageError::Io(format!("record {seq} unreadable: {err}")),
        })?;
    match format::read(&record, 0) {
        format::Found::Record { kind, next, .. } if kind == format::KIND_APPEND && next == record.len() => Ok(record),
        _ => Err(StorageError::corrupt_record(seq, "record fails its check (CRC)")),
    }
}

/// Reads an event's meta JSON and overlays the state the index holds (newer than the JSON).
fn read_meta((seq, e, last_error, file): &Located) -> Result<Meta, StorageError> {
    let seq = *seq;
    let record = read_record(seq, e, file)?;
    let (at, len) = (e.loc.layout.meta_at as usize, e.loc.layout.meta_len as usize);
    let raw = &record[at..at + len];
    let mut meta: Meta = serde_json::from_slice(raw).map_err(|err| StorageError::corrupt_record(seq, err))?;
    if meta.seq != seq {
        return Err(StorageError::corrupt_record(seq, format!("holds seq {}", meta.seq)));
    }
    meta.state = e.state;
    meta.attempts = e.attempts;
    meta.next_attempt_at_ms = e.next_attempt_at_ms;
    meta.updated_at_ms = e.updated_at_ms;
    // The index holds the current error, none after a delivery or a replay.
    meta.last_error.clone_from(last_error);
    Ok(meta)
}

/// The file whose advisory lock marks the directory as in use (`flock`; the kernel drops it
/// when the process dies, so a `kill -9` leaves nothing to clean up).
pub const LOCK_FILE: &str = "LOCK";

/// Takes the directory's lock, or says who is in the way.
fn lock_dir(dir: &Path) -> Result<File, StorageError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Io(format!(
            "{} is in use by another process",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}
