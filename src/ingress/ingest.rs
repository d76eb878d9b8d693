//! The one Pingora handler. It answers every request itself (nothing is proxied as is) by
//! running the stages in SPEC §4's order, each a plain function elsewhere returning
//! `Result<_, Refusal>`: route → method → identity and secret → body → decode → accept; a
//! refusal becomes its answer in one table ([`crate::ingress::refusal`]). One log line and the request
//! metrics are emitted together in `logging`, so they cannot disagree.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::forward::app_headers;
use crate::ingress::accept::{accept, quarantine, EventTally, Notification};
use crate::ingress::refusal::Refusal;
use crate::ingress::reply::{Outcome, Reply};
use crate::ingress::route::Route;
use crate::listener::identity::ClientIdentity;
use crate::names::RouteName;
use crate::ops::metrics::NO_ROUTE;
use crate::profile::extract;
use crate::redact;
use crate::shared::Shared;

pub struct Ingest {
    pub shared: Arc<Shared>,
}

/// What one request leaves behind for its log line.
pub struct RequestLog {
    started: Instant,
    route: Option<RouteName>,
    client_dn: Option<String>,
    outcome: Option<Outcome>,
    status: u16,
    reason: Option<String>,
    tally: EventTally,
    /// When the answer was sent: a refusal's lingering close comes after it and is not part of
    /// the answer time.
    answered_in: Option<std::time::Duration>,
}

#[async_trait]
impl ProxyHttp for Ingest {
    type CTX = RequestLog;

    fn new_ctx(&self) -> RequestLog {
        RequestLog {
            started: Instant::now(),
            route: None,
            client_dn: None,
            outcome: None,
            status: 0,
            reason: None,
            tally: EventTally::default(),
            answered_in: None,
        }
    }

    async fn upstream_peer(&self, _: &mut Session, _: &mut RequestLog) -> pingora::Result<Box<HttpPeer>> {
        // request_filter always answers, so Pingora never asks where to proxy.
        pingora::Error::e_explain(
            pingora::ErrorType::InternalError,
            "pushgate answers every request itself",
        )
    }

    async fn request_filter(&self, session: &mut Session, log: &mut RequestLog) -> pingora::Result<bool> {
        log.started = Instant::now();
        crate::listener::conn::header_received();
        // Requests sent back to back on one connection are answered in order, not dropped:
        // every request's body is read to its end or the connection is closed (Reply::close),
        // so the bytes after a body are always the next request's.
        session.set_pipelining_enabled(true);
        let reply = self.handle(session, log).await.unwrap_or_else(Refusal::reply);
        log.status = reply.status;
        log.outcome = Some(reply.outcome);
        log.reason = reply.reason.clone();
        reply.send(session).await?;
        log.answered_in = Some(log.started.elapsed());
        if reply.lingers() {
            let lingered = crate::ingress::body::linger(session).await;
            tracing::debug!(target: "pushgate::request", bytes = lingered.bytes, complete = lingered.complete, "lingering close");
        }
        Ok(true)
    }

    async fn logging(&self, _session: &mut Session, error: Option<&pingora::Error>, log: &mut RequestLog) {
        crate::listener::conn::request_done();
        let route = log.route.as_ref().map_or(NO_ROUTE, |r| r.as_str());
        let outcome = log.outcome.map_or("error", Outcome::as_str);
        let took = log.answered_in.unwrap_or_else(|| log.started.elapsed());
        let m = &self.shared.metrics;
        m.requests.with_label_values(&[route, outcome]).inc();
        if log.route.is_some() {
            m.ack_seconds.with_label_values(&[route]).observe(took.as_secs_f64());
        }
        let t = &log.tally;
        for (word, n) in [
            ("accepted", t.new),
            ("duplicate", t.duplicate),
            ("missing_id", t.missing_id),
            ("conflict", t.conflict),
        ] {
            if n > 0 {
                m.events.with_label_values(&[route, word]).inc_by(n);
            }
        }
        // Ids are the senders' references, not payment data, but a sender may use a card
        // number as one: every sender-chosen string is masked before it is logged.
        let shown = &t.ids[..t.ids.len().min(10)];
        let joined = shown.join(",");
        let ids = match redact::cards(&joined) {
            masked if t.ids.len() > shown.len() => format!("{masked},…(+{})", t.ids.len() - shown.len()).into(),
            masked => masked, // borrowed unless masked: no copy per request
        };
        let reason = log.reason.as_deref().map(redact::cards).unwrap_or_default();
        let client_dn = log
            .client_dn
            .as_deref()
            .map_or(std::borrow::Cow::Borrowed("-"), redact::cards);
        tracing::info!(
            target: "pushgate::request",
            route,
            outcome,
            status = log.status,
            event_ids = %ids,
            new = t.new,
            duplicate = t.duplicate,
            conflict = t.conflict,
            client_dn = %client_dn,
            reason = %reason,
            error = error.map(|e| e.etype().as_str().to_string()).unwrap_or_default(),
            duration_ms = took.as_secs_f64() * 1000.0,
        );
    }
}

