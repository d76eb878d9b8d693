//! The load generator for what oha cannot do in bench/compare.sh (everything else is oha's):
//!
//! * **exactly N distinct events in N requests.** Every `{{id}}` in the body template becomes
//!   `<prefix>-<n>` from one counter. oha's `-Z` picks a random line of its bodies file for each
//!   request (with replacement), so N requests carry fewer than N distinct ids, and a store of
//!   1.5M events or "RSS after 1M ids" cannot be built with it.
//! * **full TLS handshakes.** With `--new-connection-per-request` every request opens a TCP + TLS
//!   connection with session resumption off and sends `Connection: close`; oha's rustls client
//!   always offers resumption, so its `--disable-keepalive` measures resumed handshakes.
//!
//! Closed loop only: each of `--connections` connections sends its next request as soon as the
//! previous one completed; latency = completion - send time (connect and handshake included with
//! `--new-connection-per-request`). `--warmup` runs first and is not counted; the measured window
//! then lasts `--duration` or `--requests N` measured requests, whichever ends first (in-flight
//! requests are awaited, each bounded by `--timeout`). Prints one JSON object: counts, failures
//! by kind (connect, tls, timeout, closed, io, status_NNN), ok/s and handshakes/s from the end
//! of the warm-up to the last completion, and latency percentiles over the successful requests
//! (status = `--expect-status`).
//!
//! Exit status: 0 whenever the run could be made, even if requests failed; 2 on usage errors.
//!
//! Example:
//!   cargo run --release --example loadgen -- --url https://127.0.0.1:8443/xbs/status/webhook \
//!     --ca dev/certs/ca.pem --cert dev/certs/xbs-prod.pem --key dev/certs/xbs-prod.key \
//!     --body bench/payload-2.5k.json --connections 32 --requests 1000000

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
    about = "Closed-loop HTTP/1.1 over mTLS load: N distinct ids, or full handshakes (see bench/compare.sh)"
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
    /// Body template file; every `{{id}}` is replaced by a unique id per request (default: empty body)
    #[arg(long)]
    body: Option<PathBuf>,
    /// Prefix of the generated ids (default: random, e.g. lg3f9a1c2e)
    #[arg(long)]
    id_prefix: Option<String>,
    /// Extra request header "Name: value" (repeatable; replaces the default Host/Content-Type/User-Agent)
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Concurrent connections (each has at most one request in flight)
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Measured duration (e.g. 10s, 500ms, 2m); default 10s unless --requests is given
    #[arg(long, short = 'd', value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many measured requests (whichever of --duration/--requests comes first)
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Warm-up run before the measured window; its requests are not counted
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    warmup: Duration,
    /// Open a new TCP+TLS connection for every request (full handshake; sends Connection: close)
    #[arg(long)]
    new_connection_per_request: bool,
    /// Expected response status; any other status counts as an error
    #[arg(long, default_value_t = 200)]
    expect_status: u16,
    /// Per-request timeout (connect + TLS + request + response body)
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Tokio worker threads
    #[arg(long, default_value_t = 2)]
    threads: usize,
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
        "m" | "min" => v * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn usage_error(msg: impl std::fmt::Display) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(2);
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
            ErrKind::Status(s) => format!("status_{s}"),
        }
    }
}

