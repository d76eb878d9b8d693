//! The state every request and background task shares: the routes (swapped whole on
//! reload), the duplicate memory, the spool, the app client, the forwarder's queues and the
//! metrics.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::dedupe::Dedupe;
use crate::forward::{AppClient, ForwarderHandle};
use crate::ingress::route::Routes;
use crate::ops::metrics::Metrics;
use crate::spool::Spool;

/// The store, once it is open. At a normal start it is open before the listener; when
/// Pingora forks (`-d`) or takes over from a running process (`-u`, which holds the store's
/// lock until it exits), it opens in the background and requests wait for it briefly.
#[derive(Default)]
pub struct StoreSlot {
    spool: OnceLock<Spool>,
    opened: tokio::sync::Notify,
}

impl StoreSlot {
    pub fn set(&self, spool: Spool) {
        let _ = self.spool.set(spool);
        self.opened.notify_waiters();
    }

    pub fn get(&self) -> Option<&Spool> {
        self.spool.get()
    }

    pub async fn wait(&self) -> &Spool {
        loop {
            let notified = self.opened.notified();
            if let Some(s) = self.spool.get() {
                return s;
            }
            notified.await;
        }
    }

    /// The store, waiting at most `limit` for it to open.
    pub async fn within(&self, limit: std::time::Duration) -> Option<&Spool> {
        tokio::time::timeout(limit, self.wait()).await.ok()
    }
}

pub struct Shared {
    routes: ArcSwap<Routes>,
    pub dedupe: Dedupe,
    pub store: StoreSlot,
    pub client: AppClient,
    pub metrics: Arc<Metrics>,
    /// The one handle to the forwarder's queues, made with the state: the forwarder service
    /// takes a clone when it is built, so nothing can reach a queue through another handle.
    forwarder: ForwarderHandle,
    /// Newest status time accepted per transaction (src/ingress/stale.rs).
    pub stale: crate::ingress::stale::Memory,
}

impl Shared {
    pub fn new(routes: Routes, dedupe: Dedupe, metrics: Arc<Metrics>) -> Shared {
        Shared {
            routes: ArcSwap::from_pointee(routes),
            dedupe,
            store: StoreSlot::default(),
            client: AppClient::default(),
            metrics,
            forwarder: ForwarderHandle::detached(),
            stale: crate::ingress::stale::Memory::default(),
        }
    }

    /// The routes as of now; a request keeps the table it started with.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    pub fn swap_routes(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }

    /// The forwarder's queues. Until the forwarder service starts they reach no queue, and
    /// what is stored meanwhile is read from the store when it does.
    pub fn forwarder(&self) -> &ForwarderHandle {
        &self.forwarder
    }

    /// Refreshes the gauges that mirror state held elsewhere (spool counts, dedupe size).
    pub async fn refresh_gauges(&self) {
        let m = &self.metrics;
        if let Some(n) = self.dedupe.count().await {
            m.dedupe_keys.set(n as i64);
        }
        // The memory backend is always there.
        m.dedupe_backend_up
            .set(i64::from(self.dedupe.backend_up().unwrap_or(true)));
        if self.dedupe.backend_up().is_some() {
            m.dedupe_pending_writes.set(self.dedupe.pending_writes() as i64);
            let dropped = self.dedupe.pending_dropped();
            m.dedupe_pending_dropped
                .inc_by(dropped.saturating_sub(m.dedupe_pending_dropped.get()));
        }
        let Some(Ok(stats)) = self.store.get().map(Spool::stats) else {
            return;
        };
        if let Some(spool) = self.store.get() {
            let (seen, damaged) = (m.store_damaged_records.get(), spool.damaged());
            m.store_damaged_records.inc_by(damaged.saturating_sub(seen));
            // The writer counts its fdatasyncs; the counter catches up here, off the ack path.
            let (seen, commits) = (m.store_commits.get(), spool.commits());
            m.store_commits.inc_by(commits.saturating_sub(seen));
        }
        let now = now_ms();
        for route in self.routes().iter() {
            let name = route.name.as_str();
            let s = stats.routes.get(name).cloned().unwrap_or_default();
            m.spool_pending.with_label_values(&[name]).set(s.pending as i64);
            m.dead_letters.with_label_values(&[name]).set(s.dead as i64);
            let oldest = s
                .oldest_pending_received_at_ms
                .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0);
            m.spool_oldest_pending_seconds.with_label_values(&[name]).set(oldest);
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
