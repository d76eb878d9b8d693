//! Taking a notification's events: claim their ids, make the new ones safe, then answer.
//!
//! The durability order lives here and nowhere else:
//!   claim ids → store (spool: fsync) or deliver (upstream: app answers 2xx) → mark seen → answer.
//! If the middle step fails, the claims are released (nothing marked seen) and the sender is
//! told to retry.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::dedupe::{Claim, ClaimGuard, Key, Want};
use crate::forward::{Delivery, Flags, SendError};
use crate::ingress::refusal::Refusal;
use crate::ingress::reply::{Outcome, Reply};
use crate::ingress::route::{AckMode, OnConflict, Route};
use crate::profile::{AnswerBody, Event, Extracted, IdSource};
use crate::redact;
use crate::shared::Shared;

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

/// Per-request event counts, for the log line and `pushgate_events_total`. Each event is
/// counted once: new (`accepted`), `duplicate` or `conflict` (its id was seen with other
/// content; delivered, quarantined or dropped as the route's `on_conflict` says).
#[derive(Debug, Default, Clone)]
pub struct EventTally {
    pub ids: Vec<String>,
    pub new: u64,
    pub duplicate: u64,
    pub missing_id: u64,
    pub conflict: u64,
}

/// Header naming, for each event the app receives, the content its id was first seen with.
pub use crate::forward::CONFLICT_HEADER;

