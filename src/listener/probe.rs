//! Whether this process's notification listener accepts connections, seen from inside (for
//! `/readyz`): the probe connects to the listener from a socket whose address it registers
//! first, and the listener's connection filter, which Pingora runs in the accept loop before
//! the TLS handshake, recognises that address, notes it and drops the connection (no
//! handshake, no log line, not counted). A port held by another process, or a listener that
//! has stopped (shutdown) or never started, leaves the probe unanswered.
//!
//! Other connections pay one atomic load in the filter while no probe is waiting.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::ConnectionFilter;
use tokio::sync::oneshot;

#[derive(Debug, Default)]
pub struct AcceptProbe {
    /// The probes waiting, by the address they connect from.
    waiting: Mutex<HashMap<SocketAddr, oneshot::Sender<()>>>,
    /// How many probes wait: the filter's fast path for every other connection.
    armed: AtomicUsize,
}

impl AcceptProbe {
    /// Whether a connection to `listen` (a wildcard address meaning this host's loopback)
    /// reaches this process's accept loop within `within`.
    pub async fn accepts(&self, listen: SocketAddr, within: Duration) -> bool {
        let target = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()),
            IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port()),
            _ => listen,
        };
        let socket = match target {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        };
        // Bound before connecting, so the address the filter will see is known in advance.
        let Ok(from) = socket
            .and_then(|s| s.bind(SocketAddr::new(target.ip(), 0)).map(|()| s))
            .and_then(|s| s.local_addr().map(|a| (s, a)))
        else {
            return false;
        };
        let (socket, from) = from;
        let (seen, answered) = oneshot::channel();
        self.waiting().insert(from, seen);
        self.armed.fetch_add(1, Ordering::SeqCst);
        let reached = tokio::time::timeout(within, async {
            let _connection = socket.connect(target).await.ok()?;
            answered.await.ok()
        })
        .await;
        self.waiting().remove(&from);
        self.armed.fetch_sub(1, Ordering::SeqCst);
        matches!(reached, Ok(Some(())))
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, oneshot::Sender<()>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ConnectionFilter for AcceptProbe {
    async fn should_accept(&self, peer: Option<&SocketAddr>) -> bool {
        if self.armed.load(Ordering::SeqCst) == 0 {
            return true;
        }
        let Some(peer) = peer else { return true };
        match self.waiting().remove(peer) {
            Some(seen) => {
                let _ = seen.send(());
                false
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An accept loop of this process: every connection goes through the probe's filter.
    async fn serve(listener: tokio::net::TcpListener, probe: std::sync::Arc<AcceptProbe>) {
        while let Ok((stream, peer)) = listener.accept().await {
            if probe.should_accept(Some(&peer)).await {
                drop(stream);
            }
        }
    }

    #[tokio::test]
    async fn a_listener_whose_accept_loop_runs_the_filter_answers() {
        let probe = std::sync::Arc::new(AcceptProbe::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, probe.clone()));
        let wildcard = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
        assert!(probe.accepts(addr, Duration::from_secs(2)).await);
        assert!(probe.accepts(wildcard, Duration::from_secs(2)).await);
        assert!(probe.should_accept(Some(&addr)).await, "other connections pass");
    }

    /// Regression (issue: `/readyz` said `"listener": true` whenever any process held the
    /// address): a port held by someone else, accepting, is not this process's listener.
    #[tokio::test]
    async fn a_port_another_listener_holds_is_not_ours() {
        let probe = AcceptProbe::default();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = other.local_addr().unwrap();
        let accepting = std::thread::spawn(move || other.accept().map(drop));
        assert!(!probe.accepts(addr, Duration::from_millis(300)).await);
        assert!(
            accepting.join().unwrap().is_ok(),
            "the other listener took the connection"
        );
        assert!(probe.waiting().is_empty());
    }

    #[tokio::test]
    async fn a_closed_port_is_not_ours() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!AcceptProbe::default().accepts(addr, Duration::from_millis(300)).await);
    }
}
