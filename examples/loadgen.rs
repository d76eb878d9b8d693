//! HTTP/1.1-over-(m)TLS load generator for benchmarking pushgate against other TLS front ends.
//!
//! Every request sends a body template in which each `{{id}}` is replaced by a unique id
//! (`<prefix>-<n>`, the prefix random per run unless `--id-prefix`), so each request is a new
//! event. Scheduling:
//!
//! * closed loop (no `--rate`): each of `--connections` connections sends its next request as
//!   soon as the previous one completed; latency = completion - send time.
//! * open loop (`--rate R`): request `n` is due at `start + n / R`; a shared counter hands the
//!   slots out to whichever connection is free, so the schedule does not depend on how fast the
//!   server answers. Latency is measured from the intended send time whenever the request went out
//!   late (no coordinated omission). `late` counts requests sent more than 1 ms after their slot
//!   (every connection was busy, or the generator was short of CPU: a late-heavy run needs more
//!   `--connections`); a slot that could not be sent within `--timeout` is counted as `unsent`.
//!
//! Keep-alive connections are opened before the clock starts and reopened (without counting an
//! error) when the server closes them. With `--new-connection-per-request` every request opens a
//! TCP + TLS connection, sends `Connection: close`, and its latency includes connect and handshake;
//! TLS session resumption is off unless `--tls-resume`, so every handshake is a full one.
//!
//! Results cover the measured window only: `--warmup` runs first and is not counted; the window
//! then lasts `--duration` (default 10 s unless `--requests` is given) or `--requests N` measured
//! requests, whichever ends first, and in-flight requests are awaited (each bounded by
//! `--timeout`). Throughput and handshakes/s are per second from the end of the warm-up to the
//! last measured completion. Latency percentiles cover successful requests (status =
//! `--expect-status`); failures are counted by kind: connect, tls (including a handshake rejected
//! after the fact, as TLS 1.3 servers do for a bad client certificate), timeout, closed
//! (connection closed before a complete response), io, unsent, status_NNN.
//!
//! Exit status: 0 whenever the run could be made, even if requests failed; 2 on usage errors
//! (bad arguments, unreadable or invalid files, bad or unresolvable URL).
//!
//! Example:
//!   cargo run --release --example loadgen -- --url https://127.0.0.1:8443/xbs/status/webhook \
//!     --ca dev/certs/ca.pem --cert dev/certs/xbs-prod.pem --key dev/certs/xbs-prod.key \
//!     --body examples/samples/xbs-status-change.json --connections 32 --rate 1000 --duration 10s

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "HTTP/1.1 over (m)TLS load generator for pushgate benchmarks"
)]
struct Args {
    /// Target URL (https only), e.g. https://127.0.0.1:8443/xbs/status/webhook
    #[arg(long)]
    url: String,
    /// PEM file with the CA certificate(s) that issued the server certificate
    #[arg(long)]
    ca: PathBuf,
    /// PEM client certificate chain for mTLS (needs --key)
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert (PKCS#8, SEC1 or PKCS#1)
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// TLS server name (SNI and certificate check); default: the URL's host
    #[arg(long)]
    server_name: Option<String>,
    /// Body template file; every `{{id}}` is replaced by a unique id per request (default: empty body)
    #[arg(long)]
    body: Option<PathBuf>,
    /// Prefix of the generated ids (default: random, e.g. lg3f9a1c2e)
    #[arg(long)]
    id_prefix: Option<String>,
    /// Extra request header "Name: value" (repeatable; replaces the default Host/Content-Type/User-Agent)
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// HTTP method
    #[arg(long, default_value = "POST")]
    method: Method,
    /// Concurrent connections (each has at most one request in flight)
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Fixed total request rate per second (open loop); absent = as fast as possible (closed loop)
    #[arg(long, short = 'r')]
    rate: Option<f64>,
    /// Measured duration (e.g. 10s, 500ms, 2m); default 10s unless --requests is given
    #[arg(long, short = 'd', value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many measured requests (whichever of --duration/--requests comes first)
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Warm-up run before the measured window; its requests are not counted
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    warmup: Duration,
    /// Open a new TCP+TLS connection for every request (sends Connection: close)
    #[arg(long)]
    new_connection_per_request: bool,
    /// Allow TLS session resumption on reconnects (default: every handshake is a full one)
    #[arg(long)]
    tls_resume: bool,
    /// Expected response status; any other status counts as an error
    #[arg(long, default_value_t = 200)]
    expect_status: u16,
    /// Per-request timeout (connect + TLS + request + response body)
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Restrict the TLS version (1.2 or 1.3); default: both allowed
    #[arg(long, value_parser = ["1.2", "1.3"])]
    tls_version: Option<String>,
    /// Tokio worker threads
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print one JSON object instead of the text report
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn usage_error(msg: impl std::fmt::Display) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(2);
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: log-linear buckets in microseconds. Values below 256 µs are exact; above,
// each power of two is split into 128 linear sub-buckets (< 0.8 % relative error), up to 2^26 µs
// (67 s); larger values land in the last bucket. 2,560 u64 counters = 20 KiB per histogram.
// ---------------------------------------------------------------------------------------------

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS; // 128
const EXACT: u64 = 2 * SUB; // 256: values below are their own bucket
const MAX_EXP: u32 = 26;
const BUCKETS: usize = EXACT as usize + (MAX_EXP as usize - (SUB_BITS as usize + 1)) * SUB as usize;

#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_us: u128,
    max_us: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: Vec::new(),
            total: 0,
            sum_us: 0,
            max_us: 0,
        }
    }

    fn index(v: u64) -> usize {
        let v = v.min((1 << MAX_EXP) - 1);
        if v < EXACT {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // >= SUB_BITS + 1
        let shift = e - SUB_BITS;
        let m = v >> shift; // SUB..2*SUB
        EXACT as usize + (e - SUB_BITS - 1) as usize * SUB as usize + (m - SUB) as usize
    }

    /// Middle of the bucket's value range.
    fn value(i: usize) -> u64 {
        if (i as u64) < EXACT {
            return i as u64;
        }
        let j = i as u64 - EXACT;
        let shift = (j / SUB) as u32 + 1;
        let m = SUB + j % SUB;
        (m << shift) + (1 << shift) / 2
    }

    fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        self.counts[Self::index(us)] += 1;
        self.total += 1;
        self.sum_us += us as u128;
        self.max_us = self.max_us.max(us);
    }

    fn merge(&mut self, o: &Histogram) {
        if o.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.sum_us += o.sum_us;
        self.max_us = self.max_us.max(o.max_us);
    }

    /// Value (µs) at quantile q in 0..=1, or None when empty.
    fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::value(i).min(self.max_us));
            }
        }
        Some(self.max_us)
    }

    fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum_us as f64 / self.total as f64)
    }
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ErrKind {
    Connect,
    Tls,
    Timeout,
    /// The connection was closed before a complete response arrived.
    Closed,
    /// Any other I/O or HTTP protocol error.
    Io,
    /// Open loop: not sent within --timeout of its slot because every connection was busy.
    Unsent,
    Status(u16),
}

