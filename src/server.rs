//! Assembles the running process: config → logging → shared state → the Pingora server with
//! its TLS listener → run. Nothing here handles a request.

use std::path::Path;
use std::sync::Arc;

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::config::{Config, LogFormat};
use crate::conn::{ConnLimits, Guarded};
use crate::dedupe::{Dedupe, Key};
use crate::forward::Forwarder;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::profile::EventId;
use crate::route::{RouteName, Routes};
use crate::shared::Shared;
use crate::spool::{Spool, SpoolOptions};
use crate::tls::{self, LiveTls};

/// `pushgate check`: load everything a start would, print the routes.
pub fn check(path: &Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
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

/// `pushgate run`: serve until a signal says stop.
pub fn run(mut opt: Opt) -> Result<(), String> {
    let path = opt.conf.take().ok_or("run needs -c FILE")?;
    let config = Config::load(Path::new(&path)).map_err(|e| e.to_string())?;
    if opt.test {
        println!("{path}: ok");
        return Ok(());
    }
    init_logging(&config);
    pingora::tls::install_default_crypto_provider();

    let material = tls::load(&config.listen).map_err(|(key, m)| format!("{path}: {key}: {m}"))?;
    let metrics = Arc::new(Metrics::new());
    let live_tls = LiveTls::new(&material, metrics.tls_failures.clone());

    // The store first: nothing is accepted unless it can be made durable.
    let spool_options = SpoolOptions {
        retention: config.storage.retention,
        ..SpoolOptions::default()
    };
    let spool = Spool::open(&config.storage.path, spool_options)
        .map_err(|e| format!("storage {}: {e}", config.storage.path.display()))?;
    let dedupe = Dedupe::memory(config.dedupe.ttl, config.dedupe.max_entries);
    let remembered = rebuild_dedupe(&dedupe, &spool, config.dedupe.ttl)?;

    let listen_addr = config.listen.addr.clone();
    let conn_limits = ConnLimits {
        max_connections: config.listen.max_connections,
        header_timeout: config.listen.header_timeout,
        idle_timeout: config.listen.idle_timeout,
    };
    let admin_addr = config.admin.addr.clone();
    let admin_token = config.admin.token.clone();
    let server_conf = server_conf(&config);
    let shared = Arc::new(Shared::new(Routes::new(config.routes), dedupe, spool, metrics));
    let (forwarder, handle) = Forwarder::new(shared.clone());
    shared.set_forwarder(handle);

    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf);
    server.bootstrap();

    let proxy = pingora::proxy::http_proxy(&server.configuration, Ingest { shared: shared.clone() });
    let guarded = Guarded::new(proxy, conn_limits, shared.metrics.clone());
    let mut ingest = Service::new("ingest".into(), guarded);
    let settings = live_tls.settings(material.verifier.is_some())?;
    ingest.add_tls_with_settings(&listen_addr, None, settings);
    server.add_service(ingest);
    server.add_service(background_service("forwarder", forwarder));
    if let Some(addr) = admin_addr {
        let listen_sa = listen_addr.parse().map_err(|_| format!("listen.addr {listen_addr}"))?;
        let mut admin = Service::new(
            "admin".into(),
            Admin {
                shared: shared.clone(),
                token: admin_token,
                listen_addr: listen_sa,
            },
        );
        admin.add_tcp(&addr);
        server.add_service(admin);
    }

    tracing::info!(addr = %listen_addr, remembered_ids = remembered, "pushgate listening");
    server.run_forever()
}

/// The duplicate memory outlives a restart: every id accepted within the TTL is remembered
/// again from the store's journal before the first request is served.
fn rebuild_dedupe(dedupe: &Dedupe, spool: &Spool, ttl: std::time::Duration) -> Result<usize, String> {
    let since = crate::shared::now_ms().saturating_sub(ttl.as_millis() as u64);
    let ids = spool
        .ids_since(since)
        .map_err(|e| format!("storage: cannot read the id journal: {e}"))?;
    let n = ids.len();
    for (route, id, _) in ids {
        if let Ok(route) = RouteName::new(&route) {
            dedupe.remember(Key::new(&route, &EventId::new(&id)));
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

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    // A second init (tests in one process) is harmless: the first subscriber stays.
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
