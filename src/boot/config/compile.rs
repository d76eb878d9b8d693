//! The compile step: the file as written ([`super::schema`]) → the typed [`super::Config`],
//! with secrets resolved, files checked and every runtime type (routes, profiles, keys,
//! upstreams) built. Each error names its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schema::{RawAdmin, RawConfig, RawDedupe, RawListen, RawRoute};
use super::*;
use crate::forward::Upstream;
use crate::ingress::checks::{RouteAuth, SecretCheck};
use crate::ingress::route::{AckMode, Route};
use crate::listener::identity::ClientDn;
use crate::names::RouteName;
use crate::profile::Profile;

pub(super) type ErrFn<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

pub(super) fn validate(raw: RawConfig, base: &Path, err: &ErrFn<'_>) -> Result<Config, ConfigError> {
    let server = ServerSettings {
        threads: raw.server.threads.unwrap_or(2).max(1),
        grace_period: raw.server.grace_period.map_or(Duration::from_secs(5), |d| d.0),
        graceful_shutdown_timeout: raw
            .server
            .graceful_shutdown_timeout
            .map_or(Duration::from_secs(5), |d| d.0),
        // Pingora opens these after `-d` has moved the process to `/`.
        pid_file: raw.server.pid_file.map(|p| base.join(p).display().to_string()),
        upgrade_sock: raw.server.upgrade_sock.map(|p| base.join(p).display().to_string()),
        daemon: raw.server.daemon,
        error_log: raw.server.error_log.map(|p| base.join(p).display().to_string()),
        user: raw.server.user,
        group: raw.server.group,
    };

    // Every section is compiled even when an earlier one failed, so one run reports every
    // error found (in file order), not only the first.
    let mut found: Vec<ConfigError> = Vec::new();
    let mut keep = |e: ConfigError| found.push(e);
    let listen = compile_listen(raw.listen, base, err).map_err(&mut keep).ok();
    let admin = compile_admin(raw.admin, base, err).map_err(&mut keep).ok();
    let storage = Storage {
        path: base.join(raw.storage.path.unwrap_or_else(|| PathBuf::from("data"))),
        retention: raw.storage.retention.map_or(DEFAULT_RETENTION, |d| d.0),
    };
    let dedupe = compile_dedupe(raw.dedupe, &storage, base, err).map_err(&mut keep).ok();
    let log = LogSettings {
        format: raw.log.format.unwrap_or(LogFormat::Text),
        level: raw.log.level.unwrap_or_else(|| "info".into()),
        file: raw.log.file.map(|p| base.join(p)),
    };

    if raw.routes.is_empty() {
        keep(err("routes", "at least one route is needed".into()));
    }
    let mut routes: Vec<Route> = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.into_iter().enumerate() {
        let route = match validate_route(r, i, base, err) {
            Ok(route) => route,
            Err(e) => {
                keep(e);
                continue;
            }
        };
        if routes.iter().any(|o| o.name == route.name) {
            keep(err(
                &format!("routes[{i}].name"),
                format!("`{}` is used twice", route.name),
            ));
        }
        if routes.iter().any(|o| o.path == route.path) {
            keep(err(
                &format!("routes[{i}].path"),
                format!("`{}` is used twice", route.path),
            ));
        }
        routes.push(route);
    }

    if let Some(DedupeBackend::Redis { options, .. }) = dedupe.as_ref().map(|d| &d.backend) {
        // A claim must outlive the slowest store, or a twin on another replica could be
        // stored too: in `ack: upstream` that is the app's timeout.
        if let Some(r) = routes
            .iter()
            .find(|r| r.ack == AckMode::Upstream && r.upstream.timeout >= options.claim_ttl)
        {
            keep(err(
                "dedupe.redis.claim_ttl",
                format!(
                    "must be longer than route {}'s upstream.timeout (ack: upstream)",
                    r.name
                ),
            ));
        }
    }

    match (listen, admin, dedupe) {
        (Some(listen), Some(admin), Some(dedupe)) if found.is_empty() => Ok(Config {
            source: PathBuf::new(),
            server,
            listen,
            admin,
            storage,
            dedupe,
            log,
            routes,
        }),
        _ => Err(ConfigError::all(found)),
    }
}

