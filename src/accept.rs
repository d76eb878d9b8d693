//! Taking a notification's events: claim their ids, make the new ones safe, then answer.
//!
//! The durability order lives here and nowhere else:
//!   claim ids → store (spool: fsync) or deliver (upstream: app answers 2xx) → mark seen → answer.
//! If the middle step fails, the claims are released (nothing marked seen) and the sender is
//! told to retry.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::dedupe::{ClaimGuard, Key, Slot};
use crate::forward::{Delivery, SendError};
use crate::profile::{AnswerBody, Event, Extracted, IdSource};
use crate::reply::{Outcome, Reply};
use crate::route::{AckMode, Route};
use crate::shared::Shared;
use crate::spool::NewDelivery;

/// What a sender is told to wait when storage cannot write.
pub const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a request waits for the store to open (only during a `-u` takeover, while the old
/// process finishes its grace period, or a `-d` start).
const STORE_WAIT: Duration = Duration::from_secs(30);

/// What is known about one request once its body has been read and understood.
pub struct Notification {
    pub route: Arc<Route>,
    pub client_dn: Option<String>,
    pub received_at_ms: u64,
    /// Sender headers to pass on (filtered), with the `Content-Type` the app should see.
    pub headers: Vec<(String, String)>,
    pub extracted: Extracted,
}

/// Per-request event counts, for the log line and `pushgate_events_total`.
#[derive(Debug, Default, Clone)]
pub struct EventTally {
    pub ids: Vec<String>,
    pub new: u64,
    pub duplicate: u64,
    pub missing_id: u64,
}

pub async fn accept(shared: &Shared, n: Notification, tally: &mut EventTally) -> Reply {
    let events = &n.extracted.events;
    tally.ids = events.iter().map(|e| e.id.to_string()).collect();
    tally.missing_id = events.iter().filter(|e| e.id_source == IdSource::Hash).count() as u64;

    // The store first: until it is open (only during a -u takeover or a -d start) the
    // duplicate memory has not been rebuilt from it, so no claim can be trusted yet.
    let Some(spool) = shared.store.within(STORE_WAIT).await else {
        return Reply::unavailable(STORAGE_RETRY_AFTER).with_reason("storage is not open yet");
    };
    let keys: Vec<Key> = events.iter().map(|e| Key::new(&n.route.name, &e.id)).collect();
    let slots = match shared.dedupe.claim_all(&keys).await {
        Ok(slots) => slots,
        Err(e) => {
            // Policy `refuse`: nothing is stored unchecked; the sender retries later.
            shared.metrics.dedupe_unavailable.with_label_values(&["refuse"]).inc();
            return Reply::unavailable(STORAGE_RETRY_AFTER).with_reason(e.to_string());
        }
    };
    let mut fresh: Vec<&Event> = Vec::new();
    let mut guards: Vec<ClaimGuard> = Vec::new();
    let mut unchecked = 0u64;
    for (event, slot) in events.iter().zip(slots) {
        match slot {
            Slot::New(g) => {
                fresh.push(event);
                guards.push(g);
            }
            Slot::Unchecked => {
                fresh.push(event);
                unchecked += 1;
            }
            Slot::Seen => {}
        }
    }
    tally.new = fresh.len() as u64;
    tally.duplicate = events.len() as u64 - tally.new;
    let mut headers = n.headers;
    if unchecked > 0 {
        // Policy `accept`: better a duplicate the app can drop by X-Pushgate-Event-Id than a
        // notification refused while the shared memory is away. Flagged and counted.
        shared
            .metrics
            .dedupe_unavailable
            .with_label_values(&["accept"])
            .inc_by(unchecked);
        headers.push(("x-pushgate-dedupe".into(), "unchecked".into()));
    }

    let (status, content_type, body) = n.route.profile.answer.render(events);
    if fresh.is_empty() {
        return Reply::answer(status, Outcome::Duplicate, content_type.map(str::to_string), body);
    }

    let delivery = Delivery {
        route: n.route.name.to_string(),
        event_ids: fresh.iter().map(|e| e.id.to_string()).collect(),
        client_dn: n.client_dn,
        received_at_ms: n.received_at_ms,
        headers,
        body: app_body(&fresh, n.extracted.batch),
    };

    match n.route.ack {
        AckMode::Upstream => {
            // A sender whose contract is an answer per event (Ethoca) gets pushgate's answer once
            // the app has taken the events; other senders get the app's own answer.
            let own = matches!(n.route.profile.answer.body, AnswerBody::PerEvent(_))
                .then(|| Reply::answer(status, Outcome::Accepted, content_type.map(str::to_string), body));
            deliver_now(shared, &n.route, &delivery, guards, tally, own).await
        }
        AckMode::Spool => {
            let ordering_key = fresh.iter().find_map(|e| e.ordering_key.clone());
            let stored = spool.append(NewDelivery {
                route: delivery.route.clone(),
                event_ids: delivery.event_ids.clone(),
                // Wired to each event's content fingerprint when the dedupe work is merged.
                fingerprints: vec![],
                ordering_key: ordering_key.clone(),
                received_at_ms: delivery.received_at_ms,
                client_dn: delivery.client_dn.clone(),
                headers: delivery.headers.clone(),
                body: delivery.body.clone(),
                quarantine_reason: None,
            });
            match stored.await {
                Ok(seq) => {
                    // Durable (fsync'd): only now are the ids seen, and only then is the sender told.
                    guards.into_iter().for_each(ClaimGuard::commit);
                    shared.forwarder().stored(seq, ordering_key, delivery);
                    Reply::answer(status, Outcome::Accepted, content_type.map(str::to_string), body)
                }
                Err(e) => {
                    drop(guards); // nothing marked seen: the sender's retry is taken afresh
                    tally.new = 0;
                    shared.metrics.storage_errors.with_label_values(&["append"]).inc();
                    Reply::unavailable(STORAGE_RETRY_AFTER).with_reason(format!("storage: {e}"))
                }
            }
        }
    }
}

/// Keeps a body an authenticated sender sent that could not be understood, so nothing is
/// lost: it is listed and can be replayed once the cause is fixed. The sender gets 400 if it
/// is stored, 503 (retry) if even that fails.
pub async fn quarantine(
    shared: &Shared,
    route: &Route,
    client_dn: Option<String>,
    received_at_ms: u64,
    headers: Vec<(String, String)>,
    body: Bytes,
    reason: String,
) -> Reply {
    let Some(spool) = shared.store.within(STORE_WAIT).await else {
        return Reply::unavailable(STORAGE_RETRY_AFTER).with_reason("storage is not open yet");
    };
    let stored = spool
        .append(NewDelivery {
            route: route.name.to_string(),
            event_ids: vec![],
            fingerprints: vec![],
            ordering_key: None,
            received_at_ms,
            client_dn,
            headers,
            body,
            quarantine_reason: Some(reason.clone()),
        })
        .await;
    match stored {
        Ok(_) => {
            shared
                .metrics
                .events
                .with_label_values(&[route.name.as_str(), "quarantined"])
                .inc();
            let mut r = Reply::refuse(400, Outcome::RejectedBody).with_reason(reason);
            r.close = false;
            r
        }
        Err(e) => {
            shared.metrics.storage_errors.with_label_values(&["quarantine"]).inc();
            Reply::unavailable(STORAGE_RETRY_AFTER).with_reason(format!("storage: {e}"))
        }
    }
}

/// `ack: upstream`: the sender waits for the app, and gets the app's answer.
async fn deliver_now(
    shared: &Shared,
    route: &Route,
    delivery: &Delivery,
    guards: Vec<ClaimGuard>,
    tally: &mut EventTally,
    own_answer: Option<Reply>,
) -> Reply {
    let started = std::time::Instant::now();
    let result = shared.client.send(&route.upstream, delivery, 1).await;
    let name = route.name.as_str();
    shared
        .metrics
        .forward_seconds
        .with_label_values(&[name])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(resp) if (200..300).contains(&resp.status) => {
            // Delivered: only now are the ids seen.
            guards.into_iter().for_each(ClaimGuard::commit);
            shared.metrics.forward.with_label_values(&[name, "delivered"]).inc();
            own_answer.unwrap_or_else(|| Reply::answer(resp.status, Outcome::Accepted, resp.content_type, resp.body))
        }
        Ok(resp) => {
            drop(guards);
            tally.new = 0;
            shared.metrics.forward.with_label_values(&[name, "retried"]).inc();
            let mut reply = Reply::answer(resp.status, Outcome::Unavailable, resp.content_type, resp.body)
                .with_reason(format!("app answered {}", resp.status));
            reply.retry_after = resp.retry_after;
            reply
        }
        Err(e) => {
            drop(guards);
            tally.new = 0;
            shared.metrics.forward.with_label_values(&[name, "retried"]).inc();
            let status = if matches!(e, SendError::Timeout(_)) { 504 } else { 502 };
            Reply::answer(status, Outcome::Unavailable, None, Bytes::new()).with_reason(e.to_string())
        }
    }
}

/// The body the app receives: the event itself, or for a batch the JSON array of the new
/// elements, each element's bytes as the sender wrote them.
fn app_body(fresh: &[&Event], batch: bool) -> Bytes {
    if !batch {
        // A single-event body has exactly one event.
        return fresh.first().map(|e| e.bytes.clone()).unwrap_or_default();
    }
    let len = fresh.iter().map(|e| e.bytes.len() + 1).sum::<usize>() + 2;
    let mut out = BytesMut::with_capacity(len);
    out.extend_from_slice(b"[");
    for (i, e) in fresh.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(&e.bytes);
    }
    out.extend_from_slice(b"]");
    out.freeze()
}
