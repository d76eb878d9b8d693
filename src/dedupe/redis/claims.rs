//! Claims, commits and releases of ids in Redis: the answers a replica gets about an id, one
//! script run per batch.

use std::time::Duration;

use super::scripts::{CLAIM, COMMIT, RELEASE, SEEN};
use super::{Answer, RedisError, RedisSeen, RemoteClaim};

impl RedisSeen {
    /// Claims `key` for this replica, atomically (a batch of one).
    pub async fn try_claim(&self, key: [u8; 16]) -> Result<RemoteClaim, RedisError> {
        Ok(match self.claim_batch(&[key]).await?.first() {
            Some(Answer::Claimed) => RemoteClaim::Claimed,
            Some(Answer::Seen { .. }) => RemoteClaim::Seen,
            Some(Answer::InFlight) | None => RemoteClaim::InFlight,
        })
    }

    /// Claims every key in one round trip (one script run, EVALSHA, loaded on NOSCRIPT); in
    /// Cluster, whose scripts may only touch one slot, one run per key, all sent at once.
    pub async fn claim_batch(&self, keys: &[[u8; 16]]) -> Result<Vec<Answer>, RedisError> {
        let rkeys: Vec<String> = keys.iter().map(|k| self.redis_key(k)).collect();
        let raw: Vec<(i64, i64, String)> = self
            .script_over(&CLAIM, &rkeys, |inv, _| {
                inv.arg(&self.inner.claim_value).arg(self.inner.claim_ttl_ms);
            })
            .await?;
        if raw.len() != keys.len() {
            return Err(RedisError::Protocol(format!(
                "{} answers for {} keys",
                raw.len(),
                keys.len()
            )));
        }
        raw.into_iter()
            .zip(&rkeys)
            .map(|((code, pttl, value), rkey)| match code {
                0 => Ok(Answer::Claimed),
                1 => {
                    // PTTL is -1 only if someone removed the expiry by hand: fall back to ttl.
                    let left = u64::try_from(pttl)
                        .ok()
                        .filter(|&ms| ms > 0)
                        .map_or(self.inner.ttl, Duration::from_millis)
                        .min(self.inner.ttl);
                    let fingerprint = match value.strip_prefix("seen:") {
                        Some(hex) => u64::from_str_radix(hex, 16)
                            .map_err(|_| RedisError::Protocol(format!("{rkey} holds an unreadable fingerprint")))?,
                        None => 0,
                    };
                    Ok(Answer::Seen { fingerprint, left })
                }
                2 => Ok(Answer::InFlight),
                _ => Err(RedisError::Protocol(format!(
                    "{rkey} holds a value that is neither a claim nor seen"
                ))),
            })
            .collect()
    }

    /// The event is safe: marks the id seen for `ttl` (fingerprint unknown).
    pub async fn commit(&self, key: [u8; 16]) -> Result<(), RedisError> {
        self.commit_batch(&[(key, 0)], false).await
    }

    /// The events are safe: marks each id seen for `ttl` with its fingerprint, in one round trip.
    ///
    /// Unconditional (no ownership check): the event *is* stored, so "seen" is the truth
    /// whoever holds the key. If our claim expired meanwhile and another replica claimed
    /// the same id, it is storing the same event; our `seen` makes its release a no-op and
    /// its commit rewrites `seen`, and the worst outcome is the app getting the event from
    /// both (delivery is at least once). Refreshing the TTL of an already-seen id is
    /// harmless. `only_new` (writes deferred while Redis was away) leaves any key that another
    /// replica wrote meanwhile as it is, but replaces this instance's own claim (a claim call
    /// that reached Redis though its answer did not come back in time).
    pub async fn commit_batch(&self, entries: &[([u8; 16], u64)], only_new: bool) -> Result<(), RedisError> {
        if entries.is_empty() {
            return Ok(());
        }
        let rkeys: Vec<String> = entries.iter().map(|(k, _)| self.redis_key(k)).collect();
        let values: Vec<String> = entries
            .iter()
            .map(|&(_, fp)| {
                if fp == 0 {
                    SEEN.to_owned()
                } else {
                    format!("{SEEN}:{fp:016x}")
                }
            })
            .collect();
        let mode = if only_new { "nx" } else { "set" };
        let _: Vec<i64> = self
            .script_over(&COMMIT, &rkeys, |inv, range| {
                inv.arg(mode).arg(self.inner.ttl_ms).arg(&self.inner.claim_value);
                for v in &values[range] {
                    inv.arg(v);
                }
            })
            .await?;
        Ok(())
    }

    /// Storing failed: frees the id for a retry, if the key still holds this instance's
    /// claim (a compare-and-delete script). Another replica's claim or a `seen` stays.
    pub async fn release(&self, key: [u8; 16]) -> Result<(), RedisError> {
        self.release_batch(&[key]).await
    }

    /// [`RedisSeen::release`] for several keys in one round trip.
    pub async fn release_batch(&self, keys: &[[u8; 16]]) -> Result<(), RedisError> {
        if keys.is_empty() {
            return Ok(());
        }
        let rkeys: Vec<String> = keys.iter().map(|k| self.redis_key(k)).collect();
        let deleted: Vec<i64> = self
            .script_over(&RELEASE, &rkeys, |inv, _| {
                inv.arg(&self.inner.claim_value);
            })
            .await?;
        let deleted: i64 = deleted.iter().sum();
        if deleted < keys.len() as i64 {
            tracing::debug!(
                kept = keys.len() as i64 - deleted,
                "release: claims no longer ours (expired or taken over)"
            );
        }
        Ok(())
    }

    /// Waits, polling with backoff (20 ms doubling to 500 ms), for another replica's claim
    /// to end, up to `max_wait`:
    /// * `Some(Seen)`: the owner committed: a duplicate;
    /// * `Some(Claimed)`: the claim was released or expired, and this poll took it over in the
    ///   same atomic step, so this replica now owns the id (commit or release it). Claiming
    ///   here rather than returning "gone" keeps waiting replicas from racing a second time;
    /// * `None`: still in flight at `max_wait`.
    ///
    /// Each poll is a `try_claim`.
    pub async fn wait(&self, key: [u8; 16], max_wait: Duration) -> Result<Option<RemoteClaim>, RedisError> {
        const FIRST: Duration = Duration::from_millis(20);
        const MAX: Duration = Duration::from_millis(500);
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut delay = FIRST;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            tokio::time::sleep(delay.min(left)).await;
            match self.try_claim(key).await? {
                RemoteClaim::InFlight => delay = (delay * 2).min(MAX),
                done => return Ok(Some(done)),
            }
        }
    }

    pub(super) fn redis_key(&self, key: &[u8; 16]) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(self.inner.prefix.len() + 33);
        s.push_str(&self.inner.prefix);
        s.push(':');
        for b in key {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }
}
