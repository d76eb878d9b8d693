//! `pushgate spool …` and `pushgate reload`: operate a running pushgate through its admin API,
//! or, when none is running, the store directly (the store admits one process at a time).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::boot::config::{Config, OpsConfig};
use crate::ops::admin::{parse_state, parse_time, resolved};
use crate::spool::{ListQuery, Spool, SpoolOptions, State};

#[derive(Subcommand, Debug, Clone)]
pub enum SpoolCommand {
    /// Counts per route and state, and the oldest pending event.
    Stats,
    /// List events (oldest first), like CEN's pull API: count, offset, limit, total, items.
    List {
        #[arg(long)]
        route: Option<String>,
        /// pending, delivered, dead or quarantined
        #[arg(long)]
        state: Option<String>,
        /// RFC 3339 or epoch milliseconds, inclusive
        #[arg(long)]
        start: Option<String>,
        /// RFC 3339 or epoch milliseconds, exclusive
        #[arg(long)]
        end: Option<String>,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long, default_value_t = 200)]
        limit: u64,
    },
    /// One event; with --body, its body too.
    Show {
        seq: u64,
        #[arg(long)]
        body: bool,
    },
    /// The dead letters of a route.
    Dead {
        #[arg(long)]
        route: String,
    },
    /// Deliver an event again (a dead letter, a quarantined body, or a delivered event).
    Replay { seq: u64 },
    /// Deliver every dead letter of a route again.
    ReplayDead {
        #[arg(long)]
        route: String,
    },
    /// Remove dead, quarantined or delivered events (never pending ones).
    Purge {
        #[arg(long)]
        state: String,
        #[arg(long)]
        route: Option<String>,
    },
}

/// Runs a spool command and prints its JSON answer.
pub fn run(conf: &Path, cmd: SpoolCommand) -> Result<(), String> {
    let config = OpsConfig::load(conf).map_err(|e| e.to_string())?;
    let answer = match remote(&config, conf, &cmd)? {
        Some(v) => v,
        None => direct(&config, &cmd)?,
    };
    println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    Ok(())
}

/// `pushgate reload`: validate the file here first (a bad file never reaches the server),
/// then ask the server on its admin address to reload it, naming the file: a server that
/// serves another file (another config with the same `admin.addr`) refuses and reloads nothing.
pub fn reload(conf: &Path) -> Result<(), String> {
    Config::load(conf).map_err(|e| e.to_string())?;
    let config = OpsConfig::load(conf).map_err(|e| e.to_string())?;
    let file = resolved(conf);
    let path = format!("/reload?config={}", enc(&file.display().to_string()));
    let addr = config.admin.addr.as_deref().unwrap_or("");
    match admin_call(&config, "POST", &path)? {
        None => Err(format!(
            "no pushgate answers on {addr} (admin.addr of {}): nothing was reloaded",
            conf.display()
        )),
        Some((200, v)) => {
            println!("{}", v["summary"].as_str().unwrap_or("reloaded"));
            Ok(())
        }
        Some((409, v)) => Err(format!(
            "reload refused by the pushgate on {addr}: {} (to reload that server: pushgate reload -c {}; to run {} beside it, give it its own admin.addr)",
            v["error"].as_str().unwrap_or("it serves another file"),
            v["serves"].as_str().unwrap_or("FILE"),
            conf.display()
        )),
        Some((_, v)) => Err(format!(
            "reload refused: {}",
            v["error"].as_str().unwrap_or("unknown error")
        )),
    }
}

/// Whether a server answers on the admin address (`false`: the command opens the store
/// itself); refuses one that does not hold the store `conf` names: several configs may name
/// one admin address, and a command must not list, replay or purge another server's events.
fn server_holds_our_store(config: &OpsConfig, conf: &Path) -> Result<bool, String> {
    let addr = config.admin.addr.as_deref().unwrap_or("");
    let served = match admin_call(config, "GET", "/api/server")? {
        None => return Ok(false),
        Some((200, v)) => v,
        Some((status, v)) => {
            return Err(format!(
                "cannot tell which store the pushgate on {addr} holds: GET /api/server answered {status} {}; nothing was done",
                v["error"].as_str().unwrap_or("")
            ))
        }
    };
    let ours = resolved(&config.storage.path);
    let theirs = served["store"].as_str().unwrap_or("");
    if Path::new(theirs) == ours {
        return Ok(true);
    }
    let their_config = served["config"].as_str().unwrap_or("?");
    Err(format!(
        "the pushgate on {addr} holds the store {theirs} (config {their_config}), not {} that {} names; \
         nothing was done (for that server's store: -c {their_config}; to run {} beside it, give it its own admin.addr)",
        ours.display(),
        conf.display(),
        conf.display()
    ))
}

