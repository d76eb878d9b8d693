//! Assembles the running process: config → logging → shared state → the Pingora server with
//! its TLS listener → run. Nothing here handles a request.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::boot::cli::RunArgs;
use crate::boot::config::{Config, DedupeBackend};
use crate::boot::{logs, signals};
use crate::dedupe::{Dedupe, Key};
use crate::forward::Forwarder;
use crate::ingress::ingest::Ingest;
use crate::ingress::route::Routes;
use crate::listener::conn::{ConnLimits, Guarded};
use crate::listener::probe::AcceptProbe;
use crate::listener::socket::{self, OwnSocket};
use crate::listener::tls::{self, LiveTls};
use crate::names::{EventId, RouteName};
use crate::ops::admin::{Admin, Served};
use crate::ops::metrics::Metrics;
use crate::ops::reload::{Fixed, Reloader, SighupService};
use crate::shared::Shared;
use crate::spool::{Spool, SpoolOptions};

/// `pushgate check`: load everything a start would, print the routes.
pub fn check(path: &Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| with_dev_certs_hint(&e))?;
    println!("{}: ok, listening on {}", path.display(), config.listen.addr);
    for r in &config.routes {
        let who = r.auth.describe();
        println!(
            "  {:<20} POST {:<32} profile={:<20} ack={:?} → {} ({who})",
            r.name.as_str(),
            r.path,
            r.profile.name,
            r.ack,
            r.upstream.url
        );
    }
    Ok(())
}

/// The error, and when a missing file lies in a `dev/certs` directory (the shipped configs point
/// there), the command that makes it: `dev-certs --out` is relative to the working directory,
/// the configs' paths to the config file.
fn with_dev_certs_hint(e: &crate::boot::config::ConfigError) -> String {
    let missing = e.each().find_map(|e| {
        let (file, cause) = e.message.split_once(": ")?;
        let certs = Path::new(file).parent()?;
        let dev = certs.parent()?;
        let found = certs.ends_with("dev/certs") && cause.contains("No such file");
        let root = dev
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        found.then(|| std::fs::canonicalize(root).ok().map(|root| root.join("dev/certs")))?
    });
    match missing {
        Some(dir) => format!(
            "{e}\nhint: the development certificates are made by: pushgate dev-certs --out {}",
            dir.display()
        ),
        None => e.to_string(),
    }
}

