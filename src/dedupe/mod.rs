//! The duplicate memory: claim an id before its event is stored, mark it seen only once the
//! event is safe (durable, or delivered in `ack: upstream`), release it otherwise.
//!
//! The in-flight table makes the claim atomic: of N concurrent copies of one new event, one
//! claims it and the others wait for its outcome — seen (they are duplicates) or released
//! (one of them claims it next). No copy is answered 200 for an event that was then not stored.

mod memory;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use memory::MemorySeen;

use crate::profile::EventId;
use crate::route::RouteName;

/// An id within its route, reduced to 128 bits of SHA-256: a fixed 16 bytes per remembered
/// id keeps a million ids small, and a collision is beyond reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 16]);

impl Key {
    pub fn new(route: &RouteName, id: &EventId) -> Key {
        let mut h = Sha256::new();
        h.update(route.as_str().as_bytes());
        h.update([0]);
        h.update(id.as_str().as_bytes());
        let d = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        Key(k)
    }
}

/// The outcome of a claim.
pub enum Claim {
    /// Not seen and not in flight: the caller owns it until it commits or drops the guard.
    New(ClaimGuard),
    /// Already safe: a duplicate.
    Seen,
}

/// The claimed id. `commit` marks it seen; dropping it releases the claim so a retry can
/// claim it again.
pub struct ClaimGuard {
    key: Key,
    dedupe: Dedupe,
    done: bool,
}

impl ClaimGuard {
    pub fn key(&self) -> Key {
        self.key
    }

    /// The event is safe: remember the id and wake the twins waiting on it.
    pub fn commit(mut self) {
        self.finish(true);
    }

