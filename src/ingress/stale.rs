//! The out-of-date status guard: a Cross-Border status that arrives after a newer one for the
//! same transaction (a sender's retry of an older status) is flagged `X-Pushgate-Stale: true`
//! or held, so the app never overwrites "SUCCESS" with a late "PENDING" unawares.
//!
//! The transaction is the event's ordering key (`transactionReference` for `mastercard-xbs`),
//! so one transaction's events also reach the app in acceptance order. An event's status time
//! is the newest of the timestamps its `status_timestamp` pointers find (RFC 3339, any offset).
//! The newest time accepted per key is remembered for the dedupe TTL. It is not written
//! anywhere of its own: after a restart each guarded route rebuilds it from the events the
//! store holds for that TTL (started with the forwarder, in the background; only a
//! `quarantine` route's first event waits for it), so it is exactly as durable as the events and costs no write on the request path.
//! The price is start-up work: measured (`rebuild_cost` below, a debug build on a 2-core
//! machine shared with other builds) 7.1 s of CPU for 20,000 stored 1.4 KB events, 355 µs
//! each, almost all of it parsing bodies. A file of its own would start in O(keys) but needs
//! its own fsync per accepted event to be as safe, on the path whose latency matters.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::ingress::route::Route;
use crate::profile::json::{self, Paths};
use crate::profile::Event;
use crate::shared::{now_ms, Shared};
use crate::spool::{ListQuery, Spool, StorageError};

/// The header on a delivery with an out-of-date status (set with the others in forward/request.rs).
pub use crate::forward::STALE_HEADER as HEADER;
/// Where `mastercard-xbs` keeps its status history (camelCase and snake_case variants).
pub const XBS_TIMESTAMPS: &[&str] = &["/transactionHistories/*/timestamp", "/transaction_history/*/timestamp"];
/// Stored deliveries read per page while rebuilding.
const REBUILD_PAGE: u64 = 10_000;

/// What to do with an out-of-date status (`on_stale:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStale {
    /// Deliver it with `X-Pushgate-Stale: true` (the default).
    #[default]
    Deliver,
    /// Store it quarantined (listed, replayable), not delivered; the sender gets its 200.
    Quarantine,
    /// No guard on this route.
    Off,
}

/// A route's guard, compiled from `status_timestamp:` and `on_stale:`.
#[derive(Clone, Debug)]
pub struct Guard {
    /// JSON pointers; a `*` segment stands for every element of an array.
    pub timestamps: Vec<String>,
    pub on_stale: OnStale,
    /// `timestamps`, compiled for the borrowed walk of the request path.
    paths: Paths,
}

impl Guard {
    /// The guard for a route, or None. `timestamps`: the route's `status_timestamp`, else the
    /// profile's default.
    pub fn build(profile: &str, timestamps: Option<Vec<String>>, on_stale: OnStale) -> Result<Option<Guard>, String> {
        let timestamps = timestamps.unwrap_or_else(|| match profile {
            "mastercard-xbs" => XBS_TIMESTAMPS.iter().map(|s| s.to_string()).collect(),
            _ => Vec::new(),
        });
        if let Some(p) = timestamps.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("`{p}` is not a JSON pointer (it must start with /)"));
        }
        if on_stale == OnStale::Off || timestamps.is_empty() {
            return Ok(None);
        }
        let paths = Paths::with_wildcards(timestamps.iter().map(String::as_str));
        Ok(Some(Guard {
            timestamps,
            on_stale,
            paths,
        }))
    }

    /// The newest status time in one event's JSON, in Unix milliseconds.
    /// One borrowed pass over the pointers' paths, no `Value` (on the request path).
    pub fn newest(&self, event: &[u8]) -> Option<i64> {
        let text = std::str::from_utf8(event).ok()?;
        let found = json::strings(text, &self.paths).ok()?;
        found.iter().filter_map(|s| parse_time(s)).max()
    }

    /// [`Guard::newest`] for an event already parsed (the start-up rebuild).
    fn newest_in(&self, value: &Value) -> Option<i64> {
        let mut newest = None;
        for p in &self.timestamps {
            let segments: Vec<&str> = p.split('/').skip(1).collect();
            collect(value, &segments, &mut |v| {
                if let Some(t) = v.as_str().and_then(parse_time) {
                    newest = newest.max(Some(t));
                }
            });
        }
        newest
    }
}

