//! A damaged record in the middle of the log (a flipped byte) is reported at start-up, in one
//! log line and by `damaged()`, and every intact record around it is kept; a file of a
//! foreign format is refused.

use std::os::unix::fs::FileExt;

use super::super::{ListQuery, Spool, State};
use super::{delivery, open, opts};

fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("marker in the log")
}

fn rfind(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .rposition(|w| w == needle)
        .expect("marker in the log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_reported_and_every_other_record_kept() {
    for target in ["body", "meta", "length"] {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path());
        let mut seqs = Vec::new();
        for i in 0..5 {
            let mut d = delivery("r", &[&format!("e{i}")], i);
            d.body = bytes::Bytes::from(format!("BODY-{i}-{}", "x".repeat(100)));
            seqs.push(spool.append(d).await.unwrap());
        }
        spool.mark_dead(seqs[3], 2, "x").await.unwrap();
        spool.close().await;

        let seg = &segment_files(dir.path())[0];
        let data = std::fs::read(seg).unwrap();
        let body_at = find(&data, b"BODY-2-");
        let at = match target {
            "body" => body_at + 3,
            "meta" => find(&data[..body_at], b"\"e2\"") + 1,
            // The record's length field: 9 bytes of header + fixed prefix before the route.
            _ => rfind(&data[..body_at], b"{\"seq\"") - 1 - 9 - 43,
        };
        let file = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
        file.write_all_at(&[data[at] ^ 0x40], at as u64).unwrap();

        let spool = Spool::open(dir.path(), opts()).unwrap();
        assert_eq!(spool.damaged(), 1, "{target}: the damage is counted");
        assert_eq!(
            spool.meta(seqs[2]).unwrap(),
            None,
            "{target}: the damaged record is not served"
        );
        for &seq in [seqs[0], seqs[1], seqs[3], seqs[4]].iter() {
            let meta = spool
                .meta(seq)
                .unwrap()
                .unwrap_or_else(|| panic!("{target}: seq {seq} kept"));
            assert!(spool.body(seq).unwrap().is_some());
            let want = if seq == seqs[3] { State::Dead } else { State::Pending };
            assert_eq!(meta.state, want, "{target}: later records still apply");
        }
        let q = ListQuery {
            limit: 10,
            ..Default::default()
        };
        assert_eq!(spool.list(&q).unwrap().total, 4);
        let next = spool.append(delivery("r", &["next"], 9)).await.unwrap();
        assert!(next > seqs[4]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_for_unknown_seqs_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    spool.mark_delivered(42, 1).await.unwrap();
    spool.mark_retry(42, 1, 0, "x").await.unwrap();
    spool.mark_dead(42, 1, "x").await.unwrap();
    assert!(!spool.replay(42).await.unwrap());
    assert!(spool.stats().unwrap().routes.is_empty());
}
