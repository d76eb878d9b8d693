//! The data the spool stores and answers with.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Acceptance order: strictly increasing, assigned at append, never reused (also across restarts).
pub type Seq = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Delivered,
    Dead,
    Quarantined,
}

impl State {
    pub const ALL: [State; 4] = [State::Pending, State::Delivered, State::Dead, State::Quarantined];

    /// Stable on-disk code (log records, and index keys of the old redb file). Never renumber.
    pub(crate) fn code(self) -> u8 {
        match self {
            State::Pending => 0,
            State::Delivered => 1,
            State::Dead => 2,
            State::Quarantined => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<State> {
        State::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// What ingest hands over; everything needed to deliver later without the original request.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub route: String,
    pub event_ids: Vec<String>,
    /// Content fingerprint per event id (parallel to `event_ids`; empty for a quarantined body),
    /// kept so the duplicate memory rebuilt at start can tell a retry from a different event.
    pub fingerprints: Vec<u64>,
    pub ordering_key: Option<String>,
    pub received_at_ms: u64,
    pub client_dn: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
    /// `Some` => stored as [`State::Quarantined`], never forwarded until replayed.
    pub quarantine_reason: Option<String>,
}

/// Everything about a delivery except its body (listing never reads bodies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub seq: Seq,
    pub route: String,
    pub event_ids: Vec<String>,
    /// Parallel to `event_ids` (see [`NewDelivery::fingerprints`]); empty in older records.
    #[serde(default)]
    pub fingerprints: Vec<u64>,
    pub ordering_key: Option<String>,
    pub received_at_ms: u64,
    pub client_dn: Option<String>,
    pub headers: Vec<(String, String)>,
    pub state: State,
    /// Attempts made so far, as last reported by `mark_retry` / `mark_dead` / `mark_delivered`
    /// (a delivered event: the attempt the app took); 0 after a replay.
    pub attempts: u32,
    pub next_attempt_at_ms: u64,
    pub last_error: Option<String>,
    pub updated_at_ms: u64,
    pub body_len: u64,
    /// Kept after a replay, as a record of why the body was held back.
    pub quarantine_reason: Option<String>,
}

/// One event id the store holds, for the duplicate memory's rebuild at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenId {
    pub route: String,
    pub id: String,
    /// 0 when the record predates fingerprints.
    pub fingerprint: u64,
    pub received_at_ms: u64,
}

#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// Delivered events are kept this long (by `updated_at_ms`) for replay and pull.
    pub retention: Duration,
    /// Group-commit cap: most operations folded into one write transaction.
    pub max_batch: usize,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            retention: Duration::from_secs(7 * 24 * 3600),
            max_batch: 256,
        }
    }
}

/// Admin / pull listing. Filters are AND-ed; `start_ms` inclusive, `end_ms` exclusive, both on
/// `received_at_ms`. Results are oldest first (seq order), so paging with `offset` is stable
/// while new events arrive.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub route: Option<String>,
    pub state: Option<State>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub offset: u64,
    pub limit: u64,
}

/// Shaped like Mastercard CEN's pull API answer.
#[derive(Clone, Debug, Serialize)]
pub struct Page {
    pub count: u64,
    pub offset: u64,
    pub limit: u64,
    pub total: u64,
    pub items: Vec<Meta>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub routes: BTreeMap<String, RouteStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RouteStats {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    pub quarantined: u64,
    /// `received_at_ms` of the first pending delivery in seq order (acceptance order).
    pub oldest_pending_received_at_ms: Option<u64>,
}

impl RouteStats {
    pub(crate) fn slot(&mut self, state: State) -> &mut u64 {
        match state {
            State::Pending => &mut self.pending,
            State::Delivered => &mut self.delivered,
            State::Dead => &mut self.dead,
            State::Quarantined => &mut self.quarantined,
        }
    }
}
