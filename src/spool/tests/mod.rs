//! Spool tests. `bench.rs` holds an `#[ignore]`d throughput measurement.

mod basic;
mod bench;
mod corrupt;
mod durability;
mod fault;
mod sweep;

use std::path::Path;
use std::time::Duration;

use super::{NewDelivery, Spool, SpoolOptions};

pub(super) fn opts() -> SpoolOptions {
    SpoolOptions {
        retention: Duration::from_secs(3600),
        max_batch: 256,
    }
}

pub(super) fn open(dir: &Path) -> Spool {
    Spool::open(dir, opts()).expect("open spool")
}

pub(super) fn delivery(route: &str, ids: &[&str], received_at_ms: u64) -> NewDelivery {
    NewDelivery {
        route: route.to_owned(),
        event_ids: ids.iter().map(|s| s.to_string()).collect(),
        fingerprints: (1..=ids.len() as u64).map(|i| i * 0x1111).collect(),
        ordering_key: Some("order-1".into()),
        received_at_ms,
        client_dn: Some("CN=test".into()),
        headers: vec![("content-type".into(), "application/json".into())],
        body: bytes::Bytes::from(format!("{{\"ids\":{ids:?}}}")),
        quarantine_reason: None,
    }
}

pub(super) fn quarantined(route: &str, received_at_ms: u64) -> NewDelivery {
    NewDelivery {
        quarantine_reason: Some("not JSON".into()),
        body: bytes::Bytes::from_static(b"\xff garbage"),
        ..delivery(route, &[], received_at_ms)
    }
}
