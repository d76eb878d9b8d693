//! Assembles the running process: config → logging → shared state → the Pingora server with
//! its TLS listener → run. Nothing here handles a request.

use std::path::Path;
use std::sync::Arc;

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

use crate::config::{Config, LogFormat};
use crate::dedupe::Dedupe;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::route::Routes;
use crate::shared::Shared;
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
    let live_tls = LiveTls::new(&material);

    let metrics = Arc::new(Metrics::new());
    let dedupe = Dedupe::memory(config.dedupe.ttl, config.dedupe.max_entries);
    let listen_addr = config.listen.addr.clone();
    let server_conf = server_conf(&config);
    let shared = Arc::new(Shared::new(Routes::new(config.routes), dedupe, metrics));

    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf);
    server.bootstrap();

    let mut ingest = pingora::proxy::http_proxy_service(&server.configuration, Ingest { shared: shared.clone() });
    let settings = live_tls.settings(material.verifier.is_some())?;
    ingest.add_tls_with_settings(&listen_addr, None, settings);
    server.add_service(ingest);

    tracing::info!(addr = %listen_addr, "pushgate listening");
    server.run_forever()
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
