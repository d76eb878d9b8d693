//! The configuration file: YAML → a validated, typed [`Config`]. Unknown keys are errors, and
//! every error names the file and the key, so `pushgate check` can point at the line to fix.
//!
//! Relative paths (certificates, keys, storage, `file:` secrets) are resolved against the
//! directory of the config file, so the same file works from systemd, a container or a shell.

mod compile;
mod schema;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::listener::tls_files::{CrlExpired, TlsFiles};
pub use crate::secret::Secret;
pub use values::{read_key_material, resolve_secret, Dur, Size};

use crate::ingress::route::Route;

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

/// A config error: which file, which key, what is wrong; and every further error the same
/// file has (`more`, in file order), so one `pushgate check` lists them all.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
    pub more: Vec<ConfigError>,
}

impl ConfigError {
    pub fn new(file: &Path, key: &str, message: String) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            key: key.to_string(),
            message,
            more: Vec::new(),
        }
    }

    /// The first error, carrying the others.
    fn all(found: Vec<ConfigError>) -> ConfigError {
        let mut found = found.into_iter();
        let Some(mut first) = found.next() else {
            return ConfigError::new(Path::new(""), "", "invalid configuration".into());
        };
        first.more.extend(found);
        first
    }

    /// Every error, the first included.
    pub fn each(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(self).chain(&self.more)
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.each().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.key.is_empty() {
                write!(f, "{}: {}", e.file.display(), e.message)?;
            } else {
                write!(f, "{}: {}: {}", e.file.display(), e.key, e.message)?;
            }
        }
        Ok(())
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
    /// Where log lines go (appended; reopened on SIGHUP and SIGUSR1); by default standard error.
    pub file: Option<PathBuf>,
}

/// What the operator commands (`pushgate spool`) need: where the store is and how to reach
/// the admin API. Read leniently, so inspecting the store does not need the routes' secrets.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    pub admin: Admin,
    pub storage: Storage,
    /// The routes' names (nothing else of them is read).
    pub routes: Vec<String>,
}

impl OpsConfig {
    pub fn load(path: &Path) -> Result<OpsConfig, ConfigError> {
        #[derive(Deserialize)]
        struct Partial {
            #[serde(default)]
            admin: schema::RawAdmin,
            #[serde(default)]
            storage: schema::RawStorage,
            #[serde(default)]
            routes: Vec<Named>,
        }
        #[derive(Deserialize)]
        struct Named {
            name: Option<String>,
        }
        let err = |key: &str, message: String| ConfigError::new(path, key, message);
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
            routes: raw.routes.into_iter().filter_map(|r| r.name).collect(),
        })
    }
}

// ---- loading ---------------------------------------------------------------------------------

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, "", format!("cannot read: {e}")))?;
        Config::from_yaml(&text, path)
    }

    /// Validates config text as if read from `path` (tests load config from strings).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError::new(path, key, message);
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let raw: schema::RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
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
        let mut config = compile::validate(raw, &base, &err)?;
        config.source = path.to_path_buf();
        Ok(config)
    }
}