/// Visits what `segments` (a pointer split at `/`, `*` = every element) reaches in `value`.
fn collect(value: &Value, segments: &[&str], found: &mut impl FnMut(&Value)) {
    let Some((first, rest)) = segments.split_first() else {
        found(value);
        return;
    };
    match (value, *first) {
        (Value::Array(items), "*") => items.iter().for_each(|v| collect(v, rest, found)),
        (Value::Array(items), i) => {
            if let Some(v) = i.parse::<usize>().ok().and_then(|i| items.get(i)) {
                collect(v, rest, found);
            }
        }
        (Value::Object(map), key) => {
            let key = key.replace("~1", "/").replace("~0", "~");
            if let Some(v) = map.get(&key) {
                collect(v, rest, found);
            }
        }
        _ => {}
    }
}

/// RFC 3339 with any offset (`2021-06-25T15:41:00-05:00`) → Unix milliseconds.
fn parse_time(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// What the guard found for one delivery.
#[derive(Debug, Default)]
pub struct Verdict {
    /// At least one event is older than one already accepted for its key.
    pub stale: bool,
    /// (key, status time) to remember once the delivery is safe.
    pub seen: Vec<(String, i64)>,
}

struct Entry {
    newest_ms: i64,
    /// Forgotten after this (`received_at` + the dedupe TTL).
    until_ms: u64,
}

/// The newest status time accepted per (route, key).
pub struct Memory {
    ttl: Mutex<Duration>,
    times: Mutex<HashMap<(String, String), Entry>>,
    sweep_at: AtomicUsize,
    /// Routes whose memory has been rebuilt from the store in this process.
    loaded: tokio::sync::Mutex<HashSet<String>>,
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            ttl: Mutex::new(crate::boot::config::DEFAULT_DEDUPE_TTL),
            times: Mutex::new(HashMap::new()),
            sweep_at: AtomicUsize::new(4096),
            loaded: tokio::sync::Mutex::new(HashSet::new()),
        }
    }
}

impl Memory {
    /// How long a key is remembered: the dedupe TTL (set at start-up).
    pub fn set_ttl(&self, ttl: Duration) {
        *self.ttl.lock().unwrap_or_else(|p| p.into_inner()) = ttl;
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.lock().map_or(0, |t| t.as_millis() as u64)
    }

