//! The config file as written: the serde schema, nothing checked beyond its shape (unknown
//! keys are errors). [`super::compile`] turns it into the typed [`super::Config`].

use std::path::PathBuf;

use serde::Deserialize;

use super::values::{Dur, Size};
use super::{CrlExpired, LogFormat};
use crate::ingress::route::AckMode;
use crate::profile::{AnswerOverrides, ProfileOverrides};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    pub(super) listen: RawListen,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) storage: RawStorage,
    #[serde(default)]
    pub(super) dedupe: RawDedupe,
    #[serde(default)]
    pub(super) log: RawLog,
    pub(super) routes: Vec<RawRoute>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) threads: Option<usize>,
    pub(super) grace_period: Option<Dur>,
    pub(super) graceful_shutdown_timeout: Option<Dur>,
    pub(super) pid_file: Option<String>,
    pub(super) upgrade_sock: Option<String>,
    #[serde(default)]
    pub(super) daemon: bool,
    pub(super) error_log: Option<String>,
    pub(super) user: Option<String>,
    pub(super) group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub(super) addr: String,
    pub(super) tls: RawListenTls,
    pub(super) max_connections: Option<usize>,
    pub(super) header_timeout: Option<Dur>,
    pub(super) idle_timeout: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListenTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) client_ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) client_crl: Vec<PathBuf>,
    #[serde(default)]
    pub(super) client_crl_expired: CrlExpired,
    #[serde(default)]
    pub(super) require_client_cert: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) addr: Option<String>,
    pub(super) token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) path: Option<PathBuf>,
    pub(super) retention: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDedupe {
    pub(super) backend: Option<String>,
    pub(super) ttl: Option<Dur>,
    pub(super) max_entries: Option<u64>,
    pub(super) redis: Option<RawRedis>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    /// `redis://[user:password@]host:port/db`, `rediss://` for TLS, `redis+cluster://` for
    /// Cluster; or `env:NAME` / `file:PATH` so a password need not be written here.
    pub(super) url: String,
    #[serde(default)]
    pub(super) cluster: bool,
    pub(super) prefix: Option<String>,
    pub(super) claim_ttl: Option<Dur>,
    pub(super) timeout: Option<Dur>,
    pub(super) tls_ca: Option<PathBuf>,
    pub(super) local_cache_entries: Option<u64>,
    #[serde(default)]
    pub(super) dedicated_db: bool,
    pub(super) when_unavailable: Option<crate::dedupe::WhenUnavailable>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<LogFormat>,
    pub(super) level: Option<String>,
    pub(super) file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: String,
    pub(super) path: String,
    #[serde(default = "default_profile")]
    pub(super) profile: String,
    #[serde(default)]
    pub(super) events: ProfileOverrides,
    #[serde(default)]
    pub(super) answer: AnswerOverrides,
    #[serde(default)]
    pub(super) client_dn: Vec<String>,
    #[serde(default)]
    pub(super) client_cert_sha256: Vec<String>,
    pub(super) secret: Option<RawSecret>,
    pub(super) decrypt: Option<RawDecrypt>,
    #[serde(default)]
    pub(super) ack: AckMode,
    #[serde(default)]
    pub(super) on_conflict: crate::ingress::route::OnConflict,
    pub(super) max_body: Option<Size>,
    pub(super) read_timeout: Option<Dur>,
    #[serde(default)]
    pub(super) allow_unauthenticated: bool,
    pub(super) upstream: RawUpstream,
    pub(super) sign: Option<RawSign>,
    /// Pointers to an event's status times (the out-of-date guard); `*` = every array element.
    #[serde(default, deserialize_with = "crate::profile::one_or_many")]
    pub(super) status_timestamp: Option<Vec<String>>,
    #[serde(default)]
    pub(super) on_stale: crate::ingress::stale::OnStale,
}

/// `sign:` — Standard Webhooks signing of what the app receives.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSign {
    /// `whsec_<base64>` secrets (inline, `env:NAME` or `file:PATH`); each gives a signature.
    pub(super) secrets: Vec<String>,
}

fn default_profile() -> String {
    "generic".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    pub(super) header: String,
    pub(super) values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDecrypt {
    pub(super) keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) url: String,
    pub(super) timeout: Option<Dur>,
    pub(super) max_age: Option<Dur>,
    pub(super) concurrency: Option<usize>,
}
