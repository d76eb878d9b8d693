//! The duplicate memory: claim an id before its event is stored, mark it seen only once the
//! event is safe (durable, or delivered in `ack: upstream`), release it otherwise.
//!
//! The in-flight table makes the claim atomic within the process: of N concurrent copies of
//! one new event, one claims it and the others wait for its outcome — seen (they are
//! duplicates) or released (one of them claims it next). With the Redis backend the claims of
//! a request are then also taken in Redis, in one round trip, so copies arriving at other
//! replicas wait the same way. No copy is answered 200 for an event that was then not stored.
//!
//! Each id is remembered with the fingerprint of its content. A later event with a seen id but
//! another fingerprint is a *conflict*, never a duplicate: it is claimed under its version key
//! ([`Key::version`]), so a re-send of either version is a plain duplicate. Cost: 8 bytes per
//! id (the fingerprint), plus one entry per conflicting version.
//!
//! While Redis is away (policy `accept`) claims are taken in this memory alone, so one replica
//! never takes an id twice, and their seen-marks wait in a bounded queue until Redis answers
//! again ([`Dedupe::maintain`]), so a retry after recovery is recognised by every replica.

mod memory;
pub mod redis;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use memory::MemorySeen;
pub use redis::{Answer, RedisError, RedisOptions, RedisSeen, RemoteClaim};

use crate::names::{EventId, RouteName};

/// How long a request waits for a twin being stored by another replica.
const REMOTE_TWIN_WAIT: Duration = Duration::from_secs(10);
/// Most seen-marks held for Redis while it is away (`pushgate_dedupe_pending_writes`); past
/// it the oldest is dropped and counted (`pushgate_dedupe_pending_dropped_total`). 100,000
/// marks are about 4 MiB.
pub const PENDING_WRITES_MAX: usize = 100_000;
/// Most seen-marks written to Redis in one round trip when it is back.
const FLUSH_BATCH: usize = 1_000;

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
        Key::from_digest(h)
    }

    /// The key under which a version of this id with other content (`fingerprint`) is
    /// remembered once it has been taken as a conflict.
    pub fn version(&self, fingerprint: u64) -> Key {
        let mut h = Sha256::new();
        h.update(b"version\0");
        h.update(self.0);
        h.update(fingerprint.to_be_bytes());
        Key::from_digest(h)
    }

    fn from_digest(h: Sha256) -> Key {
        let d = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        Key(k)
    }
}

/// Fingerprint 0 is "unknown" (records from before fingerprints were kept): it matches any.
fn same(first: u64, fingerprint: u64) -> bool {
    first == fingerprint || first == 0 || fingerprint == 0
}

/// One event of a request, as the memory is asked about it.
#[derive(Clone, Copy, Debug)]
pub struct Want {
    pub key: Key,
    pub fingerprint: u64,
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
    /// Store and deliver it, flagged `X-Pushgate-Dedupe: unchecked` so the app dedupes it
    /// (checked against this replica's memory only).
    Accept,
}

/// One position of a claimed batch.
pub enum Claim {
    /// New: owned until committed or dropped.
    New(ClaimGuard),
    /// The id was seen with other content (`first` is that content's fingerprint): this
    /// version is new, owned under its version key until committed or dropped.
    Conflict { guard: ClaimGuard, first: u64 },
    /// A duplicate (also a repeat inside the batch).
    Seen,
}

/// The claimed id. `commit` marks it seen; dropping it releases the claim so a retry can
/// claim it again.
pub struct ClaimGuard {
    key: Key,
    fingerprint: u64,
    dedupe: Dedupe,
    /// The claim is also held in Redis.
    remote: bool,
    /// Redis could not be asked (policy `accept`): claimed in this process only, its seen-mark
    /// goes to Redis once it is back.
    unchecked: bool,
    done: bool,
}

/// What Redis must be told once claims are settled.
enum Tell {
    Commit(Key, u64),
    Release(Key),
    /// Seen while Redis was away: written when it is back, unless a replica wrote it since.
    Deferred(Key, u64),
}

impl ClaimGuard {
    pub fn key(&self) -> Key {
        self.key
    }

    /// Whether this id was checked in this process only (the shared memory was away).
    pub fn unchecked(&self) -> bool {
        self.unchecked
    }

    /// The event is safe: remember the id and wake the twins waiting on it.
    pub fn commit(self) {
        let dedupe = self.dedupe.clone();
        dedupe.commit_all(vec![self]);
    }

