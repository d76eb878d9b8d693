//! Spool tests. `bench.rs` holds `#[ignore]`d measurements.

mod basic;
mod bench;
mod corrupt;
mod durability;
mod entries;
mod fault;
mod migrate;
mod segments;
mod sweep;
mod torn;

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
        fingerprints: (0..ids.len() as u64).map(|i| 0xf00d + i).collect(),
        ordering_key: Some("order-1".into()),
        received_at_ms,
        client_dn: Some("CN=test".into()),
        headers: vec![("content-type".into(), "application/json".into())],
        body: bytes::Bytes::from(format!("{{\"ids\":{ids:?}}}")),
        quarantine_reason: None,
    }
}

/// Copies every file of a store, as `kill -9` leaves them: exactly what the process had written
/// to the OS (not after power loss).
pub(super) fn crash_image(dir: &Path) -> tempfile::TempDir {
    let image = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), image.path().join(entry.file_name())).unwrap();
    }
    image
}

/// Ids of `ids_since(0)`, in its order.
pub(super) fn ids(spool: &Spool) -> Vec<String> {
    spool.ids_since(0).unwrap().into_iter().map(|s| s.id).collect()
}

pub(super) fn quarantined(route: &str, received_at_ms: u64) -> NewDelivery {
    NewDelivery {
        quarantine_reason: Some("not JSON".into()),
        fingerprints: vec![],
        body: bytes::Bytes::from_static(b"\xff garbage"),
        ..delivery(route, &[], received_at_ms)
    }
}
