//! Append throughput, 1 task vs 64 concurrent tasks. Not a test; run with
//! `cargo test --release -- --ignored --nocapture append_throughput`.

use std::time::Instant;

use super::{delivery, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn append_throughput() {
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    for tasks in [1usize, 64] {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path());
        let per_task = if tasks == 1 { 500 } else { 100 };
        let commits = spool.commits();
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let spool = spool.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    for i in 0..per_task {
                        let mut d = delivery("r", &[&format!("{t}-{i}")], 0);
                        d.body = body.clone();
                        spool.append(d).await.unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let n = (tasks * per_task) as f64;
        println!(
            "{tasks:>2} task(s): {n} appends in {secs:.2}s = {:.0}/s, {} commits, {:.2} ms/append latency",
            n / secs,
            spool.commits() - commits,
            secs * 1000.0 / (per_task as f64)
        );
        spool.close().await;
    }
}

/// Reopen time of a crash image of a ~60 MB spool (redb repairs it on open).
/// `cargo test --release -- --ignored --nocapture crash_reopen_time`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn crash_reopen_time() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    let handles: Vec<_> = (0..64)
        .map(|t| {
            let spool = spool.clone();
            let body = body.clone();
            tokio::spawn(async move {
                for i in 0..800 {
                    let mut d = delivery("r", &[&format!("{t}-{i}")], 0);
                    d.body = body.clone();
                    spool.append(d).await.unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let image = tempfile::tempdir().unwrap();
    let file = super::super::FILE_NAME;
    std::fs::copy(dir.path().join(file), image.path().join(file)).unwrap();
    let size = std::fs::metadata(image.path().join(file)).unwrap().len();
    let start = Instant::now();
    let recovered = open(image.path());
    println!("crash image of {} MB reopened in {:?}", size >> 20, start.elapsed());
    assert_eq!(recovered.stats().unwrap().routes["r"].pending, 64 * 800);
}
