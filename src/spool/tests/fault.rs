//! Storage failures injected below redb: a backend whose writes, syncs and resizes fail with
//! ENOSPC while a flag is set, as on a full disk. (Tests run as root, so a read-only file
//! would not fail.)

use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::backends::FileBackend;
use redb::{BackendError, Builder, StorageBackend};

use super::super::writer::Opener;
use super::super::{Spool, StorageError, FILE_NAME};
use super::{delivery, opts};

#[derive(Debug)]
struct DiskFull {
    file: FileBackend,
    full: Arc<AtomicBool>,
}

impl DiskFull {
    fn check(&self) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }
}

impl StorageBackend for DiskFull {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.file.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.file.close()
    }
    fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(s, e)
    }
    fn try_lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(s, e)
    }
    fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(s, e)
    }
    fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(s, e)
    }
    fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(s, e)
    }
    fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(s, e)
    }
}

fn open_faulty(dir: &Path, full: Arc<AtomicBool>) -> Spool {
    let path = dir.join(FILE_NAME);
    let opener: Opener = Box::new(move || {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let backend = DiskFull {
            file: FileBackend::new(file)?,
            full: full.clone(),
        };
        Ok(Builder::new().create_with_backend(backend)?)
    });
    Spool::open_with(opener, opts()).unwrap()
}

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
    let full = Arc::new(AtomicBool::new(false));
    let spool = open_faulty(dir.path(), full.clone());
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(spool.append(delivery("r", &[&format!("ok{i}")], i)).await.unwrap());
    }
    spool.mark_delivered(acked[0]).await.unwrap(); // lazy: may be rolled back by the failure

    full.store(true, Ordering::SeqCst);
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

    // The disk recovers; no restart: appends succeed again (after the reopen backoff).
    full.store(false, Ordering::SeqCst);
    let next = eventually(async || spool.append(delivery("r", &["after"], 12)).await).await;
    assert!(next > *acked.last().unwrap(), "seq {next} continues");
    assert!(spool.reopens() >= 1);
    spool.probe().await.unwrap();
    for &seq in &acked {
        assert!(spool.meta(seq).unwrap().is_some(), "acknowledged {seq} kept");
    }
    let ids: Vec<String> = spool.ids_since(0).unwrap().into_iter().map(|s| s.id).collect();
    assert!(ids.contains(&"after".to_string()));
    spool.close().await;

    // And the file is healthy for the next process.
    let spool = Spool::open(dir.path(), opts()).unwrap();
    assert!(spool.meta(next).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_recover_by_themselves_after_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let spool = open_faulty(dir.path(), full.clone());
    let seq = spool.append(delivery("r", &["a"], 1)).await.unwrap();
    full.store(true, Ordering::SeqCst);
    assert!(spool.append(delivery("r", &["b"], 2)).await.is_err());
    full.store(false, Ordering::SeqCst);
    // No further writes: the writer's retry timer reopens the file on its own.
    let meta = eventually(async || spool.meta(seq)).await;
    assert!(meta.is_some());
}
