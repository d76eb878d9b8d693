//! Group commit, crash images, and the lazy durability of forwarder state changes.
//!
//! A "crash image" is a copy of the files taken while the spool is still open (see
//! [`super::crash_image`]).

use std::time::Duration;

use super::super::State;
use super::{crash_image, delivery, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let before = spool.commits();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(delivery("r", &[&format!("e{i}")], i)).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap());
    }
    let commits = spool.commits() - before;
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 200, "every append got its own seq");
    assert!(commits < 50, "200 appends took {commits} commits");
    assert_eq!(spool.pending("r", None, 1000).unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_image_keeps_every_acknowledged_append_and_seq_continues() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let mut seqs = Vec::new();
    for i in 0..20 {
        seqs.push(spool.append(delivery("r", &[&format!("e{i}")], i)).await.unwrap());
    }
    let image = crash_image(dir.path());
    let recovered = open(image.path());
    for &seq in &seqs {
        assert!(recovered.meta(seq).unwrap().is_some(), "seq {seq} survived");
        assert!(recovered.body(seq).unwrap().is_some());
    }
    assert_eq!(recovered.stats().unwrap().routes["r"].pending, 20);
    let next = recovered.append(delivery("r", &["next"], 99)).await.unwrap();
    assert!(next > *seqs.last().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_state_changes_become_durable_with_the_next_immediate_commit() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let a = spool.append(delivery("r", &["a"], 1)).await.unwrap();
    let commits = spool.commits();
    spool.mark_delivered(a, 1).await.unwrap();
    assert_eq!(spool.commits(), commits, "no fdatasync for a state change");
    assert_eq!(
        spool.meta(a).unwrap().unwrap().state,
        State::Delivered,
        "visible at once"
    );

    // Written, not fsync'd: it survives kill -9 (a power loss could roll it back to pending,
    // a redelivery, never a loss); no sync was spent on it.
    let image = crash_image(dir.path());
    let recovered = open(image.path());
    assert_eq!(recovered.meta(a).unwrap().unwrap().state, State::Delivered);
    drop(recovered);

    // The next append's Immediate commit carries the earlier change with it.
    let b = spool.append(delivery("r", &["b"], 2)).await.unwrap();
    let image = crash_image(dir.path());
    let recovered = open(image.path());
    assert_eq!(recovered.meta(a).unwrap().unwrap().state, State::Delivered);
    assert_eq!(recovered.meta(b).unwrap().unwrap().state, State::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_state_changes_are_flushed_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let a = spool.append(delivery("r", &["a"], 1)).await.unwrap();
    spool.mark_retry(a, 1, 12_345, "timeout").await.unwrap();
    tokio::time::sleep(super::super::writer::FLUSH_AFTER + Duration::from_millis(500)).await;
    let image = crash_image(dir.path());
    let recovered = open(image.path());
    assert_eq!(recovered.meta(a).unwrap().unwrap().attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_drop_persist_lazy_changes_and_stop_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let a = spool.append(delivery("r", &["a"], 1)).await.unwrap();
    let b = spool.append(delivery("r", &["b"], 2)).await.unwrap();
    spool.mark_dead(a, 4, "gone").await.unwrap();
    spool.close().await;
    assert_eq!(
        spool.append(delivery("r", &["c"], 3)).await,
        Err(super::super::StorageError::Closed)
    );
    assert_eq!(spool.meta(a), Err(super::super::StorageError::Closed));
    assert_eq!(spool.probe().await, Err(super::super::StorageError::Closed));
    spool.close().await; // idempotent
    drop(spool);

    let spool = open(dir.path());
    assert_eq!(spool.meta(a).unwrap().unwrap().state, State::Dead);
    spool.mark_delivered(b, 1).await.unwrap();
    drop(spool); // no close(): the last handle's drop flushes and closes

    let spool = open(dir.path());
    assert_eq!(spool.meta(b).unwrap().unwrap().state, State::Delivered);
    spool.probe().await.unwrap();
}

/// Regression (issue: a delivered event showed `attempts: 0` while the app had seen attempt 1,
/// and kept its old `last_error` after a successful replay). Also after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_records_its_attempt_and_forgets_the_last_error() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let a = spool.append(delivery("r", &["a"], 1)).await.unwrap();
    let b = spool.append(delivery("r", &["b"], 2)).await.unwrap();
    spool.mark_retry(a, 1, 0, "503 from app").await.unwrap();
    spool.mark_delivered(a, 2).await.unwrap();
    spool.mark_dead(b, 3, "404 from app").await.unwrap();
    assert!(spool.replay(b).await.unwrap());
    let replayed = spool.meta(b).unwrap().unwrap();
    assert_eq!((replayed.attempts, replayed.last_error), (0, None));
    spool.mark_delivered(b, 1).await.unwrap();
    let delivered = |spool: &super::super::Spool| {
        for (seq, attempts) in [(a, 2), (b, 1)] {
            let m = spool.meta(seq).unwrap().unwrap();
            assert_eq!(
                (m.state, m.attempts, m.last_error),
                (State::Delivered, attempts, None),
                "seq {seq}"
            );
        }
    };
    delivered(&spool);
    spool.close().await;
    delivered(&open(dir.path()));
}
