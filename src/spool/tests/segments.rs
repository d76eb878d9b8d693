//! Many segments (64 KiB each here, so a few hundred events fill several): their summaries,
//! the start-up from them or without them, and compaction dropping head segments after
//! copying their live records forward.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::super::{ListQuery, Meta, SeenId, Spool, State, Stats};
use super::{crash_image, delivery, opts};

const SMALL: u64 = 64 << 10;

fn small(dir: &Path) -> Spool {
    Spool::open_sized(dir, opts(), SMALL).expect("open spool")
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

fn body_of(i: usize) -> bytes::Bytes {
    bytes::Bytes::from(vec![b'a' + (i % 26) as u8; 1500])
}

/// Appends events `range` of 1.5 KB; returns their seqs.
async fn fill(spool: &Spool, range: std::ops::Range<usize>) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in range {
        let mut d = delivery("r", &[&format!("e{i}"), &format!("f{i}")], 1000 + i as u64);
        d.body = body_of(i);
        seqs.push(spool.append(d).await.unwrap());
    }
    seqs
}

/// Everything a reader can see: every meta, every id, the stats.
fn snapshot(spool: &Spool) -> (Vec<Meta>, Vec<SeenId>, Stats) {
    let q = ListQuery {
        limit: 10_000,
        ..Default::default()
    };
    let items = spool.list(&q).unwrap().items;
    (items, spool.ids_since(0).unwrap(), spool.stats().unwrap())
}

