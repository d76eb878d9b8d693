//! Reading a sender's body: bounded in size (413, refused early from `Content-Length` when it
//! says too much) and in time (408 when the whole body has not arrived within the route's
//! read timeout, however slowly it trickles).

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

use crate::reply::{Outcome, Reply};

pub async fn read(session: &mut Session, max: u64, timeout: std::time::Duration) -> Result<Bytes, Reply> {
    let declared = match session.req_header().headers.get(http::header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| Reply::refuse(400, Outcome::RejectedBody).with_reason("bad content-length"))?,
        ),
    };
    if declared.is_some_and(|n| n > max) {
        return Err(Reply::refuse(413, Outcome::RejectedSize).with_reason("content-length over max_body"));
    }
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        // Pingora only relays an upstream's 100; answering locally, we must send it, or the
        // sender waits a second before sending its body.
        session
            .write_continue_response()
            .await
            .map_err(|_| Reply::refuse(400, Outcome::RejectedBody).with_reason("cannot send 100 continue"))?;
    }
    session.set_read_timeout(Some(timeout));
    let deadline = tokio::time::Instant::now() + timeout;
    // Capacity from the declared length, which is at most `max` here.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(max) as usize);
    loop {
        let chunk = match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Err(_) => return Err(Reply::refuse(408, Outcome::RejectedSize).with_reason("body read timeout")),
            Ok(Err(e)) if e.etype() == &pingora::ErrorType::ReadTimedout => {
                return Err(Reply::refuse(408, Outcome::RejectedSize).with_reason("body read timeout"))
            }
            Ok(Err(e)) => {
                return Err(
                    Reply::refuse(400, Outcome::RejectedBody).with_reason(format!("body read: {}", e.etype().as_str()))
                )
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        if buf.len() as u64 + chunk.len() as u64 > max {
            return Err(Reply::refuse(413, Outcome::RejectedSize).with_reason("body over max_body"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
