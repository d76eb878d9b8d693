//! The cross-replica part of the duplicate memory, kept in Redis.
//!
//! Several replicas behind a load balancer must agree on which event ids they have stored,
//! because a sender's retry can land on any of them. The caller keeps its in-process
//! in-flight table (local twins wait on each other); this module decides between replicas:
//!
//! * one key per id: `{prefix}:{32 lowercase hex chars}` (the 16-byte key, hex-encoded);
//! * `claim:<token>` while a replica is storing the event, expiring after `claim_ttl` so a
//!   replica that died mid-claim blocks nobody for long;
//! * `seen` once the event is safe, expiring after `ttl`.
//!
//! Namespacing: every key starts with `prefix` (default [`DEFAULT_PREFIX`]). Environments
//! sharing one Redis (MTF and PROD, staging and production) must use distinct prefixes
//! (e.g. `pushgate:prod:dedupe`) or distinct databases (`redis://host/1`), otherwise an id
//! stored in one environment answers "duplicate" in the other. An ACL user restricted to
//! `~{prefix}:*` keeps a deployment inside its namespace.
//!
//! Redis being unreachable never blocks a sender: every command is bounded by
//! `RedisOptions::timeout` (default 1 s) and fails with [`RedisError::Unavailable`]; the
//! connection re-establishes itself when Redis comes back.
//!
//! Here: the options, the answers and start-up; [`connection`] (one handle for both
//! topologies, bounded and classified calls, passwords scrubbed), [`scripts`] (the Lua that
//! makes each step atomic, run per batch) and [`claims`] (claim, commit, release, wait).

mod claims;
mod connection;
mod scripts;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

pub use connection::redact_url;
use connection::{glob_escape, millis, scrub, url_passwords, Conn};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "pushgate:dedupe";

/// How the Redis memory is reached and how long it remembers.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`, `rediss://…` for TLS. For Cluster, either set
    /// `cluster` or use the scheme `redis+cluster://` / `rediss+cluster://`; several seed
    /// nodes may be given as a comma-separated list of URLs.
    pub url: String,
    /// Talk Redis Cluster (also implied by a `+cluster` scheme).
    pub cluster: bool,
    /// Key namespace; see the module docs on separating environments.
    pub prefix: String,
    /// How long an id is remembered once its event is safe.
    pub ttl: Duration,
    /// How long an unfinished claim blocks other replicas: covers a replica that died
    /// mid-claim. Must exceed the longest time a store (fsync, or the app's answer in
    /// `ack: upstream`) can take, or a twin may be stored twice.
    pub claim_ttl: Duration,
    /// Accepted for older configs; unused: ids learned from Redis are now remembered in the
    /// duplicate memory of the process (bounded by `dedupe.max_entries`), one memory not two.
    pub local_cache_entries: u64,
    /// Bound on every Redis call, connection set-up included.
    pub timeout: Duration,
    /// PEM file of the CA(s) that sign the Redis server certificate, for `rediss://` with a
    /// private CA. Without it the Mozilla (webpki) roots are trusted.
    pub tls_ca_file: Option<PathBuf>,
    /// The database holds nothing but this deployment's dedupe keys: `approx_len` may then
    /// use DBSIZE (O(1), and summed over primaries in Cluster) instead of a capped SCAN.
    pub dedicated_db: bool,
}

impl RedisOptions {
    /// Defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> RedisOptions {
        RedisOptions {
            url: url.into(),
            cluster: false,
            prefix: DEFAULT_PREFIX.to_owned(),
            ttl: Duration::from_secs(72 * 3600),
            claim_ttl: Duration::from_secs(30),
            local_cache_entries: 100_000,
            timeout: Duration::from_secs(1),
            tls_ca_file: None,
            dedicated_db: false,
        }
    }
}

impl Default for RedisOptions {
    fn default() -> RedisOptions {
        RedisOptions::new("redis://127.0.0.1:6379/0")
    }
}

// Hand-written so the password never reaches a log through `{:?}`.
impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact_url(&self.url))
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("claim_ttl", &self.claim_ttl)
            .field("local_cache_entries", &self.local_cache_entries)
            .field("timeout", &self.timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("dedicated_db", &self.dedicated_db)
            .finish()
    }
}