/// `listen:`, its TLS files read and checked.
fn compile_listen(raw: RawListen, base: &Path, err: &ErrFn<'_>) -> Result<Listen, ConfigError> {
    check_addr(&raw.addr).map_err(|m| err("listen.addr", m))?;
    let listen = Listen {
        addr: raw.addr,
        tls: TlsFiles {
            cert: base.join(&raw.tls.cert),
            key: base.join(&raw.tls.key),
            client_ca: raw.tls.client_ca.map(|p| base.join(p)),
            client_crl: raw.tls.client_crl.iter().map(|p| base.join(p)).collect(),
            client_crl_expired: raw.tls.client_crl_expired,
            require_client_cert: raw.tls.require_client_cert,
        },
        max_connections: raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        header_timeout: raw.header_timeout.map_or(DEFAULT_HEADER_TIMEOUT, |d| d.0),
        idle_timeout: raw.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0),
    };
    if listen.max_connections == 0 {
        return Err(err("listen.max_connections", "must be positive".into()));
    }
    if listen.header_timeout.is_zero() || listen.idle_timeout.is_zero() {
        return Err(err("listen", "header_timeout and idle_timeout must be positive".into()));
    }
    if listen.tls.require_client_cert && listen.tls.client_ca.is_none() {
        return Err(err(
            "listen.tls.require_client_cert",
            "needs listen.tls.client_ca to verify the certificates against".into(),
        ));
    }
    if !listen.tls.client_crl.is_empty() && listen.tls.client_ca.is_none() {
        return Err(err(
            "listen.tls.client_crl",
            "needs listen.tls.client_ca: revocation is checked for certificates verified against it".into(),
        ));
    }
    // Certificates are checked here, not left to the listener, which panics on a bad file.
    crate::listener::tls::check_files(&listen.tls).map_err(|(key, m)| err(key, m))?;
    Ok(listen)
}

/// `admin:`, its token resolved.
fn compile_admin(raw: RawAdmin, base: &Path, err: &ErrFn<'_>) -> Result<Admin, ConfigError> {
    let admin_addr = raw.addr.unwrap_or_else(|| DEFAULT_ADMIN_ADDR.into());
    let admin_addr = if admin_addr.is_empty() { None } else { Some(admin_addr) };
    let token = match raw.token {
        Some(t) => Some(resolve_secret(&t, base).map_err(|m| err("admin.token", m))?),
        None => None,
    };
    if let Some(addr) = &admin_addr {
        let sa = check_addr(addr).map_err(|m| err("admin.addr", m))?;
        if !sa.ip().is_loopback() && token.is_none() {
            return Err(err(
                "admin.token",
                format!("admin.addr {addr} is not loopback: set a bearer token (env:NAME or file:PATH)"),
            ));
        }
    }
    let admin = Admin {
        addr: admin_addr,
        token,
    };
    Ok(admin)
}

