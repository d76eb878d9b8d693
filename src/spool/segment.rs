//! Segment files: naming, creation with preallocation, and the start-up scan that rebuilds the
//! index from them and reports damage. Segments are `seg-00000001.log`, … in the storage
//! directory, each preallocated to [`SEGMENT_BYTES`] with `set_len` (a sparse extent: a 4 MiB
//! tmpfs still holds one), so appends never change the file size and `fdatasync` has no size
//! to write back. Start-up replays a sealed segment from its summary (`summary.rs`) when it
//! has a valid one, and reads (and CRC-checks) only the others, the last one always.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::StorageError;
use super::format::{self, Found};
use super::index::{Entry, Index, Loc, SegNo, Segment};
use super::model::Seq;
use super::summary::{self, Builder, Summary};

/// Segment size: big enough that rolling (one directory fsync) is rare, small enough that
/// dropping a segment frees space soon after its events are gone.
pub(crate) const SEGMENT_BYTES: u64 = 64 << 20;

pub(crate) fn path(dir: &Path, no: SegNo) -> PathBuf {
    dir.join(format!("seg-{no:08}.log"))
}

fn parse_name(name: &str) -> Option<SegNo> {
    name.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()
}

/// Segment numbers present in `dir`, ascending.
pub(crate) fn list(dir: &Path) -> Result<Vec<SegNo>, StorageError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(no) = entry?.file_name().to_str().and_then(parse_name) {
            out.push(no);
        }
    }
    out.sort_unstable();
    Ok(out)
}

pub(crate) fn open_file(dir: &Path, no: SegNo) -> Result<File, StorageError> {
    Ok(OpenOptions::new().read(true).write(true).open(path(dir, no))?)
}

/// Creates segment `no`, `size` bytes long (sparse), holding only its header, and makes it
/// (and its name) durable.
pub(crate) fn create(dir: &Path, no: SegNo, next_seq: Seq, size: u64) -> Result<File, StorageError> {
    let p = path(dir, no);
    let result = (|| {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&p)?;
        file.set_len(size)?;
        let mut buf = Vec::with_capacity(32);
        format::header(&mut buf, next_seq);
        file.write_all_at(&buf, 0)?;
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok::<_, std::io::Error>(file)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&p);
        StorageError::from(e)
    })
}

/// The summary of a segment just created with [`create`] (its header only).
pub(crate) fn new_summary(next_seq: Seq) -> Builder {
    let mut buf = Vec::with_capacity(32);
    format::header(&mut buf, next_seq);
    let mut summary = Builder::default();
    summary.records(&buf, 0);
    summary
}

/// Where the first record after a segment's header starts.
pub(crate) fn header_len() -> u64 {
    let mut buf = Vec::new();
    format::header(&mut buf, 0);
    buf.len() as u64
}

/// Removes everything after `end` (the end of the valid records), keeping the preallocation.
pub(crate) fn cut(file: &File, end: u64) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    file.set_len(end)?;
    file.set_len(len.max(SEGMENT_BYTES))?;
    file.sync_all()
}

/// Damage found by the scan, reported once at start-up.
#[derive(Debug, Default)]
pub(crate) struct Damage {
    /// Damaged or cut-off regions skipped (each counts once).
    pub records: u64,
    pub bytes: u64,
    /// The first few places, for the log line.
    pub places: Vec<String>,
}

impl Damage {
    fn note(&mut self, seg: SegNo, at: usize, bytes: usize, what: &str) {
        self.records += 1;
        self.bytes += bytes as u64;
        if self.places.len() < 8 {
            self.places.push(format!("seg {seg} @{at}: {bytes} bytes {what}"));
        }
    }
}

/// What the scan of all segments produced.
pub(crate) struct Scanned {
    pub index: Index,
    pub next_seq: Seq,
    /// The segment to append to and the offset of its first free byte.
    pub active: Option<(SegNo, u64)>,
    /// The summary of the active segment so far; `None` if it had damage (a summary is only
    /// written for a segment that reads back whole, so damage is reported at every start).
    pub summary: Option<Builder>,
    pub damage: Damage,
}

