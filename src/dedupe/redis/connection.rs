//! The connection to Redis: one handle for a single node or a Cluster, every call bounded by
//! the timeout and classified (unavailable, credentials, configuration), up/down logged once,
//! and passwords kept out of every message.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, FromRedisValue, Pipeline, RedisFuture, ServerErrorKind, Value};

use super::scripts::{CLAIM, COMMIT, RELEASE};
use super::{RedisError, RedisSeen};

/// One connection handle for both topologies; both auto-reconnect and are cheap to clone.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisSeen {
    /// Whether Redis answers PING within `timeout` (every primary, in Cluster). For
    /// /readyz; it also kicks the reconnection while Redis is away.
    pub async fn healthy(&self) -> bool {
        self.ping().await.is_ok()
    }

    /// PING, then load the scripts so the first claim is one round trip (after a Redis
    /// restart EVALSHA answers NOSCRIPT once and the script is loaded again).
    pub(super) async fn probe(&self) -> Result<(), RedisError> {
        self.ping().await?;
        for script in [&*CLAIM, &*COMMIT, &*RELEASE] {
            self.bounded(|mut c| async move { script.load_async(&mut c).await })
                .await?;
        }
        Ok(())
    }

    pub(super) async fn ping(&self) -> Result<(), RedisError> {
        self.run::<()>(&redis::cmd("PING")).await
    }

    pub(super) async fn run<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        self.bounded(|mut c| async move { cmd.query_async(&mut c).await }).await
    }

    /// Runs one call on a clone of the connection, bounded by `timeout`, errors scrubbed.
    pub(super) async fn bounded<T, F, Fut>(&self, call: F) -> Result<T, RedisError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        let r = match tokio::time::timeout(self.inner.timeout, call(self.inner.conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(&e)),
            Err(_) => Err(RedisError::Unavailable(format!(
                "no answer within {:?}",
                self.inner.timeout
            ))),
        };
        self.note(&r);
        r
    }

    /// Follows whether Redis answers; a change is logged once (WARN away, INFO back).
    pub(super) fn note<T>(&self, r: &Result<T, RedisError>) {
        let up = !matches!(r, Err(RedisError::Unavailable(_)));
        if self.inner.up.swap(up, Ordering::Relaxed) != up {
            match r {
                Err(e) if !up => {
                    tracing::warn!(error = %e, "redis dedupe is away: ids are checked in this replica's memory only")
                }
                _ => tracing::info!("redis dedupe is back"),
            }
        }
    }

    /// Whether the last call to Redis was answered (the `pushgate_dedupe_backend_up` gauge).
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    pub(super) fn classify(&self, e: &redis::RedisError) -> RedisError {
        let msg = scrub(&e.to_string(), &self.inner.secrets);
        match e.kind() {
            ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm) => RedisError::Auth(msg),
            _ if matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM")) => RedisError::Auth(msg),
            ErrorKind::InvalidClientConfig => RedisError::Config(msg),
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => RedisError::Protocol(msg),
            _ => RedisError::Unavailable(msg),
        }
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Escapes SCAN MATCH glob characters so a prefix is matched literally.
pub(super) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The user-info part (`user:password`) of each `scheme://user:password@host` in `url`.
pub(super) fn userinfo_spans(url: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(i) = url[from..].find("://") {
        let start = from + i + 3;
        let end_authority = url[start..].find(['/', ',', ' ']).map_or(url.len(), |j| start + j);
        if let Some(at) = url[start..end_authority].rfind('@') {
            spans.push((start, start + at));
        }
        from = start;
    }
    spans
}

/// Passwords in `url` (raw and percent-decoded), to be scrubbed from messages.
pub(super) fn url_passwords(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (s, e) in userinfo_spans(url) {
        let info = &url[s..e];
        let pw = info.split_once(':').map_or(info, |(_, pw)| pw);
        if pw.is_empty() {
            continue;
        }
        out.push(pw.to_owned());
        let decoded = percent_decode(pw);
        if decoded != pw {
            out.push(decoded);
        }
    }
    out
}

/// `url` with every password replaced by `***` (the user name is kept).
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut last = 0;
    for (s, e) in userinfo_spans(url) {
        let info = &url[s..e];
        out.push_str(&url[last..s]);
        match info.split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push_str(":***");
            }
            // `redis://secret@host` is read as a password by redis-rs.
            None => out.push_str("***"),
        }
        last = e;
    }
    out.push_str(&url[last..]);
    out
}

/// Removes known secrets and any URL credentials from a message.
pub(super) fn scrub(msg: &str, secrets: &[String]) -> String {
    let mut out = redact_url(msg);
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
