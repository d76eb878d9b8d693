//! The listening sockets (notification and admin): bound by pushgate itself before the Pingora
//! server runs, then handed to Pingora's services.
//!
//! Why not let Pingora bind: Pingora 0.9 binds inside each service's thread once the server
//! runs; on `AddrInUse` it retries for about 30 s, then panics in that thread (`Failed to
//! build listeners`) and the process lives on without the listener, its store locked. Bound
//! here, a port that cannot be taken (in use, permission, no such address) is a start-up
//! error of one line before anything runs, and before `-d` forks, so the exit status reaches
//! whoever started it.
//!
//! The bound socket goes into Pingora's table of listening sockets, the table a graceful
//! upgrade fills from the old process: Pingora then takes it as it takes an inherited one
//! (no bind, no retry, no panic), and a later upgrade hands it on. Under `-u` the sockets
//! come from the old process; an address it did not hand over is bound when the service
//! starts, and a failure there ends the process with the same one line.

use std::net::TcpListener;
use std::os::fd::IntoRawFd;

use async_trait::async_trait;
use pingora::server::{ListenFds, RuntimeOpts, ShutdownWatch};
use pingora::services::Service;

/// Binds `addr` for the listener called `what` (`listen.addr`, `admin.addr`), ready for
/// Pingora's accept loop (non-blocking, as tokio needs it).
pub fn bind(addr: &str, what: &str) -> Result<TcpListener, String> {
    // std sets SO_REUSEADDR, as Pingora does: a restart is not blocked by connections in
    // TIME_WAIT, while a port another process listens on is still refused.
    let socket = TcpListener::bind(addr).map_err(|e| bind_error(addr, what, &e))?;
    socket.set_nonblocking(true).map_err(|e| bind_error(addr, what, &e))?;
    Ok(socket)
}

/// Under `-u`, before Pingora waits for the old process's sockets: refuses at once, in one line,
/// what would otherwise end in a panic (an upgrade socket Pingora cannot create) or in a
/// six-second wait (no old process: nothing holds `listen_addr`).
pub fn check_upgrade(listen_addr: &str, upgrade_sock: &str) -> Result<(), String> {
    if let Ok(free) = TcpListener::bind(listen_addr) {
        drop(free);
        return Err(format!(
            "run -u: nothing listens on {listen_addr}, so there is no running pushgate to take over from; start without -u"
        ));
    }
    // Pingora unlinks and binds this path itself, unwrapping the result.
    let _ = std::fs::remove_file(upgrade_sock);
    match std::os::unix::net::UnixListener::bind(upgrade_sock) {
        Ok(probe) => {
            drop(probe);
            let _ = std::fs::remove_file(upgrade_sock);
            Ok(())
        }
        Err(e) => Err(format!(
            "run -u: cannot create the upgrade socket {upgrade_sock} (server.upgrade_sock): {e}"
        )),
    }
}

fn bind_error(addr: &str, what: &str, e: &std::io::Error) -> String {
    let cause = match e.kind() {
        std::io::ErrorKind::AddrInUse => "the address is already in use (another process listens there)".to_string(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)".to_string()
        }
        std::io::ErrorKind::AddrNotAvailable => "no network interface of this host has that address".to_string(),
        _ => e.to_string(),
    };
    format!("cannot listen on {addr} ({what}): {cause}")
}

/// A Pingora listening service whose socket pushgate binds (see the module's notes).
pub struct OwnSocket<S> {
    inner: S,
    addr: String,
    what: &'static str,
    /// Bound before the server ran; `None` under `-u`, where the old process hands it over.
    socket: Option<TcpListener>,
}

impl<S> OwnSocket<S> {
    /// `inner` must listen on `addr` (and only there); `socket` is `addr` bound by [`bind`].
    pub fn new(inner: S, addr: &str, what: &'static str, socket: Option<TcpListener>) -> OwnSocket<S> {
        OwnSocket {
            inner,
            addr: addr.to_string(),
            what,
            socket,
        }
    }
}

#[async_trait]
impl<S: Service> Service for OwnSocket<S> {
    async fn start_service(&mut self, fds: Option<ListenFds>, shutdown: ShutdownWatch, listeners_per_fd: usize) {
        let from = match &fds {
            Some(fds) => {
                let mut table = fds.lock();
                match self.socket.take() {
                    Some(socket) => {
                        table.add(self.addr.clone(), socket.into_raw_fd());
                        "bound"
                    }
                    None if table.get(&self.addr).is_some() => "handed over by the old process",
                    None => match bind(&self.addr, self.what) {
                        Ok(socket) => {
                            table.add(self.addr.clone(), socket.into_raw_fd());
                            "bound"
                        }
                        Err(message) => {
                            // Only under -u (the old process did not hand this address over):
                            // nothing is served yet, so stop rather than run without it.
                            tracing::error!("{message}");
                            eprintln!("pushgate: {message}");
                            std::process::exit(1);
                        }
                    },
                }
            }
            None => "bound by pingora",
        };
        match self.what {
            "listen.addr" => tracing::info!(addr = %self.addr, socket = from, "pushgate listening"),
            _ => tracing::info!(addr = %self.addr, socket = from, "{} listening", self.what),
        }
        self.inner.start_service(fds, shutdown, listeners_per_fd).await;
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_one_line_naming_the_address_and_the_cause() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap().to_string();
        let err = bind(&addr, "listen.addr").unwrap_err();
        assert_eq!(
            err,
            format!(
                "cannot listen on {addr} (listen.addr): the address is already in use (another process listens there)"
            )
        );
    }

    #[test]
    fn an_address_of_no_interface_is_refused() {
        // TEST-NET-1 (RFC 5737) is never assigned to a local interface.
        let err = bind("192.0.2.1:8443", "admin.addr").unwrap_err();
        assert!(
            err.starts_with("cannot listen on 192.0.2.1:8443 (admin.addr): no network interface"),
            "{err}"
        );
    }
}
