//! The forwarder: a background service that drains the spool to the app, route by route.
//!
//! Each route has its own task, queue and concurrency limit, so a dead app only slows its own
//! route. Within a route, events are dispatched in acceptance (seq) order; an event whose
//! ordering key is shared with an earlier undelivered event waits for it, others flow in
//! parallel. Fresh events arrive from ingest with their body in memory; after a restart or
//! a replay they are read back from the store. At most [`WINDOW`] events per route are held
//! in memory: always the oldest, so ordering holds across pages.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use super::retry::{classify, Verdict};
use super::schedule::Schedule;
use super::Delivery;
use crate::ingress::route::Route;
use crate::shared::{now_ms, Shared};
use crate::spool::{Meta, Seq, Spool};

/// Most pending events of one route held in memory.
pub const WINDOW: usize = 4096;
/// How often the spool gauges are refreshed and delivered events past retention compacted.
const STATS_EVERY: Duration = Duration::from_secs(5);
const COMPACT_EVERY: Duration = Duration::from_secs(600);

/// A message to a route's queue.
enum Msg {
    /// A delivery ingest has just made durable.
    Stored {
        seq: Seq,
        ordering_key: Option<String>,
        /// Boxed: the record is large, the other messages are not.
        delivery: Box<Delivery>,
    },
    /// The store changed behind the queue's back (a replay): look again.
    Rescan,
}

/// What ingest, the admin API and reload hold to reach the queues.
#[derive(Clone)]
pub struct ForwarderHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Msg>>>,
    /// Where queues for routes added by a reload are started: set when the service starts.
    spawner: OnceLock<Spawner>,
}

struct Spawner {
    runtime: tokio::runtime::Handle,
    shutdown: ShutdownWatch,
    shared: Weak<Shared>,
    spool: Spool,
}

