//! What the sender is sent, and how it is framed: every answer goes out through
//! [`Reply::send`] (`Content-Length`, keep-alive, lingering close) the same way every time.
//! Which refusal gets which status is decided in one table, [`crate::ingress::refusal`]; nothing
//! internal is echoed.

use std::time::Duration;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// How a request ended (the `outcome` label of `pushgate_requests_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    RejectedTls,
    RejectedDn,
    RejectedSecret,
    RejectedMethod,
    RejectedSize,
    /// 408: the body did not arrive in time (413 is `RejectedSize`).
    RejectedTimeout,
    RejectedBody,
    NotFound,
    Unavailable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::RejectedTls => "rejected_tls",
            Outcome::RejectedDn => "rejected_dn",
            Outcome::RejectedSecret => "rejected_secret",
            Outcome::RejectedMethod => "rejected_method",
            Outcome::RejectedSize => "rejected_size",
            Outcome::RejectedTimeout => "rejected_timeout",
            Outcome::RejectedBody => "rejected_body",
            Outcome::NotFound => "not_found",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// What the sender is sent.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub outcome: Outcome,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub retry_after: Option<Duration>,
    pub allow: Option<&'static str>,
    /// Close the connection after answering: the request body may not have been read, so
    /// the connection cannot be reused safely.
    pub close: bool,
    /// Why, for the log line only (never sent).
    pub reason: Option<String>,
}

impl Reply {
    /// A bodiless refusal before the body was read.
    pub fn refuse(status: u16, outcome: Outcome) -> Reply {
        Reply {
            status,
            outcome,
            content_type: None,
            body: Bytes::new(),
            retry_after: None,
            allow: None,
            close: true,
            reason: None,
        }
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Reply {
        self.reason = Some(reason.into());
        self
    }

    /// The answer to a notification whose body was read.
    pub fn answer(status: u16, outcome: Outcome, content_type: Option<String>, body: Bytes) -> Reply {
        Reply {
            content_type,
            body,
            close: false,
            ..Reply::refuse(status, outcome)
        }
    }

    /// Whether the connection, closed after this answer, first drains what the sender still
    /// sends of its body ([`crate::ingress::body::linger`]), so the sender can read the answer. Refusals
    /// of a well-framed request only: a 400 may be about the framing itself, whose body end is
    /// then unknown, and a body read error leaves nothing sensible to read.
    pub fn lingers(&self) -> bool {
        self.close && matches!(self.status, 401 | 403 | 404 | 405 | 408 | 413)
    }

    pub async fn send(&self, session: &mut Session) -> pingora::Result<()> {
        let mut h = ResponseHeader::build(self.status, Some(4))?;
        h.insert_header("content-length", self.body.len().to_string())?;
        if let Some(ct) = &self.content_type {
            h.insert_header("content-type", ct.as_str())?;
        }
        if let Some(ra) = self.retry_after {
            h.insert_header("retry-after", ra.as_secs().max(1).to_string())?;
        }
        if let Some(allow) = self.allow {
            h.insert_header("allow", allow)?;
        }
        if self.close {
            h.insert_header("connection", "close")?;
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(h), self.body.is_empty()).await?;
        if !self.body.is_empty() {
            session.write_response_body(Some(self.body.clone()), true).await?;
        }
        Ok(())
    }
}
