//! Storage failures: the writer's writes and syncs fail with ENOSPC while a flag is set, as on
//! a full disk (tests run as root, so a read-only file would not fail; the tmpfs test in
//! tests/spool.rs fills a real disk).

use std::time::{Duration, Instant};

use super::super::{Spool, StorageError};
use super::{delivery, ids, open, opts};

async fn eventually<T>(mut f: impl AsyncFnMut() -> Result<T, StorageError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, StorageError::Io(_)), "{e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("did not recover: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_survives_a_full_disk_and_recovers_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(spool.append(delivery("r", &[&format!("ok{i}")], i)).await.unwrap());
    }
    spool.mark_delivered(acked[0], 1).await.unwrap(); // lazy: waits in memory, survives the failure

    spool.fail_writes(true);
    let err = spool.append(delivery("r", &["lost"], 10)).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Io(msg) if msg.contains("No space left")),
        "{err:?}"
    );
    assert!(matches!(spool.probe().await, Err(StorageError::Io(_))));
    assert!(matches!(
        spool.append(delivery("r", &["lost2"], 11)).await,
        Err(StorageError::Io(_))
    ));
    assert!(
        !ids(&spool).contains(&"lost".to_string()),
        "a refused append is not stored"
    );

    // The disk recovers; no restart: appends succeed again (after the backoff).
    spool.fail_writes(false);
    let next = eventually(async || spool.append(delivery("r", &["after"], 12)).await).await;
    assert!(next > *acked.last().unwrap(), "seq {next} continues");
    assert!(spool.reopens() >= 1);
    spool.probe().await.unwrap();
    for &seq in &acked {
        assert!(spool.meta(seq).unwrap().is_some(), "acknowledged {seq} kept");
    }
    assert!(ids(&spool).contains(&"after".to_string()));
    spool.close().await;

    // And the files are healthy for the next process: nothing damaged, nothing refused kept.
    let spool = Spool::open(dir.path(), opts()).unwrap();
    assert_eq!(spool.damaged(), 0);
    assert!(spool.meta(next).unwrap().is_some());
    assert_eq!(
        spool.meta(acked[0]).unwrap().unwrap().state,
        super::super::State::Delivered,
        "the lazy change waited and was written after the recovery"
    );
    let ids = ids(&spool);
    assert!(!ids.contains(&"lost".to_string()) && !ids.contains(&"lost2".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_keep_working_during_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let seq = spool.append(delivery("r", &["a"], 1)).await.unwrap();
    spool.fail_writes(true);
    assert!(spool.append(delivery("r", &["b"], 2)).await.is_err());
    assert!(spool.meta(seq).unwrap().is_some());
    assert!(spool.body(seq).unwrap().is_some());
    spool.fail_writes(false);
    // No further writes: the writer's retry timer starts a new segment on its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    while spool.reopens() == 0 {
        assert!(Instant::now() < deadline, "no recovery without a write");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
