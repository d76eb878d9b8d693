//! One-time migration of a `spool.redb` written by a release before the segment log: every
//! event, with its seq, state, attempts, times and body, is re-written as append records into
//! a fresh segment, then the old file is renamed `spool.redb.migrated` (kept, not deleted, so
//! an operator can go back). redb stays a dependency for this reader alone.
//!
//! Crash safety: the new segment is filled under a temporary name, synced, and renamed into
//! place before the old file is renamed; a start that finds both a segment and `spool.redb`
//! was interrupted between the two renames, and only finishes the second.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::error::StorageError;
use super::format;
use super::model::{Meta, Seq};
use super::segment;
use super::store::FILE_NAME;

/// The old layout's tables this reader needs (see the git history of `schema.rs`).
const META: TableDefinition<Seq, &[u8]> = TableDefinition::new("meta");
const BODY: TableDefinition<Seq, &[u8]> = TableDefinition::new("body");
const CONFIG: TableDefinition<&str, u64> = TableDefinition::new("config");
const OLD_SCHEMA_VERSION: u64 = 1;
/// Records are written to the new segment in chunks of about this size (one sync at the end).
const CHUNK: usize = 4 << 20;

pub(crate) const MIGRATED: &str = "spool.redb.migrated";

/// Migrates `dir/spool.redb` if there is one; returns how many events were moved.
pub(crate) fn run(dir: &Path) -> Result<u64, StorageError> {
    let old = dir.join(FILE_NAME);
    if !old.exists() {
        return Ok(0);
    }
    if !segment::list(dir)?.is_empty() {
        finish(dir)?;
        return Ok(0);
    }
    let started = std::time::Instant::now();
    tracing::warn!(file = %old.display(), "spool: migrating the store of an older release");
    let db = redb::Database::open(&old)?;
    let txn = db.begin_read()?;
    let config = txn.open_table(CONFIG)?;
    match config.get("schema_version")?.map(|v| v.value()) {
        Some(OLD_SCHEMA_VERSION) | None => {}
        Some(other) => {
            return Err(StorageError::Corrupt(format!(
                "{FILE_NAME} has schema version {other}; this build migrates version {OLD_SCHEMA_VERSION} only \
                 (drain it with the release that wrote it: `pushgate spool list` / `pushgate spool purge`)"
            )))
        }
    }
    let next_seq = config.get("next_seq")?.map_or(1, |v| v.value());
    let metas = txn.open_table(META)?;
    let bodies = txn.open_table(BODY)?;

    let tmp = dir.join("seg-00000001.log.migrating");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    let mut buf = Vec::with_capacity(CHUNK + (1 << 20));
    format::header(&mut buf, next_seq);
    let mut pos = 0u64;
    let mut moved = 0u64;
    for row in metas.iter()? {
        let (seq, raw) = row?;
        let seq = seq.value();
        let meta: Meta = serde_json::from_slice(raw.value()).map_err(|e| StorageError::corrupt_record(seq, e))?;
        let body = bodies.get(seq)?;
        let body = body.as_ref().map_or(&[][..], |b| b.value());
        let json = serde_json::to_vec(&meta).map_err(|e| StorageError::corrupt_record(seq, e))?;
        format::append(&mut buf, &meta, &json, body);
        if let Some(error) = &meta.last_error {
            // The append carries it in its JSON; a state record carries it into the index.
            format::state(
                &mut buf,
                &format::StateRec {
                    seq,
                    state: meta.state,
                    attempts: meta.attempts,
                    next_attempt_at_ms: meta.next_attempt_at_ms,
                    updated_at_ms: meta.updated_at_ms,
                    last_error: Some(error.clone()),
                },
            );
        }
        moved += 1;
        if buf.len() >= CHUNK {
            file.write_all_at(&buf, pos)?;
            pos += buf.len() as u64;
            buf.clear();
        }
    }
    file.write_all_at(&buf, pos)?;
    pos += buf.len() as u64;
    file.set_len(pos.max(segment::SEGMENT_BYTES))?;
    file.sync_all()?;
    drop((metas, bodies, config, txn, db));
    std::fs::rename(&tmp, segment::path(dir, 1))?;
    std::fs::File::open(dir)?.sync_all()?;
    finish(dir)?;
    tracing::warn!(
        events = moved,
        took_ms = started.elapsed().as_millis() as u64,
        "spool: migration done; the old file is kept as {MIGRATED}"
    );
    Ok(moved)
}

fn finish(dir: &Path) -> Result<(), StorageError> {
    std::fs::rename(dir.join(FILE_NAME), dir.join(MIGRATED))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
