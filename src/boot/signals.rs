//! The signals pushgate acts on itself (Pingora handles SIGTERM, SIGINT and SIGQUIT): SIGHUP
//! reloads the config ([`crate::ops::reload`]) and reopens `log.file`, SIGUSR1 reopens
//! `log.file` ([`crate::boot::logs`]).
//!
//! Both end a process by default, so they are taken over at start, before any port opens: one
//! sent while pushgate is still starting (a script reloading as soon as the port answers) waits
//! for the service that acts on it instead of ending the process. A tokio signal stream is
//! registered process-wide and is not tied to the runtime it was made on, so the streams made
//! here are read later by the services on Pingora's runtimes (and survive `-d`'s fork).

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The streams, one per service that reads them.
pub struct Taken {
    pub reload: Signal,
    pub reopen_on_hangup: Signal,
    pub reopen: Signal,
}

pub fn take_over() -> Result<Taken, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("cannot set up signal handling: {e}"))?;
    let _context = runtime.enter();
    let stream = |kind: SignalKind, name: &str| signal(kind).map_err(|e| format!("cannot handle {name}: {e}"));
    Ok(Taken {
        reload: stream(SignalKind::hangup(), "SIGHUP")?,
        reopen_on_hangup: stream(SignalKind::hangup(), "SIGHUP")?,
        reopen: stream(SignalKind::user_defined1(), "SIGUSR1")?,
    })
}