fn assert_bodies(spool: &Spool, seqs: &[u64], what: &str) {
    for (i, &seq) in seqs.iter().enumerate() {
        if let Some(body) = spool.body(seq).unwrap() {
            assert_eq!(body, body_of(i), "{what}: body of seq {seq}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opens_the_same_from_summaries_without_them_and_with_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let spool = small(dir.path());
    let seqs = fill(&spool, 0..100).await;
    // State records land in later segments than their appends.
    for &seq in seqs.iter().step_by(3) {
        spool.mark_delivered(seq, 1).await.unwrap();
    }
    for &seq in seqs.iter().skip(1).step_by(7) {
        spool.mark_dead(seq, 3, "app said 500").await.unwrap();
    }
    spool.mark_retry(seqs[4], 2, 99, "timeout").await.unwrap();
    assert_eq!(spool.purge(Some("r"), State::Dead).await.unwrap(), 15);
    // More events, so that those state and remove records end up in sealed segments too.
    let mut seqs = seqs;
    seqs.extend(fill(&spool, 100..150).await);
    let before = snapshot(&spool);
    assert_eq!(before.1.len(), 2 * (150 - 15), "two ids per event left");
    spool.close().await;
    let segs = files(dir.path(), "log").len();
    assert!(segs >= 4, "the events fill several segments ({segs})");
    assert_eq!(
        files(dir.path(), "sum").len(),
        segs - 1,
        "every sealed segment is summarised"
    );

    // From the summaries.
    let spool = small(dir.path());
    assert_eq!(snapshot(&spool), before, "opened from summaries");
    assert_eq!(spool.damaged(), 0);
    assert_bodies(&spool, &seqs, "from summaries");
    spool.close().await;

    // As a store written before summaries existed: read in full, and summarised for next time.
    for sum in files(dir.path(), "sum") {
        std::fs::remove_file(sum).unwrap();
    }
    let spool = small(dir.path());
    assert_eq!(snapshot(&spool), before, "opened without summaries");
    assert_bodies(&spool, &seqs, "without summaries");
    spool.close().await;
    let sums = files(dir.path(), "sum");
    assert_eq!(sums.len(), segs - 1, "summaries written again");

    // A damaged summary is ignored: that segment is read in full.
    let mut data = std::fs::read(&sums[0]).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    std::fs::write(&sums[0], &data).unwrap();
    let spool = small(dir.path());
    assert_eq!(snapshot(&spool), before, "opened with a damaged summary");
    assert_eq!(spool.damaged(), 0, "a summary is not the log: nothing was lost");
    let next = spool.append(delivery("r", &["next"], 5000)).await.unwrap();
    assert!(next > *seqs.last().unwrap(), "seqs continue after the summarised ones");
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_a_summarised_segment_is_refused_when_read_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let spool = small(dir.path());
    let seqs = fill(&spool, 0..120).await;
    spool.close().await;
    // Flip a byte of the first event's body, in the first (sealed, summarised) segment.
    let seg = &files(dir.path(), "log")[0];
    let data = std::fs::read(seg).unwrap();
    let at = data.windows(1500).position(|w| w == &body_of(0)[..]).unwrap() + 10;
    let file = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
    file.write_all_at(&[data[at] ^ 0x40], at as u64).unwrap();

    let spool = small(dir.path());
    assert!(spool.body(seqs[0]).is_err(), "a damaged body is never served");
    assert!(spool.meta(seqs[0]).is_err(), "nor its meta");
    assert_eq!(
        spool.body(seqs[1]).unwrap().unwrap(),
        body_of(1),
        "its neighbour is intact"
    );
    // The forwarder's read skips it, counts it and dead-letters it, instead of failing forever.
    let pending: Vec<u64> = spool.pending("r", None, 1000).unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(pending, seqs[1..], "every other event is still pending");
    spool.probe().await.unwrap();
    assert_eq!(spool.damaged(), 1);
    let stats = spool.stats().unwrap();
    assert_eq!((stats.routes["r"].dead, stats.routes["r"].pending), (1, 119));
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_drops_head_segments_and_copied_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let spool = small(dir.path());
    let seqs = fill(&spool, 0..150).await;
    // A few events stay pending, some of them in the first segments.
    let keep: Vec<u64> = [1usize, 2, 40, 77, 149].iter().map(|&i| seqs[i]).collect();
    for &seq in &seqs {
        if !keep.contains(&seq) {
            spool.mark_delivered(seq, 1).await.unwrap();
        }
    }
    let first_segment = files(dir.path(), "log")[0].clone();
    let later = super::super::ops::now_ms() + 2 * 3600 * 1000;
    assert_eq!(spool.compact(later).await.unwrap(), 145);
    // The writer copies the kept events forward and drops emptied head segments when idle: the
    // log, then its summary (two removals: wait for both, or a loaded machine sees between).
    let deadline = Instant::now() + Duration::from_secs(10);
    let gone = || !first_segment.exists() && !first_segment.with_extension("sum").exists();
    while !gone() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!first_segment.exists(), "the first segment is dropped");
    assert!(!first_segment.with_extension("sum").exists(), "and its summary with it");
    let image = crash_image(dir.path());
    let check = |spool: &Spool, what: &str| {
        let pending: Vec<u64> = spool.pending("r", None, 100).unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(pending, keep, "{what}: every kept event is still pending, in order");
        for (i, &seq) in seqs.iter().enumerate() {
            let body = spool.body(seq).unwrap();
            if keep.contains(&seq) {
                assert_eq!(body, Some(body_of(i)), "{what}: body of kept seq {seq}");
            } else {
                assert_eq!(body, None, "{what}: compacted seq {seq} is gone");
            }
        }
        let ids = spool.ids_since(0).unwrap();
        assert_eq!(ids.len(), 2 * keep.len(), "{what}: the kept events' ids");
    };
    check(&spool, "live");
    spool.close().await;
    let reopened = small(dir.path());
    check(&reopened, "after a clean restart");
    reopened.close().await;
    let crashed = small(image.path());
    check(&crashed, "after kill -9");
    crashed.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_that_does_not_fit_its_segment_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let spool = small(dir.path());
    let seqs = fill(&spool, 0..100).await;
    spool.close().await;
    let seg = files(dir.path(), "log")[0].clone();
    let sum = std::fs::read(seg.with_extension("sum")).unwrap();
    let covers = u64::from_le_bytes(sum[12..20].try_into().unwrap());

    // A record after what the summary covers, as if the segment had been written to since.
    let mut rec = Vec::new();
    super::super::format::remove(&mut rec, seqs[0]);
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.write_all_at(&rec, covers).unwrap();
    let spool = small(dir.path());
    assert_eq!(
        spool.meta(seqs[0]).unwrap(),
        None,
        "the segment was read: the remove applies"
    );
    assert_eq!(spool.damaged(), 0);
    let before = snapshot(&spool);
    assert_eq!(before.0.len(), 99);
    spool.close().await;

    // Another segment's summary under this segment's name.
    let sums = files(dir.path(), "sum");
    std::fs::copy(&sums[1], &sums[0]).unwrap();
    let spool = small(dir.path());
    assert_eq!(snapshot(&spool), before, "the misplaced summary was ignored");
    spool.close().await;
}
