//! Embedded durable store ("spool") for accepted notifications.
//!
//! An append is acknowledged only once fsync'd; a single writer thread group-commits
//! concurrent appends. Files, one job each:
//! - `model.rs`: the public data types; `error.rs`: [`StorageError`] and redb error mapping
//! - `schema.rs`: the table layout (documented there) and record encoding
//! - `ops.rs`: mutations inside a write transaction; `query.rs`: reads
//! - `writer.rs`: the writer thread, group commit, durability levels, recovery after I/O errors
//! - `store.rs`: [`Spool`], the handle callers hold

mod error;
mod model;
mod ops;
mod query;
mod schema;
mod store;
mod writer;

pub use error::StorageError;
pub use model::{ListQuery, Meta, NewDelivery, Page, RouteStats, SeenId, Seq, SpoolOptions, State, Stats};
pub use store::{Spool, FILE_NAME};

#[cfg(test)]
mod tests;
