//! The listener's connections, between the TLS handshake ([`crate::listener::tls`]) and the HTTP handler
//! ([`crate::ingress::ingest`]): a cap on how many are open (`listen.max_connections`) and a deadline for
//! each request header (`listen.header_timeout`, then `listen.idle_timeout` between requests).
//!
//! Pingora 0.9 has neither. Its per-read timeout restarts with every byte, so a header sent one
//! byte at a time never times out; a kept-alive connection waits for its next request forever;
//! and nothing bounds the number of connections (its `connection_filter` feature sees only the
//! peer address at accept, never the close, so it cannot count). Hence this wrapper around the
//! proxy's [`ServerApp`]: it holds one slot per connection for as long as Pingora serves it, and
//! drops the connection when a header is late.
//!
//! The header clock lives in a task-local: Pingora serves an HTTP/1 connection's requests one
//! after another inside `process_new`, on this task, so the handler can stop the clock when a
//! header has arrived ([`header_received`]) and restart it when the request is done
//! ([`request_done`]). Only a connection that is waiting for a header is ever dropped: once a
//! request is being handled, its body has its own deadline (the route's `read_timeout`, 408).
//!
//! Connections still in the TLS handshake are not counted: Pingora gives each handshake 60 s
//! (not configurable) before the handler sees anything.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::ops::metrics::Metrics;

/// The refusal sent to a connection over the cap, before any request is read: senders retry on
/// 503, and the close tells them not to reuse the connection.
const OVER_LIMIT: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n";
/// How long writing that refusal may take before the connection is simply dropped.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// At most one warning per this long while connections are refused (a flood must not flood
/// the log too); the counter has every refusal.
const REFUSAL_WARN_EVERY_MS: u64 = 10_000;

/// The listener's connection settings (from `listen:`).
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// A Pingora app (the proxy running [`crate::ingress::ingest::Ingest`]) with the cap and the deadlines.
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: ConnLimits,
    open: Arc<AtomicUsize>,
    /// When the last refusal warning was logged (ms since the epoch).
    last_warning_ms: AtomicU64,
    metrics: Arc<Metrics>,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, limits: ConnLimits, metrics: Arc<Metrics>) -> Guarded<A> {
        Guarded {
            inner: Arc::new(inner),
            limits,
            open: Arc::new(AtomicUsize::new(0)),
            last_warning_ms: AtomicU64::new(0),
            metrics,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let Some(_slot) = ConnPermit::take(self) else {
            self.metrics.connections_refused.inc();
            let now = crate::shared::now_ms();
            let last = self.last_warning_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= REFUSAL_WARN_EVERY_MS
                && self
                    .last_warning_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    target: "pushgate::conn",
                    max_connections = self.limits.max_connections,
                    refused_so_far = self.metrics.connections_refused.get(),
                    "connection limit reached: refusing new connections with 503"
                );
            }
            let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
                stream.write_all(OVER_LIMIT).await?;
                AsyncWriteExt::shutdown(&mut stream).await
            })
            .await;
            return None;
        };
        let (clock, mut deadline) = HeaderClock::start(self.limits);
        let serve = CLOCK.scope(clock, self.inner.process_new(stream, shutdown));
        tokio::select! {
            // HTTP/1 (the only protocol offered) serves every request of the connection inside,
            // so this ends when the connection does.
            reused = serve => reused,
            phase = deadline.expired() => {
                // Dropping `serve` closes the connection; it was waiting for a header, so no
                // request of it is being handled.
                self.metrics.connections_timed_out.with_label_values(&[phase]).inc();
                tracing::debug!(target: "pushgate::conn", phase, "no request header in time: connection closed");
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// One open connection, counted until dropped.
struct ConnPermit {
    open: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl ConnPermit {
    fn take<A>(g: &Guarded<A>) -> Option<ConnPermit> {
        let max = g.limits.max_connections;
        g.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()?;
        g.metrics.connections_open.inc();
        Some(ConnPermit {
            open: g.open.clone(),
            metrics: g.metrics.clone(),
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.connections_open.dec();
    }
}

tokio::task_local! {
    static CLOCK: HeaderClock;
}

/// The deadline of the header a connection is waiting for; `None` while a request is handled.
#[derive(Clone)]
struct HeaderClock {
    limits: ConnLimits,
    tx: Arc<watch::Sender<Option<(Instant, &'static str)>>>,
}

/// The connection task's side of the clock.
struct Deadline(watch::Receiver<Option<(Instant, &'static str)>>);

impl HeaderClock {
    fn start(limits: ConnLimits) -> (HeaderClock, Deadline) {
        let first = Some((Instant::now() + limits.header_timeout, "header"));
        let (tx, rx) = watch::channel(first);
        (
            HeaderClock {
                limits,
                tx: Arc::new(tx),
            },
            Deadline(rx),
        )
    }
}

impl Deadline {
    /// Resolves with the phase's name once a header is late; never while the clock is stopped.
    async fn expired(&mut self) -> &'static str {
        loop {
            let armed = *self.0.borrow_and_update();
            match armed {
                Some((at, phase)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => return phase,
                        changed = self.0.changed() => if changed.is_err() {
                            // The clock is gone, so this deadline can no longer move.
                            tokio::time::sleep_until(at).await;
                            return phase;
                        },
                    }
                }
                None => {
                    if self.0.changed().await.is_err() {
                        // Stopped for good: nothing can start it again.
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

/// The handler has the request header: stop the clock (the body has its own deadline).
pub fn header_received() {
    let _ = CLOCK.try_with(|c| c.tx.send_replace(None));
}

/// The request is answered: the connection may now wait `idle_timeout` for its next header.
pub fn request_done() {
    let _ = CLOCK.try_with(|c| {
        c.tx.send_replace(Some((Instant::now() + c.limits.idle_timeout, "idle")));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            max_connections: 2,
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
        }
    }

    #[tokio::test]
    async fn a_late_header_expires_and_a_received_one_stops_the_clock() {
        let (clock, mut deadline) = HeaderClock::start(limits());
        let t0 = Instant::now();
        assert_eq!(deadline.expired().await, "header");
        assert!(t0.elapsed() >= Duration::from_millis(100));

        // Stopped: nothing fires, however long the request takes.
        CLOCK.sync_scope(clock.clone(), header_received);
        let waited = tokio::time::timeout(Duration::from_millis(400), deadline.expired()).await;
        assert!(waited.is_err(), "a stopped clock must not expire");

        // Answered: the idle deadline runs from now.
        let t1 = Instant::now();
        CLOCK.sync_scope(clock, request_done);
        assert_eq!(deadline.expired().await, "idle");
        assert!(t1.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn outside_a_connection_the_hooks_do_nothing() {
        header_received();
        request_done();
    }

    #[test]
    fn slots_are_capped_and_given_back() {
        let metrics = Arc::new(Metrics::new());
        let g = Guarded::new((), limits(), metrics.clone());
        let a = ConnPermit::take(&g).expect("first");
        let b = ConnPermit::take(&g).expect("second");
        assert!(
            ConnPermit::take(&g).is_none(),
            "a third connection is over the cap of 2"
        );
        assert_eq!(metrics.connections_open.get(), 2);
        drop(a);
        let _c = ConnPermit::take(&g).expect("a freed slot is reusable");
        drop(b);
        assert_eq!(metrics.connections_open.get(), 1);
    }
}
