//! Mutations as the writer plans them: each operation reads the index (plus what earlier
//! operations of the same batch changed), encodes its log records into the batch buffer and
//! returns the index changes ([`Effect`]s) to apply once the buffer is safely written. Nothing
//! here touches the disk or the shared index.

use std::collections::HashMap;

use super::error::StorageError;
use super::format::{self, StateRec};
use super::index::{Entry, Index, Loc};
use super::model::{Meta, NewDelivery, Seq, State};

/// Longest route name stored (routes are short, config-validated names).
const MAX_ROUTE: usize = 1024;

/// A state change requested by the forwarder or the admin API.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// Taken by the app at attempt number `attempts`.
    Delivered {
        attempts: u32,
    },
    Retry {
        attempts: u32,
        next_attempt_at_ms: u64,
        error: String,
    },
    Dead {
        attempts: u32,
        error: String,
    },
    /// Back to pending, due now, attempts reset, the last error forgotten.
    Replay,
}

/// One slice of a long-running sweep. `resume` is `Some(cursor)` when the sweep stopped at its
/// limit and should be called again from after `cursor`; chunking keeps a big purge from
/// holding the writer (and every waiting append) for long.
pub(crate) struct Chunk<C> {
    pub done: u64,
    pub resume: Option<C>,
}

/// An index change, applied after the batch's write succeeded.
pub(crate) enum Effect {
    /// A new event; `entry.loc.at` is relative to the batch buffer, `route` is interned later.
    Put(Seq, Entry, String),
    Update(StateRec),
    Remove(Seq),
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One batch being planned.
pub(crate) struct Plan<'a> {
    index: &'a Index,
    /// Entries changed by earlier operations of this batch (`None`: removed).
    overlay: HashMap<Seq, Option<Entry>>,
    pub buf: Vec<u8>,
    pub effects: Vec<Effect>,
    pub next_seq: Seq,
    now: u64,
}

impl<'a> Plan<'a> {
    pub(crate) fn new(index: &'a Index, next_seq: Seq, now: u64) -> Self {
        Plan {
            index,
            overlay: HashMap::new(),
            buf: Vec::new(),
            effects: Vec::new(),
            next_seq,
            now,
        }
    }

    fn current(&self, seq: Seq) -> Option<Entry> {
        match self.overlay.get(&seq) {
            Some(e) => *e,
            None => self.index.entries.get(seq).copied(),
        }
    }

