//! The in-memory index over the log: one small [`Entry`] per stored event (where its record
//! lies and its current state), plus the sets the forwarder, the admin API and compaction walk.
//! Rebuilt from the log at start; only the writer thread mutates it, after its write is safe.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::sync::Arc;

use super::entries::EntryMap;
use super::format::{AppendLayout, StateRec};
use super::model::{Seq, State};
use super::ops::apply_state;

pub(crate) type RouteId = u32;
pub(crate) type SegNo = u32;

/// What the index keeps per event: enough to list, filter and sweep without reading the log.
/// Kept small (72 bytes; a million of them are held): the last error lives in a side map.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub route: RouteId,
    pub state: State,
    pub attempts: u32,
    pub received_at_ms: u64,
    pub updated_at_ms: u64,
    pub next_attempt_at_ms: u64,
    pub loc: Loc,
}

/// Where an append record lies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Loc {
    pub seg: SegNo,
    pub at: u64,
    pub layout: AppendLayout,
}

impl Loc {
    pub(crate) fn record_len(&self) -> u64 {
        u64::from(self.layout.body_at) + u64::from(self.layout.body_len)
    }
}

pub(crate) struct Segment {
    pub file: Arc<File>,
    /// Bytes of live append records in it (for copy-forward decisions).
    pub live_bytes: u64,
    pub live: u64,
    /// Bytes written to it so far.
    pub written: u64,
    /// Sealed, and its summary file written (`ids_since` reads ids from there).
    pub summarized: bool,
}

impl Segment {
    /// A segment holding nothing live yet, `written` bytes long.
    pub(crate) fn empty(file: Arc<File>, written: u64) -> Segment {
        Segment {
            file,
            live_bytes: 0,
            live: 0,
            written,
            summarized: false,
        }
    }
}

#[derive(Default)]
pub(crate) struct Index {
    pub entries: EntryMap,
    /// Last error per event, set by a state record after the append was written (the
    /// append's JSON has older ones); only retried and dead events have one.
    errors: HashMap<Seq, Box<str>>,
    pub routes: Vec<String>,
    route_ids: HashMap<String, RouteId>,
    /// Seqs per (route, state), in seq order: pending(), per-route listing, sweeps, stats.
    pub sets: HashMap<(RouteId, State), BTreeSet<Seq>>,
    /// (updated_at_ms, seq) of delivered events: compaction by age.
    pub delivered: BTreeSet<(u64, Seq)>,
    pub segments: BTreeMap<SegNo, Segment>,
}

impl Index {
    pub(crate) fn route_id(&mut self, route: &str) -> RouteId {
        if let Some(&id) = self.route_ids.get(route) {
            return id;
        }
        let id = self.routes.len() as RouteId;
        self.routes.push(route.to_owned());
        self.route_ids.insert(route.to_owned(), id);
        id
    }

    pub(crate) fn find_route(&self, route: &str) -> Option<RouteId> {
        self.route_ids.get(route).copied()
    }

    pub(crate) fn route_name(&self, id: RouteId) -> &str {
        self.routes.get(id as usize).map_or("", String::as_str)
    }

    pub(crate) fn set(&self, route: RouteId, state: State) -> Option<&BTreeSet<Seq>> {
        self.sets.get(&(route, state))
    }

    /// Inserts or replaces an event (a new append: no last error yet). `replay`: during the
    /// start-up replay, where out-of-order seqs are merged once at the end.
    pub(crate) fn put(&mut self, seq: Seq, entry: Entry, replay: bool) {
        self.remove(seq);
        self.link(seq, &entry);
        if let Some(s) = self.segments.get_mut(&entry.loc.seg) {
            s.live += 1;
            s.live_bytes += entry.loc.record_len();
        }
        self.entries.insert(seq, entry, replay);
    }

    /// Applies a state change to a stored event; `false` if there is none.
    pub(crate) fn update(&mut self, seq: Seq, f: impl FnOnce(&mut Entry)) -> bool {
        let Some(old) = self.entries.get(seq).copied() else {
            return false;
        };
        let mut entry = old;
        f(&mut entry);
        self.unlink(seq, &old);
        self.link(seq, &entry);
        if let Some(slot) = self.entries.get_mut(seq) {
            *slot = entry;
        }
        true
    }

    /// Applies a logged state change, its error included (none: a delivery or a replay, after
    /// which the event has no error); `false`: no such event.
    pub(crate) fn set_state(&mut self, r: &StateRec) -> bool {
        if !self.update(r.seq, |e| apply_state(e, r)) {
            return false;
        }
        match &r.last_error {
            Some(err) => self.errors.insert(r.seq, err.as_str().into()),
            None => self.errors.remove(&r.seq),
        };
        true
    }

    pub(crate) fn last_error(&self, seq: Seq) -> Option<&str> {
        self.errors.get(&seq).map(|e| &**e)
    }

    /// Points an event at a copy of its record (copy-forward), keeping everything else.
    pub(crate) fn relocate(&mut self, seq: Seq, loc: Loc) {
        let Some(entry) = self.entries.get_mut(seq) else { return };
        let old = std::mem::replace(&mut entry.loc, loc);
        if let Some(s) = self.segments.get_mut(&old.seg) {
            s.live = s.live.saturating_sub(1);
            s.live_bytes = s.live_bytes.saturating_sub(old.record_len());
        }
        if let Some(s) = self.segments.get_mut(&loc.seg) {
            s.live += 1;
            s.live_bytes += loc.record_len();
        }
    }

    pub(crate) fn remove(&mut self, seq: Seq) -> Option<Entry> {
        let entry = self.entries.remove(seq)?;
        self.errors.remove(&seq);
        self.unlink(seq, &entry);
        if let Some(s) = self.segments.get_mut(&entry.loc.seg) {
            s.live = s.live.saturating_sub(1);
            s.live_bytes = s.live_bytes.saturating_sub(entry.loc.record_len());
        }
        Some(entry)
    }

    fn link(&mut self, seq: Seq, e: &Entry) {
        self.sets.entry((e.route, e.state)).or_default().insert(seq);
        if e.state == State::Delivered {
            self.delivered.insert((e.updated_at_ms, seq));
        }
    }

    fn unlink(&mut self, seq: Seq, e: &Entry) {
        if let Some(set) = self.sets.get_mut(&(e.route, e.state)) {
            set.remove(&seq);
            if set.is_empty() {
                self.sets.remove(&(e.route, e.state));
            }
        }
        if e.state == State::Delivered {
            self.delivered.remove(&(e.updated_at_ms, seq));
        }
    }

    pub(crate) fn file(&self, seg: SegNo) -> Option<Arc<File>> {
        self.segments.get(&seg).map(|s| s.file.clone())
    }
}
