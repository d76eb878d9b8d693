//! Mutations, applied by the writer inside a batch's write transaction. Each operation reads
//! first and writes last, so a failure while reading only fails that operation
//! ([`OpError::Rejected`]), while a failure once writing has started fails the whole batch
//! ([`OpError::Fatal`]) because the transaction may be half-updated.

use redb::ReadableTable;

use super::error::StorageError;
use super::model::{Meta, NewDelivery, Seq, State};
use super::schema::{encode_meta, Tables, KEY_NEXT_SEQ};

pub(crate) enum OpError {
    Rejected(StorageError),
    Fatal(StorageError),
}

impl From<StorageError> for OpError {
    fn from(err: StorageError) -> Self {
        OpError::Fatal(err)
    }
}

impl From<redb::StorageError> for OpError {
    fn from(err: redb::StorageError) -> Self {
        OpError::Fatal(err.into())
    }
}

type OpResult<T> = Result<T, OpError>;

fn reject<T>(r: Result<T, StorageError>) -> OpResult<T> {
    r.map_err(OpError::Rejected)
}

/// A state change requested by the forwarder or the admin API.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    Delivered,
    Retry {
        attempts: u32,
        next_attempt_at_ms: u64,
        error: String,
    },
    Dead {
        attempts: u32,
        error: String,
    },
    /// Back to pending, due now, attempts reset.
    Replay,
}