    pub(crate) fn append(&mut self, d: NewDelivery) -> Result<Seq, StorageError> {
        let seq = self.next_seq;
        let after = seq
            .checked_add(1)
            .ok_or_else(|| StorageError::Corrupt("sequence space exhausted".into()))?;
        if d.route.len() > MAX_ROUTE || u32::try_from(d.body.len()).is_err() {
            return Err(StorageError::Corrupt("route name or body too long to store".into()));
        }
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
            next_attempt_at_ms: self.now,
            last_error: None,
            updated_at_ms: self.now,
            body_len: d.body.len() as u64,
            quarantine_reason: d.quarantine_reason,
        };
        let json = serde_json::to_vec(&meta).map_err(|e| StorageError::corrupt_record(seq, e))?;
        let (at, layout) = format::append(&mut self.buf, &meta, &json, &d.body);
        let entry = Entry {
            route: 0,
            state,
            attempts: 0,
            received_at_ms: meta.received_at_ms,
            updated_at_ms: self.now,
            next_attempt_at_ms: self.now,
            loc: Loc {
                seg: 0,
                at: at as u64,
                layout,
            },
        };
        self.effects.push(Effect::Put(seq, entry, meta.route));
        self.next_seq = after;
        Ok(seq)
    }

    /// Applies a state change. `Ok(false)`: no such seq.
    pub(crate) fn change(&mut self, seq: Seq, change: Change) -> bool {
        let Some(mut entry) = self.current(seq) else {
            return false;
        };
        let mut rec = StateRec {
            seq,
            state: entry.state,
            attempts: entry.attempts,
            next_attempt_at_ms: entry.next_attempt_at_ms,
            updated_at_ms: self.now,
            last_error: None,
        };
        match change {
            Change::Delivered { attempts } => {
                rec.state = State::Delivered;
                rec.attempts = attempts;
            }
            Change::Retry {
                attempts,
                next_attempt_at_ms,
                error,
            } => {
                rec.state = State::Pending;
                rec.attempts = attempts;
                rec.next_attempt_at_ms = next_attempt_at_ms;
                rec.last_error = Some(error);
            }
            Change::Dead { attempts, error } => {
                rec.state = State::Dead;
                rec.attempts = attempts;
                rec.last_error = Some(error);
            }
            Change::Replay => {
                rec.state = State::Pending;
                rec.attempts = 0;
                rec.next_attempt_at_ms = self.now;
            }
        }
        format::state(&mut self.buf, &rec);
        apply_state(&mut entry, &rec);
        self.overlay.insert(seq, Some(entry));
        self.effects.push(Effect::Update(rec));
        true
    }

    fn remove(&mut self, seq: Seq) {
        format::remove(&mut self.buf, seq);
        self.overlay.insert(seq, None);
        self.effects.push(Effect::Remove(seq));
    }

    /// Seqs of `state` (one route or all) after `after`, in seq order, at most `limit`.
    fn scan_state(&self, route: Option<&str>, state: State, after: Option<Seq>, limit: usize) -> Vec<Seq> {
        let Some(from) = after.map_or(Some(0), |s| s.checked_add(1)) else {
            return Vec::new();
        };
        let routes: Vec<_> = match route {
            Some(r) => self.index.find_route(r).into_iter().collect(),
            None => (0..self.index.routes.len() as u32).collect(),
        };
        let mut out: Vec<Seq> = Vec::new();
        for r in routes {
            if let Some(set) = self.index.set(r, state) {
                out.extend(set.range(from..).take(limit));
            }
        }
        out.sort_unstable();
        out.truncate(limit);
        out
    }

    /// Removes non-pending events of `state`, for one route or all, in seq order after `after`.
    pub(crate) fn purge(&mut self, route: Option<&str>, state: State, after: Option<Seq>, limit: usize) -> Chunk<Seq> {
        if state == State::Pending {
            // Pending events are the ones the sender was promised; only delivery or
            // dead-lettering may take them out of the queue.
            return Chunk { done: 0, resume: None };
        }
        let seqs = self.scan_state(route, state, after, limit);
        let mut done = 0;
        for &seq in &seqs {
            if self.current(seq).is_some_and(|e| e.state == state) {
                self.remove(seq);
                done += 1;
            }
        }
        Chunk {
            done,
            resume: (seqs.len() == limit).then(|| seqs.last().copied()).flatten(),
        }
    }

    /// Dead letters of a route back to pending.
    pub(crate) fn replay_dead(&mut self, route: &str, after: Option<Seq>, limit: usize) -> Chunk<Seq> {
        let seqs = self.scan_state(Some(route), State::Dead, after, limit);
        let mut done = 0;
        for &seq in &seqs {
            if self.current(seq).is_some_and(|e| e.state == State::Dead) && self.change(seq, Change::Replay) {
                done += 1;
            }
        }
        Chunk {
            done,
            resume: (seqs.len() == limit).then(|| seqs.last().copied()).flatten(),
        }
    }

    /// Delivered events whose `updated_at_ms` is before `cutoff_ms`.
    pub(crate) fn compact(&mut self, cutoff_ms: u64, after: Option<(u64, Seq)>, limit: usize) -> Chunk<(u64, Seq)> {
        let start = match after {
            None => std::ops::Bound::Included((0, 0)),
            Some(key) => std::ops::Bound::Excluded(key),
        };
        let end = std::ops::Bound::Excluded((cutoff_ms, 0));
        let keys: Vec<(u64, Seq)> = self.index.delivered.range((start, end)).take(limit).copied().collect();
        let mut done = 0;
        for &(_, seq) in &keys {
            if self
                .current(seq)
                .is_some_and(|e| e.state == State::Delivered && e.updated_at_ms < cutoff_ms)
            {
                self.remove(seq);
                done += 1;
            }
        }
        Chunk {
            done,
            resume: (keys.len() == limit).then(|| keys.last().copied()).flatten(),
        }
    }

    pub(crate) fn probe(&mut self) {
        format::probe(&mut self.buf, self.now);
    }
}

/// What a state record does to an entry (its error goes to the index's side map, see
/// [`Index::set_state`]).
pub(crate) fn apply_state(e: &mut Entry, r: &StateRec) {
    e.state = r.state;
    e.attempts = r.attempts;
    e.next_attempt_at_ms = r.next_attempt_at_ms;
    e.updated_at_ms = r.updated_at_ms;
}