impl ForwarderHandle {
    /// A handle that reaches no queue until the forwarder service built on it starts.
    pub fn detached() -> ForwarderHandle {
        ForwarderHandle {
            inner: Arc::new(HandleInner {
                queues: Mutex::new(HashMap::new()),
                spawner: OnceLock::new(),
            }),
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Msg>>> {
        // Inserts and lookups only: a poisoned map is still consistent.
        self.inner.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands over a delivery that is durable in the spool.
    pub fn stored(&self, seq: Seq, ordering_key: Option<String>, delivery: Delivery) {
        self.ensure(&delivery.route);
        if let Some(q) = self.queues().get(&delivery.route) {
            let _ = q.send(Msg::Stored {
                seq,
                ordering_key,
                delivery: Box::new(delivery),
            });
        }
    }

    /// Tells every route (or one) to look at the store again, after a replay.
    pub fn rescan(&self, route: Option<&str>) {
        for (name, q) in self.queues().iter() {
            if route.is_none_or(|r| r == name) {
                let _ = q.send(Msg::Rescan);
            }
        }
    }

    /// Starts a queue for a route that has none (a route added by a reload).
    pub fn ensure(&self, route: &str) {
        let Some(sp) = self.inner.spawner.get() else { return };
        let mut queues = self.queues();
        if queues.contains_key(route) {
            return;
        }
        let Some(shared) = sp.shared.upgrade() else { return };
        let (tx, rx) = mpsc::unbounded_channel();
        queues.insert(route.to_string(), tx);
        sp.runtime
            .spawn(RouteQueue::new(route.to_string(), shared, sp.spool.clone()).run(rx, sp.shutdown.clone()));
    }
}

pub struct Forwarder {
    shared: Arc<Shared>,
    handle: ForwarderHandle,
}

impl Forwarder {
    /// The service behind `shared`'s handle to its queues (one per route, started with the
    /// service).
    pub fn new(shared: Arc<Shared>) -> Forwarder {
        let handle = shared.forwarder().clone();
        Forwarder { shared, handle }
    }
}

#[async_trait]
impl BackgroundService for Forwarder {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Nothing to deliver before the store is open (it opens late only under -d and -u).
        let spool = self.shared.store.wait().await.clone();
        let spawner = Spawner {
            runtime: tokio::runtime::Handle::current(),
            shutdown: shutdown.clone(),
            shared: Arc::downgrade(&self.shared),
            spool: spool.clone(),
        };
        let _ = self.handle.inner.spawner.set(spawner);
        for route in self.shared.routes().iter() {
            self.handle.ensure(route.name.as_str());
        }
        // The stale guard's memory is rebuilt from the store now, in the background: a
        // `deliver` route's acknowledgements never wait for it (src/ingress/stale.rs).
        let (shared, store) = (self.shared.clone(), spool.clone());
        tokio::spawn(async move {
            for route in shared.routes().iter() {
                let Some(guard) = &route.stale else { continue };
                if let Err(e) = shared.stale.ensure_loaded(&store, route, guard).await {
                    tracing::warn!(route = %route.name, error = %e, "stale guard: cannot rebuild yet; retried on the next event");
                }
            }
        });
        let mut stats = tokio::time::interval(STATS_EVERY);
        let mut compact = tokio::time::interval(COMPACT_EVERY);
        let mut reopens = spool.reopens();
        loop {
            tokio::select! {
                _ = stats.tick() => {
                    self.shared.refresh_gauges().await;
                    // A reopen after a storage error rolls back outcomes not yet fsync'd:
                    // those events are pending again and must be delivered again.
                    if spool.reopens() != reopens {
                        reopens = spool.reopens();
                        self.handle.rescan(None);
                    }
                }
                _ = compact.tick() => {
                    match spool.compact(now_ms()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "compacted delivered events past retention"),
                        Err(e) => tracing::warn!(error = %e, "compaction failed"),
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// One event in a route's queue.
struct Item {
    ordering_key: Option<String>,
    /// Not before this instant.
    due: Instant,
    /// Attempts made so far.
    attempts: u32,
    received_at_ms: u64,
    /// The delivery, when ingest handed it over or a previous attempt read it.
    delivery: Option<Delivery>,
}

struct Done {
    seq: Seq,
    verdict: Verdict,
    delivery: Option<Delivery>,
}

struct RouteQueue {
    name: String,
    shared: Arc<Shared>,
    spool: Spool,
    items: BTreeMap<Seq, Item>,
    schedule: Schedule,
    in_flight: usize,
    /// More pending events are in the store past `high_water` than the window holds.
    more_in_store: bool,
    high_water: Option<Seq>,
}

impl RouteQueue {
    fn new(name: String, shared: Arc<Shared>, spool: Spool) -> RouteQueue {
        RouteQueue {
            name,
            shared,
            spool,
            items: BTreeMap::new(),
            schedule: Schedule::default(),
            in_flight: 0,
            more_in_store: true,
            high_water: None,
        }
    }

    fn route(&self) -> Option<Arc<Route>> {
        self.shared.routes().by_name(&self.name).cloned()
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, mut shutdown: ShutdownWatch) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        self.load(true);
        loop {
            let next_due = self.dispatch(&done_tx);
            let sleep = async {
                match next_due {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Stored { seq, ordering_key, delivery }) => self.admit(seq, ordering_key, *delivery),
                    Some(Msg::Rescan) => self.load(true),
                    None => return,
                },
                Some(done) = done_rx.recv() => self.finish(done),
                _ = sleep => {}
                _ = shutdown.changed() => return,
            }
            if self.more_in_store && self.items.len() < WINDOW / 2 {
                self.load(false);
            }
        }
    }

    /// Reads pending events from the store: from the start (`fresh`, at boot and after a
    /// replay) or past what the window already holds.
    fn load(&mut self, fresh: bool) {
        let after = if fresh { None } else { self.high_water };
        let room = WINDOW.saturating_sub(self.items.len()).max(1);
        let metas: Vec<Meta> = match self.spool.pending(&self.name, after, room) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(route = %self.name, error = %e, "cannot read pending events; retrying later");
                return;
            }
        };
        self.more_in_store = metas.len() >= room;
        let now = Instant::now();
        let wall = now_ms();
        for m in metas {
            self.high_water = self.high_water.max(Some(m.seq));
            self.add(
                m.seq,
                Item {
                    ordering_key: m.ordering_key,
                    due: now + Duration::from_millis(m.next_attempt_at_ms.saturating_sub(wall)),
                    attempts: m.attempts,
                    received_at_ms: m.received_at_ms,
                    delivery: None,
                },
            );
        }
    }

    fn admit(&mut self, seq: Seq, ordering_key: Option<String>, delivery: Delivery) {
        // A full window: this event (and every later one) waits in the store, read in its turn.
        // Without this, an app slower than the senders grew the queue (bodies included)
        // without bound: 2 GB after 1M events at full rate (bench/compare.sh).
        if self.items.len() >= WINDOW && self.high_water.is_some_and(|h| seq > h) {
            self.more_in_store = true;
        }
        if self.more_in_store && self.high_water.is_some_and(|h| seq > h) {
            return; // the window is full: it will be read from the store in its turn
        }
        self.high_water = self.high_water.max(Some(seq));
        let received_at_ms = delivery.received_at_ms;
        self.add(
            seq,
            Item {
                ordering_key,
                due: Instant::now(),
                attempts: 0,
                received_at_ms,
                delivery: Some(delivery),
            },
        );
    }

    /// Queues an event the queue does not hold yet.
    fn add(&mut self, seq: Seq, item: Item) {
        if let std::collections::btree_map::Entry::Vacant(slot) = self.items.entry(seq) {
            self.schedule.add(seq, item.ordering_key.as_deref(), item.due);
            slot.insert(item);
        }
    }

    /// Starts every delivery that may go now; returns when the next waiting one is due.
    fn dispatch(&mut self, done: &mpsc::UnboundedSender<Done>) -> Option<Instant> {
        let route = self.route()?;
        let now = Instant::now();
        while self.in_flight < route.upstream.concurrency {
            let Some(seq) = self.schedule.next(now) else { break };
            let Some(item) = self.items.get_mut(&seq) else { continue };
            self.in_flight += 1;
            let job = Attempt {
                seq,
                attempt: item.attempts + 1,
                age: Duration::from_millis(now_ms().saturating_sub(item.received_at_ms)),
                delivery: item.delivery.take(),
                route: route.clone(),
                shared: self.shared.clone(),
                spool: self.spool.clone(),
            };
            let done = done.clone();
            tokio::spawn(async move {
                let _ = done.send(job.run().await);
            });
        }
        self.schedule.next_due()
    }

    fn finish(&mut self, done: Done) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(item) = self.items.get_mut(&done.seq) else {
            return;
        };
        match done.verdict {
            Verdict::Retry { after, .. } => {
                item.attempts += 1;
                item.due = Instant::now() + after;
                item.delivery = done.delivery;
                self.schedule.arm(done.seq, item.due);
            }
            Verdict::Delivered | Verdict::Dead { .. } => {
                let Some(item) = self.items.remove(&done.seq) else {
                    return;
                };
                if let Some(next) = self.schedule.done(done.seq, item.ordering_key.as_deref()) {
                    if let Some(n) = self.items.get(&next) {
                        self.schedule.arm(next, n.due);
                    }
                }
            }
        }
    }
}

/// One delivery attempt and the bookkeeping of its verdict.
struct Attempt {
    seq: Seq,
    attempt: u32,
    age: Duration,
    delivery: Option<Delivery>,
    route: Arc<Route>,
    shared: Arc<Shared>,
    spool: Spool,
}

impl Attempt {
    async fn run(self) -> Done {
        let name = self.route.name.as_str();
        let delivery = match self.delivery {
            Some(d) => d,
            None => match read_back(&self.spool, self.seq) {
                Ok(Some(d)) => d,
                Ok(None) => {
                    // Purged or no longer pending: nothing to deliver.
                    return Done {
                        seq: self.seq,
                        verdict: Verdict::Delivered,
                        delivery: None,
                    };
                }
                Err(e) => {
                    let reason = format!("cannot read the event back: {e}");
                    return Done {
                        seq: self.seq,
                        verdict: Verdict::Retry {
                            after: Duration::from_secs(5),
                            reason,
                        },
                        delivery: None,
                    };
                }
            },
        };
        let started = Instant::now();
        let result = self
            .shared
            .client
            .send(&self.route.upstream, &delivery, self.attempt)
            .await;
        self.shared
            .metrics
            .forward_seconds
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        let verdict = classify(&result, self.attempt, self.age, self.route.upstream.max_age);
        // Built only when a log line is written (tracing evaluates fields after its level check).
        let ids = || crate::redact::cards(&delivery.event_ids.join(",")).into_owned();
        let stored = match &verdict {
            Verdict::Delivered => {
                self.shared
                    .metrics
                    .forward
                    .with_label_values(&[name, "delivered"])
                    .inc();
                tracing::debug!(target: "pushgate::forward", route = name, seq = self.seq, event_ids = %ids(), attempt = self.attempt, "delivered");
                self.spool.mark_delivered(self.seq, self.attempt).await
            }
            Verdict::Retry { after, reason } => {
                self.shared.metrics.forward.with_label_values(&[name, "retried"]).inc();
                tracing::info!(target: "pushgate::forward", route = name, seq = self.seq, event_ids = %ids(), attempt = self.attempt, retry_in_ms = after.as_millis() as u64, reason = %reason, "delivery failed, will retry");
                let next = now_ms() + after.as_millis() as u64;
                self.spool.mark_retry(self.seq, self.attempt, next, reason).await
            }
            Verdict::Dead { reason } => {
                self.shared.metrics.forward.with_label_values(&[name, "dead"]).inc();
                tracing::warn!(target: "pushgate::forward", route = name, seq = self.seq, event_ids = %ids(), attempt = self.attempt, reason = %reason, "dead letter");
                self.spool.mark_dead(self.seq, self.attempt, reason).await
            }
        };
        if let Err(e) = stored {
            // The verdict stands in memory; after a restart the event is pending again and is
            // delivered again (at least once).
            tracing::warn!(route = name, seq = self.seq, error = %e, "cannot record the delivery outcome");
        }
        Done {
            seq: self.seq,
            verdict,
            delivery: Some(delivery),
        }
    }
}

/// Rebuilds a delivery from the store (after a restart or a replay).
fn read_back(spool: &Spool, seq: Seq) -> Result<Option<Delivery>, crate::spool::StorageError> {
    let Some(meta) = spool.meta(seq)? else { return Ok(None) };
    if meta.state != crate::spool::State::Pending {
        return Ok(None);
    }
    let Some(body) = spool.body(seq)? else { return Ok(None) };
    // A replayed quarantined body has no events of its own (it could not be read): it goes out
    // under the id pushgate gives an event without one, the SHA-256 of its bytes, so the app
    // can drop a second replay of it like any repeat.
    let event_ids = match meta.event_ids.is_empty() {
        true => vec![crate::profile::bytes_hash(&body).to_string()],
        false => meta.event_ids,
    };
    Ok(Some(Delivery {
        route: meta.route,
        event_ids,
        fingerprints: meta.fingerprints,
        ordering_key: meta.ordering_key,
        received_at_ms: meta.received_at_ms,
        client_dn: meta.client_dn,
        headers: meta.headers,
        body,
        quarantine_reason: None,
    }))
}