/// Rebuilds the index from every segment in order. A sealed segment with a valid summary is
/// replayed from it (see `summary.rs`); any other is read whole, every record's CRC checked,
/// and replayed record by record (and a summary written for it, so the next start is fast).
/// A bad region is skipped to the next valid record and counted; in the last segment, a bad
/// region with nothing valid after it is the torn tail of a write that was never
/// acknowledged, and is cut off so that new appends follow the last good record.
pub(crate) fn scan(dir: &Path) -> Result<Scanned, StorageError> {
    let nos = list(dir)?;
    remove_stray_summaries(dir, &nos);
    let mut index = Index::default();
    let mut next_seq: Seq = 1;
    let mut damage = Damage::default();
    let mut active = None;
    let mut active_summary = None;
    for (i, &no) in nos.iter().enumerate() {
        let last = i + 1 == nos.len();
        let file = open_file(dir, no)?;
        if !last {
            if let Some(sum) = Summary::load(dir, no).filter(|s| s.matches(&file)) {
                for e in sum.entries() {
                    apply(&mut index, &mut next_seq, no, e.at, e.kind, e.stored, e.payload_len);
                }
                let mut seg = Segment::empty(Arc::new(file), sum.covers);
                seg.summarized = true;
                index.segments.insert(no, seg);
                continue;
            }
        } else {
            // The segment appends continue in: any summary of it is from an earlier life.
            let _ = std::fs::remove_file(summary::path(dir, no));
        }
        let data = read_all(&file)?;
        let damage_before = damage.records;
        let mut builder = Builder::default();
        let mut at = 0usize;
        let mut end = 0usize;
        while at < data.len() {
            match format::read(&data, at) {
                Found::End => break,
                Found::Record { kind, payload, next } => {
                    if at == 0 && kind != format::KIND_HEADER {
                        damage.note(no, at, 0, "segment without header");
                    }
                    apply(&mut index, &mut next_seq, no, at as u64, kind, payload, payload.len());
                    builder.record(at as u64, kind, payload);
                    at = next;
                    end = next;
                }
                Found::Bad => match format::resync(&data, at + 1) {
                    Some(good) => {
                        damage.note(no, at, good - at, "damaged, skipped");
                        at = good;
                    }
                    None => {
                        let rest = data[at..].iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                        let what = if last {
                            "torn tail, cut off"
                        } else {
                            "damaged segment tail"
                        };
                        damage.note(no, at, rest, what);
                        break;
                    }
                },
            }
        }
        let written = end as u64;
        if last && written == 0 {
            // Created but its header never written (a crash while rolling): start it afresh.
            drop(file);
            std::fs::remove_file(path(dir, no))?;
            break;
        }
        let torn_tail = last && data[end..].iter().any(|&b| b != 0);
        if torn_tail {
            cut(&file, written)?;
        }
        // A cut-off torn tail leaves the segment whole; damage anywhere else is kept out of
        // summaries so that it is found again at every start.
        let whole = damage.records == damage_before || (torn_tail && damage.records == damage_before + 1);
        let mut seg = Segment::empty(Arc::new(file), written);
        if last {
            active = Some((no, written));
            active_summary = whole.then_some(builder);
        } else if whole {
            match builder.write(dir, no, written) {
                Ok(()) => seg.summarized = true,
                Err(e) => tracing::warn!(segment = no, error = %e, "spool: cannot write a segment summary"),
            }
        }
        index.segments.insert(no, seg);
    }
    index.entries.settle();
    // Live counts per segment, now that every record is in place.
    for s in index.segments.values_mut() {
        (s.live, s.live_bytes) = (0, 0);
    }
    let mut counts: Vec<(SegNo, u64)> = index
        .entries
        .iter()
        .map(|(_, e)| (e.loc.seg, e.loc.record_len()))
        .collect();
    counts.sort_unstable_by_key(|c| c.0);
    for (seg, bytes) in counts {
        if let Some(s) = index.segments.get_mut(&seg) {
            s.live += 1;
            s.live_bytes += bytes;
        }
    }
    Ok(Scanned {
        index,
        next_seq,
        active,
        summary: active_summary,
        damage,
    })
}

/// Summaries whose segment is gone (dropped after a crash between the two removals) and
/// unfinished temporary files.
fn remove_stray_summaries(dir: &Path, nos: &[SegNo]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stray =
            name.ends_with(".sum.tmp") || summary::parse_name(name).is_some_and(|no| nos.binary_search(&no).is_err());
        if stray {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn read_all(file: &File) -> Result<Vec<u8>, StorageError> {
    let len = file.metadata()?.len();
    let len = usize::try_from(len).map_err(|_| StorageError::Corrupt("segment larger than memory".into()))?;
    let mut data = vec![0u8; len];
    file.read_exact_at(&mut data, 0)?;
    Ok(data)
}

/// Replays one record into the index (segment live counts are summed after the scan).
/// `payload` may be an append's prefix only (from a summary); `payload_len` is its full length.
fn apply(index: &mut Index, next_seq: &mut Seq, seg: SegNo, at: u64, kind: u8, payload: &[u8], payload_len: usize) {
    let mut seen = |seq: Seq| *next_seq = (*next_seq).max(seq.saturating_add(1));
    match kind {
        format::KIND_HEADER => {
            if let Some(n) = format::parse_header(payload) {
                *next_seq = (*next_seq).max(n);
            }
        }
        format::KIND_APPEND => {
            let Some(h) = format::parse_append_prefix(payload, payload_len) else {
                return;
            };
            seen(h.seq);
            let route = index.route_id(h.route);
            let entry = Entry {
                route,
                state: h.state,
                attempts: h.attempts,
                received_at_ms: h.received_at_ms,
                updated_at_ms: h.updated_at_ms,
                next_attempt_at_ms: h.next_attempt_at_ms,
                loc: Loc {
                    seg,
                    at,
                    layout: h.layout,
                },
            };
            index.put(h.seq, entry, true);
        }
        format::KIND_STATE => {
            let Some(r) = format::parse_state(payload) else { return };
            seen(r.seq);
            index.set_state(&r);
        }
        format::KIND_REMOVE => {
            if let Some(seq) = format::parse_seq(payload) {
                seen(seq);
                index.remove(seq);
            }
        }
        _ => {}
    }
}