pub async fn accept(shared: &Shared, n: Notification, tally: &mut EventTally) -> Result<Reply, Refusal> {
    let events = &n.extracted.events;
    tally.ids = events.iter().map(|e| e.id.to_string()).collect();
    tally.missing_id = events.iter().filter(|e| e.id_source == IdSource::Hash).count() as u64;

    // The store first: until it is open (only during a -u takeover or a -d start) the
    // duplicate memory has not been rebuilt from it, so no claim can be trusted yet.
    let Some(spool) = shared.store.within(STORE_WAIT).await else {
        return Err(Refusal::Unavailable("storage is not open yet".into()));
    };
    let wants: Vec<Want> = events
        .iter()
        .map(|e| Want {
            key: Key::new(&n.route.name, &e.id),
            fingerprint: e.fingerprint,
        })
        .collect();
    let slots = match shared.dedupe.claim_all(&wants).await {
        Ok(slots) => slots,
        Err(e) => {
            // Policy `refuse`: nothing is stored unchecked; the sender retries later.
            shared.metrics.dedupe_unavailable.with_label_values(&["refuse"]).inc();
            return Err(Refusal::Unavailable(e.to_string()));
        }
    };
    // Taken events: delivered (`fresh`, each with the first fingerprint if it conflicts) or
    // quarantined (`held`, conflicts under `on_conflict: quarantine`).
    let mut fresh: Vec<(&Event, Option<u64>)> = Vec::new();
    let mut held: Vec<(&Event, Option<u64>)> = Vec::new();
    let (mut guards, mut held_guards) = (Vec::new(), Vec::new());
    let mut unchecked = 0u64;
    for (event, slot) in events.iter().zip(slots) {
        let (guard, first) = match slot {
            Claim::Seen => continue,
            Claim::New(g) => (g, None),
            Claim::Conflict { guard, first } => (guard, Some(first)),
        };
        if guard.unchecked() {
            unchecked += 1;
        }
        if let Some(first) = first {
            tally.conflict += 1;
            log_conflict(&n.route, event, first);
            match n.route.on_conflict {
                // Released: every arrival of this version is counted and dropped again.
                OnConflict::Drop => continue,
                OnConflict::Quarantine => {
                    held.push((event, Some(first)));
                    held_guards.push(guard);
                    continue;
                }
                OnConflict::Deliver => {}
            }
        }
        fresh.push((event, first));
        guards.push(guard);
    }
    tally.new = fresh.iter().filter(|(_, first)| first.is_none()).count() as u64;
    tally.duplicate = events.len() as u64 - tally.new - tally.conflict;
    let mut flags = Flags::default();
    if unchecked > 0 {
        // Policy `accept`: better a duplicate the app can drop by X-Pushgate-Event-Id than a
        // notification refused while the shared memory is away. Flagged and counted.
        shared
            .metrics
            .dedupe_unavailable
            .with_label_values(&["accept"])
            .inc_by(unchecked);
        flags.unchecked = true;
    }

    let (status, content_type, body) = n.route.profile.answer.render(events);
    let own_answer = |outcome| Reply::answer(status, outcome, content_type.map(str::to_string), body.clone());
    if !held.is_empty() {
        // Quarantined conflicts are safe once stored, whatever happens to the others.
        let stored = spool.append(record(&n, flags, &held, true)).await;
        if let Err(e) = stored {
            shared.dedupe.release_all(held_guards);
            shared.dedupe.release_all(guards);
            tally.new = 0;
            tally.conflict = 0;
            shared.metrics.storage_errors.with_label_values(&["quarantine"]).inc();
            return Err(Refusal::Unavailable(format!("storage: {e}")));
        }
        shared.dedupe.commit_all(held_guards);
    }
    if fresh.is_empty() {
        let outcome = if tally.conflict > 0 {
            Outcome::Accepted
        } else {
            Outcome::Duplicate
        };
        return Ok(own_answer(outcome));
    }

    // The out-of-date status guard (src/ingress/stale.rs): a status older than one already accepted for
    // its transaction is flagged, or held when the route says `on_stale: quarantine`.
    let fresh_events: Vec<&Event> = fresh.iter().map(|(e, _)| *e).collect();
    let stale = match shared.stale.judge(spool, &n.route, &fresh_events).await {
        Ok(v) => v,
        Err(e) => {
            shared.dedupe.release_all(guards);
            tally.new = 0;
            shared.metrics.storage_errors.with_label_values(&["stale"]).inc();
            return Err(Refusal::Unavailable(format!("storage: {e}")));
        }
    };
    let hold = stale.stale
        && n.route
            .stale
            .as_ref()
            .is_some_and(|g| g.on_stale == crate::ingress::stale::OnStale::Quarantine);
    flags.stale = stale.stale;
    let mut delivery = record(&n, flags, &fresh, false);
    if hold {
        delivery.quarantine_reason = Some("stale: a newer status of this transaction was accepted".into());
    }

    // A held status is stored quarantined, whatever the route's ack: the sender gets its 200.
    match if hold { AckMode::Spool } else { n.route.ack } {
        AckMode::Upstream => {
            // A sender whose contract is an answer per event (Ethoca) gets pushgate's answer once
            // the app has taken the events; other senders get the app's own answer.
            let own =
                matches!(n.route.profile.answer.body, AnswerBody::PerEvent(_)).then(|| own_answer(Outcome::Accepted));
            let reply = deliver_now(shared, &n.route, &delivery, guards, tally, own).await;
            if reply.is_ok() {
                shared.stale.taken(shared, &n.route, stale, delivery.received_at_ms);
            }
            reply
        }
        AckMode::Spool => {
            match spool.append(delivery.clone()).await {
                Ok(seq) => {
                    // Durable (fsync'd): only now are the ids seen, and only then is the sender told.
                    shared.dedupe.commit_all(guards);
                    shared.stale.taken(shared, &n.route, stale, delivery.received_at_ms);
                    if !hold {
                        let ordering_key = delivery.ordering_key.clone();
                        shared.forwarder().stored(seq, ordering_key, delivery);
                    }
                    Ok(own_answer(Outcome::Accepted))
                }
                Err(e) => {
                    shared.dedupe.release_all(guards); // nothing marked seen: the retry is taken afresh
                    tally.new = 0;
                    shared.metrics.storage_errors.with_label_values(&["append"]).inc();
                    Err(Refusal::Unavailable(format!("storage: {e}")))
                }
            }
        }
    }
}