/// The answer of a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteClaim {
    /// Nobody held the id: this replica owns it until `commit` or `release`.
    Claimed,
    /// The id is already safe somewhere: a duplicate.
    Seen,
    /// Another replica holds an unfinished claim.
    InFlight,
}

/// The answer of a claim, per key of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Nobody held the id: this replica owns it until committed or released.
    Claimed,
    /// Already safe somewhere, first seen with `fingerprint` (0: unknown), for `left` more.
    Seen { fingerprint: u64, left: Duration },
    /// Another replica holds an unfinished claim.
    InFlight,
}

/// Why Redis could not answer. Messages carry no password and no key material beyond the
/// hex key.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Unreachable, timed out, loading, failing over: transient, answer the sender 503.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Credentials or ACL permissions refused.
    #[error("redis refused the credentials: {0}")]
    Auth(String),
    /// The options cannot work (bad URL, unreadable CA file, zero TTL).
    #[error("redis configuration: {0}")]
    Config(String),
    /// Redis answered something this module never writes (a foreign value under our key).
    #[error("redis answered unexpectedly: {0}")]
    Protocol(String),
}

struct Inner {
    conn: Conn,
    cluster: bool,
    dedicated_db: bool,
    prefix: String,
    ttl: Duration,
    ttl_ms: u64,
    claim_ttl_ms: u64,
    timeout: Duration,
    /// `claim:<random 128-bit hex>-<pid>`, one per `connect`: release compares against it.
    claim_value: String,
    round_trips: AtomicU64,
    /// Whether the last call was answered: a change is logged (WARN away, INFO back).
    up: AtomicBool,
    /// Passwords from the URL(s), raw and percent-decoded, scrubbed from every message.
    secrets: Vec<String>,
}

/// The Redis duplicate memory. Cheap to clone; clones share connection and cache.
#[derive(Clone)]
pub struct RedisSeen {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSeen")
            .field("cluster", &self.inner.cluster)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisSeen {
    /// Builds the connection and probes Redis once, within `timeout`.
    ///
    /// Never waits longer than about `timeout`: the connection is lazy and reconnects by
    /// itself. Redis being unreachable at start-up is logged and tolerated (the replica
    /// starts, `healthy()` is false and calls fail with `Unavailable` until Redis answers);
    /// refused credentials or a bad URL are errors, since waiting cannot fix them.
    pub async fn connect(opts: RedisOptions) -> Result<RedisSeen, RedisError> {
        let mut secrets = url_passwords(&opts.url);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len())); // longest first when scrubbing
        let scrub_with = |m: String| scrub(&m, &secrets);

        if opts.prefix.is_empty() {
            return Err(RedisError::Config("prefix must not be empty".into()));
        }
        for (name, d) in [
            ("ttl", opts.ttl),
            ("claim_ttl", opts.claim_ttl),
            ("timeout", opts.timeout),
        ] {
            if d < Duration::from_millis(1) {
                return Err(RedisError::Config(format!("{name} must be at least 1ms")));
            }
        }