/// `dedupe:`, held against the store's retention (`storage`).
fn compile_dedupe(
    raw: RawDedupe,
    storage: &Storage,
    base: &Path,
    err: &ErrFn<'_>,
) -> Result<DedupeSettings, ConfigError> {
    let backend = match raw.backend.as_deref().unwrap_or("memory") {
        "memory" => DedupeBackend::Memory,
        "redis" => {
            let r = raw
                .redis
                .ok_or_else(|| err("dedupe.redis.url", "required with backend: redis".into()))?;
            let url = resolve_secret(&r.url, base).map_err(|m| err("dedupe.redis.url", m))?;
            let url =
                String::from_utf8(url.expose().to_vec()).map_err(|_| err("dedupe.redis.url", "is not UTF-8".into()))?;
            let schemes = [
                "redis://",
                "rediss://",
                "redis+unix://",
                "redis+cluster://",
                "rediss+cluster://",
            ];
            if !schemes.iter().any(|s| url.starts_with(s)) {
                let shown = crate::dedupe::redis::redact_url(&url);
                return Err(err(
                    "dedupe.redis.url",
                    format!("`{shown}` is not a redis:// or rediss:// URL"),
                ));
            }
            let mut options = crate::dedupe::RedisOptions::new(url);
            options.cluster = r.cluster;
            if let Some(p) = r.prefix {
                options.prefix = p;
            }
            if let Some(d) = r.claim_ttl {
                options.claim_ttl = d.0;
            }
            if let Some(d) = r.timeout {
                options.timeout = d.0;
            }
            options.tls_ca_file = r.tls_ca.map(|p| base.join(p));
            if let Some(n) = r.local_cache_entries {
                options.local_cache_entries = n;
            }
            options.dedicated_db = r.dedicated_db;
            let when_unavailable = r.when_unavailable.unwrap_or(crate::dedupe::WhenUnavailable::Accept);
            DedupeBackend::Redis {
                options,
                when_unavailable,
            }
        }
        other => {
            return Err(err(
                "dedupe.backend",
                format!("unknown backend `{other}`; use memory or redis"),
            ))
        }
    };
    let dedupe = DedupeSettings {
        backend,
        ttl: raw.ttl.map_or(DEFAULT_DEDUPE_TTL, |d| d.0),
        max_entries: raw.max_entries.unwrap_or(DEFAULT_DEDUPE_MAX_ENTRIES),
    };
    if dedupe.ttl.is_zero() || dedupe.max_entries == 0 {
        return Err(err("dedupe", "ttl and max_entries must be positive".into()));
    }
    let mut dedupe = dedupe;
    match &mut dedupe.backend {
        DedupeBackend::Redis { options, .. } => options.ttl = dedupe.ttl,
        // The in-process memory is rebuilt from the store after a restart, so the store
        // must keep events at least as long as ids are remembered.
        DedupeBackend::Memory if storage.retention < dedupe.ttl => {
            return Err(err(
                "storage.retention",
                format!(
                    "must be at least dedupe.ttl ({}): the duplicate memory is rebuilt from the store after a restart",
                    Dur(dedupe.ttl)
                ),
            ));
        }
        DedupeBackend::Memory => {}
    }
    Ok(dedupe)
}