    /// Settles the claim here (memory, waiting twins) and says what Redis must be told.
    /// `seen`: the fingerprint now remembered, and for how long (None: the TTL).
    fn settle(&mut self, seen: Option<(u64, Option<Duration>)>) -> Option<Tell> {
        if self.done {
            return None;
        }
        self.done = true;
        let inner = &self.dedupe.inner;
        // Seen is recorded before the in-flight entry goes, so a claim that finds no entry
        // in flight always finds the id seen.
        if let Some((fp, left)) = seen {
            match left {
                Some(left) => inner.seen.insert_for(self.key, fp, millis(left)),
                None => inner.seen.insert(self.key, fp),
            }
        }
        let tell = match (seen.is_some(), self.remote, self.unchecked) {
            (true, true, _) => Some(Tell::Commit(self.key, self.fingerprint)),
            (true, false, true) => Some(Tell::Deferred(self.key, self.fingerprint)),
            (false, true, _) => Some(Tell::Release(self.key)),
            _ => None,
        };
        if let Some(tx) = self.dedupe.lock_inflight().remove(&self.key) {
            let _ = tx.send(Some(seen.map(|(fp, _)| fp)));
        }
        tell
    }

    /// Redis says another replica already made this id safe, first with `fingerprint`.
    fn known(mut self, fingerprint: u64, left: Duration) -> u64 {
        self.remote = false;
        self.unchecked = false;
        self.settle(Some((fingerprint, Some(left))));
        fingerprint
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(tell) = self.settle(None) {
            self.dedupe.tell(vec![tell]);
        }
    }
}

/// A key claimed here, or found already seen with a fingerprint.
enum Resolved {
    New(ClaimGuard),
    Known(u64),
}

/// The outcome a twin waits for: `Some(Some(fp))` seen with `fp`, `Some(None)` released.
type Outcome = Option<Option<u64>>;

struct Inner {
    seen: MemorySeen,
    /// Set when the Redis backend is configured; filled once its client is built (in a
    /// background service, so its connection lives on a runtime that lasts).
    remote: Option<OnceLock<RedisSeen>>,
    when_unavailable: WhenUnavailable,
    inflight: Mutex<HashMap<Key, watch::Sender<Outcome>>>,
    /// Seen-marks waiting for Redis: (key, fingerprint, only where no replica wrote since).
    deferred: Mutex<VecDeque<(Key, u64, bool)>>,
    deferred_dropped: AtomicU64,
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

