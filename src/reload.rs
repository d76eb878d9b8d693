//! Reload without dropping a connection: on SIGHUP (or `POST /reload`, or `pushgate reload`)
//! the config file is read and validated again; if it is good, the routes (paths, DN lists,
//! pins, secrets, profiles, upstreams), the server certificate, the client CA and the client
//! CRLs are swapped.
//! Requests in flight keep the route they started with; open connections keep their TLS
//! session; new handshakes and new requests see the new config. A bad file changes nothing:
//! the old config keeps serving, and the reason is logged and counted.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::Config;
use crate::route::Routes;
use crate::shared::Shared;
use crate::tls::{self, LiveTls};

/// What a reload cannot change (it needs a restart or an upgrade), remembered from start-up
/// as `(key, value)` pairs so a change can be named in the warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed(Vec<(&'static str, String)>);

impl Fixed {
    pub fn of(c: &Config) -> Fixed {
        Fixed(vec![
            ("listen.addr", c.listen.addr.clone()),
            ("admin", format!("{:?}", (&c.admin.addr, &c.admin.token))),
            ("storage", format!("{:?}", (&c.storage.path, c.storage.retention))),
            (
                "dedupe",
                format!("{:?}", (&c.dedupe.backend, c.dedupe.ttl, c.dedupe.max_entries)),
            ),
            ("server", format!("{:?}", c.server)),
            ("log", format!("{:?}", (c.log.format, &c.log.level))),
        ])
    }

    /// The keys whose value differs.
    fn changed(&self, other: &Fixed) -> Vec<&'static str> {
        self.0
            .iter()
            .zip(&other.0)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect()
    }
}

pub struct Reloader {
    path: PathBuf,
    shared: Arc<Shared>,
    tls: LiveTls,
    fixed: Fixed,
    /// One reload at a time.
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(path: PathBuf, shared: Arc<Shared>, tls: LiveTls, fixed: Fixed) -> Reloader {
        Reloader {
            path,
            shared,
            tls,
            fixed,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads, validates and applies the config file; `Err` leaves everything as it was.
    pub async fn reload(&self) -> Result<String, String> {
        let _one = self.lock.lock().await;
        let path = self.path.clone();
        // Reading files and parsing keys is blocking work.
        let loaded = tokio::task::spawn_blocking(move || {
            let config = Config::load(&path).map_err(|e| e.to_string())?;
            let material =
                tls::load(&config.listen.tls).map_err(|(key, m)| format!("{}: {key}: {m}", path.display()))?;
            Ok::<_, String>((config, material))
        })
        .await
        .map_err(|e| format!("reload task failed: {e}"))
        .and_then(|r| r);
        let (config, material) = match loaded {
            Ok(x) => x,
            Err(reason) => {
                self.shared.metrics.reloads.with_label_values(&["error"]).inc();
                tracing::error!(target: "pushgate::reload", %reason, "reload refused; the running config is unchanged");
                return Err(reason);
            }
        };
        let changed = self.fixed.changed(&Fixed::of(&config));
        if !changed.is_empty() {
            tracing::warn!(target: "pushgate::reload", keys = %changed.join(", "), "these change only with a restart; kept as they were");
        }
        let names: Vec<String> = config.routes.iter().map(|r| r.name.to_string()).collect();
        self.tls.swap(&material);
        self.shared.swap_routes(Routes::new(config.routes));
        let forwarder = self.shared.forwarder();
        for name in &names {
            forwarder.ensure(name);
        }
        self.shared.metrics.reloads.with_label_values(&["ok"]).inc();
        let summary = format!("reloaded {} route(s): {}", names.len(), names.join(", "));
        tracing::info!(target: "pushgate::reload", routes = %names.join(","), "reloaded");
        Ok(summary)
    }
}

/// Reloads on SIGHUP. (Pingora handles SIGTERM, SIGINT and SIGQUIT; SIGHUP is ours.)
pub struct SighupService(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for SighupService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload with POST /reload instead");
                return;
            }
        };
        loop {
            tokio::select! {
                Some(()) = hup.recv() => { let _ = self.0.reload().await; }
                _ = shutdown.changed() => return,
            }
        }
    }
}