    fn times(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        // Inserts and lookups only: a poisoned map is still consistent.
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Judges a delivery's new events against what was accepted before on `route`.
    pub async fn judge(&self, spool: &Spool, route: &Route, fresh: &[&Event]) -> Result<Verdict, StorageError> {
        let Some(guard) = &route.stale else {
            return Ok(Verdict::default());
        };
        if guard.on_stale == OnStale::Quarantine {
            // Holding an event needs the whole memory: wait for the rebuild.
            self.ensure_loaded(spool, route, guard).await?;
        } else if !self.is_loaded(route) && !fresh.is_empty() {
            // Flagging never makes an acknowledgement wait for the rebuild (the forwarder
            // started it at start-up, and it reads every stored event of the TTL): until it
            // is done, statuses are judged against what this process accepted so far.
            tracing::debug!(route = %route.name, "stale guard still rebuilding; judged on what this process saw");
        }
        let now = now_ms();
        let times = self.times();
        let mut verdict = Verdict::default();
        for e in fresh {
            let (Some(key), Some(t)) = (&e.ordering_key, guard.newest(&e.bytes)) else {
                continue;
            };
            let k = (route.name.to_string(), key.clone());
            if times.get(&k).is_some_and(|old| old.until_ms > now && old.newest_ms > t) {
                verdict.stale = true;
            }
            verdict.seen.push((key.clone(), t));
        }
        Ok(verdict)
    }

    /// Remembers a delivery's status times once it is durable (or the app took it).
    pub fn remember(&self, route: &str, seen: Vec<(String, i64)>, received_at_ms: u64) {
        let until_ms = received_at_ms + self.ttl_ms();
        let mut times = self.times();
        for (key, t) in seen {
            let e = times
                .entry((route.to_string(), key))
                .or_insert(Entry { newest_ms: t, until_ms });
            if t >= e.newest_ms {
                e.newest_ms = t;
                e.until_ms = e.until_ms.max(until_ms);
            }
        }
        // Expired keys go when the map has doubled since the last sweep: amortised O(1).
        if times.len() >= self.sweep_at.load(Ordering::Relaxed) {
            let now = now_ms();
            times.retain(|_, e| e.until_ms > now);
            self.sweep_at.store((times.len() * 2).max(4096), Ordering::Relaxed);
        }
    }

    /// The guard's bookkeeping once a delivery is taken (durable, or the app answered 2xx):
    /// remember its status times; count it when stale.
    pub fn taken(&self, shared: &Shared, route: &Route, verdict: Verdict, received_at_ms: u64) {
        if verdict.stale {
            shared
                .metrics
                .events
                .with_label_values(&[route.name.as_str(), "stale"])
                .inc();
        }
        self.remember(route.name.as_str(), verdict.seen, received_at_ms);
    }

    fn is_loaded(&self, route: &Route) -> bool {
        self.loaded.try_lock().is_ok_and(|l| l.contains(route.name.as_str()))
    }

    /// Rebuilds a route's memory from the store once per process (started by the forwarder at
    /// start-up; a `quarantine` route's first judgement waits for it).
    pub async fn ensure_loaded(&self, spool: &Spool, route: &Route, guard: &Guard) -> Result<(), StorageError> {
        let mut loaded = self.loaded.lock().await;
        if loaded.contains(route.name.as_str()) {
            return Ok(());
        }
        let since = now_ms().saturating_sub(self.ttl_ms());
        let (spool, name, guard) = (spool.clone(), route.name.to_string(), guard.clone());
        let keys = route.profile.spec.ordering_key.clone();
        let started = std::time::Instant::now();
        let found = tokio::task::spawn_blocking(move || rebuild(&spool, &name, since, &guard, &keys))
            .await
            .map_err(|e| StorageError::Corrupt(format!("stale guard rebuild: {e}")))??;
        let n = found.len();
        for (key, t, received_at_ms) in found {
            self.remember(route.name.as_str(), vec![(key, t)], received_at_ms);
        }
        tracing::info!(route = %route.name, statuses = n, ms = started.elapsed().as_millis() as u64, "stale guard rebuilt from the store");
        loaded.insert(route.name.to_string());
        Ok(())
    }
}

/// Every (key, status time, received at) of `route`'s events stored since `since_ms`.
fn rebuild(
    spool: &Spool,
    route: &str,
    since_ms: u64,
    guard: &Guard,
    key_pointers: &[String],
) -> Result<Vec<(String, i64, u64)>, StorageError> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = spool.list(&ListQuery {
            route: Some(route.to_string()),
            start_ms: Some(since_ms),
            offset,
            limit: REBUILD_PAGE,
            ..ListQuery::default()
        })?;
        for meta in &page.items {
            if meta.quarantine_reason.is_some() {
                continue; // held or unreadable: never accepted as the transaction's state
            }
            let Some(body) = spool.body(meta.seq)? else { continue };
            let Ok(value) = serde_json::from_slice::<Value>(&body) else {
                continue;
            };
            let events = match &value {
                Value::Array(items) => items.iter().collect(),
                one => vec![one],
            };
            for event in events {
                let key = key_pointers.iter().find_map(|p| match event.pointer(p)? {
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
                if let (Some(key), Some(t)) = (key, guard.newest_in(event)) {
                    out.push((key, t, meta.received_at_ms));
                }
            }
        }
        offset += page.count;
        if page.count < REBUILD_PAGE {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xbs() -> Guard {
        Guard::build("mastercard-xbs", None, OnStale::Deliver).unwrap().unwrap()
    }

    #[test]
    fn the_newest_history_entry_counts_in_either_spelling() {
        let camel = br#"{"transactionHistories":[{"status":"SUCCESS","timestamp":"2021-06-25T15:41:00-05:00"},{"status":"PENDING","timestamp":"2021-06-25T15:40:00-05:00"}]}"#;
        let snake = br#"{"transaction_history":[{"timestamp":"2024-03-12T07:29:11Z"},{"timestamp":"2024-03-12T02:29:16-05:00"}]}"#;
        assert_eq!(xbs().newest(camel), parse_time("2021-06-25T20:41:00Z"));
        assert_eq!(xbs().newest(snake), parse_time("2024-03-12T07:29:16Z"));
        assert_eq!(
            xbs().newest(br#"{"transactionHistories":[{"timestamp":"yesterday"}]}"#),
            None
        );
        assert_eq!(xbs().newest(b"not json"), None);
    }

    #[test]
    fn off_or_no_pointer_means_no_guard() {
        assert!(Guard::build("mastercard-xbs", None, OnStale::Off).unwrap().is_none());
        assert!(Guard::build("generic", None, OnStale::Deliver).unwrap().is_none());
        let g = Guard::build("generic", Some(vec!["/at".into()]), OnStale::Quarantine)
            .unwrap()
            .unwrap();
        assert_eq!(g.newest(br#"{"at":"2020-01-01T00:00:00.5Z"}"#), Some(1_577_836_800_500));
        // An index and a member named `*` are followed as RFC 6901 says.
        let g = Guard::build(
            "generic",
            Some(vec!["/h/1/t".into(), "/o/*/t".into()]),
            OnStale::Deliver,
        )
        .unwrap()
        .unwrap();
        let (a, b) = ("2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z");
        assert_eq!(
            g.newest(format!(r#"{{"h":[{{"t":"{b}"}},{{"t":"{a}"}}]}}"#).as_bytes()),
            parse_time(a)
        );
        assert_eq!(
            g.newest(format!(r#"{{"o":{{"*":{{"t":"{b}"}}}}}}"#).as_bytes()),
            parse_time(b)
        );
        assert_eq!(g.newest(format!(r#"{{"o":{{"x":{{"t":"{b}"}}}}}}"#).as_bytes()), None);
        assert!(Guard::build("generic", Some(vec!["at".into()]), OnStale::Deliver).is_err());
    }

    /// The start-up cost of the rebuild: `cargo test --lib stale::tests::rebuild_cost -- --ignored
    /// --nocapture` (STALE_REBUILD_N events, default 20000, of the status-change sample's size).
    #[test]
    #[ignore]
    fn rebuild_cost() {
        let n: usize = std::env::var("STALE_REBUILD_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), crate::spool::SpoolOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let now = now_ms();
        let sample = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/samples/xbs-status-change.json"
        ))
        .unwrap();
        let body = String::from_utf8(sample).unwrap();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..n {
                let body = body.replacen(
                    "\"transactionReference\"",
                    &format!("\"x{i}\":0,\"transactionReference\""),
                    1,
                );
                let spool = spool.clone();
                tasks.push(tokio::spawn(async move {
                    spool
                        .append(crate::spool::NewDelivery {
                            route: "xbs".into(),
                            event_ids: vec![format!("E{i}")],
                            fingerprints: vec![i as u64],
                            ordering_key: Some(format!("T{}", i % 5000)),
                            received_at_ms: now,
                            client_dn: None,
                            headers: vec![("content-type".into(), "application/json".into())],
                            body: body.into(),
                            quarantine_reason: None,
                        })
                        .await
                        .unwrap()
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        let keys = vec!["/transactionReference".to_string()];
        let started = std::time::Instant::now();
        let cpu = cpu_seconds();
        let found = rebuild(&spool, "xbs", 0, &xbs(), &keys).unwrap();
        eprintln!(
            "rebuild of {n} stored events ({} bytes each): {} statuses in {:?} wall, {:.3} s CPU",
            body.len(),
            found.len(),
            started.elapsed(),
            cpu_seconds() - cpu
        );
        assert_eq!(found.len(), n);
    }

    /// This process's user + system CPU time (a busy machine inflates wall time, not this).
    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    #[test]
    fn every_pointer_sample_status_parses() {
        let Ok(dir) = std::fs::read_dir("../shared/vectors/specs/mastercard-xbs/status-change") else {
            eprintln!("skipped: ../shared/vectors is absent");
            return;
        };
        let mut n = 0;
        for f in dir.flatten() {
            let bytes = std::fs::read(f.path()).unwrap();
            let newest = xbs().newest(&bytes);
            assert!(newest.is_some(), "{}", f.path().display());
            // The request path's borrowed walk and the rebuild's `Value` read the same time.
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(newest, xbs().newest_in(&value), "{}", f.path().display());
            n += 1;
        }
        assert!(n >= 9, "{n} samples");
    }
}
