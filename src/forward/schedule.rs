//! Which of a route's pending events may be sent now, in O(log n) per event.
//!
//! Events go in acceptance (seq) order; an event whose ordering key is shared with an earlier
//! undelivered one waits until that one is delivered or dead. Each key has one *active* event
//! (ready, waiting for its retry time, or in flight); the others sleep in its chain and are
//! never looked at. The first version scanned the whole window (4,096 events) on every message
//! and hashed each key: with one busy transaction (every bench event shares one
//! `transactionReference`) that was 37% of pushgate's CPU (bench/profile.sh, 2026-12-02).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use crate::spool::Seq;

#[derive(Default)]
pub struct Schedule {
    /// Active events due now, in seq order.
    ready: BTreeSet<Seq>,
    /// Active events due later, by time.
    waiting: BTreeSet<(Instant, Seq)>,
    /// Per ordering key: the undelivered events in seq order, and the active one.
    chains: HashMap<String, Chain>,
}

#[derive(Default)]
struct Chain {
    seqs: BTreeSet<Seq>,
    active: Option<Seq>,
}

impl Schedule {
    /// A new undelivered event, due at `due`.
    pub fn add(&mut self, seq: Seq, key: Option<&str>, due: Instant) {
        let Some(key) = key else {
            self.arm(seq, due);
            return;
        };
        let chain = self.chains.entry(key.to_string()).or_default();
        chain.seqs.insert(seq);
        if chain.active.is_none() {
            chain.active = Some(seq);
            self.arm(seq, due);
        }
    }

    /// The next event that may start now (taken off the schedule until `retry` or `done`).
    pub fn next(&mut self, now: Instant) -> Option<Seq> {
        while let Some(&(due, seq)) = self.waiting.first() {
            if due > now {
                break;
            }
            self.waiting.pop_first();
            self.ready.insert(seq);
        }
        self.ready.pop_first()
    }

    /// When the earliest waiting event falls due.
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting.first().map(|&(due, _)| due)
    }

    /// A started event is finished (delivered or dead): the next of its key becomes active.
    /// Returns that event, for the caller to `arm` with its due time.
    pub fn done(&mut self, seq: Seq, key: Option<&str>) -> Option<Seq> {
        let key = key?;
        let chain = self.chains.get_mut(key)?;
        chain.seqs.remove(&seq);
        if chain.active == Some(seq) {
            chain.active = chain.seqs.first().copied();
        }
        let next = chain.active;
        if chain.seqs.is_empty() {
            self.chains.remove(key);
        }
        next
    }

    /// Puts an active event on the schedule: a new one, the next of its key, or a started one
    /// that failed and goes again at `due` (its key stays held meanwhile).
    pub fn arm(&mut self, seq: Seq, due: Instant) {
        self.waiting.insert((due, seq));
    }

    /// Events on the schedule (ready or waiting), for tests and gauges.
    #[cfg(test)]
    fn armed(&self) -> usize {
        self.ready.len() + self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn drain(s: &mut Schedule, now: Instant) -> Vec<Seq> {
        std::iter::from_fn(|| s.next(now)).collect()
    }

    #[test]
    fn events_without_a_key_go_in_seq_order() {
        let (mut s, now) = (Schedule::default(), Instant::now());
        for seq in [3, 1, 2] {
            s.add(seq, None, now);
        }
        assert_eq!(drain(&mut s, now), vec![1, 2, 3]);
    }

    #[test]
    fn a_key_holds_later_events_until_the_first_is_done() {
        let (mut s, now) = (Schedule::default(), Instant::now());
        s.add(1, Some("T1"), now);
        s.add(2, Some("T1"), now);
        s.add(3, Some("T2"), now);
        s.add(4, None, now);
        assert_eq!(drain(&mut s, now), vec![1, 3, 4]);
        assert_eq!(s.done(1, Some("T1")), Some(2));
        s.arm(2, now);
        assert_eq!(drain(&mut s, now), vec![2]);
        assert_eq!(s.done(2, Some("T1")), None);
        assert_eq!(s.done(3, Some("T2")), None);
        assert!(s.chains.is_empty());
    }

    #[test]
    fn a_retry_keeps_its_key_held_and_comes_back_when_due() {
        let (mut s, now) = (Schedule::default(), Instant::now());
        s.add(1, Some("T"), now);
        s.add(2, Some("T"), now);
        assert_eq!(drain(&mut s, now), vec![1]);
        let later = now + Duration::from_secs(5);
        s.arm(1, later);
        assert_eq!(s.next(now), None, "2 waits behind 1's retry");
        assert_eq!(s.next_due(), Some(later));
        assert_eq!(drain(&mut s, later), vec![1]);
    }

    #[test]
    fn a_later_due_time_is_waited_for() {
        let (mut s, now) = (Schedule::default(), Instant::now());
        let later = now + Duration::from_millis(10);
        s.add(1, None, later);
        s.add(2, None, now);
        assert_eq!(drain(&mut s, now), vec![2]);
        assert_eq!(drain(&mut s, later), vec![1]);
    }

    #[test]
    fn one_key_with_a_full_window_arms_one_event() {
        let (mut s, now) = (Schedule::default(), Instant::now());
        for seq in 0..4096 {
            s.add(seq, Some("same transaction"), now);
        }
        assert_eq!(s.armed(), 1);
        let mut order = Vec::new();
        while let Some(seq) = s.next(now) {
            order.push(seq);
            if let Some(next) = s.done(seq, Some("same transaction")) {
                s.arm(next, now);
            }
        }
        assert_eq!(order, (0..4096).collect::<Vec<_>>());
    }
}
