//! Hostile senders against the real binary: slow and idle connections, oversized and
//! ambiguous requests, odd but legal HTTP, bad client certificates and old TLS. Each case
//! asserts the refusal it gets AND that nothing reached the app or the store that should not
//! have, and that everything acknowledged did (docs/bad-input.md lists them).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pushgate::boot::devcerts::{Ca, CustomExtension, LeafSpec, XBS_PROD_DN};
use support::{admin, eventually, metric, App, Pki, Pushgate, Sender};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

const PROD_DN: &str = "CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US";
const PATH: &str = "/xbs/status/webhook";

/// One spool route (200 once stored, forwarded afterwards) with a small body limit and a short
/// body deadline.
fn routes(app: &App) -> String {
    format!(
        r#"routes:
  - name: xbs
    path: {PATH}
    profile: mastercard-xbs
    client_dn: ["{PROD_DN}"]
    max_body: 4KiB
    read_timeout: 1s
    upstream: {{ url: "{url}" }}
"#,
        url = app.url("/app/xbs"),
    )
}

fn event(id: &str) -> String {
    format!(r#"{{"partnerId":"ptnr_1","eventRef":"{id}","eventType":"STATUS_CHG","transactionReference":"tx-1"}}"#)
}

/// A POST of `body` as raw bytes, with `fields` (each ending in CRLF) before the blank line.
fn raw_post(fields: &str, body: &str) -> String {
    format!("POST {PATH} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n{fields}\r\n{body}")
}

struct Setup {
    pki: Pki,
    app: App,
    gate: Pushgate,
}

impl Setup {
    async fn new(listen: &str) -> Setup {
        Setup::with_pki(Pki::new(), listen).await
    }

    async fn with_pki(pki: Pki, listen: &str) -> Setup {
        let app = App::start().await;
        let gate = Pushgate::start_with(&pki, listen, &routes(&app));
        Setup { pki, app, gate }
    }

    fn prod(&self) -> Sender {
        Sender::new(&self.pki, self.gate.addr, Some("xbs-prod"))
    }

    async fn metrics(&self) -> String {
        admin(self.gate.admin, "GET", "/metrics").await.1
    }

    /// How many events the store holds for the route, in any state.
    async fn stored(&self) -> u64 {
        let (status, body) = admin(self.gate.admin, "GET", "/api/events?route=xbs").await;
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        page["total"].as_u64().unwrap()
    }

    /// The ids the app received, in order.
    fn delivered(&self) -> Vec<String> {
        self.app
            .received()
            .iter()
            .map(|r| r.header("x-pushgate-event-id").unwrap_or("").to_string())
            .collect()
    }

    /// Nothing refused reached the store or the app.
    async fn assert_nothing_taken(&self, what: &str) {
        // Deliveries are asynchronous in spool mode: give a wrongly stored event time to arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(self.stored().await, 0, "{what}: nothing may be stored");
        assert_eq!(self.app.count(), 0, "{what}: nothing may reach the app");
    }
}

/// Reads until the peer closes (EOF or a reset) or `within` passes: (bytes, closed).
async fn read_to_close<S: AsyncRead + Unpin>(s: &mut S, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// What a raw client saw: the answer, whether the server closed, when the first byte of the
/// answer came and when the connection closed (from the call).
struct Seen {
    answer: String,
    closed: bool,
    first_byte: Option<Duration>,
    took: Duration,
}

/// [`read_to_close`], timed.
async fn read_timed<S: AsyncRead + Unpin>(s: &mut S, within: Duration) -> Seen {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut first_byte = None;
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => {
                first_byte.get_or_insert(started.elapsed());
                out.extend_from_slice(&buf[..n]);
            }
        }
    };
    Seen {
        answer: String::from_utf8_lossy(&out).into_owned(),
        closed,
        first_byte,
        took: started.elapsed(),
    }
}

/// Sends `bytes` on a fresh connection (writing on while the server reads) and reads the
/// answer until the server closes.
async fn exchange(sender: &Sender, bytes: Vec<u8>) -> String {
    let tls = sender.tls().await.expect("handshake");
    let (mut rd, mut wr) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        // The server may answer and close before taking everything: a failed write is expected.
        let _ = wr.write_all(&bytes).await;
        let _ = wr.flush().await;
        wr
    });
    let (answer, closed) = read_to_close(&mut rd, Duration::from_secs(5)).await;
    assert!(closed, "the connection stays open after: {answer:?}");
    drop(writer.await);
    answer
}