/// Latencies are kept whole (µs, 4 bytes each: 4 MB per million requests) and sorted once at
/// the end: exact percentiles with no histogram code to trust.
#[derive(Default)]
struct Stats {
    latency_us: Vec<u32>,
    sent: u64,
    ok: u64,
    errors: BTreeMap<ErrKind, u64>,
    handshakes: u64,
    last_done: Option<Instant>,
    first_error: Option<String>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.latency_us.extend(o.latency_us);
        self.sent += o.sent;
        self.ok += o.ok;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.handshakes += o.handshakes;
        self.last_done = self.last_done.max(o.last_done);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

/// The value (ms) at quantile q of sorted µs values.
fn quantile_ms(sorted_us: &[u32], q: f64) -> Option<f64> {
    let n = sorted_us.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
    sorted_us.get(rank - 1).map(|&us| f64::from(us) / 1e3)
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
    warmup: Duration,
    duration: Option<Duration>,
    requests: Option<u64>,
    /// Global request counter: the unique ids.
    next: AtomicU64,
    /// Number of measured requests handed out so far.
    measured: AtomicU64,
}

impl Ctx {
    /// The next request's id and whether it is measured, or None when the run is over.
    fn next_slot(&self, start: Instant) -> Option<(u64, bool)> {
        let warmup_end = start + self.warmup;
        let now = Instant::now();
        if self.duration.is_some_and(|d| now >= warmup_end + d) {
            return None;
        }
        let measured = now >= warmup_end;
        if measured {
            if let Some(limit) = self.requests {
                if self.measured.fetch_add(1, Ordering::Relaxed) >= limit {
                    return None;
                }
            }
        }
        Some((self.next.fetch_add(1, Ordering::Relaxed), measured))
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

async fn connect(ctx: &Ctx) -> Result<Conn, Failure> {
    let tcp = TcpStream::connect(ctx.addr)
        .await
        .map_err(|e| Failure::new(ErrKind::Connect, e))?;
    let _ = tcp.set_nodelay(true);
    let tls = ctx
        .tls
        .connect(ctx.server_name.clone(), tcp)
        .await
        .map_err(|e| Failure::new(ErrKind::Tls, e))?;
    let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| Failure::new(ErrKind::Io, e))?;
    Ok(Conn {
        sender,
        driver: Box::pin(driver),
        dead: false,
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
    let mut stats = Stats::default();
    let mut conn: Option<Conn> = None;
    if !ctx.new_conn {
        // Pre-connect so that the measured run does not start with a burst of handshakes; a
        // failure here is retried (and counted) with the first request.
        if let Ok(Ok(c)) = tokio::time::timeout(ctx.timeout, connect(&ctx)).await {
            conn = Some(c);
        }
    }
    let _ = ready_tx.send(()).await;
    drop(ready_tx);
    let start = match start_rx.wait_for(|s| s.is_some()).await {
        Ok(s) => s.unwrap_or_else(Instant::now),
        Err(_) => return stats,
    };

    while let Some((id, measured)) = ctx.next_slot(start) {
        let t0 = Instant::now();
        let mut handshake = false;
        let attempt = async {
            let reuse = match conn.as_mut() {
                Some(c) => c.ready().await,
                None => false,
            };
            if !reuse {
                conn = None;
                conn = Some(connect(&ctx).await?);
                handshake = true;
            }
            match conn.as_mut() {
                Some(c) => c.request(ctx.build_request(id)).await,
                None => Err(Failure::new(ErrKind::Connect, "no connection")),
            }
        };
        let outcome = match tokio::time::timeout(ctx.timeout, attempt).await {
            Ok(Ok(status)) => Outcome::Status(status),
            Ok(Err(f)) => Outcome::Failed(f),
            Err(_) => Outcome::Failed(Failure::new(ErrKind::Timeout, "request timed out")),
        };
        let done = Instant::now();

        if matches!(outcome, Outcome::Failed(_)) || conn.as_ref().is_some_and(|c| c.dead) {
            conn = None;
        } else if ctx.new_conn {
            if let Some(c) = conn.take() {
                c.close().await;
            }
        }

        if !measured {
            continue;
        }
        stats.sent += 1;
        stats.last_done = Some(done);
        stats.handshakes += u64::from(handshake);
        match outcome {
            Outcome::Status(s) if s == ctx.expect_status => {
                stats.ok += 1;
                let us = u32::try_from((done - t0).as_micros()).unwrap_or(u32::MAX);
                stats.latency_us.push(us);
            }
            Outcome::Status(s) => *stats.errors.entry(ErrKind::Status(s)).or_default() += 1,
            Outcome::Failed(f) => {
                *stats.errors.entry(f.kind).or_default() += 1;
                if stats.first_error.is_none() {
                    stats.first_error = Some(format!("{}: {}", f.kind.name(), f.detail));
                }
                if matches!(f.kind, ErrKind::Connect | ErrKind::Tls) {
                    // A server that refuses us: don't spin.
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
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
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
    // Every handshake a full one: the point of --new-connection-per-request here (oha resumes).
    config.resumption = rustls::client::Resumption::disabled();
    config
}

fn build_headers(args: &Args, authority: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        HOST,
        HeaderValue::from_str(authority).unwrap_or_else(|e| usage_error(e)),
    );
    headers.insert(USER_AGENT, HeaderValue::from_static("pushgate-loadgen/0.2"));
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
    let server_name =
        ServerName::try_from(host.clone()).unwrap_or_else(|e| usage_error(format!("bad server name {host:?}: {e}")));
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
        method: Method::POST,
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
    let mut total = Stats::default();
    for h in handles {
        match h.await {
            Ok(s) => total.merge(s),
            Err(e) => eprintln!("loadgen: worker failed: {e}"),
        }
    }
    (total, start, Instant::now())
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn report(ctx: &Ctx, mut stats: Stats, start: Instant, end: Instant) -> serde_json::Value {
    let window_start = start + ctx.warmup;
    let window_end = stats.last_done.unwrap_or(end);
    let secs = window_end.saturating_duration_since(window_start).as_secs_f64();
    let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    stats.latency_us.sort_unstable();
    let q = |p: f64| quantile_ms(&stats.latency_us, p);
    let errors: serde_json::Map<String, serde_json::Value> =
        stats.errors.iter().map(|(k, v)| (k.name(), (*v).into())).collect();
    serde_json::json!({
        "requests": stats.sent,
        "ok": stats.ok,
        "errors": errors,
        "errors_total": stats.errors.values().sum::<u64>(),
        "first_error": stats.first_error,
        "rps": round(per_s(stats.ok), 1),
        "p50_ms": q(0.5),
        "p90_ms": q(0.9),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "max_ms": q(1.0),
        "duration_s": round(secs, 3),
        "connections": ctx.connections,
        "new_connection_per_request": ctx.new_conn,
        "handshakes": stats.handshakes,
        "handshakes_per_s": round(per_s(stats.handshakes), 1),
    })
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
    println!("{}", report(&ctx, stats, start, end));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_exact() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(quantile_ms(&v, 0.5), Some(0.5));
        assert_eq!(quantile_ms(&v, 0.99), Some(0.99));
        assert_eq!(quantile_ms(&v, 1.0), Some(1.0));
        assert_eq!(quantile_ms(&[], 0.5), None);
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
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = rt.block_on(req.into_body().collect()).unwrap().to_bytes();
        assert_eq!(bytes, r#"{"eventId":"run1-42","ref":"x-run1-42"}"#);
        std::fs::remove_dir_all(&dir).unwrap();
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
