//! The index's sorted-array map: in-order pushes, holes and their compaction, and the
//! out-of-order inserts of a start-up replay merged by `settle`.

use super::super::entries::EntryMap;
use super::super::format::AppendLayout;
use super::super::index::{Entry, Loc};
use super::super::State;

fn entry(seq: u64) -> Entry {
    Entry {
        route: 0,
        state: State::Pending,
        attempts: 0,
        received_at_ms: seq * 10,
        updated_at_ms: 0,
        next_attempt_at_ms: 0,
        loc: Loc {
            seg: 1,
            at: seq,
            layout: AppendLayout {
                meta_at: 0,
                meta_len: 0,
                body_at: 0,
                body_len: 0,
            },
        },
    }
}

fn seqs(m: &EntryMap) -> Vec<u64> {
    m.iter()
        .map(|(seq, e)| {
            assert_eq!(e.received_at_ms, seq * 10, "entry {seq} is its own");
            seq
        })
        .collect()
}

#[test]
fn entry_stays_small() {
    assert!(std::mem::size_of::<Entry>() <= 72, "{}", std::mem::size_of::<Entry>());
    assert_eq!(std::mem::size_of::<Option<Entry>>(), std::mem::size_of::<Entry>());
}

#[test]
fn removals_leave_holes_that_are_compacted_and_lookups_stay_right() {
    let mut m = EntryMap::default();
    for seq in 1..=5000 {
        assert!(m.insert(seq, entry(seq), false).is_none());
    }
    // Remove 4 of every 5: compaction runs on the way.
    for seq in (1..=5000).filter(|s| s % 5 != 0) {
        assert!(m.remove(seq).is_some());
        assert!(m.remove(seq).is_none(), "removed once");
    }
    assert_eq!(m.len(), 1000);
    assert_eq!(seqs(&m), (1..=1000).map(|i| i * 5).collect::<Vec<_>>());
    for seq in 1..=5000 {
        assert_eq!(m.get(seq).is_some(), seq % 5 == 0, "seq {seq}");
    }
    // A replaced entry keeps its place; a new one below the top goes in order.
    assert!(m.insert(10, entry(10), false).is_some());
    assert!(m.insert(12, entry(12), false).is_none());
    assert_eq!(m.len(), 1001);
    assert_eq!(&seqs(&m)[..4], &[5, 10, 12, 15]);
}

#[test]
fn replay_inserts_out_of_order_are_merged_by_settle() {
    let mut m = EntryMap::default();
    for seq in [10, 20, 30, 40] {
        m.insert(seq, entry(seq), true);
    }
    // Copies of events whose first segment is gone arrive after higher seqs.
    for seq in [5, 25, 35] {
        m.insert(seq, entry(seq), true);
    }
    m.insert(50, entry(50), true);
    assert!(m.remove(35).is_some(), "a late entry can be removed");
    assert!(m.get_mut(25).is_some(), "and changed");
    assert!(m.remove(20).is_some());
    assert_eq!(m.len(), 6);
    m.settle();
    assert_eq!(seqs(&m), vec![5, 10, 25, 30, 40, 50]);
    m.insert(60, entry(60), false);
    assert_eq!(m.get(25).map(|e| e.loc.at), Some(25));
    assert_eq!(m.len(), 7);
}