/// The one record of taken events: their ids and fingerprints, and a body and headers the
/// app can be given as they are (conflicting events flagged with [`CONFLICT_HEADER`]).
fn record(n: &Notification, flags: Flags<'_>, taken: &[(&Event, Option<u64>)], quarantined: bool) -> Delivery {
    let mut headers = n.headers.clone();
    let conflicts: Vec<Option<u64>> = taken.iter().map(|(_, first)| *first).collect();
    Flags {
        conflicts: &conflicts,
        ..flags
    }
    .apply(&mut headers);
    let events: Vec<&Event> = taken.iter().map(|(e, _)| *e).collect();
    Delivery {
        route: n.route.name.to_string(),
        event_ids: events.iter().map(|e| e.id.to_string()).collect(),
        fingerprints: events.iter().map(|e| e.fingerprint).collect(),
        ordering_key: events.iter().find_map(|e| e.ordering_key.clone()),
        received_at_ms: n.received_at_ms,
        client_dn: n.client_dn.clone(),
        headers,
        body: app_body(&events, n.extracted.batch),
        quarantine_reason: quarantined
            .then(|| "id conflict: the id was seen before with other content (on_conflict: quarantine)".into()),
    }
}

/// A conflict is worth a person's attention: the sender reused an id for other content.
fn log_conflict(route: &Route, event: &Event, first: u64) {
    let action = match route.on_conflict {
        OnConflict::Deliver => "delivered",
        OnConflict::Quarantine => "quarantined",
        OnConflict::Drop => "dropped",
    };
    tracing::warn!(
        target: "pushgate::request",
        route = route.name.as_str(),
        event_id = %redact::cards(event.id.as_str()),
        first_fingerprint = %format!("{first:016x}"),
        fingerprint = %format!("{:016x}", event.fingerprint),
        action,
        "an event id was seen before with other content"
    );
}

/// Keeps a body an authenticated sender sent that could not be understood, so nothing is
/// lost: it is listed and can be replayed once the cause is fixed. The sender is refused either
/// way: `Quarantined` (400) if it is stored, `Unavailable` (503, retry) if even that fails.
pub async fn quarantine(
    shared: &Shared,
    route: &Route,
    client_dn: Option<String>,
    received_at_ms: u64,
    headers: Vec<(String, String)>,
    body: Bytes,
    reason: String,
) -> Refusal {
    let Some(spool) = shared.store.within(STORE_WAIT).await else {
        return Refusal::Unavailable("storage is not open yet".into());
    };
    let stored = spool
        .append(Delivery {
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
            Refusal::Quarantined(reason)
        }
        Err(e) => {
            shared.metrics.storage_errors.with_label_values(&["quarantine"]).inc();
            Refusal::Unavailable(format!("storage: {e}"))
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
) -> Result<Reply, Refusal> {
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
            shared.dedupe.commit_all(guards);
            shared.metrics.forward.with_label_values(&[name, "delivered"]).inc();
            Ok(own_answer
                .unwrap_or_else(|| Reply::answer(resp.status, Outcome::Accepted, resp.content_type, resp.body)))
        }
        Ok(resp) => {
            shared.dedupe.release_all(guards);
            tally.new = 0;
            shared.metrics.forward.with_label_values(&[name, "retried"]).inc();
            Err(Refusal::AppRefused {
                status: resp.status,
                content_type: resp.content_type,
                body: resp.body,
                retry_after: resp.retry_after,
            })
        }
        Err(e) => {
            shared.dedupe.release_all(guards);
            tally.new = 0;
            shared.metrics.forward.with_label_values(&[name, "retried"]).inc();
            Err(Refusal::AppUnreachable {
                timed_out: matches!(e, SendError::Timeout(_)),
                reason: e.to_string(),
            })
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