        let mut cluster = opts.cluster;
        let mut urls = Vec::new();
        for part in opts.url.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let url = if let Some(rest) = part.strip_prefix("redis+cluster://") {
                cluster = true;
                format!("redis://{rest}")
            } else if let Some(rest) = part.strip_prefix("rediss+cluster://") {
                cluster = true;
                format!("rediss://{rest}")
            } else {
                part.to_owned()
            };
            urls.push(url);
        }
        if urls.is_empty() {
            return Err(RedisError::Config("url is empty".into()));
        }
        if !cluster && urls.len() > 1 {
            return Err(RedisError::Config(
                "several URLs are only accepted for Redis Cluster (cluster: true)".into(),
            ));
        }

        let root_cert = match &opts.tls_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| RedisError::Config(format!("cannot read tls_ca_file {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let config_err = |e: redis::RedisError| RedisError::Config(scrub_with(e.to_string()));

        let conn = if cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(urls)
                .connection_timeout(opts.timeout)
                .response_timeout(opts.timeout)
                // Few, short retries: our own timeout bounds each call anyway.
                .retries(2)
                .min_retry_wait(20)
                .max_retry_wait(200);
            if let Some(pem) = root_cert {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                });
            }
            let client = builder.build().map_err(config_err)?;
            let config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(opts.timeout)
                .set_response_timeout(opts.timeout);
            // Connects in the background: the first command waits for it (bounded).
            Conn::Cluster(client.get_pending_async_connection_with_config(config))
        } else {
            let url = urls.swap_remove(0);
            let client = match root_cert {
                Some(pem) => redis::Client::build_with_tls(
                    url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                ),
                None => redis::Client::open(url.as_str()),
            }
            .map_err(config_err)?;
            // One quick retry per reconnect attempt: a failed attempt surfaces as an error
            // and the next call starts a fresh one, so recovery follows Redis within a call.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(opts.timeout))
                .set_response_timeout(Some(opts.timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(20))
                .set_max_delay(Duration::from_millis(200));
            Conn::Single(ConnectionManager::new_lazy_with_config(client, config).map_err(config_err)?)
        };

        let this = RedisSeen {
            inner: Arc::new(Inner {
                conn,
                cluster,
                dedicated_db: opts.dedicated_db,
                prefix: opts.prefix,
                ttl: opts.ttl,
                ttl_ms: millis(opts.ttl),
                claim_ttl_ms: millis(opts.claim_ttl),
                timeout: opts.timeout,
                claim_value: format!("claim:{:032x}-{}", rand::random::<u128>(), std::process::id()),
                round_trips: AtomicU64::new(0),
                up: AtomicBool::new(true),
                secrets,
            }),
        };

        match this.probe().await {
            Ok(()) => {}
            Err(e @ (RedisError::Auth(_) | RedisError::Config(_))) => return Err(e),
            Err(e) => tracing::warn!(
                error = %e,
                "redis dedupe not reachable at start-up; retrying in the background"
            ),
        }
        Ok(this)
    }

    /// Number of dedupe keys (claims included), for the `pushgate_dedupe_keys` gauge.
    ///
    /// * `dedicated_db`: DBSIZE, O(1) (summed over primaries in Cluster);
    /// * otherwise, single node: SCAN MATCH `{prefix}:*`, 1,000 keys a step, at most 100
    ///   steps; `None` when the database is larger than that (the gauge stays unset rather
    ///   than showing a partial count);
    /// * otherwise, Cluster: `None`.
    ///
    /// `None` as well when Redis does not answer. Meant for a scrape every few seconds, not
    /// per request.
    pub async fn approx_len(&self) -> Option<u64> {
        let counted = if self.inner.dedicated_db {
            self.run::<u64>(&redis::cmd("DBSIZE")).await.map(Some)
        } else if self.inner.cluster {
            Ok(None) // SCAN would have to visit every primary
        } else {
            self.scan_count().await
        };
        counted.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "dedupe key count unavailable");
            None
        })
    }

    /// Counts `{prefix}:*` keys with SCAN, giving up (`None`) past 100 steps of 1,000. SCAN
    /// may return a key twice while Redis rehashes: the count is approximate.
    async fn scan_count(&self) -> Result<Option<u64>, RedisError> {
        const STEP: u64 = 1_000;
        const MAX_STEPS: usize = 100;
        let pattern = format!("{}:*", glob_escape(&self.inner.prefix));
        let mut cursor = 0u64;
        let mut count = 0u64;
        for _ in 0..MAX_STEPS {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(STEP);
            let (next, keys): (u64, Vec<Value>) = self.run(&cmd).await?;
            count += keys.len() as u64;
            cursor = next;
            if cursor == 0 {
                return Ok(Some(count));
            }
        }
        Ok(None)
    }

    /// Redis calls made so far (local-cache answers excluded). For tests and diagnostics.
    #[doc(hidden)]
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }
}

/// The tests' redis-server launcher, shared with the integration tests (which use all of it).
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../tests/support/redis.rs"]
mod launcher;

#[cfg(test)]
mod tests {
    use super::launcher::{free_port, Redis as Server};
    use super::*;
    use std::process::Command;
    use std::time::Instant;

    fn options(srv: &Server) -> RedisOptions {
        RedisOptions::new(srv.url())
    }

