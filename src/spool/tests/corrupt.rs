//! Damaged records surface as `StorageError::Corrupt`, never as a panic, and do not stall the
//! rest of the spool.

use redb::Database;

use super::super::schema::{CONFIG, KEY_SCHEMA, META};
use super::super::{ListQuery, Spool, State, StorageError, FILE_NAME};
use super::{delivery, open, opts};

fn tamper(dir: &std::path::Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = Database::open(dir.join(FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_meta_record_is_reported_and_skipped_by_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let bad = spool.append(delivery("r", &["bad"], 1)).await.unwrap();
    let good = spool.append(delivery("r", &["good"], 2)).await.unwrap();
    spool.mark_dead(bad, 1, "x").await.unwrap();
    spool.mark_dead(good, 1, "x").await.unwrap();
    spool.close().await;
    tamper(dir.path(), |txn| {
        txn.open_table(META)
            .unwrap()
            .insert(bad, b"{not json".as_slice())
            .unwrap();
    });

    let spool = open(dir.path());
    assert!(matches!(spool.meta(bad), Err(StorageError::Corrupt(m)) if m.contains(&bad.to_string())));
    let q = ListQuery {
        state: Some(State::Dead),
        limit: 10,
        ..Default::default()
    };
    assert!(matches!(spool.list(&q), Err(StorageError::Corrupt(_))));
    assert!(matches!(spool.mark_delivered(bad).await, Err(StorageError::Corrupt(_))));
    assert!(matches!(spool.replay(bad).await, Err(StorageError::Corrupt(_))));
    // The rest of the spool works; a sweep steps over the bad record.
    assert_eq!(spool.meta(good).unwrap().unwrap().state, State::Dead);
    assert_eq!(spool.replay_dead("r").await.unwrap(), 1);
    assert_eq!(spool.meta(good).unwrap().unwrap().state, State::Pending);
    assert_eq!(spool.purge(None, State::Dead).await.unwrap(), 0);
    assert!(spool.append(delivery("r", &["next"], 3)).await.is_ok());
    assert_eq!(spool.stats().unwrap().routes["r"].dead, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).close().await;
    tamper(dir.path(), |txn| {
        txn.open_table(CONFIG).unwrap().insert(KEY_SCHEMA, 99).unwrap();
    });
    assert!(matches!(Spool::open(dir.path(), opts()), Err(StorageError::Corrupt(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_for_unknown_seqs_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    spool.mark_delivered(42).await.unwrap();
    spool.mark_retry(42, 1, 0, "x").await.unwrap();
    spool.mark_dead(42, 1, "x").await.unwrap();
    assert!(!spool.replay(42).await.unwrap());
    assert!(spool.stats().unwrap().routes.is_empty());
}
