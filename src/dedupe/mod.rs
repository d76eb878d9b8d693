//! The duplicate memory: claim an id before its event is stored, mark it seen only once the
//! event is safe (durable, or delivered in `ack: upstream`), release it otherwise.
//!
//! The in-flight table makes the claim atomic within the process: of N concurrent copies of
//! one new event, one claims it and the others wait for its outcome — seen (they are
//! duplicates) or released (one of them claims it next). With the Redis backend the claim is
//! then also taken in Redis, so copies arriving at other replicas wait the same way. No copy
//! is answered 200 for an event that was then not stored.

mod memory;
pub mod redis;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use memory::MemorySeen;
pub use redis::{RedisError, RedisOptions, RedisSeen, RemoteClaim};

use crate::profile::EventId;
use crate::route::RouteName;

/// How long a request waits for a twin being stored by another replica.
const REMOTE_TWIN_WAIT: Duration = Duration::from_secs(10);

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

/// The shared memory could not be asked (Redis unreachable, or a twin on another replica
/// still unfinished after [`REMOTE_TWIN_WAIT`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("duplicate memory unavailable: {0}")]
pub struct DedupeError(pub String);

/// What to do with an event when the shared memory cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenUnavailable {
    /// Answer 503 with Retry-After: the sender retries later, nothing is stored unchecked.
    Refuse,
    /// Store and deliver it, flagged `X-Pushgate-Dedupe: unchecked` so the app dedupes it.
    Accept,
}

/// One position of a claimed batch.
pub enum Slot {
    /// New: owned until committed or dropped.
    New(ClaimGuard),
    /// A duplicate.
    Seen,
    /// Not checked (shared memory unavailable, policy `accept`): treated as new, flagged.
    Unchecked,
}

/// The claimed id. `commit` marks it seen; dropping it releases the claim so a retry can
/// claim it again.
pub struct ClaimGuard {
    key: Key,
    dedupe: Dedupe,
    /// The claim is also held in Redis.
    remote: bool,
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
        if let (true, Some(remote)) = (self.remote, self.dedupe.remote().cloned()) {
            // The event's fate is decided; telling Redis must not hold up the answer. If it
            // fails, the claim expires after claim_ttl and the id is merely not shared.
            let key = self.key.0;
            tokio::spawn(async move {
                let r = if seen {
                    remote.commit(key).await
                } else {
                    remote.release(key).await
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "could not record a claim's outcome in redis");
                }
            });
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
    /// Set when the Redis backend is configured; filled once its client is built (in a
    /// background service, so its connection lives on a runtime that lasts).
    remote: Option<std::sync::OnceLock<RedisSeen>>,
    when_unavailable: WhenUnavailable,
    inflight: Mutex<HashMap<Key, watch::Sender<Option<bool>>>>,
}

/// The duplicate memory shared by every route and request.
#[derive(Clone)]
pub struct Dedupe {
    inner: Arc<Inner>,
}

impl Dedupe {
    pub fn memory(ttl: Duration, max_entries: u64) -> Dedupe {
        Dedupe::build(MemorySeen::new(ttl, max_entries), None, WhenUnavailable::Refuse)
    }

    /// Shared through Redis (connected later with [`Dedupe::connect_redis`]); `seen` is then
    /// only this process's memory of its own commits (the Redis client keeps its own cache
    /// of ids it learned were seen elsewhere).
    pub fn redis(when_unavailable: WhenUnavailable, ttl: Duration, max_entries: u64) -> Dedupe {
        Dedupe::build(
            MemorySeen::new(ttl, max_entries),
            Some(std::sync::OnceLock::new()),
            when_unavailable,
        )
    }

    /// Builds the Redis client; until then claims answer unavailable (policy applies).
    pub async fn connect_redis(&self, options: RedisOptions) -> Result<(), RedisError> {
        let Some(slot) = &self.inner.remote else { return Ok(()) };
        let client = RedisSeen::connect(options).await?;
        let _ = slot.set(client);
        Ok(())
    }

