//! Every way a request can fail, as one type, and the one function ([`Refusal::reply`]) that
//! turns each into what the sender is sent: status, `outcome` label, `Retry-After`, whether the
//! connection closes, and the reason for the log line. The stages return `Result<_, Refusal>`
//! and write no status numbers of their own; this table is the only place to read them.

use std::time::Duration;

use bytes::Bytes;

use crate::ingress::reply::{Outcome, Reply};

/// What a sender is told to wait when storage cannot write.
pub const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why a request was not accepted.
#[derive(Debug)]
pub enum Refusal {
    /// No route has this path. 404.
    NotFound,
    /// Not a POST. 405 with `Allow: POST`.
    Method,
    /// No certificate, or its DN / leaf is not one the route pins. 403.
    Identity,
    /// Secret header missing, repeated or wrong. 401.
    Secret,
    /// A body framing two HTTP parsers could read differently (request smuggling). 400.
    Framing(&'static str),
    /// A `Content-Length` that is not a number. 400.
    BadContentLength,
    /// The `100 Continue` the sender waits for could not be sent. 400.
    Continue,
    /// Reading the body failed (the connection broke, bad chunking). 400.
    BodyRead(&'static str),
    /// The body is over the route's `max_body`, as declared or as read. 413.
    TooLarge { declared: bool },
    /// The whole body did not arrive within the route's read timeout. 408.
    Timeout,
    /// An authenticated sender's body that could not be understood: stored quarantined (so
    /// nothing is lost) and refused, 400, keeping the connection (the body was read).
    Quarantined(String),
    /// Storage (or the shared duplicate memory under `refuse`) cannot take the event now. 503
    /// with `Retry-After`.
    Unavailable(String),
    /// `ack: upstream`: the app answered other than 2xx; its answer is relayed.
    AppRefused {
        status: u16,
        content_type: Option<String>,
        body: Bytes,
        retry_after: Option<Duration>,
    },
    /// `ack: upstream`: the app could not be reached (502) or did not answer in time (504).
    AppUnreachable { timed_out: bool, reason: String },
}

impl Refusal {
    /// The one table from refusal to answer.
    pub fn reply(self) -> Reply {
        use Outcome::*;
        // A refusal before the body was read closes the connection: what follows on it is
        // not known to be the next request.
        let before_body = |status, outcome| Reply::refuse(status, outcome);
        match self {
            Refusal::NotFound => before_body(404, NotFound),
            Refusal::Method => Reply {
                allow: Some("POST"),
                ..before_body(405, RejectedMethod)
            },
            Refusal::Identity => before_body(403, RejectedDn),
            Refusal::Secret => before_body(401, RejectedSecret),
            Refusal::Framing(why) => before_body(400, RejectedBody).with_reason(format!("framing: {why}")),
            Refusal::BadContentLength => before_body(400, RejectedBody).with_reason("bad content-length"),
            Refusal::Continue => before_body(400, RejectedBody).with_reason("cannot send 100 continue"),
            Refusal::BodyRead(why) => before_body(400, RejectedBody).with_reason(format!("body read: {why}")),
            Refusal::TooLarge { declared: true } => {
                before_body(413, RejectedSize).with_reason("content-length over max_body")
            }
            Refusal::TooLarge { declared: false } => before_body(413, RejectedSize).with_reason("body over max_body"),
            Refusal::Timeout => before_body(408, RejectedTimeout).with_reason("body read timeout"),
            Refusal::Quarantined(reason) => Reply {
                close: false,
                ..before_body(400, RejectedBody).with_reason(reason)
            },
            Refusal::Unavailable(reason) => Reply {
                retry_after: Some(STORAGE_RETRY_AFTER),
                close: false,
                ..before_body(503, Unavailable).with_reason(reason)
            },
            Refusal::AppRefused {
                status,
                content_type,
                body,
                retry_after,
            } => Reply {
                retry_after,
                ..Reply::answer(status, Unavailable, content_type, body).with_reason(format!("app answered {status}"))
            },
            Refusal::AppUnreachable { timed_out, reason } => {
                let status = if timed_out { 504 } else { 502 };
                Reply::answer(status, Unavailable, None, Bytes::new()).with_reason(reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table as SPEC §4 states it; a change here is a change of the outside contract.
    #[test]
    fn each_refusal_has_its_status_outcome_and_close() {
        let cases: Vec<(Refusal, u16, &str, bool)> = vec![
            (Refusal::NotFound, 404, "not_found", true),
            (Refusal::Method, 405, "rejected_method", true),
            (Refusal::Identity, 403, "rejected_dn", true),
            (Refusal::Secret, 401, "rejected_secret", true),
            (Refusal::Framing("x"), 400, "rejected_body", true),
            (Refusal::BadContentLength, 400, "rejected_body", true),
            (Refusal::Continue, 400, "rejected_body", true),
            (Refusal::BodyRead("x"), 400, "rejected_body", true),
            (Refusal::TooLarge { declared: true }, 413, "rejected_size", true),
            (Refusal::TooLarge { declared: false }, 413, "rejected_size", true),
            (Refusal::Timeout, 408, "rejected_timeout", true),
            (Refusal::Quarantined("x".into()), 400, "rejected_body", false),
            (Refusal::Unavailable("x".into()), 503, "unavailable", false),
            (
                Refusal::AppUnreachable {
                    timed_out: true,
                    reason: "x".into(),
                },
                504,
                "unavailable",
                false,
            ),
            (
                Refusal::AppUnreachable {
                    timed_out: false,
                    reason: "x".into(),
                },
                502,
                "unavailable",
                false,
            ),
        ];
        for (refusal, status, outcome, close) in cases {
            let shown = format!("{refusal:?}");
            let r = refusal.reply();
            assert_eq!(
                (r.status, r.outcome.as_str(), r.close),
                (status, outcome, close),
                "{shown}"
            );
            assert!(r.body.is_empty(), "{shown}: nothing internal is echoed");
        }
        assert_eq!(Refusal::Method.reply().allow, Some("POST"));
        let r = Refusal::Unavailable("storage".into()).reply();
        assert_eq!(r.retry_after, Some(STORAGE_RETRY_AFTER));
    }

    #[test]
    fn the_apps_refusal_is_relayed_with_its_retry_after() {
        let r = Refusal::AppRefused {
            status: 429,
            content_type: Some("text/plain".into()),
            body: Bytes::from_static(b"slow down"),
            retry_after: Some(Duration::from_secs(7)),
        }
        .reply();
        assert_eq!((r.status, r.outcome, r.close), (429, Outcome::Unavailable, false));
        assert_eq!(r.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(&r.body[..], b"slow down");
        assert_eq!(r.reason.as_deref(), Some("app answered 429"));
    }
}