/// `pushgate run`: serve until a signal says stop.
pub fn run(args: RunArgs) -> Result<(), String> {
    let given = &args.conf;
    // Absolute from here on: `-d` moves the process to `/`, and the store, every reload and the
    // admin API's report of the file it serves must not depend on the working directory.
    let path = std::fs::canonicalize(given).map_err(|e| format!("{}: cannot read: {e}", given.display()))?;
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    if args.test {
        println!("{}: ok", given.display());
        return Ok(());
    }
    // Pingora's own flags; the config is pushgate's, passed to Pingora as `ServerConf`.
    let opt = Opt {
        upgrade: args.upgrade,
        daemon: args.daemon,
        ..Opt::default()
    };
    let daemon = opt.daemon || config.server.daemon;
    if daemon {
        logs::check_daemon(&config)?;
    }
    let signals = signals::take_over()?;
    let log_file = logs::init(&config)?;
    pingora::tls::install_default_crypto_provider();

    let material = tls::load(&config.listen.tls).map_err(|(key, m)| format!("{}: {key}: {m}", path.display()))?;

    let server_conf = server_conf(&config);
    let (dedupe, redis_options) = match &config.dedupe.backend {
        DedupeBackend::Memory => (Dedupe::memory(config.dedupe.ttl, config.dedupe.max_entries), None),
        DedupeBackend::Redis {
            options,
            when_unavailable,
        } => (
            Dedupe::redis(*when_unavailable, config.dedupe.ttl, config.dedupe.max_entries),
            Some(options.clone()),
        ),
    };
    // Pingora forks for -d (the store's writer thread would not survive it), and under -u the
    // process being replaced holds the store until it exits: then the store opens in the
    // background. Otherwise it opens now, so a bad store stops the start before any port opens.
    let late_store = daemon || opt.upgrade;
    let opener = StoreOpener {
        path: config.storage.path.clone(),
        options: SpoolOptions {
            retention: config.storage.retention,
            ..SpoolOptions::default()
        },
        ttl: config.dedupe.ttl,
        patience: if opt.upgrade { UPGRADE_PATIENCE } else { Duration::ZERO },
    };
    let early_store = if late_store { None } else { Some(opener.open(&dedupe)?) };

    // The ports are taken now: after the store (senders are refused, not kept waiting, while a
    // big store opens) and before the process forks for -d, so one that cannot be taken stops
    // the start with one line (see listener::socket). Under -u the old process hands its
    // sockets over instead.
    if opt.upgrade {
        socket::check_upgrade(&config.listen.addr, &server_conf.upgrade_sock)?;
    }
    let listen_socket = match opt.upgrade {
        false => Some(socket::bind(&config.listen.addr, "listen.addr")?),
        true => None,
    };
    let admin_socket = match (&config.admin.addr, opt.upgrade) {
        (Some(addr), false) => Some(socket::bind(addr, "admin.addr")?),
        _ => None,
    };

    let metrics = Arc::new(Metrics::new());
    let live_tls = LiveTls::new(&material, metrics.clone());
    let listen_addr = config.listen.addr.clone();
    let conn_limits = ConnLimits {
        max_connections: config.listen.max_connections,
        header_timeout: config.listen.header_timeout,
        idle_timeout: config.listen.idle_timeout,
    };
    let admin_addr = config.admin.addr.clone();
    let admin_token = config.admin.token.clone();
    let served = Served {
        config: path.clone(),
        store: config.storage.path.clone(),
    };
    let fixed = Fixed::of(&config);
    let shared = Arc::new(Shared::new(Routes::new(config.routes), dedupe, metrics));
    shared.stale.set_ttl(config.dedupe.ttl);
    match early_store {
        Some(spool) => shared.store.set(spool),
        None => {
            tracing::info!("the store opens in the background (daemon or upgrade)");
        }
    }
    let forwarder = Forwarder::new(shared.clone());
    let reloader = Arc::new(Reloader::new(path.clone(), shared.clone(), live_tls.clone(), fixed));

    if opt.upgrade {
        tracing::info!(upgrade_sock = %server_conf.upgrade_sock, "waiting for the running pushgate's listening sockets: send it SIGQUIT");
    }
    if daemon {
        // The daemon's first act is to write its pid file; Pingora unwraps that.
        if let Some(dir) = Path::new(&server_conf.pid_file).parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("server.pid_file {}: {e}", server_conf.pid_file))?;
        }
    }
    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf);
    server.bootstrap();

    let proxy = pingora::proxy::http_proxy(&server.configuration, Ingest { shared: shared.clone() });
    let guarded = Guarded::new(proxy, conn_limits, shared.metrics.clone());
    let mut ingest = Service::new("ingest".into(), guarded);
    let probe = Arc::new(AcceptProbe::default());
    ingest.set_connection_filter(probe.clone());
    // The swappable verifier is always installed, so a reload can add a client CA later.
    let settings = live_tls.settings()?;
    ingest.add_tls_with_settings(&listen_addr, None, settings);
    server.add_service(OwnSocket::new(ingest, &listen_addr, "listen.addr", listen_socket));
    if late_store {
        server.add_service(background_service(
            "store",
            LateStore {
                opener,
                shared: shared.clone(),
            },
        ));
    }
    if let Some(options) = redis_options {
        server.add_service(background_service(
            "redis",
            RedisConnect {
                options,
                dedupe: shared.dedupe.clone(),
            },
        ));
    }
    server.add_service(background_service("forwarder", forwarder));
    server.add_service(background_service(
        "sighup",
        SighupService::new(reloader.clone(), signals.reload),
    ));
    if let Some(file) = log_file {
        let signals = Mutex::new(Some((signals.reopen_on_hangup, signals.reopen)));
        server.add_service(background_service("logs", logs::Reopen { file, signals }));
    }
    if let Some(addr) = admin_addr {
        let listen_sa = listen_addr.parse().map_err(|_| format!("listen.addr {listen_addr}"))?;
        let mut admin = Service::new(
            "admin".into(),
            Admin {
                shared: shared.clone(),
                token: admin_token,
                listen_addr: listen_sa,
                probe,
                reloader,
                served,
            },
        );
        admin.add_tcp(&addr);
        server.add_service(OwnSocket::new(admin, &addr, "admin.addr", admin_socket));
    }

    server.run_forever()
}

