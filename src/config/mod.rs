//! The configuration file: YAML → a validated, typed [`Config`]. Unknown keys are errors, and
//! every error names the file and the key, so `pushgate check` can point at the line to fix.
//!
//! Relative paths (certificates, keys, storage, `file:` secrets) are resolved against the
//! directory of the config file, so the same file works from systemd, a container or a shell.

mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::secret::Secret;
pub use crate::tls_files::{CrlExpired, TlsFiles};
pub use values::{read_key_material, resolve_secret, Dur, Size};

use crate::checks::{RouteAuth, SecretCheck};
use crate::forward::Upstream;
use crate::identity::ClientDn;
use crate::names::RouteName;
use crate::profile::{AnswerOverrides, Profile, ProfileOverrides};
use crate::route::{AckMode, Route};

/// Body limit when a route does not set `max_body`.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
/// How long a sender may take to send its whole body.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the app has to answer one delivery.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long delivery is retried before an event becomes a dead letter.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(72 * 3600);
/// Concurrent deliveries per route.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Duplicate memory: how long an id is remembered, and how many ids at most.
pub const DEFAULT_DEDUPE_TTL: Duration = Duration::from_secs(72 * 3600);
pub const DEFAULT_DEDUPE_MAX_ENTRIES: u64 = 1_000_000;
/// The admin listener, loopback only unless configured otherwise.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9900";
/// Delivered events kept for replay and listing.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Open connections on the listener beyond which new ones are refused.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// How long a new connection may take to send its first request header, however slowly it
/// trickles (Pingora's own read timeout restarts with every byte).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kept-alive connection may wait for (and send) its next request header.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A config error: which file, which key, what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration: everything the server needs, already compiled.
#[derive(Debug)]
pub struct Config {
    pub source: PathBuf,
    pub server: ServerSettings,
    pub listen: Listen,
    pub admin: Admin,
    pub storage: Storage,
    pub dedupe: DedupeSettings,
    pub log: LogSettings,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub threads: usize,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub daemon: bool,
    pub error_log: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: String,
    pub tls: TlsFiles,
    /// Connections past the TLS handshake, at most; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Deadline for the first request header of a connection.
    pub header_timeout: Duration,
    /// Deadline for each later request header of a kept-alive connection (idle time included).
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub addr: Option<String>,
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    pub path: PathBuf,
    pub retention: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeSettings {
    pub backend: DedupeBackend,
    pub ttl: Duration,
    pub max_entries: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupeBackend {
    Memory,
    Redis {
        options: crate::dedupe::RedisOptions,
        when_unavailable: crate::dedupe::WhenUnavailable,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// What the operator commands (`pushgate spool`) need: where the store is and how to reach
/// the admin API. Read leniently, so inspecting the store does not need the routes' secrets.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    pub admin: Admin,
    pub storage: Storage,
}

impl OpsConfig {
    pub fn load(path: &Path) -> Result<OpsConfig, ConfigError> {
        #[derive(Deserialize)]
        struct Partial {
            #[serde(default)]
            admin: RawAdmin,
            #[serde(default)]
            storage: RawStorage,
        }
        let err = |key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            key: key.into(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err("", format!("cannot read: {e}")))?;
        let raw: Partial = serde_yaml_ng::from_str(&text).map_err(|e| err("", e.to_string()))?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let token = match raw.admin.token {
            Some(t) => Some(resolve_secret(&t, &base).map_err(|m| err("admin.token", m))?),
            None => None,
        };
        let addr = raw.admin.addr.unwrap_or_else(|| DEFAULT_ADMIN_ADDR.into());
        Ok(OpsConfig {
            admin: Admin {
                addr: (!addr.is_empty()).then_some(addr),
                token,
            },
            storage: Storage {
                path: base.join(raw.storage.path.unwrap_or_else(|| PathBuf::from("data"))),
                retention: raw.storage.retention.map_or(DEFAULT_RETENTION, |d| d.0),
            },
        })
    }
}

// ---- the file as written -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    listen: RawListen,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    dedupe: RawDedupe,
    #[serde(default)]
    log: RawLog,
    routes: Vec<RawRoute>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    threads: Option<usize>,
    grace_period: Option<Dur>,
    graceful_shutdown_timeout: Option<Dur>,
    pid_file: Option<String>,
    upgrade_sock: Option<String>,
    #[serde(default)]
    daemon: bool,
    error_log: Option<String>,
    user: Option<String>,
    group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    addr: String,
    tls: RawListenTls,
    max_connections: Option<usize>,
    header_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    #[serde(default)]
    client_crl: Vec<PathBuf>,
    #[serde(default)]
    client_crl_expired: CrlExpired,
    #[serde(default)]
    require_client_cert: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    addr: Option<String>,
    token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    path: Option<PathBuf>,
    retention: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDedupe {
    backend: Option<String>,
    ttl: Option<Dur>,
    max_entries: Option<u64>,
    redis: Option<RawRedis>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    /// `redis://[user:password@]host:port/db`, `rediss://` for TLS, `redis+cluster://` for
    /// Cluster; or `env:NAME` / `file:PATH` so a password need not be written here.
    url: String,
    #[serde(default)]
    cluster: bool,
    prefix: Option<String>,
    claim_ttl: Option<Dur>,
    timeout: Option<Dur>,
    tls_ca: Option<PathBuf>,
    local_cache_entries: Option<u64>,
    #[serde(default)]
    dedicated_db: bool,
    when_unavailable: Option<crate::dedupe::WhenUnavailable>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    path: String,
    #[serde(default = "default_profile")]
    profile: String,
    #[serde(default)]
    events: ProfileOverrides,
    #[serde(default)]
    answer: AnswerOverrides,
    #[serde(default)]
    client_dn: Vec<String>,
    #[serde(default)]
    client_cert_sha256: Vec<String>,
    secret: Option<RawSecret>,
    decrypt: Option<RawDecrypt>,
    #[serde(default)]
    ack: AckMode,
    #[serde(default)]
    on_conflict: crate::route::OnConflict,
    max_body: Option<Size>,
    read_timeout: Option<Dur>,
    #[serde(default)]
    allow_unauthenticated: bool,
    upstream: RawUpstream,
    sign: Option<RawSign>,
    /// Pointers to an event's status times (the out-of-date guard); `*` = every array element.
    #[serde(default, deserialize_with = "crate::profile::one_or_many")]
    status_timestamp: Option<Vec<String>>,
    #[serde(default)]
    on_stale: crate::stale::OnStale,
}

/// `sign:` — Standard Webhooks signing of what the app receives.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSign {
    /// `whsec_<base64>` secrets (inline, `env:NAME` or `file:PATH`); each gives a signature.
    secrets: Vec<String>,
}

fn default_profile() -> String {
    "generic".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    header: String,
    values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecrypt {
    keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: String,
    timeout: Option<Dur>,
    max_age: Option<Dur>,
    concurrency: Option<usize>,
}

// ---- loading ---------------------------------------------------------------------------------

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Config::from_yaml(&text, path)
    }

    /// Validates config text as if read from `path` (tests load config from strings).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.to_string();
            // serde_yaml_ng usually says where; add it when it does not.
            let at = match inner.location() {
                Some(l) if !message.contains(" at line ") => format!(" at line {} column {}", l.line(), l.column()),
                _ => String::new(),
            };
            err(if key == "." { "" } else { &key }, format!("{message}{at}"))
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut config = validate(raw, &base, &err)?;
        config.source = path.to_path_buf();
        Ok(config)
    }
}

type ErrFn<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

fn validate(raw: RawConfig, base: &Path, err: &ErrFn<'_>) -> Result<Config, ConfigError> {
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
