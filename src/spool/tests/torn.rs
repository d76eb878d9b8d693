//! Torn tail: the last write cut at every byte offset (as a crash during the write leaves it).
//! Start-up keeps every fully written record, reports a cut-off record once, never panics,
//! and the next append continues cleanly after the last good record.

use std::os::unix::fs::FileExt;

use super::super::{Spool, State};
use super::{delivery, open, opts};

/// Hundreds of opens, each cutting the tail off with an fsync: on tmpfs where there is one
/// (the format does not depend on the file system), so the test takes seconds, not minutes.
fn scratch() -> tempfile::TempDir {
    match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

fn segment(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("seg-00000001.log")
}

/// End of the written data: bodies end in a non-zero byte, the preallocated rest is zeros.
fn data_end(dir: &std::path::Path) -> usize {
    let data = std::fs::read(segment(dir)).unwrap();
    data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_write_keeps_every_committed_record() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let mut kept = Vec::new();
    for i in 0..4 {
        let mut d = delivery("r", &[&format!("ok{i}")], i);
        d.body = bytes::Bytes::from(format!("body {i} ."));
        kept.push(spool.append(d).await.unwrap());
    }
    spool.close().await;
    let before = data_end(dir.path());

    // The final writes: a lazy state change, then an append.
    let spool = open(dir.path());
    spool.mark_delivered(kept[0], 1).await.unwrap();
    let mut d = delivery("r", &["last"], 9);
    d.body = bytes::Bytes::from_static(b"the last body .");
    let last = spool.append(d).await.unwrap();
    spool.close().await;
    let after = data_end(dir.path());
    assert!(after > before + 40);
    let data = std::fs::read(segment(dir.path())).unwrap()[..after].to_vec();
    let state_record_end = before + 9 + 30; // the delivered record, no error text

    for cut in before..after {
        let image = scratch();
        std::fs::write(segment(image.path()), &data[..cut]).unwrap();
        let spool = Spool::open(image.path(), opts()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let whole = cut == before || cut == state_record_end;
        assert_eq!(spool.damaged(), u64::from(!whole), "cut at {cut}");
        for &seq in &kept {
            assert!(spool.meta(seq).unwrap().is_some(), "cut at {cut}: seq {seq} lost");
        }
        let delivered = spool.meta(kept[0]).unwrap().unwrap().state == State::Delivered;
        assert_eq!(delivered, cut >= state_record_end, "cut at {cut}");
        assert_eq!(spool.meta(last).unwrap(), None, "cut at {cut}");
        // (A few cuts only: each reopen reads the whole 64 MiB preallocated segment.)
        if cut % 101 == 0 || cut == before + 1 {
            // Appending after the cut, and reopening, finds a clean log.
            let next = spool.append(delivery("r", &["next"], 10)).await.unwrap();
            assert!(next > kept[3]);
            spool.close().await;
            let spool = Spool::open(image.path(), opts()).unwrap();
            assert_eq!(spool.damaged(), 0, "cut at {cut}: the torn tail was cut off");
            assert!(spool.meta(next).unwrap().is_some());
        }
    }

    // A flipped byte in the last write's append is reported like a cut.
    let image = tempfile::tempdir().unwrap();
    std::fs::write(segment(image.path()), &data).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment(image.path()))
        .unwrap();
    file.write_all_at(&[data[after - 3] ^ 1], (after - 3) as u64).unwrap();
    let spool = Spool::open(image.path(), opts()).unwrap();
    assert_eq!(spool.damaged(), 1);
    assert!(spool.meta(kept[3]).unwrap().is_some());
}
