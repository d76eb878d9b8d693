//! Migration of a `spool.redb` written by the release before the segment log. The old layout is
//! written here by a small writer of its own (its `meta`, `body` and `config` tables, with
//! meta JSON as that release wrote it), then opened with the new engine.

use redb::{Database, TableDefinition};

use super::super::{ListQuery, Spool, State};
use super::opts;

const META: TableDefinition<u64, &[u8]> = TableDefinition::new("meta");
const BODY: TableDefinition<u64, &[u8]> = TableDefinition::new("body");
const CONFIG: TableDefinition<&str, u64> = TableDefinition::new("config");

fn old_meta(seq: u64, id: &str, state: &str, attempts: u32, last_error: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "seq": seq, "route": "cen", "event_ids": [id], "ordering_key": null,
        "received_at_ms": 1_000 + seq, "client_dn": "CN=old", "headers": [["content-type", "application/json"]],
        "state": state, "attempts": attempts, "next_attempt_at_ms": 5_000 + seq,
        "last_error": last_error, "updated_at_ms": 2_000 + seq, "body_len": 6, "quarantine_reason": null
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_redb_store_is_migrated_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::create(dir.path().join("spool.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            let mut body = txn.open_table(BODY).unwrap();
            let mut config = txn.open_table(CONFIG).unwrap();
            config.insert("schema_version", 1).unwrap();
            config.insert("next_seq", 40).unwrap(); // 10..39 were purged
            let rows = [
                (3, "p", "pending", 0, None),
                (5, "r", "pending", 2, Some("timeout")),
                (7, "d", "delivered", 1, None),
                (9, "x", "dead", 8, Some("gone")),
            ];
            for (seq, id, state, attempts, err) in rows {
                meta.insert(seq, old_meta(seq, id, state, attempts, err).as_slice())
                    .unwrap();
                body.insert(seq, format!("body-{seq}").as_bytes()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    let spool = Spool::open(dir.path(), opts()).unwrap();
    assert!(!dir.path().join("spool.redb").exists());
    assert!(dir.path().join("spool.redb.migrated").exists(), "the old file is kept");
    let m = spool.meta(5).unwrap().unwrap();
    assert_eq!((m.state, m.attempts, m.next_attempt_at_ms), (State::Pending, 2, 5_005));
    assert_eq!((m.received_at_ms, m.updated_at_ms), (1_005, 2_005));
    assert_eq!(m.last_error.as_deref(), Some("timeout"));
    assert_eq!(m.client_dn.as_deref(), Some("CN=old"));
    assert!(m.fingerprints.is_empty());
    assert_eq!(spool.body(5).unwrap().unwrap(), "body-5");
    assert_eq!(spool.meta(7).unwrap().unwrap().state, State::Delivered);
    assert_eq!(spool.meta(9).unwrap().unwrap().last_error.as_deref(), Some("gone"));
    let pending: Vec<u64> = spool.pending("cen", None, 10).unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(pending, vec![3, 5]);
    let ids: Vec<_> = spool
        .ids_since(0)
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.fingerprint))
        .collect();
    assert_eq!(ids.len(), 4);
    assert!(ids.iter().all(|(_, fp)| *fp == 0));
    let next = spool.append(super::delivery("cen", &["new"], 1)).await.unwrap();
    assert_eq!(next, 40, "seqs continue after the old store's, purged tail included");
    spool.close().await;

    // The second start reads the log only.
    let spool = Spool::open(dir.path(), opts()).unwrap();
    let q = ListQuery {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(spool.list(&q).unwrap().total, 5);
    assert_eq!(spool.damaged(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_interrupted_after_the_new_segment_is_finished_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), opts()).unwrap();
    let seq = spool.append(super::delivery("cen", &["a"], 1)).await.unwrap();
    spool.close().await;
    // The old file still there next to a finished segment: only the rename is left to do.
    Database::create(dir.path().join("spool.redb")).unwrap();
    let spool = Spool::open(dir.path(), opts()).unwrap();
    assert!(spool.meta(seq).unwrap().is_some());
    assert!(dir.path().join("spool.redb.migrated").exists());
}
