//! Table layout. One redb file, `spool.redb`:
//!
//! | table       | key                                  | value          | serves                              |
//! |-------------|--------------------------------------|----------------|-------------------------------------|
//! | `meta`      | seq                                  | JSON [`Meta`]  | meta(), list items                  |
//! | `body`      | seq                                  | raw bytes      | body() — never read by listings     |
//! | `by_route`  | (route, state, seq)                  | received_at_ms | pending(), per-route list/purge/replay_dead, oldest pending |
//! | `by_state`  | (state, seq)                         | received_at_ms | list/purge by state over all routes |
//! | `delivered` | (updated_at_ms, seq)                 | ()             | compact(): delivered past retention |
//! | `ids`       | (received_at_ms, route, event id, seq) | ()           | ids_since(): duplicate-memory rebuild |
//! | `counters`  | (route, state)                       | count          | stats() in O(routes), list totals   |
//! | `config`    | name                                 | u64            | `schema_version`, `next_seq`, `probe` |
//!
//! Every index row exists iff its event exists in that state; all are maintained in the same
//! write transaction as `meta`, so they cannot drift. `next_seq` is stored rather than derived
//! from the highest key so a purged tail is never handed out again.

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::error::StorageError;
use super::model::{Meta, Seq, State};

pub(crate) const META: TableDefinition<Seq, &[u8]> = TableDefinition::new("meta");
pub(crate) const BODY: TableDefinition<Seq, &[u8]> = TableDefinition::new("body");
pub(crate) const BY_ROUTE: TableDefinition<(&str, u8, Seq), u64> = TableDefinition::new("by_route");
pub(crate) const BY_STATE: TableDefinition<(u8, Seq), u64> = TableDefinition::new("by_state");
pub(crate) const DELIVERED: TableDefinition<(u64, Seq), ()> = TableDefinition::new("delivered");
pub(crate) const IDS: TableDefinition<(u64, &str, &str, Seq), ()> = TableDefinition::new("ids");
pub(crate) const COUNTERS: TableDefinition<(&str, u8), u64> = TableDefinition::new("counters");
pub(crate) const CONFIG: TableDefinition<&str, u64> = TableDefinition::new("config");

pub(crate) const SCHEMA_VERSION: u64 = 1;
pub(crate) const KEY_SCHEMA: &str = "schema_version";
pub(crate) const KEY_NEXT_SEQ: &str = "next_seq";
pub(crate) const KEY_PROBE: &str = "probe";

/// All tables of one write transaction, opened once per batch.
pub(crate) struct Tables<'t> {
    pub meta: Table<'t, Seq, &'static [u8]>,
    pub body: Table<'t, Seq, &'static [u8]>,
    pub by_route: Table<'t, (&'static str, u8, Seq), u64>,
    pub by_state: Table<'t, (u8, Seq), u64>,
    pub delivered: Table<'t, (u64, Seq), ()>,
    pub ids: Table<'t, (u64, &'static str, &'static str, Seq), ()>,
    pub counters: Table<'t, (&'static str, u8), u64>,
    pub config: Table<'t, &'static str, u64>,
}

impl<'t> Tables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, StorageError> {
        Ok(Tables {
            meta: txn.open_table(META)?,
            body: txn.open_table(BODY)?,
            by_route: txn.open_table(BY_ROUTE)?,
            by_state: txn.open_table(BY_STATE)?,
            delivered: txn.open_table(DELIVERED)?,
            ids: txn.open_table(IDS)?,
            counters: txn.open_table(COUNTERS)?,
            config: txn.open_table(CONFIG)?,
        })
    }

    pub(crate) fn config(&self, key: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.config.get(key)?.map(|v| v.value()))
    }

    /// Creates the tables on a new file, refuses a file written by another schema version, and
    /// returns the next seq to hand out.
    pub(crate) fn init(&mut self) -> Result<Seq, StorageError> {
        match self.config(KEY_SCHEMA)? {
            None => {
                self.config.insert(KEY_SCHEMA, SCHEMA_VERSION)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(StorageError::Corrupt(format!(
                    "spool schema version {other}, this build reads {SCHEMA_VERSION}"
                )))
            }
        }
        Ok(self.config(KEY_NEXT_SEQ)?.unwrap_or(1))
    }

    /// Reads and decodes one meta record. `Ok(None)`: no such seq.
    pub(crate) fn read_meta(&self, seq: Seq) -> Result<Option<Meta>, StorageError> {
        match self.meta.get(seq)? {
            None => Ok(None),
            Some(raw) => decode_meta(seq, raw.value()).map(Some),
        }
    }

    /// Adds `delta` to a (route, state) counter; a counter that reaches zero is removed so that
    /// stats only lists routes that hold something.
    pub(crate) fn bump(&mut self, route: &str, state: State, delta: i64) -> Result<(), StorageError> {
        let key = (route, state.code());
        let current = self.counters.get(key)?.map(|v| v.value()).unwrap_or(0);
        let next = current.saturating_add_signed(delta);
        if next == 0 {
            self.counters.remove(key)?;
        } else {
            self.counters.insert(key, next)?;
        }
        Ok(())
    }
}

pub(crate) fn encode_meta(meta: &Meta) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(meta).map_err(|e| StorageError::corrupt_record(meta.seq, e))
}

pub(crate) fn decode_meta(seq: Seq, raw: &[u8]) -> Result<Meta, StorageError> {
    let meta: Meta = serde_json::from_slice(raw).map_err(|e| StorageError::corrupt_record(seq, e))?;
    if meta.seq != seq {
        return Err(StorageError::corrupt_record(seq, format!("holds seq {}", meta.seq)));
    }
    Ok(meta)
}
