//! Reading a sender's body: framed unambiguously (400 for the shapes of request smuggling),
//! bounded in size (413, refused early from `Content-Length` when it says too much) and in time
//! (408 when the whole body has not arrived within the route's read timeout, however slowly it
//! trickles) — and, once a request is refused before its body was read, the lingering close
//! that lets the sender read the refusal ([`linger`]).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

use crate::ingress::refusal::Refusal;

/// Lingering close: at most this many body bytes are read and thrown away after a refusal.
/// Far above any notification (senders' bodies are kilobytes) and above the 2 MB a sender that
/// writes everything before reading was seen to send (issue 13); reading and discarding it
/// costs milliseconds of CPU. A sender past it is cut off as before.
pub const LINGER_BYTES: u64 = 16 << 20;
/// Lingering close: at most this long in all (nginx's `lingering_time` is 30 s; a connection
/// slot is held meanwhile, so it is kept short).
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// Lingering close: a sender that sends nothing for this long is done (nginx's
/// `lingering_timeout`), e.g. one that waited for `100 Continue` and got the refusal instead.
pub const LINGER_IDLE: Duration = Duration::from_secs(1);

pub async fn read(session: &mut Session, max: u64, timeout: std::time::Duration) -> Result<Bytes, Refusal> {
    check_framing(&session.to_h1_raw()).map_err(Refusal::Framing)?;
    let declared = match session.req_header().headers.get(http::header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(Refusal::BadContentLength)?,
        ),
    };
    if declared.is_some_and(|n| n > max) {
        return Err(Refusal::TooLarge { declared: true });
    }
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        // Pingora only relays an upstream's 100; answering locally, we must send it, or the
        // sender waits a second before sending its body.
        session.write_continue_response().await.map_err(|_| Refusal::Continue)?;
    }
    session.set_read_timeout(Some(timeout));
    let deadline = tokio::time::Instant::now() + timeout;
    // Capacity from the declared length, which is at most `max` here.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(max) as usize);
    loop {
        let chunk = match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Err(_) => return Err(Refusal::Timeout),
            Ok(Err(e)) if e.etype() == &pingora::ErrorType::ReadTimedout => return Err(Refusal::Timeout),
            Ok(Err(e)) => return Err(Refusal::BodyRead(e.etype().as_str())),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        if buf.len() as u64 + chunk.len() as u64 > max {
            return Err(Refusal::TooLarge { declared: false });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// How a lingering close ended, for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lingered {
    /// Body bytes read and discarded.
    pub bytes: u64,
    /// The body ended (or the sender closed): nothing unread is left, so the close is clean.
    pub complete: bool,
}

/// Reads and discards what is left of a refused request's body, bounded by [`LINGER_BYTES`],
/// [`LINGER_TIME`] and [`LINGER_IDLE`], so the connection can then be closed cleanly.
///
/// Why: closing a socket whose receive buffer still holds unread bytes makes the kernel send
/// a TCP reset, and a sender still writing its body (Python's `http.client`, anything that
/// writes the whole request before reading) then fails on its write and never reads the 413
/// or 401 already sent. nginx drains for the same reason. The body is read through Pingora's
/// framing (`Content-Length` or chunked), so draining stops exactly where the body ends and
/// the close follows at once; the bytes are never looked at.
///
/// Pingora's own `drain_request_body` has a time bound but no byte bound, hence this loop.
pub async fn linger(session: &mut Session) -> Lingered {
    session.set_read_timeout(Some(LINGER_IDLE));
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut lingered = Lingered {
        bytes: 0,
        complete: false,
    };
    while lingered.bytes <= LINGER_BYTES {
        match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => lingered.bytes += chunk.len() as u64,
            Ok(Ok(None)) => {
                lingered.complete = true;
                break;
            }
            // A closed connection has nothing unread either.
            Ok(Err(e)) => {
                lingered.complete = matches!(
                    e.etype(),
                    pingora::ErrorType::ConnectionClosed | pingora::ErrorType::ReadError
                );
                break;
            }
            Err(_) => break,
        }
    }
    lingered
}

/// Refuses a request header whose body framing two HTTP parsers could read differently, as
/// written on the wire (`raw`: the request line and header fields, as received).
///
/// Pingora already refuses differing `Content-Length` values, a final transfer coding other than
/// chunked, `Transfer-Encoding` on HTTP/1.0 and obs-fold lines; it tolerates the rest, which is
/// refused here: `Content-Length` together with `Transfer-Encoding` (Pingora drops the length
/// and reads chunks), a repeated or comma-listed `Content-Length` (Pingora collapses equal
/// values), a length that is not plain digits, and any coding besides a single `chunked`.
/// A sender that frames its body correctly never sends any of these.
pub fn check_framing(raw: &[u8]) -> Result<(), &'static str> {
    let mut lengths = 0;
    let mut encodings = 0;
    // Empty lines (which httparse skips), the request line, then one field per line; httparse
    // also accepts bare LF endings.
    let lines = raw.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    for line in lines.skip_while(|l| l.is_empty()).skip(1) {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err("obs-fold header continuation");
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Err("header line without a colon");
        };
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err("content-length is not a number");
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings += 1;
            if !value.eq_ignore_ascii_case(b"chunked") {
                return Err("transfer-encoding other than chunked");
            }
        }
    }
    match (lengths, encodings) {
        (0 | 1, 0) | (0, 1) => Ok(()),
        (_, 0) => Err("more than one content-length"),
        (0, _) => Err("more than one transfer-encoding"),
        _ => Err("both content-length and transfer-encoding"),
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::check_framing;

    fn head(fields: &str) -> Vec<u8> {
        format!("POST /x HTTP/1.1\r\nhost: a\r\n{fields}\r\n").into_bytes()
    }

    #[test]
    fn plain_framings_pass() {
        for fields in [
            "",
            "content-length: 12\r\n",
            "Content-Length:0\r\n",
            "transfer-encoding: chunked\r\n",
            "Transfer-Encoding:  Chunked \r\n",
        ] {
            assert_eq!(check_framing(&head(fields)), Ok(()), "{fields:?}");
        }
        // Bare LF line endings, as httparse accepts them.
        assert_eq!(check_framing(b"POST / HTTP/1.1\ncontent-length: 1\n\n"), Ok(()));
        assert_eq!(check_framing(b"\r\nPOST http://a:1/ HTTP/1.1\r\n\r\n"), Ok(()));
        // The body after the header is not looked at.
        assert_eq!(check_framing(b"POST / HTTP/1.1\r\n\r\n content-length: 1\r\n"), Ok(()));
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for (fields, why) in [
            (
                "content-length: 5\r\ntransfer-encoding: chunked\r\n",
                "both content-length and transfer-encoding",
            ),
            (
                "transfer-encoding: chunked\r\ncontent-length: 5\r\n",
                "both content-length and transfer-encoding",
            ),
            (
                "content-length: 5\r\ncontent-length: 5\r\n",
                "more than one content-length",
            ),
            ("content-length: 5, 5\r\n", "content-length is not a number"),
            ("content-length: +5\r\n", "content-length is not a number"),
            ("content-length: \r\n", "content-length is not a number"),
            (
                "transfer-encoding: gzip, chunked\r\n",
                "transfer-encoding other than chunked",
            ),
            (
                "transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
                "more than one transfer-encoding",
            ),
            ("x-a: 1\r\n  continued\r\n", "obs-fold header continuation"),
            ("x-a: 1\r\n\tcontent-length: 5\r\n", "obs-fold header continuation"),
        ] {
            assert_eq!(check_framing(&head(fields)), Err(why), "{fields:?}");
        }
    }
}
