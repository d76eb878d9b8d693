use super::super::{ListQuery, RouteStats, SeenId, State};
use super::{delivery, open, quarantined};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_round_trips_meta_body_and_pending() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let d = delivery("xbs", &["ev-1"], 1_000);
    let seq = spool.append(d.clone()).await.unwrap();

    let meta = spool.meta(seq).unwrap().unwrap();
    assert_eq!(meta.seq, seq);
    assert_eq!(meta.route, "xbs");
    assert_eq!(meta.event_ids, vec!["ev-1".to_string()]);
    assert_eq!(meta.ordering_key.as_deref(), Some("order-1"));
    assert_eq!(meta.received_at_ms, 1_000);
    assert_eq!(meta.client_dn.as_deref(), Some("CN=test"));
    assert_eq!(meta.headers, d.headers);
    assert_eq!(meta.state, State::Pending);
    assert_eq!(meta.attempts, 0);
    assert_eq!(meta.body_len, d.body.len() as u64);
    assert_eq!(spool.body(seq).unwrap().unwrap(), d.body);
    assert_eq!(spool.pending("xbs", None, 10).unwrap(), vec![meta]);
    assert!(spool.pending("other", None, 10).unwrap().is_empty());
    assert_eq!(spool.meta(seq + 1).unwrap(), None);
    assert_eq!(spool.body(seq + 1).unwrap(), None);
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_is_monotonic_across_reopen_even_after_purging_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let a = spool.append(delivery("r", &["a"], 1)).await.unwrap();
    let b = spool.append(quarantined("r", 2)).await.unwrap();
    assert!(b > a);
    // Remove the highest seq: it must still not be handed out again.
    assert_eq!(spool.purge(None, State::Quarantined).await.unwrap(), 1);
    spool.close().await;

    let spool = open(dir.path());
    let c = spool.append(delivery("r", &["c"], 3)).await.unwrap();
    assert!(c > b, "{c} > {b}");
    assert!(spool.meta(a).unwrap().is_some());
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_is_in_seq_order_and_pages_with_after() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let mut seqs = Vec::new();
    for i in 0..10u64 {
        seqs.push(spool.append(delivery("r", &[&format!("e{i}")], i)).await.unwrap());
        spool.append(delivery("other", &["x"], i)).await.unwrap();
    }
    let first = spool.pending("r", None, 4).unwrap();
    assert_eq!(first.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs[..4]);
    let next = spool.pending("r", Some(seqs[3]), 4).unwrap();
    assert_eq!(next.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs[4..8]);
    let rest = spool.pending("r", next.last().map(|m| m.seq), 100).unwrap();
    assert_eq!(rest.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs[8..]);
    assert!(spool.pending("r", Some(u64::MAX), 10).unwrap().is_empty());
    assert!(spool.pending("r", None, 0).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_is_never_pending_until_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let q = spool.append(quarantined("r", 5)).await.unwrap();
    let meta = spool.meta(q).unwrap().unwrap();
    assert_eq!(meta.state, State::Quarantined);
    assert_eq!(meta.quarantine_reason.as_deref(), Some("not JSON"));
    assert!(spool.pending("r", None, 10).unwrap().is_empty());
    assert_eq!(spool.body(q).unwrap().unwrap().as_ref(), b"\xff garbage");

    assert!(spool.replay(q).await.unwrap());
    let pending = spool.pending("r", None, 10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].seq, q);
    assert_eq!(pending[0].quarantine_reason.as_deref(), Some("not JSON"));
    assert!(!spool.replay(q + 100).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_update_pending_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let a = spool.append(delivery("r", &["a"], 10)).await.unwrap();
    let b = spool.append(delivery("r", &["b"], 20)).await.unwrap();
    let c = spool.append(delivery("r", &["c"], 30)).await.unwrap();
    let q = spool.append(quarantined("s", 40)).await.unwrap();
    let stats = spool.stats().unwrap();
    assert_eq!(
        stats.routes["r"],
        RouteStats {
            pending: 3,
            oldest_pending_received_at_ms: Some(10),
            ..Default::default()
        }
    );
    assert_eq!(
        stats.routes["s"],
        RouteStats {
            quarantined: 1,
            ..Default::default()
        }
    );

    spool.mark_retry(a, 1, 99_999, "503 from app").await.unwrap();
    let m = spool.meta(a).unwrap().unwrap();
    assert_eq!((m.state, m.attempts, m.next_attempt_at_ms), (State::Pending, 1, 99_999));
    assert_eq!(m.last_error.as_deref(), Some("503 from app"));

    spool.mark_delivered(a, 1).await.unwrap();
    spool.mark_dead(b, 3, "404 from app").await.unwrap();
    let m = spool.meta(b).unwrap().unwrap();
    assert_eq!((m.state, m.attempts), (State::Dead, 3));
    assert_eq!(
        spool
            .pending("r", None, 10)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        vec![c]
    );
    assert_eq!(
        spool.stats().unwrap().routes["r"],
        RouteStats {
            pending: 1,
            delivered: 1,
            dead: 1,
            quarantined: 0,
            oldest_pending_received_at_ms: Some(30)
        }
    );

    // Replay: dead → pending with attempts reset; delivered → pending too.
    assert!(spool.replay(b).await.unwrap());
    let m = spool.meta(b).unwrap().unwrap();
    assert_eq!((m.state, m.attempts), (State::Pending, 0));
    assert!(spool.replay(a).await.unwrap());
    assert_eq!(spool.pending("r", None, 10).unwrap().len(), 3);
    assert_eq!(
        spool.stats().unwrap().routes["r"].oldest_pending_received_at_ms,
        Some(10)
    );

    // replay_dead only touches the route's dead letters.
    spool.mark_dead(a, 1, "x").await.unwrap();
    spool.mark_dead(b, 1, "x").await.unwrap();
    spool.mark_delivered(c, 1).await.unwrap();
    assert_eq!(spool.replay_dead("s").await.unwrap(), 0);
    assert_eq!(spool.replay_dead("r").await.unwrap(), 2);
    assert_eq!(spool.replay_dead("r").await.unwrap(), 0);
    assert_eq!(
        spool.stats().unwrap().routes["r"],
        RouteStats {
            pending: 2,
            delivered: 1,
            dead: 0,
            quarantined: 0,
            oldest_pending_received_at_ms: Some(10)
        }
    );

    // purge: never pending; only the asked state; per route or all.
    assert_eq!(spool.purge(None, State::Pending).await.unwrap(), 0);
    spool.mark_dead(a, 1, "x").await.unwrap();
    assert_eq!(spool.purge(Some("s"), State::Dead).await.unwrap(), 0);
    assert_eq!(spool.purge(Some("r"), State::Dead).await.unwrap(), 1);
    assert_eq!(spool.meta(a).unwrap(), None);
    assert_eq!(spool.body(a).unwrap(), None);
    assert_eq!(spool.purge(None, State::Quarantined).await.unwrap(), 1);
    assert_eq!(spool.meta(q).unwrap(), None);
    assert_eq!(spool.purge(Some("r"), State::Delivered).await.unwrap(), 1);
    let stats = spool.stats().unwrap();
    assert!(!stats.routes.contains_key("s"), "empty routes disappear: {stats:?}");
    assert_eq!(
        stats.routes["r"],
        RouteStats {
            pending: 1,
            oldest_pending_received_at_ms: Some(20),
            ..Default::default()
        }
    );
    // Purged ids are gone from the journal; the rest stay.
    let ids: Vec<String> = super::ids(&spool);
    assert_eq!(ids, vec!["b".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_pages_and_totals() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    // route r: received 0..10 at 100ms steps; route s: 5 events.
    let mut r = Vec::new();
    for i in 0..10u64 {
        r.push(spool.append(delivery("r", &[&format!("r{i}")], i * 100)).await.unwrap());
    }
    let mut s = Vec::new();
    for i in 0..5u64 {
        s.push(
            spool
                .append(delivery("s", &[&format!("s{i}")], 50 + i * 100))
                .await
                .unwrap(),
        );
    }
    for &seq in &r[..3] {
        spool.mark_dead(seq, 1, "x").await.unwrap();
    }
    spool.mark_delivered(s[0], 1).await.unwrap();
    let seqs = |p: &super::super::Page| p.items.iter().map(|m| m.seq).collect::<Vec<_>>();

    let all = spool
        .list(&ListQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((all.total, all.count), (15, 15));
    let mut expected: Vec<u64> = r.iter().chain(&s).copied().collect();
    expected.sort();
    assert_eq!(seqs(&all), expected, "oldest first");

    let q = ListQuery {
        route: Some("r".into()),
        limit: 4,
        offset: 2,
        ..Default::default()
    };
    let page = spool.list(&q).unwrap();
    assert_eq!((page.total, page.count, page.offset, page.limit), (10, 4, 2, 4));
    assert_eq!(seqs(&page), r[2..6]);

    let q = ListQuery {
        route: Some("r".into()),
        state: Some(State::Dead),
        limit: 2,
        ..Default::default()
    };
    let page = spool.list(&q).unwrap();
    assert_eq!((page.total, seqs(&page)), (3, r[..2].to_vec()));

    let q = ListQuery {
        state: Some(State::Pending),
        limit: 100,
        ..Default::default()
    };
    let page = spool.list(&q).unwrap();
    assert_eq!(page.total, 11);
    assert!(page.items.iter().all(|m| m.state == State::Pending));

    // Time range: start inclusive, end exclusive, on received_at_ms.
    let q = ListQuery {
        start_ms: Some(200),
        end_ms: Some(500),
        limit: 100,
        ..Default::default()
    };
    let page = spool.list(&q).unwrap();
    let mut expected = vec![r[2], r[3], r[4], s[2], s[3], s[4]];
    expected.sort();
    assert_eq!((page.total, seqs(&page)), (6, expected));

    let q = ListQuery {
        route: Some("r".into()),
        state: Some(State::Pending),
        start_ms: Some(300),
        offset: 1,
        limit: 2,
        ..Default::default()
    };
    let page = spool.list(&q).unwrap();
    assert_eq!((page.total, page.count, seqs(&page)), (7, 2, r[4..6].to_vec()));

    // offset past the end and limit 0 still report the total.
    let q = ListQuery {
        route: Some("s".into()),
        offset: 50,
        limit: 10,
        ..Default::default()
    };
    let page = spool.list(&q).unwrap();
    assert_eq!((page.total, page.count), (5, 0));
    let q = ListQuery {
        end_ms: Some(100),
        limit: 0,
        ..Default::default()
    };
    let page = spool.list(&q).unwrap();
    assert_eq!((page.total, page.count), (2, 0));
    let q = ListQuery {
        route: Some("nope".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(spool.list(&q).unwrap().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_since_is_a_range_over_received_time() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    spool.append(delivery("cen", &["a", "b"], 1_000)).await.unwrap();
    spool.append(delivery("gw", &["c"], 2_000)).await.unwrap();
    let dead = spool.append(delivery("gw", &["d"], 3_000)).await.unwrap();
    spool.append(quarantined("gw", 4_000)).await.unwrap(); // no ids
    spool.mark_dead(dead, 1, "x").await.unwrap();

    let all = spool.ids_since(0).unwrap();
    let seen = |route: &str, id: &str, fingerprint: u64, received_at_ms: u64| SeenId {
        route: route.into(),
        id: id.into(),
        fingerprint,
        received_at_ms,
    };
    assert_eq!(
        all,
        vec![
            seen("cen", "a", 0xf00d, 1_000),
            seen("cen", "b", 0xf00e, 1_000),
            seen("gw", "c", 0xf00d, 2_000),
            seen("gw", "d", 0xf00d, 3_000),
        ]
    );
    assert_eq!(spool.ids_since(2_000).unwrap(), all[2..].to_vec());
    assert!(spool.ids_since(3_001).unwrap().is_empty());
}

/// Regression: the segment log had no lock, so a `-u` successor indexed the log while the old
/// process still appended, and never delivered the rest (tests/operations.rs,
/// graceful_upgrade_loses_no_request).
#[tokio::test]
async fn a_second_opener_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let refused = super::super::Spool::open(dir.path(), super::opts())
        .err()
        .expect("the directory is in use");
    assert!(refused.to_string().contains("in use by another process"), "{refused}");
    first.append(delivery("r", &["A"], 1)).await.unwrap();
    first.close().await;
    let second = open(dir.path());
    assert_eq!(second.pending("r", None, 10).unwrap().len(), 1);
}