    /// Shared through Redis (connected later with [`Dedupe::connect_redis`]); `seen` then
    /// remembers this process's commits and the ids Redis said were seen (for what Redis had
    /// left of their TTL), so a duplicate is answered without asking Redis again.
    pub fn redis(when_unavailable: WhenUnavailable, ttl: Duration, max_entries: u64) -> Dedupe {
        Dedupe::build(
            MemorySeen::new(ttl, max_entries),
            Some(OnceLock::new()),
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

    fn build(seen: MemorySeen, remote: Option<OnceLock<RedisSeen>>, when_unavailable: WhenUnavailable) -> Dedupe {
        Dedupe {
            inner: Arc::new(Inner {
                seen,
                remote,
                when_unavailable,
                inflight: Mutex::new(HashMap::new()),
                deferred: Mutex::new(VecDeque::new()),
                deferred_dropped: AtomicU64::new(0),
            }),
        }
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<Key, watch::Sender<Outcome>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still safe to use.
        self.inner.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_deferred(&self) -> std::sync::MutexGuard<'_, VecDeque<(Key, u64, bool)>> {
        // Same: single pushes and pops.
        self.inner.deferred.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_shared(&self) -> bool {
        self.inner.remote.is_some()
    }

    pub fn when_unavailable(&self) -> WhenUnavailable {
        self.inner.when_unavailable
    }

    /// Claims the events of one request. Per id, the first event of the batch is asked about
    /// first; an event whose id was seen (or taken earlier in the batch) with other content
    /// is then claimed under its version key and answered [`Claim::Conflict`]; an exact repeat
    /// is [`Claim::Seen`]. With Redis each of the two steps is one round trip, and the second
    /// is taken only when a conflict was found. When the shared memory cannot be asked:
    /// `Err` under the `refuse` policy (every claim of the batch released), otherwise the
    /// claims hold in this process alone, marked unchecked.
    pub async fn claim_all(&self, wants: &[Want]) -> Result<Vec<Claim>, DedupeError> {
        let mut slots: Vec<Option<Claim>> = wants.iter().map(|_| None).collect();
        let mut pairs = HashSet::new();
        let mut firsts = HashSet::new();
        let (mut primary, mut extra) = (Vec::new(), Vec::new());
        for (i, w) in wants.iter().enumerate() {
            if !pairs.insert((w.key, w.fingerprint)) {
                slots[i] = Some(Claim::Seen); // a repeat inside the batch: the first copy carries it
            } else if firsts.insert(w.key) {
                primary.push(i);
            } else {
                extra.push(i);
            }
        }

        let asked: Vec<(Key, u64)> = primary.iter().map(|&i| (wants[i].key, wants[i].fingerprint)).collect();
        let mut first_fp: HashMap<Key, u64> = HashMap::new();
        let mut versions: Vec<(usize, u64)> = Vec::new();
        for (&i, r) in primary.iter().zip(self.claim_keys(&asked).await?) {
            let w = wants[i];
            match r {
                Resolved::New(g) => {
                    first_fp.insert(w.key, w.fingerprint);
                    slots[i] = Some(Claim::New(g));
                }
                Resolved::Known(first) => {
                    first_fp.insert(w.key, first);
                    if same(first, w.fingerprint) {
                        slots[i] = Some(Claim::Seen);
                    } else {
                        versions.push((i, first));
                    }
                }
            }
        }
        for i in extra {
            let w = wants[i];
            let first = first_fp.get(&w.key).copied().unwrap_or(0);
            if same(first, w.fingerprint) {
                slots[i] = Some(Claim::Seen);
            } else {
                versions.push((i, first));
            }
        }

        if !versions.is_empty() {
            let asked: Vec<(Key, u64)> = versions
                .iter()
                .map(|&(i, _)| (wants[i].key.version(wants[i].fingerprint), wants[i].fingerprint))
                .collect();
            let resolved = match self.claim_keys(&asked).await {
                Ok(r) => r,
                Err(e) => {
                    self.release_all(slots.into_iter().flatten().filter_map(Claim::into_guard).collect());
                    return Err(e);
                }
            };
            for (&(i, first), r) in versions.iter().zip(resolved) {
                slots[i] = Some(match r {
                    Resolved::New(guard) => Claim::Conflict { guard, first },
                    Resolved::Known(_) => Claim::Seen, // this version was taken before
                });
            }
        }
        Ok(slots.into_iter().map(|s| s.unwrap_or(Claim::Seen)).collect())
    }

    /// Claims distinct keys: here first, in key order (so two requests sharing keys cannot
    /// wait on each other in a cycle), then in Redis in one round trip for all of them.
    async fn claim_keys(&self, wants: &[(Key, u64)]) -> Result<Vec<Resolved>, DedupeError> {
        let mut order: Vec<usize> = (0..wants.len()).collect();
        order.sort_by_key(|&i| wants[i].0);
        let mut out: Vec<Option<Resolved>> = wants.iter().map(|_| None).collect();
        for i in order {
            out[i] = Some(self.claim_here(wants[i].0, wants[i].1).await);
        }
        let mut out: Vec<Resolved> = out.into_iter().flatten().collect();
        if self.inner.remote.is_none() {
            return Ok(out); // the memory backend: this process decides alone
        }
        let ask: Vec<usize> = (0..out.len()).filter(|&i| matches!(out[i], Resolved::New(_))).collect();
        if ask.is_empty() {
            return Ok(out);
        }
        let asked = match self.remote() {
            Some(remote) => self.claim_remote(remote, &mut out, ask).await,
            None => Err(DedupeError("redis is not connected yet".into())),
        };
        if let Err(e) = asked {
            if self.inner.when_unavailable == WhenUnavailable::Refuse {
                let guards = out
                    .into_iter()
                    .filter_map(|r| match r {
                        Resolved::New(g) => Some(g),
                        Resolved::Known(_) => None,
                    })
                    .collect();
                self.release_all(guards);
                return Err(e);
            }
            for r in &mut out {
                if let Resolved::New(g) = r {
                    g.unchecked = !g.remote;
                }
            }
        }
        Ok(out)
    }

    /// The in-process half of a claim: the fingerprint the id was seen with, or the claim,
    /// waiting while a twin is in flight here.
    async fn claim_here(&self, key: Key, fingerprint: u64) -> Resolved {
        loop {
            let waiting = {
                let mut inflight = self.lock_inflight();
                if let Some(first) = self.inner.seen.get(&key) {
                    return Resolved::Known(first);
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
                return Resolved::New(ClaimGuard {
                    key,
                    fingerprint,
                    dedupe: self.clone(),
                    remote: false,
                    unchecked: false,
                    done: false,
                });
            };
            // The twin's guard always sends before it goes (commit or drop); a closed channel
            // means it is gone, so try again either way.
            if let Ok(Some(Some(first))) = rx.wait_for(Option::is_some).await.map(|v| *v) {
                return Resolved::Known(first);
            }
        }
    }

    /// The Redis half: one script run for every key claimed here; keys another replica is
    /// storing are asked again (one run for all of them) with backoff, for up to
    /// [`REMOTE_TWIN_WAIT`].
    async fn claim_remote(
        &self,
        remote: &RedisSeen,
        out: &mut [Resolved],
        mut ask: Vec<usize>,
    ) -> Result<(), DedupeError> {
        const FIRST: Duration = Duration::from_millis(20);
        const MAX: Duration = Duration::from_millis(500);
        let deadline = tokio::time::Instant::now() + REMOTE_TWIN_WAIT;
        let mut delay = FIRST;
        loop {
            let keys: Vec<[u8; 16]> = ask
                .iter()
                .filter_map(|&i| match &out[i] {
                    Resolved::New(g) => Some(g.key.0),
                    Resolved::Known(_) => None,
                })
                .collect();
            let answers = remote
                .claim_batch(&keys)
                .await
                .map_err(|e| DedupeError(e.to_string()))?;
            let mut still = Vec::new();
            for (&i, answer) in ask.iter().zip(answers) {
                match answer {
                    Answer::Claimed => {
                        if let Resolved::New(g) = &mut out[i] {
                            g.remote = true;
                        }
                    }
                    Answer::Seen { fingerprint, left } => {
                        // Local twins learn it too; Redis already knows.
                        if let Resolved::New(g) = std::mem::replace(&mut out[i], Resolved::Known(fingerprint)) {
                            g.known(fingerprint, left);
                        }
                    }
                    Answer::InFlight => still.push(i),
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() + delay > deadline {
                return Err(DedupeError(
                    "a copy of this event is still being stored by another replica".into(),
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX);
            ask = still;
        }
    }

    /// The events are safe: remembers every id and tells Redis in one round trip (after the
    /// answer: if it fails, the marks wait in the deferred queue).
    pub fn commit_all(&self, guards: Vec<ClaimGuard>) {
        let tells = guards
            .into_iter()
            .filter_map(|mut g| {
                let fp = g.fingerprint;
                g.settle(Some((fp, None)))
            })
            .collect();
        self.tell(tells);
    }

    /// Storing failed: releases every claim (one round trip to Redis).
    pub fn release_all(&self, guards: Vec<ClaimGuard>) {
        let tells = guards.into_iter().filter_map(|mut g| g.settle(None)).collect();
        self.tell(tells);
    }

    fn tell(&self, tells: Vec<Tell>) {
        let (mut commits, mut releases) = (Vec::new(), Vec::new());
        for t in tells {
            match t {
                Tell::Commit(k, fp) => commits.push((k.0, fp)),
                Tell::Release(k) => releases.push(k.0),
                Tell::Deferred(k, fp) => self.defer(k, fp, true),
            }
        }
        if commits.is_empty() && releases.is_empty() {
            return;
        }
        let Some(remote) = self.remote().cloned() else { return };
        let this = self.clone();
        // The events' fate is decided; telling Redis must not hold up the answer. A failed
        // release merely lets the claim expire after claim_ttl.
        tokio::spawn(async move {
            if let Err(e) = remote.commit_batch(&commits, false).await {
                tracing::warn!(error = %e, ids = commits.len(), "could not mark ids seen in redis; kept for later");
                for (k, fp) in commits {
                    this.defer(Key(k), fp, false);
                }
            }
            if let Err(e) = remote.release_batch(&releases).await {
                tracing::debug!(error = %e, "could not release claims in redis; they expire after claim_ttl");
            }
        });
    }

    /// Keeps a seen-mark for Redis; past [`PENDING_WRITES_MAX`] the oldest is dropped.
    fn defer(&self, key: Key, fingerprint: u64, only_new: bool) {
        let mut q = self.lock_deferred();
        q.push_back((key, fingerprint, only_new));
        while q.len() > PENDING_WRITES_MAX {
            q.pop_front();
            self.inner.deferred_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Called every second or so: notices Redis coming back (a PING while it is away) and
    /// writes the deferred seen-marks, [`FLUSH_BATCH`] per round trip.
    pub async fn maintain(&self) {
        let Some(remote) = self.remote() else { return };
        if !remote.is_up() && !remote.healthy().await {
            return;
        }
        loop {
            let batch: Vec<(Key, u64, bool)> = {
                let mut q = self.lock_deferred();
                let n = q.len().min(FLUSH_BATCH);
                q.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            let (nx, set): (Vec<_>, Vec<_>) = batch.iter().partition(|e| e.2);
            let as_entries = |v: Vec<&(Key, u64, bool)>| v.iter().map(|e| (e.0 .0, e.1)).collect::<Vec<_>>();
            let written = match remote.commit_batch(&as_entries(set), false).await {
                Ok(()) => remote.commit_batch(&as_entries(nx), true).await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                tracing::debug!(error = %e, "deferred seen-marks not written yet");
                let mut q = self.lock_deferred();
                for e in batch.into_iter().rev() {
                    q.push_front(e);
                }
                while q.len() > PENDING_WRITES_MAX {
                    q.pop_front();
                    self.inner.deferred_dropped.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            tracing::info!(ids = batch.len(), "wrote seen-marks deferred while redis was away");
        }
    }

    /// Marks an id seen without a claim (rebuilding the memory from the store at start-up,
    /// oldest first): a second content under one id is remembered as a version.
    pub fn remember(&self, key: Key, fingerprint: u64) {
        match self.inner.seen.get(&key) {
            Some(first) if !same(first, fingerprint) => self.inner.seen.insert(key.version(fingerprint), fingerprint),
            _ => self.inner.seen.insert(key, fingerprint),
        }
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

    /// `pushgate_dedupe_backend_up`: whether Redis answered its last call; `None` for the
    /// memory backend.
    pub fn backend_up(&self) -> Option<bool> {
        self.inner.remote.as_ref()?;
        Some(self.remote().is_some_and(RedisSeen::is_up))
    }

    /// `pushgate_dedupe_pending_writes`: seen-marks waiting for Redis.
    pub fn pending_writes(&self) -> usize {
        self.lock_deferred().len()
    }

    /// `pushgate_dedupe_pending_dropped_total`: seen-marks dropped because the queue was full.
    pub fn pending_dropped(&self) -> u64 {
        self.inner.deferred_dropped.load(Ordering::Relaxed)
    }

    /// Redis calls made so far; for tests.
    #[doc(hidden)]
    pub fn round_trips(&self) -> Option<u64> {
        self.remote().map(RedisSeen::round_trips)
    }
}

impl Claim {
    fn into_guard(self) -> Option<ClaimGuard> {
        match self {
            Claim::New(g) | Claim::Conflict { guard: g, .. } => Some(g),
            Claim::Seen => None,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> Key {
        Key::new(&RouteName::new("r").unwrap(), &EventId::new(id))
    }

    fn want(id: &str, fingerprint: u64) -> Want {
        Want {
            key: key(id),
            fingerprint,
        }
    }

    async fn one(d: &Dedupe, id: &str, fingerprint: u64) -> Claim {
        d.claim_all(&[want(id, fingerprint)]).await.unwrap().pop().unwrap()
    }

    fn commit_all(d: &Dedupe, slots: Vec<Claim>) {
        d.commit_all(slots.into_iter().filter_map(Claim::into_guard).collect());
    }

    fn kinds(slots: &[Claim]) -> Vec<&'static str> {
        slots
            .iter()
            .map(|s| match s {
                Claim::New(_) => "new",
                Claim::Conflict { .. } => "conflict",
                Claim::Seen => "seen",
            })
            .collect()
    }

    #[tokio::test]
    async fn commit_makes_duplicates_release_lets_retries_through() {
        let d = Dedupe::memory(Duration::from_secs(60), 100);
        let Claim::New(g) = one(&d, "a", 1).await else {
            panic!("first claim must be new")
        };
        drop(g); // storing failed
        let Claim::New(g) = one(&d, "a", 1).await else {
            panic!("released id must be claimable")
        };
        g.commit();
        assert!(matches!(one(&d, "a", 1).await, Claim::Seen));
        assert_eq!(d.count().await, Some(1));
    }

    #[tokio::test]
    async fn other_content_under_a_seen_id_is_a_conflict_and_either_version_then_a_duplicate() {
        let d = Dedupe::memory(Duration::from_secs(60), 100);
        let Claim::New(g) = one(&d, "a", 1).await else { panic!() };
        g.commit();
        let Claim::Conflict { guard, first } = one(&d, "a", 2).await else {
            panic!("other content must be a conflict")
        };
        assert_eq!(first, 1);
        drop(guard); // storing failed: the second version is taken afresh next time
        let Claim::Conflict { guard, .. } = one(&d, "a", 2).await else {
            panic!()
        };
        guard.commit();
        assert!(matches!(one(&d, "a", 1).await, Claim::Seen));
        assert!(matches!(one(&d, "a", 2).await, Claim::Seen));
        let Claim::Conflict { first, .. } = one(&d, "a", 3).await else {
            panic!()
        };
        assert_eq!(first, 1, "a third version names the first");
        // An unknown fingerprint (a record from before fingerprints) matches any content.
        d.remember(key("old"), 0);
        assert!(matches!(one(&d, "old", 9).await, Claim::Seen));
    }

    #[tokio::test]
    async fn one_batch_with_one_id_twice_in_two_contents_takes_both() {
        let d = Dedupe::memory(Duration::from_secs(60), 100);
        let slots = d
            .claim_all(&[want("x", 1), want("x", 2), want("x", 1), want("y", 5)])
            .await
            .unwrap();
        assert_eq!(kinds(&slots), ["new", "conflict", "seen", "new"]);
        commit_all(&d, slots);
        let again = d.claim_all(&[want("x", 2), want("x", 1), want("y", 5)]).await.unwrap();
        assert_eq!(kinds(&again), ["seen", "seen", "seen"]);
    }

    #[tokio::test]
    async fn the_rebuild_remembers_both_versions() {
        let d = Dedupe::memory(Duration::from_secs(60), 100);
        d.remember(key("a"), 1);
        d.remember(key("a"), 2);
        assert!(matches!(one(&d, "a", 1).await, Claim::Seen));
        assert!(matches!(one(&d, "a", 2).await, Claim::Seen));
        assert!(matches!(one(&d, "a", 3).await, Claim::Conflict { first: 1, .. }));
    }

    #[tokio::test]
    async fn concurrent_twins_wait_for_the_outcome() {
        let d = Dedupe::memory(Duration::from_secs(60), 100);
        let Claim::New(g) = one(&d, "t", 1).await else { panic!() };
        let mut twins = Vec::new();
        for i in 0..8u64 {
            let d = d.clone();
            twins.push(tokio::spawn(async move {
                // Half are copies, half carry other content: those must not be dropped.
                let fp = 1 + i % 2;
                match one(&d, "t", fp).await {
                    Claim::Seen => fp == 1,
                    Claim::Conflict { first, .. } => fp == 2 && first == 1,
                    Claim::New(_) => false,
                }
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
        let Claim::New(g) = one(&d, "r", 1).await else { panic!() };
        let twins: Vec<_> = (0..4)
            .map(|_| {
                let d = d.clone();
                tokio::spawn(async move {
                    match one(&d, "r", 1).await {
                        Claim::New(g) => {
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
        let d1 = d.clone();
        let t1 = tokio::spawn(async move {
            let gs = d1.claim_all(&[want("a", 1), want("b", 1)]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            commit_all(&d1, gs);
        });
        let d2 = d.clone();
        let t2 = tokio::spawn(async move {
            let gs = d2.claim_all(&[want("b", 1), want("a", 1)]).await.unwrap();
            commit_all(&d2, gs);
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
        let gs = d.claim_all(&[want("x", 1), want("y", 1), want("x", 1)]).await.unwrap();
        assert_eq!(kinds(&gs), ["new", "new", "seen"]);
    }

    #[tokio::test]
    async fn redis_not_connected_under_accept_claims_here_and_defers_the_mark() {
        let d = Dedupe::redis(WhenUnavailable::Accept, Duration::from_secs(60), 100);
        let Claim::New(g) = one(&d, "u", 1).await else { panic!() };
        assert!(g.unchecked());
        g.commit();
        assert!(matches!(one(&d, "u", 1).await, Claim::Seen), "remembered here");
        assert_eq!(d.pending_writes(), 1);
        assert_eq!(d.backend_up(), Some(false));
        let refuse = Dedupe::redis(WhenUnavailable::Refuse, Duration::from_secs(60), 100);
        assert!(refuse.claim_all(&[want("u", 1)]).await.is_err());
        assert!(
            refuse.claim_all(&[want("u", 1)]).await.is_err(),
            "the local claim was released"
        );
    }
}