fn validate_route(r: RawRoute, i: usize, base: &Path, err: &ErrFn<'_>) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");

    let name = RouteName::new(&r.name).map_err(|m| err(&key("name"), m))?;
    if !r.path.starts_with('/') || r.path.contains(['?', '#', ' ']) {
        return Err(err(
            &key("path"),
            format!("`{}` must be an absolute path without query", r.path),
        ));
    }

    let mut dns = Vec::with_capacity(r.client_dn.len());
    for (j, dn) in r.client_dn.iter().enumerate() {
        dns.push(ClientDn::parse(dn).map_err(|e| err(&key(&format!("client_dn[{j}]")), e.to_string()))?);
    }
    let mut pins = Vec::with_capacity(r.client_cert_sha256.len());
    for (j, pin) in r.client_cert_sha256.iter().enumerate() {
        let clean: String = pin.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&clean)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                err(
                    &key(&format!("client_cert_sha256[{j}]")),
                    "must be 64 hex digits (SHA-256 of the certificate DER)".into(),
                )
            })?;
        pins.push(bytes);
    }
    let secret = match r.secret {
        None => None,
        Some(s) => {
            let header = http::HeaderName::from_bytes(s.header.as_bytes())
                .map_err(|_| err(&key("secret.header"), format!("`{}` is not a header name", s.header)))?;
            if s.values.is_empty() {
                return Err(err(&key("secret.values"), "at least one value is needed".into()));
            }
            let mut values = Vec::with_capacity(s.values.len());
            for (j, v) in s.values.iter().enumerate() {
                values.push(resolve_secret(v, base).map_err(|m| err(&key(&format!("secret.values[{j}]")), m))?);
            }
            Some(SecretCheck::new(header, values))
        }
    };
    let auth = RouteAuth::new(dns, pins, secret);
    if !auth.authenticates() && !r.allow_unauthenticated {
        return Err(err(
            &key("client_dn"),
            "the route has no client_dn, client_cert_sha256 or secret: anyone could send to it; \
             set one, or allow_unauthenticated: true"
                .into(),
        ));
    }

    let profile = Profile::build(&r.profile, r.events, r.answer).map_err(|m| err(&key("profile"), m))?;
    let stale = crate::ingress::stale::Guard::build(profile.name, r.status_timestamp, r.on_stale)
        .map_err(|m| err(&key("status_timestamp"), m))?;
    if stale.is_some() && profile.spec.ordering_key.is_empty() {
        return Err(err(
            &key("status_timestamp"),
            "the out-of-date guard compares events of one ordering key: set events.ordering_key".into(),
        ));
    }
    if profile.requires_secret() && auth.secret().is_none() {
        return Err(err(
            &key("secret"),
            format!("profile {} needs a secret header", r.profile),
        ));
    }

    let mut decrypt_keys = Vec::new();
    if let Some(d) = r.decrypt {
        if d.keys.is_empty() {
            return Err(err(&key("decrypt.keys"), "at least one key is needed".into()));
        }
        for (j, k) in d.keys.iter().enumerate() {
            let k_key = key(&format!("decrypt.keys[{j}]"));
            let bytes = read_key_material(k, base).map_err(|m| err(&k_key, m))?;
            decrypt_keys.push(crate::jwe::DecryptKey::from_pem_or_der(&bytes).map_err(|e| err(&k_key, e.to_string()))?);
        }
    }

    let mut upstream = Upstream::parse(
        &r.upstream.url,
        r.upstream.timeout.map_or(DEFAULT_UPSTREAM_TIMEOUT, |d| d.0),
        r.upstream.max_age.map_or(DEFAULT_MAX_AGE, |d| d.0),
        r.upstream.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1),
    )
    .map_err(|m| err(&key("upstream.url"), m))?;
    if let Some(sign) = r.sign {
        let mut secrets = Vec::with_capacity(sign.secrets.len());
        for (j, v) in sign.secrets.iter().enumerate() {
            secrets.push(resolve_secret(v, base).map_err(|m| err(&key(&format!("sign.secrets[{j}]")), m))?);
        }
        let signer = crate::forward::Signer::new(secrets.iter().map(Secret::expose)).map_err(|(j, m)| {
            let k = if secrets.is_empty() {
                key("sign.secrets")
            } else {
                key(&format!("sign.secrets[{j}]"))
            };
            err(&k, m)
        })?;
        upstream.sign = Some(std::sync::Arc::new(signer));
    }

    let max_body = r.max_body.map_or(DEFAULT_MAX_BODY, |s| s.0);
    if max_body == 0 {
        return Err(err(&key("max_body"), "must be positive".into()));
    }

    Ok(Route {
        name,
        path: r.path,
        auth,
        profile,
        decrypt_keys,
        ack: r.ack,
        on_conflict: r.on_conflict,
        max_body,
        read_timeout: r.read_timeout.map_or(DEFAULT_READ_TIMEOUT, |d| d.0),
        upstream: std::sync::Arc::new(upstream),
        stale,
    })
}