    /// A plain connection for looking at what the module wrote.
    async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    fn k(n: u8) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[0] = 0xab;
        k[15] = n;
        k
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commit_makes_a_duplicate_with_its_fingerprint() {
        let srv = Server::start();
        let a = RedisSeen::connect(options(&srv)).await.unwrap();
        assert_eq!(a.try_claim(k(1)).await.unwrap(), RemoteClaim::Claimed);

        // The key is `{prefix}:{hex}` holding our claim, bounded by claim_ttl.
        let mut r = raw(&srv.url()).await;
        let name = &format!("pushgate:dedupe:ab{}01", "0".repeat(28));
        let v: String = redis::cmd("GET").arg(name).query_async(&mut r).await.unwrap();
        assert!(v.starts_with("claim:"), "{v}");
        let pttl: i64 = redis::cmd("PTTL").arg(name).query_async(&mut r).await.unwrap();
        assert!(pttl > 0 && pttl <= 30_000, "{pttl}");

        a.commit_batch(&[(k(1), 0x0123_4567_89ab_cdef)], false).await.unwrap();
        let v: String = redis::cmd("GET").arg(name).query_async(&mut r).await.unwrap();
        assert_eq!(v, "seen:0123456789abcdef");

        let b = RedisSeen::connect(options(&srv)).await.unwrap();
        let got = b.claim_batch(&[k(1), k(2)]).await.unwrap();
        assert!(
            matches!(got[0], Answer::Seen { fingerprint: 0x0123_4567_89ab_cdef, left } if left > Duration::from_secs(3600)),
            "{got:?}"
        );
        assert_eq!(got[1], Answer::Claimed);

        // Only ours: a deferred write (`nx`) leaves what a replica wrote since, but replaces
        // a claim of its own whose answer was lost.
        assert_eq!(b.try_claim(k(4)).await.unwrap(), RemoteClaim::Claimed);
        b.commit_batch(&[(k(1), 7), (k(3), 7), (k(4), 9)], true).await.unwrap();
        assert!(matches!(
            a.claim_batch(&[k(4)]).await.unwrap()[0],
            Answer::Seen { fingerprint: 9, .. }
        ));
        let v: String = redis::cmd("GET").arg(name).query_async(&mut r).await.unwrap();
        assert_eq!(v, "seen:0123456789abcdef");
        assert!(matches!(
            a.claim_batch(&[k(3)]).await.unwrap()[0],
            Answer::Seen { fingerprint: 7, .. }
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_claims_take_one_script_run() {
        let srv = Server::start();
        let a = RedisSeen::connect(options(&srv)).await.unwrap();
        let keys: Vec<[u8; 16]> = (0..1000u32)
            .map(|i| {
                let mut key = [0u8; 16];
                key[..4].copy_from_slice(&i.to_be_bytes());
                key
            })
            .collect();
        let mut r = raw(&srv.url()).await;
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut r).await.unwrap();
        let before = a.round_trips();
        let got = a.claim_batch(&keys).await.unwrap();
        assert!(got.iter().all(|g| *g == Answer::Claimed));
        let entries: Vec<_> = keys.iter().map(|&k| (k, 5)).collect();
        a.commit_batch(&entries, false).await.unwrap();
        assert_eq!(a.round_trips(), before + 2);
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut r)
            .await
            .unwrap();
        let evalsha = info.lines().find(|l| l.starts_with("cmdstat_evalsha:")).unwrap();
        assert!(evalsha.starts_with("cmdstat_evalsha:calls=2,"), "{evalsha}");
        let got = a.claim_batch(&keys).await.unwrap();
        assert!(got.iter().all(|g| matches!(g, Answer::Seen { fingerprint: 5, .. })));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn release_makes_the_id_claimable_again() {
        let srv = Server::start();
        let a = RedisSeen::connect(options(&srv)).await.unwrap();
        assert_eq!(a.try_claim(k(2)).await.unwrap(), RemoteClaim::Claimed);
        assert_eq!(a.try_claim(k(2)).await.unwrap(), RemoteClaim::InFlight);
        a.release(k(2)).await.unwrap();
        assert_eq!(a.try_claim(k(2)).await.unwrap(), RemoteClaim::Claimed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_concurrent_claims_across_two_replicas_give_one_owner() {
        let srv = Server::start();
        let a = RedisSeen::connect(options(&srv)).await.unwrap();
        let b = RedisSeen::connect(options(&srv)).await.unwrap();
        for round in 0..5u8 {
            let start = Arc::new(tokio::sync::Barrier::new(50));
            let tasks: Vec<_> = (0..50)
                .map(|i| {
                    let r = if i % 2 == 0 { a.clone() } else { b.clone() };
                    let start = start.clone();
                    tokio::spawn(async move {
                        start.wait().await;
                        r.try_claim(k(100 + round)).await.unwrap()
                    })
                })
                .collect();
            let mut claimed = 0;
            for t in tasks {
                match t.await.unwrap() {
                    RemoteClaim::Claimed => claimed += 1,
                    RemoteClaim::InFlight => {}
                    RemoteClaim::Seen => panic!("nothing was committed"),
                }
            }
            assert_eq!(claimed, 1, "round {round}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_replica_sees_the_commit() {
        let srv = Server::start();
        let a = RedisSeen::connect(options(&srv)).await.unwrap();
        let b = RedisSeen::connect(options(&srv)).await.unwrap();
        assert_eq!(a.try_claim(k(3)).await.unwrap(), RemoteClaim::Claimed);
        assert_eq!(b.try_claim(k(3)).await.unwrap(), RemoteClaim::InFlight);

        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait(k(3), Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!waiter.is_finished(), "must wait while the claim is held");
        a.commit(k(3)).await.unwrap();
        let t = Instant::now();
        assert_eq!(waiter.await.unwrap().unwrap(), Some(RemoteClaim::Seen));
        assert!(t.elapsed() < Duration::from_millis(700), "{:?}", t.elapsed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_replica_takes_over_a_released_claim() {
        let srv = Server::start();
        let a = RedisSeen::connect(options(&srv)).await.unwrap();
        let b = RedisSeen::connect(options(&srv)).await.unwrap();
        assert_eq!(a.try_claim(k(4)).await.unwrap(), RemoteClaim::Claimed);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait(k(4), Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.release(k(4)).await.unwrap();
        // "Gone" is answered as Claimed: b took the id in the same step.
        assert_eq!(waiter.await.unwrap().unwrap(), Some(RemoteClaim::Claimed));
        assert_eq!(a.try_claim(k(4)).await.unwrap(), RemoteClaim::InFlight);
        // b's claim is b's: a's release leaves it, b's release frees it.
        a.release(k(4)).await.unwrap();
        assert_eq!(a.try_claim(k(4)).await.unwrap(), RemoteClaim::InFlight);
        b.release(k(4)).await.unwrap();
        assert_eq!(a.try_claim(k(4)).await.unwrap(), RemoteClaim::Claimed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_times_out_while_the_claim_is_held() {
        let srv = Server::start();
        let a = RedisSeen::connect(options(&srv)).await.unwrap();
        let b = RedisSeen::connect(options(&srv)).await.unwrap();
        assert_eq!(a.try_claim(k(5)).await.unwrap(), RemoteClaim::Claimed);
        let t = Instant::now();
        assert_eq!(b.wait(k(5), Duration::from_millis(300)).await.unwrap(), None);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(600));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_claim_of_a_dead_replica_frees_the_id() {
        let srv = Server::start();
        let opts = RedisOptions {
            claim_ttl: Duration::from_millis(300),
            ..options(&srv)
        };
        let dead = RedisSeen::connect(opts.clone()).await.unwrap();
        let b = RedisSeen::connect(opts).await.unwrap();
        assert_eq!(dead.try_claim(k(6)).await.unwrap(), RemoteClaim::Claimed);
        drop(dead); // dies mid-claim: never commits nor releases
        assert_eq!(b.try_claim(k(6)).await.unwrap(), RemoteClaim::InFlight);
        let t = Instant::now();
        let got = b.wait(k(6), Duration::from_secs(3)).await.unwrap();
        assert_eq!(got, Some(RemoteClaim::Claimed));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_id_is_forgotten_after_ttl_in_redis_and_in_the_local_memory() {
        let srv = Server::start();
        let opts = RedisOptions {
            ttl: Duration::from_millis(600),
            ..options(&srv)
        };
        let a = RedisSeen::connect(opts.clone()).await.unwrap();
        assert_eq!(a.try_claim(k(7)).await.unwrap(), RemoteClaim::Claimed);
        a.commit(k(7)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;

        // A replica's memory learns the id for what Redis has left (~300ms), not a fresh ttl.
        let b = super::super::Dedupe::redis(super::super::WhenUnavailable::Refuse, Duration::from_secs(60), 100);
        b.connect_redis(opts).await.unwrap();
        let want = super::super::Want {
            key: super::super::Key(k(7)),
            fingerprint: 1,
        };
        let seen = |s: &[super::super::Claim]| matches!(s, [super::super::Claim::Seen]);
        assert!(seen(&b.claim_all(&[want]).await.unwrap()));
        let before = b.round_trips().unwrap();
        assert!(seen(&b.claim_all(&[want]).await.unwrap()));
        assert_eq!(b.round_trips().unwrap(), before, "a known duplicate does not ask redis");
        tokio::time::sleep(Duration::from_millis(450)).await;
        let slots = b.claim_all(&[want]).await.unwrap();
        assert!(matches!(slots[..], [super::super::Claim::New(_)]));
        assert_eq!(b.round_trips().unwrap(), before + 1, "the memory forgot it with redis");
        drop(slots);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn release_never_deletes_another_owner_nor_a_seen_mark() {
        let srv = Server::start();
        let a = RedisSeen::connect(options(&srv)).await.unwrap();
        let b = RedisSeen::connect(options(&srv)).await.unwrap();
        assert_eq!(a.try_claim(k(8)).await.unwrap(), RemoteClaim::Claimed);
        b.release(k(8)).await.unwrap();
        assert_eq!(b.try_claim(k(8)).await.unwrap(), RemoteClaim::InFlight);
        a.commit(k(8)).await.unwrap();
        a.release(k(8)).await.unwrap(); // late release after commit: no-op
        assert_eq!(b.try_claim(k(8)).await.unwrap(), RemoteClaim::Seen);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_foreign_value_under_our_key_is_an_error_not_an_answer() {
        let srv = Server::start();
        let a = RedisSeen::connect(options(&srv)).await.unwrap();
        let mut r = raw(&srv.url()).await;
        let _: () = redis::cmd("SET")
            .arg(format!("pushgate:dedupe:ab{}09", "0".repeat(28)))
            .arg("junk")
            .query_async(&mut r)
            .await
            .unwrap();
        assert!(matches!(a.try_claim(k(9)).await, Err(RedisError::Protocol(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_redis_fails_fast_and_a_restarted_one_is_used_again() {
        let mut srv = Server::start();
        let a = RedisSeen::connect(options(&srv)).await.unwrap();
        assert_eq!(a.try_claim(k(10)).await.unwrap(), RemoteClaim::Claimed);
        assert!(a.healthy().await);

        srv.kill();
        for i in 0..5 {
            let t = Instant::now();
            let r = a.try_claim(k(11)).await;
            eprintln!("redis down: try_claim #{i} failed after {:?}: {r:?}", t.elapsed());
            assert!(matches!(r, Err(RedisError::Unavailable(_))), "{i}: {r:?}");
            assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
            let t = Instant::now();
            assert!(a.commit(k(12)).await.is_err());
            assert!(a.release(k(10)).await.is_err());
            assert!(!a.healthy().await);
            assert_eq!(a.approx_len().await, None);
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        }

        srv.restart();
        let back = Instant::now();
        let until = back + Duration::from_secs(10);
        loop {
            match a.try_claim(k(11)).await {
                Ok(r) => {
                    eprintln!("redis back: first success after {:?}", back.elapsed());
                    assert_eq!(r, RemoteClaim::Claimed);
                    break;
                }
                Err(e) => assert!(Instant::now() < until, "not back: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(a.healthy().await);
        a.commit(k(11)).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_does_not_wait_for_a_missing_redis() {
        let port = free_port();
        let t = Instant::now();
        let a = RedisSeen::connect(RedisOptions::new(format!("redis://127.0.0.1:{port}/0")))
            .await
            .unwrap();
        assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
        assert!(!a.healthy().await);
        assert!(matches!(a.try_claim(k(13)).await, Err(RedisError::Unavailable(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_redis_becomes_unavailable_within_the_timeout() {
        let srv = Server::start();
        let a = RedisSeen::connect(RedisOptions {
            timeout: Duration::from_millis(300),
            ..options(&srv)
        })
        .await
        .unwrap();
        assert!(a.healthy().await);
        let pid = srv.pid().unwrap().to_string();
        let stop = |sig: &str| assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
        stop("-STOP");
        let t = Instant::now();
        let r = a.try_claim(k(14)).await;
        stop("-CONT");
        assert!(matches!(r, Err(RedisError::Unavailable(_))), "{r:?}");
        assert!(t.elapsed() < Duration::from_millis(800), "{:?}", t.elapsed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auth_works_and_a_wrong_password_is_never_printed() {
        let srv = Server::start_args(&["--requirepass", "s3cr3t-Pw"]);
        let url = |pw: &str| format!("redis://default:{pw}@127.0.0.1:{}/0", srv.port);

        let a = RedisSeen::connect(RedisOptions::new(url("s3cr3t-Pw"))).await.unwrap();
        assert_eq!(a.try_claim(k(15)).await.unwrap(), RemoteClaim::Claimed);
        a.commit(k(15)).await.unwrap();
        // Password-only form (legacy AUTH).
        let b = RedisSeen::connect(RedisOptions::new(format!(
            "redis://:s3cr3t-Pw@127.0.0.1:{}/0",
            srv.port
        )))
        .await
        .unwrap();
        assert_eq!(b.try_claim(k(15)).await.unwrap(), RemoteClaim::Seen);

        let wrong = "Wr0ng%2Fpass";
        let opts = RedisOptions::new(url(wrong));
        let dbg = format!("{opts:?}");
        assert!(!dbg.contains("Wr0ng") && dbg.contains("default:***@"), "{dbg}");
        let err = RedisSeen::connect(opts).await.unwrap_err();
        let shown = format!("{err} / {err:?}");
        assert!(matches!(err, RedisError::Auth(_)), "{shown}");
        assert!(!shown.contains("Wr0ng"), "{shown}");

        // No password at all: refused the same way.
        let err = RedisSeen::connect(options(&srv)).await.unwrap_err();
        assert!(matches!(err, RedisError::Auth(_)), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn approx_len_counts_only_our_prefix() {
        let srv = Server::start();
        let a = RedisSeen::connect(options(&srv)).await.unwrap();
        let other = RedisSeen::connect(RedisOptions {
            prefix: "pushgate:staging:dedupe".into(),
            ..options(&srv)
        })
        .await
        .unwrap();
        for i in 0..30 {
            assert_eq!(a.try_claim(k(i)).await.unwrap(), RemoteClaim::Claimed);
            if i % 2 == 0 {
                a.commit(k(i)).await.unwrap();
            }
        }
        // Another environment's prefix is another memory.
        assert_eq!(other.try_claim(k(0)).await.unwrap(), RemoteClaim::Claimed);
        assert_eq!(a.approx_len().await, Some(30));
        assert_eq!(other.approx_len().await, Some(1));
        let dedicated = RedisSeen::connect(RedisOptions {
            dedicated_db: true,
            ..options(&srv)
        })
        .await
        .unwrap();
        assert_eq!(dedicated.approx_len().await, Some(31));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cluster_is_spoken_too() {
        let srv = Server::start_args(&["--cluster-enabled", "yes"]);
        let mut r = raw(&srv.url()).await;
        let _: () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query_async(&mut r)
            .await
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut r).await.unwrap();
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < until, "cluster not ok: {info}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let opts = RedisOptions {
            dedicated_db: true,
            ..RedisOptions::new(format!("redis+cluster://127.0.0.1:{}", srv.port))
        };
        let a = RedisSeen::connect(opts.clone()).await.unwrap();
        let b = RedisSeen::connect(opts).await.unwrap();
        assert!(a.healthy().await);
        assert_eq!(a.try_claim(k(16)).await.unwrap(), RemoteClaim::Claimed);
        assert_eq!(b.try_claim(k(16)).await.unwrap(), RemoteClaim::InFlight);
        a.release(k(16)).await.unwrap();
        assert_eq!(b.try_claim(k(16)).await.unwrap(), RemoteClaim::Claimed);
        b.commit(k(16)).await.unwrap();
        assert_eq!(a.try_claim(k(16)).await.unwrap(), RemoteClaim::Seen);
        assert_eq!(a.approx_len().await, Some(1));
    }

    /// Makes a CA and a `localhost` server certificate with the openssl CLI.
    fn make_tls_files(dir: &std::path::Path) -> bool {
        let sh = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf 2>/dev/null
"#;
        Command::new("sh")
            .args(["-c", sh])
            .current_dir(dir)
            .status()
            .is_ok_and(|s| s.success())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rediss_with_a_private_ca() {
        let certs = tempfile::tempdir().unwrap();
        if !make_tls_files(certs.path()) {
            eprintln!("SKIPPED rediss_with_a_private_ca: no openssl CLI");
            return;
        }
        let c = certs.path().to_owned();
        let srv = Server::start_with(|port, _| {
            let f = |n: &str| c.join(n).display().to_string();
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                f("server.pem"),
                "--tls-key-file".into(),
                f("server.key"),
                "--tls-ca-cert-file".into(),
                f("ca.pem"),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        });
        let url = format!("rediss://localhost:{}/0", srv.port);
        let a = RedisSeen::connect(RedisOptions {
            tls_ca_file: Some(certs.path().join("ca.pem")),
            ..RedisOptions::new(url.clone())
        })
        .await
        .unwrap();
        assert!(a.healthy().await);
        assert_eq!(a.try_claim(k(17)).await.unwrap(), RemoteClaim::Claimed);
        a.commit(k(17)).await.unwrap();

        // Without the private CA the server is not trusted: an error, not a hang.
        let untrusted = RedisSeen::connect(RedisOptions::new(url)).await.unwrap();
        assert!(!untrusted.healthy().await);
        assert!(untrusted.try_claim(k(17)).await.is_err());
    }

    #[test]
    fn urls_are_redacted_and_secrets_scrubbed() {
        assert_eq!(
            redact_url("rediss://app:p%40ss@redis.internal:6380/2"),
            "rediss://app:***@redis.internal:6380/2"
        );
        assert_eq!(
            redact_url("redis://:pw@a:1,redis://:pw2@b:2"),
            "redis://:***@a:1,redis://:***@b:2"
        );
        assert_eq!(redact_url("redis://secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        let pws = url_passwords("redis://u:p%40ss@h");
        assert_eq!(pws, ["p%40ss", "p@ss"]);
        assert_eq!(scrub("failed: p@ss and p%40ss", &pws), "failed: *** and ***");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    /// Added latency of try_claim + commit on loopback:
    /// `cargo test --release -- --ignored --nocapture latency`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn latency() {
        let srv = Server::start();
        let a = RedisSeen::connect(options(&srv)).await.unwrap();
        let n = 2_000u32;
        let mut claim_commit = Vec::with_capacity(n as usize);
        let mut dup_remote = Vec::with_capacity(n as usize);
        let mut dup_local = Vec::with_capacity(n as usize);
        let b = RedisSeen::connect(options(&srv)).await.unwrap();
        for i in 0..n {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&i.to_be_bytes());
            let t = Instant::now();
            assert_eq!(a.try_claim(key).await.unwrap(), RemoteClaim::Claimed);
            a.commit(key).await.unwrap();
            claim_commit.push(t.elapsed());
            let t = Instant::now();
            assert_eq!(b.try_claim(key).await.unwrap(), RemoteClaim::Seen);
            dup_remote.push(t.elapsed());
            let t = Instant::now();
            let batch = [key; 1];
            assert!(matches!(a.claim_batch(&batch).await.unwrap()[0], Answer::Seen { .. }));
            dup_local.push(t.elapsed());
        }
        for (name, mut v) in [
            ("try_claim+commit", claim_commit),
            ("duplicate via Redis", dup_remote),
            ("duplicate via claim_batch", dup_local),
        ] {
            v.sort();
            let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
            println!(
                "{name}: n={} median={:?} p99={:?} max={:?}",
                v.len(),
                p(0.5),
                p(0.99),
                v[v.len() - 1]
            );
        }
    }
}