impl Ingest {
    async fn handle(&self, session: &mut Session, log: &mut RequestLog) -> Result<Reply, Refusal> {
        let received_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // The connection's TLS digest is shared (an Arc): borrow the identity from it rather
        // than clone the parsed DN, which cost 20 allocations per request (bench/profile.sh).
        let ssl = session.digest().and_then(|d| d.ssl_digest.clone());
        let identity: Option<&ClientIdentity> = ssl.as_deref().and_then(|s| s.extension.get::<ClientIdentity>());
        log.client_dn = identity.map(|i| i.dn.to_string());

        // 1. route, 2. method
        let routes = self.shared.routes();
        let route = routes
            .find(session.req_header().uri.path())
            .cloned()
            .ok_or(Refusal::NotFound)?;
        log.route = Some(route.name.clone());
        if session.req_header().method != http::Method::POST {
            return Err(Refusal::Method);
        }

        // 3. identity (403), then the secret (401)
        let headers = &session.req_header().headers;
        route.auth.check(identity, headers)?;
        if let Some(attempt) = headers
            .get("x-notification-attempt")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            self.shared
                .metrics
                .sender_attempt
                .with_label_values(&[route.name.as_str()])
                .observe(f64::from(attempt));
        }

        // 4. the body, bounded in size and time
        let body = crate::ingress::body::read(session, route.max_body, route.read_timeout).await?;

        // 5. what it says: decrypted first where the route holds keys (the id is under the cipher)
        let headers = &session.req_header().headers;
        let secret_header = route.auth.secret().map(|s| s.header());
        let understood = decrypt(&route, body.clone(), headers).and_then(|(plain, typ)| {
            extract(&route.profile.spec, &plain, headers)
                .map(|x| (x, typ))
                .map_err(|e| e.to_string())
        });
        let (extracted, decrypted_type) = match understood {
            Ok(x) => x,
            Err(reason) => {
                // The raw body as received, so a replay after a fix sees exactly what came.
                let forwarded = app_headers(headers, secret_header, None);
                return Err(quarantine(
                    &self.shared,
                    &route,
                    log.client_dn.clone(),
                    received_at_ms,
                    forwarded,
                    body,
                    reason,
                )
                .await);
            }
        };
        // The app gets the plaintext, typed as the JWE's `cty` said.
        let forwarded = app_headers(headers, secret_header, decrypted_type);

        // 6. dedupe and make it safe
        let n = Notification {
            route,
            client_dn: log.client_dn.clone(),
            received_at_ms,
            headers: forwarded,
            extracted,
        };
        accept(&self.shared, n, &mut log.tally).await
    }
}

/// Cross-Border payload decryption, when the route has keys: the plaintext and its type, or
/// the body unchanged when it is not an envelope. The reason given never names which step of
/// the decryption failed beyond the error kind.
fn decrypt(route: &Route, body: Bytes, headers: &http::HeaderMap) -> Result<(Bytes, Option<String>), String> {
    if route.decrypt_keys.is_empty() {
        return Ok((body, None));
    }
    let says_encrypted = headers
        .get("x-encrypted")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    match crate::jwe::decrypt_envelope(&body, says_encrypted, &route.decrypt_keys) {
        Ok(Some(d)) => Ok((Bytes::from(d.plaintext), Some(d.content_type))),
        Ok(None) => Ok((body, None)),
        Err(e) => Err(format!("undecryptable: {e}")),
    }
}
