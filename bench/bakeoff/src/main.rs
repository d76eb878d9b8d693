//! Store bake-off for issue 11: one durable commit per batch of 32 × 2.5 KB events, N events,
//! through fjall 3, redb (tuned) and a minimal CRC-framed preallocated segment log.
//! `cargo run --release --manifest-path bench/bakeoff/Cargo.toml -- [N] [dir]`

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

const BATCH: usize = 32;
const BODY: usize = 2500;

fn body(i: u64) -> Vec<u8> {
    let mut b = vec![b'x'; BODY];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b
}

fn meta(i: u64) -> Vec<u8> {
    format!("{{\"seq\":{i},\"route\":\"mastercard\",\"ids\":[\"evt-{i}\"],\"state\":0,\"received_at_ms\":1700000000000}}")
        .into_bytes()
}

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        if md.is_dir() {
            total += du(&e.path());
        } else {
            use std::os::unix::fs::MetadataExt;
            total += md.blocks() * 512;
        }
    }
    total
}

fn report(name: &str, n: u64, secs: f64, dir: &Path, reopen: f64) {
    let bytes = du(dir);
    println!(
        "{name:<10} {n} events  {:>9.0} ev/s  {:>7.1} batches/s  {:>6.0} B/event on disk ({:.2}x)  reopen {:.3}s",
        n as f64 / secs,
        n as f64 / BATCH as f64 / secs,
        bytes as f64 / n as f64,
        bytes as f64 / n as f64 / BODY as f64,
        reopen
    );
}

fn fjall_run(n: u64, dir: &Path) {
    use fjall::{Database, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};
    let t = Instant::now();
    {
        let db = Database::builder(dir).open().unwrap();
        let metas = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
        let bodies = db
            .keyspace("body", || {
                KeyspaceCreateOptions::default().with_kv_separation(Some(KvSeparationOptions::default()))
            })
            .unwrap();
        let mut i = 0u64;
        while i < n {
            let mut b = db.batch();
            for _ in 0..BATCH {
                b.insert(&metas, i.to_be_bytes(), meta(i));
                b.insert(&bodies, i.to_be_bytes(), body(i));
                i += 1;
            }
            b.commit().unwrap();
            db.persist(PersistMode::SyncData).unwrap();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let r = Instant::now();
    {
        let db = Database::builder(dir).open().unwrap();
        let metas = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
        assert!(metas.get(0u64.to_be_bytes()).unwrap().is_some());
    }
    report("fjall", n, secs, dir, r.elapsed().as_secs_f64());
}

fn redb_run(n: u64, dir: &Path) {
    use redb::{Database, ReadableDatabase, TableDefinition};
    const META: TableDefinition<u64, &[u8]> = TableDefinition::new("meta");
    const BODYT: TableDefinition<u64, &[u8]> = TableDefinition::new("body");
    let path = dir.join("spool.redb");
    let t = Instant::now();
    {
        let db = Database::create(&path).unwrap();
        let mut i = 0u64;
        while i < n {
            let mut txn = db.begin_write().unwrap();
            txn.set_quick_repair(false);
            {
                let mut m = txn.open_table(META).unwrap();
                let mut b = txn.open_table(BODYT).unwrap();
                for _ in 0..BATCH {
                    m.insert(i, meta(i).as_slice()).unwrap();
                    b.insert(i, body(i).as_slice()).unwrap();
                    i += 1;
                }
            }
            txn.commit().unwrap();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let r = Instant::now();
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let m = txn.open_table(META).unwrap();
        assert!(m.get(0).unwrap().is_some());
    }
    report("redb", n, secs, dir, r.elapsed().as_secs_f64());
}

const SEGMENT: u64 = 64 << 20;

fn log_run(n: u64, dir: &Path, zero: bool) {
    let t = Instant::now();
    let mut seg_no = 0u32;
    let open_seg = |no: u32| -> File {
        let f = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(dir.join(format!("{no:08}.seg")))
            .unwrap();
        if zero {
            // Real preallocation: written zeros, so later fdatasyncs carry no extent changes.
            let zeros = vec![0u8; 4 << 20];
            for i in 0..SEGMENT / zeros.len() as u64 {
                f.write_all_at(&zeros, i * zeros.len() as u64).unwrap();
            }
        } else {
            f.set_len(SEGMENT).unwrap();
        }
        f.sync_all().unwrap();
        f
    };
    let mut file = open_seg(seg_no);
    let mut pos = 0u64;
    let mut buf = Vec::with_capacity(BATCH * (BODY + 200));
    let mut i = 0u64;
    while i < n {
        buf.clear();
        for _ in 0..BATCH {
            let mut payload = meta(i);
            payload.extend_from_slice(&body(i));
            let crc = crc32fast::hash(&payload);
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc.to_le_bytes());
            buf.push(1);
            buf.extend_from_slice(&payload);
            i += 1;
        }
        if pos + buf.len() as u64 > SEGMENT {
            seg_no += 1;
            file = open_seg(seg_no);
            pos = 0;
        }
        file.write_all_at(&buf, pos).unwrap();
        pos += buf.len() as u64;
        file.sync_data().unwrap();
    }
    drop(file);
    let secs = t.elapsed().as_secs_f64();
    // Reopen = scan every record header and check every CRC (the worst case).
    let r = Instant::now();
    let mut count = 0u64;
    for no in 0..=seg_no {
        let data = std::fs::read(dir.join(format!("{no:08}.seg"))).unwrap();
        let mut p = 0usize;
        while p + 9 <= data.len() {
            let len = u32::from_le_bytes(data[p..p + 4].try_into().unwrap()) as usize;
            if len == 0 || p + 9 + len > data.len() {
                break;
            }
            let crc = u32::from_le_bytes(data[p + 4..p + 8].try_into().unwrap());
            assert_eq!(crc, crc32fast::hash(&data[p + 9..p + 9 + len]));
            p += 9 + len;
            count += 1;
        }
    }
    assert_eq!(count, n);
    report(if zero { "log-zeroed" } else { "log-sparse" }, n, secs, dir, r.elapsed().as_secs_f64());
    let _ = std::io::stdout().flush();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let only = args.get(2).cloned();
    let base = std::env::var("BAKEOFF_DIR").unwrap_or_else(|_| "/work/bakeoff-data".into());
    std::fs::create_dir_all(&base).unwrap();
    for name in ["log", "logzero", "fjall", "redb"] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let dir = tempfile::tempdir_in(&base).unwrap();
        match name {
            "fjall" => fjall_run(n, dir.path()),
            "redb" => redb_run(n, dir.path()),
            "logzero" => log_run(n, dir.path(), true),
            _ => log_run(n, dir.path(), false),
        }
    }
}
