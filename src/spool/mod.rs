//! Embedded durable store ("spool") for accepted notifications: an append-only segment log.
//!
//! An append is acknowledged only once written and fdatasync'd; a single writer thread
//! group-commits concurrent appends into one write and one sync. Files, one job each:
//! - `model.rs`: the public data types; `error.rs`: [`StorageError`]
//! - `format.rs`: the record format (framing, CRC, payloads) — the file format lives there
//! - `segment.rs`: segment files, and the start-up scan that rebuilds the index and finds damage
//! - `summary.rs`: per sealed segment, what start-up and `ids_since` need of it, without bodies
//! - `index.rs`: the in-memory index (per event: state, times, where its record is)
//! - `entries.rs`: the index's seq → entry map, a sorted array
//! - `ops.rs`: mutations planned into records and index changes
//! - `writer.rs`: the writer thread: group commit, lazy state changes, failures, segment upkeep
//! - `store.rs`: [`Spool`], the handle callers hold, and the reads
//! - `migrate.rs`: one-time migration of the redb file of older releases

mod entries;
mod error;
mod format;
mod index;
mod migrate;
mod model;
mod ops;
mod segment;
mod store;
mod summary;
mod writer;

pub use error::StorageError;
pub use model::{ListQuery, Meta, NewDelivery, Page, RouteStats, SeenId, Seq, SpoolOptions, State, Stats};
pub use store::{Spool, FILE_NAME};

#[cfg(test)]
mod tests;