fn status_of(answer: &str) -> &str {
    answer.get(..12).unwrap_or(answer)
}

// ---- slow and idle senders -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_headers_and_bodies_are_cut_off_while_others_are_served_fast() {
    let s = Setup::new("  header_timeout: 1s\n").await;

    // One byte every 200 ms: Pingora's per-read timeout alone would never fire.
    let trickle = |bytes: Vec<u8>, sender: Sender| async move {
        let tls = sender.tls().await.expect("handshake");
        let (mut rd, mut wr) = tokio::io::split(tls);
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            for b in bytes {
                if wr.write_all(&[b]).await.is_err() || wr.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let (answer, closed) = read_to_close(&mut rd, Duration::from_secs(8)).await;
        writer.abort();
        (answer, closed, started.elapsed())
    };
    let header = raw_post("content-length: 2\r\n", "{}").into_bytes();
    let body = event("SLOW-BODY");
    let mut head_then_trickle = raw_post(&format!("content-length: {}\r\n", body.len()), "").into_bytes();
    let sender = s.prod();
    let slow_body = {
        let sender = sender.clone();
        async move {
            let tls = sender.tls().await.expect("handshake");
            let (mut rd, mut wr) = tokio::io::split(tls);
            let started = Instant::now();
            head_then_trickle.extend_from_slice(&body.as_bytes()[..1]);
            wr.write_all(&head_then_trickle).await.unwrap();
            wr.flush().await.unwrap();
            let writer = tokio::spawn(async move {
                for b in &body.as_bytes()[1..] {
                    if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            let seen = read_timed(&mut rd, Duration::from_secs(10)).await;
            writer.abort();
            (seen, started.elapsed())
        }
    };
    // Meanwhile another sender's notifications, one after another.
    let others = {
        let sender = sender.clone();
        async move {
            let mut slowest = Duration::ZERO;
            for i in 0..10 {
                let t = Instant::now();
                let r = sender.post(PATH, &[], event(&format!("FAST-{i}"))).await.unwrap();
                assert_eq!(r.status, 200);
                slowest = slowest.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            slowest
        }
    };
    let ((h_answer, h_closed, h_took), (b_seen, b_took), slowest) =
        tokio::join!(trickle(header, sender.clone()), slow_body, others);

    assert!(h_closed, "a trickled header must get the connection closed");
    assert_eq!(h_answer, "", "a late header is not answered, the connection is dropped");
    assert!(
        h_took >= Duration::from_millis(900) && h_took < Duration::from_secs(3),
        "closed after the 1s header_timeout, not {h_took:?}"
    );
    assert!(b_seen.closed, "a trickled body must get the connection closed");
    assert_eq!(status_of(&b_seen.answer), "HTTP/1.1 408", "{}", b_seen.answer);
    let answered = b_seen.first_byte.unwrap_or(b_took);
    assert!(
        answered >= Duration::from_millis(900) && answered < Duration::from_millis(1500),
        "408 after the 1s read_timeout, not {answered:?}"
    );
    // The lingering close reads the still trickling body for at most LINGER_TIME.
    assert!(
        b_took < Duration::from_secs(1) + pushgate::ingress::body::LINGER_TIME + Duration::from_secs(1),
        "closed within the lingering bound, not {b_took:?}"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "other senders must be served promptly meanwhile; slowest took {slowest:?}"
    );

    let m = s.metrics().await;
    assert_eq!(
        metric(&m, r#"pushgate_connections_timed_out_total{phase="header"}"#),
        1.0
    );
    assert_eq!(
        metric(&m, r#"pushgate_requests_total{outcome="rejected_timeout",route="xbs"}"#),
        1.0,
        "the 408 is counted"
    );
    let fast: Vec<String> = (0..10).map(|i| format!("FAST-{i}")).collect();
    eventually(10, "the ten acknowledged events reach the app", || s.app.count() >= 10).await;
    assert_eq!(
        s.delivered(),
        fast,
        "exactly the acknowledged events, nothing of the slow ones"
    );
    assert_eq!(s.stored().await, 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_hit_the_connection_limit_with_a_counter() {
    const OPEN: usize = 2_000;
    const MAX: usize = 1_000;
    let s = Setup::new(&format!("  max_connections: {MAX}\n  header_timeout: 60s\n")).await;
    let sender = s.prod();
    let started = Instant::now();

    // Open OPEN connections that send nothing, 50 handshakes at a time.
    let gate = Arc::new(tokio::sync::Semaphore::new(50));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..OPEN {
        let (sender, gate) = (sender.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            sender.tls().await.expect("handshake")
        });
    }
    let mut idle = Vec::with_capacity(OPEN);
    while let Some(conn) = tasks.join_next().await {
        idle.push(conn.unwrap());
    }
    let opened_in = started.elapsed();
    eventually(20, "every connection counted or refused", || {
        let m = futures_block(s.metrics());
        metric(&m, "pushgate_connections_open") + metric(&m, "pushgate_connections_refused_total") >= OPEN as f64
    })
    .await;
    let m = s.metrics().await;
    assert_eq!(metric(&m, "pushgate_connections_open"), MAX as f64);
    assert_eq!(metric(&m, "pushgate_connections_refused_total"), (OPEN - MAX) as f64);

    // One more is told why before it is closed, without sending anything.
    let mut extra = sender.tls().await.expect("the handshake itself is not refused");
    let (answer, closed) = read_to_close(&mut extra, Duration::from_secs(5)).await;
    assert!(closed);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n") && answer.contains("connection: close\r\n"));
    assert_eq!(s.app.count(), 0);
    assert_eq!(s.stored().await, 0, "no refused connection left anything behind");

    // Closing idle connections frees their slots: a real notification goes through again.
    idle.truncate(MAX / 2);
    eventually(20, "closed connections give their slots back", || {
        metric(&futures_block(s.metrics()), "pushgate_connections_open") <= (MAX / 2 + OPEN - MAX) as f64
    })
    .await;
    let r = sender.post(PATH, &[], event("AFTER-FLOOD")).await.unwrap();
    assert_eq!(r.status, 200);
    eventually(10, "the acknowledged event reaches the app", || s.app.count() == 1).await;
    assert_eq!(s.delivered(), ["AFTER-FLOOD"]);
    drop(idle);
    assert!(opened_in < Duration::from_secs(40), "opening {OPEN} took {opened_in:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let s = Setup::new("  header_timeout: 1s\n  idle_timeout: 1s\n").await;
    let started = Instant::now();
    let mut quiet = s.prod().tls().await.unwrap();
    let (answer, closed) = read_to_close(&mut quiet, Duration::from_secs(5)).await;
    assert!(closed && answer.is_empty(), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A kept-alive connection idle after its request is closed after idle_timeout.
    let mut conn = s.prod().connect().await.unwrap();
    assert_eq!(conn.post(PATH, &[], event("KEPT-1")).await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        conn.post(PATH, &[], event("KEPT-2")).await.is_err(),
        "the idle connection is closed"
    );
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, r#"pushgate_connections_timed_out_total{phase="header"}"#),
        1.0
    );
    assert_eq!(metric(&m, r#"pushgate_connections_timed_out_total{phase="idle"}"#), 1.0);
    eventually(10, "the acknowledged event reaches the app", || s.app.count() == 1).await;
    assert_eq!(s.delivered(), ["KEPT-1"]);
}

// ---- oversized requests ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_numerous_headers_and_endless_chunked_bodies_are_refused_early() {
    let s = Setup::new("").await;
    let sender = s.prod();

    // Pingora caps a request header at 256 fields and 1 MiB.
    let many: String = (0..1000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = exchange(&sender, raw_post(&many, &event("MANY-HEADERS")).into_bytes()).await;
    assert_eq!(status_of(&answer), "HTTP/1.1 400", "1000 headers: {answer}");

    let big = format!("x-big: {}\r\n", "a".repeat(1_100_000));
    let answer = exchange(&sender, raw_post(&big, &event("BIG-HEADER")).into_bytes()).await;
    assert_eq!(status_of(&answer), "HTTP/1.1 400", "1.1 MB header: {answer}");

    // A chunked body with no length and no end: refused once past max_body (4 KiB), without
    // waiting for the rest, which is never sent.
    let tls = sender.tls().await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let mut bytes = raw_post("transfer-encoding: chunked\r\n", "").into_bytes();
    for _ in 0..8 {
        bytes.extend_from_slice(format!("400\r\n{}\r\n", "x".repeat(1024)).as_bytes());
    }
    wr.write_all(&bytes).await.unwrap();
    wr.flush().await.unwrap();
    let seen = read_timed(&mut rd, Duration::from_secs(5)).await;
    assert_eq!(status_of(&seen.answer), "HTTP/1.1 413", "{}", seen.answer);
    assert!(
        seen.first_byte.is_some_and(|t| t < Duration::from_secs(1)),
        "413 without waiting: {:?}",
        seen.first_byte
    );
    // What was sent is drained; then nothing more comes, and the lingering close ends.
    assert!(seen.closed, "the connection is closed once the sender goes quiet");
    assert!(
        seen.took < pushgate::ingress::body::LINGER_IDLE + Duration::from_secs(1),
        "closed after LINGER_IDLE of quiet, not {:?}",
        seen.took
    );
    drop(wr);

    let m = s.metrics().await;
    assert_eq!(
        metric(&m, r#"pushgate_requests_total{outcome="rejected_size",route="xbs"}"#),
        1.0
    );
    s.assert_nothing_taken("oversized").await;
}

/// Writes all of `bytes` before reading anything (as Python's http.client does), then reads
/// the answer until the server closes. Panics if the server does not take every byte.
///
/// The bytes go out 64 KiB at a time, 2 ms apart, as over a real network: on loopback the
/// kernel's buffers (autotuned up to 32 MB here) could otherwise swallow the whole body before
/// the server closes, and an early close would go unnoticed.
async fn write_all_then_read(sender: &Sender, bytes: &[u8]) -> Seen {
    let mut tls = sender.tls().await.expect("handshake");
    let wrote = tokio::time::timeout(Duration::from_secs(10), async {
        for piece in bytes.chunks(64 * 1024) {
            tls.write_all(piece).await?;
            tls.flush().await?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    assert!(
        matches!(wrote, Ok(Ok(()))),
        "the server must take the whole request before closing: {wrote:?}"
    );
    read_timed(&mut tls, Duration::from_secs(10)).await
}

/// Regression test for issue 13 item 3: a 2 MB body written before reading the answer ended
/// in a reset instead of the 413.
#[tokio::test(flavor = "multi_thread")]
async fn a_sender_that_writes_2mb_before_reading_gets_the_413() {
    let s = Setup::new("").await;
    let sender = s.prod();
    let big = "x".repeat(2_000_000);

    // Refused from Content-Length, before the body: the body is drained, then the close.
    let declared = raw_post(&format!("content-length: {}\r\n", big.len()), &big);
    let seen = write_all_then_read(&sender, declared.as_bytes()).await;
    assert_eq!(status_of(&seen.answer), "HTTP/1.1 413", "{}", seen.answer);
    assert!(
        seen.answer.to_ascii_lowercase().contains("connection: close\r\n"),
        "{}",
        seen.answer
    );
    assert!(seen.closed, "closed after the answer");
    assert!(
        seen.took < Duration::from_secs(2),
        "closed as soon as the body ended, not after a timeout: {:?}",
        seen.took
    );

    // Chunked, refused part-way through the body once past max_body (512 KB: the drain is
    // the same, and CI's two cores are shared with the timing tests).
    let mut chunked = raw_post("transfer-encoding: chunked\r\n", "").into_bytes();
    for _ in 0..64 {
        chunked.extend_from_slice(format!("2000\r\n{}\r\n", "y".repeat(8192)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let seen = write_all_then_read(&sender, &chunked).await;
    assert_eq!(status_of(&seen.answer), "HTTP/1.1 413", "{}", seen.answer);
    assert!(seen.closed && seen.took < Duration::from_secs(2), "{:?}", seen.took);

    let m = s.metrics().await;
    assert_eq!(
        metric(&m, r#"pushgate_requests_total{outcome="rejected_size",route="xbs"}"#),
        2.0
    );
    // The gate still serves, and nothing of the refused bodies was taken.
    s.assert_nothing_taken("2 MB bodies").await;
    let r = sender.post(PATH, &[], event("AFTER-BIG")).await.unwrap();
    assert_eq!(r.status, 200);
    eventually(10, "the acknowledged event reaches the app", || s.app.count() == 1).await;
    assert_eq!(s.delivered(), ["AFTER-BIG"]);
}

/// The same exchange through Python's http.client, the client issue 13 saw fail.
#[tokio::test(flavor = "multi_thread")]
async fn python_http_client_reads_the_413_of_a_2mb_post() {
    let probe = std::process::Command::new("python3")
        .arg("-c")
        .arg("import ssl, http.client")
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: no python3 with ssl and http.client on PATH");
        return;
    }
    let s = Setup::new("").await;
    let script = r#"
import http.client, ssl, sys
port, ca, cert, key, path = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
conn = http.client.HTTPSConnection("localhost", int(port), context=ctx, timeout=10)
conn.request("POST", path, body=b"x" * 2_000_000, headers={"content-type": "application/json"})
print(conn.getresponse().status)
"#;
    let out = tokio::task::spawn_blocking({
        let args = [
            s.gate.addr.port().to_string(),
            s.pki.path("ca.pem").display().to_string(),
            s.pki.path("xbs-prod.pem").display().to_string(),
            s.pki.path("xbs-prod.key").display().to_string(),
            PATH.to_string(),
        ];
        move || {
            std::process::Command::new("python3")
                .arg("-c")
                .arg(script)
                .args(args)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "413",
        "python saw: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.assert_nothing_taken("python 2 MB").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_before_the_body_are_readable_by_a_sender_that_writes_first() {
    let pki = Pki::new();
    let app = App::start().await;
    let secret_route = format!(
        r#"  - name: gw
    path: /gateway
    profile: mastercard-gateway
    secret: {{ header: x-notification-secret, values: ["0123456789abcdef0123456789abcdef"] }}
    max_body: 4KiB
    upstream: {{ url: "{url}" }}
"#,
        url = app.url("/app/gw"),
    );
    let gate = Pushgate::start(&pki, &format!("{}{secret_route}", routes(&app)));
    let s = Setup { pki, app, gate };
    // 256 KB, written in pieces: an early close resets the writer before the end.
    let body = "z".repeat(256 * 1024);
    let post = |method: &str, path: &str, fields: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n{fields}content-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let cases = [
        ("unknown path", s.prod(), post("POST", "/nope", ""), "404"),
        ("PUT", s.prod(), post("PUT", PATH, ""), "405"),
        (
            "other DN",
            Sender::new(&s.pki, s.gate.addr, Some("other")),
            post("POST", PATH, ""),
            "403",
        ),
        (
            "wrong secret",
            Sender::new(&s.pki, s.gate.addr, None),
            post(
                "POST",
                "/gateway",
                "x-notification-secret: 0123456789abcdef0123456789abcdeX\r\n",
            ),
            "401",
        ),
        // The body is over max_body too, but who may send is checked first.
        (
            "no secret, body over max_body",
            Sender::new(&s.pki, s.gate.addr, None),
            post("POST", "/gateway", ""),
            "401",
        ),
    ];
    for (what, sender, request, want) in cases {
        let seen = write_all_then_read(&sender, request.as_bytes()).await;
        assert_eq!(
            status_of(&seen.answer),
            format!("HTTP/1.1 {want}"),
            "{what}: {}",
            seen.answer
        );
        assert!(
            seen.closed && seen.took < Duration::from_secs(2),
            "{what}: closed once the body is drained, not {:?}",
            seen.took
        );
    }
    s.assert_nothing_taken("refusals before the body").await;
}

/// A sender that says `Expect: 100-continue` and is refused waits for nothing: it gets the
/// answer at once, and the connection closes as soon as it hangs up or after LINGER_IDLE.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_expect_continue_sender_is_not_held() {
    let s = Setup::new("").await;
    let mut tls = s.prod().tls().await.unwrap();
    let head = raw_post("expect: 100-continue\r\ncontent-length: 2000000\r\n", "");
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let seen = read_timed(&mut tls, Duration::from_secs(5)).await;
    assert_eq!(status_of(&seen.answer), "HTTP/1.1 413", "{}", seen.answer);
    assert!(!seen.answer.contains("HTTP/1.1 100"), "no 100 before a refusal");
    assert!(seen.first_byte.is_some_and(|t| t < Duration::from_millis(500)));
    assert!(
        seen.closed && seen.took < pushgate::ingress::body::LINGER_IDLE + Duration::from_secs(1),
        "{:?}",
        seen.took
    );
    s.assert_nothing_taken("expect-continue refusal").await;
}

// ---- request smuggling shapes ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn request_smuggling_shapes_are_refused_and_never_forwarded() {
    let s = Setup::new("").await;
    let sender = s.prod();
    let e = event("SMUGGLED");
    let n = e.len();
    let chunked = format!("{n:x}\r\n{e}\r\n0\r\n\r\n");
    let cases: Vec<(&str, String)> = vec![
        (
            "content-length and transfer-encoding",
            raw_post(
                &format!("content-length: {n}\r\ntransfer-encoding: chunked\r\n"),
                &chunked,
            ),
        ),
        (
            "transfer-encoding then content-length",
            raw_post(
                &format!("transfer-encoding: chunked\r\ncontent-length: {n}\r\n"),
                &chunked,
            ),
        ),
        (
            "two equal content-lengths",
            raw_post(&format!("content-length: {n}\r\ncontent-length: {n}\r\n"), &e),
        ),
        (
            "two different content-lengths",
            raw_post(&format!("content-length: {n}\r\ncontent-length: 5\r\n"), &e),
        ),
        (
            "a content-length list",
            raw_post(&format!("content-length: {n}, {n}\r\n"), &e),
        ),
        (
            "a signed content-length",
            raw_post(&format!("content-length: +{n}\r\n"), &e),
        ),
        (
            "obs-fold continuation",
            raw_post(&format!("content-length: {n}\r\nx-folded: a\r\n b\r\n"), &e),
        ),
        (
            "obs-fold hiding a transfer-encoding",
            raw_post(
                &format!("content-length: {n}\r\nx-folded: a\r\n transfer-encoding: chunked\r\n"),
                &e,
            ),
        ),
        (
            "a coding besides chunked",
            raw_post("transfer-encoding: gzip, chunked\r\n", &chunked),
        ),
        (
            "chunked twice",
            raw_post("transfer-encoding: chunked, chunked\r\n", &chunked),
        ),
        (
            "a final coding other than chunked",
            raw_post("transfer-encoding: identity\r\n", &e),
        ),
        (
            "a chunk size that is not hex",
            raw_post("transfer-encoding: chunked\r\n", &format!("zz\r\n{e}\r\n0\r\n\r\n")),
        ),
        (
            "a negative chunk size",
            raw_post("transfer-encoding: chunked\r\n", &format!("-{n:x}\r\n{e}\r\n0\r\n\r\n")),
        ),
        (
            "an overflowing chunk size",
            raw_post(
                "transfer-encoding: chunked\r\n",
                &format!("1{n:0>32x}\r\n{e}\r\n0\r\n\r\n"),
            ),
        ),
        (
            "a chunk longer than its size",
            raw_post("transfer-encoding: chunked\r\n", &format!("5\r\n{e}\r\n0\r\n\r\n")),
        ),
        (
            "transfer-encoding on HTTP/1.0",
            raw_post("transfer-encoding: chunked\r\n", &chunked).replacen("HTTP/1.1", "HTTP/1.0", 1),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, bytes) in cases {
        let answer = exchange(&sender, bytes.into_bytes()).await;
        if status_of(&answer) != "HTTP/1.1 400" {
            wrong.push(format!("{what}: {:?}", answer.lines().next()));
        }
    }
    assert!(wrong.is_empty(), "answered other than 400:\n{}", wrong.join("\n"));
    s.assert_nothing_taken("smuggling").await;
}

// ---- odd but legal HTTP ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn http10_expect_continue_and_pipelined_requests_are_served() {
    let s = Setup::new("").await;
    let sender = s.prod();

    // HTTP/1.0 with a body: answered, then closed (1.0 has no keep-alive by default).
    let e = event("HTTP10");
    let req = format!(
        "POST {PATH} HTTP/1.0\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{e}",
        e.len()
    );
    let answer = exchange(&sender, req.into_bytes()).await;
    assert_eq!(status_of(&answer), "HTTP/1.1 200", "{answer}");

    // Expect: 100-continue: the 100 comes before the body is sent, then the 200.
    let e = event("CONTINUE");
    let mut tls = sender.tls().await.unwrap();
    let head = raw_post(
        &format!(
            "expect: 100-continue\r\nconnection: close\r\ncontent-length: {}\r\n",
            e.len()
        ),
        "",
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let t = Instant::now();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf))
        .await
        .expect("a 100 promptly")
        .unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    assert!(t.elapsed() < Duration::from_millis(500), "100 took {:?}", t.elapsed());
    tls.write_all(e.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let (answer, _) = read_to_close(&mut tls, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), "HTTP/1.1 200", "{answer}");

    // Two requests in one write: both answered, in order, on the same connection.
    let (a, b) = (event("PIPE-1"), event("PIPE-2"));
    let two = format!(
        "{}{}",
        raw_post(&format!("content-length: {}\r\n", a.len()), &a),
        raw_post(&format!("content-length: {}\r\nconnection: close\r\n", b.len()), &b)
    );
    let answer = exchange(&sender, two.into_bytes()).await;
    let statuses: Vec<&str> = answer.matches("HTTP/1.1 ").collect();
    assert_eq!(statuses.len(), 2, "two answers: {answer}");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");

    eventually(10, "every acknowledged event reaches the app", || s.app.count() >= 4).await;
    let mut got = s.delivered();
    got.sort();
    assert_eq!(got, ["CONTINUE", "HTTP10", "PIPE-1", "PIPE-2"]);
    assert_eq!(s.stored().await, 4);
}

// ---- client certificates ---------------------------------------------------------------------

/// A PKI whose trusted CA also issued bad client certificates with the PROD DN.
fn pki_with_bad_client_certs() -> Pki {
    let pki = Pki::new();
    let ca = Ca::new("abuse test CA").unwrap();
    let server = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    let write = |name: &str, text: &str| std::fs::write(pki.path(name), text).unwrap();
    write("ca.pem", &ca.cert_pem());
    write("client-ca.pem", &ca.cert_pem());
    write("server.pem", &server.chain_pem(&ca));
    write("server.key", &server.key_pem);
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let mut unknown = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
    unknown.set_criticality(true);
    let certs = [
        ("xbs-prod", LeafSpec::default()),
        (
            "server-auth-only",
            LeafSpec {
                client_auth: false,
                server_auth: true,
                ..LeafSpec::default()
            },
        ),
        (
            "expired",
            LeafSpec {
                not_before: now - 30 * day,
                not_after: now - day,
                ..LeafSpec::default()
            },
        ),
        (
            "not-yet-valid",
            LeafSpec {
                not_before: now + day,
                not_after: now + 30 * day,
                ..LeafSpec::default()
            },
        ),
        (
            "unknown-critical-extension",
            LeafSpec {
                extensions: vec![unknown],
                ..LeafSpec::default()
            },
        ),
    ];
    for (name, spec) in certs {
        let leaf = ca.issue_with(&XBS_PROD_DN, spec).unwrap();
        write(&format!("{name}.pem"), &leaf.cert_pem);
        write(&format!("{name}.key"), &leaf.key_pem);
    }
    pki
}

/// Presents a certificate as it is, unchecked: rustls' own client refuses to load one with an
/// unknown critical extension, but a hostile sender can send anything.
#[derive(Debug)]
struct Present(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Present {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A TLS connection presenting `name`'s certificate as is.
async fn connect_presenting(
    s: &Setup,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let pem = |file: String| std::fs::read(s.pki.path(&file)).unwrap();
    let certs = CertificateDer::pem_slice_iter(&pem(format!("{name}.pem")))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&pem(format!("{name}.key"))).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signer = provider.key_provider.load_private_key(key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem("ca.pem".into())) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Present(Arc::new(rustls::sign::CertifiedKey::new(
            certs, signer,
        )))));
    let tcp = tokio::net::TcpStream::connect(s.gate.addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_client_certificates_fail_the_handshake() {
    let s = Setup::with_pki(pki_with_bad_client_certs(), "").await;
    for bad in [
        "server-auth-only",
        "expired",
        "not-yet-valid",
        "unknown-critical-extension",
    ] {
        let e = event(&format!("CERT-{bad}"));
        // TLS 1.3 clients finish before the server has checked their certificate: the refusal
        // then arrives as an alert on the first read.
        let answer = match connect_presenting(&s, bad).await {
            Err(_) => String::new(),
            Ok(mut tls) => {
                let req = raw_post(&format!("content-length: {}\r\n", e.len()), &e);
                let _ = tls.write_all(req.as_bytes()).await;
                let _ = tls.flush().await;
                read_to_close(&mut tls, Duration::from_secs(5)).await.0
            }
        };
        assert_eq!(answer, "", "{bad}: no HTTP answer may come back");
    }
    // The same CA's good certificate, presented the same way, is served: the refusals are the
    // certificates' own.
    let mut tls = connect_presenting(&s, "xbs-prod").await.unwrap();
    let e = event("CERT-GOOD");
    let req = raw_post(&format!("content-length: {}\r\nconnection: close\r\n", e.len()), &e);
    tls.write_all(req.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let (answer, _) = read_to_close(&mut tls, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), "HTTP/1.1 200", "{answer}");
    eventually(10, "the good event reaches the app", || s.app.count() == 1).await;
    assert_eq!(s.delivered(), ["CERT-GOOD"]);
    assert_eq!(s.stored().await, 1);
    let m = s.metrics().await;
    assert!(!m.contains("CERT-"), "event ids never become metric labels");
    for reason in ["wrong_purpose", "expired", "not_yet_valid", "other"] {
        let series = format!(r#"pushgate_tls_handshake_failures_total{{reason="{reason}"}}"#);
        assert_eq!(metric(&m, &series), 1.0, "{series}");
    }
}

// ---- TLS versions and suites -----------------------------------------------------------------

fn client_config(pki: &Pki, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let pem = |name: &str| std::fs::read(pki.path(name)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem("ca.pem")) {
        roots.add(c.unwrap()).unwrap();
    }
    let certs = CertificateDer::pem_slice_iter(&pem("xbs-prod.pem"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&pem("xbs-prod.key")).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap(),
    )
}

/// `openssl s_client` against the gate with `args`: (handshake completed, its output).
fn openssl_client(s: &Setup, args: &[&str]) -> Option<(bool, String)> {
    let out = std::process::Command::new("openssl")
        .arg("s_client")
        .args(["-connect", &s.gate.addr.to_string(), "-servername", "localhost"])
        .arg("-cert")
        .arg(s.pki.path("xbs-prod.pem"))
        .arg("-key")
        .arg(s.pki.path("xbs-prod.key"))
        .arg("-CAfile")
        .arg(s.pki.path("ca.pem"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // s_client prints its session block even when the handshake failed, with no cipher.
    let completed = out.status.success() && !text.contains("Cipher is (NONE)");
    Some((completed, text))
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_2_and_1_3_are_accepted_older_versions_and_weak_suites_are_not() {
    let s = Setup::new("").await;
    for (version, name) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config(&s.pki, &[version]);
        let tcp = tokio::net::TcpStream::connect(s.gate.addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(name));
        let suite = format!("{:?}", tls.get_ref().1.negotiated_cipher_suite().unwrap().suite());
        assert!(
            suite.contains("GCM") || suite.contains("CHACHA20_POLY1305"),
            "an AEAD suite, not {suite}"
        );
        let e = event(&format!("TLS-{name:?}"));
        let req = raw_post(&format!("content-length: {}\r\nconnection: close\r\n", e.len()), &e);
        tls.write_all(req.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        let (answer, _) = read_to_close(&mut tls, Duration::from_secs(5)).await;
        assert_eq!(status_of(&answer), "HTTP/1.1 200", "{name:?}: {answer}");
    }

    // rustls cannot speak TLS 1.1 or CBC suites: the system's openssl can.
    let Some((control, text)) = openssl_client(&s, &["-tls1_2"]) else {
        eprintln!("SKIPPED the openssl half of this test: no openssl on PATH");
        return;
    };
    assert!(
        control,
        "openssl's TLS 1.2 handshake must work, else the refusals prove nothing:\n{text}"
    );
    // OpenSSL 3 itself disables TLS 1.1 below security level 0.
    let (ok, text) = openssl_client(&s, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]).unwrap();
    assert!(!ok, "TLS 1.1 must be refused:\n{text}");
    assert!(
        text.contains("Protocol  : TLSv1.1"),
        "openssl offered TLS 1.1 only:\n{text}"
    );
    assert!(
        text.contains("SSL alert number"),
        "the server refuses it with an alert:\n{text}"
    );
    for suite in ["AES128-SHA", "ECDHE-ECDSA-AES128-SHA", "AES256-GCM-SHA384"] {
        let (ok, text) = openssl_client(&s, &["-tls1_2", "-cipher", suite]).unwrap();
        assert!(!ok, "{suite} must be refused:\n{text}");
        assert!(
            text.contains("alert handshake failure"),
            "{suite}: the server has no such suite:\n{text}"
        );
    }

    eventually(10, "the two accepted events reach the app", || s.app.count() == 2).await;
    assert_eq!(s.stored().await, 2);
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
