//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and the spool API (list events by
//! route, state and time range in the shape of Mastercard CEN's pull API, show one, replay
//! one or a route's dead letters, purge). Loopback by default; a bearer token when bound
//! elsewhere (config refuses a non-loopback address without one).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::secret::Secret;
use crate::shared::Shared;
use crate::spool::{ListQuery, Spool, State};

/// Longest page the list endpoint returns.
pub const MAX_LIMIT: u64 = 1000;
/// Default page size (CEN's pull API default).
pub const DEFAULT_LIMIT: u64 = 200;
/// The parameters of `GET /api/events`.
pub const LIST_PARAMETERS: &[&str] = &["route", "state", "start", "end", "offset", "limit"];

pub struct Admin {
    pub shared: Arc<Shared>,
    pub token: Option<Secret>,
    /// The notification listener, probed by `/readyz` through `probe`.
    pub listen_addr: std::net::SocketAddr,
    pub probe: Arc<crate::listener::probe::AcceptProbe>,
    pub reloader: Arc<crate::ops::reload::Reloader>,
    /// What this process serves, for `GET /api/server`.
    pub served: Served,
}

/// The config file and the store a server serves (both absolute), so that `pushgate reload`
/// and `pushgate spool` can tell whether the server they reached is the one their `-c FILE`
/// names: several configs may name one admin address.
#[derive(Clone, Debug)]
pub struct Served {
    pub config: std::path::PathBuf,
    pub store: std::path::PathBuf,
}

/// A path as the file system resolves it (symlinks, `..`), or made absolute when it does not
/// exist.
pub fn resolved(path: &std::path::Path) -> std::path::PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

type AdminReply = Response<Vec<u8>>;