fn remote(config: &OpsConfig, conf: &Path, cmd: &SpoolCommand) -> Result<Option<Value>, String> {
    let (method, path) = match cmd {
        SpoolCommand::Stats => ("GET", "/api/stats".to_string()),
        SpoolCommand::List {
            route,
            state,
            start,
            end,
            offset,
            limit,
        } => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in [("route", route), ("state", state), ("start", start), ("end", end)] {
                if let Some(v) = v {
                    q.append_pair(k, v);
                }
            }
            q.append_pair("offset", &offset.to_string())
                .append_pair("limit", &limit.to_string());
            ("GET", format!("/api/events?{}", q.finish()))
        }
        SpoolCommand::Show { seq, body } => ("GET", format!("/api/events/{seq}?body={body}")),
        SpoolCommand::Dead { route } => ("GET", format!("/api/events?state=dead&route={}", enc(route))),
        SpoolCommand::Replay { seq } => ("POST", format!("/api/events/{seq}/replay")),
        SpoolCommand::ReplayDead { route } => ("POST", format!("/api/routes/{}/replay-dead", enc(route))),
        SpoolCommand::Purge { state, route } => {
            let route = route
                .as_deref()
                .map(|r| format!("&route={}", enc(r)))
                .unwrap_or_default();
            ("POST", format!("/api/purge?state={}{route}", enc(state)))
        }
    };
    if !server_holds_our_store(config, conf)? {
        return Ok(None);
    }
    match admin_call(config, method, &path)? {
        None => Ok(None),
        Some((s, v)) if (200..300).contains(&s) => Ok(Some(v)),
        Some((s, v)) => Err(format!("admin API answered {s}: {}", v["error"].as_str().unwrap_or(""))),
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The admin address to connect to (`0.0.0.0` read as `127.0.0.1`).
fn admin_socket(config: &OpsConfig) -> Option<std::net::SocketAddr> {
    let mut sa = config.admin.addr.as_deref()?.parse::<std::net::SocketAddr>().ok()?;
    if sa.ip().is_unspecified() {
        sa.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Some(sa)
}

/// One request to the admin listener; `None` when nothing listens there.
fn admin_call(config: &OpsConfig, method: &str, path: &str) -> Result<Option<(u16, Value)>, String> {
    let (Some(addr), Some(sa)) = (&config.admin.addr, admin_socket(config)) else {
        return Ok(None);
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&sa, Duration::from_secs(2)) else {
        return Ok(None);
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let auth = config
        .admin
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {}\r\n", String::from_utf8_lossy(t.expose())))
        .unwrap_or_default();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("admin API {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("admin API {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let value = serde_json::from_str(body).unwrap_or_else(|_| json!({ "error": body.trim() }));
    Ok(Some((status, value)))
}

/// The same operations on the store itself, when no server holds it.
fn direct(config: &OpsConfig, cmd: &SpoolCommand) -> Result<Value, String> {
    let options = SpoolOptions {
        retention: config.storage.retention,
        ..SpoolOptions::default()
    };
    let spool = Spool::open(&config.storage.path, options)
        .map_err(|e| format!("storage {}: {e}", config.storage.path.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let state_arg = |s: &str| parse_state(s).ok_or_else(|| format!("unknown state `{s}`"));
    let e = |e: crate::spool::StorageError| e.to_string();
    let v = match cmd {
        SpoolCommand::Stats => json!(spool.stats().map_err(e)?),
        SpoolCommand::List {
            route,
            state,
            start,
            end,
            offset,
            limit,
        } => {
            let q = ListQuery {
                route: route.clone(),
                state: state.as_deref().map(state_arg).transpose()?,
                start_ms: parse_time(start.as_ref()).map_err(|_| "bad --start")?,
                end_ms: parse_time(end.as_ref()).map_err(|_| "bad --end")?,
                offset: *offset,
                limit: (*limit).min(crate::ops::admin::MAX_LIMIT),
            };
            json!(spool.list(&q).map_err(e)?)
        }
        SpoolCommand::Show { seq, body } => {
            let meta = spool.meta(*seq).map_err(e)?.ok_or("no such event")?;
            let mut v = json!(meta);
            if *body {
                if let Some(b) = spool.body(*seq).map_err(e)? {
                    v["body"] = crate::ops::admin::body_json(&b);
                }
            }
            v
        }
        SpoolCommand::Dead { route } => {
            let q = ListQuery {
                route: Some(route.clone()),
                state: Some(State::Dead),
                limit: 1000,
                ..ListQuery::default()
            };
            json!(spool.list(&q).map_err(e)?)
        }
        SpoolCommand::Replay { seq } => json!({ "replayed": u64::from(rt.block_on(spool.replay(*seq)).map_err(e)?) }),
        SpoolCommand::ReplayDead { route } => {
            if !config.routes.contains(route) && !spool.stats().map_err(e)?.routes.contains_key(route) {
                return Err(format!(
                    "no route `{route}`: not configured, and no event of it is stored"
                ));
            }
            json!({ "replayed": rt.block_on(spool.replay_dead(route)).map_err(e)? })
        }
        SpoolCommand::Purge { state, route } => {
            let state = state_arg(state)?;
            if state == State::Pending {
                return Err("pending events are never purged".into());
            }
            json!({ "purged": rt.block_on(spool.purge(route.as_deref(), state)).map_err(e)? })
        }
    };
    rt.block_on(spool.close());
    Ok(v)
}
