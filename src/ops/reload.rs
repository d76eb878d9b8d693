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

use crate::boot::config::{Admin, Config, DedupeSettings, LogSettings, ServerSettings, Storage};
use crate::ingress::route::Routes;
use crate::listener::tls::{self, LiveTls};
use crate::shared::Shared;

/// What a reload cannot change (it needs a restart or an upgrade), remembered from start-up
/// as the typed settings, so a change is seen whatever its printed form (a new admin token of
/// the same length, a new Redis password: both print redacted) and can be named in the warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    listen_addr: String,
    admin: Admin,
    storage: Storage,
    dedupe: DedupeSettings,
    server: ServerSettings,
    log: LogSettings,
}

impl Fixed {
    pub fn of(c: &Config) -> Fixed {
        Fixed {
            listen_addr: c.listen.addr.clone(),
            admin: c.admin.clone(),
            storage: c.storage.clone(),
            dedupe: c.dedupe.clone(),
            server: c.server.clone(),
            log: c.log.clone(),
        }
    }

    /// The keys whose value differs.
    fn changed(&self, other: &Fixed) -> Vec<&'static str> {
        [
            ("listen.addr", self.listen_addr != other.listen_addr),
            ("admin", self.admin != other.admin),
            ("storage", self.storage != other.storage),
            ("dedupe", self.dedupe != other.dedupe),
            ("server", self.server != other.server),
            ("log", self.log != other.log),
        ]
        .into_iter()
        .filter_map(|(key, differs)| differs.then_some(key))
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

/// Reloads on SIGHUP. (Pingora handles SIGTERM, SIGINT and SIGQUIT; SIGHUP is ours, taken
/// over at start: [`crate::boot::signals`].)
pub struct SighupService {
    reloader: Arc<Reloader>,
    /// Taken by the service when it starts.
    hangup: std::sync::Mutex<Option<tokio::signal::unix::Signal>>,
}

impl SighupService {
    pub fn new(reloader: Arc<Reloader>, hangup: tokio::signal::unix::Signal) -> SighupService {
        SighupService {
            reloader,
            hangup: std::sync::Mutex::new(Some(hangup)),
        }
    }
}

#[async_trait]
impl BackgroundService for SighupService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self
            .hangup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut hup) = taken else { return };
        loop {
            tokio::select! {
                Some(()) = hup.recv() => { let _ = self.reloader.reload().await; }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::boot::config::{DedupeBackend, LogFormat};
    use crate::secret::Secret;

    fn fixed(token: &str) -> Fixed {
        Fixed {
            listen_addr: "127.0.0.1:8443".into(),
            admin: Admin {
                addr: Some("127.0.0.1:9090".into()),
                token: Some(Secret::new(token.as_bytes().to_vec())),
            },
            storage: Storage {
                path: "/var/lib/pushgate".into(),
                retention: Duration::from_secs(3600),
            },
            dedupe: DedupeSettings {
                backend: DedupeBackend::Memory,
                ttl: Duration::from_secs(60),
                max_entries: 10,
            },
            server: ServerSettings {
                threads: 2,
                grace_period: Duration::from_secs(5),
                graceful_shutdown_timeout: Duration::from_secs(5),
                pid_file: None,
                upgrade_sock: None,
                daemon: false,
                error_log: None,
                user: None,
                group: None,
            },
            log: LogSettings {
                format: LogFormat::Text,
                level: "info".into(),
                file: None,
            },
        }
    }

    #[test]
    fn a_new_admin_token_of_the_same_length_is_a_change() {
        let before = fixed("token-aaaaaaaa");
        assert!(before.changed(&fixed("token-aaaaaaaa")).is_empty());
        assert_eq!(before.changed(&fixed("token-bbbbbbbb")), vec!["admin"]);
    }

    #[test]
    fn each_changed_setting_is_named() {
        let before = fixed("t");
        let mut after = fixed("t");
        after.listen_addr = "127.0.0.1:9443".into();
        after.log.level = "debug".into();
        after.dedupe.backend = DedupeBackend::Redis {
            options: crate::dedupe::RedisOptions::new("redis://127.0.0.1:6379"),
            when_unavailable: crate::dedupe::WhenUnavailable::Accept,
        };
        assert_eq!(before.changed(&after), vec!["listen.addr", "dedupe", "log"]);
        let mut password = after.clone();
        if let DedupeBackend::Redis { options, .. } = &mut password.dedupe.backend {
            options.url = "redis://:other@127.0.0.1:6379".into();
        }
        assert_eq!(
            after.changed(&password),
            vec!["dedupe"],
            "a Redis password prints redacted"
        );
    }
}
