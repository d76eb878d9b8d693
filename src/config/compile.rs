//! The compile step: the file as written ([`super::schema`]) → the typed [`super::Config`],
//! with secrets resolved, files checked and every runtime type (routes, profiles, keys,
//! upstreams) built. Each error names its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schema::{RawConfig, RawRoute};
use super::*;
use crate::checks::{RouteAuth, SecretCheck};
use crate::forward::Upstream;
use crate::identity::ClientDn;
use crate::names::RouteName;
use crate::profile::Profile;
use crate::route::{AckMode, Route};

pub(super) type ErrFn<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

pub(super) fn validate(raw: RawConfig, base: &Path, err: &ErrFn<'_>) -> Result<Config, ConfigError> {
    let server = ServerSettings {
        threads: raw.server.threads.unwrap_or(2).max(1),
        grace_period: raw.server.grace_period.map_or(Duration::from_secs(5), |d| d.0),
        graceful_shutdown_timeout: raw
            .server
            .graceful_shutdown_timeout
            .map_or(Duration::from_secs(5), |d| d.0),
        pid_file: raw.server.pid_file,
        upgrade_sock: raw.server.upgrade_sock,
        daemon: raw.server.daemon,
        error_log: raw.server.error_log,
        user: raw.server.user,
        group: raw.server.group,
    };

    check_addr(&raw.listen.addr).map_err(|m| err("listen.addr", m))?;
    let listen = Listen {
        addr: raw.listen.addr,
        tls: TlsFiles {
            cert: base.join(&raw.listen.tls.cert),
            key: base.join(&raw.listen.tls.key),
            client_ca: raw.listen.tls.client_ca.map(|p| base.join(p)),
            client_crl: raw.listen.tls.client_crl.iter().map(|p| base.join(p)).collect(),
            client_crl_expired: raw.listen.tls.client_crl_expired,
            require_client_cert: raw.listen.tls.require_client_cert,
        },
        max_connections: raw.listen.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        header_timeout: raw.listen.header_timeout.map_or(DEFAULT_HEADER_TIMEOUT, |d| d.0),
        idle_timeout: raw.listen.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0),
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
    crate::tls::check_files(&listen.tls).map_err(|(key, m)| err(key, m))?;

    let admin_addr = raw.admin.addr.unwrap_or_else(|| DEFAULT_ADMIN_ADDR.into());
    let admin_addr = if admin_addr.is_empty() { None } else { Some(admin_addr) };
    let token = match raw.admin.token {
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

    let storage = Storage {
        path: base.join(raw.storage.path.unwrap_or_else(|| PathBuf::from("data"))),
        retention: raw.storage.retention.map_or(DEFAULT_RETENTION, |d| d.0),
    };

    let backend = match raw.dedupe.backend.as_deref().unwrap_or("memory") {
        "memory" => DedupeBackend::Memory,
        "redis" => {
            let r = raw
                .dedupe
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
        ttl: raw.dedupe.ttl.map_or(DEFAULT_DEDUPE_TTL, |d| d.0),
        max_entries: raw.dedupe.max_entries.unwrap_or(DEFAULT_DEDUPE_MAX_ENTRIES),
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
                    humantime::format_duration(dedupe.ttl)
                ),
            ));
        }
        DedupeBackend::Memory => {}
    }

    let log = LogSettings {
        format: raw.log.format.unwrap_or(LogFormat::Text),
        level: raw.log.level.unwrap_or_else(|| "info".into()),
    };

    if raw.routes.is_empty() {
        return Err(err("routes", "at least one route is needed".into()));
    }
    let mut routes: Vec<Route> = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.into_iter().enumerate() {
        let route = validate_route(r, i, base, err)?;
        if routes.iter().any(|o| o.name == route.name) {
            return Err(err(
                &format!("routes[{i}].name"),
                format!("`{}` is used twice", route.name),
            ));
        }
        if routes.iter().any(|o| o.path == route.path) {
            return Err(err(
                &format!("routes[{i}].path"),
                format!("`{}` is used twice", route.path),
            ));
        }
        routes.push(route);
    }

    if let DedupeBackend::Redis { options, .. } = &dedupe.backend {
        // A claim must outlive the slowest store, or a twin on another replica could be
        // stored too: in `ack: upstream` that is the app's timeout.
        if let Some(r) = routes
            .iter()
            .find(|r| r.ack == AckMode::Upstream && r.upstream.timeout >= options.claim_ttl)
        {
            return Err(err(
                "dedupe.redis.claim_ttl",
                format!(
                    "must be longer than route {}'s upstream.timeout (ack: upstream)",
                    r.name
                ),
            ));
        }
    }

    Ok(Config {
        source: PathBuf::new(),
        server,
        listen,
        admin,
        storage,
        dedupe,
        log,
        routes,
    })
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
    let stale = crate::stale::Guard::build(profile.name, r.status_timestamp, r.on_stale)
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