impl ErrKind {
    fn name(self) -> String {
        match self {
            ErrKind::Connect => "connect".into(),
            ErrKind::Tls => "tls".into(),
            ErrKind::Timeout => "timeout".into(),
            ErrKind::Closed => "closed".into(),
            ErrKind::Io => "io".into(),
            ErrKind::Unsent => "unsent".into(),
            ErrKind::Status(s) => format!("status_{s}"),
        }
    }
}

struct Stats {
    latency: Histogram,
    handshake: Histogram,
    sent: u64,
    completed: u64,
    ok: u64,
    errors: BTreeMap<ErrKind, u64>,
    handshakes: u64,
    resumed: u64,
    late: u64,
    /// Open loop: how long after its slot each request was sent (0 if sent early).
    lag: Histogram,
    last_done: Option<Instant>,
    first_error: Option<String>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            latency: Histogram::new(),
            handshake: Histogram::new(),
            sent: 0,
            completed: 0,
            ok: 0,
            errors: BTreeMap::new(),
            handshakes: 0,
            resumed: 0,
            late: 0,
            lag: Histogram::new(),
            last_done: None,
            first_error: None,
        }
    }

    fn merge(&mut self, o: Stats) {
        self.latency.merge(&o.latency);
        self.handshake.merge(&o.handshake);
        self.sent += o.sent;
        self.completed += o.completed;
        self.ok += o.ok;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.handshakes += o.handshakes;
        self.resumed += o.resumed;
        self.late += o.late;
        self.lag.merge(&o.lag);
        self.last_done = self.last_done.max(o.last_done);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared run context
// ---------------------------------------------------------------------------------------------

struct Ctx {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    /// Body template split at every `{{id}}`: the id goes between consecutive parts.
    body_parts: Vec<Bytes>,
    id_prefix: String,
    connections: usize,
    new_conn: bool,
    expect_status: u16,
    timeout: Duration,
    rate: Option<f64>,
    warmup: Duration,
    duration: Option<Duration>,
    requests: Option<u64>,
    /// Global request counter: unique ids, and the slot number in open-loop mode.
    next: AtomicU64,
    /// Closed loop: number of measured requests handed out so far.
    measured: AtomicU64,
}

/// One unit of work handed to a connection task.
struct Slot {
    id: u64,
    /// Open loop: when this request is due.
    intended: Option<Instant>,
    /// False during the warm-up.
    measured: bool,
}

impl Ctx {
    /// Open loop: index of the first slot at or after the end of the warm-up.
    fn first_measured_slot(&self, rate: f64) -> u64 {
        (self.warmup.as_secs_f64() * rate).ceil() as u64
    }

    fn slot_offset(n: u64, rate: f64) -> Duration {
        Duration::from_secs_f64(n as f64 / rate)
    }

    /// The next request to make, or None when the run is over.
    fn next_slot(&self, start: Instant) -> Option<Slot> {
        let warmup_end = start + self.warmup;
        if let Some(rate) = self.rate {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let first = self.first_measured_slot(rate);
            let offset = Self::slot_offset(n, rate);
            if let Some(d) = self.duration {
                if offset >= self.warmup + d {
                    return None;
                }
            }
            if let Some(limit) = self.requests {
                if n >= first + limit {
                    return None;
                }
            }
            return Some(Slot {
                id: n,
                intended: Some(start + offset),
                measured: n >= first,
            });
        }
        let now = Instant::now();
        if let Some(d) = self.duration {
            if now >= warmup_end + d {
                return None;
            }
        }
        let measured = now >= warmup_end;
        if measured {
            if let Some(limit) = self.requests {
                if self.measured.fetch_add(1, Ordering::Relaxed) >= limit {
                    return None;
                }
            }
        }
        Some(Slot {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            intended: None,
            measured,
        })
    }

    fn build_request(&self, id: u64) -> Request<Full<Bytes>> {
        let body = if self.body_parts.len() == 1 {
            self.body_parts[0].clone()
        } else {
            let len: usize = self.body_parts.iter().map(|p| p.len()).sum();
            let mut buf = BytesMut::with_capacity(len + (self.body_parts.len() - 1) * (self.id_prefix.len() + 21));
            for (i, part) in self.body_parts.iter().enumerate() {
                if i > 0 {
                    let _ = write!(buf, "{}-{}", self.id_prefix, id);
                }
                buf.extend_from_slice(part);
            }
            buf.freeze()
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

type Io = TokioIo<TlsStream<TcpStream>>;

/// A client connection whose protocol state machine (`driver`) is polled by the task that makes
/// the requests, instead of a task of its own: no cross-task wake-ups per request.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Pin<Box<Connection<Io, Full<Bytes>>>>,
    dead: bool,
}

struct Failure {
    kind: ErrKind,
    detail: String,
}

impl Failure {
    fn new(kind: ErrKind, detail: impl std::fmt::Display) -> Self {
        Failure {
            kind,
            detail: detail.to_string(),
        }
    }
}

/// Does the error chain contain a TLS (rustls) error, e.g. an alert for a rejected client
/// certificate, which under TLS 1.3 only shows up on the first read after the handshake?
fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// "error: cause: cause ..." (hyper's own messages are terse, e.g. "connection error").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let _ = write!(out, ": {err}");
        cur = err.source();
    }
    out
}

fn classify_hyper(e: &hyper::Error) -> ErrKind {
    if is_tls_error(e) {
        ErrKind::Tls
    } else if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        ErrKind::Closed
    } else {
        ErrKind::Io
    }
}