fn check_addr(addr: &str) -> Result<SocketAddr, String> {
    addr.parse::<SocketAddr>()
        .map_err(|_| format!("`{addr}` is not an IP:port address (e.g. 0.0.0.0:8443)"))
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};

    /// A config directory with the development certificates, and a config read from a string
    /// as if it were a file there.
    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Dir {
            let dir = tempfile::tempdir().unwrap();
            crate::boot::devcerts::write_dev_certs(dir.path()).unwrap();
            Dir(dir)
        }

        fn load(&self, yaml: &str) -> Result<Config, ConfigError> {
            Config::from_yaml(yaml, &self.0.path().join("pushgate.yaml"))
        }
    }

    const LISTEN: &str = "listen: { addr: \"127.0.0.1:8443\", tls: { cert: server.pem, key: server.key } }\n";

    fn route(name: &str, path: &str) -> String {
        format!(
            "  - {{ name: {name}, path: {path}, secret: {{ header: x-s, values: [s] }}, \
             upstream: {{ url: \"http://127.0.0.1:8080/\" }} }}\n"
        )
    }

    #[test]
    fn a_good_file_compiles_with_its_defaults() {
        let dir = Dir::new();
        let c = dir.load(&format!("{LISTEN}routes:\n{}", route("a", "/a"))).unwrap();
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].max_body, super::DEFAULT_MAX_BODY);
        assert_eq!(c.listen.max_connections, super::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.admin.addr.as_deref(), Some(super::DEFAULT_ADMIN_ADDR));
        assert_eq!(c.storage.path, dir.0.path().join("data"), "relative to the file");
    }

    #[test]
    fn every_error_is_reported_not_only_the_first() {
        let dir = Dir::new();
        let yaml = format!(
            "listen: {{ addr: \"127.0.0.1:8443\", max_connections: 0, tls: {{ cert: server.pem, key: server.key }} }}\n\
             admin: {{ addr: \"0.0.0.0:9900\" }}\n\
             dedupe: {{ backend: carrier-pigeon }}\n\
             routes:\n{}{}{}",
            route("a", "/a"),
            route("b", "/a"),
            route("bad name", "/c"),
        );
        let e = dir.load(&yaml).unwrap_err();
        let keys: Vec<&str> = e.each().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen.max_connections",
                "admin.token",
                "dedupe.backend",
                "routes[1].path",
                "routes[2].name",
            ]
        );
        let shown = e.to_string();
        assert_eq!(shown.lines().count(), 5, "one line per error:\n{shown}");
        assert!(shown.lines().all(|l| l.contains("pushgate.yaml: ")), "{shown}");
    }

    /// Regression (issue: the message printed `(3days)`, which the file cannot take).
    #[test]
    fn a_retention_shorter_than_the_ttl_names_the_ttl_as_a_config_writes_it() {
        let dir = Dir::new();
        let yaml = format!(
            "{LISTEN}storage: {{ retention: 1d }}\ndedupe: {{ ttl: 72h }}\nroutes:\n{}",
            route("a", "/a")
        );
        let e = dir.load(&yaml).unwrap_err();
        assert_eq!(e.key, "storage.retention");
        assert!(e.message.starts_with("must be at least dedupe.ttl (3d): "), "{e}");
    }

    #[test]
    fn one_error_reads_as_before() {
        let dir = Dir::new();
        let e = dir.load(&format!("{LISTEN}routes: []\n")).unwrap_err();
        assert!(e.more.is_empty());
        assert!(
            e.to_string()
                .ends_with("pushgate.yaml: routes: at least one route is needed"),
            "{e}"
        );
    }

    #[test]
    fn missing_tls_files_do_not_hide_the_routes_errors() {
        let dir = Dir::new();
        let yaml = format!(
            "listen: {{ addr: \"127.0.0.1:8443\", tls: {{ cert: nowhere.pem, key: server.key }} }}\nroutes:\n{}",
            route("a", "relative")
        );
        let e = dir.load(&yaml).unwrap_err();
        let keys: Vec<&str> = e.each().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["listen.tls.cert", "routes[0].path"]);
    }
}