    fn finish(&mut self, seen: bool) {
        if self.done {
            return;
        }
        self.done = true;
        // Seen is recorded before the in-flight entry goes, so a claim that finds no entry
        // in flight always finds the id seen.
        if seen {
            self.dedupe.inner.seen.insert(self.key);
        }
        let waiters = self.dedupe.lock_inflight().remove(&self.key);
        if let Some(tx) = waiters {
            let _ = tx.send(Some(seen));
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.finish(false);
    }
}

struct Inner {
    seen: MemorySeen,
    inflight: Mutex<HashMap<Key, watch::Sender<Option<bool>>>>,
}

/// The duplicate memory shared by every route and request.
#[derive(Clone)]
pub struct Dedupe {
    inner: Arc<Inner>,
}

impl Dedupe {
    pub fn memory(ttl: Duration, max_entries: u64) -> Dedupe {
        Dedupe {
            inner: Arc::new(Inner {
                seen: MemorySeen::new(ttl, max_entries),
                inflight: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<Key, watch::Sender<Option<bool>>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still safe to use.
        self.inner.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims one id, waiting while a twin is in flight.
    pub async fn claim(&self, key: Key) -> Claim {
        loop {
            let mut rx = {
                let mut inflight = self.lock_inflight();
                if self.inner.seen.contains(&key) {
                    return Claim::Seen;
                }
                match inflight.get(&key) {
                    Some(tx) => tx.subscribe(),
                    None => {
                        inflight.insert(key, watch::channel(None).0);
                        return Claim::New(ClaimGuard {
                            key,
                            dedupe: self.clone(),
                            done: false,
                        });
                    }
                }
            };
            // The twin's guard always sends before it goes (commit or drop); a closed channel
            // means it is gone, so try again either way.
            match rx.wait_for(Option::is_some).await.map(|v| *v) {
                Ok(Some(true)) => return Claim::Seen,
                _ => continue,
            }
        }
    }

    /// Claims several ids (one batch). Claims are taken in key order, so two batches sharing
    /// ids cannot wait on each other in a cycle; an id repeated in the batch is claimed once.
    /// Returns, per input position, the guard if that id is new.
    pub async fn claim_all(&self, keys: &[Key]) -> Vec<Option<ClaimGuard>> {
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&i| keys[i]);
        let mut out: Vec<Option<ClaimGuard>> = (0..keys.len()).map(|_| None).collect();
        let mut last: Option<Key> = None;
        for i in order {
            if last == Some(keys[i]) {
                continue; // a repeat inside the batch: the first copy carries it
            }
            last = Some(keys[i]);
            if let Claim::New(g) = self.claim(keys[i]).await {
                out[i] = Some(g);
            }
        }
        out
    }

    /// Marks an id seen without a claim (rebuilding the memory from the journal at start-up).
    pub fn remember(&self, key: Key) {
        self.inner.seen.insert(key);
    }

    /// How many ids are remembered (the `pushgate_dedupe_keys` gauge).
    pub fn len(&self) -> u64 {
        self.inner.seen.count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> Key {
        Key::new(&RouteName::new("r").unwrap(), &EventId::new(id))
    }

    #[tokio::test]
    async fn commit_makes_duplicates_release_lets_retries_through() {
        let d = Dedupe::memory(Duration::from_secs(60), 100);
        let Claim::New(g) = d.claim(key("a")).await else {
            panic!("first claim must be new")
        };
        drop(g); // storing failed
        let Claim::New(g) = d.claim(key("a")).await else {
            panic!("released id must be claimable")
        };
        g.commit();
        assert!(matches!(d.claim(key("a")).await, Claim::Seen));
        assert_eq!(d.len(), 1);
    }

    #[tokio::test]
    async fn concurrent_twins_wait_for_the_outcome() {
        let d = Dedupe::memory(Duration::from_secs(60), 100);
        let Claim::New(g) = d.claim(key("t")).await else {
            panic!()
        };
        let mut twins = Vec::new();
        for _ in 0..8 {
            let d = d.clone();
            twins.push(tokio::spawn(
                async move { matches!(d.claim(key("t")).await, Claim::Seen) },
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            twins.iter().all(|t| !t.is_finished()),
            "twins must wait while the first is in flight"
        );
        g.commit();
        for t in twins {
            assert!(t.await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_released_claim_passes_to_exactly_one_twin() {
        let d = Dedupe::memory(Duration::from_secs(60), 100);
        let Claim::New(g) = d.claim(key("r")).await else {
            panic!()
        };
        let twins: Vec<_> = (0..4)
            .map(|_| {
                let d = d.clone();
                tokio::spawn(async move {
                    match d.claim(key("r")).await {
                        Claim::New(g) => {
                            g.commit();
                            1
                        }
                        Claim::Seen => 0,
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(g);
        let mut new = 0;
        for t in twins {
            new += t.await.unwrap();
        }
        assert_eq!(new, 1);
    }

    #[tokio::test]
    async fn batches_sharing_ids_in_opposite_order_do_not_deadlock() {
        let d = Dedupe::memory(Duration::from_secs(60), 100);
        let (a, b) = (key("a"), key("b"));
        let d1 = d.clone();
        let t1 = tokio::spawn(async move {
            let gs = d1.claim_all(&[a, b]).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            gs.into_iter().flatten().for_each(ClaimGuard::commit);
        });
        let d2 = d.clone();
        let t2 = tokio::spawn(async move {
            let gs = d2.claim_all(&[b, a]).await;
            gs.into_iter().flatten().for_each(ClaimGuard::commit);
        });
        tokio::time::timeout(Duration::from_secs(5), async {
            t1.await.unwrap();
            t2.await.unwrap();
        })
        .await
        .expect("no deadlock");
        assert_eq!(d.len(), 2);
    }

    #[tokio::test]
    async fn repeats_inside_one_batch_are_claimed_once() {
        let d = Dedupe::memory(Duration::from_secs(60), 100);
        let gs = d.claim_all(&[key("x"), key("y"), key("x")]).await;
        assert_eq!(gs.iter().map(Option::is_some).collect::<Vec<_>>(), [true, true, false]);
    }
}
