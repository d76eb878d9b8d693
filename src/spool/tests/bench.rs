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

/// Reopen time of a crash image of a ~60 MB spool (every record read and checked).
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
    let image = super::crash_image(dir.path());
    let size: u64 = std::fs::read_dir(image.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let start = Instant::now();
    let recovered = open(image.path());
    println!("crash image of {} MB reopened in {:?}", size >> 20, start.elapsed());
    assert_eq!(recovered.stats().unwrap().routes["r"].pending, 64 * 800);
}

/// Issue 11's figures, through the Spool API: appends/s with 32 concurrent appenders of 2.5 KB,
/// bytes on disk per event, then the start-up with N events stored (half pending): open
/// (read and check every record) and the duplicate memory's `ids_since`. N defaults to 1M.
/// `SPOOL_BENCH_DIR=/work/x SPOOL_BENCH_N=1000000 cargo test --release --lib -- --ignored --nocapture start_up_with_many_events`
/// (under `strace -f -c -e trace=fdatasync,fsync,write,pwrite64` for the syscall counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn start_up_with_many_events() {
    let n: usize = std::env::var("SPOOL_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let base = std::env::var("SPOOL_BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    // SPOOL_BENCH_STORE=/path: fill that store once and keep it, so later runs only measure
    // the start-up (filling 1M events takes minutes).
    let kept = std::env::var_os("SPOOL_BENCH_STORE").map(std::path::PathBuf::from);
    let temp = tempfile::tempdir_in(base).unwrap();
    let dir_path = kept.clone().unwrap_or_else(|| temp.path().to_path_buf());
    if kept.as_ref().is_none_or(|k| !k.join("seg-00000001.log").exists()) {
        fill(&dir_path, n).await;
    }
    start_up(&dir_path).await;
}

async fn fill(dir: &std::path::Path, n: usize) {
    let spool = open(dir);
    let body = bytes::Bytes::from(vec![b'x'; 2500]);
    let tasks = 32;
    let commits = spool.commits();
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let spool = spool.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..n / tasks {
                    let mut d = delivery("r", &[&format!("{t}-{i}")], 1_700_000_000_000 + i as u64);
                    d.body = body.clone();
                    seqs.push(spool.append(d).await.unwrap());
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for h in handles {
        seqs.extend(h.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    let batches = spool.commits() - commits;
    println!(
        "{} appends of 2.5 KB by {tasks} tasks in {secs:.1}s = {:.0}/s, {batches} batches ({:.1} events each)",
        seqs.len(),
        seqs.len() as f64 / secs,
        seqs.len() as f64 / batches as f64
    );
    seqs.sort_unstable();
    for &seq in seqs.iter().step_by(2) {
        spool.mark_delivered(seq, 1).await.unwrap();
    }
    spool.close().await;
    let mut blocks = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        use std::os::unix::fs::MetadataExt;
        blocks += e.unwrap().metadata().unwrap().blocks() * 512;
    }
    println!(
        "on disk: {} MB, {:.0} B per event ({:.2}x the 2.5 KB body)",
        blocks >> 20,
        blocks as f64 / seqs.len() as f64,
        blocks as f64 / seqs.len() as f64 / 2500.0
    );
    drop(spool);
}

async fn start_up(dir: &std::path::Path) {
    for cache in ["warm", "again"] {
        let start = Instant::now();
        let spool = open(dir);
        let opened = start.elapsed();
        let rss_open = rss();
        let ids = spool.ids_since(0).unwrap().len();
        let rebuilt = start.elapsed();
        let first = spool.pending("r", None, 200).unwrap().len();
        println!(
            "start-up ({cache} page cache): open {opened:?}, + ids_since ({ids} ids) {rebuilt:?}, first 200 pending {first} at {:?}; pending {}; VmRSS after open {rss_open}, after ids_since {}",
            start.elapsed(),
            spool.stats().unwrap().routes["r"].pending,
            rss()
        );
    }
}

fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap_or("")
        .trim()
        .to_string()
}