/// How long a process started with `-u` waits for the one it replaces to release the store.
const UPGRADE_PATIENCE: Duration = Duration::from_secs(120);

/// Opens the store and rebuilds the duplicate memory from it.
#[derive(Clone)]
struct StoreOpener {
    path: std::path::PathBuf,
    options: SpoolOptions,
    ttl: Duration,
    /// How long to keep trying while another process holds the store.
    patience: Duration,
}

impl StoreOpener {
    fn open(&self, dedupe: &Dedupe) -> Result<Spool, String> {
        let deadline = std::time::Instant::now() + self.patience;
        let spool = loop {
            match Spool::open(&self.path, self.options.clone()) {
                Ok(s) => break s,
                Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => return Err(format!("storage {}: {e}", self.path.display())),
            }
        };
        // With Redis too: the local memory then answers this replica's own retries without
        // asking Redis, and still knows them if Redis lost its keys.
        let remembered = rebuild_dedupe(dedupe, &spool, self.ttl)?;
        tracing::info!(path = %self.path.display(), remembered_ids = remembered, "store open");
        Ok(spool)
    }
}

/// Opens the store after Pingora has forked or taken over the listeners.
struct LateStore {
    opener: StoreOpener,
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for LateStore {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {
        let (opener, dedupe) = (self.opener.clone(), self.shared.dedupe.clone());
        let opened = tokio::task::spawn_blocking(move || opener.open(&dedupe)).await;
        match opened.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(spool) => self.shared.store.set(spool),
            Err(e) => {
                // Nothing can be acknowledged without the store: stop rather than answer 503 forever.
                tracing::error!(error = %e, "cannot open the store; exiting");
                std::process::exit(1);
            }
        }
    }
}

/// Connects the Redis client on a runtime that lasts as long as the process (its connection
/// task lives there), retrying while Redis refuses the configuration or credentials.
struct RedisConnect {
    options: crate::dedupe::RedisOptions,
    dedupe: Dedupe,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for RedisConnect {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            match self.dedupe.connect_redis(self.options.clone()).await {
                Ok(()) => {
                    tracing::info!(url = %crate::dedupe::redis::redact_url(&self.options.url), "redis dedupe connected");
                    break;
                }
                Err(e) => tracing::error!(error = %e, "redis dedupe cannot start; retrying in 10s"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                _ = shutdown.changed() => return,
            }
        }
        // Notices Redis coming back and writes the seen-marks kept while it was away.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => self.dedupe.maintain().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The duplicate memory outlives a restart: every id accepted within the TTL is remembered
/// again from the store's journal before the first request is served, with the fingerprint
/// of its content (oldest first, so a conflicting later version is remembered as a version).
fn rebuild_dedupe(dedupe: &Dedupe, spool: &Spool, ttl: Duration) -> Result<usize, String> {
    let since = crate::shared::now_ms().saturating_sub(ttl.as_millis() as u64);
    let ids = spool
        .ids_since(since)
        .map_err(|e| format!("storage: cannot read the id journal: {e}"))?;
    let n = ids.len();
    for seen in ids {
        if let Ok(route) = RouteName::new(&seen.route) {
            dedupe.remember(Key::new(&route, &EventId::new(&seen.id)), seen.fingerprint);
        }
    }
    Ok(n)
}

fn server_conf(config: &Config) -> ServerConf {
    let s = &config.server;
    let data = &config.storage.path;
    ServerConf {
        threads: s.threads,
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout.as_secs()),
        pid_file: s
            .pid_file
            .clone()
            .unwrap_or_else(|| data.join("pushgate.pid").display().to_string()),
        upgrade_sock: s
            .upgrade_sock
            .clone()
            .unwrap_or_else(|| data.join("upgrade.sock").display().to_string()),
        daemon: s.daemon,
        error_log: s.error_log.clone(),
        user: s.user.clone(),
        group: s.group.clone(),
        ..ServerConf::default()
    }
}
