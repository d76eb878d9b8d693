use std::time::Duration;

use super::super::{ListQuery, State};
use super::{delivery, open, opts, quarantined};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_removes_only_delivered_older_than_retention() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let retention = opts().retention.as_millis() as u64;
    let a = spool.append(delivery("r", &["a"], 1)).await.unwrap();
    let b = spool.append(delivery("r", &["b"], 2)).await.unwrap();
    let pending = spool.append(delivery("r", &["c"], 3)).await.unwrap();
    let dead = spool.append(delivery("r", &["d"], 4)).await.unwrap();
    let quarantine = spool.append(quarantined("r", 5)).await.unwrap();
    spool.mark_delivered(a, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    spool.mark_delivered(b, 1).await.unwrap();
    spool.mark_dead(dead, 2, "x").await.unwrap();
    let t_a = spool.meta(a).unwrap().unwrap().updated_at_ms;
    let t_b = spool.meta(b).unwrap().unwrap().updated_at_ms;
    assert!(t_a < t_b);

    // b is exactly at the retention boundary: kept.
    assert_eq!(spool.compact(t_b + retention).await.unwrap(), 1);
    assert_eq!(spool.meta(a).unwrap(), None);
    assert_eq!(spool.body(a).unwrap(), None);
    assert!(spool.meta(b).unwrap().is_some());
    assert_eq!(spool.compact(t_b + retention).await.unwrap(), 0);

    // Far in the future: every delivered goes, nothing else does.
    assert_eq!(spool.compact(u64::MAX).await.unwrap(), 1);
    for seq in [pending, dead, quarantine] {
        assert!(spool.meta(seq).unwrap().is_some(), "seq {seq} kept");
    }
    let rs = &spool.stats().unwrap().routes["r"];
    assert_eq!((rs.pending, rs.delivered, rs.dead, rs.quarantined), (1, 0, 1, 1));
    let ids: Vec<String> = super::ids(&spool);
    assert_eq!(ids, vec!["c".to_string(), "d".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sweeps_run_in_chunks_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let n = 2_500u64; // more than two sweep chunks
    let appends: Vec<_> = (0..n)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(delivery("r", &[&format!("e{i}")], i)).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in appends {
        seqs.push(task.await.unwrap().unwrap());
    }
    let marks: Vec<_> = seqs
        .iter()
        .map(|&seq| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.mark_dead(seq, 1, "x").await })
        })
        .collect();
    for task in marks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(spool.replay_dead("r").await.unwrap(), n);
    let marks: Vec<_> = seqs
        .iter()
        .map(|&seq| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.mark_delivered(seq, 1).await })
        })
        .collect();
    for task in marks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(spool.compact(u64::MAX).await.unwrap(), n);
    let q = ListQuery {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(spool.list(&q).unwrap().total, 0);
    assert!(spool.stats().unwrap().routes.is_empty());

    let appends: Vec<_> = (0..n)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(quarantined("q", i)).await })
        })
        .collect();
    for task in appends {
        task.await.unwrap().unwrap();
    }
    assert_eq!(spool.purge(Some("q"), State::Quarantined).await.unwrap(), n);
    assert!(spool.ids_since(0).unwrap().is_empty());
}