    fn remote(&self) -> Option<&RedisSeen> {
        self.inner.remote.as_ref().and_then(|slot| slot.get())
    }

    fn build(
        seen: MemorySeen,
        remote: Option<std::sync::OnceLock<RedisSeen>>,
        when_unavailable: WhenUnavailable,
    ) -> Dedupe {
        Dedupe {
            inner: Arc::new(Inner {
                seen,
                remote,
                when_unavailable,
                inflight: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<Key, watch::Sender<Option<bool>>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still safe to use.
        self.inner.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_shared(&self) -> bool {
        self.inner.remote.is_some()
    }

    pub fn when_unavailable(&self) -> WhenUnavailable {
        self.inner.when_unavailable
    }

    /// Claims one id, waiting while a twin is in flight (here or, with Redis, elsewhere).
    pub async fn claim(&self, key: Key) -> Result<Claim, DedupeError> {
        loop {
            let waiting = {
                let mut inflight = self.lock_inflight();
                if self.inner.seen.contains(&key) {
                    return Ok(Claim::Seen);
                }
                match inflight.get(&key) {
                    Some(tx) => Some(tx.subscribe()),
                    None => {
                        inflight.insert(key, watch::channel(None).0);
                        None
                    }
                }
            };
            let Some(mut rx) = waiting else {
                let guard = ClaimGuard {
                    key,
                    dedupe: self.clone(),
                    remote: false,
                    done: false,
                };
                return self.claim_remote(guard).await;
            };
            // The twin's guard always sends before it goes (commit or drop); a closed channel
            // means it is gone, so try again either way.
            match rx.wait_for(Option::is_some).await.map(|v| *v) {
                Ok(Some(true)) => return Ok(Claim::Seen),
                _ => continue,
            }
        }
    }

    /// The second half of a claim with Redis: ask the other replicas.
    async fn claim_remote(&self, mut guard: ClaimGuard) -> Result<Claim, DedupeError> {
        if self.inner.remote.is_none() {
            return Ok(Claim::New(guard)); // the memory backend: this process decides alone
        }
        let Some(remote) = self.remote() else {
            return Err(DedupeError("redis is not connected yet".into()));
        };
        let answer = match remote.try_claim(guard.key.0).await {
            Ok(RemoteClaim::InFlight) => remote.wait(guard.key.0, REMOTE_TWIN_WAIT).await,
            other => other.map(Some),
        };
        match answer {
            Ok(Some(RemoteClaim::Claimed)) => {
                guard.remote = true;
                Ok(Claim::New(guard))
            }
            Ok(Some(RemoteClaim::Seen)) => {
                guard.finish(true); // local twins are duplicates too; Redis already knows
                Ok(Claim::Seen)
            }
            Ok(Some(RemoteClaim::InFlight)) | Ok(None) => Err(DedupeError(
                "a copy of this event is still being stored by another replica".into(),
            )),
            Err(e) => Err(DedupeError(e.to_string())),
        }
    }

    /// Claims several ids (one batch). Claims are taken in key order, so two batches sharing
    /// ids cannot wait on each other in a cycle; an id repeated in the batch is claimed once
    /// (the repeat is `Seen`). When the shared memory cannot be asked: `Err` under the
    /// `refuse` policy (every claim of the batch released), `Unchecked` slots under `accept`.
    pub async fn claim_all(&self, keys: &[Key]) -> Result<Vec<Slot>, DedupeError> {
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&i| keys[i]);
        let mut out: Vec<Slot> = (0..keys.len()).map(|_| Slot::Seen).collect();
        let mut last: Option<Key> = None;
        for i in order {
            if last == Some(keys[i]) {
                continue; // a repeat inside the batch: the first copy carries it
            }
            last = Some(keys[i]);
            out[i] = match self.claim(keys[i]).await {
                Ok(Claim::New(g)) => Slot::New(g),
                Ok(Claim::Seen) => Slot::Seen,
                Err(e) if self.inner.when_unavailable == WhenUnavailable::Refuse => return Err(e),
                Err(_) => Slot::Unchecked,
            };
        }
        Ok(out)
    }

    /// Marks an id seen without a claim (rebuilding the memory from the journal at start-up).
    pub fn remember(&self, key: Key) {
        self.inner.seen.insert(key);
    }

    /// How many ids are remembered (the `pushgate_dedupe_keys` gauge): this process's for
    /// the memory backend, Redis's count for the shared one (when it can be had cheaply).
    pub async fn count(&self) -> Option<u64> {
        match (&self.inner.remote, self.remote()) {
            (None, _) => Some(self.inner.seen.count()),
            (Some(_), Some(r)) => r.approx_len().await,
            (Some(_), None) => None,
        }
    }

    /// Whether the shared memory answers (always true for the memory backend).
    pub async fn healthy(&self) -> bool {
        match (&self.inner.remote, self.remote()) {
            (None, _) => true,
            (Some(_), Some(r)) => r.healthy().await,
            (Some(_), None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_all(slots: Vec<Slot>) {
        for s in slots {
            if let Slot::New(g) = s {
                g.commit();
            }
        }
    }

    fn key(id: &str) -> Key {
        Key::new(&RouteName::new("r").unwrap(), &EventId::new(id))
    }

    #[tokio::test]
    async fn commit_makes_duplicates_release_lets_retries_through() {
        let d = Dedupe::memory(Duration::from_secs(60), 100);
        let Ok(Claim::New(g)) = d.claim(key("a")).await else {
            panic!("first claim must be new")
        };
        drop(g); // storing failed
        let Ok(Claim::New(g)) = d.claim(key("a")).await else {
            panic!("released id must be claimable")
        };
        g.commit();
        assert!(matches!(d.claim(key("a")).await, Ok(Claim::Seen)));
        assert_eq!(d.count().await, Some(1));
    }

    #[tokio::test]
    async fn concurrent_twins_wait_for_the_outcome() {
        let d = Dedupe::memory(Duration::from_secs(60), 100);
        let Ok(Claim::New(g)) = d.claim(key("t")).await else {
            panic!()
        };
        let mut twins = Vec::new();
        for _ in 0..8 {
            let d = d.clone();
            twins.push(tokio::spawn(async move {
                matches!(d.claim(key("t")).await, Ok(Claim::Seen))
            }));
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
        let Ok(Claim::New(g)) = d.claim(key("r")).await else {
            panic!()
        };
        let twins: Vec<_> = (0..4)
            .map(|_| {
                let d = d.clone();
                tokio::spawn(async move {
                    match d.claim(key("r")).await {
                        Ok(Claim::New(g)) => {
                            g.commit();
                            1
                        }
                        _ => 0,
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
            let gs = d1.claim_all(&[a, b]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            commit_all(gs);
        });
        let d2 = d.clone();
        let t2 = tokio::spawn(async move {
            let gs = d2.claim_all(&[b, a]).await.unwrap();
            commit_all(gs);
        });
        tokio::time::timeout(Duration::from_secs(5), async {
            t1.await.unwrap();
            t2.await.unwrap();
        })
        .await
        .expect("no deadlock");
        assert_eq!(d.count().await, Some(2));
    }

    #[tokio::test]
    async fn repeats_inside_one_batch_are_claimed_once() {
        let d = Dedupe::memory(Duration::from_secs(60), 100);
        let gs = d.claim_all(&[key("x"), key("y"), key("x")]).await.unwrap();
        assert_eq!(
            gs.iter().map(|s| matches!(s, Slot::New(_))).collect::<Vec<_>>(),
            [true, true, false]
        );
    }
}
