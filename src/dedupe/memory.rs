//! The in-process set of seen ids: bounded in entries, each id forgotten after the TTL.
//!
//! Ids expire in the order they were remembered, so a map from key to deadline and a queue in
//! insertion order are all it takes: the queue's front is always the next to expire or, when
//! the set is full, the oldest to evict. A million ids take 76 MiB of RSS (measured; a
//! general-purpose cache, moka, took 330 MiB for the same). Sharded so concurrent requests rarely
//! wait on one lock.
//!
//! Each id keeps the fingerprint of the content it was first seen with: 8 bytes more per id
//! (a map entry is key 16 + deadline 8 + fingerprint 8 bytes). A version of an id whose content
//! differs is remembered as one more entry under its version key ([`Key::version`]), so only
//! conflicting ids cost more. With Redis, ids learned from Redis are remembered here too, for
//! what Redis has left of their TTL (`insert_for`): a shorter deadline behind a longer one is
//! then dropped late, when it reaches the front, but never answered after it passed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Key;

const SHARDS: usize = 16;

pub struct MemorySeen {
    shards: Vec<Mutex<Shard>>,
    ttl_ms: u64,
    per_shard: usize,
    epoch: Instant,
}

#[derive(Default)]
struct Shard {
    /// Key → the deadline (ms since `epoch`) of its latest remembering, and the fingerprint
    /// of the content first seen with it (0: unknown, matches any content).
    deadline: HashMap<Key, (u64, u64)>,
    /// Every remembering in order; an entry whose deadline no longer matches the map's is a
    /// superseded one and is dropped when it reaches the front.
    order: VecDeque<(Key, u64)>,
}

impl MemorySeen {
    pub fn new(ttl: Duration, max_entries: u64) -> MemorySeen {
        let per_shard = (max_entries as usize).div_ceil(SHARDS).max(1);
        MemorySeen {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            ttl_ms: ttl.as_millis() as u64,
            per_shard,
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn shard(&self, key: &Key) -> std::sync::MutexGuard<'_, Shard> {
        // Keys are SHA-256 bytes: the first one spreads them evenly. A poisoned shard is still
        // consistent (every change is a single insert or remove), so it stays usable.
        self.shards[usize::from(key.0[0]) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub fn contains(&self, key: &Key) -> bool {
        self.get(key).is_some()
    }

    /// The fingerprint the id was first seen with, if it is remembered.
    pub fn get(&self, key: &Key) -> Option<u64> {
        let now = self.now();
        self.shard(key)
            .deadline
            .get(key)
            .and_then(|&(d, fp)| (d > now).then_some(fp))
    }

    /// Remembers `key` for the TTL. An id already remembered keeps its first fingerprint.
    pub fn insert(&self, key: Key, fingerprint: u64) {
        self.insert_for(key, fingerprint, self.ttl_ms);
    }

    /// Remembers `key` for `for_ms` at most the TTL (what Redis has left of it).
    pub fn insert_for(&self, key: Key, fingerprint: u64, for_ms: u64) {
        let now = self.now();
        let deadline = now + for_ms.min(self.ttl_ms);
        let mut shard = self.shard(&key);
        let first = match shard.deadline.get(&key) {
            Some(&(d, fp)) if d > now && fp != 0 => fp,
            _ => fingerprint,
        };
        // Remembered again within the same millisecond: the queued entry already says it.
        if shard.deadline.insert(key, (deadline, first)).map(|(d, _)| d) != Some(deadline) {
            shard.order.push_back((key, deadline));
        }
        shard.evict(now, self.per_shard);
    }

    /// Ids remembered and not yet expired.
    pub fn count(&self) -> u64 {
        let now = self.now();
        self.shards
            .iter()
            .map(|s| {
                let mut shard = s.lock().unwrap_or_else(|p| p.into_inner());
                shard.evict(now, self.per_shard);
                shard.deadline.len() as u64
            })
            .sum()
    }
}

impl Shard {
    /// Drops expired ids, and the oldest while over `cap`.
    fn evict(&mut self, now: u64, cap: usize) {
        while let Some(&(key, deadline)) = self.order.front() {
            let superseded = self.deadline.get(&key).map(|&(d, _)| d) != Some(deadline);
            if !(superseded || deadline <= now || self.deadline.len() > cap) {
                break;
            }
            self.order.pop_front();
            if !superseded {
                self.deadline.remove(&key);
            }
        }
        // Superseded entries can pile up behind a live front only when one id is remembered
        // again and again; compacting then keeps the queue within twice the map.
        if self.order.len() > 2 * self.deadline.len() + 64 {
            let live = &self.deadline;
            self.order.retain(|(k, d)| live.get(k).map(|&(l, _)| l) == Some(*d));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k[4] = (i % 251) as u8;
        Key(k)
    }

    #[test]
    fn remembers_until_the_ttl_then_forgets() {
        let m = MemorySeen::new(Duration::from_millis(100), 100);
        m.insert(key(1), 7);
        assert!(m.contains(&key(1)));
        assert!(!m.contains(&key(2)));
        std::thread::sleep(Duration::from_millis(150));
        assert!(!m.contains(&key(1)));
        assert_eq!(m.count(), 0);
    }

    #[test]
    fn keeps_the_first_fingerprint_and_forgets_early_what_redis_forgets_early() {
        let m = MemorySeen::new(Duration::from_secs(60), 100);
        m.insert(key(1), 0xaa);
        m.insert(key(1), 0xbb);
        assert_eq!(m.get(&key(1)), Some(0xaa), "the first content stays the reference");
        m.insert(key(2), 0);
        m.insert(key(2), 0xcc);
        assert_eq!(m.get(&key(2)), Some(0xcc), "an unknown fingerprint is learned");
        m.insert_for(key(3), 0xdd, 50);
        assert_eq!(m.get(&key(3)), Some(0xdd));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(m.get(&key(3)), None);
        assert_eq!(m.get(&key(1)), Some(0xaa));
    }

    #[test]
    fn stays_within_its_bound_dropping_the_oldest() {
        let m = MemorySeen::new(Duration::from_secs(60), 1600);
        for i in 0..10_000 {
            m.insert(key(i), 1);
        }
        assert!(m.count() <= 1600 + SHARDS as u64);
        assert!(m.contains(&key(9_999)), "the newest is kept");
        assert!(!m.contains(&key(0)), "the oldest is dropped");
    }

    #[test]
    fn remembering_again_extends_and_does_not_grow_the_queue_without_bound() {
        let m = MemorySeen::new(Duration::from_secs(60), 100);
        for _ in 0..10_000 {
            m.insert(key(7), 1);
        }
        assert_eq!(m.count(), 1);
        let shard = m.shard(&key(7));
        assert_eq!(shard.deadline[&key(7)].1, 1);
        assert!(shard.order.len() <= 2 * shard.deadline.len() + 65);
    }
}