/// One slice of a long-running sweep. `resume` is `Some(cursor)` when the sweep stopped at its
/// limit and should be called again from after `cursor`; chunking keeps a big purge from
/// holding the writer (and every waiting append) for seconds.
pub(crate) struct Chunk<C> {
    pub done: u64,
    pub resume: Option<C>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn append(t: &mut Tables, next_seq: &mut Seq, d: NewDelivery, now: u64) -> OpResult<Seq> {
    let seq = *next_seq;
    let after = reject(
        seq.checked_add(1)
            .ok_or_else(|| StorageError::Corrupt("sequence space exhausted".into())),
    )?;
    let state = if d.quarantine_reason.is_some() {
        State::Quarantined
    } else {
        State::Pending
    };
    let meta = Meta {
        seq,
        route: d.route,
        event_ids: d.event_ids,
        fingerprints: d.fingerprints,
        ordering_key: d.ordering_key,
        received_at_ms: d.received_at_ms,
        client_dn: d.client_dn,
        headers: d.headers,
        state,
        attempts: 0,
        next_attempt_at_ms: now,
        last_error: None,
        updated_at_ms: now,
        body_len: d.body.len() as u64,
        quarantine_reason: d.quarantine_reason,
    };
    let encoded = reject(encode_meta(&meta))?;

    t.meta.insert(seq, encoded.as_slice())?;
    t.body.insert(seq, d.body.as_ref())?;
    index(t, &meta)?;
    for id in &meta.event_ids {
        t.ids
            .insert((meta.received_at_ms, meta.route.as_str(), id.as_str(), seq), ())?;
    }
    t.config.insert(KEY_NEXT_SEQ, after)?;
    *next_seq = after;
    Ok(seq)
}

/// Applies a state change. `Ok(false)`: no such seq.
pub(crate) fn change(t: &mut Tables, seq: Seq, change: Change, now: u64) -> OpResult<bool> {
    let Some(before) = reject(t.read_meta(seq))? else {
        return Ok(false);
    };
    let mut after = before.clone();
    match change {
        Change::Delivered => after.state = State::Delivered,
        Change::Retry {
            attempts,
            next_attempt_at_ms,
            error,
        } => {
            after.state = State::Pending;
            after.attempts = attempts;
            after.next_attempt_at_ms = next_attempt_at_ms;
            after.last_error = Some(error);
        }
        Change::Dead { attempts, error } => {
            after.state = State::Dead;
            after.attempts = attempts;
            after.last_error = Some(error);
        }
        Change::Replay => {
            after.state = State::Pending;
            after.attempts = 0;
            after.next_attempt_at_ms = now;
        }
    }
    after.updated_at_ms = now;
    let encoded = reject(encode_meta(&after))?;

    unindex(t, &before)?;
    index(t, &after)?;
    t.meta.insert(seq, encoded.as_slice())?;
    Ok(true)
}

/// Removes non-pending events of `state`, for one route or all, in seq order after `after`.
pub(crate) fn purge(
    t: &mut Tables,
    route: Option<&str>,
    state: State,
    after: Option<Seq>,
    limit: usize,
) -> OpResult<Chunk<Seq>> {
    if state == State::Pending {
        // Pending events are the ones the sender was promised; only delivery or dead-lettering
        // may take them out of the queue.
        return Ok(Chunk { done: 0, resume: None });
    }
    let seqs = reject(scan_state(t, route, state, after, limit))?;
    let mut done = 0;
    for &seq in &seqs {
        if let Some(meta) = load_for_sweep(t, seq)? {
            remove(t, &meta)?;
            done += 1;
        }
    }
    Ok(Chunk {
        done,
        resume: (seqs.len() == limit).then(|| seqs.last().copied()).flatten(),
    })
}

/// Dead letters of a route back to pending.
pub(crate) fn replay_dead(
    t: &mut Tables,
    route: &str,
    after: Option<Seq>,
    limit: usize,
    now: u64,
) -> OpResult<Chunk<Seq>> {
    let seqs = reject(scan_state(t, Some(route), State::Dead, after, limit))?;
    let mut done = 0;
    for &seq in &seqs {
        // A corrupt record is skipped (and logged) rather than failing the whole replay.
        match change(t, seq, Change::Replay, now) {
            Ok(true) => done += 1,
            Ok(false) => {}
            Err(OpError::Rejected(e)) => {
                tracing::error!(seq, error = %e, "spool: replay skipped a record")
            }
            Err(fatal) => return Err(fatal),
        }
    }
    Ok(Chunk {
        done,
        resume: (seqs.len() == limit).then(|| seqs.last().copied()).flatten(),
    })
}

/// Delivered events whose `updated_at_ms` is before `cutoff_ms`.
pub(crate) fn compact(
    t: &mut Tables,
    cutoff_ms: u64,
    after: Option<(u64, Seq)>,
    limit: usize,
) -> OpResult<Chunk<(u64, Seq)>> {
    let keys = reject(scan_delivered(t, cutoff_ms, after, limit))?;
    let mut done = 0;
    for &(_, seq) in &keys {
        if let Some(meta) = load_for_sweep(t, seq)? {
            remove(t, &meta)?;
            done += 1;
        }
    }
    Ok(Chunk {
        done,
        resume: (keys.len() == limit).then(|| keys.last().copied()).flatten(),
    })
}

fn scan_state(
    t: &Tables,
    route: Option<&str>,
    state: State,
    after: Option<Seq>,
    limit: usize,
) -> Result<Vec<Seq>, StorageError> {
    let Some(from) = after.map_or(Some(0), |s| s.checked_add(1)) else {
        return Ok(Vec::new());
    };
    let code = state.code();
    let mut out = Vec::new();
    match route {
        Some(route) => {
            for row in t
                .by_route
                .range((route, code, from)..=(route, code, Seq::MAX))?
                .take(limit)
            {
                out.push(row?.0.value().2);
            }
        }
        None => {
            for row in t.by_state.range((code, from)..=(code, Seq::MAX))?.take(limit) {
                out.push(row?.0.value().1);
            }
        }
    }
    Ok(out)
}

fn scan_delivered(
    t: &Tables,
    cutoff_ms: u64,
    after: Option<(u64, Seq)>,
    limit: usize,
) -> Result<Vec<(u64, Seq)>, StorageError> {
    let start = match after {
        None => std::ops::Bound::Included((0, 0)),
        Some(key) => std::ops::Bound::Excluded(key),
    };
    let end = std::ops::Bound::Excluded((cutoff_ms, 0));
    let mut out = Vec::new();
    for row in t.delivered.range::<(u64, Seq)>((start, end))?.take(limit) {
        out.push(row?.0.value());
    }
    Ok(out)
}

/// In a sweep, a record that cannot be decoded is logged and left in place (the cursor moves
/// past it) so one bad record cannot stall compaction forever.
fn load_for_sweep(t: &Tables, seq: Seq) -> OpResult<Option<Meta>> {
    match t.read_meta(seq) {
        Ok(meta) => Ok(meta),
        Err(e @ StorageError::Corrupt(_)) => {
            tracing::error!(seq, error = %e, "spool: sweep skipped an unreadable record");
            Ok(None)
        }
        Err(e) => Err(OpError::Fatal(e)),
    }
}

fn remove(t: &mut Tables, meta: &Meta) -> Result<(), StorageError> {
    unindex(t, meta)?;
    for id in &meta.event_ids {
        t.ids
            .remove((meta.received_at_ms, meta.route.as_str(), id.as_str(), meta.seq))?;
    }
    t.body.remove(meta.seq)?;
    t.meta.remove(meta.seq)?;
    Ok(())
}

/// Adds the state-dependent index rows and the counter of `meta`.
fn index(t: &mut Tables, meta: &Meta) -> Result<(), StorageError> {
    let code = meta.state.code();
    t.by_route
        .insert((meta.route.as_str(), code, meta.seq), meta.received_at_ms)?;
    t.by_state.insert((code, meta.seq), meta.received_at_ms)?;
    if meta.state == State::Delivered {
        t.delivered.insert((meta.updated_at_ms, meta.seq), ())?;
    }
    t.bump(&meta.route, meta.state, 1)
}

/// Inverse of [`index`], for the record as it is stored now.
fn unindex(t: &mut Tables, meta: &Meta) -> Result<(), StorageError> {
    let code = meta.state.code();
    t.by_route.remove((meta.route.as_str(), code, meta.seq))?;
    t.by_state.remove((code, meta.seq))?;
    if meta.state == State::Delivered {
        t.delivered.remove((meta.updated_at_ms, meta.seq))?;
    }
    t.bump(&meta.route, meta.state, -1)
}