struct Connected {
    conn: Conn,
    handshake_time: Duration,
    resumed: bool,
}

async fn connect(ctx: &Ctx) -> Result<Connected, Failure> {
    let t0 = Instant::now();
    let tcp = TcpStream::connect(ctx.addr)
        .await
        .map_err(|e| Failure::new(ErrKind::Connect, e))?;
    let _ = tcp.set_nodelay(true);
    let tls = ctx
        .tls
        .connect(ctx.server_name.clone(), tcp)
        .await
        .map_err(|e| Failure::new(ErrKind::Tls, e))?;
    let handshake_time = t0.elapsed();
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| Failure::new(ErrKind::Io, e))?;
    Ok(Connected {
        conn: Conn {
            sender,
            driver: Box::pin(driver),
            dead: false,
        },
        handshake_time,
        resumed,
    })
}

impl Conn {
    /// Whether the connection can take another request (false if the server closed it).
    async fn ready(&mut self) -> bool {
        if self.dead || self.sender.is_closed() {
            return false;
        }
        tokio::select! {
            biased;
            r = self.sender.ready() => r.is_ok(),
            _ = self.driver.as_mut() => {
                self.dead = true;
                false
            }
        }
    }

    /// Send the request and read the whole response; returns the status.
    async fn request(&mut self, req: Request<Full<Bytes>>) -> Result<u16, Failure> {
        let sender = &mut self.sender;
        let exchange = async move {
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let close = resp
                .headers()
                .get(CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok::<_, hyper::Error>((status, close))
        };
        tokio::pin!(exchange);
        let result = tokio::select! {
            biased;
            r = &mut exchange => r,
            _ = self.driver.as_mut() => {
                // The connection ended; the exchange now resolves promptly (with the response if
                // it was complete, else with an error).
                self.dead = true;
                exchange.await
            }
        };
        match result {
            Ok((status, close)) => {
                if close {
                    self.dead = true;
                }
                Ok(status)
            }
            Err(e) => {
                self.dead = true;
                Err(Failure::new(classify_hyper(&e), error_chain(&e)))
            }
        }
    }

    /// Let hyper finish the connection (TLS close_notify, FIN) after a `Connection: close` exchange.
    async fn close(self) {
        let Conn { sender, driver, dead } = self;
        drop(sender);
        if !dead {
            let _ = tokio::time::timeout(Duration::from_secs(1), driver).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------------------------

enum Outcome {
    Status(u16),
    Failed(Failure),
}

async fn worker(
    ctx: Arc<Ctx>,
    ready_tx: tokio::sync::mpsc::Sender<()>,
    mut start_rx: tokio::sync::watch::Receiver<Option<Instant>>,
) -> Stats {
    let mut stats = Stats::new();
    let mut conn: Option<Conn> = None;
    if !ctx.new_conn {
        // Pre-connect so that the measured run does not start with a burst of handshakes; a
        // failure here is retried (and counted) with the first request.
        if let Ok(Ok(c)) = tokio::time::timeout(ctx.timeout, connect(&ctx)).await {
            conn = Some(c.conn);
        }
    }
    let _ = ready_tx.send(()).await;
    drop(ready_tx);
    let start = match start_rx.wait_for(|s| s.is_some()).await {
        Ok(s) => s.expect("checked"),
        Err(_) => return stats,
    };

    while let Some(slot) = ctx.next_slot(start) {
        if let Some(intended) = slot.intended {
            // Tokio timers have millisecond granularity and fire at or after the deadline: aim
            // 1 ms early so that sends are not systematically late. Latency is measured from the
            // earlier of the intended and the actual send time.
            let wake = intended.checked_sub(Duration::from_millis(1)).unwrap_or(intended);
            if wake > Instant::now() {
                tokio::time::sleep_until(wake.into()).await;
            }
        }
        let sent_at = Instant::now();
        let t0 = slot.intended.map_or(sent_at, |i| i.min(sent_at));

        let mut handshake: Option<(Duration, bool)> = None;
        let outcome = if slot
            .intended
            .is_some_and(|i| sent_at.saturating_duration_since(i) > ctx.timeout)
        {
            // Its latency would exceed the timeout anyway; skipping it lets a run against a
            // stalled server end soon after its schedule does.
            Outcome::Failed(Failure::new(
                ErrKind::Unsent,
                "all connections busy for longer than --timeout",
            ))
        } else {
            let attempt = async {
                let reuse = match conn.as_mut() {
                    Some(c) => c.ready().await,
                    None => false,
                };
                if !reuse {
                    conn = None;
                    let c = connect(&ctx).await?;
                    handshake = Some((c.handshake_time, c.resumed));
                    conn = Some(c.conn);
                }
                let req = ctx.build_request(slot.id);
                conn.as_mut().expect("connected").request(req).await
            };
            match tokio::time::timeout(ctx.timeout, attempt).await {
                Ok(Ok(status)) => Outcome::Status(status),
                Ok(Err(f)) => Outcome::Failed(f),
                Err(_) => Outcome::Failed(Failure::new(ErrKind::Timeout, "request timed out")),
            }
        };
        let done = Instant::now();

        let broken = matches!(&outcome, Outcome::Failed(f) if f.kind != ErrKind::Unsent);
        if broken || conn.as_ref().is_some_and(|c| c.dead) {
            conn = None;
        } else if ctx.new_conn {
            if let Some(c) = conn.take() {
                c.close().await;
            }
        }

        if !slot.measured {
            continue;
        }
        stats.sent += 1;
        stats.last_done = Some(done);
        if let Some(intended) = slot.intended {
            let lag = sent_at.saturating_duration_since(intended);
            stats.lag.record(lag);
            if lag > Duration::from_millis(1) {
                stats.late += 1;
            }
        }
        if let Some((t, resumed)) = handshake {
            stats.handshakes += 1;
            stats.resumed += resumed as u64;
            stats.handshake.record(t);
        }
        match outcome {
            Outcome::Status(s) => {
                stats.completed += 1;
                if s == ctx.expect_status {
                    stats.ok += 1;
                    stats.latency.record(done - t0);
                } else {
                    *stats.errors.entry(ErrKind::Status(s)).or_default() += 1;
                }
            }
            Outcome::Failed(f) => {
                *stats.errors.entry(f.kind).or_default() += 1;
                if stats.first_error.is_none() {
                    stats.first_error = Some(format!("{}: {}", f.kind.name(), f.detail));
                }
                if ctx.rate.is_none() && matches!(f.kind, ErrKind::Connect | ErrKind::Tls) {
                    // Closed loop against a server that refuses us: don't spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    if let Some(c) = conn.take() {
        drop(c.sender);
    }
    stats
}

// ---------------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------------

fn read_file(path: &Path, what: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| usage_error(format!("cannot read {what} {}: {e}", path.display())))
}

fn load_certs(path: &Path, what: &str) -> Vec<CertificateDer<'static>> {
    let pem = read_file(path, what);
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| usage_error(format!("bad PEM in {what} {}: {e}", path.display())));
    if certs.is_empty() {
        usage_error(format!("no certificate found in {what} {}", path.display()));
    }
    certs
}

fn tls_config(args: &Args) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(&args.ca, "CA file") {
        roots
            .add(cert)
            .unwrap_or_else(|e| usage_error(format!("bad CA certificate in {}: {e}", args.ca.display())));
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match args.tls_version.as_deref() {
        Some("1.2") => &[&rustls::version::TLS12],
        Some("1.3") => &[&rustls::version::TLS13],
        _ => rustls::DEFAULT_VERSIONS,
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap_or_else(|e| usage_error(format!("TLS setup: {e}")))
        .with_root_certificates(roots);
    let mut config = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            let chain = load_certs(cert, "client certificate");
            let pem = read_file(key, "client key");
            // A file without a key is refused here too (pem::Error::NoItemsFound).
            let key_der = PrivateKeyDer::from_pem_slice(&pem)
                .unwrap_or_else(|e| usage_error(format!("no usable private key in {}: {e}", key.display())));
            builder
                .with_client_auth_cert(chain, key_der)
                .unwrap_or_else(|e| usage_error(format!("client certificate/key: {e}")))
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !args.tls_resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    config
}

fn build_headers(args: &Args, authority: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        HOST,
        HeaderValue::from_str(authority).unwrap_or_else(|e| usage_error(e)),
    );
    headers.insert(USER_AGENT, HeaderValue::from_static("pushgate-loadgen/0.1"));
    if args.body.is_some() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let mut seen: Vec<HeaderName> = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .unwrap_or_else(|| usage_error(format!("--header {h:?}: expected \"Name: value\"")));
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .unwrap_or_else(|e| usage_error(format!("--header {h:?}: bad name: {e}")));
        let value = HeaderValue::from_str(value.trim())
            .unwrap_or_else(|e| usage_error(format!("--header {h:?}: bad value: {e}")));
        if seen.contains(&name) {
            headers.append(name, value);
        } else {
            headers.insert(name.clone(), value);
            seen.push(name);
        }
    }
    if args.new_connection_per_request {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    headers
}

fn split_template(template: &[u8]) -> Vec<Bytes> {
    const PLACEHOLDER: &[u8] = b"{{id}}";
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(pos) = rest.windows(PLACEHOLDER.len()).position(|w| w == PLACEHOLDER) {
        parts.push(Bytes::copy_from_slice(&rest[..pos]));
        rest = &rest[pos + PLACEHOLDER.len()..];
    }
    parts.push(Bytes::copy_from_slice(rest));
    parts
}

fn build_ctx(args: &Args, tls: rustls::ClientConfig) -> Ctx {
    let uri: Uri = args
        .url
        .parse()
        .unwrap_or_else(|e| usage_error(format!("bad --url {:?}: {e}", args.url)));
    if uri.scheme_str() != Some("https") {
        usage_error(format!("--url {:?}: only https:// URLs are supported", args.url));
    }
    let authority = uri
        .authority()
        .unwrap_or_else(|| usage_error("--url has no host"))
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(443);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| usage_error(format!("cannot resolve {host}:{port}")));
    let sni = args.server_name.clone().unwrap_or(host);
    let server_name =
        ServerName::try_from(sni.clone()).unwrap_or_else(|e| usage_error(format!("bad server name {sni:?}: {e}")));
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let origin_form: Uri = path
        .parse()
        .unwrap_or_else(|e| usage_error(format!("bad path {path:?}: {e}")));

    let body_parts = match &args.body {
        Some(p) => split_template(&read_file(p, "body template")),
        None => vec![Bytes::new()],
    };
    if args.body.is_some() && body_parts.len() == 1 {
        eprintln!("loadgen: warning: the body template has no {{{{id}}}}: every request sends the same body");
    }
    if args.connections == 0 || args.threads == 0 {
        usage_error("--connections and --threads must be at least 1");
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            usage_error("--rate must be a positive number");
        }
    }
    if args.requests == Some(0) {
        usage_error("--requests must be at least 1");
    }
    let duration = match (args.duration, args.requests) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    if duration.is_some_and(|d| d.is_zero()) {
        usage_error("--duration must be positive");
    }

    Ctx {
        addr,
        server_name,
        tls: TlsConnector::from(Arc::new(tls)),
        uri: origin_form,
        method: args.method.clone(),
        headers: build_headers(args, authority.as_str()),
        body_parts,
        id_prefix: args
            .id_prefix
            .clone()
            .unwrap_or_else(|| format!("lg{:08x}", rand::random::<u32>())),
        connections: args.connections,
        new_conn: args.new_connection_per_request,
        expect_status: args.expect_status,
        timeout: args.timeout,
        rate: args.rate,
        warmup: args.warmup,
        duration,
        requests: args.requests,
        next: AtomicU64::new(0),
        measured: AtomicU64::new(0),
    }
}

async fn run(ctx: Arc<Ctx>) -> (Stats, Instant, Instant) {
    let n = ctx.connections;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(n);
    let (start_tx, start_rx) = tokio::sync::watch::channel(None);
    let handles: Vec<_> = (0..n)
        .map(|_| tokio::spawn(worker(ctx.clone(), ready_tx.clone(), start_rx.clone())))
        .collect();
    drop(ready_tx);
    while ready_rx.recv().await.is_some() {}
    let start = Instant::now();
    let _ = start_tx.send(Some(start));
    let mut total = Stats::new();
    for h in handles {
        match h.await {
            Ok(s) => total.merge(s),
            Err(e) => eprintln!("loadgen: worker failed: {e}"),
        }
    }
    (total, start, Instant::now())
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn ms(us: Option<u64>) -> Option<f64> {
    us.map(|v| v as f64 / 1e3)
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn report(args: &Args, ctx: &Ctx, stats: &Stats, start: Instant, end: Instant) {
    let window_start = start + ctx.warmup;
    let window_end = stats.last_done.unwrap_or(end);
    let secs = window_end.saturating_duration_since(window_start).as_secs_f64();
    let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let rps = per_s(stats.ok);
    let lat = &stats.latency;
    let q = |p: f64| ms(lat.quantile(p));
    let errors_total: u64 = stats.errors.values().sum();

    if args.json {
        let errors: serde_json::Map<String, serde_json::Value> =
            stats.errors.iter().map(|(k, v)| (k.name(), (*v).into())).collect();
        let mut obj = serde_json::json!({
            "requests": stats.sent,
            "completed": stats.completed,
            "ok": stats.ok,
            "errors": errors,
            "errors_total": errors_total,
            "rps": round(rps, 1),
            "p50_ms": q(0.5),
            "p90_ms": q(0.9),
            "p99_ms": q(0.99),
            "p999_ms": q(0.999),
            "max_ms": ms((lat.total > 0).then_some(lat.max_us)),
            "mean_ms": lat.mean().map(|m| round(m / 1e3, 3)),
            "duration_s": round(secs, 3),
            "connections": args.connections,
            "rate": args.rate,
            "new_connection_per_request": ctx.new_conn,
            "handshakes": stats.handshakes,
            "handshakes_per_s": round(per_s(stats.handshakes), 1),
            "resumed": stats.resumed,
        });
        if ctx.rate.is_some() {
            obj["late"] = stats.late.into();
            obj["lag_p99_ms"] = ms(stats.lag.quantile(0.99)).into();
            obj["lag_max_ms"] = ms((stats.lag.total > 0).then_some(stats.lag.max_us)).into();
        }
        if stats.handshake.total > 0 {
            obj["handshake_p50_ms"] = ms(stats.handshake.quantile(0.5)).into();
            obj["handshake_p99_ms"] = ms(stats.handshake.quantile(0.99)).into();
        }
        println!("{obj}");
        return;
    }

    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mode = match ctx.rate {
        Some(r) => format!("open loop at {r}/s"),
        None => "closed loop".to_string(),
    };
    let conn_mode = if ctx.new_conn {
        "new connection per request"
    } else {
        "keep-alive"
    };
    println!("target:      {} {}", ctx.method, args.url);
    println!(
        "mode:        {mode}, {} connections ({conn_mode}), {} threads, TLS {}",
        args.connections,
        args.threads,
        args.tls_version.as_deref().unwrap_or("1.2+1.3")
    );
    let warm = if ctx.warmup.is_zero() {
        String::new()
    } else {
        format!(" (after {:?} warm-up)", ctx.warmup)
    };
    println!("window:      {secs:.3} s{warm}");
    println!(
        "requests:    {} total, {} completed (any status), {} ok",
        stats.sent, stats.completed, stats.ok
    );
    if errors_total == 0 {
        println!("errors:      0");
    } else {
        let list: Vec<String> = stats.errors.iter().map(|(k, v)| format!("{} {v}", k.name())).collect();
        println!("errors:      {errors_total} ({})", list.join(", "));
        if let Some(e) = &stats.first_error {
            println!("first error: {e}");
        }
    }
    println!("throughput:  {rps:.1} req/s (ok)");
    if ctx.rate.is_some() {
        println!(
            "send lag:    {} late (> 1 ms after their slot); lag p50 {} ms, p99 {} ms, max {} ms",
            stats.late,
            f(ms(stats.lag.quantile(0.5))),
            f(ms(stats.lag.quantile(0.99))),
            f(ms((stats.lag.total > 0).then_some(stats.lag.max_us)))
        );
    }
    if ctx.new_conn || stats.handshakes > 0 {
        println!(
            "handshakes:  {} ({:.1}/s, {} resumed), handshake p50 {} ms, p99 {} ms",
            stats.handshakes,
            per_s(stats.handshakes),
            stats.resumed,
            f(ms(stats.handshake.quantile(0.5))),
            f(ms(stats.handshake.quantile(0.99)))
        );
    }
    println!(
        "latency ms:  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
        f(q(0.5)),
        f(q(0.9)),
        f(q(0.99)),
        f(q(0.999)),
        f(ms((lat.total > 0).then_some(lat.max_us))),
        f(lat.mean().map(|m| m / 1e3))
    );
}

fn main() {
    let args = Args::parse();
    let ctx = Arc::new(build_ctx(&args, tls_config(&args)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| usage_error(format!("cannot start the runtime: {e}")));
    let (stats, start, end) = rt.block_on(run(ctx.clone()));
    report(&args, &ctx, &stats, start, end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_precise() {
        let mut prev = 0;
        for v in [0u64, 1, 255, 256, 300, 1000, 12_345, 1_000_000, 60_000_000] {
            let i = Histogram::index(v);
            assert!(i >= prev);
            prev = i;
            let rep = Histogram::value(i);
            let err = (rep as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 0.008, "v={v} rep={rep} err={err}");
        }
        assert!(Histogram::index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        assert!((499..=501).contains(&h.quantile(0.5).unwrap()));
        assert_eq!(h.quantile(1.0), Some(1000));
        let p99 = h.quantile(0.99).unwrap();
        assert!((985..=995).contains(&p99), "{p99}");
    }

    #[test]
    fn template_split() {
        let parts = split_template(b"{\"id\":\"{{id}}\",\"x\":\"{{id}}\"}");
        assert_eq!(parts.len(), 3);
        assert_eq!(split_template(b"abc").len(), 1);
    }

    #[test]
    fn request_has_unique_ids_and_header_overrides() {
        let dir = std::env::temp_dir().join(format!("loadgen-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let body = dir.join("body.json");
        std::fs::write(&body, r#"{"eventId":"{{id}}","ref":"x-{{id}}"}"#).unwrap();
        let args = Args::parse_from([
            "loadgen",
            "--url",
            "https://127.0.0.1:8443/xbs/status/webhook?a=1",
            "--ca",
            "unused.pem",
            "--body",
            body.to_str().unwrap(),
            "--id-prefix",
            "run1",
            "-H",
            "X-Notification-Secret: s3cret",
            "-H",
            "content-type: application/vnd.test+json",
            "-H",
            "X-Multi: a",
            "-H",
            "X-Multi: b",
        ]);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let ctx = build_ctx(&args, tls);
        let req = ctx.build_request(42);
        assert_eq!(req.uri(), "/xbs/status/webhook?a=1");
        assert_eq!(req.method(), Method::POST);
        let h = req.headers();
        assert_eq!(h[HOST], "127.0.0.1:8443");
        assert_eq!(h[CONTENT_TYPE], "application/vnd.test+json");
        assert_eq!(h.get_all(CONTENT_TYPE).iter().count(), 1);
        assert_eq!(h["x-notification-secret"], "s3cret");
        assert_eq!(h.get_all("x-multi").iter().count(), 2);
        assert!(h.get(CONNECTION).is_none());
        let body = req.into_body();
        let bytes = collect_body(body);
        assert_eq!(bytes, r#"{"eventId":"run1-42","ref":"x-run1-42"}"#);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn collect_body(body: Full<Bytes>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = rt.block_on(body.collect()).unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3x").is_err());
    }
}
