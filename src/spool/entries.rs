//! The seq → [`Entry`] map of the index, as a sorted `Vec` instead of a `BTreeMap`: seqs only
//! grow, so nearly every insert is a push, and a flat array costs ~80 bytes per event where the
//! B-tree (half-full nodes under in-order inserts) cost ~175 (1M events: RSS after open
//! 143 MiB, was 280–310; BENCHMARKS.md "Start-up and memory"). Removed events leave a hole
//! (`None`, free thanks to `State`'s niche) until holes are half the array, then it is
//! compacted in one pass.
//!
//! Out-of-order inserts happen only at start-up (an event copied forward into a later segment
//! after its first segment was dropped); they wait in `late` and are merged by [`settle`].
//!
//! [`settle`]: EntryMap::settle

use std::collections::BTreeMap;

use super::index::Entry;
use super::model::Seq;

/// Holes are compacted away once they are more than half the array (and it is not tiny).
const COMPACT_MIN: usize = 1024;

#[derive(Default)]
pub(crate) struct EntryMap {
    /// Strictly increasing seqs; `None`: removed.
    slots: Vec<(Seq, Option<Entry>)>,
    live: usize,
    /// Inserts below the last seq that found no slot, during start-up (see the module doc).
    late: BTreeMap<Seq, Entry>,
}

impl EntryMap {
    fn find(&self, seq: Seq) -> Result<usize, usize> {
        self.slots.binary_search_by_key(&seq, |s| s.0)
    }

    pub(crate) fn len(&self) -> usize {
        self.live + self.late.len()
    }

    pub(crate) fn get(&self, seq: Seq) -> Option<&Entry> {
        match self.find(seq) {
            Ok(i) => self.slots[i].1.as_ref(),
            Err(_) => self.late.get(&seq),
        }
    }

    pub(crate) fn get_mut(&mut self, seq: Seq) -> Option<&mut Entry> {
        match self.find(seq) {
            Ok(i) => self.slots[i].1.as_mut(),
            Err(_) => self.late.get_mut(&seq),
        }
    }

    /// Inserts or replaces; returns the entry replaced. `bulk`: out-of-order inserts wait for
    /// [`EntryMap::settle`] instead of shifting the array (start-up replay).
    pub(crate) fn insert(&mut self, seq: Seq, entry: Entry, bulk: bool) -> Option<Entry> {
        // A seq waiting in `late` is below the last slot, so a bigger one is never there.
        if self.slots.last().is_none_or(|l| l.0 < seq) {
            self.slots.push((seq, Some(entry)));
            self.live += 1;
            return None;
        }
        match self.find(seq) {
            Ok(i) => {
                let old = self.slots[i].1.replace(entry);
                if old.is_none() {
                    self.live += 1;
                }
                old
            }
            Err(_) if bulk || !self.late.is_empty() => self.late.insert(seq, entry),
            Err(i) => {
                self.slots.insert(i, (seq, Some(entry)));
                self.live += 1;
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, seq: Seq) -> Option<Entry> {
        let Ok(i) = self.find(seq) else {
            return self.late.remove(&seq);
        };
        let old = self.slots[i].1.take()?;
        self.live -= 1;
        if self.slots.len() >= COMPACT_MIN && self.live < self.slots.len() / 2 {
            self.slots.retain(|s| s.1.is_some());
            self.slots.shrink_to(self.slots.len() * 5 / 4);
        }
        Some(old)
    }

    /// Merges the out-of-order inserts of a start-up replay into the array, in one pass.
    pub(crate) fn settle(&mut self) {
        if self.late.is_empty() {
            return;
        }
        let late = std::mem::take(&mut self.late);
        let slots = std::mem::take(&mut self.slots);
        let mut merged = Vec::with_capacity(self.live + late.len());
        let mut late = late.into_iter().peekable();
        for (seq, e) in slots.into_iter().filter(|s| s.1.is_some()) {
            while let Some((l, le)) = late.next_if(|(l, _)| *l < seq) {
                merged.push((l, Some(le)));
            }
            merged.push((seq, e));
        }
        merged.extend(late.map(|(l, le)| (l, Some(le))));
        self.live = merged.len();
        self.slots = merged;
    }

    /// Live entries in seq order (after [`EntryMap::settle`]).
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (Seq, &Entry)> + '_ {
        self.slots.iter().filter_map(|(seq, e)| Some((*seq, e.as_ref()?)))
    }
}
