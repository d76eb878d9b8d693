//! The in-process set of seen ids: moka, bounded in entries, each id forgotten after the TTL.

use std::time::Duration;

use super::Key;

pub struct MemorySeen {
    cache: moka::sync::Cache<Key, ()>,
}

impl MemorySeen {
    pub fn new(ttl: Duration, max_entries: u64) -> MemorySeen {
        MemorySeen {
            cache: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
        }
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.cache.contains_key(key)
    }

    pub fn insert(&self, key: Key) {
        self.cache.insert(key, ());
    }

    /// Exact count: moka counts lazily, so pending bookkeeping is run first (cheap; called
    /// for the gauge, not per request).
    pub fn count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}