fn reply(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> AdminReply {
    let body = body.into();
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

fn json_reply(status: u16, value: &serde_json::Value) -> AdminReply {
    reply(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

fn error(status: u16, message: &str) -> AdminReply {
    json_reply(status, &json!({ "error": message }))
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> AdminReply {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let query: HashMap<String, String> = session
            .req_header()
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();

        // Probes stay open so an orchestrator needs no token; everything else needs it.
        let probe = matches!(path.as_str(), "/healthz" | "/readyz");
        if !probe && !self.authorized(session) {
            return error(401, "missing or wrong bearer token");
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["healthz"]) => reply(200, "text/plain", "ok\n"),
            ("GET", ["readyz"]) => self.readyz().await,
            ("GET", ["metrics"]) => {
                self.shared.refresh_gauges().await;
                reply(200, "text/plain; version=0.0.4", self.shared.metrics.render())
            }
            ("GET", ["api", "server"]) => json_reply(
                200,
                &json!({
                    "config": self.served.config,
                    "store": resolved(&self.served.store),
                    "pid": std::process::id(),
                    "version": env!("CARGO_PKG_VERSION"),
                }),
            ),
            (_, ["api", ..]) => match self.shared.store.get() {
                None => error(503, "storage is not open yet"),
                Some(spool) => self.api(spool, method.as_str(), &segments[1..], &query).await,
            },
            ("POST", ["reload"]) => self.reload(&query).await,
            (_, ["healthz" | "readyz" | "metrics" | "reload"]) => error(405, "method not allowed"),
            _ => error(404, "not found"),
        }
    }
}

impl Admin {
    /// `POST /reload[?config=FILE]`: with `config`, only when FILE is the file this server
    /// serves (a reload re-reads that file, whatever the caller meant).
    async fn reload(&self, query: &HashMap<String, String>) -> AdminReply {
        if let Some(refused) = unknown_parameters(query, &["config"]) {
            return refused;
        }
        if let Some(asked) = query.get("config") {
            let asked = resolved(std::path::Path::new(asked));
            if asked != self.served.config {
                let message = format!(
                    "this pushgate serves {}, not {}; nothing was reloaded",
                    self.served.config.display(),
                    asked.display()
                );
                let serves = &self.served.config;
                return json_reply(409, &json!({ "reloaded": false, "error": message, "serves": serves }));
            }
        }
        match self.reloader.reload().await {
            Ok(summary) => json_reply(200, &json!({ "reloaded": true, "summary": summary })),
            Err(reason) => json_reply(400, &json!({ "reloaded": false, "error": reason })),
        }
    }

    /// `/api/…`, once the store is open.
    async fn api(&self, spool: &Spool, method: &str, path: &[&str], query: &HashMap<String, String>) -> AdminReply {
        let known: &[&str] = match (method, path) {
            ("GET", ["events"]) => LIST_PARAMETERS,
            ("GET", ["events", _]) => &["body"],
            ("POST", ["purge"]) => &["state", "route"],
            _ => &[],
        };
        if let Some(refused) = unknown_parameters(query, known) {
            return refused;
        }
        match (method, path) {
            ("GET", ["stats"]) => match spool.stats() {
                Ok(s) => json_reply(200, &json!(s)),
                Err(e) => error(503, &e.to_string()),
            },
            ("GET", ["events"]) => self.list(spool, query),
            ("GET", ["events", seq]) => self.show(spool, seq, query.get("body").is_some_and(|v| v == "true")),
            ("POST", ["events", seq, "replay"]) => self.replay(spool, seq).await,
            ("POST", ["routes", route, "replay-dead"]) => self.replay_dead(spool, route).await,
            ("POST", ["purge"]) => self.purge(spool, query).await,
            (_, ["stats" | "events" | "routes" | "purge", ..]) => error(405, "method not allowed"),
            _ => error(404, "not found"),
        }
    }

    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = &self.token else { return true };
        let sent = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        token.expose().ct_eq(sent.as_bytes()).into()
    }

    async fn readyz(&self) -> AdminReply {
        let storage = async {
            match self.shared.store.get() {
                Some(spool) => matches!(
                    tokio::time::timeout(Duration::from_secs(2), spool.probe()).await,
                    Ok(Ok(()))
                ),
                None => false,
            }
        };
        // A connection this process's accept loop sees, not merely an address someone holds.
        let listener = self.probe.accepts(self.listen_addr, Duration::from_secs(1));
        let (storage_ok, listener_ok) = tokio::join!(storage, listener);
        // An unreachable shared memory only makes pushgate unready when it then refuses
        // events (policy `refuse`); under `accept` it still takes them, flagged.
        let dedupe = &self.shared.dedupe;
        let dedupe_ok = dedupe.healthy().await;
        let dedupe_blocks = !dedupe_ok && dedupe.when_unavailable() == crate::dedupe::WhenUnavailable::Refuse;
        let body = json!({ "storage": storage_ok, "listener": listener_ok, "dedupe": dedupe_ok });
        json_reply(
            if storage_ok && listener_ok && !dedupe_blocks {
                200
            } else {
                503
            },
            &body,
        )
    }

    fn list(&self, spool: &Spool, q: &HashMap<String, String>) -> AdminReply {
        let state = match q.get("state").map(|s| parse_state(s)) {
            None => None,
            Some(Some(s)) => Some(s),
            Some(None) => return error(400, "state must be pending, delivered, dead or quarantined"),
        };
        let (Ok(start_ms), Ok(end_ms)) = (parse_time(q.get("start")), parse_time(q.get("end"))) else {
            return error(400, "start and end are RFC 3339 times or epoch milliseconds");
        };
        let num = |k: &str, default: u64| q.get(k).map_or(Some(default), |v| v.parse().ok());
        let (Some(offset), Some(limit)) = (num("offset", 0), num("limit", DEFAULT_LIMIT)) else {
            return error(400, "offset and limit are numbers");
        };
        let query = ListQuery {
            route: q.get("route").cloned(),
            state,
            start_ms,
            end_ms,
            offset,
            limit: limit.min(MAX_LIMIT),
        };
        match spool.list(&query) {
            Ok(page) => json_reply(200, &json!(page)),
            Err(e) => error(503, &e.to_string()),
        }
    }

    fn show(&self, spool: &Spool, seq: &str, with_body: bool) -> AdminReply {
        let Ok(seq) = seq.parse::<u64>() else {
            return error(400, "not an event number");
        };
        let meta = match spool.meta(seq) {
            Ok(Some(m)) => m,
            Ok(None) => return error(404, "no such event"),
            Err(e) => return error(503, &e.to_string()),
        };
        let mut value = json!(meta);
        if with_body {
            if let Ok(Some(body)) = spool.body(seq) {
                value["body"] = match std::str::from_utf8(&body) {
                    Ok(text) => json!(text),
                    Err(_) => {
                        json!({ "base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &body) })
                    }
                };
            }
        }
        json_reply(200, &value)
    }

    async fn replay(&self, spool: &Spool, seq: &str) -> AdminReply {
        let Ok(seq) = seq.parse::<u64>() else {
            return error(400, "not an event number");
        };
        let route = match spool.meta(seq) {
            Ok(Some(m)) => m.route,
            Ok(None) => return error(404, "no such event"),
            Err(e) => return error(503, &e.to_string()),
        };
        match spool.replay(seq).await {
            Ok(true) => {
                self.shared.forwarder().rescan(Some(&route));
                tracing::info!(target: "pushgate::admin", seq, route = %route, "replayed");
                json_reply(200, &json!({ "replayed": 1 }))
            }
            Ok(false) => error(404, "no such event"),
            Err(e) => error(503, &e.to_string()),
        }
    }

    async fn replay_dead(&self, spool: &Spool, route: &str) -> AdminReply {
        // A typo would otherwise answer {"replayed": 0} as if the route had no dead letter.
        let configured = self.shared.routes().iter().any(|r| r.name.as_str() == route);
        match spool.stats() {
            Ok(stats) if !configured && !stats.routes.contains_key(route) => {
                return error(
                    404,
                    &format!("no route `{route}`: not configured, and no event of it is stored"),
                );
            }
            Ok(_) => {}
            Err(e) => return error(503, &e.to_string()),
        }
        match spool.replay_dead(route).await {
            Ok(n) => {
                self.shared.forwarder().rescan(Some(route));
                tracing::info!(target: "pushgate::admin", route, count = n, "replayed dead letters");
                json_reply(200, &json!({ "replayed": n }))
            }
            Err(e) => error(503, &e.to_string()),
        }
    }

    async fn purge(&self, spool: &Spool, q: &HashMap<String, String>) -> AdminReply {
        let state = match q.get("state").and_then(|s| parse_state(s)) {
            Some(State::Pending) | None => return error(400, "state must be dead, quarantined or delivered"),
            Some(s) => s,
        };
        match spool.purge(q.get("route").map(String::as_str), state).await {
            Ok(n) => {
                tracing::info!(target: "pushgate::admin", route = q.get("route").map_or("*", |r| r.as_str()), ?state, count = n, "purged");
                json_reply(200, &json!({ "purged": n }))
            }
            Err(e) => error(503, &e.to_string()),
        }
    }
}

/// A request with a parameter the endpoint does not take is refused with the ones it takes:
/// ignored, a typo (`?stat=dead`) would silently widen the answer to every event.
fn unknown_parameters(query: &HashMap<String, String>, known: &[&str]) -> Option<AdminReply> {
    let mut unknown: Vec<&str> = query
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if unknown.is_empty() {
        return None;
    }
    unknown.sort_unstable();
    let takes = match known {
        [] => "no parameter".to_string(),
        _ => known.join(", "),
    };
    let message = format!("unknown parameter {}; this endpoint takes {takes}", unknown.join(", "));
    Some(json_reply(400, &json!({ "error": message, "known": known })))
}

/// A body in JSON: as text when it is UTF-8, else `{"base64": …}`.
pub fn body_json(body: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(body) {
        Ok(text) => json!(text),
        Err(_) => json!({ "base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, body) }),
    }
}

pub fn parse_state(s: &str) -> Option<State> {
    match s {
        "pending" => Some(State::Pending),
        "delivered" => Some(State::Delivered),
        "dead" => Some(State::Dead),
        "quarantined" => Some(State::Quarantined),
        _ => None,
    }
}

/// A time that is neither RFC 3339 nor epoch milliseconds.
#[derive(Debug)]
pub struct BadTime;

/// RFC 3339 (`2026-11-23T10:00:00Z`) or epoch milliseconds.
pub fn parse_time(v: Option<&String>) -> Result<Option<u64>, BadTime> {
    let Some(v) = v else { return Ok(None) };
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(Some(ms));
    }
    let t = humantime::parse_rfc3339_weak(v).map_err(|_| BadTime)?;
    let d = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| BadTime)?;
    Ok(Some(d.as_millis() as u64))
}
